"""The servers behind the conformance scripts, one behaviour per port.

tcpstack runs the handlers below (registered for `tcpstack serve` by
`daemon.py`); the Linux target runs the same four behaviours on the kernel's
sockets (`kernel_apps.py`), written with plain socket calls because an
asyncio transport reads on the application's behalf, and for Linux whether
data (or the peer's FIN) is still queued unread changes the answer to some
segments (a segment at the right window edge is taken only when nothing is
queued).

Which server drives a connection into which state (see `matrix.py`):

- ``echo`` (tcpstack's own RFC 862 app): ESTABLISHED while idle; when the
  peer sends FIN it closes, so withholding the ACK of its FIN holds LAST-ACK.
- ``hold``: never reads, never closes, so after the peer's FIN the
  connection stays in CLOSE-WAIT (an echo app would move on to LAST-ACK).
- ``halfclose``: shuts down its sending side at once (FIN) and never reads
  nor closes, so the socket stays alive in FIN-WAIT-1 and FIN-WAIT-2, and
  CLOSING and TIME-WAIT follow: the RFC 9293 states as such.
- ``closer``: closes at once, the usual "server closes first" (an HTTP/1.0
  server). Linux makes such a socket an orphan whose FIN-WAIT-2 is a
  time-wait mini-socket and whose late data is answered with RST (RFC 1122
  4.2.2.13), so its rows show what a real server's peer sees.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tcpstack.apps.echo import handle_echo

PEER_GONE = (ConnectionError, TimeoutError)


async def _until_shutdown() -> None:
    """Wait until the server shuts down (the task is cancelled then)."""
    await asyncio.Event().wait()


async def handle_hold(reader: Any, writer: Any) -> None:
    """Accept, then neither read nor close."""
    await _until_shutdown()


async def handle_halfclose(reader: Any, writer: Any) -> None:
    """Send FIN first (half-close), then neither read nor close."""
    writer.write_eof()
    await _until_shutdown()


async def handle_closer(reader: Any, writer: Any) -> None:
    """Close at once: the server closes first and reads nothing."""
    writer.close()
    with contextlib.suppress(*PEER_GONE):
        await writer.wait_closed()


#: Conformance apps by name, as `--app KIND:PORT` takes them.
APPS = {"echo": handle_echo, "hold": handle_hold, "halfclose": handle_halfclose,
        "closer": handle_closer}

#: The ports every target serves them on.
PORTS = {"echo": 7, "hold": 10, "halfclose": 11, "closer": 12}
ECHO, HOLD, HALFCLOSE, CLOSER = (PORTS[k] for k in ("echo", "hold", "halfclose", "closer"))
#: A port nothing listens on.
CLOSED_PORT = 1
