"""PAWS and disordered ACKs (RFC 7323 5.3; Linux tcp_disordered_ack_check), and the
rate limit on the ACKs that unacceptable segments draw (Linux tcp_oow_rate_limited
with tcp_invalid_ratelimit, the per-connection `challenge_ack_interval`).

Timestamps fixture (`tcb_with_timestamps`): TS.Recent 778 after the handshake at
0.0, RTO = rto_min = 0.2 s, so the replay window of a disordered ACK is
0.2 * 1200 = 240 ticks. Rate-limit tests use times a whole interval (0.5 s) apart
or within one, never both.
"""

from __future__ import annotations

import pytest

from tcpstack.core.config import TcpConfig
from tcpstack.core.events import DataReceived
from tcpstack.core.tcb import Tcb
from tests.unit.tcpkit import (
    ACK,
    MSS,
    PSH,
    RST,
    SYN,
    WND,
    X,
    Y,
    events,
    expect,
    peer_syn,
    seg,
    tcb_established,
    tcb_fin_wait_2,
    tcb_syn_rcvd,
    tcb_with_timestamps,
    ts_seg,
)

SEG = MSS - 12  # our segments carry the 12-octet timestamp option
UNA = Y + 1 + SEG  # SND.UNA once the peer acknowledged our first segment


def tcb_in_flight() -> Tcb:
    """Three segments out at 0.0; the peer acknowledged the first (TSval 800) at
    0.05, so TS.Recent = 800 and two segments are in flight."""
    tcb = tcb_with_timestamps()
    tcb.send(b"x" * 3000, 0.0)
    assert len(tcb.take_segments()) == 3
    tcb.receive(ts_seg(ACK, X + 1, UNA, tsval=800, tsecr=Y), 0.05)
    assert tcb.take_segments() == [] and (tcb.snd_una, tcb.ts_recent) == (UNA, 800)
    return tcb


def tcb_ts_recent(tsval: int, window: int = WND) -> Tcb:
    """Nothing in flight; a pure ACK with `tsval` and `window` at 0.0 set TS.Recent
    and SND.WND (same SND.WL1, same ACK: RFC 9293 3.10.7.4 updates the window)."""
    tcb = tcb_with_timestamps()
    tcb.receive(ts_seg(ACK, X + 1, Y + 1, tsval=tsval, tsecr=Y, window=window), 0.0)
    assert (tcb.ts_recent, tcb.snd_wnd) == (tsval, window)
    expect(tcb, [])
    return tcb


# ============================================= PAWS and disordered ACKs


def test_established_disordered_dup_ack_passes_paws():
    """The peer's duplicate ACKs D1 (TSval 801) and D2 (802) swap places on the way:
    D1 is no old duplicate, it is processed (a second duplicate ACK) and not answered."""
    tcb = tcb_in_flight()
    tcb.receive(ts_seg(ACK, X + 1, UNA, tsval=802, tsecr=Y), 0.06)  # D2
    tcb.receive(ts_seg(ACK, X + 1, UNA, tsval=801, tsecr=Y), 0.07)  # D1, overtaken
    expect(tcb, [])
    assert tcb.dupacks == 2 and tcb.ts_recent == 802
    assert tcb.stats["PAWSRejected"] == 0


@pytest.mark.parametrize(("age", "passes"), [(240, True), (241, False)])
def test_established_disordered_ack_only_within_the_replay_window(age, passes):
    """TS.Recent - TSval =< RTO in 1200 Hz ticks (Linux tcp_tsval_replay): older is
    an old duplicate after all, dropped with an ACK (RFC 7323 5.3 R1)."""
    tcb = tcb_ts_recent(1000)
    tcb.receive(ts_seg(ACK, X + 1, Y + 1, tsval=1000 - age, tsecr=Y), 0.1)
    expect(tcb, [] if passes else [(ACK, Y + 1, X + 1, 0)])
    assert tcb.stats["PAWSRejected"] == (0 if passes else 1)


@pytest.mark.parametrize(("window", "passes"), [(30000, True), (20000, True),
                                                (40000, False), (0, False)])
def test_established_disordered_ack_must_not_offer_a_new_window(window, passes):
    """Linux tcp_may_update_window: at the same SND.WL1, a larger window or a zero
    one would update SND.WND, so such an old segment stays rejected by PAWS."""
    tcb = tcb_ts_recent(1000, window=30000)
    tcb.receive(ts_seg(ACK, X + 1, Y + 1, tsval=999, tsecr=Y, window=window), 0.1)
    expect(tcb, [] if passes else [(ACK, Y + 1, X + 1, 0)])
    assert tcb.stats["PAWSRejected"] == (0 if passes else 1)


def test_established_old_tsval_with_new_ack_is_rejected_without_harm():
    """An ACK of new data with a TSval older than TS.Recent: dropped with an ACK
    (RFC 7323 5.3 R1; Linux too, it is no duplicate ACK). Nothing of it is taken,
    neither SND.UNA nor an RTT sample; the newer ACK the peer sent after it
    acknowledges as much and is processed in full."""
    tcb = tcb_in_flight()
    srtt, rto = tcb.srtt, tcb.rto
    tcb.receive(ts_seg(ACK, X + 1, UNA + SEG, tsval=799, tsecr=Y + 50), 0.3)
    expect(tcb, [(ACK, UNA + SEG + 104, X + 1, 0)])
    assert (tcb.snd_una, tcb.srtt, tcb.rto) == (UNA, srtt, rto)
    assert tcb.stats["PAWSRejected"] == 1
    tcb.receive(ts_seg(ACK, X + 1, UNA + SEG + 104, tsval=801, tsecr=Y + 50), 0.31)
    assert tcb.snd_una == UNA + SEG + 104 and tcb.srtt != srtt


def test_established_old_pure_ack_left_of_rcv_nxt_dropped_silently():
    """Linux 6.14+ (drop reason TCP_RFC7323_PAWS_ACK): a pure ACK left of RCV.NXT
    with an old TSval is stale, dropped without an answer and counted apart."""
    tcb = tcb_with_timestamps()
    tcb.receive(ts_seg(ACK | PSH, X + 1, Y + 1, b"abc", tsval=900, tsecr=Y), 0.1)
    assert events(tcb) == [DataReceived(b"abc")]
    tcb.receive(ts_seg(ACK, X + 1, Y + 1, tsval=899, tsecr=Y), 0.11)
    expect(tcb, [])
    assert (tcb.stats["PAWSOldAck"], tcb.stats["PAWSRejected"]) == (1, 0)


# ============================================= rate limit: PAWS


def test_established_paws_ack_for_pure_segment_rate_limited():
    """First answered, the next within 0.5 s held back and counted, the one at
    0.5 s answered again (Linux TCPACKSkippedPAWS)."""
    tcb = tcb_ts_recent(100_000)
    for at, answered in ((1.0, True), (1.4, False), (1.5, True)):
        tcb.receive(ts_seg(ACK, X + 1, Y + 1, tsval=1000, tsecr=Y), at)
        expect(tcb, [(ACK, Y + 1, X + 1, 0)] if answered else [])
    assert tcb.stats["PAWSRejected"] == 3 and tcb.stats["TCPACKSkippedPAWS"] == 1


def test_established_paws_ack_for_data_never_rate_limited():
    tcb = tcb_ts_recent(100_000)
    for at in (1.0, 1.1):
        tcb.receive(ts_seg(ACK | PSH, X + 1, Y + 1, b"old", tsval=1000, tsecr=Y), at)
        expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    assert tcb.stats["TCPACKSkippedPAWS"] == 0


# ============================================= rate limit: sequence test


def test_established_out_of_window_ack_rate_limited():
    """RFC 9293 3.10.7.4 (first) answers every unacceptable segment; Linux at most
    one pure one per tcp_invalid_ratelimit (TCPACKSkippedSeq)."""
    tcb = tcb_established()
    for at, answered in ((1.0, True), (1.4, False), (1.5, True)):
        tcb.receive(seg(ACK, X, Y + 1), at)
        expect(tcb, [(ACK, Y + 1, X + 1, 0)] if answered else [])
    assert tcb.stats["TCPACKSkippedSeq"] == 1


def test_established_out_of_window_data_always_answered():
    """A retransmission the peer thinks lost needs our ACK: text is never held back."""
    tcb = tcb_established()
    for at in (1.0, 1.1):
        tcb.receive(seg(ACK | PSH, X - 3, Y + 1, b"old"), at)
        expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    assert tcb.stats["TCPACKSkippedSeq"] == 0


def test_established_challenge_ack_and_out_of_window_ack_share_the_interval():
    """Linux keeps one tp->last_oow_ack_time for both."""
    tcb = tcb_established()
    tcb.receive(seg(RST, X + 2, 0), 1.0)  # in the window, not at RCV.NXT
    expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    tcb.receive(seg(ACK, X, Y + 1), 1.2)
    expect(tcb, [])
    assert (tcb.stats["ChallengeAcks"], tcb.stats["TCPACKSkippedSeq"]) == (1, 1)


def test_established_out_of_window_syn_draws_throttled_challenge_ack():
    """RFC 5961 4.2: a SYN draws a challenge ACK wherever it lies (Linux syn_challenge)."""
    tcb = tcb_established()
    for at in (1.0, 1.1):
        tcb.receive(seg(SYN, X + 1 + 2 * WND, 0), at)
    expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    assert (tcb.stats["ChallengeAcks"], tcb.stats["ChallengeAcksSuppressed"]) == (1, 1)


def test_syn_rcvd_retransmitted_syn_answered_once_per_interval():
    """Linux tcp_check_req: the SYN+ACK for a retransmitted SYN is rate-limited too
    (TCPACKSkippedSynRecv), so a blind flood of one SYN cannot be amplified."""
    tcb = tcb_syn_rcvd()
    for at, answered in ((0.3, True), (0.5, False), (0.8, True)):
        tcb.receive(peer_syn(), at)
        expect(tcb, [(SYN | ACK, Y, X + 1, 0)] if answered else [])
    assert (tcb.stats["SynAckRetrans"], tcb.stats["TCPACKSkippedSynRecv"]) == (2, 1)


def test_fin_wait_2_orphaned_out_of_window_ack_rate_limited():
    tcb = tcb_fin_wait_2(orphan=True)
    for at, answered in ((1.0, True), (1.1, False)):
        tcb.receive(seg(ACK, X, Y + 2), at)
        expect(tcb, [(ACK, Y + 2, X + 1, 0)] if answered else [])
    assert tcb.stats["TCPACKSkippedFinWait2"] == 1


def test_rate_limit_follows_challenge_ack_interval():
    """`challenge_ack_interval` 0 (--challenge-ack-interval 0) answers every one."""
    tcb = tcb_established(TcpConfig(challenge_ack_interval=0.0))
    for _ in range(3):
        tcb.receive(seg(ACK, X, Y + 1), 1.0)
        expect(tcb, [(ACK, Y + 1, X + 1, 0)])
