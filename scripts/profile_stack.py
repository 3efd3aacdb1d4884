#!/usr/bin/env python3
"""`make profile WORKLOAD=get|post|conn|rtt`: where the daemon's CPU time goes.

Run as root. The lab is `make bench`'s (scripts/bench.py: the same namespaces,
the same `tcpstack serve`, the same clients), with one stack and no kernel
server: py-spy attaches to the daemon's pid and samples it for `--seconds`
while the chosen workload runs over and over against it:

    get   curl GET /bytes/SIZE        (the stack sends: data out, ACKs in)
    post  curl POST /sha256 of SIZE   (the stack receives: data in, ACKs out)
    conn  ab -c C -n N, no keep-alive (handshake, one request, close, TIME-WAIT)
    rtt   1-byte echo ping-pongs over one connection (the per-segment latency path)

py-spy samples only while the daemon runs (time asleep in epoll is not
counted), so the samples are its CPU time. It unwinds the native stack too
(`--native`): the compiled core's functions (tcpstack.native: mypyc's C, named
`CPyDef_<module>___<function>`) are shown as `module.function (compiled)`, the
C helpers they and the interpreter call (reference counts, dict lookups) count
to the function that called them, and the TUN's system calls are the libc
`read` and `write` they end in. The samples are written once, as collapsed stacks
(`--format raw --function`: one line per distinct stack, frames per
function), and everything else is derived from that file here: the flame graph
(SVG; hover for the counts), and the text summary: own time by part of the
stack (codec, TCB, the asyncio shell of tasks and streams, the event loop, the
apps), the same per segment (CPU µs per segment the daemon received or sent,
from `tcpstack stats`, and the daemon's CPU time from /proc/<pid>/stat), and
the top functions by own and by total time. py-spy counts a thread that is
runnable but waiting for a CPU as running: on a busy machine the summary says
how much of the samples were such waits (compare with the CPU time), and
`--gil` keeps only the samples holding the GIL (Python's own work).
Files: bench-results/profile-<workload>-<date>.{svg,txt,folded}.

The file is not called profile.py: run as a script, its folder comes first
on sys.path, and it would shadow the standard library's `profile` module.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path

import bench

from tcpstack import native

Stacks = Counter[tuple[str, ...]]  # root-first frames -> samples

#: Native unwinding stops the daemon for each sample, which a compiled daemon
#: (all of whose packet path is native frames) pays most for.
NATIVE_NOTE = ("note: py-spy pauses the daemon to read each sample's native stack: the "
               "workload's figures under the profiler are lower than make bench's")

#: Parts of the stack, by the file of the Python function that was running (first
#: match wins); new modules of tcpstack fall into "shell" until they are named here.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("codec", ("tcpstack/wire/codec.py", "tcpstack/wire/vnet.py", "tcpstack/core/segment.py",
               "dpkt/")),
    ("TCB", ("tcpstack/core/",)),  # the sans-I/O core, but segment.py (above)
    ("apps", ("tcpstack/apps/",)),
    ("shell", ("tcpstack/",)),
    ("enum", ("enum.py",)),
    ("event loop", ("asyncio/", "uvloop/")),
)
#: A compiled function's frame, `CPyDef_<module>___<name> (__native_<hash>.c:<line>)`
#: (or `CPyPy_`, its Python-callable wrapper): the module's last name, then the rest.
_COMPILED = re.compile(r"^CPy(?:Def|Py)_(?P<module>[a-z_]+?)___(?P<name>\w+)$")
#: The compiled modules by their last name (mypyc's C names carry no package).
COMPILED_PARTS = {"codec": "codec", "vnet": "codec", "segment": "codec",
                  **{m.stem: "TCB" for m in (bench.REPO / "tcpstack/core").rglob("*.py")
                     if m.stem not in ("__init__", "segment")},
                  "connection": "shell", "stack": "shell", "stream": "shell",
                  "looptimer": "shell"}
#: Native frames of a part of their own: the TUN's system calls (the only reads
#: and writes the daemon makes per packet) and the event loop's C (uvloop,
#: libuv, the C half of asyncio).
NATIVE_PARTS = {("write", "libc.so.6"): "TUN write", ("os_write", ""): "TUN write",
                ("read", "libc.so.6"): "TUN read", ("os_read", ""): "TUN read",
                ("", "loop.c"): "event loop", ("", "_asynciomodule.c"): "event loop",
                ("uv_run", ""): "event loop", ("uv__io_poll", ""): "event loop",
                ("epoll_wait", ""): "event loop"}
PART_NOTES = {
    "codec": "decode/encode, checksums (codec.py, segment.py, dpkt)",
    "TCB": "RFC 9293 state machine, buffers, timers, congestion control",
    "TUN write": "the write system call (with the kernel's TCP receiving what it carries)",
    "TUN read": "the read system call (a packet the kernel queued)",
    "shell": "TUN reader, dispatch, connection turns, streams, listener",
    "enum": "IntFlag/Enum arithmetic (segment flags, states) in enum.py",
    "event loop": "asyncio/uvloop: callbacks, task steps, futures, queues",
    "apps": "the HTTP and echo handlers (hashing included)",
    "other": "everything else (standard library, start-up)",
}
COLORS = {"codec": "#e8a33d", "TCB": "#d9534f", "TUN write": "#45b5aa", "TUN read": "#76d7c4",
          "shell": "#5b9bd5",
          "enum": "#f1c232", "event loop": "#8e7cc3", "apps": "#6aa84f", "other": "#b0b0b0"}
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


# ---------------------------------------------------------------------------------------------
# Aggregation of py-spy's collapsed stacks (pure: tested in tests/unit/test_profile_stack.py)
# ---------------------------------------------------------------------------------------------


def parse_collapsed(text: str) -> Stacks:
    """py-spy's raw format ("frame;frame;frame COUNT" per line, root first)."""
    stacks: Stacks = Counter()
    for line in text.splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks[tuple(frames.split(";"))] += int(count)
    return stacks


def frame_parts(frame: str) -> tuple[str, str]:
    """("function", "file") of "function (file:line)"; a frame of another shape is
    all function."""
    m = _FRAME.match(frame)
    return (m["func"], m["file"]) if m else (frame, "")


def part(frame: str) -> str | None:
    """Which part of the stack a frame belongs to: PARTS for Python frames,
    COMPILED_PARTS and NATIVE_PARTS for native ones; "other" for the rest of
    Python, None for a native helper, which belongs to its caller's part."""
    func, file = frame_parts(frame)
    if file.endswith(".py") or file.startswith("<"):
        path = "/" + file
        for name, prefixes in PARTS:
            if any(f"/{prefix}" in path for prefix in prefixes):
                return name
        return "other"
    compiled = _COMPILED.match(func)
    if compiled:
        return COMPILED_PARTS.get(compiled["module"], "shell")
    return (NATIVE_PARTS.get((func, file)) or NATIVE_PARTS.get((func, ""))
            or NATIVE_PARTS.get(("", file)))


def owner(frames: tuple[str, ...]) -> tuple[str, str]:
    """The frame a sample's time belongs to and its part: the innermost frame of a
    part (a native helper's time is its caller's); "other" if none has one."""
    for frame in reversed(frames):
        name = part(frame)
        if name is not None:
            return frame, name
    return frames[-1], "other"


def short(frame: str) -> str:
    """ "function (file)": the line number says nothing once aggregated by function.
    A compiled function reads as its Python name, `module.Class.method (compiled)`."""
    func, file = frame_parts(frame)
    compiled = _COMPILED.match(func)
    if compiled:
        return f"{compiled['module']}.{compiled['name'].replace('___', '.')} (compiled)"
    return f"{func} ({file})" if file else func


def own_time(stacks: Stacks) -> Counter[str]:
    """Samples in which each function itself was running (`owner`: the leaf frame,
    or the function that called the native helper at the leaf)."""
    own: Counter[str] = Counter()
    for frames, n in stacks.items():
        own[short(owner(frames)[0])] += n
    return own


def total_time(stacks: Stacks) -> Counter[str]:
    """Samples in which each function was on the stack (once per sample, also when
    it recursed), without the trunk: functions on every sample (the interpreter's
    start-up, `main`, the event loop's run) say nothing about where time goes."""
    total: Counter[str] = Counter()
    for frames, n in stacks.items():
        for name in {short(f) for f in frames}:
            total[name] += n
    samples = sum(stacks.values())
    return Counter({name: c for name, c in total.items() if c < samples})


def part_time(stacks: Stacks) -> Counter[str]:
    """Own time summed by part of the stack."""
    parts: Counter[str] = Counter()
    for frames, n in stacks.items():
        parts[owner(frames)[1]] += n
    return parts


def cpu_note(sampled: float, cpu: float) -> list[str]:
    """A warning when py-spy counted much more running time than the daemon used:
    it counts a thread that is runnable but waiting for a CPU as running, and on
    a busy machine the daemon waits most right after it woke another process
    (a TUN write that wakes curl, epoll returning)."""
    if sampled <= 1.2 * cpu:
        return []
    return [f"note: {sampled - cpu:.1f} s of the samples are waits, not CPU (a busy "
            "machine: runnable, not running), mostly where the daemon wakes another "
            "process: read 'TUN write' and 'event loop' as upper bounds, or run with --gil"]


def summary(stacks: Stacks, head: Iterable[str], *, us_per_segment: float | None,
            top: int) -> str:
    """The text report: `head`, own time by part, with its share of the daemon's
    CPU time per segment when that is known, and the `top` functions by own and
    by total time."""
    n = sum(stacks.values()) or 1
    lines = [*head, "", f"Own time by part of the stack ({n:,} samples"
             + (f"; of {us_per_segment:.1f} us CPU per segment" if us_per_segment else "")
             + "):"]
    for name, count in part_time(stacks).most_common():
        per = f"{count / n * us_per_segment:8.1f} us/segment" if us_per_segment else ""
        lines.append(f"  {name:<10} {100 * count / n:5.1f} % {per}  {PART_NOTES[name]}")
    for title, counts in (("own", own_time(stacks)), ("total", total_time(stacks))):
        lines += ["", f"Top {top} functions by {title} time:",
                  f"  {'%':>5}  {'samples':>7}  function (file)"]
        lines += [f"  {100 * c / n:5.1f}  {c:>7,}  {name}" for name, c in counts.most_common(top)]
    return "\n".join(lines) + "\n"


class _Node:
    __slots__ = ("count", "kids")

    def __init__(self) -> None:
        self.count = 0
        self.kids: dict[str, _Node] = {}


def flame_svg(stacks: Stacks, title: str, width: int = 1200) -> str:
    """A static flame graph (root at the bottom, width = samples, colour = part
    of the stack); each box's tooltip gives the function, its samples and share."""
    root = _Node()
    for frames, n in stacks.items():
        root.count += n
        node = root
        for f in frames:
            node = node.kids.setdefault(f, _Node())
            node.count += n
    depth = max((len(f) for f in stacks), default=0) + 1
    row, pad, top = 17, 10, 50
    height = top + depth * row + pad
    scale = (width - 2 * pad) / (root.count or 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="monospace" font-size="11">',
           '<rect width="100%" height="100%" fill="#fdfdf8"/>',
           f'<text x="{pad}" y="20" font-size="14">{escape(title)}</text>']
    x = pad
    for name in COLORS:
        out.append(f'<rect x="{x}" y="30" width="12" height="12" fill="{COLORS[name]}"/>'
                   f'<text x="{x + 16}" y="40">{escape(name)}</text>')
        x += 24 + 7 * len(name)

    def box(name: str, node: _Node, x: float, level: int) -> None:
        w = node.count * scale
        if w < 0.5:
            return
        y = height - pad - (level + 1) * row
        pct = 100 * node.count / (root.count or 1)
        fill = COLORS[(part(name) if level else None) or "other"]
        label = short(name) if level else name
        fits = int((w - 4) / 6.6)
        text = label if len(label) <= fits else label[:fits - 2] + ".." if fits > 3 else ""
        out.append(f'<g><title>{escape(label)}: {node.count:,} samples, {pct:.1f} %</title>'
                   f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" '
                   f'fill="{fill}" stroke="#fff" stroke-width="0.5"/>'
                   + (f'<text x="{x + 2:.1f}" y="{y + row - 5}">{escape(text)}</text>'
                      if text else "") + "</g>")
        for kid_name, kid in sorted(node.kids.items()):
            box(kid_name, kid, x, level + 1)
            x += kid.count * scale

    box("all", root, pad, 0)
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def workload(args: argparse.Namespace, lab: bench.Lab, addr: str,
             log_dir: Path) -> tuple[str, Callable[[], float], str]:
    """(description, one bounded run returning its figure, the figure's unit)."""
    if args.workload == "get":
        return (f"curl GET /bytes/{args.size}", lambda: bench.download(lab, addr, args.size),
                "MB/s")
    if args.workload == "post":
        body = log_dir / "upload.bin"
        digest = bench.make_body(body, args.size)
        return (f"curl POST /sha256 of {args.size} bytes",
                lambda: bench.upload(lab, addr, body, digest), "MB/s")
    if args.workload == "conn":
        return (f"ab -n {args.conns} -c {args.concurrency}", lambda: bench.connections_per_second(
            lab, addr, args.conns, args.concurrency)["rate"], "conn/s")
    return (f"{args.pings} 1-byte echo round trips per connection",
            lambda: bench.echo_rtt(lab, addr, args.pings)["p50_us"], "us p50")


def py_spy() -> str:
    """py-spy from this virtualenv (the test extra), else from PATH."""
    local = Path(sys.executable).parent / "py-spy"
    found = str(local) if local.exists() else shutil.which("py-spy")
    if found is None:
        raise bench.BenchError("py-spy not found (make install puts it in .venv)")
    return found


@dataclass
class Profiled:
    """What one profiling run gives: py-spy's collapsed stacks, the workload's
    figures, and the daemon's segments and CPU time over the sampling window."""

    folded: str
    what: str
    unit: str
    figures: list[float]
    seconds: float  # the window's wall time
    segments: int  # InSegs + OutSegs
    cpu: tuple[float, float]  # user, system seconds
    opens: int = 0  # PassiveOpens + ActiveOpens: connections in the window


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process `pid` (/proc/<pid>/stat, proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def run(args: argparse.Namespace, log_dir: Path) -> Profiled:
    """Profile the daemon while the workload runs over and over in a thread; the
    counters are read when py-spy stops, not when the last run ends."""
    raw = log_dir / "profile.folded"
    with bench.Lab(log_dir) as lab, lab.stack(args.mtu, args.stack_args) as target:
        what, once, unit = workload(args, lab, target.addr, log_dir)
        assert target.control is not None
        figures: list[float] = []
        failures: list[BaseException] = []
        stop = threading.Event()

        def load() -> None:
            try:
                while not stop.is_set():
                    figures.append(once())
            except Exception as e:  # reported by the main thread
                failures.append(e)

        stats0, cpu0 = bench.stack_stats(target.control), cpu_times(target.pid)
        t0 = time.monotonic()
        spy = lab.start(lab.client, py_spy(), "record", "--pid", str(target.pid),
                        "--format", "raw", "--function", "--native", "--rate", str(args.rate),
                        "--duration", str(args.seconds), "--output", str(raw),
                        *(["--gil"] if args.gil else []))
        print(f"profile: {what}, {args.seconds} s under py-spy ...", file=sys.stderr,
              flush=True)
        loader = threading.Thread(target=load, name="workload")
        loader.start()
        try:
            status = spy.proc.wait(args.seconds + 60)  # py-spy stops after --duration
            t1 = time.monotonic()
            stats1, cpu1 = bench.stack_stats(target.control), cpu_times(target.pid)
        finally:
            stop.set()
            loader.join(bench.CURL_TIMEOUT + 60)  # every run of the workload is bounded
        if failures:
            raise failures[0]
        if status != 0 or not raw.exists():
            raise bench.BenchError(f"py-spy failed (status {status}): "
                                   f"{spy.stderr.text()[-1500:]}")
        lab.finish(spy)
    return Profiled(raw.read_text(), what, unit, figures, t1 - t0,
                    sum(stats1[k] - stats0[k] for k in ("InSegs", "OutSegs")),
                    (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]),
                    sum(stats1[k] - stats0[k] for k in ("PassiveOpens", "ActiveOpens")))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Profile `tcpstack serve` with py-spy under one workload (root; the "
        "namespaces of scripts/bench.py): a flame graph and a text summary under "
        "bench-results/.")
    p.add_argument("workload", choices=("get", "post", "conn", "rtt"))
    p.add_argument("--seconds", type=int, default=20, help="sampling time (default 20)")
    p.add_argument("--rate", type=int, default=100, help="samples per second (default 100)")
    p.add_argument("--size", type=int, default=10_000_000,
                   help="bytes per get/post run (default 10000000)")
    p.add_argument("--conns", type=int, default=1000, help="connections per ab run (conn)")
    p.add_argument("--concurrency", type=int, default=64, help="ab concurrency (conn)")
    p.add_argument("--pings", type=int, default=2000, help="round trips per echo run (rtt)")
    p.add_argument("--mtu", type=int, default=1500)
    p.add_argument("--gil", action="store_true",
                   help="only samples holding the GIL: Python's own time, without the "
                   "system calls (TUN writes) and without waits that py-spy takes for work")
    p.add_argument("--top", type=int, default=15, help="functions listed (default 15)")
    p.add_argument("--stack-args", default="", metavar="'OPTIONS'",
                   help="more `tcpstack serve` options, one shell-quoted string, "
                   "e.g. '--offload off'")
    p.add_argument("--out", type=Path, default=bench.REPO / "bench-results")
    args = p.parse_args(argv)
    if not (0 < args.seconds <= 600 and 1 <= args.rate <= 1000):
        p.error("--seconds must be within (0, 600], --rate within 1..1000")
    args.stack_args = shlex.split(args.stack_args)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("profile: needs root (network namespaces, TUN devices, ptrace)", file=sys.stderr)
        return 2
    from proofkit import machine

    signal.signal(signal.SIGTERM, bench.raise_interrupt)  # the namespaces go either way
    with tempfile.TemporaryDirectory(prefix="tcpstack-profile-") as tmp:
        try:
            r = run(args, Path(tmp))
        except KeyboardInterrupt:
            print("profile: interrupted; namespaces removed", file=sys.stderr)
            return 130
        except (bench.BenchError, subprocess.TimeoutExpired) as e:
            print(f"profile: {e}", file=sys.stderr)
            return 1
    stacks = parse_collapsed(r.folded)
    m = machine()
    now = datetime.now()
    samples = sum(stacks.values())
    title = (f"tcpstack profile: {args.workload}, {now:%Y-%m-%d %H:%M}, {samples:,} samples"
             + (" (GIL only)" if args.gil else ""))
    user, system = r.cpu
    head = [title,
            f"machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, "
            f"Python {m['python']}",
            f"daemon: tcpstack serve --mtu {args.mtu} {' '.join(args.stack_args)}".rstrip()
            + f", {native.describe()}",
            NATIVE_NOTE,
            f"workload: {r.what}: {len(r.figures)} runs, median "
            f"{statistics.median(r.figures) if r.figures else 0:,.1f} {r.unit} "
            "(under the profiler)",
            f"daemon CPU while sampled: {user:.1f} s user + {system:.1f} s system in "
            f"{r.seconds:.1f} s, {r.segments:,} segments in+out; py-spy counted "
            f"{samples / args.rate:.1f} s as running ({args.rate} Hz)",
            *([f"daemon CPU per connection: {(user + system) / r.opens * 1e6:,.0f} us "
               f"({r.opens:,} connections opened)"] if args.workload == "conn" and r.opens
              else []),
            *cpu_note(samples / args.rate, user + system)]
    per_segment = (user + system) / r.segments * 1e6 if r.segments else None
    text = summary(stacks, head, us_per_segment=per_segment, top=args.top)
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"profile-{args.workload}-{now:%Y%m%d-%H%M%S}"
    base.with_suffix(".folded").write_text(r.folded)
    base.with_suffix(".txt").write_text(text)
    base.with_suffix(".svg").write_text(flame_svg(stacks, title))
    print(text)
    shown = base.relative_to(bench.REPO) if base.is_relative_to(bench.REPO) else base
    print(f"wrote {shown}.svg (flame graph), {shown}.txt (this summary), "
          f"{shown}.folded (py-spy's collapsed stacks)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
