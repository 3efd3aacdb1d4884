"""`tcpstack connect` (the nc-like client) against kernel-side servers in the test netns.

The stack makes the active open from its VIP; the peer is the kernel's TCP
behind `nc -l` or a small Python server. Each test checks the contract a
script would rely on: stdout carries exactly the received bytes, stdin reaches
the peer byte-exact, EOF on stdin is a half-close (we keep receiving), exit 0
when the peer closes, exit 1 with one stderr line when the connection fails.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tcpstack.lab.netns import tcpstack_argv

_ports = itertools.count(5100)


@dataclass
class Link:
    """A fresh TUN/subnet for one `tcpstack connect` run."""

    tun: str
    host_cidr: str
    vip: str

    @property
    def host_ip(self) -> str:
        return self.host_cidr.split("/")[0]

    def argv(self, host: str, port: int, *extra: str) -> list[str]:
        return [*tcpstack_argv(), "connect", host, str(port), "--tun", self.tun,
                "--host-addr", self.host_cidr, "--addr", self.vip, *extra]


@pytest.fixture
def link(make_stack) -> Link:
    """A fresh (tun, subnet, VIP), removed at teardown by the stack factory."""
    return Link(*make_stack.allocate())


@pytest.fixture
def listening(netns, wait_until) -> Callable[[int], None]:
    """`listening(port)`: block (bounded) until a kernel listener is up on `port`.

    Servers bind the wildcard address: the kernel side's address only exists
    once `tcpstack connect` has created its TUN device.
    """

    def wait(port: int) -> None:
        def up() -> bool:
            return bool(netns.run("ss", "-Hltn", f"sport = :{port}", timeout=10).stdout.strip())

        wait_until(up, timeout=10, message=f"listener on port {port}")

    return wait


def _one_error_line(cp: Any, needle: str) -> None:
    lines = [ln for ln in cp.stderr.decode().splitlines() if ln.strip()]
    assert cp.returncode == 1, (cp.returncode, cp.stderr)
    assert len(lines) == 1 and needle in lines[0], cp.stderr
    assert cp.stdout == b""


@pytest.mark.parametrize("stdin_kind", ["pipe", "file"])
def test_stdin_reaches_nc_byte_exact(netns, link, listening, tmp_path, require_tools,
                                     stdin_kind: str) -> None:
    """1 MB from our stdin (a pipe, or a regular file, which epoll cannot watch)
    arrives intact at `nc -l`; our EOF (FIN) makes nc exit, its close makes us
    exit 0 with nothing on stdout."""
    require_tools("nc", "ss")
    port = next(_ports)
    data = os.urandom(1_000_000)
    received = tmp_path / "nc.out"
    with open(received, "wb") as out:
        nc = netns.popen("nc", "-l", "-d", "-p", str(port),
                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE)
    listening(port)
    argv = link.argv(link.host_ip, port)
    if stdin_kind == "pipe":
        cp = netns.run(*argv, input=data, timeout=30, check=False)
    else:
        source = tmp_path / "stdin.bin"
        source.write_bytes(data)
        with open(source, "rb") as f:
            cp = subprocess.run(netns.argv(*argv), stdin=f, capture_output=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b""
    assert nc.wait(10) == 0
    assert hashlib.sha256(received.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_nc_data_reaches_stdout_byte_exact(netns, link, listening, tmp_path,
                                           require_tools) -> None:
    """What `nc -l -N` sends appears on our stdout byte-exact; its FIN makes us
    exit 0 although our stdin is still open (a pipe nobody closes)."""
    require_tools("nc", "ss")
    port = next(_ports)
    data = os.urandom(1_000_000)
    source = tmp_path / "nc.in"
    source.write_bytes(data)
    with open(source, "rb") as src:
        nc = netns.popen("nc", "-l", "-N", "-p", str(port),
                         stdin=src, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    listening(port)
    # Our stdin is a pipe we keep open (and never write): no FIN from us before
    # nc's, which matters because nc -l stops sending when its peer half-closes.
    received = tmp_path / "stdout"
    with open(received, "wb") as out:
        client = netns.popen(*link.argv(link.host_ip, port), stdin=subprocess.PIPE,
                             stdout=out, stderr=subprocess.PIPE)
    try:
        rc = client.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail("tcpstack connect did not exit after the peer closed")
    finally:
        client.stdin.close()
    assert rc == 0, client.stderr.read()
    assert received.read_bytes() == data
    assert nc.wait(10) == 0


def test_half_close_keeps_receiving(netns, link, require_tools) -> None:
    """After our FIN (stdin EOF) the peer still answers: a kernel server that reads
    to EOF and only then replies with the SHA-256 of what it got."""
    port = next(_ports)
    server = netns.spawn_python(f"""
import hashlib, socket
s = socket.create_server(("0.0.0.0", {port}))
print("listening", flush=True)
c, _ = s.accept()
h = hashlib.sha256()
while chunk := c.recv(65536):
    h.update(chunk)
c.sendall(h.hexdigest().encode() + b"\\n")
c.close()
""")
    server.wait_for_line("listening")
    data = os.urandom(300_000)
    cp = netns.run(*link.argv(link.host_ip, port), input=data, timeout=30, check=False)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == hashlib.sha256(data).hexdigest().encode() + b"\n"
    rc, _, err = server.finish(10)
    assert rc == 0, err


def test_reset_by_peer_exits_1(netns, link) -> None:
    """The peer aborts (SO_LINGER 0: RST) after sending a line: one stderr line and
    exit 1, not a silent success. Data still unread when the RST arrives may be
    discarded (as asyncio's and Linux's sockets do), so stdout is only a prefix."""
    port = next(_ports)
    server = netns.spawn_python(f"""
import socket, struct
s = socket.create_server(("0.0.0.0", {port}))
print("listening", flush=True)
c, _ = s.accept()
c.sendall(b"partial\\n")
c.recv(1)  # our first byte: the stack is established and has the line
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
c.close()
""")
    server.wait_for_line("listening")
    client = netns.popen(*link.argv(link.host_ip, port), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = client.communicate(b"x", timeout=30)  # then EOF: we half-close
    except subprocess.TimeoutExpired:
        client.kill()
        pytest.fail("tcpstack connect did not exit after a reset")
    _one_error_line(subprocess.CompletedProcess(client.args, client.returncode, b"", err),
                    "reset")
    assert b"partial\n".startswith(out)
    server.finish(10)


def test_refused_port_exits_1(netns, link) -> None:
    """No listener: the kernel's RST refuses us; one stderr line, exit 1."""
    cp = netns.run(*link.argv(link.host_ip, next(_ports)), input=b"", timeout=20, check=False)
    _one_error_line(cp, "connection refused")


def test_unanswered_syns_time_out_exit_1(netns, link) -> None:
    """A host nobody answers for (forwarding is off in the netns): after the SYN
    retries (1 here: SYNs at 0 s and 1 s, give up at 3 s) one line, exit 1."""
    silent = link.host_ip.rsplit(".", 1)[0] + ".3"
    cp = netns.run(*link.argv(silent, 80, "--syn-retries", "1"), input=b"", timeout=20,
                   check=False)
    _one_error_line(cp, "timed out")
