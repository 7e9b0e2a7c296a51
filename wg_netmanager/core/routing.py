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

Gateways (network.yaml ``gateways:``: networks of devices that run no
daemon, 0.0.0.0/0 for an exit node), ``SubnetRoutes``:

5. Only what the file lists is routed, and only through the nodes it names
   for it: nothing a peer says adds a route (the seed's 8.8.8.8 attack stays
   impossible).
6. A network's gateway is the first one listed for it that is alive from
   this node's view: a static we have a ready session with, a node listed
   by a static we reach, or (while no static is reached) a direct link. The
   one in use is kept while it is alive; an earlier-listed one takes over
   when it first shows up (a cold start finds them in any order), but once
   it has been seen down, only after ``gateway_return`` alive again, so a
   flapping gateway does not move the traffic back and forth.
7. A node installs nothing for a network it serves itself or lies on (a
   prefix of its own addresses covers it). 0.0.0.0/0 is used only by a node
   that opted in, and only through the exit node it named; it goes into
   AllowedIPs, the default route is the shell's policy routing.
8. A network goes onto the WireGuard peer that carries its gateway's /32
   (the gateway when direct, else the static relaying it), with a kernel
   route via that peer (rule 3 holds: one peer per network).
9. A static relays: every listed network it does not serve goes onto its
   gateway's peer (even one the static lies on), and 0.0.0.0/0 onto the
   first exit node alive (or its own choice): its *relay routes*, for the
   traffic it forwards.

The functions define the rules; ``Routing`` keeps rules 1 to 4 (and rule
8's networks on the AllowedIPs) up to date with what changed, for a cost
that follows the change, and a test holds it to the functions.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network

import msgspec

from ..model import DEFAULT_ROUTE, Endpoint, Gateway, Route, WgPeer
from ..wire import TableEntry
from .sessions import Session, StaticTarget
from .status import SubnetStatus

# Short gaps in a row that show a gateway pings us every gateway_ping.
FAST_RUN = 3


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
    subnets: Mapping[IPv4Address, Sequence[IPv4Network]] | None = None,
    *,
    static_keepalive: int | None = None,
    subnet_via: tuple[IPv4Address, IPv4Network] | None = None,
) -> tuple[dict[str, WgPeer], set[Route]]:
    """Rules 1, 3 and 4 for the direct sessions, plus the routes of rule 2.

    ``subnets`` (rule 8) adds networks to the AllowedIPs of direct peers;
    ``static_keepalive``: towards static peers, if not ``keepalive``;
    ``subnet_via``: (static, subnet) when that static carries the whole subnet.
    """
    peers: dict[str, WgPeer] = {}
    routes: set[Route] = set()
    via: dict[IPv4Address, list[IPv4Network]] = {}
    for ip, gateway in gateways.items():
        via.setdefault(gateway, []).append(IPv4Network(ip))
        routes.add(Route(ip, gateway))
    for ip, session in direct.items():
        extra = _extra_networks(ip, subnets, subnet_via)
        allowed = sorted([IPv4Network(ip), *via.get(ip, []), *extra])
        endpoint, alive = _endpoint_and_keepalive(ip, statics, pairs, keepalive, static_keepalive)
        peers[session.info.public_key] = WgPeer(
            public_key=session.info.public_key,
            allowed_ips=tuple(allowed),
            endpoint=endpoint,
            persistent_keepalive=alive,
        )
        routes.add(Route(ip))
    return peers, routes


def _endpoint_and_keepalive(
    ip: IPv4Address,
    statics: Mapping[IPv4Address, StaticTarget],
    pairs: Collection[IPv4Address],
    keepalive: int,
    static_keepalive: int | None,
) -> tuple[Endpoint | None, int]:
    """Rule 4: a static peer gets its configured endpoint and our keepalive, a
    pair peer a keepalive and no endpoint, a static's dynamic peer neither."""
    if ip in pairs:
        return None, keepalive
    target = statics.get(ip)
    if target is None:
        return None, 0
    return target.wg_endpoint, static_keepalive or keepalive


def _extra_networks(
    ip: IPv4Address,
    subnets: Mapping[IPv4Address, Sequence[IPv4Network]] | None,
    subnet_via: tuple[IPv4Address, IPv4Network] | None,
) -> tuple[IPv4Network, ...]:
    """What ``ip``'s AllowedIPs carry besides /32s: gateways' networks (rule
    8), and the whole subnet on a mobile's static (mobile.py rule 4)."""
    extra = tuple(subnets.get(ip, ())) if subnets else ()
    if subnet_via is not None and subnet_via[0] == ip:
        extra = (subnet_via[1], *extra)
    return extra


def alive_nodes(
    direct: Collection[IPv4Address],
    relayed: Collection[IPv4Address],
    statics: Collection[IPv4Address],
    tables: Mapping[IPv4Address, Mapping[IPv4Address, TableEntry]],
    is_static: bool,
    among: Collection[IPv4Address] | None = None,
) -> set[IPv4Address]:
    """The nodes alive from our view (rule 6): ``direct`` (ready sessions) and
    ``relayed`` (listed by a static we reach, see ``choose_gateways``).

    A dynamic node that reaches a static counts a direct link only while a
    static lists its peer: the statics see every node's liveness within
    ``gateway_dead_after``, so every node leaves a dead gateway at once,
    whatever its own links still believe.

    ``among``: only those nodes are asked about (the gateways: O(gateways),
    not O(nodes), per change).
    """
    reached = [ip for ip in statics if ip in direct]
    if among is not None:
        tables_reached = [tables.get(static, {}) for static in reached]
        return {
            ip
            for ip in among
            if ip in relayed
            or (
                ip in direct
                and (
                    is_static
                    or not reached
                    or ip in statics
                    or any(ip in table for table in tables_reached)
                )
            )
        }
    if is_static or not reached:
        return set(direct) | set(relayed)
    listed = {ip for static in reached for ip in tables.get(static, {})}
    return {ip for ip in direct if ip in statics or ip in listed} | set(relayed)


class Move(msgspec.Struct, frozen=True):
    """The gateway this node uses for ``route`` changed (rule 6)."""

    route: IPv4Network
    gateway: IPv4Address | None
    previous: IPv4Address | None
    # "up" (first one), "failover" (previous gone), "preferred" (an earlier
    # listed one showed up), "return" (an earlier listed one is back for
    # good), "down" (none alive), "local", "own" (nothing to route)
    reason: str


class SubnetRoutes:
    """Which gateway serves each network of ``gateways:`` for this node
    (rules 5 to 9), with the hysteresis of rule 6 as its only state.

    ``update`` takes the nodes alive now and returns the moves;
    ``placed`` is network -> gateway for AllowedIPs, ``main_routes`` the
    networks with a kernel route of our own, ``relay_routes`` (a static)
    those it forwards into the mesh. ``deadline`` is when an earlier-listed
    gateway's ``gateway_return`` is up (the node recomputes then).
    """

    def __init__(
        self,
        me: IPv4Address,
        gateways: Sequence[Gateway],
        *,
        exit_node: IPv4Address | None,
        is_static: bool,
        hold: float,
        fast_ping: float,
    ) -> None:
        self.me = me
        self.hold = hold
        self.fast_ping = fast_ping
        self._is_static = is_static
        self._exit_node = exit_node
        order: dict[IPv4Network, list[IPv4Address]] = {}
        for gateway in gateways:
            for route in gateway.routes:
                order.setdefault(route, []).append(gateway.wg_ip)
        self._candidates = {route: tuple(ips) for route, ips in order.items()}
        self.gateway_ips = frozenset(g.wg_ip for g in gateways)
        self.is_gateway = me in self.gateway_ips
        # Gateways whose death this node must notice within seconds: a static
        # watches them all; any node the ones it may route through.
        self.watched = frozenset(
            ip
            for route in self._candidates
            for ip in (self._candidates[route] if is_static else self._usable(route))
            if ip != me
        )
        self._local: tuple[IPv4Network, ...] = ()
        self._current: dict[IPv4Network, IPv4Address] = {}
        self._since: dict[IPv4Address, float] = {}  # gateway -> alive since
        self._seen_down: set[IPv4Address] = set()  # gateways that were alive and went
        # gateway -> (its last ping this session, fast?, short gaps in a row);
        # fast None: cadence not known yet
        self._pinged: dict[IPv4Address, tuple[float, bool | None, int]] = {}
        self._deadline: float | None = None

    # --- inputs -------------------------------------------------------------------

    def set_local_networks(self, networks: Iterable[IPv4Network]) -> bool:
        """This machine's own prefixes (connected routes); whether they changed."""
        local = tuple(sorted(set(networks)))
        if local == self._local:
            return False
        self._local = local
        return True

    def update(self, alive: Collection[IPv4Address], now: float) -> list[Move]:
        """Choose again with the nodes ``alive`` now (rule 6)."""
        up = {ip for ip in alive if ip in self.gateway_ips}
        for ip in up - self._since.keys():
            self._since[ip] = now
        for ip in self._since.keys() - up:
            del self._since[ip]
            self._seen_down.add(ip)
        moves: list[Move] = []
        deadline: float | None = None
        for route in self._candidates:
            role, candidates = self._role(route)
            previous = self._current.get(route)
            chosen, due = self._choose(candidates, previous, now)
            if due is not None:
                deadline = due if deadline is None else min(deadline, due)
            if chosen == previous:
                continue
            if chosen is None:
                del self._current[route]
                reason = role if role in ("local", "own") else "down"
            else:
                self._current[route] = chosen
                if previous is None:
                    reason = "up"
                elif previous not in self._since:
                    reason = "failover"
                else:
                    reason = "return" if chosen in self._seen_down else "preferred"
            moves.append(Move(route, chosen, previous, reason))
        self._deadline = deadline
        return moves

    def heard_ping(self, wg_ip: IPv4Address, now: float) -> None:
        """A gateway pinged us: the gap since its ping before tells whether it
        pings fast (a file that differs on who is a gateway must not end its
        session every few seconds)."""
        if wg_ip not in self.gateway_ips:
            return
        last = self._pinged.get(wg_ip)
        if last is None:
            self._pinged[wg_ip] = (now, None, 0)
            return
        _, fast, short_run = last
        if now - last[0] > 2.5 * self.fast_ping:
            self._pinged[wg_ip] = (now, False, 0)
            return
        # A slow pinger that lost a pong pings again after pong_timeout: one or
        # two short gaps are that, not a cadence, and calling it fast would drop
        # it at its next (slow) ping. A run of them is one.
        short_run += 1
        self._pinged[wg_ip] = (now, True if short_run >= FAST_RUN else fast, short_run)

    def new_session(self, wg_ip: IPv4Address) -> None:
        """A session with ``wg_ip`` begins: its pings tell nothing yet (a
        gateway that comes back after a while must not look slow)."""
        self._pinged.pop(wg_ip, None)

    # --- outputs ------------------------------------------------------------------

    def deadline(self) -> float | None:
        return self._deadline

    def placed(self) -> dict[IPv4Network, IPv4Address]:
        """network -> its gateway, for every network on a peer's AllowedIPs (rules 7, 9)."""
        return dict(self._current)

    def main_routes(self) -> set[IPv4Network]:
        """The networks this node routes itself (rule 7: not its own, not local, not 0/0)."""
        return {r for r in self._current if self._role(r)[0] == "routed"}

    def relay_routes(self) -> frozenset[IPv4Network]:
        """A static's networks forwarded into the mesh (rule 9); empty elsewhere."""
        return frozenset(self._current) if self._is_static else frozenset()

    def pings_fast(self, peer: IPv4Address) -> bool:
        """We ping ``peer`` every ``gateway_ping``: we are a gateway, or watch it."""
        return self.is_gateway or peer in self.watched

    def probes(self, peer: IPv4Address) -> bool:
        """Do we, not its pinger, ping ``peer`` every ``gateway_ping``? While a
        gateway we watch has not yet shown how often it pings us (neither a
        long gap nor FAST_RUN short ones in a row this session): its answers
        are then what we count on, so a gateway that dies right after its
        session began is noticed too."""
        heard = self._pinged.get(peer)
        return peer in self.watched and (heard is None or heard[1] is None)

    def dies_fast(self, peer: IPv4Address, pinger: bool) -> bool:
        """Is a session with ``peer`` dropped after ``gateway_dead_after``?
        When we ping it fast; else when it is a gateway that pings us fast,
        or one we probe (see ``probes``)."""
        if pinger:
            return self.pings_fast(peer)
        heard = self._pinged.get(peer)
        return self.probes(peer) or (heard is not None and heard[1] is True)

    def status(self, names: Mapping[IPv4Address, str]) -> tuple[SubnetStatus, ...]:
        out = []
        for route, candidates in self._candidates.items():
            role, _ = self._role(route)
            out.append(
                SubnetStatus(
                    route=route,
                    gateways=candidates,
                    names=tuple(names.get(ip, "") for ip in candidates),
                    alive=tuple(ip for ip in candidates if ip in self._since or ip == self.me),
                    serving=self._current.get(route),
                    role=role,
                )
            )
        return tuple(out)

    # --- rules ------------------------------------------------------------------------

    def _usable(self, route: IPv4Network) -> tuple[IPv4Address, ...]:
        """The gateways this node may ever route ``route`` through (rules 5, 7)."""
        candidates = self._candidates[route]
        if self.me in candidates:
            return ()
        if route == DEFAULT_ROUTE and not self._is_static:
            return (self._exit_node,) if self._exit_node in candidates else ()
        return candidates

    def _role(self, route: IPv4Network) -> tuple[str, tuple[IPv4Address, ...]]:
        """What ``route`` is to us, and the gateways to choose from (rules 7, 9):
        own, routed, local, exit (opted in), relay (a static's 0/0 for others), unused."""
        candidates = self._candidates[route]
        if self.me in candidates:
            return "own", ()
        if route == DEFAULT_ROUTE:
            if self._exit_node is not None:
                return "exit", (self._exit_node,)
            return ("relay", candidates) if self._is_static else ("unused", ())
        if any(route.subnet_of(network) for network in self._local):
            return "local", candidates if self._is_static else ()
        return "routed", candidates

    def _choose(
        self, candidates: Sequence[IPv4Address], current: IPv4Address | None, now: float
    ) -> tuple[IPv4Address | None, float | None]:
        """Rule 6: the gateway to use, and when to look again (a better one
        not alive long enough yet)."""
        alive = [ip for ip in candidates if ip in self._since]
        if not alive:
            return None, None
        # Proven: never seen down, or alive for gateway_return (the deadline's sum).
        ready = [
            ip for ip in alive if ip not in self._seen_down or self._since[ip] + self.hold <= now
        ]
        # The one in use, else the first one alive long enough, else the first one alive.
        chosen = current if current in alive else ready[0] if ready else alive[0]
        for ip in alive[: alive.index(chosen)]:
            if ip in ready:  # an earlier-listed one is back for good: it serves
                chosen = ip
                break
        earlier = alive[: alive.index(chosen)]  # back, but not for long enough yet
        return chosen, min((self._since[ip] + self.hold for ip in earlier), default=None)


def subnet_placement(
    placed: Mapping[IPv4Network, IPv4Address],
    main: Collection[IPv4Network],
    direct: Collection[IPv4Address],
    gateways: Mapping[IPv4Address, IPv4Address],
) -> tuple[dict[IPv4Address, list[IPv4Network]], set[Route]]:
    """Rule 8: each placed network onto the peer carrying its gateway's /32
    (peer -> networks), and the kernel routes of the ``main`` ones."""
    allowed: dict[IPv4Address, list[IPv4Network]] = {}
    routes: set[Route] = set()
    for route, gateway in placed.items():
        carrier = gateway if gateway in direct else gateways.get(gateway)
        if carrier is None:
            continue  # alive means one of the two; a table change in between
        allowed.setdefault(carrier, []).append(route)
        if route in main:
            routes.add(Route.to(route, carrier))
    return allowed, routes


class Routing:
    """Rules 1-4 (with rule 8's networks and a mobile's subnet and keepalive
    in ``peers``), kept up to date with what changed instead of recomputed.

    The functions above are the rules' definition; this gives the same
    answer (a test compares them) for a cost that follows the change: a
    table change of a few entries costs O(changed x statics), not O(nodes).
    Only a change of which statics can relay (rule 2's candidates) walks
    every listed node again.
    """

    def __init__(self, me: IPv4Address) -> None:
        self.me = me
        self.gateways: dict[IPv4Address, IPv4Address] = {}
        # The same, per gateway, and a counter of their changes (the mesh
        # map's own record asks which gateway relays most: O(gateways)).
        self.relayed_by: dict[IPv4Address, set[IPv4Address]] = {}
        self.gateways_version = 0
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
        *,
        own: Collection[IPv4Address] = (),
    ) -> tuple[list[tuple[IPv4Address, IPv4Address]], list[IPv4Address]]:
        """New gateways and routes after a change: ``direct`` sessions now,
        ``changed`` the wg IPs whose presence in some table (or in ``own``, the
        addresses we serve ourselves and never route through a gateway) may
        have changed.

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
        # sorted: a set's order follows str hashes (per process), and the
        # gateways' order is that of our hellos to the nodes behind them.
        for ip in sorted(dirty):
            gateway = None
            if ip not in keys and ip != self.me and ip not in own:
                gateway = next((s for s in candidates if ip in tables[s]), None)
            old = self.gateways.get(ip)
            if gateway == old:
                continue
            self.gateways_version += 1
            if old is not None:
                del self.gateways[ip]
                relayed = self.relayed_by[old]
                relayed.discard(ip)
                if not relayed:
                    del self.relayed_by[old]
                self._route(Route(ip, old), False)
                self._disallow(old, ip)
            if gateway is not None:
                self.gateways[ip] = gateway
                self.relayed_by.setdefault(gateway, set()).add(ip)
                self._route(Route(ip, gateway), True)
                self._allow(gateway, ip)
                via_changed.append((ip, gateway))
            elif ip not in keys and ip not in own:
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
        subnets: Mapping[IPv4Address, Sequence[IPv4Network]] | None = None,
        *,
        static_keepalive: int | None = None,
        subnet_via: tuple[IPv4Address, IPv4Network] | None = None,
    ) -> dict[str, WgPeer]:
        """Rules 1, 3 and 4 for the direct sessions (after ``update``); a
        peer whose inputs did not change is the same object as before.
        ``subnets``, ``static_keepalive`` and ``subnet_via`` as for
        ``desired_peers_and_routes``."""
        peers: dict[str, WgPeer] = {}
        cache: dict[IPv4Address, tuple[tuple[object, ...], WgPeer]] = {}
        for ip, session in direct.items():
            endpoint, alive = _endpoint_and_keepalive(
                ip, statics, pairs, keepalive, static_keepalive
            )
            extra = _extra_networks(ip, subnets, subnet_via)
            key = session.info.public_key
            inputs = (key, self._allowed_changes.get(ip, 0), endpoint, alive, extra)
            cached = self._peers.get(ip)
            if cached is None or cached[0] != inputs:
                allowed = self._allowed.get(ip, [])
                peer = WgPeer(
                    public_key=key,
                    # (the /32s are sorted already: sorting a few networks in is O(n))
                    allowed_ips=tuple(sorted([*allowed, *extra]) if extra else allowed),
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
