"""The TIME-WAIT record (tcpstack.core.timewait), sans I/O: what it answers, when it
ends, and which SYN may reopen its 4-tuple (RFC 9293 3.6.1 and 3.10.7.4,
RFC 6191, RFC 5961).

The record comes from `tcpkit.tcb_time_wait()`: RCV.NXT = X+2 (past the
peer's FIN), SND.NXT = Y+2 (past ours), 2*MSL ends at 60.0.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tcpstack.core.config import TcpConfig
from tcpstack.core.segment import Options, Segment
from tcpstack.core.timewait import REOPEN_ISS_GAP, Fate, TimeWait
from tests.unit.tcpkit import (
    ACK,
    FIN,
    PEER,
    PEER_PORT,
    PSH,
    RST,
    SYN,
    US,
    US_PORT,
    WND,
    X,
    Y,
    seg,
    tcb_time_wait,
)

KEY = (US_PORT, PEER, PEER_PORT)
CONFIG = TcpConfig()
TS_RECENT = 700_000  # the peer's last TSval


def record() -> TimeWait:
    return TimeWait.from_tcb(tcb_time_wait(), KEY)


def ts_record() -> TimeWait:
    """The same connection, had it negotiated timestamps."""
    return TimeWait(KEY, US, rcv_nxt=X + 2, snd_nxt=Y + 2, window=WND, wscale=0,
                    deadline=60.0, ts_recent=TS_RECENT, ts_offset=Y)


def send(tw: TimeWait, s: Segment, at: float, *, listening: bool = True,
         stats: Counter | None = None) -> tuple[list[tuple], Fate]:
    """Feed `s` at time `at`: the answers as (flags, seq, ack, payload length), and the fate."""
    out, fate = tw.receive(s, at, CONFIG, Counter() if stats is None else stats,
                           listening=listening)
    for o in out:
        assert (o.src, o.dst, o.sport, o.dport) == (US, PEER, US_PORT, PEER_PORT)
    return [(o.flags, o.seq, o.ack, len(o.payload)) for o in out], fate


def with_ts(s: Segment, tsval: int) -> Segment:
    s.options = Options(mss=s.options.mss, timestamp=(tsval, 0))
    return s


ACK_IT = [(ACK, Y + 2, X + 2, 0)]  # <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>


# ------------------------------------------------------------------ the record


def test_record_keeps_only_what_time_wait_needs():
    tw = record()
    assert (tw.key, tw.rcv_nxt, tw.snd_nxt, tw.deadline, tw.ts_ok) == (
        KEY, X + 2, Y + 2, 60.0, False)
    assert not hasattr(tw, "__dict__")  # __slots__ only: no buffers can hide in it
    assert tw.timers() == {"time-wait": 60.0}
    assert (tw.local, tw.remote) == ("10.0.0.2:80", "10.0.0.1:40000")


def test_time_wait_lasts_two_msl():
    tw = record()
    assert not tw.expired(59.999)
    assert tw.expired(60.0)


# ------------------------------------------------- FIN: 3.10.7.4 fifth and eighth


def test_time_wait_retransmitted_fin_reacked_and_timer_restarted():
    """A retransmitted FIN starts at RCV.NXT-1 (our ACK of it was lost): it is
    unacceptable, draws an ACK and restarts the 2 MSL timeout."""
    tw = record()
    assert send(tw, seg(ACK | FIN, X + 1, Y + 2), 30.0) == (ACK_IT, Fate.STAY)
    assert tw.deadline == 90.0
    assert not tw.expired(60.0)
    assert tw.expired(90.0)


def test_time_wait_fin_at_rcv_nxt_acked_and_timer_restarted():
    """A FIN at RCV.NXT is acceptable: acknowledged (RCV.NXT stays, the peer's FIN
    was taken already) and the 2 MSL timeout restarts (fifth and eighth steps)."""
    tw = record()
    assert send(tw, seg(ACK | FIN, X + 2, Y + 2), 20.0) == (ACK_IT, Fate.STAY)
    assert tw.deadline == 80.0


def test_time_wait_bare_ack_at_rcv_nxt_ignored():
    tw = record()
    assert send(tw, seg(ACK, X + 2, Y + 2), 10.0) == ([], Fate.STAY)
    assert tw.deadline == 60.0


def test_time_wait_data_in_window_ignored():
    tw = record()  # seventh step: "ignore the segment text"
    assert send(tw, seg(ACK | PSH, X + 2, Y + 2, b"late"), 10.0) == ([], Fate.STAY)


def test_time_wait_unacceptable_segment_draws_ack():
    tw = record()
    assert send(tw, seg(ACK | PSH, X - 10, Y + 2, b"old"), 10.0) == (ACK_IT, Fate.STAY)
    assert send(tw, seg(ACK, X + 2 + WND, Y + 2), 10.0) == (ACK_IT, Fate.STAY)
    assert tw.deadline == 60.0  # only a FIN restarts the timeout


def test_time_wait_ack_of_unsent_data_draws_ack():
    tw = record()
    assert send(tw, seg(ACK, X + 2, Y + 3), 10.0) == (ACK_IT, Fate.STAY)


def test_time_wait_ack_carries_our_last_window():
    tw = record()
    [ack], _ = tw.receive(seg(ACK | FIN, X + 1, Y + 2), 1.0, CONFIG, Counter(), listening=True)
    assert ack.window == min(CONFIG.rcv_buf, 0xFFFF)  # the TCB offered its whole buffer


# ----------------------------------------------------- RST: RFC 5961 3.2, RFC 9293


def test_time_wait_rst_at_rcv_nxt_closes():
    tw, stats = record(), Counter()
    assert send(tw, seg(RST, X + 2), 10.0, stats=stats) == ([], Fate.RESET)
    assert stats["TimeWaitKilled"] == 1


def test_time_wait_rst_in_window_draws_throttled_challenge_ack():
    tw, stats = record(), Counter()
    assert send(tw, seg(RST, X + 100), 10.0, stats=stats) == (ACK_IT, Fate.STAY)
    assert send(tw, seg(RST, X + 101), 10.1, stats=stats) == ([], Fate.STAY)
    assert (stats["ChallengeAcks"], stats["ChallengeAcksSuppressed"]) == (1, 1)


def test_time_wait_rst_outside_window_ignored():
    tw = record()
    assert send(tw, seg(RST, X + 1), 10.0) == ([], Fate.STAY)
    assert send(tw, seg(RST | ACK, X + 2 + WND, Y + 2), 10.0) == ([], Fate.STAY)


# ------------------------------------------- reuse: RFC 9293 3.6.1 MAY-2, RFC 6191


def test_time_wait_syn_beyond_rcv_nxt_reopens():
    tw = record()
    assert send(tw, seg(SYN, X + 900_000), 10.0) == ([], Fate.REOPEN)


def test_time_wait_reopen_iss_lies_above_old_snd_nxt():
    """Linux's tw_snd_nxt + 65535 + 2: above anything the old connection sent."""
    assert record().reopen_iss == Y + 2 + 65537 == Y + 2 + REOPEN_ISS_GAP


def test_time_wait_reopen_iss_wraps():
    tw = TimeWait(KEY, US, rcv_nxt=1, snd_nxt=0xFFFF_FFF0, window=WND, wscale=0, deadline=1.0)
    assert tw.reopen_iss == (0xFFFF_FFF0 + 65537) & 0xFFFF_FFFF


@pytest.mark.parametrize("seq", [X + 2, X + 1, X - 1000])
def test_time_wait_syn_not_beyond_rcv_nxt_draws_ack(seq):
    """An old SYN keeps TIME-WAIT; it is answered like Linux (an ACK, which is
    RFC 5961 4.2's challenge ACK in the window and the first step's ACK outside)."""
    tw = record()
    assert send(tw, seg(SYN, seq), 10.0) == (ACK_IT, Fate.STAY)


def test_time_wait_syn_without_listener_draws_ack():
    """No listener could take the new incarnation: TIME-WAIT stays (as Linux)."""
    tw = record()
    assert send(tw, seg(SYN, X + 900_000), 10.0, listening=False) == (ACK_IT, Fate.STAY)


def test_time_wait_syn_ack_never_reopens():
    tw = record()
    assert send(tw, seg(SYN | ACK, X + 900_000, Y + 2), 10.0) == (ACK_IT, Fate.STAY)


def test_time_wait_ts_newer_tsval_reopens_below_rcv_nxt():
    """RFC 6191 2: with timestamps on both incarnations a newer TSval is enough,
    whatever the sequence number."""
    tw = ts_record()
    assert send(tw, with_ts(seg(SYN, X - 5000), TS_RECENT + 1), 10.0) == ([], Fate.REOPEN)


def test_time_wait_ts_older_tsval_rejected_even_beyond_rcv_nxt():
    """RFC 6191 2 with PAWS (RFC 7323 5.3): an older TSval is an old duplicate."""
    tw, stats = ts_record(), Counter()
    answers, fate = send(tw, with_ts(seg(SYN, X + 900_000), TS_RECENT - 1), 10.0, stats=stats)
    assert (answers, fate) == (ACK_IT, Fate.STAY)
    assert stats["PAWSRejected"] == 1


def test_time_wait_ts_equal_tsval_needs_seq_beyond_rcv_nxt():
    tw = ts_record()
    assert send(tw, with_ts(seg(SYN, X + 900_000), TS_RECENT), 10.0) == ([], Fate.REOPEN)
    assert send(tw, with_ts(seg(SYN, X - 5000), TS_RECENT), 10.0) == (ACK_IT, Fate.STAY)


def test_time_wait_ts_syn_without_timestamps_needs_seq_beyond_rcv_nxt():
    tw = ts_record()
    assert send(tw, seg(SYN, X - 5000), 10.0) == (ACK_IT, Fate.STAY)
    assert send(tw, seg(SYN, X + 900_000), 10.0) == ([], Fate.REOPEN)


def test_time_wait_ts_ack_carries_tsval_and_ts_recent():
    """RFC 7323 3.2: every ACK carries TSopt; TSval on the connection's clock
    (1 ms, offset by the ISS as the TCB's), TSecr = TS.Recent."""
    tw = ts_record()
    [ack], _ = tw.receive(with_ts(seg(ACK | FIN, X + 1, Y + 2), TS_RECENT + 7), 12.5, CONFIG,
                          Counter(), listening=True)
    assert ack.options.timestamp == (12_500 + Y, TS_RECENT + 7)  # TS.Recent updated (R3)


def test_time_wait_ts_old_rst_still_counts():
    """RSTs are exempt from PAWS (RFC 7323 5.2) and do not move TS.Recent back."""
    tw = ts_record()
    assert send(tw, with_ts(seg(RST, X + 2), TS_RECENT - 1), 10.0) == ([], Fate.RESET)
    assert tw.ts_recent == TS_RECENT


def test_time_wait_retransmitted_fin_always_acknowledged_pure_acks_rate_limited():
    """Linux tcp_timewait_state_process with tcp_oow_rate_limited: a FIN is never
    held back (it is no pure ACK) nor does it start the interval; pure
    out-of-window ACKs draw at most one ACK per challenge_ack_interval."""
    tw, stats = record(), Counter()
    for at in (1.0, 1.1):
        assert send(tw, seg(FIN | ACK, X + 1, Y + 2), at, stats=stats) == (ACK_IT, Fate.STAY)
    assert tw.deadline == 1.1 + 2 * CONFIG.msl
    for at, answered in ((1.2, True), (1.3, False), (1.7, True)):
        assert send(tw, seg(ACK, X, Y + 2), at, stats=stats) == (
            ACK_IT if answered else [], Fate.STAY)
    assert stats["TCPACKSkippedTimeWait"] == 1
