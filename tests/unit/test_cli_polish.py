"""The command line as a newcomer meets it (issue 10): --version, the command list
and examples in --help, quiet on a closed stdout, `ss` columns that never run
together, a shutdown line whose counts are the RSTs sent, the capability check,
and the refusal of a --host-addr subnet that is already routed."""

from __future__ import annotations

import asyncio
import sys
from ipaddress import IPv4Network
from pathlib import Path

import pytest

import tcpstack
from tcpstack import cli
from tcpstack.core.config import TcpConfig
from tcpstack.lab import query
from tcpstack.shell.stack import Stack
from tcpstack.wire import tun
from tests.nstools import REPO_ROOT, run_into_closed_pipe
from tests.unit.test_cli_args import run
from tests.unit.test_ladder import c2s, pkt, s2c, write_pcap
from tests.unit.test_stack import ACK, SYN, VIP, Wire, feed, packet
from tests.unit.test_stack_time_wait import close_first, to_time_wait

COMMANDS = ("serve", "connect", "ss", "stats", "ladder", "demo")


# -- --version and --help -------------------------------------------------------------------


def test_version_prints_the_package_version_and_how_the_core_runs(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"tcpstack {tcpstack.__version__} (") and "tcpstack 0.1.0 (" in out
    assert out.removeprefix("tcpstack 0.1.0 ").strip() in (
        "(core compiled with mypyc)", "(core in pure Python)")


def test_bare_tcpstack_lists_the_commands_on_stderr_and_exits_2(capsys) -> None:
    """Like `ip` (usage on stderr, a failure status), with our usage status 2."""
    rc = cli.main([])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    for name in COMMANDS:
        [line] = [ln for ln in err.splitlines() if ln.split()[:1] == [name]]
        assert len(line.split()) > 3, f"{name} has no one-line description: {line!r}"
    assert "examples:" in err and "tcpstack serve" in err


def test_help_lists_the_commands_and_examples(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert all(f"    {name} " in out for name in COMMANDS), out
    assert "examples:\n  tcpstack serve" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_has_examples(command: str, capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    examples = out.split("examples:\n", 1)[1].splitlines()
    assert examples and all(ln.startswith(f"  tcpstack {command}") or "|" in ln
                            or "<" in ln for ln in examples if ln.strip()), out


# -- a closed stdout ------------------------------------------------------------------------


def test_closed_stdout_is_quiet(tmp_path: Path) -> None:
    """`tcpstack --help | head -c 0`, `tcpstack ladder X | head -c 0`: exit 0 or 141
    (128 + SIGPIPE), nothing on stderr, in particular no BrokenPipeError traceback."""
    capture = write_pcap(tmp_path / "c.pcap", [pkt(0.0, c2s, SYN, 100),
                                                pkt(0.01, s2c, SYN | ACK, 500, 101),
                                                pkt(0.02, c2s, ACK, 101, 501)])
    for argv in (["--help"], ["ladder", capture], ["demo", "--list"]):
        cp = run_into_closed_pipe([sys.executable, "-m", "tcpstack", *argv], cwd=REPO_ROOT)
        assert cp.returncode in (0, 141), (argv, cp.returncode, cp.stderr)
        assert cp.stderr == "", (argv, cp.stderr)


# -- ss columns -----------------------------------------------------------------------------


def _connection(state: str, unread: int, send_queue: int, remote: str) -> dict[str, object]:
    """A `ss` row as the daemon's snapshot has it (the detail fields of a TIME-WAIT record)."""
    return {"state": state, "unread": unread, "send_queue": send_queue,
            "local": "10.0.0.2:7", "remote": remote, "options": {"ts": True},
            "snd_nxt": 1, "rcv_nxt": 1, "rcv_wnd": 65535, "timers": {}}


def test_ss_columns_are_as_wide_as_their_cells() -> None:
    """A full receive buffer (1 MiB unread) next to a full send buffer: seven digits
    each, the width ss gives the column, ran together as one number."""
    table = {"listeners": [], "connections": [
        _connection("ESTABLISHED", 1048576, 262144, "10.0.0.1:40000"),
        _connection("CLOSE-WAIT", 0, 12345678, "10.0.0.1:40001"),
    ]}
    header, first, _, second, _ = query.format_ss(table)
    assert header.split()[:3] == ["State", "Recv-Q", "Send-Q"]
    assert first.split() == ["ESTABLISHED", "1048576", "262144", "10.0.0.2:7", "10.0.0.1:40000"]
    assert second.split() == ["CLOSE-WAIT", "0", "12345678", "10.0.0.2:7", "10.0.0.1:40001"]
    # Aligned: every column starts where its header does.
    for row in (first, second):
        assert [row.index(cell) for cell in row.split()[2:]] == [
            header.index(h) for h in ("Send-Q", "Local", "Peer")]


def test_ss_keeps_its_usual_widths_for_small_values() -> None:
    table = {"listeners": [], "connections": [_connection("ESTABLISHED", 0, 0, "10.0.0.1:1")]}
    assert query.format_ss(table)[0] == (
        "State        Recv-Q Send-Q Local Address:Port    Peer Address:Port")


# -- the shutdown line ----------------------------------------------------------------------


async def _hold(reader, writer) -> None:
    await reader.read()


async def test_shutdown_line_counts_the_resets_that_close_sends() -> None:
    """Two TIME-WAIT records, one established connection and one active open still in
    SYN-SENT: ABORT resets only the established one (RFC 9293 3.10.5), and OutRsts agrees."""
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig())
    await stack.start_server(close_first, 80)
    await stack.start_server(_hold, 81)
    await to_time_wait(stack, wire, sport=40000)
    await to_time_wait(stack, wire, sport=40001)
    feed(stack, packet(SYN, 1000, sport=40002, dport=81))
    y = (await wire.wait_for(lambda s: bool(s.flags & SYN))).seq
    feed(stack, packet(ACK, 1001, y + 1, sport=40002, dport=81))
    opening = asyncio.create_task(stack.open_connection("10.0.0.1", 8080))
    await wire.wait_for(lambda s: s.flags == SYN)
    assert len(stack.conns) == 2 and len(stack.time_wait) == 2
    assert cli.shutdown_summary(stack) == (
        "resetting 1 connection(s), closing 1 without a reset, discarding 2 TIME-WAIT entries")
    before = stack.stats["OutRsts"]
    await stack.close()
    assert stack.stats["OutRsts"] - before == 1
    with pytest.raises(ConnectionError):
        await opening


# -- capabilities and routes ----------------------------------------------------------------


def test_missing_capabilities_reads_the_effective_set(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nCapEff:\t000001fffeffefff\n")  # all but 12 and 24
    assert tun.missing_capabilities("CAP_NET_ADMIN", "CAP_SYS_ADMIN", status=status) == [
        "CAP_NET_ADMIN"]
    status.write_text("CapEff:\t0000000000001000\n")
    assert tun.missing_capabilities("CAP_NET_ADMIN", "CAP_SYS_ADMIN", status=status) == [
        "CAP_SYS_ADMIN"]


def test_demo_without_cap_net_admin_is_one_line_and_exit_2(monkeypatch, capsys) -> None:
    monkeypatch.setattr("tcpstack.lab.demo.missing_capabilities", lambda *names: ["CAP_NET_ADMIN"])
    monkeypatch.setattr("os.geteuid", lambda: 0)
    rc, lines = run(["demo", "handshake"], capsys)
    assert rc == 2 and lines == [
        "tcpstack: error: demo needs CAP_NET_ADMIN (root in a container or under capsh --drop "
        "may lack it): it creates a network namespace and a TUN device"]


ROUTES = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
tcps0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""


@pytest.mark.parametrize(("name", "subnet", "conflict"), [
    ("tcps1", "10.0.0.0/24", "the route to 10.0.0.0/24 on tcps0"),
    ("tcps1", "10.0.0.128/25", "the route to 10.0.0.0/24 on tcps0"),
    ("tcps1", "10.0.0.0/8", "the route to 10.0.0.0/24 on tcps0"),
    ("tcps1", "192.0.2.0/30", "the route to 192.0.2.0/24 on eth0"),
    ("tcps1", "10.0.1.0/24", None),  # the default route overlaps everything: not counted
    ("tcps0", "10.0.0.0/24", None),  # the device's own route: about to be replaced
])
def test_host_subnet_overlapping_a_route_is_refused(tmp_path: Path, name: str, subnet: str,
                                                    conflict: str | None) -> None:
    routes = tmp_path / "route"
    routes.write_text(ROUTES)
    if conflict is None:
        tun.check_free_subnet(name, IPv4Network(subnet), routes)
        return
    with pytest.raises(tun.TunError) as e:
        tun.check_free_subnet(name, IPv4Network(subnet), routes)
    assert f"--host-addr: {subnet} overlaps {conflict}" in str(e.value)
