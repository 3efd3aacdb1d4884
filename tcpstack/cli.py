"""The `tcpstack` command line: `serve` (the daemon) and `connect` (an nc-like client).

Both subcommands set up the same thing, a TUN device with the stack's VIP
behind it, so they share the option definitions (`_add_daemon_options`), their
validation (`_daemon_settings`) and the set-up and tear-down (`_running_stack`).

Bad input gets one line on stderr and exit status 2, never a traceback: the
arguments (and a `--config` file, tcpstack/configfile.py) are validated
completely before anything is created, and set-up failures (not root, device
busy, a --host-addr subnet that is already routed) are reported the same way.
Bare `tcpstack` is a usage error too (the help on stderr, status 2). `connect` exits 1
when the connection fails (refused, timed out, reset).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Coroutine
from dataclasses import dataclass, field, replace
from ipaddress import AddressValueError, IPv4Address, IPv4Interface, NetmaskValueError
from typing import Any, TypeVar

import uvloop

from tcpstack import __version__, configfile, native
from tcpstack.api import running_stack
from tcpstack.apps import (
    APPS,
    AppOptions,
    AppOptionsError,
    ForwardSpecError,
    Upstream,
    add_app_arguments,
    app_options_from_args,
    configured,
    parse_forward,
)
from tcpstack.core.cc import ALGORITHMS
from tcpstack.core.config import REASM_MEM, REASM_TIMEOUT, TcpConfig
from tcpstack.core.states import RESET_ON_ABORT
from tcpstack.lab import demo, impair, ladder, observe, query
from tcpstack.lab.argparsing import EXIT_USAGE, OneLineParser
from tcpstack.lab.connect import relay
from tcpstack.lab.impair import ImpairPlan, ImpairSpecError
from tcpstack.shell.stack import Stack
from tcpstack.wire.tun import DEFAULT_TXQUEUELEN, TunDevice, TunError

DEFAULT_APPS = ("echo:7", "discard:9", "http:80")
EXIT_FAILURE = 1
MAX_WINDOW_BYTES = 0xFFFF << 14  # RFC 7323 2.3: the largest scaled window
MAX_MSL = 3600.0
MAX_TXQUEUELEN = 1 << 20
MIN_SND_MSS = 48  # the most TCP options (40 octets) still leave 8 of data (Linux too)

log = logging.getLogger("tcpstack")
T = TypeVar("T")


class UsageError(Exception):
    """A bad command line; the message is the one line the user sees."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; args[0] is the signal number."""


@dataclass(frozen=True)
class DaemonSettings:
    """What every subcommand needs to bring a stack up on a TUN device."""

    tun: str
    host_addr: IPv4Interface
    addr: IPv4Address
    config: TcpConfig
    log_level: str
    impair: ImpairPlan
    observe: observe.ObserveSettings
    txqueuelen: int = DEFAULT_TXQUEUELEN
    offload: bool = True


@dataclass(frozen=True)
class ServeSettings:
    daemon: DaemonSettings
    apps: tuple[tuple[str, int], ...]
    app_options: AppOptions
    #: port -> where `--app forward:PORT=HOST:PORT` relays it
    forwards: dict[int, Upstream] = field(default_factory=dict)


@dataclass(frozen=True)
class ConnectSettings:
    daemon: DaemonSettings
    host: IPv4Address
    port: int


#: Examples shown by `tcpstack --help` (the epilog) and by each subcommand's --help.
EXAMPLES = {
    "tcpstack": (
        "tcpstack serve                          # 10.0.0.2 on tcps0: echo:7 discard:9 http:80",
        "tcpstack ss                             # its connection table, like ss -tin",
        "tcpstack connect 10.0.0.1 8080 < file   # like nc, from the VIP to the kernel side",
        "tcpstack demo --list                    # the textbook chapter's scenarios",
        "tcpstack COMMAND --help                 # a command's options and examples",
    ),
    "serve": (
        "tcpstack serve",
        "tcpstack serve --app http:80 --impair loss=5%,seed=1 --pcap /tmp/t.pcap",
        "tcpstack serve --trace --pcap /tmp/t.pcap 2> /tmp/trace.log",
        "tcpstack serve --tun tcps1 --host-addr 10.0.1.1/24 --addr 10.0.1.2",
        "tcpstack serve --config /etc/tcpstack.toml --log-level debug",
    ),
    "connect": (
        "tcpstack connect 10.0.0.1 8080 < request.txt",
        "echo hello | tcpstack connect 10.0.0.1 7 --impair loss=10%",
    ),
    "ss": ("tcpstack ss", "tcpstack ss --tun tcps1", "tcpstack ss --json | jq .connections"),
    "stats": ("tcpstack stats", "tcpstack stats --json"),
    "ladder": ("tcpstack ladder /tmp/t.pcap",
               "tcpstack ladder /tmp/t.pcap --conn 80 --trace /tmp/trace.log",
               "tcpstack ladder /tmp/t.pcap --svg ladder.svg"),
    "demo": ("tcpstack demo --list", "tcpstack demo handshake", "tcpstack demo lost-third --ascii"),
}

#: The one-line description of each command, in `tcpstack --help` and atop its own.
_SUMMARIES = {
    "serve": "own a virtual IP on a TUN device and serve apps",
    "connect": "like nc: connect from the VIP to HOST:PORT, relay stdin/stdout",
    **query.COMMANDS,
    "ladder": "draw one TCP connection of a capture as a ladder diagram",
    "demo": "run a scenario of the textbook chapter in a namespace, explain its ladder",
}


def _examples(name: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="tcpstack", description="A userspace TCP/IPv4 stack over TUN.",
                           epilog=_examples("tcpstack"),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"tcpstack {__version__} ({native.describe()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands",
                                parser_class=OneLineParser)

    def add(name: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=_SUMMARIES[name], epilog=_examples(name),
                              description=description or _SUMMARIES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    serve = add("serve")
    _add_daemon_options(serve, log_level="info")
    serve.add_argument("--app", action="append", metavar="KIND:PORT",
                       help=f"serve an app ({', '.join(sorted(APPS))}); repeatable "
                       f"(default {' '.join(DEFAULT_APPS)}); forward:PORT=HOST:PORT "
                       "relays PORT to a kernel-side service")
    serve.add_argument("--synack-retries", type=int, default=5,
                       help="SYN+ACK retransmissions before giving up (default 5)")
    serve.add_argument("--split-synack", action="store_true",
                       help="answer a SYN with a bare ACK and then a separate SYN (the "
                       "four-segment handshake) instead of one SYN+ACK")
    serve.add_argument("--backlog", type=int, default=4096, metavar="N",
                       help="per listener: half-open connections, and connections "
                       "waiting to be accepted (default 4096, Linux's somaxconn)")
    serve.add_argument("--syncookies", choices=["on", "off", "always"], default="on",
                       help="SYN cookies (RFC 4987): when the half-open set is full, "
                       "never, or for every SYN (default on, as Linux)")
    add_app_arguments(serve)

    connect = add(
        "connect",
        description="Open a TCP connection from the stack's VIP to HOST:PORT (e.g. a "
        "server on the kernel side), copy stdin to it and it to stdout; EOF on stdin "
        "half-closes; exits 0 when the peer closes, 1 if the connection fails.")
    connect.add_argument("host", metavar="HOST", help="IPv4 address to connect to")
    connect.add_argument("port", metavar="PORT", type=int, help="TCP port to connect to")
    _add_daemon_options(connect, log_level="warning")
    connect.add_argument("--syn-retries", type=int, default=6,
                         help="SYN retransmissions before giving up (default 6, ~127 s)")
    for name in query.COMMANDS:
        query.add_arguments(add(name))
    ladder.add_arguments(add("ladder"))
    demo.add_arguments(add("demo"))
    return parser


def _add_daemon_options(parser: argparse.ArgumentParser, *, log_level: str) -> None:
    """The TUN, address and TCP options every subcommand shares.

    A function rather than argparse `parents=`: parents share their Action
    objects, so a per-subcommand default (connect is quiet by default) would
    leak into the other subcommand.
    """
    parser.add_argument("--config", metavar="FILE",
                        help="read options from a TOML file (keys: these long options "
                        "without the dashes); the command line overrides it")
    parser.add_argument("--tun", default="tcps0", help="TUN device name (default tcps0)")
    parser.add_argument("--host-addr", default="10.0.0.1/24",
                        help="kernel side address/prefix (default 10.0.0.1/24)")
    parser.add_argument("--addr", default="10.0.0.2",
                        help="the stack's virtual IP, inside the host subnet (default 10.0.0.2)")
    parser.add_argument("--mtu", type=int, default=1500, help="device MTU (default 1500)")
    parser.add_argument("--txqueuelen", type=int, default=DEFAULT_TXQUEUELEN, metavar="N",
                        help="device queue length in packets: what the kernel may queue "
                        f"for the stack (default {DEFAULT_TXQUEUELEN})")
    parser.add_argument("--offload", choices=["on", "off"], default="on",
                        help="TSO/GRO and checksum offload through the TUN's virtio-net "
                        "header: 64 KiB TCP packets (default on; off with --impair)")
    parser.add_argument("--msl", type=float, default=30.0, metavar="SECONDS",
                        help="maximum segment lifetime; TIME-WAIT lasts 2*MSL (default 30)")
    parser.add_argument("--reasm-timeout", type=float, default=REASM_TIMEOUT,
                        metavar="SECONDS",
                        help="drop an IPv4 datagram whose fragments are not all in after "
                        f"SECONDS (default {REASM_TIMEOUT:g}, Linux's ipfrag_time)")
    parser.add_argument("--reasm-mem", type=int, default=REASM_MEM, metavar="BYTES",
                        help="bytes the fragments of all incomplete IPv4 datagrams may hold; "
                        f"beyond, fragments are dropped (default {REASM_MEM}, "
                        "Linux's ipfrag_high_thresh)")
    parser.add_argument("--impair", action="append", metavar="SPEC",
                        help="impair the stack's packets, e.g. 'loss=5%%,dup=2%%,reorder=10%%,"
                        "delay=20ms,jitter=5ms,seed=1'; prefix in: or out: for one "
                        "direction (default both); repeatable")
    parser.add_argument("--impair-rule", action="append", metavar="RULE",
                        help="drop, delay or duplicate chosen packets, e.g. "
                        "'in:drop:flags=ACK,state=SYN-RECEIVED,nth=1' or "
                        "'out:delay=2s:flags=SYN+ACK'; repeatable, tried in order")
    tcp = parser.add_argument_group("TCP tuning (defaults like Linux)")
    tcp.add_argument("--cc", default="cubic", choices=sorted(ALGORITHMS),
                     help="congestion control (default cubic)")
    tcp.add_argument("--rcv-buf", type=int, default=1 << 20, metavar="BYTES",
                     help="receive buffer per connection: the window we offer (default 1 MiB)")
    tcp.add_argument("--snd-buf", type=int, default=262144, metavar="BYTES",
                     help="queued, unacknowledged bytes before drain() waits (default 256 KiB)")
    tcp.add_argument("--mem-limit", type=int, default=None, metavar="BYTES",
                     help="bytes all connections may buffer together; windows and "
                          "writers shrink above 2/3 of it (default 1/16 of RAM)")
    tcp.add_argument("--rto-min", type=float, default=0.2, metavar="SECONDS",
                     help="minimum retransmission timeout (default 0.2)")
    tcp.add_argument("--rto-max", type=float, default=60.0, metavar="SECONDS",
                     help="maximum retransmission timeout (default 60)")
    tcp.add_argument("--max-conns", type=int, default=65536, metavar="N",
                     help="connections the stack holds at most; SYNs beyond it get a "
                     "SYN cookie or are dropped (default 65536)")
    tcp.add_argument("--max-tw", type=int, default=262144, metavar="N",
                     help="most connections in TIME-WAIT; beyond, a connection closes "
                     "without it (Linux tcp_max_tw_buckets; default 262144)")
    tcp.add_argument("--keepalive", metavar="IDLE[,INTERVAL[,PROBES]]",
                     help="probe idle connections: after IDLE seconds, every INTERVAL "
                     "seconds, reset after PROBES unanswered (default off; Linux's "
                     "7200,75,9 when only --keepalive 7200 is given)")
    tcp.add_argument("--challenge-ack-limit", type=int, default=1000, metavar="N",
                     help="challenge ACKs (RFC 5961) per second for the whole stack, 0 for no "
                     "limit (default 1000; each connection also sends at most one per "
                     "--challenge-ack-interval)")
    tcp.add_argument("--challenge-ack-interval", type=float, default=0.5, metavar="SECONDS",
                     help="least time between two challenge ACKs of one connection, "
                     "or ACKs to its out-of-window or PAWS-rejected pure segments "
                     "(default 0.5, Linux's tcp_invalid_ratelimit)")
    tcp.add_argument("--min-mss", type=int, default=48, metavar="BYTES",
                     help="floor for the peer's MSS, before option space (default 48, "
                     "Linux's tcp_min_snd_mss)")
    parser.add_argument("--log-level", default=log_level,
                        choices=["debug", "info", "warning", "error"],
                        help=f"log verbosity (default {log_level}); debug also traces "
                        "state transitions")
    observe.add_arguments(parser)


def settings_from_args(args: argparse.Namespace) -> ServeSettings | ConnectSettings:
    """Validate everything up front, so no device is created for a bad command line."""
    if args.command == "serve":
        if not 0 <= args.synack_retries <= 255:
            raise UsageError(f"--synack-retries: {args.synack_retries} is outside 0..255")
        if not 1 <= args.backlog <= 65535:
            raise UsageError(f"--backlog: {args.backlog} is outside 1..65535")
        try:
            options = app_options_from_args(args)
        except AppOptionsError as e:
            raise UsageError(str(e)) from None
        daemon = _daemon_settings(args, synack_retries=args.synack_retries,
                                  split_synack=args.split_synack, backlog=args.backlog,
                                  syncookies=args.syncookies)
        forwards: dict[int, Upstream] = {}
        apps = _parse_apps(args.app or DEFAULT_APPS, forwards)
        if any(up.host == daemon.addr for up in forwards.values()):
            raise UsageError(f"--app: forward to {daemon.addr}, the stack's own address "
                             "(--addr), would loop")
        return ServeSettings(daemon, apps, options, forwards)
    if not 0 <= args.syn_retries <= 255:
        raise UsageError(f"--syn-retries: {args.syn_retries} is outside 0..255")
    try:
        host = IPv4Address(args.host)
    except (AddressValueError, ValueError):
        raise UsageError(f"HOST: expected an IPv4 address, got {args.host!r}") from None
    if not 0 < args.port < 65536:
        raise UsageError(f"PORT: {args.port} is outside 1..65535")
    daemon = _daemon_settings(args, syn_retries=args.syn_retries)
    if host == daemon.addr:
        raise UsageError(f"HOST: {host} is the stack's own address (--addr)")
    return ConnectSettings(daemon, host, args.port)


def _daemon_settings(args: argparse.Namespace, **config: Any) -> DaemonSettings:
    """Check the shared options; `config` adds the subcommand's own TcpConfig fields."""
    name = args.tun
    if not 0 < len(name) < 16 or "/" in name or any(c.isspace() for c in name):
        raise UsageError(f"--tun: invalid device name {name!r} (1-15 characters, no '/')")
    if "/" not in args.host_addr:
        raise UsageError(f"--host-addr: expected A.B.C.D/NN, got {args.host_addr!r}")
    try:
        host = IPv4Interface(args.host_addr)
    except (AddressValueError, NetmaskValueError, ValueError) as e:
        raise UsageError(f"--host-addr: {e}") from None
    if host.network.prefixlen > 30:
        raise UsageError(f"--host-addr: prefix /{host.network.prefixlen} leaves no room for "
                         "the stack's address (use /30 or shorter)")
    try:
        addr = IPv4Address(args.addr)
    except (AddressValueError, ValueError) as e:
        raise UsageError(f"--addr: {e}") from None
    net = host.network
    if addr not in net or addr in (net.network_address, net.broadcast_address):
        raise UsageError(f"--addr: {addr} is not a host address in {net} (the --host-addr subnet)")
    if addr == host.ip:
        raise UsageError(f"--addr: {addr} is the kernel side's own address")
    if not 68 <= args.mtu <= 65535:
        raise UsageError(f"--mtu: {args.mtu} is outside 68..65535")
    if not 1 <= args.txqueuelen <= MAX_TXQUEUELEN:
        raise UsageError(f"--txqueuelen: {args.txqueuelen} is outside 1..{MAX_TXQUEUELEN}")
    if not (math.isfinite(args.msl) and 0 <= args.msl <= MAX_MSL):
        raise UsageError(f"--msl: {args.msl:g} is outside 0..{MAX_MSL:g} seconds")
    try:
        plan = impair.parse_impair(args.impair or ())
    except ImpairSpecError as e:
        raise UsageError(f"--impair: {e}") from None
    try:
        plan = replace(plan, rules=impair.parse_rules(args.impair_rule or ()))
    except ImpairSpecError as e:
        raise UsageError(f"--impair-rule: {e}") from None
    try:
        observing = observe.settings_from_args(args)
    except observe.ObserveSettingsError as e:
        raise UsageError(str(e)) from None
    return DaemonSettings(
        tun=name, host_addr=host, addr=addr,
        config=TcpConfig(mtu=args.mtu, msl=args.msl, **_tuning(args), **config),
        log_level=args.log_level, impair=plan, observe=observing, txqueuelen=args.txqueuelen,
        offload=args.offload == "on",
    )


def _tuning(args: argparse.Namespace) -> dict[str, Any]:
    """The TCP tuning options as TcpConfig fields, checked."""
    if not 1024 <= args.rcv_buf <= MAX_WINDOW_BYTES:
        raise UsageError(f"--rcv-buf: {args.rcv_buf} is outside 1024..{MAX_WINDOW_BYTES} "
                         "(the largest window RFC 7323 can offer)")
    if args.snd_buf < 1024:
        raise UsageError(f"--snd-buf: {args.snd_buf} is below 1024")
    if args.max_conns < 1:
        raise UsageError(f"--max-conns: {args.max_conns} is below 1")
    if args.mem_limit is not None and args.mem_limit < 65536:
        raise UsageError(f"--mem-limit: {args.mem_limit} is below 65536")
    if not (math.isfinite(args.rto_min) and 0 < args.rto_min <= args.rto_max
            and math.isfinite(args.rto_max)):
        raise UsageError(f"--rto-min/--rto-max: need 0 < {args.rto_min:g} <= {args.rto_max:g}")
    if args.max_tw < 0:
        raise UsageError(f"--max-tw: {args.max_tw} is below 0")
    if args.challenge_ack_limit < 0:
        raise UsageError(f"--challenge-ack-limit: {args.challenge_ack_limit} is below 0")
    if not (math.isfinite(args.challenge_ack_interval) and args.challenge_ack_interval >= 0):
        raise UsageError(f"--challenge-ack-interval: {args.challenge_ack_interval:g} is not "
                         "a number of seconds >= 0")
    if not MIN_SND_MSS <= args.min_mss <= 65535:
        raise UsageError(f"--min-mss: {args.min_mss} is outside {MIN_SND_MSS}..65535")
    if not (math.isfinite(args.reasm_timeout) and 0 < args.reasm_timeout <= MAX_MSL):
        raise UsageError(f"--reasm-timeout: {args.reasm_timeout:g} is outside "
                         f"0..{MAX_MSL:g} seconds (0 excluded)")
    if args.reasm_mem < 0:
        raise UsageError(f"--reasm-mem: {args.reasm_mem} is below 0")
    tuning: dict[str, Any] = {"cc": args.cc, "rcv_buf": args.rcv_buf, "snd_buf": args.snd_buf,
                              "rto_min": args.rto_min, "rto_max": args.rto_max,
                              "max_conns": args.max_conns,
                              "challenge_ack_limit": args.challenge_ack_limit,
                              "challenge_ack_interval": args.challenge_ack_interval,
                              "min_snd_mss": args.min_mss,
                              "max_tw_buckets": args.max_tw,
                              "reasm_timeout": args.reasm_timeout,
                              "reasm_mem": args.reasm_mem}
    if args.mem_limit is not None:
        tuning["mem_limit"] = args.mem_limit
    if args.keepalive is not None:
        tuning.update(_parse_keepalive(args.keepalive))
    return tuning


def _parse_keepalive(spec: str) -> dict[str, Any]:
    parts = spec.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise UsageError(f"--keepalive: expected IDLE[,INTERVAL[,PROBES]] in positive "
                         f"numbers, got {spec!r}")
    idle, interval, probes = values + [7200.0, 75.0, 9.0][len(values):]
    if probes != int(probes):
        raise UsageError(f"--keepalive: PROBES must be a whole number, got {probes:g}")
    return {"keepalive": True, "keepalive_idle": idle, "keepalive_interval": interval,
            "keepalive_probes": int(probes)}


def _parse_apps(specs: list[str] | tuple[str, ...],
                forwards: dict[int, Upstream]) -> tuple[tuple[str, int], ...]:
    """The (kind, port) pairs; each forward rule's upstream goes into `forwards`."""
    apps: dict[int, str] = {}
    for spec in specs:
        kind, sep, port_text = spec.partition(":")
        upstream = None
        if kind == "forward":
            try:
                port, upstream = parse_forward(port_text)
            except ForwardSpecError as e:
                raise UsageError(f"--app: {e}") from None
            port_text = str(port)
        if not sep or not port_text.isdigit():
            raise UsageError(f"--app: expected KIND:PORT, got {spec!r}")
        if kind not in APPS:
            raise UsageError(f"--app: unknown app {kind!r} (choose from {', '.join(sorted(APPS))})")
        port = int(port_text)
        if not 0 < port < 65536:
            raise UsageError(f"--app: port {port} is outside 1..65535")
        if port in apps:
            raise UsageError(f"--app: port {port} is taken twice ({apps[port]} and {kind})")
        apps[port] = kind
        if upstream is not None:
            forwards[port] = upstream
    return tuple((kind, port) for port, kind in apps.items())


# -- running --------------------------------------------------------------------------------


class _Daemon:
    """A stack running on its TUN device, as `_running_stack` yields it."""

    def __init__(self, stack: Stack, tun: TunDevice, reader: asyncio.Task[None],
                 stopped: asyncio.Future[int]) -> None:
        self.stack = stack
        self.tun = tun
        self._reader = reader
        self._stopped = stopped

    async def run(self, work: Awaitable[T]) -> T:
        """Await `work`, unless SIGINT/SIGTERM comes first (Interrupted) or the TUN
        reader fails (its error is raised); either way `work` is cancelled."""
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait({task, self._reader, self._stopped},
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.done() and not task.cancelled():
            return task.result()
        if self._stopped.done():
            raise Interrupted(self._stopped.result())
        raise self._reader.exception() or RuntimeError("the TUN reader stopped")


@contextlib.asynccontextmanager
async def _running_stack(settings: DaemonSettings) -> AsyncIterator[_Daemon]:
    """The stack on its TUN device (tcpstack.api.running_stack), stopped by
    SIGINT/SIGTERM; on the way out reset every connection and remove the device."""
    loop = asyncio.get_running_loop()
    async with running_stack(settings.tun, settings.host_addr, settings.addr, settings.config,
                             txqueuelen=settings.txqueuelen, offload=settings.offload,
                             impair_plan=settings.impair,
                             observing=settings.observe) as running:
        stack = running.stack
        stopped: asyncio.Future[int] = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _stop, stopped, sig)
        try:
            yield _Daemon(stack, running.tun, running.reader, stopped)
        finally:
            log.info("shutting down: %s; counters: %s", shutdown_summary(stack),
                     " ".join(f"{k}={v}" for k, v in sorted(stack.stats.items()) if v))
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def shutdown_summary(stack: Stack) -> str:
    """What `Stack.close` is about to do, in numbers that match the RSTs it sends:
    ABORT resets only the connections in RESET_ON_ABORT (RFC 9293 3.10.5); the
    others (SYN-SENT, CLOSING, LAST-ACK, a TCB on its way to TIME-WAIT) close
    without a word, and TIME-WAIT records are dropped, never reset."""
    reset = sum(1 for conn in stack.conns.values() if conn.tcb.state in RESET_ON_ABORT)
    quiet = len(stack.conns) - reset
    parts = [f"resetting {reset} connection(s)"]
    if quiet:
        parts.append(f"closing {quiet} without a reset")
    parts.append(f"discarding {len(stack.time_wait)} TIME-WAIT entries")
    return ", ".join(parts)


def _stop(stopped: asyncio.Future[int], sig: int) -> None:
    if not stopped.done():
        stopped.set_result(sig)


def _try_hint(vip: str, apps: tuple[tuple[str, int], ...]) -> str:
    """Commands a newcomer can paste, for the apps actually served (OpenBSD nc needs -N
    to end the connection when stdin ends)."""
    hints = [f"ping {vip}"]
    for kind, port in apps:
        if kind == "echo":
            hints.append(f"nc -N {vip} {port}")
        elif kind == "http":
            hints.append(f"curl http://{vip}{'' if port == 80 else f':{port}'}/")
    return " | ".join(hints)


async def serve(settings: ServeSettings) -> int:
    """Run the daemon until SIGTERM or SIGINT; then reset connections, remove the TUN."""
    async with _running_stack(settings.daemon) as daemon:
        forwards = settings.forwards
        for kind, port in settings.apps:
            await daemon.stack.start_server(
                configured(kind, settings.app_options, forwards.get(port)), port)
        vip = settings.daemon.addr
        apps = " ".join(f"{kind}:{port}" + (f"={forwards[port]}" if port in forwards else "")
                        for kind, port in settings.apps)
        print(f"tcpstack ready: {vip} on {daemon.tun.name} (kernel side "
              f"{settings.daemon.host_addr}, mtu {settings.daemon.config.mtu}); apps: {apps}",
              flush=True)
        print(f"try: {_try_hint(vip, settings.apps)}   (Ctrl-C stops)", flush=True)
        with contextlib.suppress(Interrupted):
            await daemon.run(asyncio.get_running_loop().create_future())  # until a signal
    return 0


async def connect(settings: ConnectSettings) -> int:
    """Connect from the VIP to HOST:PORT and relay stdin/stdout until the peer closes.

    Nothing but received data goes to stdout; every status line goes to stderr.
    """
    target = f"{settings.host}:{settings.port}"
    async with _running_stack(settings.daemon) as daemon:
        try:
            reader, writer = await daemon.run(
                daemon.stack.open_connection(str(settings.host), settings.port))
        except ConnectionRefusedError:
            return _fail(f"connect to {target}: connection refused")
        except TimeoutError:
            syns = settings.daemon.config.syn_retries + 1
            return _fail(f"connect to {target}: timed out ({syns} SYNs unanswered)")
        except OSError as e:
            return _fail(f"connect to {target}: {e}")
        local = writer.get_extra_info("sockname")
        log.info("connected %s:%d -> %s", local[0], local[1], target)
        try:
            await daemon.run(relay(reader, writer))
        except OSError as e:  # reset, our FIN never acknowledged, stdin/stdout failing
            return _fail(f"{target}: {e.strerror or e}")
    return 0


def _fail(message: str) -> int:
    print(f"tcpstack: error: {message}", file=sys.stderr, flush=True)
    return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    """The `tcpstack` command; its exit status.

    A reader that stops early (`tcpstack ss --json | head`) closes our stdout:
    the next write raises BrokenPipeError, here or when the interpreter flushes
    at exit. Both end quietly with 128 + SIGPIPE, the status a C tool killed
    by the signal has. stdout then points at /dev/null (the Python docs'
    recipe, "Note on SIGPIPE"), so the flush at exit cannot fail again.
    """
    try:
        status = _main(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return status


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        # Like `ip` (the usage on stderr, a failure status), unlike `git` (stdout,
        # 1): no command is a usage error, which a script must not take for success.
        sys.stderr.write(parser.format_help())
        return EXIT_USAGE
    if args.command in query.COMMANDS:
        return query.run(args)
    if args.command == "ladder":
        return ladder.run(args)
    if args.command == "demo":
        return demo.run(args)
    try:
        if args.config is not None:
            args = configfile.apply(parser, argv, args)
        settings = settings_from_args(args)
    except (UsageError, configfile.ConfigError) as e:
        print(f"tcpstack: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=settings.daemon.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    program: Coroutine[Any, Any, int] = (
        serve(settings) if isinstance(settings, ServeSettings) else connect(settings))
    try:
        return uvloop.run(program)
    except (TunError, observe.SetupError) as e:
        print(f"tcpstack: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted as e:
        print(f"tcpstack: interrupted by {signal.Signals(e.args[0]).name}", file=sys.stderr)
        return 128 + e.args[0]
    except KeyboardInterrupt:
        return 0
