"""A hashed timer wheel: one structure drives every protocol timer of the stack.

Each connection keeps at most one entry here, for its earliest deadline. The
asyncio shell arms a single loop timer for `next_deadline()`, so nothing wakes
up while no timer is due, and scheduling or cancelling is O(1) per connection.
Timers never fire early: a deadline is rounded *up* to the next tick.
"""

from __future__ import annotations

import math
from typing import Generic, TypeVar

T = TypeVar("T")


class Timer(Generic[T]):
    """One scheduled entry; keep it to cancel it."""

    __slots__ = ("item", "tick")

    def __init__(self, tick: int, item: T) -> None:
        self.tick = tick
        self.item = item


class TimerWheel(Generic[T]):
    """`slots` buckets of `tick` seconds; later deadlines wait for further rotations."""

    def __init__(self, tick: float = 0.01, slots: int = 512, now: float = 0.0) -> None:
        self.tick = tick
        self._slots: list[dict[Timer[T], None]] = [{} for _ in range(slots)]
        self._current = math.floor(now / tick)  # every tick <= this one has been expired
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def schedule(self, deadline: float, item: T) -> Timer[T]:
        """Add `item`, due at `deadline`; it fires at the first tick at or after it."""
        tick = max(math.ceil(deadline / self.tick - 1e-9), self._current + 1)
        timer = Timer(tick, item)
        self._slots[tick % len(self._slots)][timer] = None
        self._count += 1
        return timer

    def cancel(self, timer: Timer[T]) -> None:
        """Remove `timer`; cancelling one that already fired is harmless."""
        if self._slots[timer.tick % len(self._slots)].pop(timer, 0) is None:
            self._count -= 1

    def expire(self, now: float) -> list[T]:
        """Remove and return the items of every timer due at or before `now`."""
        target = math.floor(now / self.tick + 1e-9)
        fired: list[T] = []
        if target <= self._current:
            return fired
        nslots = len(self._slots)
        # A gap longer than a rotation visits each slot once.
        for tick in range(self._current + 1, min(target, self._current + nslots) + 1):
            slot = self._slots[tick % nslots]
            due = [t for t in slot if t.tick <= target]
            for t in due:
                del slot[t]
                fired.append(t.item)
        self._count -= len(fired)
        self._current = target
        return fired

    def next_deadline(self) -> float | None:
        """The time of the earliest pending timer (a tick boundary), or None."""
        if not self._count:
            return None
        nslots = len(self._slots)
        for tick in range(self._current + 1, self._current + nslots + 1):
            if any(t.tick == tick for t in self._slots[tick % nslots]):
                return tick * self.tick
        # Only timers more than one rotation ahead remain: rare, so a full scan is fine.
        return min(t.tick for slot in self._slots for t in slot) * self.tick
