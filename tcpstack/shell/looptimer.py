"""One event-loop timer kept at the earliest deadline of a schedule.

The timer wheel and the impairment's delay heap both need the same thing:
wake up once, when their earliest entry is due, and never while idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class EarliestTimer:
    """Arm with each new earliest deadline; the callback gets the firing time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[float], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._when = 0.0

    def arm(self, when: float | None) -> None:
        """Be due at `when` (None: nothing pending). An earlier armed time stays:
        the callback re-arms for whatever is then earliest."""
        if when is None:
            self.cancel()
            return
        if self._handle is not None:
            if self._when <= when:
                return
            self._handle.cancel()
        self._when = when
        self._handle = self._loop.call_at(when, self._fire)

    @property
    def armed(self) -> bool:
        """Whether a loop timer is pending."""
        return self._handle is not None

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        # The loop may run a callback a hair before its time: never report less
        # than the time armed for, or the schedule would find nothing due.
        self._callback(max(self._loop.time(), self._when))
