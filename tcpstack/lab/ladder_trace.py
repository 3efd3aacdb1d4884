"""The daemon's ``--trace`` log in a ladder: read its transitions and let them
decide the states of the stack's side.

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
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from ipaddress import AddressValueError

from tcpstack.core.states import State
from tcpstack.lab.ladder_model import Endpoint, Ladder, Step, TraceEvent, parse_endpoint

#: One side's transitions found by the replay: (step, old state, new state).
TransitionLog = Sequence[tuple[int, State, State]]

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
            local, remote = parse_endpoint(ends[-2]), parse_endpoint(ends[-1])
        except (IndexError, AddressValueError, ValueError):
            continue
        events.append(TraceEvent(local, remote, _state(m["old"]), _state(m["new"]), m["cause"]))
    return events


def apply_trace(ladder: Ladder, logs: tuple[TransitionLog, TransitionLog], client: Endpoint,
                server: Endpoint, trace: Sequence[TraceEvent]) -> None:
    """Let the trace decide the stack side's states; write its causes as notes.

    `logs` are the replay's transitions of the client and of the server, which
    the trace's transitions are matched to.
    """
    found = _stack_side(trace, client, server)
    if found is None:
        return
    index, events = found
    name = ("client", "server")[index]
    by_step: dict[int, list[TraceEvent]] = {}
    pending: list[TraceEvent] = []  # unmatched: they go with the next matched one
    for event, step in zip(events, _place(events, logs[index]), strict=True):
        pending.append(event)
        if step is not None:
            by_step.setdefault(step, []).extend(pending)
            pending = []
    state: State | None = None  # None: before the first trace transition, the replay's
    for i, step in enumerate(ladder.steps):
        for event in by_step.get(i, []):
            state = event.new
            step.notes.append(_trace_note(name, event))
        if state is not None:
            _set_state(step, index, state)
    for event in pending:
        state = event.new
        ladder.trailer.append(_trace_note(name, event))
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


def _place(events: Sequence[TraceEvent], log: TransitionLog
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

