"""Plain WireGuard clients (phones, tablets): registered on a static, reached through it.

A client runs only WireGuard (the official app with a wg-quick config), no
daemon, so it can neither handshake on the admin channel nor read tables.
Rules (the story is in docs/architecture.md, "Plain WireGuard clients"):

1. A client belongs to the static it was added on. That static has it as a
   WireGuard peer: AllowedIPs its /32, no endpoint (the client calls in and
   keeps the NAT open with its own keepalive), no keepalive; its kernel route
   is ``/32 dev wg``.
2. That static lists it in its table like a node it has a session with (once
   its WireGuard has the peer), with ``client`` set, the static's own ports,
   no local endpoints and no endpoints (nobody needs where the phone is, and
   a roaming phone would otherwise change the table at every move). So every
   node routes it via that static (routing rule 2), and a removal is a table
   change: it is gone everywhere with the next push.
3. Nobody handshakes or pairs with a client: pairs skip it, and a handshake
   claiming a client's wg IP is refused as a conflict (the client holds it).
4. A new client's wg IP must be a member address nobody else has: not ours,
   not a configured static's, not one a session or any table shows, not
   another client's. Without one, the highest free address of the subnet is
   taken (nodes are usually numbered from the bottom: an offline node is
   less likely to come back with it). Its name follows the node-name rule
   and is unique (without case) among the clients and the nodes known; its
   key is new. From then on its name counts as used: a node claiming it is
   refused (handshake.py rule 4).
5. A client of our own wins over another static's listing of the same wg
   IP (a race of two adds while the statics were apart): its /32 stays on
   the client's peer here, and the other static's listing is not used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network

import msgspec

from .. import wire
from ..keys import from_b64
from ..model import WgPeer
from ..wire import NodeInfo, TableEntry


class Client(msgspec.Struct, frozen=True):
    """A registration: what the static keeps (never the client's private key)."""

    name: str
    wg_ip: IPv4Address
    public_key: str


class ClientRefused(ValueError):
    """A client cannot be added or removed; one line for the user."""


def choose_address(
    name: str,
    public_key: str,
    wanted: IPv4Address | None,
    *,
    subnet: IPv4Network,
    used: Mapping[IPv4Address, NodeInfo | Client],
    keys: Iterable[str],
) -> IPv4Address:
    """Rule 4: the new client's wg IP (``wanted``, or the highest free one).

    ``used``: every wg IP in use (ourselves, statics, sessions, tables,
    clients) with who holds it; ``keys``: every public key known.
    """
    if not wire.NAME_RE.fullmatch(name):
        raise ClientRefused(
            f"name {name!r}: use 1 to 32 letters, digits, '.', '_' or '-' (as a node's name)"
        )
    try:
        from_b64(public_key)
    except ValueError:
        raise ClientRefused("the public key is not a WireGuard key") from None
    for other in used.values():
        if other.name.lower() == name.lower():  # as DNS compares them
            kind = "client" if _is_client(other) else "node"
            raise ClientRefused(f"name {name!r} is in use by the {kind} at {other.wg_ip}")
    if public_key in set(keys):
        raise ClientRefused("that public key is in use already")
    if wanted is not None:
        if wanted not in subnet or wanted in (subnet.network_address, subnet.broadcast_address):
            raise ClientRefused(f"wg IP {wanted} is not a host address of the mesh {subnet}")
        holder = used.get(wanted)
        if holder is not None:
            kind = "client" if _is_client(holder) else "node"
            raise ClientRefused(
                f"wg IP {wanted} is in use by the {kind} {holder.name}; pick another or omit --ip"
            )
        return wanted
    for address in reversed(list(subnet.hosts())):
        if address not in used:
            return address
    raise ClientRefused(f"no free wg IP left in the mesh {subnet}")


def _is_client(holder: NodeInfo | Client) -> bool:
    return isinstance(holder, Client) or holder.client


def client_info(client: Client, static: NodeInfo) -> NodeInfo:
    """Rule 2: the client as its static's table says it."""
    return NodeInfo(
        wg_ip=client.wg_ip,
        name=client.name,
        public_key=client.public_key,
        wg_port=static.wg_port,
        admin_port=static.admin_port,
        client=True,
    )


def table_entries(
    clients: Iterable[Client], static: NodeInfo, in_wireguard: Iterable[str]
) -> list[TableEntry]:
    """Rule 2: the entries of the clients our WireGuard has."""
    present = set(in_wireguard)
    return [
        TableEntry(client_info(c, static), wg_endpoint=None, admin_endpoint=None, age=0.0)
        for c in sorted(clients, key=lambda c: c.wg_ip)
        if c.public_key in present
    ]


def wg_peer(client: Client) -> WgPeer:
    """Rule 1."""
    return WgPeer(
        public_key=client.public_key,
        allowed_ips=(IPv4Network(client.wg_ip),),
        endpoint=None,
        persistent_keepalive=0,
    )
