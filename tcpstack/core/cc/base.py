"""What the TCB asks of a congestion controller (RFC 5681 vocabulary).

The TCB owns loss detection and recovery (fast retransmit, RFC 6675/6582);
the controller only decides how cwnd and ssthresh move. All sizes in octets.
"""

from __future__ import annotations

from typing import Final

from mypy_extensions import mypyc_attr

INITIAL_WINDOW_SEGMENTS: Final = 10  # RFC 6928, as Linux
#: ssthresh before the first congestion event: "arbitrarily high" (RFC 5681 3.1).
INITIAL_SSTHRESH: Final = 1 << 30


@mypyc_attr(allow_interpreted_subclasses=True)
class CongestionControl:
    """Slow start and the shared parts; subclasses define congestion avoidance.
    Compiled with the core (tcpstack.core.native), it can still be subclassed in
    plain Python: a controller of one's own, or a test's recording one."""

    name = "base"

    def __init__(self, mss: int) -> None:
        self.mss = mss
        # RFC 6928 2: IW = min(10*MSS, max(2*MSS, 14600)).
        self.cwnd = min(INITIAL_WINDOW_SEGMENTS * mss, max(2 * mss, 14600))
        self.ssthresh = INITIAL_SSTHRESH

    def on_ack(self, acked: int, now: float, srtt: float | None) -> None:
        """New data was acknowledged outside recovery."""
        if self.cwnd < self.ssthresh:
            # Slow start with appropriate byte counting, L = 2 (RFC 3465).
            self.cwnd += min(acked, 2 * self.mss)
        else:
            self.avoid_congestion(acked, now, srtt)

    def avoid_congestion(self, acked: int, now: float, srtt: float | None) -> None:
        raise NotImplementedError

    def on_loss(self, flight: int, now: float) -> None:
        """Fast retransmit: a loss detected by duplicate ACKs or SACK."""
        raise NotImplementedError

    def on_recovery_end(self) -> None:
        """The recovery point was acknowledged: deflate to ssthresh (RFC 6582 3.2 step 3)."""
        self.cwnd = self.ssthresh

    def on_timeout(self, flight: int, now: float) -> None:
        """Retransmission timeout: RFC 5681 3.1 equation (4) and the loss window."""
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss
