"""The send buffer: bytes from SND.UNA onward (unacknowledged, then unsent)."""

from __future__ import annotations

from bisect import bisect_right
from typing import Final

from tcpstack.core.segment import Payload

#: Writes shorter than this are gathered into one bytearray block, so a stream of
#: tiny writes (an interactive echo) does not cost one block per byte.
GATHER_BELOW: Final = 512
#: A gathering block is closed once it holds this much.
GATHER_MAX: Final = 65536
#: Pieces from this long on are handed out as views, not copies: below it a copy
#: (and the codec's join of a bytes object) costs less than making a memoryview.
VIEW_MIN: Final = 4096


class SendBuffer:
    """A byte queue that keeps what the application wrote without copying it.

    A bytearray that every write is appended to copies each byte in, and again
    whenever its acknowledged head is cut off. Here each write stays the `bytes`
    object the application handed over (immutable, so sharing it is safe), and
    a segment's payload is a view of it (`peek`): the only copy is the codec's,
    into the packet (one more for a payload joined at a block boundary).
    Acknowledged blocks are dropped whole. The blocks' stream offsets are kept
    sorted, so finding the block for a (re)transmission is a bisection, O(log n)
    per segment.
    """

    __slots__ = ("_blocks", "_end", "_first", "_gathering", "_head", "_starts")

    def __init__(self) -> None:
        self._blocks: list[Payload | bytearray] = []
        self._starts: list[int] = []  # stream offset of each block's first octet
        self._first = 0  # index of the block holding the head
        self._head = 0  # stream offset of the first octet still held
        self._end = 0  # stream offset just past the last octet
        self._gathering = False  # the last block is our own bytearray, still growing

    def __len__(self) -> int:
        return self._end - self._head

    def append(self, data: Payload) -> None:
        """Queue `data`; it must not change afterwards (bytes, or a copy of it)."""
        n = len(data)
        if not n:
            return
        if n < GATHER_BELOW:
            last = self._blocks[-1] if self._gathering else None
            if isinstance(last, bytearray) and len(last) + n <= GATHER_MAX:
                last += data
            else:
                self._add(bytearray(data))
                self._gathering = True
            self._end += n
            return
        self._add(data)
        self._gathering = False
        self._end += n

    def _add(self, block: Payload | bytearray) -> None:
        self._blocks.append(block)
        self._starts.append(self._end)

    def peek(self, offset: int, size: int) -> bytes | memoryview:
        """Up to `size` bytes starting `offset` bytes after the head.

        A TSO-sized piece (`VIEW_MIN` on) within one `bytes` block (what a large
        write leaves) is a memoryview of it, not a copy: the block is immutable
        and the view keeps it alive even after `consume` lets go of it, so a
        segment queued for (re)transmission or cut by TSO stays valid; the codec
        copies it once, into the packet. A gathering bytearray still grows (and a
        view would pin its size), so a piece of one, or one spanning blocks, is
        copied, once (the views taken for the copy are gone when it returns).
        """
        start = self._head + offset
        stop = min(start + size, self._end)
        if start >= stop:
            return b""
        i = bisect_right(self._starts, start, self._first) - 1
        blocks, starts = self._blocks, self._starts
        at = start - starts[i]
        block = blocks[i]
        end = stop - starts[i]
        if end <= len(block):  # the usual case: within one block
            if type(block) is not bytes:
                return bytes(memoryview(block)[at:end])  # one copy, not two
            return memoryview(block)[at:end] if end - at >= VIEW_MIN else block[at:end]
        parts = []  # views: the join is the one copy (most TSO pieces span two writes)
        while start < stop:
            block = blocks[i]
            piece = memoryview(block)[at : min(len(block), stop - starts[i])]
            parts.append(piece)
            start += len(piece)
            i, at = i + 1, 0
        return b"".join(parts)

    def consume(self, size: int) -> None:
        """Drop `size` bytes from the head (they were acknowledged)."""
        self._head = min(self._head + size, self._end)
        blocks, starts = self._blocks, self._starts
        first = self._first
        while first < len(blocks) and starts[first] + len(blocks[first]) <= self._head:
            blocks[first] = b""  # release the memory now, the slot later
            first += 1
        if first == len(blocks):
            blocks.clear()
            starts.clear()
            first = 0
            self._gathering = False
        elif first > 64 and 2 * first > len(blocks):
            del blocks[:first], starts[:first]  # amortised: each slot is moved once
            first = 0
        self._first = first
