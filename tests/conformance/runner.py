"""Scripts and how to run many of them concurrently against one target.

A `Script` is a coroutine that plays the peer of one connection and returns
its observations as named facts (``{"reply": "ACK seq=S ack=R", ...}``),
together with the facts it expects. Every script uses its own peer port, so
`run_scripts` runs hundreds at once against one target: the whole matrix
takes seconds instead of minutes, and most of a script's time is waiting
for silence (see `Peer.collect`), which overlaps perfectly.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import traceback
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.conformance.harness import Hub, Link, Peer, ScriptError, seq_add
from tests.conformance.targets import ActiveClient, Target

Facts = dict[str, str]

#: Scripts in flight at once; above this the daemon's single Python thread,
#: not the scripts' waiting, starts to dominate its answer times.
CONCURRENCY = 48
#: A script that has not finished by then has hung (every wait is bounded).
SCRIPT_TIMEOUT = 40.0
FIRST_PEER_PORT = 20000


@dataclass(frozen=True)
class Script:
    """One scripted connection: what to do, and which facts it must observe."""

    id: str
    run: Callable[[Env], Awaitable[Facts]]
    expected: Facts
    doc: str = ""


@dataclass
class Result:
    """What one script observed on one target."""

    facts: Facts
    error: str | None = None
    trace: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class TargetRun:
    """One target's results for a session: what the tests judge."""

    target: str
    results: dict[str, Result]
    hub: Hub
    problems: list[str]  # why the target itself cannot be trusted (a daemon died)
    logs: str
    pcap: Path


class Env:
    """What a script gets: fresh peers on the target's wire, and active clients."""

    def __init__(self, target: Target, hub: Hub, ports: Iterable[int], script_id: str) -> None:
        self.target = target
        self.hub = hub
        self._ports = iter(ports)
        self._seed = zlib.crc32(script_id.encode())
        self.peers: list[Peer] = []
        self.clients: list[ActiveClient] = []

    def isn(self) -> int:
        """The peer's ISN: derived from the script id, so reruns use the same numbers."""
        self._seed = seq_add(self._seed, 0x9E3779B9)
        return self._seed

    def peer(self, target_port: int, link: Link | None = None) -> Peer:
        """A peer on a fresh port of ours, talking to ``target_port`` of the target."""
        peer = Peer(self.hub, link or self.target.link, next(self._ports), target_port,
                    self.isn())
        self.peers.append(peer)
        return peer

    def active(self) -> tuple[Peer, ActiveClient]:
        """Make the target connect to a fresh peer; returns (peer, client process).

        The peer is registered before the client starts, so the target's very
        first SYN is already routed to it.
        """
        link = self.target.active_link()
        peer = Peer(self.hub, link, next(self._ports), 0, self.isn())
        self.peers.append(peer)
        client = self.target.start_client(link, peer.port)
        self.clients.append(client)
        return peer, client

    def close(self) -> None:
        """Unregister the peers and stop leftover clients."""
        for peer in self.peers:
            peer.close()
        for client in self.clients:
            client.close()


async def _run_one(script: Script, target: Target, hub: Hub, ports: Iterable[int],
                   gate: asyncio.Semaphore) -> Result:
    async with gate:
        env = Env(target, hub, ports, script.id)
        started = time.monotonic()
        try:
            facts = await asyncio.wait_for(script.run(env), SCRIPT_TIMEOUT)
            error = None
        except ScriptError as e:
            facts, error = {}, str(e)
        except TimeoutError:
            facts, error = {}, f"script did not finish within {SCRIPT_TIMEOUT}s"
        except Exception:
            facts, error = {}, traceback.format_exc()
        finally:
            env.close()
        trace = [f"[{p.port}>{p.target_port}] {line}" for p in env.peers for line in p.trace]
        return Result(facts, error, trace, time.monotonic() - started)


async def run_scripts(target: Target, scripts: list[Script],
                      concurrency: int = CONCURRENCY) -> tuple[dict[str, Result], Hub]:
    """Run ``scripts`` against ``target``, at most ``concurrency`` at a time."""
    hub = target.new_hub()
    hub.start()
    ports = itertools.count(FIRST_PEER_PORT)  # shared: each Env takes what it needs
    gate = asyncio.Semaphore(concurrency)
    try:
        results = await asyncio.gather(
            *(_run_one(s, target, hub, ports, gate) for s in scripts))
    finally:
        hub.stop()
    return {s.id: r for s, r in zip(scripts, results, strict=True)}, hub
