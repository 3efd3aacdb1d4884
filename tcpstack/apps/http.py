"""A small HTTP/1.1 server handler: a status page, generated bodies, upload hashing.

Endpoints (anything else is 404, a wrong method 405 with `Allow`):

- `GET|HEAD /` -- a plain-text status page naming tcpstack and these endpoints.
- `GET|HEAD /bytes/N` -- a body of exactly N bytes (decimal N, 0 <= N <= 2**40)
  where byte k is k mod 251. It is sliced from one precomputed ~64 KiB block
  and every chunk is followed by `drain()`, so a 50 MB body streams in
  bounded memory at the pace the client reads it.
- `POST /sha256` -- the lower-case hex SHA-256 of the request body plus "\\n".
  The body (Content-Length or `Transfer-Encoding: chunked`) is hashed as it
  arrives, never held whole.

Limits, chosen to bound what one connection can make us hold or do (the
sizes and times are `HttpLimits`, set from the command line):

- request line plus headers: `max_header_bytes` (16 KiB) in total -> 431;
  chunked trailers share that limit; one line is also capped by the stream's
  line limit (64 KiB);
- request body: `max_body_bytes` (1 GiB) -> 413 (checked up front against
  Content-Length, while counting for chunked bodies);
- N of /bytes/N: `MAX_PATTERN_BYTES` (2**40) -> 400 above it;
- time, with nginx's defaults as the model: the whole request head within
  `header_timeout` (60 s) of its first byte (of the connection's start for
  the first request) -> 408; each read of a body within `body_timeout` (60 s)
  of the previous one -> 408; the next request's first byte within
  `keepalive_timeout` (75 s) -> else a silent close, as also when a new
  connection sends nothing at all; each `drain()` within `send_timeout`
  (60 s) -> else the connection is aborted (RST), since a peer that reads
  nothing would also never let a close finish.

Connections: HTTP/1.1 stays open unless the request says `Connection: close`;
HTTP/1.0 closes after the response unless it says `Connection: keep-alive`.
Requests are read strictly one after another from the stream, so pipelining
works. Error responses (400, 413, 431, 501, 505) close the connection, since
after a framing error nothing that follows can be trusted; so does a body
sent to an endpoint that takes none, because we do not read it. Every close
is a *lingering* close (as Apache does): half-close, then read and drop input
for a little while. Closing a socket with unread input makes the kernel send
RST, which can destroy the response before the client has read it.

EOF, resets and retransmission timeouts end a connection quietly; an app must
not turn ordinary peer behaviour into a logged failure. Only duck-typed
asyncio stream methods are used, so the handler runs on this stack and on
`asyncio.start_server` alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from tcpstack.apps.timeouts import PEER_GONE, Deadline, Expired, SendTimeout, close_within

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1 << 30
MAX_PATTERN_BYTES = 1 << 40
READ_SIZE = 65536
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20

# 261 * 251 = 65511 bytes: a whole number of periods, so consecutive blocks
# (and a final slice of one) continue the k mod 251 pattern seamlessly.
_PATTERN_BLOCK = bytes(range(251)) * 261
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_DIGITS = re.compile(r"[0-9]{1,20}")  # ASCII only: str.isdigit() accepts "²"
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")

TEXT = "text/plain; charset=utf-8"
INDEX = b"""tcpstack: a userspace TCP/IPv4 stack on asyncio

Endpoints:
  GET  /           this page
  GET  /bytes/N    N bytes (0 <= N <= 2**40), byte k = k mod 251
  POST /sha256     lower-case hex SHA-256 of the request body
"""


class HttpError(Exception):
    """A request we refuse with `status`; the response closes the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one connection may make the server hold or wait for (see the module
    docstring); the times are nginx's client_header_timeout, client_body_timeout,
    keepalive_timeout and send_timeout, in seconds."""

    header_timeout: float = 60.0
    body_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    send_timeout: float = 60.0
    max_header_bytes: int = MAX_HEADER_BYTES
    max_body_bytes: int = MAX_BODY_BYTES


DEFAULT_LIMITS = HttpLimits()


@dataclass(slots=True)
class Request:
    """One parsed request head; header names are lower-case, repeats joined by ", "."""

    method: str
    target: str
    minor: int  # HTTP/1.<minor>; 1 stands for every 1.x above 1.0
    headers: dict[str, str]

    @property
    def keep_alive(self) -> bool:
        """Whether the client lets the connection persist (RFC 9112 9.3)."""
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if "close" in tokens:
            return False
        return self.minor >= 1 or "keep-alive" in tokens

    @property
    def path(self) -> str:
        """The target's path: the query is ignored, absolute-form is accepted."""
        if self.target.startswith("/"):
            return self.target.split("?", 1)[0]
        return urlsplit(self.target).path or "/"


# -- parsing -----------------------------------------------------------------


def _strip_eol(line: bytes) -> bytes:
    """Drop the CRLF (or bare LF, which RFC 9112 2.2 lets us accept)."""
    return line[:-2] if line.endswith(b"\r\n") else line.removesuffix(b"\n")


async def _read_line(reader: Any, budget: int, status: int = 431) -> bytes:
    """One LF-terminated line of at most `budget` bytes, else HttpError(status)."""
    try:
        line: bytes = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise HttpError(status, "line too long") from None
    if len(line) > budget:
        raise HttpError(status, "request head too large")
    return line


async def read_request(reader: Any, limits: HttpLimits = DEFAULT_LIMITS,
                       first: bytes = b"") -> Request:
    """Read and validate one request head; EOF surfaces as IncompleteReadError.

    `first` is the head's first byte when the caller already read it (to learn
    that a request has begun)."""
    budget = limits.max_header_bytes
    line = first if first == b"\n" else first + await _read_line(reader, budget - len(first))
    while line in (b"\r\n", b"\n"):  # RFC 9112 2.2: ignore blank lines before a request
        budget -= len(line)
        line = await _read_line(reader, budget)
    budget -= len(line)
    parts = _strip_eol(line).split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise HttpError(400, "malformed request line")
    method, raw_target, raw_version = parts
    version = _VERSION.fullmatch(raw_version)
    if version is None:
        raise HttpError(400, "malformed HTTP version")
    if version[1] != b"1":
        raise HttpError(505, "only HTTP/1.x is supported")
    if not (raw_target.startswith(b"/") or raw_target.lower().startswith(b"http://")):
        raise HttpError(400, "bad request target")
    if not raw_target.isascii() or any(b <= 0x20 or b == 0x7F for b in raw_target):
        raise HttpError(400, "bad request target")

    headers: dict[str, str] = {}
    while True:
        line = await _read_line(reader, budget)
        budget -= len(line)
        line = _strip_eol(line)
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete header line folding")
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if not colon or not _TOKEN.fullmatch(name) or b"\r" in value or b"\0" in value:
            raise HttpError(400, "malformed header line")
        key, text = name.decode("ascii").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    request = Request(
        method.decode("ascii"), raw_target.decode("ascii"), 0 if version[2] == b"0" else 1, headers
    )
    if request.minor >= 1 and "host" not in headers:
        raise HttpError(400, "HTTP/1.1 request without Host")  # RFC 9112 3.2
    return request


def body_length(request: Request, limits: HttpLimits = DEFAULT_LIMITS) -> int | None:
    """The body's Content-Length, 0 when it has none, None when it is chunked."""
    coding = request.headers.get("transfer-encoding")
    if coding is not None:
        if "content-length" in request.headers:
            raise HttpError(400, "both Transfer-Encoding and Content-Length")  # smuggling
        if request.minor == 0:
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if coding.strip().lower() != "chunked":
            raise HttpError(501, "only the chunked transfer coding is supported")
        return None
    length = request.headers.get("content-length")
    if length is None:
        return 0
    if not _DIGITS.fullmatch(length):
        raise HttpError(400, "bad Content-Length")
    if int(length) > limits.max_body_bytes:
        raise _body_too_large(limits)
    return int(length)


def _body_too_large(limits: HttpLimits) -> HttpError:
    return HttpError(413, f"body over the limit of {limits.max_body_bytes} bytes")


BodyRead = Callable[[Awaitable[bytes]], Awaitable[bytes]]


def _body_reads(deadline: Deadline, limits: HttpLimits) -> BodyRead:
    """How each read of one body is bounded: within the body timeout of the
    previous one, else 408 (made once per body, not per read)."""
    expired = HttpError(408, f"no body data for {limits.body_timeout:g} s")

    def body_read(step: Awaitable[bytes]) -> Awaitable[bytes]:
        return deadline.within(limits.body_timeout, step, expired)

    return body_read


async def _read_exactly_in_pieces(reader: Any, n: int,
                                  body_read: BodyRead) -> AsyncIterator[bytes]:
    """Yield n bytes as they arrive, at most READ_SIZE at a time."""
    while n > 0:
        data: bytes = await body_read(reader.read(min(n, READ_SIZE)))
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        n -= len(data)
        yield data


async def read_body(reader: Any, length: int | None, limits: HttpLimits = DEFAULT_LIMITS, *,
                    deadline: Deadline) -> AsyncIterator[bytes]:
    """Yield the body in pieces: `length` bytes, or chunked when length is None;
    `deadline` is the connection's (the body timeout runs on it)."""
    body_read = _body_reads(deadline, limits)
    if length is not None:
        async for data in _read_exactly_in_pieces(reader, length, body_read):
            yield data
        return
    total = 0
    while True:
        line = await body_read(_read_line(reader, limits.max_header_bytes, status=400))
        size_text = _strip_eol(line).split(b";", 1)[0].strip(b" \t")  # drop chunk extensions
        if not _HEX.fullmatch(size_text):
            raise HttpError(400, "bad chunk size")
        size = int(size_text, 16)
        if size == 0:
            break
        total += size
        if total > limits.max_body_bytes:
            raise _body_too_large(limits)
        async for data in _read_exactly_in_pieces(reader, size, body_read):
            yield data
        if await body_read(reader.readexactly(2)) != b"\r\n":
            raise HttpError(400, "chunk data not followed by CRLF")
    budget = limits.max_header_bytes  # trailer fields: read and ignored
    while line := _strip_eol(await body_read(_read_line(reader, budget))):
        budget -= len(line) + 2


def parse_pattern_length(text: str) -> int:
    """N of /bytes/N: plain decimal digits, at most MAX_PATTERN_BYTES."""
    if not _DIGITS.fullmatch(text) or int(text) > MAX_PATTERN_BYTES:
        raise HttpError(400, f"N must be a decimal number from 0 to {MAX_PATTERN_BYTES}")
    return int(text)


# -- responses ---------------------------------------------------------------


def response_head(
    status: int,
    length: int,
    *,
    keep_alive: bool,
    minor: int = 1,
    content_type: str = TEXT,
    extra: Iterable[tuple[str, str]] = (),
) -> bytes:
    """The status line and headers; Content-Length always, Connection when needed."""
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"Date: {formatdate(usegmt=True)}",
        "Server: tcpstack",
        f"Content-Type: {content_type}",
        f"Content-Length: {length}",
    ]
    if not keep_alive:
        lines.append("Connection: close")
    elif minor == 0:
        lines.append("Connection: keep-alive")  # 1.0 persists only if we say so too
    lines.extend(f"{name}: {value}" for name, value in extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _reply(
    writer: Any,
    request: Request,
    status: int,
    body: bytes,
    *,
    keep_alive: bool,
    content_type: str = TEXT,
    extra: Iterable[tuple[str, str]] = (),
) -> None:
    """Queue a complete small response (headers only for HEAD); the caller drains."""
    head = response_head(
        status,
        len(body),
        keep_alive=keep_alive,
        minor=request.minor,
        content_type=content_type,
        extra=extra,
    )
    writer.write(head if request.method == "HEAD" else head + body)


def _drain(writer: Any, limits: HttpLimits, deadline: Deadline) -> Awaitable[None]:
    """`drain()`, which must return within the send timeout (else SendTimeout)."""
    return deadline.within(limits.send_timeout, writer.drain(), SendTimeout())


async def _send_pattern(writer: Any, n: int, limits: HttpLimits, deadline: Deadline) -> None:
    """Stream n pattern bytes, draining after every block to bound memory."""
    block = _PATTERN_BLOCK
    while n > 0:
        piece = block if n >= len(block) else block[:n]
        writer.write(piece)
        await _drain(writer, limits, deadline)
        n -= len(piece)


def _error_body(status: int, message: str) -> bytes:
    return f"{status} {HTTPStatus(status).phrase}: {message}\n".encode()


# -- dispatch ----------------------------------------------------------------


async def serve_request(request: Request, reader: Any, writer: Any,
                        limits: HttpLimits = DEFAULT_LIMITS, *, deadline: Deadline) -> bool:
    """Answer one request; return whether the connection may carry another.
    The caller drains the end of the response; `deadline` is the connection's."""
    keep_alive = request.keep_alive
    length = body_length(request, limits)
    path = request.path

    if path == "/sha256":
        if request.method != "POST":
            await _reply(
                writer,
                request,
                405,
                _error_body(405, "use POST"),
                keep_alive=keep_alive and length == 0,
                extra=[("Allow", "POST")],
            )
            return keep_alive and length == 0
        expect = request.headers.get("expect", "").lower()
        if "100-continue" in expect and request.minor >= 1 and length != 0:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for it on big bodies
        digest = hashlib.sha256()
        async for data in read_body(reader, length, limits, deadline=deadline):
            digest.update(data)
        await _reply(
            writer, request, 200, f"{digest.hexdigest()}\n".encode(), keep_alive=keep_alive
        )
        return keep_alive

    keep_alive = keep_alive and length == 0  # we do not read bodies sent to other paths
    if path != "/" and not path.startswith("/bytes/"):
        await _reply(
            writer, request, 404, _error_body(404, f"no such path {path}"), keep_alive=keep_alive
        )
        return keep_alive
    if request.method not in ("GET", "HEAD"):
        await _reply(
            writer,
            request,
            405,
            _error_body(405, "use GET or HEAD"),
            keep_alive=keep_alive,
            extra=[("Allow", "GET, HEAD")],
        )
        return keep_alive
    if path == "/":
        await _reply(writer, request, 200, INDEX, keep_alive=keep_alive)
        return keep_alive

    n = parse_pattern_length(path.removeprefix("/bytes/"))
    writer.write(
        response_head(
            200,
            n,
            keep_alive=keep_alive,
            minor=request.minor,
            content_type="application/octet-stream",
        )
    )
    if request.method == "GET":
        await _send_pattern(writer, n, limits, deadline)
    return keep_alive


async def _lingering_close(reader: Any, writer: Any, deadline: Deadline) -> None:
    """Half-close, then drop input for a bounded time and amount, so unread
    request bytes do not make the kernel reset the connection (and destroy
    our response) before the client has read it. The caller drained. The time
    is the connection's `deadline`, not a loop timer of its own: this runs at
    the end of every connection (`ab` without keep-alive: one per request)."""
    if writer.can_write_eof():
        writer.write_eof()
    end = asyncio.get_running_loop().time() + LINGER_SECONDS
    budget = LINGER_BYTES
    with contextlib.suppress(Expired):
        while budget > 0 and (data := await deadline.until(end, reader.read(READ_SIZE))):
            budget -= len(data)


async def next_request(reader: Any, limits: HttpLimits, *, first: bool,
                       deadline: Deadline) -> Request:
    """Wait for a request to begin, then read its head, within the time limits.

    Until its first byte the connection is idle: after `keepalive_timeout`
    (`header_timeout` on a new connection) it is closed without an answer
    (Expired), as nginx does; nobody is waiting for one. Once a request has
    begun, its whole head must arrive within `header_timeout` of the
    connection's start (a new connection) or of that first byte, else 408:
    a slowloris client trickling one byte at a time gets no more time than
    one sending nothing.
    """
    # The connection's deadline: no loop timer of its own per request or phase,
    # and this runs for every request of a keep-alive connection.
    loop = asyncio.get_running_loop()
    start = loop.time()
    idle = limits.header_timeout if first else limits.keepalive_timeout
    head_byte = await deadline.until(start + idle, reader.readexactly(1), Expired())
    head_end = (start if first else loop.time()) + limits.header_timeout
    message = f"request head not received within {limits.header_timeout:g} s"
    return await deadline.until(head_end, read_request(reader, limits, head_byte),
                                HttpError(408, message))


async def handle_http(reader: Any, writer: Any, limits: HttpLimits = DEFAULT_LIMITS) -> None:
    """Serve requests on one connection until either side is done with it.
    One `Deadline` bounds every wait on the peer (see the module docstring)."""
    deadline = Deadline()
    try:
        first = True
        while True:
            request: Request | None = None
            try:
                request = await next_request(reader, limits, first=first, deadline=deadline)
                keep_alive = await serve_request(request, reader, writer, limits,
                                                 deadline=deadline)
            except HttpError as err:
                head = request is not None and request.method == "HEAD"
                body = _error_body(err.status, err.message)
                writer.write(
                    response_head(err.status, len(body), keep_alive=False) + (b"" if head else body)
                )
                keep_alive = False
            await _drain(writer, limits, deadline)
            if not keep_alive:
                await _lingering_close(reader, writer, deadline)
                return
            first = False
    except SendTimeout:
        writer.transport.abort()  # it reads nothing: closing would wait for it forever
    except (Expired, *PEER_GONE):
        pass  # idle, EOF between or inside requests, reset: the peer's business
    finally:
        deadline.cancel()
        await close_within(writer, limits.send_timeout)
