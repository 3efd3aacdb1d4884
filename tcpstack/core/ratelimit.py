"""The stack-wide limit on challenge ACKs (RFC 5961 7), shared by every TCB.

Each TCB already sends at most one challenge ACK per `challenge_ack_interval`
(Linux's per-socket tcp_invalid_ratelimit); this caps their sum over the whole
stack, like Linux's net.ipv4.tcp_challenge_ack_limit, so that a blind flood
spread over many 4-tuples cannot make the stack spend its time answering.

The budget of each second is drawn at random from [limit/2, 3*limit/2), as
Linux did from 4.7 on: with a fixed budget, whether it ran out in a given
second tells an off-path attacker whether its guessed segment drew a
challenge ACK (CVE-2016-5696). Sans I/O like the TCB: time is passed in.
"""

from __future__ import annotations

import math
import random


class ChallengeAckLimiter:
    """At most about `limit` challenge ACKs per second across the stack; 0: no limit."""

    def __init__(self, limit: int, rng: random.Random | None = None) -> None:
        if limit < 0:
            raise ValueError(f"challenge ACK limit must be >= 0, got {limit}")
        self.limit = limit
        self._rng = rng or random.Random()
        self._second = -math.inf  # the whole second whose budget `_left` is
        self._left = 0

    def allow(self, now: float) -> bool:
        """Take one challenge ACK from the budget of the second `now` falls in."""
        if not self.limit:
            return True
        second = math.floor(now)
        if second != self._second:
            self._second = float(second)
            half = (self.limit + 1) // 2
            self._left = self._rng.randint(half, self.limit + half - 1)
        if self._left <= 0:
            return False
        self._left -= 1
        return True
