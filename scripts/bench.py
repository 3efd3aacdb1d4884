#!/usr/bin/env python3
"""tcpstack benchmark: the stack against the kernel's TCP, same clients, same apps.

Run as root (`make bench`, or `.venv/bin/python scripts/bench.py --help`). Everything
happens inside two network namespaces created for the run and deleted at the end
(also on failure or Ctrl-C):

    client ns                                           server ns
    ├─ curl, ab, the echo client, the flooders          │
    ├─ tcpstack serve on TUN  (VIP 10.211.1.2)          │
    ├─ raw TUN packet loop    (10.211.3.2)              │
    └─ veth ────────────────────────────────────────────┴─ kernel TCP: the same
                                                          tcpstack.apps handlers on
                                                          asyncio.start_server (uvloop)
                                                          + raw UDP packet loop

Both servers are single-threaded Python on uvloop running the very same HTTP and
echo handlers, so the ratio isolates the TCP/IP implementation: the Python stack
over TUN versus the kernel's TCP over veth. The kernel path uses GSO/TSO on veth,
so even at MTU 1500 it moves large segments: that is part of what it is being
compared with.

Workloads: download (curl GET /bytes/N) and upload (curl POST /sha256, digest
checked) at each MTU; full connections per second (`ab -c C -n N`, no
keep-alive); echo round-trip time p50/p99 over one connection (1-byte ping-pongs,
TCP_NODELAY); and the raw Python packet ceiling: a loop with the stack's reader
structure that reads packets from a TUN and writes a pre-built reply for each,
fed by a UDP flood, against the same loop on a kernel UDP socket. The table
gives each figure for both and the ratio tcpstack/kernel (throughput and rates:
higher is better; times: lower is better): the median of `--repeat` rounds,
each of which measures every workload once on every side, so that a slow
minute of a shared machine falls on both sides of a ratio. Results are also
written as JSON to bench-results/bench-<date>.json.

Each row also says whether its ratio can be trusted: the stack's RetransSegs
(from its control socket), the kernel's TcpRetransSegs (nstat in each
namespace) and the drop counters of the TUN device (stack runs) or the veth
pair (kernel runs) are read before and after every measurement; on a local
link any retransmission or drop means a queue overflowed or a timer fired,
and the figure then measures loss recovery, not the data path. The header
gives the machine (CPU model, cores, kernel, Python), the commit and the raw
TUN loop's figure, the calibration number to compare runs on a busy machine
with. `--offload on|off|both` runs the stack once per mode (when this
checkout's `tcpstack serve` has `--offload`), `--stack-args` adds daemon
options to every stack run; see docs/benchmarks.md.

The script re-invokes itself inside the namespaces for its helper roles
(`_kernel_server`, `_echo_client`, `_tun_loop`, `_udp_loop`, `_flood`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

from tcpstack import native
from tcpstack.lab import control, netns

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()

STACK_NET = "10.211.1"   # client ns <-> tcpstack over TUN
STACK_TUN = "bt-stack"
VETH_NET = "10.211.2"    # client ns <-> server ns (kernel TCP)
RAW_NET = "10.211.3"     # client ns <-> raw TUN packet loop
HTTP_PORT, ECHO_PORT, FLOOD_PORT, FLOOD_SOURCE_PORT = 80, 7, 9, 10009
READY_TIMEOUT = 15.0
CURL_TIMEOUT = 180.0


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# ---------------------------------------------------------------------------------------------
# Helper roles (run inside a namespace by the orchestrator)
# ---------------------------------------------------------------------------------------------


def role_kernel_server(addr: str) -> None:
    """The kernel-TCP twin of `tcpstack serve`: the same app handlers on asyncio."""
    import uvloop

    from tcpstack.apps import APPS

    async def main() -> None:
        servers = [await asyncio.start_server(APPS["http"], addr, HTTP_PORT, backlog=128),
                   await asyncio.start_server(APPS["echo"], addr, ECHO_PORT, backlog=128)]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print("ready", flush=True)
        await stop.wait()
        for server in servers:
            server.close()

    uvloop.run(main())


def role_echo_client(addr: str, count: int, warmup: int) -> None:
    """`count` 1-byte ping-pongs over one connection; per-round-trip times in µs."""
    with socket.create_connection((addr, ECHO_PORT), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        samples = []
        for i in range(warmup + count):
            t0 = time.perf_counter_ns()
            s.sendall(b"x")
            if s.recv(1) != b"x":
                raise SystemExit("echo answered wrongly")
            if i >= warmup:
                samples.append((time.perf_counter_ns() - t0) / 1000)
    q = statistics.quantiles(samples, n=100, method="inclusive")
    print(json.dumps({"p50_us": statistics.median(samples), "p99_us": q[98],
                      "mean_us": statistics.fmean(samples), "n": len(samples)}))


def _packet_loop(fd: int, reply: Callable[[], None], seconds: float) -> None:
    """Read every ready packet per wake-up (as Stack.run_reader does) and answer
    each with `reply()`, for `seconds` after the first packet; print the rate."""
    import uvloop

    from tcpstack.shell.stack import READ_BATCH, READ_SIZE

    async def main() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(fd, readable.set)
        print("ready", flush=True)
        n = dropped = 0
        start = end = 0.0
        while True:
            await readable.wait()
            readable.clear()
            for _ in range(READ_BATCH):
                try:
                    os.read(fd, READ_SIZE)
                except BlockingIOError:
                    break
                if not n:
                    start = loop.time()
                    end = start + seconds
                n += 1
                try:
                    reply()
                except BlockingIOError:
                    dropped += 1
            else:
                await asyncio.sleep(0)
            if n and loop.time() >= end:
                elapsed = loop.time() - start
                return {"packets": n, "seconds": elapsed, "pps": n / elapsed,
                        "reply_drops": dropped}

    print(json.dumps(uvloop.run(main())), flush=True)


def role_tun_loop(tun: str, host_cidr: str, addr: str, seconds: float) -> None:
    """The raw ceiling of Python packet I/O on a TUN: no decoding, no TCP."""
    import dpkt

    from tcpstack.wire.tun import TunDevice

    host = IPv4Interface(host_cidr)
    dev = TunDevice(tun, host, 1500)
    icmp = dpkt.icmp.ICMP(type=dpkt.icmp.ICMP_ECHOREPLY,
                          data=dpkt.icmp.ICMP.Echo(id=0xBEEF, seq=1, data=b"x" * 32))
    reply = bytes(dpkt.ip.IP(src=socket.inet_aton(addr), dst=host.ip.packed, ttl=64,
                             p=dpkt.ip.IP_PROTO_ICMP, data=icmp))
    try:
        _packet_loop(dev.fileno(), lambda: dev.write(reply), seconds)
    finally:
        dev.close()


def role_udp_loop(addr: str, seconds: float) -> None:
    """The same loop on a kernel UDP socket: the kernel-side counterpart. Replies
    go to the flooder's fixed source port, where they queue and are dropped as
    the ICMP replies of the TUN loop are."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((addr, FLOOD_PORT))
    sock.connect((f"{VETH_NET}.1", FLOOD_SOURCE_PORT))
    sock.setblocking(False)
    payload = b"x" * 32
    # os.read on a UDP socket reads one datagram, as on a TUN.
    _packet_loop(sock.fileno(), lambda: sock.send(payload), seconds)


def role_flood(addr: str, seconds: float) -> None:
    """Send small UDP datagrams to addr:FLOOD_PORT as fast as possible."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", FLOOD_SOURCE_PORT))
        s.connect((addr, FLOOD_PORT))
        s.setblocking(False)
        payload = b"f" * 32
        sent = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(256):
                try:
                    s.send(payload)
                    sent += 1
                except OSError:
                    pass  # queue full, an ICMP error, the loop's TUN already gone
    print(json.dumps({"sent": sent}), flush=True)


ROLES: dict[str, Callable[..., None]] = {
    "_kernel_server": role_kernel_server,
    "_echo_client": role_echo_client,
    "_tun_loop": role_tun_loop,
    "_udp_loop": role_udp_loop,
    "_flood": role_flood,
}


# ---------------------------------------------------------------------------------------------
# Namespaces and processes
# ---------------------------------------------------------------------------------------------


class BenchError(netns.LabError):
    """A step failed; the message says which and why."""


class Lab:
    """The two namespaces joined by a veth pair, and every process started in them."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[netns.BackgroundProcess] = []
        self._namespaces = contextlib.ExitStack()

    def __enter__(self) -> Lab:
        try:
            self.client = self._namespaces.enter_context(netns.netns_scope("tcps-bench-c"))
            self.server = self._namespaces.enter_context(netns.netns_scope("tcps-bench-s"))
            sh("ip", "link", "add", "bv-c", "netns", self.client.name, "type", "veth",
               "peer", "name", "bv-s", "netns", self.server.name)
            for ns, dev, host in ((self.client, "bv-c", 1), (self.server, "bv-s", 2)):
                self.run(ns, "ip", "addr", "add", f"{VETH_NET}.{host}/24", "dev", dev)
                self.run(ns, "ip", "link", "set", dev, "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        self._namespaces.close()

    def run(self, ns: netns.NetNS, *argv: str, timeout: float = 60) -> str:
        return ns.run(*argv, timeout=timeout).stdout

    def start(self, ns: netns.NetNS, *argv: str) -> netns.BackgroundProcess:
        proc = netns.BackgroundProcess(ns.popen(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True))
        self.procs.append(proc)
        return proc

    def role(self, ns: netns.NetNS, role: str, *args: object) -> netns.BackgroundProcess:
        return self.start(ns, sys.executable, str(SCRIPT), role, *map(str, args))

    def finish(self, proc: netns.BackgroundProcess) -> None:
        stop(proc)
        self.procs.remove(proc)

    @contextlib.contextmanager
    def stack(self, mtu: int, options: Sequence[str] = ()) -> Iterator[Target]:
        """`tcpstack serve` at `mtu` (plus `options`) in the client namespace."""
        vip, control_path = f"{STACK_NET}.2", str(self.log_dir / "stack.sock")
        proc = self.start(self.client, *stack_argv(
            "serve", "--tun", STACK_TUN, "--host-addr", f"{STACK_NET}.1/24", "--addr", vip,
            "--mtu", str(mtu), "--app", f"http:{HTTP_PORT}", "--app", f"echo:{ECHO_PORT}",
            "--control", control_path, "--log-level", "warning", *options))

        def counters() -> dict[str, int]:
            return {"stack_retrans": stack_stats(control_path)["RetransSegs"],
                    **self.kernel_retrans(self.client),
                    **self.drops(self.client, STACK_TUN)}

        try:
            proc.wait_for_line("tcpstack ready:", READY_TIMEOUT)
            yield Target(vip, proc.pid, counters, control_path)
        finally:
            self.finish(proc)

    @contextlib.contextmanager
    def kernel(self, mtu: int) -> Iterator[Target]:
        """The kernel-TCP server across the veth at `mtu`."""
        for ns, dev in ((self.client, "bv-c"), (self.server, "bv-s")):
            self.run(ns, "ip", "link", "set", dev, "mtu", str(mtu))
        addr = f"{VETH_NET}.2"
        proc = self.role(self.server, "_kernel_server", addr)

        def counters() -> dict[str, int]:
            client, server = self.drops(self.client, "bv-c"), self.drops(self.server, "bv-s")
            return {**self.kernel_retrans(self.client, self.server),
                    **{k: client[k] + server[k] for k in client}}

        try:
            proc.wait_for_line("ready", READY_TIMEOUT)
            yield Target(addr, proc.pid, counters)
        finally:
            self.finish(proc)

    def kernel_retrans(self, *namespaces: str) -> dict[str, int]:
        """The kernel's TcpRetransSegs, and how many retransmitted segments its
        peers reported as duplicates with a D-SACK (RFC 2883: TCPDSACKRecvSegs),
        i.e. spurious, summed over `namespaces` (nstat -a: absolute, -s: leaving
        nstat's history file alone, -z: zeros too)."""
        total = dict.fromkeys(KERNEL_RETRANS.values(), 0)
        for ns in namespaces:
            out = self.run(ns, "nstat", "-asz", *KERNEL_RETRANS)
            for name, key in KERNEL_RETRANS.items():
                found = re.search(rf"^{name}\s+(\d+)", out, re.MULTILINE)
                if found is None:
                    raise BenchError(f"nstat in {ns.name}: no {name} in {out!r}")
                total[key] += int(found.group(1))
        return total

    def drops(self, ns: str, dev: str) -> dict[str, int]:
        """A device's drop counters: tx is what the kernel sent towards the device's
        far end (for the TUN: the stack) and lost because the queue was full."""
        stats = json.loads(self.run(ns, "ip", "-j", "-s", "link", "show", "dev", dev))[0]
        return {"tx_drops": stats["stats64"]["tx"]["dropped"],
                "rx_drops": stats["stats64"]["rx"]["dropped"]}


def stop(proc: netns.BackgroundProcess) -> None:
    """SIGTERM by pid, SIGKILL if it lingers; only ever our own child."""
    netns.stop_process(proc.proc, signal.SIGTERM, 10)


def result(proc: netns.BackgroundProcess, timeout: float) -> dict[str, Any]:
    """The JSON line a helper role prints last."""
    return json.loads(proc.wait_for_line("{", timeout))


@dataclass
class Target:
    """A server under test: its address, its pid (for the profiler) and how to
    read the counters that say whether a figure measured against it is clean."""

    addr: str
    pid: int
    counters: Callable[[], dict[str, int]]
    control: str | None = None  # the stack's control socket (`tcpstack stats`)


def stack_stats(path: str) -> dict[str, int]:
    """`tcpstack stats --json` of the daemon at control socket `path`."""
    try:
        stats: dict[str, int] = control.request(path, "stats")
    except control.ControlError as e:
        raise BenchError(f"tcpstack stats: {e}") from None
    return stats


def stack_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "tcpstack", *args]


def offload_supported() -> bool:
    """Whether this checkout's `tcpstack serve` has `--offload` (issue 9 adds it)."""
    out = subprocess.run(stack_argv("serve", "--help"), capture_output=True, text=True,
                         timeout=60, cwd=REPO).stdout
    return "--offload" in out


def sh(*argv: str, timeout: float = 60) -> str:
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if cp.returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` failed ({cp.returncode}): "
                         f"{(cp.stderr or cp.stdout).strip()[-1500:]}")
    return cp.stdout


# ---------------------------------------------------------------------------------------------
# Workloads (run from the client namespace)
# ---------------------------------------------------------------------------------------------


def download(lab: Lab, addr: str, size: int) -> float:
    """MB/s of one curl GET /bytes/size (body length checked)."""
    out = lab.run(lab.client, "curl", "-sS", "-f", "--max-time", str(CURL_TIMEOUT),
                  "-o", "/dev/null", "-w", "%{size_download} %{time_total}",
                  f"http://{addr}/bytes/{size}", timeout=CURL_TIMEOUT + 10)
    got, seconds = out.split()
    if int(got) != size:
        raise BenchError(f"download from {addr}: {got} bytes instead of {size}")
    return size / float(seconds) / 1e6


def download_counted(lab: Lab, target: Target, size: int) -> dict[str, float]:
    """One download's MB/s (`median`, as one round's figure) and, from the
    stack, the TCP segments it moved per second, in and out (`pps`): data and
    ACKs, the stack's packet rate that `packet_rates` sets beside the raw loop's."""
    if target.control is None:
        return {"median": download(lab, target.addr, size)}
    before = stack_stats(target.control)
    rate = download(lab, target.addr, size)
    after = stack_stats(target.control)
    segments = sum(after[k] - before[k] for k in ("InSegs", "OutSegs"))
    return {"median": rate, "pps": segments * rate * 1e6 / size}


def upload(lab: Lab, addr: str, body: Path, digest: str) -> float:
    """MB/s of one curl POST /sha256 (the server's digest checked)."""
    out = lab.run(lab.client, "curl", "-sS", "-f", "--max-time", str(CURL_TIMEOUT),
                  "-H", "Expect:", "--data-binary", f"@{body}", "-w", "\n%{time_total}",
                  f"http://{addr}/sha256", timeout=CURL_TIMEOUT + 10)
    answer, seconds = out.split()  # the digest line, then curl's time
    if answer.strip() != digest:
        raise BenchError(f"upload to {addr}: digest {answer!r} instead of {digest}")
    return body.stat().st_size / float(seconds) / 1e6


def connections_per_second(lab: Lab, addr: str, n: int, concurrency: int) -> dict[str, float]:
    """`ab` without keep-alive: every request a full connection."""
    out = lab.run(lab.client, "ab", "-q", "-s", "30", "-n", str(n), "-c", str(concurrency),
                  f"http://{addr}/", timeout=300)
    rate = re.search(r"Requests per second:\s+([\d.]+)", out)
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    if rate is None or failed is None:
        raise BenchError(f"ab against {addr}: unexpected output {out[-800:]!r}")
    return {"rate": float(rate.group(1)), "failed": int(failed.group(1))}


def echo_rtt(lab: Lab, addr: str, pings: int) -> dict[str, float]:
    proc = lab.role(lab.client, "_echo_client", addr, pings, min(200, pings))
    try:
        return result(proc, 120)
    finally:
        lab.finish(proc)


def packet_loop(lab: Lab, kind: str, seconds: float) -> dict[str, float]:
    """Packets/s of the raw read-and-reply loop: on a TUN ("stack") or a UDP socket."""
    if kind == "stack":
        loop = lab.role(lab.client, "_tun_loop", "bt-raw", f"{RAW_NET}.1/24", f"{RAW_NET}.2",
                        seconds)
        target = f"{RAW_NET}.2"
    else:
        loop = lab.role(lab.server, "_udp_loop", f"{VETH_NET}.2", seconds)
        target = f"{VETH_NET}.2"
    flood = None
    try:
        loop.wait_for_line("ready", READY_TIMEOUT)
        flood = lab.role(lab.client, "_flood", target, seconds + 2)
        figures = result(loop, seconds + 20)
        figures["sent"] = result(flood, 30)["sent"]
        return figures
    finally:
        for proc in (loop, flood):
            if proc is not None:
                lab.finish(proc)


# ---------------------------------------------------------------------------------------------
# Orchestration and report
# ---------------------------------------------------------------------------------------------


#: The counters read before and after each measurement, and what a non-zero delta means.
COUNTERS = {"stack_retrans": "stack RetransSegs", "kernel_retrans": "kernel TcpRetransSegs",
            "tx_drops": "device tx_dropped", "rx_drops": "device rx_dropped"}
#: The kernel's counters (nstat) behind "kernel_retrans" and "kernel_spurious".
KERNEL_RETRANS = {"TcpRetransSegs": "kernel_retrans", "TcpExtTCPDSACKRecvSegs": "kernel_spurious"}


@dataclass
class Row:
    """One line of the table: a figure of the stack (run as `variant`) beside the
    kernel's, and what the counters said during each of the two runs."""

    metric: str
    unit: str
    variant: str
    tcpstack: float | None
    kernel: float | None
    higher_is_better: bool = True
    #: The raw packet loop: a machine figure, not a comparison of TCPs, and its
    #: flood overruns the queues on purpose, so drops say nothing about it.
    calibration: bool = False
    #: Counter deltas over each side's run ("stack", "kernel"); None: not read.
    counters: dict[str, dict[str, int] | None] = field(default_factory=dict)
    failed: int = 0  # requests that failed, both runs together (ab)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.tcpstack is None or not self.kernel:
            return None
        return self.tcpstack / self.kernel

    def doubts(self) -> list[str]:
        """Why this ratio may not compare the two TCP implementations. A local link
        loses nothing, so any retransmission or device drop in either run means
        a queue overflowed or a timer fired: the figure then measures recovery
        (an RTO is 200 ms or more), not the data path."""
        if self.calibration:
            return []
        out = [] if self.ratio is not None else ["no ratio: a run failed"]
        for side in ("stack", "kernel"):
            counters = self.counters.get(side)
            if counters is None:
                out.append(f"{side} run: counters not read")
                continue
            # A retransmission its receiver reported as a duplicate (D-SACK) was
            # spurious: the kernel's veth reorders under load, the sender's fast
            # retransmit was undone, nothing was lost or waited for.
            spurious = counters.get("kernel_spurious", 0)
            for k, n in counters.items():
                if k == "kernel_spurious":
                    continue
                if k == "kernel_retrans" and spurious:
                    if n > spurious:
                        out.append(f"{side} run: {COUNTERS[k]} +{n:,} ({spurious:,} of them "
                                   "D-SACKed as spurious)")
                elif n:
                    out.append(f"{side} run: {COUNTERS[k]} +{n:,}")
        if self.failed:
            out.append(f"{self.failed:,} failed requests")
        return out

    @property
    def trust(self) -> str:
        """The table's verdict: "calib" for the calibration row, else yes/NO."""
        return "calib" if self.calibration else "NO" if self.doubts() else "yes"


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One measurement's rounds as one result: the median of each figure (the
    throughput's rounds also as `samples`), failed requests and counter deltas
    summed; the rounds themselves under `rounds`."""
    out: dict[str, Any] = {"rounds": rounds}
    for name, first in rounds[0].items():
        values = [r[name] for r in rounds if name in r]
        if name == "counters":
            out[name] = {k: sum(c.get(k, 0) for c in values) for k in first}
        elif name in ("failed", "n"):
            out[name] = sum(values)
        elif isinstance(first, int | float):
            out[name] = statistics.median(values)
    if "median" in out:
        out["samples"] = [r["median"] for r in rounds]
    return out


def measure(label: str, target: Target | None, fn: Callable[[], dict[str, Any]],
            errors: list[str]) -> dict[str, Any] | None:
    """Run one measurement and add the target's counter deltas over it
    (`counters`); a failure is recorded and reported, not fatal."""
    print(f"  {label} ...", file=sys.stderr, flush=True)
    try:
        before = target.counters() if target else {}
        result = fn()
        if target:
            after = target.counters()
            result["counters"] = {k: after[k] - before[k] for k in after}
        return result
    except (netns.LabError, subprocess.TimeoutExpired, ValueError) as e:
        errors.append(f"{label}: {e}")
        print(f"  {label} FAILED: {e}", file=sys.stderr, flush=True)
        return None


def make_body(path: Path, size: int) -> str:
    """Write `size` random bytes to `path` for the uploads; their SHA-256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


Variant = tuple[str, list[str]]  # a label for the table, `tcpstack serve` options


def variants(offload: str, supported: bool, extra: list[str]) -> tuple[list[Variant], str]:
    """The stack configurations to run (`--offload on|off|both|default`, plus the
    `--stack-args` options for every run) and a line for the header saying
    what was run and, when the daemon lacks `--offload`, why not that."""
    modes = {"both": ["on", "off"], "on": ["on"], "off": ["off"], "default": []}[offload]
    note = f"; every run with {' '.join(extra)}" if extra else ""
    if modes and not supported:
        return [("default", extra)], ("tcpstack serve has no --offload option at this "
                                      "commit: default rows only" + note)
    if not modes:
        return [("default", extra)], "tcpstack serve with its defaults" + note
    return ([(f"offload {m}", ["--offload", m, *extra]) for m in modes],
            f"tcpstack serve --offload {'|'.join(modes)}" + note)


def run_bench(args: argparse.Namespace, stack_variants: list[Variant],
              log_dir: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every workload against every stack variant and the kernel, in `--repeat`
    rounds, then the raw packet loops; the median of the rounds by side and
    workload, and the errors.

    A round measures every side once, so the rounds interleave the sides: this
    shared machine has slow minutes, and one falls on both sides of a ratio
    instead of on the one side that happened to run then."""
    errors: list[str] = []
    body = log_dir / "upload.bin"
    digest = make_body(body, args.size)
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {}

    with Lab(log_dir) as lab:
        sides: list[tuple[str, Callable[[int], contextlib.AbstractContextManager[Target]]]] = [
            (label, functools.partial(lab.stack, options=options))
            for label, options in stack_variants]
        sides.append(("kernel", lab.kernel))
        for n in range(1, args.repeat + 1):
            for side, server in sides:
                got = rounds.setdefault(side, {})
                for mtu in args.mtu:
                    print(f"round {n}/{args.repeat}, {side}, MTU {mtu}:", file=sys.stderr,
                          flush=True)
                    first = mtu == args.mtu[0]
                    with server(mtu) as t:
                        for key, label, fn in (
                            ("echo", "echo rtt", lambda t=t: echo_rtt(lab, t.addr, args.pings)),
                            (f"down{mtu}", "download",
                             lambda t=t: download_counted(lab, t, args.size)),
                            (f"up{mtu}", "upload",
                             lambda t=t: {"median": upload(lab, t.addr, body, digest)}),
                            ("ab", "connections/s", lambda t=t: connections_per_second(
                                lab, t.addr, args.conns, args.concurrency)),
                        ):
                            if key in ("echo", "ab") and not first:
                                continue  # RTT and connections/s at the first MTU only
                            result = measure(label, t, fn, errors)
                            if result is not None:
                                got.setdefault(key, []).append(result)
        raw = {side: measure(f"raw packet loop ({side})", None, lambda s=side:
                             packet_loop(lab, s, args.raw_seconds), errors)
               for side in ("stack", "kernel")}
    results: dict[str, dict[str, Any]] = {
        side: {key: combine(runs) for key, runs in got.items()} for side, got in rounds.items()}
    results["raw"] = raw
    return results, errors


def build_rows(args: argparse.Namespace, labels: list[str],
               results: dict[str, dict[str, Any]]) -> list[Row]:
    """The table: each workload for each stack variant beside the kernel's figure,
    then the calibration row."""
    k = results["kernel"]

    def row(metric: str, unit: str, variant: str, key: str, value: str,
            **kw: Any) -> Row:
        stack, kernel = results[variant].get(key) or {}, k.get(key) or {}
        return Row(metric, unit, variant, stack.get(value), kernel.get(value),
                   counters={"stack": stack.get("counters"), "kernel": kernel.get("counters")},
                   failed=stack.get("failed", 0) + kernel.get("failed", 0),
                   notes={"stack": stack or None, "kernel": kernel or None}, **kw)

    rows: list[Row] = []
    for v in labels:
        for mtu in args.mtu:
            rows.append(row(f"download MTU {mtu} (median of {args.repeat})", "MB/s", v,
                            f"down{mtu}", "median"))
            rows.append(row(f"upload MTU {mtu} (median of {args.repeat})", "MB/s", v,
                            f"up{mtu}", "median"))
        rows.append(row(f"connections/s (ab -c {args.concurrency}, median of {args.repeat})",
                        "conn/s", v, "ab", "rate"))
        for pct in ("p50", "p99"):
            rows.append(row(f"echo RTT {pct} (MTU {args.mtu[0]}, median of {args.repeat})",
                            "us", v, "echo", f"{pct}_us", higher_is_better=False))
    raw = results["raw"]
    rows.append(Row("raw packet loop (TUN vs UDP socket)", "pkt/s", "-",
                    (raw["stack"] or {}).get("pps"), (raw["kernel"] or {}).get("pps"),
                    calibration=True, notes=raw))
    return rows


def packet_rates(args: argparse.Namespace, labels: list[str],
                 results: dict[str, dict[str, Any]]) -> list[str]:
    """A line per stack variant: the TCP segments per second (data and ACKs, in
    and out) it moved in the download at the first MTU, and that as a share of
    the raw TUN loop's packets/s, the ceiling of Python packet I/O here."""
    raw = (results["raw"].get("stack") or {}).get("pps")
    mtu = args.mtu[0]
    lines = []
    for label in labels:
        pps = (results[label].get(f"down{mtu}") or {}).get("pps")
        if pps is not None and raw:
            lines.append(f"packets/s, download MTU {mtu} [{label}]: {pps:,.0f} TCP segments "
                         f"in+out, {pps / raw:.0%} of the raw TUN loop's {raw:,.0f}")
    return lines


def render(rows: list[Row]) -> str:
    """The table, then one line per row whose ratio is not to be trusted, saying why."""
    def num(v: float | None, digits: int = 1) -> str:
        return "-" if v is None else f"{v:,.{digits}f}"

    def pair(c: dict[str, int] | None, a: str, b: str) -> str:
        return "-" if c is None else f"{c.get(a, 0)}/{c.get(b, 0)}"

    head = (f"{'metric':<44} {'stack':<11} {'unit':>6} {'tcpstack':>10} {'kernel':>10} "
            f"{'ratio':>8} {'trust':>5} | {'stack rtx/peer':>14} {'TUN drop tx/rx':>14} | "
            f"{'kernel rtx/spur':>15} {'veth drop':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        s, k = r.counters.get("stack"), r.counters.get("kernel")
        lines.append(
            f"{r.metric:<44} {r.variant:<11} {r.unit:>6} {num(r.tcpstack):>10} "
            f"{num(r.kernel):>10} {num(r.ratio, 3):>8} {r.trust:>5} | "
            f"{pair(s, 'stack_retrans', 'kernel_retrans'):>14} "
            f"{pair(s, 'tx_drops', 'rx_drops'):>14} | "
            f"{pair(k, 'kernel_retrans', 'kernel_spurious'):>15} "
            f"{pair(k, 'tx_drops', 'rx_drops'):>9}")
    lines.append("ratio = tcpstack/kernel: higher is better, except for the echo RTT rows "
                 "(lower is better); trust: yes = no retransmission (but those D-SACKed as "
                 "spurious: spur), device drop or failure in either run.")
    for r in rows:
        if doubts := r.doubts():
            lines.append(f"  NO: {r.metric} [{r.variant}]: {'; '.join(doubts)}")
    return "\n".join(lines)


def header(args: argparse.Namespace, stacks: str, raw: dict[str, Any],
           m: dict[str, Any]) -> list[str]:
    """Where and what was measured: the date, the machine `m`, the commit, the
    stack's options, and the calibration figure (the raw TUN loop) that tells how
    fast this machine moves packets through Python at the moment."""
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                            capture_output=True, text=True, timeout=30).stdout.strip()
    tun, udp = ((raw.get(side) or {}).get("pps") for side in ("stack", "kernel"))
    return [f"tcpstack bench, {datetime.now():%Y-%m-%d %H:%M}, commit {commit or '?'}",
            f"machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, "
            f"Python {m['python']}",
            f"calibration: raw TUN packet loop {'-' if tun is None else f'{tun:,.0f}'} pkt/s "
            f"(the same loop on a UDP socket {'-' if udp is None else f'{udp:,.0f}'} pkt/s)",
            f"stack: {stacks}, {native.describe()}",
            f"sizes: {args.size:,} bytes x {args.repeat}, ab -n {args.conns} "
            f"-c {args.concurrency}, {args.pings} pings, MTU {','.join(map(str, args.mtu))}",
            ""]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark tcpstack against the kernel's TCP (root; own namespaces). "
        "Defaults come from BENCH_* environment variables when set.")
    p.add_argument("--size", type=int, default=env_int("BENCH_SIZE", 50_000_000),
                   help="bytes per download/upload (BENCH_SIZE, default 50000000)")
    p.add_argument("--repeat", type=int, default=env_int("BENCH_REPEAT", 3),
                   help="rounds: each measures every workload on every side once, and "
                   "the median of the rounds is reported (BENCH_REPEAT, default 3)")
    p.add_argument("--conns", type=int, default=env_int("BENCH_CONNS", 5000),
                   help="ab requests, one connection each (BENCH_CONNS, default 5000)")
    p.add_argument("--concurrency", type=int, default=env_int("BENCH_CONCURRENCY", 64),
                   help="ab concurrency (BENCH_CONCURRENCY, default 64)")
    p.add_argument("--pings", type=int, default=env_int("BENCH_PINGS", 5000),
                   help="echo round trips (BENCH_PINGS, default 5000)")
    p.add_argument("--raw-seconds", type=float,
                   default=float(os.environ.get("BENCH_RAW_SECONDS", 3)),
                   help="duration of each raw packet loop (BENCH_RAW_SECONDS, default 3)")
    p.add_argument("--mtu", type=int, action="append",
                   help="MTU for the throughput runs, repeatable (BENCH_MTUS, default "
                   "1500,65535); RTT and connections/s use the first")
    p.add_argument("--offload", choices=("on", "off", "both", "default"),
                   default=os.environ.get("BENCH_OFFLOAD", "both"),
                   help="run the stack with --offload on, off, both (two sets of rows) or "
                   "its defaults (BENCH_OFFLOAD, default both; a daemon without --offload "
                   "runs its defaults, and the header says so)")
    p.add_argument("--stack-args", default=os.environ.get("BENCH_STACK_ARGS", ""),
                   metavar="'OPTIONS'",
                   help="more `tcpstack serve` options for every stack run, one shell-quoted "
                   "string, e.g. '--txqueuelen 500' (BENCH_STACK_ARGS)")
    p.add_argument("--out", type=Path, default=REPO / "bench-results",
                   help="directory for the JSON result (default bench-results/)")
    args = p.parse_args(argv)
    if not args.mtu:
        args.mtu = [int(m) for m in os.environ.get("BENCH_MTUS", "1500,65535").split(",")]
    for name in ("size", "repeat", "conns", "concurrency", "pings"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if not all(68 <= m <= 65535 for m in args.mtu):
        p.error("--mtu must be within 68..65535")
    try:
        args.stack_args = shlex.split(args.stack_args)
    except ValueError as e:
        p.error(f"--stack-args: {e}")
    return args


def main(argv: list[str]) -> int:
    if argv and argv[0] in ROLES:
        ROLES[argv[0]](*_role_args(argv[0], argv[1:]))
        return 0
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    missing = [t for t in ("ip", "curl", "ab", "nstat") if shutil.which(t) is None]
    if missing:
        print(f"bench: missing tools: {', '.join(missing)} (make system-deps)", file=sys.stderr)
        return 2
    stack_variants, stacks = variants(args.offload, offload_supported(), args.stack_args)
    print(f"bench: {stacks}", file=sys.stderr, flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tcpstack-bench-") as tmp:
        # SIGTERM becomes KeyboardInterrupt, so the namespaces are deleted either way.
        signal.signal(signal.SIGTERM, raise_interrupt)
        try:
            results, errors = run_bench(args, stack_variants, Path(tmp))
        except KeyboardInterrupt:
            print("bench: interrupted; namespaces removed", file=sys.stderr)
            return 130
        except netns.LabError as e:
            print(f"bench: {e}", file=sys.stderr)
            return 1
    elapsed = time.monotonic() - started
    rows = build_rows(args, [label for label, _ in stack_variants], results)
    from proofkit import machine  # here: it costs the helper roles 0.3 s to import

    host = machine()
    head = header(args, stacks, results["raw"], host)
    rates = packet_rates(args, [label for label, _ in stack_variants], results)
    print("\n".join([*head, render(rows), *rates]))
    for e in errors:
        print(f"error: {e}")
    args.out.mkdir(parents=True, exist_ok=True)
    now = datetime.now()
    path = args.out / f"bench-{now:%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps({
        "date": now.isoformat(timespec="seconds"),
        "seconds": round(elapsed, 1),
        "header": head[:-1],
        "host": host,
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "stacks": stacks,
        "results": [{**asdict(r), "ratio": r.ratio, "trust": r.trust, "doubts": r.doubts()}
                    for r in rows],
        "packet_rates": rates,
        "errors": errors,
    }, indent=2) + "\n")
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    print(f"({elapsed:.0f} s; JSON in {shown})")
    return 1 if errors else 0


def raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _role_args(role: str, raw: list[str]) -> list[Any]:
    """Positional arguments of a helper role, converted by the role's annotations."""
    import inspect

    params = list(inspect.signature(ROLES[role]).parameters.values())
    convert = {"int": int, "float": float, "str": str}
    return [convert[str(p.annotation)](v) for p, v in zip(params, raw, strict=True)]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
