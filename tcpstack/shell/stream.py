"""StreamReader / StreamWriter with the methods of asyncio's, on top of a TCB.

Existing asyncio code runs on the stack unchanged: handlers get `(reader,
writer)` exactly as from `asyncio.start_server`. The reader is ours rather
than asyncio's because TCP flow control needs to know exactly when the
application consumes bytes: every read reopens the receive window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from tcpstack.core.segment import Payload

if TYPE_CHECKING:
    from tcpstack.shell.connection import Connection

_DEFAULT_LIMIT: Final = 2**16  # asyncio's default line limit


class Receiver(Protocol):
    """Where a connection delivers what it receives: a StreamReader, or a
    protocol's transport (tcpstack.shell.transport). Whoever it is reports consumed
    bytes back to the connection, which reopens the receive window then
    (RFC 9293 3.8.6.2.2), so a receiver that stops consuming closes the window."""

    @property
    def unread(self) -> int:
        """Bytes received and not yet consumed (charged to --mem-limit)."""
        ...

    def feed_data(self, data: Payload) -> None: ...

    def feed_eof(self) -> None:
        """The peer sent FIN."""

    def connection_lost(self, exc: BaseException | None) -> None:
        """The connection is gone: closed in order (None) or with `exc`."""


def _nobody(n: int) -> None:
    """Where a detached reader reports what the application consumed."""


class StreamReader:
    """Buffered reads of one connection's incoming byte stream.

    What arrives is kept as the `bytes` it came in (the segments' payloads),
    and a read that takes all of it joins them: one copy, none for a single
    piece. asyncio's reader copies twice, into its bytearray on arrival and
    out of it on the read; a bulk receive feeds several pieces per read, and
    growing and freeing that bytearray cost more than the copies. Only the
    reads that look into the bytes (readuntil, readline) or take part of them
    move the pieces into the bytearray first, as asyncio does on arrival.
    """

    def __init__(self, on_consumed: Callable[[int], None], limit: int = _DEFAULT_LIMIT) -> None:
        self._buffer = bytearray()  # the stream's first bytes, before the pieces
        #: then these, as they arrived (a view only of a piece's own bytes)
        self._pieces: list[bytes | memoryview] = []
        self._in_pieces = 0  # bytes in _pieces
        self._eof = False
        self._exception: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._on_consumed = on_consumed
        self._discard = False
        self._limit = limit

    def detach(self) -> None:
        """The connection is gone: what is read from now on is nobody's business
        but the application's (and the connection is no longer kept alive by it)."""
        self._on_consumed = _nobody

    # -- fed by the connection ------------------------------------------------

    def feed_data(self, data: Payload) -> None:
        """Keep `data` for the application, uncopied when it is `bytes` (it
        cannot change: anything else is copied); the wake-up only when a read
        waits (a bulk receive feeds many segments per batch, read at once)."""
        if self._discard:
            self._on_consumed(len(data))  # nobody will read: keep the window open
            return
        if not data:
            return
        self._pieces.append(data if type(data) is bytes else bytes(data))
        self._in_pieces += len(data)
        if self._waiter is not None:
            self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        self._exception = exc
        self._wake()

    def connection_lost(self, exc: BaseException | None) -> None:
        if exc is None:
            self.feed_eof()
        else:
            self.set_exception(exc)

    def hand_over(self, receiver: Receiver) -> None:
        """Give `receiver` what arrived so far (it reports the bytes consumed
        from now on) and stop receiving: a protocol takes the connection over."""
        data = self._take_unreported(self.unread)
        self._discard = True
        if data:
            receiver.feed_data(data)
        if self._exception is not None:
            receiver.connection_lost(self._exception)
        elif self._eof:
            receiver.feed_eof()

    def discard(self) -> None:
        """The application closed: drop what is buffered and what still arrives."""
        self._discard = True
        self._take(self.unread)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, func: str) -> None:
        """Until data, EOF or an exception arrives; the exception is raised.

        The readers check `_exception` here, after the await, not after their
        own: mypy (and so the compiled code, tcpstack.native) would take their
        check before the await as still holding after it."""
        if self._waiter is not None:
            raise RuntimeError(f"{func}() called while another coroutine is already waiting")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._exception is not None:
            raise self._exception

    def _take(self, n: int) -> bytes:
        data = self._take_unreported(n)
        if n:
            self._on_consumed(n)
        return data

    def _take_unreported(self, n: int) -> bytes:
        """The first `n` bytes, copied once at most. From the bytearray: a
        slice of a view of it (a slice of the bytearray and then bytes of the
        slice would be two copies; asyncio slices a memoryview the same way);
        deleting from its front moves its start, not its bytes. Beyond it, from
        the pieces: the whole ones, and the head of the next one, whose rest
        stays a view of it; all joined, so one piece taken whole is not copied."""
        buffer, pieces = self._buffer, self._pieces
        if not buffer and n == self._in_pieces:  # all of the pieces: the usual read
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            pieces.clear()
            self._in_pieces = 0
            return data if type(data) is bytes else bytes(data)
        if n < len(buffer):
            with memoryview(buffer) as view:
                data = bytes(view[:n])
            del buffer[:n]
            return data
        parts = self._cut_pieces(n - len(buffer))
        if buffer:
            parts.insert(0, buffer)
        joined = parts[0] if len(parts) == 1 else b"".join(parts)
        taken = joined if type(joined) is bytes else bytes(joined)
        buffer.clear()
        return taken

    def _cut_pieces(self, n: int) -> list[bytes | memoryview | bytearray]:
        """The pieces that make the first `n` bytes of them, cut from them."""
        pieces = self._pieces
        self._in_pieces -= n
        if not self._in_pieces:  # all of them
            parts: list[bytes | memoryview | bytearray] = list(pieces)
            pieces.clear()
            return parts
        taken = size = 0
        while size + len(pieces[taken]) <= n:
            size += len(pieces[taken])
            taken += 1
        parts = list(pieces[:taken])
        if size < n:  # and the head of the next one
            view = memoryview(pieces[taken])
            parts.append(view[:n - size])
            pieces[taken] = view[n - size:]
        del pieces[:taken]
        return parts

    def _gathered(self) -> bytearray:
        """The bytearray with every piece moved into it (for reads that look
        into the bytes or take part of them): each byte is moved once."""
        buffer = self._buffer
        if self._pieces:
            for piece in self._pieces:
                buffer += piece
            self._pieces.clear()
            self._in_pieces = 0
        return buffer

    # -- asyncio.StreamReader API ---------------------------------------------

    @property
    def unread(self) -> int:
        """Bytes received but not yet read by the application."""
        return len(self._buffer) + self._in_pieces

    def exception(self) -> BaseException | None:
        return self._exception

    def at_eof(self) -> bool:
        """True when the peer sent FIN and the buffer is empty."""
        return self._eof and not self.unread

    async def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (all until EOF when n < 0); b"" at EOF."""
        if self._exception is not None:
            raise self._exception
        if n == 0:
            return b""
        if n < 0:
            # Consume block by block, as asyncio does: holding everything unread
            # until EOF would close the receive window and stall the peer.
            blocks = []
            while block := await self.read(self._limit):
                blocks.append(block)
            return b"".join(blocks)
        while not (self._buffer or self._pieces or self._eof):
            await self._wait("read")
        return self._take(min(n, len(self._buffer) + self._in_pieces))

    async def readexactly(self, n: int) -> bytes:
        """Exactly `n` bytes, or asyncio.IncompleteReadError at EOF."""
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        if self._exception is not None:
            raise self._exception
        while self.unread < n:
            if self._eof:
                partial = self._take(self.unread)
                raise asyncio.IncompleteReadError(partial, n)
            await self._wait("readexactly")
        return self._take(n)

    async def readline(self) -> bytes:
        """A line ending in b"\\n"; the partial line at EOF; ValueError over the limit."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            return e.partial
        except asyncio.LimitOverrunError as e:
            if self._gathered().startswith(b"\n", e.consumed):
                self._take(e.consumed + 1)
            else:
                self._take(self.unread)
            raise ValueError(e.args[0]) from None

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Bytes up to and including `separator`, as asyncio.StreamReader.readuntil."""
        if not separator:
            raise ValueError("Separator should be at least one-byte string")
        if self._exception is not None:
            raise self._exception
        seplen = len(separator)
        offset = 0
        while True:
            buffer = self._gathered()
            index = buffer.find(separator, offset)
            if index != -1:
                if index > self._limit:
                    raise asyncio.LimitOverrunError(
                        "Separator is found, but chunk is longer than limit", index)
                return self._take(index + seplen)
            offset = max(0, len(buffer) + 1 - seplen)
            if offset > self._limit:
                raise asyncio.LimitOverrunError(
                    "Separator is not found, and chunk exceed the limit", offset)
            if self._eof:
                partial = self._take(len(buffer))
                raise asyncio.IncompleteReadError(partial, None)
            await self._wait("readuntil")

    def __aiter__(self) -> StreamReader:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if line == b"":
            raise StopAsyncIteration
        return line


class StreamWriter:
    """Writes to one connection, with asyncio.StreamWriter's methods.

    It is also its own `transport`, so `writer.transport.abort()` resets the
    connection as it does on asyncio.
    """

    def __init__(self, conn: Connection, reader: StreamReader) -> None:
        self._conn = conn
        self._reader = reader
        self._eof_written = False
        self._closing = False

    @property
    def transport(self) -> StreamWriter:
        return self

    @property
    def connection(self) -> Connection:
        """The connection it writes to (for tcpstack.shell.transport, which takes it over)."""
        return self._conn

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes; they leave as the peer's window allows. Use `drain()`."""
        if self._eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if data and self._conn.error is None and not self._closing:
            self._conn.send(bytes(data))

    def writelines(self, data: Any) -> None:
        self.write(b"".join(data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: send FIN after the queued data; reading goes on."""
        if not self._eof_written:
            self._eof_written = True
            self._conn.close_send(orphan=False)

    def close(self) -> None:
        """Close both directions: FIN after queued data. Received data that was
        never read, or that arrives later, is lost, so then the connection is
        reset instead, as RFC 1122 4.2.2.13 asks and Linux does."""
        if self._closing:
            return
        if self._reader.unread:
            self.abort()
            return
        self._closing = True
        self._eof_written = True
        self._reader.discard()
        self._conn.close_send(orphan=True)

    def abort(self) -> None:
        """Reset the connection at once (RST), dropping queued data."""
        self._closing = True
        self._reader.discard()
        self._conn.abort()

    def is_closing(self) -> bool:
        return self._closing or self._conn.finished

    async def wait_closed(self) -> None:
        """Until our FIN is acknowledged or the connection is gone."""
        await self._conn.wait_closed()

    async def drain(self) -> None:
        """Return at once below the high-water mark; above it, wait until the
        write buffer is down to the low-water mark. Raise if the connection was
        reset."""
        await self._conn.drain()

    # -- the transport's flow control (asyncio.WriteTransport) ------------------

    def get_write_buffer_size(self) -> int:
        """Bytes written and not yet acknowledged by the peer (asyncio counts
        those not yet handed to the kernel; here the TCB is the kernel, and its
        unacknowledged bytes are what --snd-buf bounds)."""
        return self._conn.write_buffer_size

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """When `drain()` waits (above `high`) and until when (down to `low`)."""
        self._conn.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """(low, high), in asyncio's order."""
        return self._conn.write_low, self._conn.write_high

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """'peername' and 'sockname' as (host, port) tuples, like a socket's."""
        return self._conn.extra_info(name, default)
