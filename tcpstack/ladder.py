"""`tcpstack ladder`: one TCP connection of a capture drawn as a sequence diagram.

The seed draws connection management as a ladder: A on the left, B on the
right, time running down, one slanted arrow per segment labelled ``SYN=1
seq=x``. This module draws the same picture from a real capture, so what the
stack (or any TCP) did on the wire can be read the way the textbook reads::

    tcpstack ladder CAPTURE.pcap [--conn PORT|A.B.C.D:P-E.F.G.H:Q] [--svg OUT.svg]
                    [--absolute] [--trace LOG] [--ascii] [--width N]

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

Notation (default, relative; ``--absolute`` prints the raw 32-bit numbers)
    As in the seed, x is the client's initial sequence number and y the
    server's (the header says which raw numbers they stand for). Without the
    side's SYN in the capture, its base is the ISN the other side's SYN+ACK
    acknowledges, else the first sequence number it sent. A label lists the
    flags in the order SYN, FIN, RST, PSH, ACK, URG, ECE, CWR, joined by
    commas, then ``seq=`` relative to the sender's base, ``ack=`` (only with
    the ACK flag) relative to the receiver's, and ``len=`` when there is
    payload: ``SYN seq=x``, ``SYN,ACK seq=y ack=x+1``, ``ACK seq=x+1 ack=y+1``,
    ``PSH,ACK seq=x+1 ack=y+1 len=5``. Offsets use modulo-2**32 arithmetic, so
    they survive the wrap.

Marks (deliberately simple rules, about what the capture shows)
    retransmission
        A segment that occupies sequence space (payload, SYN or FIN) with the
        same sender, seq, length and SYN/FIN/ACK bits as an earlier one is
        labelled ``(retransmission #n)``, n counting from 1. A re-packetized
        retransmission (other length) is not recognised. The SYN+ACK that
        answers a SYN in a simultaneous open re-sends the SYN's sequence
        number but is not marked: its ACK bit differs.
    lost
        A payload or FIN segment that is retransmitted later, with no segment
        from the other side acknowledging all of it in between, is labelled
        ``(lost)`` and its arrow stops short of the receiver, which does not
        process it. This is a presumption (a retransmission after a premature
        timeout looks the same); a segment dropped before the capture point
        never appears, and nothing is said about it. SYNs and SYN+ACKs are
        never marked lost: a retransmitted SYN+ACK usually means the *answer*
        (the seed's lost third segment) went missing, which the capture cannot
        tell.

States (replay)
    Each arrow line shows the RFC 9293 state of both sides after that
    segment. The capture is the wire, so the replay lets both sides see the
    same segments in the same order: the sender changes state as it sends,
    the receiver as it receives (unless the segment is marked lost). The
    client starts CLOSED and the server LISTEN when the capture starts with a
    SYN; SYN-SENT and LISTEN when it starts with a SYN+ACK; both ESTABLISHED
    otherwise (a capture that began mid-connection). The replay is RFC 9293
    3.10 without sequence-window checks (it trusts the wire):

    - SYN sent: CLOSED/TIME-WAIT -> SYN-SENT. SYN received: LISTEN (or CLOSED,
      for a server whose earlier connection ended) -> SYN-RECEIVED; SYN-SENT
      -> SYN-RECEIVED (simultaneous open, also the seed's four-segment
      handshake, whose first bare ACK a SYN-SENT side drops).
    - An ACK of the side's SYN: SYN-SENT (with SYN) / SYN-RECEIVED ->
      ESTABLISHED. A SYN+ACK whose ack is not ISN+1 is unacceptable: ignored.
    - FIN sent: ESTABLISHED/SYN-RECEIVED -> FIN-WAIT-1, CLOSE-WAIT -> LAST-ACK.
      ACK of that FIN: FIN-WAIT-1 -> FIN-WAIT-2, CLOSING -> TIME-WAIT, LAST-ACK
      -> CLOSED. FIN received: ESTABLISHED -> CLOSE-WAIT, FIN-WAIT-1 ->
      CLOSING, FIN-WAIT-2 -> TIME-WAIT (an ACK+FIN is processed ACK first).
    - RST received: SYN-RECEIVED -> LISTEN after a passive open, else CLOSED;
      in SYN-SENT only when it acknowledges the SYN; ignored in LISTEN.
    - RST sent: the sender aborts -> CLOSED, except a *reply* RST: one that
      answers the other side's latest segment (a bare RST with seq = that
      segment's ack, or RST+ACK with ack = its end; the RST's sender sent
      nothing in between) when that segment carried a SYN, or was
      unacceptable to a side not yet synchronized. The answered segment is
      then *rejected*. If the replay found it acceptable, its receiver has no
      such connection and is shown CLOSED: a closed port (SYN answered by
      RST+ACK), or the seed's stale SYN (a SYN+ACK that acknowledges the
      client's SYN but is answered by RST: a TCP in SYN-SENT would have sent
      ACK, so the SYN was not its own). Otherwise (a SYN+ACK with a wrong ack,
      RFC 9293 figure 8) the receiver's state stays. A late RST after an
      acceptable segment without SYN (a SYN-RECEIVED side whose handshake
      timed out after the capture saw the ACK) is an abort, not a reply.
    - TIME-WAIT is left by a timer, which the capture does not show.

States (``--trace LOG``)
    The daemon's ``--trace`` logs every transition of the stack's own TCBs
    (``... tcpstack.trace: trace LOCAL REMOTE OLD -> NEW: cause``). Any line
    with ``OLD -> NEW: cause`` preceded by at least two ``A.B.C.D:P`` tokens
    is taken, the last two of them being local and remote (so ``L R``,
    ``L-R`` and ``local=L remote=R`` all work; other lines are ignored;
    ``SYN-RCVD`` and ``State.SYN_RCVD`` spellings are accepted). Those of this
    connection decide the states of the stack's side, which the local address
    names. They are matched to segments by order, not by their timestamps
    (the log's clock and resolution are not the capture's): each transition
    is attached to the first step, after the previous match, at which the
    replay enters the same new state; a transition the replay never makes (a
    timer: TIME-WAIT -> CLOSED) goes to the step of the next matched one, or
    after the last segment. From the first trace transition on, the stack's
    side shows the trace's state, and every transition is written under its
    arrow with its cause.

API
    ``main(argv)``; ``add_arguments(parser)`` + ``run(args)`` for a
    ``tcpstack ladder`` sub-command; ``analyze(segments, ...) -> Ladder`` and
    ``render_text(segments_or_ladder, ...)`` / ``render_svg(...)`` over plain
    `Seg` records, for callers without a capture file. Errors are one line on
    stderr: exit status 2 for bad arguments (missing or non-pcap file, bad
    ``--conn``), 1 when the capture has no (matching) TCP connection.

Text output
    Per segment a label line (the time in the margin; the label starts at the
    sender's lifeline) and an arrow line with both states after it, then any
    notes. Retransmissions are dashed, lost segments stop two thirds of the way
    with a cross. ``--ascii`` draws with ``| - > < X`` only, for terminals
    that render box drawing double-width (some CJK locales); ``--width``
    (default 100) sets the line length.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import AddressValueError, IPv4Address
from typing import BinaryIO

import dpkt

from tcpstack import ladder_svg
from tcpstack.argparsing import EXIT_USAGE, standalone_main
from tcpstack.segment import Flags
from tcpstack.segment import Segment as TcpSegment
from tcpstack.seq import seq_add, seq_diff
from tcpstack.states import SYNCHRONIZED, State

EXIT_NO_CONNECTION = 1
DEFAULT_WIDTH = 100
MIN_WIDTH = 60

#: Label order of the flags: the handshake and release bits first, as the seed writes them.
FLAG_ORDER = (Flags.SYN, Flags.FIN, Flags.RST, Flags.PSH, Flags.ACK, Flags.URG, Flags.ECE,
              Flags.CWR)


class LadderError(Exception):
    """A failure the user sees as one line; `status` is the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------- records


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

    Deliberately smaller than `tcpstack.segment.Segment` (no addresses, options
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


# ------------------------------------------------------------------ replay

_ON_FIN_SENT = {State.ESTABLISHED: State.FIN_WAIT_1, State.SYN_RCVD: State.FIN_WAIT_1,
                State.CLOSE_WAIT: State.LAST_ACK}
_ON_FIN_ACKED = {State.FIN_WAIT_1: State.FIN_WAIT_2, State.CLOSING: State.TIME_WAIT,
                 State.LAST_ACK: State.CLOSED}
_ON_FIN_RECEIVED = {State.ESTABLISHED: State.CLOSE_WAIT, State.FIN_WAIT_1: State.CLOSING,
                    State.FIN_WAIT_2: State.TIME_WAIT}
#: States from which sending a SYN is an active open (TIME-WAIT: a new incarnation).
_OPENS = frozenset({State.CLOSED, State.LISTEN, State.TIME_WAIT})


@dataclass(slots=True)
class _Side:
    """What the replay knows about one end: its state and the numbers that move it."""

    name: str
    state: State
    passive: bool  # came from LISTEN: an RST in SYN-RECEIVED returns there
    iss: int | None = None
    snd_max: int | None = None  # the highest sequence number sent so far (its end)
    fin: int | None = None  # sequence number of our FIN, once sent
    step: int = -1  # index of the segment being replayed, for the transition log
    log: list[tuple[int, State, State]] = field(default_factory=list)

    def move(self, new: State) -> None:
        if new is not self.state:
            self.log.append((self.step, self.state, new))
            self.state = new

    def acks_syn(self, seg: Seg) -> bool:
        """`seg` acknowledges our SYN and nothing we did not send."""
        return (seg.has(Flags.ACK) and self.iss is not None and self.snd_max is not None
                and seq_diff(seg.ack, self.iss) > 0 and seq_diff(seg.ack, self.snd_max) <= 0)

    def send(self, seg: Seg, reply: bool) -> None:
        """The side put `seg` on the wire; a `reply` RST leaves its state alone."""
        if self.snd_max is None or seq_diff(seg.end, self.snd_max) > 0:
            self.snd_max = seg.end
        if seg.has(Flags.RST):
            if not reply:
                self.move(State.CLOSED)
            return
        if seg.has(Flags.SYN):
            if not seg.has(Flags.ACK) and self.state in _OPENS:
                self.passive, self.iss, self.fin = False, seg.seq, None
                self.move(State.SYN_SENT)
            elif seg.has(Flags.ACK) and self.state is State.LISTEN:  # its SYN was not captured
                self.passive, self.iss = True, seg.seq
                self.move(State.SYN_RCVD)
            elif self.iss is None:  # the four-segment handshake's separate SYN
                self.iss = seg.seq
        if seg.has(Flags.FIN) and self.fin is None:
            self.fin = seq_add(seg.seq, seg.seg_len - 1)
            self.move(_ON_FIN_SENT.get(self.state, self.state))

    def acceptable(self, seg: Seg) -> bool:
        """Would the side process `seg`? False: drop it (and perhaps answer RST)."""
        state = self.state
        if seg.has(Flags.RST):
            if state is State.SYN_SENT:
                return self.acks_syn(seg)
            return state not in (State.LISTEN, State.CLOSED)
        if state in (State.LISTEN, State.CLOSED):
            # A finished server still has its listener, which takes a new SYN.
            listening = state is State.LISTEN or self.passive
            return listening and seg.has(Flags.SYN) and not seg.has(Flags.ACK)
        if state is State.SYN_SENT:
            # RFC 9293 3.10.7.3: an ACK must be ISS+1; without SYN the segment is dropped.
            return seg.has(Flags.SYN) and (not seg.has(Flags.ACK) or self.acks_syn(seg))
        if state is State.SYN_RCVD and seg.has(Flags.ACK):
            return self.acks_syn(seg)
        return True

    def receive(self, seg: Seg) -> None:
        """The side processed `seg` (already found acceptable)."""
        if seg.has(Flags.RST):
            passive_open = self.state is State.SYN_RCVD and self.passive
            self.move(State.LISTEN if passive_open else State.CLOSED)
            return
        if seg.has(Flags.SYN) and not seg.has(Flags.ACK):
            if self.state in (State.LISTEN, State.CLOSED):
                self.passive, self.iss, self.snd_max, self.fin = True, None, None, None
                self.move(State.SYN_RCVD)
            elif self.state is State.SYN_SENT:  # simultaneous open
                self.move(State.SYN_RCVD)
            return
        if self.state in (State.SYN_SENT, State.SYN_RCVD) and self.acks_syn(seg):
            self.move(State.ESTABLISHED)
        if seg.has(Flags.ACK) and self.fin is not None and seq_diff(seg.ack, self.fin) > 0:
            self.move(_ON_FIN_ACKED.get(self.state, self.state))
        if seg.has(Flags.FIN) and self.state in SYNCHRONIZED:
            self.move(_ON_FIN_RECEIVED.get(self.state, self.state))


def _initial_states(segments: Sequence[Seg]) -> tuple[_Side, _Side]:
    """Client and server before the first segment (see the module docstring)."""
    first = segments[0] if segments else None
    if first is not None and first.has(Flags.SYN) and not first.has(Flags.ACK):
        client, server = State.CLOSED, State.LISTEN
    elif first is not None and first.has(Flags.SYN):
        client, server = State.SYN_SENT, State.LISTEN
    else:
        client = server = State.ESTABLISHED
    c, s = _Side("client", client, passive=False), _Side("server", server, passive=True)
    if client is State.SYN_SENT and first is not None:  # the SYN was not captured
        c.iss, c.snd_max = seq_add(first.ack, -1), first.ack
    return c, s


def _retransmissions(segments: Sequence[Seg]) -> tuple[list[int], list[bool]]:
    """Retransmission numbers and lost marks, by the rules of the module docstring."""
    numbers = [0] * len(segments)
    lost = [False] * len(segments)
    last: dict[tuple[bool, int, int, bool, bool, bool], int] = {}
    for i, seg in enumerate(segments):
        if seg.seg_len == 0 or seg.has(Flags.RST):
            continue
        key = (seg.from_client, seg.seq, seg.length, seg.has(Flags.SYN), seg.has(Flags.FIN),
               seg.has(Flags.ACK))
        if key in last:
            prev = last[key]
            numbers[i] = numbers[prev] + 1
            carries_data = seg.length > 0 or seg.has(Flags.FIN)
            acked = any(o.from_client != seg.from_client and o.has(Flags.ACK)
                        and seq_diff(o.ack, seg.end) >= 0 for o in segments[prev + 1:i])
            lost[prev] = carries_data and not acked
        last[key] = i
    return numbers, lost


def _answers(segments: Sequence[Seg], lost: Sequence[bool]) -> dict[int, int]:
    """{answered segment: RST} for RSTs shaped like a reply to the peer's latest segment."""
    found: dict[int, int] = {}
    for i, rst in enumerate(segments):
        if not rst.has(Flags.RST):
            continue
        for j in range(i - 1, -1, -1):
            prev = segments[j]
            if prev.from_client == rst.from_client:
                break  # the RST's sender spoke since: not an immediate answer
            if lost[j]:
                continue
            if rst.has(Flags.ACK):
                answers = not prev.has(Flags.ACK) and rst.ack == prev.end
            else:
                answers = prev.has(Flags.ACK) and rst.seq == prev.ack
            if answers:
                found[j] = i
            break
    return found


def analyze(segments: Sequence[Seg], *, client: Endpoint | str = "client",
            server: Endpoint | str = "server", trace: Sequence[TraceEvent] = ()) -> Ladder:
    """Replay both sides over `segments` (in wire order) and mark them.

    `client` and `server` name the sides; when they are `Endpoint`s, the
    `trace` events of that connection decide the states of the stack's side.
    """
    sides = _initial_states(segments)
    initial = (sides[0].state, sides[1].state)
    numbers, lost = _retransmissions(segments)
    answers = _answers(segments, lost)
    replies: set[int] = set()
    steps: list[Step] = []
    for i, seg in enumerate(segments):
        sender, receiver = sides if seg.from_client else sides[::-1]
        sender.step = receiver.step = i
        notes: list[str] = []
        sender.send(seg, reply=i in replies)
        if not lost[i]:
            rejected = i in answers and (seg.has(Flags.SYN) or (
                receiver.state not in SYNCHRONIZED and not receiver.acceptable(seg)))
            if rejected:
                replies.add(answers[i])
                notes.append(_rejection_note(receiver, seg))
                if receiver.acceptable(seg):
                    receiver.move(State.CLOSED)
            elif receiver.acceptable(seg):
                receiver.receive(seg)
        steps.append(Step(seg, numbers[i], lost[i], sides[0].state, sides[1].state, notes))
    (client_base, client_isn), (server_base, server_isn) = (_base(segments, True),
                                                            _base(segments, False))
    ladder = Ladder(
        client=_display("client", client), server=_display("server", server),
        client_base=client_base, server_base=server_base,
        client_isn_known=client_isn, server_isn_known=server_isn,
        initial=initial, steps=steps, trailer=[], final=(sides[0].state, sides[1].state))
    if isinstance(client, Endpoint) and isinstance(server, Endpoint):
        _apply_trace(ladder, sides, client, server, trace)
    return ladder


def _rejection_note(receiver: _Side, seg: Seg) -> str:
    """Why the receiver answered `seg` with RST, in the seed's words where they fit."""
    who = receiver.name
    if not receiver.acceptable(seg):
        return f"{who} rejects it (unacceptable in {receiver.state}): answered by RST"
    if seg.has(Flags.ACK):
        return f"{who} has no connection for it (a stale SYN?): answered by RST"
    return f"{who} has no listener or connection for it: refused by RST"


def _display(role: str, who: Endpoint | str) -> str:
    return f"{role} {who}" if isinstance(who, Endpoint) else who


def _base(segments: Sequence[Seg], from_client: bool) -> tuple[int | None, bool]:
    """(x or y, whether it is the ISN): the side's SYN seq, else the ISN the other
    side's SYN+ACK acknowledges, else the first seq it sent, else none."""
    syn = next((s for s in segments if s.from_client == from_client and s.has(Flags.SYN)),
               None)
    if syn is not None:
        return syn.seq, True
    synack = next((s for s in segments if s.from_client != from_client
                   and (Flags.SYN | Flags.ACK) in s.flags), None)
    if synack is not None:
        return seq_add(synack.ack, -1), True
    first = next((s for s in segments if s.from_client == from_client), None)
    return (first.seq, False) if first is not None else (None, False)


# ------------------------------------------------------------------- trace

_STATE_NAMES = "|".join(
    sorted({s.value for s in State} | {s.name for s in State} | {"SYN-RCVD"}, key=len,
           reverse=True))
_ENDPOINT_RE = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}:\d{1,5}\b")
_TRANSITION_RE = re.compile(
    rf"\b(?:State\.)?(?P<old>{_STATE_NAMES})\s*->\s*(?:State\.)?(?P<new>{_STATE_NAMES})"
    r"\s*:\s*(?P<cause>.*?)\s*$")


def _state(name: str) -> State:
    """``SYN-RECEIVED``, ``SYN_RCVD``, ``SYN-RCVD`` -> State.SYN_RCVD."""
    if name.replace("_", "-") == "SYN-RCVD":
        return State.SYN_RCVD
    try:
        return State[name]
    except KeyError:
        return State(name)


def _endpoint(text: str) -> Endpoint:
    ip, _, port = text.rpartition(":")
    return Endpoint(str(IPv4Address(ip)), int(port))


def parse_trace(lines: Iterable[str]) -> list[TraceEvent]:
    """The state transitions in a --trace log: lines with ``OLD -> NEW: cause`` after
    at least two address:port tokens (the last two are local and remote)."""
    events = []
    for line in lines:
        m = _TRANSITION_RE.search(line)
        if m is None:
            continue
        ends = _ENDPOINT_RE.findall(line, 0, m.start())
        try:
            local, remote = _endpoint(ends[-2]), _endpoint(ends[-1])
        except (IndexError, AddressValueError, ValueError):
            continue
        events.append(TraceEvent(local, remote, _state(m["old"]), _state(m["new"]), m["cause"]))
    return events


def _apply_trace(ladder: Ladder, sides: tuple[_Side, _Side], client: Endpoint,
                 server: Endpoint, trace: Sequence[TraceEvent]) -> None:
    """Let the trace decide the stack side's states; write its causes as notes."""
    found = _stack_side(trace, client, server)
    if found is None:
        return
    index, events = found
    side = sides[index]
    by_step: dict[int, list[TraceEvent]] = {}
    pending: list[TraceEvent] = []  # unmatched: they go with the next matched one
    for event, step in zip(events, _place(events, side.log), strict=True):
        pending.append(event)
        if step is not None:
            by_step.setdefault(step, []).extend(pending)
            pending = []
    state: State | None = None  # None: before the first trace transition, the replay's
    for i, step in enumerate(ladder.steps):
        for event in by_step.get(i, []):
            state = event.new
            step.notes.append(_trace_note(side.name, event))
        if state is not None:
            _set_state(step, index, state)
    for event in pending:
        state = event.new
        ladder.trailer.append(_trace_note(side.name, event))
    if 0 in by_step:
        ladder.initial = _with(ladder.initial, index, events[0].old)
    if state is not None:
        ladder.final = _with(ladder.final, index, state)


def _stack_side(trace: Sequence[TraceEvent], client: Endpoint, server: Endpoint
                ) -> tuple[int, list[TraceEvent]] | None:
    """(0 for the client, 1 for the server; its events): the side the trace is about."""
    for index, (me, peer) in enumerate(((client, server), (server, client))):
        events = [e for e in trace if e.local == me and e.remote == peer]
        if events:
            return index, events
    return None


def _set_state(step: Step, index: int, state: State) -> None:
    if index == 0:
        step.client_state = state
    else:
        step.server_state = state


def _with(pair: tuple[State, State], index: int, state: State) -> tuple[State, State]:
    return (state, pair[1]) if index == 0 else (pair[0], state)


def _place(events: Sequence[TraceEvent], log: Sequence[tuple[int, State, State]]
           ) -> list[int | None]:
    """For each trace event, the step of the replay transition it matches (None: unmatched).

    Matching is greedy and in order: the first replay transition, after the
    previously matched one, that enters the same new state.
    """
    placed: list[int | None] = []
    next_log = 0
    for event in events:
        match = next((k for k in range(next_log, len(log)) if log[k][2] is event.new), None)
        if match is None:
            placed.append(None)
        else:
            placed.append(log[match][0])
            next_log = match + 1
    return placed


def _trace_note(side: str, event: TraceEvent) -> str:
    return f"{side} {event.old} -> {event.new}: {event.cause}"


# -------------------------------------------------------------------- text


@dataclass(frozen=True, slots=True)
class _Glyphs:
    """The characters of the text diagram: Unicode box drawing or plain ASCII."""

    lifeline: str
    shaft: str
    dashed: str  # retransmissions
    lost: str
    bullet: str


UNICODE = _Glyphs(lifeline="│", shaft="─", dashed="╌", lost="✕", bullet="· ")
ASCII = _Glyphs(lifeline="|", shaft="-", dashed=".", lost="X", bullet="- ")

_TIME_W = 11  # "1234.567890": captures have microseconds, handshakes take a few
_STATE_W = max(len(s.value) for s in State)  # "SYN-RECEIVED"


def _arrow(step: Step, inner: int, g: _Glyphs) -> str:
    """The arrow between the lifelines: ``───>``, ``<───``, dashed when retransmitted,
    stopping two thirds of the way with a cross when lost."""
    shaft = g.dashed if step.retransmission else g.shaft
    right = step.seg.from_client
    if step.lost:
        reach = inner * 2 // 3
        body = shaft * (reach - 1) + g.lost
        return body.ljust(inner) if right else body[::-1].rjust(inner)
    return shaft * (inner - 1) + ">" if right else "<" + shaft * (inner - 1)


def draw_text(ladder: Ladder, *, absolute: bool = False, width: int = DEFAULT_WIDTH,
              ascii: bool = False) -> str:
    """The diagram for a terminal: ``width`` columns, one label line, one arrow
    line (with both states after the segment) and any notes per segment."""
    g = ASCII if ascii else UNICODE
    width = max(width, MIN_WIDTH)
    inner = width - (_TIME_W + 2 * _STATE_W + 5)  # between the lifelines
    blank_margin = " " * (_TIME_W + 1 + _STATE_W + 1)

    def row(left: str, middle: str, right: str, time: str = "") -> str:
        return (f"{time:>{_TIME_W}} {left:<{_STATE_W}} {g.lifeline}{middle}{g.lifeline} "
                f"{right}").rstrip()

    def inside(text: str, to_right: bool = True) -> str:
        return (" " + text).ljust(inner) if to_right else (text + " ").rjust(inner)

    def notes(texts: Iterable[str]) -> Iterator[str]:
        for text in texts:
            lines = textwrap.wrap(text, inner - 2 - len(g.bullet), break_on_hyphens=False)
            for k, line in enumerate(lines):
                yield row("", inside((g.bullet if k == 0 else "  ") + line), "")

    out = [_spread(blank_margin + ladder.client, ladder.server, width)]
    if not absolute:
        x, y = ladder.bases()
        if x or y:
            out.append(_spread(blank_margin + x, y, width))
    out.append(row(str(ladder.initial[0]), " " * inner, str(ladder.initial[1]), "time"))
    for step in ladder.steps:
        right = step.seg.from_client
        label = textwrap.wrap(ladder.label(step, absolute), inner - 2, break_on_hyphens=False)
        for k, line in enumerate(label):
            out.append(row("", inside(line, right), "", ladder.stamp(step) if k == 0
                           else ""))
        out.append(row(str(step.client_state), _arrow(step, inner, g), str(step.server_state)))
        out.extend(notes(step.notes))
    if ladder.trailer:
        out.extend(notes(ladder.trailer))
        out.append(row(str(ladder.final[0]), " " * inner, str(ladder.final[1])))
    return "\n".join(out) + "\n"


def _spread(left: str, right: str, width: int) -> str:
    """`left` and `right` on one line, `right` ending at `width` (or a space after `left`)."""
    return (left.ljust(width - len(right) - 1) + " " + right).rstrip()


def _as_ladder(segments: Sequence[Seg] | Ladder) -> Ladder:
    return segments if isinstance(segments, Ladder) else analyze(segments)


def render_text(segments: Sequence[Seg] | Ladder, *, absolute: bool = False,
                width: int = DEFAULT_WIDTH, ascii: bool = False) -> str:
    """The text diagram of `segments` (analysed with default names) or of a `Ladder`."""
    return draw_text(_as_ladder(segments), absolute=absolute, width=width, ascii=ascii)


def render_svg(segments: Sequence[Seg] | Ladder, *, absolute: bool = False) -> str:
    """A self-contained SVG document of `segments` or of a `Ladder`."""
    return ladder_svg.draw(_as_ladder(segments), absolute=absolute)


# ----------------------------------------------------------------- capture


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
        ends = (_endpoint(a), _endpoint(b))
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


# ----------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `tcpstack ladder`, for a sub-parser of the main command line."""
    parser.add_argument("capture", metavar="CAPTURE.pcap",
                        help="pcap file (link type RAW, Ethernet or Linux cooked)")
    parser.add_argument("--conn", metavar="PORT|A.B.C.D:P-E.F.G.H:Q", type=_conn_arg,
                        help="the connection to draw (default: the first in the file)")
    parser.add_argument("--svg", metavar="OUT.svg",
                        help="write an SVG document instead of printing text ('-': stdout)")
    parser.add_argument("--absolute", action="store_true",
                        help="raw sequence numbers instead of x+n / y+n")
    parser.add_argument("--trace", metavar="LOG",
                        help="the daemon's --trace log: states and causes of the stack's side")
    parser.add_argument("--ascii", action="store_true", help="ASCII instead of box drawing")
    parser.add_argument("--width", metavar="N", type=_width_arg, default=DEFAULT_WIDTH,
                        help=f"text width in columns (default {DEFAULT_WIDTH}, "
                             f"at least {MIN_WIDTH})")


def _conn_arg(text: str) -> ConnSpec:
    try:
        return parse_conn(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _width_arg(text: str) -> int:
    if not text.isdigit() or int(text) < MIN_WIDTH:
        raise argparse.ArgumentTypeError(f"expected a number of columns >= {MIN_WIDTH}")
    return int(text)


def _read_trace(path: str) -> list[TraceEvent]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_trace(f)
    except OSError as e:
        raise LadderError(f"{path}: {e.strerror}", EXIT_USAGE) from None


def run(args: argparse.Namespace) -> int:
    """Draw the connection `args` selects; errors are one line on stderr."""
    try:
        trace = _read_trace(args.trace) if args.trace else []
        client, server, segments = select_connection(read_capture(args.capture), args.conn)
        ladder = analyze(segments, client=client, server=server, trace=trace)
        if trace and not any({e.local, e.remote} == {client, server} for e in trace):
            print(f"tcpstack: warning: {args.trace} has no transition of {client}-{server}",
                  file=sys.stderr)
        if args.svg is None:
            sys.stdout.write(draw_text(ladder, absolute=args.absolute, width=args.width,
                                       ascii=args.ascii))
        elif args.svg == "-":
            sys.stdout.write(render_svg(ladder, absolute=args.absolute))
        else:
            _write(args.svg, render_svg(ladder, absolute=args.absolute))
    except LadderError as e:
        print(f"tcpstack: error: {e}", file=sys.stderr)
        return e.status
    return 0


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise LadderError(f"{path}: {e.strerror}", EXIT_USAGE) from None


def main(argv: Sequence[str] | None = None) -> int:
    """`tcpstack ladder ARGS` as a function: parse `argv` and run."""
    return standalone_main(
        "tcpstack ladder", "Draw one TCP connection of a capture as a ladder diagram.",
        add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
