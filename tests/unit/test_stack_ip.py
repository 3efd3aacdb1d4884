"""The stack's IP layer with packets in memory: fragments reassembled into segments
and echo requests, echo replies fragmented, ICMP destination unreachable checked
(docs/ip.md; the integration tests use a real TUN and the kernel's ping)."""

from __future__ import annotations

import dpkt
import pytest

from tcpstack.core.config import TcpConfig
from tcpstack.core.segment import Options, Segment
from tcpstack.shell.stack import Stack
from tcpstack.wire import codec
from tcpstack.wire.fragments import Reassembler, fragment
from tests.helpers import PEER, VIP, VIP_B, Wire, echo, feed, packet, until
from tests.unit.test_stack import (
    ACK,
    SYN,
    connected,
    rig,  # noqa: F401 (a fixture)
)


def echo_request(payload: bytes, ident: int = 7, seqno: int = 1) -> bytes:
    icmp = dpkt.icmp.ICMP(type=8, data=dpkt.icmp.ICMP.Echo(id=ident, seq=seqno, data=payload))
    return bytes(dpkt.ip.IP(src=PEER, dst=VIP_B, p=1, ttl=64, data=icmp))


def halves(datagram: bytes, ident: int = 99) -> list[bytes]:
    """The datagram in two fragments, the second first (reassembly must not care)."""
    cut = (len(datagram) - 20) // 16 * 8
    return [fragment(datagram, cut, len(datagram) - 20, ident), fragment(datagram, 0, cut, ident)]


async def test_fragmented_syn_opens_a_connection(rig) -> None:  # noqa: F811
    stack, wire = rig
    await stack.start_server(echo, 80)
    for part in halves(packet(SYN, 1000)):
        feed(stack, part)
    [synack] = wire.segments()
    assert (synack.flags, synack.ack) == (SYN | ACK, 1001)
    assert (stack.stats["ReasmReqds"], stack.stats["ReasmOKs"], stack.stats["InSegs"]) == (2, 1, 1)
    assert stack.stats["Drop.fragment"] == 0


async def test_fragmented_data_reaches_the_application(rig) -> None:  # noqa: F811
    stack, wire = rig
    await stack.start_server(echo, 80)
    feed(stack, packet(SYN, 1000))
    [synack] = wire.segments()
    data = bytes(range(256)) * 5
    for part in halves(packet(ACK, 1001, synack.seq + 1, payload=data)):
        feed(stack, part)
    got = await wire.wait_for(lambda s: bool(s.payload))
    assert got.payload == data[:len(got.payload)] and got.ack == 1001 + len(data)


async def test_ping_2000_is_answered_in_fragments(rig) -> None:  # noqa: F811
    """`ping -s 2000`: the request comes in two fragments (MTU 1500), the reply
    leaves in two (Linux sends echo replies without DF and fragments them)."""
    stack, wire = rig
    payload = bytes(i % 256 for i in range(2000))
    for part in halves(echo_request(payload)):
        feed(stack, part)
    assert len(wire.sent) == 2 and all(len(p) <= 1500 for p in wire.sent)
    kernel = Reassembler(stack.stats.copy())
    whole = [kernel.receive(p, 0.0) for p in wire.sent][-1]
    reply = dpkt.ip.IP(whole)
    assert (reply.src, reply.dst, reply.data.type) == (VIP_B, PEER, 0)
    assert (reply.data.data.id, reply.data.data.seq, reply.data.data.data) == (7, 1, payload)
    assert (stack.stats["IcmpInEchos"], stack.stats["FragOKs"], stack.stats["FragCreates"]) == (
        1, 1, 2)


async def test_fragment_for_another_address_is_not_kept(rig) -> None:  # noqa: F811
    stack, _ = rig
    other = codec.encode(Segment(PEER, bytes((10, 0, 0, 3)), 1, 80, 0, 0, SYN, 100))
    feed(stack, halves(other)[0])
    assert stack.stats["Drop.not_for_us"] == 1 and len(stack.reassembler) == 0


async def test_incomplete_datagram_times_out_on_the_loop_timer() -> None:
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig(reasm_timeout=0.05))
    try:
        feed(stack, halves(packet(SYN, 1000))[0])
        assert len(stack.reassembler) == 1
        await until(lambda: stack.stats["ReasmTimeout"] == 1)
        assert (len(stack.reassembler), stack.reassembler.mem) == (0, 0)
    finally:
        await stack.close()


# -- ICMP destination unreachable (RFC 792, RFC 5927) ------------------------------------

def unreachable(quoted: bytes, code: int = 4, mtu: int = 1400) -> bytes:
    """A router's destination unreachable about `quoted` (our packet's first octets)."""
    icmp = dpkt.icmp.ICMP(type=3, code=code, data=dpkt.icmp.ICMP.Unreach(mtu=mtu, data=quoted))
    return bytes(dpkt.ip.IP(src=PEER, dst=VIP_B, p=1, ttl=64, data=icmp))


def ours(sport: int, seq: int, dport: int = 8080) -> bytes:
    """The IP header and first eight TCP octets of a segment we would send."""
    return codec.encode(Segment(VIP_B, PEER, sport, dport, seq, 0, ACK, 100, Options()))[:28]


@pytest.mark.parametrize(("offset", "dport", "counter"), [
    (1, 8080, "IcmpDestUnreachAccepted"),  # SND.UNA (= SND.NXT: nothing in flight)
    (1000, 8080, "OutOfWindowIcmps"),  # never sent: forged or stale (RFC 5927 4.1)
    (-5, 8080, "OutOfWindowIcmps"),  # already acknowledged
    (1, 9999, "IcmpInErrors"),  # no such connection
])
async def test_frag_needed_is_checked_against_the_connection(rig, offset, dport,  # noqa: F811
                                                              counter) -> None:
    stack, wire = rig
    syn, _writer = await connected(stack, wire)
    feed(stack, unreachable(ours(syn.sport, syn.seq + offset, dport)))
    stats = stack.stats
    assert (stats["IcmpInDestUnreachs"], stats["IcmpInFragNeeded"], stats[counter]) == (1, 1, 1)
    assert stats["Drop.icmp_type"] == 0
    assert sum(stats[k] for k in ("IcmpDestUnreachAccepted", "OutOfWindowIcmps",
                                  "IcmpInErrors")) == 1


async def test_checked_frag_needed_lowers_the_connections_mss(rig) -> None:  # noqa: F811
    """RFC 1191: after "fragmentation needed, next hop MTU 1000", segments fit 1000."""
    stack, wire = rig
    syn, writer = await connected(stack, wire)
    feed(stack, unreachable(ours(syn.sport, syn.seq + 1), mtu=1000))
    writer.write(b"x" * 3000)
    first = await wire.wait_for(lambda s: bool(s.payload))
    assert len(first.payload) == 960 and stack.stats["PmtuReductions"] == 1


async def test_unreachable_too_short_to_quote_tcp_is_an_error(rig) -> None:  # noqa: F811
    stack, _ = rig
    feed(stack, unreachable(ours(40000, 1)[:24], code=3))
    assert (stack.stats["IcmpInDestUnreachs"], stack.stats["IcmpInFragNeeded"],
            stack.stats["IcmpInErrors"]) == (1, 0, 1)


async def test_other_icmp_types_are_still_dropped(rig) -> None:  # noqa: F811
    stack, _ = rig
    redirect = dpkt.icmp.ICMP(type=5, code=1, data=dpkt.icmp.ICMP.Unreach(data=ours(1, 1)))
    feed(stack, bytes(dpkt.ip.IP(src=PEER, dst=VIP_B, p=1, ttl=64, data=redirect)))
    assert stack.stats["Drop.icmp_type"] == 1 and stack.stats["IcmpInDestUnreachs"] == 0
