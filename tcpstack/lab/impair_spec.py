"""The ``--impair`` syntax: what random impairment each direction gets.

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

`ImpairPlan` joins both directions and the rules (`tcpstack.lab.impair_rules`);
the impairment itself is `tcpstack.lab.impair_core`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tcpstack.lab.impair_rules import ImpairRule

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


def duration_text(seconds: float) -> str:
    """``1.5s`` or ``20ms``: a duration as the command line writes it."""
    return f"{seconds:g}s" if seconds >= 1 else f"{seconds * 1000:g}ms"


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
        values[key] = parse_value(text, key, value)
    return ImpairSpec(**values)  # type: ignore[arg-type]


def parse_value(text: str, key: str, value: str) -> float | int:
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
