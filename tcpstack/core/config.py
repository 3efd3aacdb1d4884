"""Tunables of the TCP engine, with Linux-like defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from tcpstack.core.ranges import MAX_OFO_RUNS


def default_mem_limit() -> int:
    """The stack-wide cap on buffered bytes: 1/16 of physical memory (Linux's
    tcp_mem[2] is about a tenth; a Python byte costs more than a kernel one),
    at least 64 MiB."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        ram = 1 << 30
    return max(64 << 20, ram // 16)


#: IPv4 reassembly limits (tcpstack.wire.fragments): Linux's net.ipv4.ipfrag_time
#: and net.ipv4.ipfrag_high_thresh.
REASM_TIMEOUT = 30.0
REASM_MEM = 4 << 20


@dataclass(slots=True, frozen=True)
class TcpConfig:
    """Per-stack TCP settings; every TCB of the stack shares one instance.

    Defaults follow RFC 6298 (initial RTO 1 s, at least 60 s maximum) and Linux
    (net.ipv4.tcp_synack_retries=5, tcp_syn_retries=6, tcp_retries2=15,
    tcp_fin_timeout=60, 200 ms minimum RTO, 40 ms delayed ACK, CUBIC, window
    scaling, SACK and timestamps on, Nagle on, at most one challenge ACK per 500 ms per
    connection like tcp_invalid_ratelimit, keepalive off but 7200 s idle, 75 s
    interval and 9 probes when on).

    `backlog` bounds each listener's half-open set and accept queue (Linux's
    somaxconn, 4096); `syncookies` is "on" (when the half-open set is full),
    "off" or "always" (net.ipv4.tcp_syncookies 1, 0, 2); `max_conns` caps the
    connection table (docs/hardening.md, "SYN floods").

    `challenge_ack_limit` caps the challenge ACKs of the whole stack per second
    (RFC 5961 7; 0: no cap), on top of `challenge_ack_interval` per connection,
    which also spaces the ACKs a connection sends to out-of-window or
    PAWS-rejected segments without text (Linux tcp_oow_rate_limited).
    `min_snd_mss` is the smallest MSS we send with whatever the peer announces
    (Linux tcp_min_snd_mss): a tiny MSS would cost a segment per few octets, and
    one below the timestamp option's 12 octets would leave no room for data.

    `max_tw_buckets` caps the TIME-WAIT records (Linux's tcp_max_tw_buckets, its
    default on a machine with enough memory); beyond it a connection skips TIME-WAIT.

    `mem_limit` caps the bytes buffered by all connections together (send and
    receive), like Linux's tcp_mem: above two thirds of it (Linux's pressure to
    maximum ratio) windows and writers shrink, above it new data is dropped.

    `split_synack` answers a SYN with the textbook chapter's four-segment handshake (a bare
    ACK, then a SYN without ACK) instead of one SYN+ACK; off, as on every real stack.

    `max_ofo_runs` caps the out-of-order runs a connection holds, and the SACKed
    ranges it records of the peer's queue, so a peer that cuts its data into
    one-octet segments with gaps cannot make each segment cost more (see
    tcpstack/core/ranges.py for the default).

    `offload` says the TUN carries a virtio-net header (docs/offload.md): the
    TCB may then hand out TSO super-segments of several MSS, and the stack
    frames every packet; off in memory, on by default in the daemon.

    `reasm_timeout` and `reasm_mem` bound IPv4 reassembly: seconds a datagram's
    fragments wait for the rest, bytes all waiting fragments may hold (Linux's
    ipfrag_time and ipfrag_high_thresh; tcpstack/wire/fragments.py, docs/ip.md).
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
    backlog: int = 4096
    syncookies: Literal["off", "on", "always"] = "on"
    max_conns: int = 65536
    window_scaling: bool = True
    sack: bool = True
    timestamps: bool = True
    cc: str = "cubic"
    delayed_ack: float = 0.04
    nodelay: bool = False
    challenge_ack_interval: float = 0.5
    challenge_ack_limit: int = 1000
    min_snd_mss: int = 48
    keepalive: bool = False
    keepalive_idle: float = 7200.0
    keepalive_interval: float = 75.0
    keepalive_probes: int = 9
    split_synack: bool = False
    max_ofo_runs: int = MAX_OFO_RUNS
    max_tw_buckets: int = 262144
    offload: bool = False
    mem_limit: int = field(default_factory=default_mem_limit)
    reasm_timeout: float = REASM_TIMEOUT
    reasm_mem: int = REASM_MEM

    @property
    def mss(self) -> int:
        """Our MSS: the MTU less the IPv4 and TCP headers without options (RFC 9293 3.7.1)."""
        return self.mtu - 40
