"""The reset generator: the answer to a segment that no connection accepts."""

from __future__ import annotations

from tcpstack.core.segment import ACK, RST, Segment
from tcpstack.core.seq import seq_add


def reset_for(seg: Segment) -> Segment | None:
    """RFC 9293 3.10.7.1 (CLOSED state), also used for bad ACKs in LISTEN,
    SYN-SENT and SYN-RECEIVED:

    - an incoming RST is discarded (never answer a reset with a reset);
    - if ACK is off: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>;
    - if ACK is on:  <SEQ=SEG.ACK><CTL=RST>.
    """
    if seg.flags & RST:
        return None
    if seg.flags & ACK:
        seq, ack, flags = seg.ack, 0, RST
    else:
        seq, ack, flags = 0, seq_add(seg.seq, seg.seg_len), RST | ACK
    return Segment(
        src=seg.dst, dst=seg.src, sport=seg.dport, dport=seg.sport,
        seq=seq, ack=ack, flags=flags, window=0,
    )
