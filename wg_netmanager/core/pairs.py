"""Direct links between two dynamic nodes: the pair-path state machine.

Rules (the story of why is in docs/architecture.md, "Direct links"):

1. One ``PairPath`` per pair session, on each side; its state moves only
   along ``TRANSITIONS`` (a move the table lacks is a bug and raises).
2. ``Pairs`` is owned by ``core.node.Node`` and sees it only through
   ``PairHost``: read-only views (sessions, the static tables, WireGuard
   readings) and a few requests (send, send relayed, ping, forget a session,
   recompute the desired state, emit an event).
3. WireGuard state per path state:

   ==========  ===================================================
   relayed     no peer (X reached via its gateway)
   clearing    the old peer is being removed (an old session must
               not fake success)
   probing     no peer; Probe sent to X's LAN addresses
   installing  X's key, no AllowedIPs, no endpoint (cannot initiate)
   punching    X's key, no AllowedIPs, endpoint + keepalive once
               ``firing`` (the higher wg IP fires first)
   direct      X's key, X/32, keepalive
   failed      no peer; retried at ``retry_at`` (backoff)
   ==========  ===================================================

4. A direct link is watched through WireGuard's byte counters: suspect after
   ``LINK_SUSPECT_BYTES`` sent without a byte back or a keepalive period of
   silence; then pinged every ``link_probe_interval``; lost after
   ``link_timeout`` without a byte back.
5. Leaving a direct link is told to the peer, over the link and relayed by a
   static; a lost LAN link is re-probed by the lower wg IP.
6. A pair session lives while a static lists that key, and no later run of
   it: a higher boot number (a restart with the key kept, wire.Hello) ends
   the session and its link at once, whatever their state, and the pair
   starts afresh via the gateway; a lower one (a static that has not met the
   session's run yet) changes nothing. Unlisted, a direct link keeps the
   session only if the peer's daemon answers a ping over it.
7. Eager (the default): the lower wg IP opens a pair session with every
   dynamic node a static lists. Lazy (``links: lazy``): a node opens one only
   towards a node it exchanges traffic with (``Node.set_demand``: the shell's
   sensor sees packets to and from it, the daemons' own datagrams not
   counted); either side may, and crossed handshakes settle (handshake.py
   rule 7). A lazy pair without traffic for ``idle_after`` is closed: a Bye,
   the session and its link gone, traffic via the gateway until asked again
   (by traffic seen after the close, not before it).
   A mobile node (core/mobile.py) is always lazy, and nobody else opens a
   pair session towards one: it opens its own when its sensor sees traffic
   either way.
8. The peer's local addresses are its word, not proven: each is probed once
   per pair session (the peer cannot make us probe an address it names again
   and again: no amplifier), again only on our own retries (with backoff)
   or once our own addresses changed. An address that answered its own
   probe (each address's token is a MAC under a secret of the attempt), or
   that carried a direct LAN link, is proven and probed whenever needed.
9. A punch's WireGuard must send: our initiation shows in its byte count
   within ``punch_send_check`` of firing, or the trial peer is removed and
   added again, once per attempt. A backstop: the cause found (wireguard-go
   held the initiation back for 5 s after a keepalive it had been told to
   send while the peer had no endpoint; about one start in eight) is
   avoided where the requests are written (uapi.set_lines); without it the
   pair would wait out punch_timeout whatever else keeps WireGuard silent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address
from typing import Protocol

from .. import wire
from ..model import Endpoint, WgPeer, WgPeerReading
from ..wire import NodeInfo, TableEntry
from . import events as ev
from .pair_path import (
    TRANSITIONS,
    TRYING,
    PairPath,
    PathState,
    Trigger,
    last_failure,
    start_watch,
    watch_link,
)
from .sessions import Session
from .timers import Timers

S, T = PathState, Trigger
MAX_WANTED = 4096  # destinations with demand remembered (bounded, like every table)
# Seconds; doubling up to MAX_PAIR_HELLO_RETRY. Short: the first hello often
# goes out while the static does not yet have the peer's endpoint (its
# handshake is a moment behind ours), and costs a few bytes through the tunnel.
# Once the static's table shows that endpoint (the static's WireGuard has met
# the peer, so the tunnel reaches it), a hello goes at once, whatever the backoff.
FIRST_PAIR_HELLO_RETRY = 0.05
# After that hello, the next follows this soon (then the backoff doubles
# again): the peer's copy of the table, and so its route and WireGuard
# AllowedIPs for us, can come a moment after ours, and until then its
# WireGuard drops our hello (4 of 16 bench starts waited ~95 ms for the retry).
MET_PAIR_HELLO_RETRY = 0.02
MAX_PAIR_HELLO_RETRY = 10.0
MAX_PROBED = 4 * wire.MAX_LOCAL_ENDPOINTS  # addresses probed per pair session (rule 8)


class PairHost(Protocol):
    """What ``Pairs`` reads of its node and may ask of it."""

    @property
    def info(self) -> NodeInfo: ...

    @property
    def visible_endpoint(self) -> Endpoint | None: ...

    @property
    def sessions(self) -> Mapping[IPv4Address, Session]: ...

    def listed(self, wg_ip: IPv4Address) -> TableEntry | None:
        """The freshest entry for a node among the static tables we hold."""

    def relayed_peers(self) -> Iterable[IPv4Address]:
        """Nodes reached through a gateway whose kernel route is applied."""

    def via_gateway(self, wg_ip: IPv4Address) -> bool:
        """Is that node among ``relayed_peers()``? (without listing them all)"""

    def reading(self, public_key: str) -> WgPeerReading | None:
        """Our latest ``wg show`` line for that key."""

    def gateway_rtt(self) -> float: ...

    def send(self, message: wire.Message, addr: Endpoint, to: IPv4Address) -> None: ...

    def send_relayed(self, message: wire.Message, to: IPv4Address) -> bool:
        """Seal ``message`` for ``to`` and have a static pass it on; False: none can."""

    def say_hello(self, addr: Endpoint, to: IPv4Address, now: float) -> None: ...

    def ping(self, session: Session, now: float) -> None: ...

    def forget(self, wg_ip: IPv4Address) -> None:
        """The pair session is over (no static lists it, no answer over the link)."""

    def changed(self, now: float) -> None:
        """The desired WireGuard peers and routes may have changed."""

    def emit(self, event: ev.Event) -> None: ...

    def ref(self, wg_ip: IPv4Address) -> ev.PeerRef: ...

    def random_bytes(self, size: int) -> bytes: ...

    def jitter(self, interval: float) -> float: ...


class Pairs:
    """Every pair path of one node (rules: the module docstring)."""

    def __init__(self, host: PairHost, timers: Timers, lazy: bool = False) -> None:
        self._host = host
        self.timers = timers
        self.lazy = lazy
        self.paths: dict[IPv4Address, PairPath] = {}
        # (due, backoff, whether the last hello went after the peer's endpoint was listed)
        self._hello_at: dict[IPv4Address, tuple[float, float, bool]] = {}
        self._wanted: dict[IPv4Address, float] = {}  # lazy: destination -> last traffic

    # --- the node's view -----------------------------------------------------

    def __contains__(self, wg_ip: IPv4Address) -> bool:
        return wg_ip in self.paths

    def is_direct(self, wg_ip: IPv4Address) -> bool:
        return self.paths[wg_ip].state is S.DIRECT

    def in_use(self, since: float) -> bool:
        """A direct link sent something since ``since`` (poll `wg show` often)."""
        return any(p.state is S.DIRECT and p.sent_at > since for p in self.paths.values())

    def awaiting_wg(self) -> bool:
        """A `wg show` reading is awaited: a peer leaving, a first handshake,
        a suspect link."""
        for path in self.paths.values():
            if path.state in (S.CLEARING, *TRYING):
                return True
            if path.state is S.DIRECT and path.suspect_since is not None:
                return True
        return False

    def punch_began(self) -> float | None:
        """When the latest punch under way began, None if none is."""
        began = [path.since for path in self.paths.values() if path.state is S.PUNCHING]
        return max(began, default=None)

    def settling(self) -> bool:
        """A direct link is being set up: an eager pair with a node we reach
        through a gateway has not been tried to the end yet (neither direct
        nor failed), or an attempt is under way."""
        host = self._host
        if not self.lazy:
            for wg_ip in host.relayed_peers():
                entry = host.listed(wg_ip)
                if entry is None or entry.info.client:  # runs no daemon
                    continue
                if entry.info.mobile and not host.info.mobile:  # it opens its own links
                    continue
                path = self.paths.get(wg_ip)
                if path is None or path.state not in (S.DIRECT, S.FAILED):
                    return True
        return any(path.state in (S.CLEARING, S.PROBING, *TRYING) for path in self.paths.values())

    def trial_peers(self) -> dict[str, WgPeer]:
        """WireGuard peers of attempts not yet direct: no AllowedIPs, so traffic
        stays on the gateway until the handshake."""
        peers = {}
        for ip, path in self.paths.items():
            if path.state in TRYING and not path.recreating:
                key = self._host.sessions[ip].info.public_key
                punching = path.state is S.PUNCHING and path.firing
                peers[key] = WgPeer(
                    public_key=key,
                    allowed_ips=(),
                    endpoint=path.endpoint if punching else None,
                    persistent_keepalive=self.timers.keepalive if punching else 0,
                )
        return peers

    def retry_now(self, wg_ip: IPv4Address, now: float) -> str | None:
        """A failed attempt is tried again at once instead of after its backoff
        (someone asked). The path's state, or None: no such pair."""
        path = self.paths.get(wg_ip)
        if path is None:
            return None
        if path.state is S.FAILED:
            path.retry_at = now
            return "retrying"
        return path.state.value

    def status(self, wg_ip: IPv4Address) -> tuple[str, str] | None:
        """(kind, reason) for the status snapshot."""
        path = self.paths.get(wg_ip)
        return None if path is None else (path.kind or "", path.reason)

    # --- lifecycle of a pair session -------------------------------------------

    def opened(self, wg_ip: IPv4Address, now: float) -> None:
        """A pair session was established (or replaced by a new boot)."""
        self._hello_at.pop(wg_ip, None)
        self.paths[wg_ip] = PairPath(active_at=now)  # the opener has traffic for us
        if not self._listed_run(wg_ip):
            # Rule 6 ends it at once: not one probe to the addresses it named
            # (else each handshake of an unlisted key would buy a round of them).
            self._host.changed(now)
            return
        self._start_attempt(wg_ip, now)

    def _listed_run(self, wg_ip: IPv4Address) -> bool:
        """Does a static list this session's key, at this run or an earlier one?"""
        entry, session = self._host.listed(wg_ip), self._host.sessions[wg_ip]
        return (
            entry is not None
            and entry.info.public_key == session.info.public_key
            and entry.boot_number <= session.boot_number
        )

    def demand(self, destinations: Iterable[IPv4Address], now: float) -> None:
        """We exchanged traffic with these wg IPs lately (rule 7)."""
        for wg_ip in destinations:
            if len(self._wanted) >= MAX_WANTED and wg_ip not in self._wanted:
                self._forget_wants(now)
                if len(self._wanted) >= MAX_WANTED:
                    break
            self._wanted[wg_ip] = now
            path = self.paths.get(wg_ip)
            if path is not None:
                path.active_at = now

    def _forget_wants(self, now: float) -> None:
        for wg_ip in [ip for ip, at in self._wanted.items() if now - at >= self.timers.idle_after]:
            del self._wanted[wg_ip]

    def _close_idle(self, wg_ip: IPv4Address, now: float) -> None:
        """Rule 7: no traffic for ``idle_after``: Bye, session and link gone."""
        host = self._host
        session = host.sessions[wg_ip]
        # Over the link and relayed (as a leaving notice, rule 5): once our end
        # is gone, the peer's WireGuard drops what comes via the gateway.
        host.send(wire.Bye(), (str(wg_ip), session.info.admin_port), wg_ip)
        host.send_relayed(wire.Bye(), wg_ip)
        host.emit(ev.PairIdle(host.ref(wg_ip), self.timers.idle_after))
        del self.paths[wg_ip]
        self._wanted.pop(wg_ip, None)
        host.forget(wg_ip)
        host.changed(now)

    def closed(self, wg_ip: IPv4Address) -> None:
        self.paths.pop(wg_ip, None)
        # Traffic seen before the close does not open it again (rule 7): the
        # peer closed it as idle when its sensor saw the last packet a little
        # before ours did. Traffic after the close is read again at once.
        self._wanted.pop(wg_ip, None)

    def interface_reset(self, now: float) -> None:
        """Our WireGuard interface was re-created: every link starts over."""
        for wg_ip, path in list(self.paths.items()):
            if path.state is not S.RELAYED:
                self._start_attempt(wg_ip, now, recompute=False, again=True)

    def prune(self, now: float) -> None:
        """Rule 6, and a static's newer view of a peer's addresses.

        A static that lists another key, or a later run of the key, saw the
        peer restart: the session goes.
        """
        host = self._host
        for wg_ip in list(self.paths):
            session = host.sessions[wg_ip]
            path = self.paths[wg_ip]
            entry = host.listed(wg_ip)
            if entry is not None and entry.info.public_key == session.info.public_key:
                if entry.boot_number > session.boot_number:
                    # Its old run's link is dead (the new run's WireGuard does
                    # not know us) and would hold the /32: drop it all now.
                    host.emit(ev.PairPeerRestarted(host.ref(wg_ip), entry.boot_number))
                    del self.paths[wg_ip]
                    host.forget(wg_ip)
                    continue
                path.unlisted = False
                path.vouch_until = None
                if entry.boot_number < session.boot_number:
                    continue  # an earlier run's entry: its addresses are no news
                if entry.info != session.info:
                    # The static heard of the peer's new addresses first (our
                    # direct link to it may be the very thing that broke).
                    session.info = entry.info
                signature = self._signature(session, entry, path.signature)
                if path.signature != signature and path.signature:
                    learned = _only_learned(path.signature, signature)
                    if learned and path.state not in (S.RELAYED, S.FAILED):
                        # An outside endpoint became known (the static saw a
                        # handshake): nothing moved, and the attempt or link
                        # in progress stays; a relayed path may now try it.
                        path.signature = signature
                        outside = self._other_nat(wg_ip, path)
                        if path.state is S.PROBING and outside is not None:
                            # Behind another NAT: its LAN is not ours, so the
                            # window is not waited out (the probes still count).
                            self._install(wg_ip, path, T.OTHER_NAT, outside, now)
                        continue
                    host.emit(ev.PairAddressesChanged(host.ref(wg_ip)))
                    path.signature = signature
                    path.lan_first = False
                    self._start_attempt(wg_ip, now, recompute=False)
                continue
            if entry is None and path.state is S.DIRECT:
                if not path.unlisted:  # is its daemon still there?
                    path.unlisted = True
                    path.vouch_until = now + self.timers.link_timeout
                    path.vouch_seq = session.ping_seq + 1
                    path.next_link_ping = now
                if path.vouch_until is None or now < path.vouch_until:
                    continue
                host.emit(ev.PairUnanswered(host.ref(wg_ip)))
            del self.paths[wg_ip]
            host.forget(wg_ip)

    # --- inputs ---------------------------------------------------------------

    def on_probe(self, session: Session, token: int, addr: Endpoint, now: float) -> None:
        wg_ip = session.info.wg_ip
        path = self.paths.get(wg_ip)
        if path is None:
            return
        probe_id = token >> 32  # (see PairPath.token_for)
        fresh = probe_id != path.peer_probe
        path.peer_probe = probe_id
        on_lan = addr in session.info.local_endpoints
        # Only a new attempt of the peer's is followed: a late probe of the one
        # that just failed on both ends would restart it, the peer would follow
        # ours, and so on every punch_timeout, whatever the backoff.
        if fresh and path.state in (S.RELAYED, S.FAILED, S.DIRECT):
            self._start_attempt(wg_ip, now)  # the peer (re)starts: follow it
        elif on_lan and path.kind == "nat" and path.state in TRYING:
            self._lan_answers(wg_ip, now)  # the LAN is back: better than NAT
        # A probe that arrives straight from one of the peer's own addresses
        # shows a direct underlay path as well as an answer to ours would
        # (and ours may have been sent before the peer had our session).
        if path.state is S.PROBING and on_lan:
            self._install(wg_ip, path, T.LAN_ANSWERED, (addr[0], session.info.wg_port), now)
            self._host.changed(now)

    def on_probe_ack(self, session: Session, token: int, addr: Endpoint, now: float) -> None:
        wg_ip = session.info.wg_ip
        path = self.paths.get(wg_ip)
        if path is None or token >> 32 != path.probe_id:
            return
        answered = next(
            (e for e in path.probed | path.lan_proven if path.token_for(e) == token), None
        )
        if answered is None:
            return
        if len(path.lan_proven) < MAX_PROBED:
            path.lan_proven.add(answered)
        if path.state is S.PROBING:
            self._install(wg_ip, path, T.LAN_ANSWERED, (addr[0], session.info.wg_port), now)
            self._host.changed(now)
        elif self._reprobing(wg_ip, path, now) or (path.kind == "nat" and path.state in TRYING):
            self._lan_answers(wg_ip, now)

    def on_leaving(self, session: Session, attempt: int, now: float) -> None:
        """The peer left our direct link (it broke, or it starts over): leave it too."""
        wg_ip = session.info.wg_ip
        path = self.paths.get(wg_ip)
        if path is None or attempt <= path.peer_attempt:
            return  # old, or the other copy (one comes over the link, one relayed)
        path.peer_attempt = attempt
        if path.state in (S.DIRECT, S.RELAYED, S.FAILED):
            if path.state is S.DIRECT:
                self._host.emit(ev.PeerLeftLink(self._host.ref(wg_ip)))
                self._lan_lost(path, now)  # maybe it broke: whoever re-probes needs to know
            self._start_attempt(wg_ip, now)

    def on_ready(
        self, session: Session, attempt: int, peer_direct: bool, now: float, fired: bool = False
    ) -> None:
        wg_ip = session.info.wg_ip
        path = self.paths.get(wg_ip)
        if path is None or attempt < path.peer_attempt:
            return  # from an attempt the peer has given up
        if path.state is S.DIRECT and attempt == path.peer_attempt:
            return  # a late copy from the attempt that made us direct
        new = attempt > path.peer_attempt  # a repeated Ready of a failed attempt is not
        path.peer_attempt = attempt
        if peer_direct and path.state in TRYING and path.installed:
            self._go_direct(wg_ip, path, T.PEER_DIRECT, now)  # follow at once
            return
        if (path.state in (S.RELAYED, S.FAILED) and new) or (
            path.state is S.DIRECT and not peer_direct
        ):
            self._start_attempt(wg_ip, now)
        if path.state in (S.PROBING, S.INSTALLING):
            path.peer_ready = True
        self._advance(wg_ip, path, now)
        if fired and path.state is S.PUNCHING and not path.firing:
            # The higher wg IP's initiation has left (this came the longer way,
            # through the gateway, after its WireGuard counted the bytes):
            # ours follows now, not after punch_stagger.
            path.fire_at = min(path.fire_at, now + self._host.gateway_rtt() / 2)

    def on_pong(self, session: Session, seq: int) -> None:
        """A pong from a pair peer: if it answers the vouch check, the link vouches."""
        path = self.paths.get(session.info.wg_ip)
        if path is not None and path.vouch_until is not None and seq >= path.vouch_seq:
            path.vouch_until = None  # its daemon answered

    def on_wg(self, now: float) -> None:
        """A new ``wg show`` reading: installed yet? handshake yet? still alive?"""
        for wg_ip in list(self.paths):
            path = self.paths.get(wg_ip)
            if path is not None:
                self._path_wg(wg_ip, path, now)

    # --- timers ---------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        host = self._host
        for wg_ip, path in list(self.paths.items()):
            if wg_ip not in self.paths:
                continue
            if path.state is S.PROBING and now >= path.deadline:
                self._probe_over(wg_ip, path, now)
                host.changed(now)
            elif path.state is S.INSTALLING and now >= path.deadline:
                why = f"{_label(host.ref(wg_ip))} never got ready"
                self._fail(wg_ip, path, T.NEVER_READY, now, why)
            elif path.state is S.PUNCHING and now >= path.deadline:
                timeout = self.timers.punch_timeout
                why = f"no WireGuard handshake over {path.kind} within {timeout:g} s"
                if path.kind == "nat":
                    why += " (symmetric NAT or strict firewall?)"
                reading = host.reading(host.sessions[wg_ip].info.public_key)
                host.emit(ev.PunchFailed(host.ref(wg_ip), reading))
                self._fail(wg_ip, path, T.PUNCH_TIMEOUT, now, why)
            elif path.state is S.FAILED and now >= path.retry_at:
                self._start_attempt(wg_ip, now, again=True)  # our pace: backoff
            elif path.state is S.PUNCHING and not path.firing and now >= path.fire_at:
                self._fire(wg_ip, path, now)
                host.changed(now)
                self._advance(wg_ip, path, now)
            elif path.state in TRYING:
                self._advance(wg_ip, path, now)
            if wg_ip not in self.paths:
                continue
            session = host.sessions[wg_ip]
            if path.vouch_until is not None and now >= path.vouch_until:
                host.changed(now)  # unlisted, and its daemon did not answer
                continue
            if path.checking_link and now >= path.next_link_ping:
                host.ping(session, now)  # its pong comes back over the link, if it works
                path.next_link_ping = now + self.timers.link_probe_interval
            if self._reprobing(wg_ip, path, now) and now >= path.next_reprobe:
                self._probe_lan(wg_ip, path, session, again=False)
                path.next_reprobe = now + self.timers.lan_reprobe_interval
        if self.lazy:
            for wg_ip, path in list(self.paths.items()):
                if now >= path.active_at + self.timers.idle_after:
                    self._close_idle(wg_ip, now)
            self._forget_wants(now)
        for wg_ip, entry in self._hello_candidates():
            if now < self._hello_due(wg_ip, entry, now):
                continue
            host.say_hello((str(wg_ip), entry.info.admin_port), wg_ip, now)
            _due, backoff, was_met = self._hello_at.get(wg_ip, (now, FIRST_PAIR_HELLO_RETRY, False))
            met = entry.wg_endpoint is not None
            if met and not was_met:
                backoff = MET_PAIR_HELLO_RETRY
            self._hello_at[wg_ip] = (now + backoff, min(backoff * 2, MAX_PAIR_HELLO_RETRY), met)

    def deadlines(self) -> list[float]:
        deadlines = []
        for wg_ip, path in self.paths.items():
            if path.state in (S.PROBING, *TRYING):
                deadlines.append(path.deadline)
            if path.state is S.PUNCHING and not path.firing:
                deadlines.append(path.fire_at)
            if path.state in TRYING and path.installed:
                deadlines.append(path.next_ready)
            if path.state is S.FAILED:
                deadlines.append(path.retry_at)
            if path.checking_link:
                deadlines.append(path.next_link_ping)
            if path.state is S.DIRECT and path.vouch_until is not None:
                deadlines.append(path.vouch_until)
            if self._reprobing(wg_ip, path, path.next_reprobe):
                deadlines.append(path.next_reprobe)
        for wg_ip, entry in self._hello_candidates():
            deadlines.append(self._hello_due(wg_ip, entry, 0.0))
        if self.lazy:
            deadlines += [p.active_at + self.timers.idle_after for p in self.paths.values()]
        return deadlines

    # --- transitions ------------------------------------------------------------

    def _move(self, wg_ip: IPv4Address, path: PairPath, trigger: Trigger, now: float) -> None:
        """The one place a path changes state (rule 1)."""
        new = TRANSITIONS[path.state].get(trigger)
        if new is None:
            raise RuntimeError(f"pair path: no transition from {path.state} on {trigger}")
        self._host.emit(
            ev.PathStateChanged(self._host.ref(wg_ip), path.state.value, new.value, trigger.value)
        )
        path.state = new
        path.since = now
        path.recreating = False  # only ever within one punch (rule 9)

    def _signature(
        self, session: Session, entry: TableEntry | None, previous: tuple[object, ...] = ()
    ) -> tuple[object, ...]:
        """What a path choice depends on; a change (roaming) means try again.

        An outside endpoint that is momentarily unknown (a static restarted and
        has not seen the handshake yet) keeps its last known value: only a real
        move counts.
        """
        theirs = entry.wg_endpoint if entry else None
        mine = self._host.visible_endpoint
        if previous:
            theirs = theirs or previous[2]  # type: ignore[assignment]
            mine = mine or previous[4]  # type: ignore[assignment]
        info = self._host.info
        return (session.boot, session.info.local_endpoints, theirs, info.local_endpoints, mine)

    def _start_attempt(
        self, wg_ip: IPv4Address, now: float, recompute: bool = True, again: bool = False
    ) -> None:
        """A new attempt (``again``: on our own initiative, so addresses probed
        before may be probed again, rule 8)."""
        host = self._host
        path = self.paths[wg_ip]
        session = host.sessions[wg_ip]
        path.signature = self._signature(session, host.listed(wg_ip), path.signature)
        path.attempt += 1
        if path.state is S.DIRECT:
            self._tell_leaving(wg_ip, path)
        # Firing is per attempt: a lower wg IP still firing from the last one
        # would send with the higher one, and crossed initiations stall both
        # WireGuards until their retry, 5 s later.
        path.installed = path.peer_ready = path.firing = path.told_fired = False
        path.fire_tx = None
        path.recreating = path.recreated = False
        if host.reading(session.info.public_key) is not None:
            # WireGuard still has the peer from an earlier link or attempt: its
            # old session would hide whether a new handshake happens. Remove it
            # first (the gateway carries the traffic meanwhile).
            self._move(wg_ip, path, T.ATTEMPT_CLEAR, now)
            path.reason = "removing the previous link"
            if recompute:
                host.changed(now)
            return
        trigger = T.CLEARED if path.state is S.CLEARING else T.ATTEMPT
        self._move(wg_ip, path, trigger, now)
        path.kind = path.endpoint = None
        path.started = now
        path.probe_id = int.from_bytes(host.random_bytes(4), "big") >> 2
        path.probe_key = host.random_bytes(16)
        path.reason = "probing local addresses" + last_failure(path)
        # A LAN that answered is waited for even if its address was not ours to
        # probe again (a probe from it arrives: ``on_probe``).
        waits = self._probe_lan(wg_ip, path, session, again) or path.lan_first
        path.deadline = now + (self.timers.probe_window if waits else 0.0)
        if not waits:
            self._probe_over(wg_ip, path, now)
        elif (outside := self._other_nat(wg_ip, path)) is not None:
            # Behind another NAT (or none): its LAN is not ours, so the outside
            # endpoint is tried at once; the probes still go out, and a LAN
            # that answers after all wins (``_lan_answers``).
            self._install(wg_ip, path, T.OTHER_NAT, outside, now)
        if recompute:
            host.changed(now)

    def _probe_lan(self, wg_ip: IPv4Address, path: PairPath, session: Session, again: bool) -> bool:
        """Probe the peer's local addresses that rule 8 lets us; any probed?"""
        host = self._host
        ours = host.info.local_endpoints
        if again or path.probed_from != ours:
            path.probed.clear()  # we moved, or try again at our own pace
            path.probed_from = ours
        sent = False
        for endpoint in session.info.local_endpoints:
            if endpoint not in path.lan_proven:
                if endpoint in path.probed or len(path.probed) >= MAX_PROBED:
                    continue
                path.probed.add(endpoint)
            host.send(wire.Probe(path.token_for(endpoint)), endpoint, wg_ip)
            sent = True
        return sent

    def _other_nat(self, wg_ip: IPv4Address, path: PairPath) -> Endpoint | None:
        """The peer's outside endpoint if its outside address is not ours."""
        entry = self._host.listed(wg_ip)
        theirs = entry.wg_endpoint if entry else None
        mine = self._host.visible_endpoint
        if path.lan_first or theirs is None or mine is None or theirs[0] == mine[0]:
            return None
        return theirs

    def _probe_over(self, wg_ip: IPv4Address, path: PairPath, now: float) -> None:
        entry = self._host.listed(wg_ip)
        if entry is None or entry.wg_endpoint is None:
            self._move(wg_ip, path, T.OUTSIDE_UNKNOWN, now)
            path.reason = "its outside endpoint is not known yet"
            return
        self._install(wg_ip, path, T.PROBE_WINDOW_OVER, entry.wg_endpoint, now)

    def _install(
        self, wg_ip: IPv4Address, path: PairPath, trigger: Trigger, endpoint: Endpoint, now: float
    ) -> None:
        self._move(wg_ip, path, trigger, now)
        path.kind = "lan" if trigger is T.LAN_ANSWERED else "nat"
        path.endpoint = endpoint
        path.deadline = now + self.timers.punch_timeout * 2  # bounded wait for Ready
        where = f"{endpoint[0]}:{endpoint[1]}"
        path.reason = f"trying {path.kind} endpoint {where}" + last_failure(path)

    def _path_wg(self, wg_ip: IPv4Address, path: PairPath, now: float) -> None:
        host = self._host
        reading = host.reading(host.sessions[wg_ip].info.public_key)
        if path.state is S.CLEARING:
            if reading is None:
                self._start_attempt(wg_ip, now)
            return
        if path.recreating:
            if reading is None:  # out of WireGuard: back in, endpoint and all (rule 9)
                path.recreating = False
                self._fire(wg_ip, path, now)
                host.changed(now)
            return
        if path.state in TRYING and reading is not None:
            if not path.installed:
                path.installed = True
                path.next_ready = now
            sent = path.fire_tx is not None and reading.tx_bytes > path.fire_tx
            if sent and not path.told_fired and self._host.info.wg_ip > wg_ip:
                # Our initiation has left: the lower wg IP's may follow. Said
                # when WireGuard sent it, not when its endpoint was applied:
                # on a busy machine the send can come later, and the peer's
                # initiation, through its NAT first, would cross ours.
                path.told_fired = True
                self._send_ready(wg_ip, path, fired=True)
            silent = path.fire_tx is not None and not sent and reading.handshake_age is None
            checked = now >= path.fired_at + self.timers.punch_send_check
            if silent and checked and not path.recreated:  # rule 9
                path.recreated = path.recreating = True
                host.emit(ev.PunchResent(host.ref(wg_ip)))
                host.changed(now)
                return
            age = reading.handshake_age
            # wg reports whole seconds: allow one second of rounding.
            if age is not None and age <= now - path.started + 1.0:
                self._go_direct(wg_ip, path, T.HANDSHAKE, now)
                self._send_ready(wg_ip, path, direct=True)
                # Relayed too: until the peer has moved our /32 to the link,
                # its WireGuard drops what comes over the link (this Ready
                # included), and ours what it sends via the gateway.
                self._host.send_relayed(wire.Ready(path.attempt, direct=True), wg_ip)
                return
        elif path.state is S.DIRECT:
            age = reading.handshake_age if reading else None
            if reading is not None and age is None and now < path.since + self.timers.link_timeout:
                # Gone direct on the peer's word: a responder's WireGuard shows
                # the handshake only once the initiator's first packet over it
                # (its keepalive) has come in, a moment later.
                self._advance(wg_ip, path, now)
                return
            if reading is None or age is None or age > self.timers.direct_stale_after:
                why = "direct link lost its handshake"
                self._fail(wg_ip, path, T.HANDSHAKE_STALE, now, why, soon=True)
                return
            if not watch_link(path, reading, now, self.timers):
                why = "the direct link stopped answering"
                self._fail(wg_ip, path, T.LINK_LOST, now, why, lost=True)
                return
            # Gone direct on the peer's word (PEER_DIRECT), before our reading
            # showed the handshake: the LAN address is proven now (rule 8), so
            # a lost LAN is re-probed there, not only at the next attempt.
            self._prove_lan(path, host.sessions[wg_ip], reading)
        self._advance(wg_ip, path, now)

    def _prove_lan(self, path: PairPath, session: Session, reading: WgPeerReading) -> bool:
        """A WireGuard handshake came from one of the peer's local addresses:
        that address is proven (rule 8). Whether the endpoint is on its LAN."""
        if reading.endpoint is None:
            return False
        lan = [e for e in session.info.local_endpoints if e[0] == reading.endpoint[0]]
        if lan and lan[0] not in path.lan_proven and len(path.lan_proven) < MAX_PROBED:
            path.lan_proven.add(lan[0])
        return bool(lan)

    def _go_direct(self, wg_ip: IPv4Address, path: PairPath, trigger: Trigger, now: float) -> None:
        host = self._host
        session = host.sessions[wg_ip]
        reading = host.reading(session.info.public_key)
        if reading is not None and reading.endpoint is not None:
            # The handshake may have come in on another path than the one we
            # tried (the peer's candidate won): report what WireGuard uses.
            path.endpoint = reading.endpoint
            lan = self._prove_lan(path, session, reading)
            path.kind = "lan" if lan else "nat"
        self._move(wg_ip, path, trigger, now)
        path.failures = 0
        path.lan_lost_until = 0.0
        start_watch(path, reading, now)
        path.reason = f"direct ({path.kind}) since the handshake"
        host.emit(ev.DirectLink(host.ref(wg_ip), path.kind, path.endpoint))
        host.changed(now)

    def _advance(self, wg_ip: IPv4Address, path: PairPath, now: float) -> None:
        if path.state in TRYING and path.installed and now >= path.next_ready:
            # Repeated: a lost Ready would leave the peer waiting for the timeout.
            self._send_ready(wg_ip, path, fired=path.told_fired)
            path.next_ready = now + self.timers.ready_interval
        if path.state is S.INSTALLING and path.installed and path.peer_ready:
            self._move(wg_ip, path, T.BOTH_READY, now)
            path.deadline = now + self.timers.punch_timeout
            # The higher wg IP sends first (opening its NAT); the lower follows
            # once that first initiation has had time to arrive.
            if self._host.info.wg_ip > wg_ip:
                self._fire(wg_ip, path, now)
            path.fire_at = now + self.timers.punch_stagger + self._host.gateway_rtt()
            self._send_ready(wg_ip, path)
            path.next_ready = now + self.timers.ready_interval
            self._host.changed(now)

    def _fire(self, wg_ip: IPv4Address, path: PairPath, now: float) -> None:
        """Our WireGuard gets the endpoint (trial_peers). What it had sent the
        peer before: more in a later reading means the initiation has left."""
        path.firing = True
        path.fired_at = now
        reading = self._host.reading(self._host.sessions[wg_ip].info.public_key)
        path.fire_tx = 0 if reading is None else reading.tx_bytes

    def _send_ready(
        self, wg_ip: IPv4Address, path: PairPath, direct: bool = False, fired: bool = False
    ) -> None:
        # Always through the tunnel (direct or via the gateway): the session
        # may have been opened over a LAN that roaming has since left.
        port = self._host.sessions[wg_ip].info.admin_port
        ready = wire.Ready(path.attempt, direct=direct, fired=fired)
        self._host.send(ready, (str(wg_ip), port), wg_ip)

    def _fail(
        self,
        wg_ip: IPv4Address,
        path: PairPath,
        trigger: Trigger,
        now: float,
        why: str,
        soon: bool = False,
        lost: bool = False,
    ) -> None:
        """The attempt failed (or, ``lost``, a working direct link stopped): relayed."""
        soon = soon or lost
        was_direct = path.state is S.DIRECT
        if was_direct:
            path.attempt += 1
            self._tell_leaving(wg_ip, path)
        path.failures = 0 if soon else path.failures + 1
        backoff = min(
            self.timers.path_retry_max,
            self.timers.path_retry_min * 2 ** max(0, path.failures - 1),
        )
        if lost and was_direct:
            self._lan_lost(path, now)
        self._move(wg_ip, path, trigger, now)
        path.suspect_since = None
        wait = self.timers.ready_interval if soon else self._host.jitter(backoff)
        path.retry_at = now + wait
        path.last_failure = why
        path.reason = f"{why}; relayed, retry in {wait:.0f} s"
        if self._reprobing(wg_ip, path, now):
            path.reason += f", LAN probed every {self.timers.lan_reprobe_interval:g} s"
        self._host.emit(ev.DirectLinkFailed(self._host.ref(wg_ip), path.reason, lost))
        self._host.changed(now)

    def _lan_lost(self, path: PairPath, now: float) -> None:
        """A direct LAN link is gone: re-probe it now and then (rule 5)."""
        if path.kind == "lan":
            path.lan_lost_until = now + self.timers.lan_reprobe_for
            path.next_reprobe = now + self.timers.lan_reprobe_interval

    def _tell_leaving(self, wg_ip: IPv4Address, path: PairPath) -> None:
        """We leave the direct link: the peer must too, or it drops what we send
        it via the gateway (its WireGuard has our address on the direct peer).
        Over the link, if it still works, and relayed by a static, because it
        may not."""
        notice = wire.Ready(path.attempt, leaving=True)
        port = self._host.sessions[wg_ip].info.admin_port
        self._host.send(notice, (str(wg_ip), port), wg_ip)
        self._host.send_relayed(notice, wg_ip)

    def _reprobing(self, wg_ip: IPv4Address, path: PairPath, now: float) -> bool:
        """Probe a lost LAN link now and then? (the lower wg IP of the pair does)"""
        if now >= path.lan_lost_until or self._host.info.wg_ip > wg_ip:
            return False
        if path.state in (S.PROBING, S.CLEARING, S.DIRECT):
            return False
        return not (path.kind == "lan" and path.state in TRYING)

    def _lan_answers(self, wg_ip: IPv4Address, now: float) -> None:
        """The peer's LAN address answers while we try (or gave up on) another way."""
        self._host.emit(ev.LanAnswers(self._host.ref(wg_ip)))
        self.paths[wg_ip].lan_first = True
        self._start_attempt(wg_ip, now)

    def _hello_due(self, wg_ip: IPv4Address, entry: TableEntry, now: float) -> float:
        """When the next pair hello to ``wg_ip`` is due (``now``: the first)."""
        due, _backoff, met = self._hello_at.get(wg_ip, (now, 0.0, False))
        if entry.wg_endpoint is not None and not met:
            return now  # the tunnel through the static reaches it now
        return due

    def _hello_candidates(self) -> list[tuple[IPv4Address, TableEntry]]:
        """Dynamic nodes we should open a session with (rule 7), through the
        gateway tunnel, once the kernel has the route there (before that, the
        datagram would leak to the underlay)."""
        out = []
        host = self._host
        me = host.info.wg_ip
        if self.lazy:  # rule 7: whoever has traffic for the other
            wanted: Iterable[IPv4Address] = [ip for ip in self._wanted if host.via_gateway(ip)]
        else:
            wanted = [ip for ip in host.relayed_peers() if ip > me]
        for wg_ip in wanted:
            if wg_ip in host.sessions:
                continue
            entry = host.listed(wg_ip)
            if entry is None or entry.info.client:  # runs no daemon (core/clients.py)
                continue
            if not entry.info.mobile or host.info.mobile:
                out.append((wg_ip, entry))
        return out


def _only_learned(old: tuple[object, ...], new: tuple[object, ...]) -> bool:
    """``new`` differs from ``old`` only in outside endpoints that were unknown."""
    outside = (2, 4)  # the peer's and ours, in ``Pairs._signature``
    pairs = enumerate(zip(old, new, strict=True))
    return all(a == b or (i in outside and a is None) for i, (a, b) in pairs)


def _label(peer: ev.PeerRef) -> str:
    # The one sentence the core keeps as text: a pair's status line for the TUI.
    return f"{peer.name} ({peer.wg_ip})" if peer.name is not None else str(peer.wg_ip)
