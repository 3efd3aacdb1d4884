"""The hashed timer wheel: never early, at the first tick at/after the deadline."""

import math
import weakref

from hypothesis import given
from hypothesis import strategies as st

from tcpstack.core.timerwheel import TimerWheel


def test_never_fires_early():
    w = TimerWheel(tick=0.01, slots=512)
    w.schedule(0.105, "a")
    assert w.expire(0.1) == []
    assert w.expire(0.105) == []  # inside tick 10; the first tick at/after 0.105 is 0.11
    assert w.expire(0.1099) == []
    assert w.expire(0.11) == ["a"]
    assert len(w) == 0


def test_deadline_on_a_tick_fires_at_that_tick():
    w = TimerWheel(tick=0.01)
    w.schedule(0.3, "a")
    assert w.next_deadline() == 0.3
    assert w.expire(0.29) == []
    assert w.expire(0.3) == ["a"]


def test_fires_once_and_late_expire_catches_up():
    w = TimerWheel(tick=0.01)
    w.schedule(0.05, "a")
    w.schedule(0.07, "b")
    assert w.expire(0.5) == ["a", "b"]
    assert w.expire(1.0) == []
    assert w.next_deadline() is None


def test_cancel():
    w = TimerWheel(tick=0.01)
    t = w.schedule(0.05, "a")
    w.schedule(0.06, "b")
    w.cancel(t)
    assert len(w) == 1
    assert w.next_deadline() == 0.06
    assert w.expire(1.0) == ["b"]
    w.cancel(t)  # cancelling twice, or after the wheel moved on, is harmless
    assert len(w) == 0


def test_cancel_after_fire_is_harmless():
    w = TimerWheel(tick=0.01)
    t = w.schedule(0.05, "a")
    assert w.expire(0.05) == ["a"]
    w.cancel(t)
    assert len(w) == 0


def test_a_cancelled_far_timer_lets_its_item_go():
    """A far timer stays in the heap until its tick surfaces (a keep-alive
    deadline: hours); it must not keep a finished connection alive that long."""

    class Item:
        pass

    w = TimerWheel(tick=0.01, slots=8)
    item = Item()
    gone = weakref.ref(item)
    w.cancel(w.schedule(7200.0, item))
    del item
    assert gone() is None
    assert w.next_deadline() is None and w.expire(7200.0) == []


def test_many_rotations_ahead():
    w = TimerWheel(tick=1.0, slots=8)
    w.schedule(100.0, "far")  # 12.5 rotations ahead, shares slot 4 with tick 4, 12, ...
    w.schedule(4.0, "near")
    assert w.expire(4.0) == ["near"]
    for t in range(5, 100):
        assert w.expire(float(t)) == [], t
    assert w.expire(100.0) == ["far"]


def test_gap_longer_than_a_rotation():
    w = TimerWheel(tick=1.0, slots=8)
    w.schedule(3.0, "a")
    w.schedule(30.0, "b")
    w.schedule(31.0, "c")
    assert sorted(w.expire(30.0)) == ["a", "b"]
    assert w.expire(31.0) == ["c"]


def test_next_deadline():
    w = TimerWheel(tick=1.0, slots=8)
    assert w.next_deadline() is None
    w.schedule(100.0, "far")
    assert w.next_deadline() == 100.0  # beyond one rotation: found by the full scan
    w.schedule(6.5, "mid")
    assert w.next_deadline() == 7.0  # rounded up to its tick
    w.schedule(2.0, "near")
    assert w.next_deadline() == 2.0
    w.expire(2.0)
    assert w.next_deadline() == 7.0
    w.expire(7.0)
    assert w.next_deadline() == 100.0
    w.expire(95.0)
    assert w.next_deadline() == 100.0  # now within one rotation


def test_next_deadline_prefers_nearer_timer_in_a_later_rotation_slot():
    w = TimerWheel(tick=1.0, slots=8)
    w.schedule(9.0, "a")  # slot 1, next rotation
    w.schedule(17.0, "b")  # slot 1 as well, two rotations ahead
    assert w.next_deadline() == 9.0


def test_past_due_deadline_fires_at_next_expire():
    w = TimerWheel(tick=0.01, now=1.0)
    w.schedule(0.5, "late")  # already due: goes into the next tick
    assert w.next_deadline() == 1.01
    assert w.expire(1.01) == ["late"]


def test_start_time_respected():
    w = TimerWheel(tick=1.0, slots=8, now=1000.0)
    w.schedule(1003.0, "a")
    assert w.next_deadline() == 1003.0
    assert w.expire(1002.0) == []
    assert w.expire(1003.0) == ["a"]


# Exact binary fractions keep the model free of float rounding.
TICK = 0.5
times = st.integers(0, 400).map(lambda k: k / 8)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("schedule"), times),
        st.tuples(st.just("cancel"), st.integers(0, 50)),
        st.tuples(st.just("advance"), st.integers(0, 80).map(lambda k: k / 8)),
    ),
    max_size=60,
)


@given(ops)
def test_matches_sorted_list_model(program):
    w: TimerWheel[int] = TimerWheel(tick=TICK, slots=16)
    now = 0.0
    done_tick = 0  # every tick <= this has been expired
    model: dict[int, int] = {}  # id -> tick at which it must fire
    handles = []
    for op, arg in program:
        if op == "schedule":
            ident = len(handles)
            handles.append(w.schedule(arg, ident))
            model[ident] = max(math.ceil(arg / TICK), done_tick + 1)
        elif op == "cancel" and arg < len(handles):
            w.cancel(handles[arg])
            model.pop(arg, None)
        elif op == "advance":
            now += arg
            done_tick = max(done_tick, math.floor(now / TICK))
            fired = w.expire(now)
            due = sorted(i for i, t in model.items() if t <= done_tick)
            assert sorted(fired) == due
            for i in due:
                del model[i]
        assert len(w) == len(model)
        want = min(model.values()) * TICK if model else None
        assert w.next_deadline() == want


def test_far_timers_cost_no_scan_per_firing():
    """10,000 TIME-WAIT-like deadlines a minute ahead (beyond one rotation) must not
    make every firing scan them: after each expiry the shell asks next_deadline(),
    which walks at most the 512 slots, never the timers (it was O(n) per firing)."""
    from tcpstack.core import timerwheel
    from tests.unit.linecount import LineCounter

    w: TimerWheel[int] = TimerWheel(tick=0.01, slots=512)
    for i in range(10_000):
        w.schedule(60.0 + i * 0.001, i)
    count = LineCounter(timerwheel)
    worst = 0
    for step in range(1, 100):
        w.schedule(step * 0.01, -step)  # a near timer fires on every tick
        assert count(w.expire, step * 0.01) == [-step]
        worst = max(worst, count.last)
        assert count(w.next_deadline) == 60.0  # only the far ones are left
        worst = max(worst, count.last)
    assert worst < 3 * 512  # a few lines per slot; scanning the timers costs 10,000+
    assert len(w) == 10_000
    fired = w.expire(61.0)
    assert fired[:3] == [0, 1, 2] and len(fired) == 1_001 and len(w) == 8_999
