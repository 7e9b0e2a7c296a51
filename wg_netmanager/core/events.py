"""What the core reports: typed events and the reasons a datagram is dropped.

Events are frozen records, ``msgspec.Struct`` classes (model.py says why
not dataclasses; aioquic's ``quic/events.py`` and h11's ``_events.py`` are
the model): the core says *what* happened, with the facts; the edges
(``event_text.py`` for the log, the TUI and ``status``) decide how it reads.
A peer is named by ``PeerRef`` (its wg IP and, if known, its name) taken when
the event happens, since names come and go with sessions and tables.

``DropReason`` is the one vocabulary of dropped datagrams, used by the codec
(``wire.Drop``), the core's counters, tests and benchmarks. It is a
``StrEnum``: counters keyed by it print and serialise as plain text.
"""

from __future__ import annotations

from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network

import msgspec

from ..model import Endpoint, WgPeerReading


class DropReason(StrEnum):
    # The codec (wire.py): bytes that are no valid datagram.
    BAD_SEAL = "bad seal"
    UNKNOWN_VERSION = "unknown version"
    MALFORMED = "malformed"
    # The core: a valid datagram that must not change anything.
    MUTED_SOURCE = "muted source"
    OWN_DATAGRAM = "own datagram"
    OWN_WG_IP = "own wg IP"
    OUTSIDE_SUBNET = "outside subnet"
    NOT_FOR_US = "not for us"
    NO_SESSION = "no session"
    REPLAY = "replay"
    RATE_LIMITED = "rate limited"
    CONFLICT = "conflict"
    KEY_CHANGED = "key changed"
    INFO_CHANGED_IDENTITY = "info changes identity"
    STALE_REFUSAL = "stale refusal"
    TABLE_FROM_NON_STATIC = "table from non-static"
    BAD_RELAY = "bad relay"
    NOT_A_STATIC = "not a static"  # a mesh map report or request to a dynamic node
    BAD_MAP = "bad map"  # a report not of the sender's own links, a map not from a static
    NO_ROUTE_YET = "no route yet"  # a send, not a receive: it would leak to the underlay
    # Sessions (core/handshake.py).
    OLD_VERSION = "old protocol version"
    NO_HANDSHAKE = "no such handshake"
    BAD_HANDSHAKE = "bad handshake"
    CROSSED_HANDSHAKE = "crossed handshake"
    KEY_NOT_PROVEN = "key not proven"
    PINNED_KEY = "not the pinned key"
    COOKIE_SENT = "cookie sent"
    BAD_COOKIE = "bad cookie"
    SESSION_CAP = "session cap"
    BAD_TRANSPORT = "bad transport"
    STALE_INDEX = "stale index"


class PeerRef(msgspec.Struct, frozen=True):
    wg_ip: IPv4Address
    name: str | None = None


# --- sessions and identity -----------------------------------------------------


class PeerConnected(msgspec.Struct, frozen=True):
    peer: PeerRef
    address: str  # the underlay address its proven hello came from


class PeerRestarted(msgspec.Struct, frozen=True):
    peer: PeerRef
    public_key: str  # the new boot's key
    same_key: bool = False  # it kept its key (a pinned static, a run after a crash)
    boot_number: int = 0  # which run of that key (wire.Hello)


class PeerSaidBye(msgspec.Struct, frozen=True):
    peer: PeerRef


class PeerSilent(msgspec.Struct, frozen=True):
    """No datagram for ``dead_after``: the session is dropped."""

    peer: PeerRef


class HolderAsked(msgspec.Struct, frozen=True):
    """A proven new boot from another address: the current holder is pinged first."""

    peer: PeerRef
    newcomer: Endpoint


class Conflict(msgspec.Struct, frozen=True):
    """Two live nodes claim one wg IP, show one WireGuard key, or use one name.

    ``claimant`` (at ``address``, with ``claimant_key``) claimed ``claimed_ip``;
    ``holder`` keeps it. ``key_twin``: the claimant showed the holder's key
    under another wg IP. ``name_twin``: the claimant (another wg IP, another
    key) announced the holder's name, ``claimant_name``.
    """

    address: Endpoint
    claimant_key: str
    claimed_ip: IPv4Address
    holder_name: str
    holder_ip: IPv4Address
    holder_key: str
    key_twin: bool
    name_twin: bool = False
    claimant_name: str = ""


class RefusedByPeer(msgspec.Struct, frozen=True):
    """A node refuses us: our wg IP (or WireGuard key, or name) is another live node's."""

    peer: PeerRef
    holder_name: str
    holder_ip: IPv4Address
    holder_key: str
    key_twin: bool  # our key is the holder's (it has another wg IP)
    our_ip: IPv4Address
    name_twin: bool = False  # our name is the holder's (another wg IP, another key)


# --- paths ------------------------------------------------------------------------


class ReachableVia(msgspec.Struct, frozen=True):
    peer: PeerRef
    gateway: PeerRef


class PeerGone(msgspec.Struct, frozen=True):
    """No path is left to a node (no session, no static lists it)."""

    wg_ip: IPv4Address


class DirectLink(msgspec.Struct, frozen=True):
    """A direct WireGuard link to a dynamic peer came up (first handshake)."""

    peer: PeerRef
    kind: str | None  # "lan" | "nat"
    endpoint: Endpoint | None


class DirectLinkFailed(msgspec.Struct, frozen=True):
    """An attempt failed, or (``lost``) a working direct link stopped: relayed.

    ``reason`` is the pair's status line (why, and when it retries), as the
    TUI shows it.
    """

    peer: PeerRef
    reason: str
    lost: bool


class PeerLeftLink(msgspec.Struct, frozen=True):
    """The peer told us it left our direct link; we leave it too."""

    peer: PeerRef


class PairAddressesChanged(msgspec.Struct, frozen=True):
    """Either side of a pair moved (roaming): the direct path is tried again."""

    peer: PeerRef


class PairPeerRestarted(msgspec.Struct, frozen=True):
    """A static lists a later run of the pair peer's key (``boot_number``): its
    old run's pair session and link are gone, and the pair starts over."""

    peer: PeerRef
    boot_number: int


class PairUnanswered(msgspec.Struct, frozen=True):
    """No static lists the peer, and its daemon did not answer over the link."""

    peer: PeerRef


class PairIdle(msgspec.Struct, frozen=True):
    """A lazy pair carried no traffic for ``idle_after``: its link is closed."""

    peer: PeerRef
    seconds: float


class LanAnswers(msgspec.Struct, frozen=True):
    """A lost LAN link answers again: the pair tries it at once."""

    peer: PeerRef


class PunchFailed(msgspec.Struct, frozen=True):
    """Debug detail of a failed NAT traversal: what WireGuard had."""

    peer: PeerRef
    reading: WgPeerReading | None


class PunchResent(msgspec.Struct, frozen=True):
    """Our WireGuard sent nothing on the punch's endpoint: the peer is set
    up again (core/pairs.py rule 9)."""

    peer: PeerRef


class StaticHandshakeResent(msgspec.Struct, frozen=True):
    """No first WireGuard handshake with a static peer within
    ``firstHandshakeResend`` of setting it: its peer is set up again, so
    that WireGuard starts a handshake now, not at its 5 s retry."""

    peer: PeerRef


class PathStateChanged(msgspec.Struct, frozen=True):
    """A pair path moved between states (see ``core/pairs.py``); for ``-vv``."""

    peer: PeerRef
    old: str
    new: str
    trigger: str


class SubnetGatewayChanged(msgspec.Struct, frozen=True):
    """The gateway this node uses for a network of ``gateways:`` changed.

    ``reason``: "up" (the first one), "failover" (``previous`` is gone),
    "preferred" (an earlier-listed one showed up), "return" (an
    earlier-listed one is back for good), "down" (none alive), "local" (we
    lie on that network now), "own" (we serve it ourselves).
    """

    route: IPv4Network
    gateway: PeerRef | None
    previous: PeerRef | None
    reason: str


# --- a mobile node's one static (core/mobile.py) -------------------------------------


class GatewayUnanswered(msgspec.Struct, frozen=True):
    """Traffic left for our static over WireGuard, nothing came back, and it
    did not answer a ping either: another static is tried."""

    peer: PeerRef


class MobileMoved(msgspec.Struct, frozen=True):
    """A static lets a mobile go: another static heard from it since (it moved)."""

    peer: PeerRef
    to: PeerRef


class StaticDeclined(msgspec.Struct, frozen=True):
    """A mobile already has its static: a second session got a Bye at once."""

    peer: PeerRef


# --- this node ----------------------------------------------------------------------


class LocalAddressesChanged(msgspec.Struct, frozen=True):
    addresses: tuple[str, ...]


class StaticResolved(msgspec.Struct, frozen=True):
    host: str
    address: str | None  # None: it did not resolve


class OldVersion(msgspec.Struct, frozen=True):
    """A datagram of an older wg_netmanager protocol: that node must be upgraded."""

    address: Endpoint


class ResolveRequested(msgspec.Struct, frozen=True):
    """A static peer does not answer: its host name is looked up again."""

    host: str


class ClientAdded(msgspec.Struct, frozen=True):
    """A plain WireGuard client was registered on this static (core/clients.py)."""

    peer: PeerRef
    public_key: str


class ClientRemoved(msgspec.Struct, frozen=True):
    """A plain WireGuard client's registration on this static ended."""

    peer: PeerRef


Event = (
    PeerConnected
    | PeerRestarted
    | PeerSaidBye
    | PeerSilent
    | HolderAsked
    | Conflict
    | RefusedByPeer
    | ReachableVia
    | PeerGone
    | DirectLink
    | DirectLinkFailed
    | PeerLeftLink
    | PairAddressesChanged
    | PairPeerRestarted
    | PairUnanswered
    | LanAnswers
    | PairIdle
    | PunchFailed
    | PunchResent
    | StaticHandshakeResent
    | PathStateChanged
    | SubnetGatewayChanged
    | GatewayUnanswered
    | MobileMoved
    | StaticDeclined
    | ClientAdded
    | ClientRemoved
    | LocalAddressesChanged
    | StaticResolved
    | ResolveRequested
    | OldVersion
)
