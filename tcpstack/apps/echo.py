"""RFC 862 echo: every byte received is sent back, until the peer's EOF.

Reading in bounded pieces and awaiting `drain()` after each write gives
back-pressure end to end: a peer that sends but does not read fills our send
queue, `drain()` blocks, we stop reading, and its sends stall on our closed
receive window instead of growing our memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

READ_SIZE = 65536


async def handle_echo(reader: Any, writer: Any) -> None:
    """Echo until EOF, then close; a peer that resets or vanishes ends it quietly."""
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
        pass  # ordinary peer behaviour, not a failure of the app
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await writer.wait_closed()
