"""Header prediction (`Tcb._predicted`) and the bulk paths of `Tcb._push`
change nothing but the cost: random segment sequences run through a TCB with
the fast paths and one without (`tcb.HEADER_PREDICTION`, `tcb.BULK_PUSH`) must
give the same segments, events, counters and state after every step; and the
common segments of a transfer do take them."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tcpstack.core import tcb as tcb_module
from tcpstack.core.config import TcpConfig
from tcpstack.core.segment import URG
from tcpstack.core.seq import seq_add
from tcpstack.core.tcb import Tcb
from tests.unit.tcpkit import (
    ACK,
    FIN,
    MSS,
    PSH,
    RST,
    SYN,
    X,
    Y,
    seg,
    tcb_established,
    tcb_with_timestamps,
    ts_seg,
)


def attributes(obj: object) -> dict:
    """An object's attributes: `vars`, or for a class compiled with mypyc (no
    __dict__; tcpstack.core.native) those it lists in __mypyc_attrs__."""
    names = getattr(type(obj), "__mypyc_attrs__", None)
    if names is None:
        return dict(vars(obj))
    return {n: getattr(obj, n) for n in names if hasattr(obj, n) and n != "__dict__"}


def snapshot(tcb: Tcb) -> dict:
    """Everything a TCB holds that a later segment or timer could show, as values."""
    state = {k: v for k, v in attributes(tcb).items()
             if k not in ("config", "stats", "_challenge_limiter", "recovery", "_sacked",
                          "rtt", "cc", "_sndbuf", "_reasm", "_out", "_events")}
    recovery = tcb.recovery
    state["recovery"] = (recovery.dupacks, recovery.recover, recovery.recover_high,
                         recovery.rexmit_next, recovery.scoreboard.sacked(),
                         list(recovery.scoreboard.holes(tcb.snd_una, tcb.snd_max)))
    state["rtt"] = (tcb.rtt.rto, tcb.rtt.srtt, tcb.rtt.rttvar, tcb.rtt.probe)
    state["cc"] = attributes(tcb.cc)
    state["sndbuf"] = (len(tcb._sndbuf), bytes(tcb._sndbuf.peek(0, len(tcb._sndbuf))))
    state["reasm"] = tcb._reasm.sack_blocks() if tcb._reasm else ()
    state["stats"] = dict(tcb.stats)
    return state


def outputs(tcb: Tcb) -> tuple[list, list]:
    segments = [(s.src, s.dst, s.sport, s.dport, s.seq, s.ack, s.flags, s.window, s.options,
                 bytes(s.payload), s.gso_size) for s in tcb.take_segments()]
    return segments, [repr(e) for e in tcb.take_events()]


# One step of the peer or the application: (kind, a, b, c, d), read by
# `peer_segment` and `apply`; the draws lean towards the predicted segments.
steps = st.one_of(
    st.tuples(st.just("ack"), st.sampled_from([0, 0, 1, 1, 2, 3, 12, -1, -3]),
              st.integers(0, 7), st.integers(0, 3), st.sampled_from([0, 0, 1, 3, 4, 4])),
    st.tuples(st.just("data"), st.sampled_from([0, 0, 0, 0, -3, -1, 1, 3]),
              st.sampled_from([0, 0, 1, 2, 4, -1]), st.integers(1, 3000),
              st.sampled_from([0, 0, 1, 2, 3, 4, 5])),
    st.tuples(st.just("send"), st.integers(1, 20000), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("read"), st.just(0), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("timer"), st.integers(0, 3), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("close"), st.just(0), st.just(0), st.just(0), st.just(0)),
)
#: Control bits of the peer's segments: mostly the predicted ones.
FLAGS = (ACK, ACK, ACK | PSH, ACK | FIN, ACK | URG, ACK | RST, ACK | SYN, 0)
WINDOWS = (65535, 65535, 30000, 0, 2000, 65535)


def peer_segment(ref: Tcb, step: tuple, now: float):
    """The peer's segment for `step`, placed relative to the reference TCB: `ack`
    steps acknowledge up to a[MSS] of SND.UNA's flight (clipped, or beyond),
    `data` steps start at RCV.NXT + a*100 with `c` octets."""
    kind, a, b, c, d = step
    flight = (ref.snd_max - ref.snd_una) & 0xFFFFFFFF
    if kind == "ack":
        ack = seq_add(ref.snd_una, min(a * MSS, flight + 2) if a >= 0 else a)
        seq, payload, flags = ref.rcv_nxt, b"", FLAGS[b] if c == 3 else ACK
    else:
        ack = seq_add(ref.snd_una, min(b * MSS, flight) if b >= 0 else -1)
        seq, payload, flags = seq_add(ref.rcv_nxt, a * 100), bytes([d]) * c, FLAGS[d]
    window = WINDOWS[d]
    # A SACK block above the ACK, inside what was sent (RFC 2018 5 ignores others).
    above = (ack - ref.snd_una) & 0xFFFFFFFF
    sack = [(seq_add(ack, MSS), seq_add(ack, 2 * MSS))] if (
        kind == "ack" and d == 4 and above + 2 * MSS <= flight) else None
    if ref.ts_ok:
        s = ts_seg(flags, seq, ack, payload, tsval=ref.ts_recent + (c != 2),
                   tsecr=ref._ts_val(), window=window)
        if sack:
            s.options.sack_blocks = sack
        return s
    return seg(flags, seq, ack, payload, window, sack=sack)


def apply(tcb: Tcb, step: tuple, now: float, peer) -> None:
    kind, a = step[0], step[1]
    if kind in ("ack", "data"):
        tcb.receive(peer, now)
    elif kind == "send":
        if tcb._fin_seq is None and tcb.state.name in ("ESTABLISHED", "CLOSE_WAIT"):
            tcb.send(b"s" * a, now)
    elif kind == "read":
        if tcb._unread:
            tcb.consumed(tcb._unread, now)
    elif kind == "timer":
        deadline = tcb.next_deadline()
        if deadline is not None and a:
            tcb.on_timer(max(now, deadline), )
    else:
        tcb.close(now)


def build(case: int) -> Tcb:
    if case == 0:
        return tcb_with_timestamps()
    if case == 1:
        return tcb_established(sack_permitted=True, wscale=7)
    if case == 2:
        return tcb_established(TcpConfig(offload=True), sack_permitted=True, wscale=7)
    if case == 3:
        return tcb_established(TcpConfig(delayed_ack=0.0))
    return tcb_established(TcpConfig(rcv_buf=4000))  # text beyond the window


SEND = ("send", 20000, 0, 0, 0)


@pytest.mark.parametrize("flag", ["HEADER_PREDICTION", "BULK_PUSH"])
@settings(max_examples=400)
@given(st.integers(0, 4), st.lists(steps, min_size=1, max_size=40))
# The edges of the prediction, beside the random draws: text beyond the window,
@example(4, [("data", 0, 0, 3000, 0)] * 3)
# a duplicate ACK, a pure FIN that acknowledges data, a SACK block on a new ACK,
@example(0, [SEND, ("ack", 0, 0, 0, 0), ("ack", 1, 3, 3, 0)])
@example(1, [SEND, ("ack", 0, 0, 0, 4), ("ack", 1, 0, 0, 4), ("ack", 2, 0, 0, 0)])
# text before RCV.NXT, out of order, and the filling segment, with a FIN.
@example(3, [("data", 0, 0, 500, 0), ("data", -3, 0, 500, 2), ("data", 3, 1, 100, 0),
             ("data", 0, 0, 300, 3)])
# and with TSO, enough window for whole super-segments (Tcb._push_full).
@example(2, [SEND] * 40 + [("ack", 10, 0, 0, 0)] * 30 + [("ack", 44, 0, 0, 0)] * 4)
def test_fast_path_same_as_full_steps(flag: str, case: int, script: list[tuple]) -> None:
    fast, full = build(case), build(case)
    now = 1.0
    try:
        for step in script:
            now += 0.001
            # A segment each: the full steps trim theirs in place.
            setattr(tcb_module, flag, False)
            apply(full, step, now, peer_segment(full, step, now))
            setattr(tcb_module, flag, True)
            apply(fast, step, now, peer_segment(fast, step, now))
            assert outputs(fast) == outputs(full), step
            assert snapshot(fast) == snapshot(full), step
    finally:
        setattr(tcb_module, flag, True)


def test_transfer_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A download's ACKs and an upload's in-order data skip the full steps (which
    would fail here), with the results the unit tests of those steps expect."""
    tcb = tcb_with_timestamps()
    mss = tcb.send_mss
    tcb.send(b"d" * (4 * mss), 0.01)
    assert len(tcb.take_segments()) == 4

    def full_steps(*args: object) -> None:
        raise AssertionError("the full steps of 3.10.7.4 ran")

    monkeypatch.setattr(Tcb, "_receive_synchronized", full_steps)
    tcb.receive(ts_seg(ACK, X + 1, Y + 1 + 2 * mss, tsval=779, tsecr=Y), 0.02)
    assert tcb.snd_una == Y + 1 + 2 * mss and tcb.ts_recent == 779
    tcb.receive(ts_seg(ACK | PSH, X + 1, Y + 1 + 4 * mss, b"up", tsval=780, tsecr=Y), 0.03)
    assert tcb.snd_una == tcb.snd_max and tcb.rcv_nxt == X + 3
    assert [repr(e) for e in tcb.take_events()] == ["DataReceived(data=b'up')"]
