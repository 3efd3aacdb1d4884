"""Offloads through the TUN's virtio-net header (docs/offload.md), end to end.

With `--offload on` (the default) the kernel and the stack exchange TCP
super-segments of up to 64 KiB: 50 MB each way must arrive byte-exact with
super-segments counted, and the counters must count real (MSS-sized)
segments; `--offload off` must send none. The capture shows the wire: only
MTU-sized packets with valid checksums, even though super-segments crossed
the TUN.
"""

from __future__ import annotations

import pytest

from tests.integration.test_observe import checksums_ok, json_cli, wire_packets
from tests.integration.test_transfer import SIZE, download, upload, upload_file  # noqa: F401

MTU = 1500
MSS = MTU - 40 - 12  # every segment carries the Timestamps option


def _stats(tcpstack_cli, ctl: str) -> dict[str, int]:
    return json_cli(tcpstack_cli, "stats", "--control", ctl)


@pytest.mark.parametrize("offload", ["on", "off"])
@pytest.mark.parametrize("direction", ["download", "upload"])
def test_transfer_50mb(make_stack, netns, require_tools, tcpstack_cli, tmp_path,
                       upload_file, direction: str, offload: str) -> None:  # noqa: F811
    """Byte-exact either way; the stack's sent (download) or received (upload)
    segments are counted on the wire, super-segments only with offloads."""
    require_tools("curl")
    ctl = str(tmp_path / "c.sock")
    stack = make_stack(apps=["http:80"], extra_args=["--offload", offload, "--control", ctl])
    if direction == "download":
        download(netns, stack.vip, tmp_path / "bytes.bin", timeout=60)
        segs, supers = "OutSegs", "OutSuperSegs"
    else:
        upload(netns, stack.vip, upload_file, timeout=60)
        segs, supers = "InSegs", "InSuperSegs"
    stats = _stats(tcpstack_cli, ctl)
    assert stats[segs] >= SIZE // MSS, f"{segs} counts wire segments"
    assert (stats.get(supers, 0) > 0) is (offload == "on"), stats


def test_pcap_shows_wire_segments(make_stack, netns, require_tools, tcpstack_cli,
                                  tmp_path) -> None:
    """Super-segments cross the TUN both ways, yet every recorded packet fits
    the MTU, carries at most one MSS and has valid checksums."""
    require_tools("curl")
    pcap, ctl = tmp_path / "d.pcap", str(tmp_path / "c.sock")
    stack = make_stack(apps=["http:80"], extra_args=["--pcap", str(pcap), "--control", ctl])
    size = 2_000_000
    cp = netns.run("curl", "-sS", "-f", "--max-time", "30", "-o", "/dev/null",
                   "-w", "%{size_download}", f"http://{stack.vip}/bytes/{size}", timeout=40)
    assert cp.stdout == str(size)
    body = bytes(range(256)) * (size // 256)
    cp = netns.run("curl", "-sS", "-f", "--max-time", "30", "-H", "Expect:",
                   "--data-binary", "@-", f"http://{stack.vip}/sha256", input=body, timeout=40)
    stats = _stats(tcpstack_cli, ctl)
    assert stats.get("OutSuperSegs", 0) > 0 and stats.get("InSuperSegs", 0) > 0, stats
    stack.stop()
    packets = wire_packets(pcap)
    assert len(packets) >= 2 * size // MSS
    too_big = [len(p) for p in packets if len(p) > MTU]
    assert not too_big, f"{len(too_big)} packets beyond the MTU, e.g. {too_big[:5]}"
    assert all(checksums_ok(p) for p in packets)
    assert max(len(p) - 20 - (p[32] >> 4) * 4 for p in packets) == MSS


def test_impairment_turns_offloads_off(make_stack, netns, require_tools, tcpstack_cli,
                                       tmp_path) -> None:
    """--impair works per wire packet, so it runs without super-segments."""
    require_tools("curl")
    ctl = str(tmp_path / "c.sock")
    stack = make_stack(apps=["http:80"], extra_args=["--impair", "dup=1%,seed=1",
                                                     "--control", ctl])
    netns.run("curl", "-sS", "-f", "--max-time", "30", "-o", "/dev/null",
              f"http://{stack.vip}/bytes/1000000", timeout=40)
    assert _stats(tcpstack_cli, ctl).get("OutSuperSegs", 0) == 0
    assert "offloads off" in stack.stderr_text()
