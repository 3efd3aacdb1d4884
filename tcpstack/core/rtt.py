"""Round-trip time estimation and the retransmission timeout (RFC 6298), sans I/O.

Apart from the TCB, as aioquic keeps its RTT estimator apart from the
connection: the formulas are then units that tests feed known samples, and
`tcb.py` only says when a sample is taken and when the timer backs off.

Samples come from two clocks. A timed segment (`probe`) gives an exact sample
when its ACK arrives, unless it was retransmitted (Karn's rule, RFC 6298 3):
whoever retransmits clears the probe. With timestamps (RFC 7323 4.1) every ACK
of new data echoes the TSval of the segment it answers, retransmitted or not,
so those samples need no Karn; they count in the 1 ms TSval ticks. The exact
sample is preferred when both exist: the tick would round a sub-millisecond
RTT to 0.

All times are seconds, passed in by the caller.
"""

from __future__ import annotations

from typing import Final

from tcpstack.core.seq import seq_diff, seq_le

CLOCK_GRANULARITY: Final = 0.01  # G in RFC 6298 2: the timer wheel's tick
RTO_AFTER_HANDSHAKE_LOSS: Final = 3.0  # RFC 6298 5.7


class RttEstimator:
    """SRTT, RTTVAR and RTO of one connection, with the RTO's backoff."""

    __slots__ = ("_rto_initial", "_rto_max", "_rto_min", "probe", "rto", "rttvar", "srtt")

    def __init__(self, rto_initial: float, rto_min: float, rto_max: float) -> None:
        self._rto_initial = rto_initial
        self._rto_min = rto_min
        self._rto_max = rto_max
        self.rto = rto_initial  # RFC 6298 2.1, backed off by `back_off`
        self.srtt: float | None = None  # None until the first sample
        self.rttvar = 0.0
        #: (sequence number whose ACK ends the measurement, time sent), or None
        #: when no segment is timed.
        self.probe: tuple[int, float] | None = None

    def sample(self, r: float) -> None:
        """A measurement `r` (RFC 6298 2.2 for the first, 2.3 for the others);
        the RTO it yields also ends any backoff."""
        if self.srtt is None:
            self.srtt, self.rttvar = r, r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        self.rto = self.measured_rto()

    def measured_rto(self) -> float:
        """RFC 6298 2.3 from SRTT and RTTVAR, without backoff (the initial RTO
        before the first sample), kept within [rto_min, rto_max] (2.4, 2.5)."""
        if self.srtt is None:
            return self._rto_initial
        rto = self.srtt + max(CLOCK_GRANULARITY, 4 * self.rttvar)
        return min(max(rto, self._rto_min), self._rto_max)

    def time_segment(self, end: int, now: float) -> None:
        """Time the segment whose ACK reaches `end`, unless one is timed already
        (RFC 6298 3: one measurement per RTT is enough)."""
        if self.probe is None:
            self.probe = (end, now)

    def timed_ack(self, ack: int, now: float) -> bool:
        """An ACK of new data up to `ack`: if it covers the timed segment, take its
        exact sample and return True."""
        probe = self.probe
        if probe is None or not seq_le(probe[0], ack):
            return False
        self.sample(now - probe[1])
        self.probe = None
        return True

    def timestamp_sample(self, ts_val: int, ts_echo: int) -> None:
        """RFC 7323 4.1 (RTTM): the echoed TSval `ts_echo` of a 1 ms clock that
        reads `ts_val` now."""
        self.sample(seq_diff(ts_val, ts_echo) / 1000)

    def retransmitted(self) -> None:
        """Karn's rule (RFC 6298 3): the timed segment is being sent again, so its
        ACK would not say which copy it answers; measure nothing from it."""
        self.probe = None

    def back_off(self) -> None:
        """RFC 6298 5.5: the timer expired; double the RTO up to its maximum (2.5),
        and Karn's rule for what gets retransmitted."""
        self.rto = min(self.rto * 2, self._rto_max)
        self.probe = None

    def end_backoff(self) -> None:
        """Back to the RTO of the measurements, as after a new sample."""
        self.rto = self.measured_rto()

    def handshake_lost(self) -> None:
        """RFC 6298 5.7: the SYN or SYN+ACK was retransmitted and no RTT sample came
        from the handshake, so the RTO after it is 3 s."""
        if self.srtt is None:
            self.rto = RTO_AFTER_HANDSHAKE_LOSS
