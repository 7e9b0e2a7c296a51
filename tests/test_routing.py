"""Routing kept up to date with changes (core/routing.py ``Routing``) gives
what the rules' pure functions give from scratch, whatever the changes."""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv4Network
from random import Random

import pytest

from tests.helpers import in_a_fresh_interpreter, node_info, static_target
from tests.sim import NAMES, Nat, SimNet, working_example
from wg_netmanager.core.node import Node
from wg_netmanager.core.routing import (
    Routing,
    alive_nodes,
    choose_gateways,
    desired_peers_and_routes,
    subnet_placement,
)
from wg_netmanager.core.sessions import Keys, Session
from wg_netmanager.core.timers import Timers
from wg_netmanager.model import DEFAULT_ROUTE, Gateway, Route, WgPeer
from wg_netmanager.wire import TableEntry

ME = 9
STATICS = (1, 2, 3)
OTHERS = range(4, 30)
# Gateways' networks (rule 8) and a mobile's subnet (mobile.py rule 4).
NETWORKS = (
    IPv4Network("10.1.1.0/24"),
    IPv4Network("10.1.1.0/28"),
    IPv4Network("192.168.1.0/24"),
    IPv4Network("192.168.7.0/24"),
    DEFAULT_ROUTE,
)


def session(octet: int) -> Session:
    info = node_info(f"n{octet}", octet)
    keys = Keys(octet, octet, bytes(32), bytes(32))
    return Session(info, b"boot", ("198.51.100.9", 1), keys, 0.0, 0.0, pinger=False)


@pytest.mark.parametrize("seed", range(6))
def test_changes_applied_one_by_one_give_the_rules_answer(seed: int) -> None:
    rng = Random(seed)
    me = IPv4Address(f"10.1.1.{ME}")
    sessions = {s.info.wg_ip: s for s in (session(o) for o in (*STATICS, *OTHERS))}
    entries = {ip: TableEntry(s.info, None, None, 0.0) for ip, s in sessions.items()}
    statics = {t.wg_ip: t for t in (static_target(o) for o in STATICS)}
    tables: dict[IPv4Address, dict[IPv4Address, TableEntry]] = {}
    listed_by: set[IPv4Address] = set()
    direct: dict[IPv4Address, Session] = {}
    pairs: set[IPv4Address] = set()
    routing = Routing(me)
    gateways_before: dict[IPv4Address, IPv4Address] = {}
    version_before = routing.gateways_version
    for _ in range(400):
        changed: set[IPv4Address] = set()
        for _ in range(rng.randint(1, 4)):
            what = rng.random()
            ip = rng.choice(list(sessions))
            if what < 0.4:  # a table gains or loses a node (a change, or a whole table)
                static = rng.choice(list(statics))
                listing = tables.setdefault(static, {})
                if ip in listing:
                    del listing[ip]
                else:
                    listing[ip] = entries[ip]
                changed.add(ip)
            elif what < 0.5:  # a static forgets us, or lists us again
                static = rng.choice(list(statics))
                listed_by.symmetric_difference_update({static})
            elif what < 0.55:  # a static's session ends: its table goes
                static = rng.choice(list(statics))
                changed.update(tables.pop(static, {}))
                listed_by.discard(static)
                direct.pop(static, None)
            else:  # a session becomes ready or direct, or stops being so
                if ip in direct:
                    del direct[ip]
                else:
                    direct[ip] = sessions[ip]
                if ip not in statics and rng.random() < 0.5:
                    pairs.symmetric_difference_update({ip})
        via, gone = routing.update(direct, tables, listed_by, changed)
        gateways = choose_gateways(me, tables, listed_by, direct)
        assert routing.gateways == gateways
        by: dict[IPv4Address, set[IPv4Address]] = {}
        for ip, gateway in gateways.items():
            by.setdefault(gateway, set()).add(ip)
        assert routing.relayed_by == by
        if gateways != gateways_before:
            assert routing.gateways_version != version_before
        version_before = routing.gateways_version
        assert dict(via) == {ip: g for ip, g in gateways.items() if gateways_before.get(ip) != g}
        assert set(gone) == gateways_before.keys() - gateways.keys() - direct.keys()
        # Gateways' networks on some peers, a mobile's longer keepalive and
        # its static carrying the whole subnet, now and then.
        extra = {
            ip: rng.sample(NETWORKS[1:], rng.randint(1, 2)) for ip in direct if rng.random() < 0.2
        }
        subnets = extra if rng.random() < 0.7 else None
        static_keepalive = rng.choice((None, None, 40))
        static = rng.choice(list(statics))
        subnet_via = (static, NETWORKS[0]) if rng.random() < 0.3 else None
        peers, routes = desired_peers_and_routes(
            direct,
            gateways,
            statics,
            pairs,
            25,
            subnets,
            static_keepalive=static_keepalive,
            subnet_via=subnet_via,
        )
        assert routing.routes == routes
        assert set(routing.dests) == {route.dest for route in routes}
        incremental = routing.peers(
            direct,
            statics,
            pairs,
            25,
            subnets,
            static_keepalive=static_keepalive,
            subnet_via=subnet_via,
        )
        assert incremental == peers
        gateways_before = dict(gateways)


# Gateways for nodes 4-29 behind static 1; run in a fresh interpreter per hash seed.
GATEWAYS_IN_ORDER = """
from tests.helpers import node_info, wg_ip
from wg_netmanager.core.routing import Routing
from wg_netmanager.core.sessions import Keys, Session
from wg_netmanager.wire import TableEntry
info = node_info("s1", 1)
keys = Keys(1, 1, bytes(32), bytes(32))
static = Session(info, b"boot", ("198.51.100.1", 1), keys, 0.0, 0.0, pinger=False)
listing = {wg_ip(o): TableEntry(node_info(f"n{o}", o), None, None, 0.0) for o in range(4, 30)}
routing = Routing(wg_ip(9))
routing.update({info.wg_ip: static}, {info.wg_ip: listing}, {info.wg_ip}, ())
print(list(routing.gateways))
"""


def test_the_gateways_come_in_the_same_order_in_every_process() -> None:
    """Their order is the order of the hellos to the nodes behind them: it
    follows the wg IPs, never a set's hash order (str hashes, and so
    IPv4Address's, differ per process), so a seeded run or a fuzzer's failure
    replays the same anywhere."""
    orders = set()
    for seed in range(4):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        orders.add(in_a_fresh_interpreter(GATEWAYS_IN_ORDER, env))
    assert len(orders) == 1, orders


def test_an_unchanged_peer_is_the_same_object() -> None:
    me = IPv4Address(f"10.1.1.{ME}")
    static, other = session(1), session(5)
    statics = {static.info.wg_ip: static_target(1)}
    tables = {static.info.wg_ip: {other.info.wg_ip: TableEntry(other.info, None, None, 0.0)}}
    direct = {static.info.wg_ip: static}
    routing = Routing(me)
    routing.update(direct, tables, {static.info.wg_ip}, set())
    first = routing.peers(direct, statics, (), 25)
    routing.update(direct, tables, {static.info.wg_ip}, set())
    again = routing.peers(direct, statics, (), 25)
    assert again[static.info.public_key] is first[static.info.public_key]
    del tables[static.info.wg_ip][other.info.wg_ip]
    routing.update(direct, tables, {static.info.wg_ip}, {other.info.wg_ip})
    fewer = routing.peers(direct, statics, (), 25)
    assert len(fewer[static.info.public_key].allowed_ips) == 1
    lan = IPv4Network("192.168.1.0/24")
    carrying = routing.peers(direct, statics, (), 25, {static.info.wg_ip: [lan]})
    assert lan in carrying[static.info.public_key].allowed_ips  # a new input: a new peer
    mobile = routing.peers(direct, statics, (), 25, static_keepalive=40)
    assert mobile[static.info.public_key].persistent_keepalive == 40


@pytest.mark.parametrize("seed", range(4))
def test_alive_among_the_gateways_is_the_whole_answer_cut_to_them(seed: int) -> None:
    rng = Random(seed)
    everyone = [IPv4Address(f"10.1.1.{o}") for o in (*STATICS, *OTHERS)]
    statics = [ip for ip in everyone if ip.packed[3] in STATICS]
    for _ in range(200):
        direct = set(rng.sample(everyone, rng.randint(0, 12)))
        relayed = set(rng.sample(everyone, rng.randint(0, 12))) - direct
        tables = {
            s: {ip: TableEntry(node_info("x", ip.packed[3]), None, None, 0.0) for ip in listed}
            for s in statics
            if rng.random() < 0.7
            for listed in (rng.sample(everyone, rng.randint(0, 20)),)
        }
        among = set(rng.sample(everyone, 5))
        is_static = rng.random() < 0.3
        whole = alive_nodes(direct, relayed, statics, tables, is_static)
        assert alive_nodes(direct, relayed, statics, tables, is_static, among=among) == (
            whole & among
        )


# --- in the running core --------------------------------------------------------------


def from_scratch(node: Node) -> tuple[dict[str, WgPeer], set[Route], set[Route]]:
    """The node's desired peers, routes and subnet routes as the rules give
    them from scratch (the gateway chosen per network is the node's: rule
    6's hysteresis is state, not a function of the tables)."""
    direct = {
        ip: s
        for ip, s in node.sessions.items()
        if (node.pairs.is_direct(ip) if node._is_pair(ip) else s.peer_ready)
    }
    tables, listed_by = node.listings.tables, node.listings.listed_by
    gateways = choose_gateways(node.info.wg_ip, tables, listed_by, direct)
    subnets = node.subnets
    allowed, subnet_routes = subnet_placement(
        subnets.placed(), subnets.main_routes(), direct, gateways
    )
    mine = node._gateway()
    peers, routes = desired_peers_and_routes(
        direct,
        gateways,
        node.statics,
        node.pairs.paths,
        node.timers.keepalive,
        allowed,
        static_keepalive=node.timers.mobile_keepalive if node.mobile else None,
        subnet_via=(mine.info.wg_ip, node.subnet) if mine else None,
    )
    peers.update(node.pairs.trial_peers())
    return peers, routes, subnet_routes


def check_desired(net: SimNet, seconds: float) -> None:
    for _ in range(int(seconds / 0.05)):
        net.run_for(0.05)
        for host in net.hosts.values():
            node = host.node
            if node is not None:
                node._recompute(net.clock(host))  # what the last input left, settled
                desired = (node.desired_peers(), node.desired_routes())
                assert (*desired, node.desired_subnet_routes()) == from_scratch(node)


@pytest.mark.parametrize("lazy", [False, True])
def test_the_running_core_agrees_with_the_rules_through_faults(lazy: bool) -> None:
    timers = Timers(ping_interval=1.0, dead_after=3.0)
    net = working_example(seed=5, timers=timers, lazy=lazy)
    for name in ("beta", "alpha", "charlie"):
        net.start(name)
    check_desired(net, 2.0)
    net.start("delta")  # joins a running mesh: a change of the table
    net.flows[("alpha", "delta")] = 200.0
    check_desired(net, 2.0)
    net.stop("charlie", clean=False)
    check_desired(net, 4.0)
    net.start("charlie")
    net.stop("beta")
    check_desired(net, 2.0)
    net.start("beta")
    net.partitioned.add(frozenset(("alpha", "charlie")))
    check_desired(net, 3.0)


LAN = IPv4Network("192.168.1.0/24")


def test_the_running_core_agrees_with_the_rules_with_gateways() -> None:
    """charlie and delta serve their home LAN, beta is an exit node: networks
    join the AllowedIPs of whoever carries their gateway, and move when it dies."""
    charlie, delta, beta = (IPv4Address(f"10.1.1.{o}") for o in (3, 4, 1))
    net = working_example(seed=7, timers=Timers(ping_interval=1.0, dead_after=3.0))
    net.gateways = (
        Gateway(charlie, (LAN,)),
        Gateway(delta, (LAN,)),
        Gateway(beta, (DEFAULT_ROUTE,)),
    )
    net.hosts["alpha"].exit_node = beta
    for name in NAMES:
        net.start(name)
    check_desired(net, 3.0)
    alpha = net.hosts["alpha"].node
    assert alpha is not None and alpha.desired_subnet_routes()  # (the case is covered)
    net.stop("charlie", clean=False)  # the first gateway dies: delta takes over
    check_desired(net, 5.0)
    net.start("charlie")
    net.partitioned.add(frozenset(("alpha", "delta")))
    check_desired(net, 3.0)


def test_the_running_core_agrees_with_the_rules_with_a_mobile() -> None:
    """A mobile node: its one static carries the whole subnet with the mobile
    keepalive; its traffic opens a pair; its static goes away."""
    net = SimNet(Timers(ping_interval=1.0, dead_after=3.0), seed=4)
    net.add_host("beta", "198.51.100.1", "10.1.1.1", static=True)
    net.add_host("gamma", "198.51.100.5", "10.1.1.5", static=True)
    net.add_host("alpha", "192.168.2.2", "10.1.1.9", nat=Nat("198.51.100.4"), mobile=True)
    home = Nat("198.51.100.3")
    net.add_host("charlie", "192.168.1.2", "10.1.1.3", nat=home, lan="home")
    net.add_host("delta", "192.168.1.3", "10.1.1.4", nat=home, lan="home")
    for name in net.hosts:
        net.start(name)
    check_desired(net, 3.0)
    net.flows[("alpha", "charlie")] = 200.0
    check_desired(net, 3.0)
    alpha = net.hosts["alpha"].node
    assert alpha is not None
    (static,) = [ip for ip in alpha.sessions if ip in alpha.statics]
    name = next(n for n, h in net.hosts.items() if h.wg_ip == static)
    net.stop(name, clean=False)
    check_desired(net, 4.0)
