"""`--trace`: one INFO line per state transition, naming both ends and the cause,
including the causes only the stack knows (shutdown, TIME-WAIT reopened)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tcpstack.shell.stack import Stack
from tcpstack.wire import codec
from tests.helpers import idle
from tests.unit.tcpkit import ACK, X, add, peer_syn, seg


@pytest.fixture
def traced(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="tcpstack.trace")
    return caplog


def trace_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tcpstack.trace"]


async def test_handshake_and_shutdown_are_traced_with_their_causes(traced) -> None:
    sent: list[bytes] = []
    stack = Stack("10.0.0.2", sent.append)
    await stack.start_server(idle, 80)
    now = asyncio.get_running_loop().time()
    stack.handle_packet(codec.encode(peer_syn()), now)
    y = codec.decode(sent[0]).seq
    stack.handle_packet(codec.encode(seg(ACK, add(X, 1), add(y, 1))), now)
    conn = next(iter(stack.conns.values()))
    await asyncio.wait_for(conn.established, 1.0)
    await stack.close()
    assert all(r.levelno == logging.INFO for r in traced.records)
    assert trace_lines(traced) == [
        "trace 10.0.0.2:80 10.0.0.1:40000 LISTEN -> SYN-RECEIVED: SYN received, SYN+ACK sent",
        "trace 10.0.0.2:80 10.0.0.1:40000 SYN-RECEIVED -> ESTABLISHED: ACK of SYN+ACK received",
        "trace 10.0.0.2:80 10.0.0.1:40000 ESTABLISHED -> CLOSED: aborted: the stack is "
        "shutting down",
    ]


async def test_nothing_is_traced_below_info(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="tcpstack.trace")
    stack = Stack("10.0.0.2", lambda p: None)
    await stack.start_server(idle, 80)
    stack.handle_packet(codec.encode(peer_syn()), asyncio.get_running_loop().time())
    await stack.close()
    assert trace_lines(caplog) == []
