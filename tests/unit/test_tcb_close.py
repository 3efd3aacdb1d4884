"""Closing: active, passive and simultaneous close, TIME-WAIT, FIN retransmission,
orphaned FIN-WAIT-2 and abort (RFC 9293 3.6, 3.10.4-5, 3.10.7.4)."""

import pytest

from tcpstack.core.config import TcpConfig
from tcpstack.core.events import DataReceived, EofReceived
from tcpstack.core.states import State
from tests.unit.tcpkit import (
    ACK,
    FIN,
    PSH,
    RST,
    X,
    Y,
    events,
    expect,
    lost,
    seg,
    tcb_close_wait,
    tcb_closing,
    tcb_established,
    tcb_fin_wait_1,
    tcb_fin_wait_2,
    tcb_last_ack,
    tcb_syn_rcvd,
    tcb_syn_sent,
    tcb_time_wait,
)

# ---------------------------------------------------------------- ESTABLISHED


def test_established_close_sends_fin():
    tcb = tcb_established()
    tcb.close(1.0)
    assert tcb.state is State.FIN_WAIT_1
    expect(tcb, [(ACK | FIN, Y + 1, X + 1, 0)])
    assert tcb.next_deadline() == pytest.approx(1.2)


def test_established_close_fin_after_sent_data():
    tcb = tcb_established()
    tcb.send(b"abc", 1.0)
    tcb.close(1.0)
    expect(tcb, [(ACK | PSH, Y + 1, X + 1, 3), (ACK | FIN, Y + 4, X + 1, 0)])


def test_established_close_fin_after_queued_data():
    tcb = tcb_established(window=1000)
    tcb.send(b"x" * 3000, 1.0)
    tcb.close(1.0)
    assert tcb.state is State.FIN_WAIT_1
    expect(tcb, [(ACK, Y + 1, X + 1, 1000)])  # the FIN waits behind the queued data
    tcb.receive(seg(ACK, X + 1, Y + 1001, window=3000), 1.1)
    expect(tcb, [(ACK, Y + 1001, X + 1, 1460), (ACK | PSH | FIN, Y + 2461, X + 1, 540)])
    tcb.receive(seg(ACK, X + 1, Y + 3002), 1.2)
    assert tcb.state is State.FIN_WAIT_2


def test_established_send_after_close_raises():
    tcb = tcb_established()
    tcb.close(1.0)
    with pytest.raises(RuntimeError):
        tcb.send(b"late", 1.0)


def test_established_fin_passive_close():
    tcb = tcb_established()
    tcb.receive(seg(ACK | FIN, X + 1, Y + 1), 1.0)
    assert tcb.state is State.CLOSE_WAIT
    assert events(tcb) == [EofReceived()]
    expect(tcb, [(ACK, Y + 1, X + 2, 0)])


def test_established_fin_with_data():
    tcb = tcb_established()
    tcb.receive(seg(ACK | PSH | FIN, X + 1, Y + 1, b"bye"), 1.0)
    assert events(tcb) == [DataReceived(b"bye"), EofReceived()]
    expect(tcb, [(ACK, Y + 1, X + 5, 0)])
    assert tcb.state is State.CLOSE_WAIT


def test_established_fin_out_of_order_not_processed():
    tcb = tcb_established()
    tcb.receive(seg(ACK | FIN, X + 10, Y + 1), 1.0)
    expect(tcb, [(ACK, Y + 1, X + 1, 0)])
    assert tcb.state is State.ESTABLISHED
    assert events(tcb) == []


def test_established_abort_sends_rst():
    tcb = tcb_established()
    tcb.send(b"abc", 1.0)
    tcb.take_segments()
    tcb.abort(1.1)
    expect(tcb, [(RST | ACK, Y + 4, X + 1, 0)])
    assert tcb.state is State.CLOSED
    assert lost(tcb) is None
    assert tcb.next_deadline() is None


# --------------------------------------------------------------- SYN-RECEIVED


def test_syn_rcvd_close_defers_fin_until_established():
    tcb = tcb_syn_rcvd()
    tcb.close(0.5)
    expect(tcb, [])
    assert tcb.state is State.SYN_RCVD
    tcb.receive(seg(ACK, X + 1, Y + 1), 0.6)
    assert tcb.state is State.FIN_WAIT_1
    expect(tcb, [(ACK | FIN, Y + 1, X + 1, 0)])


def test_syn_rcvd_abort_sends_rst():
    tcb = tcb_syn_rcvd()
    tcb.abort(0.5)
    expect(tcb, [(RST | ACK, Y + 1, X + 1, 0)])
    assert tcb.state is State.CLOSED


def test_syn_sent_abort_sends_nothing():
    tcb = tcb_syn_sent()
    tcb.abort(0.5)
    expect(tcb, [])
    assert tcb.state is State.CLOSED
    assert lost(tcb) is None


# ----------------------------------------------------------------- FIN-WAIT-1


def test_fin_wait_1_ack_of_fin():
    tcb = tcb_fin_wait_1()
    tcb.receive(seg(ACK, X + 1, Y + 2), 1.0)
    assert tcb.state is State.FIN_WAIT_2
    expect(tcb, [])
    assert tcb.next_deadline() is None  # not orphaned: wait for the peer's FIN


def test_fin_wait_1_ack_not_covering_fin():
    tcb = tcb_fin_wait_1()
    tcb.receive(seg(ACK, X + 1, Y + 1), 0.1)
    assert tcb.state is State.FIN_WAIT_1
    expect(tcb, [])


def test_fin_wait_1_fin_simultaneous_close():
    tcb = tcb_fin_wait_1()
    tcb.receive(seg(ACK | FIN, X + 1, Y + 1), 0.1)
    assert tcb.state is State.CLOSING
    assert events(tcb) == [EofReceived()]
    expect(tcb, [(ACK, Y + 2, X + 2, 0)])


def test_fin_wait_1_fin_and_ack_of_fin():
    tcb = tcb_fin_wait_1()
    tcb.receive(seg(ACK | FIN, X + 1, Y + 2), 0.1)
    assert tcb.state is State.TIME_WAIT
    expect(tcb, [(ACK, Y + 2, X + 2, 0)])
    assert tcb.next_deadline() == pytest.approx(60.1)


def test_fin_wait_1_data_still_delivered():
    tcb = tcb_fin_wait_1()
    tcb.receive(seg(ACK | PSH, X + 1, Y + 1, b"more"), 0.1)
    assert events(tcb) == [DataReceived(b"more")]
    expect(tcb, [])  # delayed ACK (RFC 5681 4.2), before the FIN's RTO at 0.2
    assert tcb.next_deadline() == pytest.approx(0.14)
    tcb.on_timer(0.14)
    expect(tcb, [(ACK, Y + 2, X + 5, 0)])


def test_fin_wait_1_rto_retransmits_fin():
    tcb = tcb_fin_wait_1()
    assert tcb.next_deadline() == pytest.approx(0.2)
    tcb.on_timer(0.1999)
    expect(tcb, [])
    tcb.on_timer(0.2)
    expect(tcb, [(ACK | FIN, Y + 1, X + 1, 0)])
    assert tcb.next_deadline() == pytest.approx(0.6)  # backed off: 0.2 + 0.4
    tcb.on_timer(tcb.next_deadline())
    expect(tcb, [(ACK | FIN, Y + 1, X + 1, 0)])


def test_fin_wait_1_abort_sends_rst():
    tcb = tcb_fin_wait_1()
    tcb.abort(0.1)
    expect(tcb, [(RST | ACK, Y + 2, X + 1, 0)])
    assert tcb.state is State.CLOSED


# ----------------------------------------------------------------- FIN-WAIT-2


def test_fin_wait_2_fin():
    tcb = tcb_fin_wait_2()
    tcb.receive(seg(ACK | FIN, X + 1, Y + 2), 1.0)
    assert tcb.state is State.TIME_WAIT
    assert events(tcb) == [EofReceived()]
    expect(tcb, [(ACK, Y + 2, X + 2, 0)])
    assert tcb.next_deadline() == 61.0  # 2 * MSL


def test_fin_wait_2_data_still_delivered():
    tcb = tcb_fin_wait_2()
    tcb.receive(seg(ACK | PSH, X + 1, Y + 2, b"half-close"), 1.0)
    assert events(tcb) == [DataReceived(b"half-close")]
    expect(tcb, [])  # delayed ACK (RFC 5681 4.2)
    assert tcb.next_deadline() == pytest.approx(1.04)
    tcb.on_timer(1.04)
    expect(tcb, [(ACK, Y + 2, X + 11, 0)])
    assert tcb.state is State.FIN_WAIT_2


def test_fin_wait_2_orphaned_timeout_sends_rst():
    tcb = tcb_fin_wait_2(TcpConfig(fin_timeout=5.0), orphan=True)
    assert tcb.next_deadline() == 5.0
    tcb.on_timer(4.999)
    expect(tcb, [])
    tcb.on_timer(5.0)
    expect(tcb, [(RST | ACK, Y + 2, X + 1, 0)])
    assert tcb.state is State.CLOSED
    assert lost(tcb) is None


def test_fin_wait_2_orphaned_default_fin_timeout():
    tcb = tcb_fin_wait_2(orphan=True, now=2.0)
    assert tcb.next_deadline() == 62.0


def test_fin_wait_2_orphaned_fin_before_timeout():
    tcb = tcb_fin_wait_2(orphan=True)
    tcb.receive(seg(ACK | FIN, X + 1, Y + 2), 10.0)
    assert tcb.state is State.TIME_WAIT
    assert tcb.next_deadline() == 70.0


def test_fin_wait_2_orphaned_later_times_out():
    tcb = tcb_fin_wait_2()  # half-closed (write_eof), then the application closes fully
    assert tcb.next_deadline() is None
    tcb.close(10.0, orphan=True)
    assert tcb.next_deadline() == 70.0
    tcb.on_timer(70.0)
    expect(tcb, [(RST | ACK, Y + 2, X + 1, 0)])
    assert tcb.state is State.CLOSED


def test_fin_wait_1_orphaned_later_times_out_in_fin_wait_2():
    tcb = tcb_fin_wait_1()
    tcb.close(0.1, orphan=True)
    tcb.receive(seg(ACK, X + 1, Y + 2), 0.2)
    assert tcb.next_deadline() == pytest.approx(60.2)


# -------------------------------------------------------------------- CLOSING


def test_closing_ack_of_fin():
    tcb = tcb_closing()
    tcb.receive(seg(ACK, X + 2, Y + 2), 0.1)
    assert tcb.state is State.TIME_WAIT
    expect(tcb, [])
    assert tcb.next_deadline() == pytest.approx(60.1)


def test_closing_rto_retransmits_fin():
    tcb = tcb_closing()
    tcb.on_timer(0.2)
    expect(tcb, [(ACK | FIN, Y + 1, X + 2, 0)])


def test_closing_rst_closes_without_error():
    tcb = tcb_closing()
    tcb.receive(seg(RST, X + 2), 0.1)
    assert tcb.state is State.CLOSED
    assert lost(tcb) is None


# ------------------------------------------------------------------ TIME-WAIT


def test_time_wait_lasts_two_msl():
    tcb = tcb_time_wait()
    assert tcb.next_deadline() == 60.0
    tcb.on_timer(59.999)
    assert tcb.state is State.TIME_WAIT
    tcb.on_timer(60.0)
    assert tcb.state is State.CLOSED
    expect(tcb, [])
    assert lost(tcb) is None
    assert tcb.next_deadline() is None


def test_time_wait_custom_msl():
    tcb = tcb_time_wait(TcpConfig(msl=2.0), now=1.0)
    assert tcb.next_deadline() == 5.0


# Segments in TIME-WAIT (a retransmitted FIN, reuse) are the record's:
# tests/unit/test_timewait.py.


def test_time_wait_abort_sends_nothing():
    tcb = tcb_time_wait()
    tcb.abort(1.0)
    expect(tcb, [])
    assert tcb.state is State.CLOSED


# ----------------------------------------------------------------- CLOSE-WAIT


def test_close_wait_send_still_allowed():
    tcb = tcb_close_wait()
    tcb.send(b"reply", 1.0)
    expect(tcb, [(ACK | PSH, Y + 1, X + 2, 5)])


def test_close_wait_retransmitted_fin_reacked():
    tcb = tcb_close_wait()
    tcb.receive(seg(ACK | FIN, X + 1, Y + 1), 1.0)
    expect(tcb, [(ACK, Y + 1, X + 2, 0)])
    assert events(tcb) == []


def test_close_wait_close():
    tcb = tcb_close_wait()
    tcb.close(1.0)
    assert tcb.state is State.LAST_ACK
    expect(tcb, [(ACK | FIN, Y + 1, X + 2, 0)])


def test_close_wait_rst_resets():
    tcb = tcb_close_wait()
    tcb.receive(seg(RST, X + 2), 1.0)
    assert lost(tcb) is ConnectionResetError


# ------------------------------------------------------------------- LAST-ACK


def test_last_ack_ack_of_fin():
    tcb = tcb_last_ack()
    tcb.receive(seg(ACK, X + 2, Y + 2), 1.0)
    assert tcb.state is State.CLOSED
    expect(tcb, [])
    assert lost(tcb) is None
    assert tcb.next_deadline() is None


def test_last_ack_rto_retransmits_fin():
    tcb = tcb_last_ack()
    tcb.on_timer(0.2)
    expect(tcb, [(ACK | FIN, Y + 1, X + 2, 0)])
    assert tcb.state is State.LAST_ACK


def test_last_ack_abort_sends_nothing():
    tcb = tcb_last_ack()
    tcb.abort(1.0)
    expect(tcb, [])
    assert tcb.state is State.CLOSED


def test_fin_wait_1_data_after_full_close_is_answered_with_rst():
    """RFC 1122 4.2.2.13: after close() the data is lost; say so (as Linux)."""
    tcb = tcb_established()
    tcb.close(1.0, orphan=True)
    expect(tcb, [(ACK | FIN, Y + 1, X + 1, 0)])
    tcb.receive(seg(ACK | PSH, X + 1, Y + 2, b"late"), 1.1)
    expect(tcb, [(RST, Y + 2, 0, 0)])
    assert tcb.state is State.CLOSED
    assert tcb.stats["AbortOnData"] == 1


def test_fin_wait_1_data_after_half_close_is_still_delivered():
    tcb = tcb_established()
    tcb.close(1.0)  # write_eof(): we still read
    tcb.take_segments()
    tcb.receive(seg(ACK | PSH, X + 1, Y + 2, b"more"), 1.1)
    assert events(tcb) == [DataReceived(b"more")]
