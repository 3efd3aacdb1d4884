"""SYN floods and bursts against the real daemon, the Linux kernel as the client:
SYN cookies past a full backlog, the drops without them, the device queue length
(`--txqueuelen`) and a burst of connects at the default settings."""

from __future__ import annotations

import json
from typing import Any

from tcpstack.wire.tun import DEFAULT_TXQUEUELEN

ECHO_PORT = 7

#: Run in the namespace: N concurrent kernel connections to the echo app, each
#: sending its own SIZE octets and reading them back; prints how many came back
#: intact, the failures and how many were still going at the timeout.
BURST = """
import asyncio, json, resource
VIP, PORT, N, SIZE = {vip!r}, {port}, {n}, {size}
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, N + 256), hard))

async def one(i):
    data = i.to_bytes(4, "big") * (SIZE // 4)
    reader, writer = await asyncio.open_connection(VIP, PORT)
    writer.write(data)
    got = await reader.readexactly(len(data))
    writer.close()
    await writer.wait_closed()
    return got == data

async def main():
    tasks = [asyncio.ensure_future(one(i)) for i in range(N)]
    done, pending = await asyncio.wait(tasks, timeout={timeout})
    for t in pending:
        t.cancel()
    errors = sorted({{repr(t.exception()) for t in done if t.exception()}})
    intact = sum(1 for t in done if not t.exception() and t.result())
    print(json.dumps({{"intact": intact, "errors": errors[:5], "pending": len(pending)}}))

asyncio.run(main())
"""


def burst(netns, vip: str, n: int, size: int, timeout: float) -> dict[str, Any]:
    code = BURST.format(vip=vip, port=ECHO_PORT, n=n, size=size, timeout=timeout)
    cp = netns.python(code, timeout=timeout + 15)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def stats(tcpstack_cli, tun: str) -> dict[str, int]:
    cp = tcpstack_cli("stats", "--tun", tun, "--json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def test_cookies_carry_a_burst_past_a_backlog_of_one(make_stack, netns, tcpstack_cli) -> None:
    """200 concurrent connects, one half-open slot: the rest get SYN cookies, and
    every connection echoes its 20 KB intact (window scaling and SACK came back
    from the timestamps, or 20 KB would still flow, only slower)."""
    stack = make_stack(apps=[f"echo:{ECHO_PORT}"], extra_args=["--backlog", "1"])
    result = burst(netns, stack.vip, 200, 20_000, timeout=30)
    assert result == {"intact": 200, "errors": [], "pending": 0}
    counters = stats(tcpstack_cli, stack.tun)
    assert counters["SyncookiesSent"] > 0 and counters["SyncookiesRecv"] > 0, counters
    assert "SyncookiesFailed" not in counters, counters
    assert counters["PassiveOpens"] == 200, counters


def test_always_mode_opens_every_connection_from_a_cookie(make_stack, netns,
                                                          tcpstack_cli) -> None:
    stack = make_stack(apps=[f"echo:{ECHO_PORT}"], extra_args=["--syncookies", "always"])
    result = burst(netns, stack.vip, 50, 20_000, timeout=30)
    assert result == {"intact": 50, "errors": [], "pending": 0}
    counters = stats(tcpstack_cli, stack.tun)
    assert counters["SyncookiesSent"] == counters["SyncookiesRecv"] == 50, counters
    assert "SynAckRetrans" not in counters, counters


def test_without_cookies_a_full_backlog_drops_syns(make_stack, netns, tcpstack_cli) -> None:
    """The textbook chapter's behaviour: SYNs beyond the backlog go unanswered, to
    be retransmitted by the kernel (1, 3, 7 s... later: the client waits for
    those that are still pending after 2 s, bounding the test)."""
    stack = make_stack(apps=[f"echo:{ECHO_PORT}"],
                       extra_args=["--backlog", "1", "--syncookies", "off"])
    result = burst(netns, stack.vip, 20, 1000, timeout=2)
    assert result["intact"] >= 1 and result["errors"] == [], result
    counters = stats(tcpstack_cli, stack.tun)
    assert counters["BacklogDrops"] > 0, counters
    assert "SyncookiesSent" not in counters, counters


def test_txqueuelen_is_set_on_the_device(make_stack, netns, tcpstack_cli) -> None:
    default = make_stack(apps=[f"echo:{ECHO_PORT}"])
    custom = make_stack(apps=[f"echo:{ECHO_PORT}"], extra_args=["--txqueuelen", "12345"])
    for stack, qlen in ((default, str(DEFAULT_TXQUEUELEN)), (custom, "12345")):
        cp = netns.run("cat", f"/sys/class/net/{stack.tun}/tx_queue_len")
        assert cp.stdout.strip() == qlen
    cp = netns.run("ip", "-d", "link", "show", custom.tun)
    assert "qlen 12345" in cp.stdout, cp.stdout
    counters = stats(tcpstack_cli, default.tun)
    assert counters["TunTxDropped"] == counters["TunRxDropped"] == 0, counters


def test_burst_of_2000_connects_at_the_default_settings(make_stack, netns,
                                                        tcpstack_cli) -> None:
    """2,000 connects at once: no SYN is lost to the backlog or to the device
    queue (the kernel's default of 500 for a TUN dropped them)."""
    stack = make_stack(apps=[f"echo:{ECHO_PORT}"])
    result = burst(netns, stack.vip, 2000, 100, timeout=60)
    assert result == {"intact": 2000, "errors": [], "pending": 0}
    counters = stats(tcpstack_cli, stack.tun)
    assert counters["PassiveOpens"] == 2000, counters
    assert counters["TunTxDropped"] == 0 and "BacklogDrops" not in counters, counters
