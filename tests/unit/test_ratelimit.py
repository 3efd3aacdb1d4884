"""The stack-wide challenge ACK budget (RFC 5961 7, Linux tcp_challenge_ack_limit)."""

import random

import pytest

from tcpstack.core.ratelimit import ChallengeAckLimiter


def allowed(limiter: ChallengeAckLimiter, now: float, tries: int) -> int:
    return sum(limiter.allow(now) for _ in range(tries))


def test_budget_is_drawn_per_second_around_the_limit():
    """Each second's budget lies in [limit/2, 3*limit/2) and changes from second
    to second, so its exhaustion tells an off-path attacker little (CVE-2016-5696)."""
    limiter = ChallengeAckLimiter(1000, random.Random(1))
    budgets = [allowed(limiter, second + 0.25, 2000) for second in range(20)]
    assert all(500 <= b <= 1499 for b in budgets)
    assert len(set(budgets)) > 10


def test_budget_spent_until_the_next_second():
    limiter = ChallengeAckLimiter(1)
    assert [limiter.allow(t) for t in (5.0, 5.5, 5.999, 6.0, 6.1)] == [
        True, False, False, True, False]


def test_zero_means_no_limit():
    assert allowed(ChallengeAckLimiter(0), 1.0, 100_000) == 100_000


def test_negative_limit_refused():
    with pytest.raises(ValueError, match="must be >= 0"):
        ChallengeAckLimiter(-1)
