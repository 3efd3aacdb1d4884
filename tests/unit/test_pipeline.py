"""The packet pipeline (tcpstack.shell.pipeline): the taps between a stack and its TUN
sit in one documented order, whatever the order they were put in, and with no
tap the stack's ends are the TUN's write and `handle_packet` themselves."""

from __future__ import annotations

import asyncio

import pytest

from tcpstack.core.segment import Flags
from tcpstack.lab.impair import ImpairPlan, install, parse_rules
from tcpstack.lab.observe import Observability, ObserveSettings
from tcpstack.shell.pipeline import Pipeline, Receive, Send, Tap
from tcpstack.shell.stack import Stack
from tests.helpers import VIP, packet
from tests.unit.test_pcap import read_back


def test_stages_compose_in_the_documented_order_whatever_order_they_were_put() -> None:
    seen: list[str] = []

    def stage(name: str) -> Tap:
        def inbound(receive: Receive) -> Receive:
            return lambda p, now: (seen.append(f"{name} in"), receive(p, now))[-1]

        def outbound(write: Send) -> Send:
            return lambda p: (seen.append(f"{name} out"), write(p))[-1]
        return Tap(inbound, outbound)

    pipeline = Pipeline()
    pipeline.put("impairment", stage("impairment"))
    pipeline.put("capture", stage("capture"))
    pipeline.receive(lambda p, now: seen.append("stack"))(b"p", 0.0)
    pipeline.output(lambda p: seen.append("tun"))(b"p")
    assert seen == ["capture in", "impairment in", "stack",
                    "impairment out", "capture out", "tun"]
    with pytest.raises(ValueError, match="no position 'firewall'"):
        pipeline.put("firewall", stage("firewall"))


def test_an_empty_pipeline_is_the_ends_themselves() -> None:
    def receive(p: bytes, now: float) -> None: ...
    def write(p: bytes) -> None: ...

    pipeline = Pipeline()
    pipeline.put("capture", Tap())  # a tap on neither path adds nothing either
    assert pipeline.receive(receive) is receive and pipeline.output(write) is write


async def test_without_taps_the_stack_writes_to_the_tun_directly(tmp_path) -> None:
    """No extra call per packet: the ends are the TUN's write and handle_packet."""
    write = [].append
    observing = Observability(ObserveSettings(pcap=None, control=str(tmp_path / "c.sock"),
                                              trace=False))
    stack = Stack(VIP, write)
    try:
        install(stack, ImpairPlan())
        await observing.attach(stack)
        assert stack.output is write and stack.receive == stack.handle_packet
    finally:
        await observing.close()
        await stack.close()


@pytest.mark.parametrize("capture_first", [False, True])
async def test_the_capture_shows_what_the_impairment_drops_inbound_not_outbound(
        tmp_path, capture_first: bool) -> None:
    """The capture is on the TUN side both ways: it records the second SYN,
    which the inbound impairment then drops, but not the first RST, which the
    outbound impairment dropped; the same whichever tap was put first."""
    path = tmp_path / "x.pcap"
    wire: list[bytes] = []
    observing = Observability(ObserveSettings(pcap=str(path), control=str(tmp_path / "c.sock"),
                                              trace=False))
    stack = Stack(VIP, wire.append)
    plan = ImpairPlan(rules=parse_rules(["in:drop:nth=2", "out:drop:nth=1"]))
    try:
        if capture_first:
            await observing.attach(stack)
        impairments = install(stack, plan)
        if not capture_first:
            await observing.attach(stack)
        now = asyncio.get_running_loop().time()
        syns = [packet(Flags.SYN, seq) for seq in (1000, 2000, 3000)]  # to a closed port
        for syn in syns:
            stack.receive(syn, now)  # what the TUN reader calls
        assert stack.stats["OutRsts"] == 2 and stack.stats["ImpairRuleDropped"] == 2
        assert len(wire) == 1  # the third SYN's RST
        impairments.close()
    finally:
        await observing.close()
        await stack.close()
    assert [buf for _, buf in read_back(path.read_bytes())[1]] == [*syns, *wire]
