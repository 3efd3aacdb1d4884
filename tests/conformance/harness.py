"""The packet-level peer: inject IPv4/TCP segments, read the target's answers.

A conformance script plays the remote end of a connection, packetdrill style:
it sends segments whose sequence numbers are stated relative to the
connection (x is the peer's ISN, y the target's, so "SYN x", "ACK x+1 y+1"),
and checks what comes back. The same script runs against two targets (see
`targets.py`); this module knows nothing about them beyond a `Wire`: a way to
put a packet in front of the target and a file descriptor on which the
target's packets show up.

`Hub` reads that descriptor, checks every packet (IPv4 and TCP checksums, so
a target that emits a broken packet is caught) and hands each TCP segment to
the `Peer` that owns the destination port; every scripted connection uses its
own peer port, so hundreds of scripts share one target concurrently.

Answers are compared as text: `Frame.render` writes a segment relative to
the connection's variables just before the stimulus (S = the target's
SND.NXT, R = its RCV.NXT), e.g. ``ACK seq=S ack=R+4``, and `normalize`
removes what two correct stacks may legitimately do differently (a pure ACK
that a later segment repeats, e.g. Linux's delayed ACK merged into its
FIN+ACK against tcpstack's separate ACK). Retransmissions that a timer
caused rather than the stimulus never reach a script (see `Peer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import dpkt

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
FLAG_NAMES = ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (ACK, "ACK"), (URG, "URG"),
              (ECE, "ECE"), (CWR, "CWR"))
MOD = 1 << 32
#: Relative values are written as NAME+d up to this distance; beyond it the
#: number belongs to another sequence space (a new ISN) and is written "?".
REL_LIMIT = 1 << 18
#: Handshake retransmission timers start at 1 s on both targets; a SYN+ACK
#: repeated sooner is an answer, not a timer.
SYN_TIMER_FLOOR = 0.9

OPT_EOL, OPT_NOP, OPT_MSS, OPT_WSCALE, OPT_SACK_PERM, OPT_SACK, OPT_TS = 0, 1, 2, 3, 4, 5, 8


class ScriptError(AssertionError):
    """A script's expectation about the wire was not met (or the wire broke)."""


def seq_diff(a: int, b: int) -> int:
    """a - b as a signed distance in sequence space (RFC 9293 3.4 arithmetic)."""
    d = (a - b) % MOD
    return d - MOD if d >= 1 << 31 else d


def seq_add(a: int, n: int) -> int:
    """a + n modulo 2**32."""
    return (a + n) % MOD


def flags_text(flags: int) -> str:
    """``SYN|ACK``-style names, PSH left out: whether a sender sets PSH is its choice."""
    return "|".join(name for bit, name in FLAG_NAMES if flags & bit) or "NULL"


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


def mss_option(mss: int) -> bytes:
    """The MSS option (RFC 9293 3.2), the only one the matrix scripts send."""
    return struct.pack(">BBH", OPT_MSS, 4, mss)


def all_options(mss: int, tsval: int, wscale: int) -> bytes:
    """MSS, SACK-permitted, timestamps and window scale, in Linux's own layout."""
    return (struct.pack(">BBH", OPT_MSS, 4, mss)
            + struct.pack(">BBBBII", OPT_SACK_PERM, 2, OPT_TS, 10, tsval, 0)
            + bytes((OPT_NOP, OPT_WSCALE, 3, wscale)))


def options_text(raw: bytes) -> str:
    """A stable summary of the options a target sent, e.g. ``mss=1460,sack,ts,ws``.

    The MSS value is kept (both targets derive it from the same MTU); the
    window scale shift and timestamp values depend on buffer sizes and clocks,
    so only their presence is compared.
    """
    parts = []
    for kind, value in dpkt.tcp.parse_opts(raw):
        if kind in (OPT_EOL, OPT_NOP):
            continue
        if kind == OPT_MSS and len(value) == 2:
            parts.append(f"mss={struct.unpack('>H', value)[0]}")
        elif kind == OPT_WSCALE:
            parts.append("ws")
        elif kind == OPT_SACK_PERM:
            parts.append("sack")
        elif kind == OPT_TS:
            parts.append("ts")
        elif kind == OPT_SACK:
            parts.append("sackblocks")
        else:
            parts.append(f"opt{kind}")
    return ",".join(parts) or "none"


# --------------------------------------------------------------------------
# Segments
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Seg:
    """One TCP segment as seen on the wire (either direction)."""

    t: float
    sport: int
    dport: int
    flags: int
    seq: int
    ack: int
    win: int
    payload: bytes = b""
    opts: bytes = b""

    @property
    def seg_len(self) -> int:
        """SEG.LEN: payload plus one each for SYN and FIN (RFC 9293 3.4)."""
        return len(self.payload) + bool(self.flags & SYN) + bool(self.flags & FIN)

    @property
    def end(self) -> int:
        """The first sequence number after this segment."""
        return seq_add(self.seq, self.seg_len)

    @property
    def pure_ack(self) -> bool:
        """ACK and nothing else that occupies sequence space or resets."""
        return self.flags & ~(PSH | ECE | CWR) == ACK and not self.payload

    def raw(self) -> str:
        """Absolute numbers, for logs."""
        return f"{self.sport}>{self.dport} {self.text(str(self.seq), str(self.ack))}"

    def text(self, seq: str, ack: str) -> str:
        """Flags, the given seq/ack renderings (ack only with the ACK flag), window,
        length and options: the one layout of both the absolute and relative views."""
        text = f"{flags_text(self.flags)} seq={seq}"
        if self.flags & ACK:
            text += f" ack={ack}"
        text += f" win={self.win}"
        if self.payload:
            text += f" len={len(self.payload)}"
        if self.opts:
            text += f" <{options_text(self.opts)}>"
        return text


def encode(src: str, dst: str, seg: Seg) -> bytes:
    """A complete IPv4 packet for ``seg`` with valid checksums (dpkt fills them in)."""
    opts = seg.opts + b"\x00" * (-len(seg.opts) % 4)
    tcp = dpkt.tcp.TCP(
        sport=seg.sport, dport=seg.dport, seq=seg.seq, ack=seg.ack, flags=seg.flags,
        win=seg.win, opts=opts, off=5 + len(opts) // 4, data=seg.payload,
    )
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=6, ttl=64,
                    id=0, df=1, data=tcp)
    return bytes(ip)


def _checksum_ok(data: bytes, initial: int = 0) -> bool:
    return dpkt.in_cksum_done(dpkt.in_cksum_add(initial, data)) == 0


@dataclass(frozen=True)
class Packet:
    """A decoded IPv4 packet from the target side, with its checks."""

    src: str
    dst: str
    proto: int
    seg: Seg | None  # None unless TCP
    checksums_ok: bool


def decode(data: bytes, t: float) -> Packet | None:
    """Parse one IPv4 packet; None for anything that is not IPv4."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 0x0F) * 4
    try:
        ip = dpkt.ip.IP(data)
    except (dpkt.UnpackError, struct.error, ValueError):
        return None
    src, dst = socket.inet_ntoa(ip.src), socket.inet_ntoa(ip.dst)
    ok = _checksum_ok(data[:ihl])
    if ip.p != 6 or not isinstance(ip.data, dpkt.tcp.TCP):
        return Packet(src, dst, ip.p, None, ok)
    body = data[ihl:ip.len]
    pseudo = dpkt.in_cksum_add(0, struct.pack(">4s4sxBH", ip.src, ip.dst, 6, len(body)))
    ok = ok and _checksum_ok(body, pseudo)
    tcp = ip.data
    off = tcp.off * 4
    seg = Seg(t=t, sport=tcp.sport, dport=tcp.dport, flags=tcp.flags, seq=tcp.seq,
              ack=tcp.ack, win=tcp.win, payload=bytes(body[off:]), opts=bytes(body[20:off]))
    return Packet(src, dst, 6, seg, ok)


# --------------------------------------------------------------------------
# Rendering relative to the connection
# --------------------------------------------------------------------------


def rel(value: int, base: int, name: str) -> str:
    """``name``, ``name+d`` or ``name-d``; ``?`` when ``value`` is from another space."""
    d = seq_diff(value, base)
    if d == 0:
        return name
    if abs(d) <= REL_LIMIT:
        return f"{name}{d:+d}"
    return "0" if value == 0 else "?"


@dataclass(frozen=True)
class Frame:
    """The reference point for writing segments down.

    Sequence numbers of the target are written relative to S (its SND.NXT),
    or as ISS / ISN' (a new incarnation's ISN) for SYNs and what follows a new
    ISN; acknowledgment numbers relative to R (its RCV.NXT) or, when closer,
    to SEG.SEQ of the stimulus: an answer to a segment placed W/2 into the
    window acknowledges SEG.SEQ+1 whatever W the target advertised, so the
    text is the same for targets with different windows.
    """

    snd_nxt: int  # S: the target's SND.NXT as the peer knows it
    rcv_nxt: int  # R: the target's RCV.NXT, i.e. the peer's next sequence number
    iss: int | None = None  # y; a SYN with another seq carries a new ISN
    seg_seq: int | None = None  # SEG.SEQ of the stimulus
    new_iss: int | None = None  # the ISN of a new incarnation seen since

    def _seq(self, seg: Seg) -> str:
        if seg.flags & SYN:
            if self.iss is None:
                return "ISN"  # no connection before: any ISN is new
            if seg.seq == self.iss:
                return "ISS"
            # A new incarnation's ISN: RFC 1122 4.2.2.13 wants it beyond the old SND.NXT.
            return "ISN'>S" if seq_diff(seg.seq, self.snd_nxt) > 0 else "ISN'<=S"
        if seg.flags & RST and seg.seq == 0:
            return "0"  # the reset generator's answer to a segment without ACK
        if self.new_iss is not None and 0 <= seq_diff(seg.seq, self.new_iss) <= REL_LIMIT:
            return rel(seg.seq, self.new_iss, "ISN'")
        return rel(seg.seq, self.snd_nxt, "S")

    def _ack(self, seg: Seg) -> str:
        if self.seg_seq is not None and (
                abs(seq_diff(seg.ack, self.seg_seq)) < abs(seq_diff(seg.ack, self.rcv_nxt))):
            return rel(seg.ack, self.seg_seq, "SEG.SEQ")
        return rel(seg.ack, self.rcv_nxt, "R")

    def render(self, seg: Seg) -> str:
        """One segment as text relative to this frame."""
        text = f"{flags_text(seg.flags)} seq={self._seq(seg)}"
        if seg.flags & ACK:
            text += f" ack={self._ack(seg)}"
        if seg.payload:
            text += f" len={len(seg.payload)}"
        return text

    def render_all(self, segs: Iterable[Seg]) -> str:
        """A normalized answer as one string; ``-`` for silence."""
        return "; ".join(self.render(s) for s in normalize(segs)) or "-"


def normalize(segs: Iterable[Seg]) -> list[Seg]:
    """Drop each pure ACK that the next segment repeats (same seq, ACK at least as far).

    Two correct stacks may split one answer differently: Linux delays the
    ACK of a FIN by up to 40 ms and folds it into its own FIN+ACK when the
    application closes in time, tcpstack acknowledges at once and sends the
    FIN separately; an echoed byte may or may not carry the ACK for what
    arrived. What the peer learns is the same, so it is compared the same.
    """
    out: list[Seg] = []
    for seg in segs:
        while (out and out[-1].pure_ack and seg.flags & ACK and seg.seq == out[-1].seq
               and seq_diff(seg.ack, out[-1].ack) >= 0):
            out.pop()
        out.append(seg)
    return out


# --------------------------------------------------------------------------
# Wires and the hub
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """One path to the target: the interface packets are put on and the addresses."""

    ifname: str
    peer_ip: str  # the scripted peer; the namespace's kernel does not own it
    target_ip: str  # the target's address behind the interface


class Wire:
    """How packets reach the target and how its packets are read: see targets.py."""

    def fileno(self) -> int:
        """A non-blocking descriptor that becomes readable when packets arrive."""
        raise NotImplementedError

    def send(self, link: Link, packet: bytes) -> None:
        """Put one IPv4 packet in front of the target."""
        raise NotImplementedError

    def read(self) -> tuple[bytes, bool, float] | None:
        """One packet, whether it travels *from* the target, and when it passed the
        device (loop clock; the kernel's timestamp, so a busy test process does not
        skew timer measurements), or None when nothing is waiting."""
        raise NotImplementedError


@dataclass
class Hub:
    """Reads the wire and routes each TCP segment to the peer owning its port.

    Everything is kept for the report: `log` has every packet both ways (for
    a pcap on failure), `bad_checksums` the target's broken packets,
    `noise` whatever the namespace's kernel put on the wire by itself (with
    the scripted peer's address not its own it must stay silent, or the
    targets would not see the same conversation).
    """

    wire: Wire
    peer_ips: set[str] = field(default_factory=set)
    log: list[tuple[float, bytes]] = field(default_factory=list)
    bad_checksums: list[str] = field(default_factory=list)
    noise: list[str] = field(default_factory=list)
    strays: int = 0
    _peers: dict[int, Peer] = field(default_factory=dict)

    def start(self) -> None:
        """Start reading on the running loop."""
        asyncio.get_running_loop().add_reader(self.wire.fileno(), self._readable)

    def stop(self) -> None:
        """Stop reading."""
        asyncio.get_running_loop().remove_reader(self.wire.fileno())

    def register(self, peer: Peer) -> None:
        """Route segments for ``peer.port`` to ``peer``."""
        if peer.port in self._peers:
            raise RuntimeError(f"peer port {peer.port} is already in use")
        self._peers[peer.port] = peer
        self.peer_ips.add(peer.link.peer_ip)

    def unregister(self, peer: Peer) -> None:
        """Later segments for the port are counted as strays and dropped."""
        self._peers.pop(peer.port, None)

    def send(self, link: Link, packet: bytes) -> None:
        """Inject one packet and keep it for the log."""
        self.log.append((asyncio.get_running_loop().time(), packet))
        self.wire.send(link, packet)

    def poll(self) -> None:
        """Read everything that is waiting on the wire now, without waiting."""
        self._readable()

    def _readable(self) -> None:
        while (item := self.wire.read()) is not None:
            data, from_target, t = item
            pkt = decode(data, t)
            if pkt is None:
                self.log.append((t, data))
                self.noise.append(f"non-IPv4 packet of {len(data)} bytes")
                continue
            if not from_target:
                if pkt.src not in self.peer_ips:  # else: our own injection, logged by send()
                    self.log.append((t, data))
                    self.noise.append(f"kernel sent {pkt.src} > {pkt.dst} proto {pkt.proto}")
                continue
            self.log.append((t, data))
            if pkt.seg is None or pkt.dst not in self.peer_ips:
                self.noise.append(f"{pkt.src} > {pkt.dst} proto {pkt.proto}")
                continue
            if not pkt.checksums_ok:
                self.bad_checksums.append(pkt.seg.raw())
            peer = self._peers.get(pkt.seg.dport)
            if peer is None:
                self.strays += 1
            else:
                peer.deliver(pkt.seg)

    def write_pcap(self, path: str) -> None:
        """Everything seen and sent, as a LINKTYPE_RAW pcap for tshark/wireshark."""
        wall = time.time() - time.monotonic()  # the log is on the loop's (monotonic) clock
        with open(path, "wb") as fh:
            writer = dpkt.pcap.Writer(fh, linktype=dpkt.pcap.DLT_RAW)
            for t, data in sorted(self.log, key=lambda item: item[0]):
                writer.writepkt(data, ts=t + wall)


# --------------------------------------------------------------------------
# The scripted peer
# --------------------------------------------------------------------------


class Peer:
    """The remote end of one connection, driven by a script.

    Bookkeeping follows the peer's view: ``x`` is its ISN and ``snd_nxt`` its
    next sequence number; ``y`` is the target's ISS once a SYN from the
    target has been seen, ``high`` the end of the highest sequence number the
    target has sent, and ``wnd`` the window the target last advertised.
    Segments that only repeat what the target already sent (a timer-driven
    retransmission of its SYN+ACK, data or FIN) are kept in ``rtx`` and not
    returned by `next`: a script asks what the target answers, and a
    retransmission is not an answer to anything.
    """

    def __init__(self, hub: Hub, link: Link, port: int, target_port: int, x: int) -> None:
        self.hub = hub
        self.link = link
        self.port = port
        self.target_port = target_port
        self.x = x
        self.snd_nxt = x
        self.y: int | None = None
        self.new_isn: int | None = None  # the ISN of a new incarnation (TIME-WAIT reopened)
        self._last_syn: float | None = None
        self.high: int | None = None
        self.wnd = 0
        self.rtx: list[Seg] = []
        self.trace: list[str] = []
        self._pending: deque[Seg] = deque()
        self._arrived = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        hub.register(self)

    def now(self) -> float:
        """The event loop's clock, the one segment timestamps use."""
        return self._loop.time()

    def close(self) -> None:
        """Stop receiving; the port's later segments are strays."""
        self.hub.unregister(self)

    # -- the target's side ------------------------------------------------

    def deliver(self, seg: Seg) -> None:
        """Called by the hub for every segment addressed to this peer."""
        self._pending.append(seg)
        self._arrived.set()

    def _is_retransmission(self, seg: Seg) -> bool:
        if self.high is None or seg.seg_len == 0:
            return False
        if seg.flags & SYN:
            if seg.seq != self.y:
                return False  # a new incarnation's SYN (new ISN) is never a retransmission
            # A SYN+ACK repeated sooner than any handshake timer (1 s on both
            # targets) answers something: our retransmitted SYN.
            return self._last_syn is not None and seg.t - self._last_syn >= SYN_TIMER_FLOOR
        return seq_diff(seg.end, self.high) <= 0

    def _note(self, direction: str, seg: Seg) -> None:
        self.trace.append(f"{seg.t - self._t0:7.3f} {direction} {self.describe(seg)}")

    def describe(self, seg: Seg) -> str:
        """x/y-relative text for traces: ``SYN|ACK seq=y ack=x+1 win=64240``."""
        def side(v: int, base: int | None, name: str) -> str:
            return str(v) if base is None else rel(v, base, name)

        ours = seg.sport == self.port
        return seg.text(side(seg.seq, self.x if ours else self.y, "x" if ours else "y"),
                        side(seg.ack, self.y if ours else self.x, "y" if ours else "x"))

    def _accept(self, seg: Seg) -> bool:
        """Update bookkeeping; False when ``seg`` is a retransmission."""
        if self._is_retransmission(seg):
            self.rtx.append(seg)
            self._note("< rtx", seg)
            return False
        self._note("<", seg)
        if seg.flags & SYN:
            if self.y is None:
                self.y = seg.seq
            elif seg.seq != self.y:
                self.new_isn = seg.seq
            self._last_syn = seg.t
        if seg.seg_len and (self.high is None or seq_diff(seg.end, self.high) > 0):
            self.high = seg.end
        if not seg.flags & RST:
            self.wnd = seg.win
        return True

    async def _wait_pending(self, deadline: float) -> bool:
        """Wait (until ``deadline``) for a segment; at the deadline, read what is
        already on the wire first. False when there is none."""
        while not self._pending:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                self.hub.poll()
                return bool(self._pending)
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return True

    async def next(self, timeout: float) -> Seg | None:
        """The next segment that is not a retransmission, or None after ``timeout``."""
        deadline = self._loop.time() + timeout
        while await self._wait_pending(deadline):
            seg = self._pending.popleft()
            if self._accept(seg):
                return seg
        return None

    async def collect(self, within: float) -> list[Seg]:
        """Every new segment the target sends within ``within`` seconds from now.

        The only wait in the harness whose length matters: it is how long
        silence has to last to count as "no answer". Segments count by when
        the target sent them (kernel timestamps), not by when this process
        got round to reading them. Scripts keep the window well above both
        targets' reaction times (Linux's 40 ms delayed ACK, tcpstack's
        scheduling under load).
        """
        deadline = self._loop.time() + within
        out = []
        while await self._wait_pending(deadline):
            seg = self._pending[0]
            if seg.t > deadline:
                break  # sent after the window: it answers what comes next
            self._pending.popleft()
            if self._accept(seg):
                out.append(seg)
        return out

    async def expect(self, flags: int, timeout: float = 3.0, *, what: str = "",
                     skip_pure_acks: bool = False) -> Seg:
        """The next segment, which must have exactly ``flags`` (PSH ignored).

        ``skip_pure_acks`` passes over bare ACKs first: Linux may send a
        delayed ACK before the segment the script waits for, tcpstack may not.
        """
        while True:
            seg = await self.next(timeout)
            if seg is None:
                raise ScriptError(f"expected {flags_text(flags)} {what} within {timeout}s; "
                                  "got nothing")
            if skip_pure_acks and seg.pure_ack and flags != ACK:
                continue
            if seg.flags & ~PSH != flags:
                raise ScriptError(f"expected {flags_text(flags)} {what}; got "
                                  f"{self.describe(seg)}")
            return seg

    # -- the peer's side --------------------------------------------------

    def send(self, flags: int, *, seq: int | None = None, ack: int | None = None,
             payload: bytes = b"", win: int = 65535, opts: bytes = b"",
             advance: bool = True) -> Seg:
        """Send one segment; ``seq`` defaults to our SND.NXT, ``ack`` to the target's.

        With ``advance`` a segment sent at SND.NXT moves SND.NXT past itself,
        as a real sender's would; stimuli placed elsewhere never move it.
        """
        if seq is None:
            seq = self.snd_nxt
        if ack is None:
            ack = self.high if self.high is not None else 0
        seg = Seg(t=self._loop.time(), sport=self.port, dport=self.target_port,
                  flags=flags, seq=seq % MOD, ack=ack % MOD if flags & ACK else 0,
                  win=win, payload=payload, opts=opts)
        self._note(">", seg)
        if advance and seg.seq == self.snd_nxt:
            self.snd_nxt = seg.end
        self.hub.send(self.link, encode(self.link.peer_ip, self.link.target_ip, seg))
        return seg
