"""What a TCB tells its application and its shell (h11-style small event classes).

Immutable by convention, not frozen: the events with fields write their
`__init__` out (`init=False`) so that the compiled core builds them in C; the
one the dataclass decorator generates runs as interpreted Python (see
`tcpstack.core.segment.Options`), and a TCB emits a `DataReceived` per segment.
"""

from __future__ import annotations

from dataclasses import dataclass

from tcpstack.core.segment import Payload
from tcpstack.core.states import State


@dataclass(slots=True, init=False)
class StateChanged:
    """The TCB moved from `old` to `new`; `cause` says why (for logs and traces)."""

    old: State
    new: State
    cause: str

    def __init__(self, old: State, new: State, cause: str) -> None:
        self.old = old
        self.new = new
        self.cause = cause


@dataclass(slots=True)
class Established:
    """The handshake completed; the application may use the connection."""


@dataclass(slots=True, init=False)
class DataReceived:
    """In-order bytes for the application's receive buffer."""

    data: Payload

    def __init__(self, data: Payload) -> None:
        self.data = data


@dataclass(slots=True)
class EofReceived:
    """The peer sent FIN: no more data will arrive (half-close)."""


@dataclass(slots=True, init=False)
class ConnectionLost:
    """The connection ended. `error` is None for an orderly close, else the
    exception the application sees (ConnectionResetError, ConnectionRefusedError,
    TimeoutError)."""

    error: BaseException | None

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


Event = StateChanged | Established | DataReceived | EofReceived | ConnectionLost
