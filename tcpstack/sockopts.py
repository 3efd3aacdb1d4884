"""A stand-in for the socket that `get_extra_info('socket')` returns on asyncio.

asyncio code tunes connections with ``sock.setsockopt(...)``; the options
that mean something for a tcpstack connection are honoured, the rest raise
OSError(ENOPROTOOPT) as a real socket does for an unknown option.
"""

from __future__ import annotations

import errno
import socket

from tcpstack.tcb import Tcb


class SocketOptions:
    """The socket-option surface of one connection."""

    def __init__(self, tcb: Tcb) -> None:
        self._tcb = tcb

    def setsockopt(self, level: int, optname: int, value: int | bytes) -> None:
        if (level, optname) == (socket.IPPROTO_TCP, socket.TCP_NODELAY):
            self._tcb.nodelay = bool(int.from_bytes(value, "little") if isinstance(
                value, bytes) else value)
            return
        raise OSError(errno.ENOPROTOOPT, f"option {level}/{optname} is not supported")

    def getsockopt(self, level: int, optname: int) -> int:
        if (level, optname) == (socket.IPPROTO_TCP, socket.TCP_NODELAY):
            return int(self._tcb.nodelay)
        raise OSError(errno.ENOPROTOOPT, f"option {level}/{optname} is not supported")
