"""The one loop timer behind the timer wheel and the impairment's delays."""

from __future__ import annotations

import asyncio

from tcpstack.shell.looptimer import EarliestTimer


async def test_keeps_the_earliest_deadline_and_reports_no_earlier_than_armed() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    done = asyncio.Event()

    def callback(now: float) -> None:
        fired.append(now)
        done.set()

    timer = EarliestTimer(loop, callback)
    t0 = loop.time()
    timer.arm(t0 + 0.05)
    timer.arm(t0 + 0.02)  # earlier: replaces
    timer.arm(t0 + 0.04)  # later: the earlier one stays
    await asyncio.wait_for(done.wait(), 2)
    assert len(fired) == 1 and fired[0] >= t0 + 0.02
    assert not timer.armed


async def test_none_and_cancel_disarm() -> None:
    timer = EarliestTimer(asyncio.get_running_loop(), lambda now: None)
    timer.arm(asyncio.get_running_loop().time() + 10)
    assert timer.armed
    timer.arm(None)
    assert not timer.armed
