"""D-SACK (RFC 2883): octets that arrive a second time are named in the first
SACK block of the ACK they draw, once, on connections that negotiated SACK.
tests/conformance/scripts.py ("sack/...duplicate-data") holds the same against
Linux on the wire."""

from __future__ import annotations

from collections import Counter

from tcpstack.core.config import TcpConfig
from tcpstack.core.tcb import Tcb
from tcpstack.wire import codec
from tests.unit.tcpkit import ACK, FIN, PSH, X, Y, peer_syn, seg, tcb_established, ts_seg


def sends(tcb: Tcb, offset: int, data: bytes, flags: int = ACK | PSH) -> list:
    """The peer's `data` at X+1+offset; our answers."""
    tcb.receive(seg(flags, X + 1 + offset, Y + 1, data), 1.0)
    return tcb.take_segments()


def test_a_repeated_segment_draws_an_ack_with_a_d_sack_once() -> None:
    tcb = tcb_established(sack_permitted=True)
    sends(tcb, 0, b"abcd")
    [ack] = sends(tcb, 0, b"ab")
    assert ack.ack == X + 5
    assert list(ack.options.sack_blocks) == [(X + 1, X + 3)]
    assert tcb.stats["TCPDSACKOldSent"] == 1
    sends(tcb, 4, b"ef")
    [ack] = sends(tcb, 6, b"gh")  # the second segment: acknowledged at once
    assert ack.ack == X + 9 and not ack.options.sack_blocks


def test_the_repeated_head_of_a_segment_with_new_data() -> None:
    tcb = tcb_established(sack_permitted=True)
    sends(tcb, 0, b"abcd")
    [ack] = sends(tcb, 2, b"cdefgh")  # the second segment: acknowledged at once
    assert ack.ack == X + 9
    assert list(ack.options.sack_blocks) == [(X + 3, X + 5)]


def test_a_repeated_fin_is_named_too() -> None:
    """Linux's tcp_send_dupack: the repeat's SEG.LEN counts its FIN."""
    tcb = tcb_established(sack_permitted=True)
    sends(tcb, 0, b"ab", ACK | PSH | FIN)
    [ack] = sends(tcb, 0, b"ab", ACK | PSH | FIN)
    assert ack.ack == X + 4
    assert list(ack.options.sack_blocks) == [(X + 1, X + 4)]


def test_the_d_sack_goes_first_and_the_blocks_fit_the_options() -> None:
    """With runs out of order held, the D-SACK leads and the others follow, up to
    four blocks without timestamps (RFC 2018 3: 40 option octets)."""
    tcb = tcb_established(sack_permitted=True)
    sends(tcb, 0, b"ab")
    for offset in (4, 8, 12, 16):  # four runs beyond a hole at X+3
        sends(tcb, offset, b"xx")
    [ack] = sends(tcb, 0, b"ab")
    blocks = list(ack.options.sack_blocks)
    assert blocks[0] == (X + 1, X + 3) and len(blocks) == 4
    assert ack.ack == X + 3


def test_no_d_sack_without_sack() -> None:
    tcb = tcb_established()
    sends(tcb, 0, b"abcd")
    [ack] = sends(tcb, 0, b"ab")
    assert ack.ack == X + 5 and not ack.options.sack_blocks
    assert tcb.stats["TCPDSACKOldSent"] == 0


def test_beside_timestamps_three_blocks_and_the_ack_encodes() -> None:
    """12 octets of timestamp option leave room for three blocks (RFC 2018 3)."""
    syn = peer_syn()
    syn.options.timestamp = (777, 0)
    syn.options.sack_permitted = True
    tcb = Tcb.open_passive(TcpConfig(), syn, Y, 0.0, Counter())
    tcb.take_segments()
    tcb.receive(ts_seg(ACK, X + 1, Y + 1, tsval=778, tsecr=Y), 0.0)
    tcb.take_segments()
    for offset in (0, 4, 8, 12, 16):  # octets at X+1, then four runs beyond a hole
        tcb.receive(ts_seg(ACK | PSH, X + 1 + offset, Y + 1, b"xx", tsval=779, tsecr=Y), 1.0)
    tcb.take_segments()
    tcb.receive(ts_seg(ACK | PSH, X + 1, Y + 1, b"xx", tsval=780, tsecr=Y), 1.0)
    [ack] = tcb.take_segments()
    assert ack.options.timestamp is not None
    blocks = list(ack.options.sack_blocks)
    assert blocks[0] == (X + 1, X + 3) and len(blocks) == 3
    assert len(codec.encode(ack)) <= 20 + 60  # the options fit the TCP header


def test_a_repeat_of_data_held_out_of_order() -> None:
    """Linux's tcp_data_queue_ofo: the D-SACK, then the block of the run held."""
    tcb = tcb_established(sack_permitted=True)
    sends(tcb, 4, b"efgh")  # beyond a hole at X+1
    [ack] = sends(tcb, 4, b"ef")
    assert ack.ack == X + 1
    assert list(ack.options.sack_blocks) == [(X + 5, X + 7), (X + 5, X + 9)]
    assert tcb.stats["TCPDSACKOfoSent"] == 1 and tcb.stats["TCPDSACKOldSent"] == 0
