"""RangeSet against a set of integers, with chunks of two to five ranges so that
every split, join and merge across chunks happens in a few operations; SeqLine
across the wrap."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tcpstack.core.ranges import RangeSet, SeqLine
from tcpstack.core.seq import seq_add
from tests.unit.test_reassembly import model_runs

OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 300), st.integers(1, 30)),
    st.tuples(st.just("pop_last"), st.just(0), st.just(0)),
    st.tuples(st.just("pop_through"), st.integers(0, 330), st.just(0)),
    st.tuples(st.just("trim_below"), st.integers(0, 330), st.just(0)),
), max_size=60)


@given(ops=OPS, chunk=st.integers(2, 5))
def test_matches_a_set_of_integers(ops: list[tuple[str, int, int]], chunk: int) -> None:
    rs = RangeSet(chunk)
    model: set[int] = set()
    for op, a, n in ops:
        runs = model_runs(model)
        if op == "add":
            touched = [r for r in runs if r[1] >= a and r[0] <= a + n]
            lo, hi, absorbed = rs.add(a, a + n)
            model |= set(range(a, a + n))
            assert absorbed == touched
            assert (lo, hi) in model_runs(model) and lo <= a < hi
        elif op == "pop_last":
            if runs:
                assert rs.pop_last() == runs[-1]
                model -= set(range(*runs[-1]))
        elif op == "pop_through":
            assert rs.pop_through(a) == [r for r in runs if r[0] <= a]
            model = {o for o in model if not any(lo <= o < hi and lo <= a for lo, hi in runs)}
        else:
            rs.trim_below(a)
            model = {o for o in model if o >= a}
        runs = model_runs(model)
        assert len(rs) == len(runs) and rs.total == len(model)
        assert list(rs.gaps(-5, 340)) == model_runs(set(range(-5, 340)) - model)
        for p in (-1, 0, a, a + n, *(e for r in runs for e in r)):
            assert rs.covered_below(p) == sum(o < p for o in model)
        for t in (0, 3, 10, 100):
            above, want = 0, None
            for lo, hi in reversed(runs):
                above += hi - lo
                if above > t:
                    want = lo
                    break
            assert rs.lowest_with_more_above(t) == want


@given(ref=st.integers(0, 2**32 - 1), steps=st.lists(st.integers(0, 2**31 - 1), max_size=8))
def test_seqline_positions_keep_order_across_the_wrap(ref: int, steps: list[int]) -> None:
    line = SeqLine(ref)
    pos = 0
    for step in steps:
        ref = seq_add(ref, step)
        pos += step
        assert line.move(ref) == pos
        assert line.at(seq_add(ref, 1000)) == pos + 1000
        assert line.seq(pos - 5) == seq_add(ref, -5)
