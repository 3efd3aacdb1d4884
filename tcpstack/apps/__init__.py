"""The applications the stack can serve, by name.

`APPS` is the registry that the command line's `--app KIND:PORT` looks up:
KIND must be one of its keys, and the value is the connection handler that
`Stack.start_server` runs for every accepted connection on PORT. Handlers take
`(reader, writer)` with the methods of asyncio's StreamReader/StreamWriter,
so the same code runs on this stack and on `asyncio.start_server` (which is
how the unit tests exercise them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tcpstack.apps.discard import handle_discard
from tcpstack.apps.echo import handle_echo
from tcpstack.apps.http import handle_http

Handler = Callable[[Any, Any], Awaitable[None]]
"""A connection handler: duck-typed (reader, writer) as from asyncio.start_server."""

APPS: dict[str, Handler] = {
    "echo": handle_echo,
    "discard": handle_discard,
    "http": handle_http,
}

__all__ = ["APPS", "Handler", "handle_discard", "handle_echo", "handle_http"]
