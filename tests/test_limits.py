"""Per-source token buckets: bounded, and a full table forgets what says nothing."""

from __future__ import annotations

from wg_netmanager.core.limits import TokenBuckets


def test_burst_then_rate() -> None:
    buckets = TokenBuckets(burst=3, rate=2.0, max_keys=10)
    assert [buckets.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.empty("a", 0.0) and not buckets.empty("b", 0.0)
    assert not buckets.allow("a", 0.4)  # 0.8 of a token
    assert buckets.allow("a", 0.5)
    assert not buckets.allow("a", 0.5)


def test_a_clock_going_backwards_does_not_drain_or_fill() -> None:
    buckets = TokenBuckets(burst=2, rate=1.0, max_keys=10)
    assert buckets.allow("a", 100.0) and buckets.allow("a", 100.0)
    assert not buckets.allow("a", 50.0)
    assert buckets.allow("a", 51.0)


def test_a_full_table_forgets_full_buckets_first() -> None:
    buckets = TokenBuckets(burst=2, rate=0.01, max_keys=4)
    for key in ("a", "b", "c", "busy"):
        buckets.allow(key, 0.0)
    assert len(buckets) == 4
    assert buckets.allow("busy", 200.0)  # busy again; a, b and c refilled: full
    assert buckets.allow("new", 200.0)  # no room: the full ones are forgotten
    assert len(buckets) == 2
    assert buckets.allow("busy", 200.0) and buckets.empty("busy", 200.0)  # busy kept its count


def test_a_table_of_busy_sources_is_reset_to_stay_bounded() -> None:
    buckets = TokenBuckets(burst=1, rate=0.001, max_keys=100)
    for i in range(1000):
        buckets.allow(i, 0.0)  # each spends its only token: none is full
        assert len(buckets) <= 100
