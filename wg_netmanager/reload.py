"""What a reload (SIGHUP) changes: the running settings against the files read again.

Pure: :func:`plan_reload` takes the running ``Settings`` and the ones just
loaded (the same command line, the files as they are now) and says what
runs from now on. Applied while running: the timers, the other static peers
(added, removed, moved), the verbosity. Kept until a restart, each with one
warning line: this node's identity (name, wgIp, interface, existing
interface), its ports and its own entry under ``peers`` (whether it is a
static), whether it is mobile, the shared key, the subnet, the link mode,
the DNS domain and whether DNS is on, the ``gateways`` and the exit node.
The daemon applies the result (``Daemon.reload``); a file that no longer
validates never gets here.
"""

from __future__ import annotations

import msgspec
from msgspec.structs import replace

from .config import Settings, StaticPeer
from .core.timers import Timers, timer_names


class Reload(msgspec.Struct, frozen=True):
    settings: Settings  # what runs from now on
    applied: tuple[str, ...]  # each change applied, e.g. "pingInterval 12 -> 5"
    needs_restart: tuple[str, ...]  # each change kept back, one line each


def plan_reload(running: Settings, loaded: Settings) -> Reload:
    applied = [*_timer_changes(running.network.timers, loaded.network.timers)]
    statics, static_changes = _statics(running, loaded)
    applied += static_changes
    if loaded.verbosity != running.verbosity:
        applied.append(f"verbosity {running.verbosity} -> {loaded.verbosity}")
    settings = replace(
        running,
        network=replace(running.network, peers=statics, timers=loaded.network.timers),
        verbosity=loaded.verbosity,
    )
    return Reload(settings, tuple(applied), tuple(_kept_back(running, loaded)))


def _timer_changes(old: Timers, new: Timers) -> list[str]:
    camel = {attr: name for name, attr in timer_names().items()}
    changes = []
    for field in Timers.__struct_fields__:
        before, after = getattr(old, field), getattr(new, field)
        if before != after:
            changes.append(f"{camel[field]} {before:g} -> {after:g}")
    return changes


def _statics(running: Settings, loaded: Settings) -> tuple[tuple[StaticPeer, ...], list[str]]:
    """The loaded static peers, with this node's own entry as it runs (a restart changes it)."""
    me = running.wg_ip
    old = {p.wg_ip: p for p in running.network.peers if p.wg_ip != me}
    peers = [p for p in loaded.network.peers if p.wg_ip != me]
    new = {p.wg_ip: p for p in peers}
    own = running.static
    changes = []
    for peer in peers:
        before = old.get(peer.wg_ip)
        where = f"{peer.endpoint_text} admin {peer.admin_port}"
        if before is None:
            changes.append(f"static {peer.wg_ip} added ({where})")
        elif before != peer:
            changes.append(f"static {peer.wg_ip} now at {where}")
    changes += [f"static {ip} removed" for ip in old if ip not in new]
    return ((own, *peers) if own else tuple(peers)), changes


def _kept_back(running: Settings, loaded: Settings) -> list[str]:
    def line(what: str, before: object, after: object) -> str:
        return f"{what} {before} -> {after} needs a restart; still {before}"

    lines = []
    for what, attr in (
        ("name", "name"),
        ("wgIp", "wg_ip"),
        ("wgInterface", "interface"),
        ("existingInterface", "existing_interface"),
        ("WireGuard port", "wg_port"),
        ("admin port", "admin_port"),
        ("mobile", "mobile"),
    ):
        before, after = getattr(running, attr), getattr(loaded, attr)
        if before != after:
            lines.append(line(what, before, after))
    old_net, new_net = running.network, loaded.network
    if new_net.shared_key != old_net.shared_key:  # never shown: it is the mesh's secret
        lines.append(f"{new_net.path}: network.sharedKey changed; that needs a restart")
    if new_net.subnet != old_net.subnet:
        lines.append(line(f"{new_net.path}: network.subnet", old_net.subnet, new_net.subnet))
    if new_net.links != old_net.links:
        lines.append(line(f"{new_net.path}: network.links", old_net.links, new_net.links))
    if new_net.dns_domain != old_net.dns_domain:
        lines.append(
            line(f"{new_net.path}: network.dns.domain", old_net.dns_domain, new_net.dns_domain)
        )
    if new_net.dns_enabled != old_net.dns_enabled:
        enabled = (old_net.dns_enabled, new_net.dns_enabled)
        lines.append(line(f"{new_net.path}: network.dns.enabled", *enabled))
    if new_net.gateways != old_net.gateways:
        lines.append(f"{new_net.path}: gateways changed; that needs a restart")
    if loaded.exit_node != running.exit_node:
        lines.append(line("exit node", running.exit_node, loaded.exit_node))
    if running.wg_ip == loaded.wg_ip and running.static != _own(loaded, running.wg_ip):
        before, after = _role(running.static), _role(_own(loaded, running.wg_ip))
        lines.append(line(f"{new_net.path}: peers: this node's entry", before, after))
    return lines


def _own(settings: Settings, wg_ip: object) -> StaticPeer | None:
    return next((p for p in settings.network.peers if p.wg_ip == wg_ip), None)


def _role(entry: StaticPeer | None) -> str:
    return "(none: dynamic)" if entry is None else f"{entry.endpoint_text} admin {entry.admin_port}"
