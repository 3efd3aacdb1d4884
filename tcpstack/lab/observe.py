"""The daemon's observation options, `--pcap`, `--control` and `--trace`, and
their wiring into a running stack.

`serve` and `connect` share them, so they are defined, validated and set up
here once and `tcpstack.cli` only calls in:

* `--pcap FILE` (`tcpstack.wire.pcap`): the capture is put on the stack's packet
  paths at its place in `tcpstack.shell.pipeline`'s order, on the TUN side of any
  `--impair` in both directions: it records each packet as read, before the
  inbound impairment, and as written, after the outbound one.
* `--control PATH` (`tcpstack.lab.control`): always on, by default at
  `/run/tcpstack/<tun>.sock` (see `control.default_path`), answering `ss` and `stats` with
  `tcpstack.lab.snapshot`'s views of the stack.
* `--trace`: the `tcpstack.trace` logger logs every state transition at INFO
  (`Stack.on_state_change`). Its level is set here, independently of
  `--log-level`, so `connect` (quiet by default) can trace too; `--log-level
  debug` implies it, as before. Without either it is held at WARNING, so an
  `info` daemon does not log a line per transition.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tcpstack.lab import control, snapshot
from tcpstack.shell.pipeline import Tap
from tcpstack.wire.pcap import Capture

if TYPE_CHECKING:
    from tcpstack.shell.stack import Stack

TRACE_LOGGER = "tcpstack.trace"


class ObserveSettingsError(ValueError):
    """A bad --pcap or --control value; the message is the one line the user sees."""


class SetupError(Exception):
    """The capture file or the control socket cannot be set up (one line for the user)."""


@dataclass(frozen=True)
class ObserveSettings:
    pcap: str | None
    control: str
    trace: bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("observing the stack")
    group.add_argument("--pcap", metavar="FILE",
                       help="write every packet crossing the TUN to FILE (pcap, raw IPv4; "
                       "outside any --impair)")
    group.add_argument("--control", metavar="PATH",
                       help="control socket for `tcpstack ss` and `tcpstack stats` "
                       "(default /run/tcpstack/TUN.sock; /run/tcpstack/TUN@NETNS.sock in "
                       "another network namespace)")
    group.add_argument("--trace", action="store_true",
                       help="log every state transition of every connection with its cause")


def settings_from_args(args: argparse.Namespace) -> ObserveSettings:
    """Check what can be checked before anything is created."""
    path = args.control or control.default_path(args.tun)
    problem = control.check_path(path)
    if problem is not None:
        raise ObserveSettingsError(f"--control: {problem}")
    if args.pcap is not None:
        directory = os.path.dirname(args.pcap) or "."
        if not args.pcap or os.path.isdir(args.pcap):
            raise ObserveSettingsError(f"--pcap: {args.pcap!r} is not a file name")
        if not os.path.isdir(directory):
            raise ObserveSettingsError(f"--pcap: directory {directory!r} does not exist")
    return ObserveSettings(pcap=args.pcap, control=path,
                           trace=args.trace or args.log_level == "debug")


class Observability:
    """The capture, control socket and trace of one daemon run.

    Use `attach(stack)` once the stack exists, `close()` last, after the stack
    has sent its final RSTs. `close()` is safe after a partial start.
    """

    def __init__(self, settings: ObserveSettings) -> None:
        self.settings = settings
        self.capture: Capture | None = None
        self.control: control.ControlServer | None = None
        self._trace_level: int | None = None  # the trace logger's level before attach

    async def attach(self, stack: Stack) -> None:
        """Open the --pcap file and put the capture on the stack's packet paths
        (virtio-net frames with `stack.vnet`, recorded as the wire packets),
        start the control socket, set the trace."""
        if self.settings.pcap is not None:
            try:
                self.capture = Capture.open(self.settings.pcap, vnet=stack.vnet)
            except OSError as e:
                raise SetupError(f"--pcap: cannot write {self.settings.pcap}: "
                                 f"{e.strerror or e}") from None
            stack.tap("capture", Tap(inbound=self.capture.tap_receive,
                                     outbound=self.capture.tap_output))
        loop = asyncio.get_running_loop()
        server = control.ControlServer(self.settings.control, {
            "ss": lambda: snapshot.ss(stack, loop.time()),
            "stats": lambda: snapshot.stats(stack),
        })
        try:
            await server.start()
        except control.ControlError as e:
            raise SetupError(f"--control: {e}") from None
        self.control = server
        trace = logging.getLogger(TRACE_LOGGER)
        self._trace_level = trace.level
        trace.setLevel(logging.INFO if self.settings.trace else logging.WARNING)

    async def close(self) -> None:
        if self._trace_level is not None:
            logging.getLogger(TRACE_LOGGER).setLevel(self._trace_level)
            self._trace_level = None
        if self.control is not None:
            await self.control.close()
            self.control = None
        if self.capture is not None:
            self.capture.close()
            self.capture = None
