"""Sorted, disjoint ranges of sequence space with bounded cost per operation.

Both ends of a connection keep a set of octet ranges above a moving edge: the
receiver's out-of-order runs above RCV.NXT (tcpstack/core/reassembly.py) and the
sender's SACK scoreboard above SND.UNA (tcpstack/core/scoreboard.py). A peer chooses
how many ranges there are (one-octet segments with one-octet gaps make one range
per segment), so every operation here costs O(log n) comparisons, plus moves of
O(CHUNK + n / CHUNK) list slots in C, plus the ranges it removes (each range is
removed once, so that part is amortised O(1)); n is capped by the callers.

Sequence numbers wrap at 2**32, so they cannot be sorted as they are. `SeqLine`
maps them to plain integers ("positions") through `seq_diff` from the moving edge:
all the ranges lie within 2**31 of it, where that mapping preserves the order.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import accumulate
from operator import sub
from typing import Final

from tcpstack.core.seq import seq_add, seq_diff

# The default cap on ranges per connection and direction (TcpConfig.max_ofo_runs).
# A sane peer never comes near it: the default 1 MiB window holds 718 full-sized
# segments, so even if every other one were lost there would be 359 runs (978 at
# the 536-octet minimum MSS). At the cap, with one-octet runs, a connection's
# out-of-order queue takes about 230 KiB and its scoreboard about 80 KiB.
MAX_OFO_RUNS: Final = 1024


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


CHUNK: Final = 64  # ranges per chunk of a RangeSet: split at twice this, joined below half


class RangeSet:
    """Disjoint, non-adjacent half-open integer ranges [lo, hi), sorted.

    The ranges are kept in chunks of about CHUNK (left and right edges in two
    parallel lists per chunk, each chunk's octet count beside it), as in
    sortedcontainers' SortedList: finding a range is two bisects, inserting one
    moves at most 2 * CHUNK list slots, and the octets covered below a point (for
    RFC 6675's pipe and IsLost) cost a sum over the chunks plus one chunk, all in
    C. `total` (the octets covered) is kept as ranges come and go.
    """

    def __init__(self, chunk: int = CHUNK) -> None:
        self._chunk = chunk
        self.clear()

    def clear(self) -> None:
        self._los: list[list[int]] = []  # per chunk: left edges
        self._his: list[list[int]] = []  # per chunk: right edges
        self._firsts: list[int] = []  # per chunk: its first left edge
        self._lasts: list[int] = []  # per chunk: its last right edge
        self._sums: list[int] = []  # per chunk: octets covered
        self._len = 0
        self.total = 0

    def __len__(self) -> int:
        return self._len

    def add(self, lo: int, hi: int) -> tuple[int, int, list[tuple[int, int]]]:
        """Insert [lo, hi) (lo < hi), joining every range it overlaps or touches.
        Returns the resulting range and the ranges it absorbed, in order."""
        if not self._len:
            self._los, self._his = [[lo]], [[hi]]
            self._firsts, self._lasts, self._sums = [lo], [hi], [hi - lo]
            self._len, self.total = 1, hi - lo
            return lo, hi, []
        c1 = bisect_left(self._lasts, lo)  # first chunk with a range ending at or after lo
        c2 = bisect_right(self._firsts, hi) - 1  # last chunk with a range starting by hi
        if c1 > c2:  # touches nothing: at the end of chunk c2, or first of all
            c1 = max(c2, 0)
            i = len(self._los[c1]) if c2 >= 0 else 0
            absorbed = self._replace(c1, i, i, lo, hi)
        elif c1 == c2:
            i = bisect_left(self._his[c1], lo)
            absorbed = self._replace(c1, i, bisect_right(self._los[c1], hi), lo, hi)
        else:  # from inside chunk c1 to inside chunk c2: what lies between goes whole
            i = bisect_left(self._his[c1], lo)
            j = bisect_right(self._los[c2], hi)
            whole: list[tuple[int, int]] = []
            for c in range(c1 + 1, c2):
                whole += zip(self._los[c], self._his[c], strict=True)
            whole += zip(self._los[c2][:j], self._his[c2][:j], strict=True)
            self._len -= len(whole)
            self.total -= sum(b - a for a, b in whole)
            del self._los[c2][:j], self._his[c2][:j]
            self._refresh(c2)
            hi = max(hi, whole[-1][1])
            absorbed = self._replace(c1, i, len(self._los[c1]), lo, hi) + whole
            self._drop_chunks(c1 + 1, c2 + (not self._los[c2]))
            self._balance(c1 + 1)
        if absorbed:
            lo, hi = min(lo, absorbed[0][0]), max(hi, absorbed[-1][1])
        self._balance(c1)
        return lo, hi, absorbed

    def _replace(self, c: int, i: int, j: int, lo: int, hi: int) -> list[tuple[int, int]]:
        """Put [lo, hi) joined with ranges i..j-1 of chunk c in their place."""
        los, his = self._los[c], self._his[c]
        absorbed = list(zip(los[i:j], his[i:j], strict=True))
        if absorbed:
            lo, hi = min(lo, los[i]), max(hi, his[j - 1])
        los[i:j] = [lo]
        his[i:j] = [hi]
        self._len += 1 - len(absorbed)
        grown = hi - lo - sum(b - a for a, b in absorbed)
        self.total += grown
        self._sums[c] += grown
        self._firsts[c], self._lasts[c] = los[0], his[-1]
        return absorbed

    def _refresh(self, c: int) -> None:
        """Recompute what is kept per chunk for chunk c (O(CHUNK), in C)."""
        los, his = self._los[c], self._his[c]
        if los:
            self._firsts[c], self._lasts[c] = los[0], his[-1]
            self._sums[c] = sum(map(sub, his, los))

    def _drop_chunks(self, c: int, d: int) -> None:
        """Forget the bookkeeping of chunks c..d-1 (their ranges are accounted for)."""
        for per_chunk in (self._los, self._his, self._firsts, self._lasts, self._sums):
            del per_chunk[c:d]

    def _balance(self, c: int) -> None:
        """Keep chunk c between CHUNK / 2 and 2 * CHUNK ranges (bar a lone chunk)."""
        if c >= len(self._los):
            return
        if not self._los[c]:
            self._drop_chunks(c, c + 1)
            return
        if len(self._los[c]) < self._chunk // 2 and len(self._los) > 1:
            if c == len(self._los) - 1:
                c -= 1
            self._los[c] += self._los[c + 1]
            self._his[c] += self._his[c + 1]
            self._drop_chunks(c + 1, c + 2)
            self._refresh(c)
        if len(self._los[c]) > 2 * self._chunk:
            half = len(self._los[c]) // 2
            los, his = self._los[c], self._his[c]
            self._los.insert(c + 1, los[half:])
            self._his.insert(c + 1, his[half:])
            for per_chunk in (self._firsts, self._lasts, self._sums):
                per_chunk.insert(c + 1, 0)
            del los[half:], his[half:]
            self._refresh(c)
            self._refresh(c + 1)

    def pop_last(self) -> tuple[int, int]:
        """Remove and return the highest range."""
        lo, hi = self._los[-1].pop(), self._his[-1].pop()
        self._len -= 1
        self.total -= hi - lo
        self._sums[-1] -= hi - lo
        if self._his[-1]:
            self._lasts[-1] = self._his[-1][-1]
        self._balance(len(self._los) - 1)
        return lo, hi

    def pop_through(self, pos: int) -> list[tuple[int, int]]:
        """Remove and return, in order, every range that starts at or below `pos`."""
        c = bisect_right(self._firsts, pos) - 1
        if c < 0:
            return []
        return self._cut(c, bisect_right(self._los[c], pos))

    def trim_below(self, pos: int) -> None:
        """Forget every octet below `pos`."""
        if not self._len:
            return  # the common case: every cumulative ACK prunes an empty scoreboard
        c = bisect_right(self._lasts, pos)  # chunks before c end by pos
        self._cut(c, bisect_right(self._his[c], pos) if c < len(self._los) else 0)
        if self._len and self._los[0][0] < pos:
            self.total -= pos - self._los[0][0]
            self._los[0][0] = pos
            self._refresh(0)

    def _cut(self, c: int, j: int) -> list[tuple[int, int]]:
        """Remove chunks 0..c-1 and the first j ranges of chunk c; what went, in order."""
        gone: list[tuple[int, int]] = []
        for los, his in zip(self._los[:c], self._his[:c], strict=True):
            gone += zip(los, his, strict=True)
        if j:
            gone += zip(self._los[c][:j], self._his[c][:j], strict=True)
            del self._los[c][:j], self._his[c][:j]
            self._refresh(c)
        self._drop_chunks(0, c)
        self._len -= len(gone)
        self.total -= sum(hi - lo for lo, hi in gone)
        self._balance(0)
        return gone

    def covered_below(self, pos: int) -> int:
        """Octets covered below `pos`."""
        c = bisect_right(self._firsts, pos) - 1
        if c < 0:
            return 0
        los, his = self._los[c], self._his[c]
        k = bisect_right(los, pos)  # ranges [0, k) of chunk c start at or below pos
        inside = sum(map(sub, his[:k], los[:k])) - max(0, his[k - 1] - pos)
        return sum(self._sums[:c]) + inside

    def lowest_with_more_above(self, threshold: int) -> int | None:
        """The left edge of the highest range such that it and the ranges above it
        cover more than `threshold` octets (None when no range does)."""
        tops = list(accumulate(reversed(self._sums)))  # octets in the top 1, 2... chunks
        t = bisect_right(tops, threshold)  # the top t chunks cover no more than that
        if t == len(tops):
            return None
        c = len(tops) - 1 - t
        los, his = self._los[c], self._his[c]
        # Octets in the top m ranges of chunk c and the chunks above it.
        tail = list(accumulate(map(sub, reversed(his), reversed(los)),
                               initial=tops[t - 1] if t else 0))
        return los[len(los) - max(1, bisect_right(tail, threshold))]

    def gaps(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The uncovered parts of [start, end), in order: O(log n + what it yields)."""
        pos = start
        for c in range(bisect_right(self._lasts, start), len(self._los)):
            los, his = self._los[c], self._his[c]
            for i in range(bisect_right(his, pos), len(los)):
                if pos >= end:
                    return
                if pos < los[i]:
                    yield pos, min(los[i], end)
                pos = max(pos, his[i])
        if pos < end:
            yield pos, end
