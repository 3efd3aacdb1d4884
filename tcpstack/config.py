"""Tunables of the TCP engine, with Linux-like defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def default_mem_limit() -> int:
    """The stack-wide cap on buffered bytes: 1/16 of physical memory (Linux's
    tcp_mem[2] is about a tenth; a Python byte costs more than a kernel one),
    at least 64 MiB."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        ram = 1 << 30
    return max(64 << 20, ram // 16)


@dataclass(slots=True, frozen=True)
class TcpConfig:
    """Per-stack TCP settings; every TCB of the stack shares one instance.

    Defaults follow RFC 6298 (initial RTO 1 s, at least 60 s maximum) and Linux
    (net.ipv4.tcp_synack_retries=5, tcp_syn_retries=6, tcp_retries2=15,
    tcp_fin_timeout=60, 200 ms minimum RTO, 40 ms delayed ACK, CUBIC, window
    scaling, SACK and timestamps on, Nagle on, at most one challenge ACK per 500 ms per
    connection like tcp_invalid_ratelimit, keepalive off but 7200 s idle, 75 s
    interval and 9 probes when on).

    `mem_limit` caps the bytes buffered by all connections together (send and
    receive), like Linux's tcp_mem: above two thirds of it (Linux's pressure to
    maximum ratio) windows and writers shrink, above it new data is dropped.

    `split_synack` answers a SYN with the seed's four-segment handshake (a bare
    ACK, then a SYN without ACK) instead of one SYN+ACK; off, as on every real stack.
    """

    mtu: int = 1500
    synack_retries: int = 5
    syn_retries: int = 6
    data_retries: int = 15
    rto_initial: float = 1.0
    rto_min: float = 0.2
    rto_max: float = 60.0
    msl: float = 30.0
    fin_timeout: float = 60.0
    rcv_buf: int = 1 << 20
    snd_buf: int = 262144
    backlog: int = 128
    window_scaling: bool = True
    sack: bool = True
    timestamps: bool = True
    cc: str = "cubic"
    delayed_ack: float = 0.04
    nodelay: bool = False
    challenge_ack_interval: float = 0.5
    keepalive: bool = False
    keepalive_idle: float = 7200.0
    keepalive_interval: float = 75.0
    keepalive_probes: int = 9
    split_synack: bool = False
    mem_limit: int = field(default_factory=default_mem_limit)

    @property
    def mss(self) -> int:
        """Our MSS: the MTU less the IPv4 and TCP headers without options (RFC 9293 3.7.1)."""
        return self.mtu - 40
