"""TCP connection states (RFC 9293 3.3.2), named as in the RFC."""

from enum import Enum


class State(Enum):
    """The states of a TCB; LISTEN is held by listeners, the rest by connections."""

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RCVD = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    def __str__(self) -> str:
        return self.value

    # Enum hashes a member by its name, in Python (~0.5 µs), and the hot path asks
    # `state in RECEIVING` per segment; members are singletons compared by identity,
    # so the identity hash (in C) is as good and a tenth of the cost.
    __hash__ = object.__hash__


#: States in which the connection is synchronized (RFC 9293 3.5): both ISNs known.
SYNCHRONIZED = frozenset(
    {
        State.ESTABLISHED,
        State.FIN_WAIT_1,
        State.FIN_WAIT_2,
        State.CLOSE_WAIT,
        State.CLOSING,
        State.LAST_ACK,
        State.TIME_WAIT,
    }
)

#: States in which received text is delivered to the user (RFC 9293 3.10.7.4, seventh).
RECEIVING = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2})

#: States in which the user may still send (RFC 9293 3.10.2).
SENDING = frozenset({State.ESTABLISHED, State.CLOSE_WAIT})

#: States in which ABORT sends a reset (RFC 9293 3.10.5): the rest close without one.
RESET_ON_ABORT = frozenset(
    {State.SYN_RCVD, State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSE_WAIT}
)

#: States in which queued data and our FIN go out (RFC 9293 3.10.2, 3.10.4): SENDING,
#: and after our close until the FIN is acknowledged. A frozenset, not a tuple of
#: members: looking a member up on the Enum class costs four times a plain class
#: attribute (EnumType's __getattr__ hook, Python 3.11), and this runs per segment.
TRANSMITTING = frozenset(
    {State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1, State.CLOSING, State.LAST_ACK}
)

#: States after which the TCB is gone: CLOSED, or LISTEN for a passive TCB that was reset.
FINISHED = frozenset({State.CLOSED, State.LISTEN})
