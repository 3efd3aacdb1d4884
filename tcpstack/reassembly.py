"""Out-of-order receive queue and the SACK blocks that describe it.

RFC 9293 3.10.7.4 (seventh step) lets a receiver hold segments that arrive
ahead of RCV.NXT; keeping them means the sender need only fill the hole, and
RFC 2018 lets us tell it exactly which octets we already hold.
"""

from __future__ import annotations

from tcpstack.seq import seq_add, seq_diff

MAX_SACK_BLOCKS = 3  # what fits beside a timestamp option (RFC 2018 3)


class Reassembly:
    """Segments above RCV.NXT, kept as disjoint, sorted (seq, data) runs."""

    def __init__(self) -> None:
        self._runs: list[tuple[int, bytes]] = []
        self._fin: int | None = None  # sequence number of a FIN seen out of order
        self._recent: list[int] = []  # start seqs of runs, most recently touched first

    def __bool__(self) -> bool:
        return bool(self._runs) or self._fin is not None

    @property
    def held(self) -> int:
        """Octets held out of order."""
        return sum(len(d) for _, d in self._runs)

    def add(self, seq: int, data: bytes, fin: bool, rcv_nxt: int) -> None:
        """Keep `data` (starting at `seq` > RCV.NXT), merging with what is held."""
        if fin:
            self._fin = seq_add(seq, len(data))
        if not data:
            return
        start = seq_diff(seq, rcv_nxt)
        merged_start, merged = start, bytearray(data)
        keep: list[tuple[int, bytes]] = []
        for rseq, rdata in self._runs:
            rs = seq_diff(rseq, rcv_nxt)
            re = rs + len(rdata)
            if re < merged_start or rs > merged_start + len(merged):
                keep.append((rseq, rdata))
                continue
            # Overlapping or adjacent: join them. Where they overlap either copy may
            # be kept; a correct peer sends the same octets again.
            if rs < merged_start:
                merged[0:0] = rdata[: merged_start - rs]
                merged_start = rs
            tail = rs + len(rdata) - (merged_start + len(merged))
            if tail > 0:
                merged += rdata[len(rdata) - tail :]
        keep.append((seq_add(rcv_nxt, merged_start), bytes(merged)))
        keep.sort(key=lambda run: seq_diff(run[0], rcv_nxt))
        self._runs = keep
        head = seq_add(rcv_nxt, merged_start)
        self._recent = [head] + [s for s in self._recent if s != head and self._holds(s)]

    def _holds(self, start: int) -> bool:
        return any(rseq == start for rseq, _ in self._runs)

    def pop_ready(self, rcv_nxt: int) -> tuple[bytes, bool]:
        """The octets that now continue at RCV.NXT, and whether the FIN follows them."""
        out = bytearray()
        nxt = rcv_nxt
        while self._runs:
            rseq, rdata = self._runs[0]
            off = seq_diff(nxt, rseq)
            if off < 0:
                break
            self._runs.pop(0)
            if off < len(rdata):
                out += rdata[off:]
                nxt = seq_add(rseq, len(rdata))
        self._recent = [s for s in self._recent if self._holds(s)]
        fin = self._fin is not None and self._fin == nxt
        if fin:
            self._fin = None
        return bytes(out), fin

    def sack_blocks(self) -> list[tuple[int, int]]:
        """Up to three blocks, the most recently received first (RFC 2018 4)."""
        starts = self._recent[:MAX_SACK_BLOCKS]
        runs = dict(self._runs)
        return [(s, seq_add(s, len(runs[s]))) for s in starts]
