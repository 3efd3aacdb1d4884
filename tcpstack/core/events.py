"""What a TCB tells its application and its shell (h11-style small event classes)."""

from __future__ import annotations

from dataclasses import dataclass

from tcpstack.core.segment import Payload
from tcpstack.core.states import State


@dataclass(slots=True, frozen=True)
class StateChanged:
    """The TCB moved from `old` to `new`; `cause` says why (for logs and traces)."""

    old: State
    new: State
    cause: str


@dataclass(slots=True, frozen=True)
class Established:
    """The handshake completed; the application may use the connection."""


@dataclass(slots=True, frozen=True)
class DataReceived:
    """In-order bytes for the application's receive buffer."""

    data: Payload


@dataclass(slots=True, frozen=True)
class EofReceived:
    """The peer sent FIN: no more data will arrive (half-close)."""


@dataclass(slots=True, frozen=True)
class ConnectionLost:
    """The connection ended. `error` is None for an orderly close, else the
    exception the application sees (ConnectionResetError, ConnectionRefusedError,
    TimeoutError)."""

    error: BaseException | None


Event = StateChanged | Established | DataReceived | EofReceived | ConnectionLost
