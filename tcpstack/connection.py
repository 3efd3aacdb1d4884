"""The asyncio shell around one TCB: its inbox, its task and its streams.

Every input for a connection (segments from the TUN reader, timer expiries
from the wheel, calls from the application) goes through the inbox and is
applied by the connection's own task, so the TCB has a single writer. After
each batch the task flushes what the TCB produced: segments to the TUN,
events to the streams, and its next deadline to the timer wheel. One batch
of received segments is acknowledged by one ACK.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

from tcpstack.events import ConnectionLost, DataReceived, EofReceived, Established, StateChanged
from tcpstack.segment import Segment
from tcpstack.sockopts import SocketOptions
from tcpstack.states import FINISHED, State
from tcpstack.stream import StreamReader, StreamWriter
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


class TimerFired:
    """Inbox item: the wheel fired this connection's timer at `at` (>= its deadline)."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at


InboxItem = Segment | TimerFired | Callable[[float], None]


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
        self._wakeup = asyncio.Event()
        self.reader = StreamReader(self._consumed)
        self.writer = StreamWriter(self, self.reader)
        self.established: asyncio.Future[None] = loop.create_future()
        self._send_done: asyncio.Future[None] = loop.create_future()
        self._drain_waiter: asyncio.Future[None] | None = None
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
        """Queue an input for the connection's task."""
        self._inbox.append(item)
        self._wakeup.set()

    def send(self, data: bytes) -> None:
        self.post(lambda now: self.tcb.send(data, now))

    def close_send(self, *, orphan: bool) -> None:
        self.post(lambda now: self.tcb.close(now, orphan=orphan))

    def abort(self) -> None:
        self.post(self.tcb.abort)

    def _consumed(self, n: int) -> None:
        self.post(lambda now: self.tcb.consumed(n, now))

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
        inbox = self._inbox
        tcb = self.tcb
        try:
            while tcb.state not in _TASK_DONE:
                await self._wakeup.wait()
                self._wakeup.clear()
                now = self._loop.time()
                while inbox and tcb.state not in _TASK_DONE:
                    item = inbox.popleft()
                    if isinstance(item, Segment):
                        tcb.receive(item, now)
                    elif isinstance(item, TimerFired):
                        tcb.on_timer(max(now, item.at))
                    else:
                        item(now)
                self.flush()
        except Exception:  # a bug must not take the whole stack down: reset this one
            log.exception("connection %s failed; resetting it", self)
            self.stack.stats["InternalErrors"] += 1
            if tcb.state not in FINISHED:
                tcb.abort(self._loop.time())
                self.flush()

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

    def _dispatch(self, event: object) -> None:
        if isinstance(event, DataReceived):
            self.reader.feed_data(event.data)
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
            self.reader.feed_eof()
        elif isinstance(event, ConnectionLost):
            self._lost(event.error)

    def _lost(self, error: BaseException | None) -> None:
        self.error = error
        if error is None:
            self.reader.feed_eof()
        else:
            self.reader.set_exception(error)
        if not self.established.done():
            self.established.set_exception(error or ConnectionAbortedError("connection closed"))
            self.established.exception()  # retrieved: a half-open nobody waits for is fine
        if not self._send_done.done():
            self._send_done.set_result(None)

    # -- for the streams -------------------------------------------------------

    async def drain(self) -> None:
        while True:
            if self.error is not None:
                raise self.error
            if self.finished:
                raise ConnectionResetError("connection closed")
            if self.tcb.send_queue <= self.stack.config.snd_buf:
                return
            self._drain_waiter = self._loop.create_future()
            await self._drain_waiter

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done() and (
            self.finished or self.tcb.send_queue <= self.stack.config.snd_buf
        ):
            self._drain_waiter = None
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
