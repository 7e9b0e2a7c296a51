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
``PairPath``).

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
# A direct link is suspect once we sent this many bytes over it without
# receiving any: more than a handshake initiation plus a keepalive, so an
# idle link never is, while a few packets of real traffic are enough.
LINK_SUSPECT_BYTES = 300
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


# Direct links between two dynamic nodes, one PairPath per peer on each side.
#
#   state       WireGuard peer for X            leaves on
#   relayed     none (X via its gateway)        attempt start -> probing
#   probing     none; Probe to X's LAN addrs    ProbeAck -> installing(lan)
#                                               probe_window over -> installing(nat)
#                                               (or relayed if X's outside is unknown)
#   installing  X's key, no AllowedIPs, no      our wg shows X -> send Ready (repeated);
#               endpoint (cannot initiate)      + Ready from X -> punching
#   punching    X's key, no AllowedIPs,         handshake -> direct
#               endpoint + keepalive: both      punch_timeout -> failed
#               sides initiate at once
#   direct      X's key, X/32, keepalive        handshake stale -> failed
#                                               link silent (below) -> failed (lost)
#   failed      none                            retry_at (backoff) -> probing
#                                               lost LAN link answers a probe -> probing
#
# A handshake seen in installing also means direct (X initiated). Any change of
# either side's addresses (roaming) restarts from probing. Installing without
# AllowedIPs first matters twice: traffic keeps flowing via the gateway while
# the link is tried, and WireGuard allows only one handshake initiation per
# 5 s, so the first must meet a peer that already knows our key.
#
# Watching a direct link costs nothing while it works: every `wg show` reading
# says how many bytes went each way. A link that received something since the
# last reading is fine. One that sent LINK_SUSPECT_BYTES without receiving a
# byte, or that received nothing for longer than a keepalive period (the
# least a working link brings is the peer's keepalives), is suspect: the
# peer gets a ping every link_probe_interval (its pong comes back over the
# link, if the link works); without a byte received for link_timeout the link
# is lost and the pair falls back to the gateway. The peer hears of it over
# the gateway (Ready of a new attempt) and follows. A lost LAN link is probed
# every lan_reprobe_interval (by the lower wg IP) for lan_reprobe_for, so it
# comes back about a second after the LAN does, whatever the retry backoff.


@dataclass
class PairPath:
    state: str = "relayed"
    kind: str | None = None  # "lan" | "nat" once a candidate is chosen
    endpoint: Endpoint | None = None
    attempt: int = 0
    started: float = 0.0
    deadline: float = 0.0
    next_ready: float = 0.0
    retry_at: float = 0.0
    failures: int = 0
    reason: str = "not tried yet"
    installed: bool = False
    peer_ready: bool = False
    probe_token: int = 0
    signature: tuple[object, ...] = ()
    since: float = 0.0
    # The peer's latest attempt number and probe token: a Ready or Probe that
    # was sent before we went direct and arrives after must not undo it.
    peer_attempt: int = 0
    peer_probe: int = -1
    firing: bool = False  # punching: our WireGuard has the endpoint and sends
    last_failure: str = ""  # kept while retrying, so the TUI can say why it is relayed
    fire_at: float = 0.0
    # Link watching while direct (see above): counters of the last reading,
    # tx at the last time rx grew, when that was, and since when suspect.
    rx_bytes: int = 0
    tx_bytes: int = 0
    tx_at_heard: int = 0
    heard: float = 0.0
    sent_at: float = 0.0  # when a reading last showed more bytes sent over the link
    suspect_since: float | None = None
    next_link_ping: float = 0.0
    lan_lost_until: float = 0.0  # re-probe the LAN until then
    next_reprobe: float = 0.0
    # No static lists the peer: its daemon (not just its WireGuard, which
    # outlives a crashed daemon) must answer a ping over the link by
    # vouch_until, or the session goes.
    unlisted: bool = False
    vouch_until: float | None = None
    vouch_seq: int = 0


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


class Node:
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
                path = self.paths.get(session.info.wg_ip)
                vouching = path is not None and path.vouch_until is not None
                if vouching and path is not None and message.seq >= path.vouch_seq:
                    path.vouch_until = None  # its daemon answered: the link vouches
                contender = session.contender
                if contender is not None and message.seq >= contender.ping_seq:
                    session.contender = None  # the holder is alive: two live claimants
                    c = contender
                    self._refuse(c.header, c.hello, c.addr, session.info, now)
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

    # --- direct links between dynamic nodes ---------------------------------

    def _is_pair(self, wg_ip: IPv4Address) -> bool:
        """A session between two dynamic nodes (no static node involved)."""
        return not self.is_static and wg_ip not in self.statics

    def _listed(self, wg_ip: IPv4Address) -> TableEntry | None:
        """The freshest entry for a node among the tables of static nodes we reach."""
        best: TableEntry | None = None
        for static_ip, listing in self.listings.items():
            session = self.sessions.get(static_ip)
            entry = listing.get(wg_ip)
            if session is None or not session.peer_ready or entry is None:
                continue
            if best is None or entry.age < best.age:
                best = entry
        return best

    def _prune_pairs(self, now: float) -> None:
        """Pair sessions live while a static lists that boot, or the direct link works.

        When no static lists the peer any more (it went silent there, or the
        statics are down or restarted and have not met it yet), a direct link
        keeps the session if the peer's daemon answers a ping over it within
        ``link_timeout``; after that the link is watched as always. A static
        that lists another boot saw the peer restart.
        """
        for wg_ip in [ip for ip in self.sessions if self._is_pair(ip)]:
            session = self.sessions[wg_ip]
            entry = self._listed(wg_ip)
            if entry is not None and entry.boot == session.boot:
                self.paths[wg_ip].unlisted = False
                self.paths[wg_ip].vouch_until = None
                same_key = entry.info.public_key == session.info.public_key
                if entry.info != session.info and same_key:
                    # The static heard of the peer's new addresses first (our
                    # direct link to it may be the very thing that broke).
                    session.info = entry.info
                path = self.paths[wg_ip]
                signature = self._signature(session, entry, path.signature)
                if path.signature != signature and path.signature:
                    self._event(logging.INFO, f"{self._label(wg_ip)}: addresses changed, re-trying")
                    path.signature = signature
                    self._start_attempt(wg_ip, now, recompute=False)
                continue
            path = self.paths[wg_ip]
            if entry is None and path.state == "direct":
                if not path.unlisted:  # is its daemon still there?
                    path.unlisted = True
                    path.vouch_until = now + self.timers.link_timeout
                    path.vouch_seq = session.ping_seq + 1
                    path.next_link_ping = now
                if path.vouch_until is None or now < path.vouch_until:
                    continue
                self._event(logging.INFO, f"{self._label(wg_ip)} does not answer, dropped")
            del self.sessions[wg_ip]
            del self.paths[wg_ip]
            self._sources = None

    def _signature(
        self, session: Session, entry: TableEntry | None, previous: tuple[object, ...] = ()
    ) -> tuple[object, ...]:
        """What a path choice depends on; a change (roaming) means try again.

        An outside endpoint that is momentarily unknown (a static restarted and
        has not seen the handshake yet) keeps its last known value: only a real
        move counts.
        """
        theirs = entry.wg_endpoint if entry else None
        mine = self.visible_endpoint
        if previous:
            theirs = theirs or previous[2]  # type: ignore[assignment]
            mine = mine or previous[4]  # type: ignore[assignment]
        return (session.boot, session.info.local_endpoints, theirs, self.info.local_endpoints, mine)

    def _start_attempt(self, wg_ip: IPv4Address, now: float, recompute: bool = True) -> None:
        path = self.paths[wg_ip]
        session = self.sessions[wg_ip]
        path.signature = self._signature(session, self._listed(wg_ip), path.signature)
        path.attempt += 1
        if path.state == "direct":
            self._tell_leaving(wg_ip, path)
        path.installed = path.peer_ready = False
        if session.info.public_key in self._wg:
            # WireGuard still has the peer from an earlier link or attempt: its
            # old session would hide whether a new handshake happens. Remove it
            # first (the gateway carries the traffic meanwhile).
            path.state = "clearing"
            path.since = now
            path.reason = "removing the previous link"
            if recompute:
                self._recompute(now)
            return
        path.state = "probing"
        path.kind = path.endpoint = None
        path.installed = path.peer_ready = False
        path.started = path.since = now
        path.probe_token = int.from_bytes(self._random_bytes(4), "big")
        path.reason = "probing local addresses" + self._last_failure(path)
        locals_ = session.info.local_endpoints
        for endpoint in locals_:
            self._send(wire.Probe(path.probe_token), endpoint, wg_ip)
        path.deadline = now + (self.timers.probe_window if locals_ else 0.0)
        if not locals_:
            self._probe_over(wg_ip, path, now)
        if recompute:
            self._recompute(now)

    def _probe_over(self, wg_ip: IPv4Address, path: PairPath, now: float) -> None:
        entry = self._listed(wg_ip)
        if entry is None or entry.wg_endpoint is None:
            path.state = "relayed"
            path.reason = "its outside endpoint is not known yet"
            return
        self._install(path, "nat", entry.wg_endpoint, now)

    def _install(self, path: PairPath, kind: str, endpoint: Endpoint, now: float) -> None:
        path.state = "installing"
        path.kind = kind
        path.endpoint = endpoint
        path.since = now
        path.deadline = now + self.timers.punch_timeout * 2  # bounded wait for Ready
        where = f"{endpoint[0]}:{endpoint[1]}"
        path.reason = f"trying {kind} endpoint {where}" + self._last_failure(path)

    def _on_probe(self, session: Session, token: int, addr: Endpoint, now: float) -> None:
        wg_ip = session.info.wg_ip
        path = self.paths.get(wg_ip)
        if path is None:
            return
        fresh = token != path.peer_probe
        path.peer_probe = token
        on_lan = addr in session.info.local_endpoints
        if path.state in ("relayed", "failed") or (path.state == "direct" and fresh):
            self._start_attempt(wg_ip, now)  # the peer (re)starts: follow it
        elif on_lan and path.kind == "nat" and path.state in ("installing", "punching"):
            self._lan_answers(wg_ip, path, now)  # the LAN is back: better than NAT
        # A probe that arrives straight from one of the peer's own addresses
        # shows a direct underlay path as well as an answer to ours would
        # (and ours may have been sent before the peer had our session).
        if path.state == "probing" and addr in session.info.local_endpoints:
            self._install(path, "lan", (addr[0], session.info.wg_port), now)
            self._recompute(now)

    def _on_probe_ack(self, session: Session, token: int, addr: Endpoint, now: float) -> None:
        wg_ip = session.info.wg_ip
        path = self.paths.get(wg_ip)
        if path is None or token != path.probe_token:
            return
        if path.state == "probing":
            self._install(path, "lan", (addr[0], session.info.wg_port), now)
            self._recompute(now)
        elif self._reprobing(wg_ip, path, now):
            self._lan_answers(wg_ip, path, now)

    def _on_leaving(self, session: Session, attempt: int, now: float) -> None:
        """The peer left our direct link (it broke, or it starts over): leave it too."""
        wg_ip = session.info.wg_ip
        path = self.paths.get(wg_ip)
        if path is None or attempt <= path.peer_attempt:
            return  # old, or the other copy (one comes over the link, one relayed)
        path.peer_attempt = attempt
        if path.state in ("direct", "relayed", "failed"):
            if path.state == "direct":
                self._event(logging.INFO, f"{self._label(wg_ip)} left the direct link")
                self._lan_lost(path, now)  # maybe it broke: whoever re-probes needs to know
            self._start_attempt(wg_ip, now)

    def _on_ready(self, session: Session, attempt: int, peer_direct: bool, now: float) -> None:
        wg_ip = session.info.wg_ip
        path = self.paths.get(wg_ip)
        if path is None or attempt < path.peer_attempt:
            return  # from an attempt the peer has given up
        if path.state == "direct" and attempt == path.peer_attempt:
            return  # a late copy from the attempt that made us direct
        path.peer_attempt = attempt
        if peer_direct and path.state in ("installing", "punching") and path.installed:
            self._go_direct(wg_ip, path, now)  # the handshake happened: follow at once
            return
        if path.state in ("relayed", "failed") or (path.state == "direct" and not peer_direct):
            self._start_attempt(wg_ip, now)
        if path.state in ("probing", "installing"):
            path.peer_ready = True
        self._advance(wg_ip, path, now)

    def _path_wg(self, wg_ip: IPv4Address, path: PairPath, now: float) -> None:
        """A new ``wg show`` reading: installed yet? handshake yet? still alive?"""
        key = self.sessions[wg_ip].info.public_key
        reading = self._wg.get(key)
        if path.state == "clearing":
            if reading is None:
                self._start_attempt(wg_ip, now)
            return
        if path.state in ("installing", "punching") and reading is not None:
            if not path.installed:
                path.installed = True
                path.next_ready = now
            age = reading.handshake_age
            # wg reports whole seconds: allow one second of rounding.
            if age is not None and age <= now - path.started + 1.0:
                self._go_direct(wg_ip, path, now)
                self._send(
                    wire.Ready(path.attempt, direct=True),
                    self._addr_of(self.sessions[wg_ip]),
                    wg_ip,
                )
                return
        elif path.state == "direct":
            age = reading.handshake_age if reading else None
            if reading is None or age is None or age > self.timers.direct_stale_after:
                self._fail(wg_ip, path, now, "direct link lost its handshake", soon=True)
                return
            if not self._watch_link(path, reading, now):
                self._fail(wg_ip, path, now, "the direct link stopped answering", lost=True)
                return
        self._advance(wg_ip, path, now)

    def _watch_link(self, path: PairPath, reading: WgPeerReading, now: float) -> bool:
        """Does the direct link still bring packets back? (see above ``PairPath``)"""
        if reading.tx_bytes < path.tx_at_heard or reading.rx_bytes < path.rx_bytes:
            self._start_watch(path, reading, now)  # counters reset: a new WireGuard peer
            return True
        if reading.tx_bytes != path.tx_bytes:
            path.sent_at = now
        path.tx_bytes = reading.tx_bytes
        if reading.rx_bytes != path.rx_bytes:
            path.rx_bytes = reading.rx_bytes
            path.tx_at_heard = reading.tx_bytes
            path.heard = now
            path.suspect_since = None
            return True
        unanswered = reading.tx_bytes - path.tx_at_heard
        if path.suspect_since is None:
            # A working link brings at least the peer's keepalives; sends that
            # fail locally (a firewall on this host) are not even counted as sent.
            quiet_long = now - path.heard > self.timers.keepalive + 2 * self.timers.wg_poll_slow
            if unanswered > LINK_SUSPECT_BYTES or quiet_long:
                path.suspect_since = now
                path.next_link_ping = now
            return True
        return now - path.suspect_since < self.timers.link_timeout

    @staticmethod
    def _start_watch(path: PairPath, reading: WgPeerReading | None, now: float) -> None:
        path.rx_bytes = reading.rx_bytes if reading else 0
        path.tx_bytes = path.tx_at_heard = reading.tx_bytes if reading else 0
        path.heard = now
        path.sent_at = 0.0
        path.suspect_since = None

    def _go_direct(self, wg_ip: IPv4Address, path: PairPath, now: float) -> None:
        session = self.sessions[wg_ip]
        reading = self._wg.get(session.info.public_key)
        if reading is not None and reading.endpoint is not None:
            # The handshake may have come in on another path than the one we
            # tried (the peer's candidate won): report what WireGuard uses.
            path.endpoint = reading.endpoint
            lan = any(reading.endpoint[0] == ip for ip, _port in session.info.local_endpoints)
            path.kind = "lan" if lan else "nat"
        path.state = "direct"
        path.since = now
        path.failures = 0
        path.lan_lost_until = 0.0
        self._start_watch(path, reading, now)
        path.reason = f"direct ({path.kind}) since the handshake"
        where = (path.endpoint or ("?", 0))[0]
        self._event(
            logging.INFO, f"{self._label(wg_ip)} direct over {(path.kind or '?').upper()} ({where})"
        )
        self._recompute(now)

    def _advance(self, wg_ip: IPv4Address, path: PairPath, now: float) -> None:
        if path.state in ("installing", "punching") and path.installed and now >= path.next_ready:
            # Repeated: a lost Ready would leave the peer waiting for the timeout.
            self._send(wire.Ready(path.attempt), self._addr_of(self.sessions[wg_ip]), wg_ip)
            path.next_ready = now + self.timers.ready_interval
        if path.state == "installing" and path.installed and path.peer_ready:
            path.state = "punching"
            path.since = now
            path.deadline = now + self.timers.punch_timeout
            # The higher wg IP sends first (opening its NAT); the lower follows
            # once that first initiation has had time to arrive.
            path.firing = self.info.wg_ip > wg_ip
            path.fire_at = now + self.timers.punch_stagger + self._gateway_rtt()
            self._send(wire.Ready(path.attempt), self._addr_of(self.sessions[wg_ip]), wg_ip)
            path.next_ready = now + self.timers.ready_interval
            self._recompute(now)

    @staticmethod
    def _last_failure(path: PairPath) -> str:
        return f" (last try: {path.last_failure})" if path.failures else ""

    def _gateway_rtt(self) -> float:
        rtts = [s.rtt for ip, s in self.sessions.items() if ip in self.statics and s.rtt]
        return max(rtts, default=0.0)

    def _fail(
        self,
        wg_ip: IPv4Address,
        path: PairPath,
        now: float,
        why: str,
        soon: bool = False,
        lost: bool = False,
    ) -> None:
        """The attempt failed (or, ``lost``, a working direct link stopped): relayed."""
        soon = soon or lost
        if path.state == "direct":
            path.attempt += 1
            self._tell_leaving(wg_ip, path)
        path.failures = 0 if soon else path.failures + 1
        backoff = min(
            self.timers.path_retry_max,
            self.timers.path_retry_min * 2 ** max(0, path.failures - 1),
        )
        if lost and path.state == "direct":
            self._lan_lost(path, now)
        path.state = "failed"
        path.since = now
        path.suspect_since = None
        path.retry_at = now + (self.timers.ready_interval if soon else self._jitter(backoff))
        path.last_failure = why
        path.reason = f"{why}; relayed, retry in {path.retry_at - now:.0f} s"
        if self._reprobing(wg_ip, path, now):
            path.reason += f", LAN probed every {self.timers.lan_reprobe_interval:g} s"
        level = logging.WARNING if lost else logging.INFO
        self._event(level, f"{self._label(wg_ip)}: {path.reason}")
        self._recompute(now)

    def _lan_lost(self, path: PairPath, now: float) -> None:
        """A direct LAN link is gone: re-probe it now and then (see ``PairPath``)."""
        if path.kind == "lan":
            path.lan_lost_until = now + self.timers.lan_reprobe_for
            path.next_reprobe = now + self.timers.lan_reprobe_interval

    def _tell_leaving(self, wg_ip: IPv4Address, path: PairPath) -> None:
        """We leave the direct link: the peer must too, or it drops what we send
        it via the gateway (its WireGuard has our address on the direct peer).
        Over the link, if it still works, and relayed by a static (wire.Relay),
        because it may not."""
        notice = wire.Ready(path.attempt, leaving=True)
        self._send(notice, self._addr_of(self.sessions[wg_ip]), wg_ip)
        for static_ip in sorted(self.listings):
            static = self.sessions.get(static_ip)
            if static is None or not static.peer_ready or wg_ip not in self.listings[static_ip]:
                continue
            self._counter += 1
            header = Header(self.info.wg_ip, self.boot, self._counter, wg_ip)
            sealed = wire.seal_message(self._key, header, notice)
            self._send(wire.Relay(wg_ip, sealed), self._addr_of(static), static_ip)
            return

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

    def _reprobing(self, wg_ip: IPv4Address, path: PairPath, now: float) -> bool:
        """Probe a lost LAN link now and then? (the lower wg IP of the pair does)"""
        if now >= path.lan_lost_until or self.info.wg_ip > wg_ip:
            return False
        if path.state in ("probing", "clearing", "direct"):
            return False
        return not (path.kind == "lan" and path.state in ("installing", "punching"))

    def _lan_answers(self, wg_ip: IPv4Address, path: PairPath, now: float) -> None:
        """The peer's LAN address answers while we try (or gave up on) another way."""
        self._event(logging.INFO, f"{self._label(wg_ip)}: its LAN address answers again")
        self._start_attempt(wg_ip, now)

    def _pair_timers(self, now: float) -> None:
        for wg_ip, path in list(self.paths.items()):
            if wg_ip not in self.paths:
                continue
            if path.state == "probing" and now >= path.deadline:
                self._probe_over(wg_ip, path, now)
                self._recompute(now)
            elif path.state == "installing" and now >= path.deadline:
                self._fail(wg_ip, path, now, f"{self._label(wg_ip)} never got ready", soon=False)
            elif path.state == "punching" and now >= path.deadline:
                timeout = self.timers.punch_timeout
                why = f"no WireGuard handshake over {path.kind} within {timeout:g} s"
                if path.kind == "nat":
                    why += " (symmetric NAT or strict firewall?)"
                reading = self._wg.get(self.sessions[wg_ip].info.public_key)
                self._event(logging.DEBUG, f"{self._label(wg_ip)}: punch failed, wg has {reading}")
                self._fail(wg_ip, path, now, why, soon=False)
            elif path.state == "failed" and now >= path.retry_at:
                self._start_attempt(wg_ip, now)
            elif path.state == "punching" and not path.firing and now >= path.fire_at:
                path.firing = True
                self._recompute(now)
                self._advance(wg_ip, path, now)
            elif path.state in ("installing", "punching"):
                self._advance(wg_ip, path, now)
            if wg_ip not in self.paths:
                continue
            session = self.sessions[wg_ip]
            if path.vouch_until is not None and now >= path.vouch_until:
                self._recompute(now)  # unlisted, and its daemon did not answer
                continue
            checking = path.suspect_since is not None or path.vouch_until is not None
            if path.state == "direct" and checking and now >= path.next_link_ping:
                self._ping(session, now)  # its pong comes back over the link, if it works
                path.next_link_ping = now + self.timers.link_probe_interval
            if self._reprobing(wg_ip, path, now) and now >= path.next_reprobe:
                for endpoint in session.info.local_endpoints:
                    self._send(wire.Probe(path.probe_token), endpoint, wg_ip)
                path.next_reprobe = now + self.timers.lan_reprobe_interval
        if self.is_static:
            return
        for wg_ip, entry in self._pair_hello_candidates():
            due, backoff = self._pair_hello_at.get(wg_ip, (now, 0.2))
            if now < due:
                continue
            self._send_hello(
                (str(wg_ip), entry.info.admin_port), now, None, want_echo=True, to=wg_ip
            )
            self._pair_hello_at[wg_ip] = (now + backoff, min(backoff * 2, 10.0))

    def _pair_hello_candidates(self) -> list[tuple[IPv4Address, TableEntry]]:
        """Dynamic nodes we should open a session with: the lower wg IP of two
        dynamic nodes does, through the gateway tunnel, once the kernel has the
        route there (before that, the datagram would leak to the underlay)."""
        if self.is_static:
            return []
        out = []
        for wg_ip in self._gateways:
            if wg_ip in self.sessions or wg_ip in self.statics or wg_ip < self.info.wg_ip:
                continue
            entry = self._listed(wg_ip)
            if wg_ip in self._routable and entry is not None:
                out.append((wg_ip, entry))
        return out

    def _pair_deadlines(self) -> list[float]:
        deadlines = []
        for path in self.paths.values():
            if path.state in ("probing", "installing", "punching"):
                deadlines.append(path.deadline)
            if path.state == "punching" and not path.firing:
                deadlines.append(path.fire_at)
            if path.state in ("installing", "punching") and path.installed:
                deadlines.append(path.next_ready)
            if path.state == "failed":
                deadlines.append(path.retry_at)
            if path.state == "direct" and path.suspect_since is not None:
                deadlines.append(path.next_link_ping)
            if path.state == "direct" and path.vouch_until is not None:
                deadlines += [path.next_link_ping, path.vouch_until]
        for wg_ip, path in self.paths.items():
            if self._reprobing(wg_ip, path, path.next_reprobe):
                deadlines.append(path.next_reprobe)
        for wg_ip, _entry in self._pair_hello_candidates():
            deadlines.append(self._pair_hello_at.get(wg_ip, (0.0, 0.0))[0])
        return deadlines

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
