"""Out-of-order receive queue and the SACK blocks that describe it.

RFC 9293 3.10.7.4 (seventh step) lets a receiver hold segments that arrive
ahead of RCV.NXT; keeping them means the sender need only fill the hole, and
RFC 2018 lets us tell it exactly which octets we already hold.

The peer decides how the held octets are cut up, so every operation has a
bounded cost whatever it sends (tcpstack/core/ranges.py): runs are found by bisection
and merged on insert, their payload is a list of pieces joined only when
delivered, and at most `max_runs` runs are held. Beyond that cap the run
farthest from RCV.NXT goes, as Linux's tcp_prune_ofo_queue() drops from the far
end: the data nearest the hole is the data that can be delivered soonest.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from tcpstack.core.ranges import MAX_OFO_RUNS, RangeSet, SeqLine
from tcpstack.core.segment import Payload

MAX_SACK_BLOCKS: Final = 3  # what fits beside a timestamp option (RFC 2018 3)
RECENT_KEPT: Final = 4  # runs remembered for the SACK blocks, as Linux's TCP_NUM_SACKS
# Neighbouring pieces of a run that together are at most this long are joined
# as they meet (copying at most this much), so a run of one-octet segments costs
# one Python object per ~COALESCE/2 octets rather than one per octet; full-sized
# segments are never copied.
COALESCE: Final = 1024


def _concat(a: list[Payload], b: list[Payload]) -> list[Payload]:
    """The pieces of `a` followed by those of `b` (both lists may be reused)."""
    if a and b and len(a[-1]) + len(b[0]) <= COALESCE:
        b[0] = b"".join((a.pop(), b[0]))  # any two buffers, one copy
    a += b
    return a


class Reassembly:
    """Segments above RCV.NXT, kept as disjoint, sorted, non-adjacent runs.

    Counters (Linux's names): OfoQueue, segments queued out of order
    (TCPOFOQueue); OfoDrop, such segments dropped because `max_runs` runs were
    held and the segment lay above them all (TCPOFODrop); OfoPruned, held runs
    discarded, highest first, to make room for a segment nearer RCV.NXT.
    """

    def __init__(self, max_runs: int = MAX_OFO_RUNS, stats: Counter[str] | None = None) -> None:
        self._max_runs = max_runs
        self._stats: Counter[str] = Counter() if stats is None else stats
        self._line = SeqLine(0)  # positions, measured from RCV.NXT
        self._runs = RangeSet()
        self._data: dict[int, tuple[int, list[Payload]]] = {}  # start -> (end, pieces)
        self._fin: int | None = None  # sequence number of a FIN seen out of order
        self._recent: list[int] = []  # starts of runs, most recently touched first

    def __bool__(self) -> bool:
        return bool(self._runs) or self._fin is not None

    @property
    def held(self) -> int:
        """Octets held out of order."""
        return self._runs.total

    def _sync(self, rcv_nxt: int) -> int:
        """The position of RCV.NXT (numbering restarts while nothing is held)."""
        if not self._runs:
            self._line.reset(rcv_nxt)
        return self._line.move(rcv_nxt)

    def add(self, seq: int, data: Payload, fin: bool, rcv_nxt: int) -> tuple[int, int] | None:
        """Keep `data` (starting at `seq` > RCV.NXT), merging with what is held.
        Where it overlaps held octets the held copy stays: a correct peer sends
        the same octets again. Returns the first stretch of `data` that was held
        already, as sequence numbers (for a D-SACK, RFC 2883 4.1.3), or None."""
        nxt = self._sync(rcv_nxt)
        start = self._line.at(seq)
        end = start + len(data)
        if start < nxt:  # the caller trims to RCV.NXT; stay safe if it did not
            data, start = data[nxt - start :], nxt
        repeated = None
        if data:
            kept, repeated = self._keep(start, data)
            if not kept:
                return None
        if fin:
            self._fin = self._line.seq(end)
        return repeated

    def _keep(self, start: int, data: Payload) -> tuple[bool, tuple[int, int] | None]:
        """Insert one segment's octets: whether they were kept (the cap may drop
        them), and the first stretch of them that was held already (`add`)."""
        self._stats["OfoQueue"] += 1
        end = start + len(data)
        lo, hi, absorbed = self._runs.add(start, end)
        if len(self._runs) > self._max_runs and self._prune() == lo:
            self._stats["OfoDrop"] += 1  # the new run was the highest one
            return False, None
        seq = self._line.seq
        repeated = next(((seq(max(start, run_lo)), seq(min(end, run_hi)))
                         for run_lo, run_hi in absorbed
                         if max(start, run_lo) < min(end, run_hi)), None)
        # The new octets fill the gaps between the runs they join.
        pieces: list[Payload] = []
        pos = start
        for run_lo, run_hi in absorbed:
            if pos < run_lo:
                pieces = _concat(pieces, [data[pos - start : run_lo - start]])
            pieces = _concat(pieces, self._data.pop(run_lo)[1])
            pos = max(pos, run_hi)
        if pos < end:
            pieces = _concat(pieces, [data[pos - start :]])
        self._data[lo] = (hi, pieces)
        # RFC 2018 4: the first block holds the newest segment; the others repeat
        # the most recently reported ones still held apart.
        self._recent = [lo, *(r for r in self._recent if not lo <= r < hi)][:RECENT_KEPT]
        return True, repeated

    def _prune(self) -> int:
        """Drop the highest run (over the cap); its start. RFC 2018 8 lets a
        receiver discard SACKed data: the sender keeps it until cumulatively ACKed."""
        lo, hi = self._runs.pop_last()
        if lo in self._data:
            del self._data[lo]
            self._stats["OfoPruned"] += 1
            if self._fin is not None and self._line.at(self._fin) == hi:
                self._fin = None  # it came with the octets just discarded
        if lo in self._recent:
            self._recent.remove(lo)
        return lo

    def pop_ready(self, rcv_nxt: int) -> tuple[bytes, bool]:
        """The octets that now continue at RCV.NXT, and whether the FIN follows them."""
        nxt = start = self._sync(rcv_nxt)
        out: list[Payload] = []
        for lo, hi in self._runs.pop_through(start):
            pieces = self._data.pop(lo)[1]
            if hi > nxt:  # only the last run can reach past RCV.NXT
                i, skip = 0, nxt - lo
                while skip >= len(pieces[i]):
                    skip -= len(pieces[i])
                    i += 1
                out.append(pieces[i][skip:])
                out += pieces[i + 1 :]
                nxt = hi
        self._recent = [r for r in self._recent if r > start]
        fin = self._fin is not None and self._fin == self._line.seq(nxt)
        if fin:
            self._fin = None
        return b"".join(out), fin

    def sack_blocks(self) -> list[tuple[int, int]]:
        """Up to three blocks, the most recently received first (RFC 2018 4)."""
        seq = self._line.seq
        return [(seq(lo), seq(self._data[lo][0])) for lo in self._recent[:MAX_SACK_BLOCKS]]
