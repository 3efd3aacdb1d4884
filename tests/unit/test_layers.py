"""The package layout is the architecture: a lower layer never imports a higher one.

The folders of ``tcpstack/`` are layers (docs/architecture.md): ``core`` (the
sans-I/O TCP state machine) < ``wire`` (codecs, TUN, pcap) < ``shell`` (the
asyncio Stack, connections, streams, transports) < ``apps`` < ``lab``
(observation and lab tools) < the command line at the top. This test reads
every module's imports with ``ast`` (no import side effects) and fails on any
import that points upwards, so the rule survives refactoring.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tcpstack"
RANK = {"core": 0, "wire": 1, "shell": 2, "apps": 3, "lab": 4}
TOP = 5


def _layer(module: str) -> int:
    """Rank of a dotted ``tcpstack...`` module name; the package root is the top."""
    parts = module.split(".")
    return RANK.get(parts[1], TOP) if len(parts) > 1 else TOP


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    """The tcpstack modules a file imports (``from tcpstack import x`` counts tcpstack.x)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("tcpstack")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tcpstack"):
            found += [f"{node.module}.{a.name}" if node.module == "tcpstack" else node.module
                      for a in node.names]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_in_a_layer() -> None:
    """New modules go into a layer folder; only the entry points live at the top:
    the command line (cli, its config file) and the embedding API (api), which
    composes the lab's impairment and capture with the shell."""
    loose = {p.name for p in PACKAGE.glob("*.py")}
    assert loose <= {"__init__.py", "__main__.py", "cli.py", "configfile.py", "api.py",
                     "native.py"}, loose


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_points_upwards(path: Path) -> None:
    importer = _module_name(path)
    upward = [m for m in _imports(path) if _layer(m) > _layer(importer)]
    assert not upward, f"{importer} (layer {_layer(importer)}) imports higher layers: {upward}"


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The rule is not vacuous: a core module importing the shell is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from tcpstack.shell.stack import Stack\n")
    assert [m for m in _imports(bad) if _layer(m) > _layer("tcpstack.core.bad")]
