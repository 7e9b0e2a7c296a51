"""The trio shell around the pure core.

One nursery, small tasks, one owner of shutdown:

- ``_receive``: admin UDP socket -> ``node.receive_datagram``
- ``_drive``: sleeps until ``node.get_timer()`` (or a kick) -> ``handle_timer``
- ``_wireguard``: reads ``wg show`` (fast while a handshake is awaited),
  feeds it to the core and reconciles WireGuard peers and kernel routes by
  difference whenever the desired state changed or every reconcile_interval
- ``_resolve``: static peers' host names, at start, periodically and when the
  core asks (dynamic DNS)
- ``_local_addresses`` with ``_watch_netlink``: ``ip monitor`` reports address
  changes (roaming, DHCP) and our interface vanishing the moment they happen;
  a periodic re-read backs it up
- ``_remember_peers`` (static nodes): keeps the nodes' admin endpoints in
  ``<run dir>/<if>.peers``, so that after a crash the next run calls them back
  at once instead of waiting for their next ping
- ``_signals``: SIGINT/SIGTERM/SIGHUP cancel the nursery

Failures of ``ip``/``wg`` are logged with the command and its stderr and
retried: during setup a few times with backoff, afterwards on the next pass.
An interface deleted from under the daemon is re-created (with ``-e``: waited
for, then taken over again) and everything on it set again.

After every input the shell flushes the core: sends its datagrams, logs its
events, wakes the reconciler. Cleanup (bye to everyone, our routes removed,
the interface deleted unless ``-e``) runs in ``finally`` under a shielded
cancel scope with a deadline, so Ctrl-C never leaves a half-configured
interface and never hangs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from ipaddress import IPv4Address
from random import Random

import trio

from . import event_text
from .config import Settings
from .core.events import Event
from .core.node import Node
from .core.sessions import StaticTarget
from .handshakes import HandshakeClock
from .keys import KeyPair
from .model import Endpoint, Route
from .proc import CommandError
from .routes import Routes, RouteTable, read_local_addresses
from .wgdev import WgDevice, WgInterface
from .wire import MAX_DATAGRAM, NodeInfo

log = logging.getLogger("wg_netmanager")

SHUTDOWN_BUDGET = 1.5  # seconds for cleanup; the issue promises exit within 2 s
RETRY_AFTER_FAILURE = 1.0  # seconds before a failed ip/wg call is retried
# Pauses between attempts to set the interface up (about 4 s in all) before
# the daemon gives up with one line; a missing binary is not retried.
SETUP_RETRY_PAUSES = (0.1, 0.3, 1.0, 2.5)
WAIT_FOR_EXISTING = 1.0  # -e: how often to look for a vanished interface
MONITOR_RESTART_MAX = 30.0  # seconds between restarts of a failing `ip monitor`
PEERS_FILE_MAX_AGE = 600.0  # seconds: older call-back files are ignored
PEERS_FILE_MAX_SIZE = 1 << 20


class StartupError(Exception):
    """The daemon cannot start (interface, socket); one line for the user."""


class Daemon:
    def __init__(self, settings: Settings, *, device: WgDevice, routes: Routes) -> None:
        self.settings = settings
        self.device = device
        self.routes = routes
        self.keys = KeyPair.generate()
        self.sock: trio.socket.SocketType | None = None
        self.node: Node | None = None
        self._kick = trio.Event()
        self._wg_wake = trio.Event()
        self._wg_read_at = -math.inf  # when the WireGuard reader looks next
        self._resolve_wake = trio.Event()
        self._address_wake = trio.Event()
        self._monitoring = False  # `ip monitor` runs: addresses need no frequent polling
        self._applied_version = -1
        self.backend = ""
        self.startup_error: StartupError | None = None
        self._handshakes = HandshakeClock()

    # --- lifecycle ----------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._setup()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive)
                nursery.start_soon(self._drive)
                nursery.start_soon(self._wireguard)
                nursery.start_soon(self._resolve)
                nursery.start_soon(self._local_addresses)
                nursery.start_soon(self._watch_netlink)
                if self.settings.is_static:
                    nursery.start_soon(self._remember_peers)
                if self.settings.hopping and not self.settings.is_static:
                    nursery.start_soon(self._hop_ports)
                if self.settings.verbosity >= 1:
                    nursery.start_soon(self._summaries)
                # --- issue 4 hooks: control socket for `status`; the TUI (q cancels the nursery)
                from . import control

                snapshot = partial(control.daemon_snapshot, self, trio.current_time())
                path = control.socket_path(self.settings.interface)
                await nursery.start(control.serve, path, snapshot)
                if self.settings.tui:
                    from . import tui

                    await nursery.start(tui.run, self, nursery.cancel_scope)
                # --- end of issue 4 hooks
                task_status.started()
        except StartupError as exc:
            self.startup_error = exc
        finally:
            with trio.move_on_after(SHUTDOWN_BUDGET) as scope:
                scope.shield = True
                await self._cleanup()

    async def _bring_up(self, pauses: tuple[float, ...] | None = None) -> None:
        """Create (or take over) and configure the interface; retried with
        backoff (default SETUP_RETRY_PAUSES), every failure logged;
        CommandError after the last attempt."""
        s = self.settings
        for pause in (*(SETUP_RETRY_PAUSES if pauses is None else pauses), None):
            try:
                self.backend = await self.device.create()
                await self.device.configure(self.keys.private, s.wg_port)
                await self.device.set_address(s.wg_ip, s.network.subnet.prefixlen)
                if s.is_static:
                    await self.device.enable_forwarding()
                return
            except CommandError as exc:
                if pause is None or exc.returncode == 127:  # out of attempts, or no such binary
                    raise
                log.warning("setting up %s: %s (retrying in %.1f s)", s.interface, exc, pause)
                await trio.sleep(pause)

    async def _setup(self) -> None:
        s = self.settings
        net = s.network
        try:
            await self._bring_up()
        except CommandError as exc:
            raise StartupError(f"cannot set up interface {s.interface}: {exc}") from None
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        try:
            await sock.bind(("0.0.0.0", s.admin_port))
        except OSError as exc:
            sock.close()
            raise StartupError(f"cannot use admin port {s.admin_port}: {exc.strerror}") from None
        self.sock = sock
        now = trio.current_time()
        statics = [StaticTarget(p.wg_ip, p.host, p.wg_port, p.admin_port) for p in net.peers]
        for target in statics:
            target.address = await _resolve_host(target.host)
        info = NodeInfo(
            wg_ip=s.wg_ip,
            name=s.name,
            public_key=self.keys.public_b64,
            wg_port=s.wg_port,
            admin_port=s.admin_port,
        )
        self.node = Node(
            info=info,
            private_key=self.keys.private,
            shared_key=net.shared_key,
            subnet=net.subnet,
            statics=statics,
            timers=net.timers,
            now=now,
            rng=Random(),
        )
        log.info(
            "%s %s on %s (%s) key %s… wg port %d admin port %d%s",
            s.name,
            s.wg_ip,
            s.interface,
            self.backend,
            self.keys.public_b64[:8],
            s.wg_port,
            s.admin_port,
            ", static" if s.is_static else "",
        )
        self.node.set_local_addresses(await self._read_local_addresses(), now)
        if s.is_static:
            # A crash (no bye) leaves the nodes waiting for their next ping:
            # call back those the previous run knew.
            self.node.call_back(_read_peers_file(self._peers_file()), now)
        self.node.handle_timer(now)
        await self._flush()

    async def _cleanup(self) -> None:
        node, sock = self.node, self.sock
        if node is not None and sock is not None:
            node.shutdown(trio.current_time())
            await self._flush()
        if sock is not None:
            sock.close()
        try:
            actual = await self.routes.read(self.settings.interface)
            await self.routes.apply(self.settings.interface, set(), actual)
        except CommandError as exc:
            log.debug("route cleanup: %s", exc)
        try:
            await self.device.destroy()
        except CommandError as exc:
            log.error("cleanup: %s", exc)
        log.info("stopped")

    # --- the core's inputs --------------------------------------------------

    async def _receive(self) -> None:
        assert self.sock is not None and self.node is not None
        while True:
            try:
                data, addr = await self.sock.recvfrom(MAX_DATAGRAM + 512)
            except OSError as exc:  # e.g. ICMP port unreachable reported on Linux
                log.debug("admin socket: %s", exc)
                continue
            if self.node.receive_datagram(data, (addr[0], addr[1]), trio.current_time()):
                await self._flush()
            # else junk, dropped and counted: nothing to do (cheap under a flood)

    async def _drive(self) -> None:
        assert self.node is not None
        while True:
            deadline = self.node.get_timer()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._kick.wait()
            self._kick = trio.Event()
            now = trio.current_time()
            deadline = self.node.get_timer()
            if deadline is not None and now >= deadline:
                self.node.handle_timer(now)
                await self._flush()

    async def _flush(self) -> None:
        """Carry out what the core wants after an input."""
        node, sock = self.node, self.sock
        assert node is not None and sock is not None
        _log_events(node.events())
        for data, addr in node.datagrams_to_send():
            await _sendto(sock, data, addr)
        if node.take_resolve_requests():
            self._resolve_wake.set()
        now = trio.current_time()
        if node.state_version != self._applied_version:
            self._wg_wake.set()
        elif (
            self._wg_read_at > now + node.timers.wg_poll_fast  # else it reads soon anyway
            and now + node.wg_poll_interval(now) < self._wg_read_at
        ):
            # The core wants `wg show` sooner than the reader sleeps (a peer
            # roamed, a link turned suspect): its new endpoint or counters.
            self._wg_wake.set()
        self._kick.set()

    # --- WireGuard and routes -------------------------------------------------

    async def _wireguard(self) -> None:
        node = self.node
        assert node is not None
        timers = node.timers
        ifname = self.settings.interface
        next_full = 0.0
        while True:
            now = trio.current_time()
            try:
                actual = await self.device.read_peers()
                corrected = self._handshakes.correct(actual, time.time(), trio.current_time())
                node.update_wg(corrected, trio.current_time())
                await self._flush()
                version = node.state_version
                desired = node.desired_peers()
                if version != self._applied_version or now >= next_full:
                    await self.device.apply_peers(desired, actual)
                    await self._apply_routes(ifname, node.desired_routes())
                    self._applied_version = version
                    node.wg_applied(version, trio.current_time())
                    await self._flush()
                    next_full = now + timers.reconcile_interval
                    if desired:
                        # Read back at once: the handshake with a new peer is
                        # what gives a static node the peer's NAT outside.
                        continue
                delay = node.wg_poll_interval(now)
            except CommandError as exc:
                log.warning("%s (retrying)", exc)
                delay = RETRY_AFTER_FAILURE
                self._applied_version = -1
                if await self._interface_gone():
                    await self._restore_interface()
                    continue
            self._wg_read_at = trio.current_time() + delay
            with trio.move_on_at(self._wg_read_at):
                await self._wg_wake.wait()
            self._wg_wake = trio.Event()
            self._wg_read_at = -math.inf  # reading now: no need to wake us

    async def _interface_gone(self) -> bool:
        try:
            return not await self.device.exists()
        except CommandError as exc:
            log.debug("cannot tell whether %s exists: %s", self.settings.interface, exc)
            return False

    async def _restore_interface(self) -> None:
        """Someone deleted our interface: set it up again (``-e``: wait for it)."""
        ifname = self.settings.interface
        if self.settings.existing_interface:
            log.warning("interface %s is gone; waiting for it to be created again (-e)", ifname)
            while await self._interface_gone():  # noqa: ASYNC110 (no event for another's link)
                await trio.sleep(WAIT_FOR_EXISTING)
            log.warning("interface %s is back; taking it over", ifname)
        else:
            log.warning("interface %s was deleted; creating it again", ifname)
        try:
            await self._bring_up(pauses=(RETRY_AFTER_FAILURE,) * 3)
        except CommandError as exc:
            log.warning("%s (retrying)", exc)
            return  # the next failing pass comes back here
        assert self.node is not None
        self.node.interface_reset(trio.current_time())
        self._handshakes = HandshakeClock()
        await self._flush()
        log.info("interface %s set up again (%s)", ifname, self.backend)

    async def _apply_routes(self, ifname: str, desired: set[Route]) -> None:
        actual = await self.routes.read(ifname)
        if actual != desired:
            await self.routes.apply(ifname, desired, actual)

    # --- local addresses (LAN discovery, roaming) ----------------------------

    async def _read_local_addresses(self) -> list[str]:
        try:
            return await read_local_addresses(exclude=self.settings.interface)
        except CommandError as exc:
            log.warning("%s (retrying)", exc)
            return list(a for a, _port in self.node.info.local_endpoints) if self.node else []

    async def _local_addresses(self) -> None:
        node = self.node
        assert node is not None
        while True:
            interval = node.timers.local_addresses_interval
            if self._monitoring:
                interval = max(interval, 30.0)  # a backstop: `ip monitor` reports changes
            with trio.move_on_after(interval):
                await self._address_wake.wait()
                await trio.sleep(0.05)  # a change comes in bursts (address, routes, link)
            self._address_wake = trio.Event()
            if node.set_local_addresses(await self._read_local_addresses(), trio.current_time()):
                try:
                    await self.device.rebind(node.desired_peers())
                except CommandError as exc:
                    log.warning("%s", exc)
            await self._flush()

    async def _watch_netlink(self) -> None:
        """Run ``ip -o monitor address link``: wake the address reader on any
        address or link change, the reconciler when our interface is deleted.
        Restarted with backoff if it cannot run or exits."""
        argv = ["ip", "-o", "monitor", "address", "link"]
        backoff = 1.0
        while True:
            try:
                async with trio.open_nursery() as nursery:
                    proc = await nursery.start(
                        partial(
                            trio.run_process,
                            argv,
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL,
                            check=False,
                        )
                    )
                    self._monitoring = True
                    await self._read_netlink(proc.stdout)
                log.debug("`ip monitor` exited with %s", proc.returncode)
            except OSError as exc:
                log.debug("cannot run `ip monitor`: %s", exc)
            finally:
                self._monitoring = False
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MONITOR_RESTART_MAX)

    async def _read_netlink(self, stream: trio.abc.ReceiveStream) -> None:
        ifname = self.settings.interface
        pending = b""
        async for chunk in stream:
            *lines, pending = (pending + chunk).split(b"\n")
            pending = pending[-4096:]  # one event per line; never an unbounded buffer
            for raw in lines:
                line = raw.decode("utf-8", errors="replace")
                fields = line.split()
                if (
                    fields[:1] == ["Deleted"]
                    and f"{ifname}:" in fields[1:3]
                    and "inet" not in fields
                ):
                    self._wg_wake.set()  # our interface is gone: the reconciler notices
                else:
                    self._address_wake.set()

    # --- port hopping (-H) -----------------------------------------------------

    async def _hop_ports(self) -> None:
        """A firewall may block our WireGuard port: after hop_after without any
        static peer, move to another port (as the original tool's -H does)."""
        node = self.node
        assert node is not None
        rng = Random()
        while True:
            await trio.sleep(1.0)
            now = trio.current_time()
            lost = node.static_lost_since(now)
            if lost is None or now - lost < node.timers.hop_after:
                continue
            port = rng.randrange(50000, 60000)
            log.warning(
                "no static peer for %.0f s: WireGuard port %d -> %d",
                now - lost,
                node.info.wg_port,
                port,
            )
            try:
                await self.device.configure(self.keys.private, port)
            except CommandError as exc:
                log.warning("%s (retrying)", exc)
                continue
            node.set_wg_port(port, now)
            for target in node.statics.values():
                target.lost_since = now  # give the new port a full period
            await self._flush()

    # --- static nodes: remember the nodes for a restart after a crash ----------

    def _peers_file(self) -> str:
        from .control import peers_path

        return peers_path(self.settings.interface)

    async def _remember_peers(self) -> None:
        node = self.node
        assert node is not None
        path = self._peers_file()
        written: dict[IPv4Address, Endpoint] | None = None
        while True:
            await trio.sleep(1.0)
            endpoints = node.peer_endpoints()
            if endpoints != written:
                try:
                    await trio.to_thread.run_sync(_write_peers_file, path, endpoints)
                    written = endpoints
                except OSError as exc:
                    log.debug("cannot write %s: %s", path, exc)

    # --- DNS ------------------------------------------------------------------

    async def _resolve(self) -> None:
        node = self.node
        assert node is not None
        while True:
            with trio.move_on_after(node.timers.resolve_interval):
                await self._resolve_wake.wait()
            self._resolve_wake = trio.Event()
            for target in list(node.statics.values()):
                address = await _resolve_host(target.host)
                if address is not None or target.address is None:
                    node.set_static_address(target.wg_ip, address, trio.current_time())
            await self._flush()
            await trio.sleep(1.0)  # at most one round of lookups a second

    async def _summaries(self) -> None:
        node = self.node
        assert node is not None
        while True:
            await trio.sleep(node.timers.summary_interval)
            status = node.statistics(trio.current_time())
            parts = [
                f"{p.name}:{'direct' if p.path == 'direct' else 'via ' + (p.gateway_name or '?')}"
                + (f":{p.rtt * 1000:.1f}ms" if p.rtt is not None else "")
                for p in status.peers
            ]
            log.info("peers (%d): %s", len(parts), " ".join(parts) or "none")
            if status.drops:
                log.info("dropped datagrams: %s", status.drops)


def _write_peers_file(path: str, endpoints: dict[IPv4Address, Endpoint]) -> None:
    """Atomically, root only: wg IP -> admin endpoint (no keys, nothing secret)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    doc = {str(ip): [host, port] for ip, (host, port) in sorted(endpoints.items())}
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def _read_peers_file(path: str) -> dict[IPv4Address, Endpoint]:
    """What ``_write_peers_file`` wrote, if it is recent; {} on any problem."""
    try:
        info = os.stat(path)
        if info.st_size > PEERS_FILE_MAX_SIZE or time.time() - info.st_mtime > PEERS_FILE_MAX_AGE:
            return {}
        with open(path) as f:
            doc = json.load(f)
        found = {}
        for ip, (host, port) in doc.items():
            IPv4Address(host)
            if isinstance(port, int) and 0 < port < 65536:
                found[IPv4Address(ip)] = (str(host), port)
        return found
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        if not isinstance(exc, FileNotFoundError):
            log.debug("ignoring %s: %s", path, exc)
        return {}


def _log_events(events: list[Event]) -> None:
    for event in events:
        level = event_text.level(event)
        if log.isEnabledFor(level):
            log.log(level, "%s", event_text.describe(event))


async def _sendto(sock: trio.socket.SocketType, data: bytes, addr: Endpoint) -> None:
    try:
        await sock.sendto(data, addr)
    except OSError as exc:  # unreachable network, no route: the core retries
        log.debug("send to %s:%d failed: %s", addr[0], addr[1], exc.strerror)


async def _resolve_host(host: str) -> str | None:
    try:
        return str(IPv4Address(host))
    except ValueError:
        pass
    try:
        with trio.move_on_after(5.0):
            infos = await trio.socket.getaddrinfo(host, None, family=socket.AF_INET)
            for info in infos:
                return str(info[4][0])
    except OSError as exc:
        log.warning("cannot resolve %s: %s", host, exc)
    return None


async def _run_until_signal(daemon: Daemon) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_when_done, daemon, nursery.cancel_scope)
            async for signum in signals:
                log.info("%s received, shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


async def _cancel_when_done(daemon: Daemon, scope: trio.CancelScope) -> None:
    await daemon.run()
    scope.cancel()  # the daemon ended by itself (startup failed): stop waiting for signals


def setup_logging(settings: Settings, stream: object = None) -> None:
    level = logging.DEBUG if settings.verbosity >= 2 else logging.INFO
    root = logging.getLogger()
    root.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")
    if settings.tui:  # issue 4 hook: lines go to the TUI's log pane, never onto its screen
        from . import tui

        tui.capture_logging(fmt)
    else:
        handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
        handler.setFormatter(fmt)
        root.addHandler(handler)
    if settings.logfile:
        file_handler = logging.FileHandler(settings.logfile)
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)


def main(
    settings: Settings,
    *,
    make_daemon: Callable[[Settings], Daemon] | None = None,
) -> int:
    setup_logging(settings)
    for warning in settings.network.warnings:  # e.g. a subnet read with its host bits cleared
        log.warning("%s", warning)
    daemon = (make_daemon or _real_daemon)(settings)
    try:
        trio.run(_run_until_signal, daemon)
    except KeyboardInterrupt:  # a second Ctrl-C during cleanup
        return 130
    finally:
        if settings.tui:  # issue 4 hook: stderr again (e.g. a startup error the TUI never showed)
            from . import tui

            tui.release_logging()
    if daemon.startup_error is not None:
        log.error("%s", daemon.startup_error)
        return 1
    return 0


def _real_daemon(settings: Settings) -> Daemon:
    return Daemon(
        settings,
        device=WgInterface(settings.interface, existing=settings.existing_interface),
        routes=RouteTable(),
    )
