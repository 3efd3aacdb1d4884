"""Network impairment on the stack's side of the TUN: loss, duplication, delay, reordering.

The test machines have no netem, and nftables on the kernel side can only drop.
To see how the TCP engine copes with a bad network, the stack can make its own
wire misbehave: packets it reads from the TUN (before they are decoded) and
packets it writes to it (after they are encoded) pass through an `Impairment`
per direction, so the TCB sees exactly what a lossy, jittery link would give it
and the kernel peer sees the same from its side.

The spec syntax (`--impair`, repeatable) is ``[DIR:]KEY=VALUE[,KEY=VALUE...]``:

* DIR is ``in`` (packets the stack reads), ``out`` (packets it writes) or
  ``both`` (the default); each direction may be given once.
* ``loss``, ``dup``, ``reorder``: probabilities per packet, written as
  percentages (``5%``, ``0.5%``).
* ``delay``, ``jitter``: durations with a unit (``20ms``, ``1.5s``, ``500us``).
  Each packet is delayed by ``delay`` plus a uniform draw from
  ``[-jitter, +jitter]`` (never below zero), as netem does, so jitter alone
  already reorders packets that are closer together than the jitter.
* ``seed``: an integer. The same seed and the same packets give the same
  decisions; without one a random seed is chosen and logged so a run can be
  repeated. The two directions draw from separate generators (derived from the
  seed), so adding inbound impairment does not change the outbound decisions.

Reordering holds a packet back until the next packet of the same direction has
been released, then releases it right after that one (one packet overtakes it);
if no packet follows within `REORDER_MAX_HOLD` it is released anyway. At most
one packet is held at a time: a packet arriving while another is held is the
one that overtakes, never held itself.

`Impairment` is the sans-I/O core (a delay line ordered by due time, driven
with explicit `now` values, so the unit tests use a fake clock); `ImpairedPath`
is the thin asyncio shell with one loop timer for the earliest due packet; and
`install()` puts both directions between a `Stack` and its TUN.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
import re
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tcpstack.stack import Stack

log = logging.getLogger("tcpstack.impair")

#: Longest time a packet picked for reordering waits for a packet to overtake it.
REORDER_MAX_HOLD = 0.010

_PERCENT_KEYS = ("loss", "dup", "reorder")
_DURATION_KEYS = ("delay", "jitter")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(us|ms|s)")
_PERCENT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)%")
#: Longest accepted delay or jitter: beyond this TCP gives up long before.
MAX_DURATION = 60.0


class ImpairSpecError(ValueError):
    """A malformed --impair spec; the message is the one line the user sees."""


@dataclass(frozen=True, slots=True)
class ImpairSpec:
    """One direction's impairment; probabilities in [0, 1], times in seconds."""

    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    seed: int | None = None

    def __str__(self) -> str:
        """The spec in --impair syntax (seed included when fixed)."""
        parts = [f"{k}={getattr(self, k) * 100:g}%" for k in _PERCENT_KEYS if getattr(self, k)]
        parts += [f"{k}={getattr(self, k) * 1000:g}ms" for k in _DURATION_KEYS
                  if getattr(self, k)]
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        return ",".join(parts) or "none"


@dataclass(frozen=True, slots=True)
class ImpairPlan:
    """What to do to each direction; None leaves that direction untouched."""

    inbound: ImpairSpec | None = None
    outbound: ImpairSpec | None = None

    def __bool__(self) -> bool:
        return self.inbound is not None or self.outbound is not None


def parse_impair(specs: Sequence[str]) -> ImpairPlan:
    """Parse the --impair values (see the module docstring) into a plan.

    Raises ImpairSpecError naming the offending part, so the command line can
    report it in one line before anything is created.
    """
    chosen: dict[str, ImpairSpec] = {}
    for text in specs:
        direction, body = _split_direction(text)
        spec = _parse_body(text, body)
        for d in (("in", "out") if direction == "both" else (direction,)):
            if d in chosen:
                raise ImpairSpecError(f"{text!r}: the {d} direction is impaired twice")
            chosen[d] = spec
    return ImpairPlan(inbound=chosen.get("in"), outbound=chosen.get("out"))


def _split_direction(text: str) -> tuple[str, str]:
    head, sep, rest = text.partition(":")
    if sep and "=" not in head:
        if head not in ("in", "out", "both"):
            raise ImpairSpecError(f"{text!r}: unknown direction {head!r} (in, out or both)")
        return head, rest
    return "both", text


def _parse_body(text: str, body: str) -> ImpairSpec:
    known = {f.name for f in fields(ImpairSpec)}
    values: dict[str, float | int] = {}
    for item in body.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            raise ImpairSpecError(f"{text!r}: expected KEY=VALUE, got {item.strip()!r}")
        if key not in known:
            raise ImpairSpecError(f"{text!r}: unknown key {key!r} "
                                  f"(one of {', '.join(sorted(known))})")
        if key in values:
            raise ImpairSpecError(f"{text!r}: {key} given twice")
        values[key] = _parse_value(text, key, value)
    return ImpairSpec(**values)  # type: ignore[arg-type]


def _parse_value(text: str, key: str, value: str) -> float | int:
    if key in _PERCENT_KEYS:
        m = _PERCENT.fullmatch(value)
        if m is None:
            raise ImpairSpecError(f"{text!r}: {key}={value}: expected a percentage like 5%")
        p = float(m.group(1))
        if p > 100:
            raise ImpairSpecError(f"{text!r}: {key}={value} is over 100%")
        return p / 100
    if key in _DURATION_KEYS:
        m = _DURATION.fullmatch(value)
        if m is None:
            raise ImpairSpecError(f"{text!r}: {key}={value}: expected a duration like "
                                  "20ms, 1s or 500us")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
        if seconds > MAX_DURATION:
            raise ImpairSpecError(f"{text!r}: {key}={value} is over {MAX_DURATION:g}s")
        return seconds
    if not value.isdigit():
        raise ImpairSpecError(f"{text!r}: seed={value}: expected a non-negative integer")
    return int(value)


class Impairment:
    """One direction's impairment, sans I/O: a delay line ordered by due time.

    `push(packet, now)` decides the packet's fate (lost, duplicated, delayed,
    held for reordering) and queues what survives; `pop_due(now)` returns the
    packets due by `now` in release order; `next_due()` says when to call it
    next. Counters go to `stats` (normally the stack's): ImpairDropped,
    ImpairDuplicated (extra copies), ImpairDelayed (copies released later than
    they arrived) and ImpairReordered (packets held for another to overtake).
    """

    def __init__(self, spec: ImpairSpec, rng: random.Random,
                 stats: Counter[str] | None = None) -> None:
        self.spec = spec
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self._rng = rng
        self._heap: list[tuple[float, int, bytes]] = []
        self._order = itertools.count()  # ties at one due time leave in arrival order
        self._held: list[tuple[float, bytes]] = []  # copies of the one held packet
        self._held_until = math.inf

    def push(self, packet: bytes, now: float) -> None:
        """Take one packet that arrived at `now`."""
        spec, rng, stats = self.spec, self._rng, self.stats
        if spec.loss and rng.random() < spec.loss:
            stats["ImpairDropped"] += 1
            return
        copies = 1
        if spec.dup and rng.random() < spec.dup:
            copies = 2
            stats["ImpairDuplicated"] += 1
        dues = [now + self._delay() for _ in range(copies)]
        for due in dues:
            if due > now:
                stats["ImpairDelayed"] += 1
        if not self._held and spec.reorder and rng.random() < spec.reorder:
            stats["ImpairReordered"] += 1
            self._held = [(due, packet) for due in dues]
            self._held_until = max(dues) + REORDER_MAX_HOLD
            return
        for due in dues:
            self._schedule(due, packet)
        if self._held:
            # This packet overtakes the held one, which leaves right after it.
            last = max(dues)
            for due, held in self._held:
                self._schedule(max(due, last), held)
            self._release_hold()

    def pop_due(self, now: float) -> list[bytes]:
        """Every packet due by `now`, in release order."""
        if self._held and self._held_until <= now:
            for _, held in self._held:
                self._schedule(self._held_until, held)
            self._release_hold()
        heap = self._heap
        out = []
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        return out

    def next_due(self) -> float | None:
        """When the next packet falls due (or a held one times out), or None."""
        due = min(self._heap[0][0] if self._heap else math.inf, self._held_until)
        return None if due == math.inf else due

    def drain(self) -> list[bytes]:
        """Everything still pending, in release order, regardless of due times."""
        return self.pop_due(math.inf)

    def __len__(self) -> int:
        """Packets pending (queued or held)."""
        return len(self._heap) + len(self._held)

    def _delay(self) -> float:
        spec = self.spec
        if not spec.jitter:
            return spec.delay
        return max(0.0, spec.delay + self._rng.uniform(-spec.jitter, spec.jitter))

    def _schedule(self, due: float, packet: bytes) -> None:
        heapq.heappush(self._heap, (due, next(self._order), packet))

    def _release_hold(self) -> None:
        self._held = []
        self._held_until = math.inf


class ImpairedPath:
    """The asyncio shell around one `Impairment`: packets go in with `push`,
    come out through `deliver(packet, now)` when due, with one loop timer armed
    for the earliest pending packet (none while nothing is pending)."""

    def __init__(self, core: Impairment, deliver: Callable[[bytes, float], None],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.core = core
        self._deliver = deliver
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._when = 0.0

    def push(self, packet: bytes, now: float) -> None:
        """Impair one packet; whatever is due at `now` is delivered at once."""
        self.core.push(packet, now)
        self._release(now)

    def push_now(self, packet: bytes) -> None:
        """`push` at the loop's current time: a drop-in for the stack's `output`."""
        self.push(packet, self._loop.time())

    def close(self, *, deliver_pending: bool) -> None:
        """Stop the timer; deliver what is still pending (e.g. the RSTs of a
        shutdown) or discard it."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
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
        due = self.core.next_due()
        if due is None:
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            return
        if self._handle is not None:
            if self._when <= due:
                return
            self._handle.cancel()
        self._when = due
        self._handle = self._loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._handle = None
        # The loop may run a callback a hair early: never release less than armed for.
        self._release(max(self._loop.time(), self._when))


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


def make_rng(spec: ImpairSpec, direction: str) -> tuple[random.Random, int]:
    """A generator for one direction and the seed it came from.

    String seeds are hashed with SHA-512 by `random.Random`, so they do not
    depend on PYTHONHASHSEED: the same seed gives the same run everywhere.
    """
    seed = spec.seed if spec.seed is not None else secrets.randbits(32)
    return random.Random(f"{seed}:{direction}"), seed


def install(stack: Stack, plan: ImpairPlan) -> Impairments:
    """Put the plan's impairments between `stack` and its TUN.

    Inbound interposes on `stack.receive` (where the TUN reader hands each
    packet, before decoding); outbound wraps `stack.output`. A direction
    without a spec is left untouched and costs nothing.
    """
    loop = asyncio.get_running_loop()
    inbound = outbound = None
    if plan.inbound is not None:
        inbound = _path(stack, plan.inbound, "in", stack.receive, loop)
        stack.receive = inbound.push
    if plan.outbound is not None:
        write = stack.output

        def send(packet: bytes, now: float) -> None:
            # A full device queue drops the packet, as the stack's own _send does.
            try:
                write(packet)
            except BlockingIOError:
                stack.stats["OutDrops"] += 1

        outbound = _path(stack, plan.outbound, "out", send, loop)
        stack.output = outbound.push_now
    return Impairments(inbound, outbound)


def _path(stack: Stack, spec: ImpairSpec, direction: str,
          deliver: Callable[[bytes, float], None],
          loop: asyncio.AbstractEventLoop) -> ImpairedPath:
    rng, seed = make_rng(spec, direction)
    log.info("impairing %sbound packets: %s%s", direction, spec,
             "" if spec.seed is not None else f" (seed={seed}; pass seed={seed} to repeat)")
    return ImpairedPath(Impairment(spec, rng, stack.stats), deliver, loop)
