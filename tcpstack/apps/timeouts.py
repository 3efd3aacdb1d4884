"""Time limits for the apps: how long a peer may make a handler wait.

Every await on the peer (a read, a `drain()`, waiting for the close) is a
place where a client that sends or reads nothing holds a task, a connection
and its buffers. A `Deadline` bounds such awaits, one after another, for one
connection; `within` bounds a single await; `close_within` bounds the last
one. The expiry is the app's own exception, never TimeoutError: the stack
ends a connection whose retransmissions go unanswered with TimeoutError, and
the apps must still tell a dead peer (quiet end) from a slow one (408, close
or abort).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

#: What the peer does to end a connection: EOF (in the middle of a read), reset,
#: or a retransmission timeout. Apps end quietly on these; they are not failures.
PEER_GONE = (ConnectionError, TimeoutError, asyncio.IncompleteReadError)


class Expired(Exception):
    """A time limit set by `within` passed (the default outcome)."""


class SendTimeout(Expired):
    """The peer took none of our output for the send timeout. The connection is
    aborted rather than closed: a close would wait for the same peer to read."""


class Deadline:
    """One connection's time limit for its awaits on the peer, with one lazy
    loop timer.

    `asyncio.timeout()` around every read schedules a loop timer and cancels
    it again: on an upload that is a timer per 64 KiB read (and the heap
    churn with it), for a limit that almost never fires. Here each await only
    stores its deadline; the one timer, armed at the first, checks when it
    fires whether the deadline has moved on (a later await began) and re-arms
    for it then, so a connection that keeps moving costs about one timer per
    limit's length. Only a deadline earlier than the armed timer (a shorter
    limit after a longer one) re-arms at once. One task awaits through a
    Deadline, one step at a time; `cancel()` drops the timer at the end.
    """

    __slots__ = ("_due", "_fired", "_handle", "_loop", "_task", "_when")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._when: float | None = None  # the deadline of the step awaited now
        self._due = 0.0  # when the armed timer fires (<= _when while a step runs)
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None  # the task awaiting the step
        self._fired = False  # the timer cancelled the step

    def within(self, seconds: float | None, step: Awaitable[T],
               expired: Exception | None = None) -> Awaitable[T]:
        """`step`, to be done within `seconds` from now (None: no limit, `step` itself)."""
        if seconds is None:
            return step
        return self.until(self._loop.time() + seconds, step, expired)

    async def until(self, when: float, step: Awaitable[T], expired: Exception | None = None) -> T:
        """Await `step`; if the loop time `when` comes first, cancel it and raise
        `expired` (Expired()). Only this deadline becomes `expired`: a
        TimeoutError from inside `step`, or a cancellation from elsewhere,
        passes through unchanged."""
        if self._task is not None:
            raise RuntimeError("a Deadline bounds one await at a time")
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self._task, self._when = task, when
        if self._handle is None or self._due > when:
            self._arm(when)
        try:
            return await step
        except asyncio.CancelledError:
            # As asyncio.timeout: ours only if no other cancellation is pending.
            if self._fired and task.uncancel() <= cancelling:
                raise (expired or Expired()) from None
            raise
        finally:
            self._task = self._when = None
            self._fired = False

    def cancel(self) -> None:
        """Drop the timer: no more steps (the handler ends)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, when: float) -> None:
        self.cancel()
        self._due = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        when = self._when
        if when is None or self._task is None:
            return  # between steps: the next one arms again
        if when > self._loop.time():
            self._arm(when)  # a later step moved the deadline on (or the loop was early)
            return
        self._fired = True
        self._task.cancel()


def within(seconds: float | None, step: Awaitable[T],
           expired: Exception | None = None) -> Awaitable[T]:
    """Await `step`; if `seconds` pass first, cancel it and raise `expired` (Expired()).

    For a single await; a loop of them shares a `Deadline`. None means no
    limit: `step` itself, no timer and no extra coroutine (this sits on every
    read of the echo and discard apps)."""
    if seconds is None:
        return step
    return _once(seconds, step, expired)


async def _once(seconds: float, step: Awaitable[T], expired: Exception | None) -> T:
    deadline = Deadline()
    try:
        return await deadline.within(seconds, step, expired)
    finally:
        deadline.cancel()


async def close_within(writer: Any, seconds: float | None) -> None:
    """Close (FIN after what is queued) and wait for it at most `seconds`, then abort.

    Waiting unbounded would let a peer that stopped reading keep our queued
    output, the connection and this task forever.
    """
    writer.close()
    try:
        await within(seconds, writer.wait_closed())
    except Expired:
        writer.transport.abort()  # drops the queue; the transport finishes on its own
    except PEER_GONE:
        pass
