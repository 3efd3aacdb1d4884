"""Every conformance script, in one list: the matrix rows and the named scripts."""

from __future__ import annotations

from tests.conformance import matrix, oracle, scripts
from tests.conformance.runner import Script


def matrix_scripts() -> list[Script]:
    """One script per matrix row, expecting what the oracle says."""
    return matrix.scripts({row.id: oracle.expected(row) for row in matrix.rows()})


def all_scripts() -> list[Script]:
    """The named scripts, then the matrix: the runner starts them in this order, so
    the scripts that wait for handshake timers (8 s) overlap with the matrix."""
    return scripts.SCRIPTS + matrix_scripts()
