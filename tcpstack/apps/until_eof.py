"""The skeleton shared by stream apps that consume input until the peer's EOF."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tcpstack.apps.timeouts import PEER_GONE, Deadline, Expired, SendTimeout, close_within

READ_SIZE = 65536


async def serve_until_eof(
    reader: Any,
    writer: Any,
    on_chunk: Callable[[bytes], Awaitable[None]],
    idle_timeout: float | None = None,
) -> None:
    """Feed every chunk to `on_chunk` until EOF, then close. A peer that resets or
    vanishes ends it quietly: that is ordinary peer behaviour, not an app failure.

    With `idle_timeout`, a connection on which nothing moves for that long ends:
    closed when no input came, reset when `on_chunk` could not hand over its
    output (a peer that stopped reading; a close would wait for it). None, the
    default, waits forever, as a kernel socket does. One `Deadline` serves every
    read and write: a timer per connection, not one per read.
    """
    deadline = Deadline()
    try:
        while data := await deadline.within(idle_timeout, reader.read(READ_SIZE)):
            await deadline.within(idle_timeout, on_chunk(data), SendTimeout())
    except SendTimeout:
        writer.transport.abort()
    except (Expired, *PEER_GONE):
        pass
    finally:
        deadline.cancel()
        await close_within(writer, idle_timeout)
