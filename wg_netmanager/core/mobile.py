"""Mobile nodes: one static link, watched through WireGuard's own counters.

Rules (the story is in docs/architecture.md, "Mobile nodes"):

1. A mobile (``NodeInfo.mobile``) keeps exactly one static session, its
   *gateway*: it says hello to the statics until one answers, then to no
   other (no hellos, no name lookups); a second session that completes
   anyway gets a Bye at once. It moves to another static only when the
   gateway is lost, and then greets the others first: the lost one waits
   ``hello_retry_slow``.
2. It sends no pings (its gateway session is not the pinger) except while
   someone watches latency on the mobile itself. Its gateway session is
   alive while the gateway's WireGuard peer shows signs (rx grows: handshake
   answers, relayed traffic; or a handshake is reported); after
   ``quiet_limit`` without any (WireGuard's key lifetime and a keepalive) it
   is dropped.
3. With traffic: once tx grew by more than ``LINK_SUSPECT_BYTES`` without rx
   growing, the gateway is suspect and gets an admin ping every
   ``link_probe_interval``; a pong to one of them, or rx growth, clears it;
   neither within ``link_timeout``: the gateway is lost (rule 1).
4. The WireGuard peer of the gateway carries the whole subnet besides its
   /32s (WireGuard picks the longest prefix, so direct links keep their
   /32s): whatever the static forwards reaches the mobile, also from a node
   that joined in a table change the mobile missed (it does not ping, so it
   does not learn the static's table version). Traffic with a node its
   table lacks makes it ask for the whole table: once per table version it
   holds (the node may be another static's mobile), at most every
   ``TABLE_REQUEST_EVERY``.
5. On a static: a mobile's session is alive while the mobile's WireGuard
   peer shows signs (its keepalives every ``mobile_keepalive``, handshakes)
   and goes after ``mobile_dead_after`` without, or at once when another
   static's table change lists it with a WireGuard endpoint (the mobile
   uses that static's WireGuard, so it is not a session it declines) and as
   heard there later than here by more than ``link_timeout`` (it failed
   over: a stale listing here would draw traffic for it). Statics set no
   keepalive towards any dynamic node, and nobody measures latency to a
   mobile.
6. Nobody opens a pair session towards a mobile (pairs.py rule 7): the
   mobile opens its own, lazily, when its sensor sees traffic either way.
"""

from __future__ import annotations

import math

import msgspec

from ..model import WgPeerReading
from .pair_path import LINK_SUSPECT_BYTES
from .sessions import Session
from .timers import Timers

# WireGuard's REJECT_AFTER_TIME: keys this old send nothing, so a working
# link shows a handshake at least this often while it carries anything.
WG_KEY_LIFETIME = 180.0
TABLE_REQUEST_EVERY = 30.0  # seconds between whole-table requests of a mobile (rule 4)


def quiet_limit(timers: Timers) -> float:
    """Rule 2: how long a mobile's gateway may show no sign of life."""
    return WG_KEY_LIFETIME + timers.mobile_keepalive + 2 * timers.wg_poll_slow


def wg_signs(session: Session, reading: WgPeerReading | None, now: float) -> None:
    """Rules 2 and 5: received bytes or a handshake of the session's
    WireGuard peer count as hearing from it."""
    if reading is None:
        return
    if reading.rx_bytes > session.wg_rx:
        session.last_heard = now
    session.wg_rx = reading.rx_bytes  # (lower: a new WireGuard peer, counting afresh)
    if reading.handshake_age is not None:
        session.last_heard = max(session.last_heard, now - reading.handshake_age)


class GatewayWatch(msgspec.Struct):
    """Rule 3 for the gateway's WireGuard peer: counters of the last reading."""

    primed: bool = False
    rx: int = 0
    tx: int = 0
    tx_at_heard: int = 0
    sent_at: float = -math.inf  # when a reading last showed more bytes sent
    suspect_since: float | None = None
    next_ping: float = 0.0
    answer_seq: int = 0  # a pong to this ping sequence number or a later one answers

    def on_reading(self, reading: WgPeerReading, now: float) -> bool:
        """A new reading; True when the gateway just became suspect (ping it now)."""
        fresh = reading.rx_bytes < self.rx or reading.tx_bytes < self.tx
        if not self.primed or fresh:  # the first reading, or a new WireGuard peer
            self.primed = True
            self.rx, self.tx = reading.rx_bytes, reading.tx_bytes
            self.tx_at_heard = self.tx
            self.suspect_since = None
            return False
        if reading.tx_bytes != self.tx:
            self.sent_at = now
        self.tx = reading.tx_bytes
        if reading.rx_bytes != self.rx:
            self.rx = reading.rx_bytes
            self.answered()
            return False
        if self.suspect_since is None and self.tx - self.tx_at_heard > LINK_SUSPECT_BYTES:
            self.suspect_since = now
            self.next_ping = now
            return True
        return False

    def answered(self) -> None:
        """The gateway answered (rx grew, or a pong): nothing unanswered so far."""
        self.tx_at_heard = self.tx
        self.suspect_since = None

    def lost_at(self, timers: Timers) -> float | None:
        return None if self.suspect_since is None else self.suspect_since + timers.link_timeout

    def deadlines(self, timers: Timers) -> list[float]:
        lost = self.lost_at(timers)
        return [] if lost is None else [self.next_ping, lost]
