"""The asyncio shell around one TCB: its inbox, its task and its streams.

Every input for a connection (segments from the TUN reader, timer expiries
from the wheel, calls from the application) goes through the inbox, and what
the application writes through the write queue; both are applied by the
connection's own task, so the TCB has a single writer. A turn of the task is
bounded (TURN_ITEMS, TURN_SEGMENTS), so a bulk transfer cannot stall the other
connections. After each turn the task flushes what the TCB produced: segments
to the TUN, events to the streams, and its next deadline to the timer wheel.
One turn's received segments are acknowledged by one ACK.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

from tcpstack.config import TcpConfig
from tcpstack.events import ConnectionLost, DataReceived, EofReceived, Established, StateChanged
from tcpstack.segment import Segment
from tcpstack.seq import seq_diff
from tcpstack.sockopts import SocketOptions
from tcpstack.states import FINISHED, State
from tcpstack.stream import Receiver, StreamReader, StreamWriter
from tcpstack.tcb import Tcb

if TYPE_CHECKING:
    from tcpstack.listener import Listener
    from tcpstack.stack import Stack
    from tcpstack.timerwheel import Timer
    from tcpstack.timewait import TimeWait

log = logging.getLogger("tcpstack.conn")

#: States in which our side has finished sending: `wait_closed()` returns.
_SEND_DONE = frozenset({State.FIN_WAIT_2, State.TIME_WAIT}) | FINISHED
#: States in which the task ends: TIME-WAIT is handed to a small record
#: (`Stack.enter_time_wait`), which needs no task.
_TASK_DONE = frozenset({State.TIME_WAIT}) | FINISHED

#: Inbox items (segments, timers, reads) one connection applies per turn before
#: the others get theirs: a reader batch can post hundreds of ACKs to one flow.
TURN_ITEMS = 16
#: Unsent data the TCB may hold, in segments. Written data waits in the
#: connection's write queue and is handed over only up to this, so one turn sends
#: at most about twice as many segments (what the TCB held, and what it got),
#: however wide the windows and however large the writes. Measured on 2 cores
#: beside a bulk download: 180 segments a turn stalled other connections for
#: 60-100 ms per turn; 16 keeps an echo at 15-50 ms under heavy load, for the
#: same CPU per byte as 32 (the loop's cost per turn is small next to a segment's).
TURN_SEGMENTS = 16


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
    buffer from the moment they are posted, not only once the TCB holds them:
    otherwise `drain()` sees an empty send queue while the queue grows without bound."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = data


class Consumed:
    """Inbox item: the application read `n` bytes (the receive window reopens)."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n


class Close:
    """Write-queue item: CLOSE from the application, after the data written before
    it; `orphan` when nobody reads any more."""

    __slots__ = ("orphan",)

    def __init__(self, orphan: bool) -> None:
        self.orphan = orphan


InboxItem = Segment | TimerFired | Consumed | Callable[[float], None]


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
        self._inbox: deque[InboxItem] = deque()
        # A turn takes TURN_ITEMS, so a flood could outrun it: beyond this many
        # waiting segments, more are dropped and counted, like Linux's socket
        # backlog limit (TCPBacklogDrop). Twice the full-sized segments both
        # buffers hold: a legitimate peer, held by the windows, never gets there.
        config = stack.config
        self._inbox_max = 2 * (config.rcv_buf + config.snd_buf) // config.mss
        self._writes: deque[Send | Close] = deque()  # in order, handed over as sent
        self._wakeup = asyncio.Event()
        self.reader = StreamReader(self._consumed)
        self.writer = StreamWriter(self, self.reader)
        #: Where received data goes: the stream reader, or a protocol's
        #: transport once one is attached (`attach`).
        self.receiver: Receiver = self.reader
        self.established: asyncio.Future[None] = loop.create_future()
        self._send_done: asyncio.Future[None] = loop.create_future()
        # Write flow control, as asyncio's transports: writing pauses once the
        # write buffer exceeds the high-water mark and resumes at the low one.
        self._posted = 0  # bytes in Send items not yet applied to the TCB
        self.write_high = stack.config.snd_buf
        self.write_low = self.write_high // 4
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._charged = 0  # bytes of ours in stack.buffered (--mem-limit)
        self.task = loop.create_task(self._run(), name=f"tcb {self}")

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

    # -- inputs ----------------------------------------------------------------

    def post(self, item: InboxItem) -> None:
        """Queue an input for the connection's task. Segments are dropped (and
        counted) when the inbox is full, and those with data when the stack holds
        --mem-limit bytes (Linux drops at tcp_mem[2]): ACKs still get through, so
        send buffers drain; the peer retransmits the data later."""
        if isinstance(item, Segment):
            if len(self._inbox) >= self._inbox_max:
                self.stack.stats["InboxDrops"] += 1
                return
            if item.payload and self.stack.buffered >= self.stack.config.mem_limit:
                self.stack.stats["MemoryDrops"] += 1
                return
        self._inbox.append(item)
        self._wakeup.set()

    def send(self, data: bytes) -> None:
        """Queue written bytes; pause writing above the high-water mark, or above
        the low one while the stack is under memory pressure."""
        self._posted += len(data)
        self._write(Send(data))
        self._account()
        high = self.write_low if self._under_pressure() else self.write_high
        if self.write_buffer_size > high:
            self._write_paused = True

    def close_send(self, *, orphan: bool) -> None:
        self._write(Close(orphan))

    def _write(self, item: Send | Close) -> None:
        self._writes.append(item)
        self._wakeup.set()

    def abort(self) -> None:
        self.post(self.tcb.abort)

    def _consumed(self, n: int) -> None:
        self.post(Consumed(n))

    def abort_now(self, cause: str) -> None:
        """Reset at once, bypassing the inbox (stack shutdown, TIME-WAIT reopened by
        a new SYN). The task is woken so it sees CLOSED and ends: otherwise it waits
        forever on an event nobody sets and is garbage-collected while pending.

        `cause` replaces the TCB's "aborted by the user" in the trace: the stack
        knows why it aborts, the TCB only that it was told to."""
        self.tcb.abort(self._loop.time())
        self.flush(cause=cause)
        self._wakeup.set()

    # -- the task --------------------------------------------------------------

    async def _run(self) -> None:
        """One turn per wake-up: apply at most TURN_ITEMS inputs, hand the TCB
        written data up to TURN_SEGMENTS unsent, flush. If work is left, yield
        with sleep(0) so every other ready task (the TUN reader, the timers, the
        control socket, other connections) runs before the next turn."""
        inbox = self._inbox
        tcb = self.tcb
        try:
            while tcb.state not in _TASK_DONE:
                if inbox or (self._writes and self._unsent() < self._turn_bytes()):
                    await asyncio.sleep(0)  # the last turn was full: the others go first
                else:
                    await self._wakeup.wait()
                self._wakeup.clear()
                now = self._loop.time()
                tcb.config = _pressed(self.stack.config) if self._under_pressure() \
                    else self.stack.config
                for _ in range(min(len(inbox), TURN_ITEMS)):
                    if tcb.state in _TASK_DONE:
                        break
                    self._apply(inbox.popleft(), now)
                if tcb.state not in _TASK_DONE:
                    self._hand_over(now)
                self.flush()
        except Exception:  # a bug must not take the whole stack down: reset this one
            log.exception("connection %s failed; resetting it", self)
            self.stack.stats["InternalErrors"] += 1
            if tcb.state not in FINISHED:
                tcb.abort(self._loop.time())
                self.flush()

    def _apply(self, item: InboxItem, now: float) -> None:
        tcb = self.tcb
        if isinstance(item, Segment):
            tcb.receive(item, now)
        elif isinstance(item, Consumed):
            tcb.consumed(item.n, now)
        elif isinstance(item, TimerFired):
            tcb.on_timer(max(now, item.at))
        else:
            item(now)

    def _turn_bytes(self) -> int:
        return TURN_SEGMENTS * self.tcb.send_mss

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
            self.stack.forget(self)
        elif tcb.state is State.TIME_WAIT:
            # Segments still queued go to the record; anything else is moot now.
            left = [item for item in self._inbox if isinstance(item, Segment)]
            self._inbox.clear()
            self.stack.enter_time_wait(self, left)
        else:
            self.stack.reschedule(self, tcb.next_deadline())
        self._wake_drain()

    def attach(self, receiver: Receiver) -> None:
        """Deliver received data to `receiver` (a protocol's transport) instead
        of the stream reader, which hands it what it holds first."""
        self.receiver = receiver
        self.reader.hand_over(receiver)

    def _dispatch(self, event: object) -> None:
        if isinstance(event, DataReceived):
            self.receiver.feed_data(event.data)
        elif isinstance(event, StateChanged):
            self.stack.on_state_change(self, event)
            if event.new in _SEND_DONE and not self._send_done.done():
                self._send_done.set_result(None)
        elif isinstance(event, Established):
            self.reopened = None  # the new incarnation is real: the old TIME-WAIT is over
            if not self.established.done():
                self.established.set_result(None)
            if self.listener is not None:
                self.listener.on_established(self)
        elif isinstance(event, EofReceived):
            self.receiver.feed_eof()
        elif isinstance(event, ConnectionLost):
            self._lost(event.error)

    def _lost(self, error: BaseException | None) -> None:
        self.error = error
        self.receiver.connection_lost(error)
        if not self.established.done():
            self.established.set_exception(error or ConnectionAbortedError("connection closed"))
            self.established.exception()  # retrieved: a half-open nobody waits for is fine
        if not self._send_done.done():
            self._send_done.set_result(None)

    # -- memory ----------------------------------------------------------------

    def _account(self) -> None:
        """Charge what this connection buffers (written and not acknowledged,
        received and not read) to the stack-wide total that --mem-limit caps.
        From TIME-WAIT on the task is gone and nothing would update the charge,
        so it is released then (what the application has not read yet stays
        with its reader, bounded by --rcv-buf)."""
        held = 0 if self.tcb.state in _TASK_DONE else (
            self.write_buffer_size + self.receiver.unread)
        self.stack.buffered += held - self._charged
        self._charged = held

    def _under_pressure(self) -> bool:
        """Above two thirds of --mem-limit (Linux's tcp_mem[1] to tcp_mem[2])."""
        return 3 * self.stack.buffered > 2 * self.stack.config.mem_limit

    # -- for the streams -------------------------------------------------------

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
