"""The host's I/O as the daemon sees it, behind one small protocol.

:class:`Host` is everything the daemon asks of the machine besides the
WireGuard device (:class:`~wg_netmanager.wgdev.WgDevice`) and the route table
(:class:`~wg_netmanager.routes.Routes`): the wall clock, the local addresses
and their changes, DNS, the admin UDP socket and a static node's call-back
file. :class:`SystemHost` is the real machine; the daemon tests use an
in-memory host and network (``tests/fake_host.py``) on a mock clock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any, Protocol

import trio

from . import runfiles
from .model import Endpoint
from .proc import run

log = logging.getLogger("wg_netmanager")

RESOLVE_TIMEOUT = 5.0  # seconds one DNS lookup may take
PEERS_FILE_MAX_AGE = 600.0  # seconds: older call-back files are ignored
PEERS_FILE_MAX_SIZE = 1 << 20
MONITOR_LINE_MAX = 4096  # bytes kept of an unfinished `ip monitor` line


class DatagramSocket(Protocol):
    """The admin UDP socket, bound to the admin port on every address."""

    def recvfrom(self, bufsize: int, /) -> Awaitable[tuple[bytes, Any]]: ...

    def sendto(self, data: bytes, address: Endpoint, /) -> Awaitable[int]: ...

    def close(self) -> None: ...


class Host(Protocol):
    """The machine the daemon runs on."""

    def wall_clock(self) -> float:
        """Seconds since the epoch (``wg show`` reports handshakes on this clock)."""
        ...

    async def local_addresses(self, exclude: str) -> list[str]:
        """This machine's global IPv4 addresses, except on ``exclude`` and lo;
        raises :class:`~wg_netmanager.proc.CommandError`."""
        ...

    async def local_networks(self, exclude: str) -> list[IPv4Network]:
        """The prefixes of those addresses (this machine's connected routes);
        raises :class:`~wg_netmanager.proc.CommandError`."""
        ...

    async def watch_links(
        self,
        on_change: Callable[[str | None], None],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Report address and link changes until cancelled or the watch ends:
        ``on_change(name)`` when the link ``name`` was deleted,
        ``on_change(None)`` for any other change. Started once watching;
        OSError if it cannot watch."""
        ...

    async def resolve(self, name: str) -> str | None:
        """The IPv4 address of host ``name``; None (logged) if it does not resolve."""
        ...

    async def open_datagram_socket(self, port: int, mark: int = 0) -> DatagramSocket:
        """A UDP socket bound to ``port`` on every address, its packets carrying
        ``mark`` (SO_MARK; 0: none); OSError if it cannot be."""
        ...

    def read_peers_file(self, path: str) -> dict[IPv4Address, Endpoint]:
        """What ``write_peers_file`` wrote, if it is recent; {} on any problem."""
        ...

    async def write_peers_file(self, path: str, endpoints: Mapping[IPv4Address, Endpoint]) -> None:
        """Keep wg IP -> admin endpoint in ``path`` (root only); OSError if it cannot."""
        ...


class SystemHost:
    """The real machine: ``ip``, the resolver, UDP sockets, files under the run dir.

    ``admin_socket``: the admin port, bound already (``cli`` binds it before
    the daemon's imports, so that hellos arriving meanwhile wait in its
    buffer instead of being refused); the first ``open_datagram_socket``
    for its port takes it over.
    """

    def __init__(self, admin_socket: socket.socket | None = None) -> None:
        self._admin_socket = admin_socket

    def wall_clock(self) -> float:
        return time.time()

    async def local_addresses(self, exclude: str) -> list[str]:
        out = await run(["ip", "-4", "-o", "addr", "show", "scope", "global"])
        return parse_local_addresses(out, exclude)

    async def local_networks(self, exclude: str) -> list[IPv4Network]:
        out = await run(["ip", "-4", "-o", "addr", "show", "scope", "global"])
        return parse_local_networks(out, exclude)

    async def watch_links(
        self,
        on_change: Callable[[str | None], None],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        argv = ["ip", "-o", "monitor", "address", "link"]
        proc = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        stdout = proc.stdout
        assert stdout is not None
        try:
            task_status.started()
            pending = b""
            async for chunk in stdout:
                *lines, pending = (pending + chunk).split(b"\n")
                pending = pending[-MONITOR_LINE_MAX:]  # one event per line; never unbounded
                for raw in lines:
                    on_change(deleted_link(raw.decode("utf-8", errors="replace")))
            await proc.wait()
        finally:
            with trio.CancelScope(shield=True):
                if proc.returncode is None:  # cancelled
                    proc.kill()
                await proc.wait()
                await stdout.aclose()
        log.debug("`ip monitor` exited with %s", proc.returncode)

    async def resolve(self, name: str) -> str | None:
        try:
            with trio.move_on_after(RESOLVE_TIMEOUT):
                infos = await trio.socket.getaddrinfo(name, None, family=socket.AF_INET)
                for info in infos:
                    return str(info[4][0])
        except OSError as exc:
            log.warning("cannot resolve %s: %s", name, exc)
        return None

    async def open_datagram_socket(self, port: int, mark: int = 0) -> DatagramSocket:
        bound, self._admin_socket = self._admin_socket, None
        if bound is not None:
            if bound.getsockname()[1] == port:
                if mark:  # the underlay, not an exit node's default route (see forwarding.py)
                    bound.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
                return trio.socket.from_stdlib_socket(bound)
            bound.close()
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        try:
            if mark:  # the underlay, not an exit node's default route (see forwarding.py)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
            await sock.bind(("0.0.0.0", port))
        except OSError:
            sock.close()
            raise
        return sock

    def read_peers_file(self, path: str) -> dict[IPv4Address, Endpoint]:
        return read_peers_file(path)

    async def write_peers_file(self, path: str, endpoints: Mapping[IPv4Address, Endpoint]) -> None:
        await trio.to_thread.run_sync(write_peers_file, path, dict(endpoints))


def parse_local_addresses(text: str, exclude: str) -> list[str]:
    """IPv4 addresses from ``ip -4 -o addr show scope global``, except on ``exclude``.

    These are announced to the other nodes so that two nodes on one LAN can
    find each other directly.
    """
    addresses = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != "inet":
            continue
        if fields[1].partition("@")[0] in (exclude, "lo"):
            continue
        address = fields[3].partition("/")[0]
        try:
            IPv4Address(address)
        except ValueError:
            continue
        addresses.append(address)
    return sorted(set(addresses))


def parse_local_networks(text: str, exclude: str) -> list[IPv4Network]:
    """The prefixes of ``ip -4 -o addr show scope global`` (``noprefixroute``
    addresses have no connected route: left out), except on ``exclude``."""
    networks = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != "inet" or "noprefixroute" in fields:
            continue
        if fields[1].partition("@")[0] in (exclude, "lo"):
            continue
        with contextlib.suppress(ValueError):
            networks.add(IPv4Interface(fields[3]).network)
    return sorted(networks)


def deleted_link(line: str) -> str | None:
    """The link a line of ``ip -o monitor address link`` reports deleted, else None.

    ``Deleted 7: wg0: <POINTOPOINT,...> mtu 1420 ...`` is a link going away;
    ``Deleted 7: wg0    inet 10.1.1.2/24 ...`` only an address on it.
    """
    fields = line.split()
    if len(fields) < 3 or fields[0] != "Deleted" or "inet" in fields:
        return None
    return fields[2][:-1] if fields[2].endswith(":") else None


def write_peers_file(path: str, endpoints: Mapping[IPv4Address, Endpoint]) -> None:
    """Atomically, root only: wg IP -> admin endpoint (no keys, nothing secret)."""
    doc = {str(ip): [host, port] for ip, (host, port) in sorted(endpoints.items())}
    runfiles.write_private(path, json.dumps(doc))


def read_peers_file(path: str) -> dict[IPv4Address, Endpoint]:
    """What :func:`write_peers_file` wrote, if it is recent and only we could
    have written it; {} on any problem."""
    try:
        text = runfiles.read_private(path, PEERS_FILE_MAX_SIZE, PEERS_FILE_MAX_AGE)
        if text is None:
            return {}
        doc = json.loads(text)
        found = {}
        for ip, (host, port) in doc.items():
            # Text only, in the form we write: IPv4Address() would take a number too.
            if not isinstance(host, str) or str(IPv4Address(host)) != host:
                continue
            if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
                found[IPv4Address(ip)] = (host, port)
        return found
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        if not isinstance(exc, FileNotFoundError):
            log.debug("ignoring %s: %s", path, exc)
        return {}
