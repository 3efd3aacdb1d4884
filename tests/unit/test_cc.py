"""Congestion control arithmetic (RFC 5681, 3465, 6928, 9438)."""

from __future__ import annotations

import pytest

from tcpstack.core.cc import make

MSS = 1000


@pytest.mark.parametrize("name", ["newreno", "cubic"])
def test_initial_window_and_slow_start(name: str) -> None:
    cc = make(name, MSS)
    assert cc.cwnd == 10 * MSS  # RFC 6928
    cc.on_ack(5000, 0.0, 0.01)
    assert cc.cwnd == 12 * MSS  # byte counting with L = 2 (RFC 3465)


def test_newreno_halves_and_grows_one_mss_per_window() -> None:
    cc = make("newreno", MSS)
    cc.on_loss(20 * MSS, 1.0)
    assert (cc.ssthresh, cc.cwnd) == (10 * MSS, 10 * MSS)
    for _ in range(10):
        cc.on_ack(MSS, 1.1, 0.01)
    assert cc.cwnd == 11 * MSS


@pytest.mark.parametrize("name", ["newreno", "cubic"])
def test_timeout_restarts_from_one_segment(name: str) -> None:
    cc = make(name, MSS)
    cc.on_timeout(40 * MSS, 1.0)
    assert cc.cwnd == MSS
    assert cc.ssthresh >= 2 * MSS


def test_cubic_reduces_by_beta_and_regrows_to_w_max() -> None:
    cc = make("cubic", MSS)
    cc.on_loss(100 * MSS, 0.0)
    assert cc.ssthresh == 70 * MSS  # beta = 0.7 (RFC 9438 4.6)
    now = 0.0
    while now < 10.0:  # K = cbrt(100 * 0.3 / 0.4) ~ 4.2 s
        now += 0.01
        cc.on_ack(cc.cwnd // 10, now, 0.01)
    assert cc.cwnd > 100 * MSS  # past the plateau into convex growth
