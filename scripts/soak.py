#!/usr/bin/env python3
"""Soak: minutes of mixed load against the real daemon, then a check that its
resources return to where they started.

Run as root (`make soak`, or `.venv/bin/python scripts/soak.py --help`). In a
network namespace made for the run (deleted at the end, also on failure or
Ctrl-C), with the daemon's TIME-WAIT shortened by `--msl`, for `--duration`
seconds at once:

* `ab` without keep-alive (-c 16) and with keep-alive (-k -c 4) on GET /;
* echo sessions, downloads (GET /bytes/N) and uploads (POST /sha256), every
  one checked byte for byte (the `_mixed` helper);
* a slow reader: curl --limit-rate on a body far larger than the run;
* slowloris: connections that send one header byte every 10 s (`_slowloris`).

Every `--interval` seconds the daemon's RSS, open fds and connections (its
`ss`) and connection tasks (the `ConnTasks` gauge of `tcpstack stats`) are
sampled. After the load, the script waits
(bounded by `--settle`) for the connections to drain and TIME-WAIT to end,
then checks that connections and fds are back at the baseline exactly and
RSS within `--rss-slack` MiB. Should the daemon's RSS pass `--rss-limit`
(2 GiB) the run stops at once, kills the daemon and fails: a slow reader can
make today's daemon take all the machine's memory (issue 8, finding 0). A
table with PASS/FAIL, the samples as JSON under bench-results/; exit status 1
when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import proofkit
from proofkit import Check, StackLab

from tcpstack.lab import control, netns

SCRIPT = Path(__file__).resolve()
SUBNET = "10.215.0"
OP_TIMEOUT = 30.0


# --------------------------------------------------------------------------
# Helper roles (inside the namespace)
# --------------------------------------------------------------------------


def _http(sock: socket.socket, request: bytes) -> bytes:
    """Send one request (Connection: close) and return the body of a 200 answer."""
    sock.sendall(request)
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ValueError(f"answer {head[:40]!r}")
    return body


def role_mixed(vip: str, seconds: float, size: int) -> None:
    """Echo sessions, downloads and uploads in a loop each, every one verified.
    Prints counts: ok, wrong (corrupted answers), errors (timeouts, resets)."""
    end = time.monotonic() + seconds
    counts = {k: {"ok": 0, "wrong": 0, "errors": 0} for k in ("echo", "download", "upload")}
    rng = random.Random(0)
    blob = rng.randbytes(size)
    digest = hashlib.sha256(blob).hexdigest().encode()
    pattern = (bytes(range(251)) * (size // 251 + 1))[:size]

    def echo(s: socket.socket) -> bool:
        s.connect((vip, 7))
        got = b""
        for i in range(0, size, 1 << 16):
            s.sendall(blob[i:i + (1 << 16)])
            while len(got) < min(size, i + (1 << 16)):
                chunk = s.recv(1 << 16)
                if not chunk:
                    raise ConnectionError("echo closed early")
                got += chunk
        return got == blob

    def download(s: socket.socket) -> bool:
        s.connect((vip, 80))
        return _http(s, b"GET /bytes/%d HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n"
                     % size) == pattern

    def upload(s: socket.socket) -> bool:
        s.connect((vip, 80))
        return _http(s, b"POST /sha256 HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % size + blob).strip() == digest

    def loop(name: str) -> None:
        fn = {"echo": echo, "download": download, "upload": upload}[name]
        while time.monotonic() < end:
            try:
                with socket.socket() as s:
                    s.settimeout(OP_TIMEOUT)
                    counts[name]["ok" if fn(s) else "wrong"] += 1
            except (OSError, ValueError):
                counts[name]["errors"] += 1
                time.sleep(0.1)  # no busy loop against a refusing server

    threads = [threading.Thread(target=loop, args=(n,), daemon=True) for n in counts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 2 * OP_TIMEOUT)
    print(json.dumps(counts), flush=True)


def role_slowloris(vip: str, n: int, seconds: float) -> None:
    """`n` connections each sending one byte of a never-ending request header
    every 10 s; prints how many the server closed before the end."""
    end = time.monotonic() + seconds
    socks = []
    for _ in range(n):
        with contextlib.suppress(OSError):
            socks.append(socket.create_connection((vip, 80), timeout=10))
    request = b"GET / HTTP/1.1\r\nHost: soak\r\nX-Slow: " + b"a" * 100_000
    closed = 0
    i = 0
    while socks and time.monotonic() < end:
        for s in list(socks):
            try:
                s.send(request[i:i + 1])
            except OSError:
                closed += 1
                socks.remove(s)
                s.close()
        i += 1
        time.sleep(min(10.0, max(0.0, end - time.monotonic())))
    for s in socks:
        s.close()
    print(json.dumps({"opened": n, "closed_by_server": closed}), flush=True)


ROLES: dict[str, proofkit.Role] = {"_mixed": (role_mixed, (str, float, int)),
                                   "_slowloris": (role_slowloris, (str, int, float))}


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


class MemoryGuard(Exception):
    """The daemon's RSS passed --rss-limit: stop before the machine runs out."""


def start_load(lab: StackLab, args: argparse.Namespace) -> dict[str, subprocess.Popen[bytes]]:
    """Every load generator at once, each bounded by the duration."""
    d = str(args.duration)
    url = f"http://{lab.vip}/"
    out = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE,
           "stdin": subprocess.DEVNULL, "start_new_session": True}
    me = [sys.executable, "-u", str(SCRIPT)]
    return {
        "ab": lab.ns.popen("ab", "-q", "-t", d, "-n", "100000000", "-c", "16", "-s", "30",
                           url, **out),
        "ab -k": lab.ns.popen("ab", "-q", "-k", "-t", d, "-n", "100000000", "-c", "4",
                              "-s", "30", url, **out),
        "mixed": lab.ns.popen(*me, "_mixed", lab.vip, d, str(args.size), cwd=proofkit.REPO,
                              **out),
        "slow reader": lab.ns.popen("curl", "-sS", "-o", "/dev/null", "--limit-rate", "100K",
                                    "--max-time", d, f"{url}bytes/100000000000", **out),
        "slowloris": lab.ns.popen(*me, "_slowloris", lab.vip, str(args.slowloris), d,
                                  cwd=proofkit.REPO, **out),
    }


def finish_load(procs: dict[str, subprocess.Popen[bytes]], timeout: float) -> dict[str, Any]:
    """Wait for the generators (bounded) and keep what each reported."""
    results: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            netns.stop_process(proc, signal.SIGKILL, 5)
            stdout, stderr = proc.communicate()
        text = stdout.decode("utf-8", "replace")
        if name.startswith("ab"):
            rate = re.search(r"Requests per second:\s+([\d.]+)", text)
            done = re.search(r"Complete requests:\s+(\d+)", text)
            failed = re.search(r"Failed requests:\s+(\d+)", text)
            results[name] = {"rps": float(rate.group(1)) if rate else None,
                             "complete": int(done.group(1)) if done else None,
                             "failed": int(failed.group(1)) if failed else None,
                             "status": proc.returncode}
        elif text.strip().startswith("{"):
            results[name] = json.loads(text.strip().splitlines()[-1])
        else:
            results[name] = {"status": proc.returncode,
                             "stderr": stderr.decode("utf-8", "replace")[-300:]}
    return results


def soak(args: argparse.Namespace) -> tuple[list[Check], dict[str, Any]]:
    with proofkit.stack_lab("soak", subnet=SUBNET, options=["--msl", str(args.msl)]) as lab:
        base = lab.sample()
        print(f"soak: baseline {base}; {args.duration:g} s of mixed load ...", flush=True)
        samples: list[dict[str, Any]] = []
        t0 = time.monotonic()
        procs = start_load(lab, args)
        limit = args.rss_limit * 1024

        def sample() -> dict[str, Any]:
            now = {"t": round(time.monotonic() - t0, 1), **lab.sample()}
            samples.append(now)
            if now["rss_kb"] > limit:
                raise MemoryGuard(now["t"])
            return now

        def settled() -> bool:
            now = sample()
            return (0 <= now["conns"] <= base["conns"] and now["fds"] <= base["fds"]
                    and 0 <= now["tasks"] <= base["tasks"])

        try:
            while time.monotonic() - t0 < args.duration and lab.daemon.alive():
                if len(samples) % 6 == 5:
                    print(f"  {sample()}", flush=True)
                else:
                    sample()
                time.sleep(args.interval)
            load = finish_load(procs, 3 * OP_TIMEOUT + 30)
            print("  load done; waiting for connections and TIME-WAIT to end ...", flush=True)
            with contextlib.suppress(proofkit.WaitFailed):
                netns.wait_until(settled, args.settle, interval=1.0,
                                   message="connections back at the baseline")
        except BaseException as e:  # Ctrl-C, the guard, a failure: stop the load now
            for proc in procs.values():
                netns.stop_process(proc, signal.SIGKILL, 5)
            if not isinstance(e, MemoryGuard):
                raise
            # Kill the daemon (by pid) before it takes the machine's memory.
            lab.daemon.stop(signal.SIGKILL)
            peak = samples[-1]["rss_kb"] / 1024
            print(f"  the daemon's RSS passed --rss-limit at {e.args[0]} s: stopped", flush=True)
            return [Check("RSS under --rss-limit", False,
                          f"{peak:,.0f} MiB at {e.args[0]} s (baseline "
                          f"{base['rss_kb'] / 1024:.0f})", f"<= {args.rss_limit} MiB")], {
                "baseline": base, "samples": samples, "aborted_at": e.args[0]}
        # The control server closes its side of the last sample's requests a
        # moment after answering: give that one fd a bounded moment to go.
        with contextlib.suppress(proofkit.WaitFailed):
            netns.wait_until(lambda: proofkit.open_fds(lab.daemon.pid) <= base["fds"], 5,
                               interval=0.1, message="the last control request's fd")
        end = lab.sample() if lab.daemon.alive() else {
            "rss_kb": 0, "fds": 0, "conns": -1, "tasks": -1}
        problems = lab.problems()
        stats: dict[str, int] = {}
        with contextlib.suppress(control.ControlError):
            stats = lab.stats()
    peak = {k: max((s[k] for s in samples), default=0)
            for k in ("rss_kb", "fds", "conns", "tasks")}
    unanswered = sum(1 for s in samples if s["conns"] < 0)
    slack = args.rss_slack * 1024
    mixed = load.get("mixed", {})
    wrong = sum(v.get("wrong", 0) for v in mixed.values()) if "echo" in mixed else None
    checks = [
        Check("connections back to baseline", end["conns"] == base["conns"],
              f"{base['conns']} -> peak {peak['conns']} -> {end['conns']}", "== baseline"),
        Check("connection tasks back to baseline", end["tasks"] == base["tasks"],
              f"{base['tasks']} -> peak {peak['tasks']} -> {end['tasks']}", "== baseline"),
        Check("fds back to baseline", end["fds"] == base["fds"],
              f"{base['fds']} -> peak {peak['fds']} -> {end['fds']}", "== baseline"),
        Check("RSS back to baseline", end["rss_kb"] - base["rss_kb"] <= slack,
              f"{base['rss_kb'] / 1024:.0f} -> peak {peak['rss_kb'] / 1024:.0f} -> "
              f"{end['rss_kb'] / 1024:.0f} MiB", f"<= baseline + {args.rss_slack} MiB"),
        Check("transfers verified", wrong == 0,
              "no summary" if wrong is None else
              f"{wrong} wrong; " + ", ".join(f"{k} {v['ok']} ok/{v['errors']} err"
                                             for k, v in mixed.items()), "0 wrong answers"),
        Check("daemon healthy", not problems, "; ".join(problems)[:60] or "ok",
              "alive, 0 InternalErrors"),
        Check("control socket answered", unanswered == 0,
              f"{unanswered} of {len(samples)} samples unanswered in 5 s", "every sample"),
    ]
    return checks, {"baseline": base, "end": end, "peak": peak, "load": load,
                    "samples": samples, "stats": stats}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Soak tcpstack with mixed load, then check RSS, fds and connections "
        "return to the baseline (root; own namespace). Exit status 1 if a check fails.")
    p.add_argument("--duration", type=proofkit.positive(float), default=600.0,
                   help="seconds of load (default 600)")
    p.add_argument("--interval", type=proofkit.positive(float), default=5.0,
                   help="seconds between samples (default 5)")
    p.add_argument("--msl", type=proofkit.positive(float), default=1.0,
                   help="the daemon's --msl, so TIME-WAIT ends soon (default 1)")
    p.add_argument("--settle", type=proofkit.positive(float), default=120.0,
                   help="seconds to wait for the baseline after the load (default 120)")
    p.add_argument("--rss-slack", type=proofkit.positive(int), default=32,
                   help="MiB above the baseline RSS still counted as back (default 32)")
    p.add_argument("--rss-limit", type=proofkit.positive(int), default=2048,
                   help="MiB of daemon RSS at which the run stops (a failed check) to "
                   "protect the machine (default 2048)")
    p.add_argument("--size", type=proofkit.positive(int), default=1_000_000,
                   help="bytes per echo session, download and upload (default 1000000)")
    p.add_argument("--slowloris", type=proofkit.positive(int), default=50,
                   help="slowloris connections (default 50)")
    p.add_argument("--out", type=Path, default=proofkit.RESULTS,
                   help="directory for the JSON result (default bench-results/)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    def body(args: argparse.Namespace) -> int:
        proofkit.require_tools("ip", "ab", "curl")
        checks, data = soak(args)
        return proofkit.report("soak", checks, data, args.out, vars(args))

    return proofkit.script_main("soak", argv, ROLES, parse_args, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
