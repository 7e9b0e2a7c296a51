"""Value types shared by the pure core and the I/O adapters.

The core produces the *desired* state (``WgPeer`` and ``Route`` sets); the
adapters read the *actual* state (``WgPeerReading``) and apply the difference.
All of them are frozen so that snapshots can be handed to the TUI, the log and
``status`` without copying.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

Endpoint = tuple[str, int]
"""An underlay UDP endpoint: (IPv4 address as text, port)."""


def format_endpoint(endpoint: Endpoint | None) -> str:
    if endpoint is None:
        return "-"
    return f"{endpoint[0]}:{endpoint[1]}"


def parse_endpoint(text: str) -> Endpoint | None:
    """Parse ``a.b.c.d:port`` as printed by ``wg show``; ``(none)`` gives None."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        IPv4Address(host)
    except ValueError:
        return None
    return (host, int(port))


@dataclass(frozen=True, order=True)
class WgPeer:
    """One WireGuard peer as the core wants it configured."""

    public_key: str  # WireGuard base64 form
    allowed_ips: tuple[IPv4Network, ...]  # sorted, never overlapping another peer's
    endpoint: Endpoint | None = None  # None: let WireGuard learn it from the peer
    persistent_keepalive: int = 0  # seconds, 0 = off


@dataclass(frozen=True)
class WgPeerReading:
    """One peer as ``wg show <if> dump`` reports it."""

    public_key: str
    endpoint: Endpoint | None
    allowed_ips: tuple[IPv4Network, ...]
    handshake_age: float | None  # seconds since the latest handshake, None = never
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int = 0


@dataclass(frozen=True, order=True)
class Route:
    """A kernel route on the WireGuard interface: ``dest/prefixlen [via gateway] dev <if>``.

    A node's route (``prefixlen`` 32, the default) or a network behind a
    gateway (a LAN, ``gateways:`` in network.yaml). ``via`` is the WireGuard
    peer the traffic goes to (the node itself, or the static that relays it).
    """

    dest: IPv4Address  # the network address
    via: IPv4Address | None = None
    prefixlen: int = 32

    @property
    def network(self) -> IPv4Network:
        return IPv4Network((self.dest, self.prefixlen))

    @classmethod
    def to(cls, network: IPv4Network, via: IPv4Address | None = None) -> Route:
        return cls(network.network_address, via, network.prefixlen)

    def __str__(self) -> str:
        if self.via is None:
            return f"{self.dest}/{self.prefixlen}"
        return f"{self.dest}/{self.prefixlen} via {self.via}"


@dataclass(frozen=True)
class Gateway:
    """An entry of network.yaml ``gateways:``: the node ``wg_ip`` forwards
    from the mesh into ``routes`` (networks of devices that run no daemon,
    or 0.0.0.0/0 for an exit node), masquerading unless told not to."""

    wg_ip: IPv4Address
    routes: tuple[IPv4Network, ...]
    masquerade: bool = True


DEFAULT_ROUTE = IPv4Network("0.0.0.0/0")
"""An exit node's route: used only by the nodes that opt in to it."""
