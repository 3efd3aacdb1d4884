"""Bulk transfers and connection churn against the daemon, clean and over a bad network.

50 MB each way through curl (GET /bytes/N, POST /sha256) must arrive
byte-exact; `ab` with 200 concurrent short connections must see no failures.
The impaired variants run the same transfers with the stack's own impairment
(`--impair`: loss, duplication, reordering, jitter in both directions) and
with random loss in the kernel's nftables input and output hooks; they rely
on the loss recovery of the TCB (fast retransmit, SACK, out-of-order queue)
and are each bounded by IMPAIRED_TIMEOUT so they can never hang the suite
(deselect them with `-k 'not impaired'`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

SIZE = 50_000_000
IMPAIRED_TIMEOUT = float(os.environ.get("TCPSTACK_IMPAIRED_TIMEOUT", "120"))
#: Both directions, fixed seed so a failure can be replayed with the same decisions.
STACK_IMPAIRMENT = "loss=5%,dup=2%,reorder=10%,jitter=20ms,seed=1"
KERNEL_LOSS_PERCENT = 5
CHUNK = 1 << 20

def _pattern_sha256(n: int) -> str:
    """SHA-256 of the /bytes/N body (byte k is k mod 251), built chunk by chunk."""
    block = bytes(range(251)) * (CHUNK // 251 + 2)
    h = hashlib.sha256()
    for start in range(0, n, CHUNK):
        offset = start % 251
        h.update(block[offset:offset + min(CHUNK, n - start)])
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="module")
def upload_file(tmp_path_factory) -> tuple[Path, str]:
    """A 50 MB random body and its SHA-256, shared by the upload tests."""
    path = tmp_path_factory.mktemp("upload") / "body.bin"
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(0, SIZE, CHUNK):
            chunk = os.urandom(min(CHUNK, SIZE - f.tell()))
            h.update(chunk)
            f.write(chunk)
    return path, h.hexdigest()


def download(netns, vip: str, out: Path, timeout: float) -> None:
    cp = netns.run("curl", "-sS", "-f", "--max-time", str(timeout), "-o", str(out),
                   f"http://{vip}/bytes/{SIZE}", timeout=timeout + 10, check=False)
    assert cp.returncode == 0, f"curl: {cp.stderr.strip()}"
    assert out.stat().st_size == SIZE
    assert _file_sha256(out) == _pattern_sha256(SIZE)


def upload(netns, vip: str, body: tuple[Path, str], timeout: float) -> None:
    path, digest = body
    cp = netns.run("curl", "-sS", "-f", "--max-time", str(timeout), "-H", "Expect:",
                   "--data-binary", f"@{path}", f"http://{vip}/sha256",
                   timeout=timeout + 10, check=False)
    assert cp.returncode == 0, f"curl: {cp.stderr.strip()}"
    assert cp.stdout.strip() == digest


@contextlib.contextmanager
def kernel_loss(ns, vip: str, percent: int) -> Iterator[None]:
    """Random loss in the netns' kernel, both ways: the input hook drops packets
    from the stack, the output hook packets to it. One uniquely named table,
    deleted afterwards (also on failure)."""
    table = f"tcps_loss_{secrets.token_hex(4)}"
    rule = f"numgen random mod 100 < {percent} counter drop"
    ns.run("nft", "-f", "-", timeout=10, input=(
        f"table inet {table} {{\n"
        f"  chain input {{\n    type filter hook input priority 0; policy accept;\n"
        f"    ip saddr {vip} {rule}\n  }}\n"
        f"  chain output {{\n    type filter hook output priority 0; policy accept;\n"
        f"    ip daddr {vip} {rule}\n  }}\n"
        "}\n"))
    try:
        yield
        listing = ns.run("nft", "list", "table", "inet", table, timeout=10).stdout
        dropped = [int(n) for n in re.findall(r"counter packets (\d+)", listing)]
        assert all(dropped), f"a loss rule never matched: {listing}"
    finally:
        ns.run("nft", "delete", "table", "inet", table, check=False, timeout=10)


# -- clean network: must pass ------------------------------------------------------------

def test_download_50mb_byte_exact(make_stack, netns, require_tools, tmp_path) -> None:
    require_tools("curl")
    stack = make_stack(apps=["http:80"])
    download(netns, stack.vip, tmp_path / "bytes.bin", timeout=60)


def test_upload_50mb_byte_exact(make_stack, netns, require_tools, upload_file) -> None:
    require_tools("curl")
    stack = make_stack(apps=["http:80"])
    upload(netns, stack.vip, upload_file, timeout=60)


def test_ab_200_concurrent_connections(make_stack, netns, require_tools) -> None:
    """1000 full connections (no keep-alive), 200 at a time (more than the backlog of
    128): no failure, no non-2xx."""
    require_tools("ab")
    stack = make_stack(apps=["http:80"])
    out = netns.run("ab", "-q", "-n", "1000", "-c", "200", "-s", "20",
                    f"http://{stack.vip}/", timeout=60).stdout
    assert "Complete requests:      1000" in out, out
    assert "Failed requests:        0" in out, out
    assert "Non-2xx responses" not in out, out
    assert stack.alive(), stack.stderr_text()[-3000:]


# -- impaired network --------------------------------------

@pytest.mark.parametrize("direction", ["download", "upload"])
def test_impaired_by_stack_50mb(make_stack, netns, require_tools, tmp_path, upload_file,
                                direction: str) -> None:
    """--impair on both directions: 5 % loss, 2 % duplicates, 10 % reordered, 20 ms jitter."""
    require_tools("curl")
    stack = make_stack(apps=["http:80"], extra_args=["--impair", STACK_IMPAIRMENT])
    if direction == "download":
        download(netns, stack.vip, tmp_path / "bytes.bin", IMPAIRED_TIMEOUT)
    else:
        upload(netns, stack.vip, upload_file, IMPAIRED_TIMEOUT)


@pytest.mark.parametrize("direction", ["download", "upload"])
def test_impaired_by_kernel_loss_50mb(make_stack, netns, require_tools, tmp_path,
                                      upload_file, direction: str) -> None:
    """5 % random loss in the kernel's nftables, packets to and from the stack."""
    require_tools("curl", "nft")
    stack = make_stack(apps=["http:80"])
    with kernel_loss(netns, stack.vip, KERNEL_LOSS_PERCENT):
        if direction == "download":
            download(netns, stack.vip, tmp_path / "bytes.bin", IMPAIRED_TIMEOUT)
        else:
            upload(netns, stack.vip, upload_file, IMPAIRED_TIMEOUT)
