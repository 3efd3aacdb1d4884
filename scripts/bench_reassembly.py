#!/usr/bin/env python3
"""Time the out-of-order queue and the SACK scoreboard under adversarial input.

One-octet segments with one-octet gaps (ascending, descending, random order) go
into tcpstack.core.reassembly.Reassembly; one-octet SACK blocks, four per ACK, go into
tcpstack.core.scoreboard.Scoreboard, each ACK followed by the queries loss recovery
makes. Each is timed for the code in this tree (with the default cap on runs and
without any cap) and for the code of a baseline revision read with `git show`
(the quadratic queue before issue 8; it is run on far fewer segments, as its cost
per segment grows with the square of the queue). Prints microseconds per segment.

    .venv/bin/python scripts/bench_reassembly.py [--count 100000] [--old-count 500]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tcpstack.core import reassembly, scoreboard  # noqa: E402
from tcpstack.core.ranges import MAX_OFO_RUNS  # noqa: E402
from tcpstack.core.seq import seq_add, seq_diff  # noqa: E402

BASELINE = "ac63a3b"  # the last revision with the quadratic reassembly and scoreboard
BASE = 2**32 - 1000  # across the wrap, as on a real connection now and then
UNCAPPED = 10**9


def orders(n: int) -> dict[str, list[int]]:
    keys = list(range(n))
    shuffled = keys[:]
    random.Random(8).shuffle(shuffled)
    return {"ascending": keys, "descending": keys[::-1], "random": shuffled}


def load_baseline(rev: str, name: str) -> types.ModuleType:
    """tcpstack/<name>.py as it was at `rev`, as a module of its own."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:tcpstack/{name}.py"],
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType(f"baseline_{name}")
    exec(compile(source, f"{rev}:tcpstack/{name}.py", "exec"), module.__dict__)
    return module


def reassembly_run(make: Callable[[], Any], keys: list[int]) -> float:
    """Microseconds per one-octet segment added."""
    q = make()
    start = time.perf_counter()
    for k in keys:
        q.add(seq_add(BASE, 2 * k + 1), b"x", False, BASE)
    return (time.perf_counter() - start) / len(keys) * 1e6


def scoreboard_run(make: Callable[[], Any], keys: list[int]) -> float:
    """Microseconds per one-octet SACK block: four per ACK, then the queries that
    tcb.py makes per ACK in recovery (the old code summed the holes for the pipe)."""
    sb = make()
    top = seq_add(BASE, 2 * len(keys) + 2)
    unsacked = getattr(sb, "unsacked", None) or (
        lambda a, b: sum(seq_diff(y, x) for x, y in sb.holes(a, b)))
    start = time.perf_counter()
    for i in range(0, len(keys), 4):
        sb.update([(seq_add(BASE, 2 * k + 1), seq_add(BASE, 2 * k + 2))
                   for k in keys[i : i + 4]], BASE, top)
        sb.sacked()
        end = sb.lost_below(BASE, 2 * 1460)
        sb.sacked_below(top)
        unsacked(BASE, end)
        next(sb.holes(BASE, end), None)
    return (time.perf_counter() - start) / len(keys) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000,
                        help="segments (blocks) for this tree's code (default 100000)")
    parser.add_argument("--old-count", type=int, default=500,
                        help="segments (blocks) for the baseline (default 500)")
    parser.add_argument("--baseline", default=BASELINE,
                        help=f"git revision of the old code (default {BASELINE}); '' skips it")
    args = parser.parse_args()
    suites = [("reassembly", reassembly_run, reassembly.Reassembly),
              ("scoreboard", scoreboard_run, scoreboard.Scoreboard)]
    print(f"{'':11} {'order':10} {'code':24} {'segments':>9} {'us/segment':>11}")
    for name, run, cls in suites:
        old = load_baseline(args.baseline, name) if args.baseline else None
        for order, keys in orders(args.count).items():
            rows = [(f"new, cap {MAX_OFO_RUNS}", keys, lambda c=cls: c(MAX_OFO_RUNS)),
                    ("new, no cap", keys, lambda c=cls: c(UNCAPPED))]
            if old is not None:
                old_keys = orders(args.old_count)[order]
                rows.append((f"{args.baseline} (old)", old_keys,
                             getattr(old, cls.__name__)))
            for label, ks, make in rows:
                print(f"{name:11} {order:10} {label:24} {len(ks):9} {run(make, ks):11.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
