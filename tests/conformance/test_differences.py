"""Static checks of the differences table: it must stay precise and honest.

These need no root: they check the table against the scripts, not the
targets. That the listed behaviour still occurs is checked by the
conformance tests themselves (stale entries fail there).
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.conformance import matrix, oracle
from tests.conformance.catalog import all_scripts
from tests.conformance.differences import DIFFERENCES, Difference

SCRIPTS = {s.id: s for s in all_scripts()}


@pytest.mark.parametrize("entry", DIFFERENCES, ids=[d.title for d in DIFFERENCES])
def test_entry_is_well_formed(entry: Difference) -> None:
    """Known scripts and facts, the same facts for both targets, each one differing,
    and a reason with an RFC reference."""
    unknown = [i for i in entry.ids if i not in SCRIPTS]
    assert not unknown, f"no such scripts: {unknown}"
    assert entry.ids, "an entry must name at least one script"
    assert entry.linux.keys() == entry.tcpstack.keys(), "state the same facts for both"
    same = [k for k in entry.linux if entry.linux[k] == entry.tcpstack[k]]
    assert not same, f"facts that do not differ: {same}"
    for script_id in entry.ids:
        missing = set(entry.linux) - set(SCRIPTS[script_id].expected)
        assert not missing, f"{script_id} has no facts {missing}"
    assert entry.reason.strip() and entry.rfc.strip()


def test_each_fact_has_at_most_one_entry() -> None:
    """Two entries for one fact of one script would make the table ambiguous."""
    covered = Counter((i, k) for d in DIFFERENCES for i in d.ids for k in d.linux)
    twice = [key for key, n in covered.items() if n > 1]
    assert not twice, f"listed more than once: {twice}"


def test_one_side_of_each_entry_is_the_expectation() -> None:
    """Where the script's expectation is known, at least one target meets it: a
    behaviour neither target shows would be a wrong expectation, not a difference."""
    for entry in DIFFERENCES:
        for script_id in entry.ids:
            expected = SCRIPTS[script_id].expected
            for key in entry.linux:
                assert expected[key] in (entry.linux[key], entry.tcpstack[key]), (
                    f"{entry.title!r}, {script_id} {key}: neither target shows the "
                    f"expected {expected[key]!r}")


def test_matrix_covers_every_state_kind_and_position() -> None:
    """The issue's coverage: each state reachable from a passive open, crossed with
    each segment kind at each sequence position, plus LISTEN and CLOSED."""
    ids = {r.id for r in matrix.rows()}
    for state in matrix.STATES:
        for kind in matrix.KINDS:
            for pos in matrix.POSITIONS:
                assert f"{state}/{kind}/{pos}" in ids
    assert all(oracle.expected(r) for r in matrix.rows())
