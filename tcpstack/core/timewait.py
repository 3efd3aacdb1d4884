"""TIME-WAIT as a small record: what RFC 9293 and RFC 6191 need, nothing else.

A connection that reaches TIME-WAIT has nothing left to send or deliver; it
only has to answer the peer's retransmitted FIN and old duplicates for 2*MSL
and to decide whether a new SYN may reopen its 4-tuple. Keeping the whole
Connection for that (task, streams, buffers, TCB: ~8 KB) lets a busy server
hold tens of thousands of them; Linux keeps a ~0.3 KB mini-socket
(tcp_timewait_state_process) and so does this module.

`TimeWait` is sans-I/O like the TCB: `receive(seg, now, ...)` returns the
segments to send and the record's `Fate`; the stack keeps the record in its
table, its deadline in the timer wheel, and acts on the fate.

Section numbers in comments refer to RFC 9293 unless another RFC is named.
"""

from __future__ import annotations

from collections import Counter
from enum import Enum
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any, Final

from tcpstack.core.config import TcpConfig
from tcpstack.core.segment import ACK, EMPTY_OPTIONS, FIN, RST, SYN, Options, Segment
from tcpstack.core.seq import seq_add, seq_diff, seq_lt
from tcpstack.core.states import State

if TYPE_CHECKING:
    from tcpstack.core.tcb import Tcb
    from tcpstack.core.timerwheel import Timer

MAX_WINDOW: Final = 0xFFFF
#: Linux's distance from the old SND.NXT to a new incarnation's ISS
#: (tcp_timewait_state_process: tw_snd_nxt + 65535 + 2): beyond any octet the
#: old connection could still have in flight with an unscaled window.
REOPEN_ISS_GAP: Final = 65535 + 2


class Fate(Enum):
    """What became of the record after a segment; the value is the trace's cause."""

    STAY = "still in TIME-WAIT"
    RESET = "RST received in TIME-WAIT"
    REOPEN = "new SYN ends TIME-WAIT"


class TimeWait:
    """One 4-tuple in TIME-WAIT: no task, no streams, no buffers."""

    state = State.TIME_WAIT  # for the trace and `ss`, as a TCB's
    __slots__ = (
        "deadline",
        "key",
        "last_oow_ack",
        "local_ip",
        "rcv_nxt",
        "snd_nxt",
        "timer",
        "timer_deadline",
        "ts_offset",
        "ts_ok",
        "ts_recent",
        "window",
        "wscale",
    )

    def __init__(self, key: tuple[int, bytes, int], local_ip: bytes, *, rcv_nxt: int,
                 snd_nxt: int, window: int, wscale: int, deadline: float,
                 ts_recent: int | None = None, ts_offset: int = 0) -> None:
        self.key = key  # (local port, remote address, remote port), as the stack's table
        self.local_ip = local_ip
        self.rcv_nxt = rcv_nxt  # RCV.NXT, past the peer's FIN
        self.snd_nxt = snd_nxt  # SND.NXT, past our FIN (all of it acknowledged)
        self.window = window  # the window field of our last ACK (scaled by wscale)
        self.wscale = wscale
        self.ts_ok = ts_recent is not None  # the connection used timestamps (RFC 7323)
        self.ts_recent = ts_recent or 0  # TS.Recent
        self.ts_offset = ts_offset  # our TSval clock's offset, so TSval keeps increasing
        self.deadline = deadline  # 2*MSL after the last FIN (re)acknowledged
        self.last_oow_ack = float("-inf")  # RFC 5961 7, Linux tw_last_oow_ack_time
        # The stack's timer-wheel entry (its wheel holds connections too).
        self.timer: Timer[Any] | None = None
        self.timer_deadline = 0.0

    @classmethod
    def from_tcb(cls, tcb: Tcb, key: tuple[int, bytes, int]) -> TimeWait:
        """The record of a TCB that just entered TIME-WAIT (its ACK of the FIN sent)."""
        wnd, shift = tcb.rcv_wnd, tcb.rcv_wscale
        return cls(key, tcb.local_ip, rcv_nxt=tcb.rcv_nxt, snd_nxt=tcb.snd_max,
                   window=min((wnd + (1 << shift) - 1) >> shift, MAX_WINDOW), wscale=shift,
                   deadline=tcb.timers()["time-wait"],
                   ts_recent=tcb.ts_recent if tcb.ts_ok else None, ts_offset=tcb.iss)

    @property
    def local(self) -> str:
        """Our end as ADDRESS:PORT, as `ss` and the trace show it."""
        return f"{IPv4Address(self.local_ip)}:{self.key[0]}"

    @property
    def remote(self) -> str:
        return f"{IPv4Address(self.key[1])}:{self.key[2]}"

    @property
    def reopen_iss(self) -> int:
        """ISS for a new incarnation: above the old sequence space (3.6.1 MAY-2 (1))."""
        return seq_add(self.snd_nxt, REOPEN_ISS_GAP)

    # ------------------------------------------------------------------ receiving

    def receive(self, seg: Segment, now: float, config: TcpConfig, stats: Counter[str], *,
                listening: bool) -> tuple[list[Segment], Fate]:
        """SEGMENT ARRIVES in TIME-WAIT (3.10.7.4); `listening` says whether a
        listener could take a new incarnation of this 4-tuple."""
        flags = seg.flags
        ts = seg.options.timestamp if self.ts_ok else None
        older = ts is not None and seq_lt(ts[0], self.ts_recent)
        if older and not flags & RST:
            # RFC 7323 5.3 R1 (PAWS): an old duplicate, even a SYN (RFC 6191 2).
            stats["PAWSRejected"] += 1
            return self._answer_unacceptable(seg, now, config, stats), Fate.STAY
        if listening and flags & (SYN | ACK | RST) == SYN and self._may_reopen(seg, ts):
            return [], Fate.REOPEN
        if ts and not older and not seq_lt(self.rcv_nxt, seg.seq):
            self.ts_recent = ts[0]  # RFC 7323 4.3 (R3): Last.ACK.sent is RCV.NXT here
        if not self._acceptable(seg):
            # First step: an unacceptable segment draws an ACK unless it is an RST.
            # A retransmitted FIN is one: it starts at RCV.NXT-1, our ACK of it was
            # lost; acknowledge it again and restart the 2 MSL timeout (fifth step).
            if flags & RST:
                return [], Fate.STAY
            if flags & FIN:
                self.deadline = now + 2 * config.msl
            return self._answer_unacceptable(seg, now, config, stats), Fate.STAY
        if flags & RST:
            # Second step with RFC 5961 3.2: exactly at RCV.NXT it closes (RFC 9293
            # keeps RFC 793's rule, not RFC 1337's); elsewhere a challenge ACK.
            if seg.seq == self.rcv_nxt:
                stats["TimeWaitKilled"] += 1
                return [], Fate.RESET
            return self._challenge_ack(now, config, stats), Fate.STAY
        if flags & SYN:
            return self._challenge_ack(now, config, stats), Fate.STAY  # RFC 5961 4.2
        if not flags & ACK:
            return [], Fate.STAY
        if seq_lt(self.snd_nxt, seg.ack):
            return [self._ack(now)], Fate.STAY  # fifth step: it acks something not sent
        if flags & FIN:
            # Fifth and eighth steps, TIME-WAIT: acknowledge the FIN and restart
            # the 2 MSL timeout. RCV.NXT stays: the peer's FIN was taken already.
            self.deadline = now + 2 * config.msl
            return [self._ack(now)], Fate.STAY
        return [], Fate.STAY  # seventh step: text is ignored

    def _may_reopen(self, seg: Segment, ts: tuple[int, int] | None) -> bool:
        """RFC 6191 2 (which refines RFC 9293 3.6.1 MAY-2): with timestamps on the
        old connection and in the SYN, a newer TSval, or an equal one with a
        sequence number beyond RCV.NXT; otherwise a sequence number beyond it.
        (An older TSval was rejected by PAWS before.)"""
        if ts is not None and ts[0] != self.ts_recent:
            return True
        return seq_lt(self.rcv_nxt, seg.seq)

    def _acceptable(self, seg: Segment) -> bool:
        """The acceptability test (3.10.7.4, first) against the window we last
        advertised, as the TCB's `_acceptable`."""
        wnd = self.window << self.wscale
        start = seq_diff(seg.seq, self.rcv_nxt)
        if seg.seg_len == 0:
            return start == 0 if wnd == 0 else 0 <= start < wnd
        end = start + seg.seg_len - 1
        return wnd > 0 and (0 <= start < wnd or 0 <= end < wnd)

    # -------------------------------------------------------------------- sending

    def _ack(self, now: float) -> Segment:
        """<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, with TSopt when the connection had it."""
        options = EMPTY_OPTIONS
        if self.ts_ok:
            # RFC 7323 3.2; the TCB's 1 ms clock offset by its ISS (Tcb._ts_val).
            options = Options(timestamp=((int(now * 1000) + self.ts_offset) & 0xFFFFFFFF,
                                         self.ts_recent))
        port, remote_ip, remote_port = self.key
        return Segment(src=self.local_ip, dst=remote_ip, sport=port, dport=remote_port,
                       seq=self.snd_nxt, ack=self.rcv_nxt, flags=ACK, window=self.window,
                       options=options)

    def _challenge_ack(self, now: float, config: TcpConfig, stats: Counter[str]
                       ) -> list[Segment]:
        """RFC 5961 3.2/4.2, throttled as the TCB's (RFC 5961 7)."""
        if now - self.last_oow_ack < config.challenge_ack_interval:
            stats["ChallengeAcksSuppressed"] += 1
            return []
        self.last_oow_ack = now
        stats["ChallengeAcks"] += 1
        return [self._ack(now)]

    def _answer_unacceptable(self, seg: Segment, now: float, config: TcpConfig,
                             stats: Counter[str]) -> list[Segment]:
        """The ACK owed to a segment the sequence test or PAWS dropped, rate-limited
        as the TCB's `_answer_unacceptable` (Linux tcp_timewait_state_process with
        tcp_oow_rate_limited): one without text or FIN, or with SYN, at most once
        per `challenge_ack_interval`; a retransmitted FIN is always answered."""
        if seg.flags & SYN or not (seg.payload or seg.flags & FIN):
            if now - self.last_oow_ack < config.challenge_ack_interval:
                stats["TCPACKSkippedTimeWait"] += 1
                return []
            self.last_oow_ack = now
        return [self._ack(now)]

    # ---------------------------------------------------------------------- timer

    def expired(self, now: float) -> bool:
        """Whether 2*MSL has passed since the last FIN was acknowledged."""
        return self.deadline <= now

    def timers(self) -> dict[str, float]:
        """The pending timers by name, for `tcpstack ss` (as `Tcb.timers`)."""
        return {"time-wait": self.deadline}
