"""Sorted, disjoint ranges of sequence space with bounded cost per operation.

Both ends of a connection keep a set of octet ranges above a moving edge: the
receiver's out-of-order runs above RCV.NXT (tcpstack/reassembly.py) and the
sender's SACK scoreboard above SND.UNA (tcpstack/scoreboard.py). A peer chooses
how many ranges there are (one-octet segments with one-octet gaps make one range
per segment), so every operation here costs O(log n) comparisons, plus a memmove
of at most n list slots, plus the ranges it removes (each range is removed once,
so that part is amortised O(1)); n is capped by the callers.

Sequence numbers wrap at 2**32, so they cannot be sorted as they are. `SeqLine`
maps them to plain integers ("positions") through `seq_diff` from the moving edge:
all the ranges lie within 2**31 of it, where that mapping preserves the order.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import accumulate
from operator import sub

from tcpstack.seq import seq_add, seq_diff

# The default cap on ranges per connection and direction (TcpConfig.max_ofo_runs).
# A sane peer never comes near it: the default 1 MiB window holds 718 full-sized
# segments, so even if every other one were lost there would be 359 runs (978 at
# the 536-octet minimum MSS). It keeps one connection's cost per segment a bisect
# plus a memmove of at most 8 KiB of pointers, and its bookkeeping under 100 KiB.
MAX_OFO_RUNS = 1024


class SeqLine:
    """Sequence numbers near a moving reference point as plain, ordered integers."""

    def __init__(self, ref: int) -> None:
        self.ref = ref  # a sequence number (RCV.NXT or SND.UNA)
        self.pos = 0  # its position

    def move(self, ref: int) -> int:
        """Advance the reference to `ref` (forward by less than 2**31); its position."""
        self.pos += seq_diff(ref, self.ref)
        self.ref = ref
        return self.pos

    def reset(self, ref: int) -> None:
        """Start again at position 0, so positions stay small while nothing is held."""
        self.ref, self.pos = ref, 0

    def at(self, seq: int) -> int:
        """The position of `seq`, which must lie within 2**31 of the reference."""
        return self.pos + seq_diff(seq, self.ref)

    def seq(self, pos: int) -> int:
        """The sequence number at `pos`."""
        return seq_add(self.ref, pos - self.pos)


class RangeSet:
    """Disjoint, non-adjacent half-open integer ranges [lo, hi), sorted.

    Two parallel sorted lists (left and right edges) make every search a bisect;
    `total` (the octets covered) is kept as ranges come and go, and prefix sums
    of the lengths are rebuilt at most once per change, when first asked for.
    """

    def __init__(self) -> None:
        self._los: list[int] = []
        self._his: list[int] = []
        self.total = 0
        self._cum: list[int] | None = None  # _cum[k]: octets in the ranges below index k

    def __len__(self) -> int:
        return len(self._los)

    def clear(self) -> None:
        self._los, self._his, self.total, self._cum = [], [], 0, None

    def add(self, lo: int, hi: int) -> tuple[int, int, list[tuple[int, int]]]:
        """Insert [lo, hi) (lo < hi), joining every range it overlaps or touches.
        Returns the resulting range and the ranges it absorbed, in order."""
        i = bisect_left(self._his, lo)  # first range that ends at or after lo
        j = bisect_right(self._los, hi, i)  # past the last range that starts by hi
        absorbed = list(zip(self._los[i:j], self._his[i:j], strict=True))
        if absorbed:
            lo = min(lo, absorbed[0][0])
            hi = max(hi, absorbed[-1][1])
            self.total -= sum(map(sub, self._his[i:j], self._los[i:j]))
        self._los[i:j] = [lo]
        self._his[i:j] = [hi]
        self.total += hi - lo
        self._cum = None
        return lo, hi, absorbed

    def pop_last(self) -> tuple[int, int]:
        """Remove and return the highest range."""
        lo, hi = self._los.pop(), self._his.pop()
        self.total -= hi - lo
        self._cum = None
        return lo, hi

    def pop_through(self, pos: int) -> list[tuple[int, int]]:
        """Remove and return, in order, every range that starts at or below `pos`."""
        k = bisect_right(self._los, pos)
        gone = list(zip(self._los[:k], self._his[:k], strict=True))
        self._drop_first(k)
        return gone

    def trim_below(self, pos: int) -> None:
        """Forget every octet below `pos`."""
        self._drop_first(bisect_right(self._his, pos))  # the ranges that end by pos
        if self._los and self._los[0] < pos:
            self.total -= pos - self._los[0]
            self._los[0] = pos

    def _drop_first(self, k: int) -> None:
        self.total -= sum(map(sub, self._his[:k], self._los[:k]))
        del self._los[:k], self._his[:k]
        self._cum = None

    def last(self) -> tuple[int, int] | None:
        """The highest range."""
        return (self._los[-1], self._his[-1]) if self._los else None

    def _prefix(self) -> list[int]:
        if self._cum is None:
            self._cum = list(accumulate(map(sub, self._his, self._los), initial=0))
        return self._cum

    def covered_below(self, pos: int) -> int:
        """Octets covered below `pos`: O(log n) once the prefix sums are built."""
        k = bisect_right(self._los, pos)  # ranges [0, k) start at or below pos
        if not k:
            return 0
        return self._prefix()[k] - max(0, self._his[k - 1] - pos)

    def lowest_with_more_above(self, threshold: int) -> int | None:
        """The left edge of the highest range such that it and the ranges above it
        cover more than `threshold` octets (None when no range does): O(log n)."""
        cum = self._prefix()
        # cum[k] < total - threshold  <=>  ranges k.. cover more than threshold.
        k = min(bisect_left(cum, self.total - threshold), len(self._los)) - 1
        return self._los[k] if k >= 0 else None

    def gaps(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The uncovered parts of [start, end), in order: O(log n + what it yields)."""
        pos = start
        for i in range(bisect_right(self._his, start), len(self._los)):
            if pos >= end:
                return
            lo, hi = self._los[i], self._his[i]
            if pos < lo:
                yield pos, min(lo, end)
            pos = max(pos, hi)
        if pos < end:
            yield pos, end
