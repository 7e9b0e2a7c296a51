"""The deadline heap (core/deadlines.py) and the node timer built on it: the
earliest deadline is always what a walk over every session would find."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from random import Random

import pytest

from tests.sim import NAMES, Nat, SimNet, working_example
from wg_netmanager.core.deadlines import Deadlines
from wg_netmanager.core.node import Node
from wg_netmanager.core.timers import Timers
from wg_netmanager.model import Gateway


def test_earliest_follows_every_filing_earlier_or_later() -> None:
    d: Deadlines[str] = Deadlines()
    assert d.earliest() is None
    d.file("a", 5.0)
    d.file("b", 3.0)
    assert d.earliest() == 3.0
    d.file("b", 9.0)  # later: the old filing is stale
    assert d.earliest() == 5.0
    d.file("a", 1.0)  # earlier
    assert d.earliest() == 1.0
    d.file("a", None)
    assert d.earliest() == 9.0
    d.discard("b")
    assert d.earliest() is None
    assert len(d) == 0


def test_due_lists_keys_in_order_once_and_leaves_them_due() -> None:
    d: Deadlines[str] = Deadlines()
    d.file("late", 10.0)
    d.file("b", 2.0)
    d.file("a", 1.0)
    d.file("a", 7.0)
    d.file("a", 1.0)  # two live filings of one deadline: one key
    assert d.due(5.0) == ["a", "b"]
    assert d.due(5.0) == ["a", "b"]  # reading changes nothing
    d.file("a", 6.0)
    assert d.due(5.0) == ["b"]
    assert d.earliest() == 2.0


def test_heap_stays_bounded_under_many_refilings() -> None:
    d: Deadlines[int] = Deadlines()
    rng = Random(1)
    for step in range(20_000):
        d.file(step % 10, rng.random() * 100)
    assert len(d._heap) <= 2 * len(d) + 64 + 1
    live = {key: d.get(key) for key in range(10)}
    assert d.earliest() == min(v for v in live.values() if v is not None)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_filings_match_a_plain_minimum(seed: int) -> None:
    rng = Random(seed)
    d: Deadlines[int] = Deadlines()
    plain: dict[int, float] = {}
    for _ in range(3000):
        key = rng.randrange(30)
        if rng.random() < 0.2:
            d.discard(key)
            plain.pop(key, None)
        else:
            when = round(rng.random() * 50, 1)
            d.file(key, when)
            plain[key] = when
        now = rng.random() * 50
        assert d.earliest() == min(plain.values(), default=None)
        expected = sorted((w, k) for k, w in plain.items() if w <= now)
        assert sorted(d.due(now)) == sorted(k for _, k in expected)


# --- the node's timer -------------------------------------------------------------------


def walked_timer(node: Node) -> float | None:
    """get_timer as a walk over every session would compute it."""
    deadlines = [
        s.last_heard + node._quiet_limit(s)
        for ip, s in node.sessions.items()
        if not node._is_pair(ip)
    ]
    deadlines += [s.next_ping for s in node.sessions.values() if node._pings(s)]
    deadlines += [s.contender.deadline for s in node.sessions.values() if s.contender]
    due = node.subnets.deadline()
    if due is not None:
        deadlines.append(due)
    for target in node._seeking():
        deadlines.append(target.next_resolve_request)
        if target.address is not None:
            deadlines.append(target.next_hello)
    if node._gateway() is not None:
        deadlines += node._gateway_watch.deadlines(node.timers)
    if node.table.push_at is not None:
        deadlines.append(node.table.push_at)
    if not node.is_static:
        deadlines += node.pairs.deadlines()
    deadlines += node.mesh.deadlines()
    return min(deadlines, default=None)


def check_timers(net: SimNet, seconds: float) -> None:
    for _ in range(int(seconds / 0.05)):
        net.run_for(0.05)
        for host in net.hosts.values():
            if host.node is not None:
                assert host.node.get_timer() == walked_timer(host.node), host.name


def test_the_node_timer_equals_a_walk_over_every_session() -> None:
    net = working_example(seed=3, timers=Timers(ping_interval=1.0, dead_after=3.0))
    for name in NAMES:
        net.start(name)
    check_timers(net, 2.0)
    beta = net.hosts["beta"].node
    assert beta is not None
    beta.watch_latency(net.now + 1.0, net.now)  # the static pings everyone for a while
    check_timers(net, 2.0)
    net.stop("alpha", clean=False)  # silence: dead_after
    check_timers(net, 4.0)
    net.start("alpha")
    net.stop("delta")  # bye
    net.flows[("charlie", "alpha")] = 200.0
    check_timers(net, 2.0)
    net.start("delta")
    net.partitioned.add(frozenset(("beta", "charlie")))
    check_timers(net, 4.0)


def test_the_node_timer_with_gateways_that_ping_fast_and_die_fast() -> None:
    """Gateways' sessions die after gateway_dead_after (once their fast pings
    are heard), and a preferred gateway's return is a deadline of its own."""
    timers = Timers(ping_interval=5.0, dead_after=15.0, gateway_ping=1.0, gateway_return=2.0)
    net = working_example(seed=4, timers=timers)
    lan = IPv4Network("192.168.1.0/24")
    charlie, delta = IPv4Address("10.1.1.3"), IPv4Address("10.1.1.4")
    net.gateways = (Gateway(charlie, (lan,)), Gateway(delta, (lan,)))
    for name in NAMES:
        net.start(name)
    check_timers(net, 4.0)
    net.stop("charlie", clean=False)  # silent: dropped fast
    check_timers(net, 5.0)
    net.start("charlie")  # back: it serves again after gateway_return
    check_timers(net, 4.0)


def test_the_node_timer_of_a_mobile_and_of_its_static() -> None:
    """A mobile's silence limit, its gateway watch and its seeking; a static's
    limit for a mobile, kept alive by WireGuard's counters."""
    net = SimNet(Timers(ping_interval=1.0, dead_after=3.0), seed=2)
    net.add_host("beta", "198.51.100.1", "10.1.1.1", static=True)
    net.add_host("gamma", "198.51.100.5", "10.1.1.5", static=True)
    net.add_host("alpha", "192.168.2.2", "10.1.1.9", nat=Nat("198.51.100.4"), mobile=True)
    net.add_host("charlie", "198.51.100.3", "10.1.1.3")
    for name in net.hosts:
        net.start(name)
    check_timers(net, 3.0)
    net.flows[("alpha", "charlie")] = net.flows[("charlie", "alpha")] = 200.0
    check_timers(net, 3.0)
    alpha = net.hosts["alpha"].node
    assert alpha is not None
    (static,) = [ip for ip in alpha.sessions if ip in alpha.statics]
    name = next(n for n, h in net.hosts.items() if h.wg_ip == static)
    net.partitioned.add(frozenset(("alpha", name)))  # suspect, then lost: the other static
    check_timers(net, 8.0)
