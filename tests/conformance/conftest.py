"""Conformance suite wiring: one namespace per target, every selected script at once.

Tests are parametrized by target (``linux``, ``tcpstack``) and script, but a
script is not run by its own test: the session fixture `target_run` brings a
target up once and runs all scripts that the session selected for it (after
``-k`` and friends) concurrently, then each test only judges its script's
result. So ``pytest tests/conformance -k 'linux and ESTABLISHED'`` starts only
the Linux target and runs only those rows, and a whole run of both targets
takes seconds rather than the minutes a serial run of ~450 scripts would.

The gate is the integration suite's: root, /dev/net/tun and ``ip netns``
are required; without them the tests skip, except under CI=true where they
fail. The static checks of the differences table need none of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import nstools
from tests.conformance.catalog import all_scripts
from tests.conformance.runner import TargetRun, run_scripts
from tests.conformance.targets import TARGETS, start_target

HERE = Path(__file__).resolve().parent
SELECTED = pytest.StashKey[dict[str, set[str]]]()
SUMMARY = pytest.StashKey[list[str]]()
#: Test functions whose ``script`` parameter names a script to run.
SCRIPT_TESTS = {"test_matrix", "test_script"}


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker (pyproject lists only ``integration``)."""
    config.addinivalue_line(
        "markers", "conformance: packet-level scripts against Linux and tcpstack")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark this directory's tests; those needing root also count as integration tests,
    so ``-m "not integration"`` leaves out everything that needs a namespace."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.conformance)
            if "target_run" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.integration)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember which scripts each target has to run: only the selected ones."""
    selected: dict[str, set[str]] = {t: set() for t in TARGETS}
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if (callspec is None or getattr(item, "originalname", "") not in SCRIPT_TESTS
                or not item.path.is_relative_to(HERE)):
            continue
        selected[callspec.params["target_run"]].add(callspec.params["script"].id)
    session.config.stash[SELECTED] = selected
    session.config.stash[SUMMARY] = []


@pytest.fixture(scope="session", params=TARGETS)
def target_run(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[TargetRun]:
    """Bring the target up in its own namespace, run the selected scripts, tear down.

    A pcap of everything on the wire is kept in pytest's temp directory and
    named in failure messages (``tshark -r`` it).
    """
    nstools.require_prerequisites()
    name: str = request.param
    wanted = request.config.stash.get(SELECTED, {}).get(name, set())
    scripts = [s for s in all_scripts() if s.id in wanted]
    started = time.monotonic()
    target = start_target(name)
    try:
        results, hub = asyncio.run(run_scripts(target, scripts))
        problems, logs = target.problems(), target.logs()
    finally:
        target.close()
    seconds = time.monotonic() - started
    pcap = tmp_path_factory.mktemp("conformance") / f"{name}.pcap"
    hub.write_pcap(str(pcap))
    request.config.stash[SUMMARY].append(
        f"{name}: {len(scripts)} scripts in {seconds:.1f} s (pcap: {pcap})")
    yield TargetRun(name, results, hub, problems, logs, pcap)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per target: how many scripts, how long, where the pcap is."""
    lines = terminalreporter.config.stash.get(SUMMARY, [])
    if lines:
        terminalreporter.section("conformance")
        for line in lines:
            terminalreporter.write_line(line)
