"""An echo server written as an asyncio Protocol, running on tcpstack.

Run as root (it creates the TUN device tcps0 with 10.0.0.1/24 on the kernel
side; the stack owns 10.0.0.2):

    sudo .venv/bin/python examples/echo_server.py
    printf 'hello\\n' | nc -N 10.0.0.2 7        # in another terminal

Ctrl-C stops it: connections are reset and the TUN device disappears.
"""

import argparse
import asyncio
import contextlib

import tcpstack
from tcpstack.api import add_arguments, stack_options


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        print("connection from", transport.get_extra_info("peername"), flush=True)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]

    # eof_received returns None: the transport closes (FIN) after the echo, as asyncio's.


async def main(args: argparse.Namespace) -> None:
    async with tcpstack.open_stack(**stack_options(args)) as stack:
        server = await stack.create_server(Echo, args.port)
        print(f"tcpstack ready: echo on {args.addr}:{args.port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="echo server (asyncio Protocol) on tcpstack")
    add_arguments(parser)
    parser.add_argument("--port", type=int, default=7)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
