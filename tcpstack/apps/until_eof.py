"""The skeleton shared by stream apps that consume input until the peer's EOF."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

READ_SIZE = 65536


async def serve_until_eof(
    reader: Any, writer: Any, on_chunk: Callable[[bytes], Awaitable[None]]
) -> None:
    """Feed every chunk to `on_chunk` until EOF, then close. A peer that resets or
    vanishes ends it quietly: that is ordinary peer behaviour, not an app failure."""
    try:
        while data := await reader.read(READ_SIZE):
            await on_chunk(data)
    except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await writer.wait_closed()
