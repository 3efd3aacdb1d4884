"""Handshake variants against real peers: a rule that loses exactly the third
segment once (--impair-rule), and the textbook chapter's four-segment handshake
(--split-synack) with a Linux client and with `tcpstack connect` as the client.

Each test reads the capture on the server daemon's TUN, so it checks what went
over the wire segment by segment (sequence numbers relative to the client's
ISN x and the server's y), not only that the application got its bytes.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dpkt

from tcpstack.lab.netns import (
    BackgroundProcess,
    daemon_env,
    netns_scope,
    spawn_daemon,
    tcpstack_argv,
    wait_until,
)
from tests import nstools

ECHO_PORT = 7
NAMES = {dpkt.tcp.TH_SYN: "SYN", dpkt.tcp.TH_FIN: "FIN", dpkt.tcp.TH_RST: "RST",
         dpkt.tcp.TH_ACK: "ACK"}
#: A kernel client: connect to echo, optionally wait for a line on stdin, ping.
CLIENT = """
import socket, sys
s = socket.create_connection(({vip!r}, {port}), timeout=10)
print("connected", flush=True)
if {wait_for_go}:
    sys.stdin.readline()
s.sendall(b"ping")
got = b""
while len(got) < 4 and (chunk := s.recv(4 - len(got))):
    got += chunk
print(got.decode(), flush=True)
s.close()
"""
#: Counts (duplicates, harmlessly) data that reaches the server while it is still
#: in SYN-RECEIVED: none must, as the client's SYN+ACK has established it.
LATE_PROBE = "in:dup:flags~PSH,state=SYN-RECEIVED"
#: The textbook chapter's four-segment handshake, as a Linux client (or tcpstack connect)
#: completes it: it drops the bare ACK, takes the SYN as a simultaneous open.
SPLIT_HANDSHAKE = [
    ("client", "SYN", "x+0", "-"),
    ("server", "ACK", "y+0", "x+1"),
    ("server", "SYN", "y+0", "-"),
    ("client", "SYN+ACK", "x+0", "y+1"),
    ("server", "ACK", "y+1", "x+1"),
]


@dataclass(frozen=True)
class Seg:
    """One segment of the capture, seq/ack relative to the ISNs x and y."""

    t: float
    sender: str  # "client" or "server" (the daemon whose TUN is captured)
    flags: str  # e.g. "SYN+ACK" (PSH is left out)
    seq: int
    ack: int
    length: int

    def row(self) -> tuple[str, str, str, str]:
        """(sender, flags, seq, ack) with seq/ack written as x+N / y+N."""
        own, other = ("x", "y") if self.sender == "client" else ("y", "x")
        return (self.sender, self.flags, f"{own}+{self.seq}",
                f"{other}+{self.ack}" if "ACK" in self.flags else "-")


@dataclass(frozen=True)
class Conversation:
    """The echo connection in a capture: the client's port and its segments."""

    client_port: int
    segs: list[Seg]


def conversation(cap: nstools.Capture, server: str) -> Conversation | None:
    """The port-7 connection to `server` as captured so far (None before the
    server's first SYN-bearing segment, which gives y)."""
    server_b = bytes(int(p) for p in server.split("."))
    tcp = [(ts, ip.dst == server_b, ip.data) for ts, ip in cap.tcp_packets()
           if ECHO_PORT in (ip.data.sport, ip.data.dport)]
    syn = next((t for _, inbound, t in tcp if inbound and t.flags & dpkt.tcp.TH_SYN), None)
    y = next((t.seq for _, inbound, t in tcp if not inbound and t.flags & dpkt.tcp.TH_SYN), None)
    if syn is None or y is None:
        return None
    segs = []
    for ts, inbound, t in tcp:
        own, other = (syn.seq, y) if inbound else (y, syn.seq)
        segs.append(Seg(ts, "client" if inbound else "server",
                        "+".join(n for bit, n in NAMES.items() if t.flags & bit),
                        (t.seq - own) % 2**32, (t.ack - other) % 2**32, len(t.data)))
    return Conversation(syn.sport, segs)


def counters(log: str) -> dict[str, int]:
    """The daemon's shutdown counters (`counters: A=1 B=2`)."""
    m = re.search(r"counters: (.*)", log)
    assert m, log[-2000:]
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def wait_for_echo(cap: nstools.Capture, server: str) -> Conversation:
    """Block (bounded) until the capture holds the server's echoed data."""
    def echoed() -> Conversation | None:
        conv = conversation(cap, server)
        return conv if conv and any(s.sender == "server" and s.length for s in conv.segs) else None

    return wait_until(echoed, timeout=5, message="echoed data in the capture")


def test_rule_drops_the_third_segment_once(make_stack, netns, capture, require_tools,
                                           wait_until) -> None:
    """`in:drop:flags=ACK,state=SYN-RECEIVED,nth=1`: the kernel's handshake ACK is
    lost once, the stack retransmits its SYN+ACK after 1 s, the kernel (already
    ESTABLISHED) answers it with another ACK, and that one completes the handshake."""
    require_tools("tcpdump")
    rule = "in:drop:flags=ACK,state=SYN-RECEIVED,nth=1"
    stack = make_stack(apps=[f"echo:{ECHO_PORT}"], extra_args=["--impair-rule", rule])
    with capture(netns, stack.tun) as cap:
        proc = netns.popen(sys.executable, "-u", "-c",
                           CLIENT.format(vip=stack.vip, port=ECHO_PORT, wait_for_go=True),
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, start_new_session=True)
        client = BackgroundProcess(proc)
        client.wait_for_line("connected")

        def answered() -> Conversation | None:
            conv = conversation(cap, stack.vip)
            return conv if conv and len(conv.segs) >= 5 else None

        # The client may send only once the kernel has answered the retransmitted
        # SYN+ACK: a data segment would complete the handshake by itself.
        conv = wait_until(answered, timeout=5, message="SYN+ACK retransmitted and answered")
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        rc, out, err = client.finish(timeout=10)
    assert rc == 0 and out.splitlines() == ["connected", "ping"], err

    handshake = conv.segs[:5]
    assert [s.row() for s in handshake] == [
        ("client", "SYN", "x+0", "-"),
        ("server", "SYN+ACK", "y+0", "x+1"),
        ("client", "ACK", "x+1", "y+1"),  # on the TUN, then dropped by the rule
        ("server", "SYN+ACK", "y+0", "x+1"),  # the SYN+ACK timer, same ISN
        ("client", "ACK", "x+1", "y+1"),
    ]
    assert abs((handshake[3].t - handshake[1].t) - 1.0) <= 0.3, handshake

    assert stack.stop(signal.SIGTERM) == 0
    log = stack.stderr_text()
    hits = [ln for ln in log.splitlines() if "impair rule 1 (" in ln]
    assert len(hits) == 1 and hits[0].endswith(
        f"impair rule 1 ({rule}) dropped {stack.host_ip}:{conv.client_port} > "
        f"{stack.vip}:{ECHO_PORT} ACK"), hits
    stats = counters(log)
    assert stats["ImpairRuleDropped"] == 1 and stats["SynAckRetrans"] == 1, stats


def test_split_synack_with_a_kernel_client(make_stack, netns, capture, require_tools) -> None:
    """The kernel drops our bare ACK in SYN-SENT, takes our SYN as a simultaneous
    open (SYN+ACK x, y+1, SYN-RECV), and our ACK establishes both sides at once:
    the client's data finds the server ESTABLISHED (LATE_PROBE never hits)."""
    require_tools("tcpdump")
    stack = make_stack(apps=[f"echo:{ECHO_PORT}"],
                       extra_args=["--split-synack", "--impair-rule", LATE_PROBE])
    with capture(netns, stack.tun) as cap:
        cp = netns.python(CLIENT.format(vip=stack.vip, port=ECHO_PORT, wait_for_go=False))
        assert cp.returncode == 0 and cp.stdout.split() == ["connected", "ping"], cp.stderr
        conv = wait_for_echo(cap, stack.vip)
    assert [s.row() for s in conv.segs[:5]] == SPLIT_HANDSHAKE
    assert conv.segs[5].row() == ("client", "ACK", "x+1", "y+1") and conv.segs[5].length == 4
    assert conv.segs[4].t - conv.segs[0].t < 0.5, conv.segs[:5]  # no timer involved
    assert stack.stop(signal.SIGTERM) == 0
    stats = counters(stack.stderr_text())
    assert not stats.keys() & {"SynAckRetrans", "RetransSegs", "ImpairRuleDuplicated"}, stats


def test_tcpstack_connect_against_split_synack(require_tools, tmp_path: Path) -> None:
    """Our own active open completes the four-segment handshake too: `tcpstack
    connect` on one TUN, `tcpstack serve --split-synack` on another, the kernel
    forwarding between them (ip_forward in a namespace of this test's own)."""
    require_tools("tcpdump")
    with netns_scope("tcps-split") as ns:
        ns.sysctl(**{"net.ipv4.ip_forward": 1})
        argv = [*tcpstack_argv(), "serve", "--tun", "tsplit0", "--host-addr",
                "10.78.1.1/24", "--addr", "10.78.1.2", "--app", f"echo:{ECHO_PORT}",
                "--split-synack", "--impair-rule", LATE_PROBE]
        server = spawn_daemon(ns, argv, tun="tsplit0", host_cidr="10.78.1.1/24",
                                      vip="10.78.1.2", stderr_path=tmp_path / "serve.log")
        try:
            server.wait_ready()
            with nstools.capture(ns, "tsplit0", tmp_path / "split.pcap") as cap:
                cp = ns.run(*tcpstack_argv(), "connect", "10.78.1.2", str(ECHO_PORT),
                            "--tun", "tsplit1", "--host-addr", "10.78.2.1/24", "--addr",
                            "10.78.2.2", "--syn-retries", "2", input=b"ping", check=False,
                            cwd=nstools.REPO_ROOT, env=daemon_env())
                assert (cp.returncode, cp.stdout) == (0, b"ping"), cp.stderr
                conv = wait_for_echo(cap, "10.78.1.2")
        finally:
            rc = server.stop(signal.SIGTERM)
        assert rc == 0
        assert [s.row() for s in conv.segs[:5]] == SPLIT_HANDSHAKE
        stats = counters(server.stderr_text())
        assert not stats.keys() & {"SynAckRetrans", "ImpairRuleDuplicated"}, stats
