"""Network-namespace, process and capture helpers shared by the root-only suites.

Both `tests/integration` (the kernel as a socket-level peer) and
`tests/conformance` (a packet-level peer scripted by the test) run real TUN
devices inside throwaway network namespaces. The rules that keep a failing
test from poisoning later ones or the host live here, once:

* every namespace, TUN device, nftables table and temp file gets a unique name
  and is removed at teardown, also when the test fails;
* only processes started here are signalled, always by pid;
* nothing waits with a bare sleep: waits are on a condition (a line on a pipe,
  a process exit, a predicate) with a bounded timeout.

The pytest fixtures stay in each suite's conftest; this module only holds the
plain classes and functions they are built from.
"""

from __future__ import annotations

import contextlib
import ctypes
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import dpkt
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI") == "true"

#: Bound for waiting on the daemon's "tcpstack ready:" line.
READY_TIMEOUT = 10.0
READY_PREFIX = "tcpstack ready:"

CLONE_NEWNET = 0x40000000  # <sched.h>; os.setns only exists from Python 3.12

T = TypeVar("T")


# --------------------------------------------------------------------------
# Prerequisite gate
# --------------------------------------------------------------------------


def _missing_prerequisites() -> list[str]:
    """Return human-readable reasons why root-only tests cannot run here.

    Evaluated once at import: the answer cannot change during a session and
    probing ``ip netns`` per test would be wasteful.
    """
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("these tests need root (uid 0) for TUN and network namespaces")
    try:
        if not stat.S_ISCHR(os.stat("/dev/net/tun").st_mode):
            problems.append("/dev/net/tun is not a character device")
    except OSError as exc:
        problems.append(f"these tests need /dev/net/tun ({exc.strerror})")
    if shutil.which("ip") is None:
        problems.append("these tests need the `ip` tool (iproute2) for `ip netns`")
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


PREREQ_PROBLEMS = _missing_prerequisites()


def unavailable(reason: str) -> None:
    """Skip locally, but fail hard in CI where a skip would hide a broken runner."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def require_prerequisites() -> None:
    """Skip (fail under CI=true) unless root, /dev/net/tun and `ip netns` work."""
    if PREREQ_PROBLEMS:
        unavailable("; ".join(PREREQ_PROBLEMS))


def require_tools(*names: str) -> None:
    """Skip (fail under CI=true) when a command-line tool is absent."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        unavailable(f"missing tools: {', '.join(missing)} (run scripts/install-system-deps.sh)")


# --------------------------------------------------------------------------
# Generic waiting helpers
# --------------------------------------------------------------------------


def wait_until(
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


def run_into_closed_pipe(argv: list[str], timeout: float = 30.0,
                         **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run `argv` with its stdout on a pipe whose reader is gone, as in
    `tcpstack ss | head -c 0`: every write to stdout fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=timeout, **kw)
    finally:
        os.close(write_end)


def stop_process(proc: subprocess.Popen[Any], sig: int, timeout: float) -> int:
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
            stop_process(self.proc, signal.SIGKILL, 5)
            self.stdout.wait_eof(5)
            self.stderr.wait_eof(5)
            pytest.fail(
                f"pid {self.pid} did not exit within {timeout}s\nstdout:\n"
                f"{self.stdout.text()}\nstderr:\n{self.stderr.text()}"
            )
        self.stdout.wait_eof(5)
        self.stderr.wait_eof(5)
        return self.proc.returncode, self.stdout.text(), self.stderr.text()


_libc = ctypes.CDLL(None, use_errno=True)


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
        """Start a command in the namespace; it is killed when the namespace goes."""
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

    def sysctl(self, **settings: str | int) -> None:
        """Set sysctls inside the namespace: ``ns.sysctl(**{"net.ipv4.ip_forward": 0})``."""
        for key, value in settings.items():
            self.run("sysctl", "-q", "-w", f"{key}={value}", timeout=10)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on a short-lived thread that has entered this namespace.

        setns(2) switches only the calling thread, so the test process itself
        stays where it is, while sockets and TUN devices that ``fn`` creates
        belong to the namespace for their whole life. That lets a test hold a
        TUN fd or an AF_PACKET socket of the namespace directly, with no relay
        process in between.
        """
        result: list[T] = []
        error: list[BaseException] = []

        def run() -> None:
            try:
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns({self.name}): {os.strerror(err)}")
                finally:
                    os.close(fd)
                result.append(fn())
            except BaseException as exc:  # re-raised in the caller's thread
                error.append(exc)

        thread = threading.Thread(target=run, name=f"setns-{self.name}")
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return result[0]

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
            stop_process(proc, signal.SIGKILL, 5)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


def _netns_delete(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@contextlib.contextmanager
def netns_scope(prefix: str) -> Iterator[NetNS]:
    """A fresh namespace ``<prefix>-<pid>-<random>``: lo up, IPv6 off, always deleted.

    IPv6 is disabled (``all`` and ``default``, so TUNs created later inherit
    it) to keep router solicitations and MLD reports out of the TUN; the
    stack only speaks IPv4 and the captures stay clean. Processes started
    through the namespace are killed (by pid) before it is deleted.
    """
    name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    ns = NetNS(name)
    try:
        ns.run("ip", "link", "set", "lo", "up")
        if Path("/proc/sys/net/ipv6").exists():
            ns.sysctl(**{"net.ipv6.conf.all.disable_ipv6": 1,
                         "net.ipv6.conf.default.disable_ipv6": 1})
        yield ns
    finally:
        try:
            ns.kill_started()
        finally:
            _netns_delete(name)


# --------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------


def tcpstack_argv() -> list[str]:
    """How to invoke the program: the venv console script, else ``python -m``."""
    script = REPO_ROOT / ".venv" / "bin" / "tcpstack"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "tcpstack"]


def daemon_env() -> dict[str, str]:
    """Environment for daemons: unbuffered output, the repository importable."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # For `python -m tcpstack` outside the venv and for `python -m tests...` launchers.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


class Daemon:
    """A running ``tcpstack serve`` (or compatible launcher) inside a namespace."""

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
                stop_process(self.proc, signal.SIGKILL, 5)
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
        rc = stop_process(self.proc, sig, timeout)
        self.stdout.wait_eof(5)
        self.stdout.join(5)
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()
        return rc

    def __repr__(self) -> str:
        return f"<Daemon pid={self.pid} tun={self.tun} vip={self.vip}>"


def spawn_daemon(
    ns: NetNS,
    argv: list[str],
    *,
    tun: str,
    host_cidr: str,
    vip: str,
    stderr_path: Path,
) -> Daemon:
    """Start a daemon in ``ns`` with stdout on a pipe and stderr appended to a file.

    ``argv`` is the full command (program, subcommand and options); the
    caller waits for readiness with :meth:`Daemon.wait_ready`.
    """
    host_ip, prefix = host_cidr.split("/")
    # O_APPEND: the child's writes never collide with our reads.
    with open(stderr_path, "ab") as err:
        proc = ns.popen(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=REPO_ROOT,
            env=daemon_env(),
            start_new_session=True,
        )
    return Daemon(
        ns, proc, tun=tun, host_ip=host_ip, prefix=int(prefix), vip=vip,
        stderr_path=stderr_path, argv=ns.argv(*argv),
    )


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
def capture(
    ns: NetNS,
    iface: str,
    path: str | os.PathLike[str] | None = None,
    startup_timeout: float = 10,
    cleanup: list[str] | None = None,
) -> Iterator[Capture]:
    """Capture on ``iface`` inside ``ns`` for the duration of the block.

    ``--immediate-mode`` and ``-U`` make packets reach the file promptly, so
    a test can wait for a packet to appear before leaving the block; ``-Z
    root`` stops tcpdump dropping privileges and then failing to write into
    root-only temp directories.  Stopped with SIGINT so the file is flushed.
    A temp directory made here (no ``path``) is appended to ``cleanup`` so
    the file stays readable after the block, until the caller removes it.
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
        wait_until(pcap.exists, startup_timeout, message=f"tcpdump created {pcap}")
        yield Capture(pcap, proc)
    finally:
        stop_process(proc, signal.SIGINT, 10)
        err.wait_eof(5)
        if tmpdir is not None:
            if cleanup is None:
                shutil.rmtree(tmpdir, ignore_errors=True)
            else:
                cleanup.append(tmpdir)


# --------------------------------------------------------------------------
# nftables
# --------------------------------------------------------------------------


class NftRule:
    """A drop rule installed by :func:`nft_drop`; ``.dropped()`` reads its counter."""

    def __init__(self, ns: NetNS, table: str) -> None:
        self.ns = ns
        self.table = table

    def dropped(self) -> int:
        """Packets the rule has dropped so far (from its counter)."""
        out = self.ns.run("nft", "list", "table", "inet", self.table, timeout=10).stdout
        m = re.search(r"counter packets (\d+)", out)
        return int(m.group(1)) if m else 0


@contextlib.contextmanager
def nft_drop(ns: NetNS, rule_expr: str) -> Iterator[NftRule]:
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
