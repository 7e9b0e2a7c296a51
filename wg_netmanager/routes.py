"""Kernel routes on the WireGuard interface (main table).

The core computes the desired set of :class:`~wg_netmanager.model.Route`
(``dest/32 [via gateway] dev <if>`` for nodes, ``net/len via peer dev <if>``
for the networks behind gateways); this module reads the actual set and
applies the difference with ``ip route``, one destination network at a time.

Every route we install carries ``proto 57`` (see :data:`ROUTE_PROTO`), and we
only ever read back and delete routes with that protocol, so routes that an
administrator or another daemon put on the interface are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network
from typing import Protocol

from .model import Route
from .proc import CommandError, run, run_batch

log = logging.getLogger("wg_netmanager.routes")

ROUTE_PROTO = "57"
"""Routing protocol number marking our routes (``ip route ... proto 57``).

Numbers 0-4 are reserved by the kernel and iproute2's ``/etc/iproute2/rt_protos``
names a handful of others (zebra 11, bird 12, dhcp 16, babel 42, bgp 186, ...);
57 is unassigned there, and a number of our own keeps us from ever deleting a
``proto static`` route an administrator added by hand."""


class Routes(Protocol):
    """The routing side of the I/O adapters, as the daemon sees it.

    Implemented by :class:`RouteTable` (the kernel) and
    ``FakeRoutes`` in ``tests/fakes.py``.
    """

    async def read(self, ifname: str) -> set[Route]: ...

    async def apply(self, ifname: str, desired: set[Route], actual: set[Route]) -> None: ...


def _parse_dest(token: str) -> IPv4Network | None:
    if token == "default":
        return IPv4Network("0.0.0.0/0")
    try:
        return IPv4Network(token)  # a bare address is a /32; host bits set: not a route
    except ValueError:
        return None


def parse_routes(text: str) -> set[Route]:
    """Parse ``ip -4 route show dev X [proto P]`` output into routes.

    Lines look like ``10.1.1.3 via 10.1.1.1 proto 57 onlink``,
    ``10.1.1.2/32 scope link`` or ``192.168.1.0/24 via 10.1.1.3 proto 57
    onlink``.  Only unicast routes count; other types (``unreachable ...``,
    ``broadcast ...``) are ignored.
    """
    routes: set[Route] = set()
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        dest = _parse_dest(fields[0])
        if dest is None:
            continue
        via: IPv4Address | None = None
        if "via" in fields:
            i = fields.index("via")
            if i + 1 >= len(fields):
                continue
            try:
                via = IPv4Address(fields[i + 1])
            except ValueError:  # e.g. ``via inet6 ...``
                continue
        routes.add(Route.to(dest, via))
    return routes


async def read_routes(ifname: str) -> set[Route]:
    """The routes with our protocol on ``ifname``."""
    out = await run(["ip", "-4", "route", "show", "dev", ifname, "proto", ROUTE_PROTO])
    return parse_routes(out)


def _route_key(route: Route) -> tuple[bool, IPv4Address, int, IPv4Address]:
    # Route's own ordering compares ``via`` None with an address (TypeError)
    # when two routes share a destination; this key never does.
    return (route.via is not None, route.dest, route.prefixlen, route.via or IPv4Address(0))


def plan_route_changes(
    ifname: str, desired: Iterable[Route], actual: Iterable[Route]
) -> list[list[str]]:
    """The ``ip route`` commands turning ``actual`` into ``desired``, in order.

    First ``replace`` for every desired route that is missing or different
    (``replace`` swaps a gateway atomically, so a destination is never without
    a route); direct routes before gateway routes.  Then ``del`` for
    destinations that are no longer desired.  A destination that merely
    changes its gateway is handled by the ``replace`` alone.
    """
    desired_by_dest: dict[IPv4Network, Route] = {}
    for route in sorted(desired, key=_route_key):
        if route.network in desired_by_dest:
            log.warning("two desired routes for %s, using %s", route.network, route)
        desired_by_dest[route.network] = route
    actual_set = set(actual)
    cmds: list[list[str]] = []
    to_add = [r for r in desired_by_dest.values() if r not in actual_set]
    to_add.sort(key=_route_key)  # direct routes first
    for route in to_add:
        cmd = ["ip", "-4", "route", "replace", str(route.network)]
        if route.via is not None:
            # onlink: the gateway is reachable over the tunnel whether or not
            # the kernel already has a route to it; WireGuard itself picks the
            # peer by AllowedIPs and ignores the next hop anyway.
            cmd += ["via", str(route.via)]
        cmd += ["dev", ifname, "proto", ROUTE_PROTO]
        if route.via is not None:
            cmd.append("onlink")
        cmds.append(cmd)
    for route in sorted(actual_set, key=_route_key):
        if route.network in desired_by_dest:
            continue
        cmd = ["ip", "-4", "route", "del", str(route.network)]
        if route.via is not None:
            cmd += ["via", str(route.via)]
        cmd += ["dev", ifname, "proto", ROUTE_PROTO]
        cmds.append(cmd)
    return cmds


async def apply_routes(ifname: str, desired: set[Route], actual: set[Route]) -> None:
    """Make our routes on ``ifname`` equal ``desired``, in one ``ip`` process;
    raises CommandError for the first command that failed (the others ran).

    A ``del`` of a route that is already gone counts as success.
    """
    cmds = plan_route_changes(ifname, desired, actual)
    if not cmds:
        return
    failures = await run_batch(cmds, keep_going=True)
    for index, text in sorted(failures.items()):
        cmd = cmds[index]
        if cmd[3] == "del" and "No such process" in text:
            log.debug("route %s already gone", cmd[4])
            continue
        raise CommandError(cmd, 2, text)


async def flush_routes(ifname: str) -> None:
    """Delete all routes with our protocol on ``ifname``."""
    await run(["ip", "-4", "route", "flush", "dev", ifname, "proto", ROUTE_PROTO])


class RouteTable:
    """:class:`Routes` for the kernel's main routing table."""

    async def read(self, ifname: str) -> set[Route]:
        return await read_routes(ifname)

    async def apply(self, ifname: str, desired: set[Route], actual: set[Route]) -> None:
        await apply_routes(ifname, desired, actual)
