"""ESTABLISHED: the data path, windows, retransmission and RTT (RFC 9293 3.8,
3.10.7.4; RFC 6298; RFC 5961 challenge ACKs)."""

import pytest

from tcpstack.core.config import TcpConfig
from tcpstack.core.events import DataReceived
from tcpstack.core.seq import seq_diff
from tcpstack.core.states import State
from tests.unit.tcpkit import (
    ACK,
    PSH,
    RST,
    SYN,
    WND,
    X,
    Y,
    add,
    events,
    expect,
    lost,
    seg,
    tcb_established,
    tcb_syn_rcvd,
)

# ------------------------------------------------------------------ receiving


def test_established_data_in_order():
    # A 64 KiB buffer, so the unscaled window shows the unread octets.
    tcb = tcb_established(TcpConfig(rcv_buf=WND))
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"abc"), 1.0)
    tcb.receive(seg(ACK | PSH, X + 4, Y + 1, b"defg"), 1.0)
    assert events(tcb) == [DataReceived(b"abc"), DataReceived(b"defg")]
    # One ACK for the batch, at once: the second segment (RFC 5681 4.2).
    expect(tcb, [(ACK, Y + 1, X + 8, 0, WND - 7)])
    assert tcb.next_deadline() is None


def test_established_data_out_of_order_dup_ack():
    tcb = tcb_established()
    tcb.receive(seg(ACK | PSH, X + 101, Y + 1, b"later"), 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 0, WND)])
    assert events(tcb) == []
    assert tcb.rcv_nxt == X + 1


def test_established_data_duplicate_acked():
    tcb = tcb_established()
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"abc"), 1.0)
    tcb.take_segments()
    events(tcb)
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"abc"), 1.1)
    expect(tcb, [(ACK, Y + 1, X + 4, 0)])
    assert events(tcb) == []


def test_established_data_partial_overlap_trimmed():
    tcb = tcb_established()
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"abc"), 1.0)
    events(tcb)
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"abcdef"), 1.1)
    assert events(tcb) == [DataReceived(b"def")]
    expect(tcb, [(ACK, Y + 1, X + 7, 0)])


def test_established_retransmitted_synack_reacked():
    tcb = tcb_established()
    tcb.receive(seg(SYN | ACK, X, Y + 1), 1.0)  # our ACK of it was lost
    expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    assert tcb.state is State.ESTABLISHED


# -------------------------------------------------------------------- sending


def test_established_send_segments_by_mss():
    tcb = tcb_established()
    tcb.nodelay = True  # the short tail leaves at once (Nagle: test_tcb_reliability)
    tcb.send(b"x" * 4000, 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 1460), (ACK, Y + 1461, X + 1, 1460),
                 (ACK | PSH, Y + 2921, X + 1, 1080)])
    assert (tcb.snd_una, tcb.snd_nxt, tcb.send_queue) == (Y + 1, Y + 4001, 4000)
    assert tcb.next_deadline() == pytest.approx(1.0 + tcb.rto)


def test_established_ack_advances_snd_una():
    tcb = tcb_established()
    tcb.nodelay = True  # all 4000 octets in flight, the tail too
    tcb.send(b"x" * 4000, 1.0)
    tcb.take_segments()
    tcb.receive(seg(ACK, X + 1, Y + 1461), 1.1)
    expect(tcb, [])
    assert (tcb.snd_una, tcb.send_queue) == (Y + 1461, 2540)
    assert tcb.next_deadline() == pytest.approx(1.1 + tcb.rto)  # restarted (RFC 6298 5.3)
    tcb.receive(seg(ACK, X + 1, Y + 4001), 1.2)
    assert (tcb.snd_una, tcb.send_queue) == (Y + 4001, 0)
    assert tcb.next_deadline() is None  # all acknowledged (RFC 6298 5.2)


def test_established_ack_of_unsent_data_acked_and_dropped():
    tcb = tcb_established()
    tcb.send(b"x" * 100, 1.0)
    tcb.take_segments()
    tcb.receive(seg(ACK | PSH, X + 1, Y + 500, b"zz"), 1.1)
    expect(tcb, [(ACK, Y + 101, X + 1, 0)])
    assert events(tcb) == []
    assert tcb.snd_una == Y + 1


def test_established_old_ack_ignored():
    tcb = tcb_established()
    tcb.send(b"x" * 100, 1.0)
    tcb.take_segments()
    tcb.receive(seg(ACK, X + 1, Y + 101), 1.1)
    tcb.receive(seg(ACK | PSH, X + 1, Y + 50, b"hi"), 1.2)  # a stale ACK field, new data
    assert tcb.snd_una == Y + 101
    assert events(tcb) == [DataReceived(b"hi")]


def test_established_send_limited_by_peer_window():
    tcb = tcb_established(window=1000)
    tcb.send(b"x" * 3000, 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 1000)])
    tcb.receive(seg(ACK, X + 1, Y + 501, window=1000), 1.1)  # window slides by 500
    # 500 octets fit, but a short segment waits while data is unacknowledged
    # (Nagle, 3.7.4; sender SWS avoidance, 3.8.6.2.1 with its [SND.NXT = SND.UNA]).
    expect(tcb, [])
    assert seq_diff(tcb.snd_nxt, tcb.snd_una) == 500
    tcb.receive(seg(ACK, X + 1, Y + 1001, window=1000), 1.2)
    expect(tcb, [(ACK, Y + 1001, X + 1, 1000)])  # never more than the window in flight
    assert seq_diff(tcb.snd_nxt, tcb.snd_una) == 1000


def test_established_window_update_releases_data():
    tcb = tcb_established(window=1000)
    tcb.nodelay = True  # the short tail leaves at once (Nagle: test_tcb_reliability)
    tcb.send(b"x" * 3000, 1.0)
    tcb.take_segments()
    tcb.receive(seg(ACK, X + 1, Y + 1, window=3000), 1.1)  # pure window update
    expect(tcb, [(ACK, Y + 1001, X + 1, 1460), (ACK | PSH, Y + 2461, X + 1, 540)])


def test_established_window_update_from_old_segment_ignored():
    tcb = tcb_established(window=1000)
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"abc", window=1000), 1.0)
    tcb.receive(seg(ACK, X + 1, Y + 1, window=30000), 1.1)  # older than SND.WL1 (3.10.7.4)
    assert tcb.snd_wnd == 1000


def test_established_zero_window_probe():
    tcb = tcb_established(window=0)
    tcb.send(b"abc", 1.0)
    expect(tcb, [])
    assert tcb.next_deadline() == pytest.approx(1.2)  # persist timer, RTO 0.2
    tcb.on_timer(1.2)
    expect(tcb, [(ACK, Y + 1, X + 1, 1)])  # one octet into the zero window (3.8.6.1)
    tcb.receive(seg(ACK, X + 1, Y + 2, window=10), 1.3)
    expect(tcb, [(ACK | PSH, Y + 2, X + 1, 2)])


def test_established_zero_window_probe_timer_is_named_persist():
    """`tcpstack ss` names the timer by what its expiry does (3.8.6.1), also once
    the probe octet is outstanding."""
    tcb = tcb_established(window=0)
    tcb.send(b"abc", 1.0)
    assert tcb.timers() == {"persist": pytest.approx(1.2)}
    tcb.on_timer(1.2)
    tcb.take_segments()
    assert set(tcb.timers()) == {"persist"}
    tcb.receive(seg(ACK, X + 1, Y + 2, window=1), 1.3)  # window open, two octets to send
    assert set(tcb.timers()) == {"retransmit"}


def test_established_zero_window_probes_are_not_retransmissions():
    """Probes are counted as ZeroWindowProbes (Linux TCPWinProbe), not in RetransSegs
    or RetransTimeouts: flow control, not loss."""
    tcb = tcb_established(window=0)
    tcb.send(b"abc", 1.0)
    for _ in range(3):
        tcb.on_timer(tcb.next_deadline())
    expect(tcb, [(ACK, Y + 1, X + 1, 1)] * 3)
    stats = tcb.stats
    assert (stats["ZeroWindowProbes"], stats["RetransSegs"], stats["RetransTimeouts"],
            tcb.total_retransmits) == (3, 0, 0, 0)


def test_established_zero_window_kept_open_while_probes_answered():
    tcb = tcb_established(TcpConfig(data_retries=3), window=0)
    tcb.send(b"abc", 0.0)
    for _ in range(10):  # more probes than data_retries
        t = tcb.next_deadline()
        tcb.on_timer(t)
        expect(tcb, [(ACK, Y + 1, X + 1, 1)])
        tcb.receive(seg(ACK, X + 1, Y + 1, window=0), t + 0.01)  # probe refused, peer alive
    assert tcb.state is State.ESTABLISHED  # RFC 9293 3.8.6.1 (MUST-36)


def test_established_consumed_reopens_window():
    tcb = tcb_established(TcpConfig(rcv_buf=WND))  # unscaled window = free buffer
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"x" * 30000), 1.0)
    expect(tcb, [])  # one segment: its ACK is delayed (RFC 5681 4.2)
    tcb.on_timer(1.04)
    expect(tcb, [(ACK, Y + 1, X + 30001, 0, WND - 30000)])
    tcb.consumed(1000, 1.1)  # below min(rcv_buf / 2, MSS): no update (SWS avoidance)
    expect(tcb, [])
    tcb.consumed(29000, 1.2)
    expect(tcb, [(ACK, Y + 1, X + 30001, 0, WND)])


def test_established_consumed_after_zero_window():
    tcb = tcb_established(TcpConfig(rcv_buf=2000))
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"x" * 2000), 1.0)
    expect(tcb, [])  # delayed ACK (RFC 5681 4.2)
    tcb.on_timer(1.04)
    expect(tcb, [(ACK, Y + 1, X + 2001, 0, 0)])
    tcb.consumed(2000, 1.1)
    expect(tcb, [(ACK, Y + 1, X + 2001, 0, 2000)])


# ------------------------------------------------------ retransmission, RTT


def test_established_rto_retransmits_from_snd_una():
    tcb = tcb_established()
    tcb.nodelay = True  # all three segments in flight
    assert tcb.rto == 0.2  # handshake RTT sample of 0 s, clamped to rto_min
    tcb.send(b"x" * 3000, 1.0)
    assert len(tcb.take_segments()) == 3
    tcb.receive(seg(ACK, X + 1, Y + 1461), 1.05)  # the first segment arrived
    tcb.on_timer(1.2499)
    expect(tcb, [])
    tcb.on_timer(1.25)
    # Go back to SND.UNA with cwnd = 1 MSS (RFC 5681 3.1): one segment.
    expect(tcb, [(ACK, Y + 1461, X + 1, 1460)])
    assert tcb.stats["RetransSegs"] == 1
    tcb.receive(seg(ACK, X + 1, Y + 2921), 1.3)
    expect(tcb, [(ACK | PSH, Y + 2921, X + 1, 80)])  # the rest, resent from SND.NXT
    assert tcb.stats["RetransSegs"] == 2


def test_established_rto_backoff_doubles():
    tcb = tcb_established()
    tcb.send(b"abc", 1.0)
    tcb.take_segments()
    t, gaps = 1.0, []
    for _ in range(4):
        deadline = tcb.next_deadline()
        gaps.append(round(deadline - t, 6))
        t = deadline
        tcb.on_timer(t)
        expect(tcb, [(ACK | PSH, Y + 1, X + 1, 3)])
    assert gaps == [0.2, 0.4, 0.8, 1.6]
    tcb.receive(seg(ACK, X + 1, Y + 4), t + 0.5)
    assert tcb.rto == pytest.approx(3.2)  # Karn: no sample from a retransmission
    assert tcb.next_deadline() is None


def test_established_rto_capped_and_gives_up():
    tcb = tcb_established(TcpConfig(data_retries=10))
    tcb.send(b"abc", 0.0)
    tcb.take_segments()
    while tcb.state is State.ESTABLISHED:
        tcb.on_timer(tcb.next_deadline())
        assert tcb.rto <= 60.0
    assert tcb.rto == 60.0
    segs = tcb.take_segments()
    assert len(segs) == 11 and segs[-1].flags == RST | ACK and segs[-1].seq == Y + 4
    assert lost(tcb) is TimeoutError


def test_established_rtt_sample_sets_rto():
    tcb = tcb_syn_rcvd()
    tcb.receive(seg(ACK, X + 1, Y + 1), 0.1)  # first sample R = 0.1
    assert (tcb.srtt, tcb.rttvar) == (pytest.approx(0.1), pytest.approx(0.05))
    assert tcb.rto == pytest.approx(0.3)  # SRTT + 4 * RTTVAR (RFC 6298 2.2)
    tcb.send(b"abc", 1.0)
    tcb.receive(seg(ACK, X + 1, Y + 4), 1.5)  # R' = 0.5 (RFC 6298 2.3)
    assert tcb.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.4)
    assert tcb.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.5)
    assert tcb.rto == pytest.approx(0.15 + 4 * 0.1375)


def test_established_rtt_sample_rto_at_least_rto_min():
    tcb = tcb_syn_rcvd()
    tcb.receive(seg(ACK, X + 1, Y + 1), 0.01)
    assert tcb.rto == 0.2


# --------------------------------------------------------- RST, SYN (RFC 5961)


def test_established_rst_in_window_challenge_ack():
    tcb = tcb_established()
    tcb.receive(seg(RST, X + 100), 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    assert tcb.state is State.ESTABLISHED
    assert tcb.stats["ChallengeAcks"] == 1


def test_established_rst_at_rcv_nxt_resets():
    tcb = tcb_established()
    tcb.receive(seg(RST, X + 1), 1.0)
    assert tcb.state is State.CLOSED
    expect(tcb, [])
    assert lost(tcb) is ConnectionResetError
    assert tcb.next_deadline() is None
    assert tcb.stats["EstabResets"] == 1


def test_established_rst_outside_window_dropped():
    tcb = tcb_established()
    tcb.receive(seg(RST, X), 1.0)
    tcb.receive(seg(RST, X + 1 + WND), 1.0)
    expect(tcb, [])
    assert tcb.state is State.ESTABLISHED


def test_established_syn_in_window_challenge_ack():
    tcb = tcb_established()
    tcb.receive(seg(SYN, X + 100), 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    assert tcb.state is State.ESTABLISHED
    assert tcb.stats["ChallengeAcks"] == 1


def test_established_old_syn_acked():
    tcb = tcb_established()
    tcb.receive(seg(SYN, X), 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    assert tcb.state is State.ESTABLISHED


# --------------------------------------- acceptability test (3.10.7.4 first)


def test_established_acceptability_zero_len_zero_window():
    tcb = tcb_established(TcpConfig(rcv_buf=1000))
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"x" * 1000), 1.0)
    tcb.on_timer(1.04)  # the delayed ACK (RFC 5681 4.2)
    expect(tcb, [(ACK, Y + 1, X + 1001, 0, 0)])
    tcb.receive(seg(ACK, X + 1001, Y + 1, window=500), 1.1)  # SEG.SEQ = RCV.NXT: accepted
    expect(tcb, [])
    assert tcb.snd_wnd == 500
    tcb.receive(seg(ACK, X + 1002, Y + 1, window=700), 1.2)  # anything else is not
    expect(tcb, [(ACK, Y + 1, X + 1001, 0, 0)])
    assert tcb.snd_wnd == 500


def test_established_acceptability_zero_len_open_window():
    tcb = tcb_established()
    tcb.receive(seg(ACK, X + WND, Y + 1), 1.0)  # RCV.NXT + RCV.WND - 1: last acceptable
    expect(tcb, [])
    # Just beyond, just before; a second apart, beyond the rate limit of these ACKs.
    for at, seq in ((1.0, X + 1 + WND), (2.0, X)):
        tcb.receive(seg(ACK, seq, Y + 1), at)
        expect(tcb, [(ACK, Y + 1, X + 1, 0)])


def test_established_acceptability_data_zero_window():
    tcb = tcb_established(TcpConfig(rcv_buf=1000))
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"x" * 1000), 1.0)
    events(tcb)
    tcb.take_segments()
    tcb.receive(seg(ACK | PSH, X + 1001, Y + 1, b"y"), 1.1)
    expect(tcb, [(ACK, Y + 1, X + 1001, 0, 0)])
    assert events(tcb) == []


def test_established_acceptability_data_open_window():
    tcb = tcb_established(TcpConfig(rcv_buf=1000))
    tcb.receive(seg(ACK | PSH, X - 9, Y + 1, b"0123456789abc"), 1.0)  # only the tail is new
    assert events(tcb) == [DataReceived(b"abc")]
    tcb.receive(seg(ACK | PSH, X + 4 + 997, Y + 1, b"late"), 1.0)  # starts past the window
    assert events(tcb) == []
    tcb.receive(seg(ACK | PSH, X + 4, Y + 1, b"y" * 1200), 1.0)  # trimmed to the window
    assert events(tcb) == [DataReceived(b"y" * 997)]
    expect(tcb, [(ACK, Y + 1, X + 4, 0, 997)])  # for "late", at once
    tcb.on_timer(1.04)  # the in-order data: a delayed ACK (RFC 5681 4.2)
    expect(tcb, [(ACK, Y + 1, X + 1001, 0, 0)])


# --------------------------------------------------------- sequence wrap


def test_established_transfer_across_sequence_wrap():
    x, y, size = 2**32 - 5, 2**32 - 10, 100_000
    tcb = tcb_established(x=x, y=y)
    out_data = bytes(i % 251 for i in range(size))
    in_data = bytes(i % 241 for i in range(size))
    tcb.send(out_data, 0.0)
    sent, got = bytearray(), bytearray()
    peer_nxt, t = add(x, 1), 0.0
    while len(sent) < size or len(got) < size:
        t += 0.001
        for s in tcb.take_segments():
            if s.payload:
                assert s.seq == add(y, 1 + len(sent))
                sent += s.payload
        chunk = in_data[len(got) : len(got) + 1000]
        tcb.receive(seg(ACK | PSH, peer_nxt, add(y, 1 + len(sent)), chunk), t)
        peer_nxt = add(peer_nxt, len(chunk))
        for e in events(tcb):
            got += e.data
            tcb.consumed(len(e.data), t)
    assert bytes(sent) == out_data and bytes(got) == in_data
    assert (tcb.snd_una, tcb.snd_nxt, tcb.rcv_nxt) == (add(y, 1 + size), add(y, 1 + size),
                                                       add(x, 1 + size))
    assert tcb.snd_una < y and tcb.rcv_nxt < x  # both really wrapped
    assert tcb.send_queue == 0
    # 100 chunks: the last one is the second since an ACK, so it is ACKed at once
    # (RFC 5681 4.2) and no delayed ACK or other timer is left.
    assert tcb.take_segments()[-1].ack == add(x, 1 + size)
    assert tcb.next_deadline() is None


def test_established_zero_window_probes_unanswered_give_up():
    tcb = tcb_established(TcpConfig(data_retries=3), window=0)
    tcb.send(b"abc", 0.0)
    while tcb.state is State.ESTABLISHED:
        tcb.on_timer(tcb.next_deadline())
    assert [s.flags for s in tcb.take_segments()] == [ACK, ACK, ACK, RST | ACK]
    assert lost(tcb) is TimeoutError


def test_established_timers_are_named_for_ss():
    tcb = tcb_established()
    assert tcb.timers() == {}
    tcb.send(b"x", 1.0)
    assert set(tcb.timers()) == {"retransmit"}


def test_established_window_reopened_resends_refused_probe_at_once():
    """3.8.6.1: probes answered with a zero window back the persist timer off
    (0.2, 0.4, 0.8, 1.6 s ...). When the window opens without SND.UNA moving, the
    refused probe octet and the rest go out at once from SND.UNA, and the next
    timeout is the measured RTO again, not the backed-off one (Linux tcp_ack_probe)."""
    tcb = tcb_established(window=0)
    tcb.send(b"abc", 0.0)
    t = 0.0
    for _ in range(5):
        t = tcb.next_deadline()
        tcb.on_timer(t)
        expect(tcb, [(ACK, Y + 1, X + 1, 1)])
        tcb.receive(seg(ACK, X + 1, Y + 1, window=0), t + 0.01)  # refused: window still 0
    assert tcb.next_deadline() - (t + 0.01) > 3  # backed off
    tcb.receive(seg(ACK, X + 1, Y + 1, window=100), t + 0.5)  # the window opens
    expect(tcb, [(ACK | PSH, Y + 1, X + 1, 3)])
    assert tcb.next_deadline() == pytest.approx(t + 0.5 + tcb.rto)
    assert tcb.rto < 1.0
