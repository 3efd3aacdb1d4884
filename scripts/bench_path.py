#!/usr/bin/env python3
"""Micro-benchmark of the packet path alone: codec and TCB, µs per data segment.

No root, no TUN, no event loop: `.venv/bin/python scripts/bench_path.py`. One
TCB in ESTABLISHED (MSS 1,448 with timestamps, as against Linux) and, for
each direction of a bulk transfer, the work the daemon does per data segment
besides its system calls and its shell:

- `upload`: decode a received data segment (its checksum verified), hand it
  to the TCB, encode the ACKs it sends (every second segment, RFC 5681 4.2);
  the application reads everything at once every 32 segments;
- `download`: the TCB sends from a full send buffer and each segment is
  encoded (checksummed); an ACK for every second one is built and taken in.

The packets of the upload are encoded before the clock starts. CPU time
(`time.process_time`), the best of `--repeat` runs. It says which form of the
core ran (`tcpstack.native`: compiled, or plain Python with TCPSTACK_PURE=1),
so the two can be compared on the same machine within a minute.
docs/benchmarks.md records runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tcpstack import native
from tcpstack.core.config import TcpConfig
from tcpstack.core.segment import ACK, SYN, Options, Segment
from tcpstack.core.seq import seq_add
from tcpstack.core.tcb import Tcb
from tcpstack.wire import codec

PEER, US = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
MSS = 1448


def established(rcv_buf: int) -> tuple[Tcb, int]:
    """A passive TCB after the handshake, and its first sequence number to send."""
    syn = Segment(PEER, US, 40000, 80, 1000, 0, SYN, 64240,
                  Options(mss=MSS + 12, wscale=7, sack_permitted=True, timestamp=(1, 0)))
    tcb = Tcb.open_passive(TcpConfig(offload=False, rcv_buf=rcv_buf), syn, 5000, 1.0, Counter())
    [synack] = tcb.take_segments()
    assert synack.options.timestamp is not None
    tcb.receive(Segment(PEER, US, 40000, 80, 1001, 5001, ACK, 2000,
                        Options(timestamp=(2, synack.options.timestamp[0]))), 1.0)
    tcb.take_segments()
    tcb.take_events()
    return tcb, 5001


def upload(segments: int) -> float:
    """CPU µs per received data segment."""
    tcb, _ = established(1 << 22)
    data = os.urandom(MSS)
    packets = [codec.encode(Segment(PEER, US, 40000, 80, seq_add(1001, i * MSS), 5001, ACK,
                                    2000, Options(timestamp=(3 + i, 7)), data))
               for i in range(segments)]
    now = 1.0
    start = time.process_time()
    for i, packet in enumerate(packets):
        seg = codec.decode(packet)
        assert isinstance(seg, Segment)
        tcb.receive(seg, now)
        for out in tcb.take_segments():
            codec.encode(out)
        tcb.take_events()
        if i % 32 == 31:
            tcb.consumed(32 * MSS, now)
        now += 1e-5
    return (time.process_time() - start) / segments * 1e6


def download(segments: int) -> float:
    """CPU µs per sent data segment, the ACKs' processing included."""
    tcb, _ = established(1 << 20)
    block = bytes(65536)
    now, tsval, sent = 1.0, 3, 0
    start = time.process_time()
    while sent < segments:
        if tcb.send_queue < 1 << 18:
            tcb.send(block, now)
        ends = []
        for out in tcb.take_segments():
            codec.encode(out)
            if out.payload:
                ends.append(seq_add(out.seq, len(out.payload)))
        sent += len(ends)
        now += 5e-5
        for end in ends[1::2] + ends[-1:] * (len(ends) % 2):  # every second, and the last
            tsval += 1
            tcb.receive(Segment(PEER, US, 40000, 80, 1001, end, ACK, 2000,
                                Options(timestamp=(tsval, 0))), now)
        tcb.take_events()
    return (time.process_time() - start) / sent * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=20000, help="data segments per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best counts")
    args = parser.parse_args()
    print(f"packet path ({native.describe()}), best of {args.repeat} runs:")
    for name, run in (("upload", upload), ("download", download)):
        best = min(run(args.segments) for _ in range(args.repeat))
        print(f"  {name:8} {best:6.2f} us CPU per data segment")


if __name__ == "__main__":
    main()
