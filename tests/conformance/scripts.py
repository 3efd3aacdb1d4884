"""Named scripts: the handshakes, option negotiation, MSS, timers and the active open.

Each script states what goes on the wire as facts (``expected``); the
notation is the matrix's (`harness.Frame`): after a passive handshake S is
y+1 and R is x+1. Timer facts are written as offsets from the first
transmission, rounded to the second when within 0.3 s of it (``+1s +3s``),
so scheduling jitter does not matter but a wrong backoff does.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable

import dpkt

from tests.conformance.apps import CLOSER, ECHO, HOLD
from tests.conformance.harness import (
    ACK,
    FIN,
    OPT_NOP,
    OPT_SACK,
    OPT_SACK_PERM,
    OPT_TS,
    PSH,
    RST,
    SYN,
    Frame,
    Peer,
    ScriptError,
    Seg,
    all_options,
    mss_option,
    options_text,
    rel,
    seq_add,
    seq_diff,
)
from tests.conformance.matrix import (
    ANSWER_TIMEOUT,
    DATA,
    MSS,
    SETTLE,
    handshake,
    probe,
    reach,
)
from tests.conformance.runner import Env, Facts, Script
from tests.conformance.targets import SYN_RETRIES, SYNACK_RETRIES

#: Both targets back off 1 s, 2 s, 4 s... from an initial RTO of 1 s.
HANDSHAKE_GIVE_UP = sum(2.0**i for i in range(SYNACK_RETRIES + 1))  # 7 s for 2 retries
TIMER_SLACK = 0.6
JITTER = 0.3
ACK_S_R = "ACK seq=S ack=R"


def timeline(times: list[float], t0: float) -> str:
    """``+1s +3s``: offsets from ``t0``, in whole seconds when within JITTER of one."""
    parts = []
    for t in times:
        d = t - t0
        parts.append(f"+{round(d)}s" if abs(d - round(d)) <= JITTER else f"+{d:.2f}s")
    return " ".join(parts) or "-"


def _after_handshake(peer: Peer) -> Frame:
    assert peer.y is not None
    return Frame(seq_add(peer.y, 1), seq_add(peer.x, 1), peer.y)


async def _read_echo(peer: Peer, frame: Frame, total: int) -> tuple[list[int], str]:
    """Acknowledge the target's data until ``total`` octets arrived, like a real
    receiver (a Nagle sender waits for our ACK before its last small segment).
    Returns the payload sizes and the first data segment as text."""
    sizes: list[int] = []
    first = ""
    got = 0
    while got < total:
        seg = await peer.next(ANSWER_TIMEOUT)
        if seg is None:
            raise ScriptError(f"echo stopped after {got} of {total} octets ({sizes})")
        if seg.payload:
            sizes.append(len(seg.payload))
            got += len(seg.payload)
            first = first or frame.render(seg)
            peer.send(ACK, ack=seg.end)
    return sizes, first


async def passive_open(env: Env) -> Facts:
    """SYN with MSS -> SYN+ACK with ISS, x+1 and our MSS; ACK; data is echoed."""
    peer = env.peer(ECHO)
    synack = await handshake(peer)
    frame = _after_handshake(peer)
    facts = {"synack": f"{Frame(peer.x, peer.x, peer.y).render(synack)} "
                       f"<{options_text(synack.opts)}>"}
    peer.send(ACK)
    peer.send(ACK | PSH, payload=b"hello\n")
    _, first = await _read_echo(peer, frame, 6)
    facts["echo"] = first
    return facts


def _option_script(opts: bytes) -> Callable[[Env], Awaitable[Facts]]:
    async def run(env: Env) -> Facts:
        peer = env.peer(ECHO)
        peer.send(SYN, opts=opts)
        synack = await peer.expect(SYN | ACK, ANSWER_TIMEOUT, what="for our SYN")
        return {"synack": options_text(synack.opts)}
    return run


def _mss_script(opts: bytes, total: int) -> Callable[[Env], Awaitable[Facts]]:
    """The peer's MSS (or 536 without the option) caps the target's segments.

    ``total`` octets go in one segment (within the target's MSS of 1460), so
    the echo app reads and writes them at once on both targets and only the
    MSS decides how they are cut.
    """
    async def run(env: Env) -> Facts:
        peer = env.peer(ECHO)
        peer.send(SYN, opts=opts)
        synack = await peer.expect(SYN | ACK, ANSWER_TIMEOUT, what="for our SYN")
        peer.send(ACK)
        peer.send(ACK | PSH, payload=(bytes(range(256)) * (total // 256 + 1))[:total])
        sizes, _ = await _read_echo(peer, _after_handshake(peer), total)
        return {"synack": options_text(synack.opts), "segments": ",".join(map(str, sizes))}
    return run


async def synack_timeout(env: Env) -> Facts:
    """The third segment never comes: SYN+ACK again after 1 s and 3 s, then the
    half-open connection is given up at 7 s (2 retries on both targets)."""
    peer = env.peer(ECHO)
    synack = await handshake(peer)
    frame = _after_handshake(peer)
    end: list[Seg] = []
    deadline = synack.t + HANDSHAKE_GIVE_UP + TIMER_SLACK
    while (remaining := deadline - peer.now()) > 0:
        seg = await peer.next(remaining)
        if seg is None:
            break
        end.append(seg)
    times = [s.t for s in peer.rtx if s.flags & SYN]
    facts = {"synacks": timeline(times, synack.t),
             "end": " ".join(f"{frame.render(s)} at {timeline([s.t], synack.t)}" for s in end)
                    or "-"}
    peer.send(ACK, seq=peer.x, ack=frame.snd_nxt, advance=False)
    answer = await peer.next(ANSWER_TIMEOUT)
    facts["after"] = frame.render(answer) if answer else "no answer"
    return facts


async def syn_with_data(env: Env) -> Facts:
    """Data on a SYN (no TCP Fast Open cookie): not acknowledged by the SYN+ACK,
    and never delivered, so the peer must send it again after the handshake."""
    peer = env.peer(ECHO)
    peer.send(SYN, opts=mss_option(MSS), payload=b"early")
    synack = await peer.expect(SYN | ACK, ANSWER_TIMEOUT, what="for our SYN with data")
    facts = {"synack": Frame(peer.x, peer.x, peer.y).render(synack)}
    peer.snd_nxt = seq_add(peer.x, 1)  # the data was not acknowledged: it is not sent
    peer.send(ACK)
    facts["then"] = _after_handshake(peer).render_all(await peer.collect(SETTLE))
    return facts


async def third_segment_data(env: Env) -> Facts:
    """The ACK that completes the handshake carries data: accepted and echoed."""
    peer = env.peer(ECHO)
    await handshake(peer)
    frame = _after_handshake(peer)
    peer.send(ACK | PSH, payload=b"abcd")
    _, first = await _read_echo(peer, frame, 4)
    return {"echo": first}


def _sack_blocks(opts: bytes, frame: Frame) -> str:
    """The SACK blocks of a segment's options, relative to R; "-" for none."""
    blocks = []
    for kind, value in dpkt.tcp.parse_opts(opts):
        if kind == OPT_SACK:
            for i in range(0, len(value) - 7, 8):
                left, right = struct.unpack_from(">II", value, i)
                blocks.append(f"{rel(left, frame.rcv_nxt, 'R')}..{rel(right, frame.rcv_nxt, 'R')}")
    return " ".join(blocks) or "-"


def _duplicate_data(offset: int, again: bytes, *,
                    first_at: int = 0) -> Callable[[Env], Awaitable[Facts]]:
    """Data that arrives a second time (the peer's spurious retransmission):
    `again` sent at R+`offset` after 4 octets at R+`first_at` were answered
    (acknowledged, or SACKed beyond a hole). On a connection with SACK the ACK
    names the repeated octets in its first SACK block, a D-SACK (RFC 2883): how
    the sender learns that it retransmitted for nothing. No timestamps, so that
    the repeat is no PAWS case; the app holds what it gets (no echo)."""
    async def run(env: Env) -> Facts:
        peer = env.peer(HOLD)
        peer.send(SYN, opts=mss_option(MSS) + bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERM, 2)))
        await peer.expect(SYN | ACK, ANSWER_TIMEOUT, what="for our SYN")
        peer.send(ACK)
        frame = _after_handshake(peer)
        peer.send(ACK | PSH, seq=seq_add(peer.snd_nxt, first_at), payload=b"abcd",
                  advance=not first_at)
        ack = await peer.expect(ACK, ANSWER_TIMEOUT, what="for the data")
        peer.send(ACK | PSH, seq=seq_add(frame.rcv_nxt, offset), payload=again, advance=False)
        dup = await peer.expect(ACK, ANSWER_TIMEOUT, what="for the repeat")
        return {"ack": f"{frame.render(ack)} sack {_sack_blocks(ack.opts, frame)}",
                "dup": f"{frame.render(dup)} sack {_sack_blocks(dup.opts, frame)}"}
    return run


async def close_with_unread_data(env: Env) -> Facts:
    """The server closes while data it never read is queued: RFC 1122 4.2.2.13
    says the peer learns of the loss by an RST rather than an orderly FIN."""
    peer = env.peer(CLOSER)
    await handshake(peer)
    frame = _after_handshake(peer)
    peer.send(ACK | PSH, payload=b"abcd")  # arrives with the handshake's last segment
    return {"reply": frame.render_all(await peer.collect(SETTLE))}


# -- blind injection: the ACK field (RFC 5961 5) -----------------------------------

#: How far behind SND.UNA an attacker's guessed ACK lies (issue 8 saw 2^24..2^31).
ANCIENT = 1 << 24


async def _echoed(peer: Peer) -> str:
    """The text of the next data segment the target sends, acknowledged."""
    while (seg := await peer.next(ANSWER_TIMEOUT)) is not None:
        if seg.payload:
            peer.send(ACK, ack=seg.end)
            return seg.payload.decode(errors="replace")
    raise ScriptError("nothing was echoed")


def _injection(flags: int, ack_offset: int) -> Callable[[Env], Awaitable[Facts]]:
    """After "ping" was echoed and acknowledged (4 octets), a segment at RCV.NXT
    whose ACK is SND.UNA + ``ack_offset``: ``reply`` is the target's answer, and
    ``echo`` all the text it echoes, up to that of "good", sent next after what
    the target took. An acceptable ACK lets the stimulus' text "evil" (or its FIN)
    in; an unacceptable one (RFC 5961 5.2) draws only a challenge ACK."""
    async def run(env: Env) -> Facts:
        peer = env.peer(ECHO)
        await handshake(peer)
        peer.send(ACK)
        peer.send(ACK | PSH, payload=b"ping")
        if await _echoed(peer) != "ping":
            raise ScriptError("ping was not echoed")
        assert peer.high is not None
        frame = Frame(peer.high, peer.snd_nxt, peer.y)
        peer.send(flags, ack=seq_add(peer.high, ack_offset),
                  payload=b"" if flags & FIN else b"evil", advance=False)
        segs = await peer.collect(SETTLE)
        taken = max((seq_diff(s.ack, peer.snd_nxt) for s in segs if s.flags & ACK), default=0)
        peer.snd_nxt = seq_add(peer.snd_nxt, taken)
        peer.send(ACK | PSH, payload=b"good")
        echoed = b"".join(s.payload for s in segs).decode(errors="replace")
        return {"reply": frame.render_all(segs), "echo": echoed + await _echoed(peer)}
    return run


# -- PAWS and the rate limit on answers to unacceptable segments --------------------

#: Our TSval in the SYN; the ACK that completes the handshake carries TS0+1, which
#: becomes the target's TS.Recent. Stimuli count back from it.
TS0 = 1_000_000
#: Older than any replay window (Linux: RTO in 1200 Hz ticks, a few hundred).
TS_ANCIENT = 100_000


def ts_option(tsval: int, tsecr: int) -> bytes:
    """NOP, NOP, Timestamps (RFC 7323 3.2)."""
    return struct.pack(">BBBBII", OPT_NOP, OPT_NOP, OPT_TS, 10, tsval, tsecr)


def _tsval(seg: Seg) -> int:
    """The target's TSval, for our TSecr."""
    for kind, value in dpkt.tcp.parse_opts(seg.opts):
        if kind == OPT_TS:
            return int(struct.unpack(">II", value)[0])
    raise ScriptError(f"no timestamp option in {seg.flags:#x} from the target")


def _counted(frame: Frame, segs: list[Seg]) -> str:
    """``1: ACK seq=S ack=R``: how many segments came (normalizing would fold repeated
    ACKs into one), then what they said."""
    return f"{len(segs)}: {frame.render_all(segs)}"


async def _ts_established(env: Env, port: int = HOLD) -> tuple[Peer, Frame, int]:
    """Handshake offering MSS and timestamps (so both targets use them) to an app
    that neither reads nor writes; returns the target's TSval to echo."""
    peer = env.peer(port)
    peer.send(SYN, opts=mss_option(MSS) + ts_option(TS0, 0))
    synack = await peer.expect(SYN | ACK, ANSWER_TIMEOUT, what="for our SYN")
    echo = _tsval(synack)
    peer.send(ACK, opts=ts_option(TS0 + 1, echo))
    return peer, _after_handshake(peer), echo


def _paws_ack(age: int) -> Callable[[Env], Awaitable[Facts]]:
    """A duplicate ACK at RCV.NXT (same ACK, same window) whose TSval is ``age``
    ticks older than TS.Recent: a disordered ACK when within the replay window."""
    async def run(env: Env) -> Facts:
        peer, frame, echo = await _ts_established(env)
        peer.send(ACK, opts=ts_option(TS0 + 1 - age, echo), advance=False)
        return {"reply": frame.render_all(await peer.collect(SETTLE))}
    return run


async def paws_old_ack_left(env: Env) -> Facts:
    """After 4 octets of data (TSval TS0+10), a pure ACK left of RCV.NXT with the
    older TSval of the handshake's ACK: Linux 6.14+ drops it without an answer.
    (Linux's PAWS lets a TSval one tick old pass, TCP_PAWS_WINDOW: hence 9.)"""
    peer, frame, echo = await _ts_established(env)
    old = peer.snd_nxt
    peer.send(ACK | PSH, payload=DATA, opts=ts_option(TS0 + 10, echo))
    ack = await peer.expect(ACK, ANSWER_TIMEOUT, what="for our data")
    peer.send(ACK, seq=old, opts=ts_option(TS0 + 1, _tsval(ack)), advance=False)
    frame = Frame(frame.snd_nxt, peer.snd_nxt, peer.y)
    return {"reply": frame.render_all(await peer.collect(SETTLE))}


async def paws_burst(env: Env) -> Facts:
    """Three old pure ACKs back to back, then one more after the 0.5 s interval:
    one ACK each time (Linux tcp_oow_rate_limited, TCPACKSkippedPAWS)."""
    peer, frame, echo = await _ts_established(env)
    return await _burst(peer, frame, 3, lambda: peer.send(
        ACK, opts=ts_option(TS0 + 1 - TS_ANCIENT, echo), advance=False))


def _oow_burst(stimulus: Callable[[Peer, Frame], None], n: int
               ) -> Callable[[Env], Awaitable[Facts]]:
    """``n`` copies of an unacceptable segment back to back on a connection without
    timestamps, then one more after the interval."""
    async def run(env: Env) -> Facts:
        peer = env.peer(HOLD)
        await handshake(peer)
        peer.send(ACK)
        frame = _after_handshake(peer)
        return await _burst(peer, frame, n, lambda: stimulus(peer, frame))
    return run


async def _burst(peer: Peer, frame: Frame, n: int, send: Callable[[], None]) -> Facts:
    for _ in range(n):
        send()
    burst = _counted(frame, await peer.collect(SETTLE))  # SETTLE > the 0.5 s interval
    send()
    return {"burst": burst, "later": _counted(frame, await peer.collect(SETTLE))}


def _old_ack(peer: Peer, frame: Frame) -> None:
    peer.send(ACK, seq=seq_add(frame.rcv_nxt, -1), advance=False)


def _old_data(peer: Peer, frame: Frame) -> None:
    peer.send(ACK | PSH, seq=seq_add(frame.rcv_nxt, -2 * len(DATA)), payload=DATA,
              advance=False)


def _challenge_then_old_ack(peer: Peer, frame: Frame) -> None:
    peer.send(RST, seq=seq_add(frame.rcv_nxt, 1), advance=False)  # in the window: challenge ACK
    _old_ack(peer, frame)


# -- active open ------------------------------------------------------------------


#: The target's client is a freshly started process (`tcpstack connect` brings up
#: its own TUN first), which takes seconds on a loaded 2-core machine; the wait is
#: for it to start, not a protocol timer, so it is longer than ANSWER_TIMEOUT.
CLIENT_START_TIMEOUT = 20.0


async def _their_syn(peer: Peer) -> Seg:
    syn = await peer.expect(SYN, CLIENT_START_TIMEOUT, what="from the target's connect")
    peer.target_port = syn.sport
    return syn


def _active_frame(peer: Peer) -> Frame:
    """After the target's SYN a and our SYN b: S = a+1, R = b+1."""
    assert peer.y is not None
    return Frame(seq_add(peer.y, 1), seq_add(peer.x, 1), peer.y)


async def active_open(env: Env) -> Facts:
    """CLOSED -> SYN-SENT -> ESTABLISHED; data; the peer closes, so does the client."""
    peer, client = env.active()
    syn = await _their_syn(peer)
    facts = {"syn": f"{Frame(syn.seq, 0, syn.seq).render(syn)} <{options_text(syn.opts)}>"}
    peer.send(SYN | ACK, ack=seq_add(syn.seq, 1), opts=mss_option(MSS))
    frame = _active_frame(peer)
    facts["ack"] = frame.render_all(await peer.collect(SETTLE))
    peer.send(ACK | PSH, payload=b"ping\n")
    await _read_ack(peer, seq_add(frame.rcv_nxt, 5))
    peer.send(FIN | ACK)
    fin = await peer.expect(FIN | ACK, ANSWER_TIMEOUT, what="from the client after our FIN",
                            skip_pure_acks=True)
    facts["close"] = frame.render(fin)
    peer.send(ACK, ack=fin.end)
    facts["client"] = await client.outcome(ANSWER_TIMEOUT)
    facts["stdout"] = client.stdout.text()
    return facts


async def _read_ack(peer: Peer, ack: int) -> None:
    while True:
        seg = await peer.next(ANSWER_TIMEOUT)
        if seg is None:
            raise ScriptError("our data was never acknowledged")
        if seg.flags & ACK and seg.ack == ack:
            return


async def active_refused(env: Env) -> Facts:
    """RST+ACK for the SYN: the connection is refused, nothing more is sent."""
    peer, client = env.active()
    syn = await _their_syn(peer)
    peer.send(RST | ACK, seq=0, ack=seq_add(syn.seq, 1), advance=False)
    reply = _active_frame_for(peer, syn).render_all(await peer.collect(SETTLE))
    return {"reply": reply, "client": await client.outcome(ANSWER_TIMEOUT)}


def _active_frame_for(peer: Peer, syn: Seg) -> Frame:
    return Frame(seq_add(syn.seq, 1), peer.x, syn.seq)


async def active_bad_synack(env: Env) -> Facts:
    """A SYN+ACK that acknowledges something never sent: <SEQ=SEG.ACK><CTL=RST>,
    and the connection attempt goes on (here: refused afterwards)."""
    peer, client = env.active()
    syn = await _their_syn(peer)
    peer.send(SYN | ACK, ack=seq_add(syn.seq, 1000), opts=mss_option(MSS), advance=False)
    reply = _active_frame_for(peer, syn).render_all(await peer.collect(SETTLE))
    peer.send(RST | ACK, seq=0, ack=seq_add(syn.seq, 1), advance=False)
    return {"reply": reply, "client": await client.outcome(ANSWER_TIMEOUT)}


async def active_syn_timeout(env: Env) -> Facts:
    """Nobody answers: SYN again after 1 s and 3 s, give up at 7 s without a word."""
    peer, client = env.active()
    syn = await _their_syn(peer)
    give_up = sum(2.0**i for i in range(SYN_RETRIES + 1))
    end: list[Seg] = []
    deadline = syn.t + give_up + TIMER_SLACK
    while (remaining := deadline - peer.now()) > 0:
        seg = await peer.next(remaining)
        if seg is None:
            break
        end.append(seg)
    frame = _active_frame_for(peer, syn)
    return {"syns": timeline([s.t for s in peer.rtx], syn.t),
            "end": " ".join(frame.render(s) for s in end) or "-",
            "client": await client.outcome(ANSWER_TIMEOUT)}


async def active_simultaneous(env: Env) -> Facts:
    """A SYN without ACK crosses the target's SYN (simultaneous open, or the
    textbook chapter's split SYN+ACK): SYN-SENT -> SYN-RECEIVED, SYN+ACK with the same ISS."""
    return await _crossing_syns(env)


async def active_split_synack(env: Env) -> Facts:
    """The peer answers the SYN with the textbook chapter's four-segment handshake: a bare ACK
    of it, which SYN-SENT drops (RFC 9293 3.10.7.3, fifth: no SYN, no RST), then a
    SYN alone, which the target takes as a simultaneous open."""
    return await _crossing_syns(env, bare_ack_first=True)


async def active_simultaneous_synack(env: Env) -> Facts:
    """RFC 9293 3.5 figure 8 in full: the SYN+ACKs cross too. The peer's SYN+ACK
    repeats its SYN (seq = IRS) and acknowledges the target's: ESTABLISHED."""
    return await _crossing_syns(env, synack_back=True)


async def _crossing_syns(env: Env, *, bare_ack_first: bool = False,
                         synack_back: bool = False) -> Facts:
    """The target's SYN meets ours (optionally after a bare ACK of it); its SYN+ACK
    is answered with an ACK, or with our own SYN+ACK (`synack_back`); then data
    and an orderly close."""
    peer, client = env.active()
    syn = await _their_syn(peer)
    facts = {}
    if bare_ack_first:
        peer.send(ACK, ack=seq_add(syn.seq, 1), advance=False)
        facts["ack"] = _active_frame_for(peer, syn).render_all(await peer.collect(SETTLE))
    peer.send(SYN, opts=mss_option(MSS))
    frame = _active_frame(peer)
    synack = await peer.expect(SYN | ACK, ANSWER_TIMEOUT, what="after crossing SYNs")
    facts["synack"] = frame.render(synack)
    if synack_back:
        peer.send(SYN | ACK, seq=peer.x, ack=seq_add(syn.seq, 1), opts=mss_option(MSS),
                  advance=False)
        facts["reply"] = frame.render_all(await peer.collect(SETTLE))
    else:
        peer.send(ACK, ack=seq_add(syn.seq, 1))
    peer.send(ACK | PSH, payload=b"x")
    await _read_ack(peer, seq_add(frame.rcv_nxt, 1))
    peer.send(FIN | ACK)
    fin = await peer.expect(FIN | ACK, ANSWER_TIMEOUT, what="from the client after our FIN",
                            skip_pure_acks=True)
    peer.send(ACK, ack=fin.end)
    facts["client"] = await client.outcome(ANSWER_TIMEOUT)
    return facts


async def time_wait_reopen(env: Env) -> Facts:
    """TIME-WAIT (the target closed first), then a SYN beyond RCV.NXT reopens the
    4-tuple: the new ISN relative to the old SND.NXT. The peer then refuses the
    SYN+ACK with RST (the SYN was an old duplicate): is TIME-WAIT back?"""
    conn = await reach(env, "TIME-WAIT")
    peer = conn.peer
    syn_seq = seq_add(conn.rcv_nxt, 100_000)
    peer.send(SYN, seq=syn_seq, opts=mss_option(MSS), advance=False)
    synack = await peer.expect(SYN | ACK, ANSWER_TIMEOUT, what="for the reopening SYN")
    peer.send(RST, seq=seq_add(syn_seq, 1), advance=False)
    reply = conn.frame(syn_seq).render_all(await peer.collect(SETTLE))
    return {"iss": rel(synack.seq, conn.snd_nxt, "S"), "reply": reply,
            "after": await probe(conn, syn_seq)}


SCRIPTS = [
    Script("handshake/passive", passive_open,
           {"synack": "SYN|ACK seq=ISS ack=R+1 <mss=1460>",
            "echo": "ACK seq=S ack=R+6 len=6"},
           "RFC 9293 3.5, 3.10.7.2: the three-segment handshake, then data"),
    Script("handshake/options-mss-only", _option_script(mss_option(MSS)),
           {"synack": "mss=1460"},
           "RFC 7323 1.3, RFC 2018 2: no option the SYN did not offer"),
    Script("handshake/options-all", _option_script(all_options(MSS, 12345, 7)),
           {"synack": "mss=1460,sack,ts,ws"},
           "RFC 7323, RFC 2018: window scale, timestamps and SACK-permitted answered"),
    Script("handshake/mss-default", _mss_script(b"", 1400),
           {"synack": "mss=1460", "segments": "536,536,328"},
           "RFC 9293 3.7.1: without an MSS option the peer's MSS is 536"),
    Script("handshake/mss-small", _mss_script(mss_option(300), 1000),
           {"synack": "mss=1460", "segments": "300,300,300,100"},
           "RFC 9293 3.7.1: segments never exceed the peer's MSS"),
    Script("handshake/mss-tiny", _mss_script(mss_option(1), 100),
           {"synack": "mss=1460", "segments": "48,48,4"},
           "Linux tcp_min_snd_mss: a peer MSS below 48 is raised to 48"),
    Script("handshake/mss-tiny-ts", _mss_script(all_options(1, 12345, 0), 100),
           {"synack": "mss=1460,sack,ts,ws", "segments": "36,36,28"},
           "Linux tcp_min_snd_mss: the floor applies to the MSS, then the 12 octets of the "
           "timestamp option come off"),
    Script("handshake/mss-60-ts", _mss_script(all_options(60, 12345, 0), 100),
           {"synack": "mss=1460,sack,ts,ws", "segments": "48,48,4"},
           "RFC 9293 3.7.1: above the floor, the timestamp option comes off the peer's MSS"),
    Script("handshake/synack-timeout", synack_timeout,
           {"synacks": "+1s +3s", "end": "RST seq=S at +7s", "after": "RST seq=S"},
           "RFC 6298 5.5: SYN+ACK backoff 1 s, 2 s; the half-open connection is reset"),
    Script("handshake/syn-with-data", syn_with_data,
           {"synack": "SYN|ACK seq=ISS ack=R+1", "then": "-"},
           "RFC 9293 3.10.7.2: data on a SYN may be held; without TFO it is not"),
    Script("handshake/third-segment-data", third_segment_data,
           {"echo": "ACK seq=S ack=R+4 len=4"},
           "RFC 9293 3.10.7.4: the handshake's last ACK may carry data"),
    Script("sack/duplicate-data", _duplicate_data(0, b"ab"),
           {"ack": "ACK seq=S ack=R+4 sack -", "dup": "ACK seq=S ack=R+4 sack R..R+2"},
           "RFC 2883 4: a duplicate segment is named in the ACK's first SACK block (D-SACK)"),
    Script("sack/partly-duplicate-data", _duplicate_data(2, b"cdef"),
           {"ack": "ACK seq=S ack=R+4 sack -", "dup": "ACK seq=S ack=R+6 sack R+2..R+4"},
           "RFC 2883 4.1.2: the repeated head of a segment that also brings new data"),
    Script("sack/duplicate-out-of-order", _duplicate_data(4, b"ef", first_at=4),
           {"ack": "ACK seq=S ack=R sack R+4..R+8",
            "dup": "ACK seq=S ack=R sack R+4..R+6 R+4..R+8"},
           "RFC 2883 4.1.3: a repeat of data held out of order, before the SACK blocks"),
    Script("close/unread-data", close_with_unread_data,
           {"reply": "RST|ACK seq=S ack=R+4"},
           "RFC 1122 4.2.2.13: CLOSE with unread data resets"),
    Script("blind/data-ancient-ack", _injection(ACK | PSH, -ANCIENT),
           {"reply": "ACK seq=S ack=R", "echo": "good"},
           "RFC 5961 5.2: in-window data whose ACK is 2^24 behind SND.UNA is dropped with "
           "a challenge ACK, not delivered"),
    Script("blind/fin-ancient-ack", _injection(FIN | ACK, -ANCIENT),
           {"reply": "ACK seq=S ack=R", "echo": "good"},
           "RFC 5961 5.2: a FIN at RCV.NXT with an ancient ACK does not close the connection"),
    Script("blind/data-ack-before-iss", _injection(ACK | PSH, -5),
           {"reply": "ACK seq=S ack=R", "echo": "good"},
           "RFC 5961 5.2 as Linux bounds it: an ACK below ISS+1 acknowledges octets never "
           "sent, however small MAX.SND.WND is"),
    Script("blind/data-old-ack", _injection(ACK | PSH, -2),
           {"reply": "ACK seq=S ack=R+4 len=4", "echo": "evilgood"},
           "RFC 5961 5.2: an old duplicate ACK within what was acknowledged is acceptable: "
           "its text is delivered (and echoed)"),
    Script("blind/data-unsent-ack", _injection(ACK | PSH, 1000),
           {"reply": "ACK seq=S ack=R", "echo": "good"},
           "RFC 9293 3.10.7.4 fifth, RFC 5961 5.2: an ACK of unsent data drops the segment, "
           "with an ACK"),
    Script("paws/disordered-dupack", _paws_ack(10),
           {"reply": "-"},
           "Linux tcp_disordered_ack_check: a duplicate ACK overtaken by a newer one "
           "(TSval within the replay window) passes PAWS, and needs no answer"),
    Script("paws/old-dupack", _paws_ack(TS_ANCIENT),
           {"reply": ACK_S_R},
           "RFC 7323 5.3 R1: beyond the replay window it is an old duplicate: dropped, "
           "with an ACK"),
    Script("paws/old-ack-left", paws_old_ack_left,
           {"reply": "-"},
           "Linux 6.14+ (TCP_RFC7323_PAWS_ACK): an old pure ACK left of RCV.NXT is dropped "
           "without an answer"),
    Script("paws/burst", paws_burst,
           {"burst": f"1: {ACK_S_R}", "later": f"1: {ACK_S_R}"},
           "Linux tcp_oow_rate_limited: at most one ACK per 500 ms for PAWS drops"),
    Script("oow/ack-burst", _oow_burst(_old_ack, 3),
           {"burst": f"1: {ACK_S_R}", "later": f"1: {ACK_S_R}"},
           "Linux tcp_oow_rate_limited: at most one ACK per 500 ms for unacceptable pure "
           "ACKs (RFC 9293 3.10.7.4 first answers each)"),
    Script("oow/data-burst", _oow_burst(_old_data, 2),
           {"burst": f"2: {ACK_S_R}", "later": f"1: {ACK_S_R}"},
           "Linux tcp_oow_rate_limited: unacceptable text is always answered"),
    Script("oow/after-challenge", _oow_burst(_challenge_then_old_ack, 1),
           {"burst": f"1: {ACK_S_R}", "later": f"1: {ACK_S_R}"},
           "Linux: challenge ACKs and ACKs to unacceptable segments share one interval"),
    Script("active/open", active_open,
           {"syn": "SYN seq=ISS <mss=1460,sack,ts,ws>", "ack": "ACK seq=S ack=R",
            "close": "FIN|ACK seq=S ack=R+6", "client": "closed", "stdout": "ping"},
           "RFC 9293 3.10.1, 3.10.7.3: CLOSED -> SYN-SENT -> ESTABLISHED"),
    Script("active/refused", active_refused,
           {"reply": "-", "client": "refused"},
           "RFC 9293 3.10.7.3: RST with an acceptable ACK refuses the connection"),
    Script("active/bad-synack", active_bad_synack,
           {"reply": "RST seq=S+999", "client": "refused"},
           "RFC 9293 3.10.7.3: an unacceptable ACK in SYN-SENT draws <SEQ=SEG.ACK><CTL=RST>"),
    Script("active/syn-timeout", active_syn_timeout,
           {"syns": "+1s +3s", "end": "-", "client": "timed out"},
           "RFC 6298 5.5, RFC 9293 3.8.3: SYN backoff 1 s, 2 s; then give up"),
    Script("active/simultaneous", active_simultaneous,
           {"synack": "SYN|ACK seq=ISS ack=R", "client": "closed"},
           "RFC 9293 3.5 figure 8: simultaneous open through SYN-RECEIVED"),
    Script("active/split-synack", active_split_synack,
           {"ack": "-", "synack": "SYN|ACK seq=ISS ack=R", "client": "closed"},
           "the textbook chapter's four-segment handshake: the bare ACK is dropped, the SYN "
           "crosses"),
    Script("active/simultaneous-synack", active_simultaneous_synack,
           {"synack": "SYN|ACK seq=ISS ack=R", "reply": "ACK seq=S ack=R", "client": "closed"},
           "RFC 9293 3.5 figure 8 line 6: a SYN+ACK in SYN-RECEIVED establishes; both "
           "targets ACK it"),
    Script("time-wait/reopen", time_wait_reopen,
           {"iss": "S+65537", "reply": "-", "after": "alive: ACK seq=S ack=R"},
           "RFC 9293 3.6.1 MAY-2: a new incarnation's ISN above the old SND.NXT (both: "
           "Linux's old SND.NXT + 65537); back to TIME-WAIT if the SYN was an old duplicate"),
]
