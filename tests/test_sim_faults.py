"""Faults in the simulation: broken direct links, a static that restarts, flapping.

The seed's working example (tests/sim.py) with the default timers;
``flows`` stand for user traffic (a ping running between two nodes), which is
what lets a node notice a broken direct link within seconds.
"""

from __future__ import annotations

import itertools

import pytest

from tests.sim import NAMES, SimNet, all_direct, direct, working_example
from wg_netmanager.core.timers import Timers

PING = 200.0  # bytes per second each way: an ICMP echo every half second


def converged(seed: int = 1) -> SimNet:
    net = working_example(seed=seed)
    for name in NAMES:
        net.start(name)
    assert net.wait_for(lambda: all_direct(net), limit=10.0) < 10.0
    return net


def ping_both_ways(net: SimNet, a: str, b: str) -> None:
    net.flows[(a, b)] = net.flows[(b, a)] = PING


def path_changes(net: SimNet, a: str, b: str, seconds: float, step: float = 0.05) -> list[str]:
    """Run for ``seconds``; the distinct paths a->b took, in order (None: lost)."""
    seen: list[str] = []
    end = net.now + seconds
    while net.now < end:
        net.run_for(step)
        hops = net.path(a, b)
        here = "lost" if hops is None else "-".join(hops)
        if not seen or seen[-1] != here:
            seen.append(here)
    return seen


def outage(net: SimNet, a: str, b: str, seconds: float, step: float = 0.05) -> float:
    """Run for ``seconds``; the longest time a and b could not ping each other."""
    longest = current = 0.0
    end = net.now + seconds
    while net.now < end:
        net.run_for(step)
        current = 0.0 if net.pings(a, b) else current + step
        longest = max(longest, current)
    return longest


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_broken_lan_link_falls_back_to_the_gateway_and_returns(seed: int) -> None:
    net = converged(seed)
    ping_both_ways(net, "charlie", "delta")
    net.run_for(5.0)
    net.partitioned.add(frozenset(("charlie", "delta")))  # the LAN between them breaks
    broken = net.now
    took = net.wait_for(
        lambda: (
            net.path("charlie", "delta") == ["charlie", "beta", "delta"]
            and net.path("delta", "charlie") == ["delta", "beta", "charlie"]
        ),
        limit=10.0,
    )
    assert took < 5.0, f"failover took {took:.2f} s"
    assert outage(net, "charlie", "delta", 30.0) == 0.0  # the gateway path holds
    for a, b in itertools.permutations(NAMES, 2):
        assert net.pings(a, b), (a, b)
    charlie = net.hosts["charlie"].node
    assert charlie is not None
    path = charlie.pairs.paths[net.hosts["delta"].wg_ip]
    assert path.lan_lost_until > net.now  # the lost LAN is being re-probed
    assert net.now - broken > 30.0
    net.partitioned.clear()  # the LAN is back
    back = net.wait_for(lambda: direct(net, "charlie", "delta"), limit=10.0)
    assert back < 2.5, f"back to direct after {back:.2f} s"
    assert outage(net, "charlie", "delta", 5.0) == 0.0


@pytest.mark.parametrize(("sender", "receiver"), [("charlie", "delta"), ("delta", "charlie")])
def test_the_side_that_notices_a_broken_link_tells_the_other_through_the_static(
    sender: str, receiver: str
) -> None:
    """Only one side sends (the other never answers on its own), so only it
    can notice; the other hears it relayed by beta, because through the
    gateway's tunnel its WireGuard would drop it (the sender is its direct
    peer). Whichever noticed, the lost LAN is re-probed and comes back."""
    net = converged()
    net.flows[(sender, receiver)] = PING
    net.run_for(5.0)
    net.partitioned.add(frozenset(("charlie", "delta")))
    took = net.wait_for(
        lambda: (
            net.path("charlie", "delta") == ["charlie", "beta", "delta"]
            and net.path("delta", "charlie") == ["delta", "beta", "charlie"]
        ),
        limit=30.0,
    )
    assert took < 4.0
    beta = net.hosts["beta"].node
    assert beta is not None and beta.drops.get("bad relay", 0) == 0
    net.run_for(20.0)
    net.partitioned.clear()
    assert net.wait_for(lambda: direct(net, "charlie", "delta"), limit=10.0) < 2.5


def test_lan_link_returns_even_after_a_long_outage() -> None:
    net = converged()
    ping_both_ways(net, "charlie", "delta")
    net.partitioned.add(frozenset(("charlie", "delta")))
    net.run_for(200.0)  # the attempts' backoff has grown far beyond a few seconds
    net.partitioned.clear()
    assert net.wait_for(lambda: direct(net, "charlie", "delta"), limit=10.0) < 2.5


def test_broken_idle_link_is_noticed_by_its_keepalives() -> None:
    net = converged()
    net.partitioned.add(frozenset(("alpha", "charlie")))
    timers = Timers()
    # Nothing comes back for longer than a keepalive period (plus two readings
    # of slack), seen at the next reading; then the link is checked.
    limit = timers.keepalive + 3 * timers.wg_poll_slow + timers.link_timeout + 1.0
    took = net.wait_for(
        lambda: (
            net.path("alpha", "charlie") == ["alpha", "beta", "charlie"]
            and net.path("charlie", "alpha") == ["charlie", "beta", "alpha"]
        ),
        limit=60.0,
    )
    assert took <= limit


@pytest.mark.parametrize("one_way", [False, True])
def test_working_links_do_not_flap(one_way: bool) -> None:
    net = converged()
    if one_way:  # only charlie sends: delta's side never answers on its own
        net.flows[("charlie", "delta")] = 5000.0
    else:
        ping_both_ways(net, "charlie", "delta")
        ping_both_ways(net, "alpha", "delta")
    assert path_changes(net, "charlie", "delta", 300.0, step=0.1) == ["charlie-delta"]
    assert direct(net, "alpha", "delta")
    for node in (h.node for h in net.hosts.values()):
        assert node is not None
        assert all(p.failures == 0 and not p.last_failure for p in node.pairs.paths.values())


def test_direct_links_keep_working_while_the_static_is_down() -> None:
    net = converged()
    for a, b in itertools.combinations(["alpha", "charlie", "delta"], 2):
        ping_both_ways(net, a, b)
    net.stop("beta", clean=False)  # crash, and it stays away for a while
    for a, b in itertools.combinations(["alpha", "charlie", "delta"], 2):
        assert outage(net, a, b, 1.0) == 0.0
    longest = max(
        outage(net, a, b, 20.0) for a, b in itertools.combinations(["alpha", "charlie", "delta"], 2)
    )
    assert longest == 0.0
    net.run_for(2 * Timers().dead_after)  # long after every node dropped beta
    assert all_direct_among(net, ["alpha", "charlie", "delta"])


def all_direct_among(net: SimNet, names: list[str]) -> bool:
    return all(direct(net, a, b) for a, b in itertools.combinations(names, 2))


@pytest.mark.parametrize("down", [5.0, 90.0])
@pytest.mark.parametrize("clean", [True, False])
def test_static_restart_is_noticed_within_a_second(clean: bool, down: float) -> None:
    """The new run calls back the nodes its predecessor knew (the daemon keeps
    their addresses in a file for it): after a crash, or a long stop, when the
    nodes have long dropped it and hello only every helloRetrySlow."""
    net = converged()
    net.run_for(30.0)  # steady state: the nodes ping beta every ping_interval
    beta = net.hosts["beta"].node
    assert beta is not None
    known = beta.peer_endpoints()
    assert set(known) == {net.hosts[n].wg_ip for n in ("alpha", "charlie", "delta")}
    net.stop("beta", clean=clean)
    net.run_for(down)
    net.start("beta")
    restarted = net.hosts["beta"].node
    assert restarted is not None
    restarted.call_back(known, net.now)
    net.run_for(0.0)  # deliver what it sent
    took = net.wait_for(lambda: net.all_pairs_ping(), limit=10.0)
    # After a crash the nodes still hold the old run: its new key waits for
    # the holder check, unless a ping of theirs went unanswered long enough.
    limit = 1.0 if clean or down > Timers().dead_after else 1.0 + Timers().incumbent_timeout
    assert took < limit, f"all pairs ping again {took:.2f} s after the static's return"
    assert all_direct_among(net, ["alpha", "charlie", "delta"])


def test_crashed_static_is_found_again_without_its_file_too() -> None:
    """No call-back (e.g. the file was lost): the nodes' pings, repeated every
    pong_timeout once one goes unanswered, find the new run soon after their
    next regular ping."""
    net = converged()
    net.run_for(30.0)  # steady state: the nodes ping beta every ping_interval
    net.stop("beta", clean=False)
    net.run_for(Timers().ping_interval + 1.0)  # every node's ping went unanswered
    net.start("beta")
    took = net.wait_for(lambda: net.all_pairs_ping(), limit=10.0)
    assert took < 2.0
