"""The ladder's data model: endpoints, segments, steps and the analysed `Ladder`.

What both renderers (`tcpstack.lab.ladder_text`, `tcpstack.lab.ladder_svg`) draw and
what the replay (`tcpstack.lab.ladder_replay`) produces, with the label notation.

Notation (default, relative; ``--absolute`` prints the raw 32-bit numbers)
    As in the textbook chapter, x is the client's initial sequence number and y the
    server's (the header says which raw numbers they stand for). Without the
    side's SYN in the capture, its base is the ISN the other side's SYN+ACK
    acknowledges, else the first sequence number it sent. A label lists the
    flags in the order SYN, FIN, RST, PSH, ACK, URG, ECE, CWR, joined by
    commas, then ``seq=`` relative to the sender's base, ``ack=`` (only with
    the ACK flag) relative to the receiver's, and ``len=`` when there is
    payload: ``SYN seq=x``, ``SYN,ACK seq=y ack=x+1``, ``ACK seq=x+1 ack=y+1``,
    ``PSH,ACK seq=x+1 ack=y+1 len=5``. Offsets use modulo-2**32 arithmetic, so
    they survive the wrap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from tcpstack.core.segment import Flags
from tcpstack.core.segment import Segment as TcpSegment
from tcpstack.core.seq import seq_add, seq_diff
from tcpstack.core.states import State

#: Label order of the flags: the handshake and release bits first, as the textbook chapter writes
#: them.
FLAG_ORDER = (Flags.SYN, Flags.FIN, Flags.RST, Flags.PSH, Flags.ACK, Flags.URG, Flags.ECE,
              Flags.CWR)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a connection, printed ``A.B.C.D:P``."""

    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class Seg:
    """One segment as the ladder needs it: when, which way, and its numbers.

    Deliberately smaller than `tcpstack.core.segment.Segment` (no addresses, options
    or bytes), so tests and `tcpstack demo` can write ladders by hand.
    """

    time: float
    from_client: bool
    flags: Flags
    seq: int
    ack: int = 0
    length: int = 0

    @classmethod
    def of(cls, segment: TcpSegment, time: float, from_client: bool) -> Seg:
        """The record for a stack `Segment` (e.g. one a TCB produced)."""
        return cls(time, from_client, Flags(segment.flags), segment.seq, segment.ack,
                   len(segment.payload))

    @property
    def seg_len(self) -> int:
        """Sequence space occupied: payload plus one each for SYN and FIN."""
        return self.length + (Flags.SYN in self.flags) + (Flags.FIN in self.flags)

    @property
    def end(self) -> int:
        """The sequence number after this segment (what a full ACK of it carries)."""
        return seq_add(self.seq, self.seg_len)

    def has(self, flag: Flags) -> bool:
        return flag in self.flags


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One state transition logged by the daemon's --trace."""

    local: Endpoint
    remote: Endpoint
    old: State
    new: State
    cause: str


@dataclass(slots=True)
class Step:
    """One segment of the ladder with what the analysis found out about it."""

    seg: Seg
    retransmission: int  # 0 for an original, n for the n-th retransmission
    lost: bool
    client_state: State  # after the segment
    server_state: State
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Ladder:
    """An analysed connection: what both renderers draw."""

    client: str  # display names, e.g. "client 10.0.0.1:40000"
    server: str
    client_base: int | None  # x, y: the bases of relative numbers
    server_base: int | None
    client_isn_known: bool  # the base is an ISN (a SYN was seen), not a first seq
    server_isn_known: bool
    initial: tuple[State, State]
    steps: list[Step]
    trailer: list[str]  # notes after the last segment (trace transitions on timers)
    final: tuple[State, State]

    @property
    def t0(self) -> float:
        return self.steps[0].seg.time if self.steps else 0.0

    def time(self, step: Step) -> float:
        """Seconds since the connection's first segment."""
        return step.seg.time - self.t0

    def stamp(self, step: Step) -> str:
        """The margin's timestamp: seconds with the capture's microseconds."""
        return f"{self.time(step):.6f}"

    def bases(self) -> tuple[str, str]:
        """Header lines naming x and y (the relative notation's legend)."""
        return (_base_legend("x", self.client_base, self.client_isn_known),
                _base_legend("y", self.server_base, self.server_isn_known))

    def label(self, step: Step, absolute: bool = False) -> str:
        """``SYN,ACK seq=y ack=x+1`` (or raw numbers), plus the marks."""
        seg = step.seg
        own, peer = ((self.client_base, self.server_base) if seg.from_client
                     else (self.server_base, self.client_base))
        own_name, peer_name = ("x", "y") if seg.from_client else ("y", "x")
        parts = [",".join(f.name or "" for f in FLAG_ORDER if f in seg.flags) or "none"]
        parts.append("seq=" + _number(seg.seq, None if absolute else own, own_name))
        if seg.has(Flags.ACK):
            parts.append("ack=" + _number(seg.ack, None if absolute else peer, peer_name))
        if seg.length:
            parts.append(f"len={seg.length}")
        if step.retransmission:
            parts.append(f"(retransmission #{step.retransmission})")
        if step.lost:
            parts.append("(lost)")
        return " ".join(parts)


def _number(value: int, base: int | None, name: str) -> str:
    """``x``, ``x+1``, ``x-3`` relative to `base`; the raw number without one."""
    if base is None:
        return str(value)
    offset = seq_diff(value, base)
    return name if offset == 0 else f"{name}{offset:+d}"


def _base_legend(name: str, base: int | None, isn: bool) -> str:
    if base is None:
        return ""
    return f"{name} = {base}" + (" (ISN)" if isn else " (first seq seen)")


def parse_endpoint(text: str) -> Endpoint:
    """``A.B.C.D:P`` -> Endpoint; raises ValueError (AddressValueError) when malformed."""
    ip, _, port = text.rpartition(":")
    return Endpoint(str(IPv4Address(ip)), int(port))
