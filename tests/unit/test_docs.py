"""The user documentation (README.md, docs/*.md) agrees with the program.

- every `--option` the pages mention exists: given to `tcpstack SUB` (on a
  command line or in a code span), in SUB's parser; anywhere else, in some
  parser of tcpstack or of scripts/*.py, or in EXTERNAL (other programs);
- every option of every `tcpstack` parser is documented in docs/cli.md, in a
  section whose heading names that subcommand;
- every relative link points to an existing file and, with `#anchor`, to an
  existing heading;
- the differences table of docs/conformance.md is generated from
  tests/conformance/differences.py (`python -m tests.unit.test_docs` rewrites it).

The parsers are the real ones (`tcpstack.cli.build_parser`, whose `ladder` and
`demo` subparsers are filled by the same `add_arguments` as their standalone
`python -m tcpstack.lab.ladder|demo` parsers), so an option added, renamed or
removed in the code without the docs fails here with the option and the page.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from unittest import mock

from tcpstack.cli import build_parser
from tests.conformance.differences import DIFFERENCES

ROOT = Path(__file__).resolve().parents[2]
CLI_PAGE = ROOT / "docs" / "cli.md"
CONFORMANCE_PAGE = ROOT / "docs" / "conformance.md"

#: Options of other programs that the pages mention outside a tcpstack command.
EXTERNAL = {
    "--limit-rate": "curl", "--data-binary": "curl",
    "--flood": "hping3", "--rand-source": "hping3",
    "--pid": "py-spy", "--native": "py-spy", "--call-graph": "perf record",
    "--always": "git describe", "--dirty": "git describe",
    "--send-only": "ncat", "--now": "systemctl", "--bind": "python -m http.server",
    "--directory": "python -m http.server", "--cap-add": "docker run", "--device": "docker run",
}
#: The scripts whose options the pages may mention (make bench, profile, fuzz, ...).
SCRIPTS = ("bench", "profile_stack", "fuzz", "flood", "soak", "bench_codec", "bench_shell",
           "bench_reassembly", "bench_path")

#: An option a script defines literally: add_argument("--name", ...).
LITERAL_OPTION = re.compile(r"add_argument\(\s*\"(--[a-z0-9-]+)\"")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
#: `tcpstack SUB` (also `make run ARGS=`, which is `tcpstack serve`).
COMMAND = re.compile(r"\btcpstack\s+(serve|connect|ss|stats|ladder|demo)\b|\bmake run ARGS=")
#: Where the arguments of a command on a shell line end.
COMMAND_END = re.compile(r"\s(?:\||&&|;|<|>|#)\s|\s&$")
CODE_SPAN = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*```")
DIFF_BEGIN, DIFF_END = "<!-- differences:begin -->", "<!-- differences:end -->"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@cache
def parsers() -> dict[str, argparse.ArgumentParser]:
    """'tcpstack' (the top level) and each subcommand's parser."""
    top = build_parser()
    found: dict[str, argparse.ArgumentParser] = {"tcpstack": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--")}


class _Parsed(Exception):
    """Carries the parser a script built, instead of parsing."""


def _script_options(name: str) -> set[str]:
    """The options of scripts/NAME.py: the parser it builds, caught at parse_args."""
    module = importlib.import_module(name)

    def catch(parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise _Parsed(parser)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", catch):
        try:
            module.parse_args([]) if hasattr(module, "parse_args") else module.main()
        except _Parsed as parsed:
            return long_options(parsed.args[0])
    raise AssertionError(f"scripts/{name}.py built no argparse parser")


@cache
def known_options() -> frozenset[str]:
    """Every option a page may mention outside a tcpstack command."""
    known = set(EXTERNAL)
    for parser in parsers().values():
        known |= long_options(parser)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        for name in SCRIPTS:
            known |= _script_options(name)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    # Parsers built under `if __name__ == "__main__":` (examples, small scripts).
    for source in [*(ROOT / "examples").glob("*.py"), *(ROOT / "scripts").glob("*.py")]:
        known |= set(LITERAL_OPTION.findall(source.read_text()))
    return frozenset(known)


def lines(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line number, line, inside a code block) of a page."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        yield number, line, fenced


def commands(text: str) -> Iterator[tuple[str, str]]:
    """(subcommand, its argument text) for each tcpstack command in a shell line."""
    for match in COMMAND.finditer(text):
        rest = text[match.end():]
        end = COMMAND_END.search(rest)
        yield match.group(1) or "serve", rest[:end.start()] if end else rest


def test_options_in_the_docs_exist() -> None:
    wrong = []
    for path in pages():
        for number, line, fenced in lines(path):
            where = f"{rel(path)}:{number}"
            for option in OPTION.findall(line):
                if option not in known_options():
                    wrong.append(f"{where}: {option} is no option of tcpstack, of "
                                 f"scripts/*.py or of the programs in EXTERNAL")
            shell = [line] if fenced else CODE_SPAN.findall(line)
            for text in shell:
                for sub, args in commands(text):
                    allowed = long_options(parsers()[sub])
                    wrong += [f"{where}: {option} is not an option of `tcpstack {sub}`"
                              for option in OPTION.findall(args) if option not in allowed]
    assert not wrong, "\n".join(wrong)


def sections(path: Path) -> Iterator[tuple[str, str]]:
    """(heading, text up to the next heading of the same or a higher level)."""
    text = [(line, fenced) for _, line, fenced in lines(path)]
    for i, (line, fenced) in enumerate(text):
        heading = re.match(r"(#+)\s+(.*)", line)
        if fenced or not heading:
            continue
        level = len(heading.group(1))
        body = []
        for other, other_fenced in text[i + 1:]:
            deeper = re.match(r"(#+)\s", other)
            if deeper and not other_fenced and len(deeper.group(1)) <= level:
                break
            body.append(other)
        yield heading.group(2), "\n".join(body)


def test_every_option_is_documented_in_cli_md() -> None:
    documented: dict[str, set[str]] = {name: set() for name in parsers()}
    for heading, body in sections(CLI_PAGE):
        names = {m.group(1) for m in COMMAND.finditer(heading) if m.group(1)}
        if "`tcpstack`" in heading:
            names.add("tcpstack")
        for name in names:
            documented[name] |= set(OPTION.findall(body))
    missing = []
    for name, parser in parsers().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) and name != "tcpstack":
                continue  # `--help` is documented once, for every subcommand
            missing += [f"{option} of `{'tcpstack ' if name != 'tcpstack' else ''}{name}` "
                        f"is not documented in docs/cli.md (under a heading naming "
                        f"`tcpstack{'' if name == 'tcpstack' else ' ' + name}`)"
                        for option in action.option_strings
                        if option.startswith("--") and option not in documented[name]]
    assert not missing, "\n".join(missing)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation
    dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading, _ in sections(path):
        base, n = slug(heading), 0
        while (anchor := base if n == 0 else f"{base}-{n}") in found:
            n += 1
        found.add(anchor)
    return found


def test_relative_links_point_to_existing_files_and_headings() -> None:
    broken = []
    for path in pages():
        for number, line, fenced in lines(path):
            if fenced:
                continue
            for target in LINK.findall(line):
                if re.match(r"[a-z]+:", target):
                    continue  # http:, https:, mailto:
                file, _, anchor = target.partition("#")
                dest = (path.parent / file).resolve() if file else path
                where = f"{rel(path)}:{number}: link {target}"
                if not dest.is_relative_to(ROOT):
                    broken.append(f"{where} leaves the repository")
                elif not dest.exists():
                    broken.append(f"{where}: {rel(dest)} does not exist")
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                    broken.append(f"{where}: no heading #{anchor} in {rel(dest)}")
    assert not broken, "\n".join(broken)


def _cell(facts: dict[str, str]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in facts.items()).replace("|", "\\|")


def differences_table() -> str:
    """The differences of tests/conformance/differences.py as a Markdown table."""
    rows = ["| difference | scripts | Linux | tcpstack | RFC |",
            "| --- | --- | --- | --- | --- |"]
    for d in DIFFERENCES:
        ids = f"`{d.ids[0]}`" + (f" and {len(d.ids) - 1} more" if len(d.ids) > 1 else "")
        rows.append(f"| {d.title} | {ids} | {_cell(d.linux)} | {_cell(d.tcpstack)} "
                    f"| {d.rfc} |")
    return "\n".join(rows)


def _with_table(page: str) -> str:
    head, _, rest = page.partition(DIFF_BEGIN)
    _, _, tail = rest.partition(DIFF_END)
    return f"{head}{DIFF_BEGIN}\n{differences_table()}\n{DIFF_END}{tail}"


def test_conformance_page_lists_every_difference() -> None:
    page = CONFORMANCE_PAGE.read_text(encoding="utf-8")
    assert DIFF_BEGIN in page and DIFF_END in page
    assert page == _with_table(page), (
        "docs/conformance.md's differences table is not tests/conformance/differences.py: "
        "run `.venv/bin/python -m tests.unit.test_docs` to regenerate it")


if __name__ == "__main__":
    CONFORMANCE_PAGE.write_text(_with_table(CONFORMANCE_PAGE.read_text(encoding="utf-8")),
                                encoding="utf-8")
