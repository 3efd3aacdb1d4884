"""IPv4 fragments: reassembly of incoming datagrams, fragmentation of outgoing ones.

Sans-I/O like the TCB: packets in, whole datagrams out, time passed in. The
stack hands `Reassembler.receive` every packet the codec refuses as a fragment
and decodes what comes back as if it had arrived whole; `Fragmenter.split`
cuts an outgoing datagram larger than the MTU (an echo reply to `ping -s 2000`).

Reassembly is RFC 815's hole-descriptor algorithm (RFC 791 3.2 states the
same thing with a bit table), keyed by RFC 791's (source, destination,
protocol, identification), with the limits that keep hostile fragments from
costing more than the datagrams they claim to build, all as Linux does them
(net/ipv4/ip_fragment.c, inet_fragment.c; docs/ip.md says why each):

- a datagram may not exceed 65,535 octets with its header (RFC 791 3.1);
- a datagram not complete `timeout` seconds after its first fragment is
  dropped (ipfrag_time, 30 s);
- the fragments of all datagrams together may hold `mem_limit` bytes
  (ipfrag_high_thresh, 4 MiB); above it every fragment is dropped, as Linux
  has done since 4.17 (the older eviction of the oldest queues went with the
  move to rhashtables), until completions and timeouts make room;
- a datagram may have at most `max_fragments` fragments, so every operation
  on it is bounded (a plain count, where Linux bounds the disorder per peer
  with ipfrag_max_dist, 64);
- a fragment that overlaps data already received drops the whole datagram
  and counts ReasmOverlaps (RFC 5722 for IPv6; Linux does the same for IPv4
  since the FragmentSmack fix, CVE-2018-5391), so no two copies of an octet
  are ever chosen between; a fragment wholly inside received data is a
  duplicate (a retransmission) and only ignored.

Counters use the names of Linux's IP MIB (/proc/net/snmp): ReasmReqds (every
fragment), ReasmOKs, ReasmFails, ReasmTimeout, ReasmOverlaps; FragOKs and
FragCreates on the way out. ReasmDuplicates and ReasmOversize are ours.
"""

from __future__ import annotations

import random
import struct
from bisect import bisect_right
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from operator import itemgetter

import dpkt

from tcpstack.core.config import REASM_MEM, REASM_TIMEOUT

DEFAULT_MAX_FRAGMENTS = 128  # a 64 KiB datagram over a 576-octet MTU needs 118
MAX_DATAGRAM = 65535  # RFC 791 3.1: Total Length is 16 bits
#: What a fragment and a datagram cost beyond the fragments' octets (Python
#: objects, table and list entries): the memory cap counts these too, like
#: Linux's skb truesize, so that a flood of 8-octet fragments of distinct
#: datagrams holds no more than the cap in memory (measured with tracemalloc,
#: the cap full: 0.77 to 0.94 of it for 8-octet, full-size and 127-hole
#: datagrams; with a per-fragment charge alone, 2.7 times it).
FRAGMENT_OVERHEAD = 256
DATAGRAM_OVERHEAD = 512

_HEADER = struct.Struct(">BBHHHBBH4s4s")  # RFC 791 3.1, without options
_MF = 0x2000
_OFFSET = 0x1FFF
_INFINITY = 1 << 17  # the end of RFC 815's first hole: beyond any offset

FragKey = tuple[bytes, bytes, int, int]  # RFC 791: source, destination, protocol, identification

#: The key of bisect over the holes; a module attribute so tests can count its calls.
hole_first = itemgetter(0)


@dataclass(slots=True)
class _Datagram:
    """One datagram being reassembled (Linux's struct ipq)."""

    deadline: float
    charged: int  # bytes counted against the memory cap
    #: RFC 815's hole descriptors as [first, end) pairs, sorted and disjoint.
    holes: list[tuple[int, int]] = field(default_factory=lambda: [(0, _INFINITY)])
    pieces: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, data)
    header: bytes = b""  # the offset-0 fragment's header becomes the datagram's (RFC 791 3.2)
    extent: int = 0  # the end of the furthest data received
    last_in: bool = False  # the fragment without MF has come: `extent` is the length


class Reassembler:
    """Collects fragments into whole datagrams within hard limits.

    `receive(packet, now)` returns the whole datagram (a valid unfragmented
    IPv4 packet, header checksum included) when `packet` completes one, else
    None. Timeouts are applied lazily on each call and by `expire(now)`, which
    the stack runs at `next_deadline()`. Every call costs O(log n + n) list
    work with n <= `max_fragments`, the assembly O(n log n) once per datagram.
    """

    def __init__(self, stats: Counter[str], *, timeout: float = REASM_TIMEOUT,
                 mem_limit: int = REASM_MEM,
                 max_fragments: int = DEFAULT_MAX_FRAGMENTS) -> None:
        self.stats = stats
        self.timeout = timeout
        self.mem_limit = mem_limit
        self.max_fragments = max_fragments
        #: Bytes the datagrams in progress hold (with FRAGMENT_OVERHEAD each fragment).
        self.mem = 0
        # In order of creation, which is the order of deadlines: expiry pops the front.
        self._datagrams: OrderedDict[FragKey, _Datagram] = OrderedDict()

    def __len__(self) -> int:
        return len(self._datagrams)

    def next_deadline(self) -> float | None:
        """When the oldest datagram in progress times out; None when there is none."""
        for datagram in self._datagrams.values():
            return datagram.deadline
        return None

    def expire(self, now: float) -> None:
        """Drop every datagram whose time is up (Linux ip_expire: ReasmFails and ReasmTimeout).

        Linux also sends an ICMP time exceeded (code 1) when the first fragment
        had come; we send no ICMP errors."""
        datagrams = self._datagrams
        while datagrams:
            key, datagram = next(iter(datagrams.items()))
            if datagram.deadline > now:
                return
            self._kill(key)
            self.stats["ReasmTimeout"] += 1

    def receive(self, packet: bytes, now: float) -> bytes | None:
        """Take one fragment: an IPv4 packet with MF set or a nonzero offset whose
        header the codec has checked (version, no options, checksum, length)."""
        stats = self.stats
        stats["ReasmReqds"] += 1
        self.expire(now)
        _, _, total, ident, frag, _, proto, _, src, dst = _HEADER.unpack_from(packet)
        offset = (frag & _OFFSET) * 8
        more = bool(frag & _MF)
        data = packet[20:total]
        end = offset + len(data)
        if more:
            end &= ~7  # RFC 791 3.2: all but the last carry a multiple of 8 octets (Linux trims)
            data = data[:end - offset]
        key = (src, dst, proto, ident)
        cost = len(data) + 20 + FRAGMENT_OVERHEAD
        datagram = self._datagrams.get(key)
        if self.mem + cost + (DATAGRAM_OVERHEAD if datagram is None else 0) > self.mem_limit:
            stats["ReasmFails"] += 1  # like Linux, not even an existing datagram gets it
            return None
        if datagram is None:
            datagram = self._datagrams[key] = _Datagram(now + self.timeout, DATAGRAM_OVERHEAD)
            self.mem += DATAGRAM_OVERHEAD
        if 20 + end > MAX_DATAGRAM:
            stats["ReasmOversize"] += 1
            return self._kill(key)
        if not self._take_length(datagram, end, more) or end == offset:
            return self._kill(key)  # data beyond the last fragment's end, or none at all
        if len(datagram.pieces) >= self.max_fragments:
            return self._kill(key)
        placed = self._fill_hole(datagram, offset, end)
        if placed is None:
            # A retransmitted fragment: nothing new, unless it is the last one and
            # its length closes the final hole.
            stats["ReasmDuplicates"] += 1
        elif not placed:
            stats["ReasmOverlaps"] += 1
            return self._kill(key)
        else:
            datagram.pieces.append((offset, data))
            datagram.charged += cost
            self.mem += cost
            if offset == 0:
                datagram.header = packet[:20]
        if datagram.holes:
            return None
        self._forget(key)
        stats["ReasmOKs"] += 1
        return _assemble(datagram)

    @staticmethod
    def _take_length(datagram: _Datagram, end: int, more: bool) -> bool:
        """Record what the fragment ending at `end` says of the datagram's length;
        False if it contradicts what came before. RFC 791 3.2 and Linux
        ip_frag_queue: the fragment without MF fixes the length; no data may lie
        beyond it, and a second last fragment must agree. Its arrival turns
        RFC 815's open-ended last hole into a bounded one."""
        if not more:
            if end < datagram.extent or (datagram.last_in and end != datagram.extent):
                return False
            if not datagram.last_in:
                datagram.last_in = True
                # Until now the last hole was open-ended (it always is: no fragment
                # reaches _INFINITY); it starts at `extent`, which is <= end.
                first, _ = datagram.holes[-1]
                if first < end:
                    datagram.holes[-1] = (first, end)
                else:
                    datagram.holes.pop()
        elif end > datagram.extent and datagram.last_in:
            return False
        datagram.extent = max(datagram.extent, end)
        return True

    @staticmethod
    def _fill_hole(datagram: _Datagram, first: int, end: int) -> bool | None:
        """RFC 815 steps 1-6 for the fragment [first, end): True when it lies in
        one hole (which it splits), None when it lies wholly in data already
        received (a duplicate), False when it overlaps received data."""
        holes = datagram.holes
        i = bisect_right(holes, first, key=hole_first) - 1
        if i >= 0 and first < holes[i][1]:
            hole_start, hole_end = holes[i]
            if end > hole_end:
                return False
            # Steps 4-6: what is left of the hole before and after the fragment.
            rest = [(s, e) for s, e in ((hole_start, first), (end, hole_end)) if s < e]
            holes[i:i + 1] = rest
            return True
        following = holes[i + 1][0] if i + 1 < len(holes) else _INFINITY
        return None if end <= following else False

    def _kill(self, key: FragKey) -> None:
        """Drop a datagram: a bad fragment (Linux: discard_qp) or its time is up."""
        self._forget(key)
        self.stats["ReasmFails"] += 1

    def _forget(self, key: FragKey) -> None:
        datagram = self._datagrams.pop(key)
        self.mem -= datagram.charged


def _assemble(datagram: _Datagram) -> bytes:
    """The whole datagram: the first fragment's header with the full length and no
    fragment bits, then the data in order (the holes are gone, so it is contiguous)."""
    datagram.pieces.sort(key=hole_first)
    payload = b"".join(data for _, data in datagram.pieces)
    header = bytearray(datagram.header)
    struct.pack_into(">H", header, 6, 0)  # no MF, offset 0
    return _with_length(header, len(payload)) + payload


def _with_length(header: bytearray, length: int) -> bytes:
    """`header` with Total Length for `length` octets of data and its checksum recomputed."""
    struct.pack_into(">H", header, 2, 20 + length)
    header[10:12] = b"\0\0"
    struct.pack_into(">H", header, 10, dpkt.in_cksum(bytes(header)))
    return bytes(header)


class Fragmenter:
    """Cuts outgoing datagrams larger than the MTU into fragments (RFC 791 3.2,
    "An Example Fragmentation Procedure").

    Only for datagrams that may be fragmented: the stack's echo replies, which
    Linux sends without DF (its ICMP socket uses IP_PMTUDISC_DONT). TCP segments
    never need it: they fit the MSS, and TSO super-segments are cut by the kernel.
    """

    def __init__(self, mtu: int, stats: Counter[str], ident: int | None = None) -> None:
        self.mtu = mtu
        self.stats = stats
        #: RFC 791 3.2 / RFC 6864 4.1: the identification must differ between
        #: fragmented datagrams of a (source, destination, protocol) within their lifetime.
        self._ident = random.getrandbits(16) if ident is None else ident

    def split(self, packet: bytes) -> list[bytes]:
        """`packet` (an IPv4 datagram without options) as it goes on the wire:
        itself when it fits the MTU, else fragments of at most MTU octets."""
        if len(packet) <= self.mtu:
            return [packet]
        step = (self.mtu - 20) & ~7
        ident, self._ident = self._ident, (self._ident + 1) & 0xFFFF
        out = [fragment(packet, first, first + step, ident)
               for first in range(0, len(packet) - 20, step)]
        self.stats["FragOKs"] += 1
        self.stats["FragCreates"] += len(out)
        return out


def fragment(datagram: bytes, first: int, end: int, ident: int) -> bytes:
    """The fragment of `datagram` (an IPv4 packet without options) that carries its
    data octets [first, end) (`first` a multiple of 8), with identification `ident`,
    DF cleared, and MF set unless it reaches the end of the data (RFC 791 3.2)."""
    data = datagram[20 + first:20 + end]
    more = _MF if 20 + end < len(datagram) else 0
    header = bytearray(datagram[:20])
    struct.pack_into(">HH", header, 4, ident, more | first >> 3)
    return _with_length(header, len(data)) + data
