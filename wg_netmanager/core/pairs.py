"""Direct links between two dynamic nodes: the pair-path state machine.

Part of the pure core (no I/O, time passed in): ``PairLinks`` is mixed into
``core.node.Node`` and works on its sessions, tables and desired state; one
``PairPath`` per peer on each side, in one of these states:

  state       WireGuard peer for X            leaves on
  relayed     none (X via its gateway)        attempt start -> probing
  probing     none; Probe to X's LAN addrs    ProbeAck -> installing(lan)
                                              probe_window over -> installing(nat)
                                              (or relayed if X's outside is unknown)
  installing  X's key, no AllowedIPs, no      our wg shows X -> send Ready (repeated);
              endpoint (cannot initiate)      + Ready from X -> punching
  punching    X's key, no AllowedIPs,         handshake -> direct
              endpoint + keepalive: both      punch_timeout -> failed
              sides initiate at once
  direct      X's key, X/32, keepalive        handshake stale -> failed
                                              link silent (below) -> failed (lost)
  failed      none                            retry_at (backoff) -> probing
                                              lost LAN link answers a probe -> probing

A handshake seen in installing also means direct (X initiated). Any change of
either side's addresses (roaming) restarts from probing. Installing without
AllowedIPs first matters twice: traffic keeps flowing via the gateway while
the link is tried, and WireGuard allows only one handshake initiation per
5 s, so the first must meet a peer that already knows our key.

Watching a direct link costs nothing while it works: every `wg show` reading
says how many bytes went each way. A link that received something since the
last reading is fine. One that sent LINK_SUSPECT_BYTES without receiving a
byte, or that received nothing for longer than a keepalive period (the
least a working link brings is the peer's keepalives), is suspect: the
peer gets a ping every link_probe_interval (its pong comes back over the
link, if the link works); without a byte received for link_timeout the link
is lost and the pair falls back to the gateway. A lost LAN link is probed
every lan_reprobe_interval (by the lower wg IP) for lan_reprobe_for, so it
comes back about a second after the LAN does, whatever the retry backoff.

Leaving a direct link (it was lost, or an attempt starts over) is told to the
peer, which leaves it too: Ready(leaving) over the link, in case it still
works, and relayed by a static (wire.Relay), because through the gateway's
tunnel the peer's WireGuard would drop it (our address is on its direct
peer). So the side that notices a break first takes the other along at once.

A pair session lives while a static lists that boot. Unlisted (the peer went
silent at the static, or the statics are down or restarted and have not met
it yet), a direct link keeps it if the peer's daemon answers a ping over the
link within link_timeout: existing direct links survive a static's absence,
a dead peer's do not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from .. import wire
from ..model import Endpoint, WgPeerReading
from ..wire import Header, TableEntry

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..wire import Message, NodeInfo
    from .node import Session, StaticTarget
    from .timers import Timers

# A direct link is suspect once we sent this many bytes over it without
# receiving any: more than a handshake initiation plus a keepalive, so an
# idle link never is, while a few packets of real traffic are enough.
LINK_SUSPECT_BYTES = 300


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


class PairLinks:
    """The pair-path methods of ``Node`` (see the module docstring)."""

    if TYPE_CHECKING:  # what they use of the Node they are mixed into
        info: NodeInfo
        timers: Timers
        boot: bytes
        is_static: bool
        statics: dict[IPv4Address, StaticTarget]
        sessions: dict[IPv4Address, Session]
        paths: dict[IPv4Address, PairPath]
        listings: dict[IPv4Address, dict[IPv4Address, TableEntry]]
        visible_endpoint: Endpoint | None
        _key: bytes
        _counter: int
        _random_bytes: Callable[[int], bytes]
        _wg: dict[str, WgPeerReading]
        _gateways: dict[IPv4Address, IPv4Address]
        _routable: set[IPv4Address]
        _pair_hello_at: dict[IPv4Address, tuple[float, float]]
        _sources: frozenset[Endpoint] | None

        def _send(
            self, message: Message, addr: Endpoint, to: IPv4Address = wire.UNKNOWN_RECEIVER
        ) -> None: ...
        def _send_hello(
            self,
            addr: Endpoint,
            now: float,
            echo: bytes | None,
            want_echo: bool,
            to: IPv4Address = wire.UNKNOWN_RECEIVER,
        ) -> None: ...
        def _ping(self, session: Session, now: float) -> None: ...
        def _recompute(self, now: float) -> None: ...
        def _addr_of(self, session: Session) -> Endpoint: ...
        def _event(self, level: int, text: str) -> None: ...
        def _jitter(self, interval: float) -> float: ...
        def _label(self, wg_ip: IPv4Address) -> str: ...

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
        if path.state == "probing" and on_lan:
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

    @staticmethod
    def _checking_link(path: PairPath) -> bool:
        """A direct link being pinged: suspect, or vouching for an unlisted peer."""
        checking = path.suspect_since is not None or path.vouch_until is not None
        return path.state == "direct" and checking

    def _pair_pong(self, session: Session, seq: int) -> None:
        """A pong from a pair peer: if it answers the vouch check, the link vouches."""
        path = self.paths.get(session.info.wg_ip)
        if path is not None and path.vouch_until is not None and seq >= path.vouch_seq:
            path.vouch_until = None  # its daemon answered

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
            if self._checking_link(path) and now >= path.next_link_ping:
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
        for wg_ip, path in self.paths.items():
            if path.state in ("probing", "installing", "punching"):
                deadlines.append(path.deadline)
            if path.state == "punching" and not path.firing:
                deadlines.append(path.fire_at)
            if path.state in ("installing", "punching") and path.installed:
                deadlines.append(path.next_ready)
            if path.state == "failed":
                deadlines.append(path.retry_at)
            if self._checking_link(path):
                deadlines.append(path.next_link_ping)
            if path.state == "direct" and path.vouch_until is not None:
                deadlines.append(path.vouch_until)
            if self._reprobing(wg_ip, path, path.next_reprobe):
                deadlines.append(path.next_reprobe)
        for wg_ip, _entry in self._pair_hello_candidates():
            deadlines.append(self._pair_hello_at.get(wg_ip, (0.0, 0.0))[0])
        return deadlines
