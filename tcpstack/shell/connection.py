"""The asyncio shell around one TCB: its inputs, its turns and its streams.

A connection has no task of its own. Segments from the TUN reader and timer
expiries from the wheel are queued in its inbox and applied in a *turn*,
which the stack runs at the end of the reader's wake-up (or of the wheel's
firing) in the same loop iteration: everything one wake-up brought a
connection is applied in one go and acknowledged by one ACK decision. What
the application does (write, close, abort, a read that reopens the window) is
applied at once, in the application's own loop iteration, by a turn run right
there, unless a turn is queued or running: then that turn takes it. So an
echo reply leaves in the iteration in which the application writes it, and
the application sees received data in the iteration after the segment was
read (the StreamReader's future wakes its task). Only Connection code mutates
the TCB, always on the loop thread: the TCB still has a single writer.

A turn is bounded (TURN_ITEMS inputs, TURN_SEGMENTS unsent segments handed
to the TCB), so a bulk transfer cannot stall the other connections: a
connection with work left queues another turn, which runs in the next loop
iteration, after every other ready callback. After each turn the shell
flushes what the TCB produced: segments to the TUN, events to the streams,
and its next deadline to the timer wheel.

Until the handshake completes a connection is the TCB and this record only:
the streams, the write queue and the application's task come with
ESTABLISHED (issue 9, item 4).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from dataclasses import replace
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any, Final

from tcpstack.core.config import TcpConfig
from tcpstack.core.events import (
    ConnectionLost,
    DataReceived,
    EofReceived,
    Established,
    StateChanged,
)
from tcpstack.core.segment import Segment
from tcpstack.core.seq import seq_diff
from tcpstack.core.states import FINISHED, State
from tcpstack.core.tcb import Tcb
from tcpstack.shell.sockopts import SocketOptions
from tcpstack.shell.stream import Receiver, StreamReader, StreamWriter

if TYPE_CHECKING:
    from tcpstack.core.timerwheel import Timer
    from tcpstack.core.timewait import TimeWait
    from tcpstack.shell.listener import Listener
    from tcpstack.shell.stack import Stack

log = logging.getLogger("tcpstack.conn")

#: States in which our side has finished sending: `wait_closed()` returns.
_SEND_DONE: Final = frozenset({State.FIN_WAIT_2, State.TIME_WAIT}) | FINISHED
#: States in which the connection takes no more input: TIME-WAIT is handed to
#: a small record (`Stack.enter_time_wait`).
_INPUT_DONE: Final = frozenset({State.TIME_WAIT}) | FINISHED

#: Inbox items (segments, timers, reads) one connection applies per turn before
#: the others get theirs: a reader batch can post hundreds of ACKs to one flow.
TURN_ITEMS: Final = 16
#: Unsent data the TCB may hold, in device packets: without offloads, MSS-sized
#: segments. Written data waits in the connection's write queue and is handed
#: over only up to this, so one turn sends at most about twice as many packets
#: (what the TCB held, and what it got), however wide the windows and however
#: large the writes: the cost of a turn is per packet (a decode, a TCB step, a
#: write). Measured on 2 cores beside a bulk download: 180 segments a turn
#: stalled other connections for 60-100 ms per turn; 16 keeps an echo at
#: 15-50 ms under heavy load, for the same CPU per byte as 32 (the loop's cost
#: per turn is small next to a segment's).
TURN_SEGMENTS: Final = 16
#: With offloads a turn's budget is this many super-segments (about 256 KiB):
#: with 16 MSS a download's turn was one 23 KiB super-segment, and the ACK that
#: the kernel sends back at once for it came back to an empty pipe, so the
#: transfer ran at one turn's cost per 23 KiB (129 MB/s at MTU 1500 on the 2-core
#: VM; 4 super-segments: 470 MB/s, docs/benchmarks.md "Turns of super-segments").
TURN_SUPER_SEGMENTS: Final = 4


@functools.cache
def _pressed(config: TcpConfig) -> TcpConfig:
    """The settings a TCB runs with under memory pressure: a quarter of the
    receive buffer, so the windows it offers for new data shrink (Linux clamps
    windows under tcp_memory_pressure); the right edge never moves left."""
    return replace(config, rcv_buf=max(config.rcv_buf // 4, config.mss))


class TimerFired:
    """Inbox item: the wheel fired this connection's timer at `at` (>= its deadline)."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at


class Send:
    """Write-queue item: bytes the application wrote. They count toward the write
    buffer from the moment they are written, not only once the TCB holds them:
    otherwise `drain()` sees an empty send queue while the queue grows without bound."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = data


class Close:
    """Write-queue item: CLOSE from the application, after the data written before
    it; `orphan` when nobody reads any more."""

    __slots__ = ("orphan",)

    def __init__(self, orphan: bool) -> None:
        self.orphan = orphan


class SetOption:
    """Inbox item: a socket option set through get_extra_info('socket')
    (tcpstack.shell.sockopts): the TCB field `attr` gets `value` in a turn, so only the
    connection's own code writes the TCB."""

    __slots__ = ("attr", "value")

    def __init__(self, attr: str, value: float | bool) -> None:
        self.attr = attr
        self.value = value


class LowerMtu:
    """Inbox item: a checked ICMP "fragmentation needed" (RFC 1191, RFC 5927)
    naming this connection: send segments that fit `mtu` from now on."""

    __slots__ = ("mtu",)

    def __init__(self, mtu: int) -> None:
        self.mtu = mtu


class Abort:
    """Inbox item: ABORT from the application (3.10.5), after the inputs queued
    before it."""

    __slots__ = ()


InboxItem = Segment | TimerFired | SetOption | LowerMtu | Abort


class Connection:
    """One TCP connection as the application and the stack see it."""

    def __init__(self, stack: Stack, tcb: Tcb, listener: Listener | None = None) -> None:
        self.stack = stack
        self.tcb = tcb
        self.listener = listener
        self.key = (tcb.local_port, tcb.remote_ip, tcb.remote_port)
        self.error: BaseException | None = None
        self.timer: Timer[Connection | TimeWait] | None = None
        self.timer_deadline = 0.0
        #: The TIME-WAIT this connection reopened (a passive open in SYN-RECEIVED),
        #: kept aside until ESTABLISHED and restored if that never comes.
        self.reopened: TimeWait | None = None
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._inbox: list[InboxItem] = []  # applied in order, TURN_ITEMS per turn
        self._queued = False  # a turn is queued with the stack (Stack.queue_turn)
        self._backlog = False  # ... because the last turn was full: the others go first
        self._turning = False  # a turn is running: inputs wait for its end
        self._unconsumed = 0  # bytes the application read since the last turn
        # Written data, in order, handed over as sent; () until ESTABLISHED, when
        # the writer that fills it is made (a half-open connection has no queue).
        self._writes: deque[Send | Close] | tuple[()] = ()
        #: Made at ESTABLISHED; its writer when the application takes it (`streams`).
        self.reader: StreamReader | None = None
        #: Where received data goes: the stream reader, or a protocol's
        #: transport once one is attached (`attach`); None until ESTABLISHED.
        self.receiver: Receiver | None = None
        self.established: asyncio.Future[None] = loop.create_future()
        self._send_done: asyncio.Future[None] | None = None  # made by wait_closed()
        self._sent_all = False  # our side finished sending (or the connection ended)
        # Write flow control, as asyncio's transports: writing pauses once the
        # write buffer exceeds the high-water mark and resumes at the low one.
        self._posted = 0  # bytes in Send items not yet applied to the TCB
        self.write_high = stack.config.snd_buf
        self.write_low = self.write_high // 4
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._charged = 0  # bytes of ours in stack.buffered (--mem-limit)

    def __str__(self) -> str:
        return f"{self.local}-{self.remote}"

    @property
    def local(self) -> str:
        """Our end as ADDRESS:PORT, as `ss` and the trace show it."""
        return f"{IPv4Address(self.tcb.local_ip)}:{self.tcb.local_port}"

    @property
    def remote(self) -> str:
        """The peer's end as ADDRESS:PORT."""
        return f"{IPv4Address(self.tcb.remote_ip)}:{self.tcb.remote_port}"

    @property
    def finished(self) -> bool:
        return self.tcb.state in FINISHED

    # -- inputs from the stack ---------------------------------------------------

    def post(self, item: InboxItem) -> None:
        """Queue an input from the stack for this connection's next turn, which
        the stack runs at the end of the current reader wake-up or wheel firing.
        Segments are dropped (and counted) when the inbox is full, and those with
        data when the stack holds --mem-limit bytes (Linux drops at tcp_mem[2]):
        ACKs still get through, so send buffers drain; the peer retransmits the
        data later."""
        if isinstance(item, Segment):
            # A turn takes TURN_ITEMS, so a flood could outrun it: beyond this many
            # waiting segments, more are dropped and counted, like Linux's socket
            # backlog limit (TCPBacklogDrop). Twice the full-sized segments both
            # buffers hold: a legitimate peer, held by the windows, never gets there.
            config = self.stack.config
            if len(self._inbox) >= 2 * (config.rcv_buf + config.snd_buf) // config.mss:
                self.stack.stats["InboxDrops"] += 1
                return
            if item.payload and self.stack.buffered >= config.mem_limit:
                self.stack.stats["MemoryDrops"] += 1
                return
        self._inbox.append(item)
        self._queue()

    def set_option(self, attr: str, value: float | bool) -> None:
        """A socket option from the application: applied now, as its writes are."""
        self._inbox.append(SetOption(attr, value))
        self._queue()
        self._act()

    def _queue(self) -> None:
        if not self._queued:
            self._queued = True
            self.stack.queue_turn(self)

    # -- inputs from the application ----------------------------------------------

    def send(self, data: bytes) -> None:
        """Written bytes: handed to the TCB and sent now (up to a turn's worth);
        pause writing above the high-water mark, or above the low one while the
        stack is under memory pressure."""
        self._posted += len(data)
        self._writes.append(Send(data))  # type: ignore[union-attr]  # the writer exists
        self._account()
        high = self.write_low if self._under_pressure() else self.write_high
        if self.write_buffer_size > high:
            self._write_paused = True
        self._act()

    def close_send(self, *, orphan: bool) -> None:
        self._writes.append(Close(orphan))  # type: ignore[union-attr]  # the writer exists
        self._act()

    def abort(self) -> None:
        self._inbox.append(Abort())
        self._act()

    def consumed(self, n: int) -> None:
        """The application (its reader or a protocol) consumed `n` bytes: the
        window reopens in the next turn, the one the application's write runs
        at once (an echo), else a queued one. Reads rarely change what the TCB
        sends (receiver SWS avoidance), so a turn of their own per read would be
        spent flushing nothing; and the reads between two turns are one sum,
        not an inbox item each."""
        self._unconsumed += n
        self._queue()

    def _act(self) -> None:
        """Apply the application's input now, in its own loop iteration (an echo
        reply leaves in the iteration that writes it), with the inputs queued
        before it (the order of inputs). During a turn, that turn takes it; after
        a full turn, the queued next one: a writer that never waits (drain()
        returns at once below the high-water mark) must not get a turn per
        write, or it would send its whole window in one iteration."""
        if not (self._turning or self._backlog):
            self.turn()

    def abort_now(self, cause: str) -> None:
        """Reset at once, bypassing the inbox (stack shutdown, TIME-WAIT reopened by
        a new SYN, a half-open superseded by a SYN cookie).

        `cause` replaces the TCB's "aborted by the user" in the trace: the stack
        knows why it aborts, the TCB only that it was told to."""
        self.tcb.abort(self._loop.time())
        self.flush(cause=cause)

    # -- turns ---------------------------------------------------------------

    def run_queued_turn(self) -> None:
        """The stack runs the turn this connection queued."""
        self._queued = self._backlog = False
        self.turn()

    def turn(self) -> None:
        """Apply at most TURN_ITEMS inputs, hand the TCB written data up to
        TURN_SEGMENTS unsent, flush. If work is left, queue another turn (unless
        one is queued already; an application's input may run a turn before the
        queued one, which then finds less to do, or nothing): the
        stack runs it in the next loop iteration, after every other ready
        callback (the TUN reader, the timers, the control socket, the other
        connections' turns and the applications)."""
        tcb = self.tcb
        if tcb.state in _INPUT_DONE:  # gone to a TIME-WAIT record or closed: moot
            self._inbox.clear()
            return
        if not (self._inbox or self._writes or self._unconsumed):
            return  # an earlier turn took it all: nothing to apply, nothing to flush
        self._turning = True
        try:
            now = self._loop.time()
            tcb.config = _pressed(self.stack.config) if self._under_pressure() \
                else self.stack.config
            if self._unconsumed:  # read before anything in the inbox was applied
                tcb.consumed(self._unconsumed, now)
                self._unconsumed = 0
            inbox = self._inbox
            applied = 0
            for item in inbox[:TURN_ITEMS]:
                if tcb.state in _INPUT_DONE:
                    break
                applied += 1
                self._apply(item, now)
            del inbox[:applied]
            if tcb.state not in _INPUT_DONE:
                self._hand_over(now)
            self.flush()
        except Exception:  # a bug must not take the whole stack down: reset this one
            log.exception("connection %s failed; resetting it", self)
            self.stack.stats["InternalErrors"] += 1
            if tcb.state not in FINISHED:
                tcb.abort(self._loop.time())
                self.flush()
        finally:
            self._turning = False
        if tcb.state not in _INPUT_DONE and (
                self._inbox or (self._writes and self._unsent() < self._turn_bytes())):
            self._backlog = True  # the turn was full, or inputs came during it
            self._queue()

    def _apply(self, item: InboxItem, now: float) -> None:
        tcb = self.tcb
        if isinstance(item, Segment):
            tcb.receive(item, now)
        elif isinstance(item, TimerFired):
            tcb.on_timer(max(now, item.at))
        elif isinstance(item, LowerMtu):
            tcb.lower_mtu(item.mtu, now)
        elif isinstance(item, Abort):
            tcb.abort(now)
        else:
            setattr(tcb, item.attr, item.value)  # the turn re-arms the timer after it

    def _turn_bytes(self) -> int:
        tcb = self.tcb
        if tcb.config.offload:
            return TURN_SUPER_SEGMENTS * tcb.max_segment
        return TURN_SEGMENTS * tcb.send_mss

    def _unsent(self) -> int:
        """Bytes the TCB holds that it has not sent yet (SND.MAX on; the SYN or
        FIN in flight makes it one less, which does not matter for a budget)."""
        tcb = self.tcb
        return max(0, tcb.send_queue - seq_diff(tcb.snd_max, tcb.snd_una))

    def _hand_over(self, now: float) -> None:
        """SEND the written data, in order, until the TCB holds a turn's worth
        unsent; a large write is cut (a memoryview: no copy). CLOSE follows the
        data written before it."""
        tcb, writes = self.tcb, self._writes
        if not writes:
            return
        assert isinstance(writes, deque)
        room = self._turn_bytes() - self._unsent()
        while writes and room > 0:
            item = writes[0]
            if isinstance(item, Close):
                writes.popleft()
                tcb.close(now, orphan=item.orphan)
                continue
            data = item.data
            if len(data) > room:
                view = memoryview(data)
                data, item.data = view[:room], view[room:]
            else:
                writes.popleft()
            self._posted -= len(data)
            tcb.send(data, now)
            room -= len(data)

    def flush(self, *, cause: str | None = None) -> None:
        """Hand the TCB's output to the stack and its events to the application;
        `cause`, if given, is the cause of the state changes flushed now."""
        tcb = self.tcb
        segments = tcb.take_segments()
        if segments:
            self.stack.transmit(segments)
        for event in tcb.take_events():
            if cause is not None and isinstance(event, StateChanged):
                event = replace(event, cause=cause)
            self._dispatch(event)
        self._account()
        if tcb.state in FINISHED:
            self._inbox.clear()
            self.stack.forget(self)
            self._release()
        elif tcb.state is State.TIME_WAIT:
            # Segments still queued go to the record; anything else is moot now.
            left = [item for item in self._inbox if isinstance(item, Segment)]
            self._inbox.clear()
            self.stack.enter_time_wait(self, left)
            self._release()
        else:
            self.stack.reschedule(self, tcb.next_deadline())
        self._wake_drain()

    def attach(self, receiver: Receiver) -> None:
        """Deliver received data to `receiver` (a protocol's transport) instead
        of the stream reader, which hands it what it holds first."""
        self._open_streams()
        assert self.reader is not None
        self.receiver = receiver
        self.reader.hand_over(receiver)

    def _dispatch(self, event: object) -> None:
        if isinstance(event, (DataReceived, EofReceived)):
            self._deliver(event)
        elif isinstance(event, StateChanged):
            self.stack.on_state_change(self, event)
            if event.new in _SEND_DONE:
                self._sending_done()
        elif isinstance(event, Established):
            self.reopened = None  # the new incarnation is real: the old TIME-WAIT is over
            self._open_streams()
            if not self.established.done():
                self.established.set_result(None)
            if self.listener is not None:
                self.listener.on_established(self)
        elif isinstance(event, ConnectionLost):
            self._lost(event.error)

    def _open_streams(self) -> None:
        """ESTABLISHED: the reader and the write queue the application uses."""
        if self.reader is None:
            self.reader = StreamReader(self.consumed)
            self.receiver = self.reader
            self._writes = deque()

    def streams(self) -> tuple[StreamReader, StreamWriter]:
        """The application's reader and a writer, once, when the connection is
        handed to it (the listener's accept, `Stack.open_connection`).

        The connection keeps no reference to the writer, which refers to it, and
        drops the ones between it and the reader when the TCB goes (`_release`):
        no reference cycle is left, so a connection's objects are freed as soon
        as the application lets go of its streams, by reference counting, not by
        the cyclic garbage collector (docs/benchmarks.md "What the compiler
        needs")."""
        self._open_streams()
        assert self.reader is not None
        return self.reader, StreamWriter(self, self.reader)

    def _release(self) -> None:
        """The TCB is gone (CLOSED, or TIME-WAIT's record took over): nothing
        more reaches the application, nor needs to come back from it."""
        self.receiver = None
        if self.reader is not None:
            self.reader.detach()

    def _deliver(self, event: DataReceived | EofReceived) -> None:
        """The one place where received data and the peer's FIN reach the
        application (its StreamReader or a protocol's transport)."""
        receiver = self.receiver
        if receiver is None:
            return  # before ESTABLISHED nothing is delivered (RFC 9293 3.10.7.3)
        if isinstance(event, DataReceived):
            receiver.feed_data(event.data)
        else:
            receiver.feed_eof()

    def _lost(self, error: BaseException | None) -> None:
        self.error = error
        if self.receiver is not None:
            self.receiver.connection_lost(error)
        if not self.established.done():
            self.established.set_exception(error or ConnectionAbortedError("connection closed"))
            self.established.exception()  # retrieved: a half-open nobody waits for is fine
        self._sending_done()

    def _sending_done(self) -> None:
        self._sent_all = True
        if self._send_done is not None and not self._send_done.done():
            self._send_done.set_result(None)

    # -- memory ----------------------------------------------------------------

    def _account(self) -> None:
        """Charge what this connection buffers (written and not acknowledged,
        received and not read) to the stack-wide total that --mem-limit caps.
        From TIME-WAIT on the connection takes no input and nothing would update
        the charge, so it is released then (what the application has not read yet stays
        with its reader, bounded by --rcv-buf)."""
        held = 0 if self.tcb.state in _INPUT_DONE else self.write_buffer_size + self.unread
        self.stack.buffered += held - self._charged
        self._charged = held

    def _under_pressure(self) -> bool:
        """Above two thirds of --mem-limit (Linux's tcp_mem[1] to tcp_mem[2])."""
        return 3 * self.stack.buffered > 2 * self.stack.config.mem_limit

    # -- for the streams -------------------------------------------------------

    @property
    def unread(self) -> int:
        """Bytes received and not yet read by the application."""
        return 0 if self.receiver is None else self.receiver.unread

    @property
    def write_buffer_size(self) -> int:
        """Bytes written and not yet acknowledged: still in the write queue or in
        the TCB's send queue. This is what --snd-buf bounds, as SO_SNDBUF does."""
        return self._posted + self.tcb.send_queue

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """asyncio.WriteTransport.set_write_buffer_limits: the defaults are
        --snd-buf and a quarter of it (asyncio's ratio), so a writer resumes with
        three quarters of the buffer still queued and the pipe never runs dry."""
        if high is None:
            high = self.stack.config.snd_buf if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self.write_high, self.write_low = high, low
        if self.write_buffer_size > high:
            self._write_paused = True
        self._wake_drain()

    async def drain(self) -> None:
        """Return at once unless writing is paused (the buffer went above the
        high-water mark); then wait until it is down to the low-water mark."""
        while True:
            if self.error is not None:
                raise self.error
            if self.finished:
                raise ConnectionResetError("connection closed")
            if not self._write_paused:
                return
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._drain_waiters:
                    self._drain_waiters.remove(waiter)
                raise

    def _wake_drain(self) -> None:
        """Resume writing once the buffer is down to the low-water mark or the
        connection is gone (the waiters then raise)."""
        if self._write_paused and (self.finished or self.write_buffer_size <= self.write_low):
            self._write_paused = False
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_closed(self) -> None:
        if self._sent_all:
            return
        if self._send_done is None:
            self._send_done = self._loop.create_future()
        await asyncio.shield(self._send_done)

    def extra_info(self, name: str, default: Any = None) -> Any:
        t = self.tcb
        if name == "peername":
            return (str(IPv4Address(t.remote_ip)), t.remote_port)
        if name == "sockname":
            return (str(IPv4Address(t.local_ip)), t.local_port)
        if name == "tcb":
            return t
        if name == "socket":
            return SocketOptions(self)
        return default
