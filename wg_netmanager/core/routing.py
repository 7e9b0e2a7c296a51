"""The desired WireGuard peers and kernel routes: pure functions of the tables.

Rules:

1. A node we have a ready session with is a direct WireGuard peer: its /32
   in that peer's AllowedIPs, route ``X/32 dev wg``.
2. Any other node listed by a static we reach directly (and that lists us)
   is reached *via* that static: its /32 joins the static's AllowedIPs, route
   ``X/32 via static``. Among several statics the lowest wg IP wins, with no
   local preference: both ends of a relayed pair must pick the same gateway,
   or each would drop the other's packets (WireGuard checks a packet's source
   against the AllowedIPs of the peer it came from).
3. AllowedIPs never overlap: every /32 belongs to exactly one peer. (A
   mobile node's gateway also carries the whole subnet, see mobile.py rule
   4: WireGuard picks the longest prefix, so the /32s still decide.)
4. Static peers get their configured endpoint and a keepalive (a dynamic
   node keeps the NAT mapping open; a mobile one its own, longer one); pair
   peers get a keepalive and no endpoint (WireGuard keeps the one the
   handshake used); a static node's dynamic peers get neither.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from ipaddress import IPv4Address, IPv4Network

from ..model import Route, WgPeer
from ..wire import TableEntry
from .sessions import Session, StaticTarget


def choose_gateways(
    me: IPv4Address,
    tables: Mapping[IPv4Address, Mapping[IPv4Address, TableEntry]],
    listed_by: Collection[IPv4Address],
    direct: Collection[IPv4Address],
) -> dict[IPv4Address, IPv4Address]:
    """wg IP -> the static that relays it for us (rule 2)."""
    gateways: dict[IPv4Address, IPv4Address] = {}
    for static_ip in sorted(tables):
        if static_ip not in direct or static_ip not in listed_by:
            continue
        for ip in tables[static_ip]:
            if ip not in direct and ip != me:
                gateways.setdefault(ip, static_ip)
    return gateways


def desired_peers_and_routes(
    direct: Mapping[IPv4Address, Session],
    gateways: Mapping[IPv4Address, IPv4Address],
    statics: Mapping[IPv4Address, StaticTarget],
    pairs: Collection[IPv4Address],
    keepalive: int,
    *,
    static_keepalive: int | None = None,
    subnet_via: tuple[IPv4Address, IPv4Network] | None = None,
) -> tuple[dict[str, WgPeer], set[Route]]:
    """Rules 1, 3 and 4 for the direct sessions, plus the routes of rule 2.

    ``static_keepalive``: towards static peers, if not ``keepalive``;
    ``subnet_via``: (static, subnet) when that static carries the whole subnet.
    """
    peers: dict[str, WgPeer] = {}
    routes: set[Route] = set()
    via: dict[IPv4Address, list[IPv4Address]] = {}
    for ip, gateway in gateways.items():
        via.setdefault(gateway, []).append(ip)
        routes.add(Route(ip, gateway))
    for ip, session in direct.items():
        target = statics.get(ip)
        allowed = [IPv4Network(a) for a in sorted([ip, *via.get(ip, [])])]
        if subnet_via is not None and subnet_via[0] == ip:
            allowed = sorted([subnet_via[1], *allowed])
        if ip in pairs:
            endpoint, alive = None, keepalive
        else:
            endpoint = target.wg_endpoint if target else None
            alive = (static_keepalive or keepalive) if target else 0
        peers[session.info.public_key] = WgPeer(
            public_key=session.info.public_key,
            allowed_ips=tuple(allowed),
            endpoint=endpoint,
            persistent_keepalive=alive,
        )
        routes.add(Route(ip))
    return peers, routes
