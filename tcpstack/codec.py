"""IPv4/TCP/ICMP packets to and from plain objects: the only module that knows the wire format.

Decoding is strict because every packet comes from an untrusted peer: anything
malformed raises `Malformed` with a `DropReason`, which the stack counts and
drops. The TCB only ever sees `Segment` objects, so this module (built on dpkt)
could be replaced by a faster codec without touching the state machine.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

import dpkt

from tcpstack.segment import Flags, Options, Segment

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
TTL = 64  # Linux's default net.ipv4.ip_default_ttl

# TCP option kinds (RFC 9293 3.2, RFC 7323, RFC 2018)
OPT_EOL, OPT_NOP, OPT_MSS, OPT_WSCALE, OPT_SACK_PERMITTED, OPT_SACK, OPT_TIMESTAMP = (
    0, 1, 2, 3, 4, 5, 8,
)


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
    payload: bytes


def _checksum_ok(data: bytes, initial: int = 0) -> bool:
    return dpkt.in_cksum_done(dpkt.in_cksum_add(initial, data)) == 0


def _pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    return dpkt.in_cksum_add(0, struct.pack(">4s4sxBH", src, dst, proto, length))


def decode(packet: bytes, *, verify_checksum: bool = True) -> Segment | IcmpEcho:
    """Parse one IPv4 packet read from the TUN device.

    Raises `Malformed` for anything the stack does not accept: RFC 1122 3.2.1
    requires silently discarding datagrams with bad checksums; IP options and
    fragments are not supported and dropped as well. `verify_checksum=False`
    skips the TCP checksum where the TUN's virtio-net header says the kernel
    vouches for it (`tcpstack.vnet`): a NEEDS_CSUM packet carries only the
    pseudo-header sum in that field.
    """
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
        return _decode_tcp(ip, body, verify_checksum)
    if ip.p == IPPROTO_ICMP:
        return _decode_icmp(ip, body)
    raise Malformed(DropReason.PROTOCOL)


def _decode_tcp(ip: dpkt.ip.IP, body: bytes, verify_checksum: bool) -> Segment:
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
        flags=Flags(tcp.flags),
        window=tcp.win,
        options=parse_options(body[20:off]),
        payload=body[off:],
    )


def parse_options(raw: bytes) -> Options:
    """Decode the TCP options we use; unknown or malformed ones are ignored (RFC 9293 3.1)."""
    opts = Options()
    if not raw:
        return opts
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


def build_options(opts: Options) -> bytes:
    """Encode options in Linux's order, NOP-padded to a multiple of four bytes."""
    out = bytearray()
    if opts.mss is not None:
        out += struct.pack(">BBH", OPT_MSS, 4, opts.mss)
    if opts.sack_permitted and opts.timestamp is not None:
        out += struct.pack(">BBBBII", OPT_SACK_PERMITTED, 2, OPT_TIMESTAMP, 10, *opts.timestamp)
    elif opts.timestamp is not None:
        out += struct.pack(">BBBBII", OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10, *opts.timestamp)
    elif opts.sack_permitted:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2))
    if opts.wscale is not None:
        out += bytes((OPT_NOP, OPT_WSCALE, 3, opts.wscale))
    if opts.sack_blocks:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(opts.sack_blocks)))
        for left, right in opts.sack_blocks:
            out += struct.pack(">II", left, right)
    return bytes(out)


def encode(seg: Segment, *, partial_checksum: bool = False) -> bytes:
    """Build the IPv4 packet for one outgoing segment, checksums included.

    `partial_checksum` leaves the TCP checksum to the kernel (checksum offload,
    `tcpstack.vnet`): the field gets only the folded pseudo-header sum."""
    raw_opts = build_options(seg.options)
    tcp = dpkt.tcp.TCP(
        sport=seg.sport,
        dport=seg.dport,
        seq=seg.seq,
        ack=seg.ack,
        flags=int(seg.flags),
        win=seg.window,
        opts=raw_opts,
        off=5 + len(raw_opts) // 4,  # dpkt does not derive the data offset from opts
        data=seg.payload,
    )
    if partial_checksum:
        # dpkt fills in a zero checksum only; in_cksum_done complements the sum.
        tcp.sum = ~dpkt.in_cksum_done(_pseudo_header_sum(
            seg.src, seg.dst, IPPROTO_TCP, len(tcp))) & 0xFFFF
    return _ip(seg.src, seg.dst, IPPROTO_TCP, tcp)


def _ip(src: bytes, dst: bytes, proto: int, data: dpkt.Packet) -> bytes:
    # df=1 rather than off=IP_DF, which dpkt 1.9.8 rejects.
    return bytes(dpkt.ip.IP(src=src, dst=dst, p=proto, ttl=TTL, df=1, data=data))


def _decode_icmp(ip: dpkt.ip.IP, body: bytes) -> IcmpEcho:
    if len(body) < 8:
        raise Malformed(DropReason.TRUNCATED)
    if not _checksum_ok(body):
        raise Malformed(DropReason.ICMP_CHECKSUM)
    if body[0] != ICMP_ECHO_REQUEST or body[1] != 0:
        raise Malformed(DropReason.ICMP_TYPE)
    ident, seqno = struct.unpack(">HH", body[4:8])
    return IcmpEcho(src=ip.src, dst=ip.dst, ident=ident, seqno=seqno, payload=body[8:])


def encode_echo_reply(req: IcmpEcho) -> bytes:
    """The echo reply to `req` (RFC 792): same identifier, sequence number and data."""
    icmp = dpkt.icmp.ICMP(
        type=ICMP_ECHO_REPLY,
        code=0,
        data=dpkt.icmp.ICMP.Echo(id=req.ident, seq=req.seqno, data=req.payload),
    )
    return _ip(req.dst, req.src, IPPROTO_ICMP, icmp)
