"""`tcpstack ladder`: captures built with dpkt (raw IPv4 unless said otherwise) for
the textbook chapter's scenarios; each test checks the arrows in order, their labels and the
states of both sides after every segment, like a reader of the diagram would."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import dpkt
import pytest

from tcpstack.core.segment import Flags, Segment
from tcpstack.core.states import State
from tcpstack.lab import ladder
from tcpstack.lab.ladder import Endpoint, Seg, analyze, parse_trace, render_svg, render_text
from tests.helpers import arrows

SYN, ACK, FIN, RST, PSH = Flags.SYN, Flags.ACK, Flags.FIN, Flags.RST, Flags.PSH
X, Y = 0xFFFFFF00, 1_000_000_000  # x wraps past 2**32 during the tests
A, B = "10.0.0.1:40000", "10.0.0.2:80"  # client, server
CLIENT, SERVER = Endpoint("10.0.0.1", 40000), Endpoint("10.0.0.2", 80)

# (time, src, dst, flags, seq, ack, payload length)
Pkt = tuple[float, str, str, Flags, int, int, int]

c2s, s2c = (A, B), (B, A)


def pkt(t: float, way: tuple[str, str], flags: Flags, seq: int, ack: int = 0,
        length: int = 0) -> Pkt:
    return (t, way[0], way[1], flags, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, length)


def ip_bytes(p: Pkt) -> bytes:
    _, src, dst, flags, seq, ack, length = p
    (sip, sport), (dip, dport) = (e.split(":") for e in (src, dst))
    tcp = dpkt.tcp.TCP(sport=int(sport), dport=int(dport), seq=seq, ack=ack, flags=int(flags),
                       win=65535, data=b"d" * length)
    return bytes(dpkt.ip.IP(src=socket.inet_aton(sip), dst=socket.inet_aton(dip),
                            p=dpkt.ip.IP_PROTO_TCP, ttl=64, data=tcp))


def write_pcap(path: Path, packets: list[Pkt], linktype: int = 101) -> str:
    """A classic pcap of `packets` (relative times from an epoch base)."""
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=linktype)
        for p in packets:
            buf = ip_bytes(p)
            if linktype == dpkt.pcap.DLT_EN10MB:
                buf = bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6,
                                                   type=dpkt.ethernet.ETH_TYPE_IP, data=buf))
            w.writepkt(buf, ts=1_760_000_000 + p[0])
    return str(path)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = ladder.main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def draw(tmp_path: Path, packets: list[Pkt], capsys: pytest.CaptureFixture[str],
         *args: str) -> str:
    rc, out, err = run([write_pcap(tmp_path / "c.pcap", packets), *args], capsys)
    assert (rc, err) == (0, "")
    return out


def states(lad: ladder.Ladder) -> list[tuple[str, str]]:
    return [(str(s.client_state), str(s.server_state)) for s in lad.steps]


def segs(packets: list[Pkt]) -> list[Seg]:
    return [Seg(p[0], p[1] == A, p[3], p[4], p[5], p[6]) for p in packets]


HANDSHAKE = [pkt(0.0, c2s, SYN, X), pkt(0.000412, s2c, SYN | ACK, Y, X + 1),
             pkt(0.000500, c2s, ACK, X + 1, Y + 1)]

# ------------------------------------------------------------ handshake and close


def test_handshake_data_and_active_close(tmp_path, capsys):
    packets = [*HANDSHAKE,
               pkt(0.01, c2s, PSH | ACK, X + 1, Y + 1, 5), pkt(0.011, s2c, ACK, Y + 1, X + 6),
               pkt(0.02, s2c, PSH | ACK, Y + 1, X + 6, 5), pkt(0.021, c2s, ACK, X + 6, Y + 6),
               pkt(0.03, c2s, FIN | ACK, X + 6, Y + 6), pkt(0.031, s2c, ACK, Y + 6, X + 7),
               pkt(0.04, s2c, FIN | ACK, Y + 6, X + 7), pkt(0.041, c2s, ACK, X + 7, Y + 7)]
    out = draw(tmp_path, packets, capsys)
    assert arrows(out) == [
        ("SYN seq=x", ">", "SYN-SENT", "SYN-RECEIVED"),
        ("SYN,ACK seq=y ack=x+1", "<", "ESTABLISHED", "SYN-RECEIVED"),
        ("ACK seq=x+1 ack=y+1", ">", "ESTABLISHED", "ESTABLISHED"),
        ("PSH,ACK seq=x+1 ack=y+1 len=5", ">", "ESTABLISHED", "ESTABLISHED"),
        ("ACK seq=y+1 ack=x+6", "<", "ESTABLISHED", "ESTABLISHED"),
        ("PSH,ACK seq=y+1 ack=x+6 len=5", "<", "ESTABLISHED", "ESTABLISHED"),
        ("ACK seq=x+6 ack=y+6", ">", "ESTABLISHED", "ESTABLISHED"),
        ("FIN,ACK seq=x+6 ack=y+6", ">", "FIN-WAIT-1", "CLOSE-WAIT"),
        ("ACK seq=y+6 ack=x+7", "<", "FIN-WAIT-2", "CLOSE-WAIT"),
        ("FIN,ACK seq=y+6 ack=x+7", "<", "TIME-WAIT", "LAST-ACK"),
        ("ACK seq=x+7 ack=y+7", ">", "TIME-WAIT", "CLOSED"),
    ]
    lines = out.splitlines()
    assert lines[0].split() == ["client", A, "server", B]
    assert lines[1].split() == ["x", "=", str(X), "(ISN)", "y", "=", str(Y), "(ISN)"]
    assert lines[2].split() == ["time", "CLOSED", "│", "│", "LISTEN"]
    assert lines[3].split()[:3] == ["0.000000", "│", "SYN"]
    assert lines[5].split()[0] == "0.000412"  # relative to the first packet, microseconds
    assert all(len(line) <= 100 for line in lines)


def test_absolute_labels(tmp_path, capsys):
    out = draw(tmp_path, HANDSHAKE, capsys, "--absolute")
    assert [a[0] for a in arrows(out)] == [
        f"SYN seq={X}", f"SYN,ACK seq={Y} ack={X + 1}",
        f"ACK seq={(X + 1) & 0xFFFFFFFF} ack={Y + 1}"]
    assert "(ISN)" not in out


def test_relative_numbers_survive_the_wrap():
    lad = analyze(segs([*HANDSHAKE, pkt(0.01, c2s, ACK, X + 1 + 300, Y + 1)]))
    assert lad.label(lad.steps[3]) == "ACK seq=x+301 ack=y+1"


def test_four_segment_handshake():
    """The textbook chapter's variant: B sends ACK ack=x+1, then SYN seq=y on its own. A drops the
    bare ACK (SYN-SENT), takes the SYN as a simultaneous open and answers SYN,ACK."""
    lad = analyze(segs([pkt(0.0, c2s, SYN, X), pkt(0.1, s2c, ACK, Y, X + 1),
                        pkt(0.2, s2c, SYN, Y), pkt(0.3, c2s, SYN | ACK, X, Y + 1),
                        pkt(0.4, s2c, ACK, Y + 1, X + 1)]))
    assert [lad.label(s) for s in lad.steps] == [
        "SYN seq=x", "ACK seq=y ack=x+1", "SYN seq=y", "SYN,ACK seq=x ack=y+1",
        "ACK seq=y+1 ack=x+1"]
    assert states(lad) == [("SYN-SENT", "SYN-RECEIVED"), ("SYN-SENT", "SYN-RECEIVED"),
                           ("SYN-RECEIVED", "SYN-RECEIVED"), ("SYN-RECEIVED", "ESTABLISHED"),
                           ("ESTABLISHED", "ESTABLISHED")]


def test_lost_third_segment(tmp_path, capsys):
    """SYN+ACK at 0, 1, 3 s (the ACKs never reach the wire), RST seq=y+1 at 7 s."""
    packets = [pkt(0.0, c2s, SYN, X), pkt(0.0001, s2c, SYN | ACK, Y, X + 1),
               pkt(1.0001, s2c, SYN | ACK, Y, X + 1), pkt(3.0001, s2c, SYN | ACK, Y, X + 1),
               pkt(7.0001, s2c, RST, Y + 1)]
    out = draw(tmp_path, packets, capsys)
    assert arrows(out) == [
        ("SYN seq=x", ">", "SYN-SENT", "SYN-RECEIVED"),
        ("SYN,ACK seq=y ack=x+1", "<", "ESTABLISHED", "SYN-RECEIVED"),
        ("SYN,ACK seq=y ack=x+1 (retransmission #1)", "<", "ESTABLISHED", "SYN-RECEIVED"),
        ("SYN,ACK seq=y ack=x+1 (retransmission #2)", "<", "ESTABLISHED", "SYN-RECEIVED"),
        ("RST seq=y+1", "<", "CLOSED", "CLOSED"),
    ]
    assert "(lost)" not in out  # the capture cannot tell that the answers went missing
    assert [line.split()[0] for line in out.splitlines() if "│ " in line
            and line.split()[0][0].isdigit()] == [
        "0.000000", "0.000100", "1.000100", "3.000100", "7.000100"]
    assert "╌" in out  # retransmissions are dashed


def test_stale_syn_answered_by_rst():
    """The textbook chapter's stale SYN: B accepts it, A has no such connection and answers RST."""
    lad = analyze(segs([pkt(0.0, c2s, SYN, X), pkt(0.001, s2c, SYN | ACK, Y, X + 1),
                        pkt(0.002, c2s, RST, X + 1)]))
    assert [lad.label(s) for s in lad.steps] == [
        "SYN seq=x", "SYN,ACK seq=y ack=x+1", "RST seq=x+1"]
    assert states(lad) == [("SYN-SENT", "SYN-RECEIVED"), ("CLOSED", "SYN-RECEIVED"),
                           ("CLOSED", "LISTEN")]
    assert "stale SYN" in lad.steps[1].notes[0]


def test_old_duplicate_syn_with_wrong_ack():
    """RFC 9293 figure 8: the SYN+ACK acknowledges an old SYN (ack != x+1); the client
    answers RST seq=SEG.ACK and stays in SYN-SENT, the server returns to LISTEN."""
    lad = analyze(segs([pkt(0.0, c2s, SYN, X), pkt(0.001, s2c, SYN | ACK, Y, X - 9),
                        pkt(0.002, c2s, RST, X - 9)]))
    assert [lad.label(s) for s in lad.steps][1:] == ["SYN,ACK seq=y ack=x-9", "RST seq=x-9"]
    assert states(lad) == [("SYN-SENT", "SYN-RECEIVED"), ("SYN-SENT", "SYN-RECEIVED"),
                           ("SYN-SENT", "LISTEN")]
    assert "unacceptable" in lad.steps[1].notes[0]


def test_refused_by_closed_port():
    lad = analyze(segs([pkt(0.0, c2s, SYN, X), pkt(0.001, s2c, RST | ACK, 0, X + 1)]))
    assert [lad.label(s) for s in lad.steps] == ["SYN seq=x", "RST,ACK seq=y ack=x+1"]
    assert states(lad) == [("SYN-SENT", "CLOSED"), ("CLOSED", "CLOSED")]
    assert lad.bases() == (f"x = {X} (ISN)", "y = 0 (first seq seen)")
    assert lad.steps[0].notes == ["server has no listener or connection for it: refused by RST"]


# ------------------------------------------------------------------------ close


def test_passive_close_by_the_server():
    lad = analyze(segs([*HANDSHAKE, pkt(0.1, s2c, FIN | ACK, Y + 1, X + 1),
                        pkt(0.2, c2s, FIN | ACK, X + 1, Y + 2),
                        pkt(0.3, s2c, ACK, Y + 2, X + 2)]))
    assert states(lad)[3:] == [("CLOSE-WAIT", "FIN-WAIT-1"), ("LAST-ACK", "TIME-WAIT"),
                               ("CLOSED", "TIME-WAIT")]


def test_simultaneous_close():
    lad = analyze(segs([*HANDSHAKE, pkt(0.1, c2s, FIN | ACK, X + 1, Y + 1),
                        pkt(0.1001, s2c, FIN | ACK, Y + 1, X + 1),
                        pkt(0.2, c2s, ACK, X + 2, Y + 2), pkt(0.2001, s2c, ACK, Y + 2, X + 2)]))
    assert states(lad)[3:] == [("FIN-WAIT-1", "CLOSE-WAIT"), ("CLOSING", "LAST-ACK"),
                               ("CLOSING", "CLOSED"), ("TIME-WAIT", "CLOSED")]
    # The server's FIN crossed the client's: from the wire's view it is in CLOSE-WAIT,
    # then LAST-ACK; the client sees both FINs cross (CLOSING, then TIME-WAIT).


def test_rst_in_established_closes_both():
    lad = analyze(segs([*HANDSHAKE, pkt(0.1, s2c, RST | ACK, Y + 1, X + 1)]))
    assert states(lad)[-1] == ("CLOSED", "CLOSED")


def test_capture_started_mid_connection():
    lad = analyze(segs([pkt(0.0, c2s, PSH | ACK, X, Y, 10), pkt(0.1, s2c, ACK, Y, X + 10)]))
    assert lad.initial == (State.ESTABLISHED, State.ESTABLISHED)
    assert [lad.label(s) for s in lad.steps] == ["PSH,ACK seq=x ack=y len=10",
                                                 "ACK seq=y ack=x+10"]
    assert lad.bases() == (f"x = {X} (first seq seen)", f"y = {Y} (first seq seen)")


# --------------------------------------------------------------- retransmission


def test_data_retransmission_marks_the_lost_original(tmp_path, capsys):
    packets = [*HANDSHAKE, pkt(0.1, c2s, PSH | ACK, X + 1, Y + 1, 100),
               pkt(0.3, c2s, PSH | ACK, X + 1, Y + 1, 100),
               pkt(0.301, s2c, ACK, Y + 1, X + 101)]
    out = draw(tmp_path, packets, capsys)
    assert [a[0] for a in arrows(out)][3:] == [
        "PSH,ACK seq=x+1 ack=y+1 len=100 (lost)",
        "PSH,ACK seq=x+1 ack=y+1 len=100 (retransmission #1)",
        "ACK seq=y+1 ack=x+101"]
    lost_arrow = next(line for line in out.splitlines() if "✕" in line)
    assert lost_arrow.rstrip().endswith("│ ESTABLISHED")
    assert "─✕ " in lost_arrow  # stops short of the server's lifeline


def test_lost_fin_is_not_seen_by_the_receiver():
    lad = analyze(segs([*HANDSHAKE, pkt(0.1, c2s, FIN | ACK, X + 1, Y + 1),
                        pkt(0.5, c2s, FIN | ACK, X + 1, Y + 1),
                        pkt(0.501, s2c, ACK, Y + 1, X + 2)]))
    assert [s.lost for s in lad.steps][3:] == [True, False, False]
    assert states(lad)[3:] == [("FIN-WAIT-1", "ESTABLISHED"), ("FIN-WAIT-1", "CLOSE-WAIT"),
                               ("FIN-WAIT-2", "CLOSE-WAIT")]


def test_spurious_retransmission_is_not_lost():
    """The original was acknowledged before it was sent again: not lost."""
    lad = analyze(segs([*HANDSHAKE, pkt(0.1, c2s, PSH | ACK, X + 1, Y + 1, 10),
                        pkt(0.2, s2c, ACK, Y + 1, X + 11),
                        pkt(0.3, c2s, PSH | ACK, X + 1, Y + 1, 10)]))
    assert [(s.retransmission, s.lost) for s in lad.steps][3:] == [(0, False), (0, False),
                                                                   (1, False)]


def test_duplicate_acks_are_not_retransmissions():
    lad = analyze(segs([*HANDSHAKE, *[pkt(0.1 + i, s2c, ACK, Y + 1, X + 1) for i in range(3)]]))
    assert [s.retransmission for s in lad.steps] == [0] * 6


def test_ascii_output(tmp_path, capsys):
    packets = [*HANDSHAKE, pkt(0.1, c2s, PSH | ACK, X + 1, Y + 1, 1),
               pkt(0.3, c2s, PSH | ACK, X + 1, Y + 1, 1)]
    out = draw(tmp_path, packets, capsys, "--ascii", "--width", "80")
    assert out.isascii()
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "|------" in out and "-X " in out and "|<-----" in out


# ---------------------------------------------------------------------- trace

TRACE = f"""\
2026-11-24 10:00:00,001 INFO tcpstack.trace: trace {B} {A} LISTEN -> SYN-RECEIVED: SYN received
2026-11-24 10:00:00,002 DEBUG tcpstack.trace: {B}-{A} SYN-RECEIVED -> ESTABLISHED: ACK of our SYN
2026-11-24 10:00:00,003 INFO tcpstack: something else entirely
2026-11-24 10:00:00,004 DEBUG tcpstack.trace: 10.0.0.2:80-10.0.0.9:1 LISTEN -> CLOSED: other
2026-11-24 10:00:00,005 INFO tcpstack.trace: trace {B} {A} ESTABLISHED -> FIN-WAIT-1: close()
2026-11-24 10:00:00,006 INFO tcpstack.trace: trace {B} {A} FIN-WAIT-1 -> FIN-WAIT-2: ACK of FIN
2026-11-24 10:00:00,007 INFO tcpstack.trace: trace {B} {A} FIN-WAIT-2 -> TIME-WAIT: FIN received
2026-11-24 10:01:00,007 INFO tcpstack.trace: trace {B} {A} TIME-WAIT -> CLOSED: 2*MSL elapsed
"""
SERVER_CLOSES = [*HANDSHAKE, pkt(0.1, s2c, FIN | ACK, Y + 1, X + 1),
                 pkt(0.11, c2s, ACK, X + 1, Y + 2), pkt(0.2, c2s, FIN | ACK, X + 1, Y + 2),
                 pkt(0.21, s2c, ACK, Y + 2, X + 2)]


def test_parse_trace_is_lenient():
    events = parse_trace([
        "2026-11-24 10:00:00,001 INFO tcpstack.trace: trace 10.0.0.2:80 10.0.0.1:40000 "
        "SYN-RECEIVED -> ESTABLISHED: ACK of SYN\n",
        "10.0.0.2:80-10.0.0.1:40000 State.SYN_RCVD -> State.CLOSED: handshake timeout",
        "t=1.5 trace local=10.0.0.2:80 remote=10.0.0.1:40000 SYN-RCVD -> LISTEN: RST",
        "no addresses here SYN-SENT -> CLOSED: refused",
        "10.0.0.2:80 10.0.0.1:40000 NOT-A-STATE -> CLOSED: nope",
    ])
    assert [(str(e.local), str(e.remote), e.old, e.new, e.cause) for e in events] == [
        (B, A, State.SYN_RCVD, State.ESTABLISHED, "ACK of SYN"),
        (B, A, State.SYN_RCVD, State.CLOSED, "handshake timeout"),
        (B, A, State.SYN_RCVD, State.LISTEN, "RST"),
    ]


def test_trace_gives_the_stack_side_states_and_causes(tmp_path, capsys):
    (tmp_path / "trace.log").write_text(TRACE)
    out = draw(tmp_path, SERVER_CLOSES, capsys, "--trace", str(tmp_path / "trace.log"))
    assert [a[2:] for a in arrows(out)] == [
        ("SYN-SENT", "SYN-RECEIVED"), ("ESTABLISHED", "SYN-RECEIVED"),
        ("ESTABLISHED", "ESTABLISHED"), ("CLOSE-WAIT", "FIN-WAIT-1"),
        ("CLOSE-WAIT", "FIN-WAIT-2"), ("LAST-ACK", "TIME-WAIT"), ("CLOSED", "TIME-WAIT")]
    notes = [line.split("·", 1)[1].strip(" │") for line in out.splitlines() if "·" in line]
    assert notes == ["server LISTEN -> SYN-RECEIVED: SYN received",
                     "server SYN-RECEIVED -> ESTABLISHED: ACK of our SYN",
                     "server ESTABLISHED -> FIN-WAIT-1: close()",
                     "server FIN-WAIT-1 -> FIN-WAIT-2: ACK of FIN",
                     "server FIN-WAIT-2 -> TIME-WAIT: FIN received",
                     "server TIME-WAIT -> CLOSED: 2*MSL elapsed"]
    # The timer's transition comes after the last segment, with the final states.
    assert out.splitlines()[-1].split() == ["CLOSED", "│", "│", "CLOSED"]


def test_trace_wins_over_the_replay():
    """The trace says the server never left SYN-RECEIVED (it never got the ACK the
    capture shows); its side shows that, the client's side stays replayed."""
    trace = parse_trace([
        f"{B} {A} LISTEN -> SYN-RECEIVED: SYN received",
        f"{B} {A} SYN-RECEIVED -> CLOSED: handshake timeout, RST sent"])
    lad = analyze(segs([*HANDSHAKE, pkt(7.0, s2c, RST, Y + 1)]), client=CLIENT, server=SERVER,
                  trace=trace)
    assert states(lad) == [("SYN-SENT", "SYN-RECEIVED"), ("ESTABLISHED", "SYN-RECEIVED"),
                           ("ESTABLISHED", "SYN-RECEIVED"), ("CLOSED", "CLOSED")]
    assert lad.steps[3].notes == ["server SYN-RECEIVED -> CLOSED: handshake timeout, RST sent"]


def test_trace_of_the_client_side_and_an_unmatched_transition():
    """`tcpstack connect` is the client: the local address picks the side. A
    transition the replay never makes goes with the next matched one."""
    trace = parse_trace([
        f"{A} {B} CLOSED -> SYN-SENT: connect()",
        f"{A} {B} SYN-SENT -> CLOSING: made up, the replay has no such step",
        f"{A} {B} CLOSING -> ESTABLISHED: SYN+ACK received"])
    lad = analyze(segs(HANDSHAKE), client=CLIENT, server=SERVER, trace=trace)
    assert states(lad) == [("SYN-SENT", "SYN-RECEIVED"), ("ESTABLISHED", "SYN-RECEIVED"),
                           ("ESTABLISHED", "ESTABLISHED")]
    assert [len(s.notes) for s in lad.steps] == [1, 2, 0]
    assert lad.steps[1].notes[0].startswith("client SYN-SENT -> CLOSING")


def test_trace_of_another_connection_warns(tmp_path, capsys):
    (tmp_path / "trace.log").write_text("10.9.9.9:1 10.9.9.8:2 LISTEN -> CLOSED: x\n")
    rc, out, err = run([write_pcap(tmp_path / "c.pcap", HANDSHAKE), "--trace",
                        str(tmp_path / "trace.log")], capsys)
    assert rc == 0 and out
    assert err.startswith("tcpstack: warning:") and err.count("\n") == 1


# -------------------------------------------------------------------- capture

OTHER = ("10.0.0.1:40001", "10.0.0.2:8080")
TWO_CONNECTIONS = [HANDSHAKE[0], pkt(0.0001, OTHER, SYN, 7), HANDSHAKE[1],
                   pkt(0.0002, OTHER[::-1], SYN | ACK, 99, 8), HANDSHAKE[2]]


@pytest.mark.parametrize(("conn", "first"), [
    (None, "client 10.0.0.1:40000"),
    ("80", "client 10.0.0.1:40000"),
    ("40000", "client 10.0.0.1:40000"),
    ("8080", "client 10.0.0.1:40001"),
    ("10.0.0.2:8080-10.0.0.1:40001", "client 10.0.0.1:40001"),
    ("10.0.0.1:40001-10.0.0.2:8080", "client 10.0.0.1:40001"),
])
def test_conn_selection(tmp_path, capsys, conn, first):
    out = draw(tmp_path, TWO_CONNECTIONS, capsys, *(["--conn", conn] if conn else []))
    assert out.split("\n")[0].split()[:2] == first.split()
    assert len(arrows(out)) == (3 if first.endswith("40000") else 2)


def test_client_is_the_receiver_of_the_first_synack(tmp_path, capsys):
    """The capture missed the SYN: the SYN+ACK's sender is still the server."""
    out = draw(tmp_path, HANDSHAKE[1:], capsys)
    assert out.split("\n")[0].split() == ["client", A, "server", B]
    assert arrows(out) == [("SYN,ACK seq=y ack=x+1", "<", "ESTABLISHED", "SYN-RECEIVED"),
                           ("ACK seq=x+1 ack=y+1", ">", "ESTABLISHED", "ESTABLISHED")]


@pytest.mark.parametrize("linktype", [101, 12, dpkt.pcap.DLT_EN10MB])
def test_link_types(tmp_path, capsys, linktype):
    rc, out, _ = run([write_pcap(tmp_path / "c.pcap", HANDSHAKE, linktype)], capsys)
    assert rc == 0 and len(arrows(out)) == 3


def test_pcapng_and_truncated_payload(tmp_path):
    """A short snaplen keeps the headers only: len= still comes from the IP length."""
    path = tmp_path / "c.pcapng"
    with open(path, "wb") as f:
        w = dpkt.pcapng.Writer(f, linktype=101)
        for p in [*HANDSHAKE, pkt(0.1, c2s, PSH | ACK, X + 1, Y + 1, 1000)]:
            w.writepkt(ip_bytes(p)[:54], ts=p[0])
    packets = ladder.read_capture(str(path))
    assert [p.length for p in packets] == [0, 0, 0, 1000]


def test_non_tcp_packets_are_skipped(tmp_path):
    udp = bytes(dpkt.ip.IP(src=socket.inet_aton("10.0.0.1"), dst=socket.inet_aton("10.0.0.2"),
                           p=dpkt.ip.IP_PROTO_UDP, data=dpkt.udp.UDP(sport=1, dport=2)))
    path = tmp_path / "c.pcap"
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=101)
        for buf in (udp, b"\x45garbage", b"\x60" + bytes(39), ip_bytes(HANDSHAKE[0])):
            w.writepkt(buf, ts=1.0)
    assert len(ladder.read_capture(str(path))) == 1


# --------------------------------------------------------------------- errors


def test_missing_file(tmp_path, capsys):
    rc, out, err = run([str(tmp_path / "nope.pcap")], capsys)
    assert (rc, out) == (2, "")
    assert err.startswith("tcpstack: error:") and "No such file" in err and err.count("\n") == 1


@pytest.mark.parametrize("content", [b"", b"this is not a capture at all, sorry!!"])
def test_not_a_pcap(tmp_path, capsys, content):
    (tmp_path / "x.pcap").write_bytes(content)
    rc, _, err = run([str(tmp_path / "x.pcap")], capsys)
    assert rc == 2 and "not a pcap file" in err and err.count("\n") == 1


def test_unsupported_link_type(tmp_path, capsys):
    rc, _, err = run([write_pcap(tmp_path / "c.pcap", [], linktype=105)], capsys)
    assert rc == 2 and "unsupported link type 105" in err


def test_no_tcp_connection(tmp_path, capsys):
    rc, out, err = run([write_pcap(tmp_path / "c.pcap", [])], capsys)
    assert (rc, out, err) == (1, "", "tcpstack: error: no TCP connection in the capture\n")


def test_conn_matches_nothing(tmp_path, capsys):
    rc, _, err = run([write_pcap(tmp_path / "c.pcap", HANDSHAKE), "--conn", "443"], capsys)
    assert rc == 1 and "matches --conn" in err and err.count("\n") == 1


@pytest.mark.parametrize("conn", ["0", "70000", "10.0.0.1:1", "10.0.0.1:1-10.0.0.300:2",
                                  "a:b-c:d", "10.0.0.1:0-10.0.0.2:2"])
def test_bad_conn(tmp_path, capsys, conn):
    rc, _, err = run([write_pcap(tmp_path / "c.pcap", HANDSHAKE), "--conn", conn], capsys)
    assert rc == 2 and err.startswith("tcpstack: error:") and err.count("\n") == 1


def test_bad_width_and_missing_trace(tmp_path, capsys):
    path = write_pcap(tmp_path / "c.pcap", HANDSHAKE)
    assert run([path, "--width", "20"], capsys)[0] == 2
    rc, _, err = run([path, "--trace", str(tmp_path / "none.log")], capsys)
    assert rc == 2 and "No such file" in err


# ------------------------------------------------------------------------ SVG

SVG = "{http://www.w3.org/2000/svg}"


def test_svg_has_one_arrow_per_segment(tmp_path, capsys):
    packets = [*HANDSHAKE, pkt(0.1, c2s, PSH | ACK, X + 1, Y + 1, 100),
               pkt(0.3, c2s, PSH | ACK, X + 1, Y + 1, 100), pkt(0.301, s2c, ACK, Y + 1, X + 101)]
    out_path = tmp_path / "out.svg"
    assert draw(tmp_path, packets, capsys, "--svg", str(out_path)) == ""
    root = ET.parse(out_path).getroot()
    assert root.tag == f"{SVG}svg"
    arrows_ = [e for e in root.iter(f"{SVG}line") if "seg" in e.get("class", "").split()]
    assert len(arrows_) == len(packets)
    assert [("retx" in e.get("class", ""), "lost" in e.get("class", ""),
             e.get("marker-end") is not None) for e in arrows_][3:] == [
        (False, True, False), (True, False, True), (False, False, True)]
    assert float(arrows_[0].get("y2")) > float(arrows_[0].get("y1"))  # slanted, downwards
    texts = [e.text for e in root.iter(f"{SVG}text")]
    for label in ("SYN seq=x", "SYN,ACK seq=y ack=x+1", "ACK seq=x+1 ack=y+1",
                  "PSH,ACK seq=x+1 ack=y+1 len=100 (lost)", "SYN-SENT", "ESTABLISHED",
                  "LISTEN", f"x = {X} (ISN)"):
        assert label in texts
    assert len([e for e in root.iter(f"{SVG}line") if e.get("class") == "lifeline"]) == 2


def test_svg_to_stdout_escapes_text():
    svg = render_svg(analyze(segs(HANDSHAKE), client="<A & B>"), absolute=True)
    root = ET.fromstring(svg)
    assert "<A & B>" in [e.text for e in root.iter(f"{SVG}text")]
    assert f"SYN seq={X}" in svg


def test_svg_cli_stdout(tmp_path, capsys):
    out = draw(tmp_path, HANDSHAKE, capsys, "--svg", "-")
    assert ET.fromstring(out.encode()).tag == f"{SVG}svg"


# ------------------------------------------------------------------------ API


def test_render_text_over_plain_records():
    text = render_text([Seg(5.0, True, SYN, 100), Seg(5.5, False, SYN | ACK, 300, 101)])
    assert text.splitlines()[0].split() == ["client", "server"]
    assert [a[:2] for a in arrows(text)] == [("SYN seq=x", ">"), ("SYN,ACK seq=y ack=x+1", "<")]
    assert "0.500000" in text


def test_seg_of_a_stack_segment():
    s = Segment(b"\n\0\0\1", b"\n\0\0\2", 1, 2, seq=5, ack=9, flags=PSH | ACK, window=100,
                payload=b"abc")
    assert Seg.of(s, 1.5, True) == Seg(1.5, True, PSH | ACK, 5, 9, 3)


def test_add_arguments_and_run_for_the_main_command_line(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    ladder.add_arguments(sub.add_parser("ladder"))
    args = parser.parse_args(["ladder", write_pcap(tmp_path / "c.pcap", HANDSHAKE),
                              "--absolute"])
    assert ladder.run(args) == 0
    assert f"SYN seq={X}" in capsys.readouterr().out


def test_empty_ladder_renders():
    assert render_text([]).splitlines()[0].split() == ["client", "server"]
    assert ET.fromstring(render_svg([])).tag == f"{SVG}svg"
