"""Sequence arithmetic modulo 2**32 (RFC 9293 3.4), especially across the wrap."""

from hypothesis import given
from hypothesis import strategies as st

from tcpstack.core.seq import MOD, seq_add, seq_diff, seq_in_window, seq_le, seq_lt

TOP = MOD - 1
u32 = st.integers(0, TOP)
half = st.integers(-(1 << 31), (1 << 31) - 1)


def test_add_wraps():
    assert seq_add(TOP, 1) == 0
    assert seq_add(TOP - 4, 10) == 5
    assert seq_add(3, -5) == TOP - 1
    assert seq_add(0, MOD) == 0


def test_diff_across_wrap():
    assert seq_diff(5, TOP - 4) == 10
    assert seq_diff(TOP - 4, 5) == -10
    assert seq_diff(0, TOP) == 1
    assert seq_diff(7, 7) == 0


def test_diff_range_edges():
    assert seq_diff(1 << 31, 0) == -(1 << 31)  # exactly half way: the ambiguous case
    assert seq_diff((1 << 31) - 1, 0) == (1 << 31) - 1
    assert seq_diff((1 << 31) + 1, 0) == -((1 << 31) - 1)


def test_lt_le_across_wrap():
    assert seq_lt(0xFFFFFFF0, 0x10)
    assert not seq_lt(0x10, 0xFFFFFFF0)
    assert seq_le(TOP, 0) and seq_lt(TOP, 0)
    assert seq_le(0, 0) and not seq_lt(0, 0)
    assert not seq_le(1, 0)


def test_in_window_across_wrap():
    start = TOP - 9  # window [2**32-10, 2**32-10+20) = up to 9 after the wrap
    assert seq_in_window(start, start, 20)
    assert seq_in_window(TOP, start, 20)
    assert seq_in_window(0, start, 20)
    assert seq_in_window(9, start, 20)
    assert not seq_in_window(10, start, 20)
    assert not seq_in_window(start - 1, start, 20)


def test_in_window_empty():
    assert not seq_in_window(5, 5, 0)


@given(u32, u32)
def test_diff_antisymmetric(a, b):
    d = seq_diff(a, b)
    assert -(1 << 31) <= d < (1 << 31)
    if d != -(1 << 31):
        assert seq_diff(b, a) == -d
        assert seq_lt(a, b) == (not seq_le(b, a))
        if a != b:
            assert seq_lt(a, b) != seq_lt(b, a)


@given(u32, half)
def test_add_diff_inverse(a, n):
    b = seq_add(a, n)
    assert 0 <= b <= TOP
    assert seq_diff(b, a) == n
    assert seq_add(a, seq_diff(b, a)) == b


@given(u32, u32)
def test_add_of_diff_returns_to_a(a, b):
    assert seq_add(b, seq_diff(a, b)) == a


@given(u32, st.integers(0, (1 << 31) - 1), st.integers(1, 1 << 20))
def test_in_window_matches_offset(start, off, size):
    assert seq_in_window(seq_add(start, off), start, size) == (off < size)


@given(u32, st.integers(1, (1 << 31) - 1))
def test_lt_transitive_forward(a, n):
    b = seq_add(a, n)
    assert seq_lt(a, b) and not seq_lt(b, a)
    assert seq_le(a, b) and not seq_le(b, a)


@given(st.one_of(u32, st.sampled_from([0, TOP, 1 << 31, (1 << 31) - 1, (1 << 31) + 1])),
       st.one_of(u32, st.sampled_from([0, TOP, 1 << 31])))
def test_comparisons_are_seq_diff(a, b):
    """seq_lt, seq_le and seq_in_window spell the formula out for speed: they must
    agree with seq_diff everywhere, the ambiguous half-way distance included."""
    assert seq_lt(a, b) == (seq_diff(a, b) < 0)
    assert seq_le(a, b) == (seq_diff(a, b) <= 0)
    assert seq_in_window(a, b, 1000) == (0 <= seq_diff(a, b) < 1000)
