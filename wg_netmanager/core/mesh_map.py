"""The mesh map: every node's links, reported to the statics, merged there,
served to whoever watches. Owned by ``core.node.Node``, which it sees
through ``MeshHost``.

Rules (the story is in docs/architecture.md, "The mesh map"):

1. *Reports.* A node tells every static it has a session with its own
   direct links (``wire.LinkReport``: peer, kind, round trip) and the
   gateway it reaches the others by. Only on change: another set of links,
   kinds or gateways, or a round trip that moved by more than ``RTT_MOVE_REL``
   (and ``RTT_MOVE_ABS``) since it was last reported; at most one report per
   ``REPORT_INTERVAL`` (changes in between coalesce), again to a static whose
   session is new, and once every ``REPORT_REFRESH`` (a lost part is
   repaired). Not a mobile node, which pays for every byte: its static's
   own record has their link, and the other end of each of its direct
   links reports that one. Relayed pairs are implied, never listed (``wire.NodeLinks``):
   the map grows with the links, not with the square of the nodes.
   ``own_record`` (of a status snapshot) defines the record; a check builds
   it from the sessions and the routing's per-gateway sets instead, for a
   cost that follows our links (a test holds the two equal).
2. *Merging* (a static). The latest complete report of each session, its
   own links, and a bare record for every node it reaches that has not
   reported, make the merged map; a new merged map gets the next version.
   A node that is no longer reached (not in a session, not in a table we
   hold) stays on the map, down, for ``DOWN_KEEP``.
3. *Serving* (a static). A ``MapRequest`` (rate limited per session) gets
   the map when it is newer than the asker's, and every later version is
   pushed to it while its watch lasts (at most ``MAX_WATCH``), at most one
   every ``PUSH_INTERVAL`` (versions in between go together). What is sent
   is the change since the version the watcher has (records new or changed,
   wg IPs gone), or the whole map for a watcher that has none; each is
   encoded once per version.
4. *Watching* (a dynamic node). While someone watches (``watch``), the node
   asks the lowest static it has a session with, renewing the watch before
   it ends; a change on top of a version it lacks makes it ask for the whole
   map. Its own record is always its current links, and they win over an
   older report of a peer about a link with it.

Reports and maps are sealed in the session like every message; a report
counts only as the sender's own, a map only from a static's session.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from ipaddress import IPv4Address
from operator import attrgetter
from typing import Protocol

import msgspec
from msgspec.structs import replace

from .. import wire
from ..wire import LinkReport, LinkState, MapPart, MapRequest, NodeInfo, NodeLinks, TableEntry
from .events import DropReason
from .limits import MAX_SOURCES, TokenBuckets
from .sessions import Session
from .status import NodeStatus

REPORT_INTERVAL = 1.0  # seconds between two reports of one node, at least
REPORT_REFRESH = 600.0  # a report is sent again after this long without a change
RTT_MOVE_REL = 0.5  # a round trip "changed" once it moved by half of what was reported ...
RTT_MOVE_ABS = 0.002  # ... and by 2 ms: jitter on a LAN is no news
MERGE_DELAY = 0.05  # reports arriving together make one version
DOWN_KEEP = 600.0  # a node that went away stays on the map (greyed) this long
MAX_WATCH = 60.0  # seconds a static pushes changes to one request
PUSH_INTERVAL = 0.5  # seconds between two maps pushed to one watcher, at least
MAX_ENCODED = 16  # encoded changes kept (one per base a watcher has)
WATCH_ASK = 30.0  # what a watching node asks for; renewed at half of it
REQUEST_BURST, REQUEST_RATE = 4.0, 0.5  # map requests per session
REPORT_PART_BURST, REPORT_PART_RATE = 64.0, 16.0  # report parts per session
MAX_REPORT_PARTS = 32  # about 1,000 links: what one report may hold (memory at the static)

_MAX_COUNT = 2**62

# Everything of a record but its links (cheaper than replace(record, links=())).
_head = attrgetter(*(name for name in NodeLinks.__struct_fields__ if name != "links"))


def _bare(wg_ip: IPv4Address, name: str, *, is_static: bool = False, up: bool = True) -> NodeLinks:
    return NodeLinks(wg_ip, name, is_static, up, None, ())


class MeshHost(Protocol):
    """What ``MeshMap`` reads of its node and may ask of it."""

    @property
    def info(self) -> NodeInfo: ...

    @property
    def is_static(self) -> bool: ...

    @property
    def sessions(self) -> Mapping[IPv4Address, Session]: ...

    @property
    def statics(self) -> Collection[IPv4Address]:
        """The wg IPs of our static peers (network.yaml)."""

    @property
    def clients(self) -> Collection[IPv4Address]:
        """The wg IPs of our plain WireGuard clients (a static's)."""

    def pair_kind(self, wg_ip: IPv4Address) -> str:
        """How a pair session's direct path goes ("lan", "nat", ...; "" if none)."""

    @property
    def gateways(self) -> Mapping[IPv4Address, IPv4Address]:
        """wg IP -> the static that relays it for us (``Routing.gateways``)."""

    @property
    def relayed_by(self) -> Mapping[IPv4Address, Collection[IPv4Address]]:
        """The same per gateway."""

    @property
    def gateways_version(self) -> int:
        """Changes whenever ``gateways`` changed."""

    def statistics(self, now: float) -> NodeStatus: ...

    def listed(self, wg_ip: IPv4Address) -> TableEntry | None:
        """A static table we hold lists that node (it is up, seen from there)."""

    def listed_names(self) -> Mapping[IPv4Address, str]:
        """Every node the static tables we hold list, with its name."""

    def send_encoded(self, body: bytes, to: IPv4Address) -> None:
        """An encoded message over our session with ``to``."""

    def drop(self, reason: DropReason) -> None: ...


class _Watcher(msgspec.Struct):
    """A session that asked for the map: until when, which version it has."""

    until: float
    have: int
    next_push: float  # not before then (PUSH_INTERVAL)


class _Assembly(msgspec.Struct):
    """Parts of one report (or map version) from one session."""

    number: int  # report seq or map version
    parts: int
    received: dict[int, tuple[NodeLinks, ...]]
    base: int = 0  # a map: the version it changes (0: whole)
    removed: tuple[IPv4Address, ...] = ()


class MeshMap:
    """Reporting, merging, serving and watching (rules: the module docstring)."""

    def __init__(self, host: MeshHost) -> None:
        self._host = host
        # Rule 1: our own reports.
        self._reported: NodeLinks | None = None
        self._seq = 0
        # Look at our links then (None: no change pending; a mobile never reports).
        self._check_at: float | None = None if host.info.mobile else 0.0
        self._last_report = -math.inf
        self._resend: set[IPv4Address] = set()  # statics whose session is new
        # (gateways_version, our gateway, the exceptions) for our own record.
        self._via: tuple[int, IPv4Address | None, tuple[tuple[IPv4Address, IPv4Address], ...]]
        self._via = (-1, None, ())
        # Rules 2 and 3: a static's merged map.
        self._reports: dict[IPv4Address, NodeLinks] = {}
        self._report_parts: dict[IPv4Address, _Assembly] = {}
        self._down_since: dict[IPv4Address, float] = {}
        self._merged: tuple[NodeLinks, ...] = ()
        self.version = 0
        self._merge_at: float | None = None
        self._changed_at: dict[IPv4Address, int] = {}  # the version a record last changed
        self._removed_at: dict[IPv4Address, int] = {}  # the version a record left the map
        self._full_before = 0  # a watcher with an older version gets the whole map
        self._encoded: dict[int, tuple[int, list[bytes]]] = {}  # base -> (version, parts)
        self._watchers: dict[IPv4Address, _Watcher] = {}
        self._push_at: float | None = None
        self._requests = TokenBuckets(REQUEST_BURST, REQUEST_RATE, MAX_SOURCES)
        self._parts_allowed = TokenBuckets(REPORT_PART_BURST, REPORT_PART_RATE, MAX_SOURCES)
        # Rule 4: the map a dynamic node got from a static.
        self._watch_until = 0.0
        self._request_at: float | None = None
        self._remote: tuple[NodeLinks, ...] = ()
        self._remote_from: IPv4Address | None = None
        self._remote_version = 0
        self._remote_parts: _Assembly | None = None
        self.received = 0  # complete maps received (a token for watchers)

    # --- the node's calls -------------------------------------------------------

    def changed(self, now: float) -> None:
        """Our sessions, paths or round trips may have changed."""
        if self._check_at is None and not self._host.info.mobile:
            self._check_at = max(now, self._last_report + REPORT_INTERVAL)
        if self._host.is_static and self._merge_at is None:
            self._merge_at = now + MERGE_DELAY
        if self._watching(now) and self._server() != self._remote_from:
            self._request_at = now  # our static changed: ask the next one at once

    def session_opened(self, wg_ip: IPv4Address, now: float) -> None:
        if wg_ip in self._host.statics:
            self._resend.add(wg_ip)
        self.changed(now)

    def session_closed(self, wg_ip: IPv4Address) -> None:
        self._report_parts.pop(wg_ip, None)
        self._watchers.pop(wg_ip, None)
        self._resend.discard(wg_ip)

    def watch(self, until: float, now: float) -> None:
        """Someone looks at the map until ``until``: keep it fresh (rule 4)."""
        if self._host.is_static:
            return  # a static merges the map itself
        if not self._watching(now) or self._server() != self._remote_from:
            self._request_at = now
        self._watch_until = max(self._watch_until, until)

    def deadlines(self) -> list[float]:
        times = (self._check_at, self._merge_at, self._request_at, self._push_at)
        out = [t for t in times if t is not None]
        if self._reported is not None:
            out.append(self._last_report + REPORT_REFRESH)
        if self._down_since:
            out.append(min(self._down_since.values()) + DOWN_KEEP)
        return out

    def handle_timer(self, now: float) -> None:
        if self._reported is not None and now >= self._last_report + REPORT_REFRESH:
            self._send_report(self._own_record(now), now, everyone=True)
        elif self._check_at is not None and now >= self._check_at:
            self._check_at = None
            record = self._own_record(now)
            if self._moved(record):
                self._send_report(record, now, everyone=True)
            elif self._resend and self._reported is not None:
                self._send_report(self._reported, now, everyone=False)
        if self._host.is_static and (
            (self._merge_at is not None and now >= self._merge_at)
            or any(now >= since + DOWN_KEEP for since in self._down_since.values())
        ):
            self._merge_at = None
            self._merge(now)
        if self._push_at is not None and now >= self._push_at:
            self._push(now)
        if self._request_at is not None and now >= self._request_at:
            self._ask(now)

    # --- rule 1: our own links ----------------------------------------------------

    def _own_record(self, now: float) -> NodeLinks:
        """``own_record(statistics)``, for a cost that follows our links: the
        direct ones from the sessions (and clients), the gateway and its
        exceptions from the routing's per-gateway sets, again only after
        they changed (a test holds the two equal)."""
        host = self._host
        gateways, statics, is_static = host.gateways, host.statics, host.is_static
        links = [
            (ip, 0, LinkState(ip, "static" if is_static else "direct", None)) for ip in host.clients
        ]
        for ip, session in host.sessions.items():
            if ip in gateways:
                continue  # a pair still relayed
            if is_static or ip in statics:
                kind = "static"
            else:
                kind = host.pair_kind(ip)
                kind = kind if kind in ("static", "lan", "nat") else "direct"
            links.append((ip, 1, LinkState(ip, kind, session.rtt)))
        links.sort(key=lambda item: (int(item[0]), item[1]))
        version = host.gateways_version
        if self._via[0] != version:
            by = host.relayed_by
            gateway = min(by, key=lambda gw: (-len(by[gw]), gw)) if by else None
            exceptions = sorted((ip, gw) for gw, ips in by.items() if gw != gateway for ip in ips)
            self._via = (version, gateway, tuple(exceptions))
        info = host.info
        return NodeLinks(
            wg_ip=info.wg_ip,
            name=info.name,
            is_static=is_static,
            up=True,
            gateway=self._via[1],
            links=tuple(item[2] for item in links),
            exceptions=self._via[2],
        )

    def _moved(self, record: NodeLinks) -> bool:
        old = self._reported
        if old is None or _head(old) != _head(record):
            return True
        if [(link.peer, link.kind) for link in old.links] != [
            (link.peer, link.kind) for link in record.links
        ]:
            return True
        return any(_rtt_moved(a.rtt, b.rtt) for a, b in zip(old.links, record.links, strict=True))

    def _send_report(self, record: NodeLinks, now: float, *, everyone: bool) -> None:
        self._reported = record
        self._last_report = now
        host = self._host
        targets = [ip for ip in host.statics if ip in host.sessions]
        if not everyone:
            targets = [ip for ip in targets if ip in self._resend]
        self._resend.clear()
        if host.is_static and self._merge_at is None:
            self._merge_at = now + MERGE_DELAY  # our own record is part of our merged map
        if not targets:
            return
        self._seq += 1
        seq = self._seq
        chunks = _chunks(record)
        bodies = [
            wire.encode_message(LinkReport(seq, index, len(chunks), chunk))
            for index, chunk in enumerate(chunks)
        ]
        for ip in targets:
            for body in bodies:
                host.send_encoded(body, ip)

    # --- rule 2: a static merges -----------------------------------------------------

    def on_report(self, sender: IPv4Address, report: LinkReport, now: float) -> None:
        host = self._host
        if not host.is_static:
            host.drop(DropReason.NOT_A_STATIC)
            return
        if report.record.wg_ip != sender or report.parts > MAX_REPORT_PARTS:
            host.drop(DropReason.BAD_MAP)  # a node reports only its own links
            return
        if not self._parts_allowed.allow(sender, now):
            host.drop(DropReason.RATE_LIMITED)
            return
        pending = self._report_parts.get(sender)
        if pending is None or report.seq > pending.number:
            pending = _Assembly(report.seq, report.parts, {})
            self._report_parts[sender] = pending
        elif report.seq < pending.number:
            return  # an older report, late
        if report.parts != pending.parts:
            host.drop(DropReason.BAD_MAP)
            del self._report_parts[sender]
            return
        pending.received[report.part] = (report.record,)
        if len(pending.received) < pending.parts:
            return
        del self._report_parts[sender]
        merged = _join(pending.received)
        if len(merged) != 1:
            host.drop(DropReason.BAD_MAP)
            return
        self._reports[sender] = merged[0]
        if self._merge_at is None:
            self._merge_at = now + MERGE_DELAY

    def _merge(self, now: float) -> None:
        host = self._host
        me = host.info.wg_ip
        own = self._reported if self._reported is not None else self._own_record(now)
        records: dict[IPv4Address, NodeLinks] = {me: replace(own, up=True)}
        statics = set(host.statics)
        for ip, session in host.sessions.items():
            records[ip] = _bare(ip, session.info.name, is_static=ip in statics)
        for ip, record in self._reports.items():
            if ip in records:
                records[ip] = replace(record, name=records[ip].name, up=True)
            elif host.listed(ip):
                records[ip] = replace(record, up=True)
            else:
                records[ip] = replace(record, up=False)
        for ip, name in host.listed_names().items():
            if ip not in records:  # reached through another static only
                records[ip] = _bare(ip, name, is_static=ip in statics)
        self._set_merged(_own_links_win(records, records[me]), now)

    def _set_merged(self, records: dict[IPv4Address, NodeLinks], now: float) -> None:
        # Nodes that were on the map and are no longer reached stay, down.
        for record in self._merged:
            if record.wg_ip not in records:
                records[record.wg_ip] = replace(record, up=False)
        for ip, record in list(records.items()):
            if record.up:
                self._down_since.pop(ip, None)
                continue
            since = self._down_since.setdefault(ip, now)
            if now >= since + DOWN_KEEP:
                del records[ip]
                del self._down_since[ip]
                self._reports.pop(ip, None)
        merged = tuple(records[ip] for ip in sorted(records))
        if merged == self._merged:
            return
        version = self.version + 1
        before = {r.wg_ip: r for r in self._merged}
        for record in merged:
            if before.get(record.wg_ip) != record:
                self._changed_at[record.wg_ip] = version
        for ip in before.keys() - records.keys():
            self._changed_at.pop(ip, None)
            self._removed_at[ip] = version
        if len(self._removed_at) > MAX_SOURCES:  # changes from before then come whole
            self._full_before = max(self._removed_at.values())
            self._removed_at.clear()
        self._merged, self.version = merged, version
        self._push(now)

    # --- rule 3: a static serves ---------------------------------------------------------

    def on_request(self, sender: IPv4Address, request: MapRequest, now: float) -> None:
        host = self._host
        if not host.is_static:
            host.drop(DropReason.NOT_A_STATIC)
            return
        if not self._requests.allow(sender, now):
            host.drop(DropReason.RATE_LIMITED)
            return
        watcher = _Watcher(now + min(request.watch, MAX_WATCH), request.have, now)
        self._watchers[sender] = watcher
        if request.have != self.version:
            self._send_map(sender, watcher, now)

    def _push(self, now: float) -> None:
        """The new version to every watcher that lacks it, at most one map per
        PUSH_INTERVAL each (later changes wait and go together)."""
        self._push_at = None
        for ip, watcher in list(self._watchers.items()):
            if watcher.until <= now or ip not in self._host.sessions:
                del self._watchers[ip]
            elif watcher.have != self.version:
                if now >= watcher.next_push:
                    self._send_map(ip, watcher, now)
                else:
                    self._push_at = min(self._push_at or math.inf, watcher.next_push)

    def _send_map(self, to: IPv4Address, watcher: _Watcher, now: float) -> None:
        for body in self._encode(watcher.have):
            self._host.send_encoded(body, to)
        watcher.have, watcher.next_push = self.version, now + PUSH_INTERVAL

    def _encode(self, have: int) -> list[bytes]:
        """The map as parts: the change since ``have`` if we can say it, else
        whole; each encoded once per (version, base)."""
        base = have if 0 < have < self.version and have >= self._full_before else 0
        cached = self._encoded.get(base)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        if base:
            records = [r for r in self._merged if self._changed_at.get(r.wg_ip, 0) > base]
            removed = tuple(sorted(ip for ip, v in self._removed_at.items() if v > base))
        else:
            records, removed = list(self._merged), ()
        groups = _groups([chunk for record in records for chunk in _chunks(record)])
        bodies = [
            wire.encode_message(MapPart(self.version, index, len(groups), group, base, removed))
            for index, group in enumerate(groups)
        ]
        if len(self._encoded) > MAX_ENCODED:
            self._encoded.clear()
        self._encoded[base] = (self.version, bodies)
        return bodies

    # --- rule 4: a dynamic node watches ---------------------------------------------------

    def _watching(self, now: float) -> bool:
        return now < self._watch_until

    def _server(self) -> IPv4Address | None:
        """The static we ask: the lowest wg IP we have a session with."""
        sessions = self._host.sessions
        return min((ip for ip in self._host.statics if ip in sessions), default=None)

    def _ask(self, now: float) -> None:
        self._request_at = None
        if not self._watching(now):
            return
        server = self._server()
        if server is None:
            return  # changed() asks once a static is back
        have = self._remote_version if server == self._remote_from else 0
        if server != self._remote_from:
            self._remote_parts = None
        self._host.send_encoded(wire.encode_message(MapRequest(have, WATCH_ASK)), server)
        if now + WATCH_ASK / 2 < self._watch_until:
            self._request_at = now + WATCH_ASK / 2

    def on_map(self, sender: IPv4Address, part: MapPart, now: float) -> None:
        host = self._host
        if sender not in host.statics or host.is_static:
            host.drop(DropReason.BAD_MAP)
            return
        if sender != self._server():
            return  # an answer from the static we asked before
        ours = sender == self._remote_from
        if part.base and (not ours or part.base != self._remote_version):
            # A change on top of a version we do not have: ask for the whole map.
            if ours:
                self._remote_version = 0
            self._request_at = now
            return
        pending = self._remote_parts
        if pending is None or (part.version, part.base) != (pending.number, pending.base):
            if ours and part.version == self._remote_version:
                return  # a copy of what we have
            pending = _Assembly(part.version, part.parts, {}, part.base, part.removed)
            self._remote_parts = pending
        if part.parts != pending.parts or part.removed != pending.removed:
            host.drop(DropReason.BAD_MAP)
            self._remote_parts = None
            return
        pending.received[part.part] = part.records
        if len(pending.received) < pending.parts:
            return
        self._remote_parts = None
        records = {r.wg_ip: r for r in self._remote} if pending.base else {}
        for ip in pending.removed:
            records.pop(ip, None)
        records.update((r.wg_ip, r) for r in _join(pending.received))
        self._remote = tuple(records[ip] for ip in sorted(records))
        self._remote_from, self._remote_version = sender, part.version
        self.received += 1

    # --- the picture -----------------------------------------------------------------------

    def picture(self, now: float) -> tuple[NodeLinks, ...]:
        """Every node of the mesh with its links, as far as we know: a static's
        merged map, or the one our static sent (our own record fresh); without
        one, what we know ourselves."""
        host = self._host
        if host.is_static:
            if not self._merged:
                self._merge(now)
            return self._merged
        status = host.statistics(now)
        own = replace(own_record(status), up=True)
        records = {r.wg_ip: r for r in self._remote}
        records[own.wg_ip] = own
        records = _own_links_win(records, own)
        for peer in status.peers:
            if peer.wg_ip not in records:
                records[peer.wg_ip] = _bare(peer.wg_ip, peer.name, is_static=peer.is_static)
        return tuple(records[ip] for ip in sorted(records))

    def token(self) -> object:
        """Changes whenever the picture may have changed (beyond our own links)."""
        return (self.version, self.received)

    @property
    def source(self) -> IPv4Address | None:
        """The static whose map we show (ourselves, if we are one)."""
        return self._host.info.wg_ip if self._host.is_static else self._remote_from


# --- pure helpers ------------------------------------------------------------------


def own_record(status: NodeStatus) -> NodeLinks:
    """A node's record from its status snapshot: direct links, the gateway
    most of its relayed peers go through, and the others as exceptions."""
    links = []
    via: dict[IPv4Address, IPv4Address | None] = {}
    for peer in status.peers:
        if peer.path == "direct":
            kind = peer.kind if peer.kind in ("static", "lan", "nat") else "direct"
            if status.is_static or peer.is_static:
                kind = "static"
            links.append(LinkState(peer.wg_ip, kind, peer.rtt))
        else:
            via[peer.wg_ip] = peer.gateway
    counts = Counter(gw for gw in via.values() if gw is not None)
    gateway = min(counts, key=lambda gw: (-counts[gw], gw)) if counts else None
    return NodeLinks(
        wg_ip=status.wg_ip,
        name=status.name,
        is_static=status.is_static,
        up=True,
        gateway=gateway,
        links=tuple(links),
        exceptions=tuple(sorted((ip, gw) for ip, gw in via.items() if gw != gateway)),
    )


def _own_links_win(
    records: dict[IPv4Address, NodeLinks], own: NodeLinks
) -> dict[IPv4Address, NodeLinks]:
    """Our own links are known here first: another node's report of a link
    with us that we no longer have (it has not reported yet) is left out."""
    mine = {link.peer for link in own.links}
    out = {}
    for ip, record in records.items():
        if ip != own.wg_ip and ip not in mine:
            kept = tuple(link for link in record.links if link.peer != own.wg_ip)
            if len(kept) != len(record.links):
                record = replace(record, links=kept)
        out[ip] = record
    return out


def _rtt_moved(old: float | None, new: float | None) -> bool:
    if new is None:
        return False  # no longer measured: the last value stands
    if old is None:
        return True
    return abs(new - old) > max(RTT_MOVE_ABS, RTT_MOVE_REL * old)


def _size(obj: object) -> int:
    return len(json.dumps(obj, separators=(",", ":")))


# Room for records in one datagram: the message header with the largest numbers.
_ROOM = (
    wire.MAX_DATAGRAM
    - wire.TRANSPORT_OVERHEAD
    - len(wire.encode_message(MapPart(_MAX_COUNT, 4095, 4096, ())))
    - 8
)


def _chunks(record: NodeLinks) -> list[NodeLinks]:
    """``record`` split by its links and exceptions into pieces that each fit a part."""
    base = _size(wire.encode_record(replace(record, links=(), exceptions=())))
    chunks: list[NodeLinks] = []
    links: list[LinkState] = []
    exceptions: list[tuple[IPv4Address, IPv4Address | None]] = []
    size = base
    items: list[tuple[str, object]] = [("l", link) for link in record.links]
    items += [("x", exc) for exc in record.exceptions]
    for kind, item in items:
        if kind == "l":
            assert isinstance(item, LinkState)
            cost = _size(wire.encode_record(replace(record, links=(item,), exceptions=()))) - base
        else:
            cost = len(str(item)) + 8  # two addresses as text, quotes, brackets
        if size + cost + 1 > _ROOM and (links or exceptions):
            chunks.append(replace(record, links=tuple(links), exceptions=tuple(exceptions)))
            links, exceptions, size = [], [], base
        if kind == "l":
            links.append(item)  # type: ignore[arg-type]
        else:
            exceptions.append(item)  # type: ignore[arg-type]
        size += cost + 1
    chunks.append(replace(record, links=tuple(links), exceptions=tuple(exceptions)))
    return chunks


def _groups(chunks: list[NodeLinks]) -> list[tuple[NodeLinks, ...]]:
    groups: list[list[NodeLinks]] = [[]]
    size = 0
    for chunk in chunks:
        cost = _size(wire.encode_record(chunk)) + 1
        if groups[-1] and size + cost > _ROOM:
            groups.append([])
            size = 0
        groups[-1].append(chunk)
        size += cost
    return [tuple(group) for group in groups]


def _join(parts: Mapping[int, tuple[NodeLinks, ...]]) -> tuple[NodeLinks, ...]:
    """The chunks of all parts, joined per node (in order of the parts)."""
    joined: dict[IPv4Address, NodeLinks] = {}
    for index in sorted(parts):
        for chunk in parts[index]:
            have = joined.get(chunk.wg_ip)
            if have is None:
                joined[chunk.wg_ip] = chunk
            elif len(have.links) + len(chunk.links) <= wire.MAX_LINKS:
                joined[chunk.wg_ip] = replace(
                    have,
                    links=have.links + chunk.links,
                    exceptions=have.exceptions + chunk.exceptions,
                )
    return tuple(joined[ip] for ip in sorted(joined))


Relayed = tuple[IPv4Address, IPv4Address, IPv4Address]


def relayed_pairs(records: Iterable[NodeLinks]) -> list[Relayed]:
    """``(a, b, via)`` for every pair of up nodes without a direct link, a < b:
    via ``a``'s gateway for ``b`` (its exception, else its gateway), else
    ``b``'s for ``a``; pairs with no known gateway are left out."""
    ups = sorted((r for r in records if r.up), key=lambda r: r.wg_ip)
    direct = {frozenset((r.wg_ip, link.peer)) for r in ups for link in r.links}
    exceptions = {r.wg_ip: dict(r.exceptions) for r in ups}

    def gateway(of: NodeLinks, to: IPv4Address) -> IPv4Address | None:
        return exceptions[of.wg_ip].get(to, of.gateway)

    out = []
    for i, a in enumerate(ups):
        for b in ups[i + 1 :]:
            if frozenset((a.wg_ip, b.wg_ip)) in direct:
                continue
            via = gateway(a, b.wg_ip) or gateway(b, a.wg_ip)
            if via is not None and via not in (a.wg_ip, b.wg_ip):
                out.append((a.wg_ip, b.wg_ip, via))
    return out
