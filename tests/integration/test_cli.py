"""Command-line contract: bad input is one clear stderr line and exit status 2.

An operator starting a root daemon needs an actionable message, not a
traceback, and scripts need a stable status to tell misuse (2) from crashes.
The program validates arguments before creating the TUN, so most cases could
run anywhere; they still run inside the test namespace so a regression that
does create a device cannot touch the host.
"""

from __future__ import annotations

import subprocess

import pytest


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
