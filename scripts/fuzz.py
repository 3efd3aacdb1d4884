#!/usr/bin/env python3
"""Packet fuzzer: malformed and hostile packets against the real daemon, with a
reference transfer running through it that must keep every byte.

Run as root (`make fuzz`, or `.venv/bin/python scripts/fuzz.py --help`). Inside a
network namespace made for the run (deleted at the end, also on failure or
Ctrl-C):

    kernel side 10.213.0.1 ── TUN tcpsp0 ── tcpstack serve (VIP 10.213.0.2)
      │                          ▲            echo:7 discard:9 http:80
      ├─ reference client        │
      │  (three kernel sockets)  │ AF_PACKET: packets put *out of* the TUN reach
      └─ this script ────────────┘ the stack as if the kernel had routed them
                                   (as tests/conformance does)

Two kinds of packets, mixed in one stream (`--stateful` sets the share):

* stateless: well-formed and malformed IPv4/TCP/ICMP from spoofed sources to
  the VIP's ports: bad versions, header lengths, total lengths, IP options,
  checksums, fragments, protocols, TCP data offsets, option kinds and lengths,
  every flag combination, truncations and random bit flips (checksums mostly
  recomputed, so the flip reaches the parsers behind them);
* stateful: segments injected into the reference client's three live
  connections, knowing the 4-tuple and the sequence space (read from the
  daemon's `ss` every few hundred ms): in-window data, FINs and SYNs with an
  ACK far in the past or the future, RSTs inside the window but not at RCV.NXT,
  old duplicate ACKs with SACK blocks, data left of the window, segments
  without ACK, some with a timestamp option. A correct stack (RFC 9293 3.10.7.4,
  RFC 5961, RFC 7323) acts on none of them except with a (challenge) ACK, so
  the reference transfer (echo, POST /sha256 and GET /bytes/N loops, each
  round checked byte for byte) must see exactly its own bytes.

Checks: no exception escaped (daemon alive, no Traceback on its stderr,
InternalErrors = 0); every packet the TUN device handed to the stack is
counted exactly once (InSegs + IcmpInEchos + IcmpInDestUnreachs + Drop.* + the
fragments not yet or never made whole, ReasmReqds - ReasmOKs = the device's tx_packets),
and what was put on the device adds up (injected + the kernel's own segments =
tx_packets + tx_dropped); the reference transfer kept every byte; the
packet and time targets were met. Reproducible: the seed is printed, `--seed`
repeats the packet stream (not the timing).

The script re-invokes itself inside the namespace for the reference client
(`_reference`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import proofkit
from proofkit import Check, ProofError, StackLab

from tcpstack.lab import netns

SCRIPT = Path(__file__).resolve()
SUBNET = "10.213.0"
ETH_P_IP = 0x0800
ECHO, DISCARD, HTTP = 7, 9, 80
PORTS = (ECHO, DISCARD, HTTP)
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
MOD = 1 << 32
BATCH = 256
#: The device queue: far above MAX_BACKLOG plus the reference traffic's bursts.
TXQUEUELEN = 20000
#: Packets on the device not yet read by the stack before the injector waits:
#: well under the device queue, so the queue never drops an injected packet.
MAX_BACKLOG = 4000
#: No progress of the stack's reads for this long: it is stuck.
STALL_TIMEOUT = 20.0
SS_INTERVAL = 0.25
REFERENCE_TIMEOUT = 30.0  # per socket operation of the reference client
#: The download client's request; its length L matters (see Stateful.rst_seq).
REQUEST = b"GET /bytes/%d HTTP/1.1\r\nHost: fuzz\r\n\r\n"


# --------------------------------------------------------------------------
# Packet construction (no dpkt in the hot loop: struct and one big-int checksum)
# --------------------------------------------------------------------------


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071). The ones'-complement sum of 16-bit words
    equals the whole buffer as one big integer modulo 0xFFFF (2**16 = 1 there),
    which int.from_bytes computes at C speed."""
    if len(data) % 2:
        data += b"\0"
    x = int.from_bytes(data, "big")
    s = x % 0xFFFF
    if s == 0 and x:
        s = 0xFFFF
    return ~s & 0xFFFF


def ipv4(src: bytes, dst: bytes, payload: bytes, *, proto: int = 6, ident: int = 0,
         frag: int = 0x4000, ttl: int = 64, options: bytes = b"") -> bytes:
    """An IPv4 packet with a correct header checksum (DF set unless `frag` says else)."""
    ihl = 5 + len(options) // 4
    head = struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), ident, frag,
                       ttl, proto, 0, src, dst) + options
    return head[:10] + struct.pack(">H", checksum(head)) + head[12:] + payload


def tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
        *, win: int = 65535, opts: bytes = b"", payload: bytes = b"", urp: int = 0,
        off: int | None = None, good_checksum: bool = True) -> bytes:
    """A TCP segment (header, options padded to 4 bytes, payload), checksummed
    over the pseudo-header unless told otherwise."""
    opts += b"\0" * (-len(opts) % 4)
    if off is None:
        off = 5 + len(opts) // 4
    head = struct.pack(">HHIIBBHHH", sport, dport, seq % MOD, ack % MOD, (off & 15) << 4,
                       flags & 0xFF, win, 0, urp)
    seg = head + opts + payload
    csum = checksum(struct.pack(">4s4sBBH", src, dst, 0, 6, len(seg)) + seg)
    if not good_checksum:
        csum ^= 0x5A5A
    return seg[:16] + struct.pack(">H", csum) + seg[18:]


def fix_checksums(packet: bytearray) -> None:
    """Recompute the IPv4 header and TCP/ICMP checksums in place where the header
    still describes a packet that has them (after a bit flip)."""
    if len(packet) < 20:
        return
    ihl = (packet[0] & 15) * 4
    if ihl < 20 or ihl > len(packet):
        return
    packet[10:12] = b"\0\0"
    packet[10:12] = struct.pack(">H", checksum(bytes(packet[:ihl])))
    body = packet[ihl:]
    if packet[9] == 6 and len(body) >= 20:
        packet[ihl + 16:ihl + 18] = b"\0\0"
        pseudo = struct.pack(">4s4sBBH", packet[12:16], packet[16:20], 0, 6, len(body))
        packet[ihl + 16:ihl + 18] = struct.pack(">H", checksum(pseudo + bytes(packet[ihl:])))
    elif packet[9] == 1 and len(body) >= 8:
        packet[ihl + 2:ihl + 4] = b"\0\0"
        packet[ihl + 2:ihl + 4] = struct.pack(">H", checksum(bytes(packet[ihl:])))


class FastRandom(random.Random):
    """random.Random with randrange and choice on one C-level random() call each:
    the generic versions cost more than building the packet. Seeded, so a
    stream still repeats exactly."""

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:  # type: ignore[override]
        if stop is None:
            start, stop = 0, start
        return start + int(self.random() * (stop - start))

    def choice(self, seq: Any) -> Any:
        return seq[int(self.random() * len(seq))]


# --------------------------------------------------------------------------
# Stateless packets
# --------------------------------------------------------------------------

#: TCP option kinds worth trying: the ones the stack parses, MPTCP, TFO, AO,
#: experimental, and whatever random picks.
OPTION_KINDS = (0, 1, 2, 3, 4, 5, 8, 19, 28, 29, 30, 34, 253, 254)


class Stateless:
    """Packets aimed at the VIP from spoofed sources, good and bad in every layer."""

    def __init__(self, rng: random.Random, vip: str) -> None:
        self.rng = rng
        self.vip = socket.inet_aton(vip)
        self.sources = [socket.inet_aton(f"{SUBNET}.{h}") for h in range(3, 255)] + [
            bytes(rng.randrange(256) for _ in range(4)) for _ in range(64)]
        self.mutations: list[tuple[Callable[[], bytes], int]] = [
            (self.good_tcp, 30), (self.bad_tcp_checksum, 4), (self.bad_tcp_offset, 6),
            (self.garbage_options, 10), (self.bad_ip_checksum, 4), (self.bad_version, 3),
            (self.bad_ihl, 5), (self.bad_total_length, 6), (self.fragment, 5),
            (self.other_protocol, 4), (self.icmp, 5), (self.truncated, 6),
            (self.not_for_us, 3), (self.odd_source, 3), (self.bit_flip, 12),
            (self.tiny, 2)]
        self._choices = [m for m, w in self.mutations for _ in range(w)]

    def packet(self) -> bytes:
        return self.rng.choice(self._choices)()

    # -- building blocks ------------------------------------------------------

    def _port(self) -> int:
        r = self.rng.random()
        if r < 0.8:
            return self.rng.choice(PORTS)
        return self.rng.choice((22, 443, 8080, self.rng.randrange(1, 65536), 0))

    def _options(self) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.5:
            return b""
        if r < 0.75:  # the usual handshake options, sometimes with odd values
            out = struct.pack(">BBH", 2, 4, rng.choice((0, 1, 12, 48, 536, 1460, 65535)))
            if rng.random() < 0.5:
                out += bytes((4, 2))
            if rng.random() < 0.5:
                out += struct.pack(">BBII", 8, 10, rng.getrandbits(32), rng.getrandbits(32))
            if rng.random() < 0.5:
                out += bytes((1, 3, 3, rng.choice((0, 7, 14, 15, 255))))
            if rng.random() < 0.3:
                n = rng.randrange(1, 5)
                out += bytes((5, 2 + 8 * n)) + rng.randbytes(8 * n)
            return out[:40]
        return self._garbage_option_bytes()

    def _garbage_option_bytes(self) -> bytes:
        rng = self.rng
        out = bytearray()
        while len(out) < rng.randrange(1, 41):
            kind = rng.choice(OPTION_KINDS) if rng.random() < 0.8 else rng.randrange(256)
            length = rng.choice((0, 1, 2, 3, 4, 6, 8, 10, 18, 34, 40, 255, rng.randrange(256)))
            out += bytes((kind, length)) + rng.randbytes(max(0, min(length - 2, 38)))
        return bytes(out[:40])

    def _tcp_body(self, src: bytes, *, opts: bytes | None = None, good: bool = True,
                  off: int | None = None) -> bytes:
        rng = self.rng
        flags = rng.randrange(256)
        if rng.random() < 0.4:
            flags = rng.choice((SYN, SYN | ACK, ACK, RST, RST | ACK, FIN | ACK, PSH | ACK,
                                SYN | FIN, SYN | RST, 0, 0xFF, SYN | ECE | CWR))
        payload = rng.randbytes(rng.choice((0, 0, 1, rng.randrange(1, 200))))
        body = tcp(src, self.vip, rng.randrange(1, 65536), self._port(), rng.getrandbits(32),
                   rng.getrandbits(32), flags, win=rng.randrange(65536),
                   opts=self._options() if opts is None else opts, payload=payload,
                   urp=rng.randrange(65536) if flags & URG else 0, off=off,
                   good_checksum=good)
        if rng.random() < 0.1:  # reserved bits (and NS/AE) in the data-offset byte
            body = body[:12] + bytes((body[12] | rng.randrange(1, 16),)) + body[13:]
            body = self._refix(src, body) if good else body
        return body

    def _refix(self, src: bytes, body: bytes) -> bytes:
        zeroed = body[:16] + b"\0\0" + body[18:]
        csum = checksum(struct.pack(">4s4sBBH", src, self.vip, 0, 6, len(body)) + zeroed)
        return body[:16] + struct.pack(">H", csum) + body[18:]

    def _src(self) -> bytes:
        return self.rng.choice(self.sources)

    def _ip(self, src: bytes, body: bytes, **kw: Any) -> bytes:
        return ipv4(src, self.vip, body, ident=self.rng.randrange(65536), **kw)

    # -- mutations ------------------------------------------------------------

    def good_tcp(self) -> bytes:
        src = self._src()
        return self._ip(src, self._tcp_body(src))

    def bad_tcp_checksum(self) -> bytes:
        src = self._src()
        return self._ip(src, self._tcp_body(src, good=False))

    def bad_tcp_offset(self) -> bytes:
        src = self._src()
        return self._ip(src, self._tcp_body(src, off=self.rng.choice((0, 1, 4, 15,
                                                                      self.rng.randrange(16)))))

    def garbage_options(self) -> bytes:
        src = self._src()
        return self._ip(src, self._tcp_body(src, opts=self._garbage_option_bytes()))

    def bad_ip_checksum(self) -> bytes:
        p = bytearray(self.good_tcp())
        p[10] ^= 0xA5
        return bytes(p)

    def bad_version(self) -> bytes:
        p = bytearray(self.good_tcp())
        p[0] = (self.rng.choice((0, 1, 5, 6, 15)) << 4) | (p[0] & 15)
        return bytes(p)

    def bad_ihl(self) -> bytes:
        rng = self.rng
        src = self._src()
        body = self._tcp_body(src)
        if rng.random() < 0.5:  # real options: NOP, EOL, record route, timestamp, junk
            opts = rng.choice((b"\x01\x01\x01\x00", b"\x07\x07\x04" + bytes(5),
                               b"\x44\x0c\x05\x00" + bytes(8),
                               rng.randbytes(4 * rng.randrange(1, 11))))
            return self._ip(src, body, options=opts[:40] + b"\0" * (-len(opts[:40]) % 4))
        p = bytearray(self._ip(src, body))
        p[0] = 0x40 | rng.choice((0, 1, 4, 6, 15, rng.randrange(16)))
        fix_checksums(p)
        return bytes(p)

    def bad_total_length(self) -> bytes:
        p = bytearray(self.good_tcp())
        n = len(p)
        p[2:4] = struct.pack(">H", self.rng.choice((0, 1, 19, 20, 39, n - 1, n + 1, 65535,
                                                    self.rng.randrange(65536))))
        fix_checksums(p)
        if self.rng.random() < 0.5:
            p += self.rng.randbytes(self.rng.randrange(1, 64))  # trailing bytes past ip.len
        return bytes(p)

    def fragment(self) -> bytes:
        src = self._src()
        frag = self.rng.choice((0x2000, 0x0001, 0x2010, 0x6000, 0x1FFF, 0x8000,
                                self.rng.randrange(65536)))
        return self._ip(src, self._tcp_body(src), frag=frag)

    def other_protocol(self) -> bytes:
        src = self._src()
        proto = self.rng.choice((0, 2, 17, 41, 47, 50, 132, 255, self.rng.randrange(256)))
        return self._ip(src, self.rng.randbytes(self.rng.randrange(0, 64)), proto=proto)

    def icmp(self) -> bytes:
        rng = self.rng
        kind = rng.choice((8, 8, 0, 3, 5, 11, 13, 17, rng.randrange(256)))
        body = struct.pack(">BBHHH", kind, rng.choice((0, 0, 1, 255)), 0,
                           rng.randrange(65536), rng.randrange(65536))
        body += rng.randbytes(rng.choice((0, 8, 56, rng.randrange(200))))
        body = body[:2] + struct.pack(">H", checksum(body)) + body[4:]
        if rng.random() < 0.2:
            body = body[:rng.randrange(len(body))] if rng.random() < 0.5 else (
                body[:2] + b"\xde\xad" + body[4:])
        return self._ip(self._src(), body, proto=1)

    def truncated(self) -> bytes:
        p = self.good_tcp()
        return p[:self.rng.randrange(0, len(p))]

    def not_for_us(self) -> bytes:
        src = self._src()
        dst = self.rng.choice((socket.inet_aton(f"{SUBNET}.1"), socket.inet_aton(f"{SUBNET}.255"),
                               b"\0\0\0\0", b"\xff\xff\xff\xff", self.rng.randbytes(4)))
        body = tcp(src, dst, self.rng.randrange(65536), self._port(), 1, 0, SYN)
        return ipv4(src, dst, body)

    def odd_source(self) -> bytes:
        src = self.rng.choice((self.vip, b"\0\0\0\0", b"\xff\xff\xff\xff", b"\x7f\0\0\1",
                               b"\xe0\0\0\1", socket.inet_aton(f"{SUBNET}.1")))
        if src == self.vip and self.rng.random() < 0.5:  # LAND: the VIP to itself
            body = tcp(src, self.vip, HTTP, HTTP, self.rng.getrandbits(32), 0, SYN)
            return self._ip(src, body)
        return self._ip(src, self._tcp_body(src))

    def bit_flip(self) -> bytes:
        p = bytearray(self.rng.choice((self.good_tcp, self.icmp))())
        for _ in range(self.rng.randrange(1, 4)):
            i = self.rng.randrange(len(p) * 8)
            p[i // 8] ^= 1 << (i % 8)
        if self.rng.random() < 0.7:
            fix_checksums(p)
        return bytes(p)

    def tiny(self) -> bytes:
        return self.rng.randbytes(self.rng.randrange(0, 40))


# --------------------------------------------------------------------------
# Stateful packets: injection into the reference connections
# --------------------------------------------------------------------------


class Stateful:
    """Segments into live connections that a correct stack must not act on.

    `conns` is refreshed from the daemon's `ss`: for each reference connection
    its role and SND.UNA, SND.NXT, RCV.NXT and RCV.WND as the stack sees them,
    a little stale. Each kind stays safe under that staleness: SND.UNA,
    SND.NXT and RCV.NXT only grow, so an ACK 2**24..2**30 below the SND.UNA
    seen is still below SND.UNA - MAX.SND.WND when the segment arrives, one
    2**26.. above SND.NXT is still beyond it, and data ending at or before the
    RCV.NXT seen is still old.
    """

    WEIGHTS: ClassVar[dict[str, int]] = {
        "old_ack_data": 30, "future_ack_data": 10, "no_ack": 8, "syn": 8, "rst": 12,
        "old_dup_ack": 20, "old_data": 12}

    def __init__(self, rng: random.Random, host_ip: str, vip: str, request_len: int,
                 kinds: set[str] | None = None, timestamps: bool = True) -> None:
        self.rng = rng
        self.timestamps = timestamps
        self.src = socket.inet_aton(host_ip)
        self.dst = socket.inet_aton(vip)
        self.request_len = request_len
        self.conns: list[dict[str, Any]] = []
        wanted = set(self.WEIGHTS) if kinds is None else kinds
        self.kinds = dict.fromkeys(wanted, 0)
        self._choices = [k for k, w in self.WEIGHTS.items() if k in wanted for _ in range(w)]

    def packet(self) -> bytes | None:
        if not self.conns:
            return None
        rng = self.rng
        c = rng.choice(self.conns)
        kind = rng.choice(self._choices)
        self.kinds[kind] += 1
        una, nxt, rcv, wnd = c["snd_una"], c["snd_nxt"], c["rcv_nxt"], max(1, c["rcv_wnd"])
        payload = b""
        if rng.random() < 0.7:
            payload = (rng.choice((b"GET / HTTP/1.1\r\n\r\n", b"\r\n\r\nX", b"\0" * 32))
                       if rng.random() < 0.3 else rng.randbytes(rng.randrange(1, 1400)))
        in_window = (rcv + rng.randrange(wnd)) % MOD
        old_ack = (una - rng.randrange(1 << 24, 1 << 30)) % MOD
        future_ack = (nxt + rng.randrange(1 << 26, 1 << 30)) % MOD
        extra = rng.choice((0, 0, PSH, URG, ECE | CWR, FIN))
        seq, ack, flags = in_window, old_ack, ACK | extra
        if kind == "future_ack_data":
            ack = future_ack
        elif kind == "no_ack":
            flags = extra | rng.choice((0, PSH, FIN, URG))
            ack = rng.getrandbits(32)
        elif kind == "syn":
            flags = SYN | rng.choice((0, ACK, FIN, PSH, ECE | CWR))
            seq = in_window if rng.random() < 0.7 else rng.getrandbits(32)
            ack = rng.choice((old_ack, future_ack, una, rng.getrandbits(32)))
        elif kind == "rst":
            flags = RST | rng.choice((0, ACK))
            seq = self.rst_seq(c)
            ack = rng.choice((una, old_ack, rng.getrandbits(32)))
            payload = b""
        elif kind == "old_dup_ack":
            flags = ACK | rng.choice((0, 0, ECE, CWR))
            ack = (una - rng.randrange(1, 60000)) % MOD
            payload = b""
        elif kind == "old_data":
            payload = payload or b"x"
            seq = (rcv - len(payload) - rng.randrange(1 << 30)) % MOD
            ack = una
        opts = b""
        if self.conns and rng.random() < 0.3:
            span = max(1, (nxt - una) % MOD)
            blocks = b""
            for _ in range(rng.randrange(1, 4)):
                left = (una + rng.randrange(span)) % MOD
                blocks += struct.pack(">II", left, (left + rng.randrange(1, 65536)) % MOD)
            opts += bytes((1, 1, 5, 2 + len(blocks))) + blocks
        if self.timestamps and rng.random() < 0.1:
            opts += struct.pack(">BBBBII", 1, 1, 8, 10, rng.getrandbits(32), rng.getrandbits(32))
        body = tcp(self.src, self.dst, c["client_port"], c["server_port"], seq, ack, flags,
                   win=rng.choice((0, 1, 512, 65535, rng.randrange(65536))), opts=opts[:40],
                   payload=payload)
        return ipv4(self.src, self.dst, body, ident=rng.randrange(65536))

    def rst_seq(self, c: dict[str, Any]) -> int:
        """An RST inside the window but never at RCV.NXT (which a correct stack
        obeys, RFC 5961 3.2): only the download connection's RCV.NXT is known
        well enough, since it moves by exactly the request length L per request,
        so RCV.NXT + k with k not a multiple of L misses it whatever the
        staleness. Elsewhere the RST goes left of the window (dropped)."""
        rng, rcv = self.rng, c["rcv_nxt"]
        if c["role"] == "download":
            step = self.request_len
            k = step * rng.randrange(max(1, c["rcv_wnd"] // step)) + rng.randrange(1, step)
            return (rcv + k) % MOD
        return (rcv - rng.randrange(1, 1 << 30)) % MOD

    def refresh(self, ss: dict[str, Any], host_ip: str, roles: dict[int, str]) -> None:
        """Take the reference connections (ESTABLISHED, from the kernel side) from `ss`."""
        conns = []
        for c in ss["connections"]:
            rip, _, rport = c["remote"].rpartition(":")
            if rip != host_ip or c["state"] != "ESTABLISHED" or int(rport) not in roles:
                continue
            conns.append({**c, "role": roles[int(rport)], "client_port": int(rport),
                          "server_port": int(c["local"].rpartition(":")[2])})
        self.conns = conns


# --------------------------------------------------------------------------
# The reference client (a helper role inside the namespace)
# --------------------------------------------------------------------------


class _Conn:
    """A blocking socket with exact and delimited reads, for the reference client."""

    def __init__(self, addr: str, port: int) -> None:
        self.sock = socket.create_connection((addr, port), timeout=REFERENCE_TIMEOUT)
        self.buf = b""

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def _more(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self.buf += chunk

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def until(self, delim: bytes, limit: int = 65536) -> bytes:
        while delim not in self.buf:
            if len(self.buf) > limit:
                raise ValueError(f"no {delim!r} in {limit} bytes: {self.buf[:200]!r}")
            self._more()
        out, _, self.buf = self.buf.partition(delim)
        return out


def _pattern(n: int) -> bytes:
    """What GET /bytes/n returns: byte k is k mod 251."""
    return (bytes(range(251)) * (n // 251 + 1))[:n]


def _http_response(conn: _Conn) -> bytes:
    head = conn.until(b"\r\n\r\n").decode("latin-1")
    status = head.split("\r\n", 1)[0]
    if " 200 " not in status:
        raise ValueError(f"HTTP status {status!r}")
    length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n")
                   if line.lower().startswith("content-length:")), None)
    if length is None:
        raise ValueError("no Content-Length")
    return conn.exact(length)


class _Pacer:
    """Hold one client to `rate` bytes/s: the reference traffic is there to be
    attacked, not to take the daemon's CPU away from the fuzzer's packets."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.done = 0

    def pace(self, n: int) -> None:
        self.done += n
        ahead = self.done / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


def role_reference(vip: str, size: int, seed: int, rate: float) -> None:
    """Three connections through the stack, each looping checked rounds until
    SIGTERM, at most `rate` bytes/s each: echo (random bytes back unchanged),
    POST /sha256 (the digest of random bytes) and keep-alive GET /bytes/N (the
    pattern). Prints a line with the client ports once connected and a JSON
    summary at the end."""
    import hashlib

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rng = random.Random(seed)
    blob = rng.randbytes(size)
    digest = hashlib.sha256(blob).hexdigest().encode()
    pattern = _pattern(size)
    conns = {"echo": _Conn(vip, ECHO), "upload": _Conn(vip, HTTP), "download": _Conn(vip, HTTP)}
    results: dict[str, dict[str, Any]] = {k: {"rounds": 0, "bytes": 0, "error": None}
                                          for k in conns}

    pacers = {name: _Pacer(rate) for name in conns}

    def echo(c: _Conn) -> int:
        for i in range(0, size, 1 << 16):
            piece = blob[i:i + (1 << 16)]
            c.sock.sendall(piece)
            if c.exact(len(piece)) != piece:
                raise ValueError(f"echo: wrong bytes at offset {i} of the round")
            pacers["echo"].pace(len(piece))
        return size

    def upload(c: _Conn) -> int:
        c.sock.sendall(b"POST /sha256 HTTP/1.1\r\nHost: fuzz\r\nContent-Length: %d\r\n\r\n"
                       % size)
        for i in range(0, size, 1 << 16):
            c.sock.sendall(blob[i:i + (1 << 16)])
            pacers["upload"].pace(min(1 << 16, size - i))
        answer = _http_response(c).strip()
        if answer != digest:
            raise ValueError(f"POST /sha256 answered {answer[:64]!r}, expected {digest!r}")
        return size

    def download(c: _Conn) -> int:
        c.sock.sendall(REQUEST % size)
        if _http_response(c) != pattern:
            raise ValueError("GET /bytes: the body differs from the pattern")
        pacers["download"].pace(size)
        return size

    def loop(name: str, fn: Callable[[_Conn], int]) -> None:
        r = results[name]
        try:
            while not stop.is_set():
                r["bytes"] += fn(conns[name])
                r["rounds"] += 1
        except (OSError, ValueError) as e:
            r["error"] = f"round {r['rounds'] + 1}: {e}"

    print(json.dumps({"connected": {k: c.port for k, c in conns.items()}}), flush=True)
    threads = [threading.Thread(target=loop, args=(name, fn), daemon=True)
               for name, fn in (("echo", echo), ("upload", upload), ("download", download))]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)
    for c in conns.values():
        c.sock.close()
    print(json.dumps({"summary": results}), flush=True)


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


def _stack_counted(stats: dict[str, int]) -> int:
    """Every packet `Stack.handle_packet` took (InReceives). Without super-segments
    (InSuperSegs 0) each is also a segment, an echo or a drop, exactly; a GRO
    super-segment counts as several InSegs, so then only InReceives can be exact.
    A fragment counts in ReasmReqds; the datagram it completes is classified like
    a packet (tcpstack/wire/fragments.py), so ReasmOKs of them are counted twice."""
    received = stats.get("InReceives", 0)
    classified = stats.get("InSegs", 0) + stats.get("IcmpInEchos", 0) + sum(
        v for k, v in stats.items() if k.startswith("Drop.")) + stats.get(
        "IcmpInDestUnreachs", 0) + stats.get("ReasmReqds", 0) - stats.get("ReasmOKs", 0)
    if not stats.get("InSuperSegs") and classified != received:
        return -classified  # cannot equal the device's count: the check fails
    return received


def _kernel_sent(snmp: dict[str, dict[str, int]]) -> int:
    """What the namespace's kernel transmitted (all of it goes into the TUN)."""
    tcp_ = snmp["Tcp"]
    return tcp_["OutSegs"] + tcp_["RetransSegs"] + snmp["Icmp"]["OutMsgs"]


def _reference_result(line: str | None) -> dict[str, Any]:
    if line is None:
        return {}
    result: dict[str, Any] = json.loads(line)["summary"]
    return result


def fuzz(args: argparse.Namespace) -> tuple[list[Check], dict[str, Any]]:
    """Bring the lab up, fuzz, wind down, and judge."""
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"fuzz: seed {seed} (repeat with --seed {seed})", flush=True)
    rng = FastRandom(seed)
    request_len = len(REQUEST % args.ref_size)
    with proofkit.stack_lab("fuzz", subnet=SUBNET,
                            options=["--synack-retries", "1", "--msl", "1"],
                            txqueuelen=TXQUEUELEN) as lab:
        ref = proofkit.start_role(lab.ns, SCRIPT, "_reference", lab.vip, args.ref_size, seed,
                                  args.ref_rate)
        ports = json.loads(ref.wait_for_line("connected", 15))["connected"]
        roles = {port: role for role, port in ports.items()}
        stateful = Stateful(rng, lab.host_ip, lab.vip, request_len, args.kinds,
                            not args.no_timestamps)
        netns.wait_until(lambda: (stateful.refresh(lab.ss(), lab.host_ip, roles)
                                    or len(stateful.conns) == 3), 10,
                           message="the reference connections in ss")
        stateless = Stateless(rng, lab.vip)
        netdev, netsnmp = proofkit.NetFile(lab.ns, "dev"), proofkit.NetFile(lab.ns, "snmp")
        sock = lab.ns.call(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0))
        try:
            run = _inject(args, lab, sock, netdev, stateless, stateful, roles)
        finally:
            sock.close()
            rss_after = proofkit.rss_kb(lab.daemon.pid)
            with contextlib.suppress(ProcessLookupError):
                ref.proc.send_signal(signal.SIGTERM)
            summary = _reference_result(ref.stdout.wait_for('"summary"', 90))
        run["rss_kb_end"] = rss_after
        run["reference"] = summary
        run.update(_settle(lab, netdev, netsnmp, run))
        run["problems"] = lab.problems()
        run["stateful_kinds"] = stateful.kinds
        netdev.close()
        netsnmp.close()
    run["seed"] = seed
    return _judge(args, run), run


def _inject(args: argparse.Namespace, lab: StackLab, sock: socket.socket,
            netdev: proofkit.NetFile, stateless: Stateless, stateful: Stateful,
            roles: dict[int, str]) -> dict[str, Any]:
    """The injection loop: batches of packets out of the TUN, paced by what the
    stack has read (the device's tx_packets), bounded in count and time."""
    rng = stateful.rng
    dest = (lab.tun, ETH_P_IP)
    base_tx, base_drop = proofkit.device_tx(netdev, lab.tun)
    sent = send_errors = stateful_sent = 0
    start = time.monotonic()
    deadline = start + args.duration
    next_ss = start + SS_INTERVAL
    progress_at, last_tx = start, base_tx
    rss_samples = [proofkit.rss_kb(lab.daemon.pid)]
    next_report = start + 10
    while sent < args.packets and time.monotonic() < deadline:
        batch = []
        for _ in range(min(BATCH, args.packets - sent)):
            p = stateful.packet() if rng.random() < args.stateful else None
            if p is None:
                p = stateless.packet()
            else:
                stateful_sent += 1
            batch.append(p)
        for p in batch:
            try:
                sock.sendto(p, dest)
                sent += 1
            except OSError as e:  # ENOBUFS, or EINVAL/EMSGSIZE for a 0-byte packet
                if e.errno not in (errno.ENOBUFS, errno.EINVAL, errno.EMSGSIZE, errno.ENXIO):
                    raise
                send_errors += 1
        while True:  # pace: keep the device queue short
            now = time.monotonic()
            tx, dropped = proofkit.device_tx(netdev, lab.tun)
            if tx != last_tx:
                progress_at, last_tx = now, tx
            if sent - (tx - base_tx) - (dropped - base_drop) < MAX_BACKLOG or now >= deadline:
                break
            if now - progress_at > STALL_TIMEOUT:
                raise ProofError(f"the stack read nothing for {STALL_TIMEOUT:g} s "
                                 f"(alive: {lab.daemon.alive()})")
            time.sleep(0.0005)
        if now >= next_ss:
            with contextlib.suppress(OSError, ValueError):
                stateful.refresh(lab.ss(), lab.host_ip, roles)
            rss_samples.append(proofkit.rss_kb(lab.daemon.pid))
            next_ss = now + SS_INTERVAL
            if not lab.daemon.alive():
                break
        if now >= next_report:
            print(f"  {sent:,} packets in {now - start:.0f} s "
                  f"({sent / (now - start):,.0f}/s)", flush=True)
            next_report = now + 10
    seconds = time.monotonic() - start
    print(f"  {sent:,} packets in {seconds:.1f} s ({sent / seconds:,.0f}/s)", flush=True)
    return {"sent": sent, "send_errors": send_errors, "stateful_sent": stateful_sent,
            "seconds": round(seconds, 2), "rate_pps": round(sent / seconds),
            "rss_kb_max": max(rss_samples),
            "rss_kb_start": rss_samples[0]}


def _settle(lab: StackLab, netdev: proofkit.NetFile, netsnmp: proofkit.NetFile,
            run: dict[str, Any]) -> dict[str, Any]:
    """Wait (bounded) until the stack has read and counted everything on the
    device, then take the final numbers for the accounting.

    No baselines: the daemon created the TUN device and the namespace is new,
    so the stack's counters, the device's and the kernel's all start at zero
    together, and nothing but this script and the namespace's kernel puts
    packets on the device."""
    def quiet() -> tuple[dict[str, int], int, int] | None:
        if not lab.daemon.alive():
            return None
        stats = lab.stats()
        tx, dropped = proofkit.device_tx(netdev, lab.tun)
        return (stats, tx, dropped) if _stack_counted(stats) == tx else None

    final = None
    with contextlib.suppress(proofkit.WaitFailed):
        final = netns.wait_until(quiet, 30, interval=0.2, message="the stack's counters")
    if final is None:
        if not lab.daemon.alive():
            return {"accounting": None}
        stats = lab.stats()
        tx, dropped = proofkit.device_tx(netdev, lab.tun)
    else:
        stats, tx, dropped = final
    snmp = proofkit.snmp(netsnmp)
    return {"accounting": {
        "injected": run["sent"], "kernel_sent": _kernel_sent(snmp),
        "device_read": tx, "device_dropped": dropped, "stack_counted": _stack_counted(stats),
        "InSegs": stats.get("InSegs", 0), "IcmpInEchos": stats.get("IcmpInEchos", 0),
        "drops": {k: v for k, v in sorted(stats.items()) if k.startswith("Drop.") and v},
        "InternalErrors": stats.get("InternalErrors", 0),
        "kernel": {g: {k: v for k, v in snmp[g].items() if v}
                   for g in ("Ip", "Icmp", "Tcp")}}}


def _judge(args: argparse.Namespace, run: dict[str, Any]) -> list[Check]:
    acc = run.get("accounting")
    checks = [Check("no exception escaped", not run["problems"],
                    "; ".join(run["problems"])[:60] or "alive, no Traceback, 0 errors",
                    "daemon alive, 0 InternalErrors")]
    if acc:
        checks.append(Check("every packet read is counted", acc["stack_counted"] ==
                            acc["device_read"],
                            f"{acc['stack_counted']:,} counted / {acc['device_read']:,} read",
                            "counted == read"))
        # The device's own counters, not the kernel's SNMP: Linux's Tcp OutSegs
        # leaves out some control segments it sends (a few per run), so a sum of
        # SNMP counters cannot match the device exactly; "kernel_sent" stays in
        # the JSON as a cross-check.
        checks.append(Check("no packet lost at the device queue", acc["device_dropped"] == 0,
                            f"{acc['injected']:,} injected, {acc['device_read']:,} read, "
                            f"{acc['device_dropped']} queue drops",
                            "0 queue drops"))
    else:
        checks.append(Check("every packet read is counted", False, "no final counters", "-"))
    ref = run.get("reference") or {}
    errors = [f"{k}: {v['error']}" for k, v in ref.items() if v["error"]]
    total = sum(v["bytes"] for v in ref.values())
    checks.append(Check("reference transfer intact", bool(ref) and not errors,
                        ("; ".join(errors) if errors else f"{total / 1e6:,.1f} MB in "
                         f"{sum(v['rounds'] for v in ref.values())} rounds")[:90] if ref
                        else "no summary", "every round byte-exact"))
    checks.append(Check("packets sent", run["sent"] >= args.packets,
                        f"{run['sent']:,} in {run['seconds']:.0f} s ({run['rate_pps']:,}/s)",
                        f">= {args.packets:,} in <= {args.duration:g} s"))
    return checks


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Fuzz tcpstack with malformed and in-window packets while a reference "
        "transfer runs through it (root; own namespace). Exit status 1 if a check fails.")
    p.add_argument("--packets", type=proofkit.positive(int), default=1_000_000,
                   help="packets to inject (default 1000000)")
    p.add_argument("--duration", type=proofkit.positive(float), default=600.0,
                   help="stop injecting after this many seconds even if --packets is not "
                   "reached (a failed check then; default 600)")
    p.add_argument("--stateful", type=float, default=0.2,
                   help="share of packets injected into the reference connections "
                   "(default 0.2)")
    p.add_argument("--ref-size", type=proofkit.positive(int), default=1_000_000,
                   help="bytes per round of each reference client (default 1000000)")
    p.add_argument("--ref-rate", type=proofkit.positive(float), default=250_000,
                   help="bytes/s of each reference client at most (default 250000)")
    p.add_argument("--kinds", help="only these stateful kinds, comma-separated (default "
                   f"all: {','.join(Stateful.WEIGHTS)})")
    p.add_argument("--no-timestamps", action="store_true",
                   help="no timestamp option on stateful packets (default: on 10 %%)")
    p.add_argument("--seed", type=int, help="the packet stream's seed (default: random, "
                   "printed)")
    p.add_argument("--out", type=Path, default=proofkit.RESULTS,
                   help="directory for the JSON result (default bench-results/)")
    args = p.parse_args(argv)
    if not 0 <= args.stateful <= 1:
        p.error("--stateful must be within 0..1")
    if args.kinds is not None:
        args.kinds = set(args.kinds.split(","))
        if not args.kinds or args.kinds - set(Stateful.WEIGHTS):
            p.error(f"--kinds: choose from {', '.join(Stateful.WEIGHTS)}")
    return args


ROLES: dict[str, proofkit.Role] = {"_reference": (role_reference, (str, int, int, float))}


def main(argv: list[str]) -> int:
    def body(args: argparse.Namespace) -> int:
        checks, run = fuzz(args)
        print(json.dumps({"accounting": run.get("accounting"),
                          "stateful_kinds": run.get("stateful_kinds")}))
        return proofkit.report("fuzz", checks, run, args.out, vars(args))

    return proofkit.script_main("fuzz", argv, ROLES, parse_args, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
