"""A growing mesh with lazy links (tests/sim.py ``lan_mesh``: LANs of eight
behind NATs, each core reading `wg show` as the daemon does): what a node
pays does not grow with the mesh; the static's share does.

Counts, not timings (scripts/bench_scale.py measures CPU and time)."""

from __future__ import annotations

import statistics
from random import Random

from tests.sim import SimNet, lan_mesh

PING = 200.0  # bytes per second each way


def started(count: int, seed: int = 1) -> SimNet:
    net = lan_mesh(count, seed=seed)
    for name in net.hosts:
        net.start(name)
    net.run_for(30.0)  # converged, and the fast `wg show` polls are over
    return net


def idle_bytes(net: SimNet, seconds: float) -> dict[str, int]:
    """Bytes each node sends meanwhile: admin datagrams, keepalives, handshakes."""

    def total(name: str) -> int:
        return (
            net.sent_bytes.get(name, 0)
            + net.keepalive_bytes.get(name, 0)
            + net.handshake_bytes.get(name, 0)
        )

    before = {name: total(name) for name in net.hosts}
    net.run_for(seconds)
    return {name: total(name) - before[name] for name in net.hosts}


def test_a_dynamic_node_idles_on_one_link_whatever_the_size_of_the_mesh() -> None:
    medians, statics = [], []
    for count in (16, 64):
        net = started(count)
        sent = idle_bytes(net, 120.0)  # one WireGuard handshake period
        peers = [len(h.node.desired_peers()) for h in net.hosts.values() if h.node]
        assert statistics.median(peers) == 1  # the static; no link without traffic
        medians.append(statistics.median(sent[n] for n in net.hosts if n != "s1"))
        statics.append(sent["s1"])
    assert abs(medians[1] - medians[0]) <= 0.05 * medians[0]
    assert statics[1] > 3 * statics[0]  # the static's work follows the node count


def test_a_join_costs_each_dynamic_node_a_few_datagrams_and_the_static_one_per_node() -> None:
    received, static_sent = [], []
    for count in (16, 64):
        net = lan_mesh(count + 1)
        newcomer = list(net.hosts)[-1]
        for name in list(net.hosts)[:-1]:
            net.start(name)
        net.run_for(30.0)
        before, sent = dict(net.received), net.sent_bytes.get("s1", 0)
        net.start(newcomer)
        net.run_for(5.0)
        got = {n: net.received.get(n, 0) - before.get(n, 0) for n in net.hosts}
        received.append(max(got[n] for n in net.hosts if n not in ("s1", newcomer)))
        static_sent.append(net.sent_bytes.get("s1", 0) - sent)
    assert received[0] == received[1] <= 3  # the table changes, whatever the size
    assert static_sent[1] > 3 * static_sent[0]  # a change for every node


def test_a_pair_going_direct_loses_at_most_a_round_trip_via_the_static() -> None:
    net = started(24, seed=2)
    dynamic = [n for n in net.hosts if n != "s1"]
    pool = list(dynamic)
    Random(2).shuffle(pool)
    pairs = [(pool[2 * i], pool[2 * i + 1]) for i in range(8)]
    for a, b in pairs:
        net.flows[(a, b)] = net.flows[(b, a)] = PING
    outage = {pair: 0.0 for pair in pairs}
    longest = dict(outage)
    for _ in range(300):  # 3 s, every 10 ms
        net.run_for(0.01)
        for pair in pairs:
            outage[pair] = 0.0 if net.pings(*pair) else outage[pair] + 0.01
            longest[pair] = max(longest[pair], outage[pair])
    assert all(net.path(a, b) == [a, b] for a, b in pairs)
    # One side goes direct first; the other follows when the relayed
    # Ready(direct) arrives, not at its next `wg show` (0.2 s later).
    assert max(longest.values()) <= 0.05, longest


def test_a_static_reads_wireguard_without_walking_its_table_yet_misses_no_change() -> None:
    net = started(16)
    static = net.hosts["s1"]
    node = static.node
    assert node is not None
    version = node.table.version
    node.update_wg(dict(node._wg), net.clock(static))  # the same reading: nothing new
    assert node.table.version == version
    session = next(s for ip, s in node.sessions.items() if ip not in node.statics)
    session.addr = ("203.0.113.77", 4242)  # as a renewed handshake from a new address does
    node.update_wg(dict(node._wg), net.clock(static))
    assert node.table.version == version + 1
