"""The core's records of other nodes: static targets and sessions (a leaf module)."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from ..model import Endpoint
from ..wire import Header, Hello, NodeInfo
from .replay import ReplayWindow


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
