"""What `make fuzz`, `make flood` and `make soak` share: the daemon in a namespace,
its numbers, and the pass/fail report.

The namespace, daemon and process handling is `tcpstack.lab.netns` (the lab
toolkit `tcpstack demo` and the test suites use too); this module adds what only the proof
scripts need: a `StackLab` (namespace + `tcpstack serve` + its control socket),
per-process samples (RSS, open fds), the TUN device's own counters read from
inside the namespace, and one report format: a table of checks, each with its
measured value, its threshold and PASS/FAIL, plus the same as JSON under
bench-results/ (git-ignored), with the date and the machine.

Every wait here is bounded; only processes started here are signalled, by pid;
the namespace is deleted on the way out, also on failure and on Ctrl-C
(`interruptible` turns SIGTERM into KeyboardInterrupt for that).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `tcpstack` from this checkout

from tcpstack.lab import control, netns  # noqa: E402

RESULTS = REPO / "bench-results"
#: A bounded wait that ran out (or a lab command that failed); in a script, one error line.
WaitFailed = netns.LabError


class ProofError(Exception):
    """A step failed in a way that makes the run meaningless (not a failed check)."""


# --------------------------------------------------------------------------
# Checks and the report
# --------------------------------------------------------------------------


@dataclass
class Check:
    """One pass/fail line of the report: what was measured against what is required."""

    name: str
    passed: bool
    measured: str
    required: str


def render(checks: list[Check]) -> str:
    """The checks as a fixed-width table, one line each."""
    w = max((len(c.name) for c in checks), default=5)
    m = max((len(c.measured) for c in checks), default=8)
    head = f"{'check':<{w}}  {'measured':<{m}}  {'required':<24}  result"
    lines = [head, "-" * len(head)]
    for c in checks:
        lines.append(f"{c.name:<{w}}  {c.measured:<{m}}  {c.required:<24}  "
                     f"{'PASS' if c.passed else 'FAIL'}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where the numbers were measured: CPU model, cores, kernel, Python."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}


def report(kind: str, checks: list[Check], data: dict[str, Any], out: Path,
           params: dict[str, Any]) -> int:
    """Print the table, write bench-results/<kind>-<date>.json; exit status 1 on a FAIL."""
    print(render(checks))
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.now()
    path = out / f"{kind}-{now:%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps({
        "date": now.isoformat(timespec="seconds"), "machine": machine(),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()},
        "checks": [asdict(c) for c in checks], "data": data,
    }, indent=2, default=str) + "\n")
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    failed = [c.name for c in checks if not c.passed]
    print(f"{kind}: {'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'} "
          f"(JSON in {shown})")
    return 1 if failed else 0


def start_role(ns: netns.NetNS, script: Path, name: str,
               *args: object) -> netns.BackgroundProcess:
    """Start one of `script`'s helper roles inside `ns`, its output drained."""
    return netns.BackgroundProcess(ns.popen(
        sys.executable, "-u", script, name, *map(str, args), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, cwd=REPO))


Role = tuple[Callable[..., None], tuple[type, ...]]


def script_main(kind: str, argv: list[str], roles: dict[str, Role],
                parse: Callable[[list[str]], argparse.Namespace],
                body: Callable[[argparse.Namespace], int]) -> int:
    """The common entry point: a helper role (the script re-invoked inside a
    namespace: `script _role ARG...`, each ARG converted by the role's types),
    else parse the command line and run `body` with the common exits: 2 without
    root, 130 on Ctrl-C/SIGTERM (the namespaces are removed by the context
    managers on the way out), 1 when a step fails."""
    if argv and argv[0] in roles:
        fn, types = roles[argv[0]]
        fn(*(t(v) for t, v in zip(types, argv[1:], strict=True)))
        return 0
    args = parse(argv)
    if os.geteuid() != 0:
        print(f"{kind}: needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return body(args)
    except KeyboardInterrupt:
        print(f"{kind}: interrupted; namespaces removed", file=sys.stderr)
        return 130
    except (ProofError, WaitFailed, OSError, control.ControlError) as e:
        print(f"{kind}: error: {e}", file=sys.stderr)
        return 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def require_tools(*names: str) -> None:
    """Fail early, with the fix, when a command-line tool is missing."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise ProofError(f"missing tools: {', '.join(missing)} (make system-deps)")


def positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    """An argparse type for a bounded positive number."""
    def parse(text: str) -> Any:
        value = kind(text)
        if not 0 < value < 1e12:
            raise ValueError(text)
        return value
    parse.__name__ = kind.__name__
    return parse


# --------------------------------------------------------------------------
# Processes and devices
# --------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    """Resident set size of `pid` in KiB (VmRSS), 0 once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    """Number of open file descriptors of `pid`."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class NetFile:
    """A /proc/net file of a namespace, opened from a thread inside it.

    /proc/thread-self/net is the calling thread's namespace; the descriptor
    keeps it, and a pread at offset 0 regenerates the contents, so the
    script reads the namespace's counters without a subprocess per sample.
    """

    def __init__(self, ns: netns.NetNS, name: str) -> None:
        self._fd = ns.call(lambda: os.open(f"/proc/thread-self/net/{name}",
                                           os.O_RDONLY | os.O_CLOEXEC))

    def text(self) -> str:
        return os.pread(self._fd, 1 << 20, 0).decode()

    def close(self) -> None:
        os.close(self._fd)


def device_tx(netdev: NetFile, ifname: str) -> tuple[int, int]:
    """(tx_packets, tx_dropped) of a TUN device: what its reader (the stack) took
    off the queue, and what the full queue dropped before the stack saw it."""
    for line in netdev.text().splitlines():
        name, sep, rest = line.partition(":")
        if sep and name.strip() == ifname:
            f = rest.split()
            return int(f[9]), int(f[11])
    raise ProofError(f"device {ifname} is gone")


def snmp(netsnmp: NetFile) -> dict[str, dict[str, int]]:
    """/proc/net/snmp as {"Tcp": {"OutSegs": n, ...}, ...}."""
    out: dict[str, dict[str, int]] = {}
    lines = netsnmp.text().splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        group, _, names = head.partition(":")
        out[group] = dict(zip(names.split(), map(int, values.split(":", 1)[1].split()),
                              strict=False))
    return out


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# --------------------------------------------------------------------------
# The daemon in its namespace
# --------------------------------------------------------------------------


@dataclass
class StackLab:
    """A namespace with `tcpstack serve` on a TUN, its control socket and logs."""

    ns: netns.NetNS
    daemon: netns.Daemon
    tun: str
    host_ip: str
    vip: str
    control_path: str
    tmp: Path

    def stats(self) -> dict[str, int]:
        """`tcpstack stats --json`, straight from the control socket."""
        result: dict[str, int] = control.request(self.control_path, "stats")
        return result

    def ss(self) -> dict[str, Any]:
        """`tcpstack ss --json`."""
        result: dict[str, Any] = control.request(self.control_path, "ss")
        return result

    def sample(self) -> dict[str, int]:
        """RSS (KiB), open fds, connections (TIME-WAIT records included) and
        connection tasks (the `ConnTasks` gauge) of the daemon, now; the last two
        -1 when the control socket does not answer in time (a daemon too busy to
        answer is a finding, not an error of the script)."""
        pid = self.daemon.pid
        # fds first: the control server closes its side of our requests a moment
        # after answering, so counting after them would sometimes see one more.
        sample = {"rss_kb": rss_kb(pid), "fds": open_fds(pid)}
        try:
            conns = len(control.request(self.control_path, "ss", timeout=5)["connections"])
            tasks = control.request(self.control_path, "stats", timeout=5)["ConnTasks"]
        except control.ControlError:
            conns = tasks = -1
        return {**sample, "conns": conns, "tasks": tasks}

    def problems(self) -> list[str]:
        """Signs that an exception escaped: a dead daemon, a traceback, InternalErrors."""
        out = []
        rc = self.daemon.proc.poll()
        if rc is not None:
            out.append(f"the daemon exited with status {rc}")
        err = self.daemon.stderr_text()
        if "Traceback" in err:
            out.append("a Traceback in the daemon's stderr: "
                       + err[err.index("Traceback"):][:1500])
        if rc is None:
            with contextlib.suppress(control.ControlError):
                if (n := self.stats().get("InternalErrors", 0)):
                    out.append(f"InternalErrors = {n}")
        return out


@contextlib.contextmanager
def stack_lab(prefix: str, *, subnet: str, options: list[str],
              txqueuelen: int | None = None) -> Iterator[StackLab]:
    """A fresh namespace with the daemon on `tcpsp0` (kernel side `<subnet>.1/24`,
    VIP `<subnet>.2`, apps echo:7 discard:9 http:80 plus `options`), forwarding
    off (the stack's answers to spoofed addresses die silently in the kernel).
    The device queue is the daemon's own unless `txqueuelen` is given."""
    tmp = Path(tempfile.mkdtemp(prefix=f"tcpstack-{prefix}-"))
    try:
        with netns.netns_scope(f"tcps-{prefix}") as ns:
            ns.sysctl(**{"net.ipv4.ip_forward": 0})
            tun, host_ip, vip = "tcpsp0", f"{subnet}.1", f"{subnet}.2"
            path = str(tmp / "control.sock")
            argv = [*netns.tcpstack_argv(), "serve", "--tun", tun,
                    "--host-addr", f"{host_ip}/24", "--addr", vip, "--control", path,
                    "--app", "echo:7", "--app", "discard:9", "--app", "http:80",
                    "--log-level", "warning", *options]
            daemon = netns.spawn_daemon(ns, argv, tun=tun, host_cidr=f"{host_ip}/24",
                                          vip=vip, stderr_path=tmp / "daemon.stderr")
            try:
                daemon.wait_ready()
                if txqueuelen is not None:
                    ns.run("ip", "link", "set", tun, "txqueuelen", str(txqueuelen))
                yield StackLab(ns, daemon, tun, host_ip, vip, path, tmp)
            finally:
                daemon.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

