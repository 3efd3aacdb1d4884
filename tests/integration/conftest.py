"""Integration harness: the real daemon on a real TUN inside a throwaway netns.

The peer for every test is the Linux kernel's own TCP/IP stack, driven from
inside a network namespace the session creates (Python sockets, curl, nc, ping).
Nothing here is mocked: the point of these tests is to prove interoperability
with a real, independent TCP implementation.

Hygiene rules the helpers enforce, so a failing test cannot poison later ones
or the host:

* every namespace, TUN device, nftables table and temp file gets a unique name
  and is removed at teardown, also when the test fails;
* only processes started here are signalled, always by pid;
* nothing waits with a bare sleep: waits are on a condition (a line on a pipe,
  a process exit, a predicate) with a bounded timeout.

Fixtures (all usable from tests in this directory):

``netns``            session ``NetNS`` with ``.name``, ``.run()``, ``.popen()``,
                     ``.python()``, ``.spawn_python()``, ``.link_names()``.
``make_stack``       function-scoped ``StackFactory``; ``make_stack(**opts)``
                     starts a daemon and returns a ``Stack``.
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
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import dpkt
import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
IN_CI = os.environ.get("CI") == "true"

#: Bound for waiting on the daemon's "tcpstack ready:" line.
READY_TIMEOUT = 10.0
READY_PREFIX = "tcpstack ready:"

T = TypeVar("T")


# --------------------------------------------------------------------------
# Prerequisite gate
# --------------------------------------------------------------------------


def _missing_prerequisites() -> list[str]:
    """Return human-readable reasons why integration tests cannot run here.

    Evaluated once at import: the answer cannot change during a session and
    probing ``ip netns`` per test would be wasteful.
    """
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("integration tests need root (uid 0) for TUN and network namespaces")
    try:
        if not stat.S_ISCHR(os.stat("/dev/net/tun").st_mode):
            problems.append("/dev/net/tun is not a character device")
    except OSError as exc:
        problems.append(f"integration tests need /dev/net/tun ({exc.strerror})")
    if shutil.which("ip") is None:
        problems.append("integration tests need the `ip` tool (iproute2) for `ip netns`")
    else:
        try:
            probe = subprocess.run(
                ["ip", "netns", "list"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"`ip netns list` failed: {exc}")
        else:
            if probe.returncode != 0:
                problems.append(f"`ip netns` does not work: {probe.stderr.strip()}")
    return problems


_PREREQ_PROBLEMS = _missing_prerequisites()


def _unavailable(reason: str) -> None:
    """Skip locally, but fail hard in CI where a skip would hide a broken runner."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


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
    if _PREREQ_PROBLEMS:
        _unavailable("; ".join(_PREREQ_PROBLEMS))


@pytest.fixture(scope="session")
def require_tools() -> Callable[..., None]:
    """Return ``require_tools(*names)``: skip (fail under CI) when a tool is absent."""

    def _require(*names: str) -> None:
        missing = [n for n in names if shutil.which(n) is None]
        if missing:
            _unavailable(
                f"missing tools: {', '.join(missing)} (run scripts/install-system-deps.sh)"
            )

    return _require


# --------------------------------------------------------------------------
# Generic waiting helpers
# --------------------------------------------------------------------------


def wait_until_fn(
    predicate: Callable[[], T],
    timeout: float = 5.0,
    interval: float = 0.05,
    message: str = "",
) -> T:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` s.

    For conditions with no event to block on (a link disappearing, a file
    appearing).  Returns the truthy value so callers can use it.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"condition not met within {timeout:.1f}s: {message or predicate!r}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def wait_until() -> Callable[..., Any]:
    """Expose :func:`wait_until_fn` as ``wait_until(predicate, timeout, interval)``."""
    return wait_until_fn


class LineCollector:
    """Drain a child's pipe on a thread, keeping the lines and signalling matches.

    Reading on a thread both prevents the child from blocking on a full pipe
    and lets the test block on a condition variable (bounded) rather than
    polling.
    """

    def __init__(self, stream: IO[bytes], name: str = "pipe") -> None:
        self._stream = stream
        self._cond = threading.Condition()
        self.lines: list[str] = []
        self.eof = False
        self._thread = threading.Thread(target=self._run, name=f"collect-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for raw in iter(self._stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass  # pipe closed under us during teardown
        finally:
            with self._cond:
                self.eof = True
                self._cond.notify_all()

    def wait_for(self, needle: str, timeout: float, *, prefix: bool = False) -> str | None:
        """Block until a line containing (or starting with) ``needle`` arrives.

        Returns the line, or ``None`` on timeout or EOF without a match.
        """

        def match() -> str | None:
            for line in self.lines:
                if (line.startswith(needle) if prefix else needle in line):
                    return line
            return None

        with self._cond:
            self._cond.wait_for(lambda: match() is not None or self.eof, timeout)
            return match()

    def wait_eof(self, timeout: float) -> bool:
        """Block until the pipe reaches EOF (the child closed it or exited)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.eof, timeout)

    def text(self) -> str:
        """All lines read so far, newline-joined."""
        with self._cond:
            return "\n".join(self.lines)

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the reader thread (after the child has exited)."""
        self._thread.join(timeout)


def _stop_process(proc: subprocess.Popen[Any], sig: int, timeout: float) -> int:
    """Signal one process we started (by pid), wait, SIGKILL if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)
    assert proc.returncode is not None
    return proc.returncode


# --------------------------------------------------------------------------
# Network namespace
# --------------------------------------------------------------------------


class NetnsCommandError(subprocess.CalledProcessError):
    """CalledProcessError whose message includes the command's output."""

    def __str__(self) -> str:
        def _s(v: Any) -> str:
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else (v or "")

        return (
            f"{super().__str__()}\n--- stdout ---\n{_s(self.stdout)[-2000:]}"
            f"\n--- stderr ---\n{_s(self.stderr)[-2000:]}"
        )


class BackgroundProcess:
    """A process running in the netns whose stdout/stderr are drained on threads."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.pid = proc.pid
        self.stdout = LineCollector(proc.stdout, f"{proc.pid}-out")
        self.stderr = LineCollector(proc.stderr, f"{proc.pid}-err")

    def wait_for_line(self, needle: str, timeout: float = 10.0) -> str:
        """Wait for a stdout line containing ``needle``; fail with stderr if absent."""
        line = self.stdout.wait_for(needle, timeout)
        if line is None:
            pytest.fail(
                f"pid {self.pid} printed no line containing {needle!r} within {timeout}s "
                f"(exit={self.proc.poll()})\nstdout:\n{self.stdout.text()}\n"
                f"stderr:\n{self.stderr.text()}"
            )
        return line

    def finish(self, timeout: float = 10.0) -> tuple[int, str, str]:
        """Wait for exit (killing it on timeout) and return (rc, stdout, stderr)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _stop_process(self.proc, signal.SIGKILL, 5)
            self.stdout.wait_eof(5)
            self.stderr.wait_eof(5)
            pytest.fail(
                f"pid {self.pid} did not exit within {timeout}s\nstdout:\n"
                f"{self.stdout.text()}\nstderr:\n{self.stderr.text()}"
            )
        self.stdout.wait_eof(5)
        self.stderr.wait_eof(5)
        return self.proc.returncode, self.stdout.text(), self.stderr.text()


class NetNS:
    """A uniquely named network namespace plus the processes started in it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._procs: list[subprocess.Popen[Any]] = []

    def argv(self, *argv: str | os.PathLike[str]) -> list[str]:
        """Prefix ``argv`` so it runs inside this namespace.

        ``ip netns exec`` execs the command directly (no extra fork), so the
        pid we get from Popen is the command's own pid: signals reach it.
        """
        return ["ip", "netns", "exec", self.name, *map(os.fspath, argv)]

    def run(
        self,
        *argv: str | os.PathLike[str],
        timeout: float = 30.0,
        check: bool = True,
        input: str | bytes | None = None,
        text: bool | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[Any]:
        """Run a command in the namespace with captured output and a timeout.

        ``text`` defaults to True unless ``input`` is bytes.  On timeout the
        child is killed by subprocess.run itself.  With ``check`` a non-zero
        exit raises an error whose message includes stdout and stderr.
        """
        if text is None:
            text = not isinstance(input, bytes)
        cp = subprocess.run(
            self.argv(*argv),
            input=input,
            capture_output=True,
            text=text,
            timeout=timeout,
            cwd=cwd,
            env=env,
        )
        if check and cp.returncode != 0:
            raise NetnsCommandError(cp.returncode, cp.args, cp.stdout, cp.stderr)
        return cp

    def popen(self, *argv: str | os.PathLike[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a command in the namespace; it is killed at session teardown."""
        proc: subprocess.Popen[Any] = subprocess.Popen(self.argv(*argv), **kw)
        self._procs.append(proc)
        return proc

    def python(
        self, code: str, timeout: float = 30.0, check: bool = False, **kw: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run ``sys.executable -c code`` in the namespace (a kernel-side peer)."""
        return self.run(sys.executable, "-c", code, timeout=timeout, check=check, **kw)

    def spawn_python(self, code: str) -> BackgroundProcess:
        """Start ``sys.executable -u -c code`` in the background with drained pipes."""
        proc = self.popen(
            sys.executable,
            "-u",
            "-c",
            code,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        return BackgroundProcess(proc)

    def link_names(self) -> set[str]:
        """Names of the network interfaces currently in the namespace."""
        out = self.run("ip", "-o", "link", timeout=10).stdout
        names: set[str] = set()
        for line in out.splitlines():
            parts = line.split(": ", 2)
            if len(parts) >= 2:
                names.add(parts[1].split("@", 1)[0])
        return names

    def kill_started(self) -> None:
        """Kill every process this object started that is still running (by pid)."""
        for proc in self._procs:
            _stop_process(proc, signal.SIGKILL, 5)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


def _netns_delete(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@pytest.fixture(scope="session")
def netns(_integration_prerequisites: None) -> Iterator[NetNS]:
    """A fresh namespace for the session: lo up, IPv6 off, always deleted.

    IPv6 is disabled (``all`` and ``default``, so TUNs created later inherit
    it) to keep router solicitations and MLD reports out of the TUN; the
    stack only speaks IPv4 and the captures stay clean.
    """
    name = f"tcps-test-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    ns = NetNS(name)
    try:
        ns.run("ip", "link", "set", "lo", "up")
        if Path("/proc/sys/net/ipv6").exists():
            ns.run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
            ns.run("sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1")
        yield ns
    finally:
        try:
            ns.kill_started()
        finally:
            _netns_delete(name)


@pytest.fixture
def ns_python(netns: NetNS) -> Callable[..., subprocess.CompletedProcess[Any]]:
    """Return ``ns_python(code, timeout=30)``: run Python in the test namespace."""

    def _run(code: str, timeout: float = 30.0, **kw: Any) -> subprocess.CompletedProcess[Any]:
        return netns.python(code, timeout=timeout, **kw)

    return _run


# --------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------


def tcpstack_argv() -> list[str]:
    """How to invoke the program: the venv console script, else ``python -m``."""
    script = REPO_ROOT / ".venv" / "bin" / "tcpstack"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "tcpstack"]


def _daemon_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # Only matters for the `python -m tcpstack` fallback outside the venv.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


_subnet_counter = itertools.count(1)
_tun_counter = itertools.count(1)


class Stack:
    """A running ``tcpstack serve`` daemon inside the test namespace."""

    def __init__(
        self,
        ns: NetNS,
        proc: subprocess.Popen[bytes],
        *,
        tun: str,
        host_ip: str,
        prefix: int,
        vip: str,
        stderr_path: Path,
        argv: list[str],
    ) -> None:
        assert proc.stdout is not None
        self.ns = ns
        self.proc = proc
        self.pid = proc.pid
        self.tun = tun
        self.host_ip = host_ip
        self.prefix = prefix
        self.vip = vip
        self.argv = argv
        self.ready_line: str | None = None
        self._stderr_path = stderr_path
        self.stdout = LineCollector(proc.stdout, f"stack-{proc.pid}")

    def stderr_text(self) -> str:
        """Everything the daemon wrote to stderr so far (its logs)."""
        try:
            return self._stderr_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stdout_text(self) -> str:
        """Everything the daemon wrote to stdout so far."""
        return self.stdout.text()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        """Block until the ``tcpstack ready:`` line; fail with stderr otherwise."""
        line = self.stdout.wait_for(READY_PREFIX, timeout, prefix=True)
        if line is None:
            rc = self.proc.poll()
            state = f"exited with status {rc}" if rc is not None else f"not ready in {timeout}s"
            if rc is None:
                _stop_process(self.proc, signal.SIGKILL, 5)
            self.stdout.wait_eof(2)
            pytest.fail(
                f"tcpstack {state}\ncommand: {' '.join(self.argv)}\n"
                f"stdout:\n{self.stdout.text()}\nstderr:\n{self.stderr_text()}",
                pytrace=False,
            )
        self.ready_line = line
        return line

    def alive(self) -> bool:
        """True while the daemon process is running."""
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the daemon (by pid), wait; SIGKILL after ``timeout``. Returns status."""
        rc = _stop_process(self.proc, sig, timeout)
        self.stdout.wait_eof(5)
        self.stdout.join(5)
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()
        return rc

    def __repr__(self) -> str:
        return f"<Stack pid={self.pid} tun={self.tun} vip={self.vip}>"


class StackFactory:
    """Starts daemons on demand; tears all of them down after the test.

    Each stack gets its own subnet 10.77.N.0/24 and TUN name so stacks started
    one after another in the same namespace never see each other's leftovers.
    """

    def __init__(self, ns: NetNS) -> None:
        self.ns = ns
        self.stacks: list[Stack] = []
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
    ) -> Stack:
        """Start ``tcpstack serve`` in the namespace and (by default) wait until ready.

        ``apps`` are ``--app`` values such as ``"echo:7"``; empty means the
        program's defaults.  ``tun`` reuses a given device name (e.g. to test
        "device busy"); otherwise a fresh one is allocated.
        """
        new_tun, host_cidr, vip = self.allocate()
        tun = tun or new_tun
        host_ip, prefix = host_cidr.split("/")
        argv = [
            *tcpstack_argv(),
            "serve",
            "--tun",
            tun,
            "--host-addr",
            host_cidr,
            "--addr",
            vip,
        ]
        for app in apps:
            argv += ["--app", app]
        if synack_retries is not None:
            argv += ["--synack-retries", str(synack_retries)]
        if log_level is not None:
            argv += ["--log-level", log_level]
        argv += list(extra_args)

        stderr_path = self._tmp / f"stack-{len(self.stacks)}.stderr"
        # O_APPEND: the child's writes never collide with our reads.
        with open(stderr_path, "ab") as err:
            proc = self.ns.popen(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=REPO_ROOT,
                env=_daemon_env(),
                start_new_session=True,
            )
        stack = Stack(
            self.ns,
            proc,
            tun=tun,
            host_ip=host_ip,
            prefix=int(prefix),
            vip=vip,
            stderr_path=stderr_path,
            argv=self.ns.argv(*argv),
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
    """Factory fixture: ``make_stack(**opts) -> Stack`` (see StackFactory.__call__)."""
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
                env=_daemon_env(),
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"`tcpstack {' '.join(args)}` still running after {timeout}s "
                f"(stderr: {exc.stderr!r})"
            )

    return _run


# --------------------------------------------------------------------------
# Packet capture
# --------------------------------------------------------------------------

#: pcap link types whose frames are bare IP packets (LINKTYPE_RAW and the
#: platform-specific DLT_RAW values that some writers leave in the header).
_RAW_LINKTYPES = {101, 12, 14}
_LINKTYPE_ETHERNET = 1
_LINKTYPE_LINUX_SLL = 113


def read_ip_packets(path: str | os.PathLike[str]) -> list[tuple[float, dpkt.ip.IP]]:
    """Parse a pcap into (timestamp, IPv4 packet) pairs, ignoring non-IPv4 frames.

    Tolerates a truncated last record so a capture still being written can be
    inspected.
    """
    out: list[tuple[float, dpkt.ip.IP]] = []
    with open(path, "rb") as fh:
        try:
            reader = dpkt.pcap.Reader(fh)
        except (ValueError, dpkt.NeedData):
            return out  # header not flushed yet
        linktype = reader.datalink()
        it = iter(reader)
        while True:
            try:
                ts, buf = next(it)
            except StopIteration:
                break
            except (ValueError, dpkt.NeedData, dpkt.UnpackError):
                break  # truncated trailing record
            try:
                if linktype in _RAW_LINKTYPES:
                    if not buf or buf[0] >> 4 != 4:
                        continue
                    ip = dpkt.ip.IP(buf)
                elif linktype == _LINKTYPE_ETHERNET:
                    ip = dpkt.ethernet.Ethernet(buf).data
                elif linktype == _LINKTYPE_LINUX_SLL:
                    ip = dpkt.sll.SLL(buf).data
                else:
                    raise ValueError(f"unsupported pcap link type {linktype}")
            except (dpkt.UnpackError, dpkt.NeedData):
                continue
            if isinstance(ip, dpkt.ip.IP):
                out.append((float(ts), ip))
    return out


def read_tcp_packets(path: str | os.PathLike[str]) -> list[tuple[float, dpkt.ip.IP]]:
    """Like :func:`read_ip_packets` but only packets carrying a TCP segment."""
    return [(ts, ip) for ts, ip in read_ip_packets(path) if isinstance(ip.data, dpkt.tcp.TCP)]


class Capture:
    """A running tcpdump; ``.path`` is the pcap, ``.tcp_packets()`` reads it."""

    def __init__(self, path: Path, proc: subprocess.Popen[bytes]) -> None:
        self.path = path
        self.proc = proc

    def tcp_packets(self) -> list[tuple[float, dpkt.ip.IP]]:
        """Parse what has been written so far (works during and after capture)."""
        return read_tcp_packets(self.path)

    def ip_packets(self) -> list[tuple[float, dpkt.ip.IP]]:
        """All IPv4 packets written so far."""
        return read_ip_packets(self.path)


@contextlib.contextmanager
def capture_cm(
    ns: NetNS, iface: str, path: str | os.PathLike[str] | None = None, startup_timeout: float = 10
) -> Iterator[Capture]:
    """Capture on ``iface`` inside ``ns`` for the duration of the block.

    ``--immediate-mode`` and ``-U`` make packets reach the file promptly, so
    a test can wait for a packet to appear before leaving the block; ``-Z
    root`` stops tcpdump dropping privileges and then failing to write into
    root-only temp directories.  Stopped with SIGINT so the file is flushed.
    """
    tmpdir: str | None = None
    if path is None:
        tmpdir = tempfile.mkdtemp(prefix="tcpstack-cap-")
        path = Path(tmpdir) / f"{iface}.pcap"
    pcap = Path(path)
    proc = ns.popen(
        "tcpdump",
        "-i",
        iface,
        "-U",
        "--immediate-mode",
        "-Z",
        "root",
        "-n",
        "-w",
        str(pcap),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stderr is not None
    err = LineCollector(proc.stderr, f"tcpdump-{proc.pid}")
    try:
        if err.wait_for("listening on", startup_timeout) is None:
            pytest.fail(f"tcpdump on {iface} did not start (exit={proc.poll()}):\n{err.text()}")
        wait_until_fn(pcap.exists, startup_timeout, message=f"tcpdump created {pcap}")
        yield Capture(pcap, proc)
    finally:
        _stop_process(proc, signal.SIGINT, 10)
        err.wait_eof(5)
        if tmpdir is not None:
            # Keep the file readable after the block only when the caller chose it.
            _pending_cleanup.append(tmpdir)


_pending_cleanup: list[str] = []


@pytest.fixture
def capture() -> Iterator[Callable[..., contextlib.AbstractContextManager[Capture]]]:
    """Return ``capture(ns, iface, path=None)``; default files removed after the test."""
    try:
        yield capture_cm
    finally:
        while _pending_cleanup:
            shutil.rmtree(_pending_cleanup.pop(), ignore_errors=True)


@pytest.fixture(name="read_tcp_packets")
def read_tcp_packets_fixture() -> Callable[..., list[tuple[float, dpkt.ip.IP]]]:
    """Expose :func:`read_tcp_packets` (conftest modules are not importable)."""
    return read_tcp_packets


# --------------------------------------------------------------------------
# nftables
# --------------------------------------------------------------------------


class NftRule:
    """A drop rule installed by :func:`nft_drop_cm`; ``.dropped()`` reads its counter."""

    def __init__(self, ns: NetNS, table: str) -> None:
        self.ns = ns
        self.table = table

    def dropped(self) -> int:
        """Packets the rule has dropped so far (from its counter)."""
        out = self.ns.run("nft", "list", "table", "inet", self.table, timeout=10).stdout
        m = re.search(r"counter packets (\d+)", out)
        return int(m.group(1)) if m else 0


@contextlib.contextmanager
def nft_drop_cm(ns: NetNS, rule_expr: str) -> Iterator[NftRule]:
    """Drop locally generated packets in ``ns`` matching ``rule_expr``.

    Lives in its own uniquely named ``inet`` table with an output hook, so it
    never disturbs other rules and deleting the table removes it completely.
    """
    table = f"tcps_test_{secrets.token_hex(4)}"
    script = (
        f"table inet {table} {{\n"
        "  chain output {\n"
        "    type filter hook output priority 0; policy accept;\n"
        f"    {rule_expr} counter drop\n"
        "  }\n"
        "}\n"
    )
    ns.run("nft", "-f", "-", input=script, timeout=10)
    try:
        yield NftRule(ns, table)
    finally:
        ns.run("nft", "delete", "table", "inet", table, check=False, timeout=10)


@pytest.fixture
def nft_drop() -> Callable[..., contextlib.AbstractContextManager[NftRule]]:
    """Return ``nft_drop(ns, rule_expr)`` (a context manager)."""
    return nft_drop_cm
