"""Plain WireGuard clients (core/clients.py): registered on a static, listed
in its table, routed through it by everyone, never handshaken or paired with.

Hand-driven cores (``Lab``) whose WireGuard is whatever they asked for.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from msgspec.structs import replace

from tests.helpers import QUICK_TIMERS
from tests.lab import Lab
from wg_netmanager import event_text
from wg_netmanager.core import events as ev
from wg_netmanager.core.clients import Client, ClientRefused
from wg_netmanager.core.node import Node
from wg_netmanager.keys import KeyPair
from wg_netmanager.model import Route, WgPeerReading

T = QUICK_TIMERS
PHONE = KeyPair.generate().public_b64


def mesh(*dynamic: tuple[str, int], statics: dict[str, int] | None = None) -> Lab:
    lab = Lab(statics or {"s1": 1})
    for name in lab.static_config:
        lab.start(name)
    for name, octet in dynamic:
        lab.start(name, octet)
    lab.fire_timers()
    lab.wg_applied()
    return lab


def via(node: Node, wg_ip: IPv4Address) -> IPv4Address | None:
    """The gateway ``node`` routes ``wg_ip`` through (None: no such route)."""
    return next((r.via for r in node.desired_routes() if r.dest == wg_ip), None)


def peer_with(node: Node, wg_ip: IPv4Address) -> str | None:
    """The public key of the WireGuard peer whose AllowedIPs hold ``wg_ip``/32."""
    net = IPv4Network(wg_ip)
    return next((k for k, p in node.desired_peers().items() if net in p.allowed_ips), None)


# --- the static ------------------------------------------------------------------


def test_a_client_becomes_a_peer_of_its_static_with_its_slash_32_and_no_endpoint() -> None:
    lab = mesh()
    s1 = lab.boxes["s1"].node
    client = s1.add_client("phone", PHONE, IPv4Address("10.1.1.77"), lab.now)
    assert client == Client("phone", IPv4Address("10.1.1.77"), PHONE)
    peer = s1.desired_peers()[PHONE]
    assert peer.allowed_ips == (IPv4Network("10.1.1.77/32"),)
    assert (peer.endpoint, peer.persistent_keepalive) == (None, 0)
    assert Route(IPv4Address("10.1.1.77")) in s1.desired_routes()
    added = [e for e in s1.events() if isinstance(e, ev.ClientAdded)]
    assert [event_text.describe(e) for e in added] == [
        f"client phone (10.1.1.77) added, key {PHONE[:8]}…"
    ]


def test_without_an_ip_the_highest_free_address_is_taken() -> None:
    lab = mesh()
    s1 = lab.boxes["s1"].node
    assert s1.add_client("a", PHONE, None, lab.now).wg_ip == IPv4Address("10.1.1.254")
    other = KeyPair.generate().public_b64
    assert s1.add_client("b", other, None, lab.now).wg_ip == IPv4Address("10.1.1.253")


@pytest.mark.parametrize(
    ("name", "ip", "words"),
    [
        ("phone2", "10.1.1.1", "in use by the node s1"),  # the static itself
        ("phone2", "10.1.1.5", "in use by the node d5"),  # a node with a session
        ("phone2", "10.1.1.77", "in use by the client phone"),
        ("phone2", "10.1.1.0", "not a host address"),
        ("phone2", "10.1.2.9", "not a host address"),
        ("d5", "10.1.1.80", "name 'd5' is in use by the node"),
        ("phone", "10.1.1.80", "name 'phone' is in use by the client"),
        ("bad name", "10.1.1.80", "letters, digits"),
    ],
)
def test_a_wg_ip_or_name_in_use_is_refused(name: str, ip: str, words: str) -> None:
    lab = mesh(("d5", 5))
    s1 = lab.boxes["s1"].node
    s1.add_client("phone", PHONE, IPv4Address("10.1.1.77"), lab.now)
    with pytest.raises(ClientRefused, match=words):
        s1.add_client(name, KeyPair.generate().public_b64, IPv4Address(ip), lab.now)
    assert len(s1.clients) == 1


def test_a_key_in_use_and_a_second_static_s_address_are_refused() -> None:
    lab = mesh(statics={"s1": 1, "s2": 2})
    s1 = lab.boxes["s1"].node
    with pytest.raises(ClientRefused, match="node"):
        s1.add_client("x", PHONE, IPv4Address("10.1.1.2"), lab.now)
    with pytest.raises(ClientRefused, match="public key is in use"):
        s1.add_client("x", lab.boxes["s2"].node.info.public_key, None, lab.now)
    with pytest.raises(ClientRefused, match="not a WireGuard key"):
        s1.add_client("x", "nope", None, lab.now)


def test_only_a_static_takes_clients() -> None:
    lab = mesh(("d5", 5))
    with pytest.raises(ClientRefused, match="not a static"):
        lab.boxes["d5"].node.add_client("phone", PHONE, None, lab.now)


# --- the mesh --------------------------------------------------------------------


def test_every_node_routes_the_client_via_its_static_and_loses_it_on_removal() -> None:
    lab = mesh(("d5", 5), ("d6", 6))
    s1, d5 = lab.boxes["s1"].node, lab.boxes["d5"].node
    phone = s1.add_client("phone", PHONE, IPv4Address("10.1.1.77"), lab.now).wg_ip
    lab.wg_applied()
    entry = d5.listings.tables[s1.info.wg_ip][phone]
    assert entry.info.client and entry.info.name == "phone"
    assert entry.wg_endpoint is None and entry.info.local_endpoints == ()
    assert via(d5, phone) == s1.info.wg_ip
    assert peer_with(d5, phone) == s1.info.public_key  # its /32 on the static's peer
    assert PHONE not in d5.desired_peers()
    peer = next(p for p in d5.statistics(lab.now).peers if p.wg_ip == phone)
    assert (peer.client, peer.path, peer.name) == (True, "via", "phone")

    s1.remove_client("phone", lab.now)
    assert PHONE not in s1.desired_peers()
    lab.wg_applied()
    assert via(d5, phone) is None and peer_with(d5, phone) is None
    assert phone not in d5.listings.tables[s1.info.wg_ip]


def test_the_static_shows_its_client_with_handshake_and_bytes() -> None:
    lab = mesh()
    s1 = lab.boxes["s1"].node
    phone = s1.add_client("phone", PHONE, IPv4Address("10.1.1.77"), lab.now).wg_ip
    reading = WgPeerReading(PHONE, ("203.0.113.9", 4500), (IPv4Network(phone),), 12.0, 300, 400)
    s1.update_wg({PHONE: reading}, lab.now)
    peer = next(p for p in s1.statistics(lab.now).peers if p.wg_ip == phone)
    assert (peer.client, peer.kind, peer.path) == (True, "client", "direct")
    assert (peer.handshake_age, peer.rx_bytes, peer.tx_bytes) == (12.0, 300, 400)
    assert peer.endpoint == ("203.0.113.9", 4500)


def test_nobody_opens_a_pair_session_with_a_client() -> None:
    lab = mesh(("d5", 5))
    s1, d5 = lab.boxes["s1"].node, lab.boxes["d5"].node
    phone = s1.add_client("phone", PHONE, IPv4Address("10.1.1.77"), lab.now).wg_ip
    lab.wg_applied()
    lab.run_until(lab.now + 5.0)
    lab.wg_applied()
    to_phone = [s for s in lab.log if s.dest[0] == str(phone)]
    assert to_phone == [] and phone not in d5.sessions


def test_a_node_claiming_a_client_s_wg_ip_is_refused_as_a_conflict() -> None:
    lab = mesh()
    s1 = lab.boxes["s1"].node
    s1.add_client("phone", PHONE, IPv4Address("10.1.1.77"), lab.now)
    lab.wg_applied()
    intruder = lab.start("x77", 77)
    lab.fire_timers()
    assert IPv4Address("10.1.1.77") not in s1.sessions
    conflicts = [e for e in s1.events() if isinstance(e, ev.Conflict)]
    assert conflicts and conflicts[0].holder_name == "phone"
    refused = [e for e in intruder.events() if isinstance(e, ev.RefusedByPeer)]
    assert refused and refused[0].holder_name == "phone"


def test_a_node_with_a_client_s_name_is_refused_here_and_by_the_other_static() -> None:
    lab = mesh(statics={"s1": 1, "s2": 2})
    s1, s2 = lab.boxes["s1"].node, lab.boxes["s2"].node
    s1.add_client("phone", PHONE, IPv4Address("10.1.1.77"), lab.now)
    lab.wg_applied()
    assert IPv4Address("10.1.1.77") in s2.listings.tables[s1.info.wg_ip]  # s1's word
    intruder = lab.start("d7", 7)
    intruder.info = replace(intruder.info, name="Phone")
    lab.run_until(lab.now + 2.0)
    assert IPv4Address("10.1.1.7") not in s1.sessions | s2.sessions
    for static in (s1, s2):
        (conflict,) = [e for e in static.events() if isinstance(e, ev.Conflict)]
        assert conflict.name_twin and conflict.holder_name == "phone"
    refused = [e for e in intruder.events() if isinstance(e, ev.RefusedByPeer)]
    assert refused and all(r.name_twin for r in refused)
    assert "our name 'phone' is in use by 10.1.1.77" in event_text.describe(refused[0])
    assert s2.names()["phone"] == (IPv4Address("10.1.1.77"),)


def test_a_client_name_is_refused_whatever_its_case_when_a_node_has_it() -> None:
    lab = mesh(("d5", 5))
    s1 = lab.boxes["s1"].node
    with pytest.raises(ClientRefused, match=r"name 'D5' is in use by the node at 10\.1\.1\.5"):
        s1.add_client("D5", PHONE, None, lab.now)


def test_with_two_statics_a_client_is_routed_through_the_one_it_was_added_on() -> None:
    lab = mesh(("d5", 5), statics={"s1": 1, "s2": 2})
    s1, s2, d5 = (lab.boxes[n].node for n in ("s1", "s2", "d5"))
    phone = s2.add_client("phone", PHONE, IPv4Address("10.1.1.77"), lab.now).wg_ip
    lab.wg_applied()
    assert via(d5, phone) == s2.info.wg_ip  # not the lower s1: s1 does not list it
    assert via(s1, phone) == s2.info.wg_ip
    with pytest.raises(ClientRefused, match="in use by the client phone"):
        s1.add_client("phone2", KeyPair.generate().public_b64, phone, lab.now)


def test_a_static_s_own_client_keeps_its_slash_32_against_another_listing() -> None:
    lab = mesh(statics={"s1": 1, "s2": 2})
    s1, s2 = lab.boxes["s1"].node, lab.boxes["s2"].node
    ip = IPv4Address("10.1.1.77")
    # Both added while the statics were apart: each keeps its own (rule 5).
    s1.add_client("p1", PHONE, ip, lab.now)
    s2.clients[ip] = Client("p2", ip, KeyPair.generate().public_b64)
    s2.add_client("p3", KeyPair.generate().public_b64, None, lab.now)  # a table change
    lab.wg_applied()
    assert peer_with(s1, ip) == PHONE
    assert via(s1, ip) is None
