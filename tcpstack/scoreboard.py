"""The sender's SACK scoreboard (RFC 6675 section 2 and 4).

It records which octets above SND.UNA the peer reports holding, so loss
recovery retransmits only the holes and knows how much data has left the
network.
"""

from __future__ import annotations

from collections.abc import Iterator

from tcpstack.seq import seq_add, seq_diff, seq_lt


class Scoreboard:
    """Disjoint SACKed ranges [left, right) kept sorted, all above SND.UNA."""

    def __init__(self) -> None:
        self._ranges: list[tuple[int, int]] = []

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def clear(self) -> None:
        """Forget everything (after a timeout: RFC 2018 8, the peer may renege)."""
        self._ranges = []

    def update(self, blocks: list[tuple[int, int]], snd_una: int, snd_max: int) -> bool:
        """Merge the SACK blocks of one ACK; returns whether anything new was learnt."""
        new = False
        for left, right in blocks:
            lo = seq_diff(left, snd_una)
            hi = seq_diff(right, snd_una)
            if not 0 < lo < hi <= seq_diff(snd_max, snd_una):
                continue  # RFC 2018 5: ignore blocks outside what we sent
            before = self.sacked()
            self._ranges.append((left, right))
            self._merge(snd_una)
            new = new or self.sacked() != before
        return new

    def _merge(self, snd_una: int) -> None:
        rel = sorted((seq_diff(a, snd_una), seq_diff(b, snd_una)) for a, b in self._ranges)
        out: list[list[int]] = []
        for lo, hi in rel:
            if out and lo <= out[-1][1]:
                out[-1][1] = max(out[-1][1], hi)
            else:
                out.append([lo, hi])
        self._ranges = [(seq_add(snd_una, lo), seq_add(snd_una, hi)) for lo, hi in out]

    def prune(self, snd_una: int) -> None:
        """Drop what the cumulative ACK now covers."""
        self._ranges = [
            (snd_una if seq_lt(left, snd_una) else left, right)
            for left, right in self._ranges
            if seq_lt(snd_una, right)
        ]

    def sacked(self) -> int:
        """Octets above SND.UNA that the peer holds."""
        return sum(seq_diff(right, left) for left, right in self._ranges)

    def sacked_below(self, seq: int) -> int:
        """Octets SACKed below `seq`."""
        total = 0
        for left, right in self._ranges:
            if not seq_lt(left, seq):
                break
            total += seq_diff(right if seq_lt(right, seq) else seq, left)
        return total

    def lost_below(self, snd_una: int, threshold: int) -> int:
        """RFC 6675 IsLost: un-SACKed octets below the returned sequence number have
        more than `threshold` octets SACKed above them, so they are deemed lost
        (SND.UNA when none are). Holes higher up may merely be reordered."""
        above = 0
        for left, right in reversed(self._ranges):
            above += seq_diff(right, left)
            if above > threshold:
                return left
        return snd_una

    def high(self, snd_una: int) -> int:
        """The highest SACKed sequence number (SND.UNA when nothing is SACKed)."""
        return self._ranges[-1][1] if self._ranges else snd_una

    def holes(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The un-SACKed ranges within [start, end), in order."""
        pos = start
        for left, right in self._ranges:
            if not seq_lt(pos, end):
                return
            if seq_lt(pos, left):
                yield pos, left if seq_lt(left, end) else end
            if seq_lt(pos, right):
                pos = right
        if seq_lt(pos, end):
            yield pos, end
