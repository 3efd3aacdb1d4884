"""`tcpstack demo NAME`: one of the textbook chapter's connection-management stories, run for real.

The textbook chapter tells its stories (the three-segment handshake, the four-segment
variant, the stale connection request, the lost third segment) with a drawing.
The daemon can re-enact each of them (`--impair-rule`, `--split-synack`,
`--synack-retries`, `--msl`) and show it (`--pcap`, `--trace`, `tcpstack
ladder`), but only after a page of set-up with two terminals, nftables and
root. `demo` does that set-up itself and leaves nothing behind::

    tcpstack demo NAME [--svg OUT.svg] [--keep-pcap FILE] [--ascii]
    tcpstack demo --list

For one run it

1. creates a network namespace of its own (so the demo's traffic and TUN
   device never touch the host's, and two demos never meet),
2. starts ``sys.executable -m tcpstack serve`` in it with ``--pcap``,
   ``--trace`` and the scenario's options, on a TUN device and subnet of its
   own, and waits (bounded) for its ``tcpstack ready:`` line,
3. runs the scenario's kernel client there (a Python socket program: the peer
   is Linux's TCP, as in the textbook chapter the peer is "A"), which reports what its
   socket calls saw as one JSON line,
4. waits (bounded) until the stack's trace shows the transition that ends
   the story (LAST-ACK -> CLOSED, SYN-RECEIVED -> CLOSED, ...), so nothing is
   cut short and no sleep guesses how long the story takes,
5. stops the daemon with SIGTERM (so the capture is complete), deletes the
   namespace (also on failure, Ctrl-C or SIGTERM), and prints the ladder
   (`tcpstack.lab.ladder`, the stack's states taken from its trace) and a few
   sentences that map what was printed to the textbook chapter's story, with the run's
   own numbers.

Where the capture cannot tell the story alone, the demo adds what it knows
because it set the scenario up: the segments an ``--impair-rule`` dropped
(the capture sits outside the impairment) are marked lost, and the SYN a rule
held back is drawn when the stack received it rather than when it was read
from the TUN.

Exit status: 0 after a run, 1 when a run fails (daemon not ready, client
surprised, the story's end not reached: one line plus the daemon's last log
lines on stderr), 2 for a bad command line or without root, 128 + the signal
after SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from tcpstack.core.segment import Flags
from tcpstack.core.states import State
from tcpstack.lab import ladder, netns
from tcpstack.lab.argparsing import EXIT_USAGE, standalone_main
from tcpstack.lab.demo_text import TEXTS, Texts
from tcpstack.lab.ladder import Endpoint, Ladder, Seg, TraceEvent
from tcpstack.wire.tun import missing_capabilities

EXIT_FAILURE = 1
NS_PREFIX = "tcps-demo"
READY_TIMEOUT = 10.0  # the daemon's "tcpstack ready:" line
CLIENT_TIMEOUT = 30.0  # the longest client (lost-third) needs about 7 s
END_TIMEOUT = 15.0  # from the client's exit to the transition that ends the story
STOP_TIMEOUT = 10.0  # SIGTERM to exit, then SIGKILL
WIDTH = 100

ECHO_PORT = 7
HTTP_PORT = 80
#: --msl for the scenarios that end in the stack's TIME-WAIT: 2*MSL = 2 s, not 60.
SHORT_MSL = "1"
#: How long the stale-syn rule holds the first SYN back. The real connection
#: starts at +1 s (Linux's SYN retransmission) and its TIME-WAIT on the stack
#: lasts 2*MSL = 2 s, so the old SYN arrives about 1 s after that ends.
STALE_DELAY = 4.0

#: The kernel-side client, run as `python -c CLIENT VIP PORT MODE` in the namespace.
#: It prints one JSON line: what its socket calls returned, with times since
#: connect() was called. Modes: `echo` (send a line, read it back, close first),
#: `silent` (connect, then only recv, so it sends no data that could complete
#: the handshake), `http10` (an HTTP/1.0 request: the server closes first).
CLIENT = r"""
import errno, json, socket, sys, time
vip, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t0 = time.monotonic()
report = {}
def at(key):
    report[key] = round(time.monotonic() - t0, 6)
s = socket.create_connection((vip, port), timeout=20)
at("connected")
report["local_port"] = s.getsockname()[1]
try:
    if mode == "echo":
        line = b"hello, tcpstack\n"
        s.sendall(line)
        got = b""
        while len(got) < len(line) and (chunk := s.recv(len(line) - len(got))):
            got += chunk
        report["sent"], report["received"] = line.decode(), got.decode()
    elif mode == "silent":
        got = s.recv(1)
        report["received"] = got.decode()
    else:
        s.sendall(b"GET /bytes/16 HTTP/1.0\r\n\r\n")
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        at("eof")
        report["status"] = got.split(b"\r\n", 1)[0].decode()
        report["received_bytes"] = len(got)
except OSError as e:
    at("error_at")
    report["error"] = errno.errorcode.get(e.errno or 0, str(e))
s.close()
at("closed")
print(json.dumps(report), flush=True)
"""


#: What CLIENT does in each MODE, for the demo's header.
CLIENT_MODES = {
    "echo": "sends a line, reads it back and closes",
    "silent": "then only waits in recv()",
    "http10": "sends an HTTP/1.0 GET, reads to end-of-file and closes",
}


class DemoError(Exception):
    """A run that did not go as the scenario expects: one line saying what, perhaps
    followed by the daemon's last lines of output."""


class _Interrupted(Exception):
    """SIGINT or SIGTERM arrived during a run; args[0] is the signal number."""


# ------------------------------------------------------------------ one run


@dataclass
class Run:
    """What one scenario run produced, for drawing and explaining it."""

    client: Endpoint
    server: Endpoint
    segments: list[Seg]
    trace: list[TraceEvent]  # the stack's transitions of this connection, in order
    log: list[str]  # the daemon's stdout and stderr lines
    report: dict[str, Any]  # the client's JSON line
    counters: dict[str, int] = field(default_factory=dict)

    def rule_hits(self, action: str) -> list[str]:
        """The daemon's log lines for impair-rule hits of `action` (dropped, delayed)."""
        return [line for line in self.log if re.search(rf"impair rule \d+ \(.*\) {action} ",
                                                       line)]


@dataclass
class Part:
    """One ladder of the output, with the title printed above it."""

    title: str
    ladder: Ladder


@dataclass(frozen=True)
class Scenario:
    """A story of the textbook chapter: how to run it, when it is over, how to draw and tell it."""

    name: str
    summary: str  # one line for --list
    port: int
    client_mode: str  # CLIENT's MODE
    daemon_args: tuple[str, ...]
    #: The stack's transition that ends the story; the daemon is stopped after it.
    done: tuple[State, State]
    draw: Callable[[Run], list[Part]]
    #: The run's numbers that the story quotes; demo_text.STORIES tells it per language.
    explain: Callable[[Run, list[Part]], dict[str, Any]]


def run_scenario(scenario: Scenario, pcap_copy: str | None = None,
                 status: Callable[[str], None] = lambda _: None) -> Run:
    """Run `scenario` in a namespace of its own and collect what it produced.

    `status` is told the namespace and the daemon's command line, and what the
    client does once the daemon is ready (the demo prints them: long scenarios
    should not look hung).
    """
    with netns.netns_scope(NS_PREFIX) as ns, \
            tempfile.TemporaryDirectory(prefix="tcpstack-demo-") as tmp:
        tun = f"tdemo{secrets.token_hex(2)}"
        subnet = secrets.randbelow(254) + 1
        host, vip = f"10.66.{subnet}.1", f"10.66.{subnet}.2"
        pcap = os.path.join(tmp, "demo.pcap")
        serve = [sys.executable, "-m", "tcpstack", "serve", "--tun", tun,
                 "--host-addr", f"{host}/24", "--addr", vip, "--pcap", pcap, "--trace",
                 "--control", os.path.join(tmp, "control.sock"), *scenario.daemon_args]
        status(f"tcpstack demo {scenario.name}: in namespace {ns.name} (deleted afterwards):")
        status(f"  {' '.join(['tcpstack', *serve[3:]])}")
        daemon: netns.Daemon | None = None
        try:
            with _signals_deferred():
                daemon = netns.spawn_daemon(ns, serve, tun=tun, host_cidr=f"{host}/24", vip=vip,
                                            stderr_path=None)
            if daemon.stdout.wait_for(netns.READY_PREFIX, READY_TIMEOUT, prefix=True) is None:
                raise DemoError("the daemon ended before it was ready" if daemon.stdout.eof
                                else f"the daemon was not ready within {READY_TIMEOUT:g} s")
            status(f"  client: a Python socket that connects to {vip}:{scenario.port}, "
                   f"{CLIENT_MODES[scenario.client_mode]}")
            report = _run_client(ns, vip, scenario)
            old, new = scenario.done
            if not daemon.stdout.wait_until(lambda lines: any(
                    (e.old, e.new) == (old, new) for e in ladder.parse_trace(lines)),
                    END_TIMEOUT):
                raise DemoError(f"the stack's trace never showed {old} -> {new}")
        except DemoError as e:
            if daemon is None:
                raise
            daemon.stop(timeout=STOP_TIMEOUT)  # first, so the tail has everything it said
            raise DemoError(f"{e}\n{_tail(daemon)}") from None
        finally:
            if daemon is not None:
                daemon.stop(timeout=STOP_TIMEOUT)
        if pcap_copy is not None:
            shutil.copyfile(pcap, pcap_copy)
        client, server, segments = ladder.select_connection(ladder.read_capture(pcap),
                                                            scenario.port)
        lines = daemon.stdout.lines
        trace = [e for e in ladder.parse_trace(lines) if {e.local, e.remote} == {client, server}]
        return Run(client, server, segments, trace, lines, report, _counters(lines))


def _run_client(ns: netns.NetNS, vip: str, scenario: Scenario) -> dict[str, Any]:
    """Run CLIENT to its end (bounded) and return its report; killed on the way out."""
    proc: subprocess.Popen[str] | None = None
    try:
        with _signals_deferred():
            proc = ns.popen(sys.executable, "-c", CLIENT, vip, str(scenario.port),
                            scenario.client_mode, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=CLIENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DemoError(f"the client did not finish within {CLIENT_TIMEOUT:g} s") from None
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
    try:
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise DemoError(f"the client failed (exit {proc.returncode}): {last}") from None
    return report


def _counters(lines: Sequence[str]) -> dict[str, int]:
    """The daemon's shutdown counters (`... counters: A=1 B=2`)."""
    for line in reversed(lines):
        m = re.search(r"counters: (.*)$", line)
        if m:
            return {k: int(v) for k, _, v in (kv.partition("=") for kv in m[1].split())
                    if v.isdigit()}
    return {}


# ----------------------------------------------- namespace and processes


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while a child process is being created.

    A signal that interrupts `Popen()` between fork and exec leaves a child
    whose pid the demo never learns, so nothing would stop it before the
    namespace goes. Held back, the signal is raised as soon as the `Popen`
    exists, where the caller's `finally` stops the child. (Signal handlers
    belong to the main thread; elsewhere there is nothing to defer.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda received, _frame: pending.append(received))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if pending:
        raise KeyboardInterrupt if pending[0] == signal.SIGINT else _Interrupted(pending[0])


def _tail(daemon: netns.Daemon, n: int = 15) -> str:
    """The daemon's last output lines, for an error message."""
    return "\n".join(f"  daemon: {line}" for line in daemon.stdout.lines[-n:])


# ----------------------------------------------------------------- drawing


def _whole(run: Run) -> list[Part]:
    """The connection as captured, the stack's states from its trace."""
    return [Part("", ladder.analyze(run.segments, client=run.client, server=run.server,
                                    trace=run.trace))]


def _dropped_acks(run: Run) -> list[Part]:
    """The whole connection, with the client segments the rule dropped marked lost.

    The capture records inbound packets before the impairment, so it shows
    every ACK of the client; the rule (every segment with ACK while the stack
    is in SYN-RECEIVED) dropped the first `len(rule_hits)` of them, which
    the stack's TCP never saw.
    """
    parts = _whole(run)
    dropped = len(run.rule_hits("dropped"))
    for step in parts[0].ladder.steps:
        if dropped and step.seg.from_client and step.seg.has(Flags.ACK):
            step.lost = True
            step.notes.append("dropped by --impair-rule: the stack never saw it")
            dropped -= 1
    return parts


def _stale_syn(run: Run) -> list[Part]:
    """Two ladders: the connection the client wanted, then the stale request.

    The rule held the client's first SYN back STALE_DELAY seconds, but the
    capture records it when it was read from the TUN, at the very start, and
    the 4-tuple is the same for both incarnations. So the segments are split
    where the stack's second ISN (y') appears, the held-back SYN is drawn in
    the second ladder at the time the stack received it, and the trace is
    split at the second LISTEN -> SYN-RECEIVED.
    """
    segs = run.segments
    if not run.rule_hits("delayed") or not segs or segs[0].flags != Flags.SYN:
        raise DemoError("the rule did not hold back the client's first SYN")
    held = segs[0]
    y = next((s.seq for s in segs if not s.from_client and s.has(Flags.SYN)), None)
    split = next((i for i, s in enumerate(segs)
                  if not s.from_client and s.has(Flags.SYN) and s.seq != y), None)
    opens = [i for i, e in enumerate(run.trace)
             if (e.old, e.new) == (State.LISTEN, State.SYN_RCVD)]
    if split is None or len(opens) < 2:
        raise DemoError("the stale SYN did not open a second connection")
    arrival = min(held.time + STALE_DELAY, segs[split].time)
    wanted = ladder.analyze(segs[1:split], client=run.client, server=run.server,
                            trace=run.trace[:opens[1]])
    wanted.steps[0].notes.insert(0, "Linux's SYN retransmission (same x): its first SYN is "
                                 "still held back")
    stale = ladder.analyze([replace(held, time=arrival), *segs[split:]], client=run.client,
                           server=run.server, trace=run.trace[opens[1]:])
    first = stale.steps[0]
    first.client_state = State.CLOSED  # the wire view says SYN-SENT; A's socket is long gone
    first.notes.insert(0, f"the client's first SYN, held back {STALE_DELAY:g} s by "
                       "--impair-rule since it left the client, whose connection has long "
                       "been closed")
    return [Part(f"1. The connection the client wanted, from +{segs[1].time - held.time:.3f} s "
                 "(times below are relative to its SYN)", wanted),
            Part(f"2. {arrival - held.time:.3f} s after the client's first SYN: "
                 "the stale connection request", stale)]


# -------------------------------------------------------------- explaining


def _t(lad: Ladder, index: int) -> str:
    return f"+{lad.time(lad.steps[index]):.3f} s"


def _first(lad: Ladder, predicate: Callable[[ladder.Step], bool]) -> int:
    """The index of the first step that satisfies `predicate` (the last step if none)."""
    return next((i for i, s in enumerate(lad.steps) if predicate(s)), len(lad.steps) - 1)


def _noted(lad: Ladder, text: str) -> int | None:
    """The index of the step whose notes mention `text` (a trace transition)."""
    return next((i for i, s in enumerate(lad.steps) if any(text in n for n in s.notes)), None)


def _trace_path(run: Run) -> str:
    """The stack's states in order, from its trace: ``LISTEN -> ... -> CLOSED``."""
    if not run.trace:
        return "(no trace)"
    return " -> ".join([str(run.trace[0].old), *(str(e.new) for e in run.trace)])


def _isns(lad: Ladder) -> dict[str, Any]:
    return {"x": lad.client_base, "y": lad.server_base}


def _explain_handshake(run: Run, parts: list[Part]) -> dict[str, Any]:
    return {**_isns(parts[0].ladder), "client": run.client, "server": run.server,
            "sent_len": len(run.report.get("sent", "").encode()),
            "connected": run.report.get("connected", 0),
            "received": run.report.get("received", ""), "path": _trace_path(run)}


def _explain_four_segment(run: Run, parts: list[Part]) -> dict[str, Any]:
    lad = parts[0].ladder
    both = _first(lad, lambda s: s.client_state is s.server_state is State.ESTABLISHED)
    return {**_isns(lad), "connected": run.report.get("connected", 0),
            "handshake_ms": lad.time(lad.steps[both]) * 1000, "path": _trace_path(run)}


def _explain_lost_third(run: Run, parts: list[Part]) -> dict[str, Any]:
    lad = parts[0].ladder
    steps = lad.steps
    resent = [i for i, s in enumerate(steps) if s.retransmission]
    rst = next((i for i, s in enumerate(steps) if s.seg.has(Flags.RST)), len(steps) - 1)
    return {**_isns(lad), "lost": sum(s.lost for s in steps),
            "connected": run.report.get("connected", 0),
            "times": ", ".join(_t(lad, i) for i in resent), "rst_at": _t(lad, rst),
            "error": run.report.get("error", "no error"),
            "error_at": run.report.get("error_at", 0),
            "counters": ", ".join(f"{k} {run.counters.get(k, 0)}" for k in
                                  ("SynAckRetrans", "HandshakeTimeouts", "ImpairRuleDropped",
                                   "OutRsts"))}


def _explain_stale_syn(run: Run, parts: list[Part]) -> dict[str, Any]:
    wanted, stale = parts[0].ladder, parts[1].ladder
    return {"x": wanted.client_base, "delay": STALE_DELAY,
            "resent_after": run.segments[1].time - run.segments[0].time,
            "time_wait": 2 * float(SHORT_MSL), "msl": SHORT_MSL, "y2": stale.server_base,
            "y": wanted.server_base, "closed": run.report.get("closed", 0),
            "back_ms": stale.time(stale.steps[-1]) * 1000}


def _explain_close(run: Run, parts: list[Part]) -> dict[str, Any]:
    lad = parts[0].ladder
    timer = next((e for e in run.trace if e.old is State.TIME_WAIT), None)
    fw2, tw = _noted(lad, "-> FIN-WAIT-2"), _noted(lad, "-> TIME-WAIT")
    return {"same": fw2 is not None and fw2 == tw, "time_wait": 2 * float(SHORT_MSL),
            "msl": SHORT_MSL, "timer": timer.cause if timer else "not seen",
            "path": _trace_path(run), "total_ms": lad.time(lad.steps[-1]) * 1000}


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("handshake", "the three-segment handshake: a kernel client sends a line to the "
             "echo app, reads it back, closes", ECHO_PORT, "echo", (),
             (State.LAST_ACK, State.CLOSED), _whole, _explain_handshake),
    Scenario("four-segment", "--split-synack: the SYN,ACK as ACK then SYN; Linux completes it "
             "as a simultaneous open", ECHO_PORT, "echo", ("--split-synack",),
             (State.LAST_ACK, State.CLOSED), _whole, _explain_four_segment),
    Scenario("lost-third", "the client's third segment is always lost: SYN,ACK at 0, +1, +3 s, "
             "RST at +7 s", ECHO_PORT, "silent",
             ("--synack-retries", "2", "--impair-rule", "in:drop:flags~ACK,state=SYN-RECEIVED"),
             (State.SYN_RCVD, State.CLOSED), _dropped_acks, _explain_lost_third),
    Scenario("stale-syn", "a SYN held back until its connection is over: SYN,ACK, RST from "
             "the client, back to LISTEN", HTTP_PORT, "http10",
             ("--msl", SHORT_MSL, "--impair-rule",
              f"in:delay={STALE_DELAY:g}s:flags=SYN,nth=1"),
             (State.SYN_RCVD, State.LISTEN), _stale_syn, _explain_stale_syn),
    Scenario("close", "the stack closes first: FIN both ways, TIME-WAIT on the stack (2 s "
             "with --msl 1)", HTTP_PORT, "http10", ("--msl", SHORT_MSL),
             (State.TIME_WAIT, State.CLOSED), _whole, _explain_close),
)}


# ----------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `tcpstack demo`, for a sub-parser of the main command line."""
    parser.add_argument("name", metavar="NAME", nargs="?",
                        help=f"the scenario: {', '.join(SCENARIOS)}")
    parser.add_argument("--list", action="store_true",
                        help="print the scenarios with a one-line description")
    parser.add_argument("--svg", metavar="OUT.svg",
                        help="also write the ladder as SVG (stale-syn: the stale request's)")
    parser.add_argument("--keep-pcap", metavar="FILE",
                        help="keep the daemon's capture (tcpstack ladder FILE redraws it)")
    parser.add_argument("--ascii", action="store_true", help="ASCII instead of box drawing")
    parser.add_argument("--lang", choices=list(TEXTS), default=next(iter(TEXTS)),
                        help="the language of the explanation: en, or zh in the terms of "
                        "the textbook chapter (default en)")


def run(args: argparse.Namespace) -> int:
    """`tcpstack demo`: list, or run one scenario and print its ladder and story."""
    if args.list:
        width = max(map(len, SCENARIOS))
        for s in SCENARIOS.values():
            print(f"{s.name:<{width}}  {s.summary}")
        return 0
    scenario = SCENARIOS.get(args.name or "")
    problem = (f"unknown scenario {args.name!r}" if args.name else "no scenario given")
    if scenario is None:
        return _usage(f"demo: {problem} (one of {', '.join(SCENARIOS)}; see tcpstack demo "
                      "--list)")
    for option, path in (("--svg", args.svg), ("--keep-pcap", args.keep_pcap)):
        if path is not None and not os.path.isdir(os.path.dirname(path) or "."):
            return _usage(f"demo: {option}: directory {os.path.dirname(path)!r} does not "
                          "exist")
    if os.geteuid() != 0:
        return _usage("demo needs root (it creates a network namespace and a TUN device)")
    if missing := missing_capabilities("CAP_NET_ADMIN", "CAP_SYS_ADMIN"):
        return _usage(f"demo needs {' and '.join(missing)} (root in a container or under "
                      "capsh --drop may lack it): it creates a network namespace and a TUN "
                      "device")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupted) if main_thread else None
    try:
        result = run_scenario(scenario, args.keep_pcap, lambda line: print(line, flush=True))
        parts = scenario.draw(result)
        _print(scenario, result, parts, args.ascii, TEXTS[args.lang])
        if args.svg is not None:
            Path(args.svg).write_text(ladder.render_svg(parts[-1].ladder), encoding="utf-8")
    except BrokenPipeError:
        raise  # stdout closed early: tcpstack.cli.main ends quietly
    except (DemoError, ladder.LadderError, netns.LabError, OSError) as e:
        print(f"tcpstack: error: demo {scenario.name}: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except (KeyboardInterrupt, _Interrupted) as e:
        sig = e.args[0] if isinstance(e, _Interrupted) else signal.SIGINT
        print(f"tcpstack: interrupted by {signal.Signals(sig).name}", file=sys.stderr)
        return 128 + sig
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _raise_interrupted(sig: int, _frame: FrameType | None) -> NoReturn:
    """SIGTERM unwinds like Ctrl-C, so the namespace and the daemon are cleaned up."""
    raise _Interrupted(sig)


def _usage(message: str) -> int:
    print(f"tcpstack: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _print(scenario: Scenario, result: Run, parts: list[Part], ascii: bool,
           texts: Texts = TEXTS["en"]) -> None:
    out = [f"client said: {json.dumps(result.report)}", ""]
    for part in parts:
        if part.title:
            out += [part.title, ""]
        out += [ladder.render_text(part.ladder, width=WIDTH, ascii=ascii), ""]
    out += [texts.heading, "", texts.fill(texts.roles, WIDTH, "  "), ""]
    for paragraph in texts.tell(scenario.name, scenario.explain(result, parts)):
        out += [texts.fill(paragraph, WIDTH, "  "), ""]
    sys.stdout.write("\n".join(out))
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """`tcpstack demo ARGS` as a function: parse `argv` and run."""
    return standalone_main(
        "tcpstack demo", "Run one of the textbook chapter's scenarios and draw it as a ladder.",
        add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
