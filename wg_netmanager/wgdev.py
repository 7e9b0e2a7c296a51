"""The WireGuard interface: create it, configure it, read and reconcile peers.

:class:`WgInterface` drives the real interface through ``ip`` and ``wg``
(every call via :func:`wg_netmanager.proc.run`), and a userspace daemon
through its UAPI socket directly (``uapi.py``: the same requests ``wg``
would make, without a process each); :class:`WgDevice` is the
protocol the daemon codes against, also implemented by
``FakeWgDevice`` in ``tests/fakes.py`` for tests without root.

Backends, tried in order: the kernel module (``ip link add X type
wireguard``), ``wireguard-go X``, ``boringtun-cli X`` / ``boringtun X``; the
kernel goes last where it has no WireGuard module to load
(``backends.py``). The first one's command may have been started by the
command line before the daemon's imports (``backends.EarlyStart``).

The userspace daemons are left to daemonize themselves (their default) rather
than run in the foreground as a child managed in a trio nursery:

* ``wireguard-go``'s parent process creates the TUN device and the UAPI socket
  (``/var/run/wireguard/X.sock``) *before* it forks the daemon and exits, so
  when ``run`` returns the interface is already there; ``create`` stays a
  plain awaitable with no service task, nursery or PID bookkeeping, exactly
  like the kernel backend.
* The lifecycle then matches the kernel backend: ``ip link del X`` makes the
  daemon exit on its own (its TUN is gone), so ``destroy`` is the same for all
  backends; if the manager crashes, the interface (and daemon) outlives it in
  both cases and the next ``create`` deletes the stale interface first (or,
  when it has the key of the new run, a crashed run's kept, keeps it: its
  links carry traffic until the new run's are set).  A
  foreground child would die with the manager only if we also set up
  ``PR_SET_PDEATHSIG``, and would take the interface with it mid-teardown on
  cancellation.
* The price: the daemon is not our child (it is reparented to init) and its
  log goes to /dev/null.  ``LOG_LEVEL`` is removed from its environment on
  purpose: with it set, the daemon inherits our stdout/stderr pipes and
  ``run`` would wait for their EOF until the daemon exits.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import time
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Protocol

import trio
from msgspec.structs import replace

from . import uapi
from .backends import SOCKET_DIR, Command, EarlyStart, backend_commands, link_exists
from .model import WgPeer, WgPeerReading, format_endpoint, parse_endpoint
from .proc import CommandError, run, run_batch
from .routes import flush_routes

log = logging.getLogger("wg_netmanager.wgdev")

READY_TIMEOUT = 3.0  # seconds to wait for ``wg show X`` after starting a backend
SOCKET_GONE_TIMEOUT = 1.0  # seconds to wait for a daemon's UAPI socket to go away
POLL_INTERVAL = 0.02


class WgDevice(Protocol):
    """What the daemon needs from a WireGuard interface."""

    name: str
    fresh: bool  # the last create() made the link anew (not kept, not existing)

    async def create(self, adopt_key: str | None = None, *, renew_kept: bool = True) -> str:
        """Create (or take over) the interface; return the backend name. A
        stale one with the public key ``adopt_key`` is kept (a crashed run's),
        its peers' sessions renewed as they are first set if ``renew_kept``."""
        ...

    async def configure(self, private_key: bytes, listen_port: int) -> None: ...

    async def set_address(self, wg_ip: IPv4Address, prefixlen: int) -> None: ...

    async def set_fwmark(self, mark: int) -> None:
        """Mark WireGuard's own packets (an exit node's user routes them outside)."""
        ...

    async def read_peers(self) -> dict[str, WgPeerReading]: ...

    async def apply_peers(
        self, desired: Mapping[str, WgPeer], actual: Mapping[str, WgPeerReading]
    ) -> None: ...

    async def destroy(self) -> None: ...

    async def exists(self) -> bool: ...

    async def rebind(self, peers: Mapping[str, WgPeer]) -> None: ...


# ---------------------------------------------------------------------------
# pure helpers


async def _finish_early(early: EarlyStart) -> None:
    """Wait for the command the command line started (as ``run`` would)."""
    log.debug("run (started before the imports): %s", " ".join(early.argv))
    code, err = await trio.to_thread.run_sync(early.finish)
    took = (time.monotonic() - early.started) * 1000
    if code != 0:
        log.debug("exit %d after %.1f ms: %s", code, took, err.strip())
        raise CommandError(early.argv, code, err)
    log.debug("ok, %.1f ms after it started", took)


def is_valid_key(key: str) -> bool:
    """True for a WireGuard base64 key (32 bytes)."""
    if len(key) != 44:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def _parse_allowed_ips(text: str) -> tuple[IPv4Network, ...]:
    if text == "(none)":
        return ()
    nets: set[IPv4Network] = set()
    for item in text.split(","):
        if ":" in item:  # IPv6: not ours to manage, and not representable
            log.debug("ignoring non-IPv4 allowed-ip %s", item)
            continue
        nets.add(IPv4Network(item, strict=False))
    return tuple(sorted(nets))


def parse_dump(text: str, now_wall: float) -> dict[str, WgPeerReading]:
    """Parse ``wg show X dump`` into readings keyed by public key.

    The first line describes the interface (and holds its private key: it is
    never parsed or logged); each further line is one peer with eight
    tab-separated fields.  Malformed lines are logged (without content) and
    skipped.  ``now_wall`` is the current ``time.time()``; handshake ages are
    clamped to >= 0 (clock steps).
    """
    peers: dict[str, WgPeerReading] = {}
    for lineno, line in enumerate(text.splitlines()[1:], start=2):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 8:
            log.warning("wg dump line %d: expected 8 fields, got %d; skipped", lineno, len(fields))
            continue
        pubkey, _psk, endpoint, allowed, handshake, rx, tx, keepalive = fields
        try:
            if not is_valid_key(pubkey):
                raise ValueError("bad public key")
            latest = int(handshake)
            reading = WgPeerReading(
                public_key=pubkey,
                endpoint=parse_endpoint(endpoint),
                allowed_ips=_parse_allowed_ips(allowed),
                handshake_age=None if latest == 0 else max(0.0, now_wall - latest),
                rx_bytes=int(rx),
                tx_bytes=int(tx),
                persistent_keepalive=0 if keepalive == "off" else int(keepalive),
            )
        except ValueError as exc:
            log.warning("wg dump line %d: %s; skipped", lineno, exc)
            continue
        peers[pubkey] = reading
    return peers


def _format_ips(nets: set[IPv4Network]) -> str:
    return ",".join(str(n) for n in sorted(nets))


def plan_peer_changes(
    ifname: str, desired: Mapping[str, WgPeer], actual: Mapping[str, WgPeerReading]
) -> list[list[str]]:
    """The ``wg set`` commands turning ``actual`` into ``desired`` (0 to 2).

    The first command removes unwanted peers and shrinks the AllowedIPs of
    peers that lose addresses (to what they keep); the second adds new peers,
    grows the others to their full desired list and updates endpoint /
    keepalive.  So an address moving from one peer to another is first
    unassigned and only then assigned: it is never routed to a peer that
    should no longer get it.  Endpoints are only set when the desired one is
    known and differs (otherwise WireGuard's roaming is left alone).  Peers
    with an invalid public key are skipped with a warning, so one bad key does
    not block every other change.
    """
    shrink: list[str] = []
    grow: list[str] = []
    for key in sorted(actual):
        if key not in desired:
            shrink += ["peer", key, "remove"]
    for key in sorted(desired):
        want = desired[key]
        if not is_valid_key(key):
            log.warning("not configuring peer with invalid public key %r", key)
            continue
        have = actual.get(key)
        attrs: list[str] = []
        if want.endpoint is not None and (have is None or have.endpoint != want.endpoint):
            attrs += ["endpoint", format_endpoint(want.endpoint)]
        have_keepalive = 0 if have is None else have.persistent_keepalive
        if want.persistent_keepalive != have_keepalive:
            attrs += ["persistent-keepalive", str(want.persistent_keepalive)]
        want_ips = set(want.allowed_ips)
        if have is None:
            grow += ["peer", key, "allowed-ips", _format_ips(want_ips), *attrs]
            continue
        have_ips = set(have.allowed_ips)
        if want_ips == have_ips:
            if attrs:
                grow += ["peer", key, *attrs]
        elif want_ips < have_ips:
            shrink += ["peer", key, "allowed-ips", _format_ips(want_ips), *attrs]
        else:
            if have_ips - want_ips:
                shrink += ["peer", key, "allowed-ips", _format_ips(have_ips & want_ips)]
            grow += ["peer", key, "allowed-ips", _format_ips(want_ips), *attrs]
    return [["wg", "set", ifname, *clauses] for clauses in (shrink, grow) if clauses]


def _parse_addresses(text: str) -> set[IPv4Interface]:
    """``inet a.b.c.d/n`` entries of ``ip -4 -o addr show`` output."""
    found: set[IPv4Interface] = set()
    for line in text.splitlines():
        fields = line.split()
        for i, field in enumerate(fields[:-1]):
            if field == "inet":
                with contextlib.suppress(ValueError):
                    found.add(IPv4Interface(fields[i + 1]))
    return found


# ---------------------------------------------------------------------------
# the real interface


class WgInterface:
    """A WireGuard interface driven through ``ip`` and ``wg``.

    ``existing=True``: the interface is managed by someone else (created by
    the administrator); we take it over without creating or deleting it, and
    on ``destroy`` only remove peers, addresses and our routes.
    """

    def __init__(self, name: str, existing: bool = False, early: EarlyStart | None = None) -> None:
        self.name = name
        self.existing = existing
        # The first backend's command, started before the daemon's imports
        # (no link of that name existed then): the first create() takes it.
        self._early = early
        self.backend: str | None = None  # set by a successful create()
        self.fresh = False  # the last create() made the link: no routes on it yet
        self._touched = False  # create() got far enough to change something
        self._bare = False  # create() left it without IPv4 addresses
        # A userspace daemon's UAPI socket: spoken to directly instead of running `wg`.
        self._uapi: str | None = None
        self._fwmark = 0  # set by us (an existing interface gets it off again)
        # Peers of a crashed run's kept interface whose sessions this run has
        # not renewed yet (see _adopt).
        self._inherited: set[str] = set()

    def __repr__(self) -> str:
        return f"WgInterface({self.name!r}, existing={self.existing}, backend={self.backend!r})"

    # -- lifecycle ----------------------------------------------------------

    async def exists(self) -> bool:
        """Does the link exist (in our network namespace)? Asked of the kernel
        directly: no process."""
        await trio.lowlevel.checkpoint()
        return link_exists(self.name)

    async def create(self, adopt_key: str | None = None, *, renew_kept: bool = True) -> str:
        """Create the interface (or take over an existing one).

        A stale interface of that name is deleted first, unless its public
        key is ``adopt_key``: then it is our crashed run's, with the key this
        run keeps, and it is kept as it is ("userspace" or "kernel"); see
        _adopt for ``renew_kept``.

        Returns the backend: "kernel", "wireguard-go", "boringtun" or
        "existing".  Raises :class:`CommandError` when no backend works, when
        ``existing`` is set and the interface is missing or not WireGuard, or
        when a stale interface of that name is not WireGuard (it is then not
        ours, so it is not deleted).
        """
        self._uapi = None
        self.fresh = False
        early, self._early = self._early, None
        if early is not None:  # no link of that name existed when it started
            return await self._create_from(early.commands, early.take())
        if self.existing:
            backend = await self._take_over()
            self._bare = True
            sock = trio.Path(SOCKET_DIR, f"{self.name}.sock")
            self._uapi = str(sock) if await sock.exists() else None
            return backend
        if await self.exists():
            try:
                stale_key = (await run(["wg", "show", self.name, "public-key"])).strip()
            except CommandError as exc:
                raise CommandError(
                    exc.argv,
                    exc.returncode,
                    f"{exc.stderr.strip()}\ninterface {self.name} exists but is not a "
                    "WireGuard interface we can manage; refusing to delete it",
                ) from None
            if adopt_key is not None and stale_key == adopt_key:
                return await self._adopt(renew_kept)
            log.warning("deleting stale interface %s left over by an earlier run", self.name)
            self._touched = True
            await self._delete_link()
        elif await self._daemon_lingers():  # the daemon of a link deleted a moment ago
            await self._wait_socket_gone()
        return await self._create_from(backend_commands(self.name))

    async def _create_from(self, commands: list[Command], early: EarlyStart | None = None) -> str:
        """Make the link with the first of ``commands`` that works (``early``:
        the first one's, started already)."""
        self._touched = True
        errors: list[str] = []
        for backend, argv, env in commands:
            try:
                if early is not None and argv == early.argv:
                    await _finish_early(early)
                else:
                    await run(argv, env=env)
            except CommandError as exc:
                log.debug("backend %s unavailable: %s", backend, exc)
                errors.append(f"{backend}: {exc}")
                continue
            try:
                if backend != "kernel":  # the kernel's link is ready when `ip` returns
                    await self._wait_ready()
            except CommandError as exc:
                errors.append(f"{backend}: started but not usable: {exc}")
                await self._delete_link()
                continue
            self.backend = backend
            self._bare = True
            self.fresh = True
            if backend != "kernel":
                self._uapi = os.path.join(SOCKET_DIR, f"{self.name}.sock")
            log.info("created WireGuard interface %s (backend %s)", self.name, backend)
            return backend
        raise CommandError(
            ["ip", "link", "add", self.name, "type", "wireguard"],
            1,
            "no WireGuard backend worked:\n" + "\n".join(errors),
        )

    async def _adopt(self, renew_kept: bool) -> str:
        """Keep our crashed run's interface: its WireGuard sessions go on
        (the static's, the direct links) while this run sets its peers.

        With ``renew_kept``, the first time this run sets one of those peers,
        the peer is removed and added anew, so its session is renewed by a
        fresh handshake: a node that dropped the crashed run no longer holds
        that session and, if we are behind a NAT, cannot start one towards
        us; WireGuard would otherwise go on sending into the stale session
        for about 15 s. This run sets a peer only once it has spoken with it
        (or with the static that vouches for it), so the peer takes the
        handshake.

        A static passes ``renew_kept=False``: its nodes set it again
        themselves when they hear its new run, and start the handshake. With
        a renewal of ours as well, about one restart in five left a node cut
        off for WireGuard's 5 s retry (the logs fit two crossing initiations).
        """
        self._touched = True
        sock = os.path.join(SOCKET_DIR, f"{self.name}.sock")
        self._uapi = sock if await trio.Path(sock).exists() else None
        self._inherited = set(await self.read_peers()) if renew_kept else set()
        self.backend = "kernel" if self._uapi is None else "userspace"
        log.info(
            "kept interface %s of a crashed run with this run's key (backend %s)",
            self.name,
            self.backend,
        )
        return self.backend

    async def _take_over(self) -> str:
        # both raise CommandError with a clear stderr if missing / not WireGuard
        await run(["ip", "link", "show", "dev", self.name])
        peers = await self.read_peers()
        self._touched = True
        await run(["ip", "addr", "flush", "dev", self.name])
        await run(["ip", "route", "flush", "dev", self.name])
        await self._remove_peers(peers)
        self.backend = "existing"
        log.info("took over existing WireGuard interface %s", self.name)
        return "existing"

    async def _remove_peers(self, peers: Iterable[str]) -> None:
        if peers:
            clauses = [w for key in sorted(peers) for w in ("peer", key, "remove")]
            await self._wg_set(["wg", "set", self.name, *clauses])

    async def _wg_set(self, argv: list[str]) -> None:
        """``wg set``, or the same through the UAPI socket of a userspace daemon."""
        if self._uapi is None:
            await run(argv)
        else:
            await uapi.request(self._uapi, "set=1", uapi.set_lines(argv))

    async def _wait_ready(self) -> None:
        """Wait (bounded) for a userspace daemon's UAPI socket, through which
        ``wg`` talks to it. wireguard-go makes it before its start-up process
        returns, so this rarely waits; looking is cheaper than running ``wg``."""
        sock = trio.Path(SOCKET_DIR, f"{self.name}.sock")
        with trio.move_on_after(READY_TIMEOUT):
            while not await sock.exists():  # noqa: ASYNC110 (polling the file system)
                await trio.sleep(POLL_INTERVAL)
            if await self.exists():
                return
        # one last try; its CommandError is the answer
        await run(["wg", "show", self.name, "listen-port"])

    async def _delete_link(self) -> None:
        try:
            await run(["ip", "link", "del", "dev", self.name])
        except CommandError:
            if await self.exists():
                raise
        await self._wait_socket_gone()

    async def _daemon_lingers(self) -> bool:
        """Does a userspace daemon still listen on our UAPI socket (its link gone)?"""
        try:
            stream = await trio.open_unix_socket(os.path.join(SOCKET_DIR, f"{self.name}.sock"))
        except OSError:  # no socket, or a stale file nobody listens on
            return False
        await stream.aclose()
        return True

    async def _wait_socket_gone(self) -> None:
        """A userspace daemon notices its TUN is gone, exits and removes its
        UAPI socket (answering on it meanwhile); wait (bounded) for that, so
        that a new daemon can bind it."""
        sock = trio.Path(SOCKET_DIR, f"{self.name}.sock")
        with trio.move_on_after(SOCKET_GONE_TIMEOUT):
            while await sock.exists():  # noqa: ASYNC110 (polling the file system)
                await trio.sleep(POLL_INTERVAL)

    async def destroy(self) -> None:
        """Undo create(): delete our interface, or clean up an existing one.

        Safe after a failed or partial create() and when called twice.
        """
        if not self._touched:
            return
        if not self.existing:
            if await self.exists():
                await self._delete_link()
                log.info("deleted WireGuard interface %s", self.name)
            return
        if not await self.exists():
            return
        await self._remove_peers(await self.read_peers())
        await flush_routes(self.name)
        await run(["ip", "addr", "flush", "dev", self.name])
        if self._fwmark:  # the administrator's interface, as we found it
            await self.set_fwmark(0)
        log.info("cleaned up existing WireGuard interface %s", self.name)

    # -- configuration ------------------------------------------------------

    async def configure(self, private_key: bytes, listen_port: int) -> None:
        """Set the raw 32-byte X25519 private key and the UDP listen port.

        The key goes to ``wg`` on stdin (``private-key /dev/stdin``), never on
        the command line.
        """
        if len(private_key) != 32:
            raise ValueError("a WireGuard private key is 32 bytes")
        if self._uapi is not None:
            await uapi.request(self._uapi, "set=1", uapi.configure_lines(private_key, listen_port))
            return
        key_b64 = base64.b64encode(private_key) + b"\n"
        await run(
            [
                "wg",
                "set",
                self.name,
                "listen-port",
                str(listen_port),
                "private-key",
                "/dev/stdin",
            ],
            stdin=key_b64,
        )

    async def set_address(self, wg_ip: IPv4Address, prefixlen: int) -> None:
        """Make ``wg_ip/prefixlen`` the only IPv4 address and bring the link up.

        ``noprefixroute``: the core installs every /32 route itself.
        """
        wanted = IPv4Interface(f"{wg_ip}/{prefixlen}")
        others: set[IPv4Interface] = set()
        if not self._bare:  # just created (or flushed): nothing to look at
            out = await run(["ip", "-4", "-o", "addr", "show", "dev", self.name])
            others = _parse_addresses(out) - {wanted}
        # Others go first: deleting a primary address also deletes the
        # secondaries (unless promote_secondaries is set), which would take
        # the new one with it.  A gap only happens on a real address change.
        cmds = [["ip", "-4", "addr", "del", str(old), "dev", self.name] for old in sorted(others)]
        cmds.append(["ip", "-4", "addr", "replace", str(wanted), "dev", self.name, "noprefixroute"])
        cmds.append(["ip", "-4", "link", "set", "dev", self.name, "up"])
        await run_batch(cmds)  # one process; stops at the first failure
        self._bare = False

    async def set_fwmark(self, mark: int) -> None:
        await self._wg_set(["wg", "set", self.name, "fwmark", hex(mark) if mark else "off"])
        self._fwmark = mark

    # -- peers --------------------------------------------------------------

    async def read_peers(self) -> dict[str, WgPeerReading]:
        if self._uapi is not None:
            return uapi.parse_get(await uapi.request(self._uapi, "get=1"), time.time())
        out = await run(["wg", "show", self.name, "dump"])
        return parse_dump(out, time.time())

    async def apply_peers(
        self, desired: Mapping[str, WgPeer], actual: Mapping[str, WgPeerReading]
    ) -> None:
        renew = self._inherited & desired.keys() & actual.keys()
        self._inherited -= desired.keys()
        if renew:
            await self._remove_peers(renew)
            # Added anew with the endpoint WireGuard had learned, unless we know one.
            desired = {
                key: replace(peer, endpoint=actual[key].endpoint)
                if key in renew and peer.endpoint is None
                else peer
                for key, peer in desired.items()
            }
            actual = {key: reading for key, reading in actual.items() if key not in renew}
        for argv in plan_peer_changes(self.name, desired, actual):
            await self._wg_set(argv)

    async def rebind(self, peers: Mapping[str, WgPeer]) -> None:
        """Set the configured endpoints again after our underlay address changed.

        wireguard-go remembers the local source address a peer was last
        reached from; when that address is gone (roaming, DHCP), sends fail
        until something resets it. Setting the endpoint anew does.
        """
        argv = ["wg", "set", self.name]
        for key, peer in sorted(peers.items()):
            if peer.endpoint is not None:
                argv += ["peer", key, "endpoint", f"{peer.endpoint[0]}:{peer.endpoint[1]}"]
        if len(argv) > 3:
            await self._wg_set(argv)
