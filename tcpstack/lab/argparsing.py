"""Command-line parsing shared by every `tcpstack` subcommand: a bad command
line is one line on stderr and exit status 2, never a usage dump."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import NoReturn

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"tcpstack: error: {message}\n")


def standalone_main(
    prog: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None,
) -> int:
    """Run one subcommand on its own (`python -m tcpstack.lab.ladder ...`)."""
    parser = OneLineParser(prog=prog, description=description)
    add_arguments(parser)
    return run(parser.parse_args(argv))
