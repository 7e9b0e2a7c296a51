"""Value types shared by the pure core and the I/O adapters.

The core produces the *desired* state (``WgPeer`` and ``Route`` sets); the
adapters read the *actual* state (``WgPeerReading``) and apply the difference.
All of them are frozen so that snapshots can be handed to the TUI, the log and
``status`` without copying.

Records here and throughout the package are ``msgspec.Struct`` classes, not
dataclasses (their import costs start-up CPU: docs/architecture.md,
Start-up); a field that holds a secret is kept out of a record's repr with
``repr_without``.
"""

from __future__ import annotations

from collections.abc import Collection
from ipaddress import IPv4Address, IPv4Network

import msgspec

Endpoint = tuple[str, int]
"""An underlay UDP endpoint: (IPv4 address as text, port)."""


def repr_without(record: msgspec.Struct, hidden: Collection[str]) -> str:
    """``Name(a=1, b=2)``, a record's repr, without the ``hidden`` fields.

    For records that hold secrets (private keys, cipher state): a repr can end
    up in a log line or a traceback, so those fields are never in it.
    """
    shown = ", ".join(
        f"{name}={getattr(record, name)!r}"
        for name in type(record).__struct_fields__
        if name not in hidden
    )
    return f"{type(record).__qualname__}({shown})"


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


class WgPeer(msgspec.Struct, frozen=True, order=True):
    """One WireGuard peer as the core wants it configured."""

    public_key: str  # WireGuard base64 form
    allowed_ips: tuple[IPv4Network, ...]  # sorted, never overlapping another peer's
    endpoint: Endpoint | None = None  # None: let WireGuard learn it from the peer
    persistent_keepalive: int = 0  # seconds, 0 = off


class WgPeerReading(msgspec.Struct, frozen=True):
    """One peer as ``wg show <if> dump`` reports it."""

    public_key: str
    endpoint: Endpoint | None
    allowed_ips: tuple[IPv4Network, ...]
    handshake_age: float | None  # seconds since the latest handshake, None = never
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int = 0


class Route(msgspec.Struct, frozen=True, order=True):
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


class Gateway(msgspec.Struct, frozen=True):
    """An entry of network.yaml ``gateways:``: the node ``wg_ip`` forwards
    from the mesh into ``routes`` (networks of devices that run no daemon,
    or 0.0.0.0/0 for an exit node), masquerading unless told not to."""

    wg_ip: IPv4Address
    routes: tuple[IPv4Network, ...]
    masquerade: bool = True


DEFAULT_ROUTE = IPv4Network("0.0.0.0/0")
"""An exit node's route: used only by the nodes that opt in to it."""
