"""The apps on real asyncio streams over loopback.

The handlers only use the asyncio stream interface, so running them under
`asyncio.start_server` on 127.0.0.1 tests them without the TCP stack; the
integration tests run the same code on the stack. Every handler is wrapped so
that teardown can check it finished and let no exception escape: ordinary
peer behaviour (EOF, reset, bad requests) must never become a handler failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import re
import shutil
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

import pytest

from tcpstack.apps import APPS, Handler
from tcpstack.apps import http as http_module
from tcpstack.apps.discard import handle_discard
from tcpstack.apps.echo import handle_echo
from tcpstack.apps.forward import Upstream, handle_forward
from tcpstack.apps.http import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_PATTERN_BYTES,
    HttpLimits,
    handle_http,
)
from tcpstack.apps.timeouts import Deadline

TIMEOUT = 10.0
Start = Callable[[Handler], Awaitable[int]]


def http(**limits: Any) -> Handler:
    """The HTTP handler with some limits changed, as `--http-...` options give it."""
    return functools.partial(handle_http, limits=HttpLimits(**limits))


def pattern(n: int) -> bytes:
    """The /bytes/N body, computed independently of the app: byte k is k % 251."""
    return bytes(k % 251 for k in range(n))


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start loopback servers; at teardown every handler must have returned normally."""
    servers: list[asyncio.Server] = []
    tasks: list[asyncio.Task[Any]] = []
    errors: list[BaseException] = []

    async def start_server(handler: Handler) -> int:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.append(task)
            try:
                await handler(reader, writer)
            except BaseException as exc:
                errors.append(exc)
                raise

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start_server
    for server in servers:
        server.close()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), TIMEOUT)
    assert errors == []
    for server in servers:
        await asyncio.wait_for(server.wait_closed(), TIMEOUT)


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(writer.wait_closed(), TIMEOUT)


async def at_eof(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed its side (after everything it sent was read)."""
    return await asyncio.wait_for(reader.read(1), TIMEOUT) == b""


def test_registry() -> None:
    """`--app KIND:PORT` looks KIND up here."""
    assert sorted(APPS) == ["discard", "echo", "forward", "http"]
    assert APPS["echo"] is handle_echo
    assert APPS["discard"] is handle_discard
    assert APPS["http"] is handle_http
    assert APPS["forward"] is handle_forward


# -- echo and discard ----------------------------------------------------------


@pytest.mark.parametrize("size", [1, 1000, 1_000_000])
async def test_echo_round_trip(start: Start, size: int) -> None:
    port = await start(handle_echo)
    payload = hashlib.sha256(b"echo").digest() * (size // 32 + 1)
    payload = payload[:size]
    async with connect(port) as (reader, writer):

        async def send() -> None:  # concurrently, so neither side's buffers deadlock
            writer.write(payload)
            await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        got = await asyncio.wait_for(reader.readexactly(size), TIMEOUT)
        await asyncio.wait_for(sender, TIMEOUT)
        assert got == payload
        assert await at_eof(reader)


async def test_echo_client_reset(start: Start) -> None:
    port = await start(handle_echo)
    async with connect(port) as (reader, writer):
        writer.write(b"x" * 100_000)
        await writer.drain()
        await asyncio.wait_for(reader.readexactly(10), TIMEOUT)
        reset(writer)


async def test_discard(start: Start) -> None:
    port = await start(handle_discard)
    async with connect(port) as (reader, writer):
        writer.write(b"z" * 1_000_000)
        await writer.drain()
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN (SO_LINGER with a zero timeout)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- forward -------------------------------------------------------------------------


async def forward_to(start: Start, upstream: Handler | int) -> int:
    """A forward app on loopback relaying to `upstream` (a handler started here, or a port)."""
    port = upstream if isinstance(upstream, int) else await start(upstream)
    return await start(functools.partial(
        handle_forward, upstream=Upstream(IPv4Address("127.0.0.1"), port), connect_timeout=TIMEOUT))


async def digest_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read to EOF, then answer the SHA-256 of it: only a relayed half-close gets an answer."""
    h = hashlib.sha256()
    while data := await reader.read(65536):
        h.update(data)
    writer.write(h.hexdigest().encode())
    await writer.drain()
    writer.close()


async def test_forward_relays_both_ways_to_eof(start: Start) -> None:
    port = await forward_to(start, handle_echo)
    payload = hashlib.sha256(b"forward").digest() * 100_000  # 3.2 MB: over every buffer
    async with connect(port) as (reader, writer):

        async def send() -> None:
            writer.write(payload)
            await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        got = await asyncio.wait_for(reader.readexactly(len(payload)), TIMEOUT)
        await asyncio.wait_for(sender, TIMEOUT)
        assert got == payload
        assert await at_eof(reader)


async def test_forward_half_close_keeps_the_other_direction(start: Start) -> None:
    port = await forward_to(start, digest_after_eof)
    body = b"q" * 1_000_000
    async with connect(port) as (reader, writer):
        writer.write(body)
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), TIMEOUT)
    assert answer == hashlib.sha256(body).hexdigest().encode()


async def test_forward_refused_upstream_resets_the_client(start: Start) -> None:
    with socket.socket() as unused:  # bound, not listening: connecting to it is refused
        unused.bind(("127.0.0.1", 0))
        port = await forward_to(start, unused.getsockname()[1])
        async with connect(port) as (reader, _):
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(1), TIMEOUT)


async def test_forward_upstream_reset_resets_the_client(start: Start) -> None:
    async def reset_after_a_line(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        reset(writer)

    port = await forward_to(start, reset_after_a_line)
    async with connect(port) as (reader, writer):
        writer.write(b"hello\n")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), TIMEOUT)


async def test_forward_client_reset_resets_the_upstream(start: Start) -> None:
    seen: asyncio.Future[BaseException | bytes] = asyncio.get_running_loop().create_future()

    async def wait_for_more(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        try:
            seen.set_result(await reader.read(1))
        except ConnectionResetError as e:
            seen.set_result(e)
        writer.close()

    port = await forward_to(start, wait_for_more)
    async with connect(port) as (reader, writer):
        writer.write(b"hello\n")
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"hello\n"
        reset(writer)
    assert isinstance(await asyncio.wait_for(seen, TIMEOUT), ConnectionResetError)


# -- HTTP client helpers ---------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> Response:
    async def go() -> Response:
        status_line = await reader.readuntil(b"\r\n")
        match = re.fullmatch(rb"HTTP/1\.1 (\d{3}) [^\r\n]+\r\n", status_line)
        assert match, status_line
        headers: dict[str, str] = {}
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.lower()] = value.strip()
        length = int(headers["content-length"])  # always present
        body = b"" if head else await reader.readexactly(length)
        return Response(int(match[1]), headers, body)

    return await asyncio.wait_for(go(), TIMEOUT)


async def exchange(port: int, raw: bytes, *, head: bool = False) -> tuple[Response, bool]:
    """Send one raw request on a fresh connection; the response and whether it closed."""
    async with connect(port) as (reader, writer):
        writer.write(raw)
        await writer.drain()
        response = await read_response(reader, head=head)
        writer.write_eof()  # so the server's lingering close ends at once
        return response, await at_eof(reader)


def get(path: str, version: str = "1.1", *, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nHost: test\r\n{extra}\r\n".encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return get(path, method="POST", extra=f"Content-Length: {len(body)}\r\n{extra}") + body


# -- HTTP --------------------------------------------------------------------------


async def test_index(start: Start) -> None:
    port = await start(handle_http)
    response, closed = await exchange(port, get("/", extra="Connection: close\r\n"))
    assert response.status == 200
    assert b"tcpstack" in response.body
    for endpoint in (b"/bytes/N", b"/sha256"):
        assert endpoint in response.body
    assert response.headers["content-type"].startswith("text/")
    assert response.headers["server"] == "tcpstack"
    assert response.headers["date"].endswith(" GMT")
    assert response.headers["connection"] == "close"
    assert closed


@pytest.mark.parametrize("n", [0, 1, 250, 251, 252, 65511, 65512, 1_000_000])
async def test_bytes_exact(start: Start, n: int) -> None:
    port = await start(handle_http)
    response, _ = await exchange(port, get(f"/bytes/{n}"))
    assert response.status == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-length"] == str(n)
    assert response.body == pattern(n)


async def test_head_sends_no_body(start: Start) -> None:
    port = await start(handle_http)
    async with connect(port) as (reader, writer):
        writer.write(get("/", method="HEAD") + get("/bytes/5000", method="HEAD") + get("/bytes/3"))
        index = await read_response(reader, head=True)
        assert index.status == 200
        assert int(index.headers["content-length"]) > 0
        big = await read_response(reader, head=True)
        assert big.headers["content-length"] == "5000"
        # Had a HEAD response carried a body, this would not parse as the next response.
        assert (await read_response(reader)).body == pattern(3)


async def test_sha256_content_length(start: Start) -> None:
    port = await start(handle_http)
    body = hashlib.sha512(b"body").digest() * 5000
    response, _ = await exchange(port, post("/sha256", body))
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.body == hashlib.sha256(body).hexdigest().encode() + b"\n"


async def test_sha256_empty_body(start: Start) -> None:
    port = await start(handle_http)
    response, _ = await exchange(port, post("/sha256", b""))
    assert response.body == hashlib.sha256(b"").hexdigest().encode() + b"\n"


async def test_sha256_chunked(start: Start) -> None:
    port = await start(handle_http)
    pieces = [b"a" * 1, b"b" * 100_000, b"", b"c" * 17]
    wire = b"".join(f"{len(p):x};ext=1\r\n".encode() + p + b"\r\n" if p else b"" for p in pieces)
    raw = get("/sha256", method="POST", extra="Transfer-Encoding: chunked\r\n")
    raw += wire + b"0\r\nX-Trailer: yes\r\n\r\n"
    async with connect(port) as (reader, writer):
        writer.write(raw + get("/bytes/10"))  # the next request proves the framing
        response = await read_response(reader)
        assert response.status == 200
        assert response.body == hashlib.sha256(b"".join(pieces)).hexdigest().encode() + b"\n"
        assert (await read_response(reader)).body == pattern(10)


async def test_sha256_expect_continue(start: Start) -> None:
    port = await start(handle_http)
    body = b"q" * 5000
    async with connect(port) as (reader, writer):
        writer.write(
            get(
                "/sha256",
                method="POST",
                extra=f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n",
            )
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        assert (await read_response(reader)).body == hashlib.sha256(
            body
        ).hexdigest().encode() + b"\n"


async def test_http11_keep_alive(start: Start) -> None:
    port = await start(handle_http)
    async with connect(port) as (reader, writer):
        writer.write(get("/bytes/7"))
        first = await read_response(reader)
        assert first.body == pattern(7)
        assert "connection" not in first.headers
        writer.write(get("/", extra="Connection: close\r\n"))
        second = await read_response(reader)
        assert second.status == 200
        assert second.headers["connection"] == "close"
        assert await at_eof(reader)


async def test_http10_closes(start: Start) -> None:
    port = await start(handle_http)
    response, closed = await exchange(port, b"GET / HTTP/1.0\r\n\r\n")
    assert response.status == 200
    assert response.headers["connection"] == "close"
    assert closed


async def test_http10_keep_alive(start: Start) -> None:
    port = await start(handle_http)
    async with connect(port) as (reader, writer):
        for _ in range(2):  # ab -k sends exactly this header
            writer.write(b"GET /bytes/20 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            response = await read_response(reader)
            assert response.body == pattern(20)
            assert response.headers["connection"].lower() == "keep-alive"
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        assert (await read_response(reader)).headers["connection"] == "close"
        assert await at_eof(reader)


async def test_pipelining(start: Start) -> None:
    port = await start(handle_http)
    body = b"pipelined"
    async with connect(port) as (reader, writer):
        writer.write(
            get("/bytes/300")
            + post("/sha256", body)
            + get("/nowhere")
            + get("/", method="HEAD")
            + get("/bytes/2", extra="Connection: close\r\n")
        )
        assert (await read_response(reader)).body == pattern(300)
        assert (await read_response(reader)).body == hashlib.sha256(
            body
        ).hexdigest().encode() + b"\n"
        assert (await read_response(reader)).status == 404
        assert (await read_response(reader, head=True)).status == 200
        assert (await read_response(reader)).body == pattern(2)
        assert await at_eof(reader)


async def test_not_found_keeps_connection(start: Start) -> None:
    port = await start(handle_http)
    async with connect(port) as (reader, writer):
        writer.write(get("/nope") + get("/bytes"))
        for _ in range(2):
            response = await read_response(reader)
            assert response.status == 404
            assert response.body
        writer.write(get("/bytes/1"))
        assert (await read_response(reader)).body == pattern(1)


@pytest.mark.parametrize(
    ("raw", "allow"),
    [
        (get("/sha256"), "POST"),
        (get("/sha256", method="PUT"), "POST"),
        (post("/", b"x"), "GET, HEAD"),
        (get("/bytes/5", method="DELETE"), "GET, HEAD"),
    ],
)
async def test_method_not_allowed(start: Start, raw: bytes, allow: str) -> None:
    port = await start(handle_http)
    response, _ = await exchange(port, raw)
    assert response.status == 405
    assert response.headers["allow"] == allow


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /\r\n\r\n",  # HTTP/0.9 style
        b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTX/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1\r\nHost: x\r\n\r\n",
        b"GET nopath HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\xff\xfe\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n folded\r\n\r\n",
        get("/bytes/-1"),
        get("/bytes/+5"),
        get("/bytes/5x"),
        get("/bytes/"),
        get("/bytes/0x10"),
        b"GET /bytes/\xc2\xb2 HTTP/1.1\r\nHost: x\r\n\r\n",
        get(f"/bytes/{MAX_PATTERN_BYTES + 1}"),
        get("/sha256", method="POST", extra="Content-Length: abc\r\n"),
        get("/sha256", method="POST", extra="Content-Length: -1\r\n"),
        get("/sha256", method="POST", extra="Content-Length: 1\r\nContent-Length: 2\r\n"),
        b"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n",  # "²".isdigit()
        get("/sha256", method="POST", extra="Content-Length: 3\r\nTransfer-Encoding: chunked\r\n")
        + b"0\r\n\r\n",
        get("/sha256", method="POST", extra="Transfer-Encoding: chunked\r\n") + b"zz\r\n",
        get("/sha256", method="POST", extra="Transfer-Encoding: chunked\r\n") + b"2\r\nabXY",
        b"POST /sha256 HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
)
async def test_bad_request(start: Start, raw: bytes) -> None:
    port = await start(handle_http)
    response, closed = await exchange(port, raw)
    assert response.status == 400
    assert response.body.startswith(b"400 ")
    assert response.headers["connection"] == "close"
    assert closed


async def test_body_too_large_by_content_length(start: Start) -> None:
    port = await start(handle_http)
    raw = get("/sha256", method="POST", extra=f"Content-Length: {MAX_BODY_BYTES + 1}\r\n")
    response, closed = await exchange(port, raw + b"some of the body")
    assert response.status == 413
    assert response.headers["connection"] == "close"
    assert closed


async def test_body_too_large_chunked(start: Start) -> None:
    port = await start(http(max_body_bytes=1000))
    raw = get("/sha256", method="POST", extra="Transfer-Encoding: chunked\r\n")
    raw += b"258\r\n" + b"a" * 600 + b"\r\n" + b"258\r\n" + b"b" * 600 + b"\r\n0\r\n\r\n"
    response, closed = await exchange(port, raw)
    assert response.status == 413
    assert closed


async def test_headers_too_large(start: Start) -> None:
    port = await start(handle_http)
    filler = "".join(f"X-Filler-{i}: {'v' * 100}\r\n" for i in range(MAX_HEADER_BYTES // 100))
    response, closed = await exchange(port, get("/", extra=filler))
    assert response.status == 431
    assert closed


async def test_header_line_too_long(start: Start) -> None:
    port = await start(handle_http)
    response, closed = await exchange(port, get("/", extra=f"X-Long: {'v' * 100_000}\r\n"))
    assert response.status == 431
    assert closed


@pytest.mark.parametrize("version", ["2.0", "0.9", "3.1"])
async def test_unsupported_version(start: Start, version: str) -> None:
    port = await start(handle_http)
    response, closed = await exchange(port, get("/", version=version))
    assert response.status == 505
    assert closed


async def test_unknown_transfer_coding(start: Start) -> None:
    port = await start(handle_http)
    raw = get("/sha256", method="POST", extra="Transfer-Encoding: gzip, chunked\r\n")
    response, closed = await exchange(port, raw)
    assert response.status == 501
    assert closed


async def test_body_to_bodiless_endpoint_closes(start: Start) -> None:
    port = await start(handle_http)
    raw = get("/", extra="Content-Length: 5\r\n") + b"hello" + get("/bytes/1")
    response, closed = await exchange(port, raw)
    assert response.status == 200
    assert response.headers["connection"] == "close"
    assert closed


async def test_blank_lines_before_request_ignored(start: Start) -> None:
    port = await start(handle_http)
    response, _ = await exchange(port, b"\r\n\r\n" + get("/bytes/4"))
    assert response.body == pattern(4)


async def test_peer_behaviour_ends_quietly(start: Start) -> None:
    """EOF between requests, EOF inside a head or body, and resets: no exception escapes."""
    port = await start(handle_http)
    for raw in (b"", get("/bytes/1"), b"GET / HT", post("/sha256", b"x" * 100)[:-50]):
        async with connect(port) as (reader, writer):
            writer.write(raw)
            writer.write_eof()
            await asyncio.wait_for(reader.read(), TIMEOUT)  # the server closes in turn
    async with connect(port) as (reader, writer):  # reset in the middle of a large body
        writer.write(get("/bytes/50000000"))
        await asyncio.wait_for(reader.readexactly(100_000), TIMEOUT)
        reset(writer)
    async with connect(port) as (reader, writer):  # reset in the middle of an upload
        writer.write(get("/sha256", method="POST", extra="Content-Length: 1000000\r\n") + b"x")
        await writer.drain()
        reset(writer)


# -- time and size limits (HttpLimits; nginx's timeouts as the model) ----------------------

LIMIT = 0.2  # seconds: every time limit under test; the tests wait on conditions, not clocks


def loop_time() -> float:
    return asyncio.get_running_loop().time()


def assert_took_the_limit(elapsed: float) -> None:
    """The limit, not something else, ended it: not at once, and long before the
    60 s defaults. Half the limit below, because the server's clock started
    before the client's (at accept, or when the response left)."""
    assert LIMIT / 2 <= elapsed < LIMIT + 3, elapsed


@contextlib.asynccontextmanager
async def trickle(writer: asyncio.StreamWriter, every: float) -> AsyncIterator[None]:
    """Send one byte every `every` seconds (a slowloris client) until the block ends."""

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await asyncio.sleep(every)  # the attack's pace, not a wait for a condition
                writer.write(b"X")
                await writer.drain()

    task = asyncio.create_task(send())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def watched(handler: Handler) -> tuple[Handler, asyncio.Event]:
    """`handler`, and an event set when a run of it has ended (its task is gone)."""
    ended = asyncio.Event()

    async def run(reader: Any, writer: Any) -> None:
        try:
            await handler(reader, writer)
        finally:
            ended.set()

    return run, ended


async def test_slowloris_head_gets_408_and_close(start: Start) -> None:
    """One header byte at a time, each well inside any per-read gap: the head as a
    whole must arrive within the header timeout (nginx's client_header_timeout)."""
    port = await start(http(header_timeout=LIMIT))
    async with connect(port) as (reader, writer):
        began = loop_time()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        async with trickle(writer, LIMIT / 10):
            response = await read_response(reader)
            assert response.status == 408
            assert response.headers["connection"] == "close"
            assert await at_eof(reader)
        assert_took_the_limit(loop_time() - began)


async def test_a_connection_that_sends_nothing_is_closed_without_answer(start: Start) -> None:
    port = await start(http(header_timeout=LIMIT))
    async with connect(port) as (reader, _):
        began = loop_time()
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # no 408: nobody asked
        assert_took_the_limit(loop_time() - began)


async def test_stalled_body_gets_408_a_slow_one_does_not(start: Start) -> None:
    """The body timeout is per read (nginx's client_body_timeout): a body that keeps
    coming, if slowly (0.6 s, one byte every 0.04 s), is served; one that stops for
    the timeout gets 408 and the close."""
    port = await start(http(body_timeout=LIMIT))
    body = b"y" * 15
    async with connect(port) as (reader, writer):
        writer.write(get("/sha256", method="POST", extra=f"Content-Length: {len(body)}\r\n"))
        for byte in body:
            await asyncio.sleep(LIMIT / 5)  # the client's pace
            writer.write(bytes([byte]))
        response = await read_response(reader)
        assert response.body == hashlib.sha256(body).hexdigest().encode() + b"\n"

        writer.write(get("/sha256", method="POST", extra="Content-Length: 1000000000\r\n"))
        writer.write(b"x" * 10)
        response = await read_response(reader)
        assert response.status == 408
        assert b"no body data" in response.body
        writer.write_eof()
        assert await at_eof(reader)


async def test_idle_keep_alive_connection_is_closed(start: Start) -> None:
    """Between requests the keep-alive timeout runs until the next request's first
    byte; from there the header timeout does. Idle past it: closed, silently."""
    port = await start(http(keepalive_timeout=LIMIT, header_timeout=TIMEOUT))
    async with connect(port) as (reader, writer):
        writer.write(get("/bytes/1"))
        await read_response(reader)
        writer.write(b"G")
        await asyncio.sleep(2 * LIMIT)  # longer than the keep-alive timeout, mid-head
        writer.write(get("/bytes/3")[1:])
        assert (await read_response(reader)).body == pattern(3)
        answered = loop_time()
        assert await at_eof(reader)  # no 408 between requests: nobody is waiting for it
        assert_took_the_limit(loop_time() - answered)


async def test_a_client_that_never_reads_is_aborted(start: Start) -> None:
    """drain() does not return for the send timeout: the connection is aborted (a close
    would wait for the same client to read) and the handler ends."""
    handler, ended = watched(http(send_timeout=LIMIT))
    port = await start(handler)
    async with connect(port) as (reader, writer):
        writer.write(get(f"/bytes/{MAX_PATTERN_BYTES}"))
        await asyncio.wait_for(ended.wait(), TIMEOUT)
        got = 0
        with contextlib.suppress(ConnectionError):
            while data := await asyncio.wait_for(reader.read(1 << 20), TIMEOUT):
                got += len(data)
        assert got < MAX_PATTERN_BYTES


async def test_configured_size_limits(start: Start) -> None:
    port = await start(http(max_header_bytes=1024, max_body_bytes=10))
    response, closed = await exchange(port, get("/", extra=f"X-Big: {'v' * 1000}\r\n"))
    assert (response.status, closed) == (431, True)
    response, closed = await exchange(port, post("/sha256", b"x" * 11))
    assert (response.status, closed) == (413, True)
    response, _ = await exchange(port, post("/sha256", b"x" * 10))
    assert response.status == 200


@pytest.mark.parametrize("app", [handle_echo, handle_discard])
async def test_echo_and_discard_idle_timeout_closes(start: Start, app: Handler) -> None:
    port = await start(functools.partial(app, idle_timeout=LIMIT))
    async with connect(port) as (reader, writer):
        writer.write(b"once")
        began = loop_time()
        if app is handle_echo:
            assert await asyncio.wait_for(reader.readexactly(4), TIMEOUT) == b"once"
        assert await at_eof(reader)
        assert_took_the_limit(loop_time() - began)


async def test_echo_to_a_client_that_never_reads_is_aborted(start: Start) -> None:
    handler, ended = watched(functools.partial(handle_echo, idle_timeout=LIMIT))
    port = await start(handler)
    async with connect(port) as (_, writer):
        sender = asyncio.create_task(send_until_refused(writer))
        try:
            await asyncio.wait_for(ended.wait(), TIMEOUT)
            await asyncio.wait_for(sender, TIMEOUT)
        finally:  # had the server not aborted, both sides' buffers would stay full
            sender.cancel()
            writer.transport.abort()


async def send_until_refused(writer: asyncio.StreamWriter) -> None:
    """Write without reading until the server's abort makes writing fail."""
    with contextlib.suppress(ConnectionError):
        while True:
            writer.write(b"e" * 65536)
            await writer.drain()


# -- real clients --------------------------------------------------------------------


async def run(*argv: str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    """Run a client as a subprocess without blocking the loop that serves it."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


async def test_curl(start: Start) -> None:
    curl = need("curl")
    port = await start(handle_http)
    url = f"http://127.0.0.1:{port}"
    code, out, err = await run(curl, "-sS", "--max-time", "30", f"{url}/bytes/100000")
    assert code == 0, err
    assert hashlib.sha256(out).digest() == hashlib.sha256(pattern(100_000)).digest()

    body = hashlib.sha256(b"curl").digest() * 70_000  # > 1 MiB: curl sends Expect: 100-continue
    code, out, err = await run(
        curl, "-sS", "--max-time", "30", "--data-binary", "@-", f"{url}/sha256", stdin=body
    )
    assert code == 0, err
    assert out == hashlib.sha256(body).hexdigest().encode() + b"\n"

    code, out, err = await run(
        curl,
        "-sS",
        "--max-time",
        "30",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "@-",
        f"{url}/sha256",
        stdin=body,
    )
    assert code == 0, err
    assert out == hashlib.sha256(body).hexdigest().encode() + b"\n"


@pytest.mark.parametrize("keep_alive", [False, True])
async def test_ab(start: Start, keep_alive: bool) -> None:
    ab = need("ab")
    port = await start(handle_http)
    argv = [
        ab,
        "-n",
        "200",
        "-c",
        "10",
        *(["-k"] if keep_alive else []),
        f"http://127.0.0.1:{port}/",
    ]
    code, out, err = await run(*argv)
    report = out.decode()
    assert code == 0, err.decode() + report
    assert re.search(r"^Complete requests:\s+200$", report, re.M), report
    assert re.search(r"^Failed requests:\s+0$", report, re.M), report
    assert "Non-2xx responses" not in report
    if keep_alive:
        assert re.search(r"^Keep-Alive requests:\s+200$", report, re.M), report



class _Peer:
    """The two sides of a connection `_lingering_close` uses: reads that never
    end (`chunk` None: a client that neither sends nor closes) or that never
    run dry, and a writer that can half-close."""

    def __init__(self, chunk: bytes | None) -> None:
        self.chunk, self.reads, self.eof_written = chunk, 0, False

    async def read(self, n: int) -> bytes:
        self.reads += 1
        if self.chunk is None:
            await asyncio.Event().wait()
        await asyncio.sleep(0)
        assert self.chunk is not None
        return self.chunk

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True


async def test_lingering_close_gives_up_on_a_silent_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a closing response: half-close, then wait at most LINGER_SECONDS for
    the peer's FIN, on the connection's deadline (no timer of its own)."""
    monkeypatch.setattr(http_module, "LINGER_SECONDS", 0.05)
    peer, deadline = _Peer(None), Deadline()
    try:
        await asyncio.wait_for(http_module._lingering_close(peer, peer, deadline), TIMEOUT)
    finally:
        deadline.cancel()
    assert peer.eof_written and peer.reads == 1


async def test_lingering_close_drops_a_bounded_amount() -> None:
    """A peer that keeps sending is read (and dropped) up to LINGER_BYTES only."""
    peer, deadline = _Peer(b"x" * 65536), Deadline()
    try:
        await asyncio.wait_for(http_module._lingering_close(peer, peer, deadline), TIMEOUT)
    finally:
        deadline.cancel()
    assert peer.reads == http_module.LINGER_BYTES // 65536
