"""The transmission control block: one TCP connection's state machine, sans I/O.

A `Tcb` never touches a socket, an event loop or a clock. Its inputs are
`receive(segment, now)`, `on_timer(now)` and the user calls `send`, `close`,
`abort` and `consumed`; its outputs are segments (`take_segments()`) and
application events (`take_events()`), and `next_deadline()` tells the shell when
to call `on_timer` next. That keeps every RFC rule a fast, exact unit test with
a fake clock.

Section numbers in comments refer to RFC 9293 unless another RFC is named.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Final

from tcpstack.core.buffers import SendBuffer
from tcpstack.core.cc import make as make_cc
from tcpstack.core.config import TcpConfig
from tcpstack.core.events import (
    ConnectionLost,
    DataReceived,
    EofReceived,
    Established,
    Event,
    StateChanged,
)
from tcpstack.core.ratelimit import ChallengeAckLimiter
from tcpstack.core.reassembly import Reassembly
from tcpstack.core.recovery import Recovery
from tcpstack.core.resets import reset_for
from tcpstack.core.rtt import RttEstimator
from tcpstack.core.scoreboard import Scoreboard
from tcpstack.core.segment import (
    ACK,
    EMPTY_OPTIONS,
    FIN,
    PSH,
    RST,
    SYN,
    URG,
    Options,
    Payload,
    Segment,
)
from tcpstack.core.seq import seq_add, seq_diff, seq_le, seq_lt
from tcpstack.core.states import FINISHED, RECEIVING, RESET_ON_ABORT, TRANSMITTING, State

DEFAULT_MSS: Final = 536  # RFC 9293 3.7.1: assumed when the peer sends no MSS option
MAX_WINDOW: Final = 0xFFFF  # without window scaling the window field is 16 bits
MAX_WSCALE: Final = 14  # RFC 7323 2.3
TS_OPTION_LEN: Final = 12  # NOP, NOP, kind 8, length 10 (RFC 7323 3.2)
MIN_PMTU: Final = 552  # Linux's net.ipv4.route.min_pmtu: the floor for a "fragmentation needed"
#: Payload of the largest TSO super-segment: an IPv4 packet of 65535 octets
#: less its header and the longest TCP header (docs/offload.md).
TSO_MAX: Final = 65535 - 20 - 60
# The fastest TSval clock Linux expects of a peer (tcp_tsval_replay): RFC 7323 5.4
# allows 1 ms to 1 s per tick, and some stacks (old Linux among them) tick at 1200 Hz.
TS_REPLAY_HZ: Final = 1200
#: Header prediction (`Tcb._predicted`): the common segments of ESTABLISHED take
#: a short path with the same result as the steps of 3.10.7.4. A module flag so
#: that tests/unit/test_tcb_fastpath.py can run both and compare them.
HEADER_PREDICTION = True
#: The bulk paths of `Tcb._push` (its early return, `Tcb._push_full`): the same
#: segments as its loop, for less; a flag for the same comparison.
BULK_PUSH = True
#: A flight below this (with MAX.SND.WND, itself below 2**30) keeps any ACK
#: between SND.UNA and SND.MAX inside RFC 5961's bound (`Tcb._ack_acceptable`).
_PREDICTED_FLIGHT: Final = 1 << 30
_ESTABLISHED: Final = State.ESTABLISHED  # a module global: an Enum member lookup costs 4x
#: Control bits that take a segment off the fast path (URG only to stay plain).
_UNPREDICTED: Final = SYN | FIN | RST | ACK | URG


class Tcb:
    """One connection. Build it with `open_passive` or `open_active`."""

    def __init__(
        self,
        config: TcpConfig,
        local: tuple[bytes, int],
        remote: tuple[bytes, int],
        iss: int,
        stats: Counter[str],
        *,
        passive: bool,
        challenge_limiter: ChallengeAckLimiter | None = None,
    ) -> None:
        self.config = config
        self.local_ip, self.local_port = local
        self.remote_ip, self.remote_port = remote
        self.passive = passive
        self.stats = stats
        self.state = State.CLOSED

        # Send sequence variables (3.3.1). snd_max is the highest sequence number
        # sent so far: after a retransmission timeout snd_nxt goes back to
        # snd_una while ACKs up to snd_max stay acceptable. snd_max is the RFC's
        # SND.NXT, so segments without data (ACKs, RSTs) carry it.
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_max = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0  # MAX.SND.WND: the largest window the peer offered (RFC 5961 5)
        self.bytes_acked = 0  # octets after the SYN the peer acknowledged (Linux bytes_acked)
        self.send_mss = min(DEFAULT_MSS, config.mss)
        self.snd_wscale = 0  # shift of the windows the peer sends (RFC 7323 2.3)
        self.rcv_wscale = 0  # shift of the windows we send, once negotiated
        self._our_wscale = wscale_for(config.rcv_buf) if config.window_scaling else None
        self.sack_ok = False  # both sides sent SACK-permitted (RFC 2018 2)
        self.ts_ok = False  # both sides sent the Timestamps option (RFC 7323 3.2)
        self.ts_recent = 0  # TS.Recent (RFC 7323 4.3)
        self._last_ack_sent = 0  # Last.ACK.sent (RFC 7323 4.3)
        self._ts_echo: int | None = None  # TSecr of the segment being processed
        self._now = 0.0  # time of the call being processed, for TSval
        # Keep-alive (3.8.4): off unless configured or asked for per connection.
        self.keepalive = config.keepalive
        self.keepalive_idle = config.keepalive_idle
        self.keepalive_interval = config.keepalive_interval
        self.keepalive_probes = config.keepalive_probes
        self._last_rx = 0.0  # when the peer last sent anything
        self._ka_sent = 0  # unanswered keep-alive probes
        self._ka_last = 0.0  # when the last probe left
        self.nodelay = config.nodelay  # Nagle off (TCP_NODELAY)
        self.cc = make_cc(config.cc, self.send_mss)
        # Loss recovery (RFC 5681, 6582, 6675); its scoreboard is bound here too,
        # since every ACK with SACK blocks updates it.
        self.recovery = Recovery(Scoreboard(config.max_ofo_runs, stats), iss)
        self._sacked = self.recovery.scoreboard
        self._sndbuf = SendBuffer()  # octets from seq (iss + 1) + acked data onward
        self._snd_sml = iss  # end of the last short segment sent (Minshall's Nagle)
        self._syn_acked = False  # our SYN occupies ISS; data starts after it
        self._fin_seq: int | None = None  # sequence number of our FIN once the user closed

        # Receive sequence variables (3.3.1).
        self.irs = 0
        self.rcv_nxt = 0
        self._unread = 0  # delivered to the application but not yet consumed
        self._rcv_adv = 0  # right edge of the window we last advertised
        self._ack_pending = False  # flush an ACK with the next take_segments()
        self._reasm = Reassembly(config.max_ofo_runs, stats)
        #: Octets that arrived a second time, for the next ACK's D-SACK (RFC 2883).
        self._dsack: tuple[int, int] | None = None
        self._delack_deadline: float | None = None
        self._delayed_segs = 0  # in-order segments not yet acknowledged
        # When this connection last sent an ACK that a blind sender can draw (a challenge
        # ACK, or the answer to an out-of-window or PAWS-rejected segment): one per
        # challenge_ack_interval for all of them, as Linux's tp->last_oow_ack_time.
        self._last_oow_ack = float("-inf")
        self._challenge_limiter = challenge_limiter  # shared by the stack's TCBs

        # Retransmission (RFC 6298).
        self.rtt = RttEstimator(config.rto_initial, config.rto_min, config.rto_max)
        self.retransmits = 0  # consecutive timeouts without progress
        self.total_retransmits = 0
        self._rtx_deadline: float | None = None
        self._close_deadline: float | None = None  # TIME-WAIT or orphaned FIN-WAIT-2
        self._orphaned = False  # the user closed both directions (writer.close())

        self._out: list[Segment] = []
        self._events: list[Event] = []

    # ------------------------------------------------------------------ opening

    @classmethod
    def open_passive(
        cls, config: TcpConfig, syn: Segment, iss: int, now: float, stats: Counter[str],
        *, challenge_limiter: ChallengeAckLimiter | None = None,
    ) -> Tcb:
        """A listener accepted `syn`: LISTEN -> SYN-RECEIVED, SYN+ACK sent (3.10.7.2)."""
        tcb = cls(config, (syn.dst, syn.dport), (syn.src, syn.sport), iss, stats, passive=True,
                  challenge_limiter=challenge_limiter)
        tcb._now = now
        tcb.state = State.LISTEN
        tcb._learn_syn(syn)
        tcb._set_state(State.SYN_RCVD, "SYN received, SYN+ACK sent")
        stats["PassiveOpens"] += 1
        tcb._send_syn(now)
        return tcb

    @classmethod
    def open_from_cookie(
        cls, config: TcpConfig, syn: Segment, ack: Segment, now: float, stats: Counter[str],
        *, challenge_limiter: ChallengeAckLimiter | None = None,
    ) -> Tcb:
        """A listener's SYN cookie came back (RFC 4987 3.6): LISTEN -> ESTABLISHED.

        `syn` is the peer's SYN as the cookie remembers it (`SynCookies.check`),
        `ack` the segment that returned the cookie: our SYN+ACK (ISS = SEG.ACK-1)
        was sent without a TCB, so SYN-RECEIVED is skipped, and `ack` is then
        processed as in ESTABLISHED, so text or a FIN on it is delivered.
        """
        tcb = cls(config, (syn.dst, syn.dport), (syn.src, syn.sport), seq_add(ack.ack, -1),
                  stats, passive=True, challenge_limiter=challenge_limiter)
        tcb._now = now
        tcb.state = State.LISTEN
        tcb._learn_syn(syn)
        tcb.snd_una = tcb.snd_nxt = tcb.snd_max = ack.ack
        tcb._syn_acked = True
        # What the cookie SYN+ACK advertised: its window, unscaled (RFC 7323 2.2).
        tcb._rcv_adv = seq_add(tcb.rcv_nxt, min(tcb.rcv_wnd, MAX_WINDOW))
        tcb._last_ack_sent = tcb.rcv_nxt
        stats["PassiveOpens"] += 1
        tcb._establish(now, "ACK with a valid SYN cookie received")
        tcb.receive(ack, now)
        return tcb

    @classmethod
    def open_active(
        cls,
        config: TcpConfig,
        local: tuple[bytes, int],
        remote: tuple[bytes, int],
        iss: int,
        now: float,
        stats: Counter[str],
        *,
        challenge_limiter: ChallengeAckLimiter | None = None,
    ) -> Tcb:
        """Active OPEN (3.10.1): CLOSED -> SYN-SENT, SYN sent."""
        tcb = cls(config, local, remote, iss, stats, passive=False,
                  challenge_limiter=challenge_limiter)
        tcb._now = now
        tcb._set_state(State.SYN_SENT, "active open, SYN sent")
        stats["ActiveOpens"] += 1
        tcb._send_syn(now)
        return tcb

    def _learn_syn(self, syn: Segment) -> None:
        """Take IRS, the peer's window and its MSS option from a SYN (3.10.7.2-3)."""
        self.irs = syn.seq
        self.rcv_nxt = seq_add(syn.seq, 1)
        self._update_window(syn)
        # Linux tcp_min_snd_mss: however small the peer's MSS (a 1-octet MSS costs a
        # segment per octet), send at least the floor, but never beyond our own MSS.
        # The timestamp option comes off afterwards, as in Linux (tcp_mtu_to_mss), so
        # a floor above its 12 octets always leaves room for data.
        peer_mss = syn.options.mss or DEFAULT_MSS
        self.send_mss = min(max(peer_mss, self.config.min_snd_mss), self.config.mss)
        opts = syn.options
        if self._our_wscale is not None and opts.wscale is not None:
            self.snd_wscale = min(opts.wscale, MAX_WSCALE)  # RFC 7323 2.3
            self.rcv_wscale = self._our_wscale
        else:
            self._our_wscale = None
        self.sack_ok = self.config.sack and opts.sack_permitted
        if self.config.timestamps and opts.timestamp is not None:
            self.ts_ok = True
            self.ts_recent = opts.timestamp[0]
            self.send_mss -= TS_OPTION_LEN  # every segment carries the option
        self.cc = make_cc(self.config.cc, self.send_mss)

    def _send_syn(self, now: float) -> None:
        """(Re)send our SYN, or SYN+ACK in SYN-RECEIVED; it carries our MSS (3.7.1).

        With `split_synack` a passive open sends the seed's four-segment handshake
        instead of the SYN+ACK: a bare ACK of the peer's SYN, then our SYN alone,
        both at seq ISS (our SYN is not out yet when the ACK leaves). RFC 9293
        allows it: a peer in SYN-SENT drops the ACK (3.10.7.3, fifth: no SYN, no
        RST) and takes the SYN as a simultaneous open (3.5, figure 8), answering
        with a SYN+ACK that `_simultaneous_synack` accepts. Retransmissions resend
        the same pair.
        """
        syn_rcvd = self.state is State.SYN_RCVD
        split = syn_rcvd and self.passive and self.config.split_synack
        if split:
            self._emit(ACK, seq=self.iss)
        flags = SYN | ACK if syn_rcvd and not split else SYN
        sack = self.sack_ok if syn_rcvd else self.config.sack  # answer only what was offered
        offer_ts = self.ts_ok if syn_rcvd else self.config.timestamps
        # RFC 7323 3.2: TSecr is valid only with ACK; a segment without ACK sends zero.
        echo = self.ts_recent if flags & ACK else 0
        options = Options(mss=self.config.mss, wscale=self._our_wscale, sack_permitted=sack,
                          timestamp=(self._ts_val(), echo) if offer_ts else None)
        self._emit(flags, seq=self.iss, options=options)
        self.snd_nxt = self.snd_max = seq_add(self.iss, 1)
        if self._rtx_deadline is None:
            self._rtx_deadline = now + self.rtt.rto
        if self.retransmits == 0:
            self.rtt.time_segment(self.snd_nxt, now)

    # --------------------------------------------------------------- user calls

    def send(self, data: Payload, now: float) -> None:
        """SEND (3.10.2): queue data; it leaves as the peer's window allows."""
        self._now = now
        if self._fin_seq is not None:
            raise RuntimeError("send after close")
        self._sndbuf.append(data)
        self._push(now)

    def close(self, now: float, *, orphan: bool = False) -> None:
        """CLOSE (3.10.4): we will send no more; receiving goes on (half-close).

        `orphan` marks a full close by the application (nobody reads any more):
        like Linux, an orphaned connection does not wait in FIN-WAIT-2 forever.
        """
        self._now = now
        self._orphaned = self._orphaned or orphan
        if orphan and self.state is State.FIN_WAIT_2 and self._close_deadline is None:
            # Orphaned after a half-close whose FIN is already acknowledged: start the
            # FIN-WAIT-2 timeout now, as _after_ack would have (Linux tcp_fin_timeout).
            self._close_deadline = now + self.config.fin_timeout
        if self.state is State.SYN_SENT:
            self._finish(None, "closed by the user in SYN-SENT")
            return
        if self._fin_seq is not None or self.state not in (
            State.SYN_RCVD, State.ESTABLISHED, State.CLOSE_WAIT
        ):
            return
        self._fin_seq = seq_add(self._data_seq, len(self._sndbuf))
        if self.state is State.SYN_RCVD:
            return  # the FIN waits for ESTABLISHED (3.10.4)
        if self.state is State.CLOSE_WAIT:
            self._set_state(State.LAST_ACK, "closed by the user, FIN queued")
        else:
            self._set_state(State.FIN_WAIT_1, "closed by the user, FIN queued")
        self._push(now)

    def abort(self, now: float) -> None:
        """ABORT (3.10.5): reset a synchronized connection and forget it."""
        self._now = now
        if self.state in FINISHED:
            return
        if self.state in RESET_ON_ABORT:
            self._send_rst(self.snd_max, with_ack=True)
        self._finish(None, "aborted by the user")

    def consumed(self, n: int, now: float) -> None:
        """The application read `n` bytes: reopen the window, and tell the peer
        once it grew by at least min(buffer/2, MSS) (receiver SWS avoidance, 3.8.6.2.2)."""
        self._now = now
        self._unread -= n
        grown = seq_diff(seq_add(self.rcv_nxt, self.rcv_wnd), self._rcv_adv)
        if grown >= min(self.config.rcv_buf // 2, self.send_mss) and self.state in RECEIVING:
            self._ack_pending = True

    def lower_mtu(self, mtu: int, now: float) -> None:
        """A "fragmentation needed" naming this connection (RFC 1191 6.3), already
        checked by the stack (RFC 5927): send segments that fit `mtu` from now on.
        As in Linux (tcp_v4_mtu_reduced): an MTU below MIN_PMTU counts as MIN_PMTU,
        so a forged message cannot make segments tiny, and the MSS only shrinks.
        Unlike Linux, what is in flight is not resent at once: the RTO resends it,
        cut to the new size. The MSS a SYN+ACK still to come announces replaces it."""
        self._now = now
        mss = max(mtu, MIN_PMTU) - 40 - (TS_OPTION_LEN if self.ts_ok else 0)
        if mss < self.send_mss:
            self.send_mss = self.cc.mss = mss
            self.stats["PmtuReductions"] += 1

    # ------------------------------------------------------------------ outputs

    def take_segments(self) -> list[Segment]:
        """Segments to send now, in order; a pending ACK is flushed here so one
        batch of received segments is acknowledged by one ACK."""
        if self._ack_pending:
            self._emit(ACK)
        out, self._out = self._out, []
        return out

    def take_events(self) -> list[Event]:
        """Events for the application and the shell, in order."""
        events, self._events = self._events, []
        return events

    def timers(self) -> dict[str, float]:
        """The pending timers by name and deadline, for `tcpstack ss`."""
        named = {
            "persist" if self._persisting else "retransmit": self._rtx_deadline,
            "time-wait" if self.state is State.TIME_WAIT else "fin-wait-2": self._close_deadline,
            "delayed-ack": self._delack_deadline,
            "keepalive": self._keepalive_due(),
        }
        return {name: when for name, when in named.items() if when is not None}

    def next_deadline(self) -> float | None:
        """When `on_timer` must run next, or None."""
        first = None  # runs after every turn: plain comparisons, no list
        for d in (self._rtx_deadline, self._close_deadline, self._delack_deadline,
                  self._keepalive_due() if self.keepalive else None):
            if d is not None and (first is None or d < first):
                first = d
        return first

    @property
    def rcv_wnd(self) -> int:
        """RCV.WND: free space in the receive buffer, capped to what the (scaled)
        16-bit window field can say."""
        return max(0, min(self.config.rcv_buf - self._unread, MAX_WINDOW << self.rcv_wscale))

    def _window_limit(self) -> int:
        """The window the peer may use: never less than what we advertised, as
        the right edge must not move left (3.8.6.2.2)."""
        return max(self.rcv_wnd, seq_diff(self._rcv_adv, self.rcv_nxt))

    @property
    def send_queue(self) -> int:
        """Octets the application handed over that the peer has not acknowledged."""
        return len(self._sndbuf)

    @property
    def fin_acked(self) -> bool:
        """Our FIN was sent and acknowledged."""
        return self._fin_seq is not None and seq_lt(self._fin_seq, self.snd_una)

    @property
    def _persisting(self) -> bool:
        """Whether the retransmission timer serves as the persist timer: data waits
        for a window the peer closed, and each expiry sends a zero-window probe
        (3.8.6.1) rather than a retransmission."""
        return self.snd_wnd == 0 and bool(self._sndbuf) and self.state not in (
            State.SYN_SENT, State.SYN_RCVD)

    @property
    def _data_seq(self) -> int:
        """Sequence number of the first octet in the send buffer."""
        return self.snd_una if self._syn_acked else seq_add(self.iss, 1)

    # The estimator's and the recovery's figures under the names `tcpstack ss` shows.

    @property
    def srtt(self) -> float | None:
        """SRTT (RFC 6298), None before the first sample."""
        return self.rtt.srtt

    @property
    def rttvar(self) -> float:
        """RTTVAR (RFC 6298)."""
        return self.rtt.rttvar

    @property
    def rto(self) -> float:
        """The current RTO, backoff included (RFC 6298)."""
        return self.rtt.rto

    @property
    def dupacks(self) -> int:
        """Duplicate ACKs since SND.UNA last advanced (RFC 5681 3.2)."""
        return self.recovery.dupacks

    # ------------------------------------------------------------------- timers

    def on_timer(self, now: float) -> None:
        """Run every timer that is due at `now`."""
        self._now = now
        if self._rtx_deadline is not None and self._rtx_deadline <= now:
            self._rtx_deadline = None
            self._on_retransmission_timeout(now)
        keepalive = self._keepalive_due()
        if keepalive is not None and keepalive <= now:
            self._on_keepalive(now)
        if self._delack_deadline is not None and self._delack_deadline <= now:
            self._delack_deadline = None
            self._ack_pending = True  # RFC 9293 3.8.6.3: delay an ACK at most 0.5 s
        if self._close_deadline is not None and self._close_deadline <= now:
            self._close_deadline = None
            if self.state is State.TIME_WAIT:
                self._finish(None, "2*MSL elapsed in TIME-WAIT")
            elif self.state is State.FIN_WAIT_2:
                self._send_rst(self.snd_max, with_ack=True)
                self._finish(None, "FIN-WAIT-2 timeout after close, RST sent")

    def _keepalive_due(self) -> float | None:
        """When the next keep-alive probe is due: only on an idle synchronized
        connection (outstanding data has the retransmission timer instead)."""
        if not self.keepalive or self.state not in (State.ESTABLISHED, State.CLOSE_WAIT) or (
                self.snd_una != self.snd_max or self._sndbuf):
            return None
        if self._ka_sent:
            return self._ka_last + self.keepalive_interval
        return max(self._last_rx, self._ka_last) + self.keepalive_idle

    def _on_keepalive(self, now: float) -> None:
        """3.8.4: probe with <SEQ=SND.NXT-1> and no data, which draws an ACK
        from a live peer; after `keepalive_probes` unanswered ones, reset (Linux)."""
        if self._ka_sent >= self.keepalive_probes:
            self._send_rst(self.snd_max, with_ack=True)
            self._finish(TimeoutError("connection timed out (keep-alive)"),
                         f"{self._ka_sent} keep-alive probes unanswered, RST sent")
            return
        self._ka_sent += 1
        self._ka_last = now
        self.stats["KeepAliveProbes"] += 1
        self._emit(ACK, seq=seq_add(self.snd_max, -1))

    def _on_retransmission_timeout(self, now: float) -> None:
        """RFC 6298 5.4-5.6: retransmit, back off, re-arm; give up after the retry limit."""
        if self.state in (State.SYN_SENT, State.SYN_RCVD):
            self._on_handshake_timeout(now)
            return
        if self.snd_una == self.snd_max and not self._sndbuf:
            return
        if self.retransmits >= self.config.data_retries:
            self._send_rst(self.snd_max, with_ack=True)
            self._finish(TimeoutError("connection timed out"),
                         f"retransmitted {self.retransmits} times without an answer, RST sent")
            return
        flight = seq_diff(self.snd_max, self.snd_una)
        # A zero-window probe is flow control, not a loss (3.8.6.1; Linux tcp_probe_timer).
        probing = self._persisting
        if not probing:
            self.stats["RetransTimeouts"] += 1
            if self.retransmits == 0:
                self.cc.on_timeout(flight, now)  # RFC 5681 3.1 (4): only on the first timeout
            else:
                self.cc.cwnd = self.send_mss
        self.recovery.on_timeout(self.snd_max, repeated=self.retransmits > 0)
        self.retransmits += 1
        self.rtt.back_off()
        self.snd_nxt = self.snd_una  # go back N: resend from the first unacknowledged octet
        self._push(now, probe=probing)
        if self._rtx_deadline is None:
            self._rtx_deadline = now + self.rtt.rto

    def _on_handshake_timeout(self, now: float) -> None:
        """The SYN or SYN+ACK went unanswered for one RTO: resend it with the same
        sequence number, doubling the RTO up to its maximum; after the last retry
        give up (the seed: a server that never gets the third segment resets)."""
        syn_rcvd = self.state is State.SYN_RCVD
        limit = self.config.synack_retries if syn_rcvd else self.config.syn_retries
        if self.retransmits >= limit:
            self.stats["AttemptFails"] += 1
            if syn_rcvd:
                self.stats["HandshakeTimeouts"] += 1
                self._send_rst(seq_add(self.iss, 1), with_ack=False)
                self._finish(None, f"SYN+ACK sent {self.retransmits + 1} times without an "
                             "answer, RST sent")
            else:
                self._finish(TimeoutError("connection timed out"),
                             f"SYN sent {self.retransmits + 1} times without an answer")
            return
        self.retransmits += 1
        self.total_retransmits += 1
        self.stats["RetransSegs"] += 1
        self.stats["SynAckRetrans" if syn_rcvd else "SynRetrans"] += 1
        self.rtt.back_off()
        self._send_syn(now)
        self._rtx_deadline = now + self.rtt.rto

    # ---------------------------------------------------------------- receiving

    def receive(self, seg: Segment, now: float) -> None:
        """SEGMENT ARRIVES (3.10.7) for this connection."""
        self._now = now
        self._last_rx = now  # any segment shows the peer is alive
        self._ka_sent = 0
        ts = seg.options.timestamp if self.ts_ok else None
        self._ts_echo = ts[1] if ts else None
        syn_sent = self.state is State.SYN_SENT  # one lookup: a member costs 4x an attribute
        if ts and not syn_sent and not self._paws_check(seg, ts[0], now):
            return
        if syn_sent:
            self._receive_syn_sent(seg, now)
        elif self.state is _ESTABLISHED and HEADER_PREDICTION and self._predicted(seg, now):
            return
        elif self.state not in FINISHED:
            self._receive_synchronized(seg, now)

    def _predicted(self, seg: Segment, now: float) -> bool:
        """Header prediction (Van Jacobson's, as in Linux tcp_rcv_established): in
        ESTABLISHED, a segment at RCV.NXT with only ACK (and PSH) set and no SACK
        blocks (the scoreboard then learns nothing) that acknowledges new data without text (a
        download's ACKs) or carries in-order text that fits the window with an ACK
        between SND.UNA and SND.MAX (an upload's data, an echo's request). For
        those the steps of 3.10.7.4 reduce to these: the sequence test passes and
        trims nothing (first), no RST or SYN (second, fourth), the ACK is
        acceptable (fifth, RFC 5961 5.2: see _PREDICTED_FLIGHT) and neither a
        duplicate nor an ACK of our FIN (none is queued in ESTABLISHED); the text
        and FIN steps then run as usual. RFC 9293 leaves the implementation free as
        long as the result is the same; tests/unit/test_tcb_fastpath.py compares
        it with the full steps. Returns False, having changed nothing, for any
        other segment."""
        if seg.flags & _UNPREDICTED != ACK or seg.seq != self.rcv_nxt or (
                self.sack_ok and seg.options.sack_blocks):
            return False
        snd_una = self.snd_una
        advance = seq_diff(seg.ack, snd_una)
        flight = seq_diff(self.snd_max, snd_una)
        if advance < 0 or advance > flight or flight >= _PREDICTED_FLIGHT:
            return False
        payload = seg.payload
        if payload:
            if len(payload) > self._window_limit():
                return False  # the first step would trim it
        elif not advance:
            return False  # a duplicate ACK or a window update: the full steps
        self._update_ts_recent(seg)
        if advance:
            self._on_new_ack(seg.ack, now)
        self._ack_window(seg)
        if payload:
            self._receive_text_and_fin(seg, now)
        self._push(now)
        return True

    def _paws_check(self, seg: Segment, tsval: int, now: float) -> bool:
        """RFC 7323 5.3 R1 (PAWS): reject an old duplicate whose TSval is older than
        TS.Recent, with an ACK (rate-limited, `_answer_unacceptable`), unless it is
        an RST.

        Two kinds of segment with an old TSval are no old duplicates from an earlier
        incarnation, only overtaken on the way (pure ACKs often are: a receiver's
        ACKs leave on other queues than its data, or get reordered by the path), and
        Linux 6.14+ treats them apart (tcp_validate_incoming with
        tcp_disordered_ack_check): a disordered ACK (`_disordered_ack`) is processed
        as if PAWS had passed; a pure ACK left of RCV.NXT is dropped without an
        answer (drop reason TCP_RFC7323_PAWS_ACK, counter PAWSOldAck), since its
        information is stale and answering it would only draw more of them.
        """
        if not seq_lt(tsval, self.ts_recent) or seg.flags & RST or self._disordered_ack(
                seg, tsval):
            return True
        if seg.flags & ACK and not seg.seg_len and seq_lt(seg.seq, self.rcv_nxt):
            self.stats["PAWSOldAck"] += 1
            return False
        self.stats["PAWSRejected"] += 1
        self._answer_unacceptable(seg, now, "PAWS")
        return False

    def _disordered_ack(self, seg: Segment, tsval: int) -> bool:
        """Linux tcp_disordered_ack_check: a pure ACK at RCV.NXT that repeats SND.UNA,
        would not update the window by Linux's rule (tcp_may_update_window: it is not
        from a later SND.WL1, nor offers more window or a zero one at the same
        SND.WL1), and whose TSval lies within about one RTO of TS.Recent (the replay
        window, counted in the fastest ticks a peer may use). Such a segment tells
        nothing that a newer one has not, and whatever an attacker replays of it is
        harmless: dropping and answering it (as RFC 7323 5.3 R1 says) only costs an
        ACK each time the peer's duplicate ACKs pass one another.

        An ACK that acknowledges new data but carries an older TSval stays rejected,
        as in RFC 7323 and Linux: a peer's TSval and its ACK both only grow, so a
        later-sent segment acknowledges at least as much, and the data it covers is
        acknowledged by the newer segment that set TS.Recent.
        """
        wnd = seg.window << self.snd_wscale
        return bool(
            seg.flags & ACK and not seg.seg_len and seg.seq == self.rcv_nxt
            and seg.ack == self.snd_una
            and not (seq_lt(self.snd_wl1, seg.seq)
                     or (seg.seq == self.snd_wl1 and (wnd > self.snd_wnd or wnd == 0)))
            and seq_diff(self.ts_recent, tsval) <= self.rtt.rto * TS_REPLAY_HZ)

    def _update_ts_recent(self, seg: Segment) -> None:
        """RFC 7323 5.3 R3: TS.Recent from a segment that starts at or before what we
        last ACKed, only once it passed the sequence check (R2) and the ACK check
        (Linux tcp_ack, FLAG_UPDATE_TS_RECENT): else one blind segment with a future
        TSval, out of the window, would make PAWS reject the peer's own from then on."""
        ts = seg.options.timestamp if self.ts_ok else None
        if ts and seq_le(seg.seq, self._last_ack_sent) and not seq_lt(ts[0], self.ts_recent):
            self.ts_recent = ts[0]

    def _receive_syn_sent(self, seg: Segment, now: float) -> None:
        """3.10.7.3: SYN-SENT."""
        flags = seg.flags
        if flags & ACK and (seq_le(seg.ack, self.iss) or seq_lt(self.snd_max, seg.ack)):
            # First: an unacceptable ACK is answered with <SEQ=SEG.ACK><CTL=RST>.
            self._reply_reset(seg)
            return
        if flags & RST:
            # Second: a reset is acceptable only with an acceptable ACK.
            if flags & ACK:
                self.stats["AttemptFails"] += 1
                self._finish(ConnectionRefusedError("connection refused"),
                             "RST received in SYN-SENT")
            return
        if not flags & SYN:
            return  # Fifth: neither SYN nor RST.
        # Fourth: the SYN bit.
        self._learn_syn(seg)
        if flags & ACK:
            self._synack_establishes(seg, now, "SYN+ACK received, ACK sent")
        else:
            # Simultaneous open, or a peer that splits its SYN+ACK into ACK and SYN.
            self._set_state(State.SYN_RCVD, "SYN received in SYN-SENT, SYN+ACK sent")
            self._send_syn(now)

    def _receive_synchronized(self, seg: Segment, now: float) -> None:
        """3.10.7.4: SYN-RECEIVED and the synchronized states, step by step."""
        flags = seg.flags
        if self.state is State.SYN_RCVD and self._syn_rcvd_repeat(seg, now):
            return
        # First: check the sequence number; keep only what lies in the window.
        if not self._acceptable(seg):
            if not flags & RST:
                self._answer_unacceptable(seg, now, "Seq")
            return
        self._trim_to_window(seg)
        # Second: check the RST bit (RFC 5961 3.2).
        if flags & RST:
            self._process_rst(seg, now)
            return
        # Third: security; no IP security compartments here (3.10.7.4, third).
        # Fourth: check the SYN bit (RFC 5961 4.2).
        if flags & SYN:
            self._process_syn(now)
            return
        # Fifth: check the ACK field; without ACK the segment is dropped.
        if not flags & ACK or not self._process_ack(seg, now):
            return
        # Sixth: the URG bit is not acted on; urgent data arrives in line (RFC 6093).
        # Seventh and eighth: the segment text, then the FIN bit.
        self._receive_text_and_fin(seg, now)
        self._push(now)  # what the ACK and the window made room for

    def _syn_rcvd_repeat(self, seg: Segment, now: float) -> bool:
        """In SYN-RECEIVED, before the steps of 3.10.7.4: the peer's SYN again, or
        its SYN+ACK of a simultaneous open. Returns True when `seg` was handled."""
        flags = seg.flags & (SYN | ACK | RST)
        if flags == SYN and seg.seq == self.irs:
            # The peer retransmitted its SYN: our SYN+ACK was lost. Like Linux
            # (tcp_check_req), answer it with the SYN+ACK again at once, but like
            # any answer a blind sender can draw, at most once per interval.
            if not self._oow_limited(now, "TCPACKSkippedSynRecv"):
                self.stats["RetransSegs"] += 1
                self.stats["SynAckRetrans"] += 1
                self._send_syn(now)
            return True
        # The peer's SYN+ACK of a simultaneous open (3.5, figure 8, line 6): only where
        # one can happen, after our own SYN (active open) or our split SYN+ACK.
        if (flags == SYN | ACK
                and (not self.passive or self.config.split_synack)
                and seg.seq == self.irs and seq_lt(self.snd_una, seg.ack)
                and seq_le(seg.ack, self.snd_max)):
            self._simultaneous_synack(seg, now)
            return True
        return False

    def _process_rst(self, seg: Segment, now: float) -> None:
        """3.10.7.4, second (RFC 5961 3.2): an RST exactly at RCV.NXT resets the
        connection; one elsewhere in the window draws a challenge ACK."""
        if seg.seq == self.rcv_nxt:
            self._reset_by_peer()
        else:
            self._challenge_ack(now)

    def _process_syn(self, now: float) -> None:
        """3.10.7.4, fourth (RFC 5961 4.2): a SYN in the window. A passive open in
        SYN-RECEIVED goes back to LISTEN; elsewhere a challenge ACK answers it."""
        if self.state is State.SYN_RCVD and self.passive:
            self.stats["AttemptFails"] += 1
            self._finish(None, "SYN received in SYN-RECEIVED, back to LISTEN",
                         final=State.LISTEN)
        else:
            self._challenge_ack(now)

    def _process_ack(self, seg: Segment, now: float) -> bool:
        """3.10.7.4, fifth: the ACK field of a segment with ACK set. Returns whether
        processing goes on with the text and FIN (False: dropped or done)."""
        flags = seg.flags
        if self.state is State.SYN_RCVD:
            if not (seq_lt(self.snd_una, seg.ack) and seq_le(seg.ack, self.snd_max)):
                self._reply_reset(seg)
                return False
            self._establish(now, "ACK of SYN+ACK received")
        if not self._ack_acceptable(seg.ack):
            # RFC 5961 5.2 (adopted by 3.10.7.4, fifth): an ACK of something not yet
            # sent, or older than any window the peer offered, drops the whole
            # segment, text and FIN too: in-window data with such an ACK is the blind
            # injection this check stops. The ACK we owe it is a challenge ACK.
            self.stats["AckTooOld" if seq_lt(seg.ack, self.snd_una) else "AckUnsentData"] += 1
            self._challenge_ack(now)
            return False
        self._update_ts_recent(seg)
        wnd = seg.window << self.snd_wscale
        new_sack = self.sack_ok and self._sacked.update(
            seg.options.sack_blocks, self.snd_una, self.snd_max)
        if seq_lt(self.snd_una, seg.ack):
            self._on_new_ack(seg.ack, now)
        elif (seg.ack == self.snd_una and self.snd_una != self.snd_max and not seg.payload
              and not flags & FIN and (new_sack if self.sack_ok else wnd == self.snd_wnd)):
            # RFC 5681 2 "duplicate acknowledgment"; with SACK only an ACK that
            # reports new SACKed data counts (RFC 6675 2, "DupAcks"): one that
            # answers a duplicated segment tells nothing about a loss.
            self._on_dupack(now)
        self._ack_window(seg)
        return not self._after_ack(now)

    def _ack_window(self, seg: Segment) -> None:
        """3.10.7.4, fifth, once SND.UNA is updated: the send window from an ACK
        that is not older than the last update (SND.WL1, SND.WL2)."""
        if seq_le(self.snd_una, seg.ack) and (
            seq_lt(self.snd_wl1, seg.seq)
            or (self.snd_wl1 == seg.seq and seq_le(self.snd_wl2, seg.ack))
        ):
            closed = self.snd_wnd == 0
            self._update_window(seg)
            if closed and self.snd_wnd and seg.ack == self.snd_una:
                self._window_reopened()
        if self.snd_wnd == 0 and seg.ack == self.snd_una and self._sndbuf:
            # 3.8.6.1 (MUST-36): while the peer answers our zero-window probes the
            # connection stays open, so an answered probe is not a failed retransmission.
            self.retransmits = 0

    def _simultaneous_synack(self, seg: Segment, now: float) -> None:
        """SYN-RECEIVED gets the peer's SYN+ACK: it repeats the SYN we hold (seq =
        IRS) and acknowledges ours. That is a simultaneous open (RFC 9293 3.5,
        figure 8, line 6), also what a Linux client answers to our split SYN+ACK.

        The figure moves to ESTABLISHED, but the acceptability test of 3.10.7.4
        (first) rejects the segment, since it starts at RCV.NXT-1 and only its SYN
        is old; answering it with a bare ACK would leave us in SYN-RECEIVED until a
        retransmission. So take it as 3.10.7.3 takes a SYN+ACK in SYN-SENT: the
        SYN carries the peer's window, never scaled (RFC 7323 2.2), the ACK of our
        SYN establishes the connection, text after the SYN goes on at the sixth
        step, and an ACK answers it at once: a peer that got our SYN without an
        ACK (split SYN+ACK) waits in SYN-RECEIVED for one. Linux does the same
        since 6.11 (tcp_validate_incoming lets this SYN+ACK pass in SYN_RECV) and
        ACKs it too (conformance script active/simultaneous-synack).

        A plain passive open never sent a SYN alone, so no peer can be in a
        simultaneous open with it: there, like Linux's request socket
        (tcp_check_req), the SYN+ACK is only an unacceptable segment that draws an
        ACK (3.10.7.4, first).
        """
        self._update_window(seg)
        self._update_ts_recent(seg)
        self._synack_establishes(seg, now, "SYN+ACK received (simultaneous open), ACK sent")

    def _update_window(self, seg: Segment) -> None:
        """SND.WND, SND.WL1 and SND.WL2 from `seg` (3.10.7.4, fifth; the window of a
        SYN is never scaled, RFC 7323 2.2), and MAX.SND.WND for the ACK check."""
        self.snd_wnd = seg.window if seg.flags & SYN else seg.window << self.snd_wscale
        self.snd_wl1 = seg.seq
        self.snd_wl2 = seg.ack
        self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)

    def _synack_establishes(self, seg: Segment, now: float, cause: str) -> None:
        """A SYN+ACK that acknowledges our SYN (3.10.7.3, fourth): ESTABLISHED, ACK it."""
        self._establish(now, cause)
        # Our SYN is acknowledged: advance SND.UNA through the common path so the
        # SYN's retransmission timer stops (RFC 6298 5.2) and it yields an RTT sample.
        self._on_new_ack(seg.ack, now)
        self._ack_pending = True
        if seg.payload or seg.flags & FIN:  # continue at the sixth step, past the SYN
            seg.seq = seq_add(seg.seq, 1)
            seg.flags &= ~SYN
            self._receive_text_and_fin(seg, now)
        self._push(now)

    def _ack_acceptable(self, ack: int) -> bool:
        """RFC 5961 5.2: (SND.UNA - MAX.SND.WND) =< SEG.ACK =< SND.NXT.

        Like Linux (tcp_ack, since 6.7), the bound goes back no further than the
        octets acknowledged so far: early in a connection MAX.SND.WND reaches below
        ISS, and an ACK of octets never sent is no less blind than an ancient one.
        An ACK inside the bound but below SND.UNA is a harmless old duplicate.
        """
        oldest = seq_add(self.snd_una, -min(self.max_snd_wnd, self.bytes_acked))
        return seq_le(oldest, ack) and seq_le(ack, self.snd_max)

    def _acceptable(self, seg: Segment) -> bool:
        """The four cases of the acceptability test (3.10.7.4, first)."""
        seg_len = seg.seg_len
        wnd = self._window_limit()
        start = seq_diff(seg.seq, self.rcv_nxt)
        if seg_len == 0:
            return start == 0 if wnd == 0 else 0 <= start < wnd
        if wnd == 0:
            return False
        end = start + seg_len - 1
        return 0 <= start < wnd or 0 <= end < wnd

    def _trim_to_window(self, seg: Segment) -> None:
        """Keep only the part of an acceptable segment inside the window (3.10.7.4);
        octets it repeats from before RCV.NXT are reported as a D-SACK."""
        early = seq_diff(self.rcv_nxt, seg.seq)
        if early > 0:
            if seg.flags & SYN:
                seg.flags &= ~SYN
                early -= 1
            elif seg.payload:
                self._duplicate(seg.seq, self.rcv_nxt, "TCPDSACKOldSent")
            seg.payload = seg.payload[early:]
            seg.seq = self.rcv_nxt
        # Measured from the segment's own start: an out-of-order segment is kept
        # now (Reassembly), so octets beyond RCV.NXT + RCV.WND must go (3.10.7.4).
        room = self._window_limit() - seq_diff(seg.seq, self.rcv_nxt)
        if len(seg.payload) > room:
            seg.payload = seg.payload[:room]
            seg.flags &= ~FIN  # the FIN lies beyond the window

    def _on_new_ack(self, ack: int, now: float) -> None:
        """SND.UNA < SEG.ACK =< SND.MAX: drop acknowledged octets, let loss recovery
        and congestion control see the ACK, measure the RTT (exact sample of the
        timed segment, else the echoed timestamp: `RttEstimator`), restart or stop
        the retransmission timer."""
        acked = seq_diff(ack, self.snd_una)
        if not self._syn_acked:
            acked -= 1  # RFC 5681 3.1: the ACK of a SYN MUST NOT increase cwnd
        self.bytes_acked += acked
        acked_data = max(0, min(seq_diff(ack, self._data_seq), len(self._sndbuf)))
        self._sndbuf.consume(acked_data)
        self.snd_una = ack
        self._syn_acked = True
        rtt = self.rtt
        if self.recovery.on_new_ack(ack, acked, now, rtt.srtt, self.cc):
            # RFC 6582 3.2 step 2: a partial ACK; the octets at SND.UNA are lost too.
            self._retransmit_holes(now, force=True)
        if seq_lt(self.snd_nxt, ack):
            self.snd_nxt = ack
        self.retransmits = 0
        # The timed segment's exact sample first (the 1 ms TSval clock would round a
        # sub-millisecond RTT to 0), else RFC 7323 4.1's echo, which needs no Karn.
        if not rtt.timed_ack(ack, now) and self._ts_echo:
            rtt.timestamp_sample(self._ts_val(), self._ts_echo)
        # RFC 6298 5.2-5.3.
        self._rtx_deadline = None if ack == self.snd_max else now + rtt.rto

    def _window_reopened(self) -> None:
        """The peer's window opened again without acknowledging SND.UNA (3.8.6.1).

        Whatever lies beyond SND.UNA was sent into a closed window (the probe
        octet, which the peer answered with a zero window) or was dropped by the
        receiver (a Linux receiver out of buffer memory drops in-window data and
        then shows a zero window): sending resumes at SND.UNA at once, skipping
        what the peer SACKed, instead of waiting for a retransmission timeout the
        probes have backed off to tens of seconds. The persist backoff ends here
        too, as in Linux (tcp_ack_probe clears icsk_backoff)."""
        if seq_lt(self.snd_una, self.snd_nxt):
            self.snd_nxt = self.snd_una
            self.rtt.retransmitted()  # Karn: what follows is a retransmission
        self.rtt.end_backoff()
        self.retransmits = 0
        self._rtx_deadline = None

    def _after_ack(self, now: float) -> bool:
        """State changes that an ACK of our FIN causes (3.10.7.4, fifth).
        Returns True when the segment needs no further processing."""
        if not self.fin_acked:
            return False
        if self.state is State.FIN_WAIT_1:
            self._set_state(State.FIN_WAIT_2, "ACK of FIN received")
            if self._orphaned:
                self._close_deadline = now + self.config.fin_timeout
        elif self.state is State.CLOSING:
            self._enter_time_wait(now, "ACK of FIN received")
            return True
        elif self.state is State.LAST_ACK:
            self._finish(None, "ACK of FIN received")
            return True
        return False

    def _receive_text_and_fin(self, seg: Segment, now: float) -> None:
        """Seventh and eighth steps: deliver in-order text, then process FIN."""
        if self.state not in RECEIVING:
            return
        if self._orphaned and seg.payload:
            # RFC 1122 4.2.2.13: data arriving after the application closed is
            # lost, so say so with an RST rather than acknowledge it (as Linux).
            self.stats["AbortOnData"] += 1
            self._send_rst(self.snd_max, with_ack=False)
            self._finish(None, "data received after close, RST sent")
            return
        if seg.seq != self.rcv_nxt:
            if seg.payload or seg.flags & FIN:
                # Out of order: keep it, and ask for the hole at once with an ACK
                # that carries SACK blocks (RFC 5681 4.2, RFC 2018 4).
                repeated = self._reasm.add(seg.seq, seg.payload, bool(seg.flags & FIN),
                                           self.rcv_nxt)
                if repeated is not None:
                    self._duplicate(*repeated, "TCPDSACKOfoSent")
                self._emit(ACK)
            return
        filled = bool(self._reasm)
        fin = bool(seg.flags & FIN)
        if seg.payload:
            self._deliver(seg.payload)
            if filled:
                more, fin_later = self._reasm.pop_ready(self.rcv_nxt)
                if more:
                    self._deliver(more)
                fin = fin or fin_later
            # A GRO super-segment counts as the segments it was made of: two or
            # more full-sized ones are ACKed at once (RFC 5681 4.2).
            self._delayed_segs += seg.wire_segments
            if filled or fin or not self.config.delayed_ack:
                self._ack_pending = True  # at once for a filled hole (RFC 5681 4.2) or FIN
            elif self._delayed_segs >= 2:
                # RFC 5681 4.2: ACK every second full-sized segment, now rather than at
                # the end of the batch: stretch ACKs starve the sender's ACK clock.
                self._emit(ACK)
            elif self._delack_deadline is None:
                self._delack_deadline = now + self.config.delayed_ack
        if not fin:
            return
        self.rcv_nxt = seq_add(self.rcv_nxt, 1)
        self._ack_pending = True
        self._events.append(EofReceived())
        if self.state in (State.SYN_RCVD, State.ESTABLISHED):
            self._set_state(State.CLOSE_WAIT, "FIN received")
        elif self.state is State.FIN_WAIT_1:
            if self.fin_acked:
                self._enter_time_wait(now, "FIN received")
            else:
                self._set_state(State.CLOSING, "FIN received (simultaneous close)")
        elif self.state is State.FIN_WAIT_2:
            self._enter_time_wait(now, "FIN received")

    def _deliver(self, data: Payload) -> None:
        self.rcv_nxt = seq_add(self.rcv_nxt, len(data))
        self._unread += len(data)
        self._events.append(DataReceived(data))

    # ---------------------------------------------------------------- transitions

    def _establish(self, now: float, cause: str) -> None:
        if self.retransmits:
            # RFC 5681 3.1: after a lost SYN or SYN+ACK the initial window is one segment.
            self.cc.cwnd = self.send_mss
            self.rtt.handshake_lost()
        self.retransmits = 0
        self._last_rx = now
        self._set_state(State.ESTABLISHED, cause)
        self._events.append(Established())
        if self._fin_seq is not None:
            self._set_state(State.FIN_WAIT_1, "FIN queued by a close before ESTABLISHED")

    def _enter_time_wait(self, now: float, cause: str) -> None:
        # The stack replaces a TCB in TIME-WAIT with a small record at once
        # (tcpstack.core.timewait), which answers segments and reopens the 4-tuple.
        # No ACK of its own: a FIN that leads here has set _ack_pending already, and
        # the ACK of our FIN in CLOSING is not acknowledged (3.10.7.4, fifth, CLOSING).
        self._set_state(State.TIME_WAIT, cause)
        self._rtx_deadline = None
        self._close_deadline = now + 2 * self.config.msl

    def _reset_by_peer(self) -> None:
        """An acceptable RST (3.10.7.4, second)."""
        if self.state is State.SYN_RCVD:
            self.stats["AttemptFails"] += 1
            if self.passive:
                # The seed's stale SYN: the client refused our SYN+ACK.
                self._finish(None, "RST received in SYN-RECEIVED, back to LISTEN",
                             final=State.LISTEN)
            else:
                self._finish(ConnectionRefusedError("connection refused"),
                             "RST received in SYN-RECEIVED")
            return
        if self.state in (State.ESTABLISHED, State.CLOSE_WAIT):
            self.stats["EstabResets"] += 1
        error = None if self.state in (State.CLOSING, State.LAST_ACK, State.TIME_WAIT) else (
            ConnectionResetError("connection reset by peer"))
        self._finish(error, f"RST received in {self.state}")

    def _finish(self, error: BaseException | None, cause: str,
                final: State = State.CLOSED) -> None:
        """Delete the TCB: stop every timer and tell the application."""
        self._rtx_deadline = self._close_deadline = self._delack_deadline = None
        self._ack_pending = False
        self._set_state(final, cause)
        self._events.append(ConnectionLost(error))

    def _set_state(self, new: State, cause: str) -> None:
        if new is not self.state:
            self._events.append(StateChanged(self.state, new, cause))
            self.state = new

    # ------------------------------------------------------------------ sending

    def _push(self, now: float, *, probe: bool = False) -> None:
        """Send what the peer's window and the congestion window allow, from
        SND.NXT on, then our FIN.

        `probe` sends one octet into a zero window (3.8.6.1) so a lost window
        update cannot deadlock the connection.
        """
        if self.state not in TRANSMITTING:
            return
        recovery = self.recovery
        in_recovery = recovery.recover is not None
        if in_recovery:
            self._retransmit_holes(now)
        # What stays the same through the loop (it runs per ACK, so per two
        # segments of a download): only snd_nxt and snd_max move while it sends.
        sndbuf = self._sndbuf
        buffered = len(sndbuf)
        data_seq = self._data_seq
        bulk = BULK_PUSH and not (in_recovery or probe) and self.snd_nxt == self.snd_max
        if bulk:
            # Nothing new to send (all data sent, and the FIN if one is queued): the
            # loop would find so, after its setup; an ACK of an echo's request is that.
            unsent = buffered - seq_diff(self.snd_nxt, data_seq)
            if unsent < 0 or not (unsent or self._fin_seq is not None):
                return
        # Only the pipe in recovery reads the end of the data (the lost octets end
        # there), so spare the per-push lookups outside it.
        data_end = seq_add(data_seq, buffered) if in_recovery else data_seq
        mss = self.send_mss
        # Not while going back N after a timeout: retransmissions stay one MSS each.
        max_new = self.max_segment
        snd_una = self.snd_una
        right_edge = seq_add(snd_una, self.snd_wnd)  # SND.UNA + SND.WND
        cwnd = self.cc.cwnd
        any_sacked = bool(self._sacked)
        # RFC 6675's pipe reduces to the flight below SND.NXT outside recovery
        # while nothing is SACKed (`Recovery.pipe`); ask it only otherwise.
        full_pipe = in_recovery or any_sacked
        fin_queued = self._fin_seq is not None
        rtt = self.rtt
        if bulk and not any_sacked:
            self._push_full(now, seq_diff(self.snd_nxt, data_seq), buffered, right_edge,
                            cwnd, max_new)
        while True:
            limit = self._skip_sacked() if any_sacked else None
            snd_nxt = self.snd_nxt
            offset = seq_diff(snd_nxt, data_seq)
            at_end = buffered - offset  # octets up to the end of the data
            avail = at_end if limit is None else min(at_end, limit)
            usable = seq_diff(right_edge, snd_nxt)
            if full_pipe:
                pipe = recovery.pipe(snd_una, snd_nxt, self.snd_max, data_end, mss,
                                     self.sack_ok)
            else:
                pipe = seq_diff(snd_nxt, snd_una)
            room = cwnd - pipe
            forced = probe and usable <= 0 < avail
            if forced:
                usable, room, probe = 1, 1, False
            behind = seq_lt(snd_nxt, self.snd_max)  # going back N after a timeout
            n = max(0, min(avail, usable, room, mss if behind else max_new))
            if n > mss:
                n = self._tso_len(n, at_end)
            fin = fin_queued and n == at_end
            if n == 0 and not fin:
                if avail > 0 and usable <= 0 and self._rtx_deadline is None:
                    self._rtx_deadline = now + rtt.rto  # persist timer (3.8.6.1)
                return
            if (n < mss and not forced and not fin and not behind
                    and self._hold_short(n, at_end)):
                return
            flags = ACK | (FIN if fin else 0) | (PSH if n and n == at_end else 0)
            seq = snd_nxt
            if forced:
                self.stats["ZeroWindowProbes"] += 1  # not a retransmission (Linux TCPWinProbe)
            elif behind:
                self.stats["RetransSegs"] += 1
                self.total_retransmits += 1
            tso = n > mss  # the kernel cuts it into MSS pieces
            self._emit(flags, seq=seq, payload=sndbuf.peek(offset, n),
                       gso_size=mss if tso else 0)
            snd_nxt = self.snd_nxt = seq_add(seq, n + fin)
            if n < mss or n % mss:
                self._snd_sml = snd_nxt
            if seq_lt(self.snd_max, snd_nxt):
                self.snd_max = snd_nxt
                if rtt.probe is None and self.retransmits == 0:
                    # Time the first piece, as the one-MSS loop would have.
                    rtt.time_segment(seq_add(seq, mss) if tso else snd_nxt, now)
            if self._rtx_deadline is None:
                self._rtx_deadline = now + rtt.rto
            if fin:
                return

    def _push_full(self, now: float, offset: int, buffered: int, right_edge: int,
                   cwnd: int, max_new: int) -> None:
        """The bulk of `_push` outside recovery, in one go: the pieces of
        `max_new` octets (one MSS, or a full super-segment) that window and cwnd
        allow and that end short of the end of the data. For those, every test of
        the loop in `_push` has the same answer (none is short, so Nagle and SWS
        avoidance let them go; none ends the data, so no PSH and no FIN), and the
        header of each is the same but its sequence number: it is made once
        (`_header`), and the loop in `_push` goes on with the rest. Same
        segments, same order as that loop (tests/unit/test_tcb_fastpath.py,
        `BULK_PUSH`), for less (docs/benchmarks.md "The bulk push")."""
        snd_nxt = self.snd_nxt
        at_end = buffered - offset
        total = min(at_end - 1, seq_diff(right_edge, snd_nxt),
                    cwnd - seq_diff(snd_nxt, self.snd_una))
        count = total // max_new if total > 0 else 0
        if not count:
            return
        mss = self.send_mss
        gso_size = mss if max_new > mss else 0
        window, options = self._header(ACK, None, False)
        out, peek, rtt = self._out, self._sndbuf.peek, self.rtt
        local_ip, remote_ip = self.local_ip, self.remote_ip
        sport, dport, rcv_nxt = self.local_port, self.remote_port, self.rcv_nxt
        for _ in range(count):
            out.append(Segment(local_ip, remote_ip, sport, dport, snd_nxt, rcv_nxt, ACK, window,
                               options, peek(offset, max_new), gso_size))
            if rtt.probe is None and self.retransmits == 0:
                rtt.time_segment(seq_add(snd_nxt, mss), now)  # the first piece, as `_push`
            offset += max_new
            snd_nxt = seq_add(snd_nxt, max_new)
        self.snd_nxt = self.snd_max = snd_nxt
        if self._rtx_deadline is None:
            self._rtx_deadline = now + rtt.rto

    @property
    def max_segment(self) -> int:
        """The longest new segment: one MSS, or with TSO (`TcpConfig.offload`)
        as many whole MSS as one IPv4 packet holds."""
        mss = self.send_mss
        return max(mss, TSO_MAX // mss * mss) if self.config.offload else mss

    def _tso_len(self, n: int, at_end: int) -> int:
        """The length of a super-segment that stands for exactly the segments the
        one-MSS loop would send now: whole MSS pieces, and a short last piece
        only where that loop would send it at once, i.e. it ends the data and
        Nagle lets it go (or our FIN follows it). A sliver cut short by the
        window or cwnd waits, since the full pieces are then in flight (3.8.6.2.1)."""
        short = n % self.send_mss
        if short and not (n == at_end and (self._fin_seq is not None
                                           or not self._hold_short(short, short))):
            return n - short
        return n

    def _hold_short(self, n: int, at_end: int) -> bool:
        """Whether new data shorter than the MSS must wait.

        A sliver cut short by the window or cwnd waits while data is in flight
        (sender SWS avoidance, 3.8.6.2.1; Linux tcp_mss_split_point). The tail of
        the data waits only while an earlier short segment is unacknowledged:
        Nagle (3.7.4) in Minshall's form, as Linux; classic Nagle stalls 40 ms
        against a delayed ACK on every write that ends in a short segment.
        """
        if n < at_end:
            return seq_lt(self.snd_una, self.snd_nxt)
        return not self.nodelay and seq_lt(self.snd_una, self._snd_sml)

    def _skip_sacked(self) -> int | None:
        """Going back N after a timeout, jump over what the peer SACKed (Linux keeps
        SACK marks across an RTO) and return how far the next run may go."""
        if not (self._sacked and seq_lt(self.snd_nxt, self.snd_max)):
            return None
        hole = next(self._sacked.holes(self.snd_nxt, self.snd_max), None)
        if hole is None:
            self.snd_nxt = self.snd_max
            return None
        self.snd_nxt = hole[0]
        return seq_diff(hole[1], hole[0])

    # -------------------------------------------------------------- loss recovery

    def _on_dupack(self, now: float) -> None:
        """A duplicate ACK: in recovery it clocks out more data; otherwise it may
        start fast retransmit (`Recovery.on_dupack`, RFC 5681 3.2, RFC 6675 5)."""
        recovery = self.recovery
        in_recovery = recovery.recover is not None
        if not recovery.on_dupack(self.snd_una, self.snd_max, self.send_mss, self.sack_ok):
            if in_recovery:
                self._push(now)
            return
        self.stats["FastRetransmits"] += 1
        self.cc.on_loss(seq_diff(self.snd_max, self.snd_una), now)
        self.rtt.retransmitted()  # Karn
        self._retransmit_holes(now, force=True)
        self._push(now)

    def _retransmit_holes(self, now: float, *, force: bool = False) -> None:
        """Retransmit what `Recovery.next_segments` presumes lost, as the congestion
        window allows; `force` sends the first one regardless."""
        data_seq = self._data_seq
        for start, n in self.recovery.next_segments(
                self.snd_una, self.snd_nxt, self.snd_max, seq_add(data_seq, len(self._sndbuf)),
                self.send_mss, self.sack_ok, self.cc.cwnd, force=force):
            self.stats["RetransSegs"] += 1
            self.total_retransmits += 1
            self._emit(ACK, seq=start, payload=self._sndbuf.peek(seq_diff(start, data_seq), n))
        if self._rtx_deadline is None:
            self._rtx_deadline = now + self.rtt.rto

    def _emit(self, flags: int, *, seq: int | None = None, payload: Payload = b"",
              options: Options | None = None, gso_size: int = 0) -> None:
        """Queue one segment from this connection. ACK-bearing ones carry RCV.NXT,
        our window (scaled, RFC 7323 2.3) and, on pure ACKs, SACK blocks; they
        settle any pending or delayed ACK. `options` are a SYN's; the rest get a
        new Options only when they carry one (TSopt, SACK), else the shared empty one."""
        field, options = self._header(flags, options, not payload)
        rcv_nxt = self.rcv_nxt
        self._out.append(Segment(
            src=self.local_ip, dst=self.remote_ip, sport=self.local_port, dport=self.remote_port,
            # <SEQ=SND.NXT> (3.10.7.4) is snd_max: while go-back-N has pulled snd_nxt
            # back, an ACK at snd_nxt would lie below the peer's RCV.NXT and be
            # dropped unread as unacceptable, losing its acknowledgment.
            seq=self._ack_seq() if seq is None else seq,
            ack=rcv_nxt if flags & ACK else 0,
            flags=flags, window=field, options=options, payload=payload,
            gso_size=gso_size,
        ))

    def _header(self, flags: int, options: Options | None, pure: bool) -> tuple[int, Options]:
        """The window field and the options of a segment with `flags` (`options`
        if given: a SYN's), and for one with ACK the bookkeeping of an ACK sent
        (`_acked_now`). A `pure` ACK (no data) carries our SACK blocks."""
        if flags & SYN:
            field = advertised = min(self.rcv_wnd, MAX_WINDOW)  # never scaled in a SYN (7323 2.2)
        else:
            shift = self.rcv_wscale  # rounded up: the window must not shrink
            field = min((self.rcv_wnd + (1 << shift) - 1) >> shift, MAX_WINDOW)
            advertised = field << shift
        sack_blocks: Sequence[tuple[int, int]] = ()
        if flags & ACK:
            self._acked_now(advertised)
            dsack, self._dsack = self._dsack, None  # sent once, as Linux
            if options is None and pure and self.sack_ok and (self._reasm or dsack):
                sack_blocks = self._reasm.sack_blocks() if self._reasm else []
                if dsack is not None:
                    # RFC 2883 4: the D-SACK first; 40 option octets hold 3 blocks
                    # beside a timestamp option, 4 without (RFC 2018 3).
                    sack_blocks = [dsack, *sack_blocks][:3 if self.ts_ok else 4]
        if options is not None:
            return field, options
        if self.ts_ok and not flags & (SYN | RST):
            # RFC 7323 3.2: once negotiated, every segment but an RST carries TSopt.
            return field, Options(timestamp=(self._ts_val(), self.ts_recent),
                                  sack_blocks=sack_blocks)
        return field, Options(sack_blocks=sack_blocks) if sack_blocks else EMPTY_OPTIONS

    def _acked_now(self, advertised: int) -> None:
        """An ACK of RCV.NXT with window `advertised` leaves: it settles any
        pending or delayed ACK and moves the advertised right edge."""
        rcv_nxt = self.rcv_nxt
        self._ack_pending = False
        self._delack_deadline = None
        self._delayed_segs = 0
        self._rcv_adv = seq_add(rcv_nxt, advertised)
        self._last_ack_sent = rcv_nxt

    def _ts_val(self) -> int:
        """TSval: a 1 ms clock (RFC 7323 5.4) offset by the ISS, so it reveals
        nothing about the host's uptime and differs per connection (as Linux)."""
        return (int(self._now * 1000) + self.iss) & 0xFFFFFFFF

    def _ack_seq(self) -> int:
        """SEQ of a segment without data: SND.NXT, but never beyond the peer's
        window (Linux tcp_acceptable_seq): after a zero-window probe an ACK at
        snd_max would be unacceptable to a receiver whose window is closed."""
        edge = seq_add(self.snd_una, self.snd_wnd)
        if self._syn_acked and seq_lt(edge, self.snd_max):
            return edge
        return self.snd_max

    def _send_rst(self, seq: int, *, with_ack: bool) -> None:
        self._emit(RST | ACK if with_ack else RST, seq=seq)

    def _reply_reset(self, seg: Segment) -> None:
        rst = reset_for(seg)
        if rst is not None:
            self._out.append(rst)

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 3.2/4.2/5.2: answer a suspicious RST, SYN or ACK with an ACK,
        throttled (RFC 5961 7) twice like Linux: at most one per
        `challenge_ack_interval` on this connection (tcp_invalid_ratelimit), and
        within the stack-wide budget per second (tcp_challenge_ack_limit)."""
        limiter = self._challenge_limiter
        if self._oow_limited(now, "ChallengeAcksSuppressed"):
            return
        if limiter is not None and not limiter.allow(now):
            self.stats["ChallengeAcksSuppressed"] += 1
            return
        self.stats["ChallengeAcks"] += 1
        self._emit(ACK)

    def _answer_unacceptable(self, seg: Segment, now: float, check: str) -> None:
        """The ACK owed to a segment dropped by the sequence test (3.10.7.4, first;
        `check` "Seq") or by PAWS (RFC 7323 5.3 R1; "PAWS").

        Forged segments cost a blind attacker nothing, so answering each one would
        make us an amplifier. Like Linux (tcp_oow_rate_limited), a segment with
        neither text nor FIN, or with SYN, is answered at most once per
        `challenge_ack_interval` on this connection, sharing the interval with the
        challenge ACKs; the ones held back are counted under Linux's names, by
        where Linux would have dropped them (its request, TIME-WAIT and orphaned
        FIN-WAIT-2 mini-sockets, else the sequence or PAWS check). Text and FIN are
        always answered: the sender's loss recovery, and a peer that retransmits its
        FIN to our TIME-WAIT, need the ACK. A SYN in a synchronized state draws a
        challenge ACK wherever it lies (RFC 5961 4.2; Linux syn_challenge), except
        where Linux answers from a mini-socket.
        """
        flags = seg.flags
        if self.state is State.SYN_RCVD and self.passive:
            kind = "SynRecv"
        elif self.state is State.TIME_WAIT:
            kind = "TimeWait"
        elif self.state is State.FIN_WAIT_2 and self._orphaned:
            kind = "FinWait2"
        elif flags & SYN:
            self._challenge_ack(now)
            return
        else:
            kind = check
        if (flags & SYN or not (seg.payload or flags & FIN)) and self._oow_limited(
                now, f"TCPACKSkipped{kind}"):
            return
        if seg.seg_len and seq_lt(seg.seq, self.rcv_nxt):
            # Text or FIN received before (Linux tcp_send_dupack): say so.
            end = seq_add(seg.seq, seg.seg_len)
            self._duplicate(seg.seq, end if seq_lt(end, self.rcv_nxt) else self.rcv_nxt,
                            "TCPDSACKOldSent")
        self._emit(ACK)

    def _duplicate(self, start: int, end: int, counter: str) -> None:
        """RFC 2883 4: octets [start, end) arrived again, below RCV.NXT or over
        data held out of order (`counter` says which, by Linux's names): with
        SACK the next ACK names them in its first block (a D-SACK, as Linux's
        tcp_dsack_set), which tells the sender its retransmission was spurious
        (Linux then undoes the window reduction it made for a loss)."""
        if self.sack_ok:
            self._dsack = (start, end)
            self.stats[counter] += 1

    def _oow_limited(self, now: float, counter: str) -> bool:
        """Whether this connection sent an ACK that a blind sender can draw less than
        `challenge_ack_interval` ago (Linux __tcp_oow_rate_limited with
        tcp_invalid_ratelimit): if so, count `counter` and send nothing; if not,
        note the time, as the caller sends one now."""
        if now - self._last_oow_ack < self.config.challenge_ack_interval:
            self.stats[counter] += 1
            return True
        self._last_oow_ack = now
        return False


def wscale_for(buffer: int) -> int:
    """The smallest shift that lets the 16-bit window field cover `buffer` (RFC 7323 2.2)."""
    return min(max(0, (buffer - 1).bit_length() - 16), MAX_WSCALE)
