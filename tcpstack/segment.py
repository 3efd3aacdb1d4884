"""Plain TCP segment objects: what the TCB consumes and produces.

The TCB never sees packet bytes; the codec at the edge (`tcpstack.codec`)
turns IPv4/TCP packets into `Segment` objects and back, so the wire format
library can change without touching the state machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntFlag


class Flags(IntFlag):
    """TCP control bits (RFC 9293 3.1)."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80

    def __str__(self) -> str:
        return "|".join(f.name for f in Flags if f in self and f.name) or "-"


@dataclass(slots=True)
class Options:
    """The TCP options the stack understands (RFC 9293 3.2, RFC 7323, RFC 2018)."""

    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    timestamp: tuple[int, int] | None = None
    sack_blocks: list[tuple[int, int]] = field(default_factory=list)


@dataclass(slots=True)
class Segment:
    """One TCP segment, addressed by its 4-tuple.

    ``src``/``dst`` are IPv4 addresses as 4-byte ``bytes``; ``seq``/``ack``
    are raw 32-bit sequence numbers. A nonzero ``gso_size`` makes it a
    super-segment (docs/offload.md): it stands for consecutive wire segments of
    ``gso_size`` payload octets each (the last may be shorter), which the
    kernel cuts it into (TSO) or coalesced it from (GRO).
    """

    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: Flags
    window: int
    options: Options = field(default_factory=Options)
    payload: bytes = b""
    gso_size: int = 0

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
        if self.flags & Flags.SYN:
            n += 1
        if self.flags & Flags.FIN:
            n += 1
        return n

    def describe(self) -> str:
        """A one-line human summary, e.g. ``SYN|ACK seq=1 ack=2 win=64240 len=0``."""
        return (
            f"{self.sport}>{self.dport} {self.flags} seq={self.seq} ack={self.ack} "
            f"win={self.window} len={len(self.payload)}"
        )
