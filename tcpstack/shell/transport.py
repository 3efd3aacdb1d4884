"""asyncio Transport/Protocol on the stack: `Stack.create_server(factory, port)`
and `Stack.create_connection(factory, host, port)`, like the loop's methods.

Most of the asyncio ecosystem (aiohttp's server, h11/h2-based servers,
protocol libraries) is written against `asyncio.Protocol`, not streams. A
`Transport` takes a connection over from its stream reader (it becomes the
connection's `Receiver`) and writes through the connection's StreamWriter, so
both APIs share one data path and one set of flow-control rules:

- Reading: data goes to `protocol.data_received` as it arrives and counts as
  consumed at once, which reopens the receive window. `pause_reading()` holds
  it here instead, unconsumed: the window closes once --rcv-buf is held, and
  the peer stops sending (RFC 9293 3.8.6.2, zero window) until
  `resume_reading()`.
- Writing: bytes queue in the connection (see StreamWriter); above the high
  water mark (default --snd-buf) `protocol.pause_writing()` is called, and
  `resume_writing()` once the peer has acknowledged down to the low mark.
- Closing: as asyncio's, `eof_received()` returning a false value closes the
  transport; `close()` sends FIN after the queued data (RST if received data
  was never delivered, RFC 1122 4.2.2.13), and `connection_lost(None)` follows
  once our FIN is acknowledged; a reset gives `connection_lost(exc)`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from tcpstack.core.segment import Payload

if TYPE_CHECKING:
    from tcpstack.shell.stream import StreamReader, StreamWriter

ProtocolFactory = Callable[[], asyncio.BaseProtocol]
log = logging.getLogger("tcpstack.shell.transport")


class Transport(asyncio.Transport):
    """One connection driven by an asyncio protocol."""

    def __init__(self, writer: StreamWriter, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self._writer = writer
        self._conn = writer.connection
        self._loop = asyncio.get_running_loop()
        self._protocol = protocol
        self._held = bytearray()  # received while reading is paused: not consumed
        self._eof_held = False  # the peer's FIN, behind the held data
        self._eof_seen = False  # eof_received() was called
        self._reading = True
        self._closing = False
        self._write_paused = False
        #: Done when connection_lost() has been called; create_server's handler
        #: waits for it, so Server.wait_closed() waits for the connections.
        self.lost: asyncio.Future[None] = self._loop.create_future()
        self._fin_acked = False  # our FIN is acknowledged (or the connection gone)
        self._call(protocol.connection_made, self)
        self._conn.attach(self)
        self._fin_watch = self._loop.create_task(self._conn.wait_closed())
        self._fin_watch.add_done_callback(self._on_fin_acked)
        self._maybe_lost()  # it may have ended before the protocol took it over

    # -- the connection's Receiver -----------------------------------------------

    @property
    def unread(self) -> int:
        return len(self._held)

    def feed_data(self, data: Payload) -> None:
        if self._closing or self.lost.done():
            self._conn.consumed(len(data))  # nobody will read: keep the window open
        elif self._reading and not self._held:
            self._deliver(data if type(data) is bytes else bytes(data))  # bytes, as asyncio's
        else:
            self._held += data

    def feed_eof(self) -> None:
        if self._closing:
            return
        self._eof_held = True
        if self._reading and not self._held:
            self._deliver_eof()

    def connection_lost(self, exc: BaseException | None) -> None:
        """Tell the protocol, once; what it never read is dropped."""
        if self.lost.done():
            return
        self._closing = True
        self._held.clear()
        self.lost.set_result(None)
        self._call(self._protocol.connection_lost, exc)

    def _deliver(self, data: bytes) -> None:
        self._conn.consumed(len(data))
        if isinstance(self._protocol, asyncio.BufferedProtocol):
            self._call(self._fill, self._protocol, data)
        else:
            self._call(self._protocol.data_received, data)  # type: ignore[attr-defined]

    @staticmethod
    def _fill(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
        """A BufferedProtocol reads into its own buffers: as many as `data` needs."""
        view = memoryview(data)
        while view:
            buf = memoryview(protocol.get_buffer(len(view)))
            if not buf:
                raise RuntimeError("get_buffer() returned an empty buffer")
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]

    def _deliver_eof(self) -> None:
        self._eof_held = False
        self._eof_seen = True
        keep_open = self._call(self._protocol.eof_received)  # type: ignore[attr-defined]
        if not keep_open:
            self.close()
        self._maybe_lost()

    def _on_fin_acked(self, _: object) -> None:
        self._fin_acked = True
        self._maybe_lost()

    def _maybe_lost(self) -> None:
        """connection_lost once the connection is gone, or both directions are
        done: our FIN acknowledged, and the peer's delivered (or we closed and
        read no more), as asyncio's transports call it after close()."""
        if self._conn.finished or (self._fin_acked and (self._closing or self._eof_seen)):
            self.connection_lost(self._conn.error)

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        """A protocol callback; one that raises resets the connection, as
        asyncio's transports treat it (a fatal error)."""
        try:
            return method(*args)
        except Exception as exc:
            self._loop.call_exception_handler({
                "message": f"protocol callback {method.__qualname__} failed; resetting",
                "exception": exc, "transport": self, "protocol": self._protocol})
            self.abort()
            return None

    # -- asyncio.ReadTransport -------------------------------------------------------

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        """Hold what arrives without consuming it: the receive window closes."""
        self._reading = False

    def resume_reading(self) -> None:
        """Deliver what was held (soon, as asyncio does) and reopen the window."""
        if not self._reading:
            self._reading = True
            self._loop.call_soon(self._release)

    def _release(self) -> None:
        if self._reading and not self._closing and self._held:
            data = bytes(self._held)
            self._held.clear()
            self._deliver(data)
        if self._reading and not self._held and self._eof_held and not self._closing:
            self._deliver_eof()

    # -- asyncio.WriteTransport ------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if self.lost.done() or self._closing:
            return  # as asyncio: writes after close/loss go nowhere
        self._writer.write(data)
        if not self._write_paused and self.get_write_buffer_size() > self._high():
            self._write_paused = True
            self._call(self._protocol.pause_writing)
            self._loop.create_task(self._resume_writing_when_drained())

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def _high(self) -> int:
        return self._writer.get_write_buffer_limits()[1]

    async def _resume_writing_when_drained(self) -> None:
        try:
            await self._writer.drain()
        except OSError:
            return  # the connection is gone: connection_lost says so
        self._write_paused = False
        if not self.lost.done():
            self._call(self._protocol.resume_writing)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: FIN after the queued data; data still arrives."""
        self._writer.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._writer.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._writer.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._writer.set_write_buffer_limits(high, low)

    # -- asyncio.BaseTransport -------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """'peername', 'sockname' and 'socket' (setsockopt for TCP_NODELAY and
        keepalive), as the stream writer's."""
        return self._writer.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._closing or self.lost.done()

    def close(self) -> None:
        """FIN after the queued data, no more reading; connection_lost(None) once
        the FIN is acknowledged. Data received and never delivered means RST."""
        if self._closing:
            return
        if self._held:
            self.abort()
            return
        self._closing = True
        self._writer.close()
        self._maybe_lost()

    def abort(self) -> None:
        """RST at once, dropping queued data; connection_lost(None) follows."""
        self._closing = True
        self._held.clear()
        self._writer.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol


def serve_protocol(protocol_factory: ProtocolFactory) -> Callable[
        [StreamReader, StreamWriter], Any]:
    """A stream handler for Stack.start_server that hands each connection to a
    new protocol and lasts as long as the connection."""
    async def handler(reader: StreamReader, writer: StreamWriter) -> None:
        transport = Transport(writer, protocol_factory())
        await asyncio.shield(transport.lost)
    return handler
