"""The stack's dispatcher, listeners and application API, with packets captured
in memory instead of a TUN (the integration tests use a real one)."""

from __future__ import annotations

import asyncio
import socket
import struct
from ipaddress import IPv4Address

import pytest

from tcpstack.core.config import TcpConfig
from tcpstack.core.segment import ACK, FIN, PSH, RST, SYN, Segment
from tcpstack.shell.stack import Stack
from tcpstack.wire import codec
from tests.helpers import PEER, VIP, VIP_B, Wire, echo, feed, packet, until


@pytest.fixture
async def rig() -> tuple[Stack, Wire]:
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig(backlog=2))
    yield stack, wire
    await stack.close()


async def test_syn_to_closed_port_gets_rst_ack(rig) -> None:
    stack, wire = rig
    feed(stack, packet(SYN, 1000, dport=81))
    [rst] = wire.segments()
    assert (rst.flags, rst.seq, rst.ack) == (RST | ACK, 0, 1001)
    assert stack.stats["OutRsts"] == 1


async def test_ack_to_closed_port_gets_rst_with_seq_of_ack(rig) -> None:
    stack, wire = rig
    feed(stack, packet(ACK, 1000, 777, dport=81))
    [rst] = wire.segments()
    assert (rst.flags, rst.seq) == (RST, 777)


async def test_rst_to_closed_port_gets_nothing(rig) -> None:
    stack, wire = rig
    feed(stack, packet(RST, 1000, dport=81))
    assert wire.segments() == []


async def test_listener_answers_ack_with_rst(rig) -> None:
    stack, wire = rig
    await stack.start_server(echo, 80)
    feed(stack, packet(ACK, 1000, 4242))
    [rst] = wire.segments()
    assert (rst.flags, rst.seq) == (RST, 4242)


async def test_listener_drops_syn_fin(rig) -> None:
    stack, wire = rig
    await stack.start_server(echo, 80)
    feed(stack, packet(SYN | FIN, 1000))
    assert wire.segments() == []
    assert not stack.conns


# -- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda p: p[:10], "truncated"),
        (lambda p: b"\x60" + p[1:], "not_ipv4"),
        (lambda p: p[:24] + bytes([p[24] ^ 0xFF]) + p[25:], "tcp_checksum"),
        (lambda p: p[:8] + b"\x01" + p[9:], "ip_checksum"),
    ],
)
async def test_bad_packets_are_counted_and_dropped(rig, mangle, reason) -> None:
    stack, wire = rig
    await stack.start_server(echo, 80)
    feed(stack, mangle(packet(SYN, 1000)))
    assert wire.segments() == []
    assert stack.stats[f"Drop.{reason}"] == 1
    feed(stack, packet(SYN, 1000))  # the stack still works
    assert [s.flags for s in wire.segments()] == [SYN | ACK]


async def test_packet_for_another_address_is_dropped(rig) -> None:
    stack, wire = rig
    other = codec.encode(Segment(PEER, IPv4Address("10.0.0.3").packed, 1, 80, 0, 0, SYN, 100))
    feed(stack, other)
    assert wire.segments() == []
    assert stack.stats["Drop.not_for_us"] == 1


async def test_icmp_echo_is_answered(rig) -> None:
    stack, wire = rig
    body = struct.pack(">BBHHH", 8, 0, 0, 7, 1) + b"ping"
    csum = codec.dpkt.in_cksum(body)
    body = body[:2] + struct.pack(">H", csum) + body[4:]
    ip = codec.dpkt.ip.IP(src=PEER, dst=VIP_B, p=1, ttl=64, data=body)
    feed(stack, bytes(ip))
    [raw] = wire.sent
    reply = codec.dpkt.ip.IP(raw)
    echo_reply = reply.data.data
    assert (reply.src, reply.dst, reply.data.type) == (VIP_B, PEER, 0)
    assert (echo_reply.id, echo_reply.seq, echo_reply.data) == (7, 1, b"ping")


# -- passive open through the stack ------------------------------------------------------

async def test_handshake_then_echo_then_close(rig) -> None:
    stack, wire = rig
    await stack.start_server(echo, 80)
    feed(stack, packet(SYN, 1000))
    [synack] = wire.segments()
    y = synack.seq
    assert (synack.flags, synack.ack, synack.options.mss) == (SYN | ACK, 1001, 1460)
    feed(stack, packet(ACK | PSH, 1001, y + 1, payload=b"hello"))
    data = await wire.wait_for(lambda s: s.payload == b"hello")
    assert (data.seq, data.ack) == (y + 1, 1006)
    feed(stack, packet(ACK | FIN, 1006, y + 6))
    fin = await wire.wait_for(lambda s: bool(s.flags & FIN))
    assert (fin.seq, fin.ack) == (y + 6, 1007)
    feed(stack, packet(ACK, 1007, y + 7))
    await until(lambda: not stack.conns)
    assert stack.stats["PassiveOpens"] == 1


@pytest.fixture
async def cookieless() -> tuple[Stack, Wire]:
    """A stack without SYN cookies (--syncookies off), backlog 2."""
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig(backlog=2, syncookies="off"))
    yield stack, wire
    await stack.close()


async def test_backlog_full_drops_syn_silently(cookieless) -> None:
    stack, wire = cookieless  # backlog=2, no SYN cookies
    await stack.start_server(echo, 80)
    for port in (40001, 40002, 40003):
        feed(stack, packet(SYN, 1000, sport=port))
    assert [s.dport for s in wire.segments()] == [40001, 40002]
    assert stack.stats["BacklogDrops"] == 1
    feed(stack, packet(RST, 1001, sport=40001))  # the seed's stale SYN is refused...
    await until(lambda: len(stack.conns) == 1)
    feed(stack, packet(SYN, 1000, sport=40003))  # ...which frees a slot
    assert [s.dport for s in wire.segments()] == [40003]


async def test_handler_exception_resets_connection(rig) -> None:
    stack, wire = rig

    async def broken(reader, writer) -> None:
        raise RuntimeError("app bug")

    await stack.start_server(broken, 80)
    feed(stack, packet(SYN, 1000))
    y = wire.segments()[0].seq
    feed(stack, packet(ACK, 1001, y + 1))
    rst = await wire.wait_for(lambda s: bool(s.flags & RST))
    assert rst.seq == y + 1


async def test_port_in_use(rig) -> None:
    stack, _ = rig
    await stack.start_server(echo, 80)
    with pytest.raises(OSError):
        await stack.start_server(echo, 80)


# -- active open (RFC 9293 3.10.7.3) -----------------------------------------------------

async def test_open_connection_established_and_data(rig) -> None:
    stack, wire = rig
    task = asyncio.create_task(stack.open_connection("10.0.0.1", 8080))
    syn = await wire.wait_for(lambda s: bool(s.flags & SYN))
    x = syn.seq
    feed(stack, packet(SYN | ACK, 5000, x + 1, sport=8080, dport=syn.sport))
    _reader, writer = await asyncio.wait_for(task, 2)
    ack = await wire.wait_for(lambda s: s.flags == ACK)
    assert (ack.seq, ack.ack) == (x + 1, 5001)
    assert writer.get_extra_info("peername") == ("10.0.0.1", 8080)
    writer.write(b"GET")
    data = await wire.wait_for(lambda s: bool(s.payload))
    assert (data.seq, data.payload) == (x + 1, b"GET")


async def test_open_connection_refused(rig) -> None:
    stack, wire = rig
    task = asyncio.create_task(stack.open_connection("10.0.0.1", 8080))
    syn = await wire.wait_for(lambda s: bool(s.flags & SYN))
    feed(stack, packet(RST | ACK, 0, syn.seq + 1, sport=8080, dport=syn.sport))
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(task, 2)
    assert not stack.conns


async def test_open_connection_bad_synack_ack_is_reset(rig) -> None:
    stack, wire = rig
    task = asyncio.create_task(stack.open_connection("10.0.0.1", 8080))
    syn = await wire.wait_for(lambda s: bool(s.flags & SYN))
    feed(stack, packet(SYN | ACK, 5000, syn.seq + 99, sport=8080, dport=syn.sport))
    rst = await wire.wait_for(lambda s: bool(s.flags & RST))
    assert (rst.flags, rst.seq) == (RST, syn.seq + 99)
    task.cancel()


async def test_open_connection_times_out() -> None:
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig(syn_retries=1, rto_initial=0.02))
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(stack.open_connection("10.0.0.1", 8080), 2)
        syns = [s for s in wire.segments() if s.flags & SYN]
        assert len(syns) == 2 and syns[0].seq == syns[1].seq
        assert stack.stats["SynRetrans"] == 1
    finally:
        await stack.close()


async def connected(stack: Stack, wire: Wire) -> tuple[Segment, object]:
    """An active open to 10.0.0.1:8080 that the wire answers: (our SYN, the writer)."""
    task = asyncio.create_task(stack.open_connection("10.0.0.1", 8080))
    syn = await wire.wait_for(lambda s: bool(s.flags & SYN))
    feed(stack, packet(SYN | ACK, 5000, syn.seq + 1, sport=8080, dport=syn.sport))
    _reader, writer = await asyncio.wait_for(task, 2)
    return syn, writer


async def test_new_syn_reopens_time_wait(rig) -> None:
    """RFC 1122 4.2.2.13: a SYN beyond RCV.NXT ends TIME-WAIT and starts a new handshake."""
    stack, wire = rig

    async def close_first(reader, writer) -> None:
        writer.close()

    await stack.start_server(close_first, 80)
    feed(stack, packet(SYN, 1000))
    y = wire.segments()[0].seq
    feed(stack, packet(ACK, 1001, y + 1))
    await wire.wait_for(lambda s: bool(s.flags & FIN))
    feed(stack, packet(ACK | FIN, 1001, y + 2))
    await wire.wait_for(lambda s: s.ack == 1002)
    key = (80, PEER, 40000)
    await until(lambda: key in stack.time_wait)
    assert not stack.conns  # the record replaced the connection
    feed(stack, packet(SYN, 900_000))
    synack = await wire.wait_for(lambda s: bool(s.flags & SYN))
    assert synack.ack == 900_001
    assert key in stack.conns and key not in stack.time_wait


async def test_segment_after_handshake_timeout_gets_normal_reset() -> None:
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig(synack_retries=0, rto_initial=0.02))
    try:
        await stack.start_server(echo, 80)
        feed(stack, packet(SYN, 1000))
        y = wire.segments()[0].seq
        rst = await wire.wait_for(lambda s: bool(s.flags & RST))
        assert (rst.flags, rst.seq) == (RST, y + 1)
        assert stack.stats["HandshakeTimeouts"] == 1
        await until(lambda: not stack.conns)
        feed(stack, packet(ACK, 1001, y + 1))  # the lost third segment, too late
        [reset] = wire.segments()
        assert (reset.flags, reset.seq) == (RST, y + 1)
    finally:
        await stack.close()


async def test_nodelay_socket_option(rig) -> None:
    stack, wire = rig
    _syn, writer = await connected(stack, wire)
    sock = writer.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # Nagle on, as Linux
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assert writer.get_extra_info("tcb").nodelay
    with pytest.raises(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)


async def test_close_with_unread_data_resets(rig) -> None:
    """RFC 1122 4.2.2.13 (and Linux): closing with received data unread sends RST."""
    stack, wire = rig

    async def rude(reader, writer) -> None:
        writer.close()

    await stack.start_server(rude, 80)
    feed(stack, packet(SYN, 1000))
    y = wire.segments()[0].seq
    feed(stack, packet(ACK | PSH, 1001, y + 1, payload=b"abcd"))
    rst = await wire.wait_for(lambda s: bool(s.flags & (RST | FIN)))
    assert (rst.flags, rst.seq, rst.ack) == (RST | ACK, y + 1, 1005)


async def test_keepalive_socket_options(rig) -> None:
    stack, wire = rig
    syn, writer = await connected(stack, wire)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    probe = await wire.wait_for(lambda s: s.flags == ACK and not s.payload
                                and s.seq == syn.seq, timeout=3)  # SND.NXT - 1
    assert probe.ack == 5001
    with pytest.raises(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 0)


async def test_challenge_acks_share_one_stack_wide_budget() -> None:
    """RFC 5961 7: the stack passes one limiter to every TCB. With a budget of one per
    second, three connections' first challenge ACKs (each allowed by its own 500 ms
    interval) cannot all go out (two could, across a second boundary)."""
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig(challenge_ack_limit=1))
    try:
        await stack.start_server(echo, 80)
        ports = (40001, 40002, 40003)
        for port in ports:
            feed(stack, packet(SYN, 1000, sport=port))
        for port in ports:
            feed(stack, packet(RST, 1100, sport=port))  # in the window, not at RCV.NXT
        stats = stack.stats
        await until(
            lambda: stats["ChallengeAcks"] + stats["ChallengeAcksSuppressed"] == 3)
        assert stats["ChallengeAcksSuppressed"] >= 1
    finally:
        await stack.close()


async def test_cookie_ack_to_a_half_open_of_a_retransmitted_syn_opens(rig) -> None:
    """A SYN answered with a cookie, its retransmission queued once a slot was free:
    the peer's ACK returns the cookie, not the queued SYN+ACK's ISS. Linux
    (tcp_check_req hands such an ACK to the listener's cookie check) opens the
    connection; resetting it at SEG.ACK would kill the peer's established one."""
    stack, wire = rig  # backlog=2, SYN cookies when it is full
    await stack.start_server(echo, 80)
    for port in (40001, 40002, 40003):
        feed(stack, packet(SYN, 1000, sport=port))
    cookie = next(s for s in wire.segments() if s.dport == 40003).seq
    feed(stack, packet(RST, 1001, sport=40001))  # a slot comes free...
    await until(lambda: len(stack.conns) == 1)
    feed(stack, packet(SYN, 1000, sport=40003))  # ...for the SYN's retransmission
    queued = next(s for s in wire.segments() if s.dport == 40003)
    assert queued.flags == SYN | ACK and queued.seq != cookie
    feed(stack, packet(ACK | PSH, 1001, cookie + 1, sport=40003, payload=b"hi"))
    seen: list[Segment] = []
    echoed = await wire.wait_for(lambda s: seen.append(s) or bool(s.payload))
    assert (echoed.dport, echoed.seq, echoed.payload) == (40003, cookie + 1, b"hi")
    # The half-open one's reset is outside the peer's window; none at the cookie's.
    assert not [s for s in seen if s.flags & RST and s.seq == cookie + 1]
    assert stack.stats["SyncookiesRecv"] == 1
