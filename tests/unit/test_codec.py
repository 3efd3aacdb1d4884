"""The IPv4/TCP/ICMP codec: round trips, checksums and every drop reason."""

import struct

import dpkt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpstack.core.segment import Flags, Options, Segment
from tcpstack.wire import codec
from tcpstack.wire.codec import DropReason, IcmpEcho, Malformed, decode, encode, encode_echo_reply

A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def tcp_seg(options=None, payload=b"hello", flags=Flags.ACK | Flags.PSH) -> Segment:
    return Segment(src=A, dst=B, sport=40000, dport=80, seq=0xFFFFFFF0, ack=123456,
                   flags=flags, window=29200, options=options or Options(), payload=payload)


def ip_packet(data, p=dpkt.ip.IP_PROTO_TCP, **kw) -> dpkt.ip.IP:
    return dpkt.ip.IP(src=A, dst=B, p=p, ttl=64, data=data, **kw)


def reason(packet: bytes) -> DropReason:
    with pytest.raises(Malformed) as exc:
        decode(packet)
    return exc.value.reason


def refresh_ip_checksum(packet: bytes) -> bytes:
    hdr = bytearray(packet[:20])
    hdr[10:12] = b"\0\0"
    hdr[10:12] = struct.pack(">H", dpkt.in_cksum(bytes(hdr)))
    return bytes(hdr) + packet[20:]


def echo_request(ident=7, seqno=3, payload=b"ping!", type_=8, code=0) -> bytes:
    icmp = dpkt.icmp.ICMP(type=type_, code=code,
                          data=dpkt.icmp.ICMP.Echo(id=ident, seq=seqno, data=payload))
    return bytes(ip_packet(icmp, p=dpkt.ip.IP_PROTO_ICMP))


OPTION_SETS = [
    Options(),
    Options(mss=1460),
    Options(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 0xFFFFFFFF)),
    Options(timestamp=(123, 456)),
    Options(sack_permitted=True),
    Options(wscale=14),
    Options(timestamp=(9, 8), sack_blocks=[(100, 200), (0xFFFFFF00, 5)]),
    Options(sack_blocks=[(1, 2), (3, 4), (5, 6)]),
]


@pytest.mark.parametrize("opts", OPTION_SETS)
@pytest.mark.parametrize("payload", [b"", b"x", b"hello world" * 100])
def test_tcp_round_trip(opts, payload):
    s = tcp_seg(opts, payload)
    assert decode(encode(s)) == s


def test_round_trip_all_flags_and_fields():
    s = Segment(src=A, dst=B, sport=1, dport=65535, seq=0, ack=0xFFFFFFFF,
                flags=Flags.SYN | Flags.ACK | Flags.FIN | Flags.RST | Flags.URG, window=0)
    assert decode(encode(s)) == s


def test_encoding_has_valid_checksums_and_df():
    packet = encode(tcp_seg(Options(mss=1460)))
    ip = dpkt.ip.IP(packet)
    assert dpkt.in_cksum(packet[:20]) == 0
    pseudo = struct.pack(">4s4sxBH", A, B, 6, len(packet) - 20)
    assert dpkt.in_cksum(pseudo + packet[20:]) == 0
    assert ip.df and ip.ttl == 64 and ip.len == len(packet)


def test_flipping_any_header_byte_fails_a_checksum():
    packet = encode(tcp_seg(Options(mss=1460, timestamp=(1, 2)), b"data"))
    header_len = 20 + (packet[32] >> 4) * 4
    for i in range(1, header_len):  # byte 0 is version/IHL, rejected before any checksum
        bad = bytearray(packet)
        bad[i] ^= 0xFF
        want = {DropReason.IP_CHECKSUM} if i < 20 else {DropReason.TCP_CHECKSUM}
        if i == 32:  # the data offset may now point past the segment
            want.add(DropReason.TCP_HEADER)
        assert reason(bytes(bad)) in want, i


def test_flipping_payload_fails_tcp_checksum():
    packet = bytearray(encode(tcp_seg(payload=b"abc")))
    packet[-1] ^= 1
    assert reason(bytes(packet)) is DropReason.TCP_CHECKSUM


def test_version_byte_corruption():
    packet = bytearray(encode(tcp_seg()))
    packet[0] ^= 0xFF
    assert reason(bytes(packet)) is DropReason.NOT_IPV4
    packet[0] = 0x44  # IHL 4: a header shorter than 20 bytes
    assert reason(bytes(packet)) is DropReason.IP_HEADER


def test_truncated():
    packet = encode(tcp_seg())
    assert reason(b"") is DropReason.TRUNCATED
    assert reason(packet[:19]) is DropReason.TRUNCATED


def test_truncated_tcp_header():
    ip = ip_packet(b"\0" * 12)  # 12 bytes where a TCP header needs 20
    assert reason(bytes(ip)) is DropReason.TRUNCATED


def test_not_ipv4():
    ip6 = dpkt.ip6.IP6(src=b"\0" * 15 + b"\1", dst=b"\0" * 15 + b"\2", nxt=6, hlim=64,
                       data=dpkt.tcp.TCP(sport=1, dport=2))
    ip6.plen = len(ip6.data)
    assert reason(bytes(ip6)) is DropReason.NOT_IPV4


def test_ip_options():
    tcp = bytes(dpkt.tcp.TCP(sport=1, dport=2))
    hdr = bytearray(struct.pack(">BBHHHBBH4s4s", 0x46, 0, 24 + len(tcp), 1, 0x4000, 64, 6, 0,
                                A, B) + b"\x01\x01\x01\x00")  # IHL 6: four NOP/EOL option bytes
    hdr[10:12] = struct.pack(">H", dpkt.in_cksum(bytes(hdr)))
    assert dpkt.in_cksum(bytes(hdr)) == 0  # valid checksum: rejected for the options alone
    assert reason(bytes(hdr) + tcp) is DropReason.IP_OPTIONS


@pytest.mark.parametrize("kw", [{"mf": 1}, {"offset": 8}, {"mf": 1, "offset": 1480}])
def test_fragments(kw):
    ip = ip_packet(dpkt.tcp.TCP(sport=1, dport=2))
    for k, v in kw.items():
        setattr(ip, k, v)
    assert reason(bytes(ip)) is DropReason.FRAGMENT


@pytest.mark.parametrize("delta", [1, 1000])
def test_total_length_beyond_packet(delta):
    packet = bytearray(encode(tcp_seg()))
    packet[2:4] = struct.pack(">H", len(packet) + delta)
    assert reason(refresh_ip_checksum(bytes(packet))) is DropReason.IP_LENGTH


def test_total_length_shorter_than_header():
    packet = bytearray(encode(tcp_seg()))
    packet[2:4] = struct.pack(">H", 19)
    assert reason(refresh_ip_checksum(bytes(packet))) is DropReason.IP_LENGTH


def test_trailing_link_padding_is_ignored():
    s = tcp_seg(payload=b"")
    assert decode(encode(s) + b"\0" * 6) == s


def test_other_protocol():
    udp = dpkt.udp.UDP(sport=53, dport=53, data=b"q")
    udp.ulen = len(udp)
    assert reason(bytes(ip_packet(udp, p=dpkt.ip.IP_PROTO_UDP))) is DropReason.PROTOCOL


def _raw_tcp(off_words: int, body_extra: bytes = b"") -> bytes:
    """A 20-byte TCP header with the given data offset and a correct checksum."""
    hdr = struct.pack(">HHIIBBHHH", 40000, 80, 1, 0, off_words << 4, 0x10, 1000, 0, 0)
    body = hdr + body_extra
    pseudo = struct.pack(">4s4sxBH", A, B, 6, len(body))
    csum = dpkt.in_cksum(pseudo + body)
    body = body[:16] + struct.pack(">H", csum) + body[18:]
    return bytes(ip_packet(body))


@pytest.mark.parametrize("off", [0, 4])
def test_tcp_data_offset_below_five(off):
    assert reason(_raw_tcp(off)) is DropReason.TCP_HEADER


def test_tcp_data_offset_beyond_segment():
    assert reason(_raw_tcp(6)) is DropReason.TCP_HEADER  # 24 > 20 bytes
    assert reason(_raw_tcp(15, b"\x01" * 20)) is DropReason.TCP_HEADER  # 60 > 40


def test_raw_tcp_helper_is_valid():
    s = decode(_raw_tcp(6, b"\x01\x01\x01\x01"))
    assert isinstance(s, Segment) and s.options == Options() and s.payload == b""


def test_icmp_echo_request_decoded():
    req = decode(echo_request(ident=0x1234, seqno=0xBEEF, payload=b"abc" * 10))
    assert req == IcmpEcho(src=A, dst=B, ident=0x1234, seqno=0xBEEF, payload=b"abc" * 10)


def test_icmp_bad_checksum():
    packet = bytearray(echo_request())
    packet[-1] ^= 0xFF
    assert reason(bytes(packet)) is DropReason.ICMP_CHECKSUM


@pytest.mark.parametrize(("type_", "code"), [(0, 0), (13, 0), (3, 1), (8, 1)])
def test_icmp_not_an_echo_request(type_, code):
    assert reason(echo_request(type_=type_, code=code)) is DropReason.ICMP_TYPE


def test_icmp_truncated():
    icmp = b"\x08\x00\xf7\xff"  # four bytes: no identifier or sequence number
    assert reason(bytes(ip_packet(icmp, p=dpkt.ip.IP_PROTO_ICMP))) is DropReason.TRUNCATED


@pytest.mark.parametrize("payload", [b"", b"x", bytes(range(256)) * 4])
def test_icmp_echo_reply(payload):
    req = decode(echo_request(ident=0xABCD, seqno=42, payload=payload))
    reply = encode_echo_reply(req)
    assert dpkt.in_cksum(reply[:20]) == 0
    icmp = reply[20:]
    assert dpkt.in_cksum(icmp) == 0
    assert (icmp[0], icmp[1]) == (0, 0)
    assert struct.unpack(">HH", icmp[4:8]) == (0xABCD, 42)
    assert icmp[8:] == payload
    ip = dpkt.ip.IP(reply)
    assert (ip.src, ip.dst, ip.p, ip.len) == (B, A, 1, len(reply))


# ------------------------------------------------------------------ fuzzing


def _decode_never_crashes(packet: bytes) -> None:
    try:
        result = decode(packet)
    except Malformed as exc:
        assert isinstance(exc.reason, DropReason)
    else:
        assert isinstance(result, Segment | IcmpEcho)


@given(st.binary(max_size=120))
def test_fuzz_random_bytes(packet):
    _decode_never_crashes(packet)


@given(st.binary(min_size=20, max_size=80))
def test_fuzz_random_ipv4_header(tail):
    # Valid version/IHL and IP checksum so the fuzzing reaches the deeper layers.
    _decode_never_crashes(refresh_ip_checksum(b"\x45" + tail))


VALID = [
    encode(tcp_seg(Options(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 2)), b"hi")),
    encode(tcp_seg(Options(sack_blocks=[(1, 2)]))),
    echo_request(),
]


@given(st.sampled_from(VALID),
       st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, 100), st.booleans())
def test_fuzz_mutations(packet, edits, cut, fix_ip_checksum):
    buf = bytearray(packet)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    buf = buf[: max(0, len(buf) - cut)]
    if fix_ip_checksum and len(buf) >= 20:
        buf = bytearray(refresh_ip_checksum(bytes(buf)))
    _decode_never_crashes(bytes(buf))


@given(st.binary(max_size=40).map(lambda b: b[: len(b) - len(b) % 4]), st.binary(max_size=8))
def test_fuzz_tcp_options_with_valid_checksums(opts, payload):
    # Arbitrary option bytes behind correct checksums: only the option parser is exercised.
    hdr = struct.pack(">HHIIBBHHH", 40000, 80, 1, 0, (5 + len(opts) // 4) << 4, 0x10, 1000, 0, 0)
    body = hdr + opts + payload
    pseudo = struct.pack(">4s4sxBH", A, B, 6, len(body))
    body = body[:16] + struct.pack(">H", dpkt.in_cksum(pseudo + body)) + body[18:]
    _decode_never_crashes(bytes(ip_packet(body)))


def test_truncated_option_is_ignored():
    # NOPs then an option kind with no room for its length byte.
    s = decode(_raw_tcp(7, b"\x02\x04\x05\xb4" + b"\x01\x01\x01\x08"))
    assert isinstance(s, Segment) and s.options == Options(mss=1460)


def test_options_after_eol_are_ignored():
    s = decode(_raw_tcp(7, b"\x00\x00\x00\x00" + b"\x02\x04\x05\xb4"))
    assert isinstance(s, Segment) and s.options == Options()


@given(st.binary(max_size=3000), st.data())
def test_byte_pair_sum_is_the_word_sum(data, draw):
    """`byte_pair_sum` (the compiled build's checksum loop) against the big-number
    reading the interpreter uses: congruent modulo 0xFFFF on any slice, odd
    lengths (a zero pad byte) included. Runs in both forms under `make test`."""
    start = draw.draw(st.integers(0, len(data)))
    stop = draw.draw(st.integers(start, len(data)))
    piece = data[start:stop]
    number = int.from_bytes(piece, "big") << (8 if len(piece) & 1 else 0)
    assert codec.byte_pair_sum(data, start, stop) % 0xFFFF == number % 0xFFFF
    assert codec._word_sum(piece) % 0xFFFF == number % 0xFFFF
    assert codec._word_sum(memoryview(data)[start:stop]) % 0xFFFF == number % 0xFFFF

