"""The sans-I/O core of one direction's impairment: rules first, then random
loss, duplication, delay and reordering, on a delay line driven with explicit
`now` values (the unit tests use a fake clock).

Reordering holds a packet back until the next packet of the same direction has
been released, then releases it right after that one (one packet overtakes it);
if no packet follows within `REORDER_MAX_HOLD` it is released anyway. At most
one packet is held at a time: a packet arriving while another is held is the
one that overtakes, never held itself.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import secrets
from collections import Counter
from collections.abc import Sequence

from tcpstack.lab.impair_rules import (
    RULE_ACTIONS,
    ImpairRule,
    StateLookup,
    no_connections,
    tcp_info,
)
from tcpstack.lab.impair_spec import ImpairSpec, duration_text

log = logging.getLogger("tcpstack.lab.impair")

#: Longest time a packet picked for reordering waits for a packet to overtake it.
REORDER_MAX_HOLD = 0.010


class Impairment:
    """One direction's impairment, sans I/O: a delay line ordered by due time.

    `push(packet, now)` decides the packet's fate (lost, duplicated, delayed,
    held for reordering) and queues what survives; `pop_due(now)` returns the
    packets due by `now` in release order; `next_due()` says when to call it
    next. Counters go to `stats` (normally the stack's): ImpairDropped,
    ImpairDuplicated (extra copies), ImpairDelayed (copies the random stage
    delayed) and ImpairReordered (packets held for another to overtake).

    `rules` (this direction's --impair-rule, in order) come first; their hits
    count as ImpairRuleDropped, ImpairRuleDelayed and ImpairRuleDuplicated and
    are logged at info. `state_of` tells them a packet's connection state.
    """

    def __init__(self, spec: ImpairSpec, rng: random.Random,
                 stats: Counter[str] | None = None, *,
                 rules: Sequence[ImpairRule] = (),
                 state_of: StateLookup = no_connections) -> None:
        self.spec = spec
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.rules = tuple(rules)
        self._matched = [0] * len(self.rules)  # matches counted so far, per rule
        self._state_of = state_of
        self._rng = rng
        self._heap: list[tuple[float, int, bytes]] = []
        self._order = itertools.count()  # ties at one due time leave in arrival order
        self._held: list[tuple[float, bytes]] = []  # copies of the one held packet
        self._held_until = math.inf

    def push(self, packet: bytes, now: float) -> None:
        """Take one packet that arrived at `now`."""
        spec, rng, stats = self.spec, self._rng, self.stats
        copies, hold = 1, 0.0
        rule = self._rule_for(packet) if self.rules else None
        if rule is not None:
            if rule.action == "drop":
                return
            if rule.action == "dup":
                copies = 2
            else:
                hold = rule.delay
        if spec.loss and rng.random() < spec.loss:
            stats["ImpairDropped"] += 1
            return
        if spec.dup and rng.random() < spec.dup:
            copies += 1
            stats["ImpairDuplicated"] += 1
        dues = []
        for _ in range(copies):
            delay = self._delay()
            if delay > 0:
                stats["ImpairDelayed"] += 1
            dues.append(now + hold + delay)
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

    def _rule_for(self, packet: bytes) -> ImpairRule | None:
        """The first rule that picks `packet` (counted, logged), or None.

        Every rule whose filters match counts the packet, up to the one that
        acts on it; the state is looked up once, and only when a rule asks.
        """
        tcp = tcp_info(packet)
        if tcp is None:
            return None
        state = None
        for i, rule in enumerate(self.rules):
            if not rule.matches_header(tcp):
                continue
            if rule.state is not None:
                state = state or self._state_of(tcp)
                if state != rule.state:
                    continue
            self._matched[i] += 1
            if rule.picks(self._matched[i]):
                verb = RULE_ACTIONS[rule.action]
                self.stats[f"ImpairRule{verb}"] += 1
                log.info("impair rule %d (%s) %s %s%s", rule.number, rule, verb.lower(), tcp,
                         f" by {duration_text(rule.delay)}" if rule.action == "delay" else "")
                return rule
        return None

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


def make_rng(spec: ImpairSpec, direction: str) -> tuple[random.Random, int]:
    """A generator for one direction and the seed it came from.

    String seeds are hashed with SHA-512 by `random.Random`, so they do not
    depend on PYTHONHASHSEED: the same seed gives the same run everywhere.
    """
    seed = spec.seed if spec.seed is not None else secrets.randbits(32)
    return random.Random(f"{seed}:{direction}"), seed
