"""TIME-WAIT through the stack (in memory, as test_stack.py): the record replaces
the connection and its task, lives in the timer wheel, is capped, shows in `ss`,
and a reopening SYN gets an ISS above the old sequence space and gives
TIME-WAIT back when its handshake fails (RFC 9293 3.6.1 MAY-2)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tcpstack.core.config import TcpConfig
from tcpstack.lab import snapshot
from tcpstack.shell.stack import Stack
from tests.helpers import PEER, VIP, Wire, feed, packet, until
from tests.unit.tcpkit import ACK, FIN, RST, SYN

KEY = (80, PEER, 40000)


async def close_first(reader, writer) -> None:
    writer.close()


async def make(config: TcpConfig) -> tuple[Stack, Wire]:
    wire = Wire()
    stack = Stack(VIP, wire.output, config)
    await stack.start_server(close_first, 80)
    return stack, wire


async def to_time_wait(stack: Stack, wire: Wire, sport: int = 40000) -> int:
    """The server closes first; we acknowledge its FIN and send ours. Returns y."""
    feed(stack, packet(SYN, 1000, sport=sport))
    y = (await wire.wait_for(lambda s: bool(s.flags & SYN))).seq
    feed(stack, packet(ACK, 1001, y + 1, sport=sport))
    await wire.wait_for(lambda s: bool(s.flags & FIN))
    feed(stack, packet(ACK | FIN, 1001, y + 2, sport=sport))
    await wire.wait_for(lambda s: s.ack == 1002)
    await until(lambda: (80, PEER, sport) in stack.time_wait)
    return y


@pytest.fixture
async def rig():
    stack, wire = await make(TcpConfig())
    yield stack, wire
    await stack.close()


async def test_time_wait_record_replaces_connection_and_task(rig) -> None:
    stack, wire = rig
    y = await to_time_wait(stack, wire)
    tw = stack.time_wait[KEY]
    assert not stack.conns
    assert (tw.snd_nxt, tw.rcv_nxt) == (y + 2, 1002)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("tcb ")]
    counters = snapshot.stats(stack)
    assert (counters["TimeWait"], counters["ConnTasks"]) == (1, 0)
    [entry] = snapshot.ss(stack, asyncio.get_running_loop().time())["connections"]
    assert (entry["state"], entry["local"], entry["remote"]) == (
        "TIME-WAIT", "10.0.0.2:80", "10.0.0.1:40000")
    assert 59 < entry["timers"]["time-wait"] <= 60


async def test_time_wait_answers_retransmitted_fin(rig) -> None:
    stack, wire = rig
    y = await to_time_wait(stack, wire)
    feed(stack, packet(ACK | FIN, 1001, y + 2))
    [ack] = wire.segments()
    assert (ack.flags, ack.seq, ack.ack) == (ACK, y + 2, 1002)


async def test_time_wait_restarted_timer_moves_the_wheel_entry(rig) -> None:
    stack, wire = rig
    y = await to_time_wait(stack, wire)
    tw = stack.time_wait[KEY]
    first = tw.deadline
    stack.handle_packet(packet(ACK | FIN, 1001, y + 2), first - 30)  # 2*MSL restarts, 30 s in
    assert tw.deadline == first + 30
    stack._on_wheel(first + 0.02)  # the old entry fires early: nothing ends
    assert stack.time_wait.get(KEY) is tw and tw.timer is not None
    stack._on_wheel(first + 30.02)
    assert KEY not in stack.time_wait


async def test_time_wait_ends_after_two_msl_with_trace(caplog) -> None:
    caplog.set_level(logging.INFO, logger="tcpstack.trace")
    stack, wire = await make(TcpConfig(msl=0.02))
    try:
        await to_time_wait(stack, wire)
        await until(lambda: not stack.time_wait)
        assert len(stack.wheel) == 0
    finally:
        await stack.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "tcpstack.trace"]
    assert lines[-1] == ("trace 10.0.0.2:80 10.0.0.1:40000 TIME-WAIT -> CLOSED: "
                         "2*MSL elapsed in TIME-WAIT")


async def test_time_wait_cap_closes_directly(caplog) -> None:
    """Linux tcp_max_tw_buckets: beyond the cap a connection skips TIME-WAIT."""
    caplog.set_level(logging.INFO, logger="tcpstack.trace")
    stack, wire = await make(TcpConfig(max_tw_buckets=1))
    try:
        await to_time_wait(stack, wire, sport=40000)
        feed(stack, packet(SYN, 1000, sport=40001))
        y = (await wire.wait_for(lambda s: bool(s.flags & SYN))).seq
        feed(stack, packet(ACK, 1001, y + 1, sport=40001))
        await wire.wait_for(lambda s: bool(s.flags & FIN))
        feed(stack, packet(ACK | FIN, 1001, y + 2, sport=40001))
        await until(lambda: not stack.conns)
        assert list(stack.time_wait) == [KEY]
        assert stack.stats["TimeWaitOverflow"] == 1
        feed(stack, packet(ACK, 1001, y + 2, sport=40001))  # the 4-tuple is CLOSED now
        assert [(s.flags, s.seq) for s in wire.segments()][-1:] == [(RST, y + 2)]
    finally:
        await stack.close()
    assert ("trace 10.0.0.2:80 10.0.0.1:40001 TIME-WAIT -> CLOSED: TIME-WAIT table full "
            "(--max-tw): closed at once") in [r.getMessage() for r in caplog.records]


async def test_reopen_iss_is_old_snd_nxt_plus_65537(rig) -> None:
    """RFC 9293 3.6.1 MAY-2 (1), Linux's tw_snd_nxt + 65535 + 2."""
    stack, wire = rig
    y = await to_time_wait(stack, wire)
    feed(stack, packet(SYN, 900_000))
    synack = await wire.wait_for(lambda s: bool(s.flags & SYN))
    assert (synack.seq, synack.ack) == ((y + 2 + 65537) & 0xFFFFFFFF, 900_001)
    assert stack.stats["TimeWaitReopened"] == 1


async def test_reopen_reset_by_peer_restores_time_wait(rig) -> None:
    """RFC 9293 3.6.1 MAY-2 (2): the SYN was an old duplicate, the peer resets our
    SYN+ACK: TIME-WAIT is back, with the old sequence numbers."""
    stack, wire = rig
    y = await to_time_wait(stack, wire)
    tw = stack.time_wait[KEY]
    feed(stack, packet(SYN, 900_000))
    await wire.wait_for(lambda s: bool(s.flags & SYN))
    assert KEY not in stack.time_wait
    feed(stack, packet(RST, 900_001))
    await until(lambda: KEY in stack.time_wait)
    assert stack.time_wait[KEY] is tw and not stack.conns
    assert stack.stats["TimeWaitRestored"] == 1
    feed(stack, packet(ACK, 1001, y + 2))  # an old ACK: the old TIME-WAIT answers it
    [ack] = wire.segments()
    assert (ack.flags, ack.seq, ack.ack) == (ACK, y + 2, 1002)


async def test_reopen_handshake_timeout_restores_time_wait() -> None:
    stack, wire = await make(TcpConfig(synack_retries=0, rto_initial=0.02))
    try:
        await to_time_wait(stack, wire)
        feed(stack, packet(SYN, 900_000))
        await wire.wait_for(lambda s: bool(s.flags & RST))  # the SYN+ACK went unanswered
        await until(lambda: KEY in stack.time_wait)
        assert not stack.conns
    finally:
        await stack.close()


async def test_reopen_established_forgets_old_time_wait(rig) -> None:
    stack, wire = rig
    await to_time_wait(stack, wire)
    feed(stack, packet(SYN, 900_000))
    z = (await wire.wait_for(lambda s: bool(s.flags & SYN))).seq
    conn = stack.conns[KEY]
    feed(stack, packet(ACK, 900_001, z + 1))
    await asyncio.wait_for(conn.established, 2)
    assert conn.reopened is None
    feed(stack, packet(RST, 900_001))
    await until(lambda: not stack.conns)
    assert KEY not in stack.time_wait and stack.stats["TimeWaitRestored"] == 0


async def test_close_discards_time_wait_without_rst() -> None:
    stack, wire = await make(TcpConfig())
    await to_time_wait(stack, wire)
    wire.segments()
    await stack.close()
    assert not stack.time_wait and wire.segments() == []


async def test_reopen_answered_by_syn_cookie_drops_time_wait() -> None:
    """A reopening SYN answered with a SYN cookie keeps no state, so TIME-WAIT is
    not restored (Linux kills the TIME-WAIT socket before the listener answers):
    the cookie's ACK must reach the listener, not the old record."""
    stack, wire = await make(TcpConfig(syncookies="always"))
    try:
        await to_time_wait(stack, wire)
        feed(stack, packet(SYN, 900_000))
        z = (await wire.wait_for(lambda s: bool(s.flags & SYN))).seq
        assert KEY not in stack.time_wait and KEY not in stack.conns
        assert stack.stats["TimeWaitRestored"] == 0
        feed(stack, packet(ACK, 900_001, z + 1))
        await until(lambda: KEY in stack.conns)
        assert stack.stats["SyncookiesRecv"] == 2
    finally:
        await stack.close()


async def test_time_wait_releases_the_memory_charge() -> None:
    """Bytes the application never read stop counting toward --mem-limit once the
    task is gone (TIME-WAIT): nothing would ever take the charge back."""
    stop = asyncio.Event()

    async def half_close_unread(reader, writer) -> None:
        writer.write_eof()
        await stop.wait()

    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig())
    await stack.start_server(half_close_unread, 80)
    try:
        feed(stack, packet(SYN, 1000))
        y = (await wire.wait_for(lambda s: bool(s.flags & SYN))).seq
        feed(stack, packet(ACK, 1001, y + 1))
        await wire.wait_for(lambda s: bool(s.flags & FIN))
        feed(stack, packet(ACK, 1001, y + 2, payload=b"abc"))
        await until(lambda: stack.buffered == 3)
        feed(stack, packet(ACK | FIN, 1004, y + 2))
        await until(lambda: KEY in stack.time_wait)
        assert stack.buffered == 0
    finally:
        stop.set()
        await stack.close()
