#!/usr/bin/env python3
"""Bytes per TIME-WAIT entry: N connections driven to TIME-WAIT in memory, measured
with tracemalloc (no TUN, no root: `.venv/bin/python scripts/time_wait_memory.py`).

Each connection is a passive open whose application closes at once; the peer
(this script) acknowledges the FIN and sends its own, so the stack ends in
TIME-WAIT. What is left allocated afterwards, less the baseline, divided by N
is the cost of one entry: the table entry, the timer-wheel entry, and whatever
the stack keeps for the 4-tuple. Only the public API is used, so the script
also measures older versions of the stack (run it with their tree on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tracemalloc
from ipaddress import IPv4Address

from tcpstack import codec
from tcpstack.config import TcpConfig
from tcpstack.segment import Flags, Options, Segment
from tcpstack.stack import Stack

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


async def main(n: int) -> None:
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
    for port in ports:
        stack.handle_packet(packet(Flags.ACK, port, X + 1, iss[port] + 1), now())
    await settle(lambda: fins[0] >= n)
    for port in ports:
        stack.handle_packet(packet(Flags.ACK | Flags.FIN, port, X + 1, iss[port] + 2), now())
    time_wait = getattr(stack, "time_wait", {})  # records, where the stack has them

    def in_time_wait() -> int:
        return len(time_wait) + sum(c.tcb.state.name == "TIME_WAIT" for c in stack.conns.values())

    await settle(lambda: in_time_wait() == n)
    for _ in range(10):  # let finished handler tasks go
        await asyncio.sleep(0)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tasks = len([t for t in asyncio.all_tasks() if t.get_name().startswith("tcb ")])
    print(f"{n} connections in TIME-WAIT: {used / n:.0f} bytes each "
          f"({len(time_wait)} records, {len(stack.conns)} connections, {tasks} tasks)")
    tracemalloc.stop()
    await stack.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="connections (default 10000)")
    asyncio.run(main(parser.parse_args().n))
