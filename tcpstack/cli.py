"""The `tcpstack` command line.

Bad input gets one line on stderr and exit status 2, never a traceback: the
arguments are validated completely before anything is created, and set-up
failures (not root, device busy) are reported the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address, IPv4Interface, NetmaskValueError
from typing import NoReturn

import uvloop

from tcpstack.apps import APPS
from tcpstack.config import TcpConfig
from tcpstack.stack import Stack
from tcpstack.tun import TunDevice, TunError

DEFAULT_APPS = ("echo:7", "discard:9", "http:80")
EXIT_USAGE = 2


class UsageError(Exception):
    """A bad command line; the message is the one line the user sees."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"tcpstack: error: {message}\n")


@dataclass(frozen=True)
class ServeSettings:
    tun: str
    host_addr: IPv4Interface
    addr: IPv4Address
    apps: tuple[tuple[str, int], ...]
    config: TcpConfig
    log_level: str


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tcpstack", description="A userspace TCP/IPv4 stack over TUN.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = sub.add_parser("serve", help="own a virtual IP on a TUN device and serve apps")
    serve.add_argument("--tun", default="tcps0", help="TUN device name (default tcps0)")
    serve.add_argument("--host-addr", default="10.0.0.1/24",
                       help="kernel side address/prefix (default 10.0.0.1/24)")
    serve.add_argument("--addr", default="10.0.0.2",
                       help="the stack's virtual IP, inside the host subnet (default 10.0.0.2)")
    serve.add_argument("--app", action="append", metavar="KIND:PORT",
                       help=f"serve an app ({', '.join(sorted(APPS))}); repeatable "
                       f"(default {' '.join(DEFAULT_APPS)})")
    serve.add_argument("--mtu", type=int, default=1500, help="device MTU (default 1500)")
    serve.add_argument("--synack-retries", type=int, default=5,
                       help="SYN+ACK retransmissions before giving up (default 5)")
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"],
                       help="log verbosity; debug also traces state transitions")
    return parser


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """Validate everything up front, so no device is created for a bad command line."""
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
    if not 0 <= args.synack_retries <= 255:
        raise UsageError(f"--synack-retries: {args.synack_retries} is outside 0..255")
    return ServeSettings(
        tun=name, host_addr=host, addr=addr, apps=_parse_apps(args.app or DEFAULT_APPS),
        config=TcpConfig(mtu=args.mtu, synack_retries=args.synack_retries),
        log_level=args.log_level,
    )


def _parse_apps(specs: list[str] | tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    apps: dict[int, str] = {}
    for spec in specs:
        kind, sep, port_text = spec.partition(":")
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
    return tuple((kind, port) for port, kind in apps.items())


async def serve(settings: ServeSettings) -> int:
    """Run the daemon until SIGTERM or SIGINT; then reset connections, remove the TUN."""
    tun = TunDevice(settings.tun, settings.host_addr, settings.config.mtu)
    try:
        stack = Stack(str(settings.addr), tun.write, settings.config)
        for kind, port in settings.apps:
            await stack.start_server(APPS[kind], port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reader = loop.create_task(stack.run_reader(tun.fileno()))
        vip = settings.addr
        apps = " ".join(f"{kind}:{port}" for kind, port in settings.apps)
        print(f"tcpstack ready: {vip} on {tun.name} (kernel side {settings.host_addr}, "
              f"mtu {settings.config.mtu}); apps: {apps}", flush=True)
        print(f"try: ping {vip} | nc {vip} 7 | curl http://{vip}/   (Ctrl-C stops)", flush=True)
        waiter = loop.create_task(stop.wait())
        await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if reader.done() and reader.exception() is not None:
            raise reader.exception()  # type: ignore[misc]
        logging.getLogger("tcpstack").info("shutting down: resetting %d connection(s)",
                                           len(stack.conns))
        await stack.close()
        reader.cancel()
        waiter.cancel()
    finally:
        tun.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except UsageError as e:
        print(f"tcpstack: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return uvloop.run(serve(settings))
    except TunError as e:
        print(f"tcpstack: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0
