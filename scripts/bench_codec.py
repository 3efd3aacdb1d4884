#!/usr/bin/env python3
"""Micro-benchmark of tcpstack/wire/codec.py: the fast codec against the dpkt reference.

No root, no network: `.venv/bin/python scripts/bench_codec.py`. Prints µs per call,
the best of `--repeat` timing runs (the least disturbed by other load), for decode
and encode of a bare ACK (the timestamp option every Linux segment carries) and of a
full 1,460-byte segment (MTU 1500), the Internet checksum of that segment alone, and
what an IntFlag test costs next to a plain int's (why `Segment.flags` is an int).
docs/codec.md records a run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import timeit
from collections.abc import Callable
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dpkt

from tcpstack.core.segment import ACK, PSH, Flags, Options, Segment
from tcpstack.wire import codec


def segment(payload: bytes) -> Segment:
    return Segment(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 40000, 80, 0x12345678, 0x9ABCDEF0,
                   ACK | PSH if payload else ACK, 64240,
                   Options(timestamp=(123456, 654321)), payload)


def per_call_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="calls per timing run")
    parser.add_argument("--repeat", type=int, default=7, help="timing runs; the best counts")
    args = parser.parse_args()

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    print(f"{date.today()}  {cpu}, {os.cpu_count()} cores  Python {platform.python_version()}"
          f"  dpkt {dpkt.__version__}")
    print(f"{'µs per call':34} {'fast':>8} {'dpkt':>8} {'ratio':>6}")

    def row(name: str, fast: Callable[[], object], ref: Callable[[], object]) -> None:
        f, r = (per_call_us(fn, args.number, args.repeat) for fn in (fast, ref))
        print(f"{name:34} {f:8.2f} {r:8.2f} {r / f:5.1f}x")

    for label, payload in (("ACK, 0 bytes", b""), ("segment, 1460 bytes", os.urandom(1460))):
        seg = segment(payload)
        packet = codec.encode_reference(seg)
        assert codec.decode_fast(packet) == codec.decode_reference(packet) == seg
        assert codec.encode_fast(seg) == packet
        row(f"decode {label}", lambda p=packet: codec.decode_fast(p),
            lambda p=packet: codec.decode_reference(p))
        row(f"encode {label}", lambda s=seg: codec.encode_fast(s),
            lambda s=seg: codec.encode_reference(s))
    tcp = codec.encode_reference(segment(os.urandom(1460)))[20:]
    row("checksum of 1480 bytes", lambda: -codec._word_sum(tcp) % 0xFFFF,
        lambda: dpkt.in_cksum(tcp))
    flags, plain = Flags.ACK | Flags.PSH, ACK | PSH
    row("a flag test (int vs IntFlag)", lambda: plain & ACK, lambda: flags & Flags.ACK)


if __name__ == "__main__":
    main()
