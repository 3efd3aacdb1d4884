"""The embedding API on a real TUN with the Linux kernel as the peer: a
third-party asyncio server (aiohttp) on the stack answering curl, the
Transport's flow control against kernel sockets, and every script of
examples/ started, used once and stopped cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest

from tcpstack.lab.netns import Daemon, daemon_env, spawn_daemon
from tests.nstools import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"


def start_example(make_stack, name: str, *args: str) -> Daemon:
    """Run examples/NAME in the test netns on a fresh TUN and subnet, until its
    ready line; the factory stops it and removes the TUN after the test."""
    tun, host_cidr, vip = make_stack.allocate()
    argv = [sys.executable, str(EXAMPLES / name), "--tun", tun, "--host-addr", host_cidr,
            "--addr", vip, *args]
    daemon = spawn_daemon(make_stack.ns, argv, tun=tun, host_cidr=host_cidr, vip=vip,
                          stderr_path=make_stack._tmp / f"{name}.stderr")
    make_stack.stacks.append(daemon)
    daemon.wait_ready()
    return daemon


def stop_cleanly(daemon: Daemon) -> None:
    """Ctrl-C: exit 0 without a traceback, and the TUN device is gone."""
    assert daemon.stop(signal.SIGINT) == 0, daemon.stderr_text()
    assert "Traceback" not in daemon.stderr_text()
    assert daemon.tun not in daemon.ns.link_names()


def run_in_netns(netns, code: str, *args: str, timeout: float = 60) -> (
        subprocess.CompletedProcess[str]):
    return netns.run(sys.executable, "-c", textwrap.dedent(code), *args, timeout=timeout,
                     check=False, cwd=REPO_ROOT, env=daemon_env())


# -- a real third-party server: aiohttp ---------------------------------------------------

def test_aiohttp_app_serves_curl(make_stack, require_tools, tmp_path) -> None:
    """aiohttp's own protocol (web.Server from AppRunner) on create_server: a GET,
    then a 1 MB POST echoed byte for byte, on one kept-alive connection."""
    require_tools("curl")
    pytest.importorskip("aiohttp")
    app = start_example(make_stack, "http_app.py")
    body = tmp_path / "body"
    body.write_bytes(bytes(range(256)) * 4000)  # under aiohttp's 1 MiB client_max_size
    url = f"http://{app.vip}/"
    out = make_stack.ns.run(
        "curl", "-sS", "--max-time", "30", url, "-o", str(tmp_path / "hello"),
        "--next", "-sS", "--max-time", "30", "--data-binary", f"@{body}",
        "-H", "Content-Type: application/octet-stream", f"{url}echo",
        "-o", str(tmp_path / "echo"), "-w", "%{num_connects} %{http_code}", timeout=40)
    assert out.stdout.split() == ["0", "200"]  # the second request reused the connection
    assert (tmp_path / "hello").read_text().startswith(f"hello {app.host_ip}:")
    assert (tmp_path / "echo").read_bytes() == body.read_bytes()
    stop_cleanly(app)


# -- the Transport's flow control against the kernel --------------------------------------

FLOW = """
    import asyncio, json, socket, sys
    import tcpstack

    tun, host_addr, addr = sys.argv[1:4]
    TOTAL = 4 << 20

    async def until(cond):
        async def poll():
            while not cond():
                await asyncio.sleep(0.01)
        await asyncio.wait_for(poll(), 20)

    class Sink(asyncio.Protocol):
        '''Reading paused from the start; counts what it is given.'''
        def connection_made(self, transport):
            self.transport, self.got = transport, 0
            transport.pause_reading()
        def data_received(self, data):
            self.got += len(data)

    class Source(asyncio.Protocol):
        '''Writes TOTAL bytes whenever it may, as a protocol honouring pause_writing.'''
        def connection_made(self, transport):
            self.transport, self.sent, self.events = transport, 0, []
            transport.set_write_buffer_limits(high=256 << 10)
            self.resume_writing()
        def pause_writing(self):
            self.events.append(("pause", self.transport.get_write_buffer_size()))
            self.paused = True
        def resume_writing(self):
            if self.sent:
                self.events.append(("resume", self.transport.get_write_buffer_size()))
            self.paused = False
            while not self.paused and self.sent < TOTAL:
                self.transport.write(b"s" * 65536)
                self.sent += 65536
            if self.sent >= TOTAL:
                self.transport.close()

    async def main():
        loop = asyncio.get_running_loop()
        result = {}
        async with tcpstack.open_stack(tun, host_addr, addr, rcv_buf=65536) as stack:
            sinks, sources = [], []
            await stack.create_server(lambda: sinks.append(Sink()) or sinks[-1], 5001)
            await stack.create_server(lambda: sources.append(Source()) or sources[-1], 5002)

            # pause_reading: the kernel's sendall stalls on our closed window.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
            sock.setblocking(False)
            await loop.sock_connect(sock, (addr, 5001))
            sending = loop.create_task(loop.sock_sendall(sock, b"k" * TOTAL))
            await until(lambda: sinks and sinks[0].transport.get_extra_info("tcb").rcv_wnd == 0)
            sink = sinks[0]
            result["held"] = sink.transport.unread
            result["given_while_paused"] = sink.got
            result["sendall_done_while_paused"] = sending.done()
            sink.transport.resume_reading()
            await asyncio.wait_for(sending, 20)
            sock.shutdown(socket.SHUT_WR)
            await until(lambda: sink.got == TOTAL)
            result["given"] = sink.got
            sock.close()

            # pause_writing: the kernel reads nothing until the protocol paused.
            reader, writer = await asyncio.open_connection(addr, 5002)
            await until(lambda: sources and sources[0].events)
            result["first_event"] = sources[0].events[0]
            data = await asyncio.wait_for(reader.read(), 20)
            result["received"] = len(data)
            result["events"] = sorted({kind for kind, _ in sources[0].events})
            writer.close()
        print(json.dumps(result))

    asyncio.run(main())
"""


def test_transport_flow_control_against_the_kernel(make_stack, netns) -> None:
    """pause_reading closes the receive window (RFC 9293 3.8.6.2: the kernel's
    sender stops at a zero window, data held is at most --rcv-buf) and
    resume_reading lets all of it through; a protocol's writes pause above the
    high-water mark while the kernel reads nothing, and resume as it reads."""
    tun, host_cidr, vip = make_stack.allocate()
    out = run_in_netns(netns, FLOW, tun, host_cidr, vip)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert 0 < result["held"] <= 65536
    assert result["given_while_paused"] == 0
    assert not result["sendall_done_while_paused"]
    assert result["given"] == 4 << 20
    kind, size = result["first_event"]
    assert kind == "pause" and size > 256 << 10
    assert result["events"] == ["pause", "resume"]
    assert result["received"] == 4 << 20


# -- open_stack's tear-down -------------------------------------------------------------

TEARDOWN = """
    import asyncio, os, sys
    import tcpstack

    tun, host_addr, addr, how = sys.argv[1:5]

    async def hold(reader, writer):
        await reader.read()

    async def body(connected):
        async with tcpstack.open_stack(tun, host_addr, addr) as stack:
            await stack.start_server(hold, 7)
            connected.set_result(await asyncio.open_connection(addr, 7))  # the kernel's
            if how == "raise":
                raise RuntimeError("the application failed")
            await asyncio.get_running_loop().create_future()

    async def main():
        connected = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(body(connected))
        reader, _ = await asyncio.wait_for(connected, 10)
        if how == "cancel":
            task.cancel()
        try:
            await task
        except (RuntimeError, asyncio.CancelledError) as e:
            print("body", type(e).__name__)
        try:
            print("peer", await asyncio.wait_for(reader.read(), 10) or "EOF")
        except ConnectionResetError:
            print("peer RST")
        print("device", os.path.exists(f"/sys/class/net/{tun}"))

    asyncio.run(main())
"""


@pytest.mark.parametrize(("how", "outcome"), [("raise", "RuntimeError"),
                                              ("cancel", "CancelledError")])
def test_open_stack_tears_down_on_error_and_cancellation(make_stack, netns, how,
                                                         outcome) -> None:
    """Leaving open_stack by an exception or a cancellation resets the open
    connections (the kernel's socket sees RST, not a hang) and removes the TUN."""
    tun, host_cidr, vip = make_stack.allocate()
    out = run_in_netns(netns, TEARDOWN, tun, host_cidr, vip, how)
    assert out.stdout.split("\n")[:3] == [f"body {outcome}", "peer RST", "device False"], (
        out.stderr)


# -- the examples ------------------------------------------------------------------------

def test_echo_server_example(make_stack, ns_python) -> None:
    echo = start_example(make_stack, "echo_server.py")
    out = ns_python(f"""
import socket
with socket.create_connection(({echo.vip!r}, 7), timeout=10) as s:
    s.sendall(b"hello stack\\n")
    s.shutdown(socket.SHUT_WR)
    print(s.makefile("rb").read().decode(), end="")
""")
    assert out.stdout == "hello stack\n", out.stderr
    stop_cleanly(echo)


def test_client_example_talks_to_a_kernel_server(make_stack, netns) -> None:
    tun, host_cidr, vip = make_stack.allocate()
    server = netns.spawn_python("""
import socket
srv = socket.create_server(("0.0.0.0", 8000))
print("listening", flush=True)
conn, _ = srv.accept()
conn.recv(4096)
conn.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\nkernel says hi")
conn.close()
""")
    server.wait_for_line("listening")
    out = netns.run(sys.executable, str(EXAMPLES / "client.py"), "--tun", tun,
                    "--host-addr", host_cidr, "--addr", vip,
                    "--host", host_cidr.split("/")[0], "--port", "8000",
                    timeout=30, check=False, cwd=REPO_ROOT, env=daemon_env())
    assert out.returncode == 0, out.stderr
    assert "HTTP/1.0 200 OK" in out.stdout and "kernel says hi" in out.stdout
    assert tun not in netns.link_names()
    server.finish()


def test_lossy_experiment_example(make_stack, netns) -> None:
    tun, host_cidr, vip = make_stack.allocate()
    out = netns.run(sys.executable, str(EXAMPLES / "lossy_experiment.py"), "--tun", tun,
                    "--host-addr", host_cidr, "--addr", vip, "--loss", "0,5",
                    "--size", "300000", timeout=120, check=False, cwd=REPO_ROOT,
                    env=daemon_env())
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    assert [(row[0], row[1]) for row in rows] == [("0%", "300000"), ("5%", "300000")]
    assert int(rows[1][7]) > 0  # retransmissions at 5 % loss
