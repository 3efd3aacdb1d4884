"""The control socket in process: a real Unix socket in tmp_path, the blocking
client on a thread, and a Stack whose wire is a list, driven by scripted segments."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from collections.abc import AsyncIterator

import pytest

from tcpstack import cli
from tcpstack.core.config import TcpConfig
from tcpstack.core.segment import Segment
from tcpstack.lab import control, snapshot
from tcpstack.shell.stack import Stack
from tcpstack.wire import codec
from tests.helpers import VIP, Wire, feed, idle, until
from tests.unit.tcpkit import ACK, MSS, RST, SYN, X, add, peer_syn, seg


class Rig:
    """A stack on an in-memory wire, serving its snapshots on a control socket."""

    def __init__(self, stack: Stack, wire: Wire, path: str) -> None:
        self.stack = stack
        self.wire = wire
        self.path = path

    def feed(self, segment: Segment) -> None:
        feed(self.stack, codec.encode(segment))

    def segments(self) -> list[Segment]:
        return self.wire.segments()

    async def ask(self, cmd: str) -> dict:
        """What `tcpstack ss` / `stats` get: the client runs on a thread, as in the CLI."""
        return await asyncio.to_thread(control.request, self.path, cmd)


def server_for(stack: Stack, path: str) -> control.ControlServer:
    loop = asyncio.get_running_loop()
    return control.ControlServer(path, {"ss": lambda: snapshot.ss(stack, loop.time()),
                                        "stats": lambda: snapshot.stats(stack)})


@pytest.fixture
async def rig(tmp_path) -> AsyncIterator[Rig]:
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig(backlog=4))
    path = str(tmp_path / "ctl.sock")
    server = server_for(stack, path)
    await server.start()
    try:
        yield Rig(stack, wire, path)
    finally:
        await server.close()
        await stack.close()


async def test_handshake_data_and_reset_as_ss_and_stats_see_them(rig: Rig) -> None:
    await rig.stack.start_server(idle, 80)
    table = await rig.ask("ss")
    assert table["addr"] == VIP and table["connections"] == []
    assert table["listeners"] == [{"state": "LISTEN", "local": "10.0.0.2:80", "port": 80,
                                   "backlog": 4, "half_open": 0, "accept_queue": 0}]

    # SYN in, SYN+ACK out: half-open, retransmission timer running.
    rig.feed(peer_syn(wscale=7, sack_permitted=True))
    [synack] = rig.segments()
    assert synack.flags == SYN | ACK
    y = synack.seq
    table = await rig.ask("ss")
    assert table["listeners"][0]["half_open"] == 1
    [conn] = table["connections"]
    assert (conn["state"], conn["local"], conn["remote"]) == (
        "SYN-RECEIVED", "10.0.0.2:80", "10.0.0.1:40000")
    assert (conn["iss"], conn["irs"], conn["snd_una"], conn["snd_nxt"], conn["rcv_nxt"]) == (
        y, X, y, add(y, 1), add(X, 1))
    assert conn["relative"] == {"snd_una": 0, "snd_nxt": 1, "snd_max": 1, "rcv_nxt": 1}
    assert conn["options"] == {"wscale": [7, 4], "sack": True, "ts": False}
    assert conn["mss"] == MSS and conn["rto"] == 1.0 and conn["srtt"] is None
    assert 0 < conn["timers"]["retransmit"] <= 1.0
    stats = await rig.ask("stats")
    assert list(stats)[:len(snapshot.MIB_COUNTERS)] == list(snapshot.MIB_COUNTERS)
    assert (stats["PassiveOpens"], stats["InSegs"], stats["OutSegs"], stats["CurrEstab"]) == (
        1, 1, 1, 0)

    # The third segment, then five bytes the application does not read.
    rig.feed(seg(ACK, add(X, 1), add(y, 1), window=1000))
    rig.feed(seg(ACK, add(X, 1), add(y, 1), b"hello", window=1000))
    await until(lambda: next(iter(rig.stack.conns.values())).reader.unread == 5)
    table = await rig.ask("ss")
    [conn] = table["connections"]
    assert conn["state"] == "ESTABLISHED" and conn["unread"] == 5
    assert conn["relative"] == {"snd_una": 1, "snd_nxt": 1, "snd_max": 1, "rcv_nxt": 6}
    # 1 MiB less 5 unread bytes, capped by what a 16-bit field scaled by 4 can say.
    assert conn["snd_wnd"] == 1000 << 7 and conn["rcv_wnd"] == 0xFFFF << 4
    assert conn["retransmits"] == 0 and conn["send_queue"] == 0
    assert table["listeners"][0]["half_open"] == 0
    stats = await rig.ask("stats")
    assert (stats["CurrEstab"], stats["InSegs"]) == (1, 3)

    # An RST at RCV.NXT ends it: gone from the table, counted as an established reset.
    rig.feed(seg(RST, add(X, 6)))
    await until(lambda: not rig.stack.conns)
    assert (await rig.ask("ss"))["connections"] == []
    stats = await rig.ask("stats")
    assert (stats["EstabResets"], stats["CurrEstab"], stats["OutRsts"]) == (1, 0, 0)


async def test_stats_lists_the_mib_first_then_the_rest_sorted(rig: Rig) -> None:
    rig.stack.stats.update({"Zeta": 2, "Drop.bad-checksum": 1, "OutSegs": 4, "BacklogDrops": 3})
    stats = await rig.ask("stats")
    assert list(stats) == [*snapshot.MIB_COUNTERS, "BacklogDrops", "ConnTasks",
                           "Drop.bad-checksum", "TimeWait", "Zeta"]
    assert stats["OutSegs"] == 4 and stats["ActiveOpens"] == 0


async def test_bad_requests_get_an_error_answer(rig: Rig) -> None:
    def raw(line: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(rig.path)
            s.sendall(line)
            return s.makefile("rb").readline()

    assert b"unknown command 'ps'" in await asyncio.to_thread(raw, b'{"cmd": "ps"}\n')
    assert b"not a JSON line" in await asyncio.to_thread(raw, b"ss\n")


async def test_socket_is_private_and_removed_on_close(tmp_path) -> None:
    stack = Stack(VIP, lambda p: None)
    path = str(tmp_path / "run" / "tcpstack" / "t.sock")
    server = server_for(stack, path)
    await server.start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o755
    finally:
        await server.close()
        await stack.close()
    assert not os.path.exists(path)


async def test_a_stale_socket_is_replaced_and_a_live_one_refused(tmp_path) -> None:
    path = str(tmp_path / "ctl.sock")
    with socket.socket(socket.AF_UNIX) as dead:  # bound, never listening: a dead daemon's
        dead.bind(path)
    stack = Stack(VIP, lambda p: None)
    first = server_for(stack, path)
    await first.start()
    try:
        second = server_for(stack, path)
        with pytest.raises(control.ControlError, match="in use by a running daemon"):
            await second.start()
        assert "ActiveOpens" in await asyncio.to_thread(control.request, path, "stats")
    finally:
        await first.close()
        await stack.close()


async def test_a_file_that_is_not_a_socket_is_left_alone(tmp_path) -> None:
    path = tmp_path / "ctl.sock"
    path.write_text("precious")
    with pytest.raises(control.ControlError, match="not a socket"):
        await control.ControlServer(str(path), {}).start()
    assert path.read_text() == "precious"


def test_no_daemon_is_exit_1_with_one_line(tmp_path, capsys) -> None:
    rc = cli.main(["ss", "--control", str(tmp_path / "none.sock")])
    err = capsys.readouterr().err.splitlines()
    assert rc == 1
    assert err == [f"tcpstack: error: no tcpstack daemon at {tmp_path / 'none.sock'} "
                   "(not running? see --tun and --control)"]


@pytest.mark.parametrize(("argv", "needle"), [
    (["ss", "--tun", "a", "--control", "/x"], "not allowed with argument"),
    (["stats", "--bogus"], "unrecognized arguments"),
    (["serve", "--control", "/" + "x" * 120], "--control: "),
    (["serve", "--pcap", "/nonexistent-dir/x.pcap"], "--pcap: directory"),
    (["connect", "10.0.0.1", "80", "--pcap", "/"], "--pcap: '/' is not a file name"),
])
def test_bad_command_lines_are_one_line_and_exit_2(argv, needle, capsys, monkeypatch) -> None:
    def trap(*args: object, **kwargs: object) -> None:
        raise AssertionError("a TUN device was created for a command line that should fail")

    monkeypatch.setattr(cli, "TunDevice", trap)
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(cli.main(argv))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert exc.value.code == 2
    assert len(err) == 1 and needle in err[0], err


# -- hostile and stuck clients ----------------------------------------------------------


@pytest.fixture
async def server(tmp_path) -> AsyncIterator[control.ControlServer]:
    """A control server whose answers are small ("stats") or 8 MB ("big")."""
    path = str(tmp_path / "ctl.sock")
    server = control.ControlServer(path, {"stats": lambda: {"ok": 1},
                                          "big": lambda: "x" * (8 << 20)})
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def send_raw(path: str, data: bytes) -> bytes:
    """Send `data` (a reset is fine: the server may stop reading) and return the
    line answered, b"" for none."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
        try:
            return s.makefile("rb").readline()
        except ConnectionResetError:
            return b""


@pytest.mark.parametrize(("data", "needle"), [
    (b"[" * 4000 + b"\n", b"more than 32 brackets"),  # json.loads: RecursionError
    (b'{"cmd": ' + b"[" * 1000 + b"]" * 1000 + b"}\n", b"more than 32 brackets"),
    (b"[" * 60_000 + b"\n", b"longer than 4096 bytes"),
    (b"x" * (10 << 20) + b"\n", b"longer than 4096 bytes"),
    (b'{"cmd": "\xff\xfe"}\n', b"not a JSON line"),
])
async def test_hostile_request_gets_one_json_error_line_and_the_server_lives(
        server: control.ControlServer, data: bytes, needle: bytes) -> None:
    answer = await asyncio.to_thread(send_raw, server.path, data)
    assert answer.endswith(b"\n") and needle in answer, answer[:200]
    assert json.loads(answer)["ok"] is False
    assert await asyncio.to_thread(control.request, server.path, "stats") == {"ok": 1}


async def test_stuck_clients_cannot_take_the_socket_away(
        server: control.ControlServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """MAX_CLIENTS silent clients: the next one is told "busy" at once; the silent
    ones are cut off after REQUEST_TIMEOUT, and then the socket answers again."""
    monkeypatch.setattr(control, "REQUEST_TIMEOUT", 0.2)
    silent = [await asyncio.open_unix_connection(server.path)
              for _ in range(control.MAX_CLIENTS)]
    with pytest.raises(control.ControlError, match="busy"):
        await asyncio.to_thread(control.request, server.path, "stats")
    for reader, writer in silent:
        assert await asyncio.wait_for(reader.read(), 5) == b""  # hung up on, no answer
        writer.close()
    assert await asyncio.to_thread(control.request, server.path, "stats") == {"ok": 1}


async def test_a_client_that_does_not_read_its_answer_is_cut_off(
        server: control.ControlServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "ANSWER_TIMEOUT", 0.2)
    reader, writer = await asyncio.open_unix_connection(server.path, limit=1 << 24)
    writer.write(b'{"cmd": "big"}\n')
    transport = writer.transport
    transport.pause_reading()  # take nothing, so the server's drain() waits
    await until(lambda: server.clients)  # the server has taken the client on...
    await until(lambda: not server.clients)  # ...and cut it off
    transport.resume_reading()
    got = 0
    with contextlib.suppress(ConnectionError):
        while data := await asyncio.wait_for(reader.read(1 << 20), 5):
            got += len(data)
    assert got < 8 << 20  # aborted: the rest of the answer was dropped
    writer.close()
    assert await asyncio.to_thread(control.request, server.path, "stats") == {"ok": 1}
