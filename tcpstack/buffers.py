"""The send buffer: bytes from SND.UNA onward (unacknowledged, then unsent)."""

from __future__ import annotations


class SendBuffer:
    """A byte queue with cheap removal at the front.

    Deleting the head of a bytearray moves the rest of it; with an ACK every
    other segment that would copy the whole buffer each time. Instead the head
    advances an offset, and the storage is compacted once the dead prefix is
    larger than the live part.
    """

    __slots__ = ("_data", "_head")

    def __init__(self) -> None:
        self._data = bytearray()
        self._head = 0

    def __len__(self) -> int:
        return len(self._data) - self._head

    def append(self, data: bytes) -> None:
        self._data += data

    def peek(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes starting `offset` bytes after the head."""
        start = self._head + offset
        return bytes(self._data[start : start + size])

    def consume(self, size: int) -> None:
        """Drop `size` bytes from the head (they were acknowledged)."""
        self._head += size
        if self._head > len(self._data) - self._head:
            del self._data[: self._head]
            self._head = 0
