"""Lazy direct links (network.yaml ``links: lazy``): a pair gets a direct link
while it carries traffic, and only then (core/pairs.py rule 7)."""

from __future__ import annotations

import itertools

import pytest

from tests.sim import NAMES, SimNet, working_example
from wg_netmanager.core.timers import Timers

PING = 200.0  # bytes per second each way: an ICMP echo every half second
IDLE = 20.0  # a short idle_after, so the tests see links close
DYNAMIC = ["alpha", "charlie", "delta"]


def lazy_example(seed: int = 1) -> SimNet:
    net = working_example(seed=seed, timers=Timers(idle_after=IDLE), lazy=True)
    for name in NAMES:
        net.start(name)
    return net


def direct(net: SimNet, a: str, b: str) -> bool:
    return net.path(a, b) == [a, b] and net.path(b, a) == [b, a]


def pair_sessions(net: SimNet) -> int:
    return sum(len(h.node.pairs.paths) for h in net.hosts.values() if h.node is not None)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_direct_link_without_traffic_and_one_within_a_second_of_it(seed: int) -> None:
    net = lazy_example(seed)
    assert net.wait_for(net.all_pairs_ping, limit=5.0) < 1.0  # everyone, via beta
    net.run_for(30.0)
    assert pair_sessions(net) == 0  # nobody talked: nothing opened, nothing kept alive
    assert not any(direct(net, a, b) for a, b in itertools.combinations(DYNAMIC, 2))
    for a, b in (("charlie", "delta"), ("alpha", "charlie")):  # a LAN pair, a NAT pair
        net.flows[(a, b)] = net.flows[(b, a)] = PING
        took = net.wait_for(lambda a=a, b=b: direct(net, a, b), limit=5.0)
        assert took < 1.0, f"{a}<->{b} direct after {took:.2f} s"
    assert not direct(net, "alpha", "delta")  # still no traffic there


def test_one_way_traffic_is_enough_whoever_sends() -> None:
    net = lazy_example()
    net.run_for(5.0)
    net.flows[("delta", "charlie")] = PING  # the higher wg IP sends, the lower only receives
    assert net.wait_for(lambda: direct(net, "charlie", "delta"), limit=5.0) < 1.0


def test_an_idle_link_is_closed_and_comes_back_with_traffic() -> None:
    net = lazy_example()
    net.run_for(5.0)
    net.flows[("charlie", "delta")] = net.flows[("delta", "charlie")] = PING
    assert net.wait_for(lambda: direct(net, "charlie", "delta"), limit=5.0) < 1.0
    net.run_for(2 * IDLE)  # traffic keeps it
    assert direct(net, "charlie", "delta")
    net.flows.clear()
    closed = net.wait_for(lambda: not direct(net, "charlie", "delta"), limit=3 * IDLE)
    assert IDLE * 0.9 < closed < IDLE + 10.0
    assert pair_sessions(net) == 0
    charlie = net.hosts["charlie"].node
    assert charlie is not None
    assert not [k for k in charlie.desired_peers() if k == net.hosts["delta"].node.info.public_key]  # type: ignore[union-attr]
    assert net.pings("charlie", "delta")  # via beta again
    net.flows[("charlie", "delta")] = PING
    assert net.wait_for(lambda: direct(net, "charlie", "delta"), limit=5.0) < 1.0


def test_a_link_the_peer_closed_as_idle_is_not_opened_again_without_new_traffic() -> None:
    net = lazy_example()
    net.run_for(5.0)
    net.flows[("charlie", "delta")] = net.flows[("delta", "charlie")] = PING
    assert net.wait_for(lambda: direct(net, "charlie", "delta"), limit=5.0) < 1.0
    net.flows.clear()
    net.run_for(0.5)
    net.sense("delta", ["charlie"])  # delta's sensor saw the last packet a little later
    net.wait_for(lambda: not direct(net, "charlie", "delta"), limit=3 * IDLE)  # charlie closed
    net.run_for(IDLE / 2)
    assert pair_sessions(net) == 0, "delta opened the link again with no new traffic"
    net.sense("delta", ["charlie"])  # new traffic: delta opens it
    assert net.wait_for(lambda: direct(net, "charlie", "delta"), limit=5.0) < 1.0


def test_eager_stays_the_default() -> None:
    net = working_example()
    for name in NAMES:
        net.start(name)
    assert (
        net.wait_for(
            lambda: all(direct(net, a, b) for a, b in itertools.combinations(DYNAMIC, 2)),
            limit=10.0,
        )
        < 3.0
    )
