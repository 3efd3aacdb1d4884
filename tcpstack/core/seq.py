"""Sequence-number arithmetic modulo 2**32 (RFC 9293 section 3.4).

Every comparison of sequence numbers in the stack goes through `seq_diff`, so
the wrap at 2**32 is handled in exactly one place. Plain ``<`` on sequence
numbers is a bug: 0xFFFFFFF0 comes *before* 0x10 on the wire.
"""

from typing import Final

MOD: Final = 1 << 32
_HALF: Final = 1 << 31
_MASK: Final = MOD - 1


def seq_add(a: int, n: int) -> int:
    """Return ``a + n`` modulo 2**32 (``n`` may be negative)."""
    return (a + n) & _MASK


def seq_diff(a: int, b: int) -> int:
    """Return the signed distance ``a - b`` in [-2**31, 2**31).

    This is the one helper through which sequence numbers are compared: the
    result is negative when ``a`` precedes ``b`` in sequence space.
    """
    return ((a - b + _HALF) & _MASK) - _HALF


# The comparisons below spell out `seq_diff` rather than call it: they run several
# times per segment, and a Python call costs more than the arithmetic. They are
# the same formula, in this one module (tests/unit/test_seq.py checks them
# against `seq_diff` at the wrap).


def seq_lt(a: int, b: int) -> bool:
    """``a`` precedes ``b`` in sequence space: ``seq_diff(a, b) < 0``."""
    return ((a - b + _HALF) & _MASK) < _HALF


def seq_le(a: int, b: int) -> bool:
    """``a`` precedes or equals ``b`` in sequence space: ``seq_diff(a, b) <= 0``."""
    return ((a - b + _HALF) & _MASK) <= _HALF


def seq_in_window(x: int, start: int, size: int) -> bool:
    """``start <= x < start + size`` in sequence space (RFC 9293 3.4)."""
    return 0 <= ((x - start + _HALF) & _MASK) - _HALF < size
