"""SYN cookies (RFC 4987 3.6): answer a SYN without keeping any state.

When a listener's half-open set is full (or always, with `--syncookies always`)
its SYN+ACK carries all the connection needs in the ISS, and the connection is
created only when the peer's ACK comes back with that ISS + 1. The design is
Linux's (net/ipv4/syncookies.c):

    ISS = H1 + peer's ISN + (count << 24) + ((H2 + index) mod 2^24)
    H1, H2 = the two halves of one keyed hash of (4-tuple, peer's ISN, count)

`count` ticks once a minute; the top 8 bits carry it, so the age of a cookie
can be read back from the ACK and one older than `MAX_AGE` ticks is refused.
`index` (3 bits) picks the largest entry of `MSS_TABLE` not above the peer's
MSS. The hash is BLAKE2s keyed with a secret drawn from os.urandom at stack
start, so no one who has not seen our SYN+ACK can compute a valid ACK.

Unlike Linux, whose H1 and H2 leave out the ISN (it is only added), the ISN
is hashed: otherwise the check is blind to a shift of SEG.SEQ and SEG.ACK by
the same amount, and a later ACK of the same connection (SEQ = ISN + 2,
ACK = ISS + 2: the peer's TIME-WAIT acknowledging our retransmitted FIN after
the connection ended) passes it and opens a ghost connection that the peer
never learns of, ESTABLISHED and idle forever. And one hash of 8 octets gives
both halves: a SYN costs one BLAKE2s, an ACK one (two in the tick after the
counter moved, to try both counts a cookie may carry).

The cookie has no room for window scaling or SACK. When both sides use
timestamps (RFC 7323) they travel in the low `TS_BITS` bits of our SYN+ACK's
TSval, which the peer echoes in every TSecr: bits 0-3 the peer's window
scale (15: none), bit 4 SACK-permitted (bit 5, ECN in Linux, stays 0: the
stack does not do ECN). Without timestamps a cookie SYN+ACK offers only the
MSS, as Linux's does, so both ends agree that neither is in use.

Why it is safe:
- Forgery: an ACK passes only if, for one of the `MAX_AGE` counts it may
  carry, its top bits give that count and its 24 low bits, less H2, an
  index < 8: a blind guess succeeds with probability about
  MAX_AGE * 8 / 2^32 (4e-9);
  the 256-bit key cannot be learnt from cookies (BLAKE2s is a PRF).
- Replay: a cookie is bound to its 4-tuple and its peer ISN, and expires
  after at most `MAX_AGE` minutes; replaying one within that time needs the
  4-tuple and our SYN+ACK, that is an on-path attacker, who can do worse.
- Prediction (RFC 6528): the ISS still depends on a secret, so it is no more
  guessable than a normal one; it lacks the 4 us clock, so it does not grow
  across incarnations of a 4-tuple (Linux's cookies have the same property).
- Cost: checking is one or two BLAKE2s of 24 octets, and is only tried while the
  listener has sent cookies in the last `MAX_AGE` minutes (Linux
  tcp_synq_no_recent_overflow), so an ACK flood at a quiet listener costs
  nothing more than today's reset.

This module is sans-I/O, like the TCB: time is passed in.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import struct

from tcpstack.core.config import TcpConfig
from tcpstack.core.segment import ACK, SYN, Options, Segment
from tcpstack.core.seq import seq_add, seq_lt
from tcpstack.core.tcb import DEFAULT_MSS, MAX_WINDOW, MAX_WSCALE, wscale_for

#: The MSS values a cookie can say (3 bits): the largest one not above the
#: peer's MSS is used. Linux 2.6's table with 1300 (tunnels) for 4312.
MSS_TABLE = (64, 512, 536, 1024, 1300, 1440, 1460, 8960)
COUNTER_PERIOD = 60.0  # seconds per tick of the cookie counter (Linux: one minute)
MAX_AGE = 2  # ticks: a cookie is good for 1 to 2 minutes (Linux MAX_SYNCOOKIE_AGE)
LIFETIME = MAX_AGE * COUNTER_PERIOD  # how long a listener accepts cookies after sending one
COOKIE_BITS = 24
COOKIE_MASK = (1 << COOKIE_BITS) - 1
COUNT_MASK = 0xFF  # the 8 bits above COOKIE_BITS
TS_BITS = 6  # low TSval bits carrying the options (Linux TSBITS)
TS_MASK = (1 << TS_BITS) - 1
SYN_ACK = SYN | ACK
_TUPLE = struct.Struct(">HHIq")  # ports, peer's ISN, counter
WSCALE_NONE = 0xF
SACK_BIT = 0x10
ECN_BIT = 0x20


class SynCookies:
    """Makes cookie SYN+ACKs and checks the ACKs that return them."""

    def __init__(self, config: TcpConfig, secret: bytes | None = None) -> None:
        self.config = config
        # Keyed once: copy() skips the key block that every keyed blake2s() hashes.
        self._keyed = hashlib.blake2s(key=secret if secret is not None else os.urandom(32),
                                      digest_size=8)
        self._our_wscale = wscale_for(config.rcv_buf)  # the config is frozen

    def synack(self, syn: Segment, now: float) -> Segment:
        """The SYN+ACK answering `syn`, its ISS a cookie; nothing is remembered."""
        config = self.config
        opts = syn.options
        iss = self.iss(syn.src + syn.dst, syn.sport, syn.dport, syn.seq, opts.mss, now)
        reply = Options(mss=config.mss)
        if config.timestamps and opts.timestamp is not None:
            wscale, sack, bits = self.offer(opts.wscale, opts.sack_permitted)
            reply = Options(mss=config.mss, sack_permitted=sack, wscale=wscale,
                            timestamp=(cookie_tsval(iss, now, bits), opts.timestamp[0]))
        return Segment(src=syn.dst, dst=syn.src, sport=syn.dport, dport=syn.sport,
                       seq=iss, ack=seq_add(syn.seq, 1), flags=SYN_ACK,
                       window=min(config.rcv_buf, MAX_WINDOW), options=reply)

    def iss(self, addresses: bytes, sport: int, dport: int, isn: int, mss: int | None,
            now: float) -> int:
        """The cookie ISS for a SYN from `addresses` (its source then destination
        address, 8 octets) with sequence number `isn` and MSS option `mss`. The
        Segment path (`synack`) and the SYN fast path (`tcpstack.shell.synfast`) share it,
        so both always send the same cookie."""
        count = _count(now)
        h1, h2 = self._hash(addresses, sport, dport, isn, count)
        return (h1 + isn + (count << COOKIE_BITS)
                + ((h2 + _mss_index(mss)) & COOKIE_MASK)) & 0xFFFFFFFF

    def offer(self, wscale: int | None, sack_permitted: bool) -> tuple[int | None, bool, int]:
        """What a cookie SYN+ACK with timestamps offers for a SYN with these
        options: our window scale (None: none), SACK-permitted, and the TSval's
        low bits that carry the peer's choices back to us."""
        config = self.config
        wscale = wscale if config.window_scaling else None
        sack = config.sack and sack_permitted
        bits = (WSCALE_NONE if wscale is None else min(wscale, MAX_WSCALE)) | (
            SACK_BIT if sack else 0)
        return None if wscale is None else self._our_wscale, sack, bits

    def check(self, ack: Segment, now: float) -> Segment | None:
        """The SYN that `ack` completes, as its cookie remembers it (sequence
        number, MSS, window scale, SACK, and TSval of the ACK as the peer's
        latest timestamp); None if the cookie is not ours, expired or damaged."""
        cookie = seq_add(ack.ack, -1)
        isn = seq_add(ack.seq, -1)
        now_count = _count(now)
        for count in range(now_count, now_count - MAX_AGE, -1):
            h1, h2 = self._hash(ack.src + ack.dst, ack.sport, ack.dport, isn, count)
            diff = (cookie - h1 - isn) & 0xFFFFFFFF
            index = (diff - h2) & COOKIE_MASK
            if diff >> COOKIE_BITS == count & COUNT_MASK and index < len(MSS_TABLE):
                break
        else:
            return None
        options = Options(mss=MSS_TABLE[index])
        ts = ack.options.timestamp
        if self.config.timestamps and ts is not None:
            bits = ts[1] & TS_MASK
            wscale = bits & WSCALE_NONE
            if ((bits & ECN_BIT) or (wscale != WSCALE_NONE and not self.config.window_scaling)
                    or (bits & SACK_BIT and not self.config.sack)):
                return None  # we never encode these: the TSecr was tampered with
            options.wscale = None if wscale == WSCALE_NONE else wscale
            options.sack_permitted = bool(bits & SACK_BIT)
            options.timestamp = (ts[0], 0)
        return Segment(src=ack.src, dst=ack.dst, sport=ack.sport, dport=ack.dport, seq=isn,
                       ack=0, flags=SYN, window=ack.window, options=options)

    def _hash(self, addresses: bytes, sport: int, dport: int, isn: int,
              count: int) -> tuple[int, int]:
        """H1 and H2: one keyed hash of the 4-tuple as the peer sends it, the
        peer's ISN and the counter, cut in two 32-bit halves."""
        h = self._keyed.copy()
        h.update(addresses + _TUPLE.pack(sport, dport, isn, count))
        both = int.from_bytes(h.digest(), "big")
        return both >> 32, both & 0xFFFFFFFF


def _count(now: float) -> int:
    return int(now // COUNTER_PERIOD)


def _mss_index(mss: int | None) -> int:
    """The largest MSS_TABLE entry not above the peer's MSS (RFC 9293 3.7.1's
    536 when it sent none); below the smallest entry, the smallest, as Linux
    does (the MSS floor clamps such peers the same way)."""
    return max(bisect.bisect_right(MSS_TABLE, mss or DEFAULT_MSS) - 1, 0)


def cookie_tsval(iss: int, now: float, bits: int) -> int:
    """The SYN+ACK's TSval: the connection's clock (Tcb._ts_val: 1 ms ticks offset
    by the ISS) with its low bits replaced by `bits`, moved back one step if that
    put it ahead, so the connection's later TSvals never go below it (RFC 7323 5.3)."""
    clock = (int(now * 1000) + iss) & 0xFFFFFFFF
    tsval = (clock & ~TS_MASK) | bits
    return seq_add(tsval, -(1 << TS_BITS)) if seq_lt(clock, tsval) else tsval
