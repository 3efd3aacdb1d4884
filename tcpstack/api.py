"""The embedding entry point: `async with open_stack(...) as stack:`.

Running one's own asyncio code on the stack takes a TUN device, a Stack
writing to it, the reader task feeding the stack, and a tear-down in the
right order. `open_stack` does all of it, with the same option names and
defaults as `tcpstack serve` (docs/embedding.md):

    async with tcpstack.open_stack(tun="tcps0", host_addr="10.0.0.1/24",
                                   addr="10.0.0.2", rcv_buf=1 << 20) as stack:
        server = await stack.create_server(MyProtocol, 8080)
        await server.serve_forever()

On the way out, normal or not (an exception, a cancellation), every
connection is reset (peers see RST rather than a silent stop), the
impairment sends what it still holds, the reader stops, the capture and
control socket close, and the TUN device disappears. `tcpstack serve` and
`tcpstack connect` run on the same context manager (`running_stack`).

`start_server` and `open_connection` here are asyncio's functions with a
`stack=` argument, so code written for `asyncio.start_server` moves over by
adding one keyword.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from tcpstack.core.config import TcpConfig
from tcpstack.lab import control, observe
from tcpstack.lab.impair import ImpairPlan, install, parse_impair, parse_rules
from tcpstack.shell.listener import Handler, Server
from tcpstack.shell.stack import Stack
from tcpstack.shell.stream import StreamReader, StreamWriter
from tcpstack.wire.tun import DEFAULT_TXQUEUELEN, TunDevice, check_free_subnet

log = logging.getLogger("tcpstack")


@dataclass(frozen=True)
class Running:
    """A stack on its TUN device, as `running_stack` yields it: the daemon
    also needs the device (its name, counters) and the reader task (to notice
    that it failed)."""

    stack: Stack
    tun: TunDevice
    reader: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running_stack(tun: str, host_addr: IPv4Interface, addr: IPv4Address,
                        config: TcpConfig, *, txqueuelen: int = DEFAULT_TXQUEUELEN,
                        offload: bool = True, impair_plan: ImpairPlan | None = None,
                        observing: observe.ObserveSettings | None = None,
                        ) -> AsyncIterator[Running]:
    """Create the TUN device, the stack on it (impaired if asked, observed if
    asked) and its reader; on the way out reset every connection and remove the
    device. Arguments are already checked (the command line did, or `open_stack`)."""
    plan = impair_plan or ImpairPlan()
    offload_on = offload and not plan
    if offload and not offload_on:
        log.info("offloads off: --impair and --impair-rule act on wire packets")
    check_free_subnet(tun, host_addr.network)  # a second daemon on a routed subnet is unreachable
    device = TunDevice(tun, host_addr, config.mtu, txqueuelen, offload=offload_on)
    observability = observe.Observability(observing) if observing is not None else None
    try:
        stack = Stack(str(addr), device.write, replace(config, offload=device.vnet))
        stack.device_stats = device.drop_counters
        # The taps take their places in tcpstack.shell.pipeline's order, whatever the
        # order of these calls: TUN read -> capture -> impairment -> stack,
        # stack -> impairment -> capture -> TUN write.
        impairments = install(stack, plan)
        if observability is not None:
            await observability.attach(stack)
        reader = asyncio.get_running_loop().create_task(stack.run_reader(device.fileno()))
        try:
            yield Running(stack, device, reader)
        finally:
            await stack.close()
            impairments.close()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
    finally:
        if observability is not None:
            await observability.close()  # last: the capture gets the shutdown's RSTs
        device.close()


@contextlib.asynccontextmanager
async def open_stack(tun: str = "tcps0", host_addr: str = "10.0.0.1/24",
                     addr: str = "10.0.0.2", *, mtu: int = 1500,
                     txqueuelen: int = DEFAULT_TXQUEUELEN, offload: bool = True,
                     impair: Sequence[str] = (), impair_rule: Sequence[str] = (),
                     pcap: str | None = None, control_path: str | None = None,
                     trace: bool = False, **options: Any) -> AsyncIterator[Stack]:
    """A running stack owning `addr` behind the TUN device `tun`, whose kernel
    side gets `host_addr`; the arguments are `tcpstack serve`'s options
    (--tun, --host-addr, --addr, --mtu, --txqueuelen, --offload, --impair and
    --impair-rule as lists of specs, --pcap, --control, --trace) with the same
    defaults, and `options` are TcpConfig fields (rcv_buf, snd_buf, cc, msl,
    backlog, syn_retries, keepalive, ...). Without `pcap`, `control_path` and
    `trace` there is no control socket (`tcpstack ss` does not see the stack).

    Needs root (CAP_NET_ADMIN). Raises ValueError for a bad address or
    impairment, TypeError for an unknown option, tcpstack.wire.tun.TunError when
    the device cannot be created; all before anything is created (but the
    device)."""
    host = IPv4Interface(host_addr)
    vip = IPv4Address(addr)
    if vip not in host.network or vip == host.ip:
        raise ValueError(f"addr {vip} must be another address in {host.network}")
    plan = replace(parse_impair(impair), rules=parse_rules(impair_rule))
    config = TcpConfig(mtu=mtu, **options)
    observing = None
    if pcap is not None or control_path is not None or trace:
        observing = observe.ObserveSettings(
            pcap=pcap, control=control_path or control.default_path(tun), trace=trace)
    async with running_stack(tun, host, vip, config, txqueuelen=txqueuelen, offload=offload,
                             impair_plan=plan, observing=observing) as running:
        yield running.stack


def _local(stack: Stack, host: str | None) -> None:
    """asyncio's `host` argument: the stack has one address, so only that
    (or None, or "0.0.0.0") makes sense."""
    if host not in (None, "", "0.0.0.0") and IPv4Address(host).packed != stack.addr:
        raise OSError(99, f"cannot assign requested address: the stack owns "
                      f"{IPv4Address(stack.addr)}, not {host}")


async def start_server(client_connected_cb: Handler, host: str | None = None,
                       port: int | None = None, *, stack: Stack,
                       backlog: int | None = None) -> Server:
    """asyncio.start_server on `stack`: `client_connected_cb(reader, writer)`
    runs for every connection to the stack's address on `port`."""
    _local(stack, host)
    if port is None:
        raise ValueError("port is required (the stack has no port 0 listeners)")
    return await stack.start_server(client_connected_cb, port, backlog=backlog)


async def open_connection(host: str, port: int, *,
                          stack: Stack) -> tuple[StreamReader, StreamWriter]:
    """asyncio.open_connection from the stack's address to HOST:PORT."""
    return await stack.open_connection(host, port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Give a program built on the stack the daemon's main options, with the
    same names and defaults (--tun, --host-addr, --addr, --impair), so every
    tool on the stack is started the same way; `stack_options(args)` turns
    them into open_stack's arguments."""
    parser.add_argument("--tun", default="tcps0", help="TUN device name (default tcps0)")
    parser.add_argument("--host-addr", default="10.0.0.1/24",
                        help="kernel side address/prefix (default 10.0.0.1/24)")
    parser.add_argument("--addr", default="10.0.0.2",
                        help="the stack's virtual IP, inside the host subnet (default 10.0.0.2)")
    parser.add_argument("--impair", action="append", default=[], metavar="SPEC",
                        help="impair the stack's packets, e.g. 'loss=5%%,delay=20ms'; "
                        "repeatable (as tcpstack serve --impair)")


def stack_options(args: argparse.Namespace) -> dict[str, Any]:
    """open_stack's keyword arguments from the options of `add_arguments`."""
    return {"tun": args.tun, "host_addr": args.host_addr, "addr": args.addr,
            "impair": args.impair}
