"""Loss recovery of one connection's sender, sans I/O: duplicate ACKs, fast
retransmit and recovery (RFC 5681 3.2, RFC 6582 NewReno's partial ACKs), and
SACK-based recovery over the scoreboard (RFC 6675).

Apart from the TCB, as aioquic keeps its loss recovery apart from the
connection: the decisions (is this loss? what is in the pipe? what goes next?)
are units that tests drive with a small scoreboard, and `tcb.py` keeps the
sequence variables and sends. The TCB passes its send sequence variables in
each call (they move with every ACK), so nothing here reads the TCB.
What is retransmitted goes through the congestion window the caller passes;
the congestion controller itself stays the TCB's (`tcpstack.core.cc`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from tcpstack.core.scoreboard import Scoreboard
from tcpstack.core.seq import seq_add, seq_diff, seq_le, seq_lt

if TYPE_CHECKING:
    from tcpstack.core.cc.base import CongestionControl

DUPTHRESH: Final = 3  # RFC 5681 3.2, RFC 6675 2


class Recovery:
    """Duplicate ACK count, recovery point and the next hole to retransmit."""

    __slots__ = ("dupacks", "recover", "recover_high", "rexmit_next", "scoreboard")

    def __init__(self, scoreboard: Scoreboard, iss: int) -> None:
        self.scoreboard = scoreboard  # SACKed octets above SND.UNA (RFC 6675 2)
        self.dupacks = 0
        self.recover: int | None = None  # recovery point while in fast recovery
        self.recover_high = iss  # RFC 6582 "recover": no new recovery below it
        self.rexmit_next = iss  # next octet of a hole to retransmit in recovery

    def on_dupack(self, snd_una: int, snd_max: int, mss: int, sack_ok: bool) -> bool:
        """Count a duplicate ACK; True when it starts fast retransmit (and recovery).

        In recovery a duplicate ACK only clocks out more data. Otherwise the
        third one, or enough SACKed data (RFC 6675 IsLost), is a loss."""
        self.dupacks += 1
        if self.recover is not None:
            return False
        lost = self.dupacks >= DUPTHRESH or (
            sack_ok and self.scoreboard.sacked() > (DUPTHRESH - 1) * mss)
        # RFC 6582 3.2 step 1: no second reduction for losses of the same window, so
        # without SACK the ACK must cover more than "recover". With SACK, recovery is
        # over once SND.UNA reaches RecoveryPoint, and a new one may start right
        # away (RFC 6675 5 and 5.1: "until HighACK >= RecoveryPoint"; Linux too).
        done = seq_le if sack_ok else seq_lt
        if not lost or not done(self.recover_high, snd_una):
            return False
        self.recover = self.recover_high = snd_max
        self.rexmit_next = snd_una
        return True

    def on_new_ack(self, ack: int, acked: int, now: float, srtt: float | None,
                   cc: CongestionControl) -> bool:
        """SND.UNA advanced to `ack` by `acked` octets: grow the congestion window
        outside recovery, end recovery at a full acknowledgment (RFC 6582 3.2
        step 3). True for a partial ACK (step 2): the octets at `ack` are lost too
        and the caller retransmits (`next_segments` with force)."""
        self.scoreboard.prune(ack)
        self.dupacks = 0
        recover = self.recover
        if recover is None:
            if acked > 0:
                cc.on_ack(acked, now, srtt)
            return False
        if seq_le(recover, ack):
            self.recover = None  # RFC 6582 3.2 step 3: full acknowledgment
            cc.on_recovery_end()
            return False
        # RFC 6582 3.2 step 2: a partial ACK; retransmission goes on from it.
        if seq_lt(self.rexmit_next, ack):
            self.rexmit_next = ack
        return True

    def on_timeout(self, snd_max: int, repeated: bool) -> None:
        """The retransmission timer expired: recovery ends, and none starts for
        losses below `snd_max` (RFC 6582 3.2 step 4). After a `repeated` timeout
        without progress the receiver may have reneged on what it SACKed
        (RFC 2018 8), so the scoreboard is no longer trusted."""
        self.recover = None
        self.recover_high = snd_max
        if repeated:
            self.scoreboard.clear()
        self.dupacks = 0

    def lost_end(self, snd_una: int, data_end: int, mss: int) -> int:
        """End of the octets presumed lost in recovery: the holes with more than
        (DupThresh - 1) * SMSS SACKed above them (RFC 6675 IsLost), and at least
        the segment at SND.UNA (RFC 6582); never beyond the data (`data_end`: a
        lost FIN is left to the RTO)."""
        first = seq_add(snd_una, mss)
        end = self.scoreboard.lost_below(snd_una, (DUPTHRESH - 1) * mss)
        if seq_lt(end, first):
            end = first
        return end if seq_lt(end, data_end) else data_end

    def pipe(self, snd_una: int, snd_nxt: int, snd_max: int, data_end: int, mss: int,
             sack_ok: bool) -> int:
        """RFC 6675 "pipe": octets believed to be in the network."""
        sacked = self.scoreboard
        if self.recover is None:
            # Below SND.NXT only: going back N, octets SACKed further up are not
            # part of what has been (re)sent since the timeout.
            return seq_diff(snd_nxt, snd_una) - sacked.sacked_below(snd_nxt)
        out = seq_diff(snd_max, snd_una)
        gone = sacked.sacked() if sack_ok else min(self.dupacks * mss, out)
        start = self.rexmit_next if seq_lt(snd_una, self.rexmit_next) else snd_una
        lost = sacked.unsacked(start, self.lost_end(snd_una, data_end, mss))
        return max(0, out - gone - lost)

    def next_segments(self, snd_una: int, snd_nxt: int, snd_max: int, data_end: int,
                      mss: int, sack_ok: bool, cwnd: int, *, force: bool = False,
                      ) -> Iterator[tuple[int, int]]:
        """RFC 6675 NextSeg: (sequence number, length) of each presumed-lost piece
        the peer does not hold, at most one MSS each, while the pipe leaves room in
        `cwnd`; `force` yields the first one regardless (RFC 6675 5 step 4,
        RFC 6582 3.2 step 2). Each piece counts as retransmitted once the caller
        asks for the next."""
        if seq_lt(self.rexmit_next, snd_una):
            self.rexmit_next = snd_una
        for start, end in self.scoreboard.holes(self.rexmit_next,
                                                self.lost_end(snd_una, data_end, mss)):
            while seq_lt(start, end):
                if not force and self.pipe(snd_una, snd_nxt, snd_max, data_end, mss,
                                           sack_ok) >= cwnd:
                    return
                force = False
                n = min(seq_diff(end, start), mss)
                yield start, n
                start = seq_add(start, n)
                self.rexmit_next = start
