"""How the stack's loss recovery copes: download from the stack over a link
that loses packets, for several loss rates, and measure.

For each rate, a stack is brought up with `--impair loss=RATE` (both
directions), serves SIZE bytes on port 9000, and the kernel (an ordinary asyncio
socket in this same process) downloads them. Printed per rate: the time, the
goodput, and the stack's counters of retransmitted segments, fast retransmits
and retransmission timeouts. Run as root:

    sudo .venv/bin/python examples/lossy_experiment.py --loss 0,1,5,10 --size 5000000
"""

import argparse
import asyncio
import time

import tcpstack
from tcpstack.api import add_arguments, stack_options

PORT = 9000


async def measure(args: argparse.Namespace, loss: float) -> None:
    options = stack_options(args)
    options["impair"] = [*args.impair, f"loss={loss}%,seed=1"]
    async with tcpstack.open_stack(**options) as stack:
        async def source(reader: tcpstack.StreamReader, writer: tcpstack.StreamWriter) -> None:
            writer.write(b"x" * args.size)
            await writer.drain()

        await stack.start_server(source, PORT)
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection(args.addr, PORT)  # the kernel's TCP
        received = len(await reader.read())
        seconds = time.perf_counter() - start
        writer.close()
        stats = stack.stats
        print(f"{loss:5g}% {received:>10} B {seconds:7.2f} s {received / seconds / 1e6:7.2f} MB/s"
              f" {stats['RetransSegs']:>8} {stats['FastRetransmits']:>8}"
              f" {stats['RetransTimeouts']:>8}", flush=True)


async def main(args: argparse.Namespace) -> None:
    print("  loss   received      time    goodput  retrans  fastrtx  timeouts", flush=True)
    for loss in args.loss:
        await measure(args, loss)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="download over a lossy link, measured")
    add_arguments(parser)
    parser.add_argument("--loss", default="0,1,5", type=lambda s: [float(x) for x in s.split(",")],
                        help="loss rates in percent, comma-separated (default 0,1,5)")
    parser.add_argument("--size", type=int, default=2_000_000, help="bytes per download")
    asyncio.run(main(parser.parse_args()))
