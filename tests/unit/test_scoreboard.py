"""The sender's SACK scoreboard (RFC 6675): every query against a model (a set of
SACKed offsets), across the wrap, with the cap on ranges, and with bounded work
per ACK however the peer cuts its SACK blocks."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpstack.core import ranges, scoreboard
from tcpstack.core.ranges import MAX_OFO_RUNS
from tcpstack.core.scoreboard import Scoreboard
from tcpstack.core.seq import seq_add, seq_diff
from tests.unit.linecount import LineCounter
from tests.unit.test_reassembly import arrival_order, model_runs

UNA = 2**32 - 150  # every test crosses the sequence-number wrap
THRESHOLDS = (0, 1, 5, 2 * 20, 10_000)


def model_lost_below(runs: list[tuple[int, int]], threshold: int, una: int) -> int:
    """RFC 6675 IsLost as the RFC reads: walk down from the highest SACKed octet."""
    above = 0
    for lo, hi in reversed(runs):
        above += hi - lo
        if above > threshold:
            return lo
    return una


def model_holes(sacked: set[int], start: int, end: int) -> list[tuple[int, int]]:
    return model_runs({o for o in range(start, end) if o not in sacked})


BLOCK = st.tuples(st.integers(-10, 320), st.integers(1, 40)).map(lambda b: (b[0], b[0] + b[1]))
OPS = st.lists(st.one_of(
    st.tuples(st.just("sack"), st.lists(BLOCK, max_size=4)),
    st.tuples(st.just("ack"), st.integers(0, 60)),  # SND.UNA advances
    st.tuples(st.just("send"), st.integers(0, 60)),  # SND.MAX advances
    st.tuples(st.just("rto"), st.just(0)),
), max_size=40)


@given(ops=OPS, max_ranges=st.sampled_from([1, 2, 4, MAX_OFO_RUNS]),
       base=st.sampled_from([UNA, 0, 2**31 - 100]))
def test_matches_a_set_of_sacked_offsets(ops: list[tuple], max_ranges: int,
                                         base: int) -> None:
    stats: Counter[str] = Counter()
    sb = Scoreboard(max_ranges, stats)
    una, top = 0, 200  # SND.UNA and SND.MAX as offsets from base
    sacked: set[int] = set()
    pruned = 0

    def seq(offset: int) -> int:
        return seq_add(base, offset)

    for op, arg in ops:
        if op == "sack":
            blocks = [(una + lo, una + hi) for lo, hi in arg]
            grew = False
            for lo, hi in blocks:
                if not una < lo < hi <= top:
                    continue  # RFC 2018 5: outside what was sent
                before = len(sacked)
                sacked |= set(range(lo, hi))
                learnt = len(sacked) != before
                runs = model_runs(sacked)
                if len(runs) > max_ranges:
                    pruned += 1
                    sacked -= set(range(*runs[-1]))
                    learnt = learnt and not runs[-1][0] <= lo < runs[-1][1]
                grew = grew or learnt
            assert sb.update([(seq(a), seq(b)) for a, b in blocks], seq(una), seq(top)) == grew
        elif op == "ack":
            una = min(una + arg, top)
            sacked = {o for o in sacked if o >= una}
            sb.prune(seq(una))
        elif op == "send":
            top += arg
        else:
            sacked = set()
            sb.clear()
        runs = model_runs(sacked)
        assert bool(sb) == bool(sacked)
        assert sb.sacked() == len(sacked)
        points = {una, top, una + 7, *(e + d for r in runs for e in r for d in (-1, 0, 1))}
        for p in points:
            assert sb.sacked_below(seq(p)) == sum(o < p for o in sacked)
            for q in (una, una + 13, top):
                want = sum(o not in sacked for o in range(p, q))
                assert sb.unsacked(seq(p), seq(q)) == want
                assert list(sb.holes(seq(p), seq(q))) == [
                    (seq(a), seq(b)) for a, b in model_holes(sacked, p, q)]
        for t in THRESHOLDS:
            assert sb.lost_below(seq(una), t) == seq(model_lost_below(runs, t, una))
    assert stats["SackPruned"] == pruned


def test_over_the_cap_the_highest_range_is_forgotten() -> None:
    stats: Counter[str] = Counter()
    sb = Scoreboard(2, stats)
    top = seq_add(UNA, 1000)
    assert sb.update([(seq_add(UNA, 100), seq_add(UNA, 200)),
                      (seq_add(UNA, 300), seq_add(UNA, 400))], UNA, top)
    # A third range above both is not recorded: nothing new learnt.
    assert not sb.update([(seq_add(UNA, 500), seq_add(UNA, 600))], UNA, top)
    assert stats["SackPruned"] == 1 and sb.sacked() == 200
    # One below the highest takes its place: it is nearer SND.UNA, where recovery starts.
    assert sb.update([(seq_add(UNA, 10), seq_add(UNA, 20))], UNA, top)
    assert stats["SackPruned"] == 2 and sb.sacked() == 110
    assert list(sb.holes(UNA, top)) == [(UNA, seq_add(UNA, 10)), (seq_add(UNA, 20),
                                        seq_add(UNA, 100)), (seq_add(UNA, 200), top)]


# ========================== adversarial SACK blocks: bounded work per ACK and query

N_BLOCKS = 20_000
STEP_BUDGET = 300  # Python lines per ACK of four blocks and its queries; today at most 238


@pytest.mark.parametrize("order", ["ascending", "descending", "random"])
def test_20k_one_octet_sack_blocks_cost_bounded_work_each(order: str) -> None:
    """A peer SACKs our data as one-octet ranges with one-octet gaps, four blocks
    per ACK: the update and the queries loss recovery makes per ACK (tcb.py:
    _on_dupack, _lost_end, _pipe, _retransmit_holes) stay within a fixed number
    of Python lines, and the scoreboard within max_ofo_runs ranges."""
    keys = arrival_order(N_BLOCKS, order)
    stats: Counter[str] = Counter()
    sb = Scoreboard(MAX_OFO_RUNS, stats)
    top = seq_add(UNA, 2 * N_BLOCKS + 2)
    count = LineCounter(scoreboard, ranges)

    def one_ack(blocks: list[tuple[int, int]]) -> None:
        sb.update(blocks, UNA, top)
        sb.sacked()
        end = sb.lost_below(UNA, 2 * 1460)
        sb.sacked_below(top)
        sb.unsacked(UNA, end)
        next(sb.holes(UNA, end), None)

    for i in range(0, N_BLOCKS, 4):
        blocks = [(seq_add(UNA, 2 * k + 1), seq_add(UNA, 2 * k + 2)) for k in keys[i : i + 4]]
        if i % 400:
            one_ack(blocks)
        else:
            count(one_ack, blocks)
            assert count.last <= STEP_BUDGET, (i, count.last)
    assert sb.sacked() == MAX_OFO_RUNS  # one octet per range
    assert stats["SackPruned"] == N_BLOCKS - MAX_OFO_RUNS
    # The lowest ranges are kept: the cumulative ACK drops them in bounded steps.
    for k in range(MAX_OFO_RUNS):
        count(sb.prune, seq_add(UNA, 2 * k + 2))
        assert count.last <= STEP_BUDGET
    assert not sb


def test_holes_cost_what_they_yield() -> None:
    """holes() over a span with few holes among many ranges scans only those."""
    sb = Scoreboard(10**9)
    top = seq_add(UNA, 20_002)
    for k in range(0, 10_000, 4):
        sb.update([(seq_add(UNA, 2 * j + 1), seq_add(UNA, 2 * j + 2)) for j in range(k, k + 4)],
                  UNA, top)
    count = LineCounter(scoreboard, ranges)
    start = seq_add(UNA, 10_000)
    assert count(lambda: list(sb.holes(start, seq_add(start, 7)))) == [
        (seq_add(UNA, 10_000), seq_add(UNA, 10_001)), (seq_add(UNA, 10_002),
                                                       seq_add(UNA, 10_003)),
        (seq_add(UNA, 10_004), seq_add(UNA, 10_005)), (seq_add(UNA, 10_006),
                                                       seq_add(UNA, 10_007))]
    assert count.last <= 60
    # More than 2 * 1460 octets SACKed above: the 2921st range from the top.
    assert seq_diff(sb.lost_below(UNA, 2 * 1460), UNA) == 2 * (10_000 - 2921) + 1
