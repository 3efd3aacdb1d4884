"""The compiled core (tcpstack/native.py, scripts/build_core.py): loaded only
from a build that matches the sources, never with TCPSTACK_PURE=1; in CI,
where `make install` builds it, the tests run against it (and `make test`
runs the unit suite once more in plain Python)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tcpstack import native

WHERE = ("import tcpstack.core.tcb as t, tcpstack.wire.codec as c; "
         "print(t.__file__, c.__file__, c.COMPILED)")


def where(**env: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", WHERE], env={**os.environ, **env},
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def test_pure_python_on_request() -> None:
    *files, compiled = where(TCPSTACK_PURE="1")
    assert all(f.endswith(".py") for f in files)
    assert compiled == "False"  # the codec's checksum takes the interpreter's way


@pytest.mark.skipif(native.fresh_record() is None, reason="no build of this source (make install)")
def test_a_fresh_build_is_loaded() -> None:
    *files, compiled = where(TCPSTACK_PURE="0")
    assert all(str(native.BUILD_DIR) in f and f.endswith(".so") for f in files), files
    assert compiled == "True"  # and the compiled one's checksum loop


def test_ci_runs_the_compiled_core() -> None:
    """What `make bench` measures is what `make test` tested."""
    if os.environ.get("CI") and os.environ.get("TCPSTACK_PURE") != "1":
        assert native.describe() == "core compiled with mypyc"


def test_a_stale_or_partial_build_is_ignored(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    sources = [str(p.relative_to(native.CHECKOUT)) for p in native.sources()]
    digests = {s: native.source_digest(native.CHECKOUT / s) for s in sources}
    record = tmp_path / "record.json"
    monkeypatch.setattr(native, "RECORD", record)
    monkeypatch.setattr(native, "BUILD_DIR", tmp_path)

    def write(d: dict[str, str]) -> None:
        record.write_text(json.dumps({"digests": d, "extensions": {"m": "m.so"}}))

    write(digests)
    assert native.fresh_record() == {"m": str(tmp_path / "m.so")}
    write({**digests, sources[0]: "0" * 64})  # a source edited since the build
    assert native.fresh_record() is None
    write({k: v for k, v in digests.items() if k != sources[0]})  # another list of modules
    assert native.fresh_record() is None
    record.write_text("{")
    assert native.fresh_record() is None


def test_the_finder_knows_only_its_modules() -> None:
    finder = native.NativeFinder({"tcpstack.core.x": "/nonexistent/x.so"})
    assert finder.find_spec("tcpstack.core.seq") is None
    spec = finder.find_spec("tcpstack.core.x")
    assert spec is not None and spec.origin == "/nonexistent/x.so"
