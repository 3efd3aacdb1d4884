"""The asyncio-compatible StreamReader: same results as asyncio's, and every
consumed byte is reported so the TCB can reopen its receive window."""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpstack.shell.stream import StreamReader


def make() -> tuple[StreamReader, list[int]]:
    consumed: list[int] = []
    return StreamReader(consumed.append, limit=16), consumed


async def test_read_until_eof_consumes_as_it_goes() -> None:
    reader, consumed = make()
    task = asyncio.create_task(reader.read())
    reader.feed_data(b"x" * 40)
    await asyncio.sleep(0)
    assert sum(consumed) == 40  # the window reopens before EOF arrives
    reader.feed_eof()
    assert await asyncio.wait_for(task, 1) == b"x" * 40


async def test_readexactly_and_incomplete() -> None:
    reader, consumed = make()
    reader.feed_data(b"abcdef")
    assert await reader.readexactly(4) == b"abcd"
    reader.feed_eof()
    with pytest.raises(asyncio.IncompleteReadError) as e:
        await reader.readexactly(4)
    assert e.value.partial == b"ef"
    assert sum(consumed) == 6


async def test_readline_readuntil_and_iteration() -> None:
    reader, _ = make()
    reader.feed_data(b"one\ntwo\r\nthree")
    assert await reader.readline() == b"one\n"
    assert await reader.readuntil(b"\r\n") == b"two\r\n"
    reader.feed_eof()
    assert [line async for line in reader] == [b"three"]
    assert reader.at_eof()


async def test_readline_over_limit_raises_value_error() -> None:
    reader, _ = make()
    reader.feed_data(b"y" * 40)
    with pytest.raises(ValueError):
        await reader.readline()


async def test_exception_is_raised_to_a_waiting_reader() -> None:
    reader, _ = make()
    task = asyncio.create_task(reader.read(10))
    await asyncio.sleep(0)
    reader.set_exception(ConnectionResetError("reset"))
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(task, 1)


async def test_discard_drops_buffered_and_later_input() -> None:
    reader, consumed = make()
    reader.feed_data(b"abc")
    reader.discard()
    reader.feed_data(b"defg")
    assert sum(consumed) == 7


@pytest.mark.parametrize("n", [4 << 20, 1 << 20], ids=["all", "part"])
async def test_a_read_copies_its_bytes_once(n: int) -> None:
    """read(n) hands out one copy of the buffered bytes (as asyncio's reader):
    slicing the bytearray and then making bytes of the slice held two copies of
    every read at once, twice the memory and the time on a bulk receive."""
    reader, consumed = make()
    reader.feed_data(bytes(4 << 20))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        data = await reader.read(n)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert len(data) == n and consumed == [n]
    assert peak < 1.5 * n, f"{peak} bytes allocated at the peak of a {n}-byte read"


_OPS = st.lists(st.one_of(
    st.tuples(st.just("feed"), st.binary(min_size=1, max_size=40)
              .map(lambda b: b + b"\n" * (b[0] % 2))),
    st.tuples(st.sampled_from(["read", "readexactly"]), st.integers(-1, 50)),
    st.tuples(st.sampled_from(["readline", "readuntil"]), st.sampled_from([b"\n", b"ab", b"\n\n"])),
), max_size=30)


@settings(max_examples=300)
@given(ops=_OPS)
async def test_results_are_asyncio_streamreaders(ops: list[tuple[str, Any]]) -> None:
    """Any mix of arrivals and reads gives what asyncio.StreamReader gives (the
    same bytes, the same exceptions), whether the bytes are still in the pieces
    they came in or in the bytearray: ops that would wait are skipped, and EOF
    ends it, after which every read is run."""
    ours, consumed = make()
    theirs = asyncio.StreamReader(limit=16)

    async def both(op: str, arg: Any) -> None:
        results = []
        for reader in (ours, theirs):
            try:
                results.append(await getattr(reader, op)(*([] if op == "readline" else [arg])))
            except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                results.append((type(e), getattr(e, "partial", None), getattr(e, "consumed", None)))
        assert results[0] == results[1], (op, arg)
        assert ours.unread == len(theirs._buffer) and ours.at_eof() == theirs.at_eof()

    def waits(op: str, arg: Any) -> bool:
        held = bytes(theirs._buffer)
        if theirs.at_eof() or theirs._eof:
            return False
        if op == "read":  # read(-1) reads until EOF
            return arg < 0 or (not held and arg != 0)
        if op == "readexactly":
            return len(held) < arg
        sep = b"\n" if op == "readline" else arg
        return sep not in held and len(held) + 1 - len(sep) <= 16  # else LimitOverrunError

    for op, arg in ops:
        if op == "feed":
            ours.feed_data(arg)
            theirs.feed_data(arg)
        elif not waits(op, arg):
            await both(op, arg)
    ours.feed_eof()
    theirs.feed_eof()
    for op, arg in ops:
        if op != "feed":
            await both(op, arg)
    assert sum(consumed) == sum(len(arg) for op, arg in ops if op == "feed") - ours.unread
