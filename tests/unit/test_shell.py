"""The asyncio shell's hops (issue 9, items 3-5): how many loop iterations lie
between a segment read from the TUN and the echo reply leaving, and what a
half-open connection holds. A real asyncio loop in-process; the "TUN" is a
datagram socket pair read by `Stack.run_reader`, the writer a fake (`Wire`).
Loop iterations are counted by a task that steps once per iteration."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import AsyncIterator

import pytest

from tcpstack.core.segment import FIN, RST
from tcpstack.core.tcb import Tcb
from tcpstack.shell.connection import Connection
from tcpstack.shell.stack import Stack
from tcpstack.shell.stream import StreamReader, StreamWriter
from tests.unit.test_stack import ACK, PEER, PSH, SYN, VIP, Wire, echo, feed, packet

KEY = (7, PEER, 40000)


class Iterations:
    """A task that counts the loop's iterations: it runs once in each (sleep(0)
    schedules its next step for the next iteration)."""

    def __init__(self) -> None:
        self.count = 0
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)

    def stop(self) -> None:
        self._task.cancel()


class Tun:
    """A TUN stand-in: packets written to one end of a datagram socket pair are
    read by the stack's reader from the other, one packet per read."""

    def __init__(self, stack: Stack) -> None:
        self._ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        theirs.setblocking(False)
        self._theirs = theirs
        self.reader = asyncio.create_task(stack.run_reader(theirs.fileno()))

    def send(self, pkt: bytes) -> None:
        self._ours.send(pkt)

    async def close(self) -> None:
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)
        self._ours.close()
        self._theirs.close()


@pytest.fixture
async def lab() -> AsyncIterator[tuple[Stack, Wire, Tun, Iterations]]:
    wire = Wire()
    stack = Stack(VIP, wire.output)
    tun = Tun(stack)
    ticks = Iterations()
    yield stack, wire, tun, ticks
    ticks.stop()
    await tun.close()
    await stack.close()


async def established(stack: Stack, wire: Wire, tun: Tun) -> int:
    """A passive open on port 7 through the TUN; returns our ISS + 1."""
    tun.send(packet(SYN, 1000, dport=7))
    synack = await wire.wait_for(lambda s: bool(s.flags & SYN))
    tun.send(packet(ACK, 1001, synack.seq + 1, dport=7))
    await asyncio.wait_for(stack.conns[KEY].established, 2)
    return synack.seq + 1


async def test_echo_reply_leaves_in_the_iteration_after_the_request_is_read(lab) -> None:
    """The reader applies the segment in the iteration it reads it (no hop to a
    connection task), the application's task runs in the next one (the reader's
    future), and its write is sent at once (no hop back). The old shell took
    four iterations: reader task, connection task, application, connection task."""
    stack, wire, tun, ticks = lab
    await stack.start_server(echo, 7)
    iss1 = await established(stack, wire, tun)
    read_at: list[int] = []
    receive = stack.receive

    def read(pkt: bytes, now: float) -> None:
        read_at.append(ticks.count)
        receive(pkt, now)

    stack.receive = read
    sent_at: list[int] = []
    output = wire.output

    def sent(pkt: bytes) -> None:
        sent_at.append(ticks.count)
        output(pkt)

    stack.output = sent
    for i, byte in enumerate(b"ping"):  # four round trips, each on its own
        tun.send(packet(ACK | PSH, 1001 + i, iss1 + i, dport=7, payload=bytes([byte])))
        reply = await wire.wait_for(lambda s: bool(s.payload))
        assert (reply.payload, reply.ack) == (bytes([byte]), 1002 + i)
        assert len(sent_at) == 1, "one segment out: the reply carries the ACK"
        assert sent_at[0] - read_at[0] == 1
        sent_at.clear()
        read_at.clear()


async def test_a_write_is_sent_before_write_returns(lab) -> None:
    """An application's write, outside a turn, is applied to the TCB and sent
    in its own call: no inbox, no wake-up of another task."""
    stack, wire, tun, _ = lab
    seen: list[int] = []

    async def greet(reader, writer) -> None:
        before = len(wire.sent)
        writer.write(b"hello")
        seen.append(len(wire.sent) - before)
        await reader.read(1)

    await stack.start_server(greet, 7)
    await established(stack, wire, tun)
    await asyncio.wait_for(_until(lambda: seen), 2)
    assert seen == [1]
    assert [s.payload for s in wire.segments()][-1] == b"hello"


async def test_a_half_open_connection_has_no_task_and_no_streams() -> None:
    """Issue 9, item 4: until ESTABLISHED a connection is its TCB and a small
    record driven by the wheel; the streams and the application's task come
    with the handshake's last ACK."""
    wire = Wire()
    stack = Stack(VIP, wire.output)
    try:
        await stack.start_server(echo, 7)
        tasks = asyncio.all_tasks()
        feed(stack, packet(SYN, 1000, dport=7))
        [synack] = wire.segments()
        conn = stack.conns[KEY]
        for _ in range(5):
            await asyncio.sleep(0)
        assert asyncio.all_tasks() == tasks
        assert (conn.reader, conn.receiver) == (None, None)
        assert stack.wheel and conn.timer is not None  # the SYN+ACK's retransmission
        feed(stack, packet(ACK, 1001, synack.seq + 1, dport=7))
        await asyncio.wait_for(conn.established, 2)
        assert conn.reader is not None and conn.receiver is conn.reader
        await asyncio.wait_for(_until(lambda: [
            t for t in asyncio.all_tasks() - tasks
            if t.get_coro().__qualname__ == "Listener._serve"]), 2)
    finally:
        await stack.close()


async def test_an_application_abort_resets_without_an_internal_error(caplog) -> None:
    """`writer.abort()` is an input like a write (after those queued before it):
    the RST leaves, and nothing is logged or counted as a failure of the stack
    (it once went through the inbox as a bare method and ended in the turn's
    error handler: InternalErrors, a traceback in the log)."""
    wire = Wire()
    stack = Stack(VIP, wire.output)

    async def abort(reader: object, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()

    try:
        await stack.start_server(abort, 7)
        feed(stack, packet(SYN, 1000, dport=7))
        [synack] = wire.segments()
        feed(stack, packet(ACK, 1001, synack.seq + 1, dport=7))
        await asyncio.wait_for(_until(lambda: KEY not in stack.conns), 2)
        [rst] = wire.segments()
        assert rst.flags & RST and rst.seq == synack.seq + 1
        assert stack.stats["InternalErrors"] == 0 and stack.stats["OutRsts"] == 1
        assert not [r for r in caplog.records if r.levelname == "ERROR"]
    finally:
        await stack.close()


async def test_a_closed_connection_is_freed_without_the_garbage_collector() -> None:
    """The connection and its streams refer to each other only while the TCB
    lives (`Connection.streams`, `Connection._release`): once the handler has
    returned and the last ACK has come, reference counting frees them all, with
    the cyclic collector off; a reference cycle would leave them behind."""
    wire = Wire()
    stack = Stack(VIP, wire.output)
    gc.collect()
    gc.disable()
    try:
        await stack.start_server(echo, 7)
        for port in range(40000, 40005):
            feed(stack, packet(SYN, 1000, dport=7, sport=port))
            [synack] = wire.segments()
            y = synack.seq
            feed(stack, packet(ACK | PSH, 1001, y + 1, dport=7, sport=port, payload=b"hi"))
            feed(stack, packet(ACK | FIN, 1003, y + 1, dport=7, sport=port))
            fin = await wire.wait_for(lambda s: bool(s.flags & FIN))
            feed(stack, packet(ACK, 1004, fin.seq + 1, dport=7, sport=port))
            await asyncio.wait_for(_until(lambda: not stack.conns), 2)
        await asyncio.wait_for(_until(lambda: not stack.listeners[7]._handlers), 2)
        left = [type(o).__name__ for o in gc.get_objects()
                if isinstance(o, (Connection, StreamReader, StreamWriter, Tcb))]
        assert left == []
        assert stack.stats["PassiveOpens"] == 5
    finally:
        gc.enable()
        await stack.close()


async def _until(pred) -> None:
    while not pred():
        await asyncio.sleep(0)



async def test_a_failure_in_the_reader_ends_run_reader_with_its_error(lab) -> None:
    """Reading happens in the loop's fd callback, but a failure still ends
    `run_reader` with its error, as a failed reader task did (the daemon exits
    with it), instead of the callback failing again on every iteration."""
    stack, _, tun, _ = lab

    def broken(pkt: bytes, now: float) -> None:
        raise OSError("the device went away")

    stack.receive = broken
    tun.send(packet(SYN, 1000, dport=7))
    with pytest.raises(OSError, match="went away"):
        await asyncio.wait_for(asyncio.shield(tun.reader), 2)
