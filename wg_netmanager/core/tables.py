"""Static tables: the one a static node publishes, and the ones a node holds.

Rules:

1. A static node's table lists every session whose key is in its WireGuard:
   info (with its public key), the endpoint its WireGuard sees (a NAT's
   outside), the admin source and the session's boot number (which run of
   that key, from its handshake). A change of any of these makes a new
   version. The static sends it at once if it pushed nothing for the last
   ``table_push_delay``, else that long after its last push (a burst
   coalesces; a lone change, such as a node's outside learned at start-up,
   waits for nothing). Each session gets the *change* (entries new or
   changed, wg IPs removed, on top of the version before) if it has the
   version before, else the whole table. Either is encoded once per version,
   not once per session, so one change costs the static O(sessions) and each
   node O(1).
2. A table is split into parts that each fit one datagram; a version counts
   once all its parts arrived. An older or repeated version changes nothing.
   A change on top of a version the holder does not have is not applied: the
   holder asks for the whole table (``treq``, rate limited at the static).
3. Pings and pongs carry the static's published version (the last one
   pushed): a holder that sees a newer version than its own asks for it,
   unless it is assembling that version and this is the first ping or pong
   to name it since (its parts are on their way). A lost change is repaired
   at the next ping, a change with a part lost at the next but one; the
   whole table asked for replaces the parts of the change.
4. A table entry for our own wg IP with our own key says the static has us
   in its WireGuard (``listed_by``) and where our outside is.
5. Of the entries for one node in several tables, a later run of the same
   key wins (a static that has not met the new run yet lists the old one);
   otherwise the freshest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Address

import msgspec

from .. import wire
from ..model import WgPeerReading
from ..wire import Table, TableEntry
from .sessions import Session

# Parts are measured with the largest numbers the header can carry here.
_MAX_PART, _MAX_PARTS = 4095, 4096
_MAX_VERSION = 2**62


def _signature(entry: TableEntry) -> tuple[object, ...]:
    # Ages do not count.
    return (entry.info, entry.wg_endpoint, entry.admin_endpoint, entry.boot_number)


class OwnTable:
    """A static node's table (rule 1)."""

    def __init__(self) -> None:
        self.version = 0
        self.push_at: float | None = None
        self._last_push = -math.inf
        self._said: dict[IPv4Address, tuple[object, ...]] = {}  # as of ``version``
        self._pushed: dict[IPv4Address, tuple[object, ...]] = {}  # as of the last push
        self._pushed_version = 0
        self._full: tuple[int, list[bytes]] | None = None  # (version, encoded parts)

    @staticmethod
    def entries(
        sessions: Mapping[IPv4Address, Session],
        readings: Mapping[str, WgPeerReading],
        now: float,
    ) -> list[TableEntry]:
        entries = []
        for _ip, session in sorted(sessions.items()):
            reading = readings.get(session.info.public_key)
            if reading is None:
                continue  # not in our WireGuard yet: its handshake would fail
            entries.append(
                TableEntry(
                    info=session.info,
                    wg_endpoint=reading.endpoint,
                    admin_endpoint=session.addr,
                    age=max(0.0, now - session.last_heard),
                    boot_number=session.boot_number,
                )
            )
        return entries

    def update(self, entries: Iterable[TableEntry], now: float, push_delay: float) -> bool:
        """A new version if what the table says changed."""
        said = {e.info.wg_ip: _signature(e) for e in entries}
        if said == self._said:
            return False
        self._said = said
        self.version += 1
        if self.push_at is None:
            self.push_at = max(now, self._last_push + push_delay)
        return True

    @property
    def published(self) -> int:
        """The version every session has been sent (what pings and pongs say):
        a change not pushed yet must not make the nodes ask for it (rule 3)."""
        return self._pushed_version

    def push_due(self, now: float) -> bool:
        """True once, when the coalesced push is due."""
        if self.push_at is None or now < self.push_at:
            return False
        self.push_at = None
        self._last_push = now
        return True

    def take_change(self, entries: list[TableEntry]) -> tuple[int, list[bytes]]:
        """(base, encoded parts): what changed since the last push, on top of
        version ``base`` (0: nothing was pushed yet)."""
        base = self._pushed_version
        changed = [e for e in entries if self._pushed.get(e.info.wg_ip) != _signature(e)]
        removed = tuple(sorted(self._pushed.keys() - {e.info.wg_ip for e in entries}))
        self._pushed = {e.info.wg_ip: _signature(e) for e in entries}
        self._pushed_version = self.version
        if not base:
            return 0, []
        return base, self._encode(changed, base, removed)

    def cached_full(self) -> list[bytes] | None:
        """The whole table of this version if it was encoded already."""
        if self._full is None or self._full[0] != self.version:
            return None
        return self._full[1]

    def full_parts(self, entries: list[TableEntry]) -> list[bytes]:
        """The whole table, encoded once per version."""
        if self._full is None or self._full[0] != self.version:
            self._full = (self.version, self._encode(entries, 0, ()))
        return self._full[1]

    def _encode(
        self, entries: list[TableEntry], base: int, removed: tuple[IPv4Address, ...]
    ) -> list[bytes]:
        """Datagram-sized parts (rule 2), encoded."""
        groups: list[list[TableEntry]] = [[]]
        for entry in entries:
            candidate = Table(
                _MAX_VERSION, _MAX_PART, _MAX_PARTS, (*groups[-1], entry), base, removed
            )
            if groups[-1] and wire.encoded_size(candidate) > wire.MAX_DATAGRAM:
                groups.append([entry])
            else:
                groups[-1].append(entry)
        return [
            wire.encode_message(
                Table(self.version, index, len(groups), tuple(group), base, removed)
            )
            for index, group in enumerate(groups)
        ]


class PendingTable(msgspec.Struct):
    version: int
    parts: int
    base: int
    received: dict[int, Table]
    named: int = 0  # pings and pongs that named this version since (rule 3)


class Received(msgspec.Struct, frozen=True):
    """A new table version from one static is complete (or could not be applied)."""

    ours: TableEntry | None = None  # our own entry (rule 4), if this version has it
    outside: int = 0  # entries dropped: wg IP outside the subnet
    need_full: bool = False  # a change on top of a version we do not have (rule 2)


class Listings:
    """The tables of the static nodes we have sessions with."""

    def __init__(self) -> None:
        self.tables: dict[IPv4Address, dict[IPv4Address, TableEntry]] = {}
        self.versions: dict[IPv4Address, int] = {}
        self.pending: dict[IPv4Address, PendingTable] = {}
        self.listed_by: set[IPv4Address] = set()  # statics whose table has us (rule 4)
        # wg IPs that joined or left some table since take_changed (routing
        # follows them instead of walking every table).
        self._changed: set[IPv4Address] = set()

    def take_changed(self) -> set[IPv4Address]:
        out, self._changed = self._changed, set()
        return out

    def wants(self, static_ip: IPv4Address, version: int) -> bool:
        """Ask for ``version``? (rule 3)"""
        if version <= self.versions.get(static_ip, 0):
            return False
        pending = self.pending.get(static_ip)
        if pending is None or pending.version != version:
            return True
        pending.named += 1
        return pending.named > 1

    def receive(
        self,
        static_ip: IPv4Address,
        table: Table,
        me: tuple[IPv4Address, str],
        member: Callable[[IPv4Address], bool],
    ) -> Received | None:
        """One part; the result once a version is complete (rule 2).

        ``me``: our wg IP and public key. Raises ``ValueError`` for a part that
        contradicts the others of its version.
        """
        have = self.versions.get(static_ip, 0)
        if table.version <= have and static_ip in self.tables:
            return None  # old or duplicate
        pending = self.pending.get(static_ip)
        if pending is not None and pending.version == table.version and table.base != pending.base:
            if table.base:
                return None  # a part of the change, after the whole table was asked for
            pending = None  # the whole table, asked for because a part was lost (rule 3)
        if table.base and (table.base != have or static_ip not in self.tables):
            self.pending.pop(static_ip, None)
            return Received(need_full=True)
        if pending is None or pending.version != table.version:
            if pending is not None and pending.version > table.version:
                return None
            pending = PendingTable(table.version, table.parts, table.base, {})
            self.pending[static_ip] = pending
        if table.parts != pending.parts or table.base != pending.base:
            raise ValueError("parts")
        pending.received[table.part] = table
        if len(pending.received) < pending.parts:
            return None
        del self.pending[static_ip]
        old = self.tables.get(static_ip, {})
        # A change is applied in place (O(change)); a whole table replaces it.
        listing = old if table.base else {}
        ours, outside = None, 0
        if not table.base:
            self.listed_by.discard(static_ip)
        for part in range(pending.parts):
            received = pending.received[part]
            for wg_ip in received.removed:
                if listing.pop(wg_ip, None) is not None and table.base:
                    self._changed.add(wg_ip)
                if wg_ip == me[0]:
                    self.listed_by.discard(static_ip)
            for entry in received.entries:
                wg_ip = entry.info.wg_ip
                if wg_ip == me[0]:
                    if entry.info.public_key == me[1]:
                        ours = entry
                        self.listed_by.add(static_ip)
                    else:
                        self.listed_by.discard(static_ip)
                    continue
                if not member(wg_ip):
                    outside += 1
                    continue
                if table.base and wg_ip not in listing:
                    self._changed.add(wg_ip)
                listing[wg_ip] = entry
        if not table.base:
            self._changed.update(old.keys() ^ listing.keys())
        self.tables[static_ip] = listing
        self.versions[static_ip] = table.version
        return Received(ours, outside)

    def forget(self, static_ip: IPv4Address) -> None:
        """The session with that static ended or restarted (it numbers versions afresh)."""
        self.listed_by.discard(static_ip)
        self._changed.update(self.tables.pop(static_ip, {}))
        self.versions.pop(static_ip, None)
        self.pending.pop(static_ip, None)

    def freshest(
        self, wg_ip: IPv4Address, trusted: Callable[[IPv4Address], bool]
    ) -> TableEntry | None:
        """The entry for a node among the tables of ``trusted`` statics: a
        later run of the same key first, then the freshest (rule 5)."""
        best: TableEntry | None = None
        for static_ip, listing in self.tables.items():
            entry = listing.get(wg_ip)
            if entry is None or not trusted(static_ip):
                continue
            if best is None:
                best = entry
            elif entry.info.public_key == best.info.public_key and (
                entry.boot_number != best.boot_number
            ):
                if entry.boot_number > best.boot_number:
                    best = entry
            elif entry.age < best.age:
                best = entry
        return best

    def name_of(self, wg_ip: IPv4Address) -> str | None:
        for listing in self.tables.values():
            if wg_ip in listing:
                return listing[wg_ip].info.name
        return None
