"""Routing kept up to date with changes (core/routing.py ``Routing``) gives
what the rules' pure functions give from scratch, whatever the changes."""

from __future__ import annotations

from ipaddress import IPv4Address
from random import Random

import pytest

from tests.helpers import node_info, static_target
from tests.sim import SimNet, working_example
from wg_netmanager.core.node import Node
from wg_netmanager.core.routing import Routing, choose_gateways, desired_peers_and_routes
from wg_netmanager.core.sessions import Keys, Session
from wg_netmanager.core.timers import Timers
from wg_netmanager.wire import TableEntry

ME = 9
STATICS = (1, 2, 3)
OTHERS = range(4, 30)


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
        assert dict(via) == {ip: g for ip, g in gateways.items() if gateways_before.get(ip) != g}
        assert set(gone) == gateways_before.keys() - gateways.keys() - direct.keys()
        peers, routes = desired_peers_and_routes(direct, gateways, statics, pairs, 25)
        assert routing.routes == routes
        assert set(routing.dests) == {route.dest for route in routes}
        assert routing.peers(direct, statics, pairs, 25) == peers
        gateways_before = dict(gateways)


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


# --- in the running core --------------------------------------------------------------


def from_scratch(node: Node) -> tuple[object, object]:
    """The node's desired peers and routes as the rules give them from scratch."""
    direct = {
        ip: s
        for ip, s in node.sessions.items()
        if (node.pairs.is_direct(ip) if node._is_pair(ip) else s.peer_ready)
    }
    tables, listed_by = node.listings.tables, node.listings.listed_by
    gateways = choose_gateways(node.info.wg_ip, tables, listed_by, direct)
    peers, routes = desired_peers_and_routes(
        direct, gateways, node.statics, node.pairs.paths, node.timers.keepalive
    )
    peers.update(node.pairs.trial_peers())
    return peers, routes


def check_desired(net: SimNet, seconds: float) -> None:
    for _ in range(int(seconds / 0.05)):
        net.run_for(0.05)
        for host in net.hosts.values():
            node = host.node
            if node is not None:
                node._recompute(net.clock(host))  # what the last input left, settled
                assert (node.desired_peers(), node.desired_routes()) == from_scratch(node)


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
