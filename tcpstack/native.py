"""The compiled core: the TCP core, the codec and the shell's per-packet
modules built with mypyc, if built.

`make install` (scripts/build_core.py) compiles `COMPILED` with mypyc, from
these very sources, into `build/native/` of the checkout; a TCB step then
costs a third (docs/benchmarks.md "A compiled core"). The compiled modules
are not put beside the sources, where Python would prefer them over an edited
.py: a finder on `sys.meta_path` (installed first thing by the package's
`__init__`) loads a compiled module only while the build's record of the
sources' SHA-256 digests matches them all, and never with TCPSTACK_PURE=1 in
the environment. Anything else (no build, a stale one, a wheel install) runs
the same code as plain Python.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path

#: What is compiled (relative to the checkout): the code that runs per segment,
#: the core (asyncio-free, typed throughout), the codec and the shell's packet
#: path (whose coroutines were checked for a mypy narrowing that holds across an
#: await, see StreamReader._wait); not the package __init__ files, which run
#: before the finder can.
COMPILED = ("tcpstack/core", "tcpstack/wire/codec.py", "tcpstack/wire/vnet.py",
            "tcpstack/shell/connection.py", "tcpstack/shell/stack.py",
            "tcpstack/shell/stream.py", "tcpstack/shell/looptimer.py")
#: Where scripts/build_core.py puts the build.
CHECKOUT = Path(__file__).resolve().parents[1]
BUILD_DIR = CHECKOUT / "build" / "native"
#: The build's record: {"modules": {name: source path relative to the checkout},
#: "digests": {source path: sha256}, "extensions": {name: file in BUILD_DIR}}.
RECORD = BUILD_DIR / "record.json"


def sources() -> list[Path]:
    """The source files of `COMPILED`."""
    files: list[Path] = []
    for entry in COMPILED:
        path = CHECKOUT / entry
        files += sorted(p for p in path.rglob("*.py") if p.name != "__init__.py") \
            if path.is_dir() else [path]
    return files


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fresh_record() -> dict[str, str] | None:
    """The build's module -> extension file map if it matches the sources now."""
    try:
        record = json.loads(RECORD.read_text())
        digests = record["digests"]
        if set(digests) != {str(p.relative_to(CHECKOUT)) for p in sources()}:
            return None  # built from another list of modules
        for source, digest in digests.items():
            if source_digest(CHECKOUT / source) != digest:
                return None
        return {name: str(BUILD_DIR / file) for name, file in record["extensions"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None


class NativeFinder(importlib.abc.MetaPathFinder):
    """Finds the compiled modules of a fresh build; None for anything else."""

    def __init__(self, extensions: dict[str, str]) -> None:
        self.extensions = extensions

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        file = self.extensions.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, file)
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def install() -> bool:
    """Put the finder in front of the path finders once; whether compiled
    modules will be loaded."""
    for finder in sys.meta_path:
        if isinstance(finder, NativeFinder):
            return True
    if os.environ.get("TCPSTACK_PURE") == "1":
        return False
    extensions = fresh_record()
    if not extensions:
        return False
    sys.meta_path.insert(0, NativeFinder(extensions))
    return True


def describe() -> str:
    """How the core runs, for `tcpstack --version` and the benchmark header."""
    from tcpstack.core import tcb

    compiled = (tcb.__file__ or "").endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    return "core compiled with mypyc" if compiled else "core in pure Python"
