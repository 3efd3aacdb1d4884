"""Segments on the hot path: plain-int control bits, the shared empty options,
and the readable rendering of the bits that the ladder, the trace and `ss` show."""

from __future__ import annotations

from tcpstack.core.config import TcpConfig
from tcpstack.core.segment import (
    ACK,
    EMPTY_OPTIONS,
    FIN,
    PSH,
    SYN,
    Flags,
    Options,
    Segment,
    flags_str,
)
from tcpstack.wire.codec import decode, encode
from tests.unit.tcpkit import WND, X, Y, expect, seg, tcb_established

A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def test_flags_str_names_the_bits_as_the_enum_does():
    assert flags_str(SYN | ACK) == "SYN|ACK" and flags_str(0) == "-"
    assert all(flags_str(bits) == str(Flags(bits)) for bits in range(0x200))


def test_describe_renders_plain_int_flags_by_name():
    s = Segment(A, B, 1, 2, 3, 4, FIN | PSH | ACK, 5, payload=b"xy")
    assert s.describe() == "1>2 FIN|PSH|ACK seq=3 ack=4 win=5 len=2"


def test_a_decoded_segment_has_int_flags_and_shares_the_empty_options():
    packet = encode(Segment(A, B, 1, 2, 3, 4, ACK, 5, payload=b"data"))
    got = decode(packet)
    assert type(got.flags) is int and got.flags == ACK
    assert got.options is EMPTY_OPTIONS  # no Options built for a segment without any
    with_ts = decode(encode(Segment(A, B, 1, 2, 3, 4, ACK, 5, Options(timestamp=(6, 7)))))
    assert with_ts.options is not EMPTY_OPTIONS and with_ts.options.timestamp == (6, 7)


def test_an_ack_without_options_shares_the_empty_options():
    tcb = tcb_established(TcpConfig(rcv_buf=WND, delayed_ack=0))
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"abc"), 1.0)
    [ack] = expect(tcb, [(ACK, Y + 1, X + 4, 0, WND - 3)])
    assert type(ack.flags) is int and ack.options is EMPTY_OPTIONS
