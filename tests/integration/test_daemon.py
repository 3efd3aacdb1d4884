"""End-to-end tests of the daemon against the Linux kernel's TCP as the peer.

Each test starts its own daemon (fresh TUN and subnet) inside the session's
network namespace and talks to it with real clients: Python sockets, curl, nc
and ping.  Interoperating with an independent, battle-tested TCP is the only
convincing evidence that handshakes, retransmission, flow control and
teardown are right.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from typing import Any

import dpkt
import pytest

ECHO_PORT = 7
HTTP_PORT = 80


def _json_result(cp: Any) -> dict[str, Any]:
    """Parse the last stdout line of a peer script, failing with its stderr."""
    lines = cp.stdout.strip().splitlines()
    if cp.returncode != 0 or not lines:
        pytest.fail(f"peer script failed (rc={cp.returncode})\nstdout:\n{cp.stdout}\n"
                    f"stderr:\n{cp.stderr}")
    return json.loads(lines[-1])


def _pattern(n: int) -> bytes:
    """The /bytes/N body: byte k is k % 251 (251 is prime, so no 2^k alignment hides bugs)."""
    block = bytes(range(251))
    return (block * (n // 251 + 1))[:n]


def dpkt_addr(dotted: str) -> bytes:
    """Dotted quad to the 4-byte form dpkt uses for ip.src / ip.dst."""
    return bytes(int(p) for p in dotted.split("."))


def test_echo_100k_byte_exact(make_stack, ns_python) -> None:
    """100 KB through echo comes back byte-exact: segmentation, windows, reassembly."""
    stack = make_stack()
    code = f"""
import hashlib, json, socket, threading
data = bytes((i * 7 + i // 256) % 256 for i in range(100_000))
s = socket.create_connection(({stack.vip!r}, {ECHO_PORT}), timeout=10)
# Send on a thread while reading so neither side's buffers can deadlock us.
t = threading.Thread(target=s.sendall, args=(data,))
t.start()
got = bytearray()
while len(got) < len(data):
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
t.join(10)
s.close()
mismatch = next((i for i, (a, b) in enumerate(zip(data, got)) if a != b), None)
print(json.dumps({{"sent": len(data), "got": len(got), "first_mismatch": mismatch,
                  "same": bytes(got) == data}}))
"""
    res = _json_result(ns_python(code, timeout=30))
    assert res["got"] == res["sent"] == 100_000, res
    assert res["first_mismatch"] is None and res["same"], res


def test_closed_port_refused_quickly(make_stack, ns_python) -> None:
    """A SYN to a port with no listener is answered with RST, not silence."""
    stack = make_stack()
    code = f"""
import json, socket, time
t = time.monotonic()
try:
    socket.create_connection(({stack.vip!r}, 1), timeout=5).close()
    r = "connected"
except ConnectionRefusedError:
    r = "refused"
except OSError as e:
    r = repr(e)
print(json.dumps({{"result": r, "elapsed": time.monotonic() - t}}))
"""
    res = _json_result(ns_python(code, timeout=15))
    assert res["result"] == "refused", res
    assert res["elapsed"] < 2.0, res


def test_ping(make_stack, netns, require_tools) -> None:
    """ICMP echo works, so the IPv4 layer and the TUN plumbing are sound."""
    require_tools("ping")
    stack = make_stack()
    cp = netns.run("ping", "-c", "3", "-W", "2", stack.vip, timeout=20, check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_http_index_and_large_body(make_stack, netns, require_tools, tmp_path) -> None:
    """curl gets the index page and a 1 MB generated body byte-exact."""
    require_tools("curl")
    stack = make_stack()
    cp = netns.run(
        "curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}",
        f"http://{stack.vip}/", timeout=20, check=False,
    )
    assert cp.returncode == 0, cp.stderr
    body, _, status = cp.stdout.rpartition("\n")
    assert status == "200", cp.stdout[-500:]
    assert "tcpstack" in body

    n = 1_000_000
    out = tmp_path / "bytes.bin"
    cp = netns.run(
        "curl", "-sS", "-f", "--max-time", "20", "-o", str(out),
        f"http://{stack.vip}/bytes/{n}", timeout=30, check=False,
    )
    assert cp.returncode == 0, cp.stderr
    got = out.read_bytes()
    assert len(got) == n
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(_pattern(n)).hexdigest()


def test_nc_echo(make_stack, netns, require_tools) -> None:
    """netcat's half-close (-N) gets the echo back and a clean close."""
    require_tools("nc")
    stack = make_stack()
    cp = netns.run(
        "nc", "-N", "-w", "5", stack.vip, str(ECHO_PORT),
        input="hello\n", timeout=15, check=False,
    )
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "hello\n"


def test_http_post_sha256(make_stack, netns, require_tools, tmp_path) -> None:
    """A 1 MB upload is received intact: the server's digest equals hashlib's."""
    require_tools("curl")
    stack = make_stack()
    data = hashlib.sha256(b"seed").digest() * (1_000_000 // 32)
    data = bytes((b + i) % 256 for i, b in enumerate(data))
    f = tmp_path / "upload.bin"
    f.write_bytes(data)
    cp = netns.run(
        "curl", "-sS", "-f", "--max-time", "20", "-H", "Expect:",
        "--data-binary", f"@{f}", f"http://{stack.vip}/sha256", timeout=30, check=False,
    )
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip().lower() == hashlib.sha256(data).hexdigest()


def test_sigterm_shutdown_resets_idle_connection(make_stack, netns, wait_until) -> None:
    """SIGTERM: exit 0 promptly, TUN removed, open connections reset (not left hanging)."""
    stack = make_stack()
    client = netns.spawn_python(f"""
import socket
s = socket.create_connection(({stack.vip!r}, {ECHO_PORT}), timeout=10)
s.sendall(b"x")
assert s.recv(1) == b"x"  # the stack has the connection established
print("ready", flush=True)
s.settimeout(15)
try:
    print("closed" if s.recv(1) == b"" else "data")
except ConnectionResetError:
    print("reset")
except TimeoutError:
    print("timeout")
""")
    client.wait_for_line("ready", timeout=10)

    t0 = time.monotonic()
    rc = stack.stop(signal.SIGTERM, timeout=10)
    elapsed = time.monotonic() - t0
    assert rc == 0, stack.stderr_text()[-3000:]
    assert elapsed < 5.0, f"shutdown took {elapsed:.1f}s"

    wait_until(lambda: stack.tun not in netns.link_names(), timeout=5,
               message=f"{stack.tun} removed")

    crc, out, err = client.finish(timeout=20)
    assert crc == 0, err
    assert out.splitlines()[-1] in ("reset", "closed"), out


def test_lost_third_segment(
    make_stack, netns, capture, nft_drop, require_tools, wait_until
) -> None:
    """The handshake's final ACK is lost: SYN+ACK backoff 1 s, 2 s, then RST after 4 s.

    Linux's connect() returns as soon as it sees the SYN+ACK; every ACK it
    sends back is dropped by nftables before reaching the TUN, so the stack
    sits in SYN-RECEIVED, retransmits its SYN+ACK with exponential backoff
    (--synack-retries 2) and finally aborts with an RST the client sees.
    """
    require_tools("tcpdump", "nft")
    stack = make_stack(synack_retries=2)
    vip = stack.vip
    rule = f"ip daddr {vip} tcp dport {HTTP_PORT} tcp flags & (syn|ack|fin|rst) == ack"
    code = f"""
import json, socket, time
s = socket.socket()
s.settimeout(15)
s.connect(({vip!r}, {HTTP_PORT}))
t = time.monotonic()
try:
    r = "eof" if s.recv(1) == b"" else "data"
except ConnectionResetError:
    r = "reset"
except TimeoutError:
    r = "timeout"
except OSError as e:
    r = "oserror %s" % e.errno
print(json.dumps({{"result": r, "waited": time.monotonic() - t}}))
"""
    with capture(netns, stack.tun) as cap, nft_drop(netns, rule) as drop:
        res = _json_result(netns.python(code, timeout=30))

        def saw_rst() -> bool:
            return any(ip.src == dpkt_addr(vip) and ip.data.flags & dpkt.tcp.TH_RST
                       for _, ip in cap.tcp_packets())

        # The RST reached the client, so it crossed the TUN; wait until
        # tcpdump has written it before stopping the capture.
        if res["result"] == "reset":
            wait_until(saw_rst, timeout=5, message="stack's RST written to the capture")
        dropped = drop.dropped()

    assert res["result"] == "reset", res
    assert dropped >= 1, "the nft rule never matched: the harness did not drop the ACK"

    vip_b = dpkt_addr(vip)
    pkts = [(ts, ip, ip.data) for ts, ip in cap.tcp_packets()
            if HTTP_PORT in (ip.data.sport, ip.data.dport)]
    flags = dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK | dpkt.tcp.TH_FIN | dpkt.tcp.TH_RST

    syns = [(ts, t) for ts, ip, t in pkts
            if ip.dst == vip_b and t.flags & flags == dpkt.tcp.TH_SYN]
    assert len(syns) == 1, f"expected exactly one client SYN, saw {len(syns)}"
    x = syns[0][1].seq

    pure_acks = [t for _, ip, t in pkts if ip.dst == vip_b and t.flags & flags == dpkt.tcp.TH_ACK]
    assert not pure_acks, "a client ACK reached the TUN despite the drop rule"

    synacks = [(ts, t) for ts, ip, t in pkts
               if ip.src == vip_b and t.flags & flags == dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK]
    assert len(synacks) == 3, f"expected SYN+ACK at t0, t0+1, t0+3; saw {len(synacks)}"
    y = synacks[0][1].seq
    for _, t in synacks:
        assert t.seq == y, "SYN+ACK retransmissions must reuse the ISN"
        assert t.ack == (x + 1) % 2**32
    times = [ts for ts, _ in synacks]
    assert abs((times[1] - times[0]) - 1.0) <= 0.3, times
    assert abs((times[2] - times[1]) - 2.0) <= 0.3, times

    rsts = [(ts, t) for ts, ip, t in pkts if ip.src == vip_b and t.flags & dpkt.tcp.TH_RST]
    assert rsts, "the stack never sent an RST"
    rst_ts, rst = rsts[0]
    assert rst.seq == (y + 1) % 2**32
    assert abs((rst_ts - times[2]) - 4.0) <= 0.5, (rst_ts - times[2])



def test_sequential_connections_reuse(make_stack, ns_python) -> None:
    """Complete exchanges back to back: the stack frees and reuses per-connection state."""
    stack = make_stack()
    code = f"""
import json, socket
results = []
for i in range(3):
    msg = (b"round %d " % i) * 100
    s = socket.create_connection(({stack.vip!r}, {ECHO_PORT}), timeout=5)
    s.sendall(msg)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    results.append(got == msg)
print(json.dumps({{"results": results}}))
"""
    res = _json_result(ns_python(code, timeout=30))
    assert res["results"] == [True, True, True], res
    assert stack.alive(), stack.stderr_text()[-3000:]


@pytest.mark.parametrize("keepalive", [False, True], ids=["close", "keepalive"])
def test_ab_against_http(make_stack, netns, require_tools, keepalive: bool) -> None:
    """apache bench, HTTP/1.0 with and without keep-alive: no failed requests."""
    require_tools("ab")
    stack = make_stack()
    args = ["ab", "-q", "-n", "500", "-c", "25", *(["-k"] if keepalive else []),
            f"http://{stack.vip}/"]
    out = netns.run(*args, timeout=60, text=True).stdout
    assert "Complete requests:      500" in out, out
    assert "Failed requests:        0" in out, out
    assert "Non-2xx responses" not in out, out
    if keepalive:
        assert "Keep-Alive requests:    500" in out, out


def test_active_open_to_kernel_server(make_stack, netns) -> None:
    """Stack.open_connection from the VIP to a kernel listener, over a real TUN:
    CLOSED -> SYN-SENT -> ESTABLISHED, data both ways, half-close, and a refused port."""
    tun, host_cidr, vip = make_stack.allocate()
    host_ip = host_cidr.split("/")[0]
    code = f"""
import asyncio, json, socket, threading
from ipaddress import IPv4Interface
from tcpstack.shell.stack import Stack
from tcpstack.wire.tun import TunDevice

def kernel_server(sock):
    conn, _ = sock.accept()
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    conn.sendall(data[::-1])
    conn.close()

async def main():
    tun = TunDevice({tun!r}, IPv4Interface({host_cidr!r}), 1500)
    try:
        sock = socket.create_server(({host_ip!r}, 0))
        port = sock.getsockname()[1]
        threading.Thread(target=kernel_server, args=(sock,), daemon=True).start()
        stack = Stack({vip!r}, tun.write)
        reader_task = asyncio.create_task(stack.run_reader(tun.fileno()))
        try:
            r, w = await asyncio.wait_for(stack.open_connection({host_ip!r}, port), 5)
        except TimeoutError:
            raise SystemExit(f"no handshake; stack counters: {{dict(stack.stats)}}")
        payload = bytes(range(256)) * 1000
        w.write(payload)
        await w.drain()
        w.write_eof()
        back = await asyncio.wait_for(r.read(), 10)
        try:
            await asyncio.wait_for(stack.open_connection({host_ip!r}, 1), 5)
            refused = False
        except ConnectionRefusedError:
            refused = True
        print(json.dumps({{"ok": back == payload[::-1], "n": len(back), "refused": refused,
                          "active": stack.stats["ActiveOpens"]}}))
        await stack.close()
        reader_task.cancel()
    finally:
        tun.close()

asyncio.run(main())
"""
    res = _json_result(netns.python(code, timeout=30))
    assert res == {"ok": True, "n": 256000, "refused": True, "active": 2}
