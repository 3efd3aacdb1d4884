"""Opening a connection: passive and active open, retransmission of SYN and
SYN+ACK, old duplicate SYNs and resets in SYN-RECEIVED (RFC 9293 3.5, 3.10.7)."""

from collections import Counter

import pytest

from tcpstack.core.config import TcpConfig
from tcpstack.core.events import DataReceived, Established
from tcpstack.core.segment import Options
from tcpstack.core.states import State
from tcpstack.core.tcb import Tcb
from tests.unit.tcpkit import (
    ACK,
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
    events,
    expect,
    lost,
    peer_syn,
    seg,
    tcb_established,
    tcb_syn_rcvd,
    tcb_syn_sent,
)

# ------------------------------------------------------------------- LISTEN


@pytest.mark.parametrize("config", [TcpConfig(), TcpConfig(mtu=9000)])
def test_listen_syn(config):
    stats = Counter()
    tcb = Tcb.open_passive(config, seg(SYN, X, mss=MSS), Y, 0.0, stats)
    assert tcb.state is State.SYN_RCVD
    expect(tcb, [(SYN | ACK, Y, X + 1, 0, WND, Options(mss=config.mtu - 40))])
    assert stats["PassiveOpens"] == 1
    assert tcb.next_deadline() == 1.0


# -------------------------------------------------------------- SYN-RECEIVED


def test_syn_rcvd_ack():
    tcb = tcb_syn_rcvd()
    tcb.receive(seg(ACK, X + 1, Y + 1), 0.5)
    assert tcb.state is State.ESTABLISHED
    expect(tcb, [])
    assert events(tcb) == [Established()]
    assert (tcb.snd_una, tcb.snd_nxt, tcb.rcv_nxt) == (Y + 1, Y + 1, X + 1)
    assert tcb.next_deadline() is None


def test_syn_rcvd_ack_then_data():
    tcb = tcb_syn_rcvd()
    tcb.receive(seg(ACK, X + 1, Y + 1), 0.5)
    expect(tcb, [])
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"hello"), 0.6)
    assert events(tcb) == [Established(), DataReceived(b"hello")]
    expect(tcb, [])  # delayed ACK (RFC 5681 4.2)
    assert tcb.next_deadline() == pytest.approx(0.64)
    tcb.on_timer(0.64)
    expect(tcb, [(ACK, Y + 1, X + 6, 0)])


def test_syn_rcvd_ack_with_data():
    tcb = tcb_syn_rcvd()
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"GET /"), 0.5)
    assert tcb.state is State.ESTABLISHED
    assert events(tcb) == [Established(), DataReceived(b"GET /")]
    expect(tcb, [])  # delayed ACK (RFC 5681 4.2)
    assert tcb.next_deadline() == pytest.approx(0.54)
    tcb.on_timer(0.54)
    expect(tcb, [(ACK, Y + 1, X + 6, 0)])


def test_syn_rcvd_timeout_retransmits_synack():
    stats = Counter()
    tcb = tcb_syn_rcvd(stats=stats)
    for t in (1, 3, 7, 15, 31):
        assert tcb.next_deadline() == t
        tcb.on_timer(t - 0.001)
        expect(tcb, [])
        tcb.on_timer(t)
        expect(tcb, [(SYN | ACK, Y, X + 1, 0, WND, Options(mss=1460))])
    assert tcb.next_deadline() == 63
    tcb.on_timer(62.999)
    expect(tcb, [])
    tcb.on_timer(63)
    rst = expect(tcb, [(RST, Y + 1, 0, 0)])
    assert rst[0].flags == RST
    assert tcb.state is State.CLOSED
    assert lost(tcb) is None
    assert tcb.next_deadline() is None
    assert (stats["HandshakeTimeouts"], stats["SynAckRetrans"]) == (1, 5)


def test_syn_rcvd_timeout_two_retries():
    tcb = tcb_syn_rcvd(TcpConfig(synack_retries=2))
    for t in (1, 3):
        tcb.on_timer(t)
        expect(tcb, [(SYN | ACK, Y, X + 1, 0)])
    assert tcb.next_deadline() == 7
    tcb.on_timer(7)
    expect(tcb, [(RST, Y + 1, 0, 0)])
    assert tcb.state is State.CLOSED


def test_syn_rcvd_timeout_rto_capped_at_60s():
    tcb = tcb_syn_rcvd(TcpConfig(synack_retries=8))
    t, gaps = 0, []
    while tcb.state is State.SYN_RCVD:
        deadline = tcb.next_deadline()
        gaps.append(deadline - t)
        t = deadline
        tcb.on_timer(t)
        assert tcb.take_segments()[0].flags in (SYN | ACK, RST)
    assert gaps == [1, 2, 4, 8, 16, 32, 60, 60, 60]  # eight retries, then the RST
    assert t == 243


def test_syn_rcvd_rst_at_rcv_nxt_returns_to_listen():
    stats = Counter()
    tcb = tcb_syn_rcvd(stats=stats)
    tcb.receive(seg(RST, X + 1), 0.5)
    assert tcb.state is State.LISTEN
    expect(tcb, [])
    assert lost(tcb) is None
    assert tcb.next_deadline() is None
    assert stats["AttemptFails"] == 1


def test_syn_rcvd_rst_in_window_not_exact_draws_challenge_ack():
    tcb = tcb_syn_rcvd()
    tcb.receive(seg(RST, X + 100), 0.5)
    assert tcb.state is State.SYN_RCVD
    expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    assert tcb.stats["ChallengeAcks"] == 1


def test_syn_rcvd_rst_outside_window_dropped():
    tcb = tcb_syn_rcvd()
    for seq in (X, X + 1 + WND, X - 1000):
        tcb.receive(seg(RST, seq), 0.5)
    assert tcb.state is State.SYN_RCVD
    expect(tcb, [])
    assert tcb.take_events() == []


@pytest.mark.parametrize("bad_ack", [Y, Y + 2, Y + 1000, Y - 1])
def test_syn_rcvd_bad_ack_draws_rst(bad_ack):
    tcb = tcb_syn_rcvd()
    tcb.receive(seg(ACK, X + 1, bad_ack), 0.5)
    expect(tcb, [(RST, bad_ack, 0, 0)])
    assert tcb.state is State.SYN_RCVD


def test_syn_rcvd_retransmitted_syn_resends_synack_at_once():
    tcb = tcb_syn_rcvd()
    tcb.receive(seg(SYN, X, mss=MSS), 0.4)
    expect(tcb, [(SYN | ACK, Y, X + 1, 0, WND, Options(mss=1460))])
    assert tcb.state is State.SYN_RCVD
    assert tcb.next_deadline() == 1.0  # the retransmission timer keeps running


def test_syn_rcvd_new_syn_in_window_returns_to_listen():
    tcb = tcb_syn_rcvd()
    tcb.receive(seg(SYN, X + 10), 0.5)  # RFC 9293 3.10.7.4 fourth: passive open -> LISTEN
    assert tcb.state is State.LISTEN
    expect(tcb, [])


def test_syn_rcvd_rto_after_synack_loss_is_3s():
    tcb = tcb_syn_rcvd()
    tcb.on_timer(1.0)
    tcb.take_segments()
    tcb.receive(seg(ACK, X + 1, Y + 1), 1.5)
    assert tcb.state is State.ESTABLISHED
    assert tcb.rto == 3.0  # RFC 6298 5.7, no sample from the retransmitted SYN+ACK


SPLIT = TcpConfig(split_synack=True)


def tcb_syn_rcvd_active(stats: Counter | None = None) -> Tcb:
    """An active open whose SYN crossed the peer's: SYN-RECEIVED, our SYN+ACK out."""
    tcb = tcb_syn_sent(stats=stats)
    tcb.receive(seg(SYN, X, mss=MSS), 0.0)
    tcb.take_segments()
    tcb.take_events()
    assert tcb.state is State.SYN_RCVD
    return tcb


@pytest.mark.parametrize("active", [False, True], ids=["split", "active"])
def test_syn_rcvd_simultaneous_synack_establishes_and_acks(active):
    """RFC 9293 3.5 figure 8 line 6: the peer's SYN+ACK repeats its SYN (seq = IRS)
    and acknowledges ours: ESTABLISHED at once, and an ACK for the peer, which
    is in SYN-RECEIVED itself. It is also how a Linux client answers our split
    SYN+ACK (see the README): it drops the ACK and takes the SYN as a
    simultaneous open."""
    stats = Counter()
    tcb = tcb_syn_rcvd_active(stats) if active else tcb_syn_rcvd(SPLIT, stats=stats)
    tcb.receive(seg(SYN | ACK, X, Y + 1, mss=MSS), 0.1)
    assert tcb.state is State.ESTABLISHED
    expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    assert events(tcb) == [Established()]
    assert (tcb.snd_una, tcb.snd_max, tcb.rcv_nxt) == (Y + 1, Y + 1, X + 1)
    assert tcb.next_deadline() is None and stats["SynAckRetrans"] == 0


def test_syn_rcvd_passive_synack_repeating_the_syn_is_only_acked():
    """A plain passive open sent no SYN alone, so nobody is in a simultaneous open
    with it: the SYN+ACK at IRS is an unacceptable segment (3.10.7.4, first), as
    for Linux's request socket (tcp_check_req); the real ACK still establishes."""
    tcb = tcb_syn_rcvd()
    tcb.receive(seg(SYN | ACK, X, Y + 1, mss=MSS), 0.1)
    expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    assert tcb.state is State.SYN_RCVD and tcb.take_events() == []
    tcb.receive(seg(ACK, X + 1, Y + 1), 0.2)
    assert tcb.state is State.ESTABLISHED


def test_syn_rcvd_simultaneous_synack_window_is_not_scaled():
    tcb = tcb_syn_rcvd(SPLIT, wscale=7)
    tcb.receive(seg(SYN | ACK, X, Y + 1, window=1000, mss=MSS, wscale=7), 0.1)
    assert tcb.state is State.ESTABLISHED
    assert tcb.snd_wnd == 1000  # RFC 7323 2.2: never scaled in a SYN segment


def test_syn_rcvd_simultaneous_synack_with_data():
    tcb = tcb_syn_rcvd(SPLIT)
    tcb.receive(seg(SYN | ACK | PSH, X, Y + 1, b"hi"), 0.1)
    assert tcb.state is State.ESTABLISHED
    expect(tcb, [(ACK, Y + 1, X + 3, 0)])
    assert events(tcb) == [Established(), DataReceived(b"hi")]


@pytest.mark.parametrize("bad_ack", [Y, Y + 2])
def test_syn_rcvd_synack_with_bad_ack_is_unacceptable(bad_ack):
    """Only a SYN+ACK that acknowledges our SYN is the peer's simultaneous open;
    any other at seq = IRS is an old duplicate (3.10.7.4, first: an ACK)."""
    tcb = tcb_syn_rcvd(SPLIT)
    tcb.receive(seg(SYN | ACK, X, bad_ack), 0.1)
    expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    assert tcb.state is State.SYN_RCVD


# ------------------------------------------- split SYN+ACK (the seed's four segments)

#: What a passive open sends with split_synack: ACK=1 ack=x+1, then SYN=1 seq=y.
SPLIT_PAIR = [(ACK, Y, X + 1, 0, WND, Options()), (SYN, Y, 0, 0, WND, Options(mss=1460))]


def test_listen_syn_split_synack_sends_ack_then_syn():
    stats = Counter()
    tcb = Tcb.open_passive(SPLIT, seg(SYN, X, mss=MSS), Y, 0.0, stats)
    assert tcb.state is State.SYN_RCVD
    expect(tcb, SPLIT_PAIR)
    assert tcb.next_deadline() == 1.0 and stats["PassiveOpens"] == 1


def test_listen_syn_split_synack_timestamps():
    """The ACK echoes the peer's TSval; the SYN, without ACK, echoes 0 (RFC 7323 3.2)."""
    syn = seg(SYN, X, mss=MSS)
    syn.options.timestamp = (777, 0)
    tcb = Tcb.open_passive(SPLIT, syn, Y, 0.0, Counter())
    expect(tcb, [(ACK, Y, X + 1, 0, WND, Options(timestamp=(Y, 777))),
                 (SYN, Y, 0, 0, WND, Options(mss=1460, timestamp=(Y, 0)))])


def test_syn_rcvd_split_timeout_resends_the_pair():
    stats = Counter()
    tcb = tcb_syn_rcvd(SPLIT, stats=stats)
    tcb.on_timer(1.0)
    expect(tcb, SPLIT_PAIR)
    assert tcb.next_deadline() == 3.0 and stats["SynAckRetrans"] == 1
    tcb.on_timer(3.0)
    expect(tcb, SPLIT_PAIR)


def test_syn_rcvd_split_retransmitted_syn_resends_the_pair():
    tcb = tcb_syn_rcvd(SPLIT)
    tcb.receive(seg(SYN, X, mss=MSS), 0.4)
    expect(tcb, SPLIT_PAIR)
    assert tcb.state is State.SYN_RCVD


#: What a passivedef test_split_synack_between_two_tcbs():
    """Our active open against our split passive open: five segments, no timer."""
    client = Tcb.open_active(TcpConfig(), (PEER, PEER_PORT), (US, US_PORT), X, 0.0, Counter())
    (syn,) = client.take_segments()
    wire = [("c>s", syn.flags, syn.seq, syn.ack)]
    server = Tcb.open_passive(SPLIT, syn, Y, 0.0, Counter())
    ends = {"s>c": (server, client), "c>s": (client, server)}
    moving = True
    while moving:
        moving = False
        for name, (src, dst) in ends.items():
            for s in src.take_segments():
                wire.append((name, s.flags, s.seq, s.ack))
                dst.receive(s, 0.001)
                moving = True
    assert wire == [("c>s", SYN, X, 0), ("s>c", ACK, Y, X + 1), ("s>c", SYN, Y, 0),
                    ("c>s", SYN | ACK, X, Y + 1), ("s>c", ACK, Y + 1, X + 1)]
    assert client.state is server.state is State.ESTABLISHED
    assert client.next_deadline() is None and server.next_deadline() is None


# ------------------------------------------------------------------------ MSS


def test_established_send_capped_by_peer_mss():
    tcb = tcb_established(mss=1000)
    tcb.nodelay = True  # the short tail leaves at once (Nagle: test_tcb_reliability)
    tcb.send(b"x" * 2500, 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 1000), (ACK, Y + 1001, X + 1, 1000),
                 (ACK | PSH, Y + 2001, X + 1, 500)])


def test_established_send_without_peer_mss_uses_536():
    tcb = tcb_established(mss=None)
    tcb.nodelay = True
    tcb.send(b"x" * 1000, 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 536), (ACK | PSH, Y + 537, X + 1, 464)])


def test_established_send_capped_by_our_mss():
    tcb = tcb_established(TcpConfig(mtu=576), mss=9000)
    tcb.nodelay = True
    tcb.send(b"x" * 600, 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 536), (ACK | PSH, Y + 537, X + 1, 64)])


def _sent_sizes(tcb: Tcb, n: int) -> list[int]:
    tcb.nodelay = True
    tcb.send(b"x" * n, 1.0)
    return [len(s.payload) for s in tcb.take_segments()]


@pytest.mark.parametrize(("peer_mss", "mss"), [
    (1, 48), (12, 48), (13, 48), (47, 48), (48, 48), (49, 49), (60, 60), (536, 536),
    (None, 536)])
@pytest.mark.parametrize("timestamps", [False, True], ids=["plain", "ts"])
def test_established_send_mss_floor(peer_mss, timestamps, mss):
    """Linux tcp_min_snd_mss (48): a smaller peer MSS is raised to it, then the 12
    octets of the timestamp option come off (Linux tcp_mtu_to_mss; conformance
    handshake/mss-tiny-ts). Without the floor, MSS 1..12 with timestamps left
    nothing to send and no timer: the connection hung forever."""
    syn = peer_syn(mss=peer_mss)
    if timestamps:
        syn.options.timestamp = (777, 0)
        mss -= 12
    tcb = Tcb.open_passive(TcpConfig(), syn, Y, 0.0, Counter())
    tcb.receive(seg(ACK, X + 1, Y + 1), 0.0)
    tcb.take_segments()
    assert _sent_sizes(tcb, 100) == [mss] * (100 // mss) + [100 % mss] * bool(100 % mss)
    assert tcb.send_mss == mss and tcb.next_deadline() is not None


def test_established_send_mss_floor_configurable_and_not_above_our_mss():
    assert _sent_sizes(tcb_established(TcpConfig(min_snd_mss=100), mss=1), 250) == [
        100, 100, 50]
    assert _sent_sizes(tcb_established(TcpConfig(mtu=68), mss=1), 60) == [28, 28, 4]


def test_syn_sent_synack_mss_floor():
    tcb = tcb_syn_sent()
    tcb.receive(seg(SYN | ACK, X, Y + 1, mss=1), 0.1)
    tcb.take_segments()
    assert _sent_sizes(tcb, 100) == [48, 48, 4]


# ----------------------------------------------------------------- SYN-SENT


def test_closed_active_open_sends_syn():
    stats = Counter()
    tcb = Tcb.open_active(TcpConfig(), (bytes([10, 0, 0, 2]), 80), (bytes([10, 0, 0, 1]), 40000),
                          Y, 0.0, stats)
    assert tcb.state is State.SYN_SENT
    # Window scale 4 covers the 1 MiB buffer (RFC 7323 2.2); SACK offered (RFC 2018 2);
    # timestamps offered with TSval = the 1 ms clock offset by the ISS and TSecr 0
    # (RFC 7323 3.2); the SYN's own window is never scaled.
    expect(tcb, [(SYN, Y, 0, 0, WND, Options(mss=1460, wscale=4, sack_permitted=True,
                                             timestamp=(Y, 0)))])
    assert tcb.next_deadline() == 1.0
    assert stats["ActiveOpens"] == 1


def test_syn_sent_synack():
    tcb = tcb_syn_sent()
    tcb.receive(seg(SYN | ACK, X, Y + 1, mss=1000), 0.1)
    assert tcb.state is State.ESTABLISHED
    expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    assert events(tcb) == [Established()]
    assert (tcb.snd_una, tcb.rcv_nxt, tcb.send_mss) == (Y + 1, X + 1, 1000)


def test_syn_sent_synack_stops_syn_timer():
    tcb = tcb_syn_sent()
    tcb.receive(seg(SYN | ACK, X, Y + 1), 0.1)
    tcb.take_segments()
    assert tcb.next_deadline() is None  # RFC 6298 5.2: everything is acknowledged
    assert tcb.rto == pytest.approx(0.3)  # RTT sample 0.1 from the SYN: 0.1 + 4 * 0.05
    tcb.send(b"data", 0.5)
    expect(tcb, [(ACK | PSH, Y + 1, X + 1, 4)])
    assert tcb.next_deadline() == pytest.approx(0.8)  # not the SYN's stale deadline 1.0
    tcb.on_timer(0.79)
    expect(tcb, [])
    tcb.on_timer(0.8)
    expect(tcb, [(ACK | PSH, Y + 1, X + 1, 4)])


def test_syn_sent_data_queued_goes_out_with_the_ack():
    tcb = tcb_syn_sent()
    tcb.send(b"early", 0.05)
    expect(tcb, [])
    tcb.receive(seg(SYN | ACK, X, Y + 1), 0.1)
    expect(tcb, [(ACK | PSH, Y + 1, X + 1, 5)])  # the data segment carries the ACK
    assert tcb.next_deadline() == pytest.approx(0.1 + tcb.rto)


def test_syn_sent_rto_after_syn_loss_is_3s():
    tcb = tcb_syn_sent()
    tcb.on_timer(1.0)
    tcb.take_segments()
    tcb.receive(seg(SYN | ACK, X, Y + 1), 1.5)
    assert tcb.state is State.ESTABLISHED
    assert tcb.rto == 3.0  # RFC 6298 5.7; Karn: no sample from the retransmitted SYN
    assert tcb.next_deadline() is None


def test_syn_sent_synack_with_data():
    tcb = tcb_syn_sent()
    tcb.receive(seg(SYN | ACK, X, Y + 1, b"hi"), 0.1)
    assert events(tcb) == [Established(), DataReceived(b"hi")]
    expect(tcb, [(ACK, Y + 1, X + 3, 0)])


@pytest.mark.parametrize("bad_ack", [Y, Y + 2, Y - 5])
def test_syn_sent_synack_bad_ack_draws_rst(bad_ack):
    tcb = tcb_syn_sent()
    tcb.receive(seg(SYN | ACK, X, bad_ack), 0.1)
    expect(tcb, [(RST, bad_ack, 0, 0)])
    assert tcb.state is State.SYN_SENT


def test_syn_sent_rst_ack_refused():
    stats = Counter()
    tcb = tcb_syn_sent(stats=stats)
    tcb.receive(seg(RST | ACK, 0, Y + 1), 0.1)
    assert tcb.state is State.CLOSED
    assert lost(tcb) is ConnectionRefusedError
    expect(tcb, [])
    assert tcb.next_deadline() is None
    assert stats["AttemptFails"] == 1


def test_syn_sent_rst_without_ack_ignored():
    tcb = tcb_syn_sent()
    tcb.receive(seg(RST, 0), 0.1)
    assert tcb.state is State.SYN_SENT
    expect(tcb, [])
    assert tcb.take_events() == []


def test_syn_sent_rst_with_bad_ack_ignored():
    tcb = tcb_syn_sent()
    tcb.receive(seg(RST | ACK, 0, Y + 7), 0.1)
    assert tcb.state is State.SYN_SENT
    expect(tcb, [])  # never answer a reset with a reset


def test_syn_sent_timeout_retransmits_syn_then_gives_up():
    stats = Counter()
    tcb = tcb_syn_sent(stats=stats)
    for t in (1, 3, 7, 15, 31, 63):
        tcb.on_timer(t - 0.001)
        expect(tcb, [])
        tcb.on_timer(t)
        expect(tcb, [(SYN, Y, 0, 0, WND, Options(mss=1460, wscale=4, sack_permitted=True,
                                                 timestamp=(Y + t * 1000, 0)))])
    assert tcb.next_deadline() == 123  # 63 + min(64, 60)
    tcb.on_timer(123)
    expect(tcb, [])
    assert tcb.state is State.CLOSED
    assert lost(tcb) is TimeoutError
    assert stats["SynRetrans"] == 6


def test_syn_sent_split_synack():
    tcb = tcb_syn_sent()
    tcb.receive(seg(ACK, X, Y + 1), 0.1)  # a bare ACK of our SYN: no SYN, dropped
    assert tcb.state is State.SYN_SENT
    expect(tcb, [])
    tcb.receive(seg(SYN, X, mss=MSS), 0.2)
    assert tcb.state is State.SYN_RCVD
    expect(tcb, [(SYN | ACK, Y, X + 1, 0, WND, Options(mss=1460))])
    tcb.receive(seg(ACK, X + 1, Y + 1), 0.3)
    assert tcb.state is State.ESTABLISHED
    expect(tcb, [])
    assert events(tcb) == [Established()]


def test_syn_sent_simultaneous_open_rst_refused():
    tcb = tcb_syn_sent()
    tcb.receive(seg(SYN, X), 0.1)
    tcb.take_segments()
    tcb.receive(seg(RST, X + 1), 0.2)
    assert tcb.state is State.CLOSED
    assert lost(tcb) is ConnectionRefusedError


def test_syn_sent_close_aborts_quietly():
    tcb = tcb_syn_sent()
    tcb.close(0.5)
    assert tcb.state is State.CLOSED
    expect(tcb, [])
    assert lost(tcb) is None
