"""The stack: TUN reader, demultiplexing, listeners, reset generator, ICMP echo.

`Stack` owns the connection table and the one timer wheel. Packets come in
through `run_reader()` (every ready packet on each wake-up) or
`handle_packet()`, are decoded at the edge by `tcpstack.wire.codec`, and go to the
connection that owns their 4-tuple, to a listener, or to the reset generator.
Outgoing packets leave through the `output` callable (the TUN fd's write).
Taps (impairment, capture) go between the two with `tap()`, in the order
`tcpstack.shell.pipeline` states.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Final

from tcpstack.core.config import TcpConfig
from tcpstack.core.events import StateChanged
from tcpstack.core.isn import IsnGenerator
from tcpstack.core.ratelimit import ChallengeAckLimiter
from tcpstack.core.resets import reset_for
from tcpstack.core.segment import ACK, FIN, RST, SYN, Segment
from tcpstack.core.seq import seq_add
from tcpstack.core.states import State
from tcpstack.core.syncookies import SynCookies
from tcpstack.core.tcb import Tcb
from tcpstack.core.timerwheel import TimerWheel
from tcpstack.core.timewait import Fate, TimeWait
from tcpstack.shell.connection import Connection, LowerMtu, TimerFired
from tcpstack.shell.listener import Handler, Listener, Server, SynVerdict
from tcpstack.shell.looptimer import EarliestTimer
from tcpstack.shell.pipeline import Pipeline, Receive, Send, Tap
from tcpstack.shell.stream import StreamReader, StreamWriter
from tcpstack.shell.synfast import SynFastPath
from tcpstack.shell.transport import ProtocolFactory, Transport, serve_protocol
from tcpstack.wire import codec, icmp, vnet
from tcpstack.wire.codec import IcmpEcho, Malformed
from tcpstack.wire.fragments import Fragmenter, Reassembler

log = logging.getLogger("tcpstack.shell.stack")
trace = logging.getLogger("tcpstack.trace")

EPHEMERAL_PORTS: Final = range(32768, 61000)  # Linux's net.ipv4.ip_local_port_range
READ_BATCH: Final = 512  # packets per wake-up before the applications and timers get a turn
READ_SIZE: Final = 65536 + vnet.HEADER_LEN  # the largest IPv4 packet and a virtio-net header

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
        self._write = output  # the outbound path's end
        self.pipeline = Pipeline()
        #: The heads of the two packet paths, composed by `tap()`: where
        #: `_send` puts each packet (the TUN's write with no tap) and where
        #: `run_reader` hands each packet read (`handle_packet` with no tap).
        self.output: Send = output
        self.receive: Receive = self.handle_packet
        self.config = config or TcpConfig()
        #: Packets in and out carry a virtio-net header (`tcpstack.wire.vnet`).
        self.vnet = self.config.offload
        self.stats: Counter[str] = Counter()
        #: Bytes all connections buffer, send and receive (Connection._account).
        self.buffered = 0
        self.conns: dict[ConnKey, Connection] = {}
        #: 4-tuples in TIME-WAIT, as small records (tcpstack.core.timewait), at most
        #: `config.max_tw_buckets` of them.
        self.time_wait: dict[ConnKey, TimeWait] = {}
        self.listeners: dict[int, Listener] = {}
        self.isn = IsnGenerator()
        self.cookies = SynCookies(self.config)
        #: Answers flood SYNs from their bytes when a listener gives only cookies.
        self.syn_fast = SynFastPath(self)
        #: Where a packet read holds the TCP flags byte if it has no IP options.
        self._syn_flags_at = (vnet.HEADER_LEN if self.vnet else 0) + 33
        #: Counters of the device under the stack for `tcpstack stats` (the daemon
        #: sets it to the TUN's drop counters); none in memory.
        self.device_stats: Callable[[], dict[str, int]] = dict
        #: RFC 5961 7: one budget of challenge ACKs per second for every TCB.
        self.challenge_acks = ChallengeAckLimiter(self.config.challenge_ack_limit)
        self._loop = asyncio.get_running_loop()
        #: Connections with a turn to run (Connection.post): at the end of the
        #: reader's wake-up or the wheel's firing, else soon (`queue_turn`).
        self._turns: list[Connection] = []
        self._turns_soon = False  # a call_soon of _run_turns is pending
        self._batching = False  # in a reader batch or wheel firing, whose end runs the turns
        self.wheel: TimerWheel[Connection | TimeWait] = TimerWheel(now=self._loop.time())
        self._wheel_timer = EarliestTimer(self._loop, self._on_wheel)
        #: IPv4 reassembly and fragmentation (tcpstack.wire.fragments, docs/ip.md).
        self.reassembler = Reassembler(self.stats, timeout=self.config.reasm_timeout,
                                       mem_limit=self.config.reasm_mem)
        self._reassembly_timer = EarliestTimer(self._loop, self._expire_fragments)
        self.fragmenter = Fragmenter(self.config.mtu, self.stats)

    def tap(self, position: str, tap: Tap) -> None:
        """Put `tap` on the packet paths at `position` (`tcpstack.shell.pipeline`) and
        compose both heads again; at set-up, before packets flow."""
        self.pipeline.put(position, tap)
        self.receive = self.pipeline.receive(self.handle_packet)
        self.output = self.pipeline.output(self._write)

    # -- receiving -------------------------------------------------------------

    async def run_reader(self, fd: int) -> None:
        """The TUN reader: whenever the fd is readable, read every packet that is
        ready (up to READ_BATCH), run the connections' turns for what they got,
        and return to the loop. It reads in the loop's fd callback itself, not in
        a task the callback wakes: that would cost a loop iteration per wake-up.
        The fd stays readable while packets wait, so the loop calls again in its
        next iteration, after the applications and timers (level-triggered).
        Returns only by cancellation; a failed read (or a bug in handling what
        was read) stops reading and is raised here, as from a reader task."""
        failed: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_reader(fd, self._read_batch, fd, failed)
        try:
            await failed
        finally:
            self._loop.remove_reader(fd)

    def _read_batch(self, fd: int, failed: asyncio.Future[None]) -> None:
        now = self._loop.time()
        self._batching = True
        try:
            for _ in range(READ_BATCH):
                try:
                    packet = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    break
                self.receive(packet, now)
        except Exception as e:  # the fd stays readable: calling again would spin
            self._loop.remove_reader(fd)
            if not failed.done():
                failed.set_exception(e)
        finally:
            self._batching = False
            self._run_turns()  # what this batch brought, in this loop iteration

    def handle_packet(self, packet: bytes, now: float) -> None:
        """Decode one IPv4 packet and hand it on; bad ones are counted and dropped.
        InReceives counts packets (Linux's Ip InReceives); InSegs counts TCP
        segments, a GRO super-segment as the segments it was made of."""
        # Only a pure SYN in a packet without IP options can take the fast path: its
        # flags byte says so here, which spares every other packet the call.
        at = self._syn_flags_at
        if (len(packet) > at and packet[at] == SYN
                and self.syn_fast.answer(packet, now)):
            return  # a SYN answered with a cookie (or dropped) from its bytes alone
        self.stats["InReceives"] += 1
        gso_size = 0
        try:
            if self.vnet:
                header, packet = vnet.parse(packet)
                gso_size = header.tcp_gso_size
                item = codec.decode(packet, verify_checksum=not header.checksum_trusted)
            else:
                item = codec.decode(packet)
        except Malformed as e:
            undecoded = self._undecoded(packet, e, now)
            if undecoded is None:
                return
            item = undecoded
        if item.dst != self.addr:
            self.stats[f"Drop.{codec.DropReason.NOT_FOR_US}"] += 1
            return
        if isinstance(item, IcmpEcho):
            self.stats["IcmpInEchos"] += 1
            self.stats["IcmpOutEchoReps"] += 1
            for reply in self.fragmenter.split(codec.encode_echo_reply(item)):
                self.send_packet(vnet.PLAIN + reply if self.vnet else reply)
            return
        if gso_size:
            item.gso_size = gso_size
            self.stats["InSuperSegs"] += 1
        self.stats["InSegs"] += item.wire_segments
        key = (item.dport, item.src, item.sport)
        conn = self.conns.get(key)
        if conn is not None:
            if conn.listener is None or not self._cookie_supersedes(conn, item, now):
                conn.post(item)
            return
        tw = self.time_wait.get(key)
        if tw is not None:
            self._time_wait_receive(tw, item, now)
            return
        listener = self.listeners.get(item.dport)
        if listener is not None:
            self._listen_receive(listener, item, now)
        else:
            self._refuse(item)

    def _undecoded(self, packet: bytes, error: Malformed,
                   now: float) -> Segment | IcmpEcho | None:
        """A packet the codec would not decode: a fragment goes to reassembly (and
        the datagram it completes is decoded as if it had come whole), an ICMP
        error to `tcpstack.wire.icmp`; anything else is counted and dropped."""
        reason = error.reason
        if reason in (codec.DropReason.FRAGMENT, codec.DropReason.ICMP_TYPE):
            if packet[16:20] != self.addr:
                reason = codec.DropReason.NOT_FOR_US  # no memory for others' datagrams
            elif reason is codec.DropReason.FRAGMENT:
                whole = self.reassembler.receive(packet, now)
                self._reassembly_timer.arm(self.reassembler.next_deadline())
                if whole is None:
                    return None
                try:
                    return codec.decode(whole)
                except Malformed as e:
                    return self._undecoded(whole, e, now)
            elif icmp.receive_error(packet, self._tcb_of, self.stats, self._frag_needed):
                return None
        self.stats[f"Drop.{reason}"] += 1
        if reason is codec.DropReason.TCP_CHECKSUM:
            self.stats["InErrs"] += 1
            self.stats["InCsumErrors"] += 1
        return None

    def _tcb_of(self, key: ConnKey) -> Tcb | None:
        conn = self.conns.get(key)
        return None if conn is None else conn.tcb

    def _frag_needed(self, key: ConnKey, mtu: int) -> None:
        """A checked "fragmentation needed": the connection's next turn lowers its MSS."""
        self.conns[key].post(LowerMtu(mtu))

    def _listen_receive(self, listener: Listener, seg: Segment, now: float,
                        iss: int | None = None) -> SynVerdict | None:
        """RFC 9293 3.10.7.2, LISTEN: ignore RST, reset an ACK, accept a SYN;
        `iss` is given for a SYN that reopens TIME-WAIT. Returns what became of
        a SYN (None for other segments).

        An ACK may return a SYN cookie (RFC 4987 3.6): a valid one opens the
        connection straight into ESTABLISHED and the accept queue."""
        flags = seg.flags
        if flags & RST:
            return None
        if flags & ACK:
            syn = None if flags & SYN else listener.cookie_syn(seg, now)
            if syn is None:
                self._refuse(seg)
            else:
                self._open_from_cookie(listener, syn, seg, now)
            return None
        if not flags & SYN or flags & FIN:
            return None  # nothing else is meaningful here; SYN+FIN is dropped, as by Linux
        verdict = listener.on_syn(now)
        if verdict is SynVerdict.COOKIE:
            self.transmit([self.cookies.synack(seg, now)])  # no state kept
        if verdict is not SynVerdict.QUEUE:
            return verdict
        iss = self.isn.isn(self.addr, seg.dport, seg.src, seg.sport, now) if iss is None else iss
        tcb = Tcb.open_passive(self.config, seg, iss, now, self.stats,
                               challenge_limiter=self.challenge_acks)
        conn = Connection(self, tcb, listener)
        listener.half_open.add(conn)
        self._add_conn(conn)
        return verdict

    def _open_from_cookie(self, listener: Listener, syn: Segment, ack: Segment,
                          now: float) -> None:
        """A valid cookie came back in `ack`: the connection opens in ESTABLISHED."""
        if listener.admits_cookie():
            tcb = Tcb.open_from_cookie(self.config, syn, ack, now, self.stats,
                                       challenge_limiter=self.challenge_acks)
            self._add_conn(Connection(self, tcb, listener))

    def _cookie_supersedes(self, conn: Connection, seg: Segment, now: float) -> bool:
        """Whether `seg`, for a half-open connection of a listener, returns a SYN
        cookie instead: then the cookie's connection replaces the half-open one.

        A SYN answered with a cookie while the half-open set was full, and its
        retransmission queued once a slot was free (a burst: the client's SYN
        timer fires before the stack reads the first copy), leave the peer
        ESTABLISHED on the cookie while we wait in SYN-RECEIVED on another ISS.
        The TCB would answer the peer's ACK with <SEQ=SEG.ACK><CTL=RST>
        (3.10.7.4), which resets the peer's connection. Linux (tcp_check_req)
        hands an ACK that does not acknowledge the request's SYN+ACK to the
        listener, whose cookie check opens the connection. Only such ACKs are
        checked, so the common path costs one set lookup."""
        listener = conn.listener
        if (listener is None or conn not in listener.half_open
                or seg.flags & (SYN | RST | ACK) != ACK
                or seg.ack == seq_add(conn.tcb.iss, 1)):
            return False
        syn = listener.cookie_syn(seg, now)
        if syn is None:
            return False
        # Its SYN+ACK went to a peer that took the cookie's: the reset this sends
        # (SEQ = the half-open ISS + 1) is outside the peer's window, dropped there.
        conn.abort_now("superseded by the connection of a returned SYN cookie")
        self.forget(conn)
        self._open_from_cookie(listener, syn, seg, now)
        return True

    def _add_conn(self, conn: Connection) -> None:
        """Enter a new connection in the table and send what its TCB produced."""
        self.conns[conn.key] = conn
        conn.flush()

    def _refuse(self, seg: Segment) -> None:
        """The reset generator for segments no connection or listener takes."""
        rst = reset_for(seg)
        if rst is not None:
            self.transmit([rst])

    # -- turns -----------------------------------------------------------------

    def queue_turn(self, conn: Connection) -> None:
        """`conn` has input to apply: its turn runs at the end of the reader's
        batch or the wheel's firing that queued it, or else (a packet handed in
        from elsewhere, a turn that left work) in the next loop iteration."""
        self._turns.append(conn)
        if not self._batching and not self._turns_soon:
            self._turns_soon = True
            self._loop.call_soon(self._run_turns)

    def _run_turns(self) -> None:
        """One turn for each connection queued now; those with work left queue
        another, for the next iteration (the fairness quantum)."""
        self._turns_soon = False
        turns, self._turns = self._turns, []
        for conn in turns:
            conn.run_queued_turn()

    # -- sending ---------------------------------------------------------------

    def transmit(self, segments: list[Segment]) -> None:
        stats = self.stats
        for seg in segments:
            stats["OutSegs"] += seg.wire_segments
            if seg.flags & RST:
                stats["OutRsts"] += 1
            if not self.vnet:
                self.send_packet(codec.encode(seg))
                continue
            # Checksum offload for every segment, segmentation for super-segments.
            if seg.gso_size:
                stats["OutSuperSegs"] += 1
            packet = codec.encode(seg, partial_checksum=True)
            self.send_packet(vnet.tcp_frame(packet, seg.gso_size))

    def send_packet(self, packet: bytes) -> None:
        """Put one encoded packet (a frame, with offloads) on the outbound path:
        every packet the stack sends, the SYN fast path's too. A full device
        queue drops it, as a NIC would; TCP retransmits."""
        try:
            self.output(packet)
        except BlockingIOError:
            self.stats["OutDrops"] += 1

    # -- timers ----------------------------------------------------------------

    def reschedule(self, conn: Connection | TimeWait, deadline: float | None) -> None:
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
        # Only this entry can be earlier than the loop timer: arm for its tick, not
        # for next_deadline(), which scans every entry beyond one rotation (60 s of
        # TIME-WAIT deadlines, 10,000 records: quadratic).
        self._wheel_timer.arm(conn.timer.tick * self.wheel.tick)

    def _arm_wheel(self) -> None:
        """One loop timer for the wheel's earliest deadline; none when idle."""
        self._wheel_timer.arm(self.wheel.next_deadline())

    def _expire_fragments(self, now: float) -> None:
        self.reassembler.expire(now)
        self._reassembly_timer.arm(self.reassembler.next_deadline())

    def _on_wheel(self, now: float) -> None:
        self._batching = True  # the turns run below, in this iteration
        try:
            for item in self.wheel.expire(now):
                item.timer = None
                if isinstance(item, TimeWait):
                    self._time_wait_timer(item, now)
                else:
                    item.post(TimerFired(now))
        finally:
            self._batching = False
            self._run_turns()
        self._arm_wheel()

    # -- connection table ----------------------------------------------------

    def forget(self, conn: Connection) -> None:
        """The TCB is gone: free its table entry, timer and listener slot."""
        if self.conns.get(conn.key) is conn:
            del self.conns[conn.key]
        self.reschedule(conn, None)
        if conn.listener is not None:
            conn.listener.forget(conn)
        if conn.reopened is not None:
            # RFC 9293 3.6.1 MAY-2 (2): the reopening SYN was an old duplicate (our
            # SYN+ACK drew an RST) or its handshake failed: TIME-WAIT goes on.
            tw, conn.reopened = conn.reopened, None
            self._restore_time_wait(tw, conn.tcb.state)

    # -- TIME-WAIT -------------------------------------------------------------

    def enter_time_wait(self, conn: Connection, segments: list[Segment]) -> None:
        """`conn` reached TIME-WAIT: a small record replaces it (its streams and
        everything else is freed) and takes `segments`, which arrived meanwhile.
        With `config.max_tw_buckets` records already, close at once instead,
        as Linux does when tcp_max_tw_buckets is reached."""
        self.forget(conn)
        if len(self.time_wait) >= self.config.max_tw_buckets:
            self.stats["TimeWaitOverflow"] += 1
            self.on_state_change(conn, StateChanged(
                State.TIME_WAIT, State.CLOSED, "TIME-WAIT table full (--max-tw): closed at once"))
            return
        tw = TimeWait.from_tcb(conn.tcb, conn.key)
        self._add_time_wait(tw)
        now = self._loop.time()
        for seg in segments:
            if self.time_wait.get(tw.key) is tw:
                self._time_wait_receive(tw, seg, now)

    def _add_time_wait(self, tw: TimeWait) -> None:
        self.time_wait[tw.key] = tw
        self.reschedule(tw, tw.deadline)

    def _time_wait_receive(self, tw: TimeWait, seg: Segment, now: float) -> None:
        """A segment for a 4-tuple in TIME-WAIT; a SYN that may reopen it goes to
        the listener with an ISS above the old sequence space, and the record is
        kept aside until the new incarnation is established."""
        listener = self.listeners.get(seg.dport)
        out, fate = tw.receive(seg, now, self.config, self.stats, listening=listener is not None)
        self.transmit(out)
        if fate is Fate.STAY:
            return
        self._drop_time_wait(tw, fate.value)
        if fate is Fate.REOPEN and listener is not None:
            self.stats["TimeWaitReopened"] += 1
            verdict = self._listen_receive(listener, seg, now, tw.reopen_iss)
            conn = self.conns.get(tw.key)
            if conn is not None:
                conn.reopened = tw
            elif verdict is SynVerdict.DROP:  # the listener's queues are full
                self._restore_time_wait(tw, State.LISTEN)
            # A SYN cookie answered it: like Linux (the TIME-WAIT socket is gone
            # once tcp_timewait_state_process returns TCP_TW_SYN), nothing is kept,
            # so the cookie's ACK finds the listener, not the old record.

    def _time_wait_timer(self, tw: TimeWait, now: float) -> None:
        if self.time_wait.get(tw.key) is not tw:
            return
        if tw.expired(now):
            self._drop_time_wait(tw, "2*MSL elapsed in TIME-WAIT")
        else:  # a retransmitted FIN restarted the 2 MSL timeout
            self.reschedule(tw, tw.deadline)

    def _drop_time_wait(self, tw: TimeWait, cause: str) -> None:
        del self.time_wait[tw.key]
        self.reschedule(tw, None)
        self.on_state_change(tw, StateChanged(State.TIME_WAIT, State.CLOSED, cause))

    def _restore_time_wait(self, tw: TimeWait, old: State) -> None:
        if tw.key in self.conns or tw.key in self.time_wait:
            return  # the 4-tuple is taken again already
        self.stats["TimeWaitRestored"] += 1
        self._add_time_wait(tw)
        self.on_state_change(tw, StateChanged(
            old, State.TIME_WAIT, "new incarnation not established: TIME-WAIT restored"))

    def on_state_change(self, conn: Connection | TimeWait, event: StateChanged) -> None:
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

    async def create_server(self, protocol_factory: ProtocolFactory, port: int, *,
                            backlog: int | None = None) -> Server:
        """Listen on `port` with a new asyncio protocol for each connection, as
        loop.create_server (tcpstack.shell.transport); the Server's wait_closed()
        waits until those connections are lost."""
        return await self.start_server(serve_protocol(protocol_factory), port, backlog=backlog)

    async def create_connection(self, protocol_factory: ProtocolFactory, host: str,
                                port: int) -> tuple[Transport, asyncio.BaseProtocol]:
        """Active open driven by an asyncio protocol, as loop.create_connection."""
        _, writer = await self.open_connection(host, port)
        transport = Transport(writer, protocol_factory())
        return transport, transport.get_protocol()

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
        if len(self.conns) >= self.config.max_conns:
            self.stats["ConnLimitDrops"] += 1
            raise OSError(errno.ENFILE, "connection table full: --max-conns "
                          f"{self.config.max_conns} connections open")
        lport = self._ephemeral_port(remote, port)
        now = self._loop.time()
        iss = self.isn.isn(self.addr, lport, remote, port, now)
        tcb = Tcb.open_active(self.config, (self.addr, lport), (remote, port), iss, now,
                              self.stats, challenge_limiter=self.challenge_acks)
        conn = Connection(self, tcb)
        self._add_conn(conn)
        try:
            await asyncio.shield(conn.established)
        except asyncio.CancelledError:
            conn.abort()
            raise
        return conn.streams()

    def _ephemeral_port(self, remote: bytes, rport: int) -> int:
        start = random.randrange(len(EPHEMERAL_PORTS))
        for i in range(len(EPHEMERAL_PORTS)):
            port = EPHEMERAL_PORTS[(start + i) % len(EPHEMERAL_PORTS)]
            key = (port, remote, rport)
            if key not in self.conns and key not in self.time_wait and port not in self.listeners:
                return port
        raise OSError(99, "no free local port")

    async def close(self) -> None:
        """Shut down: stop listening, reset every connection; TIME-WAIT records
        go without a word (there is nothing to reset)."""
        for listener in list(self.listeners.values()):
            self.stop_listening(listener)
        for conn in list(self.conns.values()):
            conn.abort_now("aborted: the stack is shutting down")
        for tw in list(self.time_wait.values()):
            self._drop_time_wait(tw, "discarded: the stack is shutting down")
        self._wheel_timer.cancel()
        self._reassembly_timer.cancel()
