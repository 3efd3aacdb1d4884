"""`tcpstack connect`'s data path: stdin to the connection, the connection to stdout.

Like `nc`: bytes read from stdin are sent, bytes received are written to
stdout, EOF on stdin half-closes the connection (FIN; receiving goes on), and
when the peer closes the relay ends once everything received is on stdout and
our own FIN has been acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from tcpstack.shell.stream import StreamReader, StreamWriter

log = logging.getLogger("tcpstack.lab.connect")

CHUNK = 65536
#: How long to wait, after the peer closed, for our last data and FIN to be
#: acknowledged before giving up (the peer is gone or unreachable).
CLOSE_TIMEOUT = 30.0


class BlockingFd:
    """Blocking `os.read` / `os.write` on one file descriptor, run on a
    dedicated daemon thread and awaited from the event loop.

    Why a thread rather than `loop.connect_read_pipe` or `add_reader`: epoll
    refuses regular files and /dev/null (EPERM), so `connect ... < file` would
    fail, while a blocking read or write works the same on files, /dev/null,
    pipes, terminals and sockets. Why our own daemon thread rather than the
    default executor: a read blocked on a terminal that never sends EOF would
    keep the loop's executor shutdown (and so the process) waiting, whereas a
    daemon thread simply dies with the process. And the descriptor stays in
    blocking mode: O_NONBLOCK is a flag of the open file description, which a
    terminal or pipe shares with the parent shell and other processes.
    """

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self._loop = asyncio.get_running_loop()
        self._jobs: queue.SimpleQueue[tuple[asyncio.Future[Any], Callable[[], Any]]] = (
            queue.SimpleQueue())
        threading.Thread(target=self._work, name=name, daemon=True).start()

    async def read(self, n: int = CHUNK) -> bytes:
        """Up to `n` bytes; b"" at EOF."""
        return await self._call(lambda: os.read(self.fd, n))

    async def write_all(self, data: bytes) -> None:
        """All of `data` (os.write may write less than asked to a pipe)."""
        def write() -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        await self._call(write)

    async def _call(self, job: Callable[[], Any]) -> Any:
        future = self._loop.create_future()
        self._jobs.put((future, job))
        return await future

    def _work(self) -> None:
        while True:
            future, job = self._jobs.get()
            try:
                value, ok = job(), True
            except Exception as e:
                value, ok = e, False
            try:
                self._loop.call_soon_threadsafe(_settle, future, ok, value)
            except RuntimeError:
                return  # the loop is closed: the process is exiting


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return  # cancelled while the thread worked: we are exiting, drop the data
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


async def relay(reader: StreamReader, writer: StreamWriter, stdin_fd: int = 0,
                stdout_fd: int = 1) -> None:
    """Copy both ways until the peer closes; raise the connection's error (reset,
    stdout closed, ...) if it fails instead.

    When the peer closes, stdin that has not been read yet is not sent: the
    relay stops reading it, sends our FIN after the data already queued and
    waits (at most CLOSE_TIMEOUT) for it to be acknowledged, so the peer got
    everything we read.
    """
    upload = asyncio.create_task(_upload(BlockingFd(stdin_fd, "stdin"), writer))
    download = asyncio.create_task(_download(reader, BlockingFd(stdout_fd, "stdout")))
    try:
        # Wait for the peer to close; a failed upload (stdin error, connection
        # reset while sending) ends the relay early. A finished upload does not.
        waiting: set[asyncio.Task[None]] = {download, upload}
        while download in waiting:
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if upload in done and upload.exception() is not None:
                raise upload.exception()  # type: ignore[misc]
        download.result()
    finally:
        upload.cancel()
        download.cancel()
    log.info("peer closed the connection")
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
    except TimeoutError:
        raise TimeoutError(f"our FIN was not acknowledged within {CLOSE_TIMEOUT:g}s") from None
    error = reader.exception()
    if error is not None:
        raise error


async def _upload(stdin: BlockingFd, writer: StreamWriter) -> None:
    sent = 0
    while data := await stdin.read():
        writer.write(data)
        sent += len(data)
        await writer.drain()
    writer.write_eof()
    log.info("stdin closed after %d bytes: FIN sent (half-close), still receiving", sent)


async def _download(reader: StreamReader, stdout: BlockingFd) -> None:
    while data := await reader.read(CHUNK):
        await stdout.write_all(data)
