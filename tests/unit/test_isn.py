"""RFC 6528 initial sequence numbers: keyed hash plus a 4 microsecond clock."""

from tcpstack.core.isn import IsnGenerator

L, R = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])
KEY = b"k" * 16


def test_same_tuple_same_time_same_isn():
    g = IsnGenerator(KEY)
    assert g.isn(L, 80, R, 40000, 12.5) == g.isn(L, 80, R, 40000, 12.5)
    assert IsnGenerator(KEY).isn(L, 80, R, 40000, 12.5) == g.isn(L, 80, R, 40000, 12.5)


def test_advances_250000_per_second():
    g = IsnGenerator(KEY)
    a = g.isn(L, 80, R, 40000, 100.0)
    assert (g.isn(L, 80, R, 40000, 101.0) - a) % 2**32 == 250_000
    assert (g.isn(L, 80, R, 40000, 100.5) - a) % 2**32 == 125_000
    assert (g.isn(L, 80, R, 40000, 100.25) - a) % 2**32 == 62_500


def test_wraps_within_32_bits():
    g = IsnGenerator(KEY)
    for t in (0.0, 1.0, 17179.86918, 17179.86919, 1e6, 1.7e9):
        assert 0 <= g.isn(L, 80, R, 40000, t) < 2**32
    # 2**32 ticks of 4 us = 17179.869184 s: a full cycle returns to the same ISN.
    assert g.isn(L, 80, R, 40000, 0.0) == g.isn(L, 80, R, 40000, 17179.869184)


def test_different_tuples_differ():
    g = IsnGenerator(KEY)
    base = g.isn(L, 80, R, 40000, 5.0)
    others = [
        g.isn(L, 80, R, 40001, 5.0),
        g.isn(L, 81, R, 40000, 5.0),
        g.isn(L, 80, bytes([10, 0, 0, 3]), 40000, 5.0),
        g.isn(bytes([10, 0, 0, 4]), 80, R, 40000, 5.0),
        g.isn(R, 40000, L, 80, 5.0),  # the reverse direction
    ]
    assert len({base, *others}) == 6


def test_different_keys_differ():
    assert IsnGenerator(b"a" * 16).isn(L, 80, R, 1, 0.0) != IsnGenerator(b"b" * 16).isn(
        L, 80, R, 1, 0.0
    )


def test_default_key_is_random():
    assert IsnGenerator().isn(L, 80, R, 1, 0.0) != IsnGenerator().isn(L, 80, R, 1, 0.0)
