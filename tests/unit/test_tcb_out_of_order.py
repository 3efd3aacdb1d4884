"""Out-of-order data through a whole TCB: thousands of one-octet segments with
gaps (the cut that made reassembly cubic), across the sequence-number wrap, then
the holes filled: every octet is delivered once, in order, and the cap on runs
(TcpConfig.max_ofo_runs) shows in the counters and in the SACK blocks."""

from __future__ import annotations

import random

from tcpstack.core.config import TcpConfig
from tcpstack.core.events import DataReceived
from tcpstack.core.ranges import MAX_OFO_RUNS
from tcpstack.core.tcb import Tcb
from tests.unit.tcpkit import ACK, Y, add, events, seg, tcb_established

X_WRAP = 2**32 - 3000  # the peer's ISN: its data crosses the wrap after 2,999 octets
DATA = bytes((i * 31 + 7) & 0xFF for i in range(6000))


def peer_sends(tcb: Tcb, offset: int, n: int, now: float = 1.0) -> list:
    """The peer's octets [offset, offset + n) of DATA; returns our answers."""
    tcb.receive(seg(ACK, add(X_WRAP, 1 + offset), Y + 1, DATA[offset : offset + n]), now)
    return tcb.take_segments()


def delivered(tcb: Tcb) -> bytes:
    return b"".join(e.data for e in events(tcb) if isinstance(e, DataReceived))


def rel(blocks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """SACK blocks as offsets into DATA."""
    return [((a - X_WRAP - 1) % 2**32, (b - X_WRAP - 1) % 2**32) for a, b in blocks]


def test_established_3000_gapped_one_octet_segments_then_holes_filled():
    tcb = tcb_established(x=X_WRAP, sack_permitted=True)
    for off in range(1, 6000, 2):  # octets 1, 3, 5, ...: 3,000 runs offered
        (ack,) = peer_sends(tcb, off, 1)
        assert ack.ack == add(X_WRAP, 1)
        assert tcb.stats["OfoQueue"] == off // 2 + 1  # counted as it goes
    # Only the first max_ofo_runs runs are kept; each later one lay above them all.
    assert tcb.stats["OfoQueue"] == 3000
    assert tcb.stats["OfoDrop"] == 3000 - MAX_OFO_RUNS
    assert rel(ack.options.sack_blocks)[0] == (2 * MAX_OFO_RUNS - 1, 2 * MAX_OFO_RUNS)
    # The holes between the kept runs, filled from the top down: they join up.
    for off in range(2 * MAX_OFO_RUNS - 2, 0, -2):
        (ack,) = peer_sends(tcb, off, 1)
    assert rel(ack.options.sack_blocks) == [(1, 2 * MAX_OFO_RUNS)]
    assert delivered(tcb) == b""
    # The first hole: everything held comes out at once, acknowledged at once.
    (ack,) = peer_sends(tcb, 0, 1)
    assert ack.ack == add(X_WRAP, 1 + 2 * MAX_OFO_RUNS) and not ack.options.sack_blocks
    # The peer sends the rest again from RCV.NXT, as after a timeout.
    for off in range(2 * MAX_OFO_RUNS, 6000, 1000):
        peer_sends(tcb, off, 1000)
    assert delivered(tcb) == DATA
    assert tcb.rcv_nxt == add(X_WRAP, 6001)


def test_established_one_octet_segments_in_random_order_all_delivered():
    """6,000 one-octet segments in random order, through a small cap (some runs
    pruned, some segments dropped), then whatever is missing sent again in order."""
    tcb = tcb_established(TcpConfig(max_ofo_runs=64), x=X_WRAP, sack_permitted=True)
    order = list(range(6000))
    random.Random(2018).shuffle(order)
    for off in order:
        peer_sends(tcb, off, 1)
    assert tcb.stats["OfoDrop"] > 0 and tcb.stats["OfoPruned"] > 0
    got = delivered(tcb)
    assert DATA.startswith(got)
    while len(got) < len(DATA):
        peer_sends(tcb, len(got), 1000)
        got += delivered(tcb)
    assert got == DATA
