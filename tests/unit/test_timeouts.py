"""The apps' time limits (tcpstack.apps.timeouts): one lazy loop timer per
connection, not one per read, with asyncio.timeout's outcomes.

The limits' behaviour over real connections (408, silent close, abort) is
tests/unit/test_apps.py's; here the cost: how many loop timers a body of many
reads schedules, and what a Deadline lets through."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from typing import Any

import pytest

from tcpstack.apps.echo import handle_echo
from tcpstack.apps.http import HttpLimits, handle_http
from tcpstack.apps.timeouts import Deadline, Expired
from tcpstack.shell.stream import StreamReader

PIECES = 64
PIECE = b"z" * 100


class Writer:
    """What the handlers use of a StreamWriter; keeps what they write."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.transport = self

    def write(self, data: bytes) -> None:
        self.out += data

    async def drain(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


def counting_timers(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The times of every loop timer scheduled from now on (call_later calls call_at)."""
    loop = asyncio.get_running_loop()
    scheduled: list[float] = []
    call_at = loop.call_at

    def counted(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        scheduled.append(when)
        return call_at(when, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counted)
    return scheduled


async def serve_in_pieces(handler: Any, head: bytes) -> tuple[bytes, int]:
    """Run `handler` on a reader that gets `head`, then PIECES pieces, the next
    one each time the handler has read everything: a read per piece. Returns
    what the handler wrote, and the reads of the pieces."""
    loop = asyncio.get_running_loop()
    pieces = [PIECE] * PIECES
    reads = 0

    def consumed(n: int) -> None:
        nonlocal reads
        if reader.unread:
            return
        if pieces:
            reads += n == len(PIECE)
            loop.call_soon(reader.feed_data, pieces.pop())
        else:
            loop.call_soon(reader.feed_eof)

    reader = StreamReader(consumed)
    writer = Writer()
    reader.feed_data(head)
    await asyncio.wait_for(handler(reader, writer), 10)
    return bytes(writer.out), reads


@pytest.mark.parametrize("app", ["http", "echo"])
async def test_a_connection_schedules_no_loop_timer_per_read(app: str, monkeypatch) -> None:
    """asyncio.timeout() around every read scheduled (and cancelled) a loop timer
    per read: PIECES of them for an upload of PIECES reads, twice that for an
    echo (its write is bounded too). A Deadline arms one and moves it lazily."""
    body = PIECE * PIECES
    if app == "http":
        handler: Any = handle_http
        head = f"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    else:
        handler, head = functools.partial(handle_echo, idle_timeout=60.0), PIECE.decode()
    scheduled = counting_timers(monkeypatch)
    out, reads = await serve_in_pieces(handler, head.encode())
    assert reads >= PIECES - 1  # every piece was a read of its own (the head may share one)
    if app == "http":
        assert out.split(b"\r\n\r\n", 1)[1] == hashlib.sha256(body).hexdigest().encode() + b"\n"
    else:
        assert out == PIECE + body
    assert len(scheduled) <= 3, f"{len(scheduled)} loop timers for {reads} reads"


async def test_http_limits_still_apply_on_a_shared_deadline() -> None:
    """The head's limit and the body's share the timer: a body that stops gets
    its 408 after the body timeout, although the timer was armed for the head."""
    reader = StreamReader(lambda n: None)
    writer = Writer()
    reader.feed_data(b"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    limits = HttpLimits(header_timeout=30.0, body_timeout=0.05)
    await asyncio.wait_for(handle_http(reader, writer, limits), 10)
    assert writer.out.startswith(b"HTTP/1.1 408 ")


async def test_a_deadline_expires_as_its_own_exception_and_rearms() -> None:
    deadline = Deadline()
    never = asyncio.get_running_loop().create_future()
    assert await deadline.within(5.0, asyncio.sleep(0, "done")) == "done"
    with pytest.raises(Expired):  # the 5 s timer is armed: the shorter limit re-arms it
        await deadline.within(0.01, never)
    with pytest.raises(KeyError):  # the step's own errors pass through
        await deadline.within(0.01, asyncio.sleep(0, {}.pop("x")))
    deadline.cancel()


async def test_a_deadline_lets_timeout_errors_and_outside_cancellation_through() -> None:
    deadline = Deadline()

    async def stack_timeout() -> None:
        raise TimeoutError("retransmissions unanswered")

    with pytest.raises(TimeoutError, match="unanswered"):
        await deadline.within(5.0, stack_timeout())
    never = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(deadline.within(5.0, never))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline.cancel()
