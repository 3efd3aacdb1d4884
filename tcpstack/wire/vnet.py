"""The virtio-net header: how TCP segmentation and checksum offloads cross a TUN device.

A TUN opened with IFF_VNET_HDR puts a `struct virtio_net_hdr` (10 octets,
<linux/virtio_net.h>, native byte order: little-endian on x86) in front of
every packet, in both directions. With TUNSETOFFLOAD (TUN_F_CSUM |
TUN_F_TSO4) the kernel then hands the stack TCP super-segments of up to
64 KiB whose checksum it has not computed (the header says NEEDS_CSUM: the
packet is its own, already trusted) and takes such super-segments from the
stack, cutting them into MSS-sized segments (or delivering them whole to its
own socket through GRO). One packet per 64 KiB instead of one per 1,448
octets is what makes a Python stack fast: the per-packet cost dominates.

The header fields, as the kernel fills and reads them:

* flags: NEEDS_CSUM (the TCP checksum field holds only the pseudo-header sum;
  the checksum is to be completed over the octets from `csum_start`, the sum
  going to `csum_start + csum_offset`), DATA_VALID (already verified).
* gso_type: NONE, or TCPV4 for a super-segment to be cut into pieces of
  `gso_size` payload octets; `hdr_len` is the IPv4 plus TCP header length.

The kernel cuts a super-segment as RFC 9293 segments would look (Linux
tcp_gso_segment): consecutive sequence numbers, the same ACK, window and
options on every piece, PSH and FIN only on the last, CWR only on the first.
`wire_packets` does the same for the pcap tap and tests, so a capture shows
what the wire would carry.

Only this module and `tcpstack.wire.tun` know the header; the TCB only learns that
a segment stands for several (`Segment.gso_size`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from tcpstack.wire.codec import DropReason, Malformed

HEADER: Final = struct.Struct("<BBHHHH")  # struct virtio_net_hdr without num_buffers
HEADER_LEN: Final = HEADER.size  # 10, the TUN's default (TUNSETVNETHDRSZ)
F_NEEDS_CSUM: Final = 1
F_DATA_VALID: Final = 2
GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_ECN: Final = 0x80  # a flag on gso_type: the super-segment carries CWR (RFC 3168)
TCP_CSUM_OFFSET: Final = 16  # the checksum field within the TCP header
IP_HEADER_LEN: Final = 20  # the stack sends no IP options
IPPROTO_TCP: Final = 6
TCP_FIN, TCP_PSH, TCP_CWR = 0x01, 0x08, 0x80

#: The header of a packet that needs nothing done (an ICMP reply, checksums complete).
PLAIN: Final = HEADER.pack(0, GSO_NONE, 0, 0, 0, 0)


@dataclass(slots=True, init=False)
class VnetHeader:
    """One `struct virtio_net_hdr`: one per packet read with offloads, so its
    `__init__` is written out for the compiled shell (see
    `tcpstack.core.segment.Options`); immutable by convention."""

    flags: int
    gso_type: int
    hdr_len: int
    gso_size: int
    csum_start: int
    csum_offset: int

    def __init__(self, flags: int = 0, gso_type: int = GSO_NONE, hdr_len: int = 0,
                 gso_size: int = 0, csum_start: int = 0, csum_offset: int = 0) -> None:
        self.flags = flags
        self.gso_type = gso_type
        self.hdr_len = hdr_len
        self.gso_size = gso_size
        self.csum_start = csum_start
        self.csum_offset = csum_offset

    @property
    def checksum_trusted(self) -> bool:
        """Whether the kernel vouches for the packet: its own (NEEDS_CSUM, the
        checksum not even computed yet) or verified (DATA_VALID). Anything else,
        e.g. a packet injected through a packet socket, is verified as usual."""
        return bool(self.flags & (F_NEEDS_CSUM | F_DATA_VALID))

    @property
    def tcp_gso_size(self) -> int:
        """The piece size of a TCP super-segment, or 0 for a single packet."""
        return self.gso_size if self.gso_type & ~GSO_ECN == GSO_TCPV4 else 0


def parse(frame: bytes) -> tuple[VnetHeader, bytes]:
    """Split a frame read from the TUN into its header and the IPv4 packet."""
    if len(frame) < HEADER_LEN:
        raise Malformed(DropReason.TRUNCATED)
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = HEADER.unpack_from(frame)
    # Named, not `*`-unpacked: the compiled call is then a direct one.
    header = VnetHeader(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)
    return header, frame[HEADER_LEN:]


def tcp_frame(packet: bytes, gso_size: int) -> bytes:
    """The frame for an outgoing TCP packet whose checksum field holds the
    pseudo-header sum (`pseudo_header_sum`): the kernel completes the checksum
    and, with `gso_size`, cuts the packet into pieces of that many octets."""
    hdr_len = IP_HEADER_LEN + (packet[IP_HEADER_LEN + 12] >> 4) * 4
    gso_type = GSO_TCPV4 if gso_size else GSO_NONE
    return HEADER.pack(F_NEEDS_CSUM, gso_type, hdr_len, gso_size, IP_HEADER_LEN,
                       TCP_CSUM_OFFSET) + packet


def ones_sum(data: bytes, initial: int = 0) -> int:
    """The 16-bit one's complement sum of `data` (RFC 1071), folded.

    The sum of big-endian 16-bit words taken modulo 0xFFFF is the number
    itself modulo 0xFFFF (2**16 is 1 modulo 0xFFFF), so one `int.from_bytes`
    replaces a loop over the words; 0 comes out as 0xFFFF, the other zero of
    one's complement, which every verifier accepts alike.
    """
    if len(data) % 2:
        data += b"\0"
    s = (int.from_bytes(data, "big") + initial) % 0xFFFF
    return s or 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, tcp_length: int) -> int:
    """The folded, uncomplemented sum of the TCP pseudo-header (RFC 9293 3.1):
    what a NEEDS_CSUM packet carries in its checksum field."""
    return ones_sum(src + dst + struct.pack(">HH", IPPROTO_TCP, tcp_length))


def wire_packets(frame: bytes) -> list[bytes]:
    """The packets a frame stands for on the wire, checksums complete: a
    super-segment cut into its pieces as the kernel would cut it, a NEEDS_CSUM
    packet with its checksum filled in, anything else (a malformed one too)
    as it is."""
    if len(frame) < HEADER_LEN:
        return [frame]
    hdr, packet = parse(frame)
    headers = _tcp_headers(packet)
    if headers is None:
        return [packet]
    if hdr.tcp_gso_size:
        return _segment(packet, *headers, hdr.tcp_gso_size)
    if hdr.flags & F_NEEDS_CSUM and hdr.csum_start + hdr.csum_offset + 2 <= len(packet):
        return [_complete(packet, hdr.csum_start, hdr.csum_offset)]
    return [packet]


def _tcp_headers(packet: bytes) -> tuple[int, int, int] | None:
    """(IPv4 header length, TCP header length, total length) of a TCP/IPv4
    packet whose headers fit, else None."""
    if len(packet) < 40 or packet[0] >> 4 != 4 or packet[9] != IPPROTO_TCP:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = int.from_bytes(packet[2:4], "big")
    if ihl < 20 or ihl + 20 > total or total > len(packet):
        return None
    thl = (packet[ihl + 12] >> 4) * 4
    if thl < 20 or ihl + thl > total:
        return None
    return ihl, thl, total


def _complete(packet: bytes, start: int, offset: int) -> bytes:
    """Fill in a partial checksum: the field already holds the pseudo-header sum."""
    at = start + offset
    csum = 0xFFFF - ones_sum(packet[start:])
    return packet[:at] + csum.to_bytes(2, "big") + packet[at + 2:]


def _segment(packet: bytes, ihl: int, thl: int, total: int, mss: int) -> list[bytes]:
    """Cut a TCP super-segment into pieces of `mss` payload octets (Linux
    tcp_gso_segment): each gets its own IPv4 total length, identification and
    header checksum, its sequence number and a full TCP checksum."""
    ip, tcp, payload = packet[:ihl], packet[ihl:ihl + thl], packet[ihl + thl:total]
    src, dst = ip[12:16], ip[16:20]
    ident = int.from_bytes(ip[4:6], "big")
    seq = int.from_bytes(tcp[4:8], "big")
    flags = tcp[13]
    pieces = []
    for i, offset in enumerate(range(0, len(payload), mss)):
        chunk = payload[offset:offset + mss]
        piece_flags = flags
        if offset + mss < len(payload):
            piece_flags &= ~(TCP_FIN | TCP_PSH)
        if i:
            piece_flags &= ~TCP_CWR
        iph = bytearray(ip)
        iph[2:4] = (ihl + thl + len(chunk)).to_bytes(2, "big")
        iph[4:6] = ((ident + i) & 0xFFFF).to_bytes(2, "big")
        iph[10:12] = b"\0\0"
        iph[10:12] = (0xFFFF - ones_sum(bytes(iph))).to_bytes(2, "big")
        tcph = bytearray(tcp)
        tcph[4:8] = ((seq + offset) & 0xFFFFFFFF).to_bytes(4, "big")
        tcph[13] = piece_flags
        tcph[16:18] = b"\0\0"
        pseudo = pseudo_header_sum(src, dst, thl + len(chunk))
        tcph[16:18] = (0xFFFF - ones_sum(bytes(tcph) + chunk, pseudo)).to_bytes(2, "big")
        pieces.append(bytes(iph) + bytes(tcph) + chunk)
    return pieces
