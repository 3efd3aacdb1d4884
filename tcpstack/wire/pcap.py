"""`--pcap FILE`: every packet that crosses the TUN, in classic pcap format.

The capture shows what really was on the wire, which is not what the TCP
engine produced or consumed when `--impair` is on: inbound packets are
recorded as read from the TUN, before the inbound impairment drops, delays or
duplicates them, and outbound packets as written to the TUN, after the
outbound impairment. So the file matches what tcpdump on the device would
show (minus its link-layer quirks), and it is the kernel peer's view too.

Classic pcap (not pcapng) with LINKTYPE_RAW (101): each record is a bare
IPv4 packet, which is exactly what an IFF_NO_PI TUN device carries, and every
tool reads it (tshark, tcpdump, dpkt, scapy). Timestamps are wall-clock
microseconds (`time.time()`), since pcap timestamps are absolute times that
other captures are compared with, and the loop's monotonic clock is not.

`PcapWriter` is the format, sans I/O beyond the binary stream it is given
(tests use `io.BytesIO`); `Capture` is the asyncio shell around it: it owns
the file, taps the stack's two packet paths and flushes at most
`FLUSH_INTERVAL` after a packet, so a reader following the file (tshark -r,
tail) sees packets promptly without one system call per packet, and an idle
stack never wakes up for it.

With offloads (docs/offload.md) the packets crossing the TUN are frames: a
virtio-net header, then a TCP super-segment of up to 64 KiB or a packet whose
TCP checksum the kernel has yet to compute. The capture records what the
wire would carry instead (`tcpstack.wire.vnet.wire_packets`): each super-segment
cut into its MSS-sized segments, every checksum complete, so ladders, tests
and Wireshark see the same segments as with `--offload off`.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from typing import BinaryIO

from tcpstack.wire import vnet

PCAP_MAGIC = 0xA1B2C3D4  # microsecond timestamps (0xA1B23C4D would be nanoseconds)
PCAP_VERSION = (2, 4)
LINKTYPE_RAW = 101  # each record starts with the IPv4 (or IPv6) header
SNAPLEN = 65535  # an IPv4 packet is never longer, so nothing is ever truncated
#: Longest a recorded packet waits in the file buffer before it is flushed.
FLUSH_INTERVAL = 0.05

_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")


class PcapWriter:
    """Writes a pcap file header on creation, then one record per `write`.

    Little-endian with the standard magic, so readers on any host detect the
    byte order from the magic as the format intends.
    """

    def __init__(self, stream: BinaryIO, *, snaplen: int = SNAPLEN,
                 linktype: int = LINKTYPE_RAW) -> None:
        self.stream = stream
        self.snaplen = snaplen
        stream.write(_FILE_HEADER.pack(PCAP_MAGIC, *PCAP_VERSION, 0, 0, snaplen, linktype))

    def write(self, packet: bytes, timestamp: float) -> None:
        """Record `packet` as seen at `timestamp` (seconds since the epoch)."""
        # Round to whole microseconds first: splitting the float into seconds
        # and a fraction could round the fraction up to 1000000.
        seconds, micros = divmod(round(timestamp * 1_000_000), 1_000_000)
        captured = packet[: self.snaplen]
        self.stream.write(_RECORD_HEADER.pack(seconds, micros, len(captured), len(packet)))
        self.stream.write(captured)


class Capture:
    """A pcap file fed from the stack's TUN side, flushed soon after each packet;
    with `vnet` the packets are virtio-net frames, recorded as wire packets."""

    def __init__(self, stream: BinaryIO, *, vnet: bool = False) -> None:
        self._writer = PcapWriter(stream)
        self._vnet = vnet
        self._stream = stream
        self._loop = asyncio.get_running_loop()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._closed = False
        stream.flush()  # the header at once: a reader may open the file before any packet

    @classmethod
    def open(cls, path: str, *, vnet: bool = False) -> Capture:
        """Create (or truncate) `path`; OSError if it cannot be written."""
        return cls(open(path, "wb"), vnet=vnet)  # closed by close()

    def record(self, packet: bytes) -> None:
        """Append one packet, stamped now; a no-op once the capture is closed."""
        if self._closed:
            return
        now = time.time()
        for wire in vnet.wire_packets(packet) if self._vnet else (packet,):
            self._writer.write(wire, now)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_later(FLUSH_INTERVAL, self._flush)

    def tap_output(self, write: Callable[[bytes], object]) -> Callable[[bytes], None]:
        """`write` (the TUN's) that also records each packet it managed to write.

        A packet the device refused (BlockingIOError, queue full) never crossed
        the wire, so it is not recorded.
        """
        def tapped(packet: bytes) -> None:
            write(packet)
            self.record(packet)
        return tapped

    def tap_receive(self, receive: Callable[[bytes, float], None]
                    ) -> Callable[[bytes, float], None]:
        """`receive` (where the TUN reader hands each packet) that records first."""
        def tapped(packet: bytes, now: float) -> None:
            self.record(packet)
            receive(packet, now)
        return tapped

    def close(self) -> None:
        """Flush everything and close the file; later packets are ignored."""
        if self._closed:
            return
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._stream.close()

    def _flush(self) -> None:
        self._flush_handle = None
        self._stream.flush()
