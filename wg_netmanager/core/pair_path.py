"""One pair path's states, their transitions, and link watching (pure values).

``Pairs`` (core/pairs.py) drives these; this module holds what it works on:

- ``PathState`` and ``Trigger``, and ``TRANSITIONS``: the one table of every
  allowed move (h11's ``_state.py`` style). A move the table lacks is a bug.
- ``PairPath``: one pair's record.
- ``watch_link``: does a direct link still bring packets back? A link that
  received something since the last ``wg show`` reading is fine. One that
  sent ``LINK_SUSPECT_BYTES`` without receiving a byte, or received nothing
  for a keepalive period and a bit (the peer's keepalives are the least a
  working link brings), is suspect; suspect for ``link_timeout`` without a
  byte back, it is lost.
"""

from __future__ import annotations

import hashlib
from enum import Enum

import msgspec

from ..model import Endpoint, WgPeerReading, repr_without
from .timers import Timers

# A direct link is suspect once we sent this many bytes over it without
# receiving any: more than a handshake initiation plus a keepalive, so an
# idle link never is, while a few packets of real traffic are enough.
LINK_SUSPECT_BYTES = 300


class PathState(Enum):
    RELAYED = "relayed"
    CLEARING = "clearing"
    PROBING = "probing"
    INSTALLING = "installing"
    PUNCHING = "punching"
    DIRECT = "direct"
    FAILED = "failed"


class Trigger(Enum):
    ATTEMPT = "attempt"  # (re)start: probe the peer's LAN addresses
    ATTEMPT_CLEAR = "attempt, old peer still in WireGuard"
    CLEARED = "old peer removed"
    LAN_ANSWERED = "LAN answered"
    PROBE_WINDOW_OVER = "probe window over"
    OTHER_NAT = "behind another NAT"  # its outside address is not ours: no LAN to wait for
    OUTSIDE_UNKNOWN = "outside endpoint unknown"
    BOTH_READY = "both ready"
    HANDSHAKE = "handshake"
    PEER_DIRECT = "peer saw the handshake"
    NEVER_READY = "peer never got ready"
    PUNCH_TIMEOUT = "no handshake in time"
    LINK_LOST = "link stopped answering"
    HANDSHAKE_STALE = "handshake stale"


S, T = PathState, Trigger
# An attempt may start over from any state (the peer restarts it, either side
# roams, our interface was re-created, a retry is due); while WireGuard still
# has the peer, the old one is removed first (clearing).
_RESTART = {T.ATTEMPT: S.PROBING, T.ATTEMPT_CLEAR: S.CLEARING}
TRANSITIONS: dict[PathState, dict[Trigger, PathState]] = {
    S.RELAYED: {**_RESTART},
    S.CLEARING: {T.ATTEMPT_CLEAR: S.CLEARING, T.CLEARED: S.PROBING},
    S.PROBING: {
        **_RESTART,
        T.LAN_ANSWERED: S.INSTALLING,
        T.PROBE_WINDOW_OVER: S.INSTALLING,
        T.OTHER_NAT: S.INSTALLING,
        T.OUTSIDE_UNKNOWN: S.RELAYED,
    },
    S.INSTALLING: {
        **_RESTART,
        T.BOTH_READY: S.PUNCHING,
        T.HANDSHAKE: S.DIRECT,  # the peer initiated first
        T.PEER_DIRECT: S.DIRECT,
        T.NEVER_READY: S.FAILED,
    },
    S.PUNCHING: {
        **_RESTART,
        T.HANDSHAKE: S.DIRECT,
        T.PEER_DIRECT: S.DIRECT,
        T.PUNCH_TIMEOUT: S.FAILED,
    },
    S.DIRECT: {**_RESTART, T.LINK_LOST: S.FAILED, T.HANDSHAKE_STALE: S.FAILED},
    S.FAILED: {**_RESTART},
}
TRYING = (S.INSTALLING, S.PUNCHING)  # the peer's key is in our WireGuard, not yet direct


class PairPath(msgspec.Struct):
    state: PathState = PathState.RELAYED
    kind: str | None = None  # "lan" | "nat" once a candidate is chosen
    endpoint: Endpoint | None = None
    attempt: int = 0
    started: float = 0.0
    deadline: float = 0.0
    next_ready: float = 0.0
    retry_at: float = 0.0
    failures: int = 0
    reason: str = "not tried yet"
    lan_first: bool = False  # the LAN answered a NAT attempt: wait for it from now on
    installed: bool = False
    peer_ready: bool = False
    # Probes (rule 7 of pairs.py): a token per address, keyed with a secret
    # of this attempt, so that only who receives the probe at an address can
    # answer for it; the peer's addresses probed in this session, and those
    # that answered (proven: they may be probed again at any time).
    probe_id: int = 0  # of our attempt: the token's high bits (the peer sees it change)
    probe_key: bytes = b""  # (not in the repr)
    probed: set[Endpoint] = msgspec.field(default_factory=set)
    probed_from: tuple[Endpoint, ...] = ()  # our local endpoints when ``probed`` began
    lan_proven: set[Endpoint] = msgspec.field(default_factory=set)
    signature: tuple[object, ...] = ()
    since: float = 0.0
    # The peer's latest attempt number and probe id: a Ready or Probe that
    # was sent before we went direct and arrives after must not undo it.
    peer_attempt: int = 0
    peer_probe: int = -1
    firing: bool = False  # punching: our WireGuard has the endpoint and sends
    told_fired: bool = False  # the higher wg IP: Ready(fired) sent once its initiation left
    # The bytes our WireGuard had sent the peer before our endpoint went in
    # (None until we fire), and when we fired: more in a reading means our
    # initiation has left. If none has after punch_send_check, the peer is
    # taken out of WireGuard (``recreating``) and put back once (see
    # pairs.py rule 9).
    fire_tx: int | None = None
    fired_at: float = 0.0
    recreating: bool = False
    recreated: bool = False
    last_failure: str = ""  # kept while retrying, so the TUI can say why it is relayed
    fire_at: float = 0.0
    # Link watching while direct (rule 4): counters of the last reading, tx
    # at the last time rx grew, when that was, and since when suspect.
    rx_bytes: int = 0
    tx_bytes: int = 0
    tx_at_heard: int = 0
    heard: float = 0.0
    sent_at: float = 0.0  # when a reading last showed more bytes sent over the link
    suspect_since: float | None = None
    next_link_ping: float = 0.0
    lan_lost_until: float = 0.0  # re-probe the LAN until then
    next_reprobe: float = 0.0
    # No static lists the peer (rule 6): its daemon (not just its WireGuard,
    # which outlives a crashed daemon) must answer a ping by vouch_until.
    unlisted: bool = False
    vouch_until: float | None = None
    vouch_seq: int = 0
    # Lazy links: when the pair last exchanged traffic (Pairs.demand), or
    # the session opened.
    active_at: float = 0.0

    def __repr__(self) -> str:
        return repr_without(self, ("probe_key",))

    def token_for(self, endpoint: Endpoint) -> int:
        """Our probe token for ``endpoint``: this attempt's id, then a MAC of
        the address under this attempt's key."""
        data = f"{endpoint[0]}:{endpoint[1]}".encode()
        mac = hashlib.blake2b(data, key=self.probe_key, digest_size=4).digest()
        return self.probe_id << 32 | int.from_bytes(mac, "big")

    @property
    def checking_link(self) -> bool:
        """A direct link being pinged: suspect, or vouching for an unlisted peer."""
        checking = self.suspect_since is not None or self.vouch_until is not None
        return self.state is S.DIRECT and checking


def watch_link(path: PairPath, reading: WgPeerReading, now: float, timers: Timers) -> bool:
    """Does the direct link still bring packets back? (see ``PairPath``)"""
    if reading.tx_bytes < path.tx_at_heard or reading.rx_bytes < path.rx_bytes:
        start_watch(path, reading, now)  # counters reset: a new WireGuard peer
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
        quiet_long = now - path.heard > timers.keepalive + 2 * timers.wg_poll_slow
        if unanswered > LINK_SUSPECT_BYTES or quiet_long:
            path.suspect_since = now
            path.next_link_ping = now
        return True
    return now - path.suspect_since < timers.link_timeout


def start_watch(path: PairPath, reading: WgPeerReading | None, now: float) -> None:
    path.rx_bytes = reading.rx_bytes if reading else 0
    path.tx_bytes = path.tx_at_heard = reading.tx_bytes if reading else 0
    path.heard = now
    path.sent_at = 0.0
    path.suspect_since = None


def last_failure(path: PairPath) -> str:
    return f" (last try: {path.last_failure})" if path.failures else ""
