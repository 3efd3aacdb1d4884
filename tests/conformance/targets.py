"""The two targets a conformance script runs against, each in its own namespace.

``linux``: the test holds a TUN device itself (10.89.0.1/24 is the kernel's
side) and the kernel owns the address behind it, with the conformance apps
listening on the kernel's sockets (`kernel_apps.py`). A packet written to
the TUN fd arrives at the kernel's TCP from 10.89.0.3, a host "behind" the
device; the kernel's answers to 10.89.0.3 are routed into the TUN, where a
packet socket bound to the device reads them with the kernel's timestamps
(the fd's own copies are drained and dropped). TUN has no link layer, so
there is no ARP to fake.

``tcpstack``: the real daemon owns its TUN (`daemon.py`: `tcpstack serve`
plus the conformance apps), VIP 10.88.0.2, kernel side 10.88.0.1/24. The
scripted peer is 10.88.0.3, an address nobody in the namespace owns. An
AF_PACKET socket sends each segment *out of* the TUN device, which hands it
to the device's reader, the stack, without the kernel's IP layer ever seeing
it; the same socket (not bound to one device, so it also sees the TUNs that
`tcpstack connect` creates for active opens) sees the stack's answers, with
the kernel's timestamps, as they enter the kernel. The kernel then drops them silently: they are for
10.88.0.3, which is not local, and with IP forwarding off `ip_error` counts
them without sending ICMP. IPv6 is off, so there are no router
solicitations either. The hub checks that the kernel put nothing on the wire.

The stack runs with its default offloads (docs/offload.md), so it writes
TCP super-segments with partial checksums into its TUN; the packet socket
asks for the virtio-net header of each packet (PACKET_VNET_HDR) and the wire
cuts them into the segments the kernel would put on a real wire
(`tcpstack.wire.vnet.wire_packets`, which also completes, and so checks, every
partial checksum). TCPSTACK_CONFORMANCE_OFFLOAD=off runs the stack without.

Linux is left at its defaults except for two knobs that tcpstack gets the
same values for on its command line: tcp_synack_retries=2 and
tcp_syn_retries=2 (handshake timeouts after 7 s instead of 63 s and 127 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import pytun

from tcpstack.lab.netns import (
    READY_TIMEOUT,
    LineCollector,
    NetNS,
    daemon_env,
    netns_scope,
    spawn_daemon,
    stop_process,
    tcpstack_argv,
)
from tcpstack.wire import vnet
from tests import nstools
from tests.conformance.apps import PORTS
from tests.conformance.harness import Hub, Link, Wire

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SOCKET_BUFFER = 8 << 20
TXQUEUELEN = "10000"  # the TUN queue must never drop a burst of parallel scripts
READ_SIZE = 65536 + vnet.HEADER_LEN
SOL_PACKET = 263  # <linux/socket.h>
PACKET_VNET_HDR = 15  # <linux/if_packet.h>
#: `--offload` for the tcpstack target's daemons.
OFFLOAD = os.environ.get("TCPSTACK_CONFORMANCE_OFFLOAD", "on")
#: Handshake retries for both targets (Linux sysctls, tcpstack options).
SYNACK_RETRIES = 2
SYN_RETRIES = 2
TARGETS = ("linux", "tcpstack")


class PacketWire(Wire):
    """Both targets' packets, read from an AF_PACKET socket with kernel timestamps.

    The timestamp is taken when the packet passes the device, so timer
    measurements and the "no answer within" windows stay exact even when the
    test process reads late. Which packets come *from* the target depends on
    the direction: Linux transmits into its TUN (PACKET_OUTGOING), tcpstack
    writes into its TUN, which the kernel sees as received (PACKET_HOST).
    Whatever else the socket sees moving towards the target is the peer's own
    injection or, if its source is not a peer address, the kernel's noise.
    """

    def __init__(self, sock: socket.socket, *, target_transmits: bool,
                 vnet_hdr: bool = False) -> None:
        self._sock = sock
        self._target_transmits = target_transmits
        # SO_TIMESTAMPNS is CLOCK_REALTIME; the event loop's clock is monotonic.
        self._offset = time.time() - time.monotonic()
        self._vnet_hdr = vnet_hdr  # the socket has PACKET_VNET_HDR (`packet_socket`)
        self._pieces: deque[tuple[bytes, bool, float]] = deque()

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, link: Link, packet: bytes) -> None:
        frame = vnet.PLAIN + packet if self._vnet_hdr else packet
        self._sock.sendto(frame, (link.ifname, ETH_P_IP))

    def read(self) -> tuple[bytes, bool, float] | None:
        if self._pieces:
            return self._pieces.popleft()
        item = self._read()
        if item is None or not self._vnet_hdr:
            return item
        frame, from_target, t = item
        self._pieces.extend((p, from_target, t) for p in vnet.wire_packets(frame))
        return self._pieces.popleft()

    def _read(self) -> tuple[bytes, bool, float] | None:
        try:
            data, ancillary, _, addr = self._sock.recvmsg(READ_SIZE, socket.CMSG_SPACE(16))
        except BlockingIOError:
            return None
        t = time.monotonic()
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", payload[:16])
                t = sec + nsec / 1e9 - self._offset
        if addr[1] != ETH_P_IP:
            return data, False, t  # not IPv4 at all: noise
        outgoing = addr[2] == PACKET_OUTGOING
        return data, outgoing == self._target_transmits, t


class TunWire(PacketWire):
    """Linux target: inject by writing the test's own TUN fd, read the kernel's
    answers (with timestamps) from a packet socket bound to that TUN; the fd's
    own copy of them is drained and dropped."""

    def __init__(self, sock: socket.socket, tun_fd: int) -> None:
        super().__init__(sock, target_transmits=True)
        self._tun_fd = tun_fd

    def send(self, link: Link, packet: bytes) -> None:
        os.write(self._tun_fd, packet)

    def read(self) -> tuple[bytes, bool, float] | None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._tun_fd, READ_SIZE):
                pass
        return super().read()


def packet_socket(ifname: str | None, *, vnet_hdr: bool = False) -> socket.socket:
    """A non-blocking AF_PACKET socket with kernel timestamps, on ``ifname`` or on
    every interface (call it inside the namespace: `NetNS.call`). With
    `vnet_hdr` every packet read or written starts with a virtio-net header,
    which only a SOCK_RAW socket may ask for (the same octets on a TUN, which
    has no link layer)."""
    kind = socket.SOCK_RAW if vnet_hdr else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_PACKET, kind, socket.htons(ETH_P_ALL))
    if vnet_hdr:
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    if ifname is not None:
        sock.bind((ifname, ETH_P_ALL))
    sock.setblocking(False)
    return sock


class ActiveClient:
    """A process in the target's namespace that connects to a scripted peer."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.stdout = LineCollector(proc.stdout, f"client-{proc.pid}-out")
        self.stderr = LineCollector(proc.stderr, f"client-{proc.pid}-err")

    async def outcome(self, timeout: float) -> str:
        """How the client ended: ``closed`` (exit 0), ``refused``, ``timed out``,
        ``reset`` or ``failed: <line>``; ``running`` if it has not ended in time."""
        try:
            rc = await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            return "running"
        await asyncio.to_thread(self.stderr.wait_eof, 5)
        if rc == 0:
            return "closed"
        text = self.stderr.text().lower()
        for word in ("refused", "timed out", "reset"):
            if word in text:
                return word
        return f"failed (exit {rc}): {self.stderr.text()[-200:]}"

    def close(self) -> None:
        """Stop the client by pid if it still runs."""
        stop_process(self.proc, signal.SIGTERM, 5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class Target:
    """One device under test: its namespace, its wire and how to reach its apps."""

    name: str
    ns: NetNS
    link: Link  # where the conformance apps listen
    wire: Wire

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"tcpstack-conf-{self.name}-"))
        self._stack.callback(shutil.rmtree, self.tmp, ignore_errors=True)

    def close(self) -> None:
        """Kill what we started (by pid) and delete the namespace."""
        self._stack.close()

    def new_hub(self) -> Hub:
        """A hub on this target's wire (one per run of scripts)."""
        return Hub(self.wire)

    def active_link(self) -> Link:
        """Where the next active open goes (tcpstack needs a fresh TUN per client)."""
        raise NotImplementedError

    def start_client(self, link: Link, port: int) -> ActiveClient:
        """Start a client in the namespace that connects to ``link.peer_ip:port``."""
        raise NotImplementedError

    def problems(self) -> list[str]:
        """Why the target cannot be trusted any more (a daemon died, ...)."""
        return []

    def logs(self) -> str:
        """The target's own logs, for failure reports."""
        return ""

    def _popen_logged(self, name: str, argv: list[str], *, stdin: int | None = None
                      ) -> tuple[subprocess.Popen[bytes], LineCollector, Path]:
        err_path = self.tmp / f"{name}.stderr"
        with open(err_path, "ab") as err:
            proc = self.ns.popen(*argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=err, cwd=nstools.REPO_ROOT,
                                 env=daemon_env(), start_new_session=True)
        assert proc.stdout is not None
        return proc, LineCollector(proc.stdout, f"{name}-{proc.pid}"), err_path


class LinuxTarget(Target):
    """The kernel's TCP behind a TUN device the test holds."""

    name = "linux"
    TUN = "conftun0"
    HOST_CIDR = "10.89.0.1/24"

    def __init__(self) -> None:
        super().__init__()
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        self.ns = self._stack.enter_context(netns_scope("tcps-conf-linux"))
        self.ns.sysctl(**{"net.ipv4.tcp_synack_retries": SYNACK_RETRIES,
                          "net.ipv4.tcp_syn_retries": SYN_RETRIES})
        tun = self.ns.call(lambda: pytun.TunTapDevice(
            name=self.TUN, flags=pytun.IFF_TUN | pytun.IFF_NO_PI))
        self._stack.callback(tun.close)
        os.set_blocking(tun.fileno(), False)
        host_ip = self.HOST_CIDR.split("/")[0]
        self.ns.run("ip", "addr", "add", self.HOST_CIDR, "dev", self.TUN)
        self.ns.run("ip", "link", "set", self.TUN, "txqueuelen", TXQUEUELEN, "up")
        self.link = Link(self.TUN, "10.89.0.3", host_ip)
        sock = self.ns.call(lambda: packet_socket(self.TUN))
        self._stack.callback(sock.close)
        self.wire = TunWire(sock, tun.fileno())
        argv = [sys.executable, "-u", "-m", "tests.conformance.kernel_apps", "serve",
                "--bind", host_ip]
        for kind, port in PORTS.items():
            argv += ["--app", f"{kind}:{port}"]
        self._apps, out, self._apps_err = self._popen_logged("kernel-apps", argv)
        self._stack.callback(stop_process, self._apps, signal.SIGKILL, 5)
        if out.wait_for("ready", READY_TIMEOUT) is None:
            raise RuntimeError(f"kernel apps did not start:\n{self._apps_err.read_text()}")

    def active_link(self) -> Link:
        return self.link

    def start_client(self, link: Link, port: int) -> ActiveClient:
        argv = [sys.executable, "-u", "-m", "tests.conformance.kernel_apps", "connect",
                link.peer_ip, str(port)]
        proc = self.ns.popen(*argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=nstools.REPO_ROOT, env=daemon_env(),
                             start_new_session=True)
        return ActiveClient(proc)

    def problems(self) -> list[str]:
        rc = self._apps.poll()
        return [] if rc is None else [f"kernel apps exited with status {rc}"]

    def logs(self) -> str:
        return self._apps_err.read_text("utf-8", "replace")[-4000:]


class TcpstackTarget(Target):
    """`tcpstack serve` with the conformance apps, driven through AF_PACKET."""

    name = "tcpstack"
    TUN = "conftun0"
    HOST_CIDR = "10.88.0.1/24"
    VIP = "10.88.0.2"

    def __init__(self) -> None:
        super().__init__()
        self._clients = itertools.count(1)
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        self.ns = self._stack.enter_context(netns_scope("tcps-conf-stack"))
        # Forwarding off: the stack's answers to the peer address are dropped
        # by the kernel without an ICMP error (verified by the hub's noise list).
        self.ns.sysctl(**{"net.ipv4.ip_forward": 0})
        argv = [sys.executable, "-m", "tests.conformance.daemon", "serve", "--tun", self.TUN,
                "--host-addr", self.HOST_CIDR, "--addr", self.VIP,
                "--synack-retries", str(SYNACK_RETRIES), "--offload", OFFLOAD]
        for kind, port in PORTS.items():
            argv += ["--app", f"{kind}:{port}"]
        self.daemon = spawn_daemon(
            self.ns, argv, tun=self.TUN, host_cidr=self.HOST_CIDR, vip=self.VIP,
            stderr_path=self.tmp / "daemon.stderr")
        self._stack.callback(self.daemon.stop)
        self.daemon.wait_ready()
        self.ns.run("ip", "link", "set", self.TUN, "txqueuelen", TXQUEUELEN)
        self.link = Link(self.TUN, "10.88.0.3", self.VIP)
        # Not bound to one device: `tcpstack connect` brings TUNs of its own.
        sock = self.ns.call(lambda: packet_socket(None, vnet_hdr=True))
        self._stack.callback(sock.close)
        self.wire = PacketWire(sock, target_transmits=False, vnet_hdr=True)

    def active_link(self) -> Link:
        """`tcpstack connect` brings its own stack and TUN: a fresh /24 per client."""
        n = next(self._clients)
        if n > 250:
            raise RuntimeError("out of 10.88.N.0/24 subnets for active opens")
        return Link(f"conftun{n}", f"10.88.{n}.3", f"10.88.{n}.2")

    def start_client(self, link: Link, port: int) -> ActiveClient:
        n = link.target_ip.split(".")[2]
        argv = [*tcpstack_argv(), "connect", link.peer_ip, str(port), "--tun", link.ifname,
                "--host-addr", f"10.88.{n}.1/24", "--addr", link.target_ip,
                "--syn-retries", str(SYN_RETRIES), "--offload", OFFLOAD]
        proc = self.ns.popen(*argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=nstools.REPO_ROOT, env=daemon_env(),
                             start_new_session=True)
        return ActiveClient(proc)

    def problems(self) -> list[str]:
        rc = self.daemon.proc.poll()
        return [] if rc is None else [f"the tcpstack daemon exited with status {rc}"]

    def logs(self) -> str:
        return self.daemon.stderr_text()[-4000:]


def start_target(name: str) -> Target:
    """Bring up the named target (see TARGETS)."""
    if name == "linux":
        return LinuxTarget()
    if name == "tcpstack":
        return TcpstackTarget()
    raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
