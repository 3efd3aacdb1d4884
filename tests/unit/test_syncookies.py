"""SYN cookies (RFC 4987 3.6): the cookie itself, the TCB it opens, and the
listener that answers with one when its half-open set is full."""

from __future__ import annotations

import asyncio
import errno
import random
from collections import Counter

import pytest

from tcpstack.core.config import TcpConfig
from tcpstack.core.events import DataReceived, Established
from tcpstack.core.segment import Options, Segment
from tcpstack.core.states import State
from tcpstack.core.syncookies import MAX_AGE, MSS_TABLE, SynCookies
from tcpstack.core.tcb import Tcb
from tcpstack.shell.stack import Stack
from tcpstack.wire import codec
from tests.helpers import VIP, Wire, echo, feed, packet, until
from tests.unit.tcpkit import ACK, PSH, RST, SYN, X, add, events, seg
from tests.unit.test_cli_args import run, settings

NOW = 1000.0
SECRET = bytes(32)
TSVAL = 777_000  # the peer's timestamp clock


def ts_syn(*, wscale: int | None = 7, sack: bool = True, mss: int = 1460) -> Segment:
    """A Linux-like SYN: MSS, window scale, SACK-permitted, timestamps."""
    syn = seg(SYN, X, mss=mss, wscale=wscale, sack_permitted=sack)
    syn.options.timestamp = (TSVAL, 0)
    return syn


def returning_ack(synack: Segment, *, payload: bytes = b"", flags=ACK) -> Segment:
    """The peer's third segment for `synack`, echoing its TSval if it had one."""
    ack = seg(flags, add(X, 1), add(synack.seq, 1), payload=payload)
    if synack.options.timestamp is not None:
        ack.options.timestamp = (TSVAL + 1, synack.options.timestamp[0])
    return ack


# -- the cookie ----------------------------------------------------------------------------

@pytest.mark.parametrize("mss", MSS_TABLE)
def test_round_trip_of_every_mss_table_entry(mss) -> None:
    cookies = SynCookies(TcpConfig(), SECRET)
    synack = cookies.synack(seg(SYN, X, mss=mss), NOW)
    syn = cookies.check(returning_ack(synack), NOW)
    assert (syn.seq, syn.flags, syn.options.mss) == (X, SYN, mss)


@pytest.mark.parametrize(("offered", "kept"), [(1459, 1440), (None, 536), (9000, 8960), (20, 64)])
def test_mss_rounds_down_to_a_table_entry(offered, kept) -> None:
    cookies = SynCookies(TcpConfig(), SECRET)
    synack = cookies.synack(seg(SYN, X, mss=offered), NOW)
    assert cookies.check(returning_ack(synack), NOW).options.mss == kept


def test_synack_without_timestamps_offers_only_the_mss() -> None:
    """No TSval to carry them: window scaling and SACK are not offered (as Linux)."""
    synack = SynCookies(TcpConfig(), SECRET).synack(
        seg(SYN, X, mss=1460, wscale=7, sack_permitted=True), NOW)
    assert (synack.flags, synack.ack, synack.window) == (SYN | ACK, X + 1, 65535)
    assert synack.options == Options(mss=1460)


@pytest.mark.parametrize(("wscale", "sack"), [(7, True), (0, False), (14, True), (None, True),
                                              (None, False)])
def test_wscale_and_sack_survive_in_the_timestamp(wscale, sack) -> None:
    cookies = SynCookies(TcpConfig(), SECRET)
    synack = cookies.synack(ts_syn(wscale=wscale, sack=sack), NOW)
    assert synack.options.sack_permitted is sack
    assert synack.options.wscale == (None if wscale is None else 4)  # ours, for 1 MiB
    assert synack.options.timestamp[1] == TSVAL
    syn = cookies.check(returning_ack(synack), NOW)
    assert (syn.options.wscale, syn.options.sack_permitted) == (wscale, sack)
    assert syn.options.timestamp == (TSVAL + 1, 0)


def test_cookie_tsval_is_never_ahead_of_the_connection_clock() -> None:
    """The TCB's TSval is 1 ms ticks + ISS: the peer must never see it go back."""
    cookies = SynCookies(TcpConfig(), SECRET)
    for i in range(64):
        now = NOW + i / 1000
        synack = cookies.synack(ts_syn(), now)
        clock = (int(now * 1000) + synack.seq) & 0xFFFFFFFF
        assert 0 <= (clock - synack.options.timestamp[0]) & 0xFFFFFFFF < 64


def test_cookie_expires_after_max_age_ticks() -> None:
    cookies = SynCookies(TcpConfig(), SECRET)
    synack = cookies.synack(seg(SYN, X, mss=1460), 0.0)
    ack = returning_ack(synack)
    assert cookies.check(ack, 60.0 * MAX_AGE - 0.5) is not None
    assert cookies.check(ack, 60.0 * MAX_AGE) is None
    assert cookies.check(ack, -60.0) is None  # from the future


def test_wrong_secret_is_refused() -> None:
    synack = SynCookies(TcpConfig(), SECRET).synack(seg(SYN, X, mss=1460), NOW)
    assert SynCookies(TcpConfig(), b"\x01" * 32).check(returning_ack(synack), NOW) is None


def test_tampered_ack_is_refused() -> None:
    cookies = SynCookies(TcpConfig(), SECRET)
    synack = cookies.synack(ts_syn(), NOW)
    other_port = returning_ack(synack)
    other_port.sport += 1
    other_ack = returning_ack(synack)
    other_ack.ack = add(other_ack.ack, 1 << 12)
    ecn = returning_ack(synack)
    ecn.options.timestamp = (TSVAL, synack.options.timestamp[0] | 0x20)
    assert [cookies.check(a, NOW) for a in (other_port, other_ack, ecn)] == [None] * 3
    no_sack = SynCookies(TcpConfig(sack=False), SECRET)
    assert no_sack.check(returning_ack(synack), NOW) is None  # SACK bit we never set


@pytest.mark.parametrize("shift", [1, 2, 1000])
def test_later_ack_of_the_same_connection_is_refused(shift) -> None:
    """Once the cookie's connection has exchanged FINs (SEG.SEQ and SEG.ACK both
    moved on by one), an ACK that arrives after the connection ended (the
    peer's TIME-WAIT answering our retransmitted FIN) must not open a second,
    ghost connection that the peer never knows of: a cookie whose check was
    shift-invariant in (SEG.SEQ, SEG.ACK) accepted it."""
    cookies = SynCookies(TcpConfig(), SECRET)
    later = returning_ack(cookies.synack(ts_syn(), NOW))
    later.seq, later.ack = add(later.seq, shift), add(later.ack, shift)
    assert cookies.check(later, NOW) is None


def test_blind_guesses_are_refused() -> None:
    cookies = SynCookies(TcpConfig(), SECRET)
    rng = random.Random(4987)
    guesses = (seg(ACK, rng.getrandbits(32), rng.getrandbits(32)) for _ in range(20_000))
    assert not any(cookies.check(g, NOW) for g in guesses)


# -- the TCB it opens ----------------------------------------------------------------------

def test_open_from_cookie_is_established_with_the_negotiated_options() -> None:
    config, stats = TcpConfig(), Counter()
    cookies = SynCookies(config, SECRET)
    synack = cookies.synack(ts_syn(), NOW)
    ack = returning_ack(synack)
    tcb = Tcb.open_from_cookie(config, cookies.check(ack, NOW), ack, NOW, stats)
    assert tcb.state is State.ESTABLISHED and tcb.passive
    assert (tcb.iss, tcb.snd_una, tcb.snd_max) == (synack.seq, ack.ack, ack.ack)
    assert (tcb.irs, tcb.rcv_nxt) == (X, X + 1)
    assert (tcb.snd_wscale, tcb.rcv_wscale, tcb.sack_ok, tcb.ts_ok) == (7, 4, True, True)
    assert tcb.send_mss == 1460 - 12
    assert tcb.snd_wnd == 65535 << 7
    assert tcb.ts_recent == TSVAL + 1
    assert events(tcb) == [Established()]
    assert tcb.take_segments() == []
    assert stats["PassiveOpens"] == 1


def test_open_from_cookie_without_timestamps_has_no_scaling_or_sack() -> None:
    config = TcpConfig()
    cookies = SynCookies(config, SECRET)
    ack = returning_ack(cookies.synack(seg(SYN, X, mss=1300, wscale=7, sack_permitted=True),
                                       NOW))
    tcb = Tcb.open_from_cookie(config, cookies.check(ack, NOW), ack, NOW, Counter())
    assert (tcb.snd_wscale, tcb.rcv_wscale, tcb.sack_ok, tcb.ts_ok) == (0, 0, False, False)
    assert tcb.send_mss == 1300


def test_open_from_cookie_delivers_data_on_the_ack() -> None:
    config = TcpConfig(delayed_ack=0)
    cookies = SynCookies(config, SECRET)
    synack = cookies.synack(ts_syn(), NOW)
    ack = returning_ack(synack, payload=b"hello", flags=ACK | PSH)
    tcb = Tcb.open_from_cookie(config, cookies.check(ack, NOW), ack, NOW, Counter())
    assert events(tcb) == [Established(), DataReceived(b"hello")]
    [reply] = tcb.take_segments()
    assert (reply.flags, reply.seq, reply.ack) == (ACK, add(synack.seq, 1), X + 6)


# -- the listener --------------------------------------------------------------------------

def syn_packet(sport: int) -> bytes:
    return codec.encode(Segment(ts_syn().src, ts_syn().dst, sport, 80, X, 0, SYN, 65535,
                                Options(mss=1460, wscale=7, sack_permitted=True,
                                        timestamp=(TSVAL, 0))))


def ack_packet(synack: Segment, payload: bytes = b"") -> bytes:
    ack = returning_ack(synack, payload=payload, flags=ACK | PSH if payload else ACK)
    ack.sport = synack.dport
    return codec.encode(ack)


@pytest.fixture
async def small() -> tuple[Stack, Wire]:
    """Backlog 2, cookies on (the default)."""
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig(backlog=2))
    await stack.start_server(echo, 80)
    yield stack, wire
    await stack.close()


async def test_full_half_open_set_answers_with_a_cookie_and_keeps_nothing(small) -> None:
    stack, wire = small
    tasks = len(asyncio.all_tasks())
    for port in (40001, 40002, 40003):
        feed(stack, syn_packet(port))
    synacks = wire.segments()
    assert [(s.dport, s.flags) for s in synacks] == [(p, SYN | ACK) for p in
                                                    (40001, 40002, 40003)]
    assert len(stack.conns) == 2 and len(stack.listeners[80].half_open) == 2
    assert len(asyncio.all_tasks()) == tasks  # the cookie keeps nothing, a half-open no task
    assert stack.cookies.check(codec.decode(ack_packet(synacks[2])),
                               asyncio.get_running_loop().time()) is not None
    assert (stack.stats["SyncookiesSent"], stack.stats["BacklogDrops"]) == (1, 0)


async def test_valid_cookie_ack_opens_an_established_connection(small) -> None:
    stack, wire = small
    for port in (40001, 40002, 40003):
        feed(stack, syn_packet(port))
    cookie_synack = wire.segments()[2]
    feed(stack, ack_packet(cookie_synack, b"hello"))
    conn = stack.conns[(80, cookie_synack.dst, 40003)]
    assert conn.tcb.state is State.ESTABLISHED
    assert (conn.tcb.snd_wscale, conn.tcb.sack_ok, conn.tcb.ts_ok) == (7, True, True)
    echoed = await wire.wait_for(lambda s: s.payload == b"hello")
    assert (echoed.dport, echoed.seq, echoed.ack) == (40003, add(cookie_synack.seq, 1), X + 6)
    assert stack.stats["SyncookiesRecv"] == 1


async def test_invalid_cookie_ack_is_reset(small) -> None:
    stack, wire = small
    for port in (40001, 40002, 40003):
        feed(stack, syn_packet(port))
    cookie_synack = wire.segments()[2]
    cookie_synack.seq = add(cookie_synack.seq, 1 << 12)
    feed(stack, ack_packet(cookie_synack))
    [rst] = wire.segments()
    assert (rst.flags, rst.seq, rst.dport) == (RST, add(cookie_synack.seq, 1), 40003)
    assert (stack.stats["SyncookiesFailed"], stack.stats["SyncookiesRecv"]) == (1, 0)
    assert len(stack.conns) == 2


async def test_ack_is_not_checked_when_no_cookie_was_sent(small) -> None:
    stack, wire = small
    feed(stack, packet(ACK, 1000, 4242))
    assert [s.flags for s in wire.segments()] == [RST]
    assert stack.stats["SyncookiesFailed"] == 0


async def test_always_mode_answers_every_syn_with_a_cookie() -> None:
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig(syncookies="always"))
    try:
        await stack.start_server(echo, 80)
        feed(stack, syn_packet(40001))
        [synack] = wire.segments()
        assert not stack.conns and stack.stats["SyncookiesSent"] == 1
        feed(stack, ack_packet(synack, b"ping"))
        assert (await wire.wait_for(lambda s: bool(s.payload))).payload == b"ping"
    finally:
        await stack.close()


async def test_off_mode_drops_at_the_connection_cap() -> None:
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig(syncookies="off", max_conns=1))
    try:
        await stack.start_server(echo, 80)
        feed(stack, syn_packet(40001))
        feed(stack, syn_packet(40002))
        assert [s.dport for s in wire.segments()] == [40001]
        assert stack.stats["ConnLimitDrops"] == 1
        with pytest.raises(OSError) as raised:
            await stack.open_connection("10.0.0.1", 8080)
        assert raised.value.errno == errno.ENFILE and "--max-conns 1" in str(raised.value)
    finally:
        await stack.close()


async def test_cookie_at_the_connection_cap_waits_for_a_free_slot() -> None:
    """Beyond --max-conns a SYN gets a cookie; its ACK is dropped (no RST) while
    the table is full, and opens the connection once a slot is free."""
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig(max_conns=1))
    try:
        await stack.start_server(echo, 80)
        feed(stack, syn_packet(40001))
        feed(stack, syn_packet(40002))
        first, cookie = wire.segments()
        feed(stack, ack_packet(cookie))
        assert wire.segments() == [] and stack.stats["ConnLimitDrops"] == 1
        feed(stack, codec.encode(Segment(first.dst, first.src, 40001, 80, X + 1, 0, RST, 0)))
        await until(lambda: not stack.conns)
        feed(stack, ack_packet(cookie, b"again"))
        assert (await wire.wait_for(lambda s: bool(s.payload))).payload == b"again"
    finally:
        await stack.close()


# -- the command line ----------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "needle"), [
    (["serve", "--backlog", "0"], "--backlog: 0 is outside 1..65535"),
    (["serve", "--syncookies", "maybe"], "invalid choice: 'maybe'"),
    (["serve", "--max-conns", "0"], "--max-conns: 0 is below 1"),
    (["serve", "--txqueuelen", "0"], "--txqueuelen: 0 is outside"),
    (["connect", "10.0.0.1", "80", "--backlog", "5"], "unrecognized arguments"),
])
def test_bad_limits_are_one_line_and_exit_2(argv, needle, capsys) -> None:
    rc, lines = run(argv, capsys)
    assert rc == 2 and len(lines) == 1 and needle in lines[0], lines


def test_limits_reach_the_config_and_the_device() -> None:
    s = settings(["serve", "--backlog", "1", "--syncookies", "always", "--max-conns", "10",
                  "--txqueuelen", "999"])
    c = s.daemon.config
    assert (c.backlog, c.syncookies, c.max_conns, s.daemon.txqueuelen) == (1, "always", 10, 999)
    d = settings(["serve"])
    assert (d.daemon.config.backlog, d.daemon.config.syncookies, d.daemon.config.max_conns,
            d.daemon.txqueuelen) == (4096, "on", 65536, 65536)
