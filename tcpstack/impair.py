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

Rules (`--impair-rule`, repeatable) pick out particular packets instead of a
random share, so a test or a demonstration can lose exactly the segment it is
about (the seed's lost third segment is the ACK the stack receives while in
SYN-RECEIVED). The syntax is ``DIR:ACTION[:MATCH,MATCH...]``:

* DIR is ``in`` or ``out`` (as for ``--impair``; a rule has one direction).
* ACTION is ``drop``, ``dup`` (one extra copy right behind the packet) or
  ``delay=T`` (T a duration as above).
* MATCH narrows the packets the rule counts: ``flags=SYN+ACK`` (exactly
  these TCP flags, names joined by ``+``), ``flags~ACK`` (at least these),
  ``state=SYN-RECEIVED`` (the connection's state, names as tcpstack prints
  them), ``port=80`` (either end's port) and ``nth=N``, ``nth=A-B`` or
  ``nth=A-`` (which matches, counted from 1, the action applies to; every
  match without ``nth``).

Only TCP packets match. The state is that of the stack's TCB for the
packet's 4-tuple when the packet passes the impairment: inbound, before the
TCB has seen it (packets read in one batch all see the state before any of
them is processed); outbound, after the TCB produced it, at the end of the
batch that produced it. Rules judge a packet when it enters the impairment,
before any delay. Without a TCB the state is LISTEN when the local port has a
listener and CLOSED otherwise. Each rule counts its own matches over the
whole run (not per connection). Rules are tried in the order given; the first
one that picks a packet acts on it and later rules do not see it. Rules come
before the random impairment, which then treats what a rule let through (or
delayed, or duplicated) like any other packet.

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
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Literal, NamedTuple

from tcpstack.looptimer import EarliestTimer
from tcpstack.states import State

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

#: TCP flag names in the order rules print them (SYN+ACK, FIN+ACK, PSH+ACK).
_FLAG_BITS = {"SYN": 0x02, "FIN": 0x01, "RST": 0x04, "PSH": 0x08, "ACK": 0x10,
              "URG": 0x20, "ECE": 0x40, "CWR": 0x80}
_STATES = tuple(str(s) for s in State)
#: Rule actions and the counter suffix (and log verb) of each.
_RULE_ACTIONS = {"drop": "Dropped", "dup": "Duplicated", "delay": "Delayed"}
_NTH = re.compile(r"([1-9]\d*)(?:(-)([1-9]\d*)?)?")
_PORTS = struct.Struct("!HH")


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


class TcpInfo(NamedTuple):
    """What a rule looks at in a packet: addresses (4 bytes each), ports, flags."""

    src: bytes
    dst: bytes
    sport: int
    dport: int
    flags: int

    def __str__(self) -> str:
        """``10.0.0.1:34038 > 10.0.0.2:80 ACK``, for the log."""
        return (f"{IPv4Address(self.src)}:{self.sport} > {IPv4Address(self.dst)}:{self.dport} "
                f"{_flags_text(self.flags)}")


def tcp_info(packet: bytes) -> TcpInfo | None:
    """The 4-tuple and flags of an IPv4/TCP packet, or None for anything else.

    A few slices and one struct unpack rather than the codec: rules look at every
    packet of their direction, most of them only to let it pass. Not TCP, too
    short, or a fragment other than the first (it has no TCP header): None.
    """
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 6:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or len(packet) < ihl + 14 or (packet[6] & 0x1F or packet[7]):
        return None
    sport, dport = _PORTS.unpack_from(packet, ihl)
    return TcpInfo(packet[12:16], packet[16:20], sport, dport, packet[ihl + 13])


def _flags_text(flags: int) -> str:
    return "+".join(name for name, bit in _FLAG_BITS.items() if flags & bit) or "none"


def _duration_text(seconds: float) -> str:
    return f"{seconds:g}s" if seconds >= 1 else f"{seconds * 1000:g}ms"


#: Maps a packet to the state of the connection it belongs to (see the module docstring).
StateLookup = Callable[[TcpInfo], str]


def _no_connections(tcp: TcpInfo) -> str:
    return str(State.CLOSED)


@dataclass(frozen=True, slots=True)
class ImpairRule:
    """One --impair-rule: which packets it counts, which of them it acts on, how.

    None in a filter means "any". `nth` is (first, last) counted from 1, last
    None for no end; None acts on every match. `number` is the rule's position
    among all rules (from 1), so the log can say which rule hit.
    """

    number: int
    direction: Literal["in", "out"]
    action: Literal["drop", "dup", "delay"]
    delay: float = 0.0
    flags: int | None = None
    flags_exact: bool = True
    state: str | None = None
    port: int | None = None
    nth: tuple[int, int | None] | None = None

    def __str__(self) -> str:
        """The rule in --impair-rule syntax, normalized."""
        action = f"delay={_duration_text(self.delay)}" if self.action == "delay" else self.action
        matches = []
        if self.flags is not None:
            matches.append(f"flags{'=' if self.flags_exact else '~'}{_flags_text(self.flags)}")
        if self.state is not None:
            matches.append(f"state={self.state}")
        if self.port is not None:
            matches.append(f"port={self.port}")
        if self.nth is not None:
            first, last = self.nth
            matches.append(f"nth={first}" if first == last else f"nth={first}-{last or ''}")
        return ":".join([self.direction, action] + ([",".join(matches)] if matches else []))

    def matches_header(self, tcp: TcpInfo) -> bool:
        """The flags and port filters (the state is looked up only when these pass)."""
        if self.flags is not None:
            seen = tcp.flags if self.flags_exact else tcp.flags & self.flags
            if seen != self.flags:
                return False
        return self.port is None or self.port in (tcp.sport, tcp.dport)

    def picks(self, n: int) -> bool:
        """Whether the rule acts on its `n`th match."""
        if self.nth is None:
            return True
        first, last = self.nth
        return first <= n and (last is None or n <= last)


def parse_rules(specs: Sequence[str]) -> tuple[ImpairRule, ...]:
    """Parse the --impair-rule values (see the module docstring), numbered from 1.

    Raises ImpairSpecError naming the offending part, like `parse_impair`.
    """
    return tuple(_parse_rule(text, number) for number, text in enumerate(specs, 1))


def _parse_rule(text: str, number: int) -> ImpairRule:
    parts = text.split(":", 2)
    if len(parts) < 2:
        raise ImpairSpecError(f"{text!r}: expected DIR:ACTION[:MATCH,...], "
                              "e.g. in:drop:flags=ACK,state=SYN-RECEIVED,nth=1")
    direction, action_text = parts[0], parts[1]
    if direction not in ("in", "out"):
        raise ImpairSpecError(f"{text!r}: unknown direction {direction!r} (in or out)")
    action, sep, value = action_text.partition("=")
    if action == "delay" and not sep:
        raise ImpairSpecError(f"{text!r}: delay needs a duration, e.g. delay=2s")
    if action not in _RULE_ACTIONS or (action == "delay") != bool(sep):
        raise ImpairSpecError(f"{text!r}: unknown action {action_text!r} "
                              "(drop, dup or delay=T)")
    fields_: dict[str, object] = {}
    if action == "delay":
        fields_["delay"] = _parse_value(text, "delay", value)
    for item in parts[2].split(",") if len(parts) == 3 else ():
        key, value = _split_match(text, item.strip())
        name = "flags" if key in ("flags", "flags~") else key
        if name in fields_:
            raise ImpairSpecError(f"{text!r}: {name} given twice")
        if name == "flags":
            fields_["flags"] = _parse_flags(text, value)
            fields_["flags_exact"] = key == "flags"
        elif name == "state":
            if value not in _STATES:
                raise ImpairSpecError(f"{text!r}: unknown state {value!r} "
                                      f"(one of {' '.join(_STATES)})")
            fields_["state"] = value
        elif name == "port":
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise ImpairSpecError(f"{text!r}: port={value}: expected 1..65535")
            fields_["port"] = int(value)
        else:
            fields_["nth"] = _parse_nth(text, value)
    return ImpairRule(number, direction, action, **fields_)  # type: ignore[arg-type]


def _split_match(text: str, item: str) -> tuple[str, str]:
    """``flags=ACK`` -> ("flags", "ACK"); ``flags~ACK`` -> ("flags~", "ACK")."""
    m = re.fullmatch(r"(flags~|[a-z]+=)(.*)", item)
    key = m.group(1).rstrip("=") if m else ""
    if m is None or key not in ("flags", "flags~", "state", "port", "nth") or not m.group(2):
        raise ImpairSpecError(f"{text!r}: expected flags=F, flags~F, state=S, port=N or "
                              f"nth=N[-M], got {item!r}")
    return key, m.group(2)


def _parse_flags(text: str, value: str) -> int:
    bits = 0
    for name in value.upper().split("+"):
        if name not in _FLAG_BITS:
            raise ImpairSpecError(f"{text!r}: unknown TCP flag {name!r} "
                                  f"({', '.join(_FLAG_BITS)}; joined by +)")
        bits |= _FLAG_BITS[name]
    return bits


def _parse_nth(text: str, value: str) -> tuple[int, int | None]:
    m = _NTH.fullmatch(value)
    if m is None:
        raise ImpairSpecError(f"{text!r}: nth={value}: expected N, A-B or A- (counted from 1)")
    first = int(m.group(1))
    if not m.group(2):
        return first, first
    last = int(m.group(3)) if m.group(3) else None
    if last is not None and last < first:
        raise ImpairSpecError(f"{text!r}: nth={value}: the range ends before it starts")
    return first, last


@dataclass(frozen=True, slots=True)
class ImpairPlan:
    """What to do to each direction; None leaves that direction untouched
    (unless a rule applies to it)."""

    inbound: ImpairSpec | None = None
    outbound: ImpairSpec | None = None
    rules: tuple[ImpairRule, ...] = ()

    def __bool__(self) -> bool:
        return self.inbound is not None or self.outbound is not None or bool(self.rules)


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
    ImpairDuplicated (extra copies), ImpairDelayed (copies the random stage
    delayed) and ImpairReordered (packets held for another to overtake).

    `rules` (this direction's --impair-rule, in order) come first; their hits
    count as ImpairRuleDropped, ImpairRuleDelayed and ImpairRuleDuplicated and
    are logged at info. `state_of` tells them a packet's connection state.
    """

    def __init__(self, spec: ImpairSpec, rng: random.Random,
                 stats: Counter[str] | None = None, *,
                 rules: Sequence[ImpairRule] = (),
                 state_of: StateLookup = _no_connections) -> None:
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
                verb = _RULE_ACTIONS[rule.action]
                self.stats[f"ImpairRule{verb}"] += 1
                log.info("impair rule %d (%s) %s %s%s", rule.number, rule, verb.lower(), tcp,
                         f" by {_duration_text(rule.delay)}" if rule.action == "delay" else "")
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
    for rule in plan.rules:
        log.info("impair rule %d: %s", rule.number, rule)
    if plan.inbound is not None or _rules(plan, "in"):
        inbound = _path(stack, plan, "in", stack.receive, loop)
        stack.receive = inbound.push
    if plan.outbound is not None or _rules(plan, "out"):
        write = stack.output

        def send(packet: bytes, now: float) -> None:
            # A full device queue drops the packet, as the stack's own _send does.
            try:
                write(packet)
            except BlockingIOError:
                stack.stats["OutDrops"] += 1

        outbound = _path(stack, plan, "out", send, loop)
        stack.output = outbound.push_now
    return Impairments(inbound, outbound)


def _rules(plan: ImpairPlan, direction: str) -> tuple[ImpairRule, ...]:
    return tuple(r for r in plan.rules if r.direction == direction)


def _path(stack: Stack, plan: ImpairPlan, direction: str,
          deliver: Callable[[bytes, float], None],
          loop: asyncio.AbstractEventLoop) -> ImpairedPath:
    given = plan.inbound if direction == "in" else plan.outbound
    spec = ImpairSpec() if given is None else given  # rules only: no random draws
    rng, seed = make_rng(spec, direction)
    if given is not None:
        log.info("impairing %sbound packets: %s%s", direction, spec,
                 "" if spec.seed is not None else f" (seed={seed}; pass seed={seed} to repeat)")
    core = Impairment(spec, rng, stack.stats, rules=_rules(plan, direction),
                      state_of=state_lookup(stack, inbound=direction == "in"))
    return ImpairedPath(core, deliver, loop)


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
