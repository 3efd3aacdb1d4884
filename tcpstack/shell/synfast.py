"""The SYN fast path: a SYN cookie answered from the packet's bytes, no Segment built.

Under a SYN flood nearly every packet is a pure SYN that a listener answers
with a cookie (RFC 4987 3.6, `tcpstack.core.syncookies`), and the normal path spent
most of its ~17 µs per SYN outside the cookie itself: decoding into a Segment
and Options, the listener's dispatch, building a reply Segment and Options,
and encoding them. This path reads the IPv4 and TCP headers at their fixed
offsets with one precompiled struct, and packs the SYN+ACK with one struct
per option layout, the checksums computed from the field values.

It only takes what it can answer exactly as the normal path would, byte for
byte (tests/unit/test_synfast.py holds the two side by side) and with the
same counters: a packet that is

* an IPv4 header without options, checksum right, not a fragment, for our
  address (with a virtio-net header: not a super-segment);
* TCP with exactly SYN among the control bits, no data, checksum right
  (unless the virtio-net header says the kernel vouches for it, as
  `tcpstack.wire.vnet`'s readers do);
* for a port whose listener can only answer with a cookie or drop now
  (`Listener.answers_statelessly`), and a 4-tuple with no connection or
  TIME-WAIT record.

Anything else, malformed packets included, goes on to the normal path
(`Stack.handle_packet` decodes it and counts the drop), and costs only the
failed test. The common option layouts (none, as hping3 sends; Linux's
MSS, SACK-permitted, timestamps, window scale) are read in place, others by
the codec's own parser, so both paths read options alike.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from tcpstack.core.seq import seq_add
from tcpstack.core.syncookies import cookie_tsval
from tcpstack.core.tcb import MAX_WINDOW, wscale_for
from tcpstack.shell.listener import SynVerdict
from tcpstack.wire import vnet
from tcpstack.wire.codec import (
    IP_HEADER_WORDS,
    IPPROTO_TCP,
    IPV4_TCP,
    OPT_MSS,
    OPT_NOP,
    OPT_SACK_PERMITTED,
    OPT_TIMESTAMP,
    OPT_WSCALE,
    TTL,
    checksum_field,
    fold_sum,
    parse_options,
    sums_to_ones,
)

if TYPE_CHECKING:
    from tcpstack.shell.stack import Stack

_SYN = 0x02
_SYN_ACK = 0x12
_FLAG_BITS = 0x1FF  # the control bits the codec keeps (codec._TCP_FLAG_BITS)
_FRAGMENT_BITS = 0x3FFF  # MF and the fragment offset
_IP_DF = 0x4000
_from_bytes = int.from_bytes

# A Linux SYN's options (tcp_syn_options): MSS, SACK-permitted, timestamps, NOP, window scale.
_LINUX_SYN_OPTIONS = struct.Struct(">BBHBBBBIIBBBB")
_LINUX_SYN_KINDS = (OPT_MSS, 4, OPT_SACK_PERMITTED, 2, OPT_TIMESTAMP, 10)


class SynFastPath:
    """Answers a pure SYN to a listener that gives cookies, straight from its bytes."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        config = stack.config
        self._vnet = stack.vnet
        self._start = vnet.HEADER_LEN if stack.vnet else 0
        self._window = min(config.rcv_buf, MAX_WINDOW)
        self._timestamps = config.timestamps
        # One reply layout per (SACK, window scale) with timestamps, one without:
        # options as codec.build_options lays them out (Linux's order).
        mss = struct.pack(">BBH", OPT_MSS, 4, config.mss)
        self._plain = _Layout(self, mss, None)
        self._with_ts = {
            (sack, wscale): _Layout(
                self, mss + bytes((OPT_SACK_PERMITTED, 2, OPT_TIMESTAMP, 10) if sack
                                  else (OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10)),
                None if wscale is None else bytes((OPT_NOP, OPT_WSCALE, 3, wscale)))
            for sack in (False, True)
            for wscale in (None, wscale_for(config.rcv_buf) if config.window_scaling else None)}

    def answer(self, frame: bytes, now: float) -> bool:
        """Answer `frame` if it is a SYN this path takes (then it is fully counted
        and answered or dropped as `Listener.on_syn` decides); False: the normal
        path must handle it, nothing has been counted."""
        start = self._start
        if len(frame) < start + 40:
            return False
        verify = True
        if start:
            flags, gso_type = frame[0], frame[1]
            if gso_type != vnet.GSO_NONE:
                return False
            verify = not flags & (vnet.F_NEEDS_CSUM | vnet.F_DATA_VALID)
        (version_ihl, _, total, _, frag, _, proto, _, src, dst,
         sport, dport, isn, _, off_flags, _, _, _) = IPV4_TCP.unpack_from(frame, start)
        end = 20 + (off_flags >> 12) * 4  # where the options end: no data may follow
        stack = self.stack
        if (version_ihl != 0x45 or proto != IPPROTO_TCP or off_flags & _FLAG_BITS != _SYN
                or frag & _FRAGMENT_BITS or end != total or end < 40
                or start + total > len(frame) or dst != stack.addr):
            return False
        if _from_bytes(frame[start:start + 20], "big") % 0xFFFF:
            return False  # a bad IP checksum (RFC 791 3.1): the normal path counts it
        # RFC 9293 3.1: the checksum covers the pseudo-header and the segment, here a
        # header only (a multiple of 4 octets), so one number is the sum of its words.
        pseudo = _from_bytes(frame[start + 12:start + 20], "big") + IPPROTO_TCP + total - 20
        if verify and not sums_to_ones(pseudo + _from_bytes(frame[start + 20:start + total],
                                                             "big")):
            return False
        key = (dport, src, sport)
        listener = stack.listeners.get(dport)
        if (listener is None or key in stack.conns or key in stack.time_wait
                or not listener.answers_statelessly()):
            return False
        mss, wscale, sack, tsval = self._options(frame, start + 40, start + end)
        stats = stack.stats
        stats["InReceives"] += 1
        stats["InSegs"] += 1
        if listener.on_syn(now) is not SynVerdict.COOKIE:
            return True  # dropped, and counted, by the listener
        cookies = stack.cookies
        addresses = src + dst
        iss = cookies.iss(addresses, sport, dport, isn, mss, now)
        if tsval is None or not self._timestamps:
            reply = self._plain.pack(dst, src, dport, sport, iss, isn, 0, 0)
        else:
            ours, sack, bits = cookies.offer(wscale, sack)
            reply = self._with_ts[sack, ours].pack(dst, src, dport, sport, iss, isn,
                                                   cookie_tsval(iss, now, bits), tsval)
        stats["OutSegs"] += 1
        stack.send_packet(reply)
        return True

    @staticmethod
    def _options(frame: bytes, start: int, end: int
                 ) -> tuple[int | None, int | None, bool, int | None]:
        """MSS, window scale, SACK-permitted and TSval of the SYN's options."""
        if start == end:
            return None, None, False, None
        if end - start == _LINUX_SYN_OPTIONS.size:
            (k1, l1, mss, k2, l2, k3, l3, tsval, _, nop, k4, l4,
             wscale) = _LINUX_SYN_OPTIONS.unpack_from(frame, start)
            if ((k1, l1, k2, l2, k3, l3) == _LINUX_SYN_KINDS and nop == OPT_NOP
                    and (k4, l4) == (OPT_WSCALE, 3)):
                return mss, wscale, True, tsval
        opts = parse_options(frame[start:end])
        return (opts.mss, opts.wscale, opts.sack_permitted,
                None if opts.timestamp is None else opts.timestamp[0])


class _Layout:
    """One SYN+ACK layout: a struct for the whole frame, its constant fields,
    and the constant part of both checksums (RFC 1071 sums are sums of 16-bit
    words modulo 0xFFFF, so each field enters by its value: every field here
    starts at an even offset, and 2^16 is 1 modulo 0xFFFF)."""

    def __init__(self, path: SynFastPath, before_ts: bytes, after_ts: bytes | None) -> None:
        ts = len(before_ts) > 4  # the MSS alone, or the MSS, SACK/NOPs and timestamps
        options = before_ts + (b"\0" * 8 if ts else b"") + (after_ts or b"")
        header_len = 20 + len(options)
        self.total = 20 + header_len
        self.off_flags = (header_len << 10) + _SYN_ACK
        self.before_ts, self.ts = before_ts, ts
        self.window = path._window
        self.vnet = path._vnet
        fmt = ">BBHHHBBH4s4sHHIIHHHH" + (
            f"{len(before_ts)}s" + ("II" if ts else "") + (f"{len(after_ts)}s" if after_ts else ""))
        self.struct = struct.Struct(fmt)
        self.tail = (after_ts,) if after_ts else ()
        self.ip_sum = IP_HEADER_WORDS + self.total + IPPROTO_TCP
        self.tcp_len_sum = IPPROTO_TCP + header_len
        self.tcp_sum = (self.tcp_len_sum + self.off_flags + self.window
                        + _from_bytes(before_ts, "big") + _from_bytes(after_ts or b"", "big"))
        # With offloads, the virtio-net header vnet.tcp_frame puts before every
        # packet of this layout (checksum offload, no segmentation).
        self.prefix = b""
        if path._vnet:
            self.prefix = vnet.tcp_frame(self.pack(bytes(4), bytes(4), 0, 0, 0, 0, 0, 0),
                                         0)[:vnet.HEADER_LEN]

    def pack(self, src: bytes, dst: bytes, sport: int, dport: int, iss: int, isn: int,
             tsval: int, tsecr: int) -> bytes:
        """The frame from `src` (us: the SYN's destination) to `dst` (the SYN's
        source), acknowledging the SYN's sequence number `isn`."""
        ack = seq_add(isn, 1)
        # src and dst as one 64-bit number: congruent to their four 16-bit words.
        addr_sum = _from_bytes(dst + src, "big")
        if self.vnet:
            tcp_check = fold_sum(addr_sum + self.tcp_len_sum)
        else:
            tcp_check = checksum_field(addr_sum + self.tcp_sum + sport + dport + iss + ack
                                  + tsval + tsecr)
        ip_check = checksum_field(self.ip_sum + addr_sum)
        if self.ts:
            packet = self.struct.pack(
                0x45, 0, self.total, 0, _IP_DF, TTL, IPPROTO_TCP, ip_check, src, dst, sport,
                dport, iss, ack, self.off_flags, self.window, tcp_check, 0, self.before_ts,
                tsval, tsecr, *self.tail)
        else:
            packet = self.struct.pack(
                0x45, 0, self.total, 0, _IP_DF, TTL, IPPROTO_TCP, ip_check, src, dst, sport,
                dport, iss, ack, self.off_flags, self.window, tcp_check, 0, self.before_ts)
        return self.prefix + packet
