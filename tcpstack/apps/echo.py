"""RFC 862 echo: every byte received is sent back, until the peer's EOF.

Reading in bounded pieces and awaiting `drain()` after each write gives
back-pressure end to end: a peer that sends but does not read fills our send
queue, `drain()` blocks, we stop reading, and its sends stall on our closed
receive window instead of growing our memory without bound.
"""

from __future__ import annotations

from typing import Any

from tcpstack.apps.until_eof import serve_until_eof


async def handle_echo(reader: Any, writer: Any, idle_timeout: float | None = None) -> None:
    """Echo until EOF, then close; see `serve_until_eof` for `idle_timeout`."""

    async def echo(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    await serve_until_eof(reader, writer, echo, idle_timeout)
