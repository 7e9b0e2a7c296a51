"""The core's status snapshot (``Node.statistics``): what the TUI, ``status``
and the logs show, as frozen values, made by one pure function."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network

import msgspec

from ..model import Endpoint, WgPeerReading
from ..wire import NodeInfo, TableEntry
from .clients import Client
from .events import Conflict, DropReason, RefusedByPeer
from .sessions import Session, StaticTarget


class PeerStatus(msgspec.Struct, frozen=True):
    wg_ip: IPv4Address
    name: str
    public_key: str
    path: str  # "direct" | "via"
    # "static", "lan", "nat", "gateway" (via), "" (a static node's dynamic peers)
    kind: str
    reason: str  # why a dynamic pair is relayed, or the state of its attempt
    gateway: IPv4Address | None
    gateway_name: str | None
    endpoint: Endpoint | None
    rtt: float | None
    handshake_age: float | None
    rx_bytes: int
    tx_bytes: int
    session_age: float | None
    is_static: bool
    local_endpoints: tuple[Endpoint, ...] = ()  # the underlay addresses it announced
    mobile: bool = False  # a metered roaming node (see core/mobile.py)
    client: bool = False  # a plain WireGuard client (see core/clients.py)


class SubnetStatus(msgspec.Struct, frozen=True):
    """A network of ``gateways:`` as this node sees it (see core/routing.py)."""

    route: IPv4Network
    gateways: tuple[IPv4Address, ...]  # the file's, in order of preference
    names: tuple[str, ...]  # theirs, "" while unknown
    alive: tuple[IPv4Address, ...]  # those alive from our view
    serving: IPv4Address | None  # the one this node uses now
    # "routed" (through ``serving``), "exit" (our exit node), "own" (we serve
    # it), "local" (we lie on it), "relay" (a static forwarding others'
    # default route), "unused" (an exit node we did not opt in to)
    role: str


class NodeStatus(msgspec.Struct, frozen=True):
    name: str
    wg_ip: IPv4Address
    public_key: str
    wg_port: int
    admin_port: int
    is_static: bool
    visible_endpoint: Endpoint | None
    peers: tuple[PeerStatus, ...]
    statics_connected: int
    statics_total: int
    drops: Mapping[DropReason, int]
    table_version: int
    conflicts: tuple[Conflict | RefusedByPeer, ...] = ()  # recent ones, oldest first
    subnets: tuple[SubnetStatus, ...] = ()  # the networks behind gateways
    mobile: bool = False  # this node (--mobile)


def snapshot(
    *,
    info: NodeInfo,
    is_static: bool,
    sessions: Mapping[IPv4Address, Session],
    statics: Mapping[IPv4Address, StaticTarget],
    gateways: Mapping[IPv4Address, IPv4Address],
    tables: Mapping[IPv4Address, Mapping[IPv4Address, TableEntry]],
    pair_status: Callable[[IPv4Address], tuple[str, str] | None],
    readings: Mapping[str, WgPeerReading],
    visible_endpoint: Endpoint | None,
    drops: Mapping[DropReason, int],
    table_version: int,
    conflicts: Iterable[Conflict | RefusedByPeer],
    now: float,
    subnets: tuple[SubnetStatus, ...] = (),
    clients: Iterable[Client] = (),
) -> NodeStatus:
    """Direct peers from the sessions and our clients, relayed ones from the
    statics' tables."""
    peers = []
    for client in clients:
        reading = readings.get(client.public_key)
        peers.append(
            PeerStatus(
                wg_ip=client.wg_ip,
                name=client.name,
                public_key=client.public_key,
                path="direct",
                kind="client",
                reason="",
                gateway=None,
                gateway_name=None,
                endpoint=reading.endpoint if reading else None,
                rtt=None,
                handshake_age=reading.handshake_age if reading else None,
                rx_bytes=reading.rx_bytes if reading else 0,
                tx_bytes=reading.tx_bytes if reading else 0,
                session_age=None,
                is_static=False,
                client=True,
            )
        )
    names = {ip: s.info.name for ip, s in sessions.items()}
    for ip, session in sorted(sessions.items()):
        if ip in gateways:
            continue  # a dynamic pair still relayed: listed below
        reading = readings.get(session.info.public_key)
        if ip in statics:
            kind = "static"
            reason = "" if session.peer_ready else "waiting for its table"
        else:
            kind, reason = pair_status(ip) or ("", "")
        peers.append(
            PeerStatus(
                wg_ip=ip,
                name=session.info.name,
                public_key=session.info.public_key,
                path="direct",
                kind=kind,
                reason=reason,
                gateway=None,
                gateway_name=None,
                endpoint=reading.endpoint if reading else None,
                rtt=session.rtt,
                handshake_age=reading.handshake_age if reading else None,
                rx_bytes=reading.rx_bytes if reading else 0,
                tx_bytes=reading.tx_bytes if reading else 0,
                session_age=now - session.established,
                is_static=ip in statics,
                local_endpoints=session.info.local_endpoints,
                mobile=session.info.mobile,
            )
        )
    for ip, gateway in sorted(gateways.items()):
        entry = tables[gateway][ip]
        pair = sessions.get(ip)
        attempt = pair_status(ip)
        peers.append(
            PeerStatus(
                wg_ip=ip,
                name=entry.info.name,
                public_key=entry.info.public_key,
                path="via",
                kind="gateway",
                reason=(
                    "a plain WireGuard client"
                    if entry.info.client
                    else attempt[1]
                    if attempt
                    else "no direct session yet"
                ),
                gateway=gateway,
                gateway_name=names.get(gateway),
                endpoint=entry.wg_endpoint,
                rtt=pair.rtt if pair else None,
                handshake_age=None,
                rx_bytes=0,
                tx_bytes=0,
                session_age=now - pair.established if pair else None,
                is_static=ip in statics,
                local_endpoints=entry.info.local_endpoints,
                mobile=entry.info.mobile,
                client=entry.info.client,
            )
        )
    peers.sort(key=lambda p: p.wg_ip)
    return NodeStatus(
        name=info.name,
        wg_ip=info.wg_ip,
        public_key=info.public_key,
        wg_port=info.wg_port,
        admin_port=info.admin_port,
        is_static=is_static,
        visible_endpoint=visible_endpoint,
        peers=tuple(peers),
        statics_connected=sum(ip in sessions for ip in statics),
        statics_total=len(statics),
        drops=dict(drops),
        table_version=table_version,
        conflicts=tuple(conflicts),
        subnets=subnets,
        mobile=info.mobile,
    )
