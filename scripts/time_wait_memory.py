#!/usr/bin/env python3
"""Bytes per TIME-WAIT entry: N connections driven to TIME-WAIT in memory, measured
with tracemalloc (no TUN, no root: `.venv/bin/python scripts/time_wait_memory.py`);
with `--half-open`, bytes per half-open connection (SYN-RECEIVED: SYNs only).

Each connection is a passive open whose application closes at once; the peer
(this script) acknowledges the FIN and sends its own, so the stack ends in
TIME-WAIT. What is left allocated afterwards, less the baseline, divided by N
is the cost of one entry: the table entry, the timer-wheel entry, and whatever
the stack keeps for the 4-tuple. A half-open connection is measured the same
way right after the SYNs are answered and the loop has run a few iterations.
Only the public API is used, so the script also measures older versions of the
stack (run it with their tree on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tracemalloc
from ipaddress import IPv4Address

from tcpstack.core.config import TcpConfig
from tcpstack.core.segment import Flags, Options, Segment
from tcpstack.shell.stack import Stack
from tcpstack.wire import codec

PEER = IPv4Address("10.0.0.1").packed
VIP = "10.0.0.2"
X = 1000  # every peer's ISN


async def close_first(reader, writer) -> None:
    writer.close()


def packet(flags: Flags, sport: int, seq: int, ack: int) -> bytes:
    return codec.encode(Segment(PEER, IPv4Address(VIP).packed, sport, 80, seq, ack, flags,
                                65535, Options(mss=1460 if flags & Flags.SYN else None)))


async def settle(pred, limit: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not pred():
        if loop.time() > deadline:
            raise SystemExit("the connections did not reach TIME-WAIT in time")
        await asyncio.sleep(0.01)


async def main(n: int, half_open: bool) -> None:
    fins = [0]

    def output(raw: bytes) -> None:
        seg = codec.decode(raw)
        if seg.flags & Flags.SYN:
            iss[seg.dport] = seg.seq
        fins[0] += bool(seg.flags & Flags.FIN)

    iss = dict.fromkeys(range(10000, 10000 + n), 0)  # allocated before the baseline
    stack = Stack(VIP, output, TcpConfig(backlog=n))
    await stack.start_server(close_first, 80)
    ports = range(10000, 10000 + n)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    now = asyncio.get_running_loop().time
    for port in ports:
        stack.handle_packet(packet(Flags.SYN, port, X, 0), now())
    if half_open:
        await measure(stack, base, n, "half-open (SYN-RECEIVED)")
        return
    for port in ports:
        stack.handle_packet(packet(Flags.ACK, port, X + 1, iss[port] + 1), now())
    await settle(lambda: fins[0] >= n)
    for port in ports:
        stack.handle_packet(packet(Flags.ACK | Flags.FIN, port, X + 1, iss[port] + 2), now())
    time_wait = getattr(stack, "time_wait", {})  # records, where the stack has them

    def in_time_wait() -> int:
        return len(time_wait) + sum(c.tcb.state.name == "TIME_WAIT" for c in stack.conns.values())

    await settle(lambda: in_time_wait() == n)
    await measure(stack, base, n, "in TIME-WAIT")


async def measure(stack: Stack, base: int, n: int, what: str) -> None:
    """Print what is allocated beyond `base`, per connection, then shut down."""
    for _ in range(10):  # let finished handler tasks go
        await asyncio.sleep(0)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tasks = len(asyncio.all_tasks()) - 2  # besides this one and the listener's accept loop
    print(f"{n} connections {what}: {used / n:.0f} bytes each "
          f"({len(getattr(stack, 'time_wait', {}))} records, {len(stack.conns)} connections, "
          f"{tasks} tasks)")
    tracemalloc.stop()
    await stack.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="connections (default 10000)")
    parser.add_argument("--half-open", action="store_true",
                        help="measure half-open connections (SYNs only) instead")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.half_open))
