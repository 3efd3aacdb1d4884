"""CUBIC congestion control (RFC 9438), Linux's default."""

from __future__ import annotations

from typing import Final

from tcpstack.core.cc.base import CongestionControl

C: Final = 0.4  # RFC 9438 4.2
BETA: Final = 0.7  # RFC 9438 4.6: multiplicative decrease factor
ALPHA: Final = 3 * (1 - BETA) / (1 + BETA)  # RFC 9438 4.3: Reno-friendly additive increase


class Cubic(CongestionControl):
    """Window growth as a cubic function of the time since the last congestion event."""

    name = "cubic"

    def __init__(self, mss: int) -> None:
        super().__init__(mss)
        self._w_max = 0.0  # in segments
        self._k = 0.0
        self._epoch: float | None = None  # start of the current congestion-avoidance stage
        self._w_est = 0.0  # in segments

    def avoid_congestion(self, acked: int, now: float, srtt: float | None) -> None:
        mss = self.mss
        cwnd_seg = self.cwnd / mss
        if self._epoch is None:
            self._epoch = now
            if self._w_max < cwnd_seg:  # no congestion event yet: start at the plateau
                self._w_max = cwnd_seg
            self._k = ((self._w_max - cwnd_seg) / C) ** (1 / 3)  # RFC 9438 eq. (2)
            self._w_est = cwnd_seg
        rtt = srtt or 0.0
        t = now - self._epoch
        target = C * (t + rtt - self._k) ** 3 + self._w_max  # W_cubic(t + RTT), eq. (1)
        target = min(max(target, cwnd_seg), 1.5 * cwnd_seg)  # RFC 9438 4.2
        # RFC 9438 4.3: the Reno-friendly estimate, eq. (4).
        self._w_est += ALPHA * (acked / mss) / cwnd_seg
        if self._w_est > target:
            target = self._w_est
        self.cwnd += max(int((target - cwnd_seg) / cwnd_seg * acked), 0)

    def on_loss(self, flight: int, now: float) -> None:
        cwnd_seg = self.cwnd / self.mss
        # RFC 9438 4.7 (fast convergence).
        self._w_max = cwnd_seg * (1 + BETA) / 2 if cwnd_seg < self._w_max else cwnd_seg
        self.ssthresh = max(int(flight * BETA), 2 * self.mss)  # RFC 9438 4.6
        self.cwnd = self.ssthresh
        self._epoch = None

    def on_timeout(self, flight: int, now: float) -> None:
        # RFC 9438 4.8: ssthresh as on a loss, then restart from the loss window.
        self._w_max = self.cwnd / self.mss
        self.ssthresh = max(int(flight * BETA), 2 * self.mss)
        self.cwnd = self.mss
        self._epoch = None
