"""The stack: TUN reader, demultiplexing, listeners, reset generator, ICMP echo.

`Stack` owns the connection table and the one timer wheel. Packets come in
through `run_reader()` (every ready packet on each wake-up) or
`handle_packet()`, are decoded at the edge by `tcpstack.codec`, and go to the
connection that owns their 4-tuple, to a listener, or to the reset generator.
Outgoing packets leave through the `output` callable (the TUN fd's write).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address

from tcpstack import codec
from tcpstack.codec import IcmpEcho, Malformed
from tcpstack.config import TcpConfig
from tcpstack.connection import Connection, TimerFired
from tcpstack.events import StateChanged
from tcpstack.isn import IsnGenerator
from tcpstack.listener import Handler, Listener, Server
from tcpstack.looptimer import EarliestTimer
from tcpstack.resets import reset_for
from tcpstack.segment import Flags, Segment
from tcpstack.stream import StreamReader, StreamWriter
from tcpstack.tcb import Tcb
from tcpstack.timerwheel import TimerWheel

log = logging.getLogger("tcpstack.stack")
trace = logging.getLogger("tcpstack.trace")

EPHEMERAL_PORTS = range(32768, 61000)  # Linux's net.ipv4.ip_local_port_range
READ_BATCH = 512  # packets per wake-up before other tasks get a turn
READ_SIZE = 65536

ConnKey = tuple[int, bytes, int]  # (local port, remote address, remote port)


class Stack:
    """A TCP/IPv4 endpoint owning one address (the VIP)."""

    def __init__(
        self,
        addr: str,
        output: Callable[[bytes], object],
        config: TcpConfig | None = None,
    ) -> None:
        self.addr = IPv4Address(addr).packed
        self.output = output
        #: Where `run_reader` hands each packet read from the TUN: normally
        #: `handle_packet`; `tcpstack.impair` interposes its impairment here.
        self.receive: Callable[[bytes, float], None] = self.handle_packet
        self.config = config or TcpConfig()
        self.stats: Counter[str] = Counter()
        #: Bytes all connections buffer, send and receive (Connection._account).
        self.buffered = 0
        self.conns: dict[ConnKey, Connection] = {}
        self.listeners: dict[int, Listener] = {}
        self.isn = IsnGenerator()
        self._loop = asyncio.get_running_loop()
        self.wheel: TimerWheel[Connection] = TimerWheel(now=self._loop.time())
        self._wheel_timer = EarliestTimer(self._loop, self._on_wheel)

    # -- receiving -------------------------------------------------------------

    async def run_reader(self, fd: int) -> None:
        """The TUN reader coroutine: wake when the fd is readable, then read
        every packet that is ready (up to READ_BATCH) before sleeping again."""
        readable = asyncio.Event()
        self._loop.add_reader(fd, readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                now = self._loop.time()
                for _ in range(READ_BATCH):
                    try:
                        packet = os.read(fd, READ_SIZE)
                    except BlockingIOError:
                        break
                    self.receive(packet, now)
                else:
                    await asyncio.sleep(0)  # more is waiting: let the connections run
        finally:
            self._loop.remove_reader(fd)

    def handle_packet(self, packet: bytes, now: float) -> None:
        """Decode one IPv4 packet and hand it on; bad ones are counted and dropped."""
        try:
            item = codec.decode(packet)
        except Malformed as e:
            self.stats[f"Drop.{e.reason}"] += 1
            if e.reason is codec.DropReason.TCP_CHECKSUM:
                self.stats["InErrs"] += 1
                self.stats["InCsumErrors"] += 1
            return
        if item.dst != self.addr:
            self.stats[f"Drop.{codec.DropReason.NOT_FOR_US}"] += 1
            return
        if isinstance(item, IcmpEcho):
            self.stats["IcmpInEchos"] += 1
            self.stats["IcmpOutEchoReps"] += 1
            self._send(codec.encode_echo_reply(item))
            return
        self.stats["InSegs"] += 1
        conn = self.conns.get((item.dport, item.src, item.sport))
        if conn is not None:
            if not conn.tcb.reopened_by(item):
                conn.post(item)
                return
            # TIME-WAIT ends silently; the SYN goes to the listener.
            conn.abort_now("new SYN beyond RCV.NXT ends TIME-WAIT")
        listener = self.listeners.get(item.dport)
        if listener is not None:
            self._listen_receive(listener, item, now)
        else:
            self._refuse(item)

    def _listen_receive(self, listener: Listener, seg: Segment, now: float) -> None:
        """RFC 9293 3.10.7.2, LISTEN: ignore RST, reset an ACK, accept a SYN."""
        flags = seg.flags
        if flags & Flags.RST:
            return
        if flags & Flags.ACK:
            self._refuse(seg)
            return
        if not flags & Flags.SYN or flags & Flags.FIN:
            return  # nothing else is meaningful here; SYN+FIN is dropped, as by Linux
        if not listener.admits_syn():
            return
        iss = self.isn.isn(self.addr, seg.dport, seg.src, seg.sport, now)
        tcb = Tcb.open_passive(self.config, seg, iss, now, self.stats)
        conn = Connection(self, tcb, listener)
        self.conns[conn.key] = conn
        listener.half_open.add(conn)
        conn.flush()

    def _refuse(self, seg: Segment) -> None:
        """The reset generator for segments no connection or listener takes."""
        rst = reset_for(seg)
        if rst is not None:
            self.transmit([rst])

    # -- sending ---------------------------------------------------------------

    def transmit(self, segments: list[Segment]) -> None:
        stats = self.stats
        for seg in segments:
            stats["OutSegs"] += 1
            if seg.flags & Flags.RST:
                stats["OutRsts"] += 1
            self._send(codec.encode(seg))

    def _send(self, packet: bytes) -> None:
        """A full device queue drops the packet, as a NIC would; TCP retransmits."""
        try:
            self.output(packet)
        except BlockingIOError:
            self.stats["OutDrops"] += 1

    # -- timers ----------------------------------------------------------------

    def reschedule(self, conn: Connection, deadline: float | None) -> None:
        """Keep one wheel entry per connection at (or before) its next deadline.

        A deadline that moves later keeps the earlier entry: it fires, the TCB
        finds nothing due and the entry moves then. That saves a cancel and a
        schedule on nearly every ACK, which pushes the RTO deadline forward.
        """
        if deadline is None:
            if conn.timer is not None:
                self.wheel.cancel(conn.timer)
                conn.timer = None
            return
        if conn.timer is not None:
            if conn.timer_deadline <= deadline:
                return
            self.wheel.cancel(conn.timer)
        conn.timer = self.wheel.schedule(deadline, conn)
        conn.timer_deadline = deadline
        self._arm_wheel()

    def _arm_wheel(self) -> None:
        """One loop timer for the wheel's earliest deadline; none when idle."""
        self._wheel_timer.arm(self.wheel.next_deadline())

    def _on_wheel(self, now: float) -> None:
        for conn in self.wheel.expire(now):
            conn.timer = None
            conn.post(TimerFired(now))
        self._arm_wheel()

    # -- connection table ----------------------------------------------------

    def forget(self, conn: Connection) -> None:
        """The TCB is gone: free its table entry, timer and listener slot."""
        if self.conns.get(conn.key) is conn:
            del self.conns[conn.key]
        self.reschedule(conn, None)
        if conn.listener is not None:
            conn.listener.forget(conn)

    def on_state_change(self, conn: Connection, event: StateChanged) -> None:
        """The trace (`--trace`): one INFO line per transition of the `tcpstack.trace`
        logger, which is off unless its level lets INFO through."""
        if trace.isEnabledFor(logging.INFO):
            trace.info("trace %s %s %s -> %s: %s", conn.local, conn.remote,
                       event.old, event.new, event.cause)

    # -- application API -----------------------------------------------------

    async def start_server(
        self, handler: Handler, port: int, *, backlog: int | None = None
    ) -> Server:
        """Listen on `port`; `handler(reader, writer)` runs for each connection,
        as with asyncio.start_server."""
        if not 0 < port < 65536:
            raise ValueError(f"port out of range: {port}")
        if port in self.listeners:
            raise OSError(98, f"port {port} is already in use")
        listener = Listener(self, port, handler, backlog or self.config.backlog)
        self.listeners[port] = listener
        return Server(self, listener)

    def stop_listening(self, listener: Listener) -> None:
        if self.listeners.get(listener.port) is listener:
            del self.listeners[listener.port]
        listener.close()

    async def open_connection(self, host: str, port: int) -> tuple[StreamReader, StreamWriter]:
        """Active open from the VIP, as asyncio.open_connection; raises
        ConnectionRefusedError on RST and TimeoutError when the SYNs go unanswered."""
        remote = IPv4Address(host).packed
        if not 0 < port < 65536:
            raise ValueError(f"port out of range: {port}")
        lport = self._ephemeral_port(remote, port)
        now = self._loop.time()
        iss = self.isn.isn(self.addr, lport, remote, port, now)
        tcb = Tcb.open_active(self.config, (self.addr, lport), (remote, port), iss, now,
                              self.stats)
        conn = Connection(self, tcb)
        self.conns[conn.key] = conn
        conn.flush()
        try:
            await asyncio.shield(conn.established)
        except asyncio.CancelledError:
            conn.abort()
            raise
        return conn.reader, conn.writer

    def _ephemeral_port(self, remote: bytes, rport: int) -> int:
        start = random.randrange(len(EPHEMERAL_PORTS))
        for i in range(len(EPHEMERAL_PORTS)):
            port = EPHEMERAL_PORTS[(start + i) % len(EPHEMERAL_PORTS)]
            if (port, remote, rport) not in self.conns and port not in self.listeners:
                return port
        raise OSError(99, "no free local port")

    async def close(self) -> None:
        """Shut down: stop listening, reset every connection, stop every task."""
        for listener in list(self.listeners.values()):
            self.stop_listening(listener)
        conns = list(self.conns.values())
        for conn in conns:
            conn.abort_now("aborted: the stack is shutting down")
        for conn in conns:
            conn.task.cancel()
        await asyncio.gather(*(c.task for c in conns), return_exceptions=True)
        self._wheel_timer.cancel()
