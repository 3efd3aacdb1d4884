"""NewReno congestion control (RFC 5681, RFC 6582)."""

from __future__ import annotations

from tcpstack.core.cc.base import CongestionControl


class NewReno(CongestionControl):
    """Additive increase of one MSS per RTT, halving on loss."""

    name = "newreno"

    def __init__(self, mss: int) -> None:
        super().__init__(mss)
        self._acked_in_ca = 0

    def avoid_congestion(self, acked: int, now: float, srtt: float | None) -> None:
        # RFC 5681 3.1: cwnd += SMSS once per cwnd of acknowledged octets.
        self._acked_in_ca += acked
        if self._acked_in_ca >= self.cwnd:
            self._acked_in_ca -= self.cwnd
            self.cwnd += self.mss

    def on_loss(self, flight: int, now: float) -> None:
        # RFC 5681 3.2 equation (4); cwnd = ssthresh (+3 SMSS inflation is
        # replaced by pipe accounting in the TCB, RFC 6675).
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh
        self._acked_in_ca = 0
