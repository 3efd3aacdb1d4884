"""The applications the stack can serve, by name.

`APPS` is the registry that the command line's `--app KIND:PORT` looks up
(`forward:PORT=HOST:PORT` also names its upstream): KIND must be one of its
keys, and the value is the connection handler that `Stack.start_server` runs
for every accepted connection on PORT. Handlers take
`(reader, writer)` with the methods of asyncio's StreamReader/StreamWriter,
so the same code runs on this stack and on `asyncio.start_server` (which is
how the unit tests exercise them).

The registry holds each app with its defaults; `configured(kind, options)`
is the handler with the limits of the command line (`AppOptions`, from
`add_app_arguments` / `app_options_from_args`). An app without options (one a test
suite registered) is served as registered.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any

from tcpstack.apps.discard import handle_discard
from tcpstack.apps.echo import handle_echo
from tcpstack.apps.forward import (
    CONNECT_TIMEOUT,
    ForwardSpecError,
    Upstream,
    handle_forward,
    parse_forward,
)
from tcpstack.apps.http import DEFAULT_LIMITS, HttpLimits, handle_http

Handler = Callable[[Any, Any], Awaitable[None]]
"""A connection handler: duck-typed (reader, writer) as from asyncio.start_server."""

APPS: dict[str, Handler] = {
    "echo": handle_echo,
    "discard": handle_discard,
    "http": handle_http,
    "forward": handle_forward,  # needs its Upstream: `configured` binds it
}


class AppOptionsError(ValueError):
    """A bad app option; the message is the one line the user sees."""


@dataclass(frozen=True)
class AppOptions:
    """The apps' limits: HTTP's (nginx's defaults), and echo/discard's idle
    timeout (None: none, as for a kernel socket)."""

    http: HttpLimits = DEFAULT_LIMITS
    idle_timeout: float | None = None
    forward_connect_timeout: float = CONNECT_TIMEOUT


def configured(kind: str, options: AppOptions, upstream: Upstream | None = None) -> Handler:
    """The handler for `--app KIND:PORT` with the command line's limits; a forward
    rule's `upstream` comes from its spec (`forward:PORT=HOST:PORT`)."""
    if kind == "forward":
        return functools.partial(handle_forward, upstream=upstream,
                                 connect_timeout=options.forward_connect_timeout)
    if kind == "http":
        return functools.partial(handle_http, limits=options.http)
    if kind in ("echo", "discard"):
        return functools.partial(APPS[kind], idle_timeout=options.idle_timeout)
    return APPS[kind]


MAX_TIMEOUT = 86400.0

#: HttpLimits field -> (option, help). Timeouts are floats in (0, MAX_TIMEOUT],
#: sizes ints within _SIZE_BOUNDS.
_HTTP_OPTIONS = {
    "header_timeout": ("--http-header-timeout",
                       "seconds for the whole request head, else 408 and close"),
    "body_timeout": ("--http-body-timeout",
                     "longest wait in seconds between two reads of a request body, else 408"),
    "keepalive_timeout": ("--http-keepalive-timeout",
                          "close a connection idle this many seconds between requests"),
    "send_timeout": ("--http-send-timeout",
                     "abort (RST) when the client takes no response data for this many seconds"),
    "max_header_bytes": ("--http-max-header-bytes",
                         "bytes of request line plus headers, else 431"),
    "max_body_bytes": ("--http-max-body-bytes", "bytes of request body, else 413"),
}
_SIZE_BOUNDS = {"max_header_bytes": (1024, 1 << 20), "max_body_bytes": (0, 1 << 62)}


def add_app_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("app limits (HTTP's defaults are nginx's)")
    for f in fields(HttpLimits):
        option, text = _HTTP_OPTIONS[f.name]
        size = f.name in _SIZE_BOUNDS
        group.add_argument(option, dest=f"http_{f.name}", type=int if size else float,
                           default=f.default, metavar="BYTES" if size else "SECONDS",
                           help=f"http: {text} (default {f.default if size else f'{f.default:g}'})")
    group.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                       help="echo and discard: end a connection on which nothing moved for "
                       "this long (default: never, as a kernel socket)")
    group.add_argument("--forward-connect-timeout", type=float, default=CONNECT_TIMEOUT,
                       metavar="SECONDS",
                       help="forward: reset the client when the upstream has not accepted "
                       f"within this (default {CONNECT_TIMEOUT:g}, nginx's)")


def app_options_from_args(args: argparse.Namespace) -> AppOptions:
    """Check the app options (AppOptionsError) before anything is created."""
    limits = {f.name: getattr(args, f"http_{f.name}") for f in fields(HttpLimits)}
    for name, value in limits.items():
        option = _HTTP_OPTIONS[name][0]
        if name not in _SIZE_BOUNDS:
            _check_timeout(option, value)
            continue
        low, high = _SIZE_BOUNDS[name]
        if not low <= value <= high:
            raise AppOptionsError(f"{option}: {value} is outside {low}..{high}")
    if args.idle_timeout is not None:
        _check_timeout("--idle-timeout", args.idle_timeout)
    _check_timeout("--forward-connect-timeout", args.forward_connect_timeout)
    return AppOptions(http=HttpLimits(**limits), idle_timeout=args.idle_timeout,
                      forward_connect_timeout=args.forward_connect_timeout)


def _check_timeout(option: str, seconds: float) -> None:
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT):
        raise AppOptionsError(f"{option}: {seconds:g} is outside 0 < SECONDS <= {MAX_TIMEOUT:g}")


__all__ = ["APPS", "AppOptions", "AppOptionsError", "ForwardSpecError", "Handler", "HttpLimits",
           "Upstream", "add_app_arguments", "app_options_from_args", "configured",
           "handle_discard", "handle_echo", "handle_forward", "handle_http", "parse_forward"]
