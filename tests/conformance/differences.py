"""Where Linux and tcpstack answer differently, each with its reason.

A conformance test expects the facts its script states (for the matrix:
`oracle.py`, RFC 9293 as written). Each entry here replaces some facts for
some scripts with what each target really shows: `linux` and `tcpstack`
give the facts per target. The tests enforce the table both ways:

- a target that shows anything else fails (an unlisted difference), and
- a target that no longer shows what its entry says fails too (a stale
  entry: the stack was fixed, or the kernel changed), so the table cannot
  outlive the behaviour it documents.

Reasons starting with ``BUG:`` are tcpstack deviating where it should not;
they are listed so that the suite passes while the fix is pending, not
because the behaviour is accepted. ``not implemented yet`` marks features
still in progress. Everything else is an allowed choice, mostly Linux's
(noted with the kernel function that makes it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ACK_R = "ACK seq=S ack=R"
ALIVE = f"alive: {ACK_R}"
GONE = "gone: RST seq=S"


@dataclass(frozen=True)
class Difference:
    """Some facts of some scripts that differ between the targets."""

    title: str
    ids: tuple[str, ...]  # script ids: matrix rows (see `cells`) or named scripts
    linux: dict[str, str]  # fact -> what Linux shows
    tcpstack: dict[str, str]  # fact -> what tcpstack shows
    reason: str
    rfc: str

    def facts(self, target: str) -> dict[str, str]:
        """The facts this entry states for ``target``."""
        return self.linux if target == "linux" else self.tcpstack


def cells(states: Iterable[str], kinds: Iterable[str], positions: Iterable[str]
          ) -> tuple[str, ...]:
    """Matrix row ids: every state x kind x position."""
    return tuple(f"{s}/{k}/{p}" for s in states for k in kinds for p in positions)


RESETS = ("RST", "RST+ACK")
#: States whose RST/ACK processing is Linux's full socket (not a mini-socket).
FULL_SOCKET = ("SYN-RCVD", "ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "FIN-WAIT-1",
               "FIN-WAIT-2", "CLOSING", "FIN-WAIT-1-ORPHAN")

EDGE = ("Linux's sequence check (tcp_sequence, tcp_in_window) accepts a segment that "
        "starts exactly at RCV.NXT+RCV.WND when it is empty or carries only a FIN (and one "
        "with data when nothing is queued unread, for zero-window probes). RFC 9293's test "
        "excludes the right edge, as tcpstack does.")
EDGE_RFC = "RFC 9293 3.10.7.4 (first: acceptability)"
ORPHAN = ("Linux resets a socket the application has closed as soon as anything beyond "
          "RCV.NXT arrives, text or FIN, in or out of order (tcp_rcv_state_process: "
          "RCV_SHUTDOWN); tcpstack treats an out-of-order FIN like any out-of-order segment.")
TIME_WAIT = ("Linux's TIME-WAIT is a mini-socket (tcp_timewait_state_process) that only "
             "accepts a bare ACK or RST exactly at RCV.NXT: every other segment is answered "
             "with an ACK, no RFC 5961 challenge ACK is sent for an RST, and the ACK field is "
             "never checked. tcpstack's TIME-WAIT record (tcpstack/core/timewait.py) keeps "
             "RFC 9293's rules with RFC 5961.")
FW2_ORPHAN = ("A FIN-WAIT-2 socket that the application closed becomes a time-wait "
              "mini-socket in Linux (tcp_time_wait(sk, TCP_FIN_WAIT2)) with rules of its "
              "own: any RST inside the window kills it without a challenge ACK, a SYN at or "
              "after RCV.NXT draws RST, out-of-window segments (even RSTs) draw an ACK and the "
              "ACK field is not checked. tcpstack applies RFC 9293 and RFC 5961 as in every "
              "synchronized state.")
SYN_IN_SYN_RCVD = ("A SYN inside the window of a half-open connection: Linux answers with "
                   "RST and drops the request (tcp_check_req: embryonic_reset, RFC 793's rule); "
                   "tcpstack returns to LISTEN silently, as RFC 9293 says for a passive open.")

DIFFERENCES: tuple[Difference, ...] = (
    # -- named scripts ------------------------------------------------------------------
    Difference(
        "handshake timeout: RST or silence",
        ("handshake/synack-timeout",),
        linux={"end": "-"},
        tcpstack={"end": "RST seq=S at +7s"},
        reason="When the last SYN+ACK goes unanswered, tcpstack resets the half-open "
               "connection with <SEQ=ISS+1><CTL=RST>, as the textbook chapter describes, so a "
               "peer that "
               "believes it is connected learns at once; Linux drops the request silently "
               "(reqsk_timer_handler) and answers the peer's next segment with RST.",
        rfc="RFC 9293 3.10.5 (ABORT in SYN-RECEIVED sends RST), 3.8.3 (R2)",
    ),
    Difference(
        "SYN retransmission schedule of an active open",
        ("active/syn-timeout",),
        linux={"syns": "+1s +2s +3s +4s +5s"},
        tcpstack={"syns": "+1s +3s"},
        reason="Linux (6.x) retransmits the first SYNs at a linear 1 s interval "
               "(net.ipv4.tcp_syn_linear_timeouts=4) within the time budget that "
               "tcp_syn_retries=2 implies; tcpstack doubles the RTO from the first "
               "retransmission on.",
        rfc="RFC 6298 5.5 (back off the timer), RFC 9293 3.8.1",
    ),
    Difference(
        "SYN again at once after answering a bad SYN+ACK",
        ("active/bad-synack",),
        linux={"reply": "RST seq=S+999; SYN seq=ISS"},
        tcpstack={"reply": "RST seq=S+999"},
        reason="After resetting an unacceptable SYN+ACK, Linux retransmits its SYN almost "
               "at once (tcp_rcv_synsent_state_process: 'previous FIN/ACK or RST/ACK might be "
               "ignored'); tcpstack waits for its retransmission timer. Both are allowed.",
        rfc="RFC 9293 3.10.7.3 (first: check the ACK bit)",
    ),
    # -- Linux: the right edge of the window ---------------------------------------------
    Difference(
        "RST at the right edge",
        cells(FULL_SOCKET, RESETS, ("edge",)),
        linux={"reply": ACK_R},
        tcpstack={"reply": "-"},
        reason=EDGE + " So the RST is 'in the window' and draws a challenge ACK.",
        rfc=EDGE_RFC + ", RFC 5961 3.2",
    ),
    Difference(
        "bare ACK at the right edge",
        cells(("SYN-RCVD", "ESTABLISHED", "CLOSE-WAIT", "FIN-WAIT-1", "FIN-WAIT-2",
               "CLOSING", "FIN-WAIT-1-ORPHAN", "FIN-WAIT-2-ORPHAN"), ("ACK",), ("edge",)),
        linux={"reply": "-"},
        tcpstack={"reply": ACK_R},
        reason=EDGE + " So the ACK is processed (in SYN-RECEIVED it completes the "
               "handshake) instead of being answered as unacceptable.",
        rfc=EDGE_RFC,
    ),
    Difference(
        "segments at the right edge end LAST-ACK",
        cells(("LAST-ACK",), ("ACK", "DATA", "FIN+ACK"), ("edge",)),
        linux={"reply": "-", "after": GONE},
        tcpstack={"reply": ACK_R, "after": ALIVE},
        reason=EDGE + " Its ACK of our FIN then closes the connection.",
        rfc=EDGE_RFC,
    ),
    Difference(
        "a second FIN at the right edge",
        cells(("CLOSE-WAIT", "CLOSING"), ("FIN+ACK",), ("edge",)),
        linux={"reply": "-"},
        tcpstack={"reply": ACK_R},
        reason=EDGE + " The FIN is then ignored without an ACK, as a second FIN is (in "
               "CLOSING its ACK moves the connection to TIME-WAIT).",
        rfc=EDGE_RFC,
    ),
    # -- Linux: old duplicates and RCV.NXT-1 ----------------------------------------------
    Difference(
        "RST at RCV.NXT-1 after a FIN",
        cells(("CLOSE-WAIT", "LAST-ACK", "CLOSING"), RESETS, ("left",)),
        linux={"after": GONE},
        tcpstack={"after": ALIVE},
        reason="Linux also accepts an RST at RCV.NXT-1 once the peer's FIN is in "
               "(tcp_reset_check), for peers that send RST with the FIN's sequence number; "
               "tcpstack resets only at exactly RCV.NXT and drops the RST as outside the "
               "window.",
        rfc="RFC 5961 3.2, RFC 9293 3.10.7.4 (second)",
    ),
    Difference(
        "old duplicate ending at RCV.NXT closes LAST-ACK",
        cells(("LAST-ACK",), ("DATA", "FIN+ACK"), ("left",)),
        linux={"reply": "-", "after": GONE},
        tcpstack={"reply": ACK_R, "after": ALIVE},
        reason="Linux processes the ACK field of a segment whose last octet is RCV.NXT-1 "
               "(tcp_sequence compares its end with RCV.WUP), so a retransmitted FIN that "
               "also acknowledges our FIN completes LAST-ACK; for RFC 9293 the segment is "
               "unacceptable and only draws an ACK.",
        rfc="RFC 9293 3.10.7.4 (first)",
    ),
    Difference(
        "old duplicate ending at RCV.NXT acknowledges our FIN",
        (*cells(("CLOSING",), ("DATA", "FIN+ACK"), ("left",)),
         "FIN-WAIT-1-ORPHAN/DATA/left"),
        linux={"reply": "-"},
        tcpstack={"reply": ACK_R},
        reason="As above: Linux takes the ACK of our FIN from the old duplicate (CLOSING "
               "moves to TIME-WAIT, the orphan's FIN-WAIT-1 to its FIN-WAIT-2 mini-socket) "
               "and sends nothing; tcpstack answers the unacceptable segment with an ACK.",
        rfc="RFC 9293 3.10.7.4 (first)",
    ),
    # -- Linux: SYN-RECEIVED ----------------------------------------------------------------
    Difference(
        "SYN at RCV.NXT in SYN-RECEIVED",
        ("SYN-RCVD/SYN/nxt",),
        linux={"reply": "RST|ACK seq=0 ack=R+1"},
        tcpstack={"reply": "-"},
        reason=SYN_IN_SYN_RCVD,
        rfc="RFC 9293 3.10.7.4 (fourth, SYN-RECEIVED)",
    ),
    Difference(
        "SYN inside the window in SYN-RECEIVED",
        ("SYN-RCVD/SYN/in",),
        linux={"reply": "RST|ACK seq=0 ack=SEG.SEQ+1"},
        tcpstack={"reply": "-"},
        reason=SYN_IN_SYN_RCVD,
        rfc="RFC 9293 3.10.7.4 (fourth, SYN-RECEIVED)",
    ),
    Difference(
        "SYN+ACK inside the window in SYN-RECEIVED",
        cells(("SYN-RCVD",), ("SYN+ACK",), ("nxt", "in")),
        linux={"reply": "RST seq=S"},
        tcpstack={"reply": "-"},
        reason=SYN_IN_SYN_RCVD,
        rfc="RFC 9293 3.10.7.4 (fourth, SYN-RECEIVED)",
    ),
    Difference(
        "a new incarnation checks the ACK before the sequence number",
        cells(("TIME-WAIT",), ("SYN",), ("in", "edge", "right")),
        linux={"after": GONE},
        tcpstack={"after": "new: ACK seq=ISN'+1 ack=SEG.SEQ+1"},
        reason="Both reopen TIME-WAIT for a SYN beyond RCV.NXT. The probe (an old ACK, left "
               "of the new window) then reaches a half-open connection: Linux's request "
               "socket checks the ACK first and resets it (tcp_check_req), tcpstack checks "
               "the sequence number first and acknowledges, in RFC 9293's order.",
        rfc="RFC 9293 3.10.7.4 (first, then fifth); RFC 1122 4.2.2.13",
    ),
    # -- Linux: the TIME-WAIT mini-socket ------------------------------------------------
    Difference(
        "RST inside the window in TIME-WAIT",
        cells(("TIME-WAIT",), RESETS, ("in",)),
        linux={"reply": "-"},
        tcpstack={"reply": ACK_R},
        reason=TIME_WAIT,
        rfc="RFC 5961 3.2, RFC 9293 3.10.7.4 (second)",
    ),
    Difference(
        "an ACK or data other than a bare ACK at RCV.NXT in TIME-WAIT",
        cells(("TIME-WAIT",), ("ACK",), ("in",)) + cells(("TIME-WAIT",), ("DATA",), ("nxt", "in")),
        linux={"reply": ACK_R},
        tcpstack={"reply": "-"},
        reason=TIME_WAIT + " In RFC 9293 these segments are acceptable and their text is "
               "ignored (seventh step); only a FIN is acknowledged (fifth and eighth "
               "steps), which both do.",
        rfc="RFC 9293 3.10.7.4 (seventh, eighth: TIME-WAIT)",
    ),
    Difference(
        "ACK of unsent data in TIME-WAIT",
        ("TIME-WAIT/ACK-UNSENT/nxt",),
        linux={"reply": "-"},
        tcpstack={"reply": ACK_R},
        reason=TIME_WAIT,
        rfc="RFC 9293 3.10.7.4 (fifth)",
    ),
    Difference(
        "TIME-WAIT not restored when the reopening SYN was an old duplicate",
        ("time-wait/reopen",),
        linux={"after": GONE},
        tcpstack={"after": "alive: ACK seq=S ack=R"},
        reason="Linux ends the time-wait mini-socket as soon as a SYN may reopen it "
               "(tcp_v4_rcv, TCP_TW_SYN) and does not bring it back when the peer resets "
               "the SYN+ACK (the 'RED-PEN' comment in tcp_timewait_state_process admits "
               "it); tcpstack keeps the record aside until the new incarnation is "
               "established and restores it otherwise, as RFC 9293 3.6.1 asks.",
        rfc="RFC 9293 3.6.1 (MAY-2 (2)); RFC 1122 4.2.2.13",
    ),
    # -- Linux: orphans -------------------------------------------------------------------
    Difference(
        "anything beyond RCV.NXT resets an orphan",
        (*cells(("FIN-WAIT-1-ORPHAN",), ("DATA", "FIN+ACK"), ("edge",)),
         "FIN-WAIT-1-ORPHAN/FIN+ACK/in", "FIN-WAIT-2-ORPHAN/FIN+ACK/in"),
        linux={"reply": "RST seq=S", "after": GONE},
        tcpstack={"reply": ACK_R, "after": ALIVE},
        reason=ORPHAN,
        rfc="RFC 1122 4.2.2.13",
    ),
    Difference(
        "SYN at or after RCV.NXT in an orphan's FIN-WAIT-2",
        ("FIN-WAIT-2-ORPHAN/SYN/nxt",),
        linux={"reply": "RST|ACK seq=0 ack=R+1", "after": GONE},
        tcpstack={"reply": ACK_R, "after": ALIVE},
        reason=FW2_ORPHAN,
        rfc="RFC 5961 4.2",
    ),
    Difference(
        "SYN inside the window of an orphan's FIN-WAIT-2",
        ("FIN-WAIT-2-ORPHAN/SYN/in",),
        linux={"reply": "RST|ACK seq=0 ack=SEG.SEQ+1", "after": GONE},
        tcpstack={"reply": ACK_R, "after": ALIVE},
        reason=FW2_ORPHAN,
        rfc="RFC 5961 4.2",
    ),
    Difference(
        "SYN+ACK at or after RCV.NXT in an orphan's FIN-WAIT-2",
        cells(("FIN-WAIT-2-ORPHAN",), ("SYN+ACK",), ("nxt", "in")),
        linux={"reply": "RST seq=S", "after": GONE},
        tcpstack={"reply": ACK_R, "after": ALIVE},
        reason=FW2_ORPHAN,
        rfc="RFC 5961 4.2",
    ),
    Difference(
        "RST inside the window of an orphan's FIN-WAIT-2",
        cells(("FIN-WAIT-2-ORPHAN",), RESETS, ("in",)),
        linux={"reply": "-", "after": GONE},
        tcpstack={"reply": ACK_R, "after": ALIVE},
        reason=FW2_ORPHAN,
        rfc="RFC 5961 3.2",
    ),
    Difference(
        "RST at the right edge of an orphan's FIN-WAIT-2",
        cells(("FIN-WAIT-2-ORPHAN",), RESETS, ("edge",)),
        linux={"after": GONE},
        tcpstack={"after": ALIVE},
        reason=FW2_ORPHAN + " " + EDGE,
        rfc="RFC 5961 3.2, " + EDGE_RFC,
    ),
    Difference(
        "out-of-window RST answered in an orphan's FIN-WAIT-2",
        cells(("FIN-WAIT-2-ORPHAN",), RESETS, ("left", "right")),
        linux={"reply": ACK_R},
        tcpstack={"reply": "-"},
        reason=FW2_ORPHAN + " RFC 9293 says never to answer an RST; this is Linux's quirk.",
        rfc="RFC 9293 3.10.7.4 (first: 'unless the RST bit is set')",
    ),
    Difference(
        "ACK of unsent data in an orphan's FIN-WAIT-2",
        ("FIN-WAIT-2-ORPHAN/ACK-UNSENT/nxt",),
        linux={"reply": "-"},
        tcpstack={"reply": ACK_R},
        reason=FW2_ORPHAN,
        rfc="RFC 9293 3.10.7.4 (fifth)",
    ),
)
