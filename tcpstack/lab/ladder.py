"""`tcpstack ladder`: one TCP connection of a capture drawn as a sequence diagram.

The textbook chapter draws connection management as a ladder: A on the left, B on the
right, time running down, one slanted arrow per segment labelled ``SYN=1
seq=x``. This command draws the same picture from a real capture, so what the
stack (or any TCP) did on the wire can be read the way the textbook reads::

    tcpstack ladder CAPTURE.pcap [--conn PORT|A.B.C.D:P-E.F.G.H:Q] [--svg OUT.svg]
                    [--absolute] [--trace LOG] [--ascii] [--width N]

One concern a module (each docstring says the rules it implements):

- `tcpstack.lab.ladder_capture`: reading the pcap file, choosing the connection
  and its client (input, ``--conn``);
- `tcpstack.lab.ladder_model`: the records and the relative notation (x, y);
- `tcpstack.lab.ladder_replay`: the marks (retransmission, lost) and the replay
  of both sides' RFC 9293 states;
- `tcpstack.lab.ladder_trace`: the daemon's ``--trace`` log deciding the stack
  side's states;
- `tcpstack.lab.ladder_text` and `tcpstack.lab.ladder_svg`: the two drawings;
- this module: the command line, and the public names of all of them.

API
    ``main(argv)``; ``add_arguments(parser)`` + ``run(args)`` for a
    ``tcpstack ladder`` sub-command; ``analyze(segments, ...) -> Ladder`` and
    ``render_text(segments_or_ladder, ...)`` / ``render_svg(...)`` over plain
    `Seg` records, for callers without a capture file. Errors are one line on
    stderr: exit status 2 for bad arguments (missing or non-pcap file, bad
    ``--conn``), 1 when the capture has no (matching) TCP connection.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tcpstack.lab.argparsing import EXIT_USAGE, standalone_main
from tcpstack.lab.ladder_capture import (
    EXIT_NO_CONNECTION,
    ConnSpec,
    LadderError,
    Packet,
    parse_conn,
    read_capture,
    select_connection,
)
from tcpstack.lab.ladder_model import Endpoint, Ladder, Seg, Step, TraceEvent
from tcpstack.lab.ladder_replay import analyze
from tcpstack.lab.ladder_svg import render_svg
from tcpstack.lab.ladder_text import DEFAULT_WIDTH, MIN_WIDTH, draw_text, render_text
from tcpstack.lab.ladder_trace import parse_trace

__all__ = [
    "EXIT_NO_CONNECTION", "ConnSpec", "Endpoint", "Ladder", "LadderError", "Packet", "Seg",
    "Step", "TraceEvent", "add_arguments", "analyze", "draw_text", "main", "parse_conn",
    "parse_trace", "read_capture", "render_svg", "render_text", "run", "select_connection",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `tcpstack ladder`, for a sub-parser of the main command line."""
    parser.add_argument("capture", metavar="CAPTURE.pcap",
                        help="pcap file (link type RAW, Ethernet or Linux cooked)")
    parser.add_argument("--conn", metavar="PORT|A.B.C.D:P-E.F.G.H:Q", type=_conn_arg,
                        help="the connection to draw (default: the first in the file)")
    parser.add_argument("--svg", metavar="OUT.svg",
                        help="write an SVG document instead of printing text ('-': stdout)")
    parser.add_argument("--absolute", action="store_true",
                        help="raw sequence numbers instead of x+n / y+n")
    parser.add_argument("--trace", metavar="LOG",
                        help="the daemon's --trace log: states and causes of the stack's side")
    parser.add_argument("--ascii", action="store_true", help="ASCII instead of box drawing")
    parser.add_argument("--width", metavar="N", type=_width_arg, default=DEFAULT_WIDTH,
                        help=f"text width in columns (default {DEFAULT_WIDTH}, "
                             f"at least {MIN_WIDTH})")


def _conn_arg(text: str) -> ConnSpec:
    try:
        return parse_conn(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _width_arg(text: str) -> int:
    if not text.isdigit() or int(text) < MIN_WIDTH:
        raise argparse.ArgumentTypeError(f"expected a number of columns >= {MIN_WIDTH}")
    return int(text)


def _read_trace(path: str) -> list[TraceEvent]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_trace(f)
    except OSError as e:
        raise LadderError(f"{path}: {e.strerror}", EXIT_USAGE) from None


def run(args: argparse.Namespace) -> int:
    """Draw the connection `args` selects; errors are one line on stderr."""
    try:
        trace = _read_trace(args.trace) if args.trace else []
        client, server, segments = select_connection(read_capture(args.capture), args.conn)
        ladder = analyze(segments, client=client, server=server, trace=trace)
        if trace and not any({e.local, e.remote} == {client, server} for e in trace):
            print(f"tcpstack: warning: {args.trace} has no transition of {client}-{server}",
                  file=sys.stderr)
        if args.svg is None:
            sys.stdout.write(draw_text(ladder, absolute=args.absolute, width=args.width,
                                       ascii=args.ascii))
        elif args.svg == "-":
            sys.stdout.write(render_svg(ladder, absolute=args.absolute))
        else:
            _write(args.svg, render_svg(ladder, absolute=args.absolute))
    except LadderError as e:
        print(f"tcpstack: error: {e}", file=sys.stderr)
        return e.status
    return 0


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise LadderError(f"{path}: {e.strerror}", EXIT_USAGE) from None


def main(argv: Sequence[str] | None = None) -> int:
    """`tcpstack ladder ARGS` as a function: parse `argv` and run."""
    return standalone_main(
        "tcpstack ladder", "Draw one TCP connection of a capture as a ladder diagram.",
        add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
