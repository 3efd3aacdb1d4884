"""Listening ports: bounded half-open and accept queues, and the Server object.

This is the textbook chapter's third task of connection set-up, allocating
resources: every SYN that a listener queues costs a TCB, so both queues are
bounded by the backlog. When the half-open set is full (or the stack holds
`max_conns` connections) a SYN is answered with a SYN cookie (RFC 4987 3.6,
`tcpstack.core.syncookies`), which costs nothing until the peer's ACK returns it;
with cookies off it is dropped (and counted) without an answer, as Linux
does, so the client retries later instead of being refused. A full accept
queue drops SYNs (Linux ListenOverflows).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tcpstack.core import syncookies

if TYPE_CHECKING:
    from tcpstack.core.segment import Segment
    from tcpstack.shell.connection import Connection
    from tcpstack.shell.stack import Stack
    from tcpstack.shell.stream import StreamReader, StreamWriter

Handler = Callable[["StreamReader", "StreamWriter"], Awaitable[None]]
log = logging.getLogger("tcpstack.server")


class SynVerdict(enum.Enum):
    """What a listener does with a SYN."""

    QUEUE = "queue"  # a TCB in the half-open set, SYN+ACK retransmitted (the textbook)
    COOKIE = "cookie"  # a stateless SYN+ACK with a SYN cookie
    DROP = "drop"  # no answer: the client's SYN retransmission tries again


class Listener:
    """A port in LISTEN: it creates a TCB per acceptable SYN (RFC 9293 3.10.7.2)."""

    def __init__(self, stack: Stack, port: int, handler: Handler, backlog: int) -> None:
        self.stack = stack
        self.port = port
        self.handler = handler
        self.backlog = backlog
        self.half_open: set[Connection] = set()
        self.accept_queue: deque[Connection] = deque()
        self._cookie_sent_at: float | None = None  # when this listener last sent a cookie
        self._ready = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop())

    def on_syn(self, now: float) -> SynVerdict:
        """Queue a new SYN, answer it with a cookie, or drop it (counted); the
        order of the checks is Linux's tcp_conn_request."""
        stats = self.stack.stats
        config = self.stack.config
        want_cookie = config.syncookies == "always"
        if self._no_slot():
            if config.syncookies == "off":
                full = len(self.half_open) >= self.backlog
                stats["BacklogDrops" if full else "ConnLimitDrops"] += 1
                return SynVerdict.DROP
            want_cookie = True
        if len(self.accept_queue) >= self.backlog:
            stats["AcceptQueueDrops"] += 1
            return SynVerdict.DROP
        if want_cookie:
            stats["SyncookiesSent"] += 1
            self._cookie_sent_at = now
            return SynVerdict.COOKIE
        return SynVerdict.QUEUE

    def answers_statelessly(self) -> bool:
        """Whether no SYN can get a queue slot now, so `on_syn` can only answer
        with a cookie or drop: cookies always, or on with no slot free. Then the
        stack's SYN fast path (`tcpstack.shell.synfast`) may take the SYN, since no TCB
        will need its Segment."""
        mode = self.stack.config.syncookies
        return mode == "always" or (mode == "on" and self._no_slot())

    def _no_slot(self) -> bool:
        return (len(self.half_open) >= self.backlog
                or len(self.stack.conns) >= self.stack.config.max_conns)

    def cookie_syn(self, ack: Segment, now: float) -> Segment | None:
        """The SYN that a valid cookie in `ack` answered, or None. Only tried while
        cookies went out in the last minutes (Linux tcp_synq_no_recent_overflow):
        otherwise the ACK is just a stray one, reset as before, and not counted."""
        sent = self._cookie_sent_at
        if sent is None or now - sent > syncookies.LIFETIME:
            return None
        syn = self.stack.cookies.check(ack, now)
        self.stack.stats["SyncookiesFailed" if syn is None else "SyncookiesRecv"] += 1
        return syn

    def admits_cookie(self) -> bool:
        """Whether a valid cookie ACK may become a connection now; when not, it is
        dropped (counted) and the peer's retransmission brings the cookie again.

        The accept queue was checked when the SYN came, as for a queued
        connection, whose ACK also always enters it. Linux checks it again here,
        but a cookie ACK refused for it is fatal: the peer's next data segment
        no longer starts at ISN + 1, fails the cookie check and is reset; and
        our accept queue fills within one batch of the TUN reader, before the
        accept loop runs, whatever the application's speed. The connection cap
        bounds what may wait."""
        if len(self.stack.conns) >= self.stack.config.max_conns:
            self.stack.stats["ConnLimitDrops"] += 1
            return False
        return True

    def on_established(self, conn: Connection) -> None:
        self.half_open.discard(conn)
        self.accept_queue.append(conn)
        self._ready.set()

    def forget(self, conn: Connection) -> None:
        """A connection of ours ended (half-open ones free their backlog slot)."""
        self.half_open.discard(conn)
        if conn in self.accept_queue:
            self.accept_queue.remove(conn)

    async def _accept_loop(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self.accept_queue:
                # No local name for the connection: this frame waits on with it.
                task = asyncio.get_running_loop().create_task(
                    self._serve(self.accept_queue.popleft()))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)

    async def _serve(self, conn: Connection) -> None:
        """Run the handler; when it returns the connection is closed (FIN), and
        when it fails the connection is reset, so no connection outlives its
        handler unnoticed."""
        reader, writer = conn.streams()
        try:
            await self.handler(reader, writer)
        except Exception:
            log.exception("handler for port %d failed on %s; resetting", self.port, conn)
            writer.abort()
        else:
            writer.close()

    def close(self) -> None:
        """Stop accepting; established connections carry on."""
        self._accept_task.cancel()
        for conn in list(self.half_open) + list(self.accept_queue):
            conn.abort()

    async def wait_closed(self) -> None:
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)


class Server:
    """What `Stack.start_server` returns: the part of asyncio.Server that applies."""

    def __init__(self, stack: Stack, listener: Listener) -> None:
        self._stack = stack
        self._listener = listener
        self._serving = True
        self.port = listener.port

    def is_serving(self) -> bool:
        return self._serving

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    async def start_serving(self) -> None:
        """Serving starts with the listener; here for asyncio.AbstractServer's sake."""

    def close(self) -> None:
        """Stop listening; connections already accepted carry on."""
        if self._serving:
            self._serving = False
            self._stack.stop_listening(self._listener)

    async def wait_closed(self) -> None:
        """After close(): until every handler has returned."""
        await self._listener.wait_closed()

    async def serve_forever(self) -> None:
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self.close()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
        await self.wait_closed()
