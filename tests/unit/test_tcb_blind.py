"""Blind injection (RFC 5961): the ACK check of every synchronized state
(RFC 5961 5.2, adopted by RFC 9293 3.10.7.4 fifth) and the throttling of the
challenge ACKs that answer suspicious segments (RFC 5961 7), per connection and
stack-wide; and TS.Recent, which only a segment that passed those checks may
move (RFC 7323 5.3). RST and SYN challenges are in test_tcb_established.py."""

from collections import Counter

import pytest

from tcpstack.core.config import TcpConfig
from tcpstack.core.events import DataReceived
from tcpstack.core.ratelimit import ChallengeAckLimiter
from tcpstack.core.states import State
from tcpstack.core.tcb import Tcb
from tests.unit.tcpkit import (
    ACK,
    FIN,
    PSH,
    RST,
    WND,
    X,
    Y,
    add,
    events,
    expect,
    peer_syn,
    seg,
    tcb_close_wait,
    tcb_closing,
    tcb_established,
    tcb_fin_wait_1,
    tcb_fin_wait_2,
    tcb_last_ack,
)

ANCIENT = 1 << 24  # how far behind SND.UNA the attacker's ACK lies (issue 8: 2^24..2^31)
FEW = 3000  # octets acknowledged, fewer than MAX.SND.WND (WND): the bound is ISS+1
MANY = 100_000  # more: the bound is SND.UNA - MAX.SND.WND


def tcb_acked(n: int) -> Tcb:
    """ESTABLISHED after we sent `n` octets and the peer acknowledged them all at
    time 0: SND.UNA = Y+1+n, MAX.SND.WND = WND (the peer's SYN and ACKs)."""
    tcb = tcb_established()
    tcb.nodelay = True
    tcb.send(b"x" * n, 0.0)
    while tcb.snd_una != add(Y, 1 + n):
        end = max(add(s.seq, len(s.payload)) for s in tcb.take_segments())
        tcb.receive(seg(ACK, X + 1, end), 0.0)
    assert tcb.take_segments() == [] and tcb.bytes_acked == n
    return tcb


# ---------------------------------------------- RFC 5961 5.2: the acceptable range


@pytest.mark.parametrize("behind", [ANCIENT, (1 << 31) - 1, FEW + 1])
def test_established_data_with_too_old_ack_dropped_with_challenge_ack(behind):
    """In-window text whose ACK lies before SND.UNA - MAX.SND.WND (or before ISS+1)
    is not delivered: the blind data injection of RFC 5961 5."""
    tcb = tcb_acked(FEW)
    una = tcb.snd_una
    tcb.receive(seg(ACK | PSH, X + 1, add(una, -behind), b"evil"), 1.0)
    expect(tcb, [(ACK, una, X + 1, 0)])
    assert events(tcb) == [] and tcb.rcv_nxt == X + 1
    assert (tcb.stats["AckTooOld"], tcb.stats["ChallengeAcks"]) == (1, 1)


@pytest.mark.parametrize(("acked", "bound"), [(FEW, FEW), (MANY, WND)], ids=["few", "many"])
def test_established_old_ack_bound_is_max_snd_wnd_but_not_before_iss(acked, bound):
    """RFC 5961 5.2: SND.UNA - MAX.SND.WND =< SEG.ACK, and like Linux (tcp_ack) never
    below what was acknowledged. At the bound the ACK is an old duplicate: its text
    is delivered, its window ignored (3.10.7.4, fifth); one octet further back, not."""
    tcb = tcb_acked(acked)
    una = tcb.snd_una
    tcb.receive(seg(ACK | PSH, X + 1, add(una, -bound - 1), b"evil", window=7), 1.0)
    expect(tcb, [(ACK, una, X + 1, 0)])
    tcb.receive(seg(ACK | PSH, X + 1, add(una, -bound), b"good", window=7), 1.0)
    assert events(tcb) == [DataReceived(b"good")]
    assert tcb.snd_wnd == WND and tcb.stats["AckTooOld"] == 1


def test_established_fin_with_ancient_ack_does_not_close():
    tcb = tcb_acked(FEW)
    una = tcb.snd_una
    tcb.receive(seg(FIN | ACK, X + 1, add(una, -ANCIENT)), 1.0)
    assert tcb.state is State.ESTABLISHED
    expect(tcb, [(ACK, una, X + 1, 0)])
    assert events(tcb) == [] and tcb.stats["AckTooOld"] == 1


def test_established_ack_of_unsent_data_draws_throttled_challenge_ack():
    """SEG.ACK > SND.NXT: "send an ACK, drop the segment" (3.10.7.4, fifth); the ACK
    is a challenge ACK, so at most one per 500 ms (RFC 5961 7, Linux)."""
    tcb = tcb_established()
    tcb.receive(seg(ACK | PSH, X + 1, Y + 2, b"evil"), 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    tcb.receive(seg(ACK | PSH, X + 1, Y + 2, b"evil"), 1.2)
    expect(tcb, [])
    assert events(tcb) == []
    stats = tcb.stats
    assert (stats["AckUnsentData"], stats["ChallengeAcks"], stats["ChallengeAcksSuppressed"]) \
        == (2, 1, 1)


@pytest.mark.parametrize("flags", [ACK | PSH, FIN | ACK], ids=["data", "fin"])
@pytest.mark.parametrize("fixture", [tcb_established, tcb_close_wait, tcb_fin_wait_1,
                                     tcb_fin_wait_2, tcb_closing, tcb_last_ack])
def test_synchronized_ancient_ack_draws_challenge_ack(fixture, flags):
    """Every synchronized state checks the ACK before text and FIN (3.10.7.4, fifth)."""
    tcb = fixture()
    state, una, nxt = tcb.state, tcb.snd_una, tcb.rcv_nxt
    tcb.receive(seg(flags, nxt, add(una, -ANCIENT), b"evil" if flags & PSH else b""), 1.0)
    assert tcb.state is state
    expect(tcb, [(ACK, tcb.snd_max, nxt, 0)])
    assert events(tcb) == [] and tcb.stats["AckTooOld"] == 1


# ---------------------------------------------- RFC 5961 7: the stack-wide budget


def test_challenge_acks_share_the_stack_wide_budget():
    """Two connections, one limiter allowing one challenge ACK per second: the second
    connection's challenge waits for the next second, whatever its own interval says."""
    limiter = ChallengeAckLimiter(1)
    a = tcb_established(challenge_limiter=limiter)
    b = tcb_established(challenge_limiter=limiter)
    a.receive(seg(RST, X + 100), 1.0)
    expect(a, [(ACK, Y + 1, X + 1, 0)])
    b.receive(seg(RST, X + 100), 1.5)
    expect(b, [])
    b.receive(seg(ACK | PSH, X + 1, Y + 2, b"evil"), 2.0)
    expect(b, [(ACK, Y + 1, X + 1, 0)])
    assert (b.stats["ChallengeAcks"], b.stats["ChallengeAcksSuppressed"]) == (1, 1)


# ------------------------------------------- RFC 7323 5.3: TS.Recent after the checks


def _ts(s, tsval: int, tsecr: int = 0):
    s.options.timestamp = (tsval, tsecr)
    return s


@pytest.mark.parametrize(("where", "ack"), [(X - 100_000, Y + 1), (X + 1, Y + 1 - ANCIENT)],
                         ids=["left-of-window", "ancient-ack"])
def test_established_blind_future_tsval_does_not_move_ts_recent(where, ack):
    """RFC 7323 5.3 R3 comes after the sequence check (R2), and like Linux after the
    ACK check: a rejected segment's TSval must not become TS.Recent, or PAWS (R1)
    would drop every later segment of the real peer and the connection would die."""
    syn = _ts(peer_syn(), 1000)
    tcb = Tcb.open_passive(TcpConfig(), syn, Y, 0.0, Counter())
    tcb.receive(_ts(seg(ACK, X + 1, Y + 1), 1001), 0.0)
    tcb.take_segments()
    tcb.take_events()
    tcb.receive(_ts(seg(ACK | PSH, where, ack, b"evil"), 1001 + (1 << 30)), 0.1)
    assert tcb.ts_recent == 1001
    tcb.receive(_ts(seg(ACK | PSH, X + 1, Y + 1, b"good"), 1002), 0.2)
    assert events(tcb) == [DataReceived(b"good")]
    assert tcb.stats["PAWSRejected"] == 0 and tcb.ts_recent == 1002
