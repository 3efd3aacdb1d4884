"""`tcpstack ss` and `tcpstack stats`: ask a running daemon, print the answer.

The daemon builds the snapshot (`tcpstack.lab.snapshot`) and sends it over its
control socket (`tcpstack.lab.control`); this module finds the socket (from
`--tun`, or `--control` for a daemon started with its own path), prints the
JSON as received with `--json`, and otherwise lays it out like `ss -tin` and
`nstat`: one line per socket plus an indented detail line, and the counters
in two groups, the standard MIB first.

No daemon there is exit status 1 with one line on stderr, as for a failed
`connect`; a bad command line is exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

from tcpstack.lab import control
from tcpstack.lab.snapshot import MIB_COUNTERS

COMMANDS = {
    "ss": "the connection table of a running daemon, like ss -tin",
    "stats": "the counters of a running daemon (TCP MIB names first)",
}
EXIT_FAILURE = 1
_HEADER = ("State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port")
_MIN_WIDTHS = (13, 7, 7, 22, 22)  # ss's own, for the usual short values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ss` and `stats`: which daemon, and the output format."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--tun", default="tcps0",
                       help="ask the daemon on this TUN device in this network namespace "
                       "(default tcps0)")
    where.add_argument("--control", metavar="PATH",
                       help="ask the daemon listening on this control socket")
    parser.add_argument("--json", action="store_true", help="print the daemon's JSON answer")


def run(args: argparse.Namespace) -> int:
    """Run `tcpstack ss` or `tcpstack stats`; the exit status."""
    path = args.control or control.default_path(args.tun)
    try:
        result = control.request(path, args.command)
    except control.ControlError as e:
        print(f"tcpstack: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        lines = format_ss(result) if args.command == "ss" else format_stats(result)
        print("\n".join(lines))
    return 0


# -- ss ------------------------------------------------------------------------------------


def format_ss(table: dict[str, Any]) -> list[str]:
    """Listeners, then connections: a row each and an indented detail line.

    Each column is as wide as its widest cell plus a space (at least as wide as
    `ss` makes it), so a Recv-Q of 1048576 never runs into the Send-Q.
    """
    rows: list[tuple[object, ...] | str] = []
    for lst in table["listeners"]:
        rows.append((lst["state"], lst["accept_queue"], lst["backlog"], lst["local"], "*:*"))
        rows.append(f"\t backlog:{lst['backlog']} half-open:{lst['half_open']} "
                    f"accept-queue:{lst['accept_queue']}")
    for conn in table["connections"]:
        rows.append((conn["state"], conn["unread"], conn["send_queue"], conn["local"],
                     conn["remote"]))
        rows.append("\t " + " ".join(_details(conn) if "cc" in conn else _time_wait(conn)))
    cells = [_HEADER, *(row for row in rows if isinstance(row, tuple))]
    widths = [max(width, *(len(str(row[i])) + 1 for row in cells))
              for i, width in enumerate(_MIN_WIDTHS)]
    return [_row(_HEADER, widths)] + [
        row if isinstance(row, str) else _row(row, widths) for row in rows]


def _row(cells: tuple[object, ...], widths: list[int]) -> str:
    return "".join(f"{cell!s:<{w}}" for cell, w in zip(cells, widths, strict=True)).rstrip()


def _details(c: dict[str, Any]) -> Iterator[str]:
    """ss -i's fields (times in ms as there), then the RFC 9293 variables."""
    opts = c["options"]
    yield c["cc"]
    if opts["wscale"]:
        yield "wscale:{},{}".format(*opts["wscale"])
    if opts["sack"]:
        yield "sack"
    if opts["ts"]:
        yield "ts"
    yield f"mss:{c['mss']}"
    yield f"cwnd:{c['cwnd']}"
    if c["ssthresh"] is not None:
        yield f"ssthresh:{c['ssthresh']}"
    yield f"rto:{_ms(c['rto'])}"
    if c["srtt"] is not None:
        yield f"rtt:{_ms(c['srtt'])}/{_ms(c['rttvar'])}"
    yield f"retrans:{c['backoff']}/{c['retransmits']}"
    yield f"snd_wnd:{c['snd_wnd']}"
    yield f"rcv_wnd:{c['rcv_wnd']}"
    rel = c["relative"]
    yield f"iss:{c['iss']}"
    yield f"snd_una:{c['snd_una']}({rel['snd_una']:+d})"
    yield f"snd_nxt:{c['snd_nxt']}({rel['snd_nxt']:+d})"
    if c["snd_max"] != c["snd_nxt"]:
        yield f"snd_max:{c['snd_max']}({rel['snd_max']:+d})"
    if c["irs"] is not None:
        yield f"irs:{c['irs']}"
        yield f"rcv_nxt:{c['rcv_nxt']}({rel['rcv_nxt']:+d})"
    if c["timers"]:
        yield "timers:" + ",".join(f"{name}={left:.3f}s" for name, left in c["timers"].items())


def _time_wait(c: dict[str, Any]) -> Iterator[str]:
    """A TIME-WAIT record keeps only its sequence numbers, window and timer."""
    if c["options"]["ts"]:
        yield "ts"
    yield f"snd_nxt:{c['snd_nxt']}"
    yield f"rcv_nxt:{c['rcv_nxt']}"
    yield f"rcv_wnd:{c['rcv_wnd']}"
    yield "timers:" + ",".join(f"{name}={left:.3f}s" for name, left in c["timers"].items())


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}".rstrip("0").rstrip(".")


# -- stats ---------------------------------------------------------------------------------


def format_stats(counters: dict[str, int]) -> list[str]:
    """The MIB group, then the stack's own counters (in the daemon's order: sorted)."""
    width = max(map(len, counters), default=0) + 2
    mib = [k for k in counters if k in MIB_COUNTERS]
    own = [k for k in counters if k not in MIB_COUNTERS]
    lines = ["Tcp (RFC 4022 MIB):"]
    lines += [f"    {k:<{width}}{counters[k]}" for k in mib]
    lines.append("tcpstack:")
    lines += [f"    {k:<{width}}{counters[k]}" for k in own]
    return lines
