"""An in-memory machine and network for daemon tests (``wg_netmanager.host.Host``).

:class:`FakeNet` is a UDP underlay in memory (after trio's ``FakeNet`` in
``trio/_tests/test_dtls.py``): sockets bound by (IP, port), datagrams
delivered at once, dropped when nobody listens or the receiver's queue is
full. :class:`FakeHost` is one machine
on it: its wall clock, its local addresses (``addresses``; ``fail_addresses``
makes the next reads fail), its address/link changes (``link_changed``), its
DNS (``names``) and its call-back files (``files``). Nothing here reads the
real clock: run the daemons under ``trio.testing.MockClock``.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import trio
import trio.testing

from tests.fakes import FakeForwarding, FakeRoutes, FakeWgDevice
from tests.helpers import SHARED_KEY_B64
from wg_netmanager.config import Settings, load_network
from wg_netmanager.daemon import Daemon, build_node
from wg_netmanager.keys import KeyPair
from wg_netmanager.model import Endpoint
from wg_netmanager.notify import Notifier
from wg_netmanager.proc import CommandError

ALICE_IP, BOB_IP = "192.0.2.1", "192.0.2.2"  # the static and the dynamic machine
QUEUE = 256  # datagrams a socket holds before it drops (a kernel receive buffer)
EPOCH = 1_700_000_000.0  # the fake wall clock at trio time 0


class FakeNet:
    """Hosts by IP, bound sockets by (IP, port); one test's whole underlay."""

    def __init__(self) -> None:
        self.sockets: dict[Endpoint, FakeSocket] = {}

    def host(self, ip: str, addresses: list[str] | None = None) -> FakeHost:
        return FakeHost(self, ip, [ip] if addresses is None else addresses)

    def send(self, data: bytes, source: Endpoint, destination: Endpoint) -> None:
        receiver = self.sockets.get(destination)
        if receiver is not None:
            with contextlib.suppress(trio.WouldBlock):  # a full queue drops, as UDP does
                receiver.queue.send_nowait((bytes(data), source))


class FakeSocket:
    """A UDP socket of a :class:`FakeHost` (``host.DatagramSocket``)."""

    def __init__(self, net: FakeNet, endpoint: Endpoint) -> None:
        self.net = net
        self.endpoint = endpoint
        self.queue, self._inbox = trio.open_memory_channel[tuple[bytes, Endpoint]](QUEUE)
        self.closed = False

    async def recvfrom(self, bufsize: int) -> tuple[bytes, Endpoint]:
        data, source = await self._inbox.receive()
        return data[:bufsize], source

    async def sendto(self, data: bytes, address: Endpoint) -> int:
        await trio.lowlevel.checkpoint()
        if self.closed:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        self.net.send(data, self.endpoint, address)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            del self.net.sockets[self.endpoint]
            self.queue.close()


class FakeHost:
    """One machine on a :class:`FakeNet` (``host.Host``)."""

    def __init__(self, net: FakeNet, ip: str, addresses: list[str]) -> None:
        self.net = net
        self.ip = ip
        self.addresses = addresses
        # Its prefixes (connected routes); None: each address as a /24.
        self.networks: list[IPv4Network] | None = None
        self.fail_addresses = 0  # this many reads of the addresses fail
        self.address_gate: trio.Event | None = None  # a read of them waits for it
        self.address_reads = 0
        self.names: dict[str, str | None] = {}  # DNS; a name not in here does not resolve
        self.lookups: list[str] = []
        self.files: dict[str, dict[IPv4Address, Endpoint]] = {}
        self.file_writes = 0
        self.watch_error: OSError | None = None  # the link watch cannot start
        self.socket_marks: list[int] = []  # SO_MARK of each admin socket opened
        self._watchers: list[Callable[[str | None], None]] = []

    # --- host.Host ---------------------------------------------------------------

    def wall_clock(self) -> float:
        return EPOCH + trio.current_time()

    async def local_addresses(self, exclude: str) -> list[str]:
        await trio.lowlevel.checkpoint()
        if self.address_gate is not None:
            await self.address_gate.wait()
        self.address_reads += 1
        if self.fail_addresses > 0:
            self.fail_addresses -= 1
            raise CommandError(["ip", "-4", "-o", "addr", "show"], 1, "Cannot talk to netlink")
        return list(self.addresses)

    async def local_networks(self, exclude: str) -> list[IPv4Network]:
        await trio.lowlevel.checkpoint()
        if self.networks is not None:
            return list(self.networks)
        return sorted({IPv4Network(f"{a}/24", strict=False) for a in self.addresses})

    async def watch_links(
        self,
        on_change: Callable[[str | None], None],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await trio.lowlevel.checkpoint()
        if self.watch_error is not None:
            raise self.watch_error
        self._watchers.append(on_change)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._watchers.remove(on_change)

    async def resolve(self, name: str) -> str | None:
        await trio.lowlevel.checkpoint()
        self.lookups.append(name)
        return self.names.get(name)

    async def open_datagram_socket(self, port: int, mark: int = 0) -> FakeSocket:
        await trio.lowlevel.checkpoint()
        self.socket_marks.append(mark)
        endpoint = (self.ip, port)
        if endpoint in self.net.sockets:
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        sock = FakeSocket(self.net, endpoint)
        self.net.sockets[endpoint] = sock
        return sock

    def read_peers_file(self, path: str) -> dict[IPv4Address, Endpoint]:
        return dict(self.files.get(path, {}))

    async def write_peers_file(self, path: str, endpoints: Mapping[IPv4Address, Endpoint]) -> None:
        await trio.lowlevel.checkpoint()
        self.files[path] = dict(endpoints)
        self.file_writes += 1

    # --- for tests ---------------------------------------------------------------------

    def link_changed(self, deleted: str | None = None) -> None:
        """What ``ip monitor`` reports: link ``deleted`` is gone, or (None) anything else."""
        for on_change in list(self._watchers):
            on_change(deleted)

    @property
    def watching(self) -> bool:
        return bool(self._watchers)


# --- daemons on fake machines ------------------------------------------------------------


def make_settings(tmp_path: Path, static_host: str = ALICE_IP) -> tuple[Settings, Settings]:
    """alice (10.1.1.1, static, at ``static_host``) and bob (10.1.1.2, dynamic), fast timers."""
    path = tmp_path / "network.yaml"
    path.write_text(
        f"""\
network:
  sharedKey: {SHARED_KEY_B64}
  subnet: 10.1.1.0/24
peers:
  - endPoint: {static_host}:50001
    adminPort: 50501
    wgIp: 10.1.1.1
timers:
  pingInterval: 0.2
  deadAfter: 0.6
  reconcileInterval: 0.2
"""
    )
    network = load_network(str(path))

    def settings(wg_ip: str, name: str, admin_port: int, wg_port: int) -> Settings:
        return Settings(
            network=network,
            interface="wg0",
            wg_ip=IPv4Address(wg_ip),
            name=name,
            existing_interface=False,
            wg_port=wg_port,
            admin_port=admin_port,
            verbosity=0,
            logfile=None,
            tui=False,
            hopping=False,
        )

    return (
        settings("10.1.1.1", "alice", 50501, 50001),
        settings("10.1.1.2", "bob", 50502, 50002),
    )


@dataclass
class Machine:
    """A fake machine with a recording WireGuard device and route table; each
    ``daemon()`` is a new run of the daemon on it (new key, new boot)."""

    settings: Settings
    host: FakeHost
    device: FakeWgDevice = field(default_factory=FakeWgDevice)
    routes: FakeRoutes = field(default_factory=FakeRoutes)
    forwarding: FakeForwarding = field(default_factory=FakeForwarding)

    async def daemon(
        self,
        *,
        notifier: Notifier | None = None,
        load_settings: Callable[[], Settings] | None = None,
        demand: FakeDemand | None = None,
    ) -> Daemon:
        keys = KeyPair.generate()
        node = await build_node(self.settings, keys, self.host)
        return Daemon(
            self.settings,
            node,
            keys,
            device=self.device,
            routes=self.routes,
            forwarding=self.forwarding,
            host=self.host,
            notifier=notifier,
            load_settings=load_settings,
            demand=demand,
        )


@dataclass
class FakeDemand:
    """A lazy-link traffic sensor: ``seen`` is what it reads; ``failures``
    commands fail first (as ``nft`` would without nftables)."""

    seen: set[IPv4Address] = field(default_factory=set)
    failures: int = 0
    installs: int = 0
    removed: bool = False

    async def install(self) -> None:
        if self.failures:
            self.failures -= 1
            raise CommandError(["nft", "-f", "-"], 127, "nft: not found")
        self.installs += 1

    async def remove(self) -> None:
        self.removed = True

    def read(self) -> set[IPv4Address]:
        return set(self.seen)


def crash(daemon: Daemon, scope: trio.CancelScope) -> None:
    """Stop ``daemon`` without a bye, as if its machine lost power."""
    daemon.node.shutdown = lambda now: None  # type: ignore[method-assign]
    scope.cancel()


def mock_clock() -> trio.testing.MockClock:
    """A clock that jumps to the next timer whenever every task waits."""
    return trio.testing.MockClock(autojump_threshold=0)
