"""The ``--impair-rule`` syntax and matching: particular packets picked out for
a drop, a duplicate or a delay.

Rules (`--impair-rule`, repeatable) pick out particular packets instead of a
random share, so a test or a demonstration can lose exactly the segment it is
about (the textbook chapter's lost third segment is the ACK the stack receives while in
SYN-RECEIVED). The syntax is ``DIR:ACTION[:MATCH,MATCH...]``:

* DIR is ``in`` or ``out`` (as for ``--impair``; a rule has one direction).
* ACTION is ``drop``, ``dup`` (one extra copy right behind the packet) or
  ``delay=T`` (T a duration as for ``--impair``: ``20ms``, ``1.5s``, ``500us``).
* MATCH narrows the packets the rule counts: ``flags=SYN+ACK`` (exactly
  these TCP flags, names joined by ``+``), ``flags~ACK`` (at least these),
  ``state=SYN-RECEIVED`` (the connection's state, names as tcpstack prints
  them), ``port=80`` (either end's port) and ``nth=N``, ``nth=A-B`` or
  ``nth=A-`` (which matches, counted from 1, the action applies to; every
  match without ``nth``).

Only TCP packets match. The state is that of the stack's TCB for the
packet's 4-tuple when the packet passes the impairment: inbound, before the
TCB has seen it (packets read in one batch all see the state before any of
them is processed); outbound, after the TCB produced it, at the end of the
batch that produced it. Rules judge a packet when it enters the impairment,
before any delay. Without a TCB the state is LISTEN when the local port has a
listener and CLOSED otherwise. Each rule counts its own matches over the
whole run (not per connection). Rules are tried in the order given; the first
one that picks a packet acts on it and later rules do not see it. Rules come
before the random impairment, which then treats what a rule let through (or
delayed, or duplicated) like any other packet.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Literal, NamedTuple

from tcpstack.core.states import State
from tcpstack.lab.impair_spec import ImpairSpecError, duration_text, parse_value

#: TCP flag names in the order rules print them (SYN+ACK, FIN+ACK, PSH+ACK).
_FLAG_BITS = {"SYN": 0x02, "FIN": 0x01, "RST": 0x04, "PSH": 0x08, "ACK": 0x10,
              "URG": 0x20, "ECE": 0x40, "CWR": 0x80}
_STATES = tuple(str(s) for s in State)
#: Rule actions and the counter suffix (and log verb) of each.
RULE_ACTIONS = {"drop": "Dropped", "dup": "Duplicated", "delay": "Delayed"}
_NTH = re.compile(r"([1-9]\d*)(?:(-)([1-9]\d*)?)?")
_PORTS = struct.Struct("!HH")


class TcpInfo(NamedTuple):
    """What a rule looks at in a packet: addresses (4 bytes each), ports, flags."""

    src: bytes
    dst: bytes
    sport: int
    dport: int
    flags: int

    def __str__(self) -> str:
        """``10.0.0.1:34038 > 10.0.0.2:80 ACK``, for the log."""
        return (f"{IPv4Address(self.src)}:{self.sport} > {IPv4Address(self.dst)}:{self.dport} "
                f"{_flags_text(self.flags)}")


def tcp_info(packet: bytes) -> TcpInfo | None:
    """The 4-tuple and flags of an IPv4/TCP packet, or None for anything else.

    A few slices and one struct unpack rather than the codec: rules look at every
    packet of their direction, most of them only to let it pass. Not TCP, too
    short, or a fragment other than the first (it has no TCP header): None.
    """
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 6:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or len(packet) < ihl + 14 or (packet[6] & 0x1F or packet[7]):
        return None
    sport, dport = _PORTS.unpack_from(packet, ihl)
    return TcpInfo(packet[12:16], packet[16:20], sport, dport, packet[ihl + 13])


def _flags_text(flags: int) -> str:
    return "+".join(name for name, bit in _FLAG_BITS.items() if flags & bit) or "none"


#: Maps a packet to the state of the connection it belongs to (see the module docstring).
StateLookup = Callable[[TcpInfo], str]


def no_connections(tcp: TcpInfo) -> str:
    return str(State.CLOSED)


@dataclass(frozen=True, slots=True)
class ImpairRule:
    """One --impair-rule: which packets it counts, which of them it acts on, how.

    None in a filter means "any". `nth` is (first, last) counted from 1, last
    None for no end; None acts on every match. `number` is the rule's position
    among all rules (from 1), so the log can say which rule hit.
    """

    number: int
    direction: Literal["in", "out"]
    action: Literal["drop", "dup", "delay"]
    delay: float = 0.0
    flags: int | None = None
    flags_exact: bool = True
    state: str | None = None
    port: int | None = None
    nth: tuple[int, int | None] | None = None

    def __str__(self) -> str:
        """The rule in --impair-rule syntax, normalized."""
        action = f"delay={duration_text(self.delay)}" if self.action == "delay" else self.action
        matches = []
        if self.flags is not None:
            matches.append(f"flags{'=' if self.flags_exact else '~'}{_flags_text(self.flags)}")
        if self.state is not None:
            matches.append(f"state={self.state}")
        if self.port is not None:
            matches.append(f"port={self.port}")
        if self.nth is not None:
            first, last = self.nth
            matches.append(f"nth={first}" if first == last else f"nth={first}-{last or ''}")
        return ":".join([self.direction, action] + ([",".join(matches)] if matches else []))

    def matches_header(self, tcp: TcpInfo) -> bool:
        """The flags and port filters (the state is looked up only when these pass)."""
        if self.flags is not None:
            seen = tcp.flags if self.flags_exact else tcp.flags & self.flags
            if seen != self.flags:
                return False
        return self.port is None or self.port in (tcp.sport, tcp.dport)

    def picks(self, n: int) -> bool:
        """Whether the rule acts on its `n`th match."""
        if self.nth is None:
            return True
        first, last = self.nth
        return first <= n and (last is None or n <= last)


def parse_rules(specs: Sequence[str]) -> tuple[ImpairRule, ...]:
    """Parse the --impair-rule values (see the module docstring), numbered from 1.

    Raises ImpairSpecError naming the offending part, like `parse_impair`.
    """
    return tuple(_parse_rule(text, number) for number, text in enumerate(specs, 1))


def _parse_rule(text: str, number: int) -> ImpairRule:
    parts = text.split(":", 2)
    if len(parts) < 2:
        raise ImpairSpecError(f"{text!r}: expected DIR:ACTION[:MATCH,...], "
                              "e.g. in:drop:flags=ACK,state=SYN-RECEIVED,nth=1")
    direction, action_text = parts[0], parts[1]
    if direction not in ("in", "out"):
        raise ImpairSpecError(f"{text!r}: unknown direction {direction!r} (in or out)")
    action, sep, value = action_text.partition("=")
    if action == "delay" and not sep:
        raise ImpairSpecError(f"{text!r}: delay needs a duration, e.g. delay=2s")
    if action not in RULE_ACTIONS or (action == "delay") != bool(sep):
        raise ImpairSpecError(f"{text!r}: unknown action {action_text!r} "
                              "(drop, dup or delay=T)")
    fields_: dict[str, object] = {}
    if action == "delay":
        fields_["delay"] = parse_value(text, "delay", value)
    for item in parts[2].split(",") if len(parts) == 3 else ():
        key, value = _split_match(text, item.strip())
        name = "flags" if key in ("flags", "flags~") else key
        if name in fields_:
            raise ImpairSpecError(f"{text!r}: {name} given twice")
        if name == "flags":
            fields_["flags"] = _parse_flags(text, value)
            fields_["flags_exact"] = key == "flags"
        elif name == "state":
            if value not in _STATES:
                raise ImpairSpecError(f"{text!r}: unknown state {value!r} "
                                      f"(one of {' '.join(_STATES)})")
            fields_["state"] = value
        elif name == "port":
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise ImpairSpecError(f"{text!r}: port={value}: expected 1..65535")
            fields_["port"] = int(value)
        else:
            fields_["nth"] = _parse_nth(text, value)
    return ImpairRule(number, direction, action, **fields_)  # type: ignore[arg-type]


def _split_match(text: str, item: str) -> tuple[str, str]:
    """``flags=ACK`` -> ("flags", "ACK"); ``flags~ACK`` -> ("flags~", "ACK")."""
    m = re.fullmatch(r"(flags~|[a-z]+=)(.*)", item)
    key = m.group(1).rstrip("=") if m else ""
    if m is None or key not in ("flags", "flags~", "state", "port", "nth") or not m.group(2):
        raise ImpairSpecError(f"{text!r}: expected flags=F, flags~F, state=S, port=N or "
                              f"nth=N[-M], got {item!r}")
    return key, m.group(2)


def _parse_flags(text: str, value: str) -> int:
    bits = 0
    for name in value.upper().split("+"):
        if name not in _FLAG_BITS:
            raise ImpairSpecError(f"{text!r}: unknown TCP flag {name!r} "
                                  f"({', '.join(_FLAG_BITS)}; joined by +)")
        bits |= _FLAG_BITS[name]
    return bits


def _parse_nth(text: str, value: str) -> tuple[int, int | None]:
    m = _NTH.fullmatch(value)
    if m is None:
        raise ImpairSpecError(f"{text!r}: nth={value}: expected N, A-B or A- (counted from 1)")
    first = int(m.group(1))
    if not m.group(2):
        return first, first
    last = int(m.group(3)) if m.group(3) else None
    if last is not None and last < first:
        raise ImpairSpecError(f"{text!r}: nth={value}: the range ends before it starts")
    return first, last
