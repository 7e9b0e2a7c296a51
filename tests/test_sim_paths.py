"""Shorter routes in the simulation: LAN-direct and NAT traversal, the seed's example."""

from __future__ import annotations

import pytest

from tests.sim import NAMES, Nat, SimNet, all_direct, direct, working_example


def kind(net: SimNet, a: str, b: str) -> str:
    node = net.hosts[a].node
    assert node is not None
    status = next(p for p in node.statistics(net.now).peers if p.name == b)
    return status.kind


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_working_example_ends_with_six_direct_links(seed: int) -> None:
    net = working_example(seed=seed)
    for name in NAMES:
        net.start(name)
    reachable = net.wait_for(net.all_pairs_ping, limit=5.0)
    assert reachable < 1.0
    # Never unreachable again while the links move from gateway to direct.
    lan = nat = None
    while net.now < 10.0:
        net.run_for(0.01)
        assert net.all_pairs_ping(), f"a pair lost reachability at {net.now:.2f}"
        if lan is None and direct(net, "charlie", "delta"):
            lan = net.now
        if nat is None and all_direct(net):
            nat = net.now
    assert lan is not None and lan < 1.0
    assert nat is not None and nat < 1.5
    assert kind(net, "charlie", "delta") == "lan" and kind(net, "delta", "charlie") == "lan"
    assert kind(net, "alpha", "charlie") == "nat" and kind(net, "charlie", "alpha") == "nat"
    assert kind(net, "alpha", "beta") == "static"
    # No route via a gateway is left anywhere.
    for name in NAMES:
        node = net.hosts[name].node
        assert node is not None
        assert all(route.via is None for route in node.desired_routes())


def test_symmetric_nat_stays_relayed_and_says_why() -> None:
    net = working_example(symmetric_alpha=True)
    for name in NAMES:
        net.start(name)
    net.run_for(10.0)
    assert net.all_pairs_ping()
    assert direct(net, "charlie", "delta")
    # alpha's NAT maps per destination: nobody can punch through to it.
    for other in ("charlie", "delta"):
        assert net.path("alpha", other) == ["alpha", "beta", other]
        node = net.hosts["alpha"].node
        assert node is not None
        status = next(p for p in node.statistics(net.now).peers if p.name == other)
        assert status.path == "via" and "no WireGuard handshake" in status.reason
    # It keeps trying with backoff, and the pair keeps pinging meanwhile.
    net.run_for(60.0)
    assert net.all_pairs_ping()


def test_roaming_node_re_forms_its_links() -> None:
    net = working_example()
    for name in NAMES:
        net.start(name)
    assert net.wait_for(lambda: all_direct(net), limit=5.0) < 5.0
    # delta leaves the home LAN for a cafe behind another NAT.
    delta = net.hosts["delta"]
    delta.address, delta.lan, delta.nat = "192.168.3.2", "cafe", Nat("198.51.100.5")
    assert delta.node is not None
    delta.node.set_local_addresses([delta.address], net.clock(delta))
    took = net.wait_for(lambda: all_direct(net), limit=30.0)
    assert took < 3.0
    assert kind(net, "charlie", "delta") == "nat"


def test_latency_to_dynamic_peers_is_measured_only_while_watched() -> None:
    net = working_example()
    for name in NAMES:
        net.start(name)
    assert net.wait_for(lambda: all_direct(net), limit=5.0) < 5.0
    net.run_for(30.0)
    charlie = net.hosts["charlie"].node
    assert charlie is not None

    def rtts() -> dict[str, float | None]:
        return {p.name: p.rtt for p in charlie.statistics(net.now).peers}

    assert rtts()["beta"] is not None  # keep-alive pings to the static measure it anyway
    assert rtts()["delta"] is None and rtts()["alpha"] is None  # idle pairs stay quiet
    sent_idle = net.sent_bytes["charlie"]
    net.run_for(120.0)  # many ping intervals: the rate does not depend on the phase
    idle_rate = (net.sent_bytes["charlie"] - sent_idle) / 120.0
    charlie.watch_latency(net.clock(net.hosts["charlie"]) + 10.0, net.clock(net.hosts["charlie"]))
    net.run_for(1.0)
    measured = rtts()
    assert measured["delta"] is not None and measured["alpha"] is not None
    assert measured["delta"] < 0.1
    # The watch ends: back to the idle rate.
    net.run_for(20.0)
    sent = net.sent_bytes["charlie"]
    net.run_for(120.0)
    assert (net.sent_bytes["charlie"] - sent) / 120.0 <= idle_rate * 1.3


def test_a_watched_static_measures_latency_to_every_node() -> None:
    """The static is the machine a user most likely watches: its nodes ping it,
    it pings nobody, so without a watch it knows no round trip at all."""
    net = working_example()
    for name in NAMES:
        net.start(name)
    assert net.wait_for(lambda: all_direct(net), limit=5.0) < 5.0
    net.run_for(30.0)
    beta_host = net.hosts["beta"]
    beta = beta_host.node
    assert beta is not None

    def rtts() -> dict[str, float | None]:
        return {p.name: p.rtt for p in beta.statistics(net.now).peers}

    assert set(rtts()) == {"alpha", "charlie", "delta"}
    assert all(rtt is None for rtt in rtts().values())  # unwatched: no pings of its own
    beta.watch_latency(net.clock(beta_host) + 10.0, net.clock(beta_host))
    net.run_for(1.0)
    measured = rtts()
    assert all(rtt is not None and rtt < 0.5 for rtt in measured.values()), measured
