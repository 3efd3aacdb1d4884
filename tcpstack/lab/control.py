"""The daemon's control socket: `tcpstack ss` and `tcpstack stats` ask through it.

A Unix stream socket (default `/run/tcpstack/<tun>.sock`, or
`/run/tcpstack/<tun>@<netns>.sock` in a network namespace other than the
initial one, so each TUN device has its own and the client finds it from
`--tun`), mode 0600 because the answers reveal every connection of the stack.
The protocol is one JSON request line and one JSON response line per
connection:

    -> {"cmd": "ss"}
    <- {"ok": true, "result": {...}}
    <- {"ok": false, "error": "unknown command 'x' (one of ss, stats)"}

Plain JSON lines keep it scriptable without this package
(`echo '{"cmd":"stats"}' | nc -UN /run/tcpstack/tcps0.sock`).

Whatever a client sends, it gets at most one JSON line back and the server
lives on: a request is at most `MAX_REQUEST` bytes and `MAX_BRACKETS`
brackets (json's parser recurses once per level, so `[` x 60,000 would
otherwise end in RecursionError); non-UTF-8 is an error answer like any
other bad JSON. At most `MAX_CLIENTS` clients are served at a time (the
others are told the server is busy), each must send its request within
`REQUEST_TIMEOUT` and take its answer within `ANSWER_TIMEOUT`, so a stuck
or hostile script cannot take the socket away from `tcpstack ss`.

The server runs on the daemon's event loop and answers from the handlers it
is given, synchronously, so every answer is a consistent snapshot between two
packets. Binding replaces a stale socket file left by a daemon that died
without cleaning up, but never one that still answers: two daemons must not
share a path. The client (`request`) is blocking: the CLI has nothing else to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("tcpstack.lab.control")

CONTROL_DIR = "/run/tcpstack"
NETNS_DIR = "/run/netns"  # where `ip netns` names namespaces
MAX_REQUEST = 4096  # a request is one short line: {"cmd": "stats"}
#: `[` and `{` in a request, which bounds the nesting depth json.loads recurses to.
MAX_BRACKETS = 32
#: Clients served at once; more are answered "busy" and closed.
MAX_CLIENTS = 16
#: How long a client may take to send its request before the server hangs up.
REQUEST_TIMEOUT = 5.0
#: How long a client may take to read its answer (an `ss` of many connections is large).
ANSWER_TIMEOUT = 10.0
#: Longest path bind() accepts (sun_path is 108 bytes including the NUL).
MAX_PATH_BYTES = 107

Handler = Callable[[], Any]


class ControlError(Exception):
    """The control socket cannot be set up, or the daemon answered with an error."""


class DaemonUnreachable(ControlError):
    """No daemon listens on the control socket (not running, or another path)."""


def default_path(tun: str) -> str:
    """The control socket of the daemon on TUN device `tun` in this network namespace.

    A TUN name is unique only within its network namespace, and `/run` is
    shared by all of them: daemons on `tcps0` in two namespaces (two test
    sessions, say) must not fight over one socket. So outside the initial
    namespace the namespace is part of the name (`tcps0@NETNS.sock`: one flat
    directory, nothing per namespace to clean up), and `tcpstack ss --tun`
    finds the daemon of its own namespace, as `ss` would.
    """
    netns = _netns_name()
    return os.path.join(CONTROL_DIR, f"{tun}.sock" if netns is None else f"{tun}@{netns}.sock")


def _netns_name() -> str | None:
    """The `ip netns` name of our network namespace; else None in PID 1's (or
    when that cannot be told: PID 1 may be out of reach in a sandbox), and
    `net-<inode>` in an unnamed one."""
    try:
        mine = os.stat("/proc/self/ns/net")
    except OSError:
        return None
    ident = (mine.st_dev, mine.st_ino)
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(NETNS_DIR)):
            st = os.stat(os.path.join(NETNS_DIR, name))
            if (st.st_dev, st.st_ino) == ident:
                return name
    try:
        init = os.stat("/proc/1/ns/net")
    except OSError:
        return None
    return None if (init.st_dev, init.st_ino) == ident else f"net-{mine.st_ino}"


def check_path(path: str) -> str | None:
    """Why `path` cannot be a control socket, or None; for up-front validation."""
    if not path:
        return "empty path"
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        return f"{path!r} is longer than {MAX_PATH_BYTES} bytes (a Unix socket limit)"
    return None


class ControlServer:
    """Answers control requests with `handlers[cmd]()` on the running loop."""

    def __init__(self, path: str, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self._handlers = handlers
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._clients = 0

    async def start(self) -> None:
        """Bind and listen; ControlError (one line for the user) when impossible."""
        sock = _bind(self.path)
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        try:
            self._server = await asyncio.start_unix_server(self._serve, sock=sock,
                                                            limit=MAX_REQUEST)
        except BaseException:
            sock.close()
            self._unlink()
            raise

    async def close(self) -> None:
        """Stop listening and remove the socket file (if it is still ours)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self._unlink()

    def _unlink(self) -> None:
        # Only our own file: after a stale-socket takeover by a newer daemon the
        # path may belong to it.
        with contextlib.suppress(OSError):
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)

    @property
    def clients(self) -> int:
        """Clients being served now (at most MAX_CLIENTS)."""
        return self._clients

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request, one answer line, each within its time limit; a client too
        slow for either is cut off (abort: its unread answer is dropped)."""
        busy = self._clients >= MAX_CLIENTS
        if not busy:
            self._clients += 1
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT) as deadline:
                if busy:
                    answer = _error(f"busy: {MAX_CLIENTS} control clients are being served")
                else:
                    answer = await self._answer_request(reader)
                deadline.reschedule(asyncio.get_running_loop().time() + ANSWER_TIMEOUT)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except TimeoutError:
            writer.transport.abort()
        except ConnectionError:
            pass  # the client left before its answer
        finally:
            if not busy:
                self._clients -= 1
            writer.close()

    async def _answer_request(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            line = await reader.readline()
        except ValueError:  # asyncio's readline past the limit
            return _error(f"the request is longer than {MAX_REQUEST} bytes")
        return self.answer(line)

    def answer(self, line: bytes) -> dict[str, Any]:
        """The response object for one request line."""
        if line.count(b"[") + line.count(b"{") > MAX_BRACKETS:
            return _error(f"the request has more than {MAX_BRACKETS} brackets "
                          "(a request is one flat object)")
        try:
            request = json.loads(line)
        except ValueError:
            return _error("the request is not a JSON line")
        cmd = request.get("cmd") if isinstance(request, dict) else None
        handler = self._handlers.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            return _error(f"unknown command {cmd!r} (one of {', '.join(sorted(self._handlers))})")
        try:
            return {"ok": True, "result": handler()}
        except Exception as e:  # a bug in a handler must not take the daemon down
            log.exception("control command %r failed", cmd)
            return _error(f"{cmd} failed: {e}")


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def _bind(path: str) -> socket.socket:
    """A listening socket at `path`, mode 0600, its directory created 0755."""
    try:
        _make_dirs(os.path.dirname(path) or ".")
        _clear_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as e:
        raise ControlError(f"cannot create control socket {path}: {e.strerror or e}") from None
    try:
        # Created 0600 rather than chmod-ed afterwards: no window in which
        # another user could connect.
        umask = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(umask)
        sock.listen(16)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise ControlError(f"cannot create control socket {path}: {e.strerror or e}") from None
    return sock


def _make_dirs(directory: str) -> None:
    """Create `directory` and its missing parents, each 0755 whatever the umask."""
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a daemon starting alongside
            os.mkdir(d, 0o755)
        os.chmod(d, 0o755)  # mkdir's mode is filtered by the umask


def _clear_stale(path: str) -> None:
    """Remove a socket file nobody answers on; refuse anything else at `path`."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlError(f"control socket {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a dead daemon's leftover
        return
    except OSError:
        pass  # e.g. a timeout: somebody is there, if busy
    finally:
        probe.close()
    raise ControlError(f"control socket {path} is in use by a running daemon")


def request(path: str, cmd: str, *, timeout: float = 10.0) -> Any:
    """Send `cmd` to the daemon at `path` and return its result.

    Raises DaemonUnreachable when nobody listens there and ControlError for an
    error answer or a broken response; both messages are one line for the user.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonUnreachable(f"no tcpstack daemon at {path} (not running? see --tun "
                                    "and --control)") from None
        except PermissionError:
            raise DaemonUnreachable(f"{path}: permission denied (the socket is root's)") from None
        except OSError as e:
            raise DaemonUnreachable(f"{path}: {e.strerror or e}") from None
        try:
            # A busy server answers and hangs up without reading the request: the
            # send may then fail, but the answer is still there to be read.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
            with sock.makefile("rb") as stream:
                line = stream.readline()
        except OSError as e:
            raise ControlError(f"{path}: {e.strerror or e}") from None
    try:
        response = json.loads(line)
    except ValueError:
        raise ControlError(f"{path}: the daemon sent no valid answer") from None
    if not isinstance(response, dict) or not response.get("ok"):
        error = response.get("error") if isinstance(response, dict) else None
        raise ControlError(f"{path}: {error or 'the daemon sent no valid answer'}")
    return response.get("result")
