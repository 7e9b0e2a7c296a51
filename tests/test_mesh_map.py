"""The mesh map (``core/mesh_map.py``): reports, merging, serving, watching, bounds.

In the simulator (``tests.sim``) on the working example: beta is the static,
alpha behind its own NAT, charlie and delta on one LAN. The codec's part is
at the end.
"""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address
from random import Random

import pytest

from tests.sim import NAMES, SimNet, lan_mesh, working_example
from wg_netmanager import wire
from wg_netmanager.core import mesh_map
from wg_netmanager.core.events import DropReason
from wg_netmanager.core.mesh_map import _chunks, _groups, _join, relayed_pairs
from wg_netmanager.core.node import Node
from wg_netmanager.core.timers import Timers
from wg_netmanager.keys import KeyPair
from wg_netmanager.mesh_text import matrix_lines, mesh_document
from wg_netmanager.wire import Drop, LinkReport, LinkState, MapPart, MapRequest, NodeLinks

IP = {name: IPv4Address(f"10.1.1.{i}") for i, name in enumerate(NAMES, start=1)}


def node(net: SimNet, name: str) -> Node:
    found = net.hosts[name].node
    assert found is not None
    return found


def converged(symmetric_alpha: bool = True) -> SimNet:
    """alpha behind a symmetric NAT stays relayed: the map has both kinds of pair."""
    net = working_example(symmetric_alpha=symmetric_alpha)
    for name in NAMES:
        net.start(name)
    net.run_for(10.0)
    return net


def picture(net: SimNet, name: str) -> dict[IPv4Address, NodeLinks]:
    return {r.wg_ip: r for r in node(net, name).mesh_picture(net.now)}


def links(records: dict[IPv4Address, NodeLinks]) -> set[tuple[str, str, str]]:
    doc = mesh_document(records.values(), me=IP["beta"], source=IP["beta"])
    return {(link["a"], link["b"], link["kind"]) for link in doc["links"]}


def test_the_static_merges_every_nodes_links_and_relayed_pairs_follow_from_gateways() -> None:
    net = converged()
    merged = picture(net, "beta")
    assert set(merged) == set(IP.values()) and all(r.up for r in merged.values())
    assert links(merged) == {
        ("10.1.1.1", "10.1.1.2", "static"),
        ("10.1.1.1", "10.1.1.3", "static"),
        ("10.1.1.1", "10.1.1.4", "static"),
        ("10.1.1.3", "10.1.1.4", "lan"),
    }
    assert merged[IP["alpha"]].gateway == IP["beta"]
    # Round trips came with the reports (the simulator's latency: a few ms).
    rtts = {link.peer: link.rtt for link in merged[IP["charlie"]].links}
    assert rtts[IP["beta"]] is not None and 0.0 < rtts[IP["beta"]] < 0.1
    assert set(relayed_pairs(merged.values())) == {
        (IP["alpha"], IP["charlie"], IP["beta"]),
        (IP["alpha"], IP["delta"], IP["beta"]),
    }
    doc = mesh_document(merged.values(), me=IP["beta"], source=IP["beta"], relayed=True)
    assert {(r["a"], r["b"], r["via"]) for r in doc["relayed"]} == {
        ("10.1.1.2", "10.1.1.3", "10.1.1.1"),
        ("10.1.1.2", "10.1.1.4", "10.1.1.1"),
    }


def test_a_dynamic_node_shows_the_statics_map_once_someone_watches() -> None:
    net = converged()
    charlie = node(net, "charlie")
    # Nobody looks: its own links only, and it asks nobody for anything.
    assert charlie.mesh.source is None
    alone = picture(net, "charlie")
    assert IP["alpha"] in alone and not alone[IP["alpha"]].links
    charlie.watch_mesh(net.now + 60.0, net.now)
    net._after(net.hosts["charlie"])
    took = net.wait_for(lambda: charlie.mesh.source == IP["beta"], limit=2.0)
    assert took < 0.1
    seen = picture(net, "charlie")
    assert links(seen) == links(picture(net, "beta"))
    # A change elsewhere is pushed while the watch lasts: alpha goes away.
    net.run_for(2.0)
    net.stop("alpha")
    took = net.wait_for(lambda: not picture(net, "charlie")[IP["alpha"]].up, limit=5.0)
    assert took < 0.5
    # The watch is renewed while it lasts and ends when nobody looks any more.
    net.run_for(120.0)
    assert charlie.mesh._request_at is None and not charlie.mesh._watching(net.now)


def test_a_watcher_gets_changes_not_the_whole_map_and_asks_again_when_it_lost_one() -> None:
    net = converged()
    beta, charlie = node(net, "beta"), node(net, "charlie")
    sent: list[wire.MapPart] = []
    send = beta.mesh._host.send_encoded

    def spy(body: bytes, to: IPv4Address) -> None:
        message = wire.decode_message(body)
        if isinstance(message, wire.MapPart) and to == IP["charlie"]:
            sent.append(message)
        send(body, to)

    beta.mesh._host.send_encoded = spy  # type: ignore[method-assign]
    charlie.watch_mesh(net.now + 120.0, net.now)
    net._after(net.hosts["charlie"])
    net.wait_for(lambda: charlie.mesh.source == IP["beta"], limit=2.0)
    assert sent and all(part.base == 0 for part in sent)  # the first map is whole
    whole = sum(len(part.records) for part in sent)
    sent.clear()
    net.run_for(2.0)
    net.stop("delta")  # delta's record changes (down); charlie's and beta's links too
    net.wait_for(lambda: not picture(net, "charlie")[IP["delta"]].up, limit=5.0)
    assert sent and all(part.base for part in sent)
    assert sum(len(part.records) for part in sent) < whole
    assert picture(net, "charlie").keys() == picture(net, "beta").keys()
    assert links(picture(net, "charlie")) == links(picture(net, "beta"))
    # A change on top of a version charlie lacks: it asks for the whole map again.
    sent.clear()
    charlie.mesh._remote_version -= 1
    net.start("delta")
    net.wait_for(lambda: any(part.base == 0 for part in sent), limit=10.0)
    net.run_for(5.0)
    assert links(picture(net, "charlie")) == links(picture(net, "beta"))


def test_reports_only_on_change_and_at_most_one_a_second() -> None:
    net = converged(symmetric_alpha=False)
    seqs = {name: node(net, name).mesh._seq for name in NAMES}
    net.run_for(300.0)  # idle: pings go on, round trips stay, nothing to report
    assert {name: node(net, name).mesh._seq for name in NAMES} == seqs
    # The LAN between charlie and delta breaks while they talk: they report the change.
    net.flows[("charlie", "delta")] = net.flows[("delta", "charlie")] = 1000.0
    net.run_for(3.0)
    net.partitioned.add(frozenset(("charlie", "delta")))
    took = net.wait_for(
        lambda: ("10.1.1.3", "10.1.1.4", "lan") not in links(picture(net, "beta")), limit=10.0
    )
    assert took < 5.0
    assert node(net, "charlie").mesh._seq > seqs["charlie"]
    # A round trip jumping about all the time: at most one report a second.
    charlie = node(net, "charlie")
    before, started = charlie.mesh._seq, net.now
    session = charlie.sessions[IP["beta"]]
    for step in range(100):
        session.rtt = 0.01 if step % 2 else 0.2
        charlie.mesh.changed(net.now)
        net._after(net.hosts["charlie"])
        net.run_for(0.1)
    sent = charlie.mesh._seq - before
    assert 3 <= sent <= (net.now - started) / mesh_map.REPORT_INTERVAL + 1


def test_pongs_a_busy_host_answers_late_make_no_report() -> None:
    # Every third pong 40 ms late (a loaded machine), the others as the path is.
    net = converged()
    charlie = node(net, "charlie")
    before = charlie.mesh._seq
    session = charlie.sessions[IP["beta"]]
    for step in range(12):
        seq = session.record_ping(net.now)
        session.record_pong(seq, net.now + (0.04 if step % 3 == 0 else 0.004))
        charlie.mesh.changed(net.now)
        net._after(net.hosts["charlie"])
        net.run_for(1.5)
    assert session.rtt is not None and session.rtt < 0.01
    assert charlie.mesh._seq == before


def test_a_node_that_went_away_stays_greyed_then_is_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mesh_map, "DOWN_KEEP", 30.0)  # ten minutes by default
    net = converged()
    net.stop("delta")
    net.run_for(1.0)
    merged = picture(net, "beta")
    assert not merged[IP["delta"]].up and merged[IP["charlie"]].up
    assert ("10.1.1.3", "10.1.1.4", "lan") not in links(merged)
    lines = "\n".join(matrix_lines(mesh_document(merged.values(), me=IP["beta"], source=None)))
    assert "down: delta" in lines
    net.run_for(mesh_map.DOWN_KEEP + 1.0)
    assert IP["delta"] not in picture(net, "beta")


def test_a_report_counts_only_as_the_senders_own_and_only_at_a_static() -> None:
    net = converged()
    beta, charlie = node(net, "beta"), node(net, "charlie")
    forged = NodeLinks(IP["delta"], "delta", False, True, None, ())
    beta.mesh.on_report(IP["alpha"], LinkReport(99, 0, 1, forged), net.now)
    assert beta.drops[DropReason.BAD_MAP] == 1
    # A report too large to keep for assembly.
    own = NodeLinks(IP["alpha"], "alpha", False, True, None, ())
    beta.mesh.on_report(IP["alpha"], LinkReport(99, 0, mesh_map.MAX_REPORT_PARTS + 1, own), net.now)
    assert beta.drops[DropReason.BAD_MAP] == 2 and IP["alpha"] not in beta.mesh._report_parts
    charlie.mesh.on_report(IP["delta"], LinkReport(1, 0, 1, forged), net.now)
    charlie.mesh.on_request(IP["delta"], MapRequest(0, 30.0), net.now)
    assert charlie.drops[DropReason.NOT_A_STATIC] == 2
    # A map counts only from a static's session.
    charlie.mesh.on_map(IP["delta"], MapPart(7, 0, 1, (forged,)), net.now)
    assert charlie.drops[DropReason.BAD_MAP] == 1 and charlie.mesh.source is None
    # Requests are rate limited per session.
    for _ in range(10):
        beta.mesh.on_request(IP["alpha"], MapRequest(0, 30.0), net.now)
    assert beta.drops[DropReason.RATE_LIMITED] >= 10 - mesh_map.REQUEST_BURST


# --- the codec -----------------------------------------------------------------------


def many_links(count: int) -> NodeLinks:
    return NodeLinks(
        IPv4Address("10.1.0.1"),
        "busy",
        False,
        True,
        IPv4Address("10.1.0.254"),
        tuple(
            LinkState(IPv4Address(f"10.1.{1 + i // 250}.{1 + i % 250}"), "lan", 0.000321)
            for i in range(count)
        ),
        tuple((IPv4Address(f"10.2.0.{i + 1}"), IPv4Address("10.1.0.253")) for i in range(30)),
    )


def test_records_split_into_datagrams_and_join_again() -> None:
    record = many_links(600)
    chunks = _chunks(record)
    assert len(chunks) > 10
    groups = _groups(chunks)
    for index, group in enumerate(groups):
        message = MapPart(2**62, index, len(groups), group)
        assert wire.encoded_size(message) <= wire.MAX_DATAGRAM
        assert wire.decode_message(wire.encode_message(message)) == message
    for index, chunk in enumerate(chunks):
        report = LinkReport(2**62, index, len(chunks), chunk)
        assert wire.encoded_size(report) <= wire.MAX_DATAGRAM
    change = MapPart(9, 0, 1, (chunks[0],), base=7, removed=(IPv4Address("10.1.0.9"),))
    assert wire.decode_message(wire.encode_message(change)) == change
    (joined,) = _join({i: (c,) for i, c in enumerate(chunks)})
    # Round trips travel in microseconds.
    assert joined == record


@pytest.mark.parametrize(
    "body",
    [
        b'{"t":"links","s":1,"p":0,"n":1,"r":["10.1.1.2","x",4,null,[],[]]}',
        b'{"t":"links","s":1,"p":1,"n":1,"r":["10.1.1.2","x",0,null,[],[]]}',
        b'{"t":"links","s":1,"p":0,"n":1,"r":["10.1.1.2","x",0,null,[["10.1.1.3","wifi",1]],[]]}',
        b'{"t":"links","s":1,"p":0,"n":1,"r":["10.1.1.2","x",0,null,[["10.1.1.3","lan",-1]],[]]}',
        b'{"t":"links","s":1,"p":0,"n":1,"r":["10.1.1.2","bad name",0,null,[],[]]}',
        b'{"t":"links","s":1,"p":0,"n":1,"r":["10.1.1.2","x",0,"gw",[],[]]}',
        b'{"t":"links","s":1,"p":0,"n":1,"r":["10.1.1.2","x",0,null,[],[["10.1.1.3"]]]}',
        b'{"t":"links","s":1,"p":0,"n":1,"r":["10.1.1.2","x",true,null,[],[]]}',
        b'{"t":"mreq","v":0,"w":99999}',
        b'{"t":"mreq","v":-1,"w":1}',
        b'{"t":"map","v":1,"p":0,"n":0,"r":[]}',
        b'{"t":"map","v":1,"p":0,"n":1,"r":{}}',
        b'{"t":"map","v":3,"p":0,"n":1,"r":[],"b":3,"x":[]}',
        b'{"t":"map","v":3,"p":0,"n":1,"r":[],"b":2}',
    ],
)
def test_bad_map_messages_are_malformed(body: bytes) -> None:
    with pytest.raises(Drop) as caught:
        wire.decode_message(body)
    assert caught.value.reason is DropReason.MALFORMED


def test_a_nodes_own_links_win_over_an_older_report_of_its_peer() -> None:
    net = converged(symmetric_alpha=False)
    charlie = node(net, "charlie")
    charlie.watch_mesh(net.now + 60.0, net.now)
    net._after(net.hosts["charlie"])
    net.wait_for(lambda: charlie.mesh.source == IP["beta"], limit=2.0)
    net.flows[("charlie", "delta")] = net.flows[("delta", "charlie")] = 1000.0
    net.run_for(3.0)
    net.partitioned.add(frozenset(("charlie", "delta")))
    # The moment charlie's own path to delta changes, its map says so, even
    # before delta's report has gone through beta.
    net.wait_for(lambda: charlie.pairs.paths[IP["delta"]].state.value != "direct", limit=10.0)
    assert ("10.1.1.3", "10.1.1.4", "lan") not in links(picture(net, "charlie"))


# --- our own record: kept as the status snapshot would give it ----------------------


def check_own_records(net: SimNet, seconds: float, seen: Counter[str]) -> None:
    for _ in range(int(seconds / 0.05)):
        net.run_for(0.05)
        for host in net.hosts.values():
            core = host.node
            if core is None:
                continue
            now = net.clock(host)
            kept = core.mesh._own_record(now)
            assert kept == mesh_map.own_record(core.statistics(now)), host.name
            seen["exceptions"] += bool(kept.exceptions)
            seen["pairs"] += any(link.kind in ("lan", "nat") for link in kept.links)
            seen["clients"] += any(link.peer in core.clients for link in kept.links)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_own_record_is_the_one_the_status_snapshot_gives(seed: int) -> None:
    """Built from the sessions and the routing's gateways (for a cost that
    follows the links), it stays ``own_record(statistics)`` through traffic,
    partitions, restarts and a client, on a random mesh of two statics."""
    rng = Random(seed)
    net = lan_mesh(
        rng.randrange(12, 24),
        statics=2,
        seed=seed,
        timers=Timers(ping_interval=1.0, dead_after=3.0),
    )
    names = list(net.hosts)
    dynamic = names[2:]
    seen: Counter[str] = Counter()
    for name in names:
        net.start(name)
    check_own_records(net, 3.0, seen)
    for _ in range(4):
        a, b = rng.sample(dynamic, 2)
        net.flows[(a, b)] = net.flows[(b, a)] = 200.0
    s2 = net.hosts["s2"]
    assert s2.node is not None
    s2.node.add_client("phone", KeyPair.generate().public_b64, None, net.clock(s2))
    check_own_records(net, 3.0, seen)
    cut = rng.sample(dynamic, 3)
    for name in cut:  # s2 relays these for everyone that still reaches s1 and s2
        net.partitioned.add(frozenset(("s1", name)))
    check_own_records(net, 6.0, seen)
    net.partitioned.clear()
    net.flows.clear()
    restarted = rng.choice(dynamic)
    net.stop(restarted, clean=rng.random() < 0.5)
    check_own_records(net, 4.0, seen)
    net.start(restarted)
    check_own_records(net, 4.0, seen)
    assert seen["exceptions"] and seen["pairs"] and seen["clients"]  # (each case is covered)
