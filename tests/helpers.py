"""Test helpers shared by the suites, so that no test file grows its own copy.

- A `Stack` on an in-memory wire: `Wire` collects what the stack sends and
  waits (bounded) for a segment; `packet` builds what the peer 10.0.0.1 sends
  to the stack at `VIP`; `feed` hands it to the stack at the loop's time.
- `until`: a bounded wait for a condition the stack's tasks make true.
- Handlers: `idle` (accepts and never reads), `echo` (sends back what it reads).
- `arrows`: the segments of a text ladder diagram (`tcpstack ladder`, `demo`).

TCB-level builders (a TCB in each state, exact output checks) are in
`tests/unit/tcpkit.py`; the namespace and daemon toolkit of the root-only
suites is `tcpstack.lab.netns`, with captures and nftables in `tests/nstools.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from ipaddress import IPv4Address

from tcpstack.core.segment import SYN, Options, Segment
from tcpstack.shell.stack import Stack
from tcpstack.wire import codec

PEER = IPv4Address("10.0.0.1").packed
VIP = "10.0.0.2"
VIP_B = IPv4Address(VIP).packed


class Wire:
    """The far end of a stack: injects packets and collects what the stack sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self._arrived = asyncio.Event()

    def output(self, packet: bytes) -> None:
        self.sent.append(packet)
        self._arrived.set()

    def segments(self) -> list[Segment]:
        """The TCP segments sent since the last call (other packets are dropped)."""
        out = [codec.decode(p) for p in self.sent]
        self.sent.clear()
        return [s for s in out if isinstance(s, Segment)]

    async def wait_for(self, pred: Callable[[Segment], bool], timeout: float = 2.0) -> Segment:
        """Wait (bounded) until the stack sends a segment matching `pred`."""
        async def loop() -> Segment:
            while True:
                for seg in self.segments():
                    if pred(seg):
                        return seg
                self._arrived.clear()
                await self._arrived.wait()
        return await asyncio.wait_for(loop(), timeout)


def packet(flags: int, seq: int, ack: int = 0, *, sport: int = 40000, dport: int = 80,
           payload: bytes = b"", mss: int | None = 1460, wscale: int | None = None) -> bytes:
    """A packet from the peer to `VIP`; a SYN offers `mss` (and `wscale` if given)."""
    syn = bool(flags & SYN)
    return codec.encode(Segment(PEER, VIP_B, sport, dport, seq, ack, flags, 65535,
                                Options(mss=mss if syn else None, wscale=wscale if syn else None),
                                payload))


def feed(stack: Stack, pkt: bytes) -> None:
    """Hand `pkt` to the stack as the TUN reader would, at the loop's time."""
    stack.handle_packet(pkt, asyncio.get_running_loop().time())


async def until(predicate: Callable[[], object], timeout: float = 2.0) -> None:
    """Let the stack's tasks run until `predicate()` holds; TimeoutError after `timeout`."""
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), timeout)


async def idle(reader: object, writer: object) -> None:
    """A handler that never reads, so received bytes stay unread, and never returns."""
    await asyncio.get_running_loop().create_future()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A handler that sends back everything it reads, until EOF."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


def arrows(text: str) -> list[tuple[str, str, str, str]]:
    """(label, direction, client state, server state) per segment of a text diagram:
    the label line(s) above each arrow line, joined."""
    rows, label = [], []
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["time"]) + 1
    for line in lines[start:]:
        if line.count("│") != 2:
            continue
        left, middle, right = line.split("│")
        if middle.strip() and not any(ch.isalnum() for ch in middle):  # an arrow
            leftwards = "<" in middle or middle.lstrip().startswith("✕")
            rows.append((" ".join(label), "<" if leftwards else ">", left.strip(),
                         right.strip()))
            label = []
        elif middle.strip() and not middle.strip().startswith("·"):
            label.append(middle.strip())
    return rows
