"""tcpstack: a userspace TCP/IPv4 stack on asyncio over a Linux TUN device.

The embedding API (docs/embedding.md): `open_stack` brings a stack up on a
TUN device; on it, streams (`Stack.start_server`, `Stack.open_connection`,
or `start_server`/`open_connection` here with asyncio's signatures) or
protocols (`Stack.create_server`, `Stack.create_connection`, `Transport`).
"""

from tcpstack import native

native.install()  # before any module it may load compiled is imported

from tcpstack.api import open_connection, open_stack, start_server
from tcpstack.core.config import TcpConfig
from tcpstack.shell.listener import Server
from tcpstack.shell.stack import Stack
from tcpstack.shell.stream import StreamReader, StreamWriter
from tcpstack.shell.transport import Transport
from tcpstack.wire.tun import TunDevice, TunError

__version__ = "0.1.0"

__all__ = [
    "Server",
    "Stack",
    "StreamReader",
    "StreamWriter",
    "TcpConfig",
    "Transport",
    "TunDevice",
    "TunError",
    "open_connection",
    "open_stack",
    "start_server",
]
