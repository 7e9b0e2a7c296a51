"""The core's events as log lines: one level and one sentence per event type.

Pure formatting (as ``status_text.py``): the daemon logs these lines, the TUI
shows them in its log pane, ``status`` shows conflicts with them.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv4Network

from .core import events as ev
from .keys import short


def label(peer: ev.PeerRef) -> str:
    """``name (wg IP)``, or the bare wg IP while its name is unknown."""
    return f"{peer.name} ({peer.wg_ip})" if peer.name is not None else str(peer.wg_ip)


def _holder(name: str, wg_ip: IPv4Address, key: str) -> str:
    return f"{name} ({wg_ip}, key {short(key)})"


def describe(event: ev.Event) -> str:
    match event:
        case ev.PeerConnected(peer, address):
            return f"{label(peer)} connected from {address}"
        case ev.PeerRestarted(peer, public_key, same_key, number):
            if same_key:
                return f"{label(peer)} restarted (key {short(public_key)}, run {number})"
            return f"{label(peer)} restarted, new key {short(public_key)}"
        case ev.PeerSaidBye(peer):
            return f"{label(peer)} said bye"
        case ev.PeerSilent(peer):
            return f"{label(peer)} silent, dropped"
        case ev.HolderAsked(peer, (host, port)):
            return f"{label(peer)}: new boot at {host}:{port}, asking the current holder first"
        case ev.Conflict():
            host, port = event.address
            if event.key_twin:
                what = f"(wg IP {event.claimed_ip}) shows the WireGuard key that"
            elif event.name_twin:
                what = f"(wg IP {event.claimed_ip}) claims the name {event.claimant_name!r}, which"
            else:
                what = f"claims wg IP {event.claimed_ip}, which"
            holder = _holder(event.holder_name, event.holder_ip, event.holder_key)
            return (
                f"CONFLICT: {host}:{port} (key {short(event.claimant_key)}) {what} "
                f"{holder} still uses; refused"
            )
        case ev.RefusedByPeer():
            if event.key_twin:
                why = f"our WireGuard key is {event.holder_name}'s ({event.holder_ip}) too"
            elif event.name_twin:
                why = (
                    f"our name {event.holder_name!r} is in use by {event.holder_ip} "
                    f"(key {short(event.holder_key)}); give this node another name"
                )
            else:
                why = (
                    f"our wg IP {event.our_ip} is in use by {event.holder_name} "
                    f"(key {short(event.holder_key)}); give this node another wg IP"
                )
            return f"CONFLICT: {label(event.peer)} refuses us: {why}"
        case ev.ReachableVia(peer, gateway):
            return f"{label(peer)} reachable via {label(gateway)}"
        case ev.PeerGone(wg_ip):
            return f"{wg_ip} gone"
        case ev.DirectLink(peer, kind, endpoint):
            where = endpoint[0] if endpoint else "?"
            return f"{label(peer)} direct over {(kind or '?').upper()} ({where})"
        case ev.DirectLinkFailed(peer, reason):
            return f"{label(peer)}: {reason}"
        case ev.PeerLeftLink(peer):
            return f"{label(peer)} left the direct link"
        case ev.PairAddressesChanged(peer):
            return f"{label(peer)}: addresses changed, re-trying"
        case ev.PairPeerRestarted(peer, number):
            return f"{label(peer)} restarted (run {number}): its pair starts over"
        case ev.PairUnanswered(peer):
            return f"{label(peer)} does not answer, dropped"
        case ev.PairIdle(peer, seconds):
            return f"{label(peer)}: no traffic for {seconds:g} s, direct link closed"
        case ev.LanAnswers(peer):
            return f"{label(peer)}: its LAN address answers again"
        case ev.PunchFailed(peer, reading):
            return f"{label(peer)}: punch failed, wg has {reading}"
        case ev.PunchResent(peer):
            return f"{label(peer)}: WireGuard sent nothing on the punch; its peer set up again"
        case ev.StaticHandshakeResent(peer):
            return f"{label(peer)}: no WireGuard handshake yet; its peer set up again"
        case ev.PathStateChanged(peer, old, new, trigger):
            return f"{label(peer)}: path {old} -> {new} ({trigger})"
        case ev.SubnetGatewayChanged(route, gateway, previous, reason):
            return _subnet_move(route, gateway, previous, reason)
        case ev.GatewayUnanswered(peer):
            return f"{label(peer)} does not answer over WireGuard; trying another static"
        case ev.MobileMoved(peer, to):
            return f"{label(peer)} (mobile) moved to {label(to)}; dropped here"
        case ev.ClientAdded(peer, public_key):
            return f"client {label(peer)} added, key {short(public_key)}"
        case ev.ClientRemoved(peer):
            return f"client {label(peer)} removed"
        case ev.StaticDeclined(peer):
            return f"{label(peer)}: a mobile node keeps one static; said bye"
        case ev.LocalAddressesChanged(addresses):
            return f"local addresses now {', '.join(addresses) or 'none'}"
        case ev.StaticResolved(host, address):
            return f"static {host} is at {address or 'nowhere'}"
        case ev.ResolveRequested(host):
            return f"resolve {host}"
        case ev.OldVersion((host, port)):
            return (
                f"{host}:{port} speaks an older wg_netmanager protocol; "
                "upgrade wg_netmanager there (the two cannot mesh)"
            )
    raise TypeError(f"not an event: {event!r}")  # our own bug


def _subnet_move(
    route: IPv4Network, gateway: ev.PeerRef | None, previous: ev.PeerRef | None, reason: str
) -> str:
    was = f" (was {label(previous)})" if previous is not None else ""
    if gateway is None:
        if reason == "local":
            return f"{route} is on our own network now{was}"
        if reason == "own":
            return f"{route} is served by this node{was}"
        return f"{route}: no gateway alive{was}"
    if reason == "failover" and previous is not None:
        return f"{route} now via {label(gateway)}: {label(previous)} is gone"
    if reason == "return" and previous is not None:
        return f"{route} back via {label(gateway)} (listed before {label(previous)})"
    if reason == "preferred" and previous is not None:
        return f"{route} via {label(gateway)} (listed before {label(previous)})"
    return f"{route} via {label(gateway)}"


_DEBUG = (
    ev.HolderAsked,
    ev.PunchFailed,
    ev.PathStateChanged,
    ev.ResolveRequested,
    ev.StaticDeclined,
)


def level(event: ev.Event) -> int:
    """The logging level of ``event``."""
    if isinstance(event, ev.Conflict | ev.RefusedByPeer):
        return logging.ERROR
    if isinstance(event, ev.PeerSilent | ev.OldVersion | ev.GatewayUnanswered) or (
        isinstance(event, ev.DirectLinkFailed) and event.lost
    ):
        return logging.WARNING
    if isinstance(event, ev.SubnetGatewayChanged) and event.reason in ("down", "failover"):
        return logging.WARNING
    if isinstance(event, _DEBUG):
        return logging.DEBUG
    return logging.INFO
