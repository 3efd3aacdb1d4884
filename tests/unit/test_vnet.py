"""The virtio-net header (tcpstack.wire.vnet): building and parsing it, the partial
checksum of checksum offload, cutting super-segments as the kernel does, and
the stack framing and counting with offloads on."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import dpkt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpstack.core.config import TcpConfig
from tcpstack.core.segment import Flags, Options, Segment
from tcpstack.shell.stack import Stack
from tcpstack.wire import codec, vnet

A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
ACK, PSH, FIN, SYN = Flags.ACK, Flags.PSH, Flags.FIN, Flags.SYN
MSS = 1448


def segment(payload: bytes, flags: Flags = ACK | PSH, *, seq: int = 0xFFFFF000,
            gso_size: int = 0) -> Segment:
    return Segment(A, B, 80, 40000, seq, 777, flags, 501,
                   Options(timestamp=(11, 22)), payload, gso_size=gso_size)


def super_frame(payload: bytes, flags: Flags = ACK | PSH, mss: int = MSS) -> bytes:
    seg = segment(payload, flags, gso_size=mss)
    return vnet.tcp_frame(codec.encode(seg, partial_checksum=True), mss)


# -- the header ------------------------------------------------------------------------

def test_header_layout_is_little_endian_virtio_net_hdr() -> None:
    frame = super_frame(b"x" * 3000)
    assert frame[:10] == struct.pack("<BBHHHH", 1, 1, 20 + 32, MSS, 20, 16)
    header, packet = vnet.parse(frame)
    assert header == vnet.VnetHeader(flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_TCPV4,
                                     hdr_len=52, gso_size=MSS, csum_start=20, csum_offset=16)
    assert packet == frame[10:] and header.tcp_gso_size == MSS and header.checksum_trusted


def test_parse_short_frame_is_truncated() -> None:
    with pytest.raises(codec.Malformed) as exc:
        vnet.parse(b"\x01\x01")
    assert exc.value.reason is codec.DropReason.TRUNCATED


@pytest.mark.parametrize(("flags", "trusted"), [(0, False), (1, True), (2, True)])
def test_checksum_trusted_only_when_the_kernel_says_so(flags: int, trusted: bool) -> None:
    assert vnet.VnetHeader(flags=flags).checksum_trusted is trusted


def test_ecn_bit_still_a_tcp_super_segment() -> None:
    header = vnet.VnetHeader(gso_type=vnet.GSO_TCPV4 | vnet.GSO_ECN, gso_size=1000)
    assert header.tcp_gso_size == 1000
    assert vnet.VnetHeader(gso_type=4, gso_size=1000).tcp_gso_size == 0  # TCPV6: not ours


# -- checksums -------------------------------------------------------------------------

@given(st.binary(max_size=3000))
def test_ones_sum_matches_dpkt(data: bytes) -> None:
    # Its complement is dpkt's checksum (0 and 0xFFFF are both zero in one's complement).
    assert (0xFFFF - vnet.ones_sum(data)) % 0xFFFF == dpkt.in_cksum(data) % 0xFFFF


def test_partial_checksum_is_the_pseudo_header_sum() -> None:
    packet = codec.encode(segment(b"abc"), partial_checksum=True)
    tcp_length = len(packet) - 20
    field = int.from_bytes(packet[36:38], "big")
    assert field == vnet.pseudo_header_sum(A, B, tcp_length)
    # Completed as the kernel does, it equals the full checksum dpkt computes.
    assert vnet.wire_packets(vnet.tcp_frame(packet, 0)) == [codec.encode(segment(b"abc"))]


@given(st.integers(min_value=1, max_value=40 * MSS), st.sampled_from([ACK, ACK | PSH,
                                                                        ACK | PSH | FIN]))
def test_super_segment_cut_like_the_kernel(n: int, flags: Flags) -> None:
    """Cutting the frame gives exactly the segments the codec builds one by one:
    consecutive sequence numbers, PSH and FIN only on the last, full checksums."""
    payload = bytes(i % 251 for i in range(n))
    pieces = vnet.wire_packets(super_frame(payload, flags))
    want = []
    for i, off in enumerate(range(0, n, MSS)):
        last = off + MSS >= n
        piece = segment(payload[off:off + MSS], flags if last else ACK,
                        seq=(0xFFFFF000 + off) & 0xFFFFFFFF)
        want.append(codec.decode(codec.encode(piece)))
        assert dpkt.ip.IP(pieces[i]).id == i  # dpkt's identification 0, then one per piece
    assert [codec.decode(p) for p in pieces] == want  # decode verifies every checksum


def test_cwr_only_on_the_first_piece() -> None:
    pieces = vnet.wire_packets(super_frame(b"y" * (3 * MSS), ACK | Flags.CWR))
    assert [codec.decode(p).flags & Flags.CWR for p in pieces] == [Flags.CWR, 0, 0]


def test_malformed_frames_pass_through_unchanged() -> None:
    junk = vnet.HEADER.pack(1, 1, 0, MSS, 20, 16) + b"\x45" + b"\0" * 10
    assert vnet.wire_packets(junk) == [junk[10:]]
    assert vnet.wire_packets(b"\0\0") == [b"\0\0"]


# -- the stack with offloads -----------------------------------------------------------

@pytest.fixture
async def offload_stack() -> tuple[Stack, list[bytes]]:
    sent: list[bytes] = []
    stack = Stack(str(IPv4Address(B)), sent.append, TcpConfig(offload=True))
    yield stack, sent
    await stack.close()


def test_decode_skips_tcp_checksum_only_when_asked() -> None:
    packet = codec.encode(segment(b"abc"), partial_checksum=True)
    with pytest.raises(codec.Malformed):
        codec.decode(packet)
    assert codec.decode(packet, verify_checksum=False).payload == b"abc"


async def test_stack_verifies_checksums_the_kernel_did_not(offload_stack) -> None:
    stack, sent = offload_stack
    bad = bytearray(codec.encode(Segment(A, B, 40000, 9, 1, 0, SYN, 65535)))
    bad[36] ^= 0xFF
    stack.handle_packet(vnet.PLAIN + bytes(bad), 0.0)
    assert stack.stats["InCsumErrors"] == 1 and not sent


async def test_stack_counts_a_gro_super_segment_as_its_pieces(offload_stack) -> None:
    """A NEEDS_CSUM super-segment (partial checksum) to a closed port: accepted,
    InSegs counts its three wire segments, and the RST goes out framed."""
    stack, sent = offload_stack
    stack.handle_packet(vnet.tcp_frame(codec.encode(
        Segment(A, B, 40000, 80, 1, 2, ACK, 501, payload=b"z" * (2 * MSS + 10)),
        partial_checksum=True), MSS), 0.0)
    assert (stack.stats["InSegs"], stack.stats["InSuperSegs"]) == (3, 1)
    assert stack.stats["InCsumErrors"] == 0
    (rst_frame,) = sent
    header, _ = vnet.parse(rst_frame)
    assert header.flags == vnet.F_NEEDS_CSUM and header.gso_type == vnet.GSO_NONE
    assert codec.decode(vnet.wire_packets(rst_frame)[0]).flags & Flags.RST


async def test_stack_frames_a_super_segment_and_counts_wire_segments(offload_stack) -> None:
    stack, sent = offload_stack
    stack.transmit([segment(b"q" * (3 * MSS), gso_size=MSS), segment(b"", ACK)])
    assert (stack.stats["OutSegs"], stack.stats["OutSuperSegs"]) == (4, 1)
    assert [len(vnet.wire_packets(f)) for f in sent] == [3, 1]
    assert vnet.parse(sent[0])[0].gso_size == MSS
