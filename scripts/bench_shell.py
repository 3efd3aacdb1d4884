#!/usr/bin/env python3
"""Micro-benchmark of the asyncio shell: CPU time and loop iterations per echo
round trip and per short connection, in one process, on uvloop as the daemon.

No root, no TUN: `.venv/bin/python scripts/bench_shell.py`. The stack reads
its packets with `Stack.run_reader` from a datagram socket pair (a TUN keeps
packet boundaries the same way); the peer is this script, answering each
segment the stack sends from the stack's output callback. So the figures are
the daemon's path without the TUN's system calls and without another process
to wake: what the shell and the TCB cost, counted by the process's CPU time
(the best of `--repeat` runs, the least disturbed by other load), by the
function calls (Python and built-in, `sys.setprofile`: counted work, the same
on a busy machine as on an idle one), and the loop iterations a round takes
(a task that steps once per iteration).

- `rtt`: one connection, N 1-byte echoes, each sent when the last came back;
- `conn`: N connections one after the other: handshake, 1 byte echoed, the
  peer's FIN, ours, the last ACK (the stack's side ends in LAST-ACK -> CLOSED).

Only the public API is used, so it also measures older versions of the stack
(run it with their tree on PYTHONPATH). docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop

from tcpstack.apps.echo import handle_echo
from tcpstack.core.segment import Flags, Options, Segment
from tcpstack.shell.stack import Stack
from tcpstack.wire import codec

PEER = IPv4Address("10.0.0.1").packed
VIP = "10.0.0.2"
PORT = 7
SYN, ACK, FIN, PSH = Flags.SYN, Flags.ACK, Flags.FIN, Flags.PSH


def packet(flags: Flags, sport: int, seq: int, ack: int, payload: bytes = b"") -> bytes:
    return codec.encode(Segment(PEER, IPv4Address(VIP).packed, sport, PORT, seq, ack, flags,
                                65535, Options(mss=1460 if flags & SYN else None), payload))


class Peer:
    """The far end: answers what the stack sends, through the socket pair."""

    def __init__(self, rounds: int, mode: str) -> None:
        self.rounds, self.mode = rounds, mode
        self.done = asyncio.get_running_loop().create_future()
        self.sport = 20000
        self.count = 0
        self.send: Callable[[bytes], object] = lambda pkt: None

    def start(self) -> None:
        self.send(packet(SYN, self.sport, 1000, 0))

    def output(self, raw: bytes) -> None:
        seg = codec.decode(raw)
        assert isinstance(seg, Segment) and seg.dport == self.sport, seg
        flags = int(seg.flags)
        if flags & int(SYN):  # the SYN+ACK: complete the handshake with the first byte
            self.send(packet(ACK | PSH, self.sport, 1001, seg.seq + 1, b"x"))
        elif seg.payload:  # an echo came back
            self.count += 1
            end = seg.seq + len(seg.payload)
            if self.mode == "conn":
                self.send(packet(ACK | FIN, self.sport, 1002, end))
            elif self.count < self.rounds:
                self.send(packet(ACK | PSH, self.sport, seg.ack, end, b"x"))
            elif not self.done.done():
                self.done.set_result(None)
        elif flags & int(FIN):  # the stack's FIN after ours: the last ACK, the next one
            self.send(packet(ACK, self.sport, seg.ack, seg.seq + 1))
            if self.count >= self.rounds:
                if not self.done.done():
                    self.done.set_result(None)
            else:
                self.sport += 1
                self.start()


async def run(mode: str, rounds: int, count: bool) -> tuple[float, float, float]:
    """(CPU µs, function calls, loop iterations) per round: an echo (rtt) or a
    connection (conn); calls and iterations only when `count`ing."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    theirs.setblocking(False)
    peer = Peer(rounds, mode)
    peer.send = ours.send
    stack = Stack(VIP, peer.output)
    await stack.start_server(handle_echo, PORT)
    reader = asyncio.create_task(stack.run_reader(theirs.fileno()))
    iterations = 0

    async def tick() -> None:
        nonlocal iterations
        while True:
            iterations += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick()) if count else None
    calls = 0

    def profile(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    try:
        cpu = time.process_time()
        if count:
            sys.setprofile(profile)  # this thread: the loop's
        peer.start()
        await asyncio.wait_for(peer.done, 60)
        sys.setprofile(None)
        cpu = time.process_time() - cpu
    finally:
        sys.setprofile(None)
        if ticker is not None:
            ticker.cancel()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await stack.close()
        ours.close()
        theirs.close()
    return cpu / rounds * 1e6, calls / rounds, iterations / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="echoes / connections per run")
    parser.add_argument("--repeat", type=int, default=5, help="timing runs; the best counts")
    args = parser.parse_args()
    for mode in ("rtt", "conn"):
        cpu = min(uvloop.run(run(mode, args.rounds, False))[0] for _ in range(args.repeat))
        _, calls, iterations = uvloop.run(run(mode, args.rounds, True))
        what = "echo round trip" if mode == "rtt" else "connection"
        print(f"{mode:5} per {what} (stack and peer): {cpu:7.1f} us CPU, "
              f"{calls:6.0f} calls, {iterations:4.1f} loop iterations")


if __name__ == "__main__":
    main()
