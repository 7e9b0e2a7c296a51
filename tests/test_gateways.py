"""Gateways: networks of devices that run no daemon, and exit nodes
(network.yaml ``gateways:``; core/routing.py rules 5 to 9).

The choice rules alone on ``SubnetRoutes``, then whole meshes in the
simulator with a lamp on charlie's home LAN: every node reaches it, direct
and relayed; a crashed gateway's networks move within seconds and come back
once, without flapping; only what the file lists is ever routed.
"""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
import trio
from msgspec.structs import replace

from tests.fake_host import ALICE_IP, BOB_IP, FakeNet, Machine, make_settings, mock_clock
from tests.sim import NAMES, SimNet, working_example
from tests.waits import wait_for
from wg_netmanager.core import events as ev
from wg_netmanager.core.node import Node
from wg_netmanager.core.routing import Move, SubnetRoutes, alive_nodes, subnet_placement
from wg_netmanager.core.timers import Timers
from wg_netmanager.forwarding import route_table
from wg_netmanager.model import DEFAULT_ROUTE, Gateway, Route

LAN = IPv4Network("192.168.1.0/24")
OTHER = IPv4Network("192.168.7.0/24")
BETA, ALPHA, CHARLIE, DELTA = (IPv4Address(f"10.1.1.{n}") for n in (1, 2, 3, 4))
HOLD = 10.0
GATEWAYS = (Gateway(CHARLIE, (LAN,)), Gateway(DELTA, (LAN,)))
EXIT = Gateway(BETA, (DEFAULT_ROUTE,))


def routes_of(
    me: IPv4Address,
    gateways: tuple[Gateway, ...] = GATEWAYS,
    *,
    static: bool = False,
    exit_node: IPv4Address | None = None,
) -> SubnetRoutes:
    return SubnetRoutes(
        me, gateways, exit_node=exit_node, is_static=static, hold=HOLD, fast_ping=1.0
    )


# --- the choice (rule 6) ---------------------------------------------------------------


def test_the_first_listed_gateway_alive_serves() -> None:
    routes = routes_of(ALPHA)
    assert routes.update({CHARLIE, DELTA, BETA}, now=0.0) == [Move(LAN, CHARLIE, None, "up")]
    assert routes.placed() == {LAN: CHARLIE} and routes.main_routes() == {LAN}
    routes = routes_of(ALPHA)
    assert routes.update({DELTA}, now=0.0) == [Move(LAN, DELTA, None, "up")]


def test_failover_at_once_and_back_only_after_gateway_return() -> None:
    routes = routes_of(ALPHA)
    routes.update({CHARLIE, DELTA}, now=0.0)
    assert routes.update({DELTA}, now=5.0) == [Move(LAN, DELTA, CHARLIE, "failover")]
    assert routes.update({CHARLIE, DELTA}, now=6.0) == []  # back, but not for long enough
    assert routes.deadline() == 6.0 + HOLD
    assert routes.update({CHARLIE, DELTA}, now=6.0 + HOLD - 0.01) == []
    assert routes.update({CHARLIE, DELTA}, now=6.0 + HOLD) == [Move(LAN, CHARLIE, DELTA, "return")]
    assert routes.deadline() is None


def test_a_flapping_gateway_does_not_take_the_traffic_back() -> None:
    routes = routes_of(ALPHA)
    routes.update({CHARLIE, DELTA}, now=0.0)
    routes.update({DELTA}, now=1.0)
    for second in range(2, 40, 2):  # charlie alive one second in two
        alive = {CHARLIE, DELTA} if second % 4 else {DELTA}
        assert routes.update(alive, now=float(second)) == []
        assert routes.placed() == {LAN: DELTA}


def test_no_gateway_alive() -> None:
    routes = routes_of(ALPHA)
    routes.update({DELTA}, now=0.0)
    assert routes.update(set(), now=1.0) == [Move(LAN, None, DELTA, "down")]
    assert routes.placed() == {} and routes.main_routes() == set()
    # The first one back serves at once: there is no other.
    assert routes.update({DELTA}, now=2.0) == [Move(LAN, DELTA, None, "up")]


def test_after_a_gap_the_one_alive_longer_serves_and_the_first_follows() -> None:
    routes = routes_of(ALPHA)
    routes.update({CHARLIE, DELTA}, now=0.0)
    routes.update(set(), now=20.0)  # both seen down
    routes.update({DELTA}, now=21.0)
    assert routes.placed() == {LAN: DELTA}
    routes.update({DELTA, CHARLIE}, now=40.0)  # delta proven again, charlie just back
    assert routes.placed() == {LAN: DELTA} and routes.deadline() == 50.0
    assert routes.update({DELTA, CHARLIE}, now=50.0) == [Move(LAN, CHARLIE, DELTA, "return")]


def test_a_cold_start_ends_with_the_first_listed_whatever_shows_up_first() -> None:
    """Never seen down: an earlier-listed gateway that shows up serves at once."""
    routes = routes_of(ALPHA)
    assert routes.update({DELTA}, now=0.0) == [Move(LAN, DELTA, None, "up")]
    assert routes.update({DELTA, CHARLIE}, now=0.3) == [Move(LAN, CHARLIE, DELTA, "preferred")]
    assert routes.deadline() is None


# --- roles (rules 7 and 9) -------------------------------------------------------------------


def test_a_gateway_and_a_node_on_the_network_install_nothing() -> None:
    charlie = routes_of(CHARLIE)
    assert charlie.update({DELTA}, now=0.0) == []
    assert charlie.placed() == {} and charlie.status({})[0].role == "own"
    alpha = routes_of(ALPHA)
    alpha.set_local_networks([IPv4Network("192.168.0.0/16")])  # at home: a wider prefix
    assert alpha.update({CHARLIE}, now=0.0) == []
    assert alpha.placed() == {} and alpha.status({})[0].role == "local"


def test_a_node_that_roams_onto_the_network_stops_routing_it() -> None:
    alpha = routes_of(ALPHA)
    alpha.update({CHARLIE}, now=0.0)
    assert alpha.set_local_networks([IPv4Network("192.168.1.0/24")])
    assert alpha.update({CHARLIE}, now=1.0) == [Move(LAN, None, CHARLIE, "local")]
    assert not alpha.set_local_networks([IPv4Network("192.168.1.0/24")])  # no change
    alpha.set_local_networks([IPv4Network("192.168.1.0/25")])  # covers only part: routed
    assert alpha.update({CHARLIE}, now=2.0) == [Move(LAN, CHARLIE, None, "up")]


def test_a_static_relays_even_a_network_it_lies_on() -> None:
    beta = routes_of(BETA, static=True)
    beta.set_local_networks([LAN])
    beta.update({CHARLIE, DELTA}, now=0.0)
    assert beta.placed() == {LAN: CHARLIE} and beta.main_routes() == set()
    assert beta.relay_routes() == {LAN}
    alpha = routes_of(ALPHA)
    alpha.update({CHARLIE}, now=0.0)
    assert alpha.relay_routes() == frozenset()  # only statics relay


def test_the_default_route_only_for_a_node_that_opted_in() -> None:
    gateways = (*GATEWAYS, EXIT, Gateway(DELTA + 1, (DEFAULT_ROUTE,)))
    alpha = routes_of(ALPHA, gateways)
    alpha.update({BETA, CHARLIE}, now=0.0)
    assert alpha.placed() == {LAN: CHARLIE}
    assert {s.route: s.role for s in alpha.status({})}[DEFAULT_ROUTE] == "unused"
    # Opted in: its own exit node only, even when it is listed second and down.
    alpha = routes_of(ALPHA, gateways, exit_node=DELTA + 1)
    alpha.update({BETA, CHARLIE}, now=0.0)
    assert alpha.placed() == {LAN: CHARLIE}
    alpha.update({BETA, CHARLIE, DELTA + 1}, now=1.0)
    assert alpha.placed() == {LAN: CHARLIE, DEFAULT_ROUTE: DELTA + 1}
    assert alpha.main_routes() == {LAN}  # the default route is policy routing's
    # A static forwards others' default route to the first exit node alive.
    beta = routes_of(BETA + 10, gateways, static=True)
    beta.update({BETA, DELTA + 1}, now=0.0)
    assert beta.placed()[DEFAULT_ROUTE] == BETA
    assert DEFAULT_ROUTE in beta.relay_routes()


def test_only_the_files_networks_through_the_files_gateways() -> None:
    """Rule 5: the choice never leaves the file (whoever else is alive)."""
    routes = routes_of(ALPHA, (Gateway(CHARLIE, (LAN,)), Gateway(BETA, (OTHER,))))
    everyone = {IPv4Address(f"10.1.1.{n}") for n in range(1, 30)}
    routes.update(everyone, now=0.0)
    assert routes.placed() == {LAN: CHARLIE, OTHER: BETA}
    routes.update(everyone - {CHARLIE}, now=1.0)
    assert routes.placed() == {OTHER: BETA}


# --- liveness ---------------------------------------------------------------------------


def test_who_pings_and_dies_fast() -> None:
    """A gateway pings every gateway_ping, and so does whoever may route
    through one; the other side counts on it once it sees fast pings, and
    probes it itself until it has seen two."""
    charlie, alpha, beta = routes_of(CHARLIE), routes_of(ALPHA), routes_of(BETA, static=True)
    assert charlie.pings_fast(BETA) and charlie.dies_fast(BETA, pinger=True)
    assert alpha.pings_fast(CHARLIE) and not alpha.pings_fast(BETA)
    assert beta.pings_fast(CHARLIE) and not beta.pings_fast(ALPHA)
    for heard in ([], [0.0], [0.0, 1.0], [0.0, 1.0, 2.0]):  # cadence unknown: probed
        beta.new_session(CHARLIE)
        for when in heard:
            beta.heard_ping(CHARLIE, when)
        assert beta.probes(CHARLIE) and beta.dies_fast(CHARLIE, pinger=False)
    beta.heard_ping(CHARLIE, 3.0)  # three short gaps in a row: it pings fast
    assert beta.dies_fast(CHARLIE, pinger=False) and not beta.probes(CHARLIE)
    beta.heard_ping(CHARLIE, 15.0)  # its file does not make it a gateway: slow pings
    assert not beta.dies_fast(CHARLIE, pinger=False) and not beta.probes(CHARLIE)
    beta.new_session(CHARLIE)  # it came back: a long gap tells nothing
    beta.heard_ping(CHARLIE, 60.0)
    assert beta.probes(CHARLIE)
    assert not charlie.probes(BETA) and not alpha.probes(BETA)  # not gateways they watch
    beta.heard_ping(ALPHA, 0.0)
    beta.heard_ping(ALPHA, 0.5)
    assert not beta.dies_fast(ALPHA, pinger=False)  # not a gateway


def test_a_slow_pinger_that_lost_pongs_is_not_taken_for_fast() -> None:
    """A slow pinger pings again after pong_timeout when a pong is lost: one
    or two short gaps must not make its next (slow) ping come too late."""
    beta = routes_of(BETA, static=True)
    beta.new_session(CHARLIE)
    for when in (0.0, 12.0, 13.0, 14.0):  # two pongs lost after the second ping
        beta.heard_ping(CHARLIE, when)
        if when:
            assert not beta.dies_fast(CHARLIE, pinger=False), when
            assert not beta.probes(CHARLIE), when
    for when in (15.0, 16.0):  # it became a gateway (a reload): a run of short gaps
        beta.heard_ping(CHARLIE, when)
    assert beta.dies_fast(CHARLIE, pinger=False)


def test_alive_nodes_follow_the_statics() -> None:
    tables = {BETA: {CHARLIE: object(), DELTA: object()}}
    direct = {BETA, CHARLIE, ALPHA}
    # alpha's direct link is not listed by the static: not alive for routing
    assert alive_nodes(direct, {DELTA}, {BETA}, tables, False) == {BETA, CHARLIE, DELTA}
    # no static reached: direct links are all there is
    assert alive_nodes({CHARLIE}, set(), {BETA}, {}, False) == {CHARLIE}
    assert alive_nodes(direct, set(), {BETA}, {}, True) == direct


def test_placement_on_the_peer_that_carries_the_gateway() -> None:
    placed = {LAN: CHARLIE, OTHER: DELTA, DEFAULT_ROUTE: DELTA}
    allowed, routes = subnet_placement(placed, {LAN, OTHER}, {BETA, CHARLIE}, {DELTA: BETA})
    assert allowed == {CHARLIE: [LAN], BETA: [OTHER, DEFAULT_ROUTE]}
    assert routes == {Route.to(LAN, CHARLIE), Route.to(OTHER, BETA)}


# --- meshes in the simulator --------------------------------------------------------------


def lamp_mesh(
    *, symmetric_alpha: bool = False, seed: int = 1, timers: Timers | None = None
) -> SimNet:
    """The working example with a lamp (192.168.1.10) on the home LAN of
    charlie and delta, both its gateways (charlie first)."""
    net = working_example(symmetric_alpha=symmetric_alpha, seed=seed)
    net.wg_period = 0.1  # coarser `wg show` readings: minutes of mesh in seconds
    if timers is not None:
        net.timers = timers
    net.gateways = GATEWAYS
    net.add_device("lamp", "192.168.1.10", "home")
    net.record_events = True
    return net


def start_all(net: SimNet) -> None:
    for name in NAMES:
        net.start(name)


def moves(net: SimNet, host: str) -> list[tuple[str | None, str]]:
    return [
        (e.gateway.name if e.gateway else None, e.reason)
        for _, h, e in net.events
        if h == host and isinstance(e, ev.SubnetGatewayChanged)
    ]


def gone_named(net: SimNet, host: str) -> list[str | None]:
    """The names a failover's event gives the gateway that is gone."""
    return [
        e.previous.name if e.previous else None
        for _, h, e in net.events
        if h == host and isinstance(e, ev.SubnetGatewayChanged) and e.reason == "failover"
    ]


def assert_allowed_ips_never_overlap(net: SimNet) -> None:
    for host in net.hosts.values():
        if host.node is None:
            continue
        networks = [n for p in host.node.desired_peers().values() for n in p.allowed_ips]
        assert len(networks) == len(set(networks)), (host.name, networks)


@pytest.mark.parametrize("symmetric_alpha", [False, True], ids=["direct", "relayed"])
def test_every_node_reaches_the_lan_device(symmetric_alpha: bool) -> None:
    net = lamp_mesh(symmetric_alpha=symmetric_alpha)
    start_all(net)
    assert net.wait_for(lambda: all(net.reaches(n, "lamp") for n in NAMES), 10) < 1.0
    net.run_for(15)  # direct links settle
    assert net.reaches("charlie", "lamp") == ["charlie", "lamp"]  # its own LAN
    assert net.reaches("delta", "lamp") == ["delta", "lamp"]
    assert net.reaches("beta", "lamp") == ["beta", "charlie", "lamp", "beta"]
    if symmetric_alpha:  # no direct link to charlie: through the static, both ways
        assert net.reaches("alpha", "lamp") == ["alpha", "beta", "charlie", "lamp", "beta", "alpha"]
    else:
        assert net.reaches("alpha", "lamp") == ["alpha", "charlie", "lamp", "alpha"]
    for name in ("charlie", "delta"):
        assert net.hosts[name].node.desired_subnet_routes() == set()
    assert_allowed_ips_never_overlap(net)
    assert moves(net, "alpha") == [("charlie", "up")]  # relayed or direct: never moved


@pytest.mark.parametrize("symmetric_alpha", [False, True], ids=["direct", "relayed"])
def test_a_crashed_gateway_is_replaced_within_seconds_and_returns_once(
    symmetric_alpha: bool,
) -> None:
    net = lamp_mesh(symmetric_alpha=symmetric_alpha)
    start_all(net)
    net.run_for(20)
    assert all(net.gateway_used(n, "lamp") == "charlie" for n in ("alpha", "beta"))
    net.stop("charlie", clean=False)  # its machine lost power: no bye
    failover = net.wait_for(
        lambda: all(net.gateway_used(n, "lamp") == "delta" for n in ("alpha", "beta")), 30, 0.05
    )
    assert failover <= Timers().gateway_dead_after + 1.0
    assert_allowed_ips_never_overlap(net)
    net.run_for(5)
    for name in ("alpha", "beta"):  # the status names the gone gateway as last known
        node = net.hosts[name].node
        assert node is not None
        (lamp,) = node.statistics(net.now).subnets
        assert dict(zip(lamp.gateways, lamp.names, strict=True))[CHARLIE] == "charlie", lamp
    net.start("charlie")
    back = net.wait_for(
        lambda: all(net.gateway_used(n, "lamp") == "charlie" for n in ("alpha", "beta")), 60, 0.05
    )
    assert Timers().gateway_return <= back <= Timers().gateway_return + 2.0
    net.run_for(60)
    for name in ("alpha", "beta"):
        assert moves(net, name) == [("charlie", "up"), ("delta", "failover"), ("charlie", "return")]
        assert gone_named(net, name) == ["charlie"]  # its session and entry are gone by then
    assert all(net.reaches(n, "lamp") for n in NAMES)


@pytest.mark.parametrize("age", [0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
def test_a_gateway_that_dies_young_is_replaced_within_seconds(age: float) -> None:
    """charlie's machine dies ``age`` seconds after the static first heard
    it, before the static could tell from two of its pings that it pings fast."""
    net = lamp_mesh()
    start_all(net)
    beta = net.hosts["beta"].node
    assert beta is not None
    net.wait_for(lambda: CHARLIE in beta.sessions, 5, 0.01)
    net.run_for(age)
    net.stop("charlie", clean=False)
    failover = net.wait_for(
        lambda: all(net.gateway_used(n, "lamp") == "delta" for n in ("alpha", "beta")), 60, 0.05
    )
    assert failover <= Timers().gateway_dead_after + 1.0


def test_a_gateway_stopped_cleanly_is_replaced_at_once() -> None:
    net = lamp_mesh()
    start_all(net)
    net.run_for(20)
    net.stop("charlie")  # bye to everyone
    assert net.wait_for(lambda: net.gateway_used("alpha", "lamp") == "delta", 5) < 0.2
    assert gone_named(net, "alpha") == ["charlie"]  # the bye ended its session first


def test_only_a_slow_death_of_a_non_gateway() -> None:
    """Fast pings are for gateways: a plain node dies after deadAfter as before."""
    net = lamp_mesh()
    start_all(net)
    net.run_for(20)
    beta = net.hosts["beta"].node
    assert beta is not None
    net.stop("alpha", clean=False)
    net.run_for(10)
    assert ALPHA in beta.sessions
    net.stop("charlie", clean=False)
    net.run_for(Timers().gateway_dead_after + 1.5)
    assert CHARLIE not in beta.sessions


def test_a_gateway_whose_own_file_disagrees_is_not_dropped() -> None:
    """charlie's file lists no gateways: it pings slowly, and the static,
    which sees the slow pings, keeps it (no session lost every 3 s)."""
    net = lamp_mesh()
    net.hosts["charlie"].gateways = ()
    start_all(net)
    net.run_for(120)
    assert [e for _, h, e in net.events if h == "beta" and isinstance(e, ev.PeerSilent)] == []
    assert moves(net, "beta") == [("charlie", "up")]


def test_a_route_the_file_does_not_list_is_never_installed() -> None:
    """charlie's own (tampered) file adds 8.8.8.0/24 and a network of its
    choice for delta: the others route only what their own file lists."""
    net = lamp_mesh()
    evil = IPv4Network("8.8.8.0/24")
    net.hosts["charlie"].gateways = (Gateway(CHARLIE, (LAN, evil)), Gateway(DELTA, (OTHER,)))
    start_all(net)
    net.run_for(30)
    for name in ("alpha", "beta", "delta"):
        node = net.hosts[name].node
        assert node is not None
        listed = {LAN} | {IPv4Network(h.wg_ip) for h in net.hosts.values()}
        routed = {r.network for r in node.desired_routes() | node.desired_subnet_routes()}
        allowed = {n for p in node.desired_peers().values() for n in p.allowed_ips}
        assert routed <= listed and allowed <= listed, name
        assert not any(n.overlaps(evil) or n == OTHER for n in routed | allowed)


def test_an_exit_node_behind_a_static() -> None:
    """delta is the exit node; alpha (symmetric NAT: relayed) opted in: its
    default route goes onto the static's peer, and the static forwards it to
    delta; nobody else touches the default route."""
    net = lamp_mesh(symmetric_alpha=True)
    net.gateways = (*GATEWAYS, Gateway(DELTA, (DEFAULT_ROUTE,)))
    net.hosts["alpha"].exit_node = DELTA
    start_all(net)
    net.run_for(20)
    alpha, beta, charlie = (net.hosts[n].node for n in ("alpha", "beta", "charlie"))
    assert alpha is not None and beta is not None and charlie is not None

    def holder(node: Node, network: IPv4Network) -> set[str]:
        return {k for k, p in node.desired_peers().items() if network in p.allowed_ips}

    beta_key = beta.info.public_key
    delta_key = net.hosts["delta"].node.info.public_key
    assert holder(alpha, DEFAULT_ROUTE) == {beta_key}
    assert holder(beta, DEFAULT_ROUTE) == {delta_key}
    assert DEFAULT_ROUTE in beta.desired_relay_routes()
    assert holder(charlie, DEFAULT_ROUTE) == set()
    for node in (alpha, beta, charlie):  # the default route itself is policy routing's
        assert all(r.prefixlen > 0 for r in node.desired_subnet_routes())
    status = {s.route: s for s in alpha.statistics(net.now).subnets}
    assert status[DEFAULT_ROUTE].role == "exit" and status[DEFAULT_ROUTE].serving == DELTA
    assert status[LAN].names == ("charlie", "delta")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_gateway_churn_keeps_allowed_ips_apart(seed: int) -> None:
    """Gateways crash and return at random: AllowedIPs never overlap, and
    every node that reaches a gateway reaches the lamp."""
    net = lamp_mesh(seed=seed)
    start_all(net)
    rng = net.rng
    for _ in range(12):
        net.run_for(rng.uniform(0.5, 8.0))
        victim = rng.choice(["charlie", "delta"])
        if net.hosts[victim].up:
            net.stop(victim, clean=rng.random() < 0.5)
        else:
            net.start(victim)
        for _ in range(20):
            net.run_for(0.25)
            assert_allowed_ips_never_overlap(net)
    for name in ("charlie", "delta"):
        if not net.hosts[name].up:
            net.start(name)
    up = [n for n in NAMES if net.hosts[n].up]
    assert net.wait_for(lambda: all(net.reaches(n, "lamp") for n in up), 30) < 30
    assert all(a != b for a, b in itertools.pairwise(moves(net, "alpha")))


# --- the daemon on fake machines ------------------------------------------------------------


def gateway_machines(tmp_path: Path, *, exit_node: bool = False) -> tuple[Machine, Machine]:
    """alice (static, 10.1.1.1, an exit node) and bob (10.1.1.2, the LAN's
    gateway; with ``exit_node`` it uses alice's)."""
    alice_settings, bob_settings = make_settings(tmp_path)
    bob_ip = IPv4Address("10.1.1.2")
    gateways = (Gateway(bob_ip, (LAN,)), Gateway(BETA, (DEFAULT_ROUTE,)))
    network = replace(alice_settings.network, gateways=gateways)
    net = FakeNet()
    alice = Machine(replace(alice_settings, network=network), net.host(ALICE_IP))
    bob = Machine(
        replace(bob_settings, network=network, exit_node=BETA if exit_node else None),
        net.host(BOB_IP),
    )
    return alice, bob


def test_daemons_forward_relay_and_route_as_the_file_says(tmp_path: Path) -> None:
    alice, bob = gateway_machines(tmp_path)
    bob.host.networks = [LAN]  # bob lies on its LAN
    lan_route = Route.to(LAN, IPv4Address("10.1.1.2"))

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start((await alice.daemon()).run)
            await nursery.start((await bob.daemon()).run)
            await wait_for(lambda: alice.forwarding.relay == {LAN})  # the exit is its own
            # bob serves the LAN (masquerading), routes nothing for it, relays nothing
            plan = bob.forwarding.plan
            assert plan is not None and plan.routes == (LAN,) and not plan.relay
            assert "masquerade" in bob.forwarding.ruleset
            await wait_for(lambda: Route(BETA) in bob.routes.tables.get("wg0", ()))
            assert all(r.prefixlen == 32 for r in bob.routes.tables["wg0"])
            assert bob.forwarding.relay == frozenset()
            # alice: static and exit node, routes bob's LAN in a table of its
            # own (its underlay marked, kept out of it); bob routes nothing
            plan = alice.forwarding.plan
            assert plan is not None and plan.relay and plan.relay_table
            assert plan.routes == (DEFAULT_ROUTE,) and not plan.exit_client
            mark = route_table("wg0")
            assert alice.device.fwmark == mark and alice.host.socket_marks == [mark]
            assert bob.device.fwmark == 0 and bob.host.socket_marks == [0]
            await wait_for(lambda: alice.forwarding.routes == {lan_route})
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    assert alice.forwarding.plan is None and bob.forwarding.plan is None  # released
    assert alice.routes.tables["wg0"] == set()


def test_an_exit_nodes_user_marks_its_underlay_and_its_default_route(tmp_path: Path) -> None:
    alice, bob = gateway_machines(tmp_path, exit_node=True)
    mark = route_table("wg0")

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start((await alice.daemon()).run)
            bob_daemon = await bob.daemon()
            await nursery.start(bob_daemon.run)
            assert bob.device.fwmark == mark and bob.host.socket_marks == [mark]
            plan = bob.forwarding.plan
            assert plan is not None and plan.exit_client and plan.routes == (LAN,)
            await wait_for(
                lambda: any(DEFAULT_ROUTE in p.allowed_ips for p in bob.device.peers.values())
            )
            status = {s.route: s for s in bob_daemon.node.statistics(trio.current_time()).subnets}
            assert status[DEFAULT_ROUTE].role == "exit" and status[DEFAULT_ROUTE].serving == BETA
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())


def test_a_node_that_comes_home_stops_routing_its_lan(tmp_path: Path) -> None:
    """bob's address change (the link watch) brings a prefix that covers the
    LAN of the third node, its gateway: bob's route to it goes."""
    alice, bob = gateway_machines(tmp_path)
    carol_ip = IPv4Address("10.1.1.3")
    network = replace(alice.settings.network, gateways=(Gateway(carol_ip, (LAN,)),))
    alice.settings = replace(alice.settings, network=network)
    bob.settings = replace(bob.settings, network=network)
    carol = Machine(
        replace(bob.settings, wg_ip=carol_ip, name="carol", admin_port=50503, wg_port=50003),
        alice.host.net.host("192.0.2.3"),
    )

    def lan_routes() -> set[IPv4Network]:
        return {r.network for r in bob.forwarding.routes}

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            for machine in (alice, carol, bob):
                await nursery.start((await machine.daemon()).run)
            await wait_for(lambda: lan_routes() == {LAN}, 10)  # through alice or carol
            bob.host.addresses = [BOB_IP, "192.168.1.20"]
            bob.host.networks = [IPv4Network("192.0.2.0/24"), LAN]
            bob.host.link_changed()
            await wait_for(lambda: lan_routes() == set(), 10)
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
