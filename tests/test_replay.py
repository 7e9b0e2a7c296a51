"""The sliding replay window, against a plain reference model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wg_netmanager.core.replay import WINDOW, ReplayWindow

U64_MAX = 2**64 - 1


class Reference:
    """The rule spelled out: accept a counter once, only if it is newer than
    (highest seen - WINDOW), and never one up to the first counter (the window
    starts with the datagram that established the session; anything the sender
    sent before it belongs to the handshake and must not replay into it)."""

    def __init__(self, first: int) -> None:
        self.first = first
        self.seen = {first}
        self.highest = first

    def accept(self, counter: int) -> bool:
        if counter <= self.first or counter in self.seen or counter <= self.highest - WINDOW:
            return False
        self.seen.add(counter)
        self.highest = max(self.highest, counter)
        return True


def test_window_is_64() -> None:
    assert WINDOW == 64


def test_in_order_counters_are_accepted_once() -> None:
    window = ReplayWindow(1)
    assert not window.accept(1)  # the first counter counts as seen
    for counter in range(2, 500):
        assert window.accept(counter)
        assert not window.accept(counter)
        assert not window.accept(counter - 1)


def test_duplicates_are_refused() -> None:
    window = ReplayWindow(10)
    assert window.accept(12)
    assert not window.accept(12)
    assert window.accept(11)
    assert not window.accept(11)
    assert not window.accept(10)


def test_reordering_within_the_window_is_accepted_exactly_once() -> None:
    window = ReplayWindow(0)
    assert window.accept(100)
    late = [37, 99, 40, 50, 63, 70, 98]  # all > 100 - 64
    for counter in late:
        assert window.accept(counter), counter
    for counter in late:
        assert not window.accept(counter), counter
    # Everything newer than highest - 64 that was never seen is still welcome.
    for counter in range(37, 100):
        if counter not in late:
            assert window.accept(counter), counter
    assert not any(window.accept(c) for c in range(0, 101))


def test_counters_up_to_the_first_count_as_seen() -> None:
    window = ReplayWindow(100)
    for counter in range(0, 101):
        assert not window.accept(counter), counter
    assert window.accept(101)


def test_edge_of_the_window() -> None:
    window = ReplayWindow(0)
    assert window.accept(1000)
    assert window.accept(1000 - WINDOW + 1)  # offset 63: the oldest slot
    assert not window.accept(1000 - WINDOW)  # offset 64: outside
    assert not window.accept(0)
    assert window.accept(1001)
    assert not window.accept(1001 - WINDOW)  # slid out
    assert window.accept(1001 - WINDOW + 1)
    assert not window.accept(1000 - WINDOW + 1)  # seen before


def test_older_than_the_window_is_refused() -> None:
    window = ReplayWindow(5)
    assert window.accept(200)
    for counter in range(0, 200 - WINDOW + 1):
        assert not window.accept(counter), counter


@pytest.mark.parametrize("jump", [63, 64, 65, 1000, 2**16])
def test_jump_forgets_everything_behind_the_new_window(jump: int) -> None:
    window = ReplayWindow(1)
    for counter in range(2, 70):
        assert window.accept(counter)
    top = 69 + jump
    assert window.accept(top)
    assert not window.accept(top)
    # Slots in the new window that were never seen are accepted (once) ...
    for counter in range(max(70, top - WINDOW + 1), top):
        assert window.accept(counter), counter
    # ... seen counters still in the window and everything older are refused.
    for counter in range(0, top):
        assert not window.accept(counter), counter


def test_counter_range_up_to_u64_max() -> None:
    window = ReplayWindow(U64_MAX - 10)
    assert window.accept(U64_MAX)
    assert window.accept(U64_MAX - 1)
    assert not window.accept(U64_MAX)
    assert not window.accept(U64_MAX - 10)


@pytest.mark.parametrize("jump", [2**62, U64_MAX - 1])
def test_huge_jump_is_cheap_and_accepted(jump: int) -> None:
    window = ReplayWindow(1)
    assert window.accept(1 + jump)
    assert not window.accept(1 + jump)
    assert not window.accept(1)
    assert window.bitmap < 2**WINDOW


# Counters clustered so that duplicates, reordering and window edges are
# common, with occasional jumps.
_counters = st.one_of(
    st.integers(0, 200),
    st.integers(0, 200).map(lambda c: c + 10_000),
    st.integers(0, 2**20),
)


@settings(max_examples=80, deadline=None)
@given(first=st.integers(0, 150), counters=st.lists(_counters, max_size=300))
def test_matches_the_reference_model(first: int, counters: list[int]) -> None:
    window, reference = ReplayWindow(first), Reference(first)
    for counter in counters:
        assert window.accept(counter) == reference.accept(counter), counter
        assert window.highest == reference.highest
        assert 0 < window.bitmap < 2**WINDOW


@settings(max_examples=60, deadline=None)
@given(
    first=st.integers(0, 1000),
    steps=st.lists(st.integers(-70, 70), max_size=300),
)
def test_random_walk_matches_the_reference_model(first: int, steps: list[int]) -> None:
    """A sender close to in-order with reordering and duplicates around the edge."""
    window, reference = ReplayWindow(first), Reference(first)
    counter = first
    for step in steps:
        counter = max(0, counter + step)
        assert window.accept(counter) == reference.accept(counter), counter
