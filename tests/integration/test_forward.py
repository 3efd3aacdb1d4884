"""`--app forward:PORT=HOST:PORT` in front of real kernel-side services.

The client (curl, nc, a Python socket) talks to the VIP over the stack's TCP,
with loss on the stack's packets; the forward app relays to a service on the
kernel's own TCP in the same namespace (127.0.0.1 there). What the client gets
must be byte for byte what the service sent, and the service must get what
the client sent, in both directions, with the half-close and resets passed on.
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tcpstack.lab.netns import BackgroundProcess, NetNS, stop_process

#: A kernel-side HTTP server: GET serves the directory, POST answers the SHA-256
#: of the body; it prints its port once listening.
HTTP_SERVER = """
import hashlib, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **kw):
        super().__init__(*a, directory=sys.argv[1], **kw)
    def do_POST(self):
        left, h = int(self.headers["Content-Length"]), hashlib.sha256()
        while left:
            chunk = self.rfile.read(min(left, 65536))
            h.update(chunk)
            left -= len(chunk)
        body = h.hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("port", server.server_address[1], flush=True)
server.serve_forever()
"""

#: A kernel-side service that reads to EOF and only then answers the SHA-256 of
#: what it read: it answers a client only if the client's FIN reached it and
#: the way back stayed open (a half-close).
DIGEST_AFTER_EOF = """
import hashlib, socket
srv = socket.create_server(("127.0.0.1", 0))
print("port", srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    with conn:
        h = hashlib.sha256()
        while data := conn.recv(65536):
            h.update(data)
        conn.sendall(h.hexdigest().encode())
"""

LOSS = "loss=2%,seed=7"
SIZE = 4 << 20


@pytest.fixture
def kernel_service(netns: NetNS) -> Iterator[Callable[..., int]]:
    """``kernel_service(code, *args) -> port``: a service on the kernel's TCP (`code`
    with `args` as sys.argv[1:]), stopped after the test."""
    started: list[BackgroundProcess] = []

    def start(code: str, *args: str) -> int:
        started.append(netns.spawn_python(f"import sys; sys.argv[1:] = {list(args)!r}\n{code}"))
        return int(started[-1].wait_for_line("port").split()[1])

    yield start
    for service in started:
        stop_process(service.proc, signal.SIGTERM, 5)


def test_http_through_forward_with_loss(netns: NetNS, make_stack, kernel_service,
                                        require_tools, tcpstack_cli, tmp_path: Path) -> None:
    require_tools("curl")
    blob = hashlib.sha256(b"forward").digest() * (SIZE // 32)
    (tmp_path / "blob").write_bytes(blob)
    upload = tmp_path / "upload"
    upload.write_bytes(blob[::-1])
    port = kernel_service(HTTP_SERVER, str(tmp_path))
    stack = make_stack(apps=[f"forward:8080=127.0.0.1:{port}"], extra_args=["--impair", LOSS])
    assert f"forward:8080=127.0.0.1:{port}" in (stack.ready_line or "")
    url = f"http://{stack.vip}:8080"

    got = netns.run("curl", "-sS", "--max-time", "120", f"{url}/blob", text=False, timeout=130)
    assert hashlib.sha256(got.stdout).digest() == hashlib.sha256(blob).digest()

    sent = netns.run("curl", "-sS", "--max-time", "120", "--data-binary", f"@{upload}",
                     f"{url}/sha256", timeout=130)
    assert sent.stdout == hashlib.sha256(blob[::-1]).hexdigest()
    stats = tcpstack_cli("stats", "--tun", stack.tun, "--json")
    assert json.loads(stats.stdout)["ImpairDropped"] > 0, "no loss: the test would prove little"


def test_half_close_through_forward(netns: NetNS, make_stack, kernel_service,
                                    require_tools) -> None:
    require_tools("nc")
    port = kernel_service(DIGEST_AFTER_EOF)
    stack = make_stack(apps=[f"forward:7000=127.0.0.1:{port}"], extra_args=["--impair", LOSS])
    body = b"half-close\n" * 50_000
    # nc -N: shutdown(SHUT_WR) at the end of stdin, then read until the peer closes.
    done = netns.run("nc", "-N", stack.vip, "7000", input=body, timeout=60)
    assert done.stdout == hashlib.sha256(body).hexdigest().encode()


def test_refused_upstream_resets_the_client(netns: NetNS, make_stack) -> None:
    closed = netns.python("import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); "
                          "print(s.getsockname()[1])", check=True).stdout.strip()
    stack = make_stack(apps=[f"forward:7001=127.0.0.1:{closed}"])
    assert _client_error(netns, stack.vip, 7001) == "ConnectionResetError"


def test_unanswered_upstream_resets_the_client_after_the_timeout(netns: NetNS, make_stack,
                                                                 nft_drop) -> None:
    port = 7999  # SYNs to it are dropped: the upstream's connect() never completes
    stack = make_stack(apps=[f"forward:7002=127.0.0.1:{port}"],
                       extra_args=["--forward-connect-timeout", "1"])
    with nft_drop(netns, f"ip daddr 127.0.0.1 tcp dport {port}") as rule:
        assert _client_error(netns, stack.vip, 7002) == "ConnectionResetError"
        assert rule.dropped() >= 1


def _client_error(netns: NetNS, vip: str, port: int) -> str:
    """Connect to VIP:port, send a line, read, and name the exception raised.

    The reset may come before connect() returns: the stack's handshake is done
    in microseconds, and a refusal on loopback takes about as long."""
    done = netns.python(f"""
import socket
try:
    s = socket.create_connection(({vip!r}, {port}), timeout=20)
    s.sendall(b"hello\\n")
    print("data", s.recv(100))
except OSError as e:
    print(type(e).__name__)
""", check=True)
    return done.stdout.strip()
