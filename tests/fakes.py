"""Recording fakes of the I/O adapters, for daemon tests without root.

:class:`FakeWgDevice` implements :class:`~wg_netmanager.wgdev.WgDevice`,
:class:`FakeRoutes` :class:`~wg_netmanager.routes.Routes` and
:class:`FakeForwarding` :class:`~wg_netmanager.forwarding.Forwarding`.
Both keep their state in plain attributes, record every call in ``calls``
(method name and arguments, never the private key) and the commands the real
adapter would have run in ``commands``, and raise a queued
:class:`CommandError` when a test puts one in ``fail[method_name]`` (once)
or ``fail_always[method_name]`` (until removed).
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from msgspec.structs import replace

from wg_netmanager.forwarding import ForwardPlan, nft_ruleset
from wg_netmanager.model import Route, WgPeer, WgPeerReading
from wg_netmanager.proc import CommandError
from wg_netmanager.routes import plan_route_changes
from wg_netmanager.wgdev import plan_peer_changes


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.commands: list[list[str]] = []
        self.fail: dict[str, CommandError] = {}
        self.fail_always: dict[str, CommandError] = {}

    def _enter(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        error = self.fail.pop(method, None) or self.fail_always.get(method)
        if error is not None:
            raise error

    def call_names(self) -> list[str]:
        return [name for name, _ in self.calls]


class FakeWgDevice(_Recorder):
    """A WireGuard interface that lives in a dict."""

    def __init__(self, name: str = "wg0", backend: str = "wireguard-go") -> None:
        super().__init__()
        self.name = name
        self.backend = backend
        self.created = False
        self.fresh = False
        self.kept = False  # create() takes over a crashed run's link (set by a test)
        self.private_key: bytes | None = None
        self.listen_port: int | None = None
        self.address: tuple[IPv4Address, int] | None = None
        self.fwmark = 0
        self.peers: dict[str, WgPeerReading] = {}

    def _require(self, argv: list[str]) -> None:
        if not self.created:
            raise CommandError(argv, 1, "Unable to access interface: No such device")

    async def exists(self) -> bool:
        self._enter("exists")
        return self.created

    async def create(self, adopt_key: str | None = None, *, renew_kept: bool = True) -> str:
        self._enter("create", renew_kept)
        self.created = True
        self.fresh = not self.kept  # a kept link keeps its routes; a new one has none
        self.peers = {}
        self.address = None
        return self.backend

    async def destroy(self) -> None:
        self._enter("destroy")
        self.delete_externally()  # the same end state, by our own hand

    async def configure(self, private_key: bytes, listen_port: int) -> None:
        self._enter("configure", listen_port)
        self._require(["wg", "set", self.name])
        if len(private_key) != 32:
            raise ValueError("a WireGuard private key is 32 bytes")
        self.private_key = private_key
        self.listen_port = listen_port

    async def set_address(self, wg_ip: IPv4Address, prefixlen: int) -> None:
        self._enter("set_address", wg_ip, prefixlen)
        self._require(["ip", "addr", "replace"])
        self.address = (wg_ip, prefixlen)

    async def set_fwmark(self, mark: int) -> None:
        self._enter("set_fwmark", mark)
        self._require(["wg", "set", self.name, "fwmark"])
        self.fwmark = mark

    async def rebind(self, peers: Mapping[str, WgPeer]) -> None:
        self._enter("rebind", dict(peers))
        self._require(["wg", "set", self.name])

    async def read_peers(self) -> dict[str, WgPeerReading]:
        self._enter("read_peers")
        self._require(["wg", "show", self.name, "dump"])
        return dict(self.peers)

    async def apply_peers(
        self, desired: Mapping[str, WgPeer], actual: Mapping[str, WgPeerReading]
    ) -> None:
        self._enter("apply_peers", dict(desired), dict(actual))
        self._require(["wg", "set", self.name])
        self.commands += plan_peer_changes(self.name, desired, actual)
        peers: dict[str, WgPeerReading] = {}
        for key, want in desired.items():
            old = self.peers.get(key)
            endpoint = want.endpoint
            if endpoint is None and old is not None:
                endpoint = old.endpoint  # WireGuard keeps a learned endpoint
            peers[key] = WgPeerReading(
                public_key=key,
                endpoint=endpoint,
                allowed_ips=tuple(sorted(set(want.allowed_ips))),
                handshake_age=None if old is None else old.handshake_age,
                rx_bytes=0 if old is None else old.rx_bytes,
                tx_bytes=0 if old is None else old.tx_bytes,
                persistent_keepalive=want.persistent_keepalive,
            )
        self.peers = peers

    # -- helpers for tests --------------------------------------------------

    def set_handshake(self, public_key: str, age: float | None) -> None:
        """Pretend the latest handshake with a peer was ``age`` seconds ago."""
        self.peers[public_key] = replace(self.peers[public_key], handshake_age=age)

    def delete_externally(self) -> None:
        """Someone ran ``ip link del``: the interface and all on it are gone."""
        self.created = False
        self.peers = {}
        self.address = None
        self.fwmark = 0

    def set_endpoint(self, public_key: str, endpoint: tuple[str, int] | None) -> None:
        """Pretend WireGuard learned (roamed to) an endpoint."""
        self.peers[public_key] = replace(self.peers[public_key], endpoint=endpoint)


class FakeRoutes(_Recorder):
    """Host routes per interface, in sets: ``tables[ifname]``."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, set[Route]] = {}

    async def read(self, ifname: str) -> set[Route]:
        self._enter("read", ifname)
        return set(self.tables.get(ifname, ()))

    async def apply(self, ifname: str, desired: set[Route], actual: set[Route]) -> None:
        self._enter("apply", ifname, set(desired), set(actual))
        self.commands += plan_route_changes(ifname, desired, actual)
        desired_dests = {r.network for r in desired}
        # like ``ip route replace`` per desired route, then ``del`` of exactly
        # the actual routes whose destination is no longer desired
        current = self.tables.get(ifname, set())
        untouched = {r for r in current if r.network not in desired_dests and r not in actual}
        self.tables[ifname] = untouched | set(desired)


class FakeForwarding(_Recorder):
    """What the host forwards, as plain values: the plan applied (None:
    nothing, or released), the route and relay tables, and ``ruleset`` (the
    nftables text the real one would load)."""

    def __init__(self) -> None:
        super().__init__()
        self.plan: ForwardPlan | None = None
        self.routes: set[Route] = set()
        self.relay: frozenset[IPv4Network] = frozenset()
        self.ruleset = ""

    async def prepare(self, plan: ForwardPlan) -> None:
        self._enter("prepare", plan)

    async def apply(self, plan: ForwardPlan) -> None:
        self._enter("apply", plan)
        self.plan = plan
        self.ruleset = nft_ruleset(plan) if plan.needs_table else ""

    async def set_routes(self, routes: set[Route], relay: frozenset[IPv4Network]) -> None:
        self._enter("set_routes", set(routes), relay)
        self.routes, self.relay = set(routes), relay

    async def release(self) -> None:
        self._enter("release")
        self.plan, self.routes, self.relay, self.ruleset = None, set(), frozenset(), ""
