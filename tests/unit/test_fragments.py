"""IPv4 reassembly and fragmentation (tcpstack/wire/fragments.py), with a fake clock:
time is the `now` each call is given."""

from __future__ import annotations

import math
from collections import Counter
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpstack.core.segment import Flags, Options, Segment
from tcpstack.wire import codec, fragments
from tcpstack.wire.fragments import (
    DATAGRAM_OVERHEAD,
    FRAGMENT_OVERHEAD,
    Fragmenter,
    Reassembler,
    fragment,
)

PEER = IPv4Address("10.0.0.1").packed
VIP = IPv4Address("10.0.0.2").packed


def datagram(size: int, sport: int = 40000) -> bytes:
    """A TCP segment to the VIP, `size` octets of payload (distinct, so misplaced data shows)."""
    payload = bytes(i * 7 % 251 for i in range(size))
    return codec.encode(Segment(PEER, VIP, sport, 80, 1000, 1, Flags.ACK | Flags.PSH, 65535,
                                Options(), payload))


def cuts(packet: bytes, step: int) -> list[tuple[int, int]]:
    """[first, end) of each fragment when the data is cut every `step` octets."""
    n = len(packet) - 20
    return [(first, min(first + step, n)) for first in range(0, n, step)]


def same_datagram(whole: bytes, original: bytes) -> bool:
    """Equal but for identification, flags and checksum of the IP header, which
    reassembly rewrites: and decoded, the same segment."""
    return (whole[:4] + whole[8:10] + whole[12:] == original[:4] + original[8:10] + original[12:]
            and codec.decode(whole) == codec.decode(original))


def reassembler(**kw) -> tuple[Reassembler, Counter[str]]:
    stats: Counter[str] = Counter()
    return Reassembler(stats, **kw), stats


# -- whole datagrams ---------------------------------------------------------------------

def test_in_order_fragments_give_the_original_datagram() -> None:
    original = datagram(3000)
    r, stats = reassembler()
    parts = Fragmenter(1500, Counter()).split(original)
    assert [r.receive(p, 0.0) for p in parts[:-1]] == [None, None]
    assert same_datagram(r.receive(parts[-1], 0.0), original)
    assert (stats["ReasmReqds"], stats["ReasmOKs"], stats["ReasmFails"]) == (3, 1, 0)
    assert (r.mem, len(r)) == (0, 0)


@given(st.data())
def test_any_order_with_duplicates_gives_the_original_once(data) -> None:
    """RFC 815: fragments may come in any order and more than once."""
    original = datagram(data.draw(st.integers(1, 3000)))
    step = data.draw(st.integers(-(-len(original) // 1024), 200)) * 8  # <= 128 fragments
    pieces = cuts(original, step)
    order = data.draw(st.permutations(pieces + data.draw(st.lists(st.sampled_from(pieces),
                                                                  max_size=5))))
    r, stats = reassembler()
    out = [r.receive(fragment(original, first, end, 77), 1.0) for first, end in order]
    # Complete exactly when the last missing piece first comes, and the original
    # then; a copy after that starts a new datagram (Linux too forgets a done one).
    seen: set[tuple[int, int]] = set()
    for piece, whole in zip(order, out, strict=True):
        seen.add(piece)
        if len(seen) == len(pieces):
            assert same_datagram(whole, original)
            break
        assert whole is None
    assert all(same_datagram(w, original) for w in out if w is not None)
    assert stats["ReasmOverlaps"] == stats["ReasmFails"] == 0


@given(st.data())
def test_hostile_fragments_give_the_original_or_a_counted_drop(data) -> None:
    """Arbitrary fragments of one datagram (overlapping, lying about MF): whatever
    comes out is exactly the original, everything else is counted; memory stays
    within the cap and is all given back when the datagrams go."""
    original = datagram(data.draw(st.integers(8, 600)))
    n = len(original) - 20
    limit = data.draw(st.sampled_from([1 << 20, DATAGRAM_OVERHEAD + 3 * FRAGMENT_OVERHEAD + 600]))
    r, stats = reassembler(mem_limit=limit, max_fragments=8)
    starts = st.integers(0, (n - 1) // 8).map(lambda i: i * 8)
    sent = data.draw(st.lists(starts, min_size=1, max_size=30))
    for first in sent:
        end = data.draw(st.integers(first + 1, n))
        whole = r.receive(fragment(original, first, end, 5), 0.0)
        assert whole is None or same_datagram(whole, original)
        assert r.mem <= limit
    assert stats["ReasmReqds"] == len(sent)
    r.expire(math.inf)
    assert (r.mem, len(r)) == (0, 0)


# -- overlaps and duplicates (RFC 5722 behaviour, as Linux for IPv4) ----------------------

def test_overlapping_fragment_drops_the_whole_datagram() -> None:
    original = datagram(64)
    r, stats = reassembler()
    assert r.receive(fragment(original, 0, 40, 1), 0.0) is None
    assert r.receive(fragment(original, 32, 84, 1), 0.0) is None  # octets 32..39 twice
    assert (stats["ReasmOverlaps"], stats["ReasmFails"], len(r), r.mem) == (1, 1, 0, 0)
    # What would have completed it now only starts a new datagram.
    assert r.receive(fragment(original, 40, 84, 1), 0.0) is None


def test_duplicate_fragment_is_ignored_and_reassembly_goes_on() -> None:
    original = datagram(64)
    r, stats = reassembler()
    r.receive(fragment(original, 0, 40, 1), 0.0)
    r.receive(fragment(original, 8, 24, 1), 0.0)  # inside what came: a retransmission
    assert stats["ReasmDuplicates"] == 1 and stats["ReasmFails"] == 0
    assert same_datagram(r.receive(fragment(original, 40, 84, 1), 0.0), original)


def test_two_different_last_fragments_drop_the_datagram() -> None:
    original = datagram(64)
    r, stats = reassembler()
    r.receive(fragment(original, 40, 84, 1), 0.0)
    r.receive(fragment(original[:20 + 72], 48, 72, 1), 0.0)  # MF clear, another end
    assert stats["ReasmFails"] >= 1 and len(r) == 0


def test_keys_keep_datagrams_apart() -> None:
    """RFC 791 3.2: source, destination, protocol and identification."""
    a, b = datagram(64, sport=1), datagram(64, sport=2)
    r, _ = reassembler()
    r.receive(fragment(a, 0, 40, 9), 0.0)
    r.receive(fragment(b, 0, 40, 10), 0.0)
    assert same_datagram(r.receive(fragment(b, 40, 84, 10), 0.0), b)
    assert same_datagram(r.receive(fragment(a, 40, 84, 9), 0.0), a)


# -- limits -------------------------------------------------------------------------------

def test_datagram_beyond_65535_octets_is_dropped() -> None:
    original = datagram(64)
    r, stats = reassembler()
    r.receive(fragment(original, 0, 40, 1), 0.0)
    beyond = bytearray(fragment(original, 40, 84, 1))
    beyond[6:8] = (8189).to_bytes(2, "big")  # offset 65512 + 44 octets > 65535 - 20
    r.receive(bytes(beyond), 0.0)
    assert (stats["ReasmOversize"], stats["ReasmFails"], len(r), r.mem) == (1, 1, 0, 0)


def test_timeout_drops_an_incomplete_datagram() -> None:
    original = datagram(64)
    r, stats = reassembler(timeout=30.0)
    r.receive(fragment(original, 0, 40, 1), 100.0)
    assert r.next_deadline() == 130.0
    r.expire(129.9)
    assert len(r) == 1
    r.expire(130.0)
    assert (stats["ReasmTimeout"], stats["ReasmFails"], len(r), r.mem) == (1, 1, 0, 0)
    assert r.next_deadline() is None
    # The rest, too late, only starts a datagram of its own.
    assert r.receive(fragment(original, 40, 84, 1), 131.0) is None


def test_timeout_counts_from_the_first_fragment_and_applies_lazily() -> None:
    """Like Linux, later fragments do not extend the time; `receive` itself expires."""
    original = datagram(64)
    r, stats = reassembler(timeout=30.0)
    r.receive(fragment(original, 0, 16, 1), 0.0)
    r.receive(fragment(original, 16, 32, 1), 29.0)
    assert r.receive(fragment(original, 32, 84, 1), 30.5) is None
    assert stats["ReasmTimeout"] == 1


def test_memory_cap_drops_new_fragments_until_room_is_made() -> None:
    """Like Linux since 4.17: above ipfrag_high_thresh every fragment is dropped,
    those of datagrams in progress as well; nothing is evicted."""
    original = datagram(64)
    one = len(fragment(original, 0, 40, 0)) + FRAGMENT_OVERHEAD + DATAGRAM_OVERHEAD
    r, stats = reassembler(mem_limit=3 * one + 8, timeout=30.0)  # the rest is 4 octets more
    for ident in range(3):
        r.receive(fragment(original, 0, 40, ident), float(ident))
    assert r.mem == 3 * one
    assert r.receive(fragment(original, 40, 84, 0), 5.0) is None  # its rest: no room
    assert (stats["ReasmFails"], len(r)) == (1, 3)
    r.expire(30.0)  # the first datagram times out
    assert r.mem == 2 * one
    assert same_datagram(r.receive(fragment(original, 40, 84, 1), 30.0), original)
    assert (r.mem, stats["ReasmOKs"]) == (one, 1)


def test_fragment_count_is_capped() -> None:
    original = datagram(8 * 20)
    r, stats = reassembler(max_fragments=4)
    for first in range(0, 8 * 5, 8):
        r.receive(fragment(original, first, first + 8, 3), 0.0)
    assert (stats["ReasmFails"], len(r), r.mem) == (1, 0, 0)


def test_empty_fragment_drops_the_datagram() -> None:
    original = datagram(64)
    r, stats = reassembler()
    r.receive(fragment(original, 0, 40, 1), 0.0)
    r.receive(fragment(original, 40, 44, 1), 0.0)  # 4 octets with MF: trimmed to none
    assert (stats["ReasmFails"], len(r)) == (1, 0)


@pytest.mark.parametrize("reverse", [False, True])
def test_cost_per_fragment_is_logarithmic_in_the_worst_order(monkeypatch, reverse) -> None:
    """Counted work, not time: each fragment costs one bisect over at most
    max_fragments + 1 holes, whatever the order; 8-octet fragments, every other
    one first and then the rest, make the most holes. The one that completes
    the datagram also sorts the pieces once."""
    calls = 0

    def counting(hole: tuple[int, int]) -> int:
        nonlocal calls
        calls += 1
        return hole[0]

    monkeypatch.setattr(fragments, "hole_first", counting)
    cap = 128
    original = datagram(8 * cap - 20)  # 8 * cap octets after the IP header
    order = list(range(0, 8 * cap, 16)) + list(range(8, 8 * cap, 16))
    if reverse:
        order.reverse()
    r, stats = reassembler(max_fragments=cap)
    costs = []
    for first in order:
        calls = 0
        whole = r.receive(fragment(original, first, first + 8, 4), 0.0)
        costs.append(calls)
    bisect = math.ceil(math.log2(cap + 2))
    assert max(costs[:-1]) <= bisect
    assert costs[-1] <= bisect + cap
    assert same_datagram(whole, original) and stats["ReasmOKs"] == 1


# -- fragmentation on the way out (RFC 791 3.2) -------------------------------------------

def test_fragmenter_leaves_what_fits_alone() -> None:
    packet = datagram(1460)
    assert Fragmenter(1500, Counter()).split(packet) == [packet]


def test_fragmenter_cuts_at_multiples_of_eight_within_the_mtu() -> None:
    stats: Counter[str] = Counter()
    packet = datagram(2000)
    parts = Fragmenter(576, stats, ident=0xFFFF).split(packet)
    heads = [codec.dpkt.ip.IP(p) for p in parts]
    assert all(len(p) <= 576 for p in parts)
    assert [h.offset * 8 for h in heads] == [0, 552, 1104, 1656]
    assert [h.mf for h in heads] == [1, 1, 1, 0] and not any(h.df for h in heads)
    assert {h.id for h in heads} == {0xFFFF}
    assert (stats["FragOKs"], stats["FragCreates"]) == (1, 4)
    r, _ = reassembler()
    assert same_datagram([r.receive(p, 0.0) for p in parts][-1], packet)
