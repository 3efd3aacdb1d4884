"""What `tcpstack ss` and `tcpstack stats` show, read from a live `Stack`.

Plain JSON-ready dicts, built on the daemon's loop between two packets (so a
snapshot is consistent) and sent over the control socket; `tcpstack.lab.query`
turns them into text. Only public attributes of the stack, its connections
and their TCBs are read.

Sequence numbers are given both absolute (what a capture shows) and relative
to the ISS or IRS (what a person compares: SYN = 0, first data octet = 1).
Timers are seconds from the snapshot, since the loop's clock means nothing
outside the daemon.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

from tcpstack.core.cc.base import INITIAL_SSTHRESH
from tcpstack.core.seq import seq_diff
from tcpstack.core.states import State

if TYPE_CHECKING:
    from tcpstack.core.timewait import TimeWait
    from tcpstack.shell.connection import Connection
    from tcpstack.shell.listener import Listener
    from tcpstack.shell.stack import Stack

#: The RFC 4022 (TCP-MIB) counters, in its order, always present: what
#: `netstat -s` and `nstat` show as Tcp*. CurrEstab is computed, the rest counted.
MIB_COUNTERS = ("ActiveOpens", "PassiveOpens", "AttemptFails", "EstabResets", "CurrEstab",
                "InSegs", "OutSegs", "RetransSegs", "InErrs", "OutRsts")
#: RFC 4022 tcpCurrEstab: "ESTABLISHED or CLOSE-WAIT".
CURR_ESTAB_STATES = frozenset({State.ESTABLISHED, State.CLOSE_WAIT})


def stats(stack: Stack) -> dict[str, int]:
    """The MIB counters first (in MIB order, 0 when never counted), then every
    other counter of the stack, sorted by name, then the device's (TUN drops)."""
    counters = {name: stack.stats.get(name, 0) for name in MIB_COUNTERS}
    counters["CurrEstab"] = sum(1 for c in stack.conns.values()
                                if c.tcb.state in CURR_ESTAB_STATES)
    # Gauges: connections the shell drives (ConnTasks: each had a task of its own
    # until the shell ran their turns itself; the name stays for the scripts that
    # read it), and TIME-WAIT records (which need neither).
    gauges = {"ConnTasks": sum(1 for c in stack.conns.values() if not c.finished),
              "TimeWait": len(stack.time_wait)}
    counters.update(sorted([*gauges.items(),
                            *((k, v) for k, v in stack.stats.items() if k not in counters)]))
    counters.update(stack.device_stats())
    return counters


def ss(stack: Stack, now: float) -> dict[str, Any]:
    """The listeners and the connection table; `now` is the loop's time."""
    return {
        "addr": str(IPv4Address(stack.addr)),
        "listeners": [listener_info(stack, lst) for _, lst in sorted(stack.listeners.items())],
        "connections": [info for _, info in sorted(
            [(k, connection_info(c, now)) for k, c in stack.conns.items()]
            + [(k, time_wait_info(tw, now)) for k, tw in stack.time_wait.items()],
            key=lambda item: item[0])],
    }


def listener_info(stack: Stack, listener: Listener) -> dict[str, Any]:
    return {
        "state": str(State.LISTEN),
        "local": f"{IPv4Address(stack.addr)}:{listener.port}",
        "port": listener.port,
        "backlog": listener.backlog,
        "half_open": len(listener.half_open),
        "accept_queue": len(listener.accept_queue),
    }


def time_wait_info(tw: TimeWait, now: float) -> dict[str, Any]:
    """A TIME-WAIT record: only what it keeps (as `ss` shows Linux's mini-sockets)."""
    return {
        "state": str(tw.state),
        "local": tw.local,
        "remote": tw.remote,
        "snd_nxt": tw.snd_nxt,
        "rcv_nxt": tw.rcv_nxt,
        "rcv_wnd": tw.window << tw.wscale,
        "unread": 0,
        "send_queue": 0,
        "timers": {name: round(when - now, 6) for name, when in tw.timers().items()},
        "options": {"ts": tw.ts_ok},
    }


def connection_info(conn: Connection, now: float) -> dict[str, Any]:
    """One connection, the fields of `ss -tin` and the RFC 9293 variables."""
    t = conn.tcb
    irs_known = t.state not in (State.SYN_SENT, State.CLOSED)  # SYN-SENT: no SYN seen yet
    cc = t.cc
    return {
        "state": str(t.state),
        "local": conn.local,
        "remote": conn.remote,
        "passive": t.passive,
        "iss": t.iss,
        "irs": t.irs if irs_known else None,
        "snd_una": t.snd_una,
        "snd_nxt": t.snd_nxt,
        "snd_max": t.snd_max,
        "rcv_nxt": t.rcv_nxt if irs_known else None,
        "relative": {
            "snd_una": seq_diff(t.snd_una, t.iss),
            "snd_nxt": seq_diff(t.snd_nxt, t.iss),
            "snd_max": seq_diff(t.snd_max, t.iss),
            "rcv_nxt": seq_diff(t.rcv_nxt, t.irs) if irs_known else None,
        },
        "snd_wnd": t.snd_wnd,
        "rcv_wnd": t.rcv_wnd,
        "mss": t.send_mss,
        "cc": cc.name,
        "cwnd": cc.cwnd,
        "ssthresh": None if cc.ssthresh >= INITIAL_SSTHRESH else cc.ssthresh,
        "srtt": t.srtt,
        "rttvar": t.rttvar if t.srtt is not None else None,
        "rto": t.rto,
        "retransmits": t.total_retransmits,
        "backoff": t.retransmits,
        "send_queue": conn.write_buffer_size,  # written, not yet acknowledged (Send-Q)
        "unread": conn.unread,
        "timers": {name: round(when - now, 6) for name, when in sorted(
            t.timers().items(), key=lambda item: item[1])},
        "options": {
            # Both shifts are 0 unless both SYNs carried the option (RFC 7323 2.2).
            "wscale": [t.snd_wscale, t.rcv_wscale] if t.snd_wscale or t.rcv_wscale else None,
            "sack": t.sack_ok,
            "ts": t.ts_ok,
        },
    }
