"""Network-namespace, process and capture helpers shared by the root-only suites.

Both `tests/integration` (the kernel as a socket-level peer) and
`tests/conformance` (a packet-level peer scripted by the test) run real TUN
devices inside throwaway network namespaces. The rules that keep a failing
test from poisoning later ones or the host live here, once:

* every namespace, TUN device, nftables table and temp file gets a unique name
  and is removed at teardown, also when the test fails;
* only processes started here are signalled, always by pid;
* nothing waits with a bare sleep: waits are on a condition (a line on a pipe,
  a process exit, a predicate) with a bounded timeout.

The namespace, process and daemon handling is `tcpstack.lab.netns` (shared with
`tcpstack demo` and the scripts); this module adds what only the suites need:
the prerequisite gate (skip, or fail under CI), packet capture with tcpdump
and its pcap readers, and nftables drop rules. The pytest fixtures stay in
each suite's conftest; this module only holds the plain classes and functions
they are built from.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dpkt
import pytest

from tcpstack.lab.netns import LineCollector, NetNS, stop_process, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI") == "true"


# --------------------------------------------------------------------------
# Prerequisite gate
# --------------------------------------------------------------------------


def _missing_prerequisites() -> list[str]:
    """Return human-readable reasons why root-only tests cannot run here.

    Evaluated once at import: the answer cannot change during a session and
    probing ``ip netns`` per test would be wasteful.
    """
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("these tests need root (uid 0) for TUN and network namespaces")
    try:
        if not stat.S_ISCHR(os.stat("/dev/net/tun").st_mode):
            problems.append("/dev/net/tun is not a character device")
    except OSError as exc:
        problems.append(f"these tests need /dev/net/tun ({exc.strerror})")
    if shutil.which("ip") is None:
        problems.append("these tests need the `ip` tool (iproute2) for `ip netns`")
    else:
        try:
            probe = subprocess.run(
                ["ip", "netns", "list"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"`ip netns list` failed: {exc}")
        else:
            if probe.returncode != 0:
                problems.append(f"`ip netns` does not work: {probe.stderr.strip()}")
    return problems


PREREQ_PROBLEMS = _missing_prerequisites()


def unavailable(reason: str) -> None:
    """Skip locally, but fail hard in CI where a skip would hide a broken runner."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def require_prerequisites() -> None:
    """Skip (fail under CI=true) unless root, /dev/net/tun and `ip netns` work."""
    if PREREQ_PROBLEMS:
        unavailable("; ".join(PREREQ_PROBLEMS))


def require_tools(*names: str) -> None:
    """Skip (fail under CI=true) when a command-line tool is absent."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        unavailable(f"missing tools: {', '.join(missing)} (run scripts/install-system-deps.sh)")


# --------------------------------------------------------------------------
# Packet capture
# --------------------------------------------------------------------------

#: pcap link types whose frames are bare IP packets (LINKTYPE_RAW and the
#: platform-specific DLT_RAW values that some writers leave in the header).
_RAW_LINKTYPES = {101, 12, 14}
_LINKTYPE_ETHERNET = 1
_LINKTYPE_LINUX_SLL = 113


def read_ip_packets(path: str | os.PathLike[str]) -> list[tuple[float, dpkt.ip.IP]]:
    """Parse a pcap into (timestamp, IPv4 packet) pairs, ignoring non-IPv4 frames.

    Tolerates a truncated last record so a capture still being written can be
    inspected.
    """
    out: list[tuple[float, dpkt.ip.IP]] = []
    with open(path, "rb") as fh:
        try:
            reader = dpkt.pcap.Reader(fh)
        except (ValueError, dpkt.NeedData):
            return out  # header not flushed yet
        linktype = reader.datalink()
        it = iter(reader)
        while True:
            try:
                ts, buf = next(it)
            except StopIteration:
                break
            except (ValueError, dpkt.NeedData, dpkt.UnpackError):
                break  # truncated trailing record
            try:
                if linktype in _RAW_LINKTYPES:
                    if not buf or buf[0] >> 4 != 4:
                        continue
                    ip = dpkt.ip.IP(buf)
                elif linktype == _LINKTYPE_ETHERNET:
                    ip = dpkt.ethernet.Ethernet(buf).data
                elif linktype == _LINKTYPE_LINUX_SLL:
                    ip = dpkt.sll.SLL(buf).data
                else:
                    raise ValueError(f"unsupported pcap link type {linktype}")
            except (dpkt.UnpackError, dpkt.NeedData):
                continue
            if isinstance(ip, dpkt.ip.IP):
                out.append((float(ts), ip))
    return out


def read_tcp_packets(path: str | os.PathLike[str]) -> list[tuple[float, dpkt.ip.IP]]:
    """Like :func:`read_ip_packets` but only packets carrying a TCP segment."""
    return [(ts, ip) for ts, ip in read_ip_packets(path) if isinstance(ip.data, dpkt.tcp.TCP)]


class Capture:
    """A running tcpdump; ``.path`` is the pcap, ``.tcp_packets()`` reads it."""

    def __init__(self, path: Path, proc: subprocess.Popen[bytes]) -> None:
        self.path = path
        self.proc = proc

    def tcp_packets(self) -> list[tuple[float, dpkt.ip.IP]]:
        """Parse what has been written so far (works during and after capture)."""
        return read_tcp_packets(self.path)

    def ip_packets(self) -> list[tuple[float, dpkt.ip.IP]]:
        """All IPv4 packets written so far."""
        return read_ip_packets(self.path)


@contextlib.contextmanager
def capture(
    ns: NetNS,
    iface: str,
    path: str | os.PathLike[str] | None = None,
    startup_timeout: float = 10,
    cleanup: list[str] | None = None,
) -> Iterator[Capture]:
    """Capture on ``iface`` inside ``ns`` for the duration of the block.

    ``--immediate-mode`` and ``-U`` make packets reach the file promptly, so
    a test can wait for a packet to appear before leaving the block; ``-Z
    root`` stops tcpdump dropping privileges and then failing to write into
    root-only temp directories.  Stopped with SIGINT so the file is flushed.
    A temp directory made here (no ``path``) is appended to ``cleanup`` so
    the file stays readable after the block, until the caller removes it.
    """
    tmpdir: str | None = None
    if path is None:
        tmpdir = tempfile.mkdtemp(prefix="tcpstack-cap-")
        path = Path(tmpdir) / f"{iface}.pcap"
    pcap = Path(path)
    proc = ns.popen(
        "tcpdump",
        "-i",
        iface,
        "-U",
        "--immediate-mode",
        "-Z",
        "root",
        "-n",
        "-w",
        str(pcap),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stderr is not None
    err = LineCollector(proc.stderr, f"tcpdump-{proc.pid}")
    try:
        if err.wait_for("listening on", startup_timeout) is None:
            pytest.fail(f"tcpdump on {iface} did not start (exit={proc.poll()}):\n{err.text()}")
        wait_until(pcap.exists, startup_timeout, message=f"tcpdump created {pcap}")
        yield Capture(pcap, proc)
    finally:
        stop_process(proc, signal.SIGINT, 10)
        err.wait_eof(5)
        if tmpdir is not None:
            if cleanup is None:
                shutil.rmtree(tmpdir, ignore_errors=True)
            else:
                cleanup.append(tmpdir)


# --------------------------------------------------------------------------
# nftables
# --------------------------------------------------------------------------


class NftRule:
    """A drop rule installed by :func:`nft_drop`; ``.dropped()`` reads its counter."""

    def __init__(self, ns: NetNS, table: str) -> None:
        self.ns = ns
        self.table = table

    def dropped(self) -> int:
        """Packets the rule has dropped so far (from its counter)."""
        out = self.ns.run("nft", "list", "table", "inet", self.table, timeout=10).stdout
        m = re.search(r"counter packets (\d+)", out)
        return int(m.group(1)) if m else 0


@contextlib.contextmanager
def nft_drop(ns: NetNS, rule_expr: str) -> Iterator[NftRule]:
    """Drop locally generated packets in ``ns`` matching ``rule_expr``.

    Lives in its own uniquely named ``inet`` table with an output hook, so it
    never disturbs other rules and deleting the table removes it completely.
    """
    table = f"tcps_test_{secrets.token_hex(4)}"
    script = (
        f"table inet {table} {{\n"
        "  chain output {\n"
        "    type filter hook output priority 0; policy accept;\n"
        f"    {rule_expr} counter drop\n"
        "  }\n"
        "}\n"
    )
    ns.run("nft", "-f", "-", input=script, timeout=10)
    try:
        yield NftRule(ns, table)
    finally:
        ns.run("nft", "delete", "table", "inet", table, check=False, timeout=10)


def run_into_closed_pipe(argv: list[str], timeout: float = 30.0,
                         **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run `argv` with its stdout on a pipe whose reader is gone, as in
    `tcpstack ss | head -c 0`: every write to stdout fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=timeout, **kw)
    finally:
        os.close(write_end)
