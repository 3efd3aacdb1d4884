"""A client on the stack: connect from the stack's address (10.0.0.2) to a
server on the kernel side, send an HTTP request, print the reply.

Streams (`tcpstack.open_connection(host, port, stack=stack)`) are shown here;
`stack.create_connection(protocol_factory, host, port)` is the Protocol
equivalent. Run as root, with a server listening on the kernel side:

    python3 -m http.server 8000 &                 # any TCP server will do
    sudo .venv/bin/python examples/client.py --host 10.0.0.1 --port 8000
"""

import argparse
import asyncio

import tcpstack
from tcpstack.api import add_arguments, stack_options


async def main(args: argparse.Namespace) -> None:
    async with tcpstack.open_stack(**stack_options(args)) as stack:
        reader, writer = await tcpstack.open_connection(args.host, args.port, stack=stack)
        print("connected from", writer.get_extra_info("sockname"), flush=True)
        writer.write(f"GET {args.path} HTTP/1.0\r\nHost: {args.host}\r\n\r\n".encode())
        reply = await reader.read()  # until the server closes
        print(reply.decode(errors="replace"), flush=True)
        writer.close()
        await writer.wait_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="an HTTP/1.0 GET from the stack")
    add_arguments(parser)
    parser.add_argument("--host", default="10.0.0.1", help="server address (default 10.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--path", default="/")
    asyncio.run(main(parser.parse_args()))
