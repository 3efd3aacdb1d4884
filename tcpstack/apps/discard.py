"""RFC 863 discard: everything received is thrown away, until the peer's EOF.

Reading (rather than ignoring the connection) matters: each read consumes
the bytes and so reopens the receive window, letting the peer keep sending.
"""

from __future__ import annotations

from typing import Any

from tcpstack.apps.until_eof import serve_until_eof


async def _drop(data: bytes) -> None:
    pass


async def handle_discard(reader: Any, writer: Any, idle_timeout: float | None = None) -> None:
    """Read and drop data until EOF, then close; see `serve_until_eof` for `idle_timeout`."""
    await serve_until_eof(reader, writer, _drop, idle_timeout)
