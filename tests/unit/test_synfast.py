"""The SYN fast path (tcpstack/shell/synfast.py) against the normal path.

The fast path is only correct if nobody can tell it is there: for every packet,
a flood SYN or anything else, a stack with it must send the same bytes and
count the same counters as a stack without it. Two stacks with the same keys
(cookie secret, ISN secret) take the same packets at the same times here, one
with the fast path switched off; the packets come from Hypothesis (any option
bytes, any control bits, broken in every way the codec tests break packets),
built with the codec tests' dpkt-checksummed builders, not with our codec.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpstack.core.config import TcpConfig
from tcpstack.core.isn import IsnGenerator
from tcpstack.core.segment import Segment
from tcpstack.core.states import State
from tcpstack.core.syncookies import SynCookies
from tcpstack.shell.stack import Stack
from tcpstack.wire import codec, vnet
from tests.unit.tcpkit import ACK, PEER, SYN, X
from tests.unit.test_codec_equivalence import (
    malformed_packets,
    raw_options,
    with_ip_checksum,
    with_transport_checksum,
)
from tests.unit.test_stack import VIP, VIP_B, Wire, echo
from tests.unit.test_syncookies import ack_packet, syn_packet

# Two stacks per example cost ~20 ms of CPU: 150 examples keep this file to a few
# seconds. After changing the fast path, run it long, e.g.
# SYNFAST_EXAMPLES=5000 pytest tests/unit/test_synfast.py (a few minutes).
N_EXAMPLES = int(os.environ.get("SYNFAST_EXAMPLES", "150"))
u16, u32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
NOW = 1000.0
PREFILL_PORT = 39999  # the SYN that fills a backlog of 1 (its 4-tuple has a connection)
# The options of a Linux SYN (MSS, SACK-permitted, timestamps, NOP, window scale): the
# layout the fast path reads in place.
LINUX_OPTIONS = st.builds(
    lambda mss, tsval, tsecr, ws: struct.pack(">BBHBBBBIIBBBB", 2, 4, mss, 4, 2, 8, 10,
                                              tsval, tsecr, 1, 3, 3, ws),
    u16, u32, u32, st.integers(0, 255))
CONFIGS = st.builds(
    lambda mode, offload, ts, sack, ws, rcv_buf: TcpConfig(
        syncookies=mode, backlog=1, offload=offload, timestamps=ts, sack=sack,
        window_scaling=ws, rcv_buf=rcv_buf),
    st.sampled_from(["always", "on", "off"]), st.booleans(), st.booleans(), st.booleans(),
    st.booleans(), st.sampled_from([65535, 1 << 20, 64 << 20]))


@st.composite
def syns(draw) -> bytes:
    """A TCP/IPv4 packet to the VIP, mostly a SYN to port 80 with options a flood
    (none), Linux or anyone might send, sometimes other control bits, a payload,
    another port or the 4-tuple of an existing connection."""
    options = draw(st.one_of(st.just(b""), LINUX_OPTIONS, raw_options()))
    flags = draw(st.one_of(st.just(0x02), st.just(0x02), st.integers(0, 0x1FF)))
    sport, src = draw(st.one_of(st.tuples(u16, st.binary(min_size=4, max_size=4)),
                                st.just((PREFILL_PORT, PEER))))
    dport = draw(st.sampled_from([80, 80, 80, 81]))
    tcp = struct.pack(">HHIIBBHHH", sport, dport, draw(u32), draw(u32),
                      (5 + len(options) // 4) << 4 | flags >> 8, flags & 0xFF, draw(u16), 0, 0)
    payload = draw(st.one_of(st.just(b""), st.just(b""), st.binary(min_size=1, max_size=8)))
    body = tcp + options + payload
    fragment = draw(st.sampled_from([0, 0x4000, 0, 0x4000, 0x2000, 0x0001]))  # DF, MF, offset
    ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(body), draw(u16),
                               fragment, 64, 6, 0, src, VIP_B))
    packet = bytes(with_transport_checksum(with_ip_checksum(ip + body)))
    if draw(st.integers(0, 4)) == 0:
        packet = draw(malformed_packets(packet))
    return packet


def frame(packet: bytes, vnet_flags: int, gso: bool) -> bytes:
    """`packet` as a TUN with offloads hands it over."""
    return vnet.HEADER.pack(vnet_flags, vnet.GSO_TCPV4 if gso else vnet.GSO_NONE, 0,
                            1448 if gso else 0, 0, 0) + packet


async def run_stack(config: TcpConfig, frames: list[bytes], *,
                    fast: bool) -> tuple[list[bytes], Counter[str], int]:
    """What a stack (keys fixed) sends and counts for `frames`, after a SYN that
    fills the backlog of 1 (so that "on" gives cookies)."""
    wire = Wire()
    stack = Stack(VIP, wire.output, config)
    stack.cookies = SynCookies(config, secret=bytes(32))
    stack.isn = IsnGenerator(secret=bytes(16))
    if not fast:
        stack.syn_fast.answer = lambda frame, now: False  # type: ignore[method-assign]
    await stack.start_server(echo, 80)
    try:
        prefill = syn_packet(PREFILL_PORT)
        stack.handle_packet(frame(prefill, 0, False) if config.offload else prefill, NOW)
        for f in frames:
            stack.handle_packet(f, NOW)
        return wire.sent, stack.stats, len(stack.conns)
    finally:
        await stack.close()


@settings(max_examples=N_EXAMPLES, deadline=None)
@given(CONFIGS, st.lists(st.tuples(syns(), st.sampled_from(
    [0, 0, vnet.F_NEEDS_CSUM, vnet.F_DATA_VALID]), st.integers(0, 3)), min_size=1, max_size=4))
def test_fast_path_sends_and_counts_exactly_what_the_normal_path_does(config, packets) -> None:
    frames = [frame(p, flags, gso == 0) if config.offload else p for p, flags, gso in packets]
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        # The turns the packets queue run on the loop's clock (TSval of their ACKs):
        # both stacks must see the same time.
        runner.get_loop().time = lambda: NOW  # type: ignore[method-assign]
        fast = runner.run(run_stack(config, frames, fast=True))
        normal = runner.run(run_stack(config, frames, fast=False))
    assert fast == normal


# -- the fast path is taken -------------------------------------------------------------------

LINUX_SYN = struct.pack(">BBHBBBBIIBBBB", 2, 4, 1460, 4, 2, 8, 10, 7777, 0, 1, 3, 3, 7)


def raw_syn(options: bytes, sport: int = 40001) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", sport, 80, X, 0, (5 + len(options) // 4) << 4, 0x02,
                      512, 0, 0) + options
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, PEER, VIP_B)
    return bytes(with_transport_checksum(with_ip_checksum(bytearray(ip + tcp))))


@pytest.mark.parametrize("offload", [False, True])
@pytest.mark.parametrize("options", [b"", LINUX_SYN], ids=["hping3", "linux"])
async def test_flood_syn_is_answered_without_decoding(monkeypatch, offload, options) -> None:
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig(syncookies="always", offload=offload))
    await stack.start_server(echo, 80)
    try:
        def no_decode(*args, **kwargs):
            raise AssertionError("the normal path decoded the SYN")
        monkeypatch.setattr(codec, "decode", no_decode)
        packet = raw_syn(options)
        stack.handle_packet(frame(packet, 0, False) if offload else packet, NOW)
        monkeypatch.undo()
        [sent] = wire.sent
        [synack] = vnet.wire_packets(sent) if offload else [sent]
        reply = codec.decode(synack)
        assert isinstance(reply, Segment) and reply.flags == SYN | ACK
        assert (reply.dport, reply.ack, bool(reply.options.timestamp)) == (40001, X + 1,
                                                                           bool(options))
        assert +stack.stats == Counter(InReceives=1, InSegs=1, SyncookiesSent=1, OutSegs=1)
        assert not stack.conns
    finally:
        await stack.close()


def mangled(how: str) -> tuple[bytes, bool]:
    """A Linux SYN to port 80 changed in one way the fast path must not take;
    True when it needs a virtio-net header (offloads on)."""
    packet = bytearray(raw_syn(LINUX_SYN))
    if how == "super-segment":
        return frame(bytes(packet), vnet.F_NEEDS_CSUM, True), True
    if how == "bad TCP checksum, vouched for":  # the kernel's word is taken, as by the codec
        packet[36] ^= 0xFF
        return frame(bytes(packet), vnet.F_DATA_VALID, False), True
    edits = {"more fragments": (6, b"\x20\x00"), "fragment offset": (6, b"\x00\x01"),
             "SYN|ECE": (33, b"\x42"), "SYN|ACK": (33, b"\x12"), "SYN|FIN": (33, b"\x03"),
             "NS bit": (32, bytes((packet[32] | 1,))), "closed port": (22, b"\x00\x51"),
             "not for us": (16, bytes((10, 0, 0, 3))), "IP options": (0, b"\x46"),
             "bad IP checksum": (10, bytes((packet[10] ^ 1,))),
             "bad TCP checksum": (36, bytes((packet[36] ^ 1,)))}
    if how == "data":
        packet += b"x"
        packet[2:4] = struct.pack(">H", len(packet))
    else:
        at, value = edits[how]
        packet[at:at + len(value)] = value
    if "checksum" not in how:
        with_transport_checksum(with_ip_checksum(packet))
    return bytes(packet), False


@pytest.mark.parametrize("how", [
    "super-segment", "more fragments", "fragment offset", "SYN|ECE", "SYN|ACK", "SYN|FIN",
    "NS bit", "closed port", "not for us", "IP options", "bad IP checksum", "bad TCP checksum",
    "data"])
async def test_other_packets_are_left_to_the_normal_path(how) -> None:
    packet, offload = mangled(how)
    stack = Stack(VIP, Wire().output, TcpConfig(syncookies="always", offload=offload))
    await stack.start_server(echo, 80)
    try:
        assert stack.syn_fast.answer(packet, NOW) is False
        assert not +stack.stats
    finally:
        await stack.close()


async def test_a_syn_the_kernel_vouches_for_is_not_checked() -> None:
    packet, _ = mangled("bad TCP checksum, vouched for")
    stack = Stack(VIP, Wire().output, TcpConfig(syncookies="always", offload=True))
    await stack.start_server(echo, 80)
    try:
        assert stack.syn_fast.answer(packet, NOW) is True
    finally:
        await stack.close()


async def test_syn_of_a_live_connection_is_left_to_it() -> None:
    stack = Stack(VIP, Wire().output, TcpConfig(backlog=1))
    await stack.start_server(echo, 80)
    try:
        stack.handle_packet(syn_packet(PREFILL_PORT), NOW)  # queued: now the backlog is full
        assert stack.listeners[80].answers_statelessly()
        assert stack.syn_fast.answer(raw_syn(LINUX_SYN, PREFILL_PORT), NOW) is False
        assert stack.syn_fast.answer(raw_syn(LINUX_SYN, PREFILL_PORT + 1), NOW) is True
    finally:
        await stack.close()


async def test_syn_with_a_free_slot_is_queued_by_the_normal_path() -> None:
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig(backlog=2))
    await stack.start_server(echo, 80)
    try:
        stack.handle_packet(raw_syn(LINUX_SYN), NOW)
        assert stack.conns[(80, PEER, 40001)].tcb.state is State.SYN_RCVD
        assert stack.stats["SyncookiesSent"] == 0
    finally:
        await stack.close()


async def test_ack_of_a_fast_path_cookie_opens_the_connection() -> None:
    wire = Wire()
    stack = Stack(VIP, wire.output, TcpConfig(syncookies="always"))
    await stack.start_server(echo, 80)
    try:
        stack.handle_packet(syn_packet(40003), asyncio.get_running_loop().time())
        [synack] = wire.segments()
        stack.handle_packet(ack_packet(synack, b"hi"), asyncio.get_running_loop().time())
        conn = stack.conns[(80, synack.dst, 40003)]
        assert (conn.tcb.state, conn.tcb.snd_wscale, conn.tcb.sack_ok) == (
            State.ESTABLISHED, 7, True)
        assert (await wire.wait_for(lambda s: bool(s.payload))).payload == b"hi"
        assert stack.stats["SyncookiesRecv"] == 1
    finally:
        await stack.close()
