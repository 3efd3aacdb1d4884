"""IPv4/TCP/ICMP packets to and from plain objects: the only module that knows the wire format.

Decoding is strict because every packet comes from an untrusted peer: anything
malformed raises `Malformed` with a `DropReason`, which the stack counts and
drops. The TCB only ever sees `Segment` objects.

Two codecs live here with one interface (`decode`, `encode`, `encode_echo_reply`):
a fast one built on precompiled `struct` layouts, the default on the hot path,
and the dpkt one it replaced, kept as the reference that
tests/unit/test_codec_equivalence.py holds the fast one to (same `Segment` or
same `DropReason` out of every packet, same bytes out of every segment).
TCPSTACK_CODEC=reference in the environment runs the stack on dpkt. See docs/codec.md.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import dpkt
from mypy_extensions import i64

from tcpstack.core.segment import EMPTY_OPTIONS, Options, Payload, Segment

IPPROTO_ICMP: Final = 1
IPPROTO_TCP: Final = 6
ICMP_ECHO_REPLY: Final = 0
ICMP_ECHO_REQUEST: Final = 8
TTL: Final = 64  # Linux's default net.ipv4.ip_default_ttl

# TCP option kinds (RFC 9293 3.2, RFC 7323, RFC 2018)
OPT_EOL: Final = 0
OPT_NOP: Final = 1
OPT_MSS: Final = 2
OPT_WSCALE: Final = 3
OPT_SACK_PERMITTED: Final = 4
OPT_SACK: Final = 5
OPT_TIMESTAMP: Final = 8


class DropReason(StrEnum):
    """Why an incoming packet was dropped; each has its own counter."""

    TRUNCATED = "truncated"
    NOT_IPV4 = "not_ipv4"
    IP_HEADER = "ip_header"
    IP_CHECKSUM = "ip_checksum"
    IP_OPTIONS = "ip_options"
    IP_LENGTH = "ip_length"
    FRAGMENT = "fragment"
    PROTOCOL = "protocol"
    TCP_HEADER = "tcp_header"
    TCP_CHECKSUM = "tcp_checksum"
    ICMP_CHECKSUM = "icmp_checksum"
    ICMP_TYPE = "icmp_type"
    NOT_FOR_US = "not_for_us"


class Malformed(Exception):
    """An incoming packet that must be dropped; `reason` names the counter."""

    def __init__(self, reason: DropReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(slots=True)
class IcmpEcho:
    """An ICMP echo request (RFC 792) addressed to the stack."""

    src: bytes
    dst: bytes
    ident: int
    seqno: int
    payload: Payload


# ------------------------------------------------------------------ the fast codec
#
# The default on the hot path. It must behave exactly like the dpkt reference
# below (tests/unit/test_codec_equivalence.py holds the two side by side), at a
# fraction of the cost: one precompiled struct per header, no per-word Python
# loop in the checksums, one copy of the payload.

# IPv4 header without options (RFC 791 3.1), then the fixed TCP header (RFC 9293 3.1).
_IPV4: Final = struct.Struct(">BBHHHBBH4s4s")
_TCP: Final = struct.Struct(">HHIIHHHH")
IPV4_TCP: Final = struct.Struct(">BBHHHBBH4s4sHHIIHHHH")
_ICMP_ECHO: Final = struct.Struct(">BBHHH")
_IPV4_ICMP_ECHO: Final = struct.Struct(">BBHHHBBH4s4sBBHHH")
_U16: Final = struct.Struct(">H")
_U32X2: Final = struct.Struct(">II")

_IP_DF: Final = 0x4000
# MF and the fragment offset; the reserved bit and DF do not matter.
_IP_FRAGMENT_BITS: Final = 0x3FFF
# The nine control bits dpkt (and so the reference) keeps, NS included.
_TCP_FLAG_BITS: Final = 0x1FF
_NOP_NOP_TIMESTAMP: Final = bytes((OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10))
# Two kind/length/NOP bytes, kind 8, length 10, TSval, TSecr.
_TS_OPTION: Final = struct.Struct(">BBBBII")
IP_HEADER_WORDS: Final = 0x4500 + _IP_DF + (TTL << 8)  # version/IHL, DF and TTL, as 16-bit words

_from_bytes = int.from_bytes

#: Whether this module runs compiled (tcpstack.native): a compiled module's file is
#: the extension it was loaded from.
COMPILED: Final = __file__.endswith(".so")


def _word_sum(data: bytes | memoryview) -> int:
    """The sum of `data`'s big-endian 16-bit words modulo 0xFFFF, as a number congruent to it.

    RFC 1071's one's complement sum is addition modulo 0xFFFF (2**16 is 1 modulo
    0xFFFF, so end-around carries are the modulus). Interpreted, the fastest way
    is to read the whole buffer as one big-endian integer, which is congruent to
    the sum of its 16-bit words: one C call instead of a Python loop over the
    words, but the big number still costs a division to reduce (~3.4 µs for
    1,460 bytes). Compiled, `byte_pair_sum`'s loop is machine code and its sum a
    machine word (~0.9 µs). An odd trailing byte is padded with zero (RFC 793
    3.1). Callers add the parts and reduce once.
    """
    if COMPILED:
        raw = data if isinstance(data, bytes) else bytes(data)
        return byte_pair_sum(raw, 0, len(raw))
    x = _from_bytes(data, "big")
    return x << 8 if len(data) & 1 else x


def byte_pair_sum(data: bytes, start: i64, stop: i64) -> i64:
    """The sum of the big-endian 16-bit words of `data[start:stop]`, an odd last
    byte padded with zero (RFC 1071 4.1's loop, the carries kept, not folded).

    The even bytes (high halves) and the odd ones are summed apart and combined
    at the end: two additions per word and no shift in the loop. The `i64`s make
    the compiled loop use machine integers; the sums cannot overflow them (65,535
    bytes sum to less than 2**24 per half). In the interpreter this loop is ~100
    times slower than `int.from_bytes`, so `_word_sum` uses it compiled only; the
    unit tests hold it to the same answers in both forms.
    """
    high: i64 = 0
    low: i64 = 0
    i = start
    while i < stop - 1:
        high += data[i]
        low += data[i + 1]
        i += 2
    if i < stop:
        high += data[i]
    return (high << 8) + low


def checksum_field(total: int) -> int:
    """The checksum field for data whose word sum (of `_word_sum` parts) is `total`.

    The one's complement of the folded sum; a folded sum of 0xFFFF (a nonzero
    multiple of 0xFFFF) gives 0, all-zero data gives 0xFFFF, as dpkt computes it.
    """
    return -total % 0xFFFF if total else 0xFFFF


def fold_sum(total: int) -> int:
    """The folded one's complement sum itself (not complemented): what a partial
    checksum field holds for the kernel to finish (0xFFFF for a nonzero multiple)."""
    return total % 0xFFFF or (0xFFFF if total else 0)


def sums_to_ones(total: int) -> bool:
    """RFC 1071 4.1 verification: the sum over the data including its checksum is all ones.

    All-zero data (total 0) folds to zero, not 0xFFFF, so it fails like in dpkt.
    """
    return total != 0 and total % 0xFFFF == 0


def decode_fast(packet: bytes | memoryview, *, verify_checksum: bool = True) -> Segment | IcmpEcho:
    """Parse one IPv4 packet read from the TUN device.

    Raises `Malformed` for anything the stack does not accept: RFC 1122 3.2.1
    requires silently discarding datagrams with bad checksums; IP options and
    fragments are not supported and dropped as well. The checks run in the
    reference's order, so the same packet always gives the same `DropReason`.
    `packet` may be any bytes-like object; the payload is a slice of it (a copy
    for `bytes`, none for a `memoryview`). `verify_checksum=False` skips the TCP
    checksum where the TUN's virtio-net header says the kernel vouches for it
    (`tcpstack.wire.vnet`): a NEEDS_CSUM packet carries only the pseudo-header sum there.
    """
    if len(packet) < 20:
        raise Malformed(DropReason.TRUNCATED)
    version_ihl, _, total, _, frag, _, proto, _, src, dst = _IPV4.unpack_from(packet)
    if version_ihl != 0x45:
        if version_ihl >> 4 != 4:
            raise Malformed(DropReason.NOT_IPV4)
        raise Malformed(DropReason.IP_HEADER if version_ihl & 0x0F < 5 else DropReason.IP_OPTIONS)
    if _from_bytes(packet[:20], "big") % 0xFFFF:  # never all zero: the first byte is 0x45
        raise Malformed(DropReason.IP_CHECKSUM)
    if total < 20 or total > len(packet):
        raise Malformed(DropReason.IP_LENGTH)
    if frag & _IP_FRAGMENT_BITS:
        raise Malformed(DropReason.FRAGMENT)
    if proto == IPPROTO_TCP:
        return _decode_tcp(packet, total, src, dst, verify_checksum)
    if proto == IPPROTO_ICMP:
        return _decode_icmp(packet, total, src, dst)
    raise Malformed(DropReason.PROTOCOL)


def _decode_tcp(packet: bytes | memoryview, total: int, src: bytes, dst: bytes,
                verify_checksum: bool) -> Segment:
    tcp_len = total - 20
    if tcp_len < 20:
        raise Malformed(DropReason.TRUNCATED)
    sport, dport, seq, ack, off_flags, window, _, _ = _TCP.unpack_from(packet, 20)
    end = 20 + (off_flags >> 12) * 4  # where the options end and the data begins
    if end < 40 or end > total:
        raise Malformed(DropReason.TCP_HEADER)
    # RFC 9293 3.1: the checksum covers the pseudo-header (addresses, protocol, TCP length).
    pseudo = _from_bytes(packet[12:20], "big") + IPPROTO_TCP + tcp_len
    if verify_checksum and not sums_to_ones(pseudo + _word_sum(packet[20:total])):
        raise Malformed(DropReason.TCP_CHECKSUM)
    return Segment(src, dst, sport, dport, seq, ack, off_flags & _TCP_FLAG_BITS, window,
                   parse_options(packet[40:end]) if end > 40 else EMPTY_OPTIONS,
                   packet[end:total])


def parse_options(raw: bytes | memoryview) -> Options:
    """Decode the TCP options we use; unknown or malformed ones are ignored (RFC 9293 3.1).

    Exactly the reference's reading (dpkt's `parse_opts`): a length byte below 2
    counts as 2, a length running past the header is cut at its end, a kind with
    no room for its length byte ends the list (RFC 9293 3.1, MUST-7: an illegal
    option length must not crash us), and so does EOL (RFC 9293 3.2). A later
    option of a kind overrides an earlier one.
    """
    if len(raw) == 12 and raw[:4] == _NOP_NOP_TIMESTAMP:
        # The layout on every segment of a Linux connection with timestamps (RFC 7323 3.2).
        return Options(timestamp=_U32X2.unpack_from(raw, 4))
    mss = wscale = timestamp = None
    sack_permitted = False
    sack_blocks: Sequence[tuple[int, int]] = ()
    i, n = 0, len(raw)
    while i < n:
        kind = raw[i]
        if kind == OPT_NOP:
            i += 1
            continue
        if kind == OPT_EOL or i + 1 == n:
            break
        start, i = i + 2, i + max(2, raw[i + 1])
        size = min(i, n) - start
        if kind == OPT_MSS and size == 2:
            mss = _U16.unpack_from(raw, start)[0]
        elif kind == OPT_WSCALE and size == 1:
            wscale = raw[start]
        elif kind == OPT_SACK_PERMITTED and size == 0:
            sack_permitted = True
        elif kind == OPT_TIMESTAMP and size == 8:
            timestamp = _U32X2.unpack_from(raw, start)
        elif kind == OPT_SACK and size and size % 8 == 0:
            words = struct.unpack_from(f">{size // 4}I", raw, start)
            sack_blocks = list(zip(words[::2], words[1::2], strict=True))
    return Options(mss, wscale, sack_permitted, timestamp, sack_blocks)


def _decode_icmp(packet: bytes | memoryview, total: int, src: bytes, dst: bytes) -> IcmpEcho:
    if total - 20 < 8:
        raise Malformed(DropReason.TRUNCATED)
    if not sums_to_ones(_word_sum(packet[20:total])):
        raise Malformed(DropReason.ICMP_CHECKSUM)
    type_, code, _, ident, seqno = _ICMP_ECHO.unpack_from(packet, 20)
    if type_ != ICMP_ECHO_REQUEST or code != 0:
        raise Malformed(DropReason.ICMP_TYPE)
    return IcmpEcho(src, dst, ident, seqno, packet[28:total])


def build_options(opts: Options) -> bytes:
    """Encode options in Linux's order, NOP-padded to a multiple of four bytes."""
    if opts is EMPTY_OPTIONS:
        return b""
    if (opts.timestamp is not None and opts.mss is None and opts.wscale is None
            and not opts.sack_permitted and not opts.sack_blocks):
        # TSopt alone: every segment of a connection with timestamps (RFC 7323 3.2).
        return _TS_OPTION.pack(OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10, *opts.timestamp)
    out = bytearray()
    if opts.mss is not None:
        out += struct.pack(">BBH", OPT_MSS, 4, opts.mss)
    if opts.sack_permitted and opts.timestamp is not None:
        out += _TS_OPTION.pack(OPT_SACK_PERMITTED, 2, OPT_TIMESTAMP, 10, *opts.timestamp)
    elif opts.timestamp is not None:
        out += _TS_OPTION.pack(OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10, *opts.timestamp)
    elif opts.sack_permitted:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2))
    if opts.wscale is not None:
        out += bytes((OPT_NOP, OPT_WSCALE, 3, opts.wscale))
    if opts.sack_blocks:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(opts.sack_blocks)))
        for left, right in opts.sack_blocks:
            out += struct.pack(">II", left, right)
    return bytes(out)




def encode_fast(seg: Segment, *, partial_checksum: bool = False) -> bytes:
    """Build the IPv4 packet for one outgoing segment, checksums included.

    Both checksums are computed from the field values (a 32-bit field is congruent
    to the sum of its two words modulo 0xFFFF) plus one `_word_sum` each of the
    options and the payload, so the header is packed once and the payload copied
    once, into the packet. Raises ValueError where dpkt does: options longer
    than 40 bytes, or flags beyond the nine control bits. `partial_checksum`
    leaves the TCP checksum to the kernel (checksum offload, `tcpstack.wire.vnet`): the
    field gets the folded pseudo-header sum, not complemented.
    """
    raw_opts = build_options(seg.options)
    payload = seg.payload
    header_len = 20 + len(raw_opts)
    flags = seg.flags
    if header_len > 60 or flags > _TCP_FLAG_BITS:
        raise ValueError(f"cannot encode {len(raw_opts)} option bytes with flags {flags:#x}")
    off_flags = (header_len << 10) + flags  # the data offset's bits and the flags' do not overlap
    tcp_len = header_len + len(payload)
    total = 20 + tcp_len
    src, dst, sport, dport, seq, ack, window = (
        seg.src, seg.dst, seg.sport, seg.dport, seg.seq, seg.ack, seg.window)
    addresses = _from_bytes(src, "big") + _from_bytes(dst, "big")
    if partial_checksum:
        tcp_check = fold_sum(addresses + IPPROTO_TCP + tcp_len)
    else:
        # RFC 9293 3.1: pseudo-header, header fields (checksum and urgent pointer zero), data.
        tcp_check = checksum_field(addresses + IPPROTO_TCP + tcp_len + sport + dport + seq + ack
                              + off_flags + window + _from_bytes(raw_opts, "big")
                              + _word_sum(payload))
    header = IPV4_TCP.pack(
        0x45, 0, total, 0, _IP_DF, TTL, IPPROTO_TCP,
        checksum_field(IP_HEADER_WORDS + total + IPPROTO_TCP + addresses), src, dst,
        sport, dport, seq, ack, off_flags, window, tcp_check, 0)
    return b"".join((header, raw_opts, payload))


def encode_echo_reply_fast(req: IcmpEcho) -> bytes:
    """The echo reply to `req` (RFC 792): same identifier, sequence number and data."""
    payload = req.payload
    total = 28 + len(payload)
    addresses = _from_bytes(req.src, "big") + _from_bytes(req.dst, "big")
    icmp_sum = (ICMP_ECHO_REPLY << 8) + req.ident + req.seqno + _word_sum(payload)
    header = _IPV4_ICMP_ECHO.pack(
        0x45, 0, total, 0, _IP_DF, TTL, IPPROTO_ICMP,
        checksum_field(IP_HEADER_WORDS + total + IPPROTO_ICMP + addresses), req.dst, req.src,
        ICMP_ECHO_REPLY, 0, checksum_field(icmp_sum), req.ident, req.seqno)
    return header + payload


# ------------------------------------------------------------------ the dpkt reference
#
# The codec as it was before the fast path, kept unchanged as the specification the
# fast codec is tested against and as a fallback to tell a codec bug from a TCP bug
# (TCPSTACK_CODEC=reference). The ladder and the pcap reader use dpkt directly.


def _checksum_ok(data: bytes, initial: int = 0) -> bool:
    return dpkt.in_cksum_done(dpkt.in_cksum_add(initial, data)) == 0


def _pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    return dpkt.in_cksum_add(0, struct.pack(">4s4sxBH", src, dst, proto, length))


def decode_reference(packet: bytes | memoryview, *,
                     verify_checksum: bool = True) -> Segment | IcmpEcho:
    """Parse one IPv4 packet read from the TUN device.

    Raises `Malformed` for anything the stack does not accept: RFC 1122 3.2.1
    requires silently discarding datagrams with bad checksums; IP options and
    fragments are not supported and dropped as well. `verify_checksum=False`
    skips the TCP checksum where the TUN's virtio-net header says the kernel
    vouches for it (`tcpstack.wire.vnet`): a NEEDS_CSUM packet carries only the
    pseudo-header sum in that field.
    """
    packet = bytes(packet)  # dpkt takes bytes
    if len(packet) < 20:
        raise Malformed(DropReason.TRUNCATED)
    if packet[0] >> 4 != 4:
        raise Malformed(DropReason.NOT_IPV4)
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20:
        raise Malformed(DropReason.IP_HEADER)
    if ihl > 20:
        raise Malformed(DropReason.IP_OPTIONS)
    if not _checksum_ok(packet[:20]):
        raise Malformed(DropReason.IP_CHECKSUM)
    try:
        ip = dpkt.ip.IP(packet)
    except (dpkt.UnpackError, struct.error, ValueError):
        raise Malformed(DropReason.TRUNCATED) from None
    if ip.len < 20 or ip.len > len(packet):
        raise Malformed(DropReason.IP_LENGTH)
    if ip.mf or ip.offset:
        raise Malformed(DropReason.FRAGMENT)
    body = packet[20 : ip.len]
    if ip.p == IPPROTO_TCP:
        return _decode_tcp_reference(ip, body, verify_checksum)
    if ip.p == IPPROTO_ICMP:
        return _decode_icmp_reference(ip, body)
    raise Malformed(DropReason.PROTOCOL)


def _decode_tcp_reference(ip: dpkt.ip.IP, body: bytes, verify_checksum: bool) -> Segment:
    if len(body) < 20:
        raise Malformed(DropReason.TRUNCATED)
    off = (body[12] >> 4) * 4
    if off < 20 or off > len(body):
        raise Malformed(DropReason.TCP_HEADER)
    if verify_checksum and not _checksum_ok(
            body, _pseudo_header_sum(ip.src, ip.dst, IPPROTO_TCP, len(body))):
        raise Malformed(DropReason.TCP_CHECKSUM)
    tcp = ip.data
    if not isinstance(tcp, dpkt.tcp.TCP):
        raise Malformed(DropReason.TCP_HEADER)
    return Segment(
        src=ip.src,
        dst=ip.dst,
        sport=tcp.sport,
        dport=tcp.dport,
        seq=tcp.seq,
        ack=tcp.ack,
        flags=tcp.flags,
        window=tcp.win,
        options=parse_options_reference(body[20:off]),
        payload=body[off:],
    )


def parse_options_reference(raw: bytes) -> Options:
    """Decode the TCP options we use; unknown or malformed ones are ignored (RFC 9293 3.1)."""
    if not raw:
        return EMPTY_OPTIONS
    opts = Options()
    for opt in dpkt.tcp.parse_opts(raw):
        # dpkt yields None for an option cut off by the end of the header; RFC 9293 3.1
        # (MUST-7): an illegal option length must not crash us. Nothing after EOL is an
        # option (RFC 9293 3.2), so stop there as well.
        if opt is None or opt[0] == OPT_EOL:
            break
        kind, value = opt
        if kind == OPT_MSS and len(value) == 2:
            opts.mss = struct.unpack(">H", value)[0]
        elif kind == OPT_WSCALE and len(value) == 1:
            opts.wscale = value[0]
        elif kind == OPT_SACK_PERMITTED and not value:
            opts.sack_permitted = True
        elif kind == OPT_TIMESTAMP and len(value) == 8:
            opts.timestamp = struct.unpack(">II", value)
        elif kind == OPT_SACK and value and len(value) % 8 == 0:
            words = struct.unpack(f">{len(value) // 4}I", value)
            opts.sack_blocks = list(zip(words[::2], words[1::2], strict=True))
    return opts


def encode_reference(seg: Segment, *, partial_checksum: bool = False) -> bytes:
    """Build the IPv4 packet for one outgoing segment, checksums included.

    `partial_checksum` leaves the TCP checksum to the kernel (checksum offload,
    `tcpstack.wire.vnet`): the field gets only the folded pseudo-header sum."""
    raw_opts = build_options(seg.options)
    tcp = dpkt.tcp.TCP(
        sport=seg.sport,
        dport=seg.dport,
        seq=seg.seq,
        ack=seg.ack,
        flags=seg.flags,
        win=seg.window,
        opts=raw_opts,
        off=5 + len(raw_opts) // 4,  # dpkt does not derive the data offset from opts
        data=seg.payload,
    )
    if partial_checksum:
        # dpkt fills in a zero checksum only; in_cksum_done complements the sum.
        tcp.sum = ~dpkt.in_cksum_done(_pseudo_header_sum(
            seg.src, seg.dst, IPPROTO_TCP, len(tcp))) & 0xFFFF
    return _ip_reference(seg.src, seg.dst, IPPROTO_TCP, tcp)


def _ip_reference(src: bytes, dst: bytes, proto: int, data: dpkt.Packet) -> bytes:
    # df=1 rather than off=IP_DF, which dpkt 1.9.8 rejects.
    return bytes(dpkt.ip.IP(src=src, dst=dst, p=proto, ttl=TTL, df=1, data=data))


def _decode_icmp_reference(ip: dpkt.ip.IP, body: bytes) -> IcmpEcho:
    if len(body) < 8:
        raise Malformed(DropReason.TRUNCATED)
    if not _checksum_ok(body):
        raise Malformed(DropReason.ICMP_CHECKSUM)
    if body[0] != ICMP_ECHO_REQUEST or body[1] != 0:
        raise Malformed(DropReason.ICMP_TYPE)
    ident, seqno = struct.unpack(">HH", body[4:8])
    return IcmpEcho(src=ip.src, dst=ip.dst, ident=ident, seqno=seqno, payload=body[8:])


def encode_echo_reply_reference(req: IcmpEcho) -> bytes:
    """The echo reply to `req` (RFC 792): same identifier, sequence number and data."""
    icmp = dpkt.icmp.ICMP(
        type=ICMP_ECHO_REPLY,
        code=0,
        data=dpkt.icmp.ICMP.Echo(id=req.ident, seq=req.seqno, data=req.payload),
    )
    return _ip_reference(req.dst, req.src, IPPROTO_ICMP, icmp)


# ------------------------------------------------------------------ selection

CODEC = os.environ.get("TCPSTACK_CODEC", "fast")
"""Which codec the stack runs on: "fast" (the default) or "reference" (dpkt, slow)."""

if CODEC == "fast":
    decode, encode, encode_echo_reply = decode_fast, encode_fast, encode_echo_reply_fast
elif CODEC == "reference":
    decode, encode, encode_echo_reply = (
        decode_reference, encode_reference, encode_echo_reply_reference)
else:
    raise ValueError(f"TCPSTACK_CODEC must be 'fast' or 'reference', not {CODEC!r}")
