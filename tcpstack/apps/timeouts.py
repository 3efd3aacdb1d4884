"""Time limits for the apps: how long a peer may make a handler wait.

Every await on the peer (a read, a `drain()`, waiting for the close) is a
place where a client that sends or reads nothing holds a task, a connection
and its buffers. `within` bounds one such await; `close_within` bounds the
last one. The expiry is the app's own exception, never TimeoutError: the
stack ends a connection whose retransmissions go unanswered with
TimeoutError, and the apps must still tell a dead peer (quiet end) from a
slow one (408, close or abort).
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


async def within(seconds: float | None, step: Awaitable[T], expired: Exception | None = None) -> T:
    """Await `step`; if `seconds` pass first, cancel it and raise `expired` (Expired()).

    Only this deadline becomes `expired`: a TimeoutError from inside `step`
    passes through unchanged. None means no limit (and no timeout context: this
    sits on every read of the echo and discard apps).
    """
    if seconds is None:
        return await step
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            return await step
    except TimeoutError:
        if deadline.expired():
            raise (expired or Expired()) from None
        raise


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
