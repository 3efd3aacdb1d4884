"""Reading a capture for the ladder: the TCP/IPv4 packets of a pcap file and the
one connection to draw.

Input
    A classic pcap file (pcapng is accepted too) with link type RAW (101, or
    12/14 as some systems number DLT_RAW), Ethernet or Linux cooked (SLL,
    SLL2), as ``tcpdump -w`` writes on a TUN device, an Ethernet NIC or ``-i
    any``. Only IPv4 TCP is read; fragments and undecodable packets are
    skipped. ``--conn PORT`` picks the first connection using that port,
    ``--conn A.B.C.D:P-E.F.G.H:Q`` a 4-tuple given in either order; by default
    the first TCP connection in the file. All segments of that 4-tuple form
    one ladder, in capture order.

Client and server
    The client (left) is the side that sent the first SYN without ACK; failing
    that, the receiver of the first SYN+ACK; failing that, the side that sent
    first. Times in the margin are seconds since the connection's first packet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address
from typing import BinaryIO

import dpkt

from tcpstack.core.segment import Flags
from tcpstack.lab.argparsing import EXIT_USAGE
from tcpstack.lab.ladder_model import Endpoint, Seg, parse_endpoint

EXIT_NO_CONNECTION = 1


class LadderError(Exception):
    """A failure the user sees as one line; `status` is the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Packet:
    """A TCP/IPv4 packet of the capture, reduced to what a ladder shows."""

    time: float
    src: Endpoint
    dst: Endpoint
    flags: Flags
    seq: int
    ack: int
    length: int


def _ipv4_raw(buf: bytes) -> object:
    return dpkt.ip.IP(buf) if buf and buf[0] >> 4 == 4 else None


#: Link types we decode, to a function giving the network-layer object.
_LINKS: dict[int, Callable[[bytes], object]] = {
    101: _ipv4_raw, 12: _ipv4_raw, 14: _ipv4_raw, 228: _ipv4_raw,  # RAW, DLT_RAW, IPV4
    1: lambda buf: dpkt.ethernet.Ethernet(buf).data,
    113: lambda buf: dpkt.sll.SLL(buf).data,
    276: lambda buf: dpkt.sll2.SLL2(buf).data,
}


def _open_reader(f: BinaryIO, path: str) -> dpkt.pcap.Reader | dpkt.pcapng.Reader:
    """A dpkt reader for a pcap or pcapng file; anything else is a usage error."""
    magic = f.read(4)
    f.seek(0)
    try:
        if magic == b"\x0a\x0d\x0d\x0a":
            return dpkt.pcapng.Reader(f)
        return dpkt.pcap.Reader(f)
    except (ValueError, dpkt.UnpackError) as e:
        raise LadderError(f"{path}: not a pcap file ({e})", EXIT_USAGE) from None


def _packet(time: float, ip: object) -> Packet | None:
    """The packet if `ip` is an unfragmented IPv4 TCP packet, else None."""
    if not isinstance(ip, dpkt.ip.IP) or ip.p != dpkt.ip.IP_PROTO_TCP:
        return None
    if ip.mf or ip.offset:  # a fragment: its TCP header may be elsewhere
        return None
    tcp = ip.data
    if not isinstance(tcp, dpkt.tcp.TCP):
        return None
    # The IP length, not len(tcp.data): a short snaplen truncates the payload.
    length = max(0, ip.len - ip.hl * 4 - tcp.off * 4)
    return Packet(time, Endpoint(str(IPv4Address(ip.src)), tcp.sport),
                  Endpoint(str(IPv4Address(ip.dst)), tcp.dport), Flags(tcp.flags & 0xFF),
                  tcp.seq, tcp.ack, length)


def read_capture(path: str) -> list[Packet]:
    """The IPv4 TCP packets of a capture file, in capture order."""
    try:
        with open(path, "rb") as f:
            return _read_packets(f, path)
    except OSError as e:
        raise LadderError(f"{path}: {e.strerror}", EXIT_USAGE) from None


def _read_packets(f: BinaryIO, path: str) -> list[Packet]:
    reader = _open_reader(f, path)
    decode = _LINKS.get(reader.datalink())
    if decode is None:
        raise LadderError(f"{path}: unsupported link type {reader.datalink()} "
                          "(RAW, Ethernet and Linux cooked are supported)", EXIT_USAGE)
    packets = []
    try:
        for ts, buf in reader:
            try:
                packet = _packet(float(ts), decode(buf))
            except (dpkt.UnpackError, ValueError, IndexError):
                continue  # one undecodable packet does not spoil the capture
            if packet is not None:
                packets.append(packet)
    except (dpkt.UnpackError, ValueError):
        pass  # a truncated last record: keep what was read
    return packets


ConnSpec = int | tuple[Endpoint, Endpoint]


def parse_conn(text: str) -> ConnSpec:
    """``PORT`` or ``A.B.C.D:P-E.F.G.H:Q``; raises ValueError with the reason."""
    if text.isdigit():
        port = int(text)
        if not 0 < port < 65536:
            raise ValueError(f"port out of range: {text}")
        return port
    a, sep, b = text.partition("-")
    try:
        if not sep:
            raise ValueError
        ends = (parse_endpoint(a), parse_endpoint(b))
    except (AddressValueError, ValueError):
        raise ValueError(f"expected PORT or A.B.C.D:P-E.F.G.H:Q, got {text!r}") from None
    if not all(0 < e.port < 65536 for e in ends):
        raise ValueError(f"port out of range in {text!r}")
    return ends


def _matches(key: frozenset[Endpoint], spec: ConnSpec | None) -> bool:
    if spec is None:
        return True
    if isinstance(spec, int):
        return any(e.port == spec for e in key)
    return key == frozenset(spec)


def select_connection(packets: Sequence[Packet], spec: ConnSpec | None = None
                      ) -> tuple[Endpoint, Endpoint, list[Seg]]:
    """(client, server, segments) of the first connection matching `spec`."""
    conns: dict[frozenset[Endpoint], list[Packet]] = {}
    for p in packets:
        conns.setdefault(frozenset((p.src, p.dst)), []).append(p)
    if not conns:
        raise LadderError("no TCP connection in the capture", EXIT_NO_CONNECTION)
    key = next((k for k in conns if _matches(k, spec)), None)
    if key is None:
        raise LadderError("no TCP connection in the capture matches --conn", EXIT_NO_CONNECTION)
    pkts = conns[key]
    opener = (next((p for p in pkts if (p.flags & (Flags.SYN | Flags.ACK)) == Flags.SYN), None)
              or next((_reversed(p) for p in pkts if p.flags & Flags.SYN), None) or pkts[0])
    client, server = opener.src, opener.dst
    segments = [Seg(p.time, p.src == client, p.flags, p.seq, p.ack, p.length) for p in pkts]
    return client, server, segments


def _reversed(p: Packet) -> Packet:
    """`p` as if sent the other way (the receiver of a SYN+ACK is the client)."""
    return Packet(p.time, p.dst, p.src, p.flags, p.seq, p.ack, p.length)

