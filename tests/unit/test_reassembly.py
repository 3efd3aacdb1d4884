"""Out-of-order queue: reassembly across holes and the wrap, SACK block order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tcpstack.reassembly import Reassembly
from tcpstack.seq import seq_add

BASE = 2**32 - 100  # every test crosses the sequence-number wrap


def test_hole_filled_releases_everything() -> None:
    q = Reassembly()
    q.add(seq_add(BASE, 10), b"klmno", False, BASE)
    q.add(seq_add(BASE, 5), b"fghij", False, BASE)
    assert q.pop_ready(BASE) == (b"", False)
    # In-order data (abcde at BASE) is delivered by the caller, not queued.
    assert q.pop_ready(seq_add(BASE, 5)) == (b"fghijklmno", False)
    assert not q


def test_overlap_and_duplicates_are_trimmed() -> None:
    q = Reassembly()
    q.add(seq_add(BASE, 4), b"efgh", False, BASE)
    q.add(seq_add(BASE, 2), b"cdef", False, BASE)
    q.add(seq_add(BASE, 6), b"ghij", False, BASE)
    assert q.held == 8
    assert q.pop_ready(seq_add(BASE, 2)) == (b"cdefghij", False)


def test_out_of_order_fin_follows_the_data() -> None:
    q = Reassembly()
    q.add(seq_add(BASE, 3), b"def", True, BASE)
    assert q.pop_ready(seq_add(BASE, 3)) == (b"def", True)


def test_sack_blocks_most_recent_first() -> None:
    q = Reassembly()
    q.add(seq_add(BASE, 10), b"x" * 5, False, BASE)
    q.add(seq_add(BASE, 30), b"y" * 5, False, BASE)
    q.add(seq_add(BASE, 20), b"z" * 5, False, BASE)
    q.add(seq_add(BASE, 50), b"w" * 5, False, BASE)
    blocks = q.sack_blocks()
    assert blocks[0] == (seq_add(BASE, 50), seq_add(BASE, 55))
    assert blocks[1:] == [(seq_add(BASE, 20), seq_add(BASE, 25)),
                          (seq_add(BASE, 30), seq_add(BASE, 35))]
    q.add(seq_add(BASE, 15), b"v" * 5, False, BASE)  # joins 10..15 and 20..25
    assert q.sack_blocks()[0] == (seq_add(BASE, 10), seq_add(BASE, 25))


@given(st.permutations(range(12)))
def test_any_arrival_order_reassembles(order: list[int]) -> None:
    data = bytes(range(120))
    q = Reassembly()
    nxt, out = BASE, bytearray()
    for i in order:
        seg = data[i * 10 : i * 10 + 10]
        seq = seq_add(BASE, i * 10)
        if seq == nxt:
            out += seg
            nxt = seq_add(nxt, len(seg))
            more, _ = q.pop_ready(nxt)
            out += more
            nxt = seq_add(nxt, len(more))
        elif i * 10 > len(out):
            q.add(seq, seg, False, nxt)
    assert bytes(out) == data
