"""RFC 9293 3.10.7.1: the reset answering a segment no connection accepts."""

from tcpstack.core.resets import reset_for
from tests.unit.tcpkit import ACK, FIN, PEER, PEER_PORT, PSH, RST, SYN, US, US_PORT, seg


def test_syn_to_closed_port():
    rst = reset_for(seg(SYN, 1000))
    assert rst is not None
    assert (rst.flags, rst.seq, rst.ack) == (RST | ACK, 0, 1001)
    assert (rst.src, rst.dst, rst.sport, rst.dport) == (US, PEER, US_PORT, PEER_PORT)
    assert rst.payload == b""


def test_syn_with_data_counts_syn_and_data():
    rst = reset_for(seg(SYN, 1000, payload=b"x" * 10))
    assert (rst.flags, rst.seq, rst.ack) == (RST | ACK, 0, 1011)


def test_syn_fin_counts_both():
    rst = reset_for(seg(SYN | FIN, 1000, payload=b"abc"))
    assert (rst.flags, rst.seq, rst.ack) == (RST | ACK, 0, 1005)


def test_ack_less_data_segment_wraps():
    rst = reset_for(seg(PSH, 2**32 - 2, payload=b"abcd"))
    assert (rst.flags, rst.seq, rst.ack) == (RST | ACK, 0, 2)


def test_ack_segment_gets_rst_at_seg_ack():
    rst = reset_for(seg(ACK, 1000, 777, payload=b"data"))
    assert (rst.flags, rst.seq, rst.ack) == (RST, 777, 0)


def test_syn_ack_gets_rst_at_seg_ack():
    rst = reset_for(seg(SYN | ACK, 1000, 4242))
    assert (rst.flags, rst.seq, rst.ack) == (RST, 4242, 0)


def test_rst_is_never_answered():
    assert reset_for(seg(RST, 1000)) is None
    assert reset_for(seg(RST | ACK, 1000, 5)) is None
