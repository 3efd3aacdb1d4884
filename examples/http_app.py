"""An aiohttp web application served by tcpstack instead of the kernel's TCP.

aiohttp's AppRunner builds the application's protocol factory (`runner.server`,
an aiohttp.web.Server); the stack's create_server runs it like
loop.create_server would. Needs aiohttp (`.venv/bin/pip install aiohttp`).
Run as root:

    sudo .venv/bin/python examples/http_app.py
    curl http://10.0.0.2/                         # in another terminal
    curl --data-binary @/etc/services http://10.0.0.2/echo

Ctrl-C stops it.
"""

import argparse
import asyncio
import contextlib

from aiohttp import web

import tcpstack
from tcpstack.api import add_arguments, stack_options


async def hello(request: web.Request) -> web.Response:
    host, port = request.transport.get_extra_info("peername")  # type: ignore[union-attr]
    return web.Response(text=f"hello {host}:{port}, from aiohttp on tcpstack\n")


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


async def main(args: argparse.Namespace) -> None:
    app = web.Application()
    app.add_routes([web.get("/", hello), web.post("/echo", echo)])
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        async with tcpstack.open_stack(**stack_options(args)) as stack:
            server = await stack.create_server(runner.server, args.port)
            print(f"tcpstack ready: aiohttp on http://{args.addr}:{args.port}/", flush=True)
            await server.serve_forever()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="an aiohttp app on tcpstack")
    add_arguments(parser)
    parser.add_argument("--port", type=int, default=80)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
