"""RFC 6298 RTT estimation on its own (tcpstack/core/rtt.py): the formulas of
2.2 and 2.3 with known numbers, the bounds, the backoff of 5.5 up to the
maximum, Karn's rule for the timed segment, and RFC 7323 timestamp samples."""

from __future__ import annotations

import pytest

from tcpstack.core.rtt import CLOCK_GRANULARITY, RTO_AFTER_HANDSHAKE_LOSS, RttEstimator


def estimator() -> RttEstimator:
    return RttEstimator(rto_initial=1.0, rto_min=0.2, rto_max=60.0)


def test_initial_rto_before_any_sample():
    rtt = estimator()
    assert (rtt.srtt, rtt.rto) == (None, 1.0)  # RFC 6298 2.1


def test_first_sample_rfc6298_2_2():
    rtt = estimator()
    rtt.sample(0.1)
    # SRTT <- R, RTTVAR <- R/2, RTO <- SRTT + max(G, K*RTTVAR)
    assert (rtt.srtt, rtt.rttvar) == (pytest.approx(0.1), pytest.approx(0.05))
    assert rtt.rto == pytest.approx(0.1 + 4 * 0.05)


def test_later_sample_rfc6298_2_3():
    rtt = estimator()
    rtt.sample(0.1)
    rtt.sample(0.5)
    # RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R'| with the old SRTT, then SRTT <- 7/8 SRTT + 1/8 R'
    assert rtt.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.4)  # 0.1375
    assert rtt.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.5)  # 0.15
    assert rtt.rto == pytest.approx(0.15 + 4 * 0.1375)  # 0.7


def test_steady_rtt_rto_is_srtt_plus_clock_granularity():
    rtt = estimator()
    for _ in range(40):  # RTTVAR halves away until 4 * RTTVAR < G
        rtt.sample(1.0)
    assert rtt.srtt == pytest.approx(1.0)
    assert rtt.rto == pytest.approx(1.0 + CLOCK_GRANULARITY)


def test_rto_kept_within_min_and_max():
    rtt = estimator()
    rtt.sample(0.01)
    assert rtt.rto == 0.2  # 0.03 from the formula, raised to rto_min (Linux, not 2.4's 1 s)
    rtt = estimator()
    rtt.sample(50.0)
    assert rtt.rto == 60.0  # 150 from the formula, capped (2.5)


def test_back_off_doubles_up_to_the_60_s_maximum():
    rtt = estimator()
    seen = []
    for _ in range(8):
        rtt.back_off()
        seen.append(rtt.rto)
    assert seen == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]  # RFC 6298 5.5, 2.5


def test_a_new_sample_or_end_backoff_returns_to_the_measured_rto():
    rtt = estimator()
    rtt.sample(0.1)
    rtt.back_off()
    rtt.back_off()
    assert rtt.rto == pytest.approx(1.2)
    rtt.end_backoff()
    assert rtt.rto == pytest.approx(0.3)
    rtt.back_off()
    rtt.sample(0.1)
    assert rtt.rto == pytest.approx(0.1 + 4 * 0.75 * 0.05)


def test_timed_segment_gives_an_exact_sample_once_acked():
    rtt = estimator()
    rtt.time_segment(1100, 2.0)
    rtt.time_segment(1200, 2.1)  # one measurement at a time: the first stays timed
    assert not rtt.timed_ack(1099, 2.2)  # does not cover the timed segment
    assert rtt.srtt is None
    assert rtt.timed_ack(1100, 2.25)
    assert rtt.srtt == pytest.approx(0.25) and rtt.probe is None
    assert not rtt.timed_ack(1200, 2.3)  # nothing timed any more


def test_timed_segment_across_the_wrap():
    rtt = estimator()
    rtt.time_segment(10, 0.0)  # sent just past 2**32
    assert not rtt.timed_ack(2**32 - 5, 0.1)
    assert rtt.timed_ack(10, 0.1)


def test_karn_no_sample_from_a_retransmitted_segment():
    rtt = estimator()
    rtt.time_segment(1100, 0.0)
    rtt.back_off()  # the timer expired: the timed segment goes again
    assert not rtt.timed_ack(1100, 2.5)
    assert (rtt.srtt, rtt.rto) == (None, 2.0)
    rtt.time_segment(1100, 3.0)
    rtt.retransmitted()  # fast retransmit: same rule
    assert not rtt.timed_ack(1100, 3.5)


def test_timestamp_sample_in_milliseconds_across_the_wrap():
    rtt = estimator()
    rtt.timestamp_sample(5, 2**32 - 45)  # RFC 7323 4.1: TSval now minus the echo
    assert rtt.srtt == pytest.approx(0.05)


def test_handshake_loss_sets_three_seconds_only_without_a_sample():
    rtt = estimator()
    rtt.back_off()
    rtt.handshake_lost()
    assert rtt.rto == RTO_AFTER_HANDSHAKE_LOSS == 3.0  # RFC 6298 5.7
    rtt = estimator()
    rtt.sample(0.1)
    rtt.handshake_lost()
    assert rtt.rto == pytest.approx(0.3)
