#!/usr/bin/env python3
"""Compile the sans-I/O core and the codec with mypyc into build/native/.

`make install` runs this; it returns at once when the build matches the
sources. The compiled modules are the same code as the .py files (mypyc
compiles the type-annotated Python, checking the annotations as it goes and
at run time), so everything runs in both forms: `TCPSTACK_PURE=1` selects the
plain Python, and `make test` runs the unit suite that way too. What is
compiled, how the build is found and when it is ignored: tcpstack/native.py.

Needs mypy (the test extra) and a C compiler; without them it fails with one
line and the stack runs as plain Python. Options: --force rebuilds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tcpstack import native  # noqa: E402 - after the path


def module_name(extension: Path) -> str:
    """tcpstack/core/tcb.cpython-311-x86_64-linux-gnu.so -> tcpstack.core.tcb"""
    rel = extension.relative_to(native.BUILD_DIR)
    return ".".join((*rel.parent.parts, rel.name.split(".", 1)[0]))


def build() -> None:
    from mypyc.build import mypycify  # only when building
    from setuptools import setup

    paths = native.sources()
    digests = {str(p.relative_to(ROOT)): native.source_digest(p) for p in paths}
    shutil.rmtree(native.BUILD_DIR, ignore_errors=True)
    # Built from a scratch directory: setuptools would read the project's
    # pyproject.toml from the current one.
    with tempfile.TemporaryDirectory(prefix="tcpstack-mypyc-") as tmp, \
            contextlib.chdir(tmp):
        out = io.StringIO()  # mypy's and setuptools' chatter; shown only on failure
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                setup(name="tcpstack-native",
                      ext_modules=mypycify(["--ignore-missing-imports", "--follow-imports=silent",
                                            *map(str, paths)], target_dir=str(Path(tmp) / "c")),
                      script_args=["-q", "build_ext", "--build-lib", str(native.BUILD_DIR),
                                   "--build-temp", str(Path(tmp) / "o")])
        except (Exception, SystemExit):
            print(*out.getvalue().splitlines()[-20:], sep="\n", file=sys.stderr)
            raise
    extensions = {module_name(p): str(p.relative_to(native.BUILD_DIR))
                  for p in native.BUILD_DIR.rglob("*.so")}
    native.RECORD.write_text(json.dumps(
        {"digests": digests, "extensions": extensions}, indent=1, sort_keys=True))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if fresh")
    args = parser.parse_args(argv)
    if not args.force and native.fresh_record() is not None:
        return 0
    if os.environ.get("TCPSTACK_PURE") == "1":
        return 0  # plain Python asked for: nothing to build
    where = native.BUILD_DIR.relative_to(ROOT)
    print(f"compiling {', '.join(native.COMPILED)} with mypyc into {where}/ (about a minute) ...",
          file=sys.stderr, flush=True)
    try:
        build()
    except (Exception, SystemExit) as e:  # mypy's type errors and the compiler's end in SystemExit
        why = "see above" if isinstance(e, SystemExit) else e
        print(f"build_core: the core was not compiled ({why}); it runs as plain Python",
              file=sys.stderr)
        return 1
    print(f"build_core: {len(native.fresh_record() or {})} compiled modules", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
