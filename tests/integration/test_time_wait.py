"""TIME-WAIT against the Linux kernel as the client: records, not connections.

The HTTP app closes first when the request says `Connection: close`, so each
connection ends in TIME-WAIT on the stack's side. The daemon must then hold
one small record per connection and no task (`tcpstack ss` / `stats`), and a
kernel client that binds the same port again (SO_REUSEADDR) must reopen the
4-tuple with an ISS above the old connection's sequence space (RFC 9293 3.6.1
MAY-2: Linux's old SND.NXT + 65537).
"""

from __future__ import annotations

import json
import signal

from tests.integration.test_observe import json_cli

HTTP_PORT = 80
N = 20


def test_closed_connections_leave_records_and_reopen(make_stack, ns_python, netns,
                                                     tcpstack_cli, tmp_path) -> None:
    ctl = str(tmp_path / "c.sock")
    stack = make_stack(extra_args=["--control", ctl])
    cp = ns_python(f"""
import json, socket
ports = []
for _ in range({N}):
    s = socket.create_connection(({stack.vip!r}, {HTTP_PORT}), timeout=10)
    s.sendall(b"GET /bytes/1000 HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n")
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(bytes(range(251))[:1000 % 251])
    ports.append(s.getsockname()[1])
    s.close()
print(json.dumps(ports))
""")
    assert cp.returncode == 0, cp.stderr
    ports = json.loads(cp.stdout.strip().splitlines()[-1])
    table = json_cli(tcpstack_cli, "ss", "--control", ctl)
    ours = {int(c["remote"].rsplit(":", 1)[1]): c for c in table["connections"]
            if c["remote"].startswith(f"{stack.host_ip}:")}
    assert sorted(ours) == sorted(ports)
    assert all(c["state"] == "TIME-WAIT" and 50 < c["timers"]["time-wait"] <= 60
               for c in ours.values()), ours
    stats = json_cli(tcpstack_cli, "stats", "--control", ctl)
    assert (stats["TimeWait"], stats["ConnTasks"]) == (N, 0), stats
    text = tcpstack_cli("ss", "--control", ctl).stdout
    assert text.count("TIME-WAIT") == N and "time-wait=" in text

    # The same client port again: the kernel's SYN lies beyond the old RCV.NXT
    # (and its TSval is newer), so TIME-WAIT gives way to a new incarnation.
    port = ports[0]
    old_snd_nxt = ours[port]["snd_nxt"]
    client = netns.spawn_python(f"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(({stack.host_ip!r}, {port}))
s.settimeout(10)
s.connect(({stack.vip!r}, {HTTP_PORT}))
s.sendall(b"GET /bytes/10 HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n")
got = b""
while not got.endswith(bytes(range(10))):
    got += s.recv(65536)
print("reopened", got.split(b"\\r\\n", 1)[0].decode(), flush=True)
s.settimeout(30)
try:
    s.recv(1)  # keep the connection open until the daemon goes away
except OSError:
    pass
""")
    assert "200" in client.wait_for_line("reopened")
    table = json_cli(tcpstack_cli, "ss", "--control", ctl)
    [conn] = [c for c in table["connections"] if c["remote"] == f"{stack.host_ip}:{port}"]
    assert conn["state"] == "ESTABLISHED"
    assert conn["iss"] == (old_snd_nxt + 65537) % 2**32
    stats = json_cli(tcpstack_cli, "stats", "--control", ctl)
    assert (stats["TimeWait"], stats["ConnTasks"], stats["TimeWaitReopened"]) == (N - 1, 1, 1)
    assert stack.stop(signal.SIGTERM) == 0
    client.finish(timeout=10)
    assert f"discarding {N - 1} TIME-WAIT entries" in stack.stderr_text()
