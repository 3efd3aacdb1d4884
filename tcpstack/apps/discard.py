"""RFC 863 discard: everything received is thrown away, until the peer's EOF.

Reading (rather than ignoring the connection) matters: each read consumes
the bytes and so reopens the receive window, letting the peer keep sending.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

READ_SIZE = 65536


async def handle_discard(reader: Any, writer: Any) -> None:
    """Read and drop data until EOF, then close; resets end it quietly."""
    try:
        while await reader.read(READ_SIZE):
            pass
    except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
        pass  # ordinary peer behaviour, not a failure of the app
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await writer.wait_closed()
