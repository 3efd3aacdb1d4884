"""Reliability and performance rules of the TCB, one test per rule: window scaling
(RFC 7323), SACK (RFC 2018, RFC 6675), out-of-order reassembly, delayed ACK
(RFC 5681 4.2, RFC 9293 3.8.6.3), Nagle and sender SWS avoidance (RFC 9293 3.7.4,
3.8.6.2.1), congestion control (RFC 5681, 6928, 3465, 6582, 9438), challenge ACK
rate limiting (RFC 5961 7), and a lossy end-to-end transfer between two TCBs.

Unless a test says otherwise the peer's MSS is 1460 (MSS), its window 65535 (WND),
our RTO 0.2 s after the handshake, and the congestion controller CUBIC with an
initial window of 10 segments.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections import Counter

import pytest

from tcpstack.core.config import TcpConfig
from tcpstack.core.events import (
    ConnectionLost,
    DataReceived,
    EofReceived,
    Established,
    StateChanged,
)
from tcpstack.core.segment import Options, Segment
from tcpstack.core.states import FINISHED, State
from tcpstack.core.tcb import Tcb
from tests.unit.tcpkit import (
    ACK,
    FIN,
    MSS,
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
    add,
    events,
    expect,
    lost,
    peer_syn,
    seg,
    tcb_established,
    tcb_syn_rcvd,
    tcb_syn_sent,
    tcb_with_timestamps,
    ts_seg,
)

OUR_WSCALE = 4  # the smallest shift for the default 1 MiB receive buffer
NEWRENO = TcpConfig(cc="newreno")


def full_segments(first: int, count: int, last_psh: bool = False) -> list[tuple]:
    """`count` back-to-back full-sized data segments from Y-relative `first` on."""
    rows = [(ACK, add(first, i * MSS), X + 1, MSS) for i in range(count)]
    if last_psh:
        rows[-1] = (ACK | PSH, *rows[-1][1:])
    return rows


def in_flight_ten(config: TcpConfig | None = None, **kw) -> Tcb:
    """ESTABLISHED with exactly ten full segments (the initial window) sent at 1.0."""
    tcb = tcb_established(config, **kw)
    tcb.send(b"d" * (10 * MSS), 1.0)
    expect(tcb, full_segments(Y + 1, 10, last_psh=True))
    return tcb


def dupack(ack: int, sack: list[tuple[int, int]] | None = None) -> Segment:
    return seg(ACK, X + 1, ack, sack=sack)


# ================================================ window scaling (RFC 7323)


@pytest.mark.parametrize(("wscale", "sack"), [(7, True), (7, False), (None, True),
                                              (None, False)])
def test_listen_syn_options_answered_only_if_offered(wscale, sack):
    tcb = Tcb.open_passive(TcpConfig(), peer_syn(wscale=wscale, sack_permitted=sack), Y, 0.0,
                           Counter())
    ours = OUR_WSCALE if wscale is not None else None
    # The SYN+ACK's own window is never scaled (RFC 7323 2.2): the 16-bit maximum.
    expect(tcb, [(SYN | ACK, Y, X + 1, 0, WND,
                  Options(mss=1460, wscale=ours, sack_permitted=sack))])
    assert (tcb.snd_wscale, tcb.rcv_wscale, tcb.sack_ok) == (wscale or 0, ours or 0, sack)


def test_listen_syn_options_ignored_when_disabled():
    config = TcpConfig(window_scaling=False, sack=False, timestamps=False)
    tcb = Tcb.open_passive(config, peer_syn(wscale=7, sack_permitted=True), Y, 0.0, Counter())
    expect(tcb, [(SYN | ACK, Y, X + 1, 0, WND, Options(mss=1460))])
    assert (tcb.snd_wscale, tcb.rcv_wscale, tcb.sack_ok) == (0, 0, False)


def test_listen_syn_wscale_above_14_used_as_14():
    tcb = Tcb.open_passive(TcpConfig(), peer_syn(wscale=15), Y, 0.0, Counter())
    assert tcb.snd_wscale == 14  # RFC 7323 2.3


def test_syn_rcvd_peer_window_scaled_after_syn_only():
    tcb = Tcb.open_passive(TcpConfig(), peer_syn(wscale=3, window=1000), Y, 0.0, Counter())
    tcb.take_segments()
    assert tcb.snd_wnd == 1000  # the SYN's window is not scaled (RFC 7323 2.2)
    tcb.receive(seg(ACK, X + 1, Y + 1, window=1500), 0.1)
    assert tcb.state is State.ESTABLISHED
    assert tcb.snd_wnd == 1500 << 3
    # The scaled window limits sending: 8 full segments fit in 12000 octets; the
    # 320-octet rest is a short segment while data is in flight, so it waits.
    tcb.send(b"x" * 20000, 0.2)
    expect(tcb, full_segments(Y + 1, 8))


def test_established_window_field_scaled_and_rounded_up():
    tcb = tcb_established(wscale=7)
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"a" * 500), 1.0)
    tcb.receive(seg(ACK | PSH, X + 501, Y + 1, b"b" * 501), 1.0)
    # 1 MiB - 1001 = 1047575 octets free: 65473.4 units of 16, rounded *up* to
    # 65474 so the advertised right edge never moves left (RFC 7323 2.4, 3.8.6.2.2).
    expect(tcb, [(ACK, Y + 1, X + 1002, 0, 65474)])
    tcb.consumed(1001, 1.1)
    expect(tcb, [])  # the edge moved by 976 < MSS: no update (receiver SWS, 3.8.6.2.2)
    tcb.on_timer(1.2)
    expect(tcb, [])


def test_established_window_unscaled_without_negotiation():
    tcb = tcb_established()  # the peer offered no window scale
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"a" * 500, window=1000), 1.0)
    tcb.receive(seg(ACK | PSH, X + 501, Y + 1, b"b" * 500, window=1000), 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1001, 0, WND)])  # 1 MiB free, capped to 16 bits
    assert tcb.snd_wnd == 1000
    assert tcb.rcv_wnd == WND


def test_syn_sent_syn_offers_wscale_and_sack():
    tcb = Tcb.open_active(TcpConfig(), (US, US_PORT), (PEER, PEER_PORT), Y, 0.0, Counter())
    expect(tcb, [(SYN, Y, 0, 0, WND, Options(mss=1460, wscale=OUR_WSCALE,
                                             sack_permitted=True, timestamp=(Y, 0)))])


def test_syn_sent_syn_without_options_when_disabled():
    config = TcpConfig(window_scaling=False, sack=False, timestamps=False)
    tcb = Tcb.open_active(config, (US, US_PORT), (PEER, PEER_PORT), Y, 0.0, Counter())
    expect(tcb, [(SYN, Y, 0, 0, WND, Options(mss=1460))])
    tcb.receive(seg(SYN | ACK, X, Y + 1, window=1000, mss=MSS, wscale=2, sack_permitted=True),
                0.1)
    assert (tcb.snd_wscale, tcb.rcv_wscale, tcb.sack_ok) == (0, 0, False)
    tcb.receive(seg(ACK, X + 1, Y + 1, window=2000), 0.2)
    assert tcb.snd_wnd == 2000  # we did not offer scaling: the peer's shift is not used


def test_syn_sent_synack_with_wscale_and_sack():
    tcb = tcb_syn_sent()
    tcb.receive(seg(SYN | ACK, X, Y + 1, window=1000, mss=MSS, wscale=2, sack_permitted=True),
                0.1)
    assert tcb.state is State.ESTABLISHED
    assert (tcb.snd_wscale, tcb.rcv_wscale, tcb.sack_ok) == (2, OUR_WSCALE, True)
    assert tcb.snd_wnd == 1000  # from the SYN+ACK: not scaled
    expect(tcb, [(ACK, Y + 1, X + 1, 0, (2**20 - 16) >> OUR_WSCALE, Options())])
    tcb.receive(seg(ACK, X + 1, Y + 1, window=1000), 0.2)
    assert tcb.snd_wnd == 4000


def test_syn_sent_synack_without_wscale_and_sack():
    tcb = tcb_syn_sent()
    tcb.receive(seg(SYN | ACK, X, Y + 1, window=1000, mss=MSS), 0.1)
    assert (tcb.snd_wscale, tcb.rcv_wscale, tcb.sack_ok) == (0, 0, False)
    expect(tcb, [(ACK, Y + 1, X + 1, 0, WND, Options())])  # unscaled, capped to 16 bits
    tcb.receive(seg(ACK, X + 1, Y + 1, window=1000), 0.2)
    assert tcb.snd_wnd == 1000


# ==================================== out-of-order data and SACK (RFC 2018)


def test_established_out_of_order_kept_and_sacked_at_once():
    tcb = tcb_established(sack_permitted=True)
    tcb.receive(seg(ACK | PSH, X + 1001, Y + 1, b"b" * 1000), 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 0, WND, Options(sack_blocks=[(X + 1001, X + 2001)]))])
    assert events(tcb) == []
    assert tcb.rcv_nxt == X + 1
    assert tcb.next_deadline() is None  # nothing delayed: the ACK left at once


def test_established_sack_blocks_most_recent_first_at_most_three():
    tcb = tcb_established(sack_permitted=True)

    def blocks_after(offset: int, size: int = 100) -> list[tuple[int, int]]:
        tcb.receive(seg(ACK, X + offset, Y + 1, b"o" * size), 1.0)
        (ack,) = tcb.take_segments()
        assert ack.ack == X + 1
        return [(a - X, b - X) for a, b in ack.options.sack_blocks]

    assert blocks_after(1001) == [(1001, 1101)]
    assert blocks_after(2001) == [(2001, 2101), (1001, 1101)]
    assert blocks_after(3001) == [(3001, 3101), (2001, 2101), (1001, 1101)]
    assert blocks_after(4001) == [(4001, 4101), (3001, 3101), (2001, 2101)]  # RFC 2018 4
    # The first block holds the segment that triggered the ACK, merged with its neighbour.
    assert blocks_after(1101) == [(1001, 1201), (4001, 4101), (3001, 3101)]


def test_established_hole_fill_delivers_everything_and_acks_at_once():
    tcb = tcb_established(sack_permitted=True)
    tcb.receive(seg(ACK, X + 1001, Y + 1, b"b" * 1000), 1.0)
    tcb.receive(seg(ACK, X + 2001, Y + 1, b"c" * 1000), 1.0)
    tcb.take_segments()
    tcb.receive(seg(ACK, X + 1, Y + 1, b"a" * 1000), 1.1)
    assert events(tcb) == [DataReceived(b"a" * 1000), DataReceived(b"b" * 1000 + b"c" * 1000)]
    # RFC 5681 4.2: a segment that fills a gap is acknowledged immediately.
    expect(tcb, [(ACK, Y + 1, X + 3001, 0, WND, Options())])
    assert tcb.next_deadline() is None


def test_established_hole_partly_filled_acked_with_remaining_block():
    tcb = tcb_established(sack_permitted=True)
    tcb.receive(seg(ACK, X + 1001, Y + 1, b"b" * 1000), 1.0)
    tcb.receive(seg(ACK, X + 3001, Y + 1, b"d" * 1000), 1.0)
    tcb.take_segments()
    tcb.receive(seg(ACK, X + 1, Y + 1, b"a" * 1000), 1.1)
    assert events(tcb) == [DataReceived(b"a" * 1000), DataReceived(b"b" * 1000)]
    expect(tcb, [(ACK, Y + 1, X + 2001, 0, WND, Options(sack_blocks=[(X + 3001, X + 4001)]))])


def test_established_out_of_order_kept_without_sack():
    tcb = tcb_established()
    tcb.receive(seg(ACK, X + 1001, Y + 1, b"b" * 1000), 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 0, WND, Options())])  # a plain duplicate ACK
    tcb.receive(seg(ACK, X + 1, Y + 1, b"a" * 1000), 1.1)
    assert events(tcb) == [DataReceived(b"a" * 1000), DataReceived(b"b" * 1000)]
    expect(tcb, [(ACK, Y + 1, X + 2001, 0)])


def test_established_out_of_order_fin_processed_when_hole_fills():
    tcb = tcb_established(sack_permitted=True)
    tcb.receive(seg(ACK | FIN, X + 1001, Y + 1, b"b" * 1000), 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 0, WND, Options(sack_blocks=[(X + 1001, X + 2001)]))])
    assert tcb.state is State.ESTABLISHED
    assert events(tcb) == []
    tcb.receive(seg(ACK, X + 1, Y + 1, b"a" * 1000), 1.1)
    assert events(tcb) == [DataReceived(b"a" * 1000), DataReceived(b"b" * 1000),
                           EofReceived()]
    assert tcb.state is State.CLOSE_WAIT
    expect(tcb, [(ACK, Y + 1, X + 2002, 0)])  # data and FIN acknowledged at once


def test_established_out_of_order_trimmed_to_window():
    tcb = tcb_established(TcpConfig(rcv_buf=1000), sack_permitted=True)
    # Octets 500..1499: only 500..999 fit the 1000-octet window (3.10.7.4).
    tcb.receive(seg(ACK, X + 501, Y + 1, b"z" * 1000), 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 0, 1000, Options(sack_blocks=[(X + 501, X + 1001)]))])
    tcb.receive(seg(ACK, X + 1, Y + 1, b"a" * 500), 1.1)
    assert events(tcb) == [DataReceived(b"a" * 500), DataReceived(b"z" * 500)]
    expect(tcb, [(ACK, Y + 1, X + 1001, 0, 0)])


# ============================== delayed ACK (RFC 5681 4.2, RFC 9293 3.8.6.3)


def test_established_delayed_ack_after_40_ms():
    tcb = tcb_established()
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"a" * 100), 1.0)
    expect(tcb, [])
    assert tcb.next_deadline() == 1.04
    tcb.on_timer(1.0399)
    expect(tcb, [])
    tcb.on_timer(1.04)
    expect(tcb, [(ACK, Y + 1, X + 101, 0)])
    assert tcb.next_deadline() is None


def test_established_delayed_ack_every_second_segment():
    tcb = tcb_established()
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"a" * 100), 1.0)
    expect(tcb, [])
    tcb.receive(seg(ACK | PSH, X + 101, Y + 1, b"b" * 100), 1.01)
    expect(tcb, [(ACK, Y + 1, X + 201, 0)])
    assert tcb.next_deadline() is None
    tcb.receive(seg(ACK | PSH, X + 201, Y + 1, b"c" * 100), 1.02)  # counting starts over
    expect(tcb, [])
    assert tcb.next_deadline() == pytest.approx(1.06)


def test_established_delayed_ack_rides_on_outgoing_data():
    tcb = tcb_established()
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"GET /"), 1.0)
    tcb.send(b"200 OK", 1.01)
    expect(tcb, [(ACK | PSH, Y + 1, X + 6, 6)])
    assert tcb.next_deadline() == pytest.approx(1.21)  # only the retransmission timer


def test_established_fin_acked_at_once():
    tcb = tcb_established()
    tcb.receive(seg(ACK | PSH | FIN, X + 1, Y + 1, b"bye"), 1.0)
    expect(tcb, [(ACK, Y + 1, X + 5, 0)])
    assert tcb.next_deadline() is None


def test_established_delayed_ack_disabled():
    tcb = tcb_established(TcpConfig(delayed_ack=0))
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"a" * 100), 1.0)
    expect(tcb, [(ACK, Y + 1, X + 101, 0)])


# ======================== Nagle and sender SWS (RFC 9293 3.7.4, 3.8.6.2.1)


def test_established_nagle_holds_short_tail_while_short_segment_unacked():
    """Minshall's Nagle, as Linux: a short tail goes at once unless an earlier
    short segment is still unacknowledged."""
    tcb = tcb_established()
    tcb.send(b"x" * 2000, 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 1460), (ACK | PSH, Y + 1461, X + 1, 540)])
    tcb.send(b"y" * 100, 1.01)
    expect(tcb, [])  # the 540-octet segment is unacknowledged
    tcb.receive(seg(ACK, X + 1, Y + 2001), 1.05)
    expect(tcb, [(ACK | PSH, Y + 2001, X + 1, 100)])


def test_established_nagle_coalesces_small_writes():
    tcb = tcb_established()
    tcb.send(b"a", 1.0)
    expect(tcb, [(ACK | PSH, Y + 1, X + 1, 1)])  # nothing in flight: sent at once
    tcb.send(b"b", 1.01)
    tcb.send(b"c", 1.02)
    expect(tcb, [])
    tcb.receive(seg(ACK, X + 1, Y + 2), 1.05)
    expect(tcb, [(ACK | PSH, Y + 2, X + 1, 2)])


def test_established_nodelay_sends_short_tail_at_once():
    tcb = tcb_established()
    tcb.nodelay = True
    tcb.send(b"x" * 2000, 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 1460), (ACK | PSH, Y + 1461, X + 1, 540)])
    tcb.send(b"a", 1.01)
    expect(tcb, [(ACK | PSH, Y + 2001, X + 1, 1)])


def test_established_nagle_does_not_hold_fin():
    tcb = tcb_established()
    tcb.send(b"x" * 100, 1.0)
    tcb.send(b"y" * 100, 1.0)
    expect(tcb, [(ACK | PSH, Y + 1, X + 1, 100)])  # the second short one waits...
    tcb.close(1.01)
    expect(tcb, [(ACK | PSH | FIN, Y + 101, X + 1, 100)])  # ...but not with the FIN
    assert tcb.state is State.FIN_WAIT_1


# ============================== congestion control (RFC 5681, 6928, 3465)


def test_established_initial_window_ten_segments():
    tcb = tcb_established()
    assert tcb.cc.cwnd == 10 * MSS  # RFC 6928; the ACK of our SYN adds nothing (RFC 5681 3.1)
    tcb.nodelay = True
    tcb.send(b"d" * (10 * MSS + 1), 1.0)
    expect(tcb, full_segments(Y + 1, 10))  # the eleventh octet waits for an ACK
    assert tcb.send_queue == 10 * MSS + 1


def test_established_slow_start_byte_counting():
    tcb = tcb_established()
    tcb.send(b"d" * (20 * MSS), 1.0)
    expect(tcb, full_segments(Y + 1, 10))
    tcb.receive(seg(ACK, X + 1, Y + 1 + 2 * MSS), 1.05)  # two segments acknowledged
    assert tcb.cc.cwnd == 12 * MSS
    expect(tcb, full_segments(Y + 1 + 10 * MSS, 4))  # 8 in flight + 4 = 12
    tcb.receive(seg(ACK, X + 1, Y + 1 + 6 * MSS), 1.06)  # four more: at most L = 2 MSS
    assert tcb.cc.cwnd == 14 * MSS  # RFC 3465
    expect(tcb, full_segments(Y + 1 + 14 * MSS, 6, last_psh=True))


# ========================= fast retransmit and recovery (RFC 5681, 6675, 6582)


def test_established_fast_retransmit_on_third_duplicate_ack():
    tcb = in_flight_ten(NEWRENO)
    tcb.receive(dupack(Y + 1), 1.05)
    tcb.receive(dupack(Y + 1), 1.05)
    expect(tcb, [])  # two are not enough (RFC 5681 3.2)
    assert tcb.stats["FastRetransmits"] == 0
    tcb.receive(dupack(Y + 1), 1.05)
    expect(tcb, [(ACK, Y + 1, X + 1, MSS)])
    assert tcb.stats["FastRetransmits"] == 1
    assert (tcb.cc.ssthresh, tcb.cc.cwnd) == (5 * MSS, 5 * MSS)  # FlightSize / 2


def test_established_cubic_fast_retransmit_reduces_by_beta():
    tcb = in_flight_ten()
    for _ in range(3):
        tcb.receive(dupack(Y + 1), 1.05)
    expect(tcb, [(ACK, Y + 1, X + 1, MSS)])
    assert tcb.cc.ssthresh == tcb.cc.cwnd == 7 * MSS  # RFC 9438 4.6: 0.7 * FlightSize


def test_established_window_change_is_not_a_duplicate_ack():
    tcb = in_flight_ten(NEWRENO)
    for window in (WND - 1, WND - 2, WND - 3):  # RFC 5681 2: the window must be unchanged
        tcb.receive(seg(ACK, X + 1, Y + 1, window=window), 1.05)
    expect(tcb, [])
    assert tcb.stats["FastRetransmits"] == 0


def test_established_sack_retransmits_only_the_holes():
    tcb = in_flight_ten(sack_permitted=True)
    s = [add(Y + 1, i * MSS) for i in range(11)]  # s[i]: start of segment i
    tcb.receive(seg(ACK, X + 1, s[1]), 1.05)  # segment 0 arrived; 1 and 3 are lost
    assert tcb.cc.cwnd == 11 * MSS
    expect(tcb, [])  # no new data left to send
    tcb.receive(dupack(s[1], [(s[2], s[3])]), 1.06)
    tcb.receive(dupack(s[1], [(s[4], s[5]), (s[2], s[3])]), 1.06)
    expect(tcb, [])
    tcb.receive(dupack(s[1], [(s[4], s[6]), (s[2], s[3])]), 1.06)
    # Three segments SACKed above segment 1: it is lost (RFC 6675 IsLost). Above
    # segment 3 only two are SACKed: it may merely be reordered, so it waits.
    expect(tcb, [(ACK, s[1], X + 1, MSS)])
    assert tcb.cc.ssthresh == tcb.cc.cwnd == int(9 * MSS * 0.7)
    tcb.receive(dupack(s[1], [(s[4], s[7]), (s[2], s[3])]), 1.07)
    # Now three are SACKed above segment 3: lost, and retransmitted; never the
    # SACKed segments, nor 7-9 with nothing SACKed above them.
    expect(tcb, [(ACK, s[3], X + 1, MSS)])
    tcb.receive(seg(ACK, X + 1, s[10]), 1.08)
    assert tcb.cc.cwnd == tcb.cc.ssthresh  # full ACK: recovery over (RFC 6675 5)
    assert tcb.stats["RetransSegs"] == 2


def test_established_sack_loss_detected_before_three_duplicate_acks():
    tcb = in_flight_ten(sack_permitted=True)
    # One ACK reports three segments above a hole (an ACK thinned out): more than
    # (DupThresh - 1) * SMSS octets SACKed means the first segment is lost (RFC 6675 4).
    tcb.receive(dupack(Y + 1, [(Y + 1 + MSS, Y + 1 + 4 * MSS)]), 1.05)
    expect(tcb, [(ACK, Y + 1, X + 1, MSS)])
    assert tcb.stats["FastRetransmits"] == 1


def test_established_newreno_partial_ack_retransmits_next_segment():
    tcb = in_flight_ten(NEWRENO)  # segments 0 and 2 are lost
    for _ in range(3):
        tcb.receive(dupack(Y + 1), 1.05)
    expect(tcb, [(ACK, Y + 1, X + 1, MSS)])
    tcb.receive(seg(ACK, X + 1, Y + 1 + 2 * MSS), 1.1)  # a partial ACK (RFC 6582 3.2 step 2)
    expect(tcb, [(ACK, Y + 1 + 2 * MSS, X + 1, MSS)])
    assert (tcb.cc.ssthresh, tcb.cc.cwnd) == (5 * MSS, 5 * MSS)
    assert tcb.next_deadline() == pytest.approx(1.1 + tcb.rto)  # restarted by the partial ACK


def test_established_full_ack_ends_recovery():
    tcb = in_flight_ten(NEWRENO)
    for _ in range(3):
        tcb.receive(dupack(Y + 1), 1.05)
    tcb.take_segments()
    for _ in range(4):  # more duplicates in recovery: no inflation of cwnd itself
        tcb.receive(dupack(Y + 1), 1.06)
    tcb.receive(seg(ACK, X + 1, Y + 1 + 10 * MSS), 1.1)
    assert tcb.cc.cwnd == tcb.cc.ssthresh == 5 * MSS  # RFC 6582 3.2 step 3
    assert tcb.next_deadline() is None
    # Out of recovery: new ACKs grow cwnd again (congestion avoidance).
    tcb.send(b"e" * (5 * MSS), 1.2)
    expect(tcb, full_segments(Y + 1 + 10 * MSS, 5, last_psh=True))
    tcb.receive(seg(ACK, X + 1, Y + 1 + 15 * MSS), 1.3)
    assert tcb.cc.cwnd == 6 * MSS


def test_established_no_second_reduction_in_the_same_window():
    tcb = in_flight_ten(NEWRENO)  # segments 0 and 2 are lost
    for _ in range(3):
        tcb.receive(dupack(Y + 1), 1.05)
    tcb.take_segments()
    tcb.receive(seg(ACK, X + 1, Y + 1 + 2 * MSS), 1.1)  # partial ACK
    expect(tcb, [(ACK, Y + 1 + 2 * MSS, X + 1, MSS)])
    for _ in range(3):  # the second loss of the window produces its own duplicates
        tcb.receive(dupack(Y + 1 + 2 * MSS), 1.11)
    expect(tcb, [])
    assert tcb.stats["FastRetransmits"] == 1
    assert (tcb.cc.ssthresh, tcb.cc.cwnd) == (5 * MSS, 5 * MSS)  # RFC 6582 3.2 step 1


def test_established_no_fast_retransmit_for_the_window_of_a_timeout():
    tcb = in_flight_ten(NEWRENO)
    tcb.on_timer(1.2)
    expect(tcb, [(ACK, Y + 1, X + 1, MSS)])
    tcb.receive(seg(ACK, X + 1, Y + 1 + MSS), 1.25)
    expect(tcb, full_segments(Y + 1 + MSS, 2))  # go-back-N in slow start
    for _ in range(3):  # the peer already holds some of what we resend
        tcb.receive(dupack(Y + 1 + MSS), 1.26)
    expect(tcb, [])  # RFC 6582 3.2 step 4: "recover" = SND.MAX at the timeout
    assert tcb.stats["FastRetransmits"] == 0
    assert tcb.cc.cwnd == 2 * MSS


@pytest.mark.parametrize("sack", [True, False])
def test_established_new_recovery_at_the_recovery_point(sack):
    tcb = in_flight_ten(sack_permitted=sack)
    # Each duplicate ACK reports one more segment held above the hole: only ACKs
    # with new SACK information count as duplicates (RFC 6675 2).
    for i in range(3):
        blocks = [(Y + 1 + MSS, Y + 1 + (2 + i) * MSS)] if sack else None
        tcb.receive(dupack(Y + 1, blocks), 1.05)
    expect(tcb, [(ACK, Y + 1, X + 1, MSS)])
    tcb.receive(seg(ACK, X + 1, Y + 1 + 10 * MSS), 1.1)  # full ACK: exactly the recovery point
    tcb.send(b"e" * (7 * MSS), 1.2)
    expect(tcb, full_segments(Y + 1 + 10 * MSS, 7, last_psh=True))  # cwnd = 7 MSS
    first = Y + 1 + 10 * MSS  # the first segment of the new window is lost
    for i in range(3):
        blocks = [(first + MSS, first + (2 + i) * MSS)] if sack else None
        tcb.receive(dupack(first, blocks), 1.25)
    if sack:
        # RFC 6675 5/5.1: recovery ended when SND.UNA reached RecoveryPoint.
        expect(tcb, [(ACK, first, X + 1, MSS)])
        assert tcb.stats["FastRetransmits"] == 2
    else:
        # RFC 6582 3.2 step 1 (and Linux Reno): the ACK must cover more than "recover".
        expect(tcb, [])
        assert tcb.stats["FastRetransmits"] == 1


# ================================== retransmission timeout (RFC 5681 3.1)


def test_established_rto_one_segment_then_slow_start():
    tcb = in_flight_ten()
    assert tcb.next_deadline() == pytest.approx(1.2)
    tcb.on_timer(1.2)
    expect(tcb, [(ACK, Y + 1, X + 1, MSS)])  # go back N, but cwnd = LW = 1 MSS
    assert tcb.cc.cwnd == MSS
    assert tcb.cc.ssthresh == 7 * MSS  # CUBIC: 0.7 * FlightSize (RFC 9438 4.8)
    tcb.receive(seg(ACK, X + 1, Y + 1 + MSS), 1.3)
    expect(tcb, full_segments(Y + 1 + MSS, 2))
    tcb.receive(seg(ACK, X + 1, Y + 1 + 3 * MSS), 1.4)
    expect(tcb, full_segments(Y + 1 + 3 * MSS, 4))
    assert tcb.stats["RetransSegs"] == 7


def test_established_newreno_rto_ssthresh_half_flight():
    tcb = in_flight_ten(NEWRENO)
    tcb.on_timer(1.2)
    expect(tcb, [(ACK, Y + 1, X + 1, MSS)])
    assert (tcb.cc.ssthresh, tcb.cc.cwnd) == (5 * MSS, MSS)  # RFC 5681 (4), LW


def test_established_rto_ack_carries_snd_max():
    tcb = in_flight_ten()
    tcb.on_timer(1.2)
    tcb.take_segments()
    # Data from the peer while go-back-N has pulled SND.NXT back: our ACK must carry
    # the highest sequence number sent, or the peer (RCV.NXT = Y+1+10*MSS) finds
    # it unacceptable and drops it unread.
    tcb.receive(seg(ACK | PSH | FIN, X + 1, Y + 1, b"hi"), 1.25)
    expect(tcb, [(ACK, Y + 1 + 10 * MSS, X + 4, 0)])


def test_established_abort_after_rto_resets_at_snd_max():
    tcb = in_flight_ten()
    tcb.on_timer(1.2)
    tcb.take_segments()
    tcb.abort(1.25)
    # <SEQ=SND.NXT> of 3.10.5 is the highest sent: the peer's RCV.NXT, so it resets
    # at once instead of answering with a challenge ACK (RFC 5961 3.2).
    expect(tcb, [(RST | ACK, Y + 1 + 10 * MSS, X + 1, 0)])


def test_established_zero_window_probe_keeps_cwnd():
    tcb = tcb_established(window=0)
    tcb.send(b"x" * 3000, 1.0)
    tcb.on_timer(1.2)
    expect(tcb, [(ACK, Y + 1, X + 1, 1)])
    tcb.receive(seg(ACK, X + 1, Y + 1, window=0), 1.25)
    tcb.on_timer(1.6)
    expect(tcb, [(ACK, Y + 1, X + 1, 1)])
    # Flow control, not congestion: the window opens and data flows at full cwnd.
    tcb.receive(seg(ACK, X + 1, Y + 2, window=WND), 1.65)
    assert tcb.cc.cwnd == 10 * MSS + 1  # the probe octet was acknowledged
    expect(tcb, [*full_segments(Y + 2, 2), (ACK | PSH, Y + 2 + 2 * MSS, X + 1, 79)])


# ==================================== challenge ACKs (RFC 5961 7, Linux)


def test_established_challenge_ack_rate_limited():
    tcb = tcb_established()
    tcb.receive(seg(RST, X + 100), 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    tcb.receive(seg(RST, X + 100), 1.2)
    tcb.receive(seg(SYN, X + 100), 1.4999)  # one budget for RST and SYN challenges
    expect(tcb, [])
    assert tcb.stats["ChallengeAcksSuppressed"] == 2
    tcb.receive(seg(RST, X + 100), 1.5)
    expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    assert tcb.stats["ChallengeAcks"] == 2
    assert tcb.state is State.ESTABLISHED


# ====================================== lossy transfer between two TCBs


SIZE = 1_000_000
LOSS = 0.05
DELAY = 0.005  # one way
REORDER = 0.05  # this share of segments is held up to REORDER_DELAY more
REORDER_DELAY = 0.01


class Host:
    """One end of the simulated connection and its application: it writes SIZE
    random octets once established, reads everything at once, and closes (the
    client after writing, the server after the client's EOF)."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.data = data
        self.tcb: Tcb | None = None
        self.stats: Counter[str] = Counter()
        self.got = bytearray()
        self.states: list[State] = []
        self.eof_at: int | None = None  # octets received when EOF arrived
        self.lost: list[ConnectionLost] = []

    def app(self, now: float) -> None:
        tcb = self.tcb
        for e in tcb.take_events():
            if isinstance(e, StateChanged):
                self.states.append(e.new)
            elif isinstance(e, Established):
                tcb.send(self.data, now)
                if self.name == "client":
                    tcb.close(now)
            elif isinstance(e, DataReceived):
                self.got += e.data
                tcb.consumed(len(e.data), now)
            elif isinstance(e, EofReceived):
                assert self.eof_at is None
                self.eof_at = len(self.got)
                if self.name == "server":
                    tcb.close(now)
            elif isinstance(e, ConnectionLost):
                self.lost.append(e)


def run_lossy_transfer(seed: int, config: TcpConfig) -> tuple[Host, Host, Counter[str]]:
    rng = random.Random(seed)
    client = Host("client", rng.randbytes(SIZE))
    server = Host("server", rng.randbytes(SIZE))
    peer_of = {id(client): server, id(server): client}
    wire: list[tuple[float, int, int, Segment]] = []  # (arrival, order, id(dst host), segment)
    net: Counter[str] = Counter()
    now = 0.0
    client.tcb = Tcb.open_active(config, (PEER, PEER_PORT), (US, US_PORT), 111, now,
                                 client.stats)

    def transmit(host: Host) -> None:
        for s in host.tcb.take_segments():
            net["sent"] += 1
            if rng.random() < LOSS:
                net["lost"] += 1
                continue
            delay = DELAY
            if rng.random() < REORDER:
                delay += rng.uniform(0, REORDER_DELAY)
                net["delayed"] += 1
            dst = peer_of[id(host)]
            heapq.heappush(wire, (now + delay, net["sent"], id(dst),
                                  dataclasses.replace(s)))

    hosts = {id(client): client, id(server): server}
    while now < 600.0:
        for host in (client, server):
            if host.tcb is not None:
                host.app(now)
                transmit(host)
        times = [wire[0][0]] if wire else []
        times += [t for h in (client, server) if h.tcb and (t := h.tcb.next_deadline())]
        if not times:
            break
        now = max(now, min(times))
        while wire and wire[0][0] <= now:
            _, _, dst_id, s = heapq.heappop(wire)
            dst = hosts[dst_id]
            if dst.tcb is None:  # the server's listener: a SYN opens the connection
                if s.flags & (SYN | ACK | RST) == SYN:
                    dst.tcb = Tcb.open_passive(config, s, 999, now, dst.stats)
            elif dst.tcb.state not in FINISHED:
                dst.tcb.receive(s, now)
        for host in (client, server):
            if host.tcb is not None and (t := host.tcb.next_deadline()) is not None and t <= now:
                host.tcb.on_timer(now)
    return client, server, net


# Seeds 4 and 20 each hit a timeout whose go-back-N overlaps data from the other
# side (both deadlocked while our ACKs carried the pulled-back SND.NXT); any seed passes.
@pytest.mark.parametrize("seed", [4, 20])
@pytest.mark.parametrize("config", [TcpConfig(), TcpConfig(cc="newreno", sack=False,
                                                           window_scaling=False)],
                         ids=["cubic-sack-wscale", "newreno-plain"])
def test_lossy_transfer_both_ways_then_clean_close(seed, config):
    client, server, net = run_lossy_transfer(seed, config)
    assert net["lost"] > 50 and net["delayed"] > 50  # the network did misbehave
    for host, other in ((client, server), (server, client)):
        assert bytes(host.got) == other.data  # byte-exact, in order
        assert host.eof_at == SIZE  # EOF once, after all the data
        assert [type(e) for e in host.lost] == [ConnectionLost]
        assert host.lost[0].error is None
        assert host.tcb.state is State.CLOSED and host.tcb.next_deadline() is None
        assert host.stats["RetransSegs"] > 0 and host.stats["FastRetransmits"] > 0
    assert State.FIN_WAIT_1 in client.states
    assert client.states[-2:] == [State.TIME_WAIT, State.CLOSED]  # the active closer
    assert server.states[-3:] == [State.CLOSE_WAIT, State.LAST_ACK, State.CLOSED]


# == Follow-ups: RTO with SACK, ACK pacing, initial window, ACK sequence ==========

def test_established_rto_skips_sacked_data_then_clears_marks_on_second_rto():
    """Like Linux, SACK marks survive the first RTO: going back N resends only the
    holes. A second RTO without progress drops them (the peer may renege, RFC 2018 8)."""
    tcb = tcb_established(sack_permitted=True)
    tcb.send(b"x" * 4 * MSS, 1.0)
    expect(tcb, full_segments(Y + 1, 4, last_psh=True))
    # Segments 1 and 3 lost; the peer holds 2 and 4.
    tcb.receive(seg(ACK, X + 1, Y + 1, sack=[(Y + 1 + MSS, Y + 1 + 2 * MSS)]), 1.01)
    tcb.receive(seg(ACK, X + 1, Y + 1, sack=[(Y + 1 + 3 * MSS, Y + 1 + 4 * MSS)]), 1.01)
    tcb.take_segments()
    tcb.on_timer(tcb.next_deadline())
    expect(tcb, [(ACK, Y + 1, X + 1, MSS)])  # cwnd is 1 MSS: the first hole
    tcb.receive(seg(ACK, X + 1, Y + 1 + MSS, sack=[(Y + 1 + 3 * MSS, Y + 1 + 4 * MSS)]), 1.5)
    expect(tcb, [(ACK, Y + 1 + 2 * MSS, X + 1, MSS)])  # segment 2 is skipped: SACKed
    tcb.on_timer(tcb.next_deadline())  # no progress: a second timeout
    tcb.on_timer(tcb.next_deadline())
    assert not tcb._sacked


def test_established_every_second_segment_acked_at_once_within_a_batch():
    tcb = tcb_established()
    for i in range(4):
        tcb.receive(seg(ACK, X + 1 + i * MSS, Y + 1, b"d" * MSS), 1.0)
    # One ACK per two segments, not one stretch ACK per batch (RFC 5681 4.2).
    expect(tcb, [(ACK, Y + 1, X + 1 + 2 * MSS, 0), (ACK, Y + 1, X + 1 + 4 * MSS, 0)])


def test_syn_rcvd_lost_synack_gives_initial_window_of_one_segment():
    tcb = tcb_syn_rcvd()
    tcb.on_timer(1.0)  # the SYN+ACK is retransmitted
    tcb.take_segments()
    tcb.receive(seg(ACK, X + 1, Y + 1), 1.2)
    assert tcb.cc.cwnd == MSS  # RFC 5681 3.1
    tcb.send(b"x" * 3 * MSS, 1.3)
    expect(tcb, full_segments(Y + 1, 1))


def test_initial_window_capped_for_large_mss():
    tcb = tcb_established(TcpConfig(mtu=9000), mss=8960)
    assert tcb.cc.cwnd == 2 * 8960  # RFC 6928: min(10*MSS, max(2*MSS, 14600))


def test_established_ack_after_zero_window_probe_stays_inside_peer_window():
    tcb = tcb_established(window=0)
    tcb.send(b"abc", 1.0)
    tcb.on_timer(tcb.next_deadline())
    expect(tcb, [(ACK, Y + 1, X + 1, 1)])  # the probe octet, beyond the closed window
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"hi", window=0), 1.5)
    tcb.receive(seg(ACK | PSH, X + 3, Y + 1, b"ho", window=0), 1.5)
    # SEQ is the window's edge, not snd_max: acceptable to a receiver whose window
    # is zero (Linux tcp_acceptable_seq), so our ACK is not dropped.
    expect(tcb, [(ACK, Y + 1, X + 5, 0)])


# ================================================ timestamps (RFC 7323 3-5)


def test_syn_rcvd_no_timestamps_unless_the_peer_offers_them():
    tcb = Tcb.open_passive(TcpConfig(), peer_syn(), Y, 0.0, Counter())
    [synack] = tcb.take_segments()
    assert synack.options.timestamp is None and not tcb.ts_ok


def test_established_every_segment_carries_timestamps_and_mss_shrinks():
    tcb = tcb_with_timestamps()
    assert tcb.send_mss == MSS - 12  # room for the option in every segment
    tcb.send(b"x" * 3000, 0.5)
    out = tcb.take_segments()
    assert [len(s.payload) for s in out] == [MSS - 12, MSS - 12, 3000 - 2 * (MSS - 12)]
    assert all(s.options.timestamp == (Y + 500, 778) for s in out)


def test_established_paws_drops_an_old_duplicate():
    tcb = tcb_with_timestamps()
    tcb.receive(ts_seg(ACK | PSH, X + 1, Y + 1, b"new", tsval=900, tsecr=Y), 0.1)
    assert tcb.ts_recent == 900  # SEG.SEQ <= Last.ACK.sent (RFC 7323 4.3 R3)
    tcb.take_events()
    tcb.take_segments()
    # A segment whose TSval is older than TS.Recent is an old duplicate (PAWS, 5.3 R1):
    tcb.receive(ts_seg(ACK | PSH, X + 4, Y + 1, b"old", tsval=899, tsecr=Y), 0.2)
    assert tcb.take_events() == []
    expect(tcb, [(ACK, Y + 1, X + 4, 0)])
    assert tcb.stats["PAWSRejected"] == 1


def test_established_rtt_measured_from_the_echoed_timestamp():
    """Karn's rule forbids timing a retransmitted segment by its send time; the
    echoed TSval still measures it (RTTM, RFC 7323 4.1)."""
    tcb = tcb_with_timestamps()
    tcb.send(b"x" * 100, 1.0)
    tcb.take_segments()
    srtt = tcb.srtt
    tcb.on_timer(tcb.next_deadline())  # RTO: retransmitted, so no send-time sample
    [again] = tcb.take_segments()
    sent_at = tcb._now
    tsval = again.options.timestamp[0]
    tcb.receive(ts_seg(ACK, X + 1, Y + 101, tsval=800, tsecr=tsval), sent_at + 0.05)
    assert tcb.srtt == pytest.approx(0.875 * srtt + 0.125 * 0.05, abs=1e-3)


# ================================================ keep-alive (RFC 9293 3.8.4)


def test_established_keepalive_probes_idle_connection_then_resets():
    tcb = tcb_established(TcpConfig(keepalive=True, keepalive_idle=10, keepalive_interval=2,
                                    keepalive_probes=3))
    assert tcb.next_deadline() == 10  # idle time after the last segment (t=0)
    tcb.on_timer(10)
    expect(tcb, [(ACK, Y, X + 1, 0)])  # <SEQ=SND.NXT-1>: draws an ACK from a live peer
    tcb.receive(seg(ACK, X + 1, Y + 1), 10.1)  # the answer: the idle time starts again
    assert tcb.next_deadline() == pytest.approx(20.1)
    for t in (20.1, 22.1, 24.1):
        tcb.on_timer(t)
        expect(tcb, [(ACK, Y, X + 1, 0)])
    tcb.on_timer(26.1)
    expect(tcb, [(RST | ACK, Y + 1, X + 1, 0)])
    assert tcb.state is State.CLOSED and lost(tcb) is TimeoutError
    assert tcb.stats["KeepAliveProbes"] == 4


def test_established_keepalive_waits_while_data_is_outstanding():
    tcb = tcb_established(TcpConfig(keepalive=True, keepalive_idle=10))
    tcb.send(b"x", 1.0)
    tcb.take_segments()
    assert tcb.next_deadline() == pytest.approx(1.2)  # the RTO, not keep-alive


def test_established_keepalive_off_by_default():
    assert tcb_established().next_deadline() is None
