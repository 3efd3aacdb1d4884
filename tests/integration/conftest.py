"""Integration harness: the real daemon on a real TUN inside a throwaway netns.

The peer for every test is the Linux kernel's own TCP/IP stack, driven from
inside a network namespace the session creates (Python sockets, curl, nc, ping).
Nothing here is mocked: the point of these tests is to prove interoperability
with a real, independent TCP implementation.

The namespace, process and daemon machinery (and its hygiene rules: unique
names, teardown on failure, signals by pid only, no bare sleeps) lives in
`tcpstack/lab/netns.py`, shared with `tcpstack demo` and the scripts; capture and
nftables in `tests/nstools.py`, shared with the conformance suite; this file
only turns them into fixtures.

Fixtures (all usable from tests in this directory):

``netns``            session ``NetNS`` with ``.name``, ``.run()``, ``.popen()``,
                     ``.python()``, ``.spawn_python()``, ``.link_names()``.
``make_stack``       function-scoped ``StackFactory``; ``make_stack(**opts)``
                     starts a daemon and returns a ``Daemon``.
``ns_python``        ``ns_python(code, timeout=30) -> CompletedProcess``.
``wait_until``       ``wait_until(predicate, timeout=5, interval=0.05, message="")``.
``capture``          ``with capture(ns, iface) as cap:`` tcpdump in the netns.
``read_tcp_packets`` ``read_tcp_packets(path) -> [(ts, dpkt.ip.IP)]``.
``nft_drop``         ``with nft_drop(ns, rule_expr) as rule:`` output-hook drop.
``require_tools``    ``require_tools("curl", ...)``: skip (fail in CI) if absent.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import dpkt
import pytest

from tcpstack.lab.netns import (
    READY_TIMEOUT,
    Daemon,
    NetNS,
    daemon_env,
    netns_scope,
    spawn_daemon,
    tcpstack_argv,
)
from tcpstack.lab.netns import wait_until as poll_until
from tests import nstools
from tests.nstools import REPO_ROOT, Capture, NftRule

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------
# Prerequisite gate
# --------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration so `-m "not integration"` works.

    This hook sees the whole session's items, hence the path filter.
    """
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _integration_prerequisites() -> None:
    """Gate every integration test on root, /dev/net/tun and `ip netns`."""
    nstools.require_prerequisites()


@pytest.fixture(scope="session")
def require_tools() -> Callable[..., None]:
    """Return ``require_tools(*names)``: skip (fail under CI) when a tool is absent."""
    return nstools.require_tools


@pytest.fixture(scope="session")
def wait_until() -> Callable[..., Any]:
    """Expose :func:`tcpstack.lab.netns.wait_until` as
    ``wait_until(predicate, timeout, interval)``."""
    return poll_until


# --------------------------------------------------------------------------
# Network namespace
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def netns(_integration_prerequisites: None) -> Iterator[NetNS]:
    """A fresh namespace for the session: lo up, IPv6 off, always deleted."""
    with netns_scope("tcps-test") as ns:
        yield ns


@pytest.fixture
def ns_python(netns: NetNS) -> Callable[..., subprocess.CompletedProcess[Any]]:
    """Return ``ns_python(code, timeout=30)``: run Python in the test namespace."""

    def _run(code: str, timeout: float = 30.0, **kw: Any) -> subprocess.CompletedProcess[Any]:
        return netns.python(code, timeout=timeout, **kw)

    return _run


# --------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------

_subnet_counter = itertools.count(1)
_tun_counter = itertools.count(1)


class StackFactory:
    """Starts daemons on demand; tears all of them down after the test.

    Each stack gets its own subnet 10.77.N.0/24 and TUN name so stacks started
    one after another in the same namespace never see each other's leftovers.
    """

    def __init__(self, ns: NetNS) -> None:
        self.ns = ns
        self.stacks: list[Daemon] = []
        self._tuns: set[str] = set()
        self._tmp = Path(tempfile.mkdtemp(prefix="tcpstack-it-"))

    def allocate(self) -> tuple[str, str, str]:
        """Return a fresh ``(tun_name, host_cidr, vip)`` triple."""
        n = next(_subnet_counter)
        if n > 254:
            raise RuntimeError("ran out of 10.77.N.0/24 test subnets")
        tun = f"tt{os.getpid() % 10000}{next(_tun_counter)}"
        assert len(tun) <= 15
        self._tuns.add(tun)
        return tun, f"10.77.{n}.1/24", f"10.77.{n}.2"

    def __call__(
        self,
        *,
        apps: Sequence[str] = (),
        synack_retries: int | None = None,
        log_level: str | None = None,
        extra_args: Sequence[str] = (),
        tun: str | None = None,
        wait_ready: bool = True,
        ready_timeout: float = READY_TIMEOUT,
    ) -> Daemon:
        """Start ``tcpstack serve`` in the namespace and (by default) wait until ready.

        ``apps`` are ``--app`` values such as ``"echo:7"``; empty means the
        program's defaults.  ``tun`` reuses a given device name (e.g. to test
        "device busy"); otherwise a fresh one is allocated.
        """
        new_tun, host_cidr, vip = self.allocate()
        tun = tun or new_tun
        argv = [*tcpstack_argv(), "serve", "--tun", tun, "--host-addr", host_cidr, "--addr", vip]
        for app in apps:
            argv += ["--app", app]
        if synack_retries is not None:
            argv += ["--synack-retries", str(synack_retries)]
        if log_level is not None:
            argv += ["--log-level", log_level]
        argv += list(extra_args)
        stack = spawn_daemon(
            self.ns, argv, tun=tun, host_cidr=host_cidr, vip=vip,
            stderr_path=self._tmp / f"stack-{len(self.stacks)}.stderr",
        )
        self.stacks.append(stack)
        if wait_ready:
            stack.wait_ready(ready_timeout)
        return stack

    def close(self) -> None:
        """Stop every daemon first, then remove leftover TUNs and temp files.

        Stopping all daemons before deleting devices matters: a stack started
        with a borrowed ``tun=`` name must not delete its neighbour's device.
        """
        try:
            for stack in reversed(self.stacks):
                rc = stack.stop(signal.SIGTERM, 10)
                log = stack.stderr_text()
                print(
                    f"--- {stack!r} exit={rc} stderr (last 4000 chars) ---\n{log[-4000:]}"
                )
            present = self.ns.link_names() if self._tuns else set()
            for tun in sorted(self._tuns & present):
                self.ns.run("ip", "link", "del", tun, check=False, timeout=10)
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)


@pytest.fixture
def make_stack(netns: NetNS) -> Iterator[StackFactory]:
    """Factory fixture: ``make_stack(**opts) -> Daemon`` (see StackFactory.__call__)."""
    factory = StackFactory(netns)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def tcpstack_cli(netns: NetNS) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Return ``tcpstack_cli(*args, timeout=15)``: run the CLI once in the netns.

    A CLI that wrongly accepts its arguments would start serving and never
    exit; subprocess.run kills it at the timeout and the test fails instead
    of hanging.
    """

    def _run(*args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        try:
            return netns.run(
                *tcpstack_argv(),
                *args,
                timeout=timeout,
                check=False,
                cwd=REPO_ROOT,
                env=daemon_env(),
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"`tcpstack {' '.join(args)}` still running after {timeout}s "
                f"(stderr: {exc.stderr!r})"
            )

    return _run


# --------------------------------------------------------------------------
# Packet capture and nftables
# --------------------------------------------------------------------------


@pytest.fixture
def capture() -> Iterator[Callable[..., contextlib.AbstractContextManager[Capture]]]:
    """Return ``capture(ns, iface, path=None)``; default files removed after the test."""
    pending: list[str] = []

    def _capture(
        ns: NetNS, iface: str, path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 10,
    ) -> contextlib.AbstractContextManager[Capture]:
        return nstools.capture(ns, iface, path, startup_timeout, cleanup=pending)

    try:
        yield _capture
    finally:
        while pending:
            shutil.rmtree(pending.pop(), ignore_errors=True)


@pytest.fixture(name="read_tcp_packets")
def read_tcp_packets_fixture() -> Callable[..., list[tuple[float, dpkt.ip.IP]]]:
    """Expose :func:`tests.nstools.read_tcp_packets` (conftest modules are not importable)."""
    return nstools.read_tcp_packets


@pytest.fixture
def nft_drop() -> Callable[..., contextlib.AbstractContextManager[NftRule]]:
    """Return ``nft_drop(ns, rule_expr)`` (a context manager)."""
    return nstools.nft_drop
