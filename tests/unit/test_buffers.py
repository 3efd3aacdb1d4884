"""The send buffer: the same bytes as a plain bytearray queue, without copying writes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tcpstack.core.buffers import GATHER_BELOW, VIEW_MIN, SendBuffer

# An operation: ("w", size) appends `size` fresh bytes, ("a", size) acknowledges.
ops = st.lists(st.tuples(st.sampled_from("wa"), st.integers(0, 3 * GATHER_BELOW)), max_size=60)


@given(ops, st.integers(0, 2000), st.integers(0, 2000))
def test_matches_a_bytearray_queue(script, offset, size) -> None:
    buf, model, counter = SendBuffer(), bytearray(), 0
    for op, n in script:
        if op == "w":
            data = bytes((counter + i) % 251 for i in range(n))
            counter += n
            buf.append(data)
            model += data
        else:
            n = min(n, len(model))
            buf.consume(n)
            del model[:n]
        assert len(buf) == len(model)
        assert buf.peek(offset, size) == bytes(model[offset : offset + size])
    assert buf.peek(0, len(model)) == bytes(model)


def test_a_large_write_is_kept_not_copied() -> None:
    block = bytes(range(256)) * 256
    buf = SendBuffer()
    buf.append(block)
    buf.append(block)
    assert buf.peek(0, len(block)).obj is block  # a view of the write itself, no copy
    piece = buf.peek(1000, VIEW_MIN)  # a super-segment's payload: a view too, not a copy
    assert piece.obj is block and piece == block[1000 : 1000 + VIEW_MIN]
    assert buf.peek(len(block) - 10, 20) == block[-10:] + block[:10]  # across a boundary
    buf.consume(len(block) + 5)
    assert len(buf) == len(block) - 5 and buf.peek(0, 3) == block[5:8]
    assert piece == block[1000 : 1000 + VIEW_MIN]  # still valid after its block was acked
    assert type(buf.peek(0, VIEW_MIN - 1)) is bytes  # a short piece: a copy is cheaper


def test_a_gathering_block_still_grows_while_a_piece_of_it_is_queued() -> None:
    buf = SendBuffer()
    buf.append(b"ab")
    piece = buf.peek(0, 2)  # held by a segment in flight
    buf.append(b"cd")  # appended to the same bytearray: a view would forbid the resize
    assert piece == b"ab" and buf.peek(0, 4) == b"abcd"


def test_tiny_writes_share_one_block() -> None:
    buf = SendBuffer()
    for i in range(10_000):
        buf.append(bytes([i % 256]))
    assert len(buf._blocks) == 1  # gathered: not one block per byte
    assert buf.peek(9_998, 5) == bytes([9_998 % 256, 9_999 % 256])


def test_acknowledged_blocks_are_released() -> None:
    buf = SendBuffer()
    for _ in range(1000):
        buf.append(b"x" * 1000)
    buf.consume(999_000)
    assert [len(b) for b in buf._blocks] == [1000]  # freed, and the slots compacted
    buf.consume(1000)
    assert len(buf) == 0 and buf._blocks == []
