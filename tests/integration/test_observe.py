"""Making TCP visible, end to end: `--pcap`, the control socket with `tcpstack ss` and
`tcpstack stats`, and `--trace`, on a real daemon with the kernel as the peer."""

from __future__ import annotations

import json
import signal
import struct
from pathlib import Path
from typing import Any

import dpkt
import pytest

ECHO_PORT = 7
HTTP_PORT = 80
SYN, ACK, FIN, RST = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN, dpkt.tcp.TH_RST
CONTROL_FLAGS = SYN | ACK | FIN | RST


def wire_packets(path: Path) -> list[bytes]:
    """The raw records of a pcap file (dpkt would recompute checksums on re-packing)."""
    with path.open("rb") as f:
        reader = dpkt.pcap.Reader(f)
        assert reader.datalink() == 101  # LINKTYPE_RAW
        return [bytes(buf) for _, buf in reader]


def checksums_ok(raw: bytes) -> bool:
    """IPv4 header and TCP checksums both verify (sum to zero with the pseudo-header)."""
    ihl = (raw[0] & 0x0F) * 4
    total = struct.unpack("!H", raw[2:4])[0]
    tcp = raw[ihl:total]
    pseudo = raw[12:20] + struct.pack("!BBH", 0, dpkt.ip.IP_PROTO_TCP, len(tcp))
    return dpkt.in_cksum(raw[:ihl]) == 0 and dpkt.in_cksum(pseudo + tcp) == 0


def flag_kinds(packets: list[dpkt.ip.IP], src: bytes) -> list[int]:
    """The SYN/ACK/FIN/RST bits of the TCP segments `src` sent, in order."""
    return [ip.data.flags & CONTROL_FLAGS for ip in packets if ip.src == src]


def addr(dotted: str) -> bytes:
    return bytes(int(p) for p in dotted.split("."))


def json_cli(tcpstack_cli, *args: str) -> Any:
    cp = tcpstack_cli(*args, "--json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def test_pcap_holds_a_whole_http_exchange(make_stack, netns, require_tools, wait_until,
                                          tmp_path) -> None:
    """curl against the daemon: the capture has the handshake, the request and the
    response, and FIN both ways, every checksum valid, readable while it runs."""
    require_tools("curl")
    pcap = tmp_path / "daemon.pcap"
    stack = make_stack(extra_args=["--pcap", str(pcap), "--control", str(tmp_path / "c.sock")])
    cp = netns.run("curl", "-sS", "--max-time", "10", f"http://{stack.vip}/", timeout=20,
                   check=False)
    assert cp.returncode == 0 and "tcpstack" in cp.stdout, cp.stderr
    vip, host = addr(stack.vip), addr(stack.host_ip)

    def parsed() -> list[dpkt.ip.IP]:
        try:
            return [dpkt.ip.IP(raw) for raw in wire_packets(pcap)]
        except (ValueError, dpkt.NeedData):
            return []  # a record half written

    def closed_both_ways() -> bool:
        packets = parsed()
        return (any(f & FIN for f in flag_kinds(packets, vip))
                and any(f & FIN for f in flag_kinds(packets, host)))

    # The daemon still runs: the file must already be flushed (within ~100 ms).
    wait_until(closed_both_ways, timeout=2, message="both FINs in the live capture")
    assert stack.stop(signal.SIGTERM) == 0
    raws = wire_packets(pcap)
    assert all(checksums_ok(raw) for raw in raws)
    packets = [dpkt.ip.IP(raw) for raw in raws]
    assert all(isinstance(ip.data, dpkt.tcp.TCP) and HTTP_PORT in (ip.data.sport, ip.data.dport)
               for ip in packets)
    ours, theirs = flag_kinds(packets, vip), flag_kinds(packets, host)
    assert theirs[:2] == [SYN, ACK] and ours[0] == SYN | ACK
    assert FIN | ACK in ours and FIN | ACK in theirs and RST not in ours + theirs
    request = b"".join(ip.data.data for ip in packets if ip.src == host)
    response = b"".join(ip.data.data for ip in packets if ip.src == vip)
    assert request.startswith(b"GET / HTTP/1.1\r\n")
    assert response.startswith(b"HTTP/1.1 200 ") and b"tcpstack" in response
    assert "tcpstack.trace" not in stack.stderr_text()  # no --trace, no trace at info


def test_ss_shows_an_idle_kernel_connection(make_stack, netns, tcpstack_cli, tmp_path) -> None:
    """A kernel socket holds a connection to echo; `tcpstack ss` shows it ESTABLISHED."""
    ctl = str(tmp_path / "c.sock")
    stack = make_stack(extra_args=["--control", ctl])
    client = netns.spawn_python(f"""
import socket
s = socket.create_connection(({stack.vip!r}, {ECHO_PORT}), timeout=10)
s.sendall(b"x")
assert s.recv(1) == b"x"
print("port", s.getsockname()[1], flush=True)
s.settimeout(30)
try:
    s.recv(1)  # idle until the daemon goes away
except OSError:
    pass
""")
    port = int(client.wait_for_line("port").split()[1])
    table = json_cli(tcpstack_cli, "ss", "--control", ctl)
    assert {lst["port"] for lst in table["listeners"]} == {7, 9, 80}
    [conn] = [c for c in table["connections"] if c["remote"] == f"{stack.host_ip}:{port}"]
    assert conn["state"] == "ESTABLISHED" and conn["local"] == f"{stack.vip}:{ECHO_PORT}"
    assert conn["passive"] is True
    # One byte each way: SYN + 1 on both sides, nothing in flight or unread.
    assert conn["relative"] == {"snd_una": 2, "snd_nxt": 2, "snd_max": 2, "rcv_nxt": 2}
    assert conn["send_queue"] == 0 and conn["unread"] == 0 and conn["retransmits"] == 0
    assert conn["options"]["sack"] and conn["options"]["ts"]
    assert conn["options"]["wscale"] is not None and conn["options"]["wscale"][1] == 4
    assert conn["mss"] == 1500 - 40 - 12  # the kernel's MSS less the timestamp option
    # The loop's clock ticks in milliseconds (uvloop) and an ACK already queued on
    # the TUN is read in the same batch as the segment it answers: a local RTT
    # may measure 0.
    assert conn["srtt"] is not None and 0 <= conn["srtt"] < 0.5
    assert 0.2 <= conn["rto"] <= 1.0
    assert conn["cwnd"] >= conn["mss"] and conn["snd_wnd"] > 0 and conn["rcv_wnd"] > 0
    assert "retransmit" not in conn["timers"]

    cp = tcpstack_cli("ss", "--control", ctl)
    assert cp.returncode == 0, cp.stderr
    [row] = [ln for ln in cp.stdout.splitlines() if f"{stack.host_ip}:{port}" in ln]
    assert row.split()[:3] == ["ESTABLISHED", "0", "0"]
    assert stack.stop(signal.SIGTERM) == 0
    client.finish(timeout=10)
    assert not Path(ctl).exists(), "the control socket outlived the daemon"


def test_stats_and_trace_of_a_lost_third_segment(make_stack, netns, tcpstack_cli, nft_drop,
                                                 require_tools, wait_until) -> None:
    """The kernel's ACKs are dropped: the counters and the trace tell the story.
    The control socket is found at its default path from --tun; in a named
    network namespace that path carries the namespace's name."""
    require_tools("nft")
    stack = make_stack(synack_retries=2, extra_args=["--trace"])
    default = Path(f"/run/tcpstack/{stack.tun}@{netns.name}.sock")
    assert default.is_socket()
    rule = f"ip daddr {stack.vip} tcp dport {HTTP_PORT} tcp flags & (syn|ack|fin|rst) == ack"
    code = f"""
import socket
s = socket.create_connection(({stack.vip!r}, {HTTP_PORT}), timeout=15)
try:
    print("eof" if s.recv(1) == b"" else "data")
except ConnectionResetError:
    print("reset")
"""
    with nft_drop(netns, rule):
        cp = netns.python(code, timeout=30)
    assert cp.stdout.split() == ["reset"], cp.stdout + cp.stderr

    stats = json_cli(tcpstack_cli, "stats", "--tun", stack.tun)
    want = {"PassiveOpens": 1, "SynAckRetrans": 2, "HandshakeTimeouts": 1, "OutRsts": 1,
            "AttemptFails": 1, "CurrEstab": 0, "ActiveOpens": 0}
    assert {k: stats.get(k) for k in want} == want, stats
    cp = tcpstack_cli("stats", "--tun", stack.tun)
    assert cp.returncode == 0 and cp.stdout.startswith("Tcp (RFC 4022 MIB):"), cp.stderr

    prefix = f"trace {stack.vip}:{HTTP_PORT} {stack.host_ip}:"
    wait_until(lambda: "SYN-RECEIVED -> CLOSED" in stack.stderr_text(), timeout=5,
               message="the trace line of the handshake timeout")
    lines = [ln.split("tcpstack.trace: ", 1)[1] for ln in stack.stderr_text().splitlines()
             if "tcpstack.trace: " in ln]
    assert [ln.split(" ", 3)[3] for ln in lines] == [
        "LISTEN -> SYN-RECEIVED: SYN received, SYN+ACK sent",
        "SYN-RECEIVED -> CLOSED: SYN+ACK sent 3 times without an answer, RST sent",
    ]
    assert all(ln.startswith(prefix) for ln in lines), lines
    assert stack.stop(signal.SIGTERM) == 0
    assert not default.exists()


def test_control_socket_stale_is_replaced_live_is_refused(make_stack, tcpstack_cli, netns,
                                                          tmp_path) -> None:
    """A daemon killed with SIGKILL leaves its socket file: the next one takes it over.
    A socket a daemon still answers on is refused with one line, exit 2."""
    ctl = str(tmp_path / "c.sock")
    first = make_stack(extra_args=["--control", ctl])
    first.stop(signal.SIGKILL)
    assert Path(ctl).exists()
    second = make_stack(extra_args=["--control", ctl])
    assert json_cli(tcpstack_cli, "stats", "--control", ctl)["CurrEstab"] == 0

    tun, host_cidr, vip = make_stack.allocate()
    cp = tcpstack_cli("serve", "--tun", tun, "--host-addr", host_cidr, "--addr", vip,
                      "--control", ctl)
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert cp.returncode == 2 and len(lines) == 1, cp.stderr
    assert "in use by a running daemon" in lines[0]
    assert tun not in netns.link_names()
    assert second.alive()
    assert json_cli(tcpstack_cli, "stats", "--control", ctl)["CurrEstab"] == 0


@pytest.mark.parametrize("command", ["ss", "stats"])
def test_no_daemon_is_one_line_exit_1(tcpstack_cli, tmp_path, command: str) -> None:
    cp = tcpstack_cli(command, "--control", str(tmp_path / "nobody.sock"))
    assert cp.returncode == 1 and len(cp.stderr.splitlines()) == 1, cp.stderr
    assert "no tcpstack daemon" in cp.stderr
