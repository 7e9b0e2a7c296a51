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
3. AllowedIPs never overlap: every /32 belongs to exactly one peer.
4. Static peers get their configured endpoint and a keepalive (a dynamic
   node keeps the NAT mapping open); pair peers get a keepalive and no
   endpoint (WireGuard keeps the one the handshake used); a static node's
   dynamic peers get neither.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Mapping
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
) -> tuple[dict[str, WgPeer], set[Route]]:
    """Rules 1, 3 and 4 for the direct sessions, plus the routes of rule 2."""
    peers: dict[str, WgPeer] = {}
    routes: set[Route] = set()
    via: dict[IPv4Address, list[IPv4Address]] = {}
    for ip, gateway in gateways.items():
        via.setdefault(gateway, []).append(ip)
        routes.add(Route(ip, gateway))
    for ip, session in direct.items():
        target = statics.get(ip)
        allowed = sorted([ip, *via.get(ip, [])])
        if ip in pairs:
            endpoint, alive = None, keepalive
        else:
            endpoint = target.wg_endpoint if target else None
            alive = keepalive if target else 0
        peers[session.info.public_key] = WgPeer(
            public_key=session.info.public_key,
            allowed_ips=tuple(IPv4Network(a) for a in allowed),
            endpoint=endpoint,
            persistent_keepalive=alive,
        )
        routes.add(Route(ip))
    return peers, routes


class Routing:
    """Rules 1-4, kept up to date with what changed instead of recomputed.

    The functions above are the rules' definition; this gives the same
    answer (a test compares them) for a cost that follows the change: a
    table change of a few entries costs O(changed x statics), not O(nodes).
    Only a change of which statics can relay (rule 2's candidates) walks
    every listed node again.
    """

    def __init__(self, me: IPv4Address) -> None:
        self.me = me
        self.gateways: dict[IPv4Address, IPv4Address] = {}
        self.routes: set[Route] = set()
        self.dests: dict[IPv4Address, Route] = {}  # the routes by destination
        # Per direct peer: its AllowedIPs, sorted (by address as an integer,
        # alongside), and a counter of their changes.
        self._allowed: dict[IPv4Address, list[IPv4Network]] = {}
        self._allowed_keys: dict[IPv4Address, list[int]] = {}
        self._allowed_changes: dict[IPv4Address, int] = {}
        self._direct: frozenset[IPv4Address] = frozenset()
        self._candidates: tuple[IPv4Address, ...] = ()
        self._peers: dict[IPv4Address, tuple[tuple[object, ...], WgPeer]] = {}

    def update(
        self,
        direct: Mapping[IPv4Address, Session],
        tables: Mapping[IPv4Address, Mapping[IPv4Address, TableEntry]],
        listed_by: Collection[IPv4Address],
        changed: Collection[IPv4Address],
    ) -> tuple[list[tuple[IPv4Address, IPv4Address]], list[IPv4Address]]:
        """New gateways and routes after a change: ``direct`` sessions now,
        ``changed`` the wg IPs whose presence in some table may have changed.

        Returns (wg IP, its new gateway) for each node reached through a
        different gateway than before, and the nodes no longer reached at all.
        """
        keys = frozenset(direct)
        candidates = tuple(s for s in sorted(tables) if s in keys and s in listed_by)
        moved_direct = keys ^ self._direct
        self._direct = keys
        if candidates != self._candidates:
            self._candidates = candidates
            dirty: Iterable[IPv4Address] = set(self.gateways).union(
                *(tables[s] for s in candidates)
            )
        else:
            dirty = moved_direct.union(changed)
        via_changed, gone = [], []
        for ip in dirty:
            gateway = None
            if ip not in keys and ip != self.me:
                gateway = next((s for s in candidates if ip in tables[s]), None)
            old = self.gateways.get(ip)
            if gateway == old:
                continue
            if old is not None:
                del self.gateways[ip]
                self._route(Route(ip, old), False)
                self._disallow(old, ip)
            if gateway is not None:
                self.gateways[ip] = gateway
                self._route(Route(ip, gateway), True)
                self._allow(gateway, ip)
                via_changed.append((ip, gateway))
            elif ip not in keys:
                gone.append(ip)
        for ip in moved_direct:
            self._route(Route(ip), ip in keys)
            if ip in keys:
                self._allow(ip, ip)
            else:
                self._disallow(ip, ip)
        return via_changed, gone

    def _route(self, route: Route, present: bool) -> None:
        # A destination may have two routes for a moment (direct, and via a
        # gateway) while an update moves it from one to the other.
        if present:
            self.routes.add(route)
            self.dests[route.dest] = route
        else:
            self.routes.discard(route)
            if self.dests.get(route.dest) == route:
                del self.dests[route.dest]

    def peers(
        self,
        direct: Mapping[IPv4Address, Session],
        statics: Mapping[IPv4Address, StaticTarget],
        pairs: Collection[IPv4Address],
        keepalive: int,
    ) -> dict[str, WgPeer]:
        """Rules 1, 3 and 4 for the direct sessions (after ``update``); a
        peer whose inputs did not change is the same object as before."""
        peers: dict[str, WgPeer] = {}
        cache: dict[IPv4Address, tuple[tuple[object, ...], WgPeer]] = {}
        for ip, session in direct.items():
            target = statics.get(ip)
            if ip in pairs:
                endpoint, alive = None, keepalive
            else:
                endpoint = target.wg_endpoint if target else None
                alive = keepalive if target else 0
            key = session.info.public_key
            inputs = (key, self._allowed_changes.get(ip, 0), endpoint, alive)
            cached = self._peers.get(ip)
            if cached is None or cached[0] != inputs:
                peer = WgPeer(
                    public_key=key,
                    allowed_ips=tuple(self._allowed.get(ip, ())),
                    endpoint=endpoint,
                    persistent_keepalive=alive,
                )
                cached = (inputs, peer)
            cache[ip] = cached
            peers[key] = cached[1]
        self._peers = cache
        return peers

    def _allow(self, peer: IPv4Address, ip: IPv4Address) -> None:
        number = int(ip)
        keys = self._allowed_keys.setdefault(peer, [])
        at = bisect.bisect_left(keys, number)
        keys.insert(at, number)
        # (int, 32): three times faster than IPv4Network(ip).
        self._allowed.setdefault(peer, []).insert(at, IPv4Network((number, 32)))
        self._allowed_changes[peer] = self._allowed_changes.get(peer, 0) + 1

    def _disallow(self, peer: IPv4Address, ip: IPv4Address) -> None:
        number = int(ip)
        keys = self._allowed_keys.get(peer, [])
        at = bisect.bisect_left(keys, number)
        if at < len(keys) and keys[at] == number:
            del keys[at]
            del self._allowed[peer][at]
        if keys:
            self._allowed_changes[peer] = self._allowed_changes.get(peer, 0) + 1
        else:  # no longer a peer: peers() keeps nothing of it either
            self._allowed.pop(peer, None)
            self._allowed_keys.pop(peer, None)
            self._allowed_changes.pop(peer, None)
