"""A checked "fragmentation needed" lowers the MSS (RFC 1191 6.3; `Tcb.lower_mtu`);
the stack's checks before it are in tests/unit/test_stack_ip.py."""

from __future__ import annotations

from tcpstack.core.tcb import MIN_PMTU, TS_OPTION_LEN
from tests.unit.tcpkit import ACK, PSH, X, Y, expect, tcb_established, tcb_with_timestamps


def test_established_frag_needed_cuts_the_retransmission_and_new_data():
    tcb = tcb_established()
    tcb.send(b"a" * 3000, 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 1460), (ACK, Y + 1461, X + 1, 1460),
                 (ACK | PSH, Y + 2921, X + 1, 80)])
    tcb.lower_mtu(1000, 1.01)
    assert (tcb.send_mss, tcb.cc.mss, tcb.stats["PmtuReductions"]) == (960, 960, 1)
    expect(tcb, [])  # nothing at once: the RTO resends (Linux resends at once)
    tcb.on_timer(tcb.next_deadline())
    [first] = expect(tcb, [(ACK, Y + 1, X + 1, 960)])
    tcb.send(b"b" * 2000, 2.0)  # new data too: in pieces of at most 960
    assert all(len(s.payload) <= 960 for s in tcb.take_segments())
    assert first.payload == b"a" * 960


def test_established_frag_needed_never_raises_the_mss():
    tcb = tcb_established()
    tcb.lower_mtu(1400, 1.0)
    tcb.lower_mtu(1500, 1.0)
    assert (tcb.send_mss, tcb.stats["PmtuReductions"]) == (1360, 1)


def test_established_frag_needed_below_min_pmtu_counts_as_min_pmtu():
    """A forged "MTU 68" cannot make every segment carry 28 octets (Linux min_pmtu)."""
    tcb = tcb_established()
    tcb.lower_mtu(68, 1.0)
    assert tcb.send_mss == MIN_PMTU - 40


def test_established_frag_needed_leaves_room_for_timestamps():
    tcb = tcb_with_timestamps()
    tcb.lower_mtu(1000, 1.0)
    assert tcb.send_mss == 1000 - 40 - TS_OPTION_LEN
