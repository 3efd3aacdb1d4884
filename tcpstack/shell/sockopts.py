"""A stand-in for the socket that `get_extra_info('socket')` returns on asyncio.

asyncio code tunes connections with ``sock.setsockopt(...)``; the options
that mean something for a tcpstack connection are honoured (TCP_NODELAY,
SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT), the rest raise
OSError(ENOPROTOOPT) as a real socket does for an unknown option.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tcpstack.shell.connection import Connection

#: What makes an option's value of the number given: bool, int or float.
Kind = Callable[[int], float | bool]
#: (level, option) -> (TCB attribute, kind)
_OPTIONS: dict[tuple[int, int], tuple[str, Kind]] = {
    (socket.IPPROTO_TCP, socket.TCP_NODELAY): ("nodelay", bool),
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE): ("keepalive", bool),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE): ("keepalive_idle", float),
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL): ("keepalive_interval", float),
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT): ("keepalive_probes", int),
}


class SocketOptions:
    """The socket-option surface of one connection."""

    #: What libraries check before tuning (aiohttp sets TCP_NODELAY only on an
    #: AF_INET/AF_INET6 socket), as on asyncio's TransportSocket.
    family = socket.AF_INET
    type = socket.SOCK_STREAM
    proto = socket.IPPROTO_TCP

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def getpeername(self) -> tuple[str, int]:
        return self._conn.extra_info("peername")

    def getsockname(self) -> tuple[str, int]:
        return self._conn.extra_info("sockname")

    def _lookup(self, level: int, optname: int) -> tuple[str, Kind]:
        try:
            return _OPTIONS[(level, optname)]
        except KeyError:
            raise OSError(errno.ENOPROTOOPT, f"option {level}/{optname} is not supported") from None

    def setsockopt(self, level: int, optname: int, value: int | bytes) -> None:
        attr, kind = self._lookup(level, optname)
        number = int.from_bytes(value, "little") if isinstance(value, bytes) else value
        if kind is not bool and number <= 0:
            raise OSError(errno.EINVAL, f"{attr} must be positive")
        self._conn.set_option(attr, kind(number))

    def getsockopt(self, level: int, optname: int) -> int:
        attr, _ = self._lookup(level, optname)
        return int(getattr(self._conn.tcb, attr))
