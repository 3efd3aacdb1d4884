"""Impairment rules (--impair-rule): the parser, the matcher on a fake clock with a
fake state lookup (exact: which packet, how often, when), the real state lookup in
a `Stack`, and the command line."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Iterable

import pytest

from tcpstack import cli
from tcpstack.core.segment import Flags, Options, Segment
from tcpstack.lab.impair import (
    Impairment,
    ImpairPlan,
    ImpairRule,
    ImpairSpec,
    ImpairSpecError,
    TcpInfo,
    install,
    parse_rules,
    state_lookup,
    tcp_info,
)
from tcpstack.shell.stack import Stack
from tcpstack.wire import codec
from tests.helpers import idle
from tests.unit.tcpkit import PEER, PEER_PORT, US, US_PORT, X, Y, seg

SYN, ACK, FIN, PSH, RST = Flags.SYN, Flags.ACK, Flags.FIN, Flags.PSH, Flags.RST


def inbound(flags: Flags, *, dport: int = US_PORT, payload: bytes = b"", y: int = Y) -> bytes:
    """A packet from the peer (10.0.0.1:40000) to us (10.0.0.2:`dport`), whose ISS is `y`."""
    syn = bool(flags & SYN)
    s = seg(flags, X if syn else X + 1, y + 1 if flags & ACK else 0, payload,
            mss=1460 if syn else None)
    s.dport = dport
    return codec.encode(s)


def outbound(flags: Flags) -> bytes:
    """A packet from us (10.0.0.2:80) to the peer."""
    return codec.encode(Segment(US, PEER, US_PORT, PEER_PORT, Y, X + 1, flags, 65535,
                                Options(mss=1460 if flags & SYN else None)))


def core(*rules: str, spec: ImpairSpec | None = None,
         states: Iterable[str] = ()) -> Impairment:
    """An Impairment with these rules; the state lookup answers `states` in turn
    (then CLOSED), so a test scripts what the TCB would be in for each lookup.
    There is one lookup per packet whose flags and port match a rule with a state."""
    answers = iter(states)
    return Impairment(spec or ImpairSpec(), random.Random(1), Counter(),
                      rules=parse_rules(rules), state_of=lambda tcp: next(answers, "CLOSED"))


def feed(imp: Impairment, packets: list[bytes], gap: float = 0.1) -> list[tuple[float, bytes]]:
    """Push one packet every `gap` s of fake time from t=0; (release time, packet) pairs."""
    out: list[tuple[float, bytes]] = []
    for i, p in enumerate(packets):
        now = i * gap
        while (due := imp.next_due()) is not None and due < now:
            out += [(due, q) for q in imp.pop_due(due)]
        imp.push(p, now)
        out += [(now, q) for q in imp.pop_due(now)]
    while (due := imp.next_due()) is not None:
        out += [(due, q) for q in imp.pop_due(due)]
    return out


def names(released: list[tuple[float, bytes]]) -> list[str]:
    """The released packets as their flags, e.g. ['SYN', 'ACK']."""
    out = []
    for _, p in released:
        info = tcp_info(p)
        assert info is not None
        out.append(str(info).rsplit(" ", 1)[1])
    return out


# -- parsing ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("in:drop:flags=ACK,state=SYN-RECEIVED,nth=1",
         ImpairRule(1, "in", "drop", flags=0x10, state="SYN-RECEIVED", nth=(1, 1))),
        ("out:delay=2s:flags=SYN+ACK,nth=1",
         ImpairRule(1, "out", "delay", delay=2.0, flags=0x12, nth=(1, 1))),
        ("in:dup:flags=FIN", ImpairRule(1, "in", "dup", flags=0x01)),
        ("in:drop:flags~ack,port=80,nth=2-4",
         ImpairRule(1, "in", "drop", flags=0x10, flags_exact=False, port=80, nth=(2, 4))),
        ("out:drop:nth=3-", ImpairRule(1, "out", "drop", nth=(3, None))),
        ("in:delay=250ms", ImpairRule(1, "in", "delay", delay=0.25)),
        ("in:drop", ImpairRule(1, "in", "drop")),
    ],
)
def test_parse_rule(text: str, want: ImpairRule) -> None:
    (rule,) = parse_rules([text])
    assert rule == want
    assert parse_rules([str(rule)]) == (rule,)  # the printed form parses back


def test_rules_are_numbered_in_order_and_print_normalized() -> None:
    rules = parse_rules(["in:drop:nth=2,flags=ack+syn", "out:dup:state=TIME-WAIT"])
    assert [r.number for r in rules] == [1, 2]
    assert [str(r) for r in rules] == ["in:drop:flags=SYN+ACK,nth=2", "out:dup:state=TIME-WAIT"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("in", "expected DIR:ACTION"),
        ("both:drop", "unknown direction 'both' \\(in or out\\)"),
        ("in:kill", "unknown action 'kill'"),
        ("in:drop=1", "unknown action 'drop=1'"),
        ("in:delay", "delay needs a duration"),
        ("in:delay=2", "expected a duration"),
        ("in:delay=61s", "over 60s"),
        ("in:drop:", "expected flags=F, flags~F, state=S, port=N or nth=N"),
        ("in:drop:flags", "expected flags=F"),
        ("in:drop:colour=red", "got 'colour=red'"),
        ("in:drop:flags=AKC", "unknown TCP flag 'AKC'"),
        ("in:drop:flags=ACK,flags~SYN", "flags given twice"),
        ("in:drop:state=SYN-RCVD", "unknown state 'SYN-RCVD'"),
        ("in:drop:port=0", "port=0: expected 1..65535"),
        ("in:drop:port=http", "port=http: expected 1..65535"),
        ("in:drop:nth=0", "nth=0: expected N, A-B or A-"),
        ("in:drop:nth=-3", "nth=-3: expected N"),
        ("in:drop:nth=4-2", "the range ends before it starts"),
    ],
)
def test_parse_rule_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ImpairSpecError, match=message):
        parse_rules([text])


def test_tcp_info_reads_the_header_and_ignores_the_rest() -> None:
    assert tcp_info(inbound(SYN | ACK)) == TcpInfo(PEER, US, PEER_PORT, US_PORT, 0x12)
    assert str(tcp_info(inbound(FIN | ACK))) == "10.0.0.1:40000 > 10.0.0.2:80 FIN+ACK"
    later_fragment = bytearray(inbound(ACK))
    later_fragment[7] = 1  # fragment offset 8: no TCP header in this one
    icmp = bytearray(inbound(ACK))
    icmp[9] = 1
    for junk in (bytes(later_fragment), bytes(icmp), b"", b"\x45" + bytes(10), b"\x60" * 60):
        assert tcp_info(junk) is None


# -- the matcher on a fake clock ----------------------------------------------------------

def test_drop_the_first_ack_in_syn_received_only() -> None:
    """The textbook chapter's lost third segment, once: the retransmitted one gets through."""
    imp = core("in:drop:flags=ACK,state=SYN-RECEIVED,nth=1",
               states=["SYN-RECEIVED", "SYN-RECEIVED"])  # the SYN is not looked up
    out = feed(imp, [inbound(SYN), inbound(ACK), inbound(ACK)])
    assert [(t, n) for (t, _), n in zip(out, names(out), strict=True)] == [
        (0.0, "SYN"), (0.2, "ACK")]
    assert imp.stats == Counter(ImpairRuleDropped=1)


def test_state_filter_skips_other_states_without_counting_them() -> None:
    imp = core("in:drop:flags=ACK,state=SYN-RECEIVED,nth=1",
               states=["ESTABLISHED", "SYN-RECEIVED", "SYN-RECEIVED"])
    assert names(feed(imp, [inbound(ACK)] * 3)) == ["ACK", "ACK"]  # the 2nd was dropped


def test_every_match_without_nth() -> None:
    imp = core("in:drop:flags=ACK,state=SYN-RECEIVED", states=["SYN-RECEIVED"] * 3)
    assert feed(imp, [inbound(ACK)] * 3) == []
    assert imp.stats == Counter(ImpairRuleDropped=3)


def test_flags_exact_and_flags_including() -> None:
    packets = [inbound(ACK), inbound(ACK | PSH, payload=b"x"), inbound(FIN | ACK), inbound(SYN)]
    assert names(feed(core("in:drop:flags=ACK"), packets)) == ["PSH+ACK", "FIN+ACK", "SYN"]
    assert names(feed(core("in:drop:flags~ACK"), packets)) == ["SYN"]
    assert names(feed(core("in:drop:flags~FIN+ACK"), packets)) == ["ACK", "PSH+ACK", "SYN"]


@pytest.mark.parametrize(
    ("nth", "kept"),
    [("1", [2, 3, 4, 5, 6]), ("2-4", [1, 5, 6]), ("3-", [1, 2]), ("6-9", [1, 2, 3, 4, 5])],
)
def test_nth_counts_matches_from_one(nth: str, kept: list[int]) -> None:
    packets = [inbound(ACK | PSH, payload=b"%d" % i) for i in range(1, 7)]
    out = feed(core(f"in:drop:flags~ACK,nth={nth}"), [inbound(SYN), *packets])
    assert [p for _, p in out] == [inbound(SYN)] + [packets[i - 1] for i in kept]


def test_port_matches_either_end() -> None:
    packets = [inbound(SYN, dport=80), inbound(SYN, dport=81), outbound(SYN | ACK)]
    imp = Impairment(ImpairSpec(), random.Random(1), rules=parse_rules(["in:drop:port=80"]))
    assert [p for _, p in feed(imp, packets)] == [inbound(SYN, dport=81)]
    imp = Impairment(ImpairSpec(), random.Random(1), rules=parse_rules(["in:drop:port=40000"]))
    assert feed(imp, packets) == []


def test_delay_holds_the_nth_match_and_lets_the_rest_overtake() -> None:
    imp = core("out:delay=2s:flags=SYN+ACK,nth=1")
    out = feed(imp, [outbound(SYN | ACK), outbound(ACK), outbound(SYN | ACK)], gap=0.5)
    assert [(t, n) for (t, _), n in zip(out, names(out), strict=True)] == [
        (0.5, "ACK"), (1.0, "SYN+ACK"), (2.0, "SYN+ACK")]
    assert imp.stats == Counter(ImpairRuleDelayed=1)  # not ImpairDelayed: that is random


def test_dup_sends_a_copy_right_behind_every_match() -> None:
    imp = core("in:dup:flags~FIN")
    out = feed(imp, [inbound(ACK), inbound(FIN | ACK), inbound(ACK)])
    assert [(t, n) for (t, _), n in zip(out, names(out), strict=True)] == [
        (0.0, "ACK"), (0.1, "FIN+ACK"), (0.1, "FIN+ACK"), (0.2, "ACK")]
    assert imp.stats == Counter(ImpairRuleDuplicated=1)


def test_first_rule_that_picks_wins_and_hides_the_packet_from_later_rules() -> None:
    imp = core("in:drop:flags=ACK,nth=2", "in:dup:flags=ACK")
    acks = [inbound(ACK)] * 3
    assert len(feed(imp, acks)) == 4  # 1st: counted by rule 1, duplicated by rule 2;
    # 2nd: dropped by rule 1, never counted by rule 2; 3rd: duplicated (rule 2's 2nd match)
    assert imp.stats == Counter(ImpairRuleDropped=1, ImpairRuleDuplicated=2)
    assert imp._matched == [3, 2]


def test_rules_come_before_the_random_stage() -> None:
    lossy = core("in:dup:flags=ACK", spec=ImpairSpec(loss=1.0, seed=1))
    assert feed(lossy, [inbound(ACK)]) == []  # duplicated by the rule, then lost
    assert lossy.stats == Counter(ImpairRuleDuplicated=1, ImpairDropped=1)
    late = core("in:delay=1s", spec=ImpairSpec(delay=0.020, seed=1))
    assert [t for t, _ in feed(late, [inbound(ACK)])] == [1.020]
    assert late.stats == Counter(ImpairRuleDelayed=1, ImpairDelayed=1)


def test_non_tcp_packets_never_match() -> None:
    ping = bytearray(inbound(ACK))
    ping[9] = 1
    imp = core("in:drop")
    assert feed(imp, [bytes(ping), b"garbage"]) == [(0.0, bytes(ping)), (0.1, b"garbage")]


def test_state_is_looked_up_once_and_only_when_the_header_matches() -> None:
    calls: list[TcpInfo] = []

    def lookup(tcp: TcpInfo) -> str:
        calls.append(tcp)
        return "ESTABLISHED"

    imp = Impairment(ImpairSpec(), random.Random(1), rules=parse_rules(
        ["in:drop:flags=FIN,state=CLOSE-WAIT", "in:dup:flags=FIN,state=LAST-ACK",
         "in:drop:flags=ACK,state=ESTABLISHED,nth=2"]), state_of=lookup)
    assert len(feed(imp, [inbound(FIN), inbound(SYN), inbound(ACK)])) == 3
    assert [c.flags for c in calls] == [FIN, ACK]


def test_every_hit_is_logged_with_rule_and_packet(caplog) -> None:
    imp = core("in:drop:flags=ACK,state=SYN-RECEIVED,nth=1", "out:delay=2s:flags=SYN+ACK",
               states=["SYN-RECEIVED"])
    with caplog.at_level(logging.INFO, logger="tcpstack.lab.impair"):
        feed(imp, [inbound(ACK), outbound(SYN | ACK)])
    assert caplog.messages == [
        "impair rule 1 (in:drop:flags=ACK,state=SYN-RECEIVED,nth=1) dropped "
        "10.0.0.1:40000 > 10.0.0.2:80 ACK",
        "impair rule 2 (out:delay=2s:flags=SYN+ACK) delayed "
        "10.0.0.2:80 > 10.0.0.1:40000 SYN+ACK by 2s",
    ]


# -- in a stack: the real state lookup ----------------------------------------------------

async def test_state_lookup_sees_listen_closed_and_the_tcb_state() -> None:
    sent: list[bytes] = []
    stack = Stack("10.0.0.2", sent.append)
    try:
        await stack.start_server(idle, US_PORT)
        into, out_of = state_lookup(stack, inbound=True), state_lookup(stack, inbound=False)

        def state(lookup, packet: bytes) -> str:
            info = tcp_info(packet)
            assert info is not None
            return lookup(info)

        assert state(into, inbound(SYN)) == "LISTEN"  # a listener, no TCB
        assert state(into, inbound(ACK)) == "LISTEN"  # the LISTEN rules answer it (RST)
        assert state(into, inbound(SYN, dport=81)) == "CLOSED"
        stack.handle_packet(inbound(SYN), 0.0)
        assert state(out_of, sent[-1]) == "SYN-RECEIVED"  # our SYN+ACK
        assert state(into, inbound(ACK)) == "SYN-RECEIVED"
        other = bytearray(inbound(ACK))
        other[19] = 9  # to 10.0.0.9: not for the stack
        assert state(into, bytes(other)) == "CLOSED"
    finally:
        await stack.close()


async def test_installed_rules_drop_the_third_segment_once() -> None:
    """The lost third segment in a real stack: the first ACK in SYN-RECEIVED is
    dropped, the next one completes the handshake; the SYN+ACK is duplicated
    on the way out; a SYN to a closed port is swallowed (no RST)."""
    sent: list[bytes] = []
    stack = Stack("10.0.0.2", sent.append)
    accepted = asyncio.Event()

    async def handler(reader: object, writer: object) -> None:
        accepted.set()

    try:
        await stack.start_server(handler, US_PORT)
        plan = ImpairPlan(rules=parse_rules([
            "in:drop:flags=ACK,state=SYN-RECEIVED,nth=1",
            "in:drop:state=CLOSED",
            "out:dup:flags=SYN+ACK,state=SYN-RECEIVED",
        ]))
        impairments = install(stack, plan)
        now = asyncio.get_running_loop().time()
        stack.receive(inbound(SYN, dport=81), now)
        assert sent == [] and stack.stats["InSegs"] == 0
        stack.receive(inbound(SYN), now)
        synack = codec.decode(sent[0])
        assert len(sent) == 2 and sent[0] == sent[1] and synack.flags == SYN | ACK
        stack.receive(inbound(ACK, y=synack.seq), now)
        assert stack.stats["InSegs"] == 1  # the SYN only
        stack.receive(inbound(ACK, y=synack.seq), now)
        await asyncio.wait_for(accepted.wait(), 2)
        assert {k: v for k, v in stack.stats.items() if k.startswith("Impair")} == {
            "ImpairRuleDropped": 2, "ImpairRuleDuplicated": 1}
        impairments.close()
    finally:
        await stack.close()


async def test_rules_alone_install_only_their_direction() -> None:
    sent: list[bytes] = []
    stack = Stack("10.0.0.2", sent.append)
    try:
        receive = stack.receive
        impairments = install(stack, ImpairPlan(rules=parse_rules(["out:drop:flags~RST"])))
        assert stack.receive == receive and impairments.inbound is None
        stack.handle_packet(inbound(SYN, dport=81), asyncio.get_running_loop().time())
        assert sent == [] and stack.stats["OutRsts"] == 1
        assert stack.stats["ImpairRuleDropped"] == 1
        impairments.close()
    finally:
        await stack.close()


# -- the command line ---------------------------------------------------------------------

def test_command_line_rules_and_split_synack_reach_the_settings() -> None:
    args = cli.build_parser().parse_args([
        "serve", "--split-synack", "--impair", "in:loss=1%",
        "--impair-rule", "in:drop:flags=ACK,state=SYN-RECEIVED,nth=1",
        "--impair-rule", "out:delay=2s:flags=SYN+ACK"])
    s = cli.settings_from_args(args)
    assert s.daemon.config.split_synack
    assert s.daemon.impair.inbound == ImpairSpec(loss=0.01)
    assert [str(r) for r in s.daemon.impair.rules] == [
        "in:drop:flags=ACK,state=SYN-RECEIVED,nth=1", "out:delay=2s:flags=SYN+ACK"]
    plain = cli.settings_from_args(cli.build_parser().parse_args(["serve"]))
    assert not plain.daemon.config.split_synack and not plain.daemon.impair


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["serve", "--impair-rule", "in:drop:flags=AKC"],
         "tcpstack: error: --impair-rule: 'in:drop:flags=AKC': unknown TCP flag 'AKC'"),
        (["connect", "10.0.0.1", "80", "--impair-rule", "sideways:drop"],
         "unknown direction 'sideways'"),
        (["connect", "10.0.0.1", "80", "--split-synack"], "unrecognized arguments"),
    ],
)
def test_bad_rule_is_one_line_and_exit_2(argv: list[str], needle: str, capsys,
                                         monkeypatch) -> None:
    def trap(*args: object, **kwargs: object) -> None:
        raise AssertionError("a TUN device was created for a command line that should fail")

    monkeypatch.setattr(cli, "TunDevice", trap)
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and needle in lines[0], lines
