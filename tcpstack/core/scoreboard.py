"""The sender's SACK scoreboard (RFC 6675 section 2 and 4).

It records which octets above SND.UNA the peer reports holding, so loss
recovery retransmits only the holes and knows how much data has left the
network.

The peer chooses the SACK blocks, so the cost of each operation is bounded
whatever it reports (tcpstack/core/ranges.py): a block is merged in O(log n), the
SACKed total is kept as blocks arrive, and the queries made per ACK and per
segment sent (`sacked`, `sacked_below`, `unsacked`, `lost_below`) are O(log n);
`holes` costs O(log n) plus the holes it yields. At most `max_ranges` ranges
are kept: beyond that the highest one is forgotten (counted as SackPruned),
which only makes recovery more conservative, as for a peer that SACKed less.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

from tcpstack.core.ranges import MAX_OFO_RUNS, RangeSet, SeqLine
from tcpstack.core.seq import seq_diff


class Scoreboard:
    """Disjoint SACKed ranges [left, right) kept sorted, all above SND.UNA."""

    def __init__(self, max_ranges: int = MAX_OFO_RUNS,
                 stats: Counter[str] | None = None) -> None:
        self._max_ranges = max_ranges
        self._stats: Counter[str] = Counter() if stats is None else stats
        self._line = SeqLine(0)  # positions, measured from SND.UNA
        self._ranges = RangeSet()

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def clear(self) -> None:
        """Forget everything (after a timeout: RFC 2018 8, the peer may renege)."""
        self._ranges.clear()

    def _sync(self, snd_una: int) -> int:
        """The position of SND.UNA (numbering restarts while nothing is SACKed)."""
        if not self._ranges:
            self._line.reset(snd_una)
        return self._line.move(snd_una)

    def update(self, blocks: Sequence[tuple[int, int]], snd_una: int, snd_max: int) -> bool:
        """Merge the SACK blocks of one ACK; returns whether anything new was learnt."""
        una = self._sync(snd_una)
        new = False
        for left, right in blocks:
            lo = seq_diff(left, snd_una)
            hi = seq_diff(right, snd_una)
            if not 0 < lo < hi <= seq_diff(snd_max, snd_una):
                continue  # RFC 2018 5: ignore blocks outside what we sent
            before = self._ranges.total
            start, _, _ = self._ranges.add(una + lo, una + hi)
            learnt = self._ranges.total != before
            if len(self._ranges) > self._max_ranges:
                self._stats["SackPruned"] += 1
                learnt = learnt and self._ranges.pop_last()[0] != start
            new = new or learnt
        return new

    def prune(self, snd_una: int) -> None:
        """Drop what the cumulative ACK now covers."""
        self._ranges.trim_below(self._sync(snd_una))

    def sacked(self) -> int:
        """Octets above SND.UNA that the peer holds."""
        return self._ranges.total

    def sacked_below(self, seq: int) -> int:
        """Octets SACKed below `seq`."""
        return self._ranges.covered_below(self._line.at(seq))

    def unsacked(self, start: int, end: int) -> int:
        """Octets in [start, end) that the peer does not hold (0 if end <= start)."""
        lo = self._line.at(start)
        hi = lo + seq_diff(end, start)
        if hi <= lo:
            return 0
        return hi - lo - self._ranges.covered_below(hi) + self._ranges.covered_below(lo)

    def lost_below(self, snd_una: int, threshold: int) -> int:
        """RFC 6675 IsLost: un-SACKed octets below the returned sequence number have
        more than `threshold` octets SACKed above them, so they are deemed lost
        (SND.UNA when none are). Holes higher up may merely be reordered."""
        left = self._ranges.lowest_with_more_above(threshold)
        return snd_una if left is None else self._line.seq(left)

    def holes(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The un-SACKed ranges within [start, end), in order."""
        lo = self._line.at(start)
        for a, b in self._ranges.gaps(lo, lo + seq_diff(end, start)):
            yield self._line.seq(a), self._line.seq(b)
