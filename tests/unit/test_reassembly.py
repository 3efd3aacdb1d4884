"""Out-of-order queue: reassembly across holes and the wrap, SACK block order."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpstack.core import ranges, reassembly
from tcpstack.core.ranges import MAX_OFO_RUNS
from tcpstack.core.reassembly import COALESCE, MAX_SACK_BLOCKS, Reassembly
from tcpstack.core.seq import seq_add, seq_diff
from tests.unit.linecount import LineCounter

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


def test_add_says_which_octets_it_held_already() -> None:
    """For the D-SACK of a repeat (RFC 2883 4.1.3): the first stretch of the new
    segment that was held before, as sequence numbers; None when all is new."""
    q = Reassembly()
    assert q.add(seq_add(BASE, 4), b"efgh", False, BASE) is None
    assert q.add(seq_add(BASE, 4), b"ef", False, BASE) == (seq_add(BASE, 4), seq_add(BASE, 6))
    assert q.add(seq_add(BASE, 2), b"cdef", False, BASE) == (seq_add(BASE, 4), seq_add(BASE, 6))
    assert q.add(seq_add(BASE, 8), b"ij", False, BASE) is None  # adjacent, not repeated
    assert q.held == 8


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


# ============================================== against a model: a set of offsets


def octets(offset: int, n: int) -> bytes:
    """The stream's octets at `offset`: every offset has its own value, so any
    octet delivered at the wrong place, twice or not at all shows."""
    return bytes((o * 7 + 3) & 0xFF for o in range(offset, offset + n))


def model_runs(held: set[int]) -> list[tuple[int, int]]:
    """The maximal runs [lo, hi) of a set of offsets, in order."""
    runs: list[tuple[int, int]] = []
    for o in sorted(held):
        if runs and runs[-1][1] == o:
            runs[-1] = (runs[-1][0], o + 1)
        else:
            runs.append((o, o + 1))
    return runs


OPS = st.lists(st.one_of(
    st.tuples(st.just("ooo"), st.integers(1, 60), st.integers(1, 12)),  # gap, length
    st.tuples(st.just("in"), st.integers(1, 40)),  # in-order octets delivered
), max_size=80)


@given(ops=OPS, max_runs=st.sampled_from([1, 2, 3, 5, MAX_OFO_RUNS]),
       base=st.sampled_from([BASE, 0, 2**31 - 30]))
def test_matches_a_set_of_held_offsets(ops: list[tuple], max_runs: int, base: int) -> None:
    """Random arrivals (overlapping, adjacent, duplicated, across the wrap) and
    deliveries: the queue holds exactly the octets the model holds, hands them
    over in order, reports only true runs as SACK blocks, and prunes from the top."""
    stats: Counter[str] = Counter()
    q = Reassembly(max_runs, stats)
    nxt = 0  # stream offset of RCV.NXT
    held: set[int] = set()
    pruned = dropped = 0
    for op in ops:
        newest = None
        if op[0] == "ooo":
            start, n = nxt + op[1], op[2]
            q.add(seq_add(base, start), octets(start, n), False, seq_add(base, nxt))
            held |= set(range(start, start + n))
            runs = model_runs(held)
            if len(runs) > max_runs:  # the highest run goes; it may be the new one
                lo, hi = runs[-1]
                held -= set(range(lo, hi))
                dropped += lo <= start < hi
                pruned += not lo <= start < hi
            newest = start if start in held else None
        else:
            nxt += op[1]  # the caller delivered these in order
            held = {o for o in held if o >= nxt}
            ready = 0
            while nxt + ready in held:
                ready += 1
            assert q.pop_ready(seq_add(base, nxt)) == (octets(nxt, ready), False)
            held -= set(range(nxt, nxt + ready))
            nxt += ready
        assert q.held == len(held)
        assert bool(q) == bool(held)
        blocks = [(seq_diff(a, base), seq_diff(b, base)) for a, b in q.sack_blocks()]
        runs = model_runs(held)
        assert len(set(blocks)) == len(blocks) <= MAX_SACK_BLOCKS
        assert all(b in runs for b in blocks)
        if newest is not None:  # RFC 2018 4: the first block holds the newest segment
            assert blocks[0][0] <= newest < blocks[0][1]
    assert (stats["OfoDrop"], stats["OfoPruned"]) == (dropped, pruned)
    assert stats["OfoQueue"] == sum(op[0] == "ooo" for op in ops)


# ======================================= the cap on runs (like tcp_prune_ofo_queue)


def test_over_the_cap_a_segment_above_every_run_is_dropped_and_counted() -> None:
    stats: Counter[str] = Counter()
    q = Reassembly(3, stats)
    for off in (10, 20, 30):
        q.add(seq_add(BASE, off), b"r", False, BASE)
    q.add(seq_add(BASE, 40), b"s", True, BASE)  # a fourth run, the highest: dropped
    assert q.held == 3
    assert stats["OfoDrop"] == 1 and stats["OfoPruned"] == 0
    q.add(seq_add(BASE, 21), b"t", False, BASE)  # joins a run: no new run, kept
    assert q.held == 4 and stats["OfoDrop"] == 1
    assert q.pop_ready(seq_add(BASE, 40)) == (b"", False)  # the FIN went with its octet


def test_over_the_cap_the_highest_run_is_pruned_for_a_lower_segment() -> None:
    stats: Counter[str] = Counter()
    q = Reassembly(3, stats)
    q.add(seq_add(BASE, 10), b"a", False, BASE)
    q.add(seq_add(BASE, 20), b"b", False, BASE)
    q.add(seq_add(BASE, 30), b"c", True, BASE)  # with the FIN
    q.add(seq_add(BASE, 5), b"d", False, BASE)
    assert stats["OfoPruned"] == 1 and stats["OfoDrop"] == 0
    assert q.sack_blocks() == [(seq_add(BASE, 5), seq_add(BASE, 6)),
                               (seq_add(BASE, 20), seq_add(BASE, 21)),
                               (seq_add(BASE, 10), seq_add(BASE, 11))]
    # The FIN came with the pruned octet: the peer must send both again.
    assert q.pop_ready(seq_add(BASE, 31)) == (b"", False)
    assert not q


# ===================== adversarial segments: bounded work per segment, any order

N_ADVERSARIAL = 100_000
STEP_BUDGET = 150  # Python lines per add() or pop_ready(); today at most 126, at any size


def arrival_order(n: int, order: str) -> list[int]:
    """0..n-1 ascending, descending or shuffled (always the same way)."""
    keys = list(range(n))
    if order == "descending":
        keys.reverse()
    elif order == "random":
        random.Random(8).shuffle(keys)
    return keys


@pytest.mark.parametrize("order", ["ascending", "descending", "random"])
def test_100k_gapped_one_octet_segments_cost_bounded_work_each(order: str) -> None:
    """One-octet segments with one-octet gaps, the worst cut a peer can choose:
    every add() stays within a fixed number of Python lines (sampled, the first
    sample after 100 segments, where the old quadratic scans already blow the
    budget) and the queue never holds more than max_ofo_runs runs."""
    keys = arrival_order(N_ADVERSARIAL, order)
    stats: Counter[str] = Counter()
    q = Reassembly(MAX_OFO_RUNS, stats)
    count = LineCounter(reassembly, ranges)
    for i, k in enumerate(keys, 1):
        seq = seq_add(BASE, 2 * k + 1)  # octets 1, 3, 5...: RCV.NXT (BASE) is a hole
        if i % 100:
            q.add(seq, b"x", False, BASE)
        else:
            count(q.add, seq, b"x", False, BASE)
            assert count.last <= STEP_BUDGET, (i, count.last)
    assert q.held == MAX_OFO_RUNS  # one octet per run
    assert stats["OfoQueue"] == N_ADVERSARIAL
    assert stats["OfoDrop"] + stats["OfoPruned"] == N_ADVERSARIAL - MAX_OFO_RUNS
    if order == "ascending":
        assert stats["OfoPruned"] == 0  # each newcomer was the highest
    if order == "descending":
        assert stats["OfoDrop"] == 0  # each newcomer was the lowest
    # The lowest runs are the ones kept, so filling the holes one by one
    # delivers octets 0..2*cap-1, each pop_ready() bounded too.
    nxt = 0
    for _ in range(MAX_OFO_RUNS):
        nxt += 1  # the hole's octet, delivered in order by the caller
        ready = count(q.pop_ready, seq_add(BASE, nxt))
        assert ready == (b"x", False) and count.last <= STEP_BUDGET
        nxt += 1
    assert not q


def test_uncapped_work_per_segment_does_not_grow_with_the_queue() -> None:
    """Without the cap (20,000 runs held) an add() stays within the same budget
    of Python lines at the end as at the start: the searches are bisects."""
    q = Reassembly(10**9)
    count = LineCounter(reassembly, ranges)
    costs = []
    for k in range(20_000, 0, -1):  # descending: every insert at the front
        if 100 < k <= 19_900:
            q.add(seq_add(BASE, 2 * k + 1), b"x", False, BASE)
        else:
            count(q.add, seq_add(BASE, 2 * k + 1), b"x", False, BASE)
            costs.append(count.last)
    assert q.held == 20_000
    assert max(costs) <= STEP_BUDGET


def test_one_octet_segments_in_one_run_are_coalesced() -> None:
    """Adjacent one-octet segments, appended and prepended, make a run of a few
    pieces (a Python object per octet would cost ~40 times the data)."""
    q = Reassembly()
    for k in range(5000, 10_000):
        q.add(seq_add(BASE, k), octets(k, 1), False, BASE)
    for k in range(4999, 0, -1):
        q.add(seq_add(BASE, k), octets(k, 1), False, BASE)
    assert len(q._data[1][1]) <= 2 * 9999 // COALESCE + 1
    assert q.pop_ready(seq_add(BASE, 1)) == (octets(1, 9999), False)
