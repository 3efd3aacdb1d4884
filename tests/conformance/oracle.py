"""What goes on the wire for every matrix row, by RFC 9293 3.10.7 (with RFC 5961).

`expected(row)` walks the SEGMENT ARRIVES steps for the row's state and
stimulus and returns the facts a conforming target shows (see `matrix.py`
for the notation). It is the executable form of the rules, and both targets
are held to it; `differences.py` lists where one of them answers otherwise
and why. Where RFC 9293 leaves a choice, the expectation is the choice both
targets make, and the comment says so.

Steps (section numbers of RFC 9293):

1. 3.10.7.4 first: acceptability. A segment is acceptable when its first or
   last sequence number lies in [RCV.NXT, RCV.NXT+RCV.WND); ``nxt`` and ``in``
   are, ``left`` (ends at RCV.NXT-1), ``edge`` and ``right`` are not. An
   unacceptable segment draws <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> unless it
   carries RST, and is dropped.
2. second, RST: exactly at RCV.NXT resets the connection (SYN-RECEIVED of a
   passive open returns to LISTEN); elsewhere in the window draws a
   challenge ACK (RFC 5961 3.2).
3. fourth, SYN: SYN-RECEIVED of a passive open returns to LISTEN silently;
   a synchronized state sends a challenge ACK (RFC 5961 4.2).
4. fifth, ACK: in SYN-RECEIVED an ACK outside (SND.UNA, SND.NXT] draws
   <SEQ=SEG.ACK><CTL=RST>; elsewhere an ACK of unsent data draws an ACK, so
   does one older than RFC 5961 5.2 allows, a duplicate is ignored, and an
   ACK of our FIN moves FIN-WAIT-1 to
   FIN-WAIT-2, CLOSING to TIME-WAIT and LAST-ACK to CLOSED.
5. seventh, text: delivered in ESTABLISHED, FIN-WAIT-1 and FIN-WAIT-2 (out of
   order: an immediate duplicate ACK, RFC 5681 4.2), ignored in the states
   after a FIN was received. An application that has closed (an orphan) gets
   RST for new data (RFC 1122 4.2.2.13).
6. eighth, FIN at RCV.NXT: acknowledged; ESTABLISHED goes to CLOSE-WAIT,
   FIN-WAIT-2 to TIME-WAIT; TIME-WAIT acknowledges it again (and restarts
   its 2 MSL timeout, fifth and eighth steps).

Plus what the apps do (`apps.py`): echo sends data back and closes after EOF.
"""

from __future__ import annotations

from tests.conformance.matrix import DATA, NOCONN_STATES, STIMULUS_FLAGS, Row
from tests.conformance.runner import Facts

ACK, FIN, RST, SYN = 0x10, 0x01, 0x04, 0x02
ACK_R = "ACK seq=S ack=R"
ALIVE = f"alive: {ACK_R}"
GONE = "gone: RST seq=S"
#: States where our FIN is sent but not acknowledged: SND.UNA = SND.NXT-1.
FIN_OUTSTANDING = {"FIN-WAIT-1", "CLOSING", "LAST-ACK"}
#: States that deliver text (RFC 9293 3.10.7.4, seventh).
RECEIVING = {"ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2"}
N = len(DATA)


def expected(row: Row) -> Facts:
    """The facts a target conforming to RFC 9293 shows for ``row``."""
    if row.state in NOCONN_STATES:
        return {"reply": _no_connection(row)}
    reply, after = _synchronized(row)
    return {"reply": reply, "after": after}


def _no_connection(row: Row) -> str:
    """LISTEN (3.10.7.2) and CLOSED (3.10.7.1); S is SEG.ACK and R is SEG.SEQ here."""
    flags = STIMULUS_FLAGS[row.kind]
    if flags & RST:
        return "-"  # never answer a reset
    if flags & ACK:
        return "RST seq=S"  # <SEQ=SEG.ACK><CTL=RST>
    if row.state == "LISTEN":
        if flags == SYN:
            return "SYN|ACK seq=ISN ack=R+1"
        # A FIN or NULL without ACK "would be discarded by the ACK processing";
        # SYN+FIN is dropped too (both targets; RFC 9293 does not say).
        return "-"
    seg_len = bool(flags & SYN) + bool(flags & FIN)
    return f"RST|ACK seq=0 ack={_plus('R', seg_len)}"  # <SEQ=0><ACK=SEG.SEQ+SEG.LEN>


def _plus(name: str, d: int) -> str:
    return name if d == 0 else f"{name}{d:+d}"


def _synchronized(row: Row) -> tuple[str, str]:
    """Steps 1-6 of the module docstring for a connection in ``row.state``."""
    orphan = row.state.endswith("-ORPHAN")
    state = row.state.removesuffix("-ORPHAN")
    kind, pos = row.kind, row.pos
    flags = STIMULUS_FLAGS[kind]

    # TIME-WAIT may end for a new SYN beyond RCV.NXT (RFC 1122 4.2.2.13; RFC
    # 9293 3.10.7.4 on TIME-WAIT); the new incarnation is in SYN-RECEIVED and
    # answers the probe (left of its window) with an ACK of its own.
    if state == "TIME-WAIT" and flags == SYN and pos in ("in", "edge", "right"):
        return "SYN|ACK seq=ISN'>S ack=SEG.SEQ+1", "new: ACK seq=ISN'+1 ack=SEG.SEQ+1"
    # A retransmitted SYN (seq = IRS) in SYN-RECEIVED: our SYN+ACK was lost, so
    # it is sent again at once (both targets; RFC 9293 would send a bare ACK).
    if state == "SYN-RCVD" and flags == SYN and pos == "left":
        return "SYN|ACK seq=ISS ack=R", ALIVE

    # 1. Acceptability.
    if pos not in ("nxt", "in"):
        return ("-" if flags & RST else ACK_R), ALIVE
    # 2. RST.
    if flags & RST:
        return ("-", GONE) if pos == "nxt" else (ACK_R, ALIVE)
    # 3. SYN.
    if flags & SYN:
        return ("-", GONE) if state == "SYN-RCVD" else (ACK_R, ALIVE)
    # 4. ACK (every remaining stimulus carries one).
    snd_una = -1 if state in FIN_OUTSTANDING or state == "SYN-RCVD" else 0  # relative to S
    ack = {"ACK-DUP": snd_una, "ACK-OLD": snd_una - 1, "ACK-UNSENT": 1}.get(kind, 0)
    if state == "SYN-RCVD":
        if ack != 0:  # only SEG.ACK = SND.NXT lies in (SND.UNA, SND.NXT]
            return f"RST seq={_plus('S', ack)}", ALIVE
        state = "ESTABLISHED"
    if ack > 0:
        return ACK_R, ALIVE  # acknowledges something not yet sent
    # RFC 5961 5.2 (RFC 9293 MAY-12) with the bound both targets use (Linux tcp_ack):
    # SND.UNA - MAX.SND.WND, but no further back than the octets acknowledged so
    # far, here none but our FIN once acknowledged. An older ACK: a challenge ACK.
    acked = 1 if state in ("FIN-WAIT-2", "TIME-WAIT") else 0
    if snd_una - ack > acked:
        return ACK_R, ALIVE
    if ack == 0 and state in FIN_OUTSTANDING:  # our FIN is acknowledged
        if state == "LAST-ACK":
            return "-", GONE
        state = {"FIN-WAIT-1": "FIN-WAIT-2", "CLOSING": "TIME-WAIT"}[state]
        if state == "TIME-WAIT":
            return "-", ALIVE  # CLOSING: "otherwise ignore the segment"
    # 5. Text.
    if kind == "DATA":
        if state not in RECEIVING:
            return "-", ALIVE  # "ignore the segment text"
        if orphan:
            return "RST seq=S", GONE  # RFC 1122 4.2.2.13: data after CLOSE is lost
        if pos == "in":
            return ACK_R, ALIVE  # out of order: immediate duplicate ACK
        if state == "ESTABLISHED":  # the echo app sends it back
            return (f"ACK seq=S ack=R+{N} len={N}", f"alive: ACK seq=S+{N} ack=R+{N}")
        return f"ACK seq=S ack=R+{N}", f"alive: ACK seq=S ack=R+{N}"
    # 6. FIN.
    if flags & FIN:
        if state == "TIME-WAIT":
            return ACK_R, ALIVE  # "Acknowledge it, and restart the 2 MSL timeout"
        if state not in RECEIVING:
            # A second FIN: both targets ignore it (RFC 9293 would acknowledge it).
            return "-", ALIVE
        if pos == "in":
            return ACK_R, ALIVE  # out of order: immediate duplicate ACK
        if state == "ESTABLISHED":  # CLOSE-WAIT; the echo app closes: LAST-ACK
            return "FIN|ACK seq=S ack=R+1", "alive: ACK seq=S+1 ack=R+1"
        return "ACK seq=S ack=R+1", "alive: ACK seq=S ack=R+1"  # TIME-WAIT
    return "-", ALIVE  # a bare ACK with nothing new
