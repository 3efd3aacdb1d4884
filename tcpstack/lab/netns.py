"""The lab toolkit: throwaway network namespaces and a `tcpstack serve` inside one.

`tcpstack demo`, the scripts (`scripts/bench.py`, the proof scripts of
`scripts/proofkit.py`) and the root-only test suites (`tests/nstools.py`) all
run the daemon on a real TUN device inside a network namespace of their own.
The rules that keep one failing run from poisoning the next, or the host, live
here once:

* every namespace gets a unique name (``PREFIX-PID-RANDOM``) and is deleted on
  the way out, also on failure; lo is up and IPv6 off in it (router
  solicitations and MLD reports would otherwise reach the TUN);
* only processes started here are signalled, always by pid, and the ones a
  namespace started are killed before it is deleted;
* nothing waits with a bare sleep: waits are on a condition (a line on a pipe,
  a process exit, a predicate) with a bounded timeout, and a wait that runs out
  raises `LabError` with what the process said.

A lab tool: the stack, the codec and the TCP core never import it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

#: The package's parent directory: daemons must run this very code, installed or not.
SOURCE_ROOT = Path(__file__).resolve().parents[2]

#: Bound for waiting on the daemon's "tcpstack ready:" line.
READY_TIMEOUT = 10.0
READY_PREFIX = "tcpstack ready:"

CLONE_NEWNET = 0x40000000  # <sched.h>; os.setns only exists from Python 3.12

T = TypeVar("T")


class LabError(Exception):
    """A lab step failed (a command, a bounded wait); the message says which and why."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 5.0,
    interval: float = 0.05,
    message: str = "",
) -> T:
    """Poll ``predicate`` until it is truthy; LabError after ``timeout`` s.

    For conditions with no event to block on (a link disappearing, a file
    appearing).  Returns the truthy value so callers can use it.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise LabError(f"condition not met within {timeout:.1f}s: {message or predicate!r}")
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

        def match(lines: list[str]) -> str | None:
            for line in lines:
                if (line.startswith(needle) if prefix else needle in line):
                    return line
            return None

        return self.wait_until(match, timeout)

    def wait_until(self, predicate: Callable[[list[str]], T], timeout: float) -> T | None:
        """Block until ``predicate(lines)`` is truthy and return it; ``None`` on
        timeout or EOF without it."""
        with self._cond:
            self._cond.wait_for(lambda: predicate(self.lines) or self.eof, timeout)
            return predicate(self.lines) or None

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


class NetnsCommandError(subprocess.CalledProcessError, LabError):
    """A command that failed; the message is the command, its status and its output."""

    def __str__(self) -> str:
        def _s(v: Any) -> str:
            text = v.decode("utf-8", "replace") if isinstance(v, bytes) else (v or "")
            return text.strip()[-2000:]

        cmd = " ".join(map(str, self.cmd)) if isinstance(self.cmd, list) else self.cmd
        out = f"`{cmd}` failed (exit {self.returncode}): {_s(self.stderr) or 'no message'}"
        return out + (f"\n--- stdout ---\n{_s(self.stdout)}" if _s(self.stdout) else "")


class BackgroundProcess:
    """A process running in the netns whose stdout/stderr are drained on threads."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.pid = proc.pid
        self.stdout = LineCollector(proc.stdout, f"{proc.pid}-out")
        self.stderr = LineCollector(proc.stderr, f"{proc.pid}-err")

    def wait_for_line(self, needle: str, timeout: float = 10.0) -> str:
        """Wait for a stdout line containing ``needle``; LabError with stderr if absent."""
        line = self.stdout.wait_for(needle, timeout)
        if line is None:
            raise LabError(
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
            raise LabError(
                f"pid {self.pid} did not exit within {timeout}s\nstdout:\n"
                f"{self.stdout.text()}\nstderr:\n{self.stderr.text()}"
            ) from None
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


@contextlib.contextmanager
def netns_scope(prefix: str) -> Iterator[NetNS]:
    """A fresh namespace ``<prefix>-<pid>-<random>``: lo up, IPv6 off, always deleted.

    IPv6 is disabled (``all`` and ``default``, so TUNs created later inherit
    it) to keep router solicitations and MLD reports out of the TUN; the
    stack only speaks IPv4 and the captures stay clean. Processes started
    through the namespace are killed (by pid) before it is deleted.
    """
    name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
    _run(["ip", "netns", "add", name])
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
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def _run(argv: list[str]) -> None:
    """Run a command outside any namespace; NetnsCommandError when it fails."""
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if cp.returncode != 0:
        raise NetnsCommandError(cp.returncode, cp.args, cp.stdout, cp.stderr)


def tcpstack_argv() -> list[str]:
    """How to invoke the program: the venv console script, else ``python -m``."""
    script = SOURCE_ROOT / ".venv" / "bin" / "tcpstack"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "tcpstack"]


def daemon_env() -> dict[str, str]:
    """Environment for daemons: unbuffered output, the repository importable."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # For `python -m tcpstack` outside the venv and for `python -m tests...` launchers.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SOURCE_ROOT), env.get("PYTHONPATH", "")) if p
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
        stderr_path: Path | None,
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
        """Everything the daemon wrote to stderr so far (its logs); with stderr
        merged into stdout, nothing."""
        try:
            return self._stderr_path.read_text("utf-8", "replace") if self._stderr_path else ""
        except FileNotFoundError:
            return ""

    def stdout_text(self) -> str:
        """Everything the daemon wrote to stdout so far."""
        return self.stdout.text()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        """Block until the ``tcpstack ready:`` line; LabError with its output otherwise."""
        line = self.stdout.wait_for(READY_PREFIX, timeout, prefix=True)
        if line is None:
            rc = self.proc.poll()
            state = f"exited with status {rc}" if rc is not None else f"not ready in {timeout}s"
            if rc is None:
                stop_process(self.proc, signal.SIGKILL, 5)
            self.stdout.wait_eof(2)
            raise LabError(
                f"tcpstack {state}\ncommand: {' '.join(self.argv)}\n"
                f"stdout:\n{self.stdout.text()}\nstderr:\n{self.stderr_text()}"
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
    stderr_path: Path | None,
) -> Daemon:
    """Start a daemon in ``ns`` with stdout on a pipe and stderr appended to a file
    (``stderr_path``; None: on the stdout pipe, so the log and the ready line are
    read the same way, in order).

    ``argv`` is the full command (program, subcommand and options); the
    caller waits for readiness with :meth:`Daemon.wait_ready`.
    """
    host_ip, prefix = host_cidr.split("/")
    # O_APPEND: the child's writes never collide with our reads.
    with (open(stderr_path, "ab") if stderr_path else contextlib.nullcontext(
            subprocess.STDOUT)) as err:
        proc = ns.popen(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=SOURCE_ROOT,
            env=daemon_env(),
            start_new_session=True,
        )
    return Daemon(
        ns, proc, tun=tun, host_ip=host_ip, prefix=int(prefix), vip=vip,
        stderr_path=stderr_path, argv=ns.argv(*argv),
    )
