"""The packet pipeline: the taps between a `Stack` and its TUN device, in one order.

A daemon can put two taps on its packet paths, the `--impair` impairment and
the `--pcap` capture, and what the capture shows depends on which of them is
nearer the TUN. That order is stated here, once, per direction, in the order
the packets travel:

    inbound:  TUN read   -> capture -> impairment(in)  -> Stack.handle_packet
    outbound: Stack.send_packet -> impairment(out) -> capture -> TUN write

The capture sits on the TUN side in both directions (`--pcap` records the wire,
outside any `--impair`): it shows an inbound packet the impairment then drops,
and never an outbound one the impairment dropped, but each of its duplicates.

A tap is a pair of stages, one per direction, each a wrapper: given the next
callable towards the path's end it returns the callable to call instead, which
passes the packet on, or drops or holds it. The stack composes its two ends from
the taps it has, whenever one is put (at set-up, never per packet); a position
with no tap adds nothing, so with no tap at all the stack's `output` is the
TUN's write itself and its `receive` is `handle_packet`: no call more per packet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Inbound: a packet as read and the loop time it was read at.
Receive = Callable[[bytes, float], None]
#: Outbound: a packet for the device (BlockingIOError when its queue is full).
Send = Callable[[bytes], object]

INBOUND = ("capture", "impairment")  # from the TUN read to the stack
OUTBOUND = ("impairment", "capture")  # from the stack to the TUN write


@dataclass(frozen=True)
class Tap:
    """One tap's stages; a direction it leaves alone is None."""

    inbound: Callable[[Receive], Receive] | None = None
    outbound: Callable[[Send], Send] | None = None


class Pipeline:
    """The taps put on one stack's paths, by position (INBOUND, OUTBOUND)."""

    def __init__(self) -> None:
        self._taps: dict[str, Tap] = {}

    def put(self, position: str, tap: Tap) -> None:
        """Put `tap` at `position`, in place of any tap there before."""
        if position not in INBOUND:  # the same positions on both paths
            raise ValueError(f"no position {position!r} on the packet paths")
        self._taps[position] = tap

    def receive(self, end: Receive) -> Receive:
        """The inbound path's head, for the TUN reader; `end` itself with no tap."""
        for stage in self._stages(INBOUND, "inbound"):
            end = stage(end)
        return end

    def output(self, end: Send) -> Send:
        """The outbound path's head, for the stack; `end` itself with no tap."""
        for stage in self._stages(OUTBOUND, "outbound"):
            end = stage(end)
        return end

    def _stages(self, order: tuple[str, ...], direction: str) -> list[Callable]:
        """The stages of one direction from its end outwards: the order they wrap in."""
        taps = [self._taps[p] for p in reversed(order) if p in self._taps]
        return [s for s in (getattr(tap, direction) for tap in taps) if s is not None]
