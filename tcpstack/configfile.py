"""`--config FILE`: the options of `serve` and `connect` from a TOML file.

A daemon started by systemd wants its settings in a file, not in a unit's
ExecStart line. The file's keys are the subcommand's long options without
the leading dashes (`host-addr = "10.0.0.1/24"`; `host_addr` is accepted
too, as TOML writers often prefer underscores). Values take the TOML type the
option takes: strings, integers, floats (an integer is fine), booleans for
flags like `split-synack`, and arrays of strings for the repeatable options
(`app = ["echo:7", "http:80"]`).

Precedence, highest first: the command line, the file, the built-in
defaults. An option given on the command line wins even when it repeats the
default, and a repeatable option given there replaces the file's list
instead of adding to it. The values from the file then go through the same
checks as the command line (`tcpstack.cli.settings_from_args`).

A file that cannot be read or parsed, an unknown key or a value of the wrong
type is one line on stderr and exit status 2, like a bad command line.
docs/config.md is the user's page.
"""

from __future__ import annotations

import argparse
import tomllib
from typing import Any

#: Options that make no sense in the file itself.
NOT_IN_FILE = frozenset({"help", "config"})


class ConfigError(Exception):
    """The file is unusable; the message is the one line the user sees."""


def apply(parser: argparse.ArgumentParser, argv: list[str],
          args: argparse.Namespace) -> argparse.Namespace:
    """`args` (parsed from `argv`) with the values of `args.config` filled in where
    the command line gave none."""
    path = args.config
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"--config {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path}: not valid TOML: {e}") from None
    sub = _subparser(parser, args.command)
    options = {opt[2:]: action for action in sub._actions for opt in action.option_strings
               if opt.startswith("--") and opt[2:] not in NOT_IN_FILE}
    given = _given_on_command_line(parser, sub, argv)
    seen: dict[str, str] = {}
    for key, value in table.items():
        name = key.replace("_", "-")
        action = options.get(name)
        if action is None:
            raise ConfigError(f"--config {path}: unknown key {key!r} (the keys are the long "
                              f"options of tcpstack {args.command}, e.g. host-addr)")
        if name in seen:
            raise ConfigError(f"--config {path}: {key!r} and {seen[name]!r} are the same option")
        seen[name] = key
        converted = _convert(action, value)
        if converted is None:
            raise ConfigError(f"--config {path}: {key}: expected {_expected(action)}, "
                              f"got {value!r}")
        if action.dest not in given:
            setattr(args, action.dest, converted)
    return args


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    # argparse keeps its sub-parsers in a private action; there is no public way in.
    (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command]


def _given_on_command_line(parser: argparse.ArgumentParser, sub: argparse.ArgumentParser,
                           argv: list[str]) -> set[str]:
    """The destinations the command line set: `argv` parsed again with every
    default of `sub` suppressed, so only what was typed appears."""
    saved = [(action, action.default) for action in sub._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in saved:
            action.default = default


def _convert(action: argparse.Action, value: Any) -> Any:
    """`value` as the option's parser would have produced it; None if of the wrong type."""
    if action.nargs == 0:  # a flag (store_true)
        return (action.const if value else action.default) if isinstance(value, bool) else None
    if isinstance(action, argparse._AppendAction):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            return None
        return items
    if isinstance(value, bool):
        return None  # TOML booleans are not numbers here, though Python's are
    if action.type is int:
        converted = value if isinstance(value, int) else None
    elif action.type is float:
        converted = float(value) if isinstance(value, int | float) else None
    else:
        converted = value if isinstance(value, str) else None
    if action.choices is not None and converted not in action.choices:
        return None
    return converted


def _expected(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "true or false"
    if isinstance(action, argparse._AppendAction):
        return "a string or an array of strings"
    if action.choices is not None:
        return "one of " + ", ".join(map(repr, action.choices))
    return {int: "an integer", float: "a number"}.get(action.type, "a string")  # type: ignore[arg-type]
