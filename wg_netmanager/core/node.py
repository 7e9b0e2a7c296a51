"""The protocol of one node as a pure state machine.

Theory of operation
-------------------
No sockets, no processes, no clock reads: the daemon feeds in datagrams
(``receive_datagram``), timer ticks (``handle_timer``), readings of
``wg show`` (``update_wg``) and DNS answers (``set_static_address``), each
with ``now`` (a monotonic clock in seconds). Out come datagrams
(``datagrams_to_send``), the next deadline (``get_timer``), the desired
WireGuard peers and kernel routes (``desired_peers`` / ``desired_routes``),
log events (``events``) and a ``statistics()`` snapshot.

Sessions. Two nodes talk only after a challenge round trip: a hello carries
fresh random bytes, the answer must echo them. A hello that echoes our
challenge proves the sender is alive *now*, so its boot id, and with it its
WireGuard key, are trusted without comparing clocks. Afterwards every datagram
carries (boot id, counter) and a sliding window refuses replays. A replayed
datagram from an old boot can at most make us send a challenge that nobody
answers; it never changes state. A newer boot that proves itself replaces the
old one (restart with a new key); a boot we replaced does not come back (two
live nodes claiming one wg IP are reported as a conflict).

Who talks to whom. Every node keeps a session with each static peer
(configured in network.yaml, reachable on the underlay). Static nodes publish
a table of the nodes they have sessions with: key, boot, and the endpoint
their WireGuard sees for it (the outside of any NAT). A node that has no
session with another reaches it through a static node that lists it: that
static is then its gateway, gets the node's /32 in its AllowedIPs, and the
kernel route is ``via`` the gateway. The gateway changes only when the
current one stops listing the node (hysteresis); among new candidates the
lowest wg IP wins (deterministic).

Liveness. The side that must keep a NAT mapping open (the dynamic one; between
two static nodes the lower wg IP) pings every ``ping_interval``, and again
every ``pong_timeout`` while a pong is missing; either side drops the session
after ``dead_after`` of silence. A clean shutdown sends bye. A direct link
between two dynamic nodes is watched through WireGuard's byte counters: one
that carries our packets but brings nothing back is probed with pings and,
without an answer within ``link_timeout``, left for the gateway (see
core/pairs.py).

One wg IP, one live node. A new boot for a wg IP whose session may still be
alive (a restart from another address, or a second machine given the same wg
IP) is accepted only if the holder does not answer a ping within
``incumbent_timeout``; if it answers, the newcomer is refused, told so, and
the conflict is logged and shown. From the holder's own address the new boot
is a restart for sure (one UDP port, one socket): accepted at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network
from random import Random

from .. import wire
from ..model import Endpoint, Route, WgPeer, WgPeerReading
from ..wire import (
    Drop,
    Header,
    Hello,
    Message,
    NodeInfo,
    Ping,
    Pong,
    Refused,
    Table,
    TableEntry,
)
from .limits import TokenBuckets
from .pairs import PairLinks, PairPath
from .replay import ReplayWindow
from .timers import Timers

# Answers to unauthenticated datagrams (challenges) per source IP: a burst
# and a refill rate, so the node cannot be used to reflect traffic.
CHALLENGE_BURST = 8.0
CHALLENGE_RATE = 4.0  # per second
MAX_CHALLENGES = 1024
MAX_RATE_SOURCES = 4096
# Datagrams that fail to open (junk, wrong key), per source endpoint: past
# this burst and rate the source is muted, i.e. dropped before decryption.
JUNK_BURST = 64.0
JUNK_RATE = 32.0  # per second
FAST_POLL_AFTER_CHANGE = 3.0  # seconds of fast `wg show` polling after a table change
# Relays a static passes on for one sender (they are rare: a link broke).
RELAY_BURST = 8.0
RELAY_RATE = 1.0  # per second
MAX_PONG_WAIT = 60.0  # seconds a ping's send time is kept for its pong (RTT)
MAX_BARRED = 1024  # boots refused (replaced or in conflict), all wg IPs together
MAX_CONFLICTS = 8  # conflicts kept for status and TUI


@dataclass(frozen=True)
class Event:
    level: int  # logging level
    text: str


@dataclass
class StaticTarget:
    """A static peer from network.yaml; ``address`` is filled in by DNS."""

    wg_ip: IPv4Address
    host: str
    wg_port: int
    admin_port: int
    address: str | None = None
    next_hello: float = 0.0
    backoff: float = 0.0
    lost_since: float = 0.0
    next_resolve_request: float = 0.0

    @property
    def admin_endpoint(self) -> Endpoint | None:
        return None if self.address is None else (self.address, self.admin_port)

    @property
    def wg_endpoint(self) -> Endpoint | None:
        return None if self.address is None else (self.address, self.wg_port)


@dataclass
class Contender:
    """A proven new boot for a wg IP whose session may still be alive.

    The holder was pinged (``ping_seq``); a pong to it before ``deadline``
    means two live nodes claim one wg IP.
    """

    header: Header
    hello: Hello
    addr: Endpoint
    deadline: float
    ping_seq: int


@dataclass
class Session:
    """An authenticated conversation with one node (one boot of it)."""

    info: NodeInfo
    boot: bytes
    addr: Endpoint
    replay: ReplayWindow
    established: float
    last_heard: float
    pinger: bool  # we send the pings (we keep the NAT mapping open)
    next_ping: float = 0.0
    ping_seq: int = 0
    ping_sent: dict[int, float] = field(default_factory=dict)
    rtt: float | None = None
    # WireGuard allows one handshake initiation per 5 s, so a dynamic node must
    # not install a static peer before that static has installed it: only when
    # the static's table lists us (it lists only peers in its WireGuard) is the
    # first handshake sure to be answered.
    peer_ready: bool = False
    contender: Contender | None = None


@dataclass
class PendingTable:
    version: int
    parts: int
    received: dict[int, tuple[TableEntry, ...]]


@dataclass(frozen=True)
class PeerStatus:
    wg_ip: IPv4Address
    name: str
    public_key: str
    path: str  # "direct" | "via"
    # "static", "lan", "nat", "gateway" (via), "" (a static node's dynamic peers)
    kind: str
    reason: str  # why a dynamic pair is relayed, or the state of its attempt
    gateway: IPv4Address | None
    gateway_name: str | None
    endpoint: Endpoint | None
    rtt: float | None
    handshake_age: float | None
    rx_bytes: int
    tx_bytes: int
    session_age: float | None
    is_static: bool
    local_endpoints: tuple[Endpoint, ...] = ()  # the underlay addresses it announced


@dataclass(frozen=True)
class NodeStatus:
    name: str
    wg_ip: IPv4Address
    public_key: str
    wg_port: int
    admin_port: int
    is_static: bool
    visible_endpoint: Endpoint | None
    peers: tuple[PeerStatus, ...]
    statics_connected: int
    statics_total: int
    drops: Mapping[str, int]
    table_version: int
    conflicts: tuple[str, ...] = ()  # recent wg IP conflicts, oldest first


class Node(PairLinks):
    def __init__(
        self,
        *,
        info: NodeInfo,
        shared_key: bytes,
        subnet: IPv4Network,
        statics: list[StaticTarget],
        timers: Timers,
        now: float,
        rng: Random | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.info = info
        self.subnet = subnet
        self.timers = timers
        self.boot = random_bytes(wire.BOOT_SIZE)
        self._key = wire.derive_admin_key(shared_key)
        self._random_bytes = random_bytes
        self._rng = rng or Random()
        self._counter = 0
        self.statics: dict[IPv4Address, StaticTarget] = {
            s.wg_ip: s for s in statics if s.wg_ip != info.wg_ip
        }
        self.is_static = len(self.statics) < len(statics)
        for target in self.statics.values():
            target.next_hello = now
            target.next_resolve_request = now
            target.backoff = timers.hello_retry_min
            target.lost_since = now
        self.sessions: dict[IPv4Address, Session] = {}
        # Boots that may not have a session (replaced by a newer boot, or
        # refused because the holder answered): wg IP -> boot -> until.
        self._barred: dict[IPv4Address, dict[bytes, float]] = {}
        self.conflicts: list[str] = []  # recent conflicts, for status and TUI
        self._challenges: dict[bytes, float] = {}  # challenge -> expiry
        self._rate = TokenBuckets(CHALLENGE_BURST, CHALLENGE_RATE, MAX_RATE_SOURCES)  # by IP
        self._junk = TokenBuckets(JUNK_BURST, JUNK_RATE, MAX_RATE_SOURCES)  # by endpoint
        self._relays = TokenBuckets(RELAY_BURST, RELAY_RATE, MAX_RATE_SOURCES)  # by sender
        self._sources: frozenset[Endpoint] | None = None  # see _known_sources
        self._outbox: list[tuple[bytes, Endpoint]] = []
        self.resolve_requests: set[IPv4Address] = set()
        self._events: list[Event] = []
        self.drops: dict[str, int] = {}
        # Static node: our own table of sessions.
        self.table_version = 0
        self._table_signature: tuple[object, ...] = ()
        self._table_push_at: float | None = None
        # Tables of static nodes we have sessions with.
        self.listings: dict[IPv4Address, dict[IPv4Address, TableEntry]] = {}
        self._listing_versions: dict[IPv4Address, int] = {}
        self._pending_tables: dict[IPv4Address, PendingTable] = {}
        self._gateways: dict[IPv4Address, IPv4Address] = {}
        self._listed_by: set[IPv4Address] = set()  # static nodes whose table has us
        self._fast_poll_until = 0.0
        self._watch_until = 0.0  # measure latency to dynamic peers until then
        self.paths: dict[IPv4Address, PairPath] = {}
        self._pair_hello_at: dict[IPv4Address, tuple[float, float]] = {}  # (due, backoff)
        self._routable: set[IPv4Address] = set()  # wg IPs whose kernel route is applied
        self._wg: dict[str, WgPeerReading] = {}
        self.visible_endpoint: Endpoint | None = None
        self.state_version = 0  # bumped whenever desired peers/routes may have changed
        self._desired: tuple[dict[str, WgPeer], set[Route]] = ({}, set())
        self._recompute(now)

    # --- inputs -----------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Endpoint, now: float) -> bool:
        """One datagram from ``addr``. Returns False if it was dropped unopened
        (junk, or its source is muted): nothing changed, nothing to send."""
        if self._junk.empty(addr, now) and addr not in self._known_sources():
            # Flooding us with junk: not worth decrypting. Never a known peer's
            # address: a spoofed flood from it must not silence the peer.
            self._drop("muted source")
            return False
        try:
            header, message = wire.open_datagram(self._key, data)
        except Drop as drop:
            self._drop(drop.reason)
            self._junk.allow(addr, now)
            return False
        self._on_datagram(header, message, addr, now)
        return True

    def _known_sources(self) -> frozenset[Endpoint]:
        """Where our sessions' and static peers' datagrams come from (cached)."""
        if self._sources is None:
            known = {s.addr for s in self.sessions.values()}
            known |= {t.admin_endpoint for t in self.statics.values() if t.admin_endpoint}
            self._sources = frozenset(known)
        return self._sources

    def _on_datagram(self, header: Header, message: Message, addr: Endpoint, now: float) -> None:
        if header.wg_ip == self.info.wg_ip:
            if header.boot == self.boot:
                self._drop("own datagram")
                return
            if not isinstance(message, Hello):
                # Another boot claiming our wg IP; only a proven hello counts
                # as a conflict (this could be a replay of an old boot's).
                self._drop("own wg IP")
                return
        if not self._valid_member(header.wg_ip):
            self._drop("outside subnet")
            return
        if header.to != self.info.wg_ip and not (
            header.to == wire.UNKNOWN_RECEIVER and isinstance(message, Hello)
        ):
            self._drop("not for us")
            return
        if isinstance(message, Hello):
            self._on_hello(header, message, addr, now)
            return
        if isinstance(message, Refused):
            self._on_refused(header, message, addr, now)
            return
        session = self.sessions.get(header.wg_ip)
        if session is None or session.boot != header.boot:
            self._drop("no session")
            contender = session.contender if session is not None else None
            if contender is not None and contender.header.boot == header.boot:
                return  # proven already, waiting for the holder's answer
            # Unknown boot: maybe a restart of ours they have not noticed, maybe a
            # replay. Either way only a fresh challenge round trip can help.
            self._send_challenge(addr, now, want_echo=True)
            return
        if not session.replay.accept(header.counter):
            self._drop("replay")
            return
        session.last_heard = now
        if isinstance(message, Ping) and addr != session.addr and header.wg_ip not in self.statics:
            session.addr = addr  # the peer roamed (or its NAT remapped)
            self._sources = None
            self._mark_table_dirty(now)
        self._on_message(session, message, addr, now)

    def handle_timer(self, now: float) -> None:
        for session in list(self.sessions.values()):
            contender = session.contender
            if contender is not None and now >= contender.deadline:
                session.contender = None
                self._accept_contender(contender, now)
        for wg_ip, session in list(self.sessions.items()):
            if self._is_pair(wg_ip):
                continue  # alive while a static lists it (see _recompute)
            if now >= session.last_heard + self.timers.dead_after:  # same sum as get_timer
                self._event(logging.WARNING, f"{self._label(wg_ip)} silent, dropped")
                self._drop_session(wg_ip, now)
        for target in self.statics.values():
            if target.wg_ip in self.sessions:
                continue
            if now >= target.next_resolve_request:
                target.next_resolve_request = now + self.timers.hello_slow_after
                self._event(logging.DEBUG, f"resolve {target.host}")
                self.resolve_requests.add(target.wg_ip)
            endpoint = target.admin_endpoint
            if now >= target.next_hello and endpoint is not None:
                self._send_hello(endpoint, now, echo=None, want_echo=True, to=target.wg_ip)
                if now - target.lost_since >= self.timers.hello_slow_after:
                    interval = self.timers.hello_retry_slow
                else:
                    interval = target.backoff
                    target.backoff = min(target.backoff * 2, self.timers.hello_retry_max)
                target.next_hello = now + interval
        for ip, session in self.sessions.items():
            if self._pings(ip, session) and now >= session.next_ping:
                self._ping(session, now)
        if self._table_push_at is not None and now >= self._table_push_at:
            self._table_push_at = None
            for session in self.sessions.values():
                self._send_table(session, now)
        self._pair_timers(now)
        self._expire(now)

    def update_wg(self, readings: Mapping[str, WgPeerReading], now: float) -> None:
        """A fresh reading of ``wg show``: endpoints (NAT outsides), handshakes, bytes."""
        self._wg = dict(readings)
        self._mark_table_dirty(now)
        for wg_ip, path in list(self.paths.items()):
            self._path_wg(wg_ip, path, now)

    def interface_reset(self, now: float) -> None:
        """Our WireGuard interface was re-created (it had been deleted): every
        WireGuard session is gone, and a direct link's endpoint with it (only
        the handshake had taught it). Static peers are simply set again; direct
        links start over, via the gateway meanwhile."""
        self._wg = {}
        self._routable = set()  # the kernel dropped our routes with the interface
        for wg_ip, path in list(self.paths.items()):
            if path.state != "relayed":
                self._start_attempt(wg_ip, now, recompute=False)
        self._recompute(now)
        self.state_version += 1  # reconcile everything, even if nothing changed here

    def peer_endpoints(self) -> dict[IPv4Address, Endpoint]:
        """Where our sessions' admin datagrams come from (a static remembers
        them, so that after a crash it can call its nodes back at once)."""
        return {ip: s.addr for ip, s in self.sessions.items() if ip not in self.statics}

    def call_back(self, endpoints: Mapping[IPv4Address, Endpoint], now: float) -> None:
        """Say hello to nodes an earlier run of ours knew (see ``peer_endpoints``)."""
        for wg_ip, endpoint in list(endpoints.items())[:MAX_RATE_SOURCES]:
            if wg_ip in self.sessions or wg_ip == self.info.wg_ip:
                continue
            if self._valid_member(wg_ip) and endpoint[0] != str(wg_ip):
                self._send_hello(endpoint, now, None, want_echo=True, to=wg_ip)

    def set_wg_port(self, port: int, now: float) -> None:
        """Our WireGuard listen port changed (port hopping): tell everyone."""
        self.info = replace(self.info, wg_port=port)
        for session in self.sessions.values():
            self._send_hello(
                self._addr_of(session), now, None, want_echo=False, to=session.info.wg_ip
            )

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
            for ip, session in self.sessions.items():
                if self._is_pair(ip):
                    session.next_ping = now
        self._watch_until = until

    def _pings(self, ip: IPv4Address, session: Session) -> bool:
        """Is this session's next ping due at all? Keep-alive pinger, or a watched pair."""
        if self._is_pair(ip):
            return session.next_ping < self._watch_until
        return session.pinger

    def wg_applied(self, version: int, now: float) -> None:
        """The daemon applied desired state ``version`` to WireGuard and the kernel."""
        if version == self.state_version:
            self._routable = {route.dest for route in self._desired[1]}
            self._pair_timers(now)

    def set_local_addresses(self, addresses: Iterable[str], now: float) -> bool:
        """This machine's underlay addresses (for LAN discovery); announced on change.

        Returns whether they changed (the daemon then rebinds WireGuard).
        """
        endpoints = tuple((a, self.info.admin_port) for a in addresses)
        endpoints = endpoints[: wire.MAX_LOCAL_ENDPOINTS]
        if endpoints == self.info.local_endpoints:
            return False
        self.info = replace(self.info, local_endpoints=endpoints)
        self._event(logging.INFO, f"local addresses now {', '.join(addresses) or 'none'}")
        for session in self.sessions.values():
            self._send_hello(
                self._addr_of(session), now, None, want_echo=False, to=session.info.wg_ip
            )
            if session.pinger:
                self._ping(session, now)  # from our new address: the static sees us move
        self._recompute(now)
        return True

    def set_static_address(self, wg_ip: IPv4Address, address: str | None, now: float) -> None:
        """DNS answer for a static peer's host (None: did not resolve)."""
        target = self.statics.get(wg_ip)
        if target is None or target.address == address:
            return
        self._event(logging.INFO, f"static {target.host} is at {address or 'nowhere'}")
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

    # --- outputs ----------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self._outbox = self._outbox, []
        return out

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def take_resolve_requests(self) -> set[IPv4Address]:
        out, self.resolve_requests = self.resolve_requests, set()
        return out

    def get_timer(self) -> float | None:
        deadlines = [
            s.last_heard + self.timers.dead_after
            for ip, s in self.sessions.items()
            if not self._is_pair(ip)
        ]
        deadlines += [s.next_ping for ip, s in self.sessions.items() if self._pings(ip, s)]
        deadlines += [s.contender.deadline for s in self.sessions.values() if s.contender]
        for target in self.statics.values():
            if target.wg_ip not in self.sessions:
                deadlines.append(target.next_resolve_request)
                if target.address is not None:
                    deadlines.append(target.next_hello)
        if self._table_push_at is not None:
            deadlines.append(self._table_push_at)
        deadlines += self._pair_deadlines()
        return min(deadlines, default=None)

    def desired_peers(self) -> dict[str, WgPeer]:
        return self._desired[0]

    def desired_routes(self) -> set[Route]:
        return self._desired[1]

    def wg_poll_interval(self, now: float) -> float:
        """How soon the daemon should read ``wg show`` again."""
        if self._wants_fast_wg_poll(now):
            return self.timers.wg_poll_fast
        recently = now - 2 * self.timers.wg_poll_active
        if any(p.state == "direct" and p.sent_at > recently for p in self.paths.values()):
            return self.timers.wg_poll_active  # in use: a broken link is noticed within seconds
        return self.timers.wg_poll_slow

    def _wants_fast_wg_poll(self, now: float) -> bool:
        """True while a WireGuard endpoint or first handshake is still awaited,
        a direct link is suspect, and for a moment after our table changed (a
        peer roamed: its new outside endpoint shows up in WireGuard with its
        next packet)."""
        if now < self._fast_poll_until:
            return True
        for path in self.paths.values():
            if path.state in ("clearing", "installing", "punching"):
                return True
            if path.state == "direct" and path.suspect_since is not None:
                return True
        for session in self.sessions.values():
            reading = self._wg.get(session.info.public_key)
            if reading is None or reading.handshake_age is None:
                return True
            if self.is_static and reading.endpoint is None:
                return True
        return False

    def statistics(self, now: float) -> NodeStatus:
        peers = []
        names = {ip: s.info.name for ip, s in self.sessions.items()}
        for ip, session in sorted(self.sessions.items()):
            if ip in self._gateways:
                continue  # a dynamic pair still relayed: listed below
            reading = self._wg.get(session.info.public_key)
            path = self.paths.get(ip)
            if ip in self.statics:
                kind = "static"
                reason = "" if session.peer_ready else "waiting for its table"
            else:
                kind = (path.kind or "") if path else ""
                reason = path.reason if path else ""
            peers.append(
                PeerStatus(
                    wg_ip=ip,
                    name=session.info.name,
                    public_key=session.info.public_key,
                    path="direct",
                    kind=kind,
                    reason=reason,
                    gateway=None,
                    gateway_name=None,
                    endpoint=reading.endpoint if reading else None,
                    rtt=session.rtt,
                    handshake_age=reading.handshake_age if reading else None,
                    rx_bytes=reading.rx_bytes if reading else 0,
                    tx_bytes=reading.tx_bytes if reading else 0,
                    session_age=now - session.established,
                    is_static=ip in self.statics,
                    local_endpoints=session.info.local_endpoints,
                )
            )
        for ip, gateway in sorted(self._gateways.items()):
            entry = self.listings[gateway][ip]
            path = self.paths.get(ip)
            pair = self.sessions.get(ip)
            peers.append(
                PeerStatus(
                    wg_ip=ip,
                    name=entry.info.name,
                    public_key=entry.info.public_key,
                    path="via",
                    kind="gateway",
                    reason=path.reason if path else "no direct session yet",
                    gateway=gateway,
                    gateway_name=names.get(gateway),
                    endpoint=entry.wg_endpoint,
                    rtt=pair.rtt if pair else None,
                    handshake_age=None,
                    rx_bytes=0,
                    tx_bytes=0,
                    session_age=now - pair.established if pair else None,
                    is_static=ip in self.statics,
                    local_endpoints=entry.info.local_endpoints,
                )
            )
        peers.sort(key=lambda p: p.wg_ip)
        return NodeStatus(
            name=self.info.name,
            wg_ip=self.info.wg_ip,
            public_key=self.info.public_key,
            wg_port=self.info.wg_port,
            admin_port=self.info.admin_port,
            is_static=self.is_static,
            visible_endpoint=self.visible_endpoint,
            peers=tuple(peers),
            statics_connected=sum(ip in self.sessions for ip in self.statics),
            statics_total=len(self.statics),
            drops=dict(self.drops),
            table_version=self.table_version,
            conflicts=tuple(self.conflicts),
        )

    # --- handshake ----------------------------------------------------------

    def _on_hello(self, header: Header, hello: Hello, addr: Endpoint, now: float) -> None:
        info = hello.info
        if info.wg_ip != header.wg_ip:
            self._drop("malformed")
            return
        ours = header.wg_ip == self.info.wg_ip  # another boot claims our own wg IP
        session: Session | None = None if ours else self.sessions.get(header.wg_ip)
        expiry = None if hello.echo is None else self._challenges.pop(hello.echo, None)
        proven = expiry is not None and expiry > now
        if proven:
            if ours:
                self._refuse(header, hello, addr, self.info, now)
                return
            twin = self._key_holder(info.public_key, header.wg_ip)
            if twin is not None:
                # Two WireGuard peers with one key cannot be told apart (and a
                # key is made fresh at every start: this one was copied).
                self._refuse(header, hello, addr, twin, now)
                return
            if session is not None and session.boot != header.boot:
                if header.boot in self._barred.get(header.wg_ip, {}):
                    self._refuse(header, hello, addr, session.info, now)
                    return
                if addr != session.addr:
                    self._ask_holder(session, header, hello, addr, now)
                    return
            if session is None or session.boot != header.boot:
                session = self._establish(header, info, addr, now)
            elif not session.replay.accept(header.counter):
                self._drop("replay")
                return
        elif session is not None and session.boot == header.boot and header.to == self.info.wg_ip:
            # (An unaddressed hello is a challenge meant for anyone: one sent
            # to a third node and replayed here must not count as the session's.)
            if not session.replay.accept(header.counter):
                self._drop("replay")
                return
        else:
            session = None  # not proven: answer with a challenge, change nothing
        if session is not None:
            session.last_heard = now
            if session.info.public_key != info.public_key:
                self._drop("key changed")  # one boot, one key: not from that boot's node
                return
            if session.info != info:
                session.info = info
                self._mark_table_dirty(now)
                self._recompute(now)
        if hello.want_echo:  # (an unproven claim of our own wg IP too: a live one proves itself)
            if not self._rate.allow(addr[0], now) and session is None:
                self._drop("rate limited")
                return
            self._send_hello(addr, now, hello.challenge, want_echo=session is None, to=header.wg_ip)
        elif session is None and not self._send_challenge(addr, now, want_echo=True):
            self._drop("rate limited")

    def _ask_holder(
        self, session: Session, header: Header, hello: Hello, addr: Endpoint, now: float
    ) -> None:
        """A proven new boot from another address: is the current holder still alive?"""
        if session.contender is not None and session.contender.header.boot == header.boot:
            return  # asked already (a repeated hello)
        self._ping(session, now)
        deadline = now + max(self.timers.incumbent_timeout, 3 * (session.rtt or 0.0))
        session.contender = Contender(header, hello, addr, deadline, session.ping_seq)
        self._event(
            logging.DEBUG,
            f"{self._label(header.wg_ip)}: new boot at {addr[0]}:{addr[1]}, "
            "asking the current holder first",
        )

    def _accept_contender(self, contender: Contender, now: float) -> None:
        """The holder did not answer: the new boot is a restart (or a move)."""
        header, hello = contender.header, contender.hello
        self._establish(header, hello.info, contender.addr, now)
        if hello.want_echo:
            self._send_hello(contender.addr, now, hello.challenge, want_echo=False, to=header.wg_ip)

    def _refuse(
        self, header: Header, hello: Hello, addr: Endpoint, holder: NodeInfo, now: float
    ) -> None:
        """Two live nodes claim one wg IP (or one WireGuard key): the holder keeps
        it, the newcomer is told."""
        self._drop("conflict")
        self._bar(header.wg_ip, header.boot, now)
        newcomer = hello.info.public_key[:8]
        if holder.wg_ip == header.wg_ip:
            what = f"claims wg IP {header.wg_ip}, which"
        else:
            what = f"(wg IP {header.wg_ip}) shows the WireGuard key that"
        self._note_conflict(
            f"{addr[0]}:{addr[1]} (key {newcomer}…) {what} "
            f"{holder.name} ({holder.wg_ip}, key {holder.public_key[:8]}…) still uses; refused",
        )
        if self._rate.allow(addr[0], now):
            self._send(Refused(hello.challenge, holder), addr, header.wg_ip)

    def _on_refused(self, header: Header, refused: Refused, addr: Endpoint, now: float) -> None:
        expiry = self._challenges.pop(refused.echo, None)
        if expiry is None or expiry <= now:
            self._drop("stale refusal")  # not an answer to a hello of ours: maybe a replay
            return
        holder = refused.holder
        if holder.public_key == self.info.public_key and holder.wg_ip != self.info.wg_ip:
            why = f"our WireGuard key is {holder.name}'s ({holder.wg_ip}) too"
        else:
            why = (
                f"our wg IP {self.info.wg_ip} is in use by {holder.name} "
                f"(key {holder.public_key[:8]}…); give this node another wg IP"
            )
        self._note_conflict(f"{self._label(header.wg_ip)} refuses us: {why}")
        if header.wg_ip in self.sessions:
            self._drop_session(header.wg_ip, now)  # it will not talk to us: not a session

    def _key_holder(self, public_key: str, wg_ip: IPv4Address) -> NodeInfo | None:
        """Who else (we, or a session of another wg IP) has this WireGuard key."""
        if public_key == self.info.public_key:
            return self.info
        for ip, session in self.sessions.items():
            if ip != wg_ip and session.info.public_key == public_key:
                return session.info
        return None

    def _note_conflict(self, text: str) -> None:
        """Log a conflict loudly (once); keep the latest few for status and TUI."""
        line = f"CONFLICT: {text}"
        if line in self.conflicts:
            return
        self._event(logging.ERROR, line)
        self.conflicts = [*self.conflicts, line][-MAX_CONFLICTS:]

    def _bar(self, wg_ip: IPv4Address, boot: bytes, now: float) -> None:
        self._barred.setdefault(wg_ip, {})[boot] = now + self.timers.dead_after
        if sum(len(boots) for boots in self._barred.values()) > MAX_BARRED:
            self._expire(now)
            while sum(len(boots) for boots in self._barred.values()) > MAX_BARRED:
                oldest = min(self._barred, key=lambda ip: min(self._barred[ip].values()))
                del self._barred[oldest]

    def _establish(self, header: Header, info: NodeInfo, addr: Endpoint, now: float) -> Session:
        old = self.sessions.get(header.wg_ip)
        if old is not None:
            self._bar(header.wg_ip, old.boot, now)
            self._event(
                logging.INFO,
                f"{info.name} ({info.wg_ip}) restarted, new key {info.public_key[:8]}…",
            )
        else:
            self._event(logging.INFO, f"{info.name} ({info.wg_ip}) connected from {addr[0]}")
        we_ping = header.wg_ip in self.statics and (
            not self.is_static or self.info.wg_ip < header.wg_ip
        )
        session = Session(
            info=info,
            boot=header.boot,
            addr=addr,
            replay=ReplayWindow(header.counter),
            established=now,
            last_heard=now,
            pinger=we_ping,
            # An early first ping: latency shows up at once, not after a full interval.
            next_ping=now + self._jitter(min(1.0, self.timers.ping_interval)),
            peer_ready=self.is_static,
        )
        self.sessions[header.wg_ip] = session
        self._sources = None
        self._pair_hello_at.pop(header.wg_ip, None)
        if self._is_pair(header.wg_ip):
            self.paths[header.wg_ip] = PairPath()
            self._start_attempt(header.wg_ip, now)
        # A restarted static numbers its table versions afresh.
        self._listed_by.discard(header.wg_ip)
        self.listings.pop(header.wg_ip, None)
        self._listing_versions.pop(header.wg_ip, None)
        self._pending_tables.pop(header.wg_ip, None)
        self._mark_table_dirty(now)
        self._recompute(now)
        return session

    def _send_challenge(self, addr: Endpoint, now: float, want_echo: bool) -> bool:
        """Answer an unauthenticated datagram with a challenge, unless ``addr``
        had its share (False: the caller counts the drop, once)."""
        if not self._rate.allow(addr[0], now):
            return False
        self._send_hello(addr, now, echo=None, want_echo=want_echo)
        return True

    def _send_hello(
        self,
        addr: Endpoint,
        now: float,
        echo: bytes | None,
        want_echo: bool,
        to: IPv4Address = wire.UNKNOWN_RECEIVER,
    ) -> None:
        challenge = self._random_bytes(wire.CHALLENGE_SIZE)
        if len(self._challenges) >= MAX_CHALLENGES:
            self._expire(now)
            while len(self._challenges) >= MAX_CHALLENGES:
                self._challenges.pop(next(iter(self._challenges)))
        self._challenges[challenge] = now + self.timers.challenge_lifetime
        self._send(Hello(self.info, challenge, echo, want_echo), addr, to)

    # --- authenticated messages --------------------------------------------

    def _on_message(self, session: Session, message: Message, addr: Endpoint, now: float) -> None:
        match message:
            case Ping():
                self._send(
                    wire.Pong(message.seq, self.table_version),
                    self._addr_of(session),
                    session.info.wg_ip,
                )
                self._check_table_version(session, message.table_version)
            case Pong():
                sent = session.ping_sent.pop(message.seq, None)
                if sent is not None:
                    rtt = now - sent
                    session.rtt = rtt if session.rtt is None else 0.7 * session.rtt + 0.3 * rtt
                    if session.pinger and not self._is_pair(session.info.wg_ip):
                        # Answered: back to the normal interval (see _ping).
                        session.next_ping = sent + self._jitter(self.timers.ping_interval)
                self._pair_pong(session, message.seq)
                contender = session.contender
                if contender is not None and message.seq >= contender.ping_seq:
                    session.contender = None  # the holder is alive: two live claimants
                    self._refuse(
                        contender.header, contender.hello, contender.addr, session.info, now
                    )
                self._check_table_version(session, message.table_version)
            case wire.TableRequest():
                self._send_table(session, now)
            case Table():
                self._on_table(session, message, now)
            case wire.Bye():
                self._event(logging.INFO, f"{self._label(session.info.wg_ip)} said bye")
                self._drop_session(session.info.wg_ip, now)
            case wire.Probe():
                self._send(wire.ProbeAck(message.token), addr, session.info.wg_ip)
                self._on_probe(session, message.token, addr, now)
            case wire.ProbeAck():
                self._on_probe_ack(session, message.token, addr, now)
            case wire.Ready():
                if message.leaving:
                    self._on_leaving(session, message.attempt, now)
                else:
                    self._on_ready(session, message.attempt, message.direct, now)
            case wire.Relay():
                self._on_relay(session, message, now)

    def _check_table_version(self, session: Session, version: int) -> None:
        ip = session.info.wg_ip
        if ip in self.statics and version != self._listing_versions.get(ip, 0):
            pending = self._pending_tables.get(ip)
            if pending is None or pending.version != version:
                self._send(wire.TableRequest(), session.addr, ip)

    def _on_table(self, session: Session, table: Table, now: float) -> None:
        ip = session.info.wg_ip
        if ip not in self.statics:
            self._drop("table from non-static")
            return
        if table.version <= self._listing_versions.get(ip, 0) and ip in self.listings:
            return  # old or duplicate
        pending = self._pending_tables.get(ip)
        if pending is None or pending.version != table.version:
            if pending is not None and pending.version > table.version:
                return
            pending = PendingTable(table.version, table.parts, {})
            self._pending_tables[ip] = pending
        if table.parts != pending.parts:
            self._drop("malformed")
            return
        pending.received[table.part] = table.entries
        if len(pending.received) < pending.parts:
            return
        del self._pending_tables[ip]
        listing: dict[IPv4Address, TableEntry] = {}
        self._listed_by.discard(ip)
        for part in range(pending.parts):
            for entry in pending.received[part]:
                wg_ip = entry.info.wg_ip
                if wg_ip == self.info.wg_ip:
                    if entry.boot == self.boot:
                        self.visible_endpoint = entry.wg_endpoint
                        session.peer_ready = True
                        self._listed_by.add(ip)
                    continue
                if not self._valid_member(wg_ip):
                    self._drop("outside subnet")
                    continue
                listing[wg_ip] = entry
        self.listings[ip] = listing
        self._listing_versions[ip] = table.version
        self._recompute(now)

    def _send_table(self, session: Session, now: float) -> None:
        entries = self._table_entries(now)
        parts: list[list[TableEntry]] = [[]]
        for entry in entries:
            # Measured with the largest numbers the header can carry here.
            candidate = Table(self.table_version, 4095, 4096, (*parts[-1], entry))
            if parts[-1] and wire.encoded_size(candidate) > wire.MAX_DATAGRAM:
                parts.append([entry])
            else:
                parts[-1].append(entry)
        for index, part in enumerate(parts):
            self._send(
                Table(self.table_version, index, len(parts), tuple(part)),
                session.addr,
                session.info.wg_ip,
            )

    def _table_entries(self, now: float) -> list[TableEntry]:
        entries = []
        for _ip, session in sorted(self.sessions.items()):
            reading = self._wg.get(session.info.public_key)
            if reading is None:
                continue  # not in our WireGuard yet: its handshake would fail
            entries.append(
                TableEntry(
                    info=session.info,
                    boot=session.boot,
                    wg_endpoint=reading.endpoint,
                    admin_endpoint=session.addr,
                    age=max(0.0, now - session.last_heard),
                )
            )
        return entries

    def _mark_table_dirty(self, now: float) -> None:
        if not self.is_static:
            return
        signature = tuple(
            (e.info, e.boot, e.wg_endpoint, e.admin_endpoint) for e in self._table_entries(now)
        )
        if signature != self._table_signature:
            self._table_signature = signature
            self.table_version += 1
            self._fast_poll_until = now + FAST_POLL_AFTER_CHANGE
            if self._table_push_at is None:
                self._table_push_at = now + self.timers.table_push_delay

    def _on_relay(self, session: Session, relay: wire.Relay, now: float) -> None:
        """A static passes a sealed datagram on between two dynamic nodes, unopened."""
        target = self.sessions.get(relay.to)
        sender = session.info.wg_ip
        if not self.is_static or target is None or relay.to in self.statics or relay.to == sender:
            self._drop("bad relay")
            return
        if not self._relays.allow(sender, now):
            self._drop("rate limited")
            return
        self._outbox.append((relay.datagram, target.addr))

    # --- liveness -----------------------------------------------------------

    def _ping(self, session: Session, now: float) -> None:
        session.ping_seq += 1
        session.ping_sent[session.ping_seq] = now
        for seq in [q for q, sent in session.ping_sent.items() if now - sent > MAX_PONG_WAIT]:
            del session.ping_sent[seq]  # unanswered long ago: it will not come
        if len(session.ping_sent) > 8:
            session.ping_sent.pop(min(session.ping_sent))
        self._send(
            wire.Ping(session.ping_seq, self.table_version),
            self._addr_of(session),
            session.info.wg_ip,
        )
        interval = self.timers.ping_interval
        if self._is_pair(session.info.wg_ip):
            interval = self.timers.latency_interval
        elif session.pinger:
            # Ping again soon unless a pong comes (it resets the interval): a
            # static that went away and came back is found within a second.
            wait = max(self.timers.pong_timeout, 3 * (session.rtt or 0.0))
            interval = min(interval, wait)
        session.next_ping = now + self._jitter(interval)

    def _drop_session(self, wg_ip: IPv4Address, now: float) -> None:
        del self.sessions[wg_ip]
        self._sources = None
        self.paths.pop(wg_ip, None)
        self._listed_by.discard(wg_ip)
        self.listings.pop(wg_ip, None)
        self._listing_versions.pop(wg_ip, None)
        self._pending_tables.pop(wg_ip, None)
        target = self.statics.get(wg_ip)
        if target is not None:
            target.next_hello = now
            target.backoff = self.timers.hello_retry_min
            target.lost_since = now
            target.next_resolve_request = now  # dynamic DNS: maybe it moved
        self._mark_table_dirty(now)
        self._recompute(now)

    def _expire(self, now: float) -> None:
        for challenge in [c for c, expiry in self._challenges.items() if expiry <= now]:
            del self._challenges[challenge]
        for wg_ip, boots in list(self._barred.items()):
            for boot in [b for b, until in boots.items() if until <= now]:
                del boots[boot]
            if not boots:
                del self._barred[wg_ip]

    # --- desired state ------------------------------------------------------

    def _recompute(self, now: float) -> None:
        """Derive WireGuard peers and routes from sessions, pair paths and listings."""
        self._prune_pairs(now)
        direct = {
            ip: s
            for ip, s in self.sessions.items()
            if (s.peer_ready if not self._is_pair(ip) else self.paths[ip].state == "direct")
        }
        # Both ends of a relayed pair must pick the same gateway, or each
        # would drop the other's packets (WireGuard checks the source against
        # the AllowedIPs of the peer it came from). So: the lowest wg IP among
        # the static nodes that list both of us; no local preference.
        gateways: dict[IPv4Address, IPv4Address] = {}
        for static_ip in sorted(self.listings):
            listing = self.listings[static_ip]
            if static_ip not in direct or static_ip not in self._listed_by:
                continue
            for ip in listing:
                if ip not in direct and ip != self.info.wg_ip:
                    gateways.setdefault(ip, static_ip)
        for ip, gateway in gateways.items():
            if self._gateways.get(ip) != gateway:
                self._event(logging.INFO, f"{self._label(ip)} reachable via {self._label(gateway)}")
        for ip in self._gateways.keys() - gateways.keys() - direct.keys():
            self._event(logging.INFO, f"{ip} gone")
        self._gateways = gateways

        peers: dict[str, WgPeer] = {}
        routes: set[Route] = set()
        via: dict[IPv4Address, list[IPv4Address]] = {}
        for ip, gateway in gateways.items():
            via.setdefault(gateway, []).append(ip)
            routes.add(Route(ip, gateway))
        for ip, session in direct.items():
            target = self.statics.get(ip)
            allowed = sorted([ip, *via.get(ip, [])])
            if self._is_pair(ip):  # WireGuard keeps the endpoint the handshake used
                endpoint, keepalive = None, self.timers.keepalive
            else:
                endpoint = target.wg_endpoint if target else None
                keepalive = self.timers.keepalive if target else 0
            peers[session.info.public_key] = WgPeer(
                public_key=session.info.public_key,
                allowed_ips=tuple(IPv4Network(a) for a in allowed),
                endpoint=endpoint,
                persistent_keepalive=keepalive,
            )
            routes.add(Route(ip))
        for ip, path in self.paths.items():
            if path.state in ("installing", "punching"):
                key = self.sessions[ip].info.public_key
                punching = path.state == "punching" and path.firing
                peers[key] = WgPeer(
                    public_key=key,
                    allowed_ips=(),  # traffic stays on the gateway until the handshake
                    endpoint=path.endpoint if punching else None,
                    persistent_keepalive=self.timers.keepalive if punching else 0,
                )
        desired = (peers, routes)
        if desired != self._desired:
            self._desired = desired
            self.state_version += 1

    # --- helpers ------------------------------------------------------------

    def _addr_of(self, session: Session) -> Endpoint:
        if self._is_pair(session.info.wg_ip):
            # Always through the tunnel (direct or via the gateway): the session
            # may have been opened over a LAN that roaming has since left.
            return (str(session.info.wg_ip), session.info.admin_port)
        target = self.statics.get(session.info.wg_ip)
        if target is not None and target.admin_endpoint is not None:
            return target.admin_endpoint
        return session.addr

    def _send(
        self, message: Message, addr: Endpoint, to: IPv4Address = wire.UNKNOWN_RECEIVER
    ) -> None:
        dest = IPv4Address(addr[0])  # always IPv4 text here: sockets, DNS answers, decoder
        if dest in self.subnet and dest not in self._routable:
            self._drop("no route yet")  # without our route it would leak to the underlay
            return
        self._counter += 1
        header = Header(self.info.wg_ip, self.boot, self._counter, to)
        self._outbox.append((wire.seal_message(self._key, header, message), addr))

    def _valid_member(self, wg_ip: IPv4Address) -> bool:
        return (
            wg_ip in self.subnet
            and wg_ip != self.subnet.network_address
            and wg_ip != self.subnet.broadcast_address
        )

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _event(self, level: int, text: str) -> None:
        self._events.append(Event(level, text))

    def _jitter(self, interval: float) -> float:
        return interval * self._rng.uniform(0.9, 1.1)

    def _label(self, wg_ip: IPv4Address) -> str:
        session = self.sessions.get(wg_ip)
        if session is not None:
            return f"{session.info.name} ({wg_ip})"
        for listing in self.listings.values():
            if wg_ip in listing:
                return f"{listing[wg_ip].info.name} ({wg_ip})"
        return str(wg_ip)
