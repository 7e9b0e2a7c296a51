"""Several protocol cores through the simulated network: convergence and failure."""

from __future__ import annotations

import pytest

from tests.sim import Nat, SimNet, direct
from wg_netmanager.core import events as ev
from wg_netmanager.core.pair_path import PathState
from wg_netmanager.core.timers import Timers

FAST = Timers(ping_interval=1.0, dead_after=3.0)


def three_boxes(timers: Timers = FAST, seed: int = 1) -> SimNet:
    net = SimNet(timers, seed=seed)
    net.add_host("alice", "198.51.100.1", "10.1.1.1", static=True)
    net.add_host("bob", "198.51.100.2", "10.1.1.2")
    net.add_host("charlie", "192.168.1.2", "10.1.1.3", nat=Nat("198.51.100.3"))
    return net


@pytest.mark.parametrize("order", [["alice", "bob", "charlie"], ["charlie", "bob", "alice"]])
def test_three_nodes_converge_whoever_starts_first(order: list[str]) -> None:
    net = three_boxes()
    for name in order:
        net.start(name)
        net.run_for(0.05)
    took = net.wait_for(net.all_pairs_ping, limit=3.0)
    assert took < 1.0
    assert net.path("bob", "charlie") == ["bob", "alice", "charlie"]
    assert net.path("charlie", "alice") == ["charlie", "alice"]


def test_static_learns_nat_outside_endpoint() -> None:
    net = three_boxes()
    for name in ("alice", "bob", "charlie"):
        net.start(name)
    net.run_for(1.0)
    charlie = net.hosts["charlie"].node
    assert charlie is not None
    assert charlie.visible_endpoint is not None
    assert charlie.visible_endpoint[0] == "198.51.100.3"  # the NAT's outside, not 192.168.1.2


def test_dead_node_is_dropped_by_everyone() -> None:
    net = three_boxes()
    for name in ("alice", "bob", "charlie"):
        net.start(name)
    net.run_for(1.0)
    net.stop("charlie", clean=False)  # crash: no bye
    alice, bob = net.hosts["alice"].node, net.hosts["bob"].node
    assert alice is not None and bob is not None
    took = net.wait_for(
        lambda: all(
            r.dest != net.hosts["charlie"].wg_ip
            for node in (alice, bob)
            for r in node.desired_routes()
        ),
        limit=10.0,
    )
    # Routes through the direct link go once bob has checked it (link_timeout).
    assert took <= FAST.dead_after + FAST.link_timeout + 0.5
    assert all(len(p.allowed_ips) == 1 for p in bob.desired_peers().values())
    assert net.pings("alice", "bob")


def test_clean_stop_is_noticed_at_once() -> None:
    net = three_boxes()
    for name in ("alice", "bob", "charlie"):
        net.start(name)
    net.run_for(1.0)
    net.stop("bob")
    alice = net.hosts["alice"].node
    assert alice is not None
    took = net.wait_for(lambda: len(alice.desired_peers()) == 1, limit=5.0)
    assert took < 0.1


@pytest.mark.parametrize("who", ["bob", "alice"])
def test_restart_with_new_key_is_accepted_fast(who: str) -> None:
    net = three_boxes(Timers(ping_interval=1.0, dead_after=3.0))
    for name in ("alice", "bob", "charlie"):
        net.start(name)
    net.run_for(1.0)
    old_key = net.hosts[who].node.info.public_key  # type: ignore[union-attr]
    net.stop(who, clean=False)
    net.run_for(0.2)
    net.start(who)
    assert net.hosts[who].node.info.public_key != old_key  # type: ignore[union-attr]
    took = net.wait_for(net.all_pairs_ping, limit=5.0)
    # A new key is taken once the old boot failed the holder check
    # (incumbent_timeout). A restarted dynamic node calls at once; a
    # restarted static waits for the next ping of each dynamic node (at most
    # ping_interval).
    wait = 0.2 if who == "bob" else FAST.ping_interval * 1.2
    assert took < wait + FAST.incumbent_timeout


def pair_restarts(net: SimNet, at: str, of: str) -> list[ev.PairPeerRestarted]:
    wg_ip = net.hosts[of].wg_ip
    return [
        e
        for _, name, e in net.events
        if name == at and isinstance(e, ev.PairPeerRestarted) and e.peer.wg_ip == wg_ip
    ]


@pytest.mark.parametrize("traffic", [False, True], ids=["idle", "in use"])
def test_a_dynamic_node_restarted_with_its_key_is_reached_at_once_and_its_pairs_start_over(
    traffic: bool,
) -> None:
    """A run after a crash keeps the key, one boot number on: the static takes
    it at once (the same key), and its table tells the pair peer, which drops
    its link to the old run (the new run's WireGuard does not know it) and
    goes via the static until the pair is direct again."""
    net = three_boxes()
    net.record_events = True
    for name in ("alice", "bob", "charlie"):
        net.start(name)
    net.run_for(2.0)
    bob, charlie = net.hosts["bob"].node, net.hosts["charlie"].node
    assert bob is not None and charlie is not None
    charlie_ip = charlie.info.wg_ip
    assert bob.pairs.paths[charlie_ip].state is PathState.DIRECT
    if traffic:
        net.flows[("bob", "charlie")] = net.flows[("charlie", "bob")] = 10_000.0
    net.stop("charlie", clean=False)
    net.run_for(0.2)
    net.start("charlie", keep_key=True)
    new = net.hosts["charlie"].node
    assert new is not None and new.info.public_key == charlie.info.public_key
    assert new.boot_number == 1
    took = net.wait_for(net.all_pairs_ping, limit=10.0)
    # Without the boot number bob kept its dead direct link until its check
    # of the link gave up (link_timeout of traffic without an answer; idle,
    # a keepalive period).
    assert took < 0.3, f"all pairs ping {took:.2f} s after the restart"
    assert len(pair_restarts(net, "bob", "charlie")) == 1
    assert not [e for _, n, e in net.events if n == "alice" and isinstance(e, ev.HolderAsked)]
    net.wait_for(lambda: direct(net, "bob", "charlie"), limit=FAST.punch_timeout)
    session = bob.sessions[charlie_ip]
    assert (session.boot, session.boot_number) == (new.boot, 1)


def test_a_static_that_has_not_met_the_new_run_does_not_undo_its_pairs() -> None:
    """Two statics, one cut off from the restarted node: it lists the old run
    (until dead_after) while the other lists the new one. The later run wins
    (tables.py rule 5); the earlier one's entry neither drops the new pair
    session nor rolls anything back (pairs.py rule 6)."""
    net = three_boxes()
    net.add_host("dave", "198.51.100.9", "10.1.1.9", static=True)
    net.record_events = True
    for name in ("alice", "bob", "charlie", "dave"):
        net.start(name)
    net.run_for(2.0)
    assert direct(net, "bob", "charlie")
    net.partitioned.add(frozenset(("charlie", "dave")))
    net.stop("charlie", clean=False)
    net.run_for(0.2)
    net.start("charlie", keep_key=True)
    new = net.hosts["charlie"].node
    bob, dave = net.hosts["bob"].node, net.hosts["dave"].node
    assert new is not None and bob is not None and dave is not None
    charlie_ip = new.info.wg_ip
    assert net.wait_for(lambda: net.all_pairs_ping(["alice", "bob", "charlie"]), limit=5.0) < 0.3
    net.wait_for(lambda: direct(net, "bob", "charlie"), limit=FAST.punch_timeout)
    dave_ip = dave.info.wg_ip
    assert bob.listings.tables[dave_ip][charlie_ip].boot_number == 0  # the old run's
    assert bob.pairs.paths[charlie_ip].state is PathState.DIRECT
    net.run_for(FAST.dead_after + 1.0)  # until dave drops the old run
    assert charlie_ip not in bob.listings.tables[dave_ip]
    assert len(pair_restarts(net, "bob", "charlie")) == 1
    assert bob.pairs.paths[charlie_ip].state is PathState.DIRECT
    assert bob.sessions[charlie_ip].boot == new.boot


def test_static_starting_late_is_found_within_backoff() -> None:
    net = three_boxes()
    net.start("bob")
    net.start("charlie")
    net.run_for(20.0)
    net.start("alice")
    took = net.wait_for(net.all_pairs_ping, limit=5.0)
    assert took <= FAST.hello_retry_max + 0.2


def test_lossy_network_still_converges() -> None:
    net = three_boxes(seed=7)
    net.loss = 0.3
    for name in ("alice", "bob", "charlie"):
        net.start(name)
    assert net.wait_for(net.all_pairs_ping, limit=20.0) < 20.0


def test_partition_and_heal() -> None:
    net = three_boxes()
    for name in ("alice", "bob", "charlie"):
        net.start(name)
    net.run_for(1.0)
    net.partitioned.add(frozenset(("alice", "charlie")))
    net.run_for(FAST.dead_after + 1.0)
    assert not net.pings("alice", "charlie")
    # alice lists charlie no more, but bob's direct link to charlie still
    # answers: it keeps the pair talking (as while a static restarts).
    assert net.pings("bob", "charlie")
    net.partitioned.clear()
    assert net.wait_for(net.all_pairs_ping, limit=10.0) < 10.0


def test_a_crashed_peer_on_a_direct_link_is_dropped_when_its_static_drops_it() -> None:
    net = three_boxes()
    for name in ("alice", "bob", "charlie"):
        net.start(name)
    net.run_for(2.0)
    bob = net.hosts["bob"].node
    assert bob is not None and bob.pairs.paths[net.hosts["charlie"].wg_ip].state is PathState.DIRECT
    net.stop("charlie", clean=False)
    took = net.wait_for(lambda: net.hosts["charlie"].wg_ip not in bob.sessions, limit=20.0)
    # alice drops it after dead_after; bob's check of the link takes link_timeout.
    assert FAST.dead_after <= took <= FAST.dead_after + FAST.link_timeout + 1.0
