"""Builders for TCB unit tests (smoltcp style): segments from the peer, a TCB in
every state reached through the public API only, and exact output checks.

The peer is 10.0.0.1:40000 with ISN X, we are 10.0.0.2:80 with ISS Y. Every
builder runs at time `now` (default 0.0) and leaves no pending segments or events.
"""

from __future__ import annotations

from collections import Counter

from tcpstack.core.config import TcpConfig
from tcpstack.core.events import ConnectionLost, StateChanged
from tcpstack.core.ratelimit import ChallengeAckLimiter
from tcpstack.core.segment import ACK, FIN, PSH, RST, SYN, Options, Segment  # noqa: F401 (re-exported)
from tcpstack.core.seq import seq_add
from tcpstack.core.states import State
from tcpstack.core.tcb import Tcb

PEER, PEER_PORT = bytes([10, 0, 0, 1]), 40000
US, US_PORT = bytes([10, 0, 0, 2]), 80
X = 1000  # the peer's ISN
Y = 5000  # our ISS
WND = 65535
MSS = 1460



def add(a: int, n: int) -> int:
    return seq_add(a, n)


def seg(flags: int, seq: int, ack: int = 0, payload: bytes = b"", window: int = WND,
        mss: int | None = None, *, wscale: int | None = None, sack_permitted: bool = False,
        sack: list[tuple[int, int]] | None = None) -> Segment:
    """A segment from the peer to us; `sack` are the SACK blocks it carries."""
    options = Options(mss=mss, wscale=wscale, sack_permitted=sack_permitted,
                      sack_blocks=list(sack or []))
    return Segment(src=PEER, dst=US, sport=PEER_PORT, dport=US_PORT, seq=seq, ack=ack,
                   flags=flags, window=window, options=options, payload=payload)


def peer_syn(x: int = X, *, mss: int | None = MSS, wscale: int | None = None,
             sack_permitted: bool = False, window: int = WND) -> Segment:
    """The peer's SYN, optionally offering window scaling and SACK (RFC 7323, RFC 2018)."""
    return seg(SYN, x, window=window, mss=mss, wscale=wscale, sack_permitted=sack_permitted)


def expect(tcb: Tcb, want: list[tuple]) -> list[Segment]:
    """Assert that take_segments() is exactly `want`: tuples of
    (flags, seq, ack, payload length[, window[, options]]), also checking addresses."""
    out = tcb.take_segments()
    got = []
    for s, w in zip(out, want, strict=False):
        assert (s.src, s.dst, s.sport, s.dport) == (US, PEER, US_PORT, PEER_PORT)
        row: tuple = (s.flags, s.seq, s.ack, len(s.payload), s.window, s.options)
        got.append(row[: len(w)])
    got += [(s.flags, s.seq, s.ack, len(s.payload)) for s in out[len(want):]]
    assert got == [tuple(w) for w in want]
    return out


def events(tcb: Tcb) -> list:
    """take_events() without the StateChanged bookkeeping."""
    return [e for e in tcb.take_events() if not isinstance(e, StateChanged)]


def lost(tcb: Tcb) -> type | None:
    """The error type of the single ConnectionLost event pending (None for an orderly close)."""
    evs = [e for e in tcb.take_events() if isinstance(e, ConnectionLost)]
    assert len(evs) == 1, evs
    return None if evs[0].error is None else type(evs[0].error)


def _clean(tcb: Tcb, state: State) -> Tcb:
    assert tcb.state is state
    tcb.take_segments()
    tcb.take_events()
    return tcb


def tcb_syn_rcvd(config: TcpConfig | None = None, *, x: int = X, y: int = Y,
                 now: float = 0.0, mss: int | None = MSS, stats: Counter | None = None,
                 wscale: int | None = None, sack_permitted: bool = False,
                 challenge_limiter: ChallengeAckLimiter | None = None) -> Tcb:
    syn = peer_syn(x, mss=mss, wscale=wscale, sack_permitted=sack_permitted)
    tcb = Tcb.open_passive(config or TcpConfig(), syn, y, now,
                           Counter() if stats is None else stats,
                           challenge_limiter=challenge_limiter)
    return _clean(tcb, State.SYN_RCVD)


def tcb_established(config: TcpConfig | None = None, *, x: int = X, y: int = Y,
                    now: float = 0.0, mss: int | None = MSS, window: int = WND,
                    wscale: int | None = None, sack_permitted: bool = False,
                    challenge_limiter: ChallengeAckLimiter | None = None) -> Tcb:
    """Passive open completed at `now` (so the handshake RTT sample is 0 and RTO = rto_min).
    `window` is the window field of the peer's ACK (scaled by `wscale` if negotiated)."""
    tcb = tcb_syn_rcvd(config, x=x, y=y, now=now, mss=mss, wscale=wscale,
                       sack_permitted=sack_permitted, challenge_limiter=challenge_limiter)
    tcb.receive(seg(ACK, add(x, 1), add(y, 1), window=window), now)
    return _clean(tcb, State.ESTABLISHED)


def tcb_syn_sent(config: TcpConfig | None = None, *, y: int = Y, now: float = 0.0,
                 stats: Counter | None = None) -> Tcb:
    tcb = Tcb.open_active(config or TcpConfig(), (US, US_PORT), (PEER, PEER_PORT), y, now,
                          Counter() if stats is None else stats)
    return _clean(tcb, State.SYN_SENT)


def tcb_fin_wait_1(config: TcpConfig | None = None, *, now: float = 0.0,
                   orphan: bool = False) -> Tcb:
    """Our FIN (seq Y+1) is out, unacknowledged."""
    tcb = tcb_established(config, now=now)
    tcb.close(now, orphan=orphan)
    return _clean(tcb, State.FIN_WAIT_1)


def tcb_fin_wait_2(config: TcpConfig | None = None, *, now: float = 0.0,
                   orphan: bool = False) -> Tcb:
    tcb = tcb_fin_wait_1(config, now=now, orphan=orphan)
    tcb.receive(seg(ACK, X + 1, Y + 2), now)
    return _clean(tcb, State.FIN_WAIT_2)


def tcb_close_wait(config: TcpConfig | None = None, *, now: float = 0.0) -> Tcb:
    """The peer's FIN (seq X+1) was received and acknowledged."""
    tcb = tcb_established(config, now=now)
    tcb.receive(seg(FIN | ACK, X + 1, Y + 1), now)
    return _clean(tcb, State.CLOSE_WAIT)


def tcb_last_ack(config: TcpConfig | None = None, *, now: float = 0.0) -> Tcb:
    tcb = tcb_close_wait(config, now=now)
    tcb.close(now)
    return _clean(tcb, State.LAST_ACK)


def tcb_closing(config: TcpConfig | None = None, *, now: float = 0.0) -> Tcb:
    """Simultaneous close: the peer's FIN crossed ours."""
    tcb = tcb_fin_wait_1(config, now=now)
    tcb.receive(seg(FIN | ACK, X + 1, Y + 1), now)
    return _clean(tcb, State.CLOSING)


def tcb_time_wait(config: TcpConfig | None = None, *, now: float = 0.0) -> Tcb:
    """Both FINs exchanged and acknowledged; RCV.NXT = X+2, SND.NXT = Y+2."""
    tcb = tcb_fin_wait_2(config, now=now)
    tcb.receive(seg(FIN | ACK, X + 1, Y + 2), now)
    return _clean(tcb, State.TIME_WAIT)


def ts_seg(flags: int, seq: int, ack: int, payload: bytes = b"", *, tsval: int, tsecr: int,
           window: int = WND) -> Segment:
    """A segment from the peer with the Timestamps option (RFC 7323 3.2)."""
    s = seg(flags, seq, ack, payload, window)
    s.options.timestamp = (tsval, tsecr)
    return s


def tcb_with_timestamps(config: TcpConfig | None = None) -> Tcb:
    """ESTABLISHED at 0.0 with timestamps: the SYN's TSval 777, the ACK's 778, so
    TS.Recent = 778; RTO = rto_min (the handshake's RTT sample is 0)."""
    syn = peer_syn()
    syn.options.timestamp = (777, 0)
    tcb = Tcb.open_passive(config or TcpConfig(), syn, Y, 0.0, Counter())
    [synack] = tcb.take_segments()
    assert synack.options.timestamp == (Y, 777)  # TSecr echoes the SYN's TSval
    tcb.receive(ts_seg(ACK, X + 1, Y + 1, tsval=778, tsecr=Y), 0.0)
    return _clean(tcb, State.ESTABLISHED)
