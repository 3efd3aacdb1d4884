"""Loss recovery on its own (tcpstack/core/recovery.py), on a small scoreboard
across the sequence-number wrap: when duplicate ACKs start fast retransmit
(RFC 5681 3.2, RFC 6675 IsLost, RFC 6582 step 1), what RFC 6675 NextSeg sends
and "pipe" counts, partial and full ACKs (RFC 6582 3.2), and the timeout."""

from __future__ import annotations

from collections import Counter

from tcpstack.core.cc.base import CongestionControl
from tcpstack.core.recovery import Recovery
from tcpstack.core.scoreboard import Scoreboard
from tcpstack.core.seq import seq_add

UNA = 2**32 - 250  # SND.UNA: every range below crosses the wrap
MSS = 100
MAX = seq_add(UNA, 600)  # SND.MAX: six segments out
END = MAX  # the data ends where the last segment did


def at(offset: int) -> int:
    return seq_add(UNA, offset)


def recovery(*blocks: tuple[int, int]) -> Recovery:
    """A Recovery whose scoreboard holds `blocks` (offsets from UNA) as SACKed."""
    rec = Recovery(Scoreboard(8, Counter()), iss=at(-1000))
    rec.scoreboard.update([(at(lo), at(hi)) for lo, hi in blocks], UNA, MAX)
    return rec


class RecordingCc(CongestionControl):
    def __init__(self) -> None:
        super().__init__(MSS)
        self.calls: list[tuple] = []

    def on_ack(self, acked: int, now: float, srtt: float | None) -> None:
        self.calls.append(("ack", acked))

    def on_recovery_end(self) -> None:
        self.calls.append(("end",))


# ------------------------------------------------------------ entering recovery


def test_without_sack_the_third_dupack_starts_fast_retransmit():
    rec = recovery()
    assert [rec.on_dupack(UNA, MAX, MSS, sack_ok=False) for _ in range(3)] == [
        False, False, True]
    assert (rec.recover, rec.recover_high, rec.rexmit_next) == (MAX, MAX, UNA)


def test_with_sack_more_than_dupthresh_minus_one_segments_sacked_is_a_loss():
    # RFC 6675 IsLost: more than (DupThresh - 1) * SMSS = 200 octets SACKed above.
    rec = recovery((300, 500))  # exactly 200
    assert not rec.on_dupack(UNA, MAX, MSS, sack_ok=True)
    rec = recovery((299, 500))  # 201
    assert rec.on_dupack(UNA, MAX, MSS, sack_ok=True)
    assert rec.dupacks == 1 and rec.recover == MAX


def test_no_new_recovery_below_recover_rfc6582_step_1():
    rec = recovery()
    rec.recover_high = UNA  # the last recovery ended exactly at SND.UNA
    assert [rec.on_dupack(UNA, MAX, MSS, sack_ok=False) for _ in range(4)] == [False] * 4
    # With SACK, HighACK >= RecoveryPoint is enough (RFC 6675 5).
    rec = recovery((200, 600))
    rec.recover_high = UNA
    assert rec.on_dupack(UNA, MAX, MSS, sack_ok=True)


def test_in_recovery_dupacks_are_counted_and_start_nothing():
    rec = recovery()
    rec.recover = MAX
    assert not any(rec.on_dupack(UNA, MAX, MSS, sack_ok=False) for _ in range(5))
    assert rec.dupacks == 5


# ------------------------------------------------------------- IsLost, NextSeg


def test_lost_end_is_the_lowest_sacked_range_with_enough_above():
    # SACKed [200, 300) and [400, 600): the hole [0, 200) has 300 octets SACKed
    # above it, so it is lost; [300, 400) has only 200 above, so it may be reordered.
    rec = recovery((200, 300), (400, 600))
    assert rec.lost_end(UNA, END, MSS) == at(200)


def test_lost_end_at_least_one_segment_never_beyond_the_data():
    rec = recovery((500, 600))  # not enough SACKed for IsLost
    assert rec.lost_end(UNA, END, MSS) == at(MSS)  # RFC 6582: the segment at SND.UNA
    assert rec.lost_end(UNA, at(50), MSS) == at(50)  # a lost FIN is left to the RTO


def test_next_segments_sends_the_lost_holes_in_mss_pieces_once():
    rec = recovery((250, 300), (400, 600))
    rec.on_dupack(UNA, MAX, MSS, sack_ok=True)
    sent = list(rec.next_segments(UNA, MAX, MAX, END, MSS, True, cwnd=10_000))
    assert sent == [(UNA, 100), (at(100), 100), (at(200), 50)]  # [250, 300) is SACKed
    assert rec.rexmit_next == at(250)
    assert list(rec.next_segments(UNA, MAX, MAX, END, MSS, True, cwnd=10_000)) == []


def test_next_segments_stops_when_the_pipe_fills_cwnd_unless_forced():
    rec = recovery((200, 300), (400, 600))
    rec.on_dupack(UNA, MAX, MSS, sack_ok=True)
    # pipe = 600 out - 300 SACKed - 200 lost = 100 (the hole [300, 400)).
    assert rec.pipe(UNA, MAX, MAX, END, MSS, True) == 100
    assert list(rec.next_segments(UNA, MAX, MAX, END, MSS, True, cwnd=100)) == []
    assert list(rec.next_segments(UNA, MAX, MAX, END, MSS, True, cwnd=100, force=True)) == [
        (UNA, 100)]  # RFC 6675 5 step 4: the first one regardless
    # The retransmission is in the pipe now; the lost octets left are [100, 200).
    assert rec.pipe(UNA, MAX, MAX, END, MSS, True) == 200
    assert list(rec.next_segments(UNA, MAX, MAX, END, MSS, True, cwnd=300)) == [
        (at(100), 100)]
    assert rec.pipe(UNA, MAX, MAX, END, MSS, True) == 300


def test_pipe_without_sack_counts_a_segment_per_dupack():
    rec = recovery()
    for _ in range(3):
        rec.on_dupack(UNA, MAX, MSS, sack_ok=False)
    # 600 out, 3 segments left the network, the first segment presumed lost.
    assert rec.pipe(UNA, MAX, MAX, END, MSS, False) == 600 - 300 - 100


def test_pipe_outside_recovery_is_what_was_sent_since_snd_una_less_sacked():
    rec = recovery((300, 400))
    assert rec.pipe(UNA, at(350), MAX, END, MSS, True) == 350 - 50
    assert rec.pipe(UNA, MAX, MAX, END, MSS, True) == 600 - 100


# ----------------------------------------------------------------- new ACKs


def test_partial_ack_asks_for_the_next_hole_full_ack_ends_recovery():
    rec = recovery()
    for _ in range(3):
        rec.on_dupack(UNA, MAX, MSS, sack_ok=False)
    cc = RecordingCc()
    assert rec.on_new_ack(at(100), 100, 1.0, None, cc)  # RFC 6582 3.2 step 2
    assert (rec.rexmit_next, rec.dupacks, rec.recover) == (at(100), 0, MAX)
    assert not rec.on_new_ack(MAX, 500, 1.1, None, cc)  # step 3: full acknowledgment
    assert rec.recover is None and cc.calls == [("end",)]


def test_new_ack_outside_recovery_grows_cwnd_and_prunes_the_scoreboard():
    rec = recovery((300, 400))
    cc = RecordingCc()
    assert not rec.on_new_ack(at(350), 350, 1.0, 0.1, cc)
    assert cc.calls == [("ack", 350)]
    assert rec.scoreboard.sacked() == 50
    assert not rec.on_new_ack(at(351), 0, 1.0, 0.1, cc)  # the ACK of a SYN: no growth
    assert cc.calls == [("ack", 350)]


def test_timeout_ends_recovery_and_forgets_sacks_only_when_repeated():
    rec = recovery((300, 400))
    rec.recover = at(300)
    rec.dupacks = 2
    rec.on_timeout(MAX, repeated=False)
    assert (rec.recover, rec.recover_high, rec.dupacks) == (None, MAX, 0)
    assert rec.scoreboard.sacked() == 100  # Linux keeps SACK marks across one RTO
    rec.on_timeout(MAX, repeated=True)
    assert not rec.scoreboard  # RFC 2018 8: the receiver may have reneged
