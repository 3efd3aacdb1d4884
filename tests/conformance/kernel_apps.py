"""The Linux target's endpoints, run inside its namespace on the kernel's sockets.

``serve --bind ADDR --app KIND:PORT ...``: the four behaviours of `apps.py`
(echo, hold, halfclose, closer) on listening sockets, in one thread with a
selector; prints ``ready`` once every listener is up. Plain socket calls
rather than asyncio streams, so the application reads exactly when the
behaviour says so (see `apps.py`); accepted sockets that must stay open are
kept referenced until the process is killed.

``connect HOST PORT``: the kernel-side twin of `tcpstack connect`, for the
active-open scripts: connect, relay the connection to stdout and stdin to the
connection, half-close on EOF of stdin; exit 0 when the peer closes, 1 with
one ``error:`` line on stderr when the connection fails.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import sys
import threading

BACKLOG = 1024  # far above the concurrent half-open connections: never SYN cookies
READ_SIZE = 65536


def serve(bind: str, specs: list[str]) -> None:
    """Accept on every listener and apply its behaviour; run until killed."""
    sel = selectors.DefaultSelector()
    for spec in specs:
        kind, _, port = spec.partition(":")
        if kind not in ("echo", "hold", "halfclose", "closer"):
            raise SystemExit(f"unknown app {kind!r}")
        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((bind, int(port)))
        lsock.listen(BACKLOG)
        sel.register(lsock, selectors.EVENT_READ, kind)
    kept: list[socket.socket] = []  # hold and halfclose: open, unread, forever
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "echo-conn":
                _echo(sel, sock)
                continue
            conn, _ = sock.accept()
            if key.data == "echo":
                sel.register(conn, selectors.EVENT_READ, "echo-conn")
            elif key.data == "closer":
                conn.close()  # unread data makes this an RST (RFC 1122 4.2.2.13)
            else:
                if key.data == "halfclose":
                    conn.shutdown(socket.SHUT_WR)
                kept.append(conn)


def _echo(sel: selectors.BaseSelector, conn: socket.socket) -> None:
    """RFC 862: send back what arrives; close after the peer's FIN or a reset."""
    try:
        data = conn.recv(READ_SIZE)
        if data:
            conn.sendall(data)
            return
    except OSError:
        pass
    sel.unregister(conn)
    conn.close()


def connect(host: str, port: int) -> int:
    """Active open from the kernel; see the module docstring for the contract."""
    sock = socket.socket()
    try:
        sock.connect((host, port))
    except ConnectionRefusedError:
        print(f"error: connect to {host}:{port}: connection refused", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"error: connect to {host}:{port}: timed out", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: connect to {host}:{port}: {e.strerror}", file=sys.stderr)
        return 1

    def pump_stdin() -> None:
        while chunk := os.read(0, READ_SIZE):
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)

    threading.Thread(target=pump_stdin, daemon=True).start()
    try:
        while chunk := sock.recv(READ_SIZE):
            os.write(1, chunk)
    except OSError as e:
        print(f"error: {host}:{port}: {e.strerror}", file=sys.stderr)
        return 1
    sock.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="kernel_apps")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--bind", required=True)
    s.add_argument("--app", action="append", default=[])
    c = sub.add_parser("connect")
    c.add_argument("host")
    c.add_argument("port", type=int)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.bind, args.app)
        return 0
    return connect(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
