"""IPv4 fragments against the Linux kernel (docs/ip.md): `ping -s 2000` is answered,
and a TCP segment the kernel had to fragment reaches the application whole."""

from __future__ import annotations

import json

from tcpstack.lab.netns import daemon_env
from tests.nstools import REPO_ROOT

ECHO_PORT = 7


def stats_of(tcpstack_cli, tun: str) -> dict[str, int]:
    cp = tcpstack_cli("stats", "--tun", tun, "--json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def test_ping_2000_gets_every_reply(make_stack, netns, tcpstack_cli, require_tools) -> None:
    """The kernel cuts each 2,028-octet request for the 1,500-octet TUN; the stack
    reassembles it and fragments its reply, which the kernel reassembles."""
    require_tools("ping")
    stack = make_stack(apps=[f"echo:{ECHO_PORT}"])
    cp = netns.run("ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "2000", stack.vip,
                   timeout=20, check=False)
    assert cp.returncode == 0 and " 3 received" in cp.stdout, cp.stdout + cp.stderr
    stats = stats_of(tcpstack_cli, stack.tun)
    want = {"ReasmReqds": 6, "ReasmOKs": 3, "ReasmFails": 0, "IcmpInEchos": 3,
            "FragOKs": 3, "FragCreates": 6}
    assert {k: stats.get(k, 0) for k in want} == want, stats


# A kernel-side peer on a raw TCP socket: the kernel builds the IP header and, the
# socket being IP_PMTUDISC_DONT, fragments what exceeds the MTU. An nftables rule
# keeps the kernel's own TCP from resetting the connection it knows nothing of.
RAW_PEER = """
import socket
from ipaddress import IPv4Address
from tcpstack.wire import codec
from tcpstack.core.segment import Flags, Options, Segment

HOST, VIP, SPORT, DPORT = {host!r}, {vip!r}, {sport}, {dport}
SYN, ACK, PSH = Flags.SYN, Flags.ACK, Flags.PSH
src, dst = IPv4Address(HOST).packed, IPv4Address(VIP).packed
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER, IP_PMTUDISC_DONT (linux/in.h)
s.settimeout(10)

def send(flags, seq, ack, payload=b""):
    opts = Options(mss=1460) if flags & SYN else Options()
    packet = codec.encode(Segment(src, dst, SPORT, DPORT, seq, ack, flags, 65535, opts, payload))
    s.sendto(packet[20:], (VIP, 0))

def receive():
    while True:
        # With offload the stack's segments may carry a partial checksum: not verified.
        seg = codec.decode(s.recv(65535), verify_checksum=False)
        if isinstance(seg, Segment) and (seg.sport, seg.dport) == (DPORT, SPORT):
            return seg

send(SYN, 1000, 0)
synack = receive()
assert synack.flags & SYN, synack
base = (synack.seq + 1) % 2**32
send(ACK, 1001, base)
data = bytes(i * 7 % 251 for i in range(3000))
send(ACK | PSH, 1001, base, data)
echoed = bytearray(len(data))
have = set()
while len(have) < len(data):
    seg = receive()
    start = (seg.seq - base) % 2**32
    echoed[start:start + len(seg.payload)] = seg.payload
    have.update(range(start, min(start + len(seg.payload), len(data))))
print("intact" if echoed == data else "corrupt")
"""


def test_fragmented_tcp_segment_is_accepted(make_stack, netns, tcpstack_cli, nft_drop,
                                            require_tools) -> None:
    require_tools("nft")
    stack = make_stack(apps=[f"echo:{ECHO_PORT}"])
    sport = 40123
    code = RAW_PEER.format(host=stack.host_ip, vip=stack.vip, sport=sport, dport=ECHO_PORT)
    with nft_drop(netns, f"ip daddr {stack.vip} tcp sport {sport} tcp flags & rst == rst"):
        cp = netns.python(code, timeout=30, cwd=REPO_ROOT, env=daemon_env())
    assert cp.stdout.split() == ["intact"], cp.stdout + cp.stderr
    stats = stats_of(tcpstack_cli, stack.tun)
    # 3,000 octets and the TCP header over a 1,500-octet MTU: three fragments.
    want = {"ReasmReqds": 3, "ReasmOKs": 1, "ReasmFails": 0, "Drop.fragment": 0}
    assert {k: stats.get(k, 0) for k in want} == want, stats
