"""The ladder's analysis: replay both sides' RFC 9293 states over the captured
segments and mark retransmissions, lost segments and rejected ones.

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
        (the textbook chapter's lost third segment) went missing, which the capture cannot
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
      -> SYN-RECEIVED (simultaneous open, also the textbook chapter's four-segment
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
      RST+ACK), or the textbook chapter's stale SYN (a SYN+ACK that acknowledges the
      client's SYN but is answered by RST: a TCP in SYN-SENT would have sent
      ACK, so the SYN was not its own). Otherwise (a SYN+ACK with a wrong ack,
      RFC 9293 figure 8) the receiver's state stays. A late RST after an
      acceptable segment without SYN (a SYN-RECEIVED side whose handshake
      timed out after the capture saw the ACK) is an abort, not a reply.
    - TIME-WAIT is left by a timer, which the capture does not show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tcpstack.core.segment import Flags
from tcpstack.core.seq import seq_add, seq_diff
from tcpstack.core.states import SYNCHRONIZED, State
from tcpstack.lab.ladder_model import Endpoint, Ladder, Seg, Step, TraceEvent
from tcpstack.lab.ladder_trace import apply_trace

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
        apply_trace(ladder, (sides[0].log, sides[1].log), client, server, trace)
    return ladder


def _rejection_note(receiver: _Side, seg: Seg) -> str:
    """Why the receiver answered `seg` with RST, in the textbook chapter's words where they fit."""
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



def as_ladder(segments: Sequence[Seg] | Ladder) -> Ladder:
    """`segments` analysed with default names, or the `Ladder` itself: what the
    renderers' convenience functions accept."""
    return segments if isinstance(segments, Ladder) else analyze(segments)
