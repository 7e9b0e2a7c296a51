"""Static tables as the nodes hold them (core/tables.py), in a mesh of LANs:
changes lost or reordered on the way are repaired, and two statics come
to one view after a partition."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address

import pytest
from msgspec.structs import replace

from tests.sim import SimNet, lan_mesh
from wg_netmanager.core.node import TABLE_REQUEST_RATE
from wg_netmanager.core.sessions import Session
from wg_netmanager.core.tables import Listings, OwnTable
from wg_netmanager.core.timers import Timers
from wg_netmanager.wire import NodeInfo, Table, TableEntry

T = Timers(ping_interval=1.0, dead_after=3.0)  # a lost change is repaired at a ping


def listed(net: SimNet, static: str) -> dict[IPv4Address, tuple[str, str]]:
    """What a static's table says now: wg IP -> (name, key)."""
    host = net.hosts[static]
    node = host.node
    assert node is not None
    entries = node.table.entries(node.sessions, node._wg, net.clock(host))
    return {e.info.wg_ip: (e.info.name, e.info.public_key) for e in entries}


def stale_views(net: SimNet, statics: list[str]) -> list[str]:
    """Nodes whose copy of a static's table is not what that static says."""
    stale = []
    for static in statics:
        node = net.hosts[static].node
        assert node is not None
        truth, ip = listed(net, static), net.hosts[static].wg_ip
        for name, host in net.hosts.items():
            if name == static or host.node is None or ip not in host.node.sessions:
                continue
            holder = host.node.listings
            held = {
                wg_ip: (e.info.name, e.info.public_key)
                for wg_ip, e in holder.tables.get(ip, {}).items()
            }
            mine = {k: v for k, v in truth.items() if k != host.wg_ip}
            if held != mine or holder.versions.get(ip) != node.table.version:
                stale.append(f"{name} of {static}")
    return stale


def versions_only_grow(net: SimNet, static: str, seen: dict[int, tuple[int, Session]]) -> None:
    """Within one session with a static, a node never goes back to an older
    version of its table (a session dropped for silence, as a third of the
    datagrams lost may make it, starts afresh with the next one)."""
    ip = net.hosts[static].wg_ip
    for name, host in net.hosts.items():
        node = host.node
        if node is None or ip not in node.sessions:
            continue
        session = node.sessions[ip]
        version = node.listings.versions.get(ip, 0)
        # Keyed by the session object (kept alive in the value, so its id is not reused).
        before = seen.get(id(session), (0, session))[0]
        assert version >= before, f"{name}: version of {static} went back"
        seen[id(session)] = (version, session)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_changes_lost_or_reordered_are_repaired(seed: int) -> None:
    net = lan_mesh(24, seed=seed, timers=T)
    for name in net.hosts:
        net.start(name)
    net.run_for(5.0)
    assert not stale_views(net, ["s1"])
    net.loss, net.jitter = 0.3, 0.02  # a third lost, the rest reordered (2-22 ms)
    seen: dict[int, tuple[int, Session]] = {}
    names = list(net.hosts)[1:]
    for restart in names[::5]:  # changes while datagrams get lost: new keys ...
        net.stop(restart, clean=False)
        net.start(restart)
        for _ in range(10):
            net.run_for(0.05)
            versions_only_grow(net, "s1", seen)
    net.stop(names[1])  # ... a node leaving, one coming back
    net.start(names[2])
    for _ in range(40):
        net.run_for(0.05)
        versions_only_grow(net, "s1", seen)
    net.loss = 0.0
    took = net.wait_for(lambda: not stale_views(net, ["s1"]), limit=10.0)
    # A change lost on its way is asked for at the next ping (every second
    # here), unless the node used up its table requests while datagrams got
    # lost: then at the first ping after its next one is allowed.
    bound = 1 / TABLE_REQUEST_RATE + T.ping_interval + 0.5
    assert took <= bound, stale_views(net, ["s1"])
    net.run_for(2.0)
    assert not stale_views(net, ["s1"])


def test_two_statics_agree_on_one_view_after_a_partition() -> None:
    net = lan_mesh(26, statics=2, seed=4, timers=T)
    for name in net.hosts:
        net.start(name)
    net.run_for(5.0)
    assert not stale_views(net, ["s1", "s2"])
    cut_off = [n for n, h in net.hosts.items() if h.lan in ("lan0", "lan1")]
    for name in [*cut_off, "s2"]:  # s1 alone on one side
        net.partitioned.add(frozenset(("s1", name)))
    net.run_for(2 * T.dead_after)
    s1 = net.hosts["s1"].node
    assert s1 is not None
    assert not any(net.hosts[n].wg_ip in s1.sessions for n in cut_off)
    assert net.pings(cut_off[0], "n20")  # through s2 meanwhile
    net.partitioned.clear()

    statics = {net.hosts["s1"].wg_ip, net.hosts["s2"].wg_ip}

    def agreed() -> bool:
        one, two = listed(net, "s1").keys() - statics, listed(net, "s2").keys() - statics
        if one != two or stale_views(net, ["s1", "s2"]):
            return False
        return all(net.pings(a, b) for a, b in itertools.combinations(list(net.hosts), 2))

    took = net.wait_for(agreed, limit=10.0)
    assert took <= T.ping_interval + 1.0
    assert len(listed(net, "s1")) == len(net.hosts) - 1  # everyone but itself
    for a, b in itertools.combinations([n for n in net.hosts if n not in ("s1", "s2")], 2):
        assert net.path(a, b) in ([a, b], [a, "s1", b])  # the lowest static, both ways


def test_a_later_run_of_a_key_wins_over_a_fresher_entry_of_an_earlier_one() -> None:
    """tables.py rule 5: a static that has not met a node's new run yet still
    lists the old one (its age may even be smaller); between two keys, or
    within one run: the freshest."""
    node = IPv4Address("10.1.1.3")
    info = NodeInfo(node, "charlie", "A" * 43 + "=", 50003, 50503)
    new_run = TableEntry(info, ("198.51.100.3", 40003), None, age=2.0, boot_number=4)
    old_run = TableEntry(info, ("198.51.100.3", 40009), None, age=0.1, boot_number=3)
    listings = Listings()
    s1, s2 = IPv4Address("10.1.1.1"), IPv4Address("10.1.1.2")
    for first, second in ((new_run, old_run), (old_run, new_run)):
        listings.tables = {s1: {node: first}, s2: {node: second}}
        assert listings.freshest(node, lambda ip: True) == new_run
        assert listings.freshest(node, lambda ip: ip == s1) == first  # only trusted statics
    fresher = replace(new_run, age=1.0, wg_endpoint=None)
    listings.tables = {s1: {node: new_run}, s2: {node: fresher}}
    assert listings.freshest(node, lambda ip: True) == fresher
    other_key = TableEntry(replace(info, public_key="B" * 43 + "="), None, None, age=0.1)
    listings.tables = {s1: {node: new_run}, s2: {node: other_key}}
    assert listings.freshest(node, lambda ip: True) == other_key


def _entry(octet: int) -> TableEntry:
    info = NodeInfo(IPv4Address(f"10.1.1.{octet}"), f"n{octet}", f"{octet:043d}=", 50000, 50500)
    return TableEntry(info, None, None, age=0.0)


def test_a_lone_change_is_pushed_at_once_and_a_burst_is_coalesced() -> None:
    """A static's table change waits for nothing after a quiet spell (a
    node's outside learned at start-up is on every NAT pair's path); changes
    that follow a push within the push delay go out together after it."""
    table, delay = OwnTable(), 0.01
    assert table.update([_entry(2)], 5.0, delay)
    assert table.push_due(5.0)  # at once
    assert table.update([_entry(2), _entry(3)], 5.002, delay)
    assert table.update([_entry(2), _entry(3), _entry(4)], 5.004, delay)
    assert table.push_at == pytest.approx(5.01)  # a burst: one push, a delay after the last
    assert not table.push_due(5.009)
    assert table.push_due(5.01)
    assert not table.update([_entry(2), _entry(3), _entry(4)], 6.0, delay)  # no change
    assert table.push_at is None
    assert table.update([_entry(2)], 6.0, delay)
    assert table.push_due(6.0)  # quiet again: at once


ME = (IPv4Address("10.1.1.99"), "M" * 43 + "=")
STATIC = IPv4Address("10.1.1.1")


def _parts(version: int, base: int, groups: list[list[int]]) -> list[Table]:
    return [
        Table(version, i, len(groups), tuple(_entry(o) for o in group), base, ())
        for i, group in enumerate(groups)
    ]


def _holder_of_version_1() -> Listings:
    listings = Listings()
    [whole] = _parts(1, 0, [[2]])
    assert listings.receive(STATIC, whole, ME, lambda ip: True) is not None
    return listings


def test_a_change_with_a_part_lost_is_asked_for_at_the_next_naming_but_one() -> None:
    listings = _holder_of_version_1()
    first, _lost = _parts(2, 1, [[3], [4]])
    assert listings.receive(STATIC, first, ME, lambda ip: True) is None
    assert not listings.wants(STATIC, 2)  # its other part may be on its way
    assert listings.wants(STATIC, 2)  # named again, still missing: lost
    # The whole table asked for replaces the change's parts ...
    whole = _parts(2, 0, [[2, 3], [4]])
    assert listings.receive(STATIC, whole[0], ME, lambda ip: True) is None
    # ... and a late part of the change neither completes nor discards it.
    assert listings.receive(STATIC, _lost, ME, lambda ip: True) is None
    assert listings.receive(STATIC, whole[1], ME, lambda ip: True) is not None
    assert listings.versions[STATIC] == 2
    assert set(listings.tables[STATIC]) == {IPv4Address(f"10.1.1.{o}") for o in (2, 3, 4)}


def test_a_part_of_a_change_keeps_the_whole_table_being_assembled() -> None:
    """A holder behind by more than one version assembles the whole table it
    asked for; the pushed change of that version does not make it start over."""
    listings = Listings()
    whole = _parts(5, 0, [[2], [3]])
    assert listings.receive(STATIC, whole[0], ME, lambda ip: True) is None
    [change] = _parts(5, 4, [[3]])
    assert listings.receive(STATIC, change, ME, lambda ip: True) is None
    assert listings.receive(STATIC, whole[1], ME, lambda ip: True) is not None
    assert listings.versions[STATIC] == 5
