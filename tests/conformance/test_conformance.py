"""Every script against every target: what goes on the wire, or a listed reason why not.

``test_matrix`` covers the state x segment x sequence-position matrix
(`matrix.py`, expectations from `oracle.py`), ``test_script`` the handshake,
option, timer and active-open scripts (`scripts.py`). Both hold each target
to the script's expectation as amended by `differences.py`, in both
directions: unlisted differences and stale entries fail.

Run one target, or a part of the matrix, by keyword:
``pytest tests/conformance -k 'linux and ESTABLISHED'``.
"""

from __future__ import annotations

import pytest

from tests.conformance.catalog import matrix_scripts
from tests.conformance.check import verdict
from tests.conformance.runner import Script, TargetRun
from tests.conformance.scripts import SCRIPTS

MATRIX = matrix_scripts()


def _judge(run: TargetRun, script: Script) -> None:
    if run.problems:
        pytest.fail(f"{run.target} target broke during the run: {run.problems}\n"
                    f"{run.logs}", pytrace=False)
    result = run.results[script.id]
    problems = verdict(script, run.target, result)
    if problems:
        trace = "\n".join(result.trace)
        pytest.fail(
            f"{script.id} on {run.target} ({script.doc}):\n  " + "\n  ".join(problems)
            + f"\nthe connection, x/y relative (> ours, < the target's):\n{trace}"
            + f"\nall packets: {run.pcap}", pytrace=False)


@pytest.mark.parametrize("script", MATRIX, ids=[s.id for s in MATRIX])
def test_matrix(target_run: TargetRun, script: Script) -> None:
    """One row of the matrix (its id is STATE/SEGMENT/POSITION)."""
    _judge(target_run, script)


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.id for s in SCRIPTS])
def test_script(target_run: TargetRun, script: Script) -> None:
    """One named script."""
    _judge(target_run, script)


def test_wire_is_clean(target_run: TargetRun) -> None:
    """The namespace's kernel stayed silent (so it cannot have answered for the
    target) and every packet the target sent had correct IPv4 and TCP checksums."""
    hub = target_run.hub
    assert not hub.noise, f"unexpected packets on the wire: {hub.noise[:20]}"
    assert not hub.bad_checksums, f"bad checksums from {target_run.target}: " \
        f"{hub.bad_checksums[:20]}"
