"""The TUN device: the stack's wire.

The kernel side gets `host_addr` (e.g. 10.0.0.1/24), so its /NN route leads
into the device, and every IPv4 packet the kernel routes there is read by the
stack. IPv6 is switched off on the device before it comes up: otherwise the
kernel sends router solicitations into it that nobody wants.

The device's transmit queue holds what the kernel sends to the stack until the
stack reads it; the kernel's default for a TUN (500 packets) drops most of a
burst of connects or closes, so the daemon sets it (`--txqueuelen`).

With offloads (`--offload on`, the default; docs/offload.md) the device is
opened with IFF_VNET_HDR and TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4): every
read and write then starts with a virtio-net header (`tcpstack.wire.vnet`), and TCP
packets cross it as super-segments of up to 64 KiB with the checksum left to
the kernel. The header stays on the frames the stack reads and writes, since
the pcap tap needs it to show the wire segments. A kernel that refuses the
ioctl gets the device without offloads and a warning.

Before a daemon makes its device, `check_free_subnet` reads the namespace's
routes: a subnet that is already routed elsewhere would leave the new device
unreachable. `missing_capabilities` tells a root without CAP_NET_ADMIN (a
container, `capsh --drop`) why the set-up cannot work, before it starts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import struct
from collections.abc import Callable
from functools import partial
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytun

SIOCSIFTXQLEN = 0x8943  # <linux/sockios.h>: set the device's transmit queue length
TUNSETOFFLOAD = 0x400454D0  # <linux/if_tun.h>: _IOW('T', 208, unsigned int)
TUN_F_CSUM = 0x01  # the reader takes packets with partial checksums
TUN_F_TSO4 = 0x02  # ... and TCP/IPv4 super-segments
DEFAULT_TXQUEUELEN = 65536
ROUTES = Path("/proc/net/route")  # this network namespace's main routing table
STATUS = Path("/proc/self/status")
#: <linux/capability.h>: the capabilities the daemon and the demo need.
CAPABILITIES = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21}
#: sysfs counters shown by `tcpstack stats`: tx is the kernel sending to the stack.
DROP_COUNTERS = {"TunTxDropped": "tx_dropped", "TunRxDropped": "rx_dropped"}


class TunError(Exception):
    """Setting up the device failed; the message is meant for the user."""


log = logging.getLogger("tcpstack.wire.tun")


class TunDevice:
    """An IFF_TUN | IFF_NO_PI device: each read or write is one bare IPv4 packet,
    or with `offload` (if the kernel agrees: then `vnet` is True) one frame, a
    virtio-net header and the packet. The device exists while it is open and
    disappears when it is closed."""

    def __init__(self, name: str, host_addr: IPv4Interface, mtu: int,
                 txqueuelen: int = DEFAULT_TXQUEUELEN, *, offload: bool = False) -> None:
        self._dev = _open(name, offload)
        self.vnet = offload
        if offload:
            try:
                fcntl.ioctl(self._dev.fileno(), TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4)
            except OSError as e:
                log.warning("offloads off: the kernel refused TUNSETOFFLOAD on %s (%s)",
                            name, e.strerror or e)
                self._dev.close()
                self._dev = _open(name, offload=False)
                self.vnet = False
        self.name: str = self._dev.name
        try:
            _disable_ipv6(self.name)
            self._dev.addr = str(host_addr.ip)
            self._dev.netmask = str(host_addr.netmask)
            self._dev.mtu = mtu
            _set_txqueuelen(self.name, txqueuelen)
            self._dev.up()
        except (pytun.Error, OSError) as e:
            self._dev.close()
            raise TunError(f"cannot configure TUN device {name}: {e}") from None
        os.set_blocking(self._dev.fileno(), False)
        #: Send one packet (or frame) to the kernel (BlockingIOError when its queue
        #: is full): `os.write` on the fd itself, no Python frame between the
        #: stack and the system call, which it makes for every packet.
        self.write: Callable[[bytes], int] = partial(os.write, self._dev.fileno())

    def fileno(self) -> int:
        return self._dev.fileno()

    def drop_counters(self) -> dict[str, int]:
        """The device's drop counters, read from sysfs (a missing file reads 0)."""
        stats = Path("/sys/class/net") / self.name / "statistics"
        counters = {}
        for name, file in DROP_COUNTERS.items():
            try:
                counters[name] = int((stats / file).read_text())
            except (OSError, ValueError):
                counters[name] = 0
        return counters

    def close(self) -> None:
        self._dev.close()


def _open(name: str, offload: bool) -> pytun.TunTapDevice:
    flags = pytun.IFF_TUN | pytun.IFF_NO_PI | (pytun.IFF_VNET_HDR if offload else 0)
    try:
        return pytun.TunTapDevice(name=name, flags=flags)
    except pytun.Error as e:
        raise TunError(_explain(name, e)) from None


def _explain(name: str, e: pytun.Error) -> str:
    code = e.args[0] if e.args and isinstance(e.args[0], int) else None
    if code == errno.EBUSY:
        return f"TUN device {name} is busy: another process has it open"
    if code in (errno.EPERM, errno.EACCES):
        return "creating a TUN device needs root (CAP_NET_ADMIN)"
    if code == errno.ENOENT:
        return "/dev/net/tun is missing: load the tun module (modprobe tun)"
    return f"cannot create TUN device {name}: {e.args[-1] if e.args else e}"


def _disable_ipv6(name: str) -> None:
    knob = Path("/proc/sys/net/ipv6/conf") / name / "disable_ipv6"
    if knob.exists():
        knob.write_text("1")


def _set_txqueuelen(name: str, qlen: int) -> None:
    """`ip link set dev NAME txqueuelen QLEN`, as the SIOCSIFTXQLEN ioctl: a struct
    ifreq, the name then ifr_qlen (an int) in its union, 40 octets in all."""
    ifreq = struct.pack("16si20x", name.encode(), qlen)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCSIFTXQLEN, ifreq)


def check_free_subnet(name: str, network: IPv4Network, routes: Path = ROUTES) -> None:
    """Refuse a kernel-side subnet that overlaps a route of this namespace.

    Two devices with routes to the same subnet look fine (both daemons say
    "ready") but the kernel sends everything along the first route, so the
    second stack never hears a packet. Routes on `name` itself are left out
    (they belong to the device we are about to configure), and so are default
    routes, which overlap everything and are overridden by any longer prefix.
    """
    for dev, dest in _routes(routes):
        if dev != name and dest.prefixlen > 0 and dest.overlaps(network):
            raise TunError(f"--host-addr: {network} overlaps the route to {dest} on {dev} "
                           "(another daemon?); choose a free subnet")


def _routes(path: Path) -> list[tuple[str, IPv4Network]]:
    """(device, destination) of each route in /proc/net/route, whose addresses are
    the kernel's __be32 printed as a host-order hex number."""
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return []  # no procfs: nothing to check against
    routes = []
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        dest, mask = (IPv4Address(struct.pack("=I", int(f, 16))) for f in (fields[1], fields[7]))
        routes.append((fields[0], IPv4Network(f"{dest}/{mask}", strict=False)))
    return routes


def missing_capabilities(*names: str, status: Path = STATUS) -> list[str]:
    """The capabilities among `names` (keys of CAPABILITIES) this process lacks.

    Root is not enough: a container or `capsh --drop` leaves uid 0 without
    CAP_NET_ADMIN, and the TUN ioctl or `ip netns add` then fails half-way.
    """
    effective = 0
    with contextlib.suppress(OSError, ValueError):
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                effective = int(line.split()[1], 16)
    return [name for name in names if not effective >> CAPABILITIES[name] & 1]
