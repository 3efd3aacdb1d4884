"""asyncio Transport/Protocol on the stack (tcpstack/shell/transport.py), with packets
captured in memory: the protocol callbacks in asyncio's order, eof_received's
return value deciding the half-close, reading paused closing the receive
window, and pause_writing/resume_writing at the write buffer's marks."""

from __future__ import annotations

import asyncio

import pytest

from tcpstack.core.config import TcpConfig
from tcpstack.shell.stack import Stack
from tcpstack.shell.transport import Transport, serve_protocol
from tests.helpers import VIP, Wire, feed, packet, until
from tests.unit.test_flow import Peer, settle
from tests.unit.test_stack import ACK, FIN, PSH, RST, SYN


class Recorder(asyncio.Protocol):
    """Records every callback; answers eof_received with `keep_open`."""

    def __init__(self, keep_open: bool = False) -> None:
        self.keep_open = keep_open
        self.events: list[tuple] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.events.append(("made", transport.get_extra_info("peername")))

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", data))

    def eof_received(self) -> bool:
        self.events.append(("eof",))
        return self.keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", type(exc) if exc else None))

    def pause_writing(self) -> None:
        self.events.append(("pause_writing",))

    def resume_writing(self) -> None:
        self.events.append(("resume_writing",))

    def data(self) -> bytes:
        return b"".join(e[1] for e in self.events if e[0] == "data")


@pytest.fixture
async def rig() -> tuple[Stack, Wire]:
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig(rcv_buf=4096, mtu=1040))
    yield stack, wire
    await stack.close()


async def accept(stack: Stack, wire: Wire, protocol: Recorder, payload: bytes = b"") -> int:
    """A passive open on port 80 handed to `protocol`; the third segment carries
    `payload`. Returns our ISS + 1."""
    await stack.create_server(lambda: protocol, 80)
    feed(stack, packet(SYN, 1000, mss=1000))
    y = wire.segments()[0].seq + 1
    feed(stack, packet(ACK | PSH, 1001, y, payload=payload))
    await until(lambda: protocol.transport is not None)
    return y


async def test_callbacks_in_order_and_eof_closes_like_asyncio(rig) -> None:
    """Data that came with the handshake's ACK is delivered after connection_made;
    eof_received returning None closes: FIN, then connection_lost(None) once
    our FIN is acknowledged."""
    stack, wire = rig
    proto = Recorder()
    y = await accept(stack, wire, proto, b"early")
    feed(stack, packet(ACK | PSH | FIN, 1006, y, payload=b" late"))
    fin = await wire.wait_for(lambda s: bool(s.flags & FIN))
    assert (fin.seq, fin.ack) == (y, 1012)
    assert proto.events == [("made", ("10.0.0.1", 40000)), ("data", b"early"),
                            ("data", b" late"), ("eof",)]
    feed(stack, packet(ACK, 1012, y + 1))
    await until(lambda: proto.events[-1] == ("lost", None))


async def test_data_received_gets_bytes_even_from_a_view(rig) -> None:
    """A protocol gets `bytes`, as from asyncio's transports (it may call
    .decode() on them), whatever form a payload took through the stack."""
    stack, wire = rig
    proto = Recorder()
    await accept(stack, wire, proto)
    assert isinstance(proto.transport, Transport)
    proto.transport.feed_data(memoryview(b"viewed"))
    assert proto.events[-1] == ("data", b"viewed") and type(proto.events[-1][1]) is bytes


async def test_eof_received_true_keeps_the_half_open_connection(rig) -> None:
    """RFC 9293 3.6: after the peer's FIN we may still send; asyncio's rule is
    that eof_received returning True leaves the closing to the protocol."""
    stack, wire = rig
    proto = Recorder(keep_open=True)
    y = await accept(stack, wire, proto)
    feed(stack, packet(ACK | FIN, 1001, y))
    await until(lambda: ("eof",) in proto.events)
    await settle()
    assert not any(s.flags & FIN for s in wire.segments())
    proto.transport.write(b"reply")
    proto.transport.close()
    sent: list = []
    fin = await wire.wait_for(lambda s: sent.append(s) or bool(s.flags & FIN))
    assert b"".join(s.payload for s in sent) == b"reply"
    assert fin.seq + len(fin.payload) == y + 5
    feed(stack, packet(ACK, 1002, y + 6))
    await until(lambda: proto.events[-1] == ("lost", None))


async def test_pause_reading_closes_the_window_and_resume_delivers(rig) -> None:
    """Held data is not consumed, so the offered window shrinks to zero
    (--rcv-buf 4096); resume_reading delivers it and a window update follows."""
    stack, wire = rig
    proto = Recorder()
    y = await accept(stack, wire, proto)
    proto.transport.pause_reading()
    assert not proto.transport.is_reading()
    for i in range(4):
        feed(stack, packet(ACK | PSH, 1001 + 1000 * i, y, payload=bytes([65 + i]) * 1000))
        await settle()
    acks = [s for s in wire.segments() if s.flags & ACK]
    assert acks[-1].ack == 5001 and acks[-1].window < 1000
    assert proto.data() == b""
    proto.transport.resume_reading()
    update = await wire.wait_for(lambda s: s.window >= 2000)
    assert update.ack == 5001
    assert proto.data() == b"A" * 1000 + b"B" * 1000 + b"C" * 1000 + b"D" * 1000


async def test_eof_waits_behind_paused_data(rig) -> None:
    stack, wire = rig
    proto = Recorder(keep_open=True)
    y = await accept(stack, wire, proto)
    proto.transport.pause_reading()
    feed(stack, packet(ACK | PSH | FIN, 1001, y, payload=b"last"))
    await settle()
    assert [e[0] for e in proto.events] == ["made"]
    proto.transport.resume_reading()
    await settle()
    assert proto.events[1:] == [("data", b"last"), ("eof",)]


async def test_pause_writing_above_high_resume_at_low() -> None:
    """asyncio's write flow control: pause_writing once the unacknowledged
    bytes exceed the high mark, resume_writing when acknowledged down to low."""
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig())
    try:
        peer = Peer(stack, wire)
        proto = Recorder()
        await peer.open(serve_protocol(lambda: proto))
        transport = proto.transport
        transport.set_write_buffer_limits(high=8000, low=2000)
        assert transport.get_write_buffer_limits() == (2000, 8000)
        transport.write(b"x" * 5000)
        assert ("pause_writing",) not in proto.events
        transport.write(b"x" * 5000)
        assert proto.events[-1] == ("pause_writing",)
        assert transport.get_write_buffer_size() == 10000
        await peer.ack(7000)  # 3000 left: above low
        assert proto.events[-1] == ("pause_writing",)
        await peer.ack(8000)
        await settle()
        assert proto.events[-1] == ("resume_writing",)
    finally:
        await stack.close()


async def test_peer_reset_gives_connection_lost_with_the_error(rig) -> None:
    stack, wire = rig
    proto = Recorder()
    y = await accept(stack, wire, proto)
    feed(stack, packet(RST, 1001, y))
    await until(lambda: proto.events[-1][0] == "lost")
    assert proto.events[-1] == ("lost", ConnectionResetError)
    assert proto.transport.is_closing()


async def test_failing_callback_resets_the_connection(rig) -> None:
    stack, wire = rig
    errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))

    class Broken(Recorder):
        def data_received(self, data: bytes) -> None:
            raise RuntimeError("app bug")

    proto = Broken()
    y = await accept(stack, wire, proto, b"boom")
    rst = await wire.wait_for(lambda s: bool(s.flags & RST))
    assert rst.seq == y
    await until(lambda: proto.events[-1] == ("lost", None))
    assert isinstance(errors[0]["exception"], RuntimeError)


async def test_close_with_held_data_resets(rig) -> None:
    """RFC 1122 4.2.2.13, as for streams: data received and never delivered."""
    stack, wire = rig
    proto = Recorder()
    y = await accept(stack, wire, proto)
    proto.transport.pause_reading()
    feed(stack, packet(ACK | PSH, 1001, y, payload=b"unread"))
    await settle()
    proto.transport.close()
    rst = await wire.wait_for(lambda s: bool(s.flags & RST))
    assert (rst.seq, rst.ack) == (y, 1007)


async def test_server_wait_closed_waits_for_the_connections(rig) -> None:
    stack, wire = rig
    proto = Recorder()
    await accept(stack, wire, proto)
    server = next(iter(stack.listeners.values()))
    waiter = asyncio.ensure_future(server.wait_closed())
    stack.stop_listening(server)
    await settle()
    assert not waiter.done()
    proto.transport.abort()
    await asyncio.wait_for(waiter, 2)
    assert proto.events[-1] == ("lost", None)


async def test_create_connection(rig) -> None:
    stack, wire = rig
    proto = Recorder()
    task = asyncio.create_task(stack.create_connection(lambda: proto, "10.0.0.1", 8080))
    syn = await wire.wait_for(lambda s: bool(s.flags & SYN))
    feed(stack, packet(SYN | ACK, 5000, syn.seq + 1, sport=8080, dport=syn.sport))
    transport, protocol = await asyncio.wait_for(task, 2)
    assert protocol is proto and proto.events == [("made", ("10.0.0.1", 8080))]
    assert transport.get_extra_info("sockname")[0] == VIP
    transport.writelines([b"GET ", b"/"])
    data = await wire.wait_for(lambda s: bool(s.payload))
    assert data.payload == b"GET /"
    feed(stack, packet(ACK | PSH, 5001, syn.seq + 6, sport=8080, dport=syn.sport,
                       payload=b"200"))
    await until(lambda: proto.data() == b"200")
    transport.write_eof()
    fin = await wire.wait_for(lambda s: bool(s.flags & FIN))
    assert fin.seq == syn.seq + 6
    with pytest.raises(RuntimeError):
        transport.write(b"more")


async def test_buffered_protocol_reads_into_its_own_buffer(rig) -> None:
    """asyncio.BufferedProtocol: get_buffer/buffer_updated instead of data_received,
    as many rounds as the buffer it offers needs."""
    stack, wire = rig

    class Small(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buf = bytearray(3)
            self.got = bytearray()
            self.transport = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buf

        def buffer_updated(self, nbytes: int) -> None:
            self.got += self.buf[:nbytes]

    proto = Small()
    await accept(stack, wire, proto, b"buffered!")  # type: ignore[arg-type]
    await until(lambda: proto.got == b"buffered!")
