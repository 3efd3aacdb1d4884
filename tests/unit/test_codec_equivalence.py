"""The fast codec against the dpkt reference (tcpstack/wire/codec.py).

The fast codec is only correct if it is indistinguishable from the reference:
every packet, valid or not, must give the same `Segment` (all fields, options,
payload) or the same `DropReason` out of both decoders, and every segment the
same bytes out of both encoders. The packets here are built from raw fields with
dpkt's checksum routine, not with either codec, so a bug shared by the codec's
own helpers cannot hide.
"""

import functools
import os
import random
import struct
import subprocess
import sys
from dataclasses import replace

import dpkt
import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from tcpstack.core.segment import Flags, Options, Segment
from tcpstack.wire import codec
from tcpstack.wire.codec import DropReason, IcmpEcho, Malformed

# Hypothesis costs ~3 ms of CPU per example here, the codecs a fraction of that: 400
# examples per property (the malformed one breaks each of its 200 packets nine ways) keep
# this file to a few seconds. After changing the codec, run it long, e.g.
# CODEC_EXAMPLES=20000 pytest tests/unit/test_codec_equivalence.py (~10 minutes).
N_EXAMPLES = int(os.environ.get("CODEC_EXAMPLES", "400"))
EXAMPLES = settings(max_examples=N_EXAMPLES)

u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
addresses = st.binary(min_size=4, max_size=4)
# Mostly short payloads, but also full segments (1460 bytes: MTU 1500) and odd lengths.
payloads = st.one_of(
    st.binary(max_size=16),
    st.builds(lambda n, seed: random.Random(seed).randbytes(n), st.integers(0, 1460), u32),
)


def outcome(decode, packet: bytes) -> Segment | IcmpEcho | DropReason:
    try:
        return decode(packet)
    except Malformed as exc:
        return exc.reason


def assert_same_decode(packet: bytes) -> Segment | IcmpEcho | DropReason:
    fast, ref = outcome(codec.decode_fast, packet), outcome(codec.decode_reference, packet)
    assert fast == ref
    assert type(fast) is type(ref)
    if isinstance(fast, Segment):
        assert type(fast.flags) is int and type(ref.flags) is int and type(fast.payload) is bytes
    # With checksum offload the TCP checksum goes unchecked, in both alike.
    unchecked = [outcome(functools.partial(decode, verify_checksum=False), packet)
                 for decode in (codec.decode_fast, codec.decode_reference)]
    assert unchecked[0] == unchecked[1]
    return ref


# ------------------------------------------------------------------ packet builders


def checksum(data: bytes) -> bytes:
    return struct.pack(">H", dpkt.in_cksum(data))


def with_ip_checksum(packet: bytearray) -> bytearray:
    if len(packet) >= 20:
        packet[10:12] = b"\0\0"
        packet[10:12] = checksum(bytes(packet[:20]))
    return packet


def with_transport_checksum(packet: bytearray) -> bytearray:
    """Recompute the TCP (with pseudo-header) or ICMP checksum over the datagram's body."""
    if len(packet) < 20:
        return packet
    total = min(struct.unpack(">H", packet[2:4])[0], len(packet))
    body = bytearray(packet[20:total])
    at = {6: 16, 1: 2}.get(packet[9])
    if at is None or len(body) < at + 2:
        return packet
    body[at : at + 2] = b"\0\0"
    pseudo = bytes(packet[12:20]) + struct.pack(">xBH", 6, len(body)) if packet[9] == 6 else b""
    body[at : at + 2] = checksum(pseudo + bytes(body))
    packet[20 + at : 22 + at] = body[at : at + 2]
    return packet


@st.composite
def ip_packets(draw, proto: int, body: bytes) -> bytearray:
    """An IPv4 datagram around `body`: random TOS/ID/TTL/addresses, DF or the reserved
    bit or neither, and sometimes link padding after it."""
    hdr = bytearray(draw(st.binary(min_size=20, max_size=20)))  # one draw: cheaper than ten
    hdr[0] = 0x45
    hdr[2:4] = struct.pack(">H", 20 + len(body))
    hdr[6:8] = bytes((draw(st.sampled_from([0, 0x40, 0x80, 0xC0])), 0))
    hdr[9] = proto
    padding = draw(st.sampled_from([b"", b"", b"", b"\0" * 6, b"\xff"]))
    return with_ip_checksum(hdr + body + padding)


OPTION_PARTS = st.one_of(
    st.just(b"\x01"),  # NOP
    st.just(b"\x00"),  # EOL
    st.builds(lambda v: b"\x02\x04" + struct.pack(">H", v), u16),  # MSS
    st.builds(lambda v: bytes((3, 3, v)), u8),  # window scale
    st.just(b"\x04\x02"),  # SACK permitted
    st.builds(lambda a, b: b"\x08\x0a" + struct.pack(">II", a, b), u32, u32),  # timestamps
    st.lists(st.tuples(u32, u32), min_size=1, max_size=4).map(  # SACK
        lambda blocks: bytes((5, 2 + 8 * len(blocks)))
        + b"".join(struct.pack(">II", *b) for b in blocks)),
    # Any kind with any length byte: unknown options, lengths 0 and 1, lengths that
    # disagree with the kind or run past the end of the header.
    st.builds(lambda kind, length, value: bytes((kind, length)) + value,
              st.sampled_from([2, 3, 4, 5, 8, 30, 254]), u8, st.binary(max_size=12)),
)


@st.composite
def raw_options(draw) -> bytes:
    """TCP option bytes in every combination, cut or padded to a legal header length."""
    raw = draw(st.one_of(st.lists(OPTION_PARTS, max_size=8).map(b"".join), st.binary(max_size=40)))
    raw += draw(st.binary(min_size=3, max_size=3))
    return raw[: min(40, len(raw) // 4 * 4)]


@st.composite
def tcp_packets(draw) -> bytearray:
    """A valid TCP/IPv4 packet: random header fields (reserved bits and urgent pointer
    included) around the options and the payload."""
    opts = draw(raw_options())
    tcp = bytearray(draw(st.binary(min_size=20, max_size=20)))
    tcp[12] = (5 + len(opts) // 4) << 4 | tcp[12] & 0x0F
    return with_transport_checksum(draw(ip_packets(6, bytes(tcp) + opts + draw(payloads))))


@st.composite
def icmp_packets(draw) -> bytearray:
    type_, code = draw(st.sampled_from([(8, 0), (8, 0), (0, 0), (8, 1), (3, 1), (13, 0)]))
    icmp = struct.pack(">BBHHH", type_, code, 0, draw(u16), draw(u16)) + draw(payloads)
    return with_transport_checksum(draw(ip_packets(1, icmp)))


@st.composite
def other_packets(draw) -> bytearray:
    proto = draw(st.sampled_from([0, 2, 4, 17, 41, 47, 50, 58, 132, 255]))
    return draw(ip_packets(proto, draw(st.binary(max_size=64))))


any_packets = st.one_of(tcp_packets(), tcp_packets(), icmp_packets(), other_packets())


BREAKAGES = ("cut", "flip", "total_length", "version_ihl", "fragment", "protocol",
             "data_offset", "icmp_type", "checksum")


@st.composite
def malformed_packets(draw, packet: bytes | None = None, how: str | None = None) -> bytes:
    """A valid packet (`packet`, or any) broken in one way (`how`, or any), then
    sometimes given fresh checksums again so that the breakage reaches the checks
    behind them."""
    packet = bytearray(draw(any_packets) if packet is None else packet)
    how = how or draw(st.sampled_from(BREAKAGES))
    n = len(packet)
    if how == "cut":
        del packet[draw(st.integers(0, n)):]
    elif how == "flip":
        for pos in draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=4)):
            packet[pos] ^= 1 << draw(st.integers(0, 7))
    elif how == "total_length":
        packet[2:4] = struct.pack(">H", draw(st.one_of(st.integers(0, n + 8), u16)))
    elif how == "version_ihl":  # IP options (IHL > 5), short headers, IPv6 and others
        packet[0] = draw(st.one_of(st.integers(0x40, 0x4F), u8))
    elif how == "fragment":  # MF or an offset, with or without DF and the reserved bit
        packet[6:8] = struct.pack(">H", draw(st.integers(1, 0x3FFF)) | draw(st.sampled_from(
            [0, 0x4000, 0x8000])))
    elif how == "protocol":
        packet[9] = draw(u8)
    elif how == "data_offset" and n >= 33:
        packet[32] = draw(u8)
    elif how == "icmp_type" and n >= 22:
        packet[20:22] = bytes((draw(u8), draw(u8)))
    elif how == "checksum":
        at = draw(st.sampled_from([10, 36, 22]))  # IP, TCP, ICMP
        if at < n:
            packet[at] ^= draw(st.integers(1, 0xFF))
        return bytes(packet)
    if draw(st.booleans()):
        with_transport_checksum(packet)
    if draw(st.booleans()):
        with_ip_checksum(packet)
    return bytes(packet)


# ------------------------------------------------------------------ segments

option_values = st.builds(
    Options,
    mss=st.none() | u16,
    wscale=st.none() | u8,
    sack_permitted=st.booleans(),
    timestamp=st.none() | st.tuples(u32, u32),
    # None decode as the default, an empty tuple; some as a list, like the TCB's.
    sack_blocks=st.lists(st.tuples(u32, u32), max_size=4).map(lambda blocks: blocks or ()),
)
SEGMENT_FIELDS = struct.Struct(">4s4sHHIIH")  # addresses, ports, SEQ, ACK, window


@st.composite
def segments(draw) -> Segment:
    """Any segment, flags beyond the nine control bits and too many options included."""
    src, dst, sport, dport, seq, ack, window = SEGMENT_FIELDS.unpack(
        draw(st.binary(min_size=SEGMENT_FIELDS.size, max_size=SEGMENT_FIELDS.size)))
    return Segment(src, dst, sport, dport, seq, ack, draw(st.integers(0, 0x3FF)), window,
                   draw(option_values), draw(payloads))


def encoded(encode, seg: Segment) -> bytes | type[Exception]:
    try:
        return encode(seg)
    except ValueError:
        return ValueError


# ------------------------------------------------------------------ the properties


@EXAMPLES
@given(segments(), st.sampled_from([bytes, bytearray, memoryview]))
def test_segments_encode_to_the_same_bytes_and_decode_back(seg, buffer):
    packet = encoded(codec.encode_reference, seg)
    # The stack may hand over a view into its send buffer instead of a copy.
    assert encoded(codec.encode_fast, replace(seg, payload=buffer(seg.payload))) == packet
    if packet is ValueError:  # neither codec writes a header it cannot represent
        assert len(codec.build_options(seg.options)) > 40 or seg.flags > 0x1FF
        return
    assert assert_same_decode(packet) == seg
    # Checksum offload: the TCP checksum field holds the pseudo-header sum only.
    partial = codec.encode_reference(seg, partial_checksum=True)
    assert codec.encode_fast(seg, partial_checksum=True) == partial
    assert codec.decode_fast(partial, verify_checksum=False) == seg


@EXAMPLES
@given(any_packets)
def test_valid_packets_decode_alike(packet):
    assert_same_decode(bytes(packet))


@settings(max_examples=N_EXAMPLES // 2)
@given(any_packets, st.data())
def test_malformed_packets_decode_alike(packet, data):
    # Every way of breaking each packet: nine checks for the price of one example.
    for how in BREAKAGES:
        assert_same_decode(data.draw(malformed_packets(bytes(packet), how), label=how))


@EXAMPLES
@given(st.binary(min_size=12, max_size=12), payloads)
def test_echo_replies_encode_to_the_same_bytes(fields, payload):
    req = IcmpEcho(*struct.unpack(">4s4sHH", fields), payload)
    assert codec.encode_echo_reply_fast(req) == codec.encode_echo_reply_reference(req)


# The breakage meant to produce each drop reason (behind it, others may come first).
REACHED_BY = {
    DropReason.TRUNCATED: "cut", DropReason.NOT_IPV4: "version_ihl",
    DropReason.IP_HEADER: "version_ihl", DropReason.IP_CHECKSUM: "flip",
    DropReason.IP_OPTIONS: "version_ihl", DropReason.IP_LENGTH: "total_length",
    DropReason.FRAGMENT: "fragment", DropReason.PROTOCOL: "protocol",
    DropReason.TCP_HEADER: "data_offset", DropReason.TCP_CHECKSUM: "checksum",
    DropReason.ICMP_CHECKSUM: "checksum", DropReason.ICMP_TYPE: "icmp_type",
}


def test_malformed_packets_reach_every_drop_reason():
    # So that the property above is not vacuous. NOT_FOR_US is the stack's verdict on
    # a well-formed packet, not the codec's.
    assert set(REACHED_BY) == set(DropReason) - {DropReason.NOT_FOR_US}
    for reason, how in REACHED_BY.items():
        find(malformed_packets(how=how),
             lambda p, r=reason: outcome(codec.decode_reference, p) is r,
             settings=settings(max_examples=1000, phases=[Phase.generate]))  # no shrinking


def test_all_zero_icmp_fails_its_checksum_in_both():
    # The one's complement sum of all-zero data is 0, not 0xFFFF: the corner the
    # modulo-0xFFFF arithmetic of the fast checksum has to treat apart.
    packet = with_ip_checksum(bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 1,
                                                    0, bytes(4), bytes(4)) + bytes(8)))
    assert assert_same_decode(bytes(packet)) is DropReason.ICMP_CHECKSUM


def test_memoryview_packets_decode_to_views():
    packet = codec.encode_fast(Segment(bytes(4), bytes(4), 1, 2, 3, 4, Flags.ACK, 5,
                                       Options(timestamp=(6, 7)), b"data"))
    seg = codec.decode_fast(memoryview(packet))
    assert seg == codec.decode_reference(packet) and isinstance(seg.payload, memoryview)


@pytest.mark.parametrize(("value", "name"),
                         [("", "decode_fast"), ("reference", "decode_reference")])
def test_environment_selects_the_codec(value, name):
    env = {"TCPSTACK_CODEC": value} if value else {}
    out = subprocess.run(
        [sys.executable, "-c", "from tcpstack.wire import codec; print(codec.decode.__name__)"],
        env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == name


def test_unknown_codec_name_is_refused():
    run = subprocess.run([sys.executable, "-c", "import tcpstack.wire.codec"],
                         env={"TCPSTACK_CODEC": "dpkt"}, capture_output=True, text=True)
    assert run.returncode != 0 and "TCPSTACK_CODEC must be" in run.stderr
