"""Write flow control through the stack: `drain()` holds a writer back while the
peer does not acknowledge, with asyncio's high/low-water semantics; and one
connection's work is cut into bounded turns."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tcpstack.core.config import TcpConfig
from tcpstack.core.segment import Segment
from tcpstack.core.seq import seq_add, seq_diff
from tcpstack.shell.connection import TURN_SEGMENTS
from tcpstack.shell.stack import Stack
from tcpstack.wire import codec
from tests.helpers import VIP, Wire, echo, feed, packet
from tests.unit.tcpkit import ACK, PSH, SYN

BLOCK = 65536
TOTAL = 100 << 20
SND_BUF = 262144


class Writer:
    """A handler that writes TOTAL bytes in BLOCK pieces, draining after each."""

    def __init__(self) -> None:
        self.accepted = 0  # bytes written whose drain() has returned
        self.transport = None

    async def __call__(self, reader, writer) -> None:
        self.transport = writer.transport
        block = b"z" * BLOCK
        while self.accepted < TOTAL:
            writer.write(block)
            await writer.drain()
            self.accepted += BLOCK


class Peer:
    """The wire's end of one connection to port 80: it acknowledges only when told."""

    def __init__(self, stack: Stack, wire: Wire) -> None:
        self.stack, self.wire = stack, wire
        self.iss1 = 0
        self.sent = 0  # highest offset of our data seen on the wire

    async def open(self, handler) -> None:
        await self.stack.start_server(handler, 80)
        feed(self.stack, packet(SYN, 1000))
        [synack] = self.wire.segments()
        self.iss1 = seq_add(synack.seq, 1)
        feed(self.stack, packet(ACK, 1001, self.iss1))
        await settle()

    def seen(self) -> int:
        """Data bytes sent so far (the peer's window bounds them)."""
        for seg in self.wire.segments():
            self.sent = max(self.sent, seq_diff(seg.seq, self.iss1) + len(seg.payload))
        return self.sent

    async def ack(self, n: int) -> None:
        """Acknowledge the first `n` data bytes; acknowledge the rest that was sent
        before them first, window by window, as far as it takes."""
        for _ in range(100):
            if self.seen() >= n:
                break
            feed(self.stack, packet(ACK, 1001, seq_add(self.iss1, self.sent)))
            await settle()
        assert self.seen() >= n, "the stack stopped sending"
        feed(self.stack, packet(ACK, 1001, seq_add(self.iss1, n)))
        await settle()


async def settle() -> None:
    """Let every ready task run (a bounded number of loop turns, no wall-clock wait)."""
    for _ in range(200):
        await asyncio.sleep(0)


@pytest.fixture
async def peer() -> Peer:
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig(snd_buf=SND_BUF))
    yield Peer(stack, wire)
    await stack.close()


async def test_drain_holds_a_writer_back_while_nothing_is_acknowledged(peer) -> None:
    """Issue 8, finding 0: with a peer that acknowledges nothing, a writer draining
    after every block stops at the high-water mark (--snd-buf) plus one block."""
    handler = Writer()
    await peer.open(handler)
    [conn] = peer.stack.conns.values()
    assert handler.accepted <= SND_BUF + BLOCK
    assert handler.transport.get_write_buffer_limits() == (SND_BUF // 4, SND_BUF)
    # Everything written is counted, posted or in the TCB: none was acknowledged.
    size = handler.transport.get_write_buffer_size()
    assert size == handler.accepted + BLOCK > SND_BUF
    assert conn.tcb.send_queue + sum(len(i.data) for i in conn._writes) == size
    assert 0 < peer.seen() <= 65535  # within the peer's window (and cwnd)


async def test_drain_resumes_at_the_low_water_mark(peer) -> None:
    handler = Writer()
    await peer.open(handler)
    held = handler.accepted
    size = handler.transport.get_write_buffer_size()
    # Acknowledge window after window: the writer stays paused while the buffer
    # holds more than a quarter of --snd-buf, and resumes once it does not.
    while size - peer.seen() > SND_BUF // 4:
        await peer.ack(peer.seen())
        assert handler.transport.get_write_buffer_size() == size - peer.sent
        assert handler.accepted == held
    await peer.ack(peer.seen())
    assert handler.accepted > held  # resumed, and refilled to the high-water mark:
    assert SND_BUF < handler.transport.get_write_buffer_size() <= SND_BUF + BLOCK


async def test_set_write_buffer_limits_moves_the_marks(peer) -> None:
    steps: list[str] = []

    async def handler(reader, writer) -> None:
        writer.transport.set_write_buffer_limits(high=60_000)
        steps.append(f"limits {writer.transport.get_write_buffer_limits()}")
        writer.write(b"a" * 50_000)
        await writer.drain()  # below high: at once
        steps.append("below high")
        writer.write(b"b" * 50_000)
        await writer.drain()  # 100,000 > high: waits for low (15,000)
        steps.append("drained")

    await peer.open(handler)
    assert steps == ["limits (15000, 60000)", "below high"]
    await peer.ack(100_000 - 20_000)  # 20,000 left: above low
    assert steps[-1] == "below high"
    await peer.ack(100_000 - 15_000)  # at low: drain returns
    assert steps[-1] == "drained"


# -- fairness: bounded turns -------------------------------------------------------------

def syn_scaled(sport: int, dport: int) -> bytes:
    """A SYN offering window scaling (shift 7): the peer's window can reach 8 MiB."""
    return packet(SYN, 1000, sport=sport, dport=dport, wscale=7)


async def test_a_bulk_flow_takes_bounded_turns_and_an_echo_gets_through() -> None:
    """Issue 8, finding 9: a bulk sender with wide windows and a large congestion
    window sends at most a bounded number of segments per loop iteration, so an
    echo on another connection is answered after a few turns, not after the
    whole window."""
    wire = Wire()
    # No retransmission timeout however slow the machine: a timeout would shrink
    # the congestion window this test needs to be wide.
    stack = Stack(VIP, wire.output, TcpConfig(rto_initial=30.0, rto_min=30.0))
    try:
        await stack.start_server(Writer(), 80)
        await stack.start_server(echo, 7)
        feed(stack, packet(SYN, 1000, sport=40001, dport=7))
        [synack] = wire.segments()
        echo_iss1 = seq_add(synack.seq, 1)
        feed(stack, packet(ACK, 1001, echo_iss1, sport=40001, dport=7))
        feed(stack, syn_scaled(40000, 80))
        [synack] = wire.segments()
        iss1 = seq_add(synack.seq, 1)

        def ack(end: int) -> None:
            feed(stack, packet(ACK, 1001, seq_add(iss1, end)))

        def every_other(segments: list[Segment]) -> list[int]:
            """ACK points as a receiver sends them: every second segment, and the last."""
            ends = [seq_diff(s.seq, iss1) + len(s.payload) for s in segments
                    if s.dport == 40000 and s.payload]
            return ends[1::2] + ends[-1:] if len(ends) % 2 else ends[1::2]

        ack(0)
        sent = 0
        for _ in range(100):  # slow start: the congestion window grows each round
            await settle()
            points = every_other(wire.segments())
            sent = max(points, default=sent)
            for end in points:
                ack(end)
            if sent >= 4 << 20:
                break
        assert sent >= 4 << 20

        # One reader batch: the ACKs of everything in flight, and an echo request.
        marks: list[int] = []

        async def ticker() -> None:
            while True:
                marks.append(len(wire.sent))
                await asyncio.sleep(0)

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        for end in every_other(wire.segments()):
            ack(end)
        feed(stack, packet(ACK | PSH, 1001, echo_iss1, sport=40001, dport=7, payload=b"x"))
        await settle()
        tick.cancel()
        out = [codec.decode(p) for p in wire.sent]
        reply = next(i for i, s in enumerate(out) if s.dport == 40001 and s.payload == b"x")
        per_iteration = max(b - a for a, b in itertools.pairwise(marks))
        assert per_iteration <= 2 * TURN_SEGMENTS + 2
        assert reply <= 8 * TURN_SEGMENTS  # a few turns of the bulk flow, not its window
    finally:
        await stack.close()


# -- the stack-wide cap on buffered bytes (--mem-limit) ----------------------------------

async def test_memory_pressure_holds_writers_at_the_low_water_mark() -> None:
    """Above two thirds of --mem-limit a writer pauses at its low-water mark, not
    its high one: the buffers shrink toward a quarter of --snd-buf."""
    wire = Wire()
    limit = 3 * SND_BUF // 4  # pressure from 131,072 buffered bytes
    peer = Peer(Stack(VIP, wire.output, TcpConfig(snd_buf=SND_BUF, mem_limit=limit)), wire)
    try:
        handler = Writer()
        await peer.open(handler)
        size = handler.transport.get_write_buffer_size()
        assert 2 * limit // 3 < size <= 2 * limit // 3 + BLOCK < SND_BUF
        assert peer.stack.buffered == size
    finally:
        await peer.stack.close()
    assert peer.stack.buffered == 0  # every connection's charge is returned


async def test_under_pressure_windows_shrink_and_at_the_limit_data_is_dropped() -> None:
    """Received data nobody reads is charged too. Under pressure a connection
    offers windows from a quarter of its receive buffer; at --mem-limit new data
    is dropped and counted, while ACKs still pass."""
    wire = Wire()
    config = TcpConfig(snd_buf=SND_BUF, rcv_buf=60_000, mem_limit=140_000)
    peer = Peer(Stack(VIP, wire.output, config), wire)
    stack = peer.stack
    try:
        await peer.open(Writer())  # two blocks: 131,072 bytes; pressure from 93,334
        assert stack.buffered == 2 * BLOCK

        async def sink(reader, writer) -> None:
            await asyncio.Event().wait()  # never reads

        await stack.start_server(sink, 81)
        peer.seen()  # the writer's segments, off the wire
        feed(stack, packet(SYN, 1000, dport=81))
        [synack] = wire.segments()
        iss1 = seq_add(synack.seq, 1)
        feed(stack, packet(ACK, 1001, iss1, dport=81))
        feed(stack, packet(ACK | PSH, 1001, iss1, dport=81, payload=b"d" * 5000))
        await settle()
        ack = await wire.wait_for(lambda s: s.sport == 81 and s.ack == 6001)  # delayed
        assert ack.window == 60_000 // 4 - 5000  # not 55,000
        feed(stack, packet(ACK | PSH, 6001, iss1, dport=81, payload=b"d" * 10_000))
        await settle()
        assert stack.buffered == 2 * BLOCK + 15_000 >= config.mem_limit
        feed(stack, packet(ACK | PSH, 16001, iss1, dport=81, payload=b"d" * 100))
        await settle()
        assert stack.stats["MemoryDrops"] == 1 and stack.buffered == 2 * BLOCK + 15_000
        [bulk] = [c for c in stack.conns.values() if c.key[0] == 80]
        await peer.ack(BLOCK)  # ACKs still get through
        assert bulk.tcb.snd_una == seq_add(peer.iss1, BLOCK)
    finally:
        await stack.close()
