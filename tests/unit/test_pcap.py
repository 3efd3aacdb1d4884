"""The pcap writer and its asyncio shell: what is written reads back, byte for byte,
with dpkt and (when installed) tshark."""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import struct
import subprocess
import time

import dpkt
import pytest

from tcpstack.core.segment import Flags
from tcpstack.lab.impair import ImpairPlan, ImpairSpec, install
from tcpstack.lab.observe import Observability, ObserveSettings
from tcpstack.shell.stack import Stack
from tcpstack.wire.pcap import LINKTYPE_RAW, Capture, PcapWriter
from tests import helpers


def packet(flags: Flags, payload: bytes = b"") -> bytes:
    """One segment of the captured conversation (seq 1000, ack 2000)."""
    return helpers.packet(flags, 1000, 2000, payload=payload)


PACKETS = [
    (packet(Flags.SYN), 1_700_000_000.000001),
    (packet(Flags.SYN | Flags.ACK), 1_700_000_000.5),
    (packet(Flags.ACK | Flags.PSH, b"x" * 1400), 1_700_000_001.999999),
    (packet(Flags.FIN | Flags.ACK), 1_700_000_002.0),
]


def read_back(data: bytes) -> tuple[int, list[tuple[float, bytes]]]:
    reader = dpkt.pcap.Reader(io.BytesIO(data))
    return reader.datalink(), [(ts, bytes(buf)) for ts, buf in reader]


def test_written_packets_read_back_equal() -> None:
    out = io.BytesIO()
    writer = PcapWriter(out)
    for pkt, ts in PACKETS:
        writer.write(pkt, ts)
    linktype, records = read_back(out.getvalue())
    assert linktype == LINKTYPE_RAW
    assert [buf for _, buf in records] == [pkt for pkt, _ in PACKETS]
    assert [ts for ts, _ in records] == pytest.approx([ts for _, ts in PACKETS], abs=1e-6)


def test_header_is_classic_little_endian_microsecond_pcap() -> None:
    out = io.BytesIO()
    PcapWriter(out)
    magic, major, minor, _, _, snaplen, linktype = struct.unpack("<IHHiIII", out.getvalue())
    assert (magic, major, minor, snaplen, linktype) == (0xA1B2C3D4, 2, 4, 65535, 101)


def test_a_fraction_that_rounds_up_carries_into_the_seconds() -> None:
    out = io.BytesIO()
    PcapWriter(out).write(b"\x45", 99.9999996)
    sec, usec, caplen, length = struct.unpack("<IIII", out.getvalue()[24:40])
    assert (sec, usec, caplen, length) == (100, 0, 1, 1)


def test_tshark_parses_the_file(tmp_path) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    path = tmp_path / "x.pcap"
    with open(path, "wb") as f:
        writer = PcapWriter(f)
        for pkt, ts in PACKETS:
            writer.write(pkt, ts)
    cp = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "tcp.flags"],
                        capture_output=True, text=True, timeout=60, check=True)
    flags = [int(v, 16) for v in cp.stdout.split()]
    assert flags == [0x002, 0x012, 0x018, 0x011]


# -- the asyncio shell ----------------------------------------------------------------------


async def test_capture_taps_both_paths_with_wall_clock_stamps_and_flushes_soon(
        tmp_path) -> None:
    path = tmp_path / "c.pcap"
    capture = Capture.open(str(path))
    written: list[bytes] = []
    received: list[tuple[bytes, float]] = []
    write = capture.tap_output(written.append)
    receive = capture.tap_receive(lambda p, now: received.append((p, now)))
    before = time.time()
    receive(PACKETS[0][0], 5.0)
    write(PACKETS[1][0])
    after = time.time()
    assert written == [PACKETS[1][0]] and received == [(PACKETS[0][0], 5.0)]

    async def flushed() -> None:
        while len(read_back(path.read_bytes())[1]) < 2:
            await asyncio.sleep(0.005)

    await asyncio.wait_for(flushed(), 1.0)  # before close(): the flush timer did it
    _, records = read_back(path.read_bytes())
    assert [buf for _, buf in records] == [PACKETS[0][0], PACKETS[1][0]]
    assert all(before - 1e-6 <= ts <= after + 1e-6 for ts, _ in records)
    capture.close()
    write(PACKETS[2][0])  # after close: still sent, no longer recorded
    assert len(written) == 2 and len(read_back(path.read_bytes())[1]) == 2


async def test_capture_skips_a_packet_the_device_refused(tmp_path) -> None:
    path = tmp_path / "c.pcap"
    capture = Capture.open(str(path))

    def full(packet: bytes) -> None:
        raise BlockingIOError

    with pytest.raises(BlockingIOError):
        capture.tap_output(full)(PACKETS[0][0])
    capture.close()
    assert read_back(path.read_bytes())[1] == []


# -- installed in a daemon ------------------------------------------------------------------

async def test_capture_sits_on_the_tun_side_of_the_impairment(tmp_path) -> None:
    """Inbound is recorded as read, before the impairment drops it; outbound as
    written, after the impairment duplicated it."""
    path = tmp_path / "x.pcap"
    wire: list[bytes] = []
    observing = Observability(ObserveSettings(pcap=str(path), control=str(tmp_path / "c.sock"),
                                              trace=True))
    stack = Stack("10.0.0.2", wire.append)
    try:
        install(stack, ImpairPlan(inbound=ImpairSpec(loss=1.0, seed=1),
                                  outbound=ImpairSpec(dup=1.0, seed=1)))
        await observing.attach(stack)
        assert logging.getLogger("tcpstack.trace").isEnabledFor(logging.INFO)
        now = asyncio.get_running_loop().time()
        syn = packet(Flags.SYN)
        stack.receive(syn, now)  # what the TUN reader calls: lost inside
        assert stack.stats["ImpairDropped"] == 1 and not wire
        stack.handle_packet(syn, now)  # as if it had survived: RST out, twice
        assert len(wire) == 2 and stack.stats["OutRsts"] == 1
    finally:
        await observing.close()
        await stack.close()
    assert [buf for _, buf in read_back(path.read_bytes())[1]] == [syn, *wire]
    assert not (tmp_path / "c.sock").exists()
