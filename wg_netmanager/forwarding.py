"""What this node forwards, and how an exit node's user routes: the host side
of gateways (network.yaml ``gateways:``, see core/routing.py rules 5-9).

One nftables table per daemon (``inet wgnm_<if>_<hash>``) holds exactly
what the file allows, and nothing else of ours exists:

- a static forwards from the mesh back into the mesh (relaying);
- a gateway forwards from the mesh into its networks (never into the mesh
  subnet, whatever its routes contain), masquerading unless told not to;
- everything else that comes in on the mesh interface and would be
  forwarded is dropped (Linux decides forwarding by the incoming
  interface's flag: without the table a member could reach the node's
  other networks);
- a gateway's answers come back in on its other interfaces: where we had to
  switch their ``forwarding`` on, the table lets them forward only into the
  mesh, and only answers (or, without masquerade, the gateway's own
  networks' traffic);
- an exit node's user marks WireGuard's connections (ct mark) so that their
  answers pass strict reverse-path filtering, as wg-quick does (every
  underlay address is behind its default route in our table).

Policy routing (``ip rule``, tables of our own numbered from the interface
name, never shared with another interface), as wg-quick does it:

- a node that routes networks behind gateways, or uses an exit node: those
  routes live in our route table, which only unmarked traffic consults;
  WireGuard's socket and the admin socket carry our ``fwmark``. So the
  underlay never enters the tunnel, whatever the networks hold: not the
  statics' endpoints, not a direct peer's NAT outside, and not the LAN
  probes of pair discovery (through a gateway's route they would find a
  "LAN" inside the tunnel). The networks come first (the file is the
  authority), then main without its default route (local networks, the
  mesh), then the table's default route into the mesh (exit node's users
  only: ``suppress_prefixlength 0``). The kill switch holds while the exit
  node is away: its AllowedIPs go, the default route stays;
- a static's relay table: traffic that came in from the mesh and is for a
  network the static puts onto a peer (core ``desired_relay_routes``) goes
  back into the mesh, even one the static lies on itself; the networks it
  serves itself are ``throw`` there, so its own LANs win over a relayed
  default route.

Changes to sysctls are written down in ``<run dir>/<if>.restore`` before
they are made: the next start after a crash puts the old values back, as a
clean exit does; rules and tables are found by their numbers and removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Protocol

import msgspec
import trio

from . import runfiles
from .model import DEFAULT_ROUTE, Gateway, Route
from .proc import CommandError, run

log = logging.getLogger("wg_netmanager.forwarding")

ROUTE_PROTO = "57"  # as routes.py: ours
# Rule priorities: before main (32766); the relay rule first (forwarded
# traffic), then the networks behind gateways, then the exit node's two
# (wg-quick's pair).
PREF_RELAY, PREF_NETWORKS, PREF_SUPPRESS, PREF_EXIT = 31000, 31001, 31002, 31003
_CONF = "/proc/sys/net/ipv4/conf"
_RESTORE_MAX = 1 << 16


class ForwardPlan(msgspec.Struct, frozen=True):
    """What this node forwards and how it routes (from its settings)."""

    interface: str
    subnet: IPv4Network  # the mesh
    relay: bool = False  # a static: forwards mesh -> mesh
    served: tuple[Gateway, ...] = ()  # our own entry of gateways:, if any
    exit_client: bool = False  # our default route goes to an exit node
    relay_table: bool = False  # a static in a mesh with gateways: the relay table
    route_table: bool = False  # we may route into the mesh: marks, rules, our route table

    @property
    def routes(self) -> tuple[IPv4Network, ...]:
        return tuple(r for g in self.served for r in g.routes)

    @property
    def forwards(self) -> bool:
        return self.relay or bool(self.routes)

    @property
    def needs_table(self) -> bool:
        """Our nftables table: a node that forwards, or an exit node's user
        (a node that only routes networks behind gateways needs ``ip`` alone)."""
        return self.forwards or self.exit_client


def plan_for(
    interface: str,
    subnet: IPv4Network,
    me: IPv4Address,
    *,
    is_static: bool,
    gateways: Sequence[Gateway],
    exit_node: IPv4Address | None,
) -> ForwardPlan:
    others = [r for g in gateways if g.wg_ip != me for r in g.routes if r != DEFAULT_ROUTE]
    return ForwardPlan(
        interface=interface,
        subnet=subnet,
        relay=is_static,
        served=tuple(g for g in gateways if g.wg_ip == me),
        exit_client=exit_node is not None,
        relay_table=is_static and bool(gateways),
        route_table=exit_node is not None or bool(others),
    )


# --- names and numbers ----------------------------------------------------------------


def _digest(interface: str, size: int) -> bytes:
    return hashlib.blake2b(interface.encode(), digest_size=size).digest()


def nft_table(interface: str) -> str:
    """Our nftables table for ``interface`` (names there: letters, digits, _)."""
    safe = "".join(c if c.isalnum() else "_" for c in interface)
    return f"wgnm_{safe}_{_digest(interface, 3).hex()}"


def route_table(interface: str) -> int:
    """Our route table (networks behind gateways, an exit node's default
    route), and the fwmark of the underlay: "wn" + 16 bits."""
    return 0x776E0000 | int.from_bytes(_digest(interface, 2), "big")


def relay_table(interface: str) -> int:
    """A static's relay table: "wr" + 16 bits."""
    return 0x77720000 | int.from_bytes(_digest(interface, 2), "big")


# --- pure plans --------------------------------------------------------------------------


def _set(items: Iterable[object]) -> str:
    return "{ " + ", ".join(str(i) for i in items) + " }"


def nft_ruleset(plan: ForwardPlan, switched: Sequence[str] = ()) -> str:
    """Our table, whole (``nft -f``: replaces an older one in one transaction).

    ``switched``: interfaces whose ``forwarding`` we turned on for a
    gateway's answers (they may forward only those into the mesh).
    """
    wg, mesh, table = f'"{plan.interface}"', str(plan.subnet), nft_table(plan.interface)
    forward = []
    if plan.relay:
        forward.append(f"iifname {wg} oifname {wg} accept")
    if plan.routes:
        routes = _set(plan.routes)
        forward.append(f"iifname {wg} oifname != {wg} ip daddr != {mesh} ip daddr {routes} accept")
    forward.append(f"iifname {wg} counter drop")
    if switched:
        names = _set(f'"{name}"' for name in switched)
        forward.append(f"iifname {names} oifname {wg} ct state established,related accept")
        routed = [r for g in plan.served if not g.masquerade for r in g.routes]
        if routed:
            forward.append(f"iifname {names} oifname {wg} ip saddr {_set(routed)} accept")
        forward.append(f"iifname {names} counter drop")
    chains = [_chain("forward", "filter hook forward priority filter", forward)]
    masqueraded = [r for g in plan.served if g.masquerade for r in g.routes]
    if masqueraded:
        rule = f"iifname {wg} oifname != {wg} ip daddr != {mesh} ip daddr {_set(masqueraded)}"
        chains.append(_chain("nat", "nat hook postrouting priority srcnat", [rule + " masquerade"]))
    if plan.exit_client:
        mark = hex(route_table(plan.interface))
        # WireGuard's connections keep their mark on the way in (strict rp_filter).
        chains.append(
            _chain(
                "premangle",
                "filter hook prerouting priority mangle",
                ["meta l4proto udp meta mark set ct mark"],
            )
        )
        chains.append(
            _chain(
                "postmangle",
                "filter hook postrouting priority mangle",
                [f"meta l4proto udp meta mark {mark} ct mark set meta mark"],
            )
        )
    body = "".join(chains)
    return (
        f"table inet {table} {{}}\n"  # so that the delete never fails
        f"delete table inet {table}\n"
        f"table inet {table} {{\n{body}}}\n"
    )


def _chain(name: str, hook: str, rules: Sequence[str]) -> str:
    lines = "".join(f"    {rule}\n" for rule in rules)
    return f"  chain {name} {{\n    type {hook}; policy accept;\n{lines}  }}\n"


def nft_delete(interface: str) -> str:
    table = nft_table(interface)
    return f"table inet {table} {{}}\ndelete table inet {table}\n"


class Rule(msgspec.Struct, frozen=True):
    """One ``ip rule`` of ours, in the words of ``ip rule add``."""

    pref: int
    words: tuple[str, ...]

    def argv(self, verb: str) -> list[str]:
        return ["ip", "-4", "rule", verb, *self.words, "pref", str(self.pref)]


def wanted_rules(plan: ForwardPlan) -> set[Rule]:
    rules = set()
    if plan.relay_table:
        relay = str(relay_table(plan.interface))
        rules.add(Rule(PREF_RELAY, ("iif", plan.interface, "lookup", relay)))
    table = str(route_table(plan.interface))
    not_marked = ("not", "fwmark", hex(route_table(plan.interface)))
    if plan.route_table:
        suppress = ("suppress_prefixlength", "0")
        rules.add(Rule(PREF_NETWORKS, (*not_marked, "lookup", table, *suppress)))
    if plan.exit_client:
        suppress = ("suppress_prefixlength", "0")
        rules.add(Rule(PREF_SUPPRESS, (*not_marked, "lookup", "main", *suppress)))
        rules.add(Rule(PREF_EXIT, (*not_marked, "lookup", table)))
    return rules


def our_rules(doc: Any, interface: str) -> set[Rule]:
    """Our rules in ``ip -j -4 rule show`` output (by their table and mark numbers)."""
    ours = {str(relay_table(interface)), str(route_table(interface))}
    mark = hex(route_table(interface))
    found = set()
    for entry in doc if isinstance(doc, list) else []:
        if not isinstance(entry, dict):
            continue
        table, fwmark, pref = entry.get("table"), entry.get("fwmark"), entry.get("priority")
        if not isinstance(pref, int) or (table not in ours and fwmark != mark):
            continue
        words: list[str] = []
        if "not" in entry:
            words.append("not")
        if fwmark is not None:
            words += ["fwmark", str(fwmark)]
        if entry.get("iif") is not None:
            words += ["iif", str(entry["iif"])]
        words += ["lookup", str(table)]
        if entry.get("suppress_prefixlen") is not None:
            words += ["suppress_prefixlength", str(entry["suppress_prefixlen"])]
        found.add(Rule(pref, tuple(words)))
    return found


class TableRoute(msgspec.Struct, frozen=True):
    """A route in one of our own tables: ``throw``, or into the mesh (``via``
    the peer that carries it, for people reading ``ip route``)."""

    network: IPv4Network
    via: IPv4Address | None = None
    throw: bool = False


def parse_table(text: str) -> set[TableRoute]:
    """One table's routes (``ip -4 route show table N``; see ``parse_tables``)."""
    found = set()
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        throw = fields[0] == "throw"
        token = fields[1] if throw and len(fields) > 1 else fields[0]
        via = None
        if "via" in fields[:-1]:
            with contextlib.suppress(ValueError):
                via = IPv4Address(fields[fields.index("via") + 1])
        with contextlib.suppress(ValueError):
            network = DEFAULT_ROUTE if token == "default" else IPv4Network(token)
            found.add(TableRoute(network, via, throw))
    return found


def parse_tables(text: str) -> dict[int, set[TableRoute]]:
    """``ip -N -4 route show table all proto 57``: our routes by table number,
    the main table's (routes.py's) left out. A table with no route of ours
    is simply missing (the kernel has no empty tables to list)."""
    lines: dict[int, list[str]] = {}
    for line in text.splitlines():
        fields = line.split()
        if "table" not in fields[:-1]:
            continue  # the main table
        at = fields.index("table")
        with contextlib.suppress(ValueError):
            table = int(fields[at + 1])
            lines.setdefault(table, []).append(" ".join(fields[:at] + fields[at + 2 :]))
    return {table: parse_table("\n".join(found)) for table, found in lines.items()}


def plan_table(
    interface: str, table: int, desired: set[TableRoute], actual: set[TableRoute]
) -> list[list[str]]:
    """``ip route`` commands: replace what is missing or changed, then delete the rest."""
    cmds = []
    where = ["table", str(table), "proto", ROUTE_PROTO]
    for route in sorted(desired - actual, key=lambda r: r.network):
        if route.throw:
            cmds.append(["ip", "-4", "route", "replace", "throw", str(route.network), *where])
        elif route.via is None:
            cmds.append(
                ["ip", "-4", "route", "replace", str(route.network), "dev", interface, *where]
            )
        else:
            via = ["via", str(route.via), "dev", interface]
            cmds.append(
                ["ip", "-4", "route", "replace", str(route.network), *via, *where, "onlink"]
            )
    wanted = {r.network for r in desired}
    for route in sorted(actual - desired, key=lambda r: r.network):
        if route.network in wanted:
            continue  # replaced above
        what = ["throw", str(route.network)] if route.throw else [str(route.network)]
        cmds.append(["ip", "-4", "route", "del", *what, "table", str(table)])
    return cmds


def egress_interfaces(
    routes_text: str, networks: Iterable[IPv4Network], exclude: Iterable[str]
) -> list[str]:
    """The interfaces ``ip -4 route show table main`` sends ``networks`` out of:
    each one's most specific covering route's, and those of routes inside it."""
    table: list[tuple[IPv4Network, str]] = []
    for line in routes_text.splitlines():
        fields = line.split()
        if len(fields) < 3 or "dev" not in fields[:-1]:
            continue
        token = fields[0]
        with contextlib.suppress(ValueError):
            network = DEFAULT_ROUTE if token == "default" else IPv4Network(token)
            table.append((network, fields[fields.index("dev") + 1]))
    skip = set(exclude) | {"lo"}
    found: set[str] = set()
    for network in networks:
        covering = [(n, dev) for n, dev in table if network.subnet_of(n)]
        if covering:
            found.add(max(covering, key=lambda c: c[0].prefixlen)[1])
        found.update(dev for n, dev in table if n != network and n.subnet_of(network))
    return sorted(found - skip)


def wanted_sysctls(plan: ForwardPlan, switched: Sequence[str]) -> dict[str, str]:
    """The sysctls the plan needs, in the order they are written."""
    values: dict[str, str] = {}
    if plan.forwards:
        values[f"{_CONF}/{plan.interface}/forwarding"] = "1"
    if plan.relay:
        # The kernel would tell a peer "send to C directly" whenever it
        # forwards out of the interface the packet came in on; the
        # per-interface 0 is OR-ed with conf/all, so both.
        values[f"{_CONF}/{plan.interface}/send_redirects"] = "0"
        values[f"{_CONF}/all/send_redirects"] = "0"
    for name in switched:
        values[f"{_CONF}/{name}/forwarding"] = "1"
    if plan.exit_client:
        values[f"{_CONF}/all/src_valid_mark"] = "1"  # the rp_filter sees the fwmark
    return values


# --- the host ------------------------------------------------------------------------------


class Forwarding(Protocol):
    """The host side of forwarding and policy routing, as the daemon sees it.

    Implemented by :class:`HostForwarding` and ``FakeForwarding`` in
    ``tests/fakes.py``.
    """

    async def prepare(self, plan: ForwardPlan) -> None:
        """What of ``plan`` needs no interface yet (our nftables table, routing
        rules; the first call also undoes what a crashed run left), so that it
        can run while the interface is made. CommandError."""
        ...

    async def apply(self, plan: ForwardPlan) -> None:
        """Make the host forward and route as ``plan`` says, the interface's
        own settings included (idempotent; prepares first unless ``prepare``
        was given this plan). CommandError."""
        ...

    async def set_routes(self, routes: set[Route], relay: frozenset[IPv4Network]) -> None:
        """Our route table (``routes``: the networks behind gateways; an exit
        node's user's default route added) and a static's relay table, after
        ``apply``. CommandError."""
        ...

    async def release(self) -> None:
        """Undo everything (safe to call twice, or before ``apply``)."""
        ...


class Changes(msgspec.Struct):
    """What a run changed on the host, written down before it changes it (the
    restore file): the sysctls' old values, whether our nftables table and
    our rules and tables exist."""

    sysctls: dict[str, str] = msgspec.field(default_factory=dict)
    nft: bool = False
    policy: bool = False

    def __bool__(self) -> bool:
        return bool(self.sysctls) or self.nft or self.policy


class HostForwarding:
    """:class:`Forwarding` on this machine: ``nft``, ``ip rule``, ``ip route``, /proc/sys.

    A node in a mesh without gateways that is not static changes nothing and
    runs no command here (not even to look for leftovers: a run that changes
    something writes the restore file first, and only that file makes the
    next start look).
    """

    def __init__(self, restore_path: str) -> None:
        self._restore_path = restore_path
        self._plan: ForwardPlan | None = None
        self._recovered = False
        self._changes = Changes()
        # The plan prepare() has done, and the sysctls that apply() then writes.
        self._prepared: tuple[ForwardPlan, dict[str, str]] | None = None

    async def prepare(self, plan: ForwardPlan) -> None:
        self._prepared = None
        if not self._recovered:
            await self._recover(plan.interface)
            self._recovered = True
        self._plan = plan
        policy = plan.route_table or plan.relay_table
        sysctls: dict[str, str] = {}
        if plan.needs_table or policy:
            await self._note(nft=plan.needs_table, policy=policy)
        if plan.needs_table:
            switched: list[str] = []
            if plan.routes:
                text = await run(["ip", "-4", "route", "show", "table", "main"])
                for name in egress_interfaces(text, plan.routes, [plan.interface]):
                    path = f"{_CONF}/{name}/forwarding"
                    # Switched on by us (now or earlier in this run): ours to police.
                    if path in self._changes.sysctls or await _read_sysctl(path) != "1":
                        switched.append(name)
            # Matched by name (iifname): loaded before the interface exists.
            await run(["nft", "-f", "-"], stdin=nft_ruleset(plan, switched).encode())
            sysctls = wanted_sysctls(plan, switched)
        if policy:
            await self._apply_rules(plan)
        self._prepared = (plan, sysctls)

    async def apply(self, plan: ForwardPlan) -> None:
        if self._prepared is None or self._prepared[0] != plan:
            await self.prepare(plan)
        assert self._prepared is not None
        sysctls, self._prepared = self._prepared[1], None
        # The interface's forwarding is switched on after our rules are in place.
        await self._write_sysctls(sysctls)

    async def set_routes(self, routes: set[Route], relay: frozenset[IPv4Network]) -> None:
        plan = self._plan
        if plan is None:
            return
        tables = []
        if plan.route_table:
            own = {TableRoute(r.network, r.via) for r in routes}
            if plan.exit_client:
                own.add(TableRoute(DEFAULT_ROUTE))  # stays while the exit node is away
            tables.append((route_table(plan.interface), own))
        if plan.relay_table:
            forwarded = {TableRoute(r) for r in relay}
            forwarded |= {TableRoute(r, throw=True) for r in plan.routes if r not in relay}
            tables.append((relay_table(plan.interface), forwarded))
        listed = await _our_tables() if tables else {}
        for table, desired in tables:
            actual = listed.get(table, set())
            for argv in plan_table(plan.interface, table, desired, actual):
                await run(argv)

    async def release(self) -> None:
        plan, self._plan = self._plan, None
        if plan is not None:
            await self._undo(plan.interface, self._changes)
        self._changes = Changes()

    # --- parts ---------------------------------------------------------------------

    async def _recover(self, interface: str) -> None:
        """What a run that did not clean up (a crash) left, undone."""
        left = _read_restore(self._restore_path)
        if not left:
            return
        what = ", ".join([*left.sysctls, *(["nftables"] if left.nft else [])])
        log.warning("undoing what a previous run left: %s", what or "routing rules")
        await self._undo(interface, left)

    async def _undo(self, interface: str, changes: Changes) -> None:
        """Our rules, tables and nftables table gone, sysctls as they were,
        the restore file removed; the first failure is raised at the end."""
        errors: list[CommandError] = []
        steps = []
        if changes.policy:
            steps.append(self._remove_rules_and_tables)
        if changes.nft:
            steps.append(self._remove_nft)
        for step in steps:
            try:
                await step(interface)
            except CommandError as exc:
                errors.append(exc)
        for path, value in changes.sysctls.items():
            try:
                await _write_sysctl(path, value)
            except CommandError as exc:  # an interface that is gone took its settings along
                log.debug("restore: %s", exc)
        with contextlib.suppress(OSError):
            os.unlink(self._restore_path)
        if errors:
            raise errors[0]

    async def _note(
        self, *, nft: bool = False, policy: bool = False, sysctls: Mapping[str, str] | None = None
    ) -> None:
        """Write down what is about to change, before it does."""
        changes = self._changes
        old = {**changes.sysctls, **(sysctls or {})}
        new = Changes(old, changes.nft or nft, changes.policy or policy)
        if new != changes:
            try:
                await trio.to_thread.run_sync(_write_restore, self._restore_path, new)
            except OSError as exc:
                raise CommandError(["write", self._restore_path], exc.errno or 1, str(exc)) from exc
            self._changes = new

    async def _remove_nft(self, interface: str) -> None:
        await run(["nft", "-f", "-"], stdin=nft_delete(interface).encode())

    async def _remove_rules_and_tables(self, interface: str) -> None:
        for rule in sorted(our_rules(await _rules(), interface), key=lambda r: r.pref):
            await run(rule.argv("del"))
        listed = await _our_tables()
        for table in (relay_table(interface), route_table(interface)):
            if table in listed:
                await run(["ip", "-4", "route", "flush", "table", str(table)])

    async def _apply_rules(self, plan: ForwardPlan) -> None:
        have, want = our_rules(await _rules(), plan.interface), wanted_rules(plan)
        for rule in sorted(have - want, key=lambda r: r.pref):
            await run(rule.argv("del"))
        for rule in sorted(want - have, key=lambda r: r.pref):
            await run(rule.argv("add"))

    async def _write_sysctls(self, values: Mapping[str, str]) -> None:
        old = {}
        for path in values:
            if path not in self._changes.sysctls:
                with contextlib.suppress(CommandError):  # e.g. not there: nothing to restore
                    old[path] = await _read_sysctl(path)
        if old:
            await self._note(sysctls=old)
        for path, value in values.items():
            await _write_sysctl(path, value)


async def _rules() -> Any:
    text = await run(["ip", "-j", "-4", "rule", "show"])
    try:
        return json.loads(text or "[]")
    except ValueError:
        return []


async def _our_tables() -> dict[int, set[TableRoute]]:
    """Every table's routes of ours in one listing: unlike ``show table N``
    it does not fail for a table that does not exist (yet, or any more).
    ``-N`` prints table numbers even where rt_tables gives one a name."""
    return parse_tables(
        await run(["ip", "-N", "-4", "route", "show", "table", "all", "proto", ROUTE_PROTO])
    )


async def _read_sysctl(path: str) -> str:
    try:
        return (await trio.Path(path).read_text()).strip()
    except OSError as exc:
        raise CommandError(["read", path], exc.errno or 1, str(exc)) from exc


async def _write_sysctl(path: str, value: str) -> None:
    log.debug("write %s = %s", path, value)
    try:
        await trio.Path(path).write_text(value + "\n")
    except OSError as exc:
        raise CommandError(["write", path, value], exc.errno or 1, str(exc)) from exc


def _write_restore(path: str, changes: Changes) -> None:
    """Atomically, root only, never through a link."""
    doc = {"sysctls": changes.sysctls, "nft": changes.nft, "policy": changes.policy}
    runfiles.write_private(path, json.dumps(doc))


def _read_restore(path: str) -> Changes:
    """What ``_write_restore`` wrote (empty on any problem); only
    /proc/sys/net/ipv4/conf paths with numbers are taken."""
    try:
        text = runfiles.read_private(path, _RESTORE_MAX)
        doc = json.loads(text) if text is not None else None
    except (OSError, ValueError):
        return Changes()
    if not isinstance(doc, dict):
        return Changes()
    sysctls = doc.get("sysctls")
    return Changes(
        sysctls={
            k: v
            for k, v in (sysctls.items() if isinstance(sysctls, dict) else ())
            if isinstance(k, str)
            and isinstance(v, str)
            and k.startswith(_CONF + "/")
            and ".." not in k
            and v.isdigit()
        },
        nft=doc.get("nft") is True,
        policy=doc.get("policy") is True,
    )
