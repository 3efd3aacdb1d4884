"""The state x segment x sequence-position matrix (RFC 9293 3.10.7).

Each row drives a fresh connection into one state from a passive open, sends
one stimulus segment and records two facts:

``reply``  everything the target sends within `SETTLE` seconds, normalized and
           written relative to S (the target's SND.NXT) and R (its RCV.NXT)
           just before the stimulus, e.g. ``ACK seq=S ack=R`` (a challenge ACK).
``after``  whether the connection survived: a keep-alive style probe (an ACK
           at R-1, left of any window, so it is never acceptable) must draw
           ``alive: ACK ...`` from a live connection and ``gone: RST ...``
           from the reset generator once the connection is gone.

The expected facts come from `oracle.expected`; `differences.py` lists where
a target legitimately (or, marked BUG, not) answers otherwise.

Sequence positions, with W the window the target last advertised:

``nxt``    SEG.SEQ = RCV.NXT
``in``     RCV.NXT + W/2, inside the window (out of order)
``left``   the segment ends at RCV.NXT-1: an old duplicate (a zero-length
           segment sits at RCV.NXT-1, where Linux accepts an RST after a FIN)
``edge``   RCV.NXT + W, the first sequence number right of the window
``right``  RCV.NXT + 3W/2, well right of the window
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.conformance.apps import CLOSED_PORT, CLOSER, ECHO, HALFCLOSE, HOLD
from tests.conformance.harness import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    Frame,
    Peer,
    ScriptError,
    Seg,
    mss_option,
    seq_add,
)
from tests.conformance.runner import Env, Facts, Script

#: How long silence must last to count as "no answer". Above Linux's 500 ms
#: rate limit for ACKs to out-of-window segments (tcp_invalid_ratelimit), so
#: the probe that follows a stimulus is never suppressed on either target.
SETTLE = 0.6
#: Bound for answers that must come (SYN+ACK, the probe's answer, a FIN).
ANSWER_TIMEOUT = 3.0
MSS = 1460
DATA = b"data"

STATES = ("SYN-RCVD", "ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "FIN-WAIT-1", "FIN-WAIT-2",
          "CLOSING", "TIME-WAIT", "FIN-WAIT-1-ORPHAN", "FIN-WAIT-2-ORPHAN")
KINDS = ("SYN", "SYN+ACK", "RST", "RST+ACK", "ACK", "FIN+ACK", "DATA")
POSITIONS = ("nxt", "in", "left", "edge", "right")
#: ACKs at RCV.NXT whose acknowledgment number is not SND.NXT.
ACK_KINDS = ("ACK-DUP", "ACK-OLD", "ACK-UNSENT")
#: No connection: a port with a listener, and one without (RFC 9293 3.10.7.1-2).
NOCONN_STATES = ("LISTEN", "CLOSED")
NOCONN_KINDS = (*KINDS, "FIN", "SYN+FIN", "NULL")

STIMULUS_FLAGS = {
    "SYN": SYN, "SYN+ACK": SYN | ACK, "RST": RST, "RST+ACK": RST | ACK, "ACK": ACK,
    "FIN+ACK": FIN | ACK, "DATA": ACK | PSH, "FIN": FIN, "SYN+FIN": SYN | FIN, "NULL": 0,
    "ACK-DUP": ACK, "ACK-OLD": ACK, "ACK-UNSENT": ACK,
}


@dataclass(frozen=True)
class Row:
    """One cell of the matrix."""

    state: str
    kind: str
    pos: str  # "" for LISTEN/CLOSED, where there is no RCV.NXT

    @property
    def id(self) -> str:
        return "/".join(p for p in (self.state, self.kind, self.pos) if p)


def rows() -> list[Row]:
    """Every row, in a stable order."""
    out = [Row(s, k, p) for s in STATES for k in KINDS for p in POSITIONS]
    out += [Row(s, k, "nxt") for s in STATES for k in ACK_KINDS]
    out += [Row(s, k, "") for s in NOCONN_STATES for k in NOCONN_KINDS]
    return out


# --------------------------------------------------------------------------
# Driving a connection into a state
# --------------------------------------------------------------------------


@dataclass
class Conn:
    """A connection in a known state, as the peer sees it."""

    peer: Peer
    snd_nxt: int  # S: the target's SND.NXT
    snd_una: int  # the target's SND.UNA (S-1 while its FIN is unacknowledged)
    rcv_nxt: int  # R
    wnd: int  # W: the window the target advertised last

    def frame(self, seg_seq: int | None = None) -> Frame:
        """How to write down the answers to a stimulus at ``seg_seq``."""
        return Frame(self.snd_nxt, self.rcv_nxt, self.peer.y, seg_seq, self.peer.new_isn)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ScriptError(message)


async def handshake(peer: Peer) -> Seg:
    """SYN x with an MSS option only (no window scaling, SACK or timestamps, so
    neither target uses them) -> SYN+ACK y, x+1."""
    peer.send(SYN, opts=mss_option(MSS))
    synack = await peer.expect(SYN | ACK, ANSWER_TIMEOUT, what="for our SYN")
    _check(synack.ack == seq_add(peer.x, 1), f"SYN+ACK acks {peer.describe(synack)}")
    return synack


async def reach(env: Env, state: str) -> Conn:
    """Open a connection to the app that leads to ``state`` and drive it there."""
    orphan = state.endswith("-ORPHAN")
    base = state.removesuffix("-ORPHAN")
    port = {"CLOSE-WAIT": HOLD, "FIN-WAIT-1": HALFCLOSE, "FIN-WAIT-2": HALFCLOSE,
            "CLOSING": HALFCLOSE, "TIME-WAIT": HALFCLOSE}.get(base, ECHO)
    if orphan:
        port = CLOSER
    peer = env.peer(port)
    await handshake(peer)
    assert peer.y is not None
    x1, y1 = seq_add(peer.x, 1), seq_add(peer.y, 1)
    if base == "SYN-RCVD":
        return Conn(peer, y1, peer.y, x1, peer.wnd)
    peer.send(ACK)  # x+1, y+1: ESTABLISHED
    if base == "ESTABLISHED":
        return Conn(peer, y1, y1, x1, peer.wnd)
    if base in ("CLOSE-WAIT", "LAST-ACK"):
        peer.send(FIN | ACK)
        x2 = seq_add(peer.x, 2)
        if base == "CLOSE-WAIT":
            ack = await peer.expect(ACK, ANSWER_TIMEOUT, what="for our FIN")
            _check(ack.ack == x2, f"FIN acknowledged by {peer.describe(ack)}")
            return Conn(peer, y1, y1, x2, peer.wnd)
        fin = await peer.expect(FIN | ACK, ANSWER_TIMEOUT, what="from the echo app after our FIN",
                                skip_pure_acks=True)
        _check(fin.ack == x2 and fin.seq == y1, f"LAST-ACK FIN is {peer.describe(fin)}")
        return Conn(peer, seq_add(y1, 1), y1, x2, peer.wnd)
    # The server closes first: FIN-WAIT-1 until we acknowledge its FIN.
    fin = await peer.expect(FIN | ACK, ANSWER_TIMEOUT, what="from the server closing first",
                            skip_pure_acks=True)
    _check(fin.seq == y1 and fin.ack == x1, f"server's FIN is {peer.describe(fin)}")
    y2 = seq_add(y1, 1)
    if base == "FIN-WAIT-1":
        return Conn(peer, y2, y1, x1, peer.wnd)
    if base == "CLOSING":
        peer.send(FIN | ACK, ack=y1)  # our FIN crosses theirs: it does not ack it
        ack = await peer.expect(ACK, ANSWER_TIMEOUT, what="for our FIN in FIN-WAIT-1")
        _check(ack.ack == seq_add(x1, 1), f"FIN acknowledged by {peer.describe(ack)}")
        return Conn(peer, y2, y1, seq_add(x1, 1), peer.wnd)
    peer.send(ACK, ack=y2)  # FIN-WAIT-2
    if base == "FIN-WAIT-2":
        return Conn(peer, y2, y2, x1, peer.wnd)
    peer.send(FIN | ACK, ack=y2)
    ack = await peer.expect(ACK, ANSWER_TIMEOUT, what="for our FIN in FIN-WAIT-2")
    _check(ack.ack == seq_add(x1, 1), f"FIN acknowledged by {peer.describe(ack)}")
    return Conn(peer, y2, y2, seq_add(x1, 1), peer.wnd)  # TIME-WAIT


# --------------------------------------------------------------------------
# Stimulus and probe
# --------------------------------------------------------------------------


def stimulus_seq(pos: str, rcv_nxt: int, wnd: int, seg_len: int) -> int:
    """The stimulus' SEG.SEQ for a position (see the module docstring)."""
    offsets = {"nxt": 0, "in": wnd // 2, "left": -max(seg_len, 1), "edge": wnd,
               "right": wnd + wnd // 2}
    return seq_add(rcv_nxt, offsets[pos])


def send_stimulus(peer: Peer, kind: str, seq: int, snd_una: int, snd_nxt: int) -> None:
    """Send the stimulus of ``kind`` at ``seq``; ACK-bearing kinds ack SND.NXT."""
    flags = STIMULUS_FLAGS[kind]
    ack = {"ACK-DUP": snd_una, "ACK-OLD": seq_add(snd_una, -1),
           "ACK-UNSENT": seq_add(snd_nxt, 1)}.get(kind, snd_nxt)
    peer.send(flags, seq=seq, ack=ack, payload=DATA if kind == "DATA" else b"",
              opts=mss_option(MSS) if flags & SYN else b"", advance=False)


async def probe(conn: Conn, seg_seq: int) -> str:
    """Does the connection still exist? An ACK at R-1 is never acceptable, so a
    live connection answers with an ACK (``alive``), a dead one with the reset
    generator's RST (``gone``), and a new incarnation that took over the
    4-tuple with an ACK from its own sequence space (``new``)."""
    peer = conn.peer
    peer.send(ACK, seq=seq_add(conn.rcv_nxt, -1), ack=conn.snd_nxt, advance=False)
    answer = await peer.next(ANSWER_TIMEOUT)
    if answer is None:
        return "no answer"
    text = conn.frame(seg_seq).render(answer)
    if answer.flags & RST:
        return f"gone: {text}"
    if answer.pure_ack:
        return f"{'new' if 'ISN' in text else 'alive'}: {text}"
    return f"other: {text}"


def _seg_len(kind: str) -> int:
    flags = STIMULUS_FLAGS[kind]
    return (len(DATA) if kind == "DATA" else 0) + bool(flags & SYN) + bool(flags & FIN)


async def run_row(env: Env, row: Row) -> Facts:
    """Drive, stimulate, probe; see the module docstring for the facts."""
    if row.state in NOCONN_STATES:
        return await _run_noconn(env, row)
    conn = await reach(env, row.state)
    seq = stimulus_seq(row.pos, conn.rcv_nxt, conn.wnd, _seg_len(row.kind))
    send_stimulus(conn.peer, row.kind, seq, conn.snd_una, conn.snd_nxt)
    segs = await conn.peer.collect(SETTLE)
    reply = conn.frame(seq).render_all(segs)
    return {"reply": reply, "after": await probe(conn, seq)}


async def _run_noconn(env: Env, row: Row) -> Facts:
    """LISTEN or CLOSED: one segment to a port without a connection.

    There is no RCV.NXT; R is the stimulus' own SEG.SEQ and S its SEG.ACK, so
    the reset generator's answers read ``RST seq=S`` (SEQ=SEG.ACK) and
    ``RST|ACK seq=0 ack=R+1`` (ACK=SEG.SEQ+SEG.LEN).
    """
    peer = env.peer(ECHO if row.state == "LISTEN" else CLOSED_PORT)
    seq, ack = peer.x, seq_add(peer.x, 0x5A5A5A5A)
    send_stimulus(peer, row.kind, seq, ack, ack)
    reply = Frame(ack, seq, seg_seq=seq).render_all(await peer.collect(SETTLE))
    return {"reply": reply}


def scripts(expected: dict[str, Facts]) -> list[Script]:
    """One Script per row, expecting ``expected[row.id]``."""
    out = []
    for row in rows():
        async def run(env: Env, row: Row = row) -> Facts:
            return await run_row(env, row)

        out.append(Script(row.id, run, expected.get(row.id, {}),
                          doc=f"{row.kind} at {row.pos or 'any'} in {row.state}"))
    return out
