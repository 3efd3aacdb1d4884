"""TSO and GRO in the TCB (docs/offload.md): with `TcpConfig.offload` the TCB
may hand out super-segments of several MSS, which must stand for exactly the
segments it would send one MSS at a time (window, cwnd, Nagle, PSH, FIN); a
received super-segment counts as the segments it was made of (RFC 5681 4.2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpstack.core.config import TcpConfig
from tcpstack.core.segment import Segment
from tcpstack.core.tcb import TSO_MAX, Tcb
from tests.unit.tcpkit import ACK, FIN, MSS, PSH, X, Y, add, expect, seg, tcb_established

OFFLOAD = TcpConfig(offload=True)


def wire(segments: list[Segment]) -> list[tuple]:
    """What the kernel puts on the wire: each super-segment cut into MSS pieces,
    PSH and FIN on the last piece only."""
    out = []
    for s in segments:
        size = s.gso_size or max(len(s.payload), 1)
        for off in range(0, max(len(s.payload), 1), size):
            last = off + size >= len(s.payload)
            flags = s.flags if last else s.flags & ~(PSH | FIN)
            out.append((flags, add(s.seq, off), s.ack, len(s.payload[off:off + size]),
                        s.window))
    return out


def test_super_segment_of_whole_mss_pieces() -> None:
    tcb = tcb_established(OFFLOAD)
    tcb.cc.cwnd = 100 * MSS
    tcb.send(b"x" * (10 * MSS), 1.0)
    (out,) = expect(tcb, [(ACK | PSH, Y + 1, X + 1, 10 * MSS)])
    assert out.gso_size == MSS and out.wire_segments == 10


def test_super_segment_limited_by_the_peer_window() -> None:
    """A 65535-octet window holds 44 full segments and a sliver: the sliver waits
    (sender SWS avoidance), as it would one MSS at a time."""
    tcb = tcb_established(OFFLOAD)
    tcb.cc.cwnd = 100 * MSS
    tcb.send(b"x" * (60 * MSS), 1.0)
    (out,) = expect(tcb, [(ACK, Y + 1, X + 1, 44 * MSS)])
    assert out.gso_size == MSS


def test_super_segment_limited_by_cwnd() -> None:
    tcb = tcb_established(OFFLOAD)
    assert tcb.cc.cwnd == 10 * MSS  # RFC 6928 initial window
    tcb.send(b"x" * (20 * MSS), 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 10 * MSS)])


def test_super_segment_at_most_one_ipv4_packet() -> None:
    tcb = tcb_established(OFFLOAD, wscale=7, window=4096)
    tcb.cc.cwnd = 1000 * MSS
    tcb.send(b"x" * (100 * MSS), 1.0)
    out = tcb.take_segments()
    assert [len(s.payload) for s in out] == [TSO_MAX // MSS * MSS, TSO_MAX // MSS * MSS,
                                             100 * MSS - 2 * (TSO_MAX // MSS * MSS)]
    assert 20 + 60 + len(out[0].payload) <= 65535


def test_short_tail_joins_when_nagle_lets_it_go() -> None:
    tcb = tcb_established(OFFLOAD)
    tcb.send(b"x" * (3 * MSS + 100), 1.0)
    (out,) = expect(tcb, [(ACK | PSH, Y + 1, X + 1, 3 * MSS + 100)])
    assert out.wire_segments == 4


def test_short_tail_held_by_nagle_after_an_unacked_short_segment() -> None:
    tcb = tcb_established(OFFLOAD)
    tcb.send(b"a" * 10, 1.0)  # a short segment, unacknowledged
    expect(tcb, [(ACK | PSH, Y + 1, X + 1, 10)])
    tcb.send(b"x" * (3 * MSS + 100), 1.1)
    # Nagle (Minshall): the full pieces go, the 100-octet tail waits for the ACK.
    expect(tcb, [(ACK, Y + 11, X + 1, 3 * MSS)])
    tcb.receive(seg(ACK, X + 1, Y + 11), 1.2)
    expect(tcb, [(ACK | PSH, Y + 11 + 3 * MSS, X + 1, 100)])


def test_fin_rides_on_the_last_piece() -> None:
    tcb = tcb_established(OFFLOAD)
    tcb.send(b"x" * (10 * MSS), 1.0)  # fills the initial cwnd
    tcb.take_segments()
    tcb.send(b"y" * (3 * MSS), 1.1)
    tcb.close(1.1)
    tcb.receive(seg(ACK, X + 1, Y + 1 + 10 * MSS), 1.2)
    (out,) = tcb.take_segments()
    assert (out.flags, len(out.payload), out.gso_size) == (ACK | PSH | FIN, 3 * MSS, MSS)
    assert tcb.snd_nxt == add(Y, 1 + 13 * MSS + 1)


def test_retransmission_after_timeout_one_mss_at_a_time() -> None:
    tcb = tcb_established(OFFLOAD)
    tcb.send(b"x" * (4 * MSS), 1.0)
    tcb.take_segments()
    tcb.on_timer(1.0 + tcb.rto)
    expect(tcb, [(ACK, Y + 1, X + 1, MSS)])


def test_off_by_default_in_memory() -> None:
    tcb = tcb_established()
    tcb.send(b"x" * (3 * MSS), 1.0)
    assert [s.gso_size for s in tcb.take_segments()] == [0, 0, 0]


# -- the same segments either way -------------------------------------------------------

ACTIONS = st.lists(st.one_of(
    st.tuples(st.just("send"), st.integers(1, 30 * MSS)),
    st.tuples(st.just("ack"), st.floats(0, 1), st.sampled_from([0, 700, 3000, 20000, 65535])),
    st.tuples(st.just("nodelay"), st.booleans()),
    st.just(("timer",)),
    st.just(("close",)),
), max_size=25)


@settings(max_examples=150, deadline=None)
@given(ACTIONS)
def test_tso_sends_exactly_the_segments_of_the_one_mss_loop(actions: list[tuple]) -> None:
    """Any sequence of sends, ACKs (with any window), timeouts and a close: the
    super-segments, cut as the kernel cuts them, are the plain TCB's segments."""
    plain, tso = tcb_established(), tcb_established(OFFLOAD)
    now = 1.0
    for action in actions:
        now += 0.01
        if action[0] == "timer":
            now = max(now, plain.next_deadline() or now)
        if action[0] == "ack":  # the same ACK for both, from the plain TCB's state
            acked = int(action[1] * (plain.snd_max - plain.snd_una) % (1 << 32))
            action = ("ack", add(plain.snd_una, acked), action[2])
        for tcb in (plain, tso):
            _act(tcb, action, now)
        assert wire(tso.take_segments()) == wire(plain.take_segments()), action
        assert (tso.snd_nxt, tso.snd_max, tso.cc.cwnd) == (plain.snd_nxt, plain.snd_max,
                                                           plain.cc.cwnd)


def _act(tcb: Tcb, action: tuple, now: float) -> None:
    kind = action[0]
    if kind == "send" and tcb._fin_seq is None:
        tcb.send(b"d" * action[1], now)
    elif kind == "ack":
        tcb.receive(seg(ACK, X + 1, action[1], window=action[2]), now)
    elif kind == "nodelay":
        tcb.nodelay = action[1]
    elif kind == "timer":
        tcb.on_timer(now)
    elif kind == "close":
        tcb.close(now)


# -- receiving ---------------------------------------------------------------------------

@pytest.mark.parametrize(("gso_size", "acked_at_once"), [(MSS, True), (0, False)])
def test_gro_super_segment_counts_as_its_pieces(gso_size: int, acked_at_once: bool) -> None:
    """Two full segments coalesced by GRO are ACKed at once (RFC 5681 4.2); one
    plain segment of the same length (a jumbo peer MSS) waits for the delayed ACK."""
    tcb = tcb_established(OFFLOAD)
    big = seg(ACK, X + 1, Y + 1, b"p" * (2 * MSS))
    big.gso_size = gso_size
    tcb.receive(big, 1.0)
    if acked_at_once:
        expect(tcb, [(ACK, Y + 1, X + 1 + 2 * MSS, 0)])
    else:
        expect(tcb, [])
        assert tcb.next_deadline() == pytest.approx(1.0 + tcb.config.delayed_ack)
