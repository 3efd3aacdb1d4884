"""The runtime tap: both directions' impairment between a `Stack` and its TUN.

Inbound packets are impaired where the TUN reader hands them to the stack
(before decoding), outbound ones after they are encoded, at the impairment's
place on the stack's packet paths (`tcpstack.shell.pipeline`: inside the capture);
`ImpairedPath` is the thin asyncio shell around one
`tcpstack.lab.impair_core.Impairment`, with one loop timer for the earliest due
packet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from tcpstack.core.states import State
from tcpstack.lab.impair_core import Impairment, make_rng
from tcpstack.lab.impair_rules import ImpairRule, StateLookup, TcpInfo
from tcpstack.lab.impair_spec import ImpairPlan, ImpairSpec
from tcpstack.shell.looptimer import EarliestTimer
from tcpstack.shell.pipeline import Receive, Send, Tap

if TYPE_CHECKING:
    from tcpstack.shell.stack import Stack

log = logging.getLogger("tcpstack.lab.impair")


class ImpairedPath:
    """The asyncio shell around one `Impairment`: packets go in with `push`,
    come out through `deliver(packet, now)` when due, with one loop timer armed
    for the earliest pending packet (none while nothing is pending)."""

    def __init__(self, core: Impairment, deliver: Callable[[bytes, float], None],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.core = core
        self._deliver = deliver
        self._loop = loop
        self._timer = EarliestTimer(loop, self._release)

    def push(self, packet: bytes, now: float) -> None:
        """Impair one packet; whatever is due at `now` is delivered at once."""
        self.core.push(packet, now)
        self._release(now)

    def push_now(self, packet: bytes) -> None:
        """`push` at the loop's current time: a drop-in for the stack's `output`."""
        self.push(packet, self._loop.time())

    def inbound_stage(self, receive: Receive) -> Receive:
        """This path as the pipeline's inbound stage in front of `receive`."""
        self._deliver = receive
        return self.push

    def outbound_stage(self, write: Send) -> Send:
        """This path as the pipeline's outbound stage in front of `write`."""
        stats = self.core.stats

        def send(packet: bytes, now: float) -> None:
            # A full device queue drops the packet, as the stack's own _send does.
            try:
                write(packet)
            except BlockingIOError:
                stats["OutDrops"] += 1

        self._deliver = send
        return self.push_now

    def close(self, *, deliver_pending: bool) -> None:
        """Stop the timer; deliver what is still pending (e.g. the RSTs of a
        shutdown) or discard it."""
        self._timer.cancel()
        pending = self.core.drain()
        if deliver_pending:
            now = self._loop.time()
            for packet in pending:
                self._deliver(packet, now)

    def _release(self, now: float) -> None:
        for packet in self.core.pop_due(now):
            self._deliver(packet, now)
        self._arm()

    def _arm(self) -> None:
        self._timer.arm(self.core.next_due())


class Impairments:
    """Both directions of one stack's impairment, as installed by `install`."""

    def __init__(self, inbound: ImpairedPath | None, outbound: ImpairedPath | None) -> None:
        self.inbound = inbound
        self.outbound = outbound

    def close(self) -> None:
        """At shutdown: drop pending inbound packets (nobody is listening any
        more) but send pending outbound ones, so the peers get our RSTs."""
        if self.inbound is not None:
            self.inbound.close(deliver_pending=False)
        if self.outbound is not None:
            self.outbound.close(deliver_pending=True)


def install(stack: Stack, plan: ImpairPlan) -> Impairments:
    """Put the plan's impairments on `stack`'s packet paths, at the
    impairment's position (`tcpstack.shell.pipeline`): inbound before decoding,
    outbound after encoding. A direction without a spec gets no stage and
    costs nothing."""
    loop = asyncio.get_running_loop()
    inbound = outbound = None
    for rule in plan.rules:
        log.info("impair rule %d: %s", rule.number, rule)
    if plan.inbound is not None or _rules(plan, "in"):
        inbound = _path(stack, plan, "in", loop)
    if plan.outbound is not None or _rules(plan, "out"):
        outbound = _path(stack, plan, "out", loop)
    stack.tap("impairment", Tap(
        inbound=None if inbound is None else inbound.inbound_stage,
        outbound=None if outbound is None else outbound.outbound_stage))
    return Impairments(inbound, outbound)


def _rules(plan: ImpairPlan, direction: str) -> tuple[ImpairRule, ...]:
    return tuple(r for r in plan.rules if r.direction == direction)


def _path(stack: Stack, plan: ImpairPlan, direction: str,
          loop: asyncio.AbstractEventLoop) -> ImpairedPath:
    given = plan.inbound if direction == "in" else plan.outbound
    spec = ImpairSpec() if given is None else given  # rules only: no random draws
    rng, seed = make_rng(spec, direction)
    if given is not None:
        log.info("impairing %sbound packets: %s%s", direction, spec,
                 "" if spec.seed is not None else f" (seed={seed}; pass seed={seed} to repeat)")
    core = Impairment(spec, rng, stack.stats, rules=_rules(plan, direction),
                      state_of=state_lookup(stack, inbound=direction == "in"))
    return ImpairedPath(core, _unconnected, loop)  # until its stage is composed


def _unconnected(packet: bytes, now: float) -> None:
    raise RuntimeError("an impairment released a packet before it was on a packet path")


def state_lookup(stack: Stack, *, inbound: bool) -> StateLookup:
    """The connection state rules see for a packet of one direction: the TCB's
    for its 4-tuple, else LISTEN if the local port has a listener, else CLOSED
    (what the stack does with it: 3.10.7.1-2 of RFC 9293)."""
    closed, listen = str(State.CLOSED), str(State.LISTEN)

    def state_of(tcp: TcpInfo) -> str:
        if inbound:
            if tcp.dst != stack.addr:
                return closed  # the stack drops it unread
            key = (tcp.dport, tcp.src, tcp.sport)
        else:
            key = (tcp.sport, tcp.dst, tcp.dport)
        conn = stack.conns.get(key)
        if conn is not None:
            return str(conn.tcb.state)
        if key in stack.time_wait:
            return str(State.TIME_WAIT)
        return listen if key[0] in stack.listeners else closed

    return state_of
