"""The verdict for one script on one target: expectation, differences table, facts.

Shared by the tests (`test_conformance.py`) and the survey tool, so both
judge a run the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.conformance.differences import DIFFERENCES, Difference
from tests.conformance.runner import Facts, Result, Script


@dataclass(frozen=True)
class Expectation:
    """What a target must show for a script, and which table entries say so."""

    facts: Facts
    entries: dict[str, Difference]  # fact -> the entry that overrides it


def expectation(script: Script, target: str) -> Expectation:
    """The script's own facts, with this target's column of any matching entry."""
    facts = dict(script.expected)
    entries: dict[str, Difference] = {}
    for entry in DIFFERENCES:
        if script.id in entry.ids:
            for key, value in entry.facts(target).items():
                facts[key] = value
                entries[key] = entry
    return Expectation(facts, entries)


def verdict(script: Script, target: str, result: Result) -> list[str]:
    """Every problem with ``result``; empty when the target behaved as expected."""
    if result.error is not None:
        return [f"the script failed: {result.error}"]
    want = expectation(script, target)
    problems = []
    for key in sorted(set(want.facts) | set(result.facts)):
        seen = result.facts.get(key, "<not observed>")
        expected = want.facts.get(key, "<not expected>")
        if seen == expected:
            continue
        entry = want.entries.get(key)
        spec = script.expected.get(key, "<not expected>")
        if entry is None:
            problems.append(f"{key}: {target} shows {seen!r} where {spec!r} is expected "
                            "(an unlisted difference: fix the target, or add an entry with "
                            "its reason to tests/conformance/differences.py)")
        elif seen == spec:
            problems.append(f"{key}: stale entry {entry.title!r} in differences.py: {target} "
                            f"now shows {seen!r}, as the script expects, not {expected!r}; "
                            "remove its fact for this script")
        else:
            problems.append(f"{key}: {target} shows {seen!r}; the entry {entry.title!r} says "
                            f"{expected!r} and the script expects {spec!r}")
    return problems
