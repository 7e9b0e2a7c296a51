"""Static tables: the one a static node publishes, and the ones a node holds.

Rules:

1. A static node's table lists every session whose key is in its WireGuard:
   info, boot, the endpoint its WireGuard sees (a NAT's outside) and the
   admin source. A change of any of these makes a new version, pushed to
   every session after ``table_push_delay`` (bursts coalesce).
2. A table is split into parts that each fit one datagram; a version counts
   once all its parts arrived. An older or repeated version changes nothing.
3. Pings and pongs carry the sender's table version: a holder that sees a
   version it does not have (and is not assembling) asks for it (``treq``).
4. A table entry for our own wg IP with our boot says the static has us in
   its WireGuard (``listed_by``) and where our outside is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address

from .. import wire
from ..model import WgPeerReading
from ..wire import Table, TableEntry
from .sessions import Session

# Parts are measured with the largest numbers the header can carry here.
_MAX_PART, _MAX_PARTS = 4095, 4096


class OwnTable:
    """A static node's table (rule 1)."""

    def __init__(self) -> None:
        self.version = 0
        self._signature: tuple[object, ...] = ()
        self.push_at: float | None = None

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
                    boot=session.boot,
                    wg_endpoint=reading.endpoint,
                    admin_endpoint=session.addr,
                    age=max(0.0, now - session.last_heard),
                )
            )
        return entries

    def update(self, entries: Iterable[TableEntry], now: float, push_delay: float) -> bool:
        """A new version if what the table says changed (ages do not count)."""
        signature = tuple((e.info, e.boot, e.wg_endpoint, e.admin_endpoint) for e in entries)
        if signature == self._signature:
            return False
        self._signature = signature
        self.version += 1
        if self.push_at is None:
            self.push_at = now + push_delay
        return True

    def push_due(self, now: float) -> bool:
        """True once, when the coalesced push is due."""
        if self.push_at is None or now < self.push_at:
            return False
        self.push_at = None
        return True

    def parts(self, entries: list[TableEntry]) -> list[Table]:
        """The table as datagram-sized parts (rule 2)."""
        groups: list[list[TableEntry]] = [[]]
        for entry in entries:
            candidate = Table(self.version, _MAX_PART, _MAX_PARTS, (*groups[-1], entry))
            if groups[-1] and wire.encoded_size(candidate) > wire.MAX_DATAGRAM:
                groups.append([entry])
            else:
                groups[-1].append(entry)
        return [
            Table(self.version, index, len(groups), tuple(group))
            for index, group in enumerate(groups)
        ]


@dataclass
class PendingTable:
    version: int
    parts: int
    received: dict[int, tuple[TableEntry, ...]]


@dataclass(frozen=True)
class Received:
    """A complete new table version from one static."""

    ours: TableEntry | None  # our own entry with our boot (rule 4)
    outside: int  # entries dropped: wg IP outside the subnet


class Listings:
    """The tables of the static nodes we have sessions with."""

    def __init__(self) -> None:
        self.tables: dict[IPv4Address, dict[IPv4Address, TableEntry]] = {}
        self.versions: dict[IPv4Address, int] = {}
        self.pending: dict[IPv4Address, PendingTable] = {}
        self.listed_by: set[IPv4Address] = set()  # statics whose table has us (rule 4)

    def wants(self, static_ip: IPv4Address, version: int) -> bool:
        """Ask for ``version``? (rule 3)"""
        if version == self.versions.get(static_ip, 0):
            return False
        pending = self.pending.get(static_ip)
        return pending is None or pending.version != version

    def receive(
        self,
        static_ip: IPv4Address,
        table: Table,
        me: tuple[IPv4Address, bytes],
        member: Callable[[IPv4Address], bool],
    ) -> Received | None:
        """One part; the result once a new version is complete (rule 2).

        Raises ``ValueError`` for a part that contradicts its version's part count.
        """
        if table.version <= self.versions.get(static_ip, 0) and static_ip in self.tables:
            return None  # old or duplicate
        pending = self.pending.get(static_ip)
        if pending is None or pending.version != table.version:
            if pending is not None and pending.version > table.version:
                return None
            pending = PendingTable(table.version, table.parts, {})
            self.pending[static_ip] = pending
        if table.parts != pending.parts:
            raise ValueError("part count")
        pending.received[table.part] = table.entries
        if len(pending.received) < pending.parts:
            return None
        del self.pending[static_ip]
        listing: dict[IPv4Address, TableEntry] = {}
        self.listed_by.discard(static_ip)
        ours, outside = None, 0
        for part in range(pending.parts):
            for entry in pending.received[part]:
                wg_ip = entry.info.wg_ip
                if wg_ip == me[0]:
                    if entry.boot == me[1]:
                        ours = entry
                        self.listed_by.add(static_ip)
                    continue
                if not member(wg_ip):
                    outside += 1
                    continue
                listing[wg_ip] = entry
        self.tables[static_ip] = listing
        self.versions[static_ip] = table.version
        return Received(ours, outside)

    def forget(self, static_ip: IPv4Address) -> None:
        """The session with that static ended or restarted (it numbers versions afresh)."""
        self.listed_by.discard(static_ip)
        self.tables.pop(static_ip, None)
        self.versions.pop(static_ip, None)
        self.pending.pop(static_ip, None)

    def freshest(
        self, wg_ip: IPv4Address, trusted: Callable[[IPv4Address], bool]
    ) -> TableEntry | None:
        """The freshest entry for a node among the tables of ``trusted`` statics."""
        best: TableEntry | None = None
        for static_ip, listing in self.tables.items():
            entry = listing.get(wg_ip)
            if entry is None or not trusted(static_ip):
                continue
            if best is None or entry.age < best.age:
                best = entry
        return best

    def name_of(self, wg_ip: IPv4Address) -> str | None:
        for listing in self.tables.values():
            if wg_ip in listing:
                return listing[wg_ip].info.name
        return None
