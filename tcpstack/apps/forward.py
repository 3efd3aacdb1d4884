"""`--app forward:PORT=HOST:PORT`: relay every connection to an ordinary kernel socket.

The point is to put the stack, with its `--impair`, `--impair-rule`, `--pcap`
and `--trace`, in front of a real service: a client connects to VIP:PORT over
the stack's TCP, and the app opens an ordinary connection (the kernel's TCP,
through `asyncio.open_connection`) to HOST:PORT and copies bytes both ways.

What the relay keeps of TCP's semantics, like a careful proxy:

- back-pressure: each direction reads at most CHUNK bytes and awaits the other
  side's `drain()` before reading again, so a slow reader on one side closes
  the window on the other instead of growing our memory (the upstream reader's
  buffer is bounded by `limit`, the stack's by --rcv-buf);
- half-close: EOF from one side becomes `write_eof()` (a FIN) on the other, and
  the other direction goes on; the connection ends when both are done;
- reset: an RST (or a retransmission timeout) on one side aborts the other: an
  RST from the stack, and an RST from the kernel socket (SO_LINGER 0 before
  close, else the kernel would send a FIN and the service would take a reset
  client for a clean close);
- refusal: when the upstream refuses, is unreachable or does not answer within
  the connect timeout, the client's connection, already established by the
  stack's handshake, is reset. socat in the same spot just closes the accepted
  socket (a FIN, or an RST if the client's data was still unread), which to a
  client reads like a server that answered nothing; an RST is the nearest a
  relay that accepts first can come to the refusal the client would have seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address
from typing import Any

from tcpstack.apps.timeouts import close_within

log = logging.getLogger("tcpstack.forward")

CHUNK = 65536
#: nginx's proxy_connect_timeout; Linux alone would try for about 127 s (6 SYN retries).
CONNECT_TIMEOUT = 60.0
#: After both directions ended: how long our last FINs may wait to be acknowledged.
CLOSE_TIMEOUT = 30.0
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


class ForwardSpecError(ValueError):
    """A bad `forward:PORT=HOST:PORT`; the message is the one line the user sees."""


@dataclass(frozen=True)
class Upstream:
    """Where a forward rule relays to: an IPv4 address and port on the kernel side."""

    host: IPv4Address
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_forward(text: str) -> tuple[int, Upstream]:
    """`PORT=HOST:PORT` (what follows `forward:`) -> (listening port, upstream).

    HOST is an IPv4 address, not a name: a name would be resolved on every
    connection, and a failed lookup is better reported at start than per client.
    """
    port_text, sep, target = text.partition("=")
    host_text, colon, up_port_text = target.rpartition(":")
    if not sep or not colon or not port_text.isdigit() or not up_port_text.isdigit():
        raise ForwardSpecError(f"expected forward:PORT=HOST:PORT, got 'forward:{text}'")
    try:
        host = IPv4Address(host_text)
    except (AddressValueError, ValueError):
        raise ForwardSpecError(f"forward: HOST must be an IPv4 address, got {host_text!r}"
                               ) from None
    port, up_port = int(port_text), int(up_port_text)
    for value in (port, up_port):
        if not 0 < value < 65536:
            raise ForwardSpecError(f"forward: port {value} is outside 1..65535")
    return port, Upstream(host, up_port)


async def handle_forward(reader: Any, writer: Any, upstream: Upstream,
                         connect_timeout: float = CONNECT_TIMEOUT) -> None:
    """Relay one client connection to `upstream` until both directions ended."""
    try:
        async with asyncio.timeout(connect_timeout):
            up_reader, up_writer = await asyncio.open_connection(
                str(upstream.host), upstream.port, limit=CHUNK)
    except OSError as e:  # refused, unreachable, TimeoutError
        log.info("forward to %s failed (%s): resetting the client %s", upstream,
                 e.strerror or type(e).__name__, _peer(writer))
        _reset(writer)
        return
    pipes = [asyncio.create_task(_pipe(reader, up_writer)),
             asyncio.create_task(_pipe(up_reader, writer))]
    try:
        await asyncio.gather(*pipes)
    except BaseException as e:  # a reset, timeout or EPIPE on one side, or we were cancelled
        for pipe in pipes:
            pipe.cancel()
        _reset(up_writer)
        _reset(writer)
        await asyncio.gather(*pipes, return_exceptions=True)  # the other side's error is moot
        if not isinstance(e, OSError):
            raise
        log.debug("forward %s <-> %s aborted: %r", _peer(writer), upstream, e)
        return
    await asyncio.gather(close_within(up_writer, CLOSE_TIMEOUT),
                         close_within(writer, CLOSE_TIMEOUT))


async def _pipe(src: Any, dst: Any) -> None:
    """Copy `src` to `dst` with back-pressure; pass its EOF on as a half-close."""
    while data := await src.read(CHUNK):
        dst.write(data)
        await dst.drain()
    if dst.can_write_eof():
        dst.write_eof()


def _reset(writer: Any) -> None:
    """Abort with an RST: a kernel socket's (asyncio's abort alone would send a
    FIN) or the stack's (whose writer has no socket and always resets)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()


def _peer(writer: Any) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if peer else "?"
