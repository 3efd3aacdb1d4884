"""Plain TCP segment objects: what the TCB consumes and produces.

The TCB never sees packet bytes; the codec at the edge (`tcpstack.wire.codec`)
turns IPv4/TCP packets into `Segment` objects and back, so the wire format
library can change without touching the state machine.

Control bits are plain ints on the hot path: `Segment.flags` is an `int`, tested
against the module constants `SYN`, `ACK`, ... An `IntFlag` operation costs ~1 µs
(the enum machinery builds a new member for every `&` and `|`), a plain int's
~0.07 µs, and a segment takes about eight of them. `Flags` stays for display
(`flags_str`, the ladder), where readability matters and the cost does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntFlag
from typing import Final

# TCP control bits (RFC 9293 3.1) as plain ints, for the hot path.
FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80


class Flags(IntFlag):
    """TCP control bits (RFC 9293 3.1) as a flag enum, for display and the ladder."""

    FIN = FIN
    SYN = SYN
    RST = RST
    PSH = PSH
    ACK = ACK
    URG = URG
    ECE = ECE
    CWR = CWR

    def __str__(self) -> str:
        return flags_str(self)


_FLAG_NAMES: Final = tuple((int(f), f.name or "") for f in Flags)


def flags_str(flags: int) -> str:
    """The control bits in `flags` by name, e.g. ``SYN|ACK``; ``-`` for none."""
    return "|".join(name for bit, name in _FLAG_NAMES if flags & bit) or "-"


@dataclass(slots=True, init=False)
class Options:
    """The TCP options the stack understands (RFC 9293 3.2, RFC 7323, RFC 2018).

    Immutable by convention: segments without options share `EMPTY_OPTIONS`
    (most segments of a connection without timestamps, and every RST), so never
    assign to a field of an Options you did not just build; build a new one. Not
    frozen, because a frozen dataclass costs five times as much to build, and
    the codec builds one per segment that has options. The `__init__` is written
    out (`init=False`) for the compiled core: mypyc compiles it, while the one
    the dataclass decorator generates at import time runs as interpreted Python,
    5-7 times slower (docs/benchmarks.md "What the compiler needs").
    """

    mss: int | None
    wscale: int | None
    sack_permitted: bool
    timestamp: tuple[int, int] | None
    sack_blocks: Sequence[tuple[int, int]]

    def __init__(self, mss: int | None = None, wscale: int | None = None,
                 sack_permitted: bool = False, timestamp: tuple[int, int] | None = None,
                 sack_blocks: Sequence[tuple[int, int]] = ()) -> None:
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.timestamp = timestamp
        self.sack_blocks = sack_blocks


#: A segment's data: bytes, or a view of them (the send buffer hands out views
#: of the application's writes, the codec of the packet read), so that data is
#: not copied on its way through the stack; whoever keeps it past the call
#: copies it then.
Payload = bytes | memoryview

#: The options of every segment that carries none (see `Options`).
EMPTY_OPTIONS: Final = Options()


@dataclass(slots=True, init=False)
class Segment:
    """One TCP segment, addressed by its 4-tuple.

    ``src``/``dst`` are IPv4 addresses as 4-byte ``bytes``; ``seq``/``ack``
    are raw 32-bit sequence numbers. A nonzero ``gso_size`` makes it a
    super-segment (docs/offload.md): it stands for consecutive wire segments of
    ``gso_size`` payload octets each (the last may be shorter), which the
    kernel cuts it into (TSO) or coalesced it from (GRO). The `__init__` is
    written out for the compiled core, as `Options`'s: one is built per packet.
    """

    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int  # the control bits: FIN, SYN, ... (plain ints, see the module docstring)
    window: int
    options: Options
    payload: Payload
    gso_size: int

    def __init__(self, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int,
                 flags: int, window: int, options: Options = EMPTY_OPTIONS,
                 payload: Payload = b"", gso_size: int = 0) -> None:
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.options = options
        self.payload = payload
        self.gso_size = gso_size

    @property
    def wire_segments(self) -> int:
        """How many segments this one stands for on the wire."""
        if not self.gso_size:
            return 1
        return max(1, -(-len(self.payload) // self.gso_size))

    @property
    def seg_len(self) -> int:
        """SEG.LEN: payload octets plus one for SYN and one for FIN (RFC 9293 3.4)."""
        n = len(self.payload)
        if self.flags & SYN:
            n += 1
        if self.flags & FIN:
            n += 1
        return n

    def describe(self) -> str:
        """A one-line human summary, e.g. ``SYN|ACK seq=1 ack=2 win=64240 len=0``."""
        return (
            f"{self.sport}>{self.dport} {flags_str(self.flags)} seq={self.seq} ack={self.ack} "
            f"win={self.window} len={len(self.payload)}"
        )
