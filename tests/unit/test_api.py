"""open_stack and the asyncio-shaped helpers: bad arguments are refused before
any device is created (no root needed to check them)."""

from __future__ import annotations

import pytest

import tcpstack
from tcpstack import api
from tcpstack.core.config import TcpConfig
from tcpstack.shell.stack import Stack
from tests.unit.test_stack import VIP, Wire, echo


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"addr": "10.0.1.2"}, ValueError),  # outside --host-addr's subnet
    ({"addr": "10.0.0.1"}, ValueError),  # the kernel side's own address
    ({"host_addr": "10.0.0.300/24"}, ValueError),
    ({"impair": ["loss=150%"]}, ValueError),
    ({"impair_rule": ["sideways:drop"]}, ValueError),
    ({"rcv_bufsize": 1}, TypeError),  # not a TcpConfig field
])
async def test_open_stack_refuses_bad_arguments_before_the_device(kwargs, error,
                                                                 monkeypatch) -> None:
    def no_device(*args, **kw):
        pytest.fail("a TUN device was created for bad arguments")

    monkeypatch.setattr(api, "TunDevice", no_device)
    with pytest.raises(error):
        async with tcpstack.open_stack(**kwargs):
            pass


async def test_start_server_checks_the_host_as_asyncio_would() -> None:
    stack = Stack(VIP, Wire().output, TcpConfig())
    try:
        server = await tcpstack.start_server(echo, VIP, 7, stack=stack)
        assert server.is_serving() and 7 in stack.listeners
        with pytest.raises(OSError):
            await tcpstack.start_server(echo, "10.0.0.9", 8, stack=stack)
    finally:
        await stack.close()
