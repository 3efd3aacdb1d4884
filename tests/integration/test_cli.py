"""Command-line contract: bad input is one clear stderr line and exit status 2.

An operator starting a root daemon needs an actionable message, not a
traceback, and scripts need a stable status to tell misuse (2) from crashes.
The program validates arguments before creating the TUN, so most cases could
run anywhere; they still run inside the test namespace so a regression that
does create a device cannot touch the host.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tcpstack import native
from tcpstack.lab.netns import daemon_env, tcpstack_argv
from tests.nstools import REPO_ROOT, run_into_closed_pipe


def _assert_usage_error(cp: subprocess.CompletedProcess[str]) -> None:
    """Exit 2, exactly one non-empty stderr line, no traceback."""
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert cp.returncode == 2, f"rc={cp.returncode} stderr={cp.stderr!r}"
    assert "Traceback" not in cp.stderr, cp.stderr
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {cp.stderr!r}"


def test_help_exits_zero(tcpstack_cli) -> None:
    """--help is a success, and says something."""
    cp = tcpstack_cli("--help")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip()


@pytest.mark.parametrize(
    ("label", "args"),
    [
        ("unknown app", ["--app", "foo:7"]),
        ("port taken twice", ["--app", "echo:7", "--app", "http:7"]),
        ("malformed address", ["--addr", "10.0.0.300"]),
        ("vip outside host subnet", ["--host-addr", "10.0.0.1/24", "--addr", "10.1.0.2"]),
        ("mtu too small", ["--mtu", "10"]),
    ],
)
def test_bad_arguments(tcpstack_cli, make_stack, netns, label: str, args: list[str]) -> None:
    """Each invalid command line is rejected before any device is created."""
    tun, host_cidr, vip = make_stack.allocate()
    base = ["serve", "--tun", tun]
    if "--host-addr" not in args:
        base += ["--host-addr", host_cidr]
    if "--addr" not in args:
        base += ["--addr", vip]
    cp = tcpstack_cli(*base, *args)
    _assert_usage_error(cp)
    assert tun not in netns.link_names(), f"{label}: TUN created despite bad arguments"


def test_device_busy(tcpstack_cli, make_stack, netns) -> None:
    """A second daemon on an in-use TUN name fails cleanly; the first is unharmed."""
    first = make_stack()
    _, host_cidr, vip = make_stack.allocate()
    cp = tcpstack_cli("serve", "--tun", first.tun, "--host-addr", host_cidr, "--addr", vip)
    _assert_usage_error(cp)
    assert first.alive(), first.stderr_text()[-3000:]
    assert first.tun in netns.link_names()
    ping = netns.run("ping", "-c", "1", "-W", "2", first.vip, timeout=10, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr


# -- the polish of issue 10 -----------------------------------------------------------------


def test_version_and_bare_tcpstack(tcpstack_cli) -> None:
    """--version names the package version and how the core runs (as in this
    process: the same build, the same TCPSTACK_PURE); bare `tcpstack` lists the
    commands on stderr and exits 2 (a usage error, as `ip` treats it)."""
    cp = tcpstack_cli("--version")
    assert (cp.returncode, cp.stdout) == (0, f"tcpstack 0.1.0 ({native.describe()})\n"), \
        cp.stderr
    cp = tcpstack_cli()
    assert cp.returncode == 2 and cp.stdout == "", cp.stderr
    listed = {ln.split()[0] for ln in cp.stderr.splitlines() if ln.startswith("    ")}
    assert {"serve", "connect", "ss", "stats", "ladder", "demo"} <= listed, cp.stderr


def test_closed_stdout_is_quiet_for_ss_and_stats(make_stack, tmp_path) -> None:
    """`tcpstack ss --json | head -c 0`: exit 0 or 141, no BrokenPipeError traceback.
    The control socket is a path, so the query needs no namespace."""
    ctl = str(tmp_path / "c.sock")
    make_stack(extra_args=["--control", ctl])
    for command in (["ss", "--json"], ["ss"], ["stats"], ["stats", "--json"]):
        cp = run_into_closed_pipe([*tcpstack_argv(), *command, "--control", ctl],
                                  cwd=REPO_ROOT, env=daemon_env())
        assert cp.returncode in (0, 141), (command, cp.returncode, cp.stderr)
        assert cp.stderr == "", (command, cp.stderr)


def test_ss_columns_hold_full_buffers(make_stack, netns, tcpstack_cli, wait_until,
                                      tmp_path) -> None:
    """A kernel client writes to echo and never reads: the stack's send queue fills
    (256 KiB) and then its receive buffer (up to 2 MiB unread). Seven-digit Recv-Q
    next to a six-digit Send-Q used to print as one number."""
    ctl = str(tmp_path / "c.sock")
    stack = make_stack(apps=["echo:7"], extra_args=["--control", ctl, "--rcv-buf", "2097152"])
    client = netns.spawn_python(f"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # our window closes at once
s.settimeout(10)
s.connect(({stack.vip!r}, 7))
print("connected", flush=True)
s.settimeout(5)
try:
    s.sendall(b"x" * (8 << 20))  # stops 5 s after every buffer on the way is full
except OSError:
    pass
""")
    client.wait_for_line("connected")

    def conn() -> dict | None:
        table = json.loads(tcpstack_cli("ss", "--control", ctl, "--json").stdout)
        found = [c for c in table["connections"] if c["local"].endswith(":7")]
        return found[0] if found else None

    wait_until(lambda: (c := conn()) is not None and c["unread"] >= 1_000_000
               and c["send_queue"] >= 100_000, timeout=30,
               message="a connection with a full receive buffer and send queue")
    cp = tcpstack_cli("ss", "--control", ctl)
    assert cp.returncode == 0, cp.stderr
    [row] = [ln for ln in cp.stdout.splitlines() if ln.startswith("ESTABLISHED")]
    _, unread, send_queue, local, _peer = row.split()
    assert int(unread) >= 1_000_000 and int(send_queue) >= 100_000
    assert local == f"{stack.vip}:7"
    client.finish(timeout=20)


def test_shutdown_line_separates_resets_from_time_wait(make_stack, netns, tcpstack_cli,
                                                       wait_until, tmp_path) -> None:
    """Two idle echo connections and three HTTP/1.0 exchanges (the stack closes first,
    so they end in TIME-WAIT on the stack): SIGTERM resets the two, and only the two,
    and discards the three."""
    ctl = str(tmp_path / "c.sock")
    stack = make_stack(apps=["echo:7", "http:80"], extra_args=["--control", ctl])
    for _ in range(3):
        cp = netns.python(f"""
import socket
s = socket.create_connection(({stack.vip!r}, 80), timeout=10)
s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
while s.recv(65536):
    pass
s.close()
""", timeout=20)
        assert cp.returncode == 0, cp.stderr
    idle = netns.spawn_python(f"""
import socket
conns = [socket.create_connection(({stack.vip!r}, 7), timeout=30) for _ in range(2)]
print("connected", flush=True)
for s in conns:
    try:
        print("eof" if s.recv(1) == b"" else "data", flush=True)
    except ConnectionResetError:
        print("reset", flush=True)
""")
    idle.wait_for_line("connected")

    def states() -> list[str]:
        table = json.loads(tcpstack_cli("ss", "--control", ctl, "--json").stdout)
        return sorted(c["state"] for c in table["connections"])

    wait_until(lambda: states() == ["ESTABLISHED"] * 2 + ["TIME-WAIT"] * 3, timeout=10,
               message="two established connections and three in TIME-WAIT")
    assert stack.stop(signal.SIGTERM) == 0
    _, out, err = idle.finish(timeout=10)
    assert out.split() == ["connected", "reset", "reset"], out + err
    assert "shutting down: resetting 2 connection(s), discarding 3 TIME-WAIT entries;" in (
        stack.stderr_text())


@pytest.mark.parametrize("command", [["demo", "handshake"], ["serve"],
                                     ["connect", "10.77.0.1", "80"]])
def test_without_cap_net_admin_is_one_line_and_exit_2(netns, require_tools, make_stack,
                                                      command: list[str]) -> None:
    """uid 0 without CAP_NET_ADMIN (a container, capsh --drop): the documented exit 2
    and one line, before any namespace or device is made."""
    require_tools("setpriv")
    tun, host_cidr, vip = make_stack.allocate()
    daemon = [] if command[0] == "demo" else ["--tun", tun, "--host-addr", host_cidr,
                                              "--addr", vip]
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout.split())
    cp = netns.run("setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin",
                   *tcpstack_argv(), *command, *daemon, check=False, timeout=30,
                   cwd=REPO_ROOT, env=daemon_env())
    _assert_usage_error(cp)
    assert "CAP_NET_ADMIN" in cp.stderr
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                               check=True).stdout.split())
    assert not {n for n in after - before if _left_behind_demo_namespace(n)}
    assert tun not in netns.link_names()


def _left_behind_demo_namespace(name: str) -> bool:
    """A demo namespace (tcps-demo-<pid>-<hex>) whose creator has exited: one
    the command above left behind. A demo test on the other xdist worker makes
    these too, while its process lives."""
    parts = name.split("-")
    if name.startswith("tcps-demo-") and len(parts) == 4 and parts[2].isdigit():
        return not Path(f"/proc/{parts[2]}").exists()
    return False


def test_overlapping_host_subnet_is_refused(make_stack, tcpstack_cli, netns) -> None:
    """A second daemon on the first one's subnet (or a part of it) would say "ready"
    and never hear a packet: serve and connect refuse it, naming the route."""
    first = make_stack()
    net = first.host_ip.rsplit(".", 1)[0]
    tun, _, _ = make_stack.allocate()
    for command in (["serve"], ["connect", f"{net}.1", "80"]):
        for host_cidr, vip in ((f"{net}.1/24", f"{net}.3"), (f"{net}.129/25", f"{net}.130")):
            cp = tcpstack_cli(*command, "--tun", tun, "--host-addr", host_cidr, "--addr", vip)
            _assert_usage_error(cp)
            assert f"overlaps the route to {net}.0/24 on {first.tun}" in cp.stderr
            assert tun not in netns.link_names()
    assert first.alive()
    ping = netns.run("ping", "-c", "1", "-W", "2", first.vip, timeout=10, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_config_file_under_the_command_line(make_stack, tcpstack_cli, tmp_path) -> None:
    """The file's apps and MSL apply; the command line's device and addresses win
    over the file's; a bad file is one line and exit 2."""
    config = tmp_path / "tcpstack.toml"
    config.write_text('app = ["echo:7"]\nhost-addr = "10.200.0.1/24"\naddr = "10.200.0.2"\n'
                      "msl = 1\n")
    stack = make_stack(extra_args=["--config", str(config)])
    assert stack.ready_line is not None
    assert stack.ready_line.endswith("apps: echo:7"), stack.ready_line
    assert f"(kernel side {stack.host_ip}/{stack.prefix}," in stack.ready_line
    config.write_text("msl = 'long'\n")
    cp = tcpstack_cli("serve", "--config", str(config))
    _assert_usage_error(cp)
    assert "msl: expected a number, got 'long'" in cp.stderr
