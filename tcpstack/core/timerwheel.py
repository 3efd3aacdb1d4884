"""A hashed timer wheel: one structure drives every protocol timer of the stack.

Each connection keeps at most one entry here, for its earliest deadline. The
asyncio shell arms a single loop timer for `next_deadline()`, so nothing wakes
up while no timer is due. Timers never fire early: a deadline is rounded *up*
to the next tick.

The slots hold only the timers due within one rotation; later ones (TIME-WAIT's
2 MSL, keep-alive, the FIN-WAIT-2 timeout) wait in a heap and move into their
slot when the wheel comes within a rotation of them. So every slot holds the
timers of exactly one tick, `next_deadline()` is a walk over at most `slots`
buckets plus a heap peek, and no operation scans all the entries: with 10,000
TIME-WAIT records a full scan per firing made the timers quadratic.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Generic, TypeVar

T = TypeVar("T")


# Where a timer is: in a wheel slot, in the far heap, or nowhere any more.
SLOT, FAR, GONE = 0, 1, 2


class Timer(Generic[T]):
    """One scheduled entry; keep it to cancel it."""

    __slots__ = ("item", "state", "tick")

    def __init__(self, tick: int, item: T) -> None:
        self.tick = tick
        self.item = item
        self.state = SLOT


class TimerWheel(Generic[T]):
    """`slots` buckets of `tick` seconds; later deadlines wait in a heap."""

    def __init__(self, tick: float = 0.01, slots: int = 512, now: float = 0.0) -> None:
        self.tick = tick
        self._slots: list[dict[Timer[T], None]] = [{} for _ in range(slots)]
        self._current = math.floor(now / tick)  # every tick <= this one has been expired
        self._count = 0
        # (tick, order, timer) beyond one rotation; cancelled ones are skipped lazily.
        self._far: list[tuple[int, int, Timer[T]]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return self._count

    def schedule(self, deadline: float, item: T) -> Timer[T]:
        """Add `item`, due at `deadline`; it fires at the first tick at or after it."""
        tick = max(math.ceil(deadline / self.tick - 1e-9), self._current + 1)
        timer = Timer(tick, item)
        self._place(timer)
        self._count += 1
        return timer

    def _place(self, timer: Timer[T]) -> None:
        if timer.tick <= self._current + len(self._slots):
            timer.state = SLOT
            self._slots[timer.tick % len(self._slots)][timer] = None
        else:
            timer.state = FAR
            heapq.heappush(self._far, (timer.tick, next(self._order), timer))

    def cancel(self, timer: Timer[T]) -> None:
        """Remove `timer`; cancelling one that already fired is harmless."""
        if timer.state == SLOT:
            del self._slots[timer.tick % len(self._slots)][timer]
        elif timer.state != FAR:
            return
        else:
            # A far one stays in the heap until it surfaces (a keep-alive deadline:
            # hours): it must not keep its item (a whole connection) alive that long.
            timer.item = None  # type: ignore[assignment]
        timer.state = GONE
        self._count -= 1

    def expire(self, now: float) -> list[T]:
        """Remove and return the items of every timer due at or before `now`."""
        target = math.floor(now / self.tick + 1e-9)
        fired: list[T] = []
        if target <= self._current:
            return fired
        nslots = len(self._slots)
        # Each slot holds one tick's timers, all due within the rotation; a gap
        # longer than a rotation visits each slot once.
        for tick in range(self._current + 1, min(target, self._current + nslots) + 1):
            slot = self._slots[tick % nslots]
            for timer in slot:
                timer.state = GONE
                fired.append(timer.item)
            slot.clear()
        self._current = target
        far = self._far
        while far and far[0][0] <= target + nslots:
            timer = heapq.heappop(far)[2]
            if timer.state != FAR:
                continue
            if timer.tick <= target:  # the gap skipped past it
                timer.state = GONE
                fired.append(timer.item)
            else:
                self._place(timer)
        self._count -= len(fired)
        return fired

    def next_deadline(self) -> float | None:
        """The time of the earliest pending timer (a tick boundary), or None."""
        if not self._count:
            return None
        nslots = len(self._slots)
        for tick in range(self._current + 1, self._current + nslots + 1):
            if self._slots[tick % nslots]:
                return tick * self.tick
        far = self._far
        while far[0][2].state != FAR:
            heapq.heappop(far)
        return far[0][0] * self.tick
