"""`python -m tests.conformance.survey [PATTERN...]`: both targets side by side.

A developer's tool, not a test: runs the matrix rows and scripts whose id
matches any fnmatch PATTERN (default: all) against each target and prints
the observed facts next to each other, marking with ``*`` the facts where
they differ and with ``!`` those that fail the test (an unlisted difference
or a stale entry of `differences.py`). Useful after changing the
stack, to see at a glance which rows of `differences.py` moved. Needs root.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import sys

from tests.conformance.catalog import all_scripts
from tests.conformance.check import verdict
from tests.conformance.runner import Result, run_scripts
from tests.conformance.targets import TARGETS, start_target


def main() -> int:
    parser = argparse.ArgumentParser(prog="survey")
    parser.add_argument("patterns", nargs="*", default=["*"])
    parser.add_argument("--target", choices=TARGETS, action="append")
    args = parser.parse_args()
    chosen = [s for s in all_scripts()
              if any(fnmatch.fnmatchcase(s.id, p) for p in args.patterns)]
    results: dict[str, dict[str, Result]] = {}
    for name in args.target or TARGETS:
        target = start_target(name)
        try:
            results[name], hub = asyncio.run(run_scripts(target, chosen))
        finally:
            target.close()
        print(f"# {name}: noise={hub.noise[:5]} bad_checksums={hub.bad_checksums[:5]}",
              file=sys.stderr)
    names = list(results)
    failures = 0
    for script in chosen:
        facts = sorted({k for n in names for k in results[n][script.id].facts}
                       | set(script.expected))
        verdicts = {n: verdict(script, n, results[n][script.id]) for n in names}
        failures += sum(bool(v) for v in verdicts.values())
        for key in facts:
            seen = [results[n][script.id].facts.get(key, "<missing>") for n in names]
            for i, n in enumerate(names):
                err = results[n][script.id].error
                if err:
                    seen[i] = f"ERROR {err.splitlines()[-1][:80]}"
            want = script.expected.get(key, "?")
            mark = " " if len(set(seen)) == 1 else "*"
            mark += "!" if any(key in " ".join(v) or results[n][script.id].error
                               for n, v in verdicts.items()) else " "
            cells = " | ".join(f"{v:<34}" for v in seen)
            print(f"{mark} {script.id:<32} {key:<8} {cells} | want {want}")
    print(f"# {failures} failing (script, target) pairs", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
