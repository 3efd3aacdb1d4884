"""ICMP destination unreachable about our TCP connections (RFC 792, RFC 1122 4.2.3.9).

The codec decodes only echo requests; the stack hands this module the other
ICMP messages addressed to it (their IP header and ICMP checksum already
checked). A destination unreachable quotes the IP header and the first eight
octets of the TCP segment that provoked it: the ports and the sequence number.
Anyone can forge one, so it is believed only when it names an existing
connection and quotes a sequence number that connection has sent and not had
acknowledged (RFC 5927 4.1). A "fragmentation needed" then lowers that
connection's MSS (RFC 1191, `Tcb.lower_mtu`); other codes are only counted: no
connection is aborted (RFC 1122 4.2.3.9: these are soft errors for an
established connection). See docs/ip.md.

Counters, named like Linux's: IcmpInDestUnreachs (every destination
unreachable), IcmpInErrors (one too short to quote a TCP header, or for no
connection of ours, as Linux's tcp_v4_err counts it), OutOfWindowIcmps (a
sequence number outside SND.UNA..SND.NXT). Ours: IcmpInFragNeeded (code 4,
of IcmpInDestUnreachs) and IcmpDestUnreachAccepted (those that passed every check).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from tcpstack.core.seq import seq_le

ICMP_DEST_UNREACH = 3
CODE_FRAG_NEEDED = 4  # RFC 792; RFC 1191 4 puts the next-hop MTU in the unused field
_IPPROTO_TCP = 6

# What the error quotes of our segment: ports and sequence number (RFC 792: 64 bits).
_QUOTED_TCP = struct.Struct(">HHI")
_MTU = struct.Struct(">H")  # RFC 1191 4: the low half of the unused field


class SendSequence(Protocol):
    """The part of a TCB the check reads (tcpstack.core.tcb.Tcb)."""

    snd_una: int
    snd_max: int


ConnKey = tuple[int, bytes, int]  # (local port, remote address, remote port)
#: From a connection's key to its TCB, or None.
Lookup = Callable[[ConnKey], SendSequence | None]


def receive_error(packet: bytes, lookup: Lookup, stats: Counter[str],
                  frag_needed: Callable[[ConnKey, int], None]) -> bool:
    """Count an ICMP message the codec would not decode; False when it is not a
    destination unreachable (the stack then drops it as before, Drop.icmp_type).
    A "fragmentation needed" that passes every check goes to `frag_needed` with
    the connection and the next-hop MTU (RFC 1191 4), unless it gives none.

    `packet` is an IPv4 packet with a 20-octet header to the stack's address
    carrying ICMP whose checksum holds: the codec checked all that first.
    """
    total = struct.unpack_from(">H", packet, 2)[0]
    if packet[20] != ICMP_DEST_UNREACH:
        return False
    stats["IcmpInDestUnreachs"] += 1
    if packet[21] == CODE_FRAG_NEEDED:
        stats["IcmpInFragNeeded"] += 1
    quoted = packet[28:total]  # after type, code, checksum and the 4 unused/MTU octets
    ihl = (quoted[0] & 0x0F) * 4 if quoted else 0
    if (len(quoted) < ihl + _QUOTED_TCP.size or quoted[0] >> 4 != 4 or ihl < 20
            or quoted[9] != _IPPROTO_TCP or quoted[12:16] != packet[16:20]):
        stats["IcmpInErrors"] += 1  # it does not quote a TCP segment we sent
        return True
    sport, dport, seq = _QUOTED_TCP.unpack_from(quoted, ihl)
    key = (sport, bytes(quoted[16:20]), dport)
    tcb = lookup(key)
    if tcb is None:
        stats["IcmpInErrors"] += 1
        return True
    # RFC 5927 4.1: SND.UNA <= SEG.SEQ < SND.NXT. Like Linux (tcp_v4_err's
    # between()), SND.NXT itself passes, and SND.NXT is the highest sent (snd_max).
    if not (seq_le(tcb.snd_una, seq) and seq_le(seq, tcb.snd_max)):
        stats["OutOfWindowIcmps"] += 1
        return True
    stats["IcmpDestUnreachAccepted"] += 1
    mtu = _MTU.unpack_from(packet, 26)[0]
    if packet[21] == CODE_FRAG_NEEDED and mtu:
        frag_needed(key, mtu)
    return True
