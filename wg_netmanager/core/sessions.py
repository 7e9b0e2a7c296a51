"""The core's records of other nodes: static targets and sessions (a leaf module)."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address

import msgspec

from ..model import Endpoint, repr_without
from ..wire import NodeInfo
from .replay import ReplayWindow
from .timers import Timers

MAX_PONG_WAIT = 60.0  # seconds a ping's send time is kept for its pong (RTT)
MAX_PINGS_IN_FLIGHT = 8
RTT_SAMPLES = 4  # round trips Session.rtt is the lowest of


class StaticTarget(msgspec.Struct):
    """A static peer from network.yaml; ``address`` is filled in by DNS."""

    wg_ip: IPv4Address
    host: str
    wg_port: int
    admin_port: int
    address: str | None = None
    pinned_key: bytes | None = None  # network.yaml publicKey: nobody else may be this static
    next_hello: float = 0.0
    backoff: float = 0.0
    lost_since: float = 0.0
    next_resolve_request: float = 0.0

    def lost(self, now: float, timers: Timers) -> None:
        """No session (yet, or any more): hello at once, resolve its name again."""
        self.next_hello = now
        self.backoff = timers.hello_retry_min
        self.lost_since = now
        self.next_resolve_request = now

    def hello_sent(self, now: float, timers: Timers) -> None:
        """Back off: doubling from hello_retry_min to hello_retry_max, then slow."""
        if now - self.lost_since >= timers.hello_slow_after:
            interval = timers.hello_retry_slow
        else:
            interval = self.backoff
            self.backoff = min(self.backoff * 2, timers.hello_retry_max)
        self.next_hello = now + interval

    @property
    def admin_endpoint(self) -> Endpoint | None:
        return None if self.address is None else (self.address, self.admin_port)

    @property
    def wg_endpoint(self) -> Endpoint | None:
        return None if self.address is None else (self.address, self.wg_port)


class Keys(msgspec.Struct):
    """The transport keys one handshake made, and their counters."""

    local_index: int  # what the peer writes in its frames to us
    remote_index: int  # what we write in our frames to the peer
    send: bytes  # (the keys are not in the repr)
    receive: bytes
    sent: int = 0  # the next counter we use
    # Counters start at 0; -1: nothing seen yet.
    replay: ReplayWindow = msgspec.field(default_factory=lambda: ReplayWindow(-1))

    def __repr__(self) -> str:
        return repr_without(self, ("send", "receive"))

    def next_counter(self) -> int:
        counter, self.sent = self.sent, self.sent + 1
        return counter


class Contender(msgspec.Struct):
    """A proven new boot for a wg IP whose session may still be alive.

    The holder was pinged (``ping_seq``); a pong to it before ``deadline``
    means two live nodes claim one wg IP. ``keys`` are the contender's
    finished handshake: a refusal goes over them.
    """

    info: NodeInfo
    boot: bytes
    addr: Endpoint
    keys: Keys
    deadline: float
    ping_seq: int
    boot_number: int = 0


# Session fields a node's timer depends on, and those its table (a
# static's) says (see Session.watcher).
TIMED_FIELDS = frozenset({"last_heard", "next_ping", "contender"})
WATCHED_FIELDS = TIMED_FIELDS | {"info", "addr"}


class Session(msgspec.Struct):
    """An authenticated conversation with one node (one boot of it).

    Setting ``last_heard``, ``next_ping`` or ``contender`` calls ``watcher``
    with the field's name (its node files the session's next deadline,
    core/deadlines.py), and so does setting ``info`` or ``addr`` (what a
    static's table says): no code path can move a deadline or change the
    table without the node knowing.
    """

    info: NodeInfo
    boot: bytes  # random per run of that node, from inside its handshake
    addr: Endpoint
    keys: Keys  # of the latest handshake: what we send with
    established: float
    last_heard: float
    pinger: bool  # we send the pings (we keep the NAT mapping open)
    next_ping: float = 0.0
    ping_seq: int = 0
    ping_sent: dict[int, float] = msgspec.field(default_factory=dict)
    # The lowest of the last RTT_SAMPLES round trips: a busy host that
    # answers a ping late says nothing about the path (and must not make a
    # link report, core/mesh_map.py rule 1).
    rtt: float | None = None
    rtt_samples: list[float] = msgspec.field(default_factory=list)
    # WireGuard allows one handshake initiation per 5 s, so a dynamic node must
    # not install a static peer before that static has installed it: only when
    # the static's table lists us (it lists only peers in its WireGuard) is the
    # first handshake sure to be answered.
    peer_ready: bool = False
    contender: Contender | None = None
    # The keys of the handshake before (the peer may still send with them
    # when both sides started one at once, or while a new one finishes).
    previous: Keys | None = None
    # A new source address is used only once it echoed this token.
    path_token: int | None = None
    path_addr: Endpoint | None = None
    table_sent: int = 0  # our table version this session has (we are a static)
    wg_rx: int = 0  # bytes its WireGuard peer had received at the last reading (mobile.py)
    boot_number: int = 0  # which run of its key (wire.Hello), from inside its handshake
    # A static's peer in our WireGuard: since when, without a first handshake
    # (None: not yet in it, or it has one); taken out to be set again
    # (``wg_renewing``) at most once per session (node.py, _first_handshakes).
    wg_waiting_since: float | None = None
    wg_renewing: bool = False
    wg_renewed: bool = False
    # Not in the repr. (It is compared with the rest: nothing compares sessions.)
    watcher: Callable[[Session, str], None] | None = None

    def __setattr__(self, name: str, value: object) -> None:
        # (__init__ sets the fields without this: no call before the node files it)
        super().__setattr__(name, value)
        if name in WATCHED_FIELDS and self.watcher is not None:
            self.watcher(self, name)

    def __repr__(self) -> str:
        return repr_without(self, ("watcher",))

    def record_ping(self, now: float) -> int:
        """A ping goes out now: its sequence number (its send time is kept for the RTT)."""
        self.ping_seq += 1
        self.ping_sent[self.ping_seq] = now
        for seq in [q for q, sent in self.ping_sent.items() if now - sent > MAX_PONG_WAIT]:
            del self.ping_sent[seq]  # unanswered long ago: it will not come
        if len(self.ping_sent) > MAX_PINGS_IN_FLIGHT:
            self.ping_sent.pop(min(self.ping_sent))
        return self.ping_seq

    def record_pong(self, seq: int, now: float) -> float | None:
        """A pong for ``seq``: when its ping went out (None: not ours, or answered)."""
        sent = self.ping_sent.pop(seq, None)
        if sent is not None:
            self.rtt_samples = [*self.rtt_samples[1 - RTT_SAMPLES :], now - sent]
            self.rtt = min(self.rtt_samples)
        return sent
