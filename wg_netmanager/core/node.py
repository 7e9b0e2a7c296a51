"""The protocol of one node as a pure state machine: its face and its sessions.

No sockets, no processes, no clock reads. In: datagrams
(``receive_datagram``), timer ticks (``handle_timer``), ``wg show`` readings
(``update_wg``), DNS answers (``set_static_address``), local addresses, each
with ``now`` (monotonic seconds). Out: datagrams (``datagrams_to_send``), the
next deadline (``get_timer``), the desired WireGuard peers and kernel routes,
typed events (``events``) and a ``statistics()`` snapshot.

Node owns its parts (each module states its rules; the story is in
docs/architecture.md):

- ``handshake``: first contact and identity (challenges, restarts, conflicts)
- ``tables``: the table a static publishes, the tables a node holds
- ``routing``: desired peers and routes, pure functions of the tables
  (``Routing`` there keeps them up to date per change); ``SubnetRoutes``
  there chooses the gateway of each network behind one
- ``deadlines``: each session's next deadline, filed when it changes
- ``pairs``: direct links between dynamic nodes (sees the node through
  ``PairHost``, implemented here by ``_Parts``)
- ``mesh_map``: link reports to the statics, their merged map, watching it
  (through ``MeshHost``, also ``_Parts``)
- ``mobile``: a mobile node's one static link and its liveness by
  WireGuard's counters (rules there; the node applies them)
- ``clients``: a static's plain WireGuard clients (phones), listed in its
  table as reachable through it (rules there; the node applies them)
- ``names``: name -> wg IPs of the nodes and clients known (``names()``,
  for the shell's DNS server)

What stays here: the face (every call the shell makes), dispatch of
authenticated messages, liveness (pings, ``dead_after``), static targets and
DNS requests, sessions coming and going, and the adapter its parts see it
through. That is about 730 lines: the face and its docstrings are half of
it, and splitting the rest would put each rule's trigger and its effect in
two files.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from random import Random

from msgspec.structs import replace

from .. import wire
from ..keys import to_b64
from ..model import Endpoint, Gateway, Route, WgPeer, WgPeerReading
from ..noise import NoiseError, decrypt, encrypt, public_key
from ..wire import Drop, Message, NodeInfo, Ping, Pong, Table, TableEntry
from . import events as ev
from .clients import (
    Client,
    ClientRefused,
    choose_address,
    client_info,
    table_entries,
    wg_peer,
)
from .deadlines import Deadlines
from .events import DropReason
from .handshake import Handshake
from .limits import MAX_SOURCES, TokenBuckets
from .mesh_map import MeshMap
from .mobile import TABLE_REQUEST_EVERY, GatewayWatch, quiet_limit, wg_signs
from .names import name_table
from .pairs import Pairs
from .routing import (
    Routing,
    SubnetRoutes,
    alive_nodes,
    subnet_placement,
)
from .sessions import TIMED_FIELDS, Keys, Session, StaticTarget
from .status import NodeStatus, snapshot
from .tables import Listings, OwnTable
from .timers import Timers

# Datagrams that fail to open (junk, wrong key), per source endpoint: past
# this burst and rate the source is muted, i.e. dropped before decryption.
JUNK_BURST = 64.0
JUNK_RATE = 32.0  # per second
MAX_OLD_VERSION_SOURCES = 64
FAST_POLL_AFTER_CHANGE = 3.0  # seconds of fast `wg show` polling after a table change
FIRST_POLL_MAX_PEERS = 64  # Timers.wg_poll_first: only in a mesh this small
# Relays a static passes on for one sender (they are rare: a link broke).
RELAY_BURST = 8.0
RELAY_RATE = 1.0  # per second
# Whole tables a session may ask for (a lost change); info changes it may
# announce (each one is a table change the static pushes to everyone).
TABLE_REQUEST_BURST = 2.0
TABLE_REQUEST_RATE = 0.5
INFO_BURST = 4.0
INFO_RATE = 0.2
# STALE answers per source IP (each smaller than what it answers), and
# handshakes a STALE may start per peer.
STALE_BURST = 8.0
STALE_RATE = 4.0
MAX_SESSIONS = 4096
MAX_SESSIONS_PER_SOURCE = 64  # one NAT hides many nodes, but not thousands
OLD_VERSION_REPORT_EVERY = 600.0  # seconds per source address


class Node:
    def __init__(
        self,
        *,
        info: NodeInfo,
        private_key: bytes,
        shared_key: bytes,
        subnet: IPv4Network,
        statics: list[StaticTarget],
        timers: Timers,
        now: float,
        rng: Random | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        lazy: bool = False,
        gateways: Sequence[Gateway] = (),
        exit_node: IPv4Address | None = None,
        boot_number: int = 0,
    ) -> None:
        """``boot_number``: how many runs of ``private_key`` came before this
        one (0 for a key made now; see wire.Hello)."""
        if info.public_key != to_b64(public_key(private_key)):
            raise ValueError("info.public_key is not the key of private_key")  # our bug
        self.info = info
        self.subnet = subnet
        self.timers = timers
        self.boot = random_bytes(wire.BOOT_SIZE)
        if not 0 <= boot_number <= wire.MAX_BOOT_NUMBER:
            raise ValueError(f"boot number out of range: {boot_number}")  # our bug
        self.boot_number = boot_number
        self._key = wire.derive_admin_key(shared_key)
        self._random_bytes = random_bytes
        self._rng = rng or Random()
        self.statics: dict[IPv4Address, StaticTarget] = {
            s.wg_ip: s for s in statics if s.wg_ip != info.wg_ip
        }
        self.is_static = len(self.statics) < len(statics)
        self.mobile = info.mobile  # mobile.py: one static, no pings, lazy pairs
        if self.mobile and self.is_static:
            raise ValueError("a static node cannot be mobile")  # our bug: config refuses it
        for target in self.statics.values():
            target.lost(now, timers)
        self.sessions: dict[IPv4Address, Session] = {}
        self._deadlines: Deadlines[IPv4Address] = Deadlines()  # per session (see _refile)
        self.handshake = Handshake(
            _Parts(self), timers, private_key=private_key, psk=wire.derive_psk(shared_key)
        )
        self._by_index: dict[int, IPv4Address] = {}  # our key indices -> session
        self._table_requests = TokenBuckets(TABLE_REQUEST_BURST, TABLE_REQUEST_RATE, MAX_SOURCES)
        self._infos = TokenBuckets(INFO_BURST, INFO_RATE, MAX_SOURCES)  # by wg IP
        self._stale_sent = TokenBuckets(STALE_BURST, STALE_RATE, MAX_SOURCES)  # by source IP
        self._stale_heard = TokenBuckets(1.0, 1.0, MAX_SOURCES)  # by wg IP
        self._old_versions: dict[str, float] = {}  # source IP -> when reported
        self._junk = TokenBuckets(JUNK_BURST, JUNK_RATE, MAX_SOURCES)  # by endpoint
        self._relays = TokenBuckets(RELAY_BURST, RELAY_RATE, MAX_SOURCES)  # by sender
        self._sources: frozenset[Endpoint] | None = None  # see _known_sources
        self._outbox: list[tuple[bytes, Endpoint]] = []
        self.resolve_requests: set[IPv4Address] = set()
        self._events: list[ev.Event] = []
        self.drops: dict[DropReason, int] = {}
        self.table = OwnTable()  # ours, if we are a static node
        self.listings = Listings()  # the static nodes' tables
        self._routing = Routing(info.wg_ip)  # gateways, routes, peers (routing.py)
        self._gateways = self._routing.gateways  # wg IP -> the static that relays it
        self._fast_poll_until = 0.0
        self._first_poll_until = -math.inf  # see Timers.wg_poll_first
        self._watch_until = 0.0  # measure latency to every peer until then
        self.pairs = Pairs(_Parts(self), timers, lazy=lazy or self.mobile)
        self.mesh = MeshMap(_Parts(self))
        self._gateway_watch = GatewayWatch()  # a mobile's static link (mobile.py rule 3)
        self._mobiles: set[IPv4Address] = set()  # sessions with mobile nodes (rule 5)
        # A mobile's last whole-table request: when, and the table version it had then.
        self._table_asked: tuple[float, int | None] = (-TABLE_REQUEST_EVERY, None)
        self._routable: set[IPv4Address] = set()  # wg IPs whose kernel route is applied
        self._wg_waits: bool | None = None  # see _wants_fast_wg_poll (None: ask again)
        self.quiet_from = now  # our desired WireGuard peers and routes unchanged since
        self._table_stale = True  # a session changed what our table would say
        self._wg: dict[str, WgPeerReading] = {}
        # A static's: keys our WireGuard showed that we no longer wanted (being
        # removed), untrusted until the next reading says whether it has them.
        self._leaving: set[str] = set()
        self.visible_endpoint: Endpoint | None = None
        self.state_version = 0  # bumped whenever desired peers/routes may have changed
        self._desired: tuple[dict[str, WgPeer], set[Route]] = ({}, set())
        self.subnets = SubnetRoutes(
            info.wg_ip,
            gateways,
            exit_node=exit_node,
            is_static=self.is_static,
            hold=timers.gateway_return,
            fast_ping=timers.gateway_ping,
        )
        self._subnet_routes: set[Route] = set()
        # The configured gateways' names as last known: one that is gone is
        # named in the failover's event though its session and entry are gone.
        self._gateway_refs: dict[IPv4Address, ev.PeerRef] = {}
        self._relay: frozenset[IPv4Network] = frozenset()
        self.clients: dict[IPv4Address, Client] = {}  # a static's (core/clients.py)
        self._clients_changed: set[IPv4Address] = set()  # since the last _recompute
        self._desired_dests: set[IPv4Address] = set()  # of those routes
        self._recompute(now)

    @property
    def table_version(self) -> int:
        return self.table.version

    # --- inputs -----------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Endpoint, now: float) -> bool:
        """One datagram from ``addr``. Returns False if it was dropped unopened
        (junk, or its source is muted): nothing changed, nothing to send."""
        if self._junk.empty(addr, now) and addr not in self._known_sources():
            # Flooding us with junk: not worth decrypting. Never a known peer's
            # address: a spoofed flood from it must not silence the peer.
            self._drop(DropReason.MUTED_SOURCE)
            return False
        try:
            frame = wire.open_frame(self._key, data)
        except Drop as drop:
            self._drop(drop.reason)
            self._junk.allow(addr, now)
            if drop.reason is DropReason.OLD_VERSION:
                self._old_version(addr, now)
            return False
        self._on_frame(frame, addr, now)
        return True

    def handle_timer(self, now: float) -> None:
        # Only sessions with a deadline due are looked at (core/deadlines.py);
        # the others' conditions below are all false.
        due = self._deadlines.due(now)
        self.handshake.handle_timer(now, [self.sessions[ip] for ip in due if ip in self.sessions])
        subnets_due = self.subnets.deadline()
        if subnets_due is not None and now >= subnets_due:
            self._recompute(now)  # a preferred gateway has been back long enough
        for wg_ip in due:
            session = self.sessions.get(wg_ip)
            if session is None or self._is_pair(wg_ip):
                continue  # a pair is alive while a static lists it (see Pairs.prune)
            if now >= session.last_heard + self._quiet_limit(session):  # as in the deadline
                self._emit(ev.PeerSilent(self._ref(wg_ip)))
                self._drop_session(wg_ip, now)
        if self.mobile:
            self._watch_gateway(now)
        for target in self._seeking():
            if now >= target.next_resolve_request:
                target.next_resolve_request = now + self.timers.hello_slow_after
                self._emit(ev.ResolveRequested(target.host))
                self.resolve_requests.add(target.wg_ip)
            endpoint = target.admin_endpoint
            if now >= target.next_hello and endpoint is not None:
                self.handshake.initiate(target.wg_ip, endpoint, now)
                target.hello_sent(now, self.timers)
        for wg_ip in due:
            session = self.sessions.get(wg_ip)
            if session is not None and self._pings(session) and now >= session.next_ping:
                self._ping(session, now)
        if self.table.push_due(now):
            self._push_table(now)
        if not self.is_static:
            self.pairs.handle_timer(now)
        self.mesh.handle_timer(now)
        self.handshake.expire(now)

    def update_wg(self, readings: Mapping[str, WgPeerReading], now: float) -> None:
        """A fresh reading of ``wg show``: endpoints (NAT outsides), handshakes, bytes."""
        old, self._wg = self._wg, dict(readings)
        self._wg_waits = None
        if self.is_static:
            leaving = {key for key in self._wg if key not in self._desired[0]}
            if leaving != self._leaving:
                self._leaving, self._table_stale = leaving, True
        for wg_ip in self._mobiles:  # mobile.py rule 5: they do not ping
            session = self.sessions[wg_ip]
            wg_signs(session, self._wg.get(session.info.public_key), now)
        gateway = self._gateway()
        if gateway is not None:  # we are mobile: rules 2 and 3
            reading = self._wg.get(gateway.info.public_key)
            wg_signs(gateway, reading, now)
            if reading is not None and self._gateway_watch.on_reading(reading, now):
                self._gateway_watch.answer_seq = gateway.ping_seq + 1
        # A static's table says which keys WireGuard has and their endpoints:
        # walk it only if those changed (or a session did, see _on_session).
        if self._table_stale or _endpoints_differ(old, self._wg):
            self._mark_table_dirty(now)
        if not self.is_static and self._first_handshakes(now):
            self._recompute(now)
        self.pairs.on_wg(now)

    def _first_handshakes(self, now: float) -> bool:
        """A static's peer with no first handshake ``first_handshake_resend``
        after it appeared in our WireGuard is taken out and, once a reading
        shows it gone, set again: WireGuard starts a new handshake then, where
        after one lost (or never sent) it would wait 5 s. Once per session.
        True if the peers we want changed."""
        changed = False
        for wg_ip in self.statics:
            session = self.sessions.get(wg_ip)
            if session is None or not session.peer_ready:
                continue
            reading = self._wg.get(session.info.public_key)
            if session.wg_renewing:
                if reading is None:  # out of WireGuard: back in, with a new initiation
                    session.wg_renewing, changed = False, True
                continue
            if reading is None or reading.handshake_age is not None:
                session.wg_waiting_since = None
                continue
            if session.wg_waiting_since is None:
                session.wg_waiting_since = now
            elif not session.wg_renewed and (
                now >= session.wg_waiting_since + self.timers.first_handshake_resend
            ):
                session.wg_renewing = session.wg_renewed = changed = True
                self._emit(ev.StaticHandshakeResent(self._ref(wg_ip)))
        return changed

    def interface_reset(self, now: float) -> None:
        """Our WireGuard interface was re-created (it had been deleted): every
        WireGuard session is gone, and a direct link's endpoint with it (only
        the handshake had taught it). Static peers are simply set again; direct
        links start over, via the gateway meanwhile."""
        self._wg = {}
        self._leaving = set()
        self._wg_waits = None
        self._table_stale = True
        self._routable = set()  # the kernel dropped our routes with the interface
        self.pairs.interface_reset(now)
        self._recompute(now)
        self.state_version += 1  # reconcile everything, even if nothing changed here

    def peer_endpoints(self) -> dict[IPv4Address, Endpoint]:
        """Where our sessions' admin datagrams come from (a static remembers
        them, so that after a crash it can call its nodes back at once)."""
        return {ip: s.addr for ip, s in self.sessions.items() if ip not in self.statics}

    def call_back(self, endpoints: Mapping[IPv4Address, Endpoint], now: float) -> None:
        """Say hello to nodes an earlier run of ours knew (see ``peer_endpoints``)."""
        for wg_ip, endpoint in list(endpoints.items())[:MAX_SOURCES]:
            if wg_ip in self.sessions or wg_ip == self.info.wg_ip:
                continue
            if self._valid_member(wg_ip) and endpoint[0] != str(wg_ip):
                self.handshake.initiate(wg_ip, endpoint, now)

    def set_wg_port(self, port: int, now: float) -> None:
        """Our WireGuard listen port changed (port hopping): tell everyone."""
        self.info = replace(self.info, wg_port=port)
        self._announce(now, ping=False)

    def settling(self, now: float) -> bool:
        """Start-up work is under way: no static answers yet, a first
        handshake or endpoint is awaited in WireGuard, a direct link is being
        set up, or our WireGuard peers or routes changed within
        ``settle_quiet`` (a static whose nodes are arriving: each is the
        static's work at once, and the start of another node's links). The
        daemon holds back what can wait until then."""
        if now < self.quiet_until:
            return True
        if self.static_lost_since(now) is not None or self._wants_fast_wg_poll(now):
            return True
        return not self.is_static and self.pairs.settling()

    @property
    def quiet_until(self) -> float:
        """When our WireGuard peers and routes will have been unchanged for
        ``settle_quiet`` (if nothing changes meanwhile)."""
        return self.quiet_from + self.timers.settle_quiet

    def static_lost_since(self, now: float) -> float | None:
        """Since when no static peer answers (None: one does, or there are none)."""
        if not self.statics or any(ip in self.sessions for ip in self.statics):
            return None
        return min(t.lost_since for t in self.statics.values())

    def watch_latency(self, until: float, now: float) -> None:
        """Someone looks (TUI, `status`): measure latency to every peer until ``until``."""
        if until <= self._watch_until:
            return
        if self._watch_until <= now:
            for session in self.sessions.values():
                if not session.pinger and not session.info.mobile:
                    session.next_ping = now
        self._watch_until = until
        self._refile_all()  # which sessions ping depends on _watch_until

    def set_demand(self, destinations: Iterable[IPv4Address], now: float) -> None:
        """We exchanged traffic with these wg IPs lately, either way (lazy
        links open for them and stay while it lasts)."""
        if not self.is_static:
            self.pairs.demand(destinations, now)
        if self.mobile:
            self._ask_for_unknown(destinations, now)

    def watch_mesh(self, until: float, now: float) -> None:
        """Someone looks at the mesh map (web UI, TUI): keep it fresh until ``until``."""
        self.mesh.watch(until, now)

    def mesh_picture(self, now: float) -> tuple[wire.NodeLinks, ...]:
        """Every node of the mesh with its links, as far as we know (``core/mesh_map.py``)."""
        return self.mesh.picture(now)

    def reprobe(self, wg_ip: IPv4Address, now: float) -> str | None:
        """Try the direct path to a dynamic peer again now if its last attempt
        failed; the pair's state, or None if there is no such pair."""
        return None if self.is_static else self.pairs.retry_now(wg_ip, now)

    def wg_applied(self, version: int, now: float) -> None:
        """The daemon applied desired state ``version`` to WireGuard and the kernel."""
        if version == self.state_version:
            self._routable = self._desired_dests
            if len(self._wg) <= FIRST_POLL_MAX_PEERS and self._awaiting_wg():
                self._first_poll_until = now + self.timers.wg_first_window
            if not self.is_static:
                self.pairs.handle_timer(now)

    def set_local_addresses(self, addresses: Iterable[str], now: float) -> bool:
        """This machine's underlay addresses (for LAN discovery); announced on change.

        Returns whether they changed (the daemon then rebinds WireGuard).
        """
        endpoints = tuple((a, self.info.admin_port) for a in addresses)
        limit = wire.MAX_MOBILE_LOCAL_ENDPOINTS if self.mobile else wire.MAX_LOCAL_ENDPOINTS
        if self.boot_number:  # our hello carries it: one fewer keeps it in an INIT's size
            limit -= 1
        endpoints = endpoints[:limit]
        if endpoints == self.info.local_endpoints:
            return False
        self.info = replace(self.info, local_endpoints=endpoints)
        self._emit(ev.LocalAddressesChanged(tuple(addresses)))
        self._announce(now, ping=True)
        self._recompute(now)
        return True

    def set_local_networks(self, networks: Iterable[IPv4Network], now: float) -> None:
        """This machine's own prefixes (its connected routes): a gateway's
        network that one of them covers is reached directly, not through the mesh."""
        if self.subnets.set_local_networks(networks):
            self._recompute(now)

    def set_static_address(self, wg_ip: IPv4Address, address: str | None, now: float) -> None:
        """DNS answer for a static peer's host (None: did not resolve)."""
        target = self.statics.get(wg_ip)
        if target is None or target.address == address:
            return
        self._emit(ev.StaticResolved(target.host, address))
        target.address = address
        self._sources = None
        if wg_ip not in self.sessions:
            target.next_hello = now
            target.backoff = self.timers.hello_retry_min
        self._recompute(now)

    def shutdown(self, now: float) -> None:
        """Say bye to everyone so they drop us at once instead of after dead_after."""
        for session in self.sessions.values():
            self._send(wire.Bye(), self._addr_of(session), session.info.wg_ip)

    def reconfigure(self, timers: Timers, statics: Iterable[StaticTarget], now: float) -> None:
        """network.yaml was read again (a reload): new timers, static peers
        added, changed or removed; every other session and link stays.

        A removed static gets a bye and is forgotten (its gateway role passes
        to another static); a new one is greeted at once; one whose host or
        ports changed keeps its session and is reached at the new ones.
        Timers apply from their next use, and pings wait no longer than the
        new interval. Our own role (static or not) cannot change while
        running: asking for that is a bug in the caller (ValueError).
        """
        given = list(statics)
        new = {s.wg_ip: s for s in given if s.wg_ip != self.info.wg_ip}
        if (len(new) < len(given)) != self.is_static:
            raise ValueError("reconfigure cannot change whether this node is static")
        self.timers = self.handshake.timers = self.pairs.timers = timers
        self.subnets.hold, self.subnets.fast_ping = timers.gateway_return, timers.gateway_ping
        for wg_ip in sorted(self.statics.keys() - new.keys()):
            session = self.sessions.get(wg_ip)
            if session is not None:
                self._send(wire.Bye(), self._addr_of(session), wg_ip)
                self._forget_session(wg_ip)
            del self.statics[wg_ip]
        for wg_ip, target in new.items():
            old = self.statics.get(wg_ip)
            if old is None:
                if wg_ip in self.sessions:  # it was a node like any other: start afresh
                    self._forget_session(wg_ip)
                self.statics[wg_ip] = target
                target.lost(now, timers)
                continue
            old.pinned_key = target.pinned_key
            where = (target.host, target.wg_port, target.admin_port, target.address)
            if where[:3] != (old.host, old.wg_port, old.admin_port):
                old.host, old.wg_port, old.admin_port, old.address = where
                if wg_ip not in self.sessions:
                    old.lost(now, timers)
        for target in self.statics.values():
            target.backoff = min(target.backoff, timers.hello_retry_max)
        for session in self.sessions.values():
            if session.pinger:
                session.next_ping = min(session.next_ping, now + self._jitter(timers.ping_interval))
        self._sources = None
        self._refile_all()  # dead_after, and which sessions are pairs, may have changed
        self._recompute(now)

    def add_client(
        self, name: str, public_key: str, wg_ip: IPv4Address | None, now: float
    ) -> Client:
        """Register a plain WireGuard client on this static (clients.py rules
        1, 2 and 4); raises ``ClientRefused`` with the reason."""
        if not self.is_static:
            raise ClientRefused("this node is not a static: add clients on a static node")
        used: dict[IPv4Address, NodeInfo | Client] = {self.info.wg_ip: self.info}
        keys = {self.info.public_key}
        for target in self.statics.values():
            used.setdefault(target.wg_ip, NodeInfo(target.wg_ip, target.host, "", 0, 0))
        for listing in self.listings.tables.values():
            for ip, entry in listing.items():
                used[ip] = entry.info
                keys.add(entry.info.public_key)
        for ip, session in self.sessions.items():
            used[ip] = session.info
            keys.add(session.info.public_key)
        used.update(self.clients)
        keys |= {c.public_key for c in self.clients.values()}
        address = choose_address(name, public_key, wg_ip, subnet=self.subnet, used=used, keys=keys)
        client = Client(name, address, public_key)
        self.clients[address] = client
        self._clients_changed.add(address)
        self._emit(ev.ClientAdded(ev.PeerRef(address, name), public_key))
        self._mark_table_dirty(now)
        self._recompute(now)
        return client

    def remove_client(self, name: str, now: float) -> Client:
        """End a client's registration: its peer goes, and the next table push
        takes it away everywhere (clients.py rule 2)."""
        client = next((c for c in self.clients.values() if c.name == name), None)
        if client is None:
            raise ClientRefused(f"no client named {name!r} on this node")
        del self.clients[client.wg_ip]
        self._clients_changed.add(client.wg_ip)
        self._emit(ev.ClientRemoved(ev.PeerRef(client.wg_ip, name)))
        self._mark_table_dirty(now)
        self._recompute(now)
        return client

    # --- outputs ----------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self._outbox = self._outbox, []
        return out

    def events(self) -> list[ev.Event]:
        out, self._events = self._events, []
        return out

    def take_resolve_requests(self) -> set[IPv4Address]:
        out, self.resolve_requests = self.resolve_requests, set()
        return out

    def get_timer(self) -> float | None:
        deadlines = []
        # Of every session: silence, ping, contender (see _session_deadline).
        earliest = self._deadlines.earliest()
        if earliest is not None:
            deadlines.append(earliest)
        due = self.subnets.deadline()
        if due is not None:
            deadlines.append(due)
        for target in self._seeking():
            deadlines.append(target.next_resolve_request)
            if target.address is not None:
                deadlines.append(target.next_hello)
        if self._gateway() is not None:
            deadlines += self._gateway_watch.deadlines(self.timers)
        if self.table.push_at is not None:
            deadlines.append(self.table.push_at)
        if not self.is_static:
            deadlines += self.pairs.deadlines()
        deadlines += self.mesh.deadlines()
        return min(deadlines, default=None)

    def desired_peers(self) -> dict[str, WgPeer]:
        return self._desired[0]

    def desired_routes(self) -> set[Route]:
        return self._desired[1]

    def desired_subnet_routes(self) -> set[Route]:
        """Our routes to the networks behind gateways (core/routing.py rule 8);
        the shell keeps them apart from the underlay (forwarding.py)."""
        return self._subnet_routes

    def desired_relay_routes(self) -> frozenset[IPv4Network]:
        """A static's networks behind gateways that it forwards back into the
        mesh (core/routing.py rule 9); the shell's relay table."""
        return self._relay

    def wg_poll_interval(self, now: float) -> float:
        """How soon the daemon should read ``wg show`` again."""
        punch = None if self.is_static else self.pairs.punch_began()
        if punch is not None and now < punch + self.timers.wg_punch_window:
            return self.timers.wg_poll_punch
        if self._wants_fast_wg_poll(now):
            if now < self._first_poll_until and self._awaiting_wg():
                return self.timers.wg_poll_first
            return self.timers.wg_poll_fast
        since = now - 2 * self.timers.wg_poll_active
        if self.pairs.in_use(since) or self._gateway_watch.sent_at > since:
            return self.timers.wg_poll_active  # in use: a broken link is noticed within seconds
        return self.timers.wg_poll_slow

    def _wants_fast_wg_poll(self, now: float) -> bool:
        """True while a WireGuard endpoint or first handshake is still awaited,
        a direct link is suspect, and for a moment after our table changed (a
        peer roamed: its new outside endpoint shows up in WireGuard with its
        next packet)."""
        if now < self._fast_poll_until or self.pairs.awaiting_wg():
            return True
        if self._gateway_watch.suspect_since is not None:
            return True
        return self._awaiting_wg()

    def _awaiting_wg(self) -> bool:
        """A session's first handshake (or, on a static, its endpoint) is not in WireGuard yet."""
        if self._wg_waits is None:  # (the same until a reading or a session changes)
            self._wg_waits = any(self._awaits_wg(s) for s in self.sessions.values())
        return self._wg_waits

    def _awaits_wg(self, session: Session) -> bool:
        reading = self._wg.get(session.info.public_key)
        if reading is None or reading.handshake_age is None:
            return True
        return self.is_static and reading.endpoint is None

    def statistics(self, now: float) -> NodeStatus:
        return snapshot(
            info=self.info,
            is_static=self.is_static,
            sessions=self.sessions,
            statics=self.statics,
            gateways=self._gateways,
            tables=self.listings.tables,
            pair_status=self.pairs.status,
            readings=self._wg,
            visible_endpoint=self.visible_endpoint,
            drops=self.drops,
            table_version=self.table.version,
            conflicts=self.handshake.conflicts,
            now=now,
            subnets=self.subnets.status(  # a gone gateway by its last known name
                {
                    ip: name
                    for ip in self.subnets.gateway_ips
                    if (name := self._gateway_ref(ip).name)
                }
            ),
            clients=self.clients.values(),
        )

    def names(self) -> dict[str, tuple[IPv4Address, ...]]:
        """Name -> wg IPs of every node and client we know (core/names.py)."""
        listed: dict[IPv4Address, str] = {}
        for static_ip in sorted(self.listings.tables):
            for wg_ip in self.listings.tables[static_ip]:
                entry = self._listed(wg_ip) or self.listings.tables[static_ip][wg_ip]
                listed.setdefault(wg_ip, entry.info.name)
        return name_table(
            (
                {self.info.wg_ip: self.info.name},
                {ip: c.name for ip, c in self.clients.items()},
                {ip: s.info.name for ip, s in self.sessions.items()},
                listed,
            )
        )

    # --- dispatch -------------------------------------------------------------

    def _known_sources(self) -> frozenset[Endpoint]:
        """Where our sessions' and static peers' datagrams come from (cached)."""
        if self._sources is None:
            known = {s.addr for s in self.sessions.values()}
            known |= {t.admin_endpoint for t in self.statics.values() if t.admin_endpoint}
            self._sources = frozenset(known)
        return self._sources

    def _on_frame(self, frame: wire.Frame, addr: Endpoint, now: float) -> None:
        if frame.receiver != self.info.wg_ip:
            self._drop(DropReason.NOT_FOR_US)
            return
        if not self._valid_member(frame.sender):
            self._drop(DropReason.OUTSIDE_SUBNET)
            return
        if frame.sender == self.info.wg_ip and isinstance(frame, wire.Transport | wire.Stale):
            # Only a finished handshake can claim our wg IP (then: a conflict).
            self._drop(DropReason.OWN_WG_IP)
            return
        match frame:
            case wire.Transport():
                self._on_transport(frame, addr, now)
            case wire.Init():
                self.handshake.on_init(frame, addr, now)
            case wire.Response():
                self.handshake.on_response(frame, addr, now)
            case wire.Finish():
                self.handshake.on_finish(frame, addr, now)
            case wire.Cookie():
                self.handshake.on_cookie(frame, addr, now)
            case wire.Stale():
                self._on_stale(frame, addr, now)

    def _on_transport(self, frame: wire.Transport, addr: Endpoint, now: float) -> None:
        session = self.sessions.get(frame.sender)
        keys = self._keys_for(session, frame.to_index) if session is not None else None
        if session is None or keys is None:
            self._drop(DropReason.NO_SESSION)
            contender = session.contender if session is not None else None
            if contender is not None and contender.keys.local_index == frame.to_index:
                # It waits for the holder's answer (no STALE). Its counter still
                # counts: a copy of this datagram must not work after a takeover.
                with contextlib.suppress(NoiseError):
                    keys = contender.keys
                    decrypt(keys.receive, frame.counter, frame.header, frame.ciphertext)
                    keys.replay.accept(frame.counter)
                return
            # We restarted, or forgot them: tell them (smaller than what came).
            if self._stale_sent.allow(addr[0], now):
                stale = wire.Stale(self.info.wg_ip, frame.sender, frame.to_index)
                self._send_frame(stale, addr)
            return
        try:
            body = decrypt(keys.receive, frame.counter, frame.header, frame.ciphertext)
        except NoiseError:
            self._drop(DropReason.BAD_TRANSPORT)
            return
        if not keys.replay.accept(frame.counter):
            self._drop(DropReason.REPLAY)
            return
        try:
            message = wire.decode_message(body)
        except Drop as drop:
            self._drop(drop.reason)  # a member's bug; its session stays
            return
        session.last_heard = now
        if addr != session.addr and self._validates_path(session):
            self._challenge_path(session, addr)
        self._on_message(session, message, addr, now)

    def _keys_for(self, session: Session, index: int) -> Keys | None:
        if session.keys.local_index == index:
            return session.keys
        if session.previous is not None and session.previous.local_index == index:
            return session.previous
        return None

    def _on_stale(self, frame: wire.Stale, addr: Endpoint, now: float) -> None:
        """The peer has no session for our keys (it restarted?): handshake again."""
        session = self.sessions.get(frame.sender)
        if session is None or session.keys.remote_index != frame.to_index:
            self._drop(DropReason.STALE_INDEX)
            return
        expected = self._addr_of(session)
        if addr != expected or self.handshake.initiating(frame.sender):
            self._drop(DropReason.STALE_INDEX)
            return
        if not self._stale_heard.allow(frame.sender, now):
            self._drop(DropReason.RATE_LIMITED)
            return
        self.handshake.initiate(frame.sender, expected, now)

    def _validates_path(self, session: Session) -> bool:
        """Sessions whose address we learn from the peer (not configured, not the tunnel)."""
        ip = session.info.wg_ip
        return ip not in self.statics and not self._is_pair(ip)

    def _challenge_path(self, session: Session, addr: Endpoint) -> None:
        """The peer speaks from a new address (roaming, a NAT's new mapping):
        use it once it answers there, so nobody can redirect us by replaying."""
        if session.path_addr == addr and session.path_token is not None:
            return
        session.path_addr = addr
        session.path_token = int.from_bytes(self._random_bytes(8), "big") >> 1
        self._send(wire.PathChallenge(session.path_token), addr, session.info.wg_ip)

    def _on_message(self, session: Session, message: Message, addr: Endpoint, now: float) -> None:
        match message:
            case Ping():
                if session.info.wg_ip in self.subnets.gateway_ips:
                    self.subnets.heard_ping(session.info.wg_ip, now)
                    self._refile(session)  # whether it dies fast may have changed
                self._send(
                    wire.Pong(message.seq, self.table.published),
                    self._addr_of(session),
                    session.info.wg_ip,
                )
                self._check_table_version(session, message.table_version)
            case Pong():
                self._on_pong(session, message, now)
            case wire.TableRequest():
                if self._table_requests.allow(session.info.wg_ip, now):
                    self._send_table(session, now)
                else:
                    self._drop(DropReason.RATE_LIMITED)
            case Table():
                self._on_table(session, message, now)
            case wire.Bye():
                self._emit(ev.PeerSaidBye(self._ref(session.info.wg_ip)))
                self._drop_session(session.info.wg_ip, now)
            case wire.Probe():
                self._send(wire.ProbeAck(message.token), addr, session.info.wg_ip)
                self.pairs.on_probe(session, message.token, addr, now)
            case wire.ProbeAck():
                self.pairs.on_probe_ack(session, message.token, addr, now)
            case wire.Ready():
                if message.leaving:
                    self.pairs.on_leaving(session, message.attempt, now)
                else:
                    self.pairs.on_ready(
                        session, message.attempt, message.direct, now, fired=message.fired
                    )
            case wire.Relay():
                self._on_relay(session, message, now)
            case wire.LinkReport():
                self.mesh.on_report(session.info.wg_ip, message, now)
            case wire.MapRequest():
                self.mesh.on_request(session.info.wg_ip, message, now)
            case wire.MapPart():
                self.mesh.on_map(session.info.wg_ip, message, now)
            case wire.Info():
                self._on_info(session, message.info, now)
            case wire.PathChallenge():
                self._send(wire.PathResponse(message.token), addr, session.info.wg_ip)
            case wire.PathResponse():
                if message.token == session.path_token and addr == session.path_addr:
                    session.addr, session.path_token, session.path_addr = addr, None, None
                    self._sources = None
                    self._mark_table_dirty(now)
            case wire.Refused():
                wg_ip = session.info.wg_ip
                self.handshake.refused(message.holder, wg_ip, now)
                self._drop_session(wg_ip, now)
                self._back_off(wg_ip, now)

    def _on_pong(self, session: Session, pong: Pong, now: float) -> None:
        sent = session.record_pong(pong.seq, now)
        if sent is not None and session.pinger and not self._is_pair(session.info.wg_ip):
            # Answered: back to the normal interval (see _ping).
            session.next_ping = sent + self._jitter(self._ping_interval(session))
        self.pairs.on_pong(session, pong.seq)
        self.mesh.changed(now)  # a new round trip
        if session is self._gateway() and pong.seq >= self._gateway_watch.answer_seq:
            self._gateway_watch.answered()
        self.handshake.on_pong(session, pong.seq, now)
        self._check_table_version(session, pong.table_version)

    # --- static tables (see tables.py) -------------------------------------------

    def _check_table_version(self, session: Session, version: int) -> None:
        ip = session.info.wg_ip
        if ip in self.statics and self.listings.wants(ip, version):
            self._send(wire.TableRequest(), session.addr, ip)

    def _on_table(self, session: Session, table: Table, now: float) -> None:
        ip = session.info.wg_ip
        if ip not in self.statics:
            self._drop(DropReason.TABLE_FROM_NON_STATIC)
            return
        if self._mobiles and table.base:
            self._mobiles_moved(session, table, now)
        me = (self.info.wg_ip, self.info.public_key)
        try:
            received = self.listings.receive(ip, table, me, self._valid_member)
        except ValueError:
            self._drop(DropReason.MALFORMED)
            return
        if received is None:
            return
        if received.need_full:  # a change on top of a version we do not have
            self._send(wire.TableRequest(), session.addr, ip)
            return
        for _ in range(received.outside):
            self._drop(DropReason.OUTSIDE_SUBNET)
        if received.ours is not None:
            self.visible_endpoint = received.ours.wg_endpoint
            session.peer_ready = True
        self._recompute(now)

    def _mobiles_moved(self, static: Session, change: Table, now: float) -> None:
        """mobile.py rule 5: another static's change lists a mobile we hold, its
        WireGuard there in use, heard there later than here by more than
        ``link_timeout``: it moved on."""
        for entry in change.entries:
            wg_ip = entry.info.wg_ip
            session = self.sessions.get(wg_ip)
            if wg_ip not in self._mobiles or session is None or entry.wg_endpoint is None:
                continue  # (no endpoint: a session it declines, e.g. a call-back)
            same = entry.info.public_key == session.info.public_key
            if same and now - session.last_heard > entry.age + self.timers.link_timeout:
                self._emit(ev.MobileMoved(self._ref(wg_ip), self._ref(static.info.wg_ip)))
                self._drop_session(wg_ip, now)

    def _send_table(self, session: Session, now: float) -> None:
        """The whole table (a new session, or one that asked)."""
        parts = self.table.cached_full()  # encoded once per version
        if parts is None:
            parts = self.table.full_parts(self._table_entries(now))
        for part in parts:
            self._send_encoded(part, self._addr_of(session), session.info.wg_ip)
        session.table_sent = self.table.version

    def _push_table(self, now: float) -> None:
        """A table change to every session: encoded once, as a change where the
        session has the version before it, else whole (rule 1 of tables.py)."""
        entries = self._table_entries(now)
        base, change = self.table.take_change(entries)
        for session in self.sessions.values():
            if session.table_sent == base and base:
                for part in change:
                    self._send_encoded(part, self._addr_of(session), session.info.wg_ip)
                session.table_sent = self.table.version
            else:
                self._send_table(session, now)

    def _mark_table_dirty(self, now: float) -> None:
        if not self.is_static:
            return
        self._table_stale = False
        if self.table.update(self._table_entries(now), now, self.timers.table_push_delay):
            self._fast_poll_until = now + FAST_POLL_AFTER_CHANGE

    def _table_entries(self, now: float) -> list[TableEntry]:
        """Our table: the sessions (tables.py rule 1) and our clients (clients.py rule 2)."""
        readings = self._wg
        if self._leaving:  # (a node that comes back with its key kept, before a reading)
            readings = {k: r for k, r in readings.items() if k not in self._leaving}
        entries = self.table.entries(self.sessions, readings, now)
        return entries + table_entries(self.clients.values(), self.info, readings)

    def _on_relay(self, session: Session, relay: wire.Relay, now: float) -> None:
        """A static passes a sealed datagram on between two dynamic nodes, unopened."""
        target = self.sessions.get(relay.to)
        sender = session.info.wg_ip
        if not self.is_static or target is None or relay.to in self.statics or relay.to == sender:
            self._drop(DropReason.BAD_RELAY)
            return
        if not self._relays.allow(sender, now):
            self._drop(DropReason.RATE_LIMITED)
            return
        self._outbox.append((relay.datagram, target.addr))

    def _listed(self, wg_ip: IPv4Address) -> TableEntry | None:
        """The freshest entry for a node among the tables of static nodes we reach."""
        return self.listings.freshest(wg_ip, self._trusted_static)

    def _trusted_static(self, static_ip: IPv4Address) -> bool:
        session = self.sessions.get(static_ip)
        return session is not None and session.peer_ready

    # --- liveness -----------------------------------------------------------

    def _pings(self, session: Session) -> bool:
        """Is this session's next ping due at all? We keep its NAT mapping open
        (pinger), we probe a gateway (see SubnetRoutes.probes), or someone
        watches latency (the other side of a static link, a pair; never a
        mobile node: its bytes are counted)."""
        if session.pinger or self._probes(session):
            return True
        return session.next_ping < self._watch_until and not session.info.mobile

    def _probes(self, session: Session) -> bool:
        ip = session.info.wg_ip
        return not session.pinger and not self._is_pair(ip) and self.subnets.probes(ip)

    def _quiet_limit(self, session: Session) -> float:
        """How long a (non-pair) session may be silent before it is dropped."""
        if self.mobile:
            return quiet_limit(self.timers)  # our gateway (mobile.py rule 2)
        if session.info.mobile:
            return self.timers.mobile_dead_after  # mobile.py rule 5
        return self._dead_after(session)

    def _gateway(self) -> Session | None:
        """A mobile's one static session (mobile.py rule 1); None for anyone else."""
        if not self.mobile:
            return None
        return next((self.sessions[ip] for ip in self.statics if ip in self.sessions), None)

    def _seeking(self) -> list[StaticTarget]:
        """Static peers we say hello to (and look up): those without a session,
        or none while a mobile has its gateway (mobile.py rule 1)."""
        if self._gateway() is not None:
            return []
        return [t for t in self.statics.values() if t.wg_ip not in self.sessions]

    def _watch_gateway(self, now: float) -> None:
        """mobile.py rule 3: ping a suspect gateway; lost when it stays silent."""
        gateway, watch = self._gateway(), self._gateway_watch
        lost_at = watch.lost_at(self.timers)
        if gateway is None or lost_at is None:
            return
        wg_ip = gateway.info.wg_ip
        if now >= lost_at:
            self._emit(ev.GatewayUnanswered(self._ref(wg_ip)))
            # Maybe only its WireGuard broke: then it lets go of us at once.
            self._send(wire.Bye(), self._addr_of(gateway), wg_ip)
            self._drop_session(wg_ip, now)
        elif now >= watch.next_ping:
            self._ping(gateway, now)
            watch.next_ping = now + self.timers.link_probe_interval

    def _ask_for_unknown(self, destinations: Iterable[IPv4Address], now: float) -> None:
        """mobile.py rule 4: traffic with a node our gateway's table lacks."""
        gateway = self._gateway()
        if gateway is None:
            return
        static = gateway.info.wg_ip
        version = self.listings.versions.get(static)
        when, asked = self._table_asked
        if now < when + TABLE_REQUEST_EVERY or version == asked:
            return  # once per version: the node may simply not be the static's
        listing = self.listings.tables.get(static, {})
        for wg_ip in destinations:
            unknown = wg_ip not in listing and wg_ip not in self.statics
            if unknown and wg_ip != self.info.wg_ip and self._valid_member(wg_ip):
                self._send(wire.TableRequest(), self._addr_of(gateway), static)
                self._table_asked = (now, version)
                return

    def _ping_interval(self, session: Session) -> float:
        """A pinger's interval: short between a gateway and whoever watches it."""
        if self.subnets.pings_fast(session.info.wg_ip):
            return min(self.timers.gateway_ping, self.timers.ping_interval)
        return self.timers.ping_interval

    def _dead_after(self, session: Session) -> float:
        if self.subnets.dies_fast(session.info.wg_ip, session.pinger):
            return min(self.timers.gateway_dead_after, self.timers.dead_after)
        return self.timers.dead_after

    def _ping(self, session: Session, now: float) -> None:
        self._send(
            wire.Ping(session.record_ping(now), self.table.published),
            self._addr_of(session),
            session.info.wg_ip,
        )
        interval = self._ping_interval(session)
        if session.pinger:
            # Ping again soon unless a pong comes (it resets the interval): a
            # static that went away and came back is found within a second.
            wait = max(self.timers.pong_timeout, 3 * (session.rtt or 0.0))
            interval = min(interval, wait)
        elif not self._probes(session):  # a probe goes every gateway_ping, answered or not
            interval = self.timers.latency_interval
        session.next_ping = now + self._jitter(interval)

    def _forget_session(self, wg_ip: IPv4Address) -> None:
        """Everything that hangs on a session, gone with it."""
        session = self.sessions.pop(wg_ip)
        self._mobiles.discard(wg_ip)
        if self.mobile and wg_ip in self.statics:
            self._gateway_watch = GatewayWatch()  # the next gateway starts afresh
        session.watcher = None
        self._deadlines.discard(wg_ip)
        self._wg_waits = None
        self._table_stale = True
        contender = session.contender.keys if session.contender is not None else None
        for keys in (session.keys, session.previous, contender):
            if keys is not None:
                self._by_index.pop(keys.local_index, None)
        self._sources = None
        self.pairs.closed(wg_ip)
        self.mesh.session_closed(wg_ip)
        self.listings.forget(wg_ip)

    def _drop_session(self, wg_ip: IPv4Address, now: float) -> None:
        self._forget_session(wg_ip)
        target = self.statics.get(wg_ip)
        if target is not None:
            target.lost(now, self.timers)  # (and re-resolved: dynamic DNS, maybe it moved)
            if self.mobile and len(self.statics) > 1:
                # mobile.py rule 1: the others first (the lost one may be what broke).
                for other in self.statics.values():
                    if other is not target:
                        other.lost(now, self.timers)
                target.next_hello = now + self.timers.hello_retry_slow
        self._mark_table_dirty(now)
        self._recompute(now)

    # --- desired state (see routing.py) ---------------------------------------------

    def _recompute(self, now: float) -> None:
        """Derive WireGuard peers and routes from sessions, pair paths and listings."""
        self.pairs.prune(now)
        direct = {
            ip: s
            for ip, s in self.sessions.items()
            if (self.pairs.is_direct(ip) if self._is_pair(ip) else s.peer_ready)
        }
        listings = self.listings
        changed = set(listings.take_changed()) | self._clients_changed
        self._clients_changed = set()
        via, gone = self._routing.update(
            direct,
            listings.tables,
            listings.listed_by,
            changed,
            own=self.clients,  # clients.py rule 5: our own client's /32 stays ours
        )
        for ip, gateway in via:
            self._emit(ev.ReachableVia(self._ref(ip), self._ref(gateway)))
        for ip in gone:
            self._emit(ev.PeerGone(ip))
        gateways = self._routing.gateways
        subnets = self.subnets
        if subnets.gateway_ips:
            alive = alive_nodes(
                direct,
                gateways,
                self.statics,
                listings.tables,
                self.is_static,
                among=subnets.gateway_ips,
            )
            for move in subnets.update(alive, now):
                self._emit(
                    ev.SubnetGatewayChanged(
                        move.route,
                        None if move.gateway is None else self._gateway_ref(move.gateway),
                        None if move.previous is None else self._gateway_ref(move.previous),
                        move.reason,
                    )
                )
        allowed, subnet_routes = subnet_placement(
            subnets.placed(), subnets.main_routes(), direct, gateways
        )
        mine = self._gateway()
        peers = self._routing.peers(
            direct,
            self.statics,
            self.pairs.paths,
            self.timers.keepalive,
            allowed,
            static_keepalive=self.timers.mobile_keepalive if self.mobile else None,
            subnet_via=(mine.info.wg_ip, self.subnet) if mine else None,
        )
        peers.update(self.pairs.trial_peers())
        for wg_ip in self.statics:  # out for a moment, to be set again (_first_handshakes)
            session = self.sessions.get(wg_ip)
            if session is not None and session.wg_renewing:
                peers.pop(session.info.public_key, None)
        routes = self._routing.routes
        if self.clients:  # clients.py rule 1 (a new set: the routing's changes in place)
            routes = routes | {Route(ip) for ip in self.clients}
            for client in self.clients.values():
                peers[client.public_key] = wg_peer(client)
        relay = subnets.relay_routes()
        # Unchanged peers are the same objects: these comparisons are cheap.
        if (
            peers != self._desired[0]
            or routes != self._desired[1]
            or (subnet_routes, relay) != (self._subnet_routes, self._relay)
        ):
            if self.is_static:
                # A key that comes back before the next reading is not in our
                # WireGuard for sure (the reading shows it from before its removal).
                self._leaving |= {
                    k for k in self._desired[0].keys() - peers.keys() if k in self._wg
                }
            # Copies (they change in place), made at C speed from stored hashes.
            self._desired = (peers, set(routes))
            self._desired_dests = set(self._routing.dests).union(self.clients)
            self._subnet_routes, self._relay = subnet_routes, relay
            self.state_version += 1
            self.quiet_from = now
        self.mesh.changed(now)

    # --- sessions ------------------------------------------------------------------

    def _establish(
        self,
        info: NodeInfo,
        boot: bytes,
        addr: Endpoint,
        keys: Keys,
        now: float,
        boot_number: int = 0,
    ) -> Session | None:
        wg_ip = info.wg_ip
        old = self.sessions.get(wg_ip)
        if old is None and not self._session_room(addr):
            self._drop(DropReason.SESSION_CAP)
            return None
        ref = ev.PeerRef(wg_ip, info.name)
        if old is None and wg_ip in self.statics and self._gateway() is not None:
            # mobile.py rule 1: we have our static; this one lets go at once.
            self._send_with(keys, wire.Bye(), addr, wg_ip)
            self._emit(ev.StaticDeclined(ref))
            return None
        if old is not None:
            self.handshake.replaced(wg_ip, old.boot, now)
            same_key = old.info.public_key == info.public_key
            self._emit(ev.PeerRestarted(ref, info.public_key, same_key, boot_number))
            self._forget_session(wg_ip)
        else:
            self._emit(ev.PeerConnected(ref, addr[0]))
        we_ping = wg_ip in self.statics and (not self.is_static or self.info.wg_ip < wg_ip)
        we_ping = we_ping and not self.mobile  # mobile.py rule 2
        session = Session(
            info=info,
            boot=boot,
            addr=addr,
            keys=keys,
            established=now,
            last_heard=now,
            pinger=we_ping,
            # An early first ping: latency shows up at once, not after a full interval.
            next_ping=now + self._jitter(min(1.0, self.timers.ping_interval)),
            peer_ready=self.is_static,
            boot_number=boot_number,
        )
        self.sessions[wg_ip] = session
        self.subnets.new_session(wg_ip)
        session.watcher = self._on_session
        self._refile(session)
        self._wg_waits = None
        self._table_stale = True
        self._by_index[keys.local_index] = wg_ip
        self._sources = None
        if info.mobile and not self._is_pair(wg_ip):
            self._mobiles.add(wg_ip)
        if self._is_pair(wg_ip):
            self.pairs.opened(wg_ip, now)
        self.mesh.session_opened(wg_ip, now)
        self.listings.forget(wg_ip)  # a restarted static numbers its versions afresh
        self._mark_table_dirty(now)
        self._recompute(now)
        return session

    def _renew(
        self, session: Session, info: NodeInfo, addr: Endpoint, keys: Keys, now: float
    ) -> None:
        """A new handshake of the same boot: new keys, the old ones kept for receiving."""
        if session.previous is not None:
            self._by_index.pop(session.previous.local_index, None)
        session.previous, session.keys = session.keys, keys
        self._by_index[keys.local_index] = info.wg_ip
        session.last_heard = now
        if self._validates_path(session) and addr != session.addr:
            session.addr = addr  # the handshake went there and back: a proven path
            self._sources = None
        self._update_info(session, info, now)

    def _session_room(self, addr: Endpoint) -> bool:
        if len(self.sessions) >= MAX_SESSIONS:
            return False
        same_source = sum(1 for s in self.sessions.values() if s.addr[0] == addr[0])
        return same_source < MAX_SESSIONS_PER_SOURCE

    def _back_off(self, wg_ip: IPv4Address, now: float) -> None:
        """A peer refused us: asking again at once would be refused again."""
        target = self.statics.get(wg_ip)
        if target is not None:
            target.next_hello = now + self.timers.hello_retry_slow
            target.backoff = self.timers.hello_retry_max

    def _on_info(self, session: Session, info: NodeInfo, now: float) -> None:
        """The peer's addresses or port changed (its wg IP, key and name cannot:
        the name was judged unique at the handshake)."""
        if (info.wg_ip, info.public_key, info.name, info.mobile, info.client) != (
            session.info.wg_ip,
            session.info.public_key,
            session.info.name,
            session.info.mobile,
            session.info.client,
        ):
            self._drop(DropReason.INFO_CHANGED_IDENTITY)  # (a mobile stays one until it restarts)
            return
        if not self._infos.allow(info.wg_ip, now):
            self._drop(DropReason.RATE_LIMITED)  # each one costs a table push to everyone
            return
        self._update_info(session, info, now)

    def _update_info(self, session: Session, info: NodeInfo, now: float) -> None:
        if session.info != info:
            session.info = info
            if info.mobile and not self._is_pair(info.wg_ip):
                self._mobiles.add(info.wg_ip)
            else:
                self._mobiles.discard(info.wg_ip)
            self._mark_table_dirty(now)
            self._recompute(now)

    def _announce(self, now: float, ping: bool) -> None:
        """Our info changed: tell every session (and, from a new address, ping
        the statics so they see us move)."""
        for session in self.sessions.values():
            self._send(wire.Info(self.info), self._addr_of(session), session.info.wg_ip)
            if ping and session.pinger:
                self._ping(session, now)

    def _old_version(self, addr: Endpoint, now: float) -> None:
        """A node of an older wg_netmanager: say so, once in a while per source."""
        last = self._old_versions.get(addr[0])
        if last is not None and now - last < OLD_VERSION_REPORT_EVERY:
            return
        if len(self._old_versions) >= MAX_OLD_VERSION_SOURCES:
            self._old_versions.clear()
        self._old_versions[addr[0]] = now
        self._emit(ev.OldVersion(addr))

    # --- timers ---------------------------------------------------------------

    def _session_deadline(self, session: Session) -> float | None:
        """When ``handle_timer`` has something to do for this session: silence
        (``_quiet_limit``), its next ping, a contender's deadline. What these
        sums read besides the watched fields (timers, statics, a gateway's fast
        pings, ``_watch_until``) refiles the session when it changes."""
        deadlines = []
        if not self._is_pair(session.info.wg_ip):
            deadlines.append(session.last_heard + self._quiet_limit(session))
        if self._pings(session):
            deadlines.append(session.next_ping)
        if session.contender is not None:
            deadlines.append(session.contender.deadline)
        return min(deadlines, default=None)

    def _on_session(self, session: Session, field: str) -> None:
        """A session's field changed (``Session.watcher``)."""
        if self.sessions.get(session.info.wg_ip) is not session:
            return  # one we have forgotten (a replaced boot, a contender's holder)
        if field in TIMED_FIELDS:
            self._refile(session)
            return
        self._table_stale = True
        self._wg_waits = None
        if field == "info":  # (info.mobile: its silence limit, whether it pings)
            self._refile(session)

    def _refile(self, session: Session) -> None:
        """File the session's next deadline."""
        self._deadlines.file(session.info.wg_ip, self._session_deadline(session))

    def _refile_all(self) -> None:
        self._deadlines.clear()
        for session in self.sessions.values():
            self._refile(session)

    # --- helpers ------------------------------------------------------------

    def _is_pair(self, wg_ip: IPv4Address) -> bool:
        """A session between two dynamic nodes (no static node involved)."""
        return not self.is_static and wg_ip not in self.statics

    def _addr_of(self, session: Session) -> Endpoint:
        if self._is_pair(session.info.wg_ip):
            # Always through the tunnel (direct or via the gateway): the session
            # may have been opened over a LAN that roaming has since left.
            return (str(session.info.wg_ip), session.info.admin_port)
        target = self.statics.get(session.info.wg_ip)
        if target is not None and target.admin_endpoint is not None:
            return target.admin_endpoint
        return session.addr

    def _seal_with(self, keys: Keys, body: bytes, to: IPv4Address) -> bytes:
        counter = keys.next_counter()
        header = wire.Transport.make_header(self.info.wg_ip, to, keys.remote_index, counter)
        ciphertext = encrypt(keys.send, counter, header, body)
        frame = wire.Transport(self.info.wg_ip, to, keys.remote_index, counter, ciphertext, header)
        return wire.seal_frame(self._key, frame, self._random_bytes(wire.NONCE_SIZE))

    def _routed(self, addr: Endpoint) -> bool:
        dest = IPv4Address(addr[0])  # always IPv4 text here: sockets, DNS answers, decoder
        if dest in self.subnet and dest not in self._routable:
            self._drop(DropReason.NO_ROUTE_YET)  # it would leak to the underlay
            return False
        return True

    def _send(self, message: Message, addr: Endpoint, to: IPv4Address) -> None:
        self._send_encoded(wire.encode_message(message), addr, to)

    def _send_encoded(self, body: bytes, addr: Endpoint, to: IPv4Address) -> None:
        """An encoded message over our session with ``to`` (a table part is encoded once)."""
        if self._routed(addr):
            self._outbox.append((self._seal_with(self.sessions[to].keys, body, to), addr))

    def _send_with(self, keys: Keys, message: Message, addr: Endpoint, to: IPv4Address) -> None:
        if self._routed(addr):
            body = wire.encode_message(message)
            self._outbox.append((self._seal_with(keys, body, to), addr))

    def _send_frame(self, frame: wire.Frame, addr: Endpoint) -> None:
        if self._routed(addr):
            nonce = self._random_bytes(wire.NONCE_SIZE)
            self._outbox.append((wire.seal_frame(self._key, frame, nonce), addr))

    def _send_relayed(self, message: Message, to: IPv4Address) -> bool:
        """Seal ``message`` for ``to`` and have the first static that lists it
        pass it on (wire.Relay)."""
        pair = self.sessions.get(to)
        if pair is None:
            return False
        for static_ip in sorted(self.listings.tables):
            static = self.sessions.get(static_ip)
            if static is None or not static.peer_ready:
                continue
            if to in self.listings.tables[static_ip]:
                sealed = self._seal_with(pair.keys, wire.encode_message(message), to)
                self._send(wire.Relay(to, sealed), self._addr_of(static), static_ip)
                return True
        return False

    def _valid_member(self, wg_ip: IPv4Address) -> bool:
        return (
            wg_ip in self.subnet
            and wg_ip != self.subnet.network_address
            and wg_ip != self.subnet.broadcast_address
        )

    def _drop(self, reason: DropReason) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _emit(self, event: ev.Event) -> None:
        self._events.append(event)

    def _jitter(self, interval: float) -> float:
        return interval * self._rng.uniform(0.9, 1.1)

    def _ref(self, wg_ip: IPv4Address) -> ev.PeerRef:
        session = self.sessions.get(wg_ip)
        name = session.info.name if session is not None else self.listings.name_of(wg_ip)
        return ev.PeerRef(wg_ip, name)

    def _gateway_ref(self, wg_ip: IPv4Address) -> ev.PeerRef:
        ref = self._ref(wg_ip)
        if ref.name is not None:
            self._gateway_refs[wg_ip] = ref
            return ref
        return self._gateway_refs.get(wg_ip, ref)


class _Parts:
    """The node as its parts see it: ``PairHost`` for ``Pairs``, ``HandshakeHost``
    for ``Handshake`` (narrow views and requests, nothing else)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def info(self) -> NodeInfo:
        return self._node.info

    @property
    def visible_endpoint(self) -> Endpoint | None:
        return self._node.visible_endpoint

    @property
    def is_static(self) -> bool:
        return self._node.is_static

    @property
    def statics(self) -> Collection[IPv4Address]:
        return self._node.statics.keys()

    @property
    def clients(self) -> Collection[IPv4Address]:
        return self._node.clients.keys()

    def pair_kind(self, wg_ip: IPv4Address) -> str:
        status = self._node.pairs.status(wg_ip)
        return status[0] if status else ""

    @property
    def gateways(self) -> Mapping[IPv4Address, IPv4Address]:
        return self._node._routing.gateways

    @property
    def relayed_by(self) -> Mapping[IPv4Address, Collection[IPv4Address]]:
        return self._node._routing.relayed_by

    @property
    def gateways_version(self) -> int:
        return self._node._routing.gateways_version

    def statistics(self, now: float) -> NodeStatus:
        return self._node.statistics(now)

    def listed_names(self) -> Mapping[IPv4Address, str]:
        me = self._node.info.wg_ip
        return {
            ip: entry.info.name
            for table in self._node.listings.tables.values()
            for ip, entry in table.items()
            if ip != me
        }

    def send_encoded(self, body: bytes, to: IPv4Address) -> None:
        node = self._node
        node._send_encoded(body, node._addr_of(node.sessions[to]), to)

    @property
    def sessions(self) -> Mapping[IPv4Address, Session]:
        return self._node.sessions

    def listed(self, wg_ip: IPv4Address) -> TableEntry | None:
        return self._node._listed(wg_ip)

    def relayed_peers(self) -> list[IPv4Address]:
        node = self._node
        return [ip for ip in node._gateways if ip not in node.statics and ip in node._routable]

    def via_gateway(self, wg_ip: IPv4Address) -> bool:
        node = self._node
        return wg_ip in node._gateways and wg_ip not in node.statics and wg_ip in node._routable

    def reading(self, public_key: str) -> WgPeerReading | None:
        return self._node._wg.get(public_key)

    def gateway_rtt(self) -> float:
        node = self._node
        rtts = [s.rtt for ip, s in node.sessions.items() if ip in node.statics and s.rtt]
        return max(rtts, default=0.0)

    def send(self, message: Message, addr: Endpoint, to: IPv4Address) -> None:
        self._node._send(message, addr, to)

    def send_relayed(self, message: Message, to: IPv4Address) -> bool:
        return self._node._send_relayed(message, to)

    def say_hello(self, addr: Endpoint, to: IPv4Address, now: float) -> None:
        self._node.handshake.initiate(to, addr, now)

    def ping(self, session: Session, now: float) -> None:
        self._node._ping(session, now)

    def forget(self, wg_ip: IPv4Address) -> None:
        self._node._forget_session(wg_ip)

    @property
    def boot(self) -> bytes:
        return self._node.boot

    @property
    def boot_number(self) -> int:
        return self._node.boot_number

    def establish(
        self,
        info: NodeInfo,
        boot: bytes,
        addr: Endpoint,
        keys: Keys,
        now: float,
        boot_number: int = 0,
    ) -> Session | None:
        return self._node._establish(info, boot, addr, keys, now, boot_number)

    def renew(
        self, session: Session, info: NodeInfo, addr: Endpoint, keys: Keys, now: float
    ) -> None:
        self._node._renew(session, info, addr, keys, now)

    def forget_keys(self, keys: Keys) -> None:
        self._node._by_index.pop(keys.local_index, None)

    def contending(self, keys: Keys, wg_ip: IPv4Address) -> None:
        self._node._by_index[keys.local_index] = wg_ip

    def send_frame(self, frame: wire.Frame, addr: Endpoint) -> None:
        self._node._send_frame(frame, addr)

    def send_with(self, keys: Keys, message: Message, addr: Endpoint, to: IPv4Address) -> None:
        self._node._send_with(keys, message, addr, to)

    def pinned(self, wg_ip: IPv4Address) -> bytes | None:
        target = self._node.statics.get(wg_ip)
        return None if target is None else target.pinned_key

    def client_holding(self, wg_ip: IPv4Address) -> NodeInfo | None:
        """The plain WireGuard client with this wg IP (ours, or one a static lists)."""
        node = self._node
        client = node.clients.get(wg_ip)
        if client is not None:
            return client_info(client, node.info)
        for listing in node.listings.tables.values():
            entry = listing.get(wg_ip)
            if entry is not None and entry.info.client:
                return entry.info
        return None

    def name_holder(self, name: str, wg_ip: IPv4Address) -> NodeInfo | None:
        """Who else uses ``name``: our client, a session or a table entry of
        another wg IP (a table's clients too)."""
        node = self._node
        for client in node.clients.values():
            if client.name.lower() == name and client.wg_ip != wg_ip:
                return client_info(client, node.info)
        for ip, session in node.sessions.items():
            if ip != wg_ip and session.info.name.lower() == name:
                return session.info
        for listing in node.listings.tables.values():
            for ip, entry in listing.items():
                if ip != wg_ip and entry.info.name.lower() == name:
                    return entry.info
        return None

    def back_off(self, wg_ip: IPv4Address, now: float) -> None:
        self._node._back_off(wg_ip, now)

    def used_index(self, index: int) -> bool:
        return index in self._node._by_index

    def drop_session(self, wg_ip: IPv4Address, now: float) -> None:
        self._node._drop_session(wg_ip, now)

    def drop(self, reason: DropReason) -> None:
        self._node._drop(reason)

    def changed(self, now: float) -> None:
        self._node._recompute(now)

    def emit(self, event: ev.Event) -> None:
        self._node._emit(event)

    def ref(self, wg_ip: IPv4Address) -> ev.PeerRef:
        return self._node._ref(wg_ip)

    def random_bytes(self, size: int) -> bytes:
        return self._node._random_bytes(size)

    def jitter(self, interval: float) -> float:
        return self._node._jitter(interval)


def _endpoints_differ(old: Mapping[str, WgPeerReading], new: Mapping[str, WgPeerReading]) -> bool:
    """Other keys, or another endpoint for one of them."""
    if old.keys() != new.keys():
        return True
    return any(old[key].endpoint != reading.endpoint for key, reading in new.items())
