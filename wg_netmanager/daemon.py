"""The trio shell around the pure core.

The core is built first (``build_node``: static peers resolved, local
addresses read) and handed to :class:`Daemon` together with its
collaborators: the WireGuard device (``wgdev.WgDevice``), the route table
(``routes.Routes``), what the host forwards and how an exit node's user
routes (``forwarding.Forwarding``) and the machine (``host.Host``: wall
clock, local addresses and their changes, DNS, the admin socket, a static's
call-back file). One nursery, small tasks, one owner of shutdown:

- ``_receive``: admin UDP socket -> ``node.receive_datagram``
- ``_drive``: sleeps until ``node.get_timer()`` (or a kick) -> ``handle_timer``
- ``_wireguard``: reads ``wg show`` (fast while a handshake is awaited),
  feeds it to the core and reconciles WireGuard peers and kernel routes by
  difference whenever the desired state changed or every reconcile_interval
  (and a static's relay table, see forwarding.py)
- ``_resolve``: static peers' host names, periodically and when the core
  asks (dynamic DNS); a mobile node only when the core asks (every lookup
  is bytes on a metered link)
- ``_local_addresses`` with ``_watch_links``: the host reports address
  changes (roaming, DHCP) and our interface vanishing the moment they
  happen; a periodic re-read backs it up
- ``_remember_peers`` (static nodes): keeps the nodes' admin endpoints in
  ``<run dir>/<if>.peers``, so that after a crash the next run calls them back
  at once instead of waiting for their next ping
- ``_serve_dns``: the mesh's names on our wg IP, port 53 (``nameserver.serve``)
- the control socket (``control.serve``) and the TUI read :class:`DaemonStatus`
- under a service manager (``notify.Notifier``): ``READY=1`` once set up,
  ``STATUS=`` on change, the watchdog, ``STOPPING=1``; ``reload`` (SIGHUP)
  re-reads the files and applies the difference (``reload.plan_reload``)

Failures of ``ip``/``wg`` are logged with the command and its stderr and
retried: during setup a few times with backoff, afterwards on the next pass.
An interface deleted from under the daemon is re-created (with ``-e``: waited
for, then taken over again) and everything on it set again.

After every input the shell flushes the core: sends its datagrams, logs its
events, wakes the reconciler. Cleanup (bye to everyone, our routes removed,
the interface deleted unless ``-e``) runs in ``finally`` under a shielded
cancel scope with a deadline, so Ctrl-C never leaves a half-configured
interface and never hangs. ``serve`` runs it on the real machine until a
signal.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import math
import signal
import socket
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from functools import partial
from ipaddress import IPv4Address, IPv4Network
from random import Random
from typing import TYPE_CHECKING, Any

import trio

from . import (
    api_token,
    client_config,
    control,
    event_text,
    log_capture,
    mesh_text,
    resolved,
    runfiles,
)
from .backends import EarlyStart
from .config import ConfigError, Settings
from .core import events as ev
from .core.clients import ClientRefused
from .core.node import Node, StaticTarget
from .demand import DemandSensor, DemandSource
from .forwarding import Forwarding, ForwardPlan, HostForwarding, plan_for, route_table
from .handshakes import HandshakeClock
from .host import DatagramSocket, Host, SystemHost
from .keys import KeyPair, from_b64, to_b64
from .model import Endpoint, Route, WgPeerReading
from .notify import Notifier, to_journal
from .proc import CommandError
from .reload import Reload, plan_reload
from .routes import Routes, RouteTable
from .status_text import Doc, jsonable, service_status, status_document
from .timeline import Timeline
from .wgdev import WgDevice, WgInterface
from .wire import MAX_BOOT_NUMBER, MAX_DATAGRAM, NodeInfo

if TYPE_CHECKING:  # imported at run time only once the daemon is up (dnspython)
    from . import nameserver

log = logging.getLogger("wg_netmanager")

SHUTDOWN_BUDGET = 1.5  # seconds for cleanup: the process exits within 2 s of a signal
RETRY_AFTER_FAILURE = 1.0  # seconds before a failed ip/wg call is retried
# Pauses between attempts to set the interface up (about 4 s in all) before
# the daemon gives up with one line; a missing binary is not retried.
SETUP_RETRY_PAUSES = (0.1, 0.3, 1.0, 2.5)
WAIT_FOR_EXISTING = 1.0  # -e: how often to look for a vanished interface
MONITOR_RESTART_MAX = 30.0  # seconds between restarts of a failing link watch
KEY_FILE_MAX = 128  # bytes: "<wg IP> <base64 key> <boot number>\n"
STATUS_CHECK_INTERVAL = 1.0  # seconds between looks at whether the service status changed
# Lazy links: how often the traffic sensor is read. A new destination waits
# at most this long (plus a handshake) before its direct link is asked for.
DEMAND_INTERVAL = 0.25
DNS_PORT = 53  # the mesh's names (nameserver.py), on our wg IP only
MESH_WATCH = 60.0  # seconds one look at the mesh map keeps it coming from the static
# The API's and the DNS server's imports (hypercorn, dnspython: a third of a
# second of CPU, holding the GIL) wait until start-up has settled, at most this
# long after the interface is up.
SETTLE_MAX = 3.0


class StartupError(Exception):
    """The daemon cannot start (interface, socket); one line for the user."""


async def build_node(
    settings: Settings,
    keys: KeyPair,
    host: Host,
    *,
    rng: Random | None = None,
    boot_number: int = 0,
) -> Node:
    """The core for ``settings``: static peers' host names resolved (its local
    addresses are read by ``Daemon.run``, while the interface is set up).
    ``boot_number``: the runs of ``keys`` before this one (see crash_kept_key)."""
    net = settings.network
    statics = [
        StaticTarget(p.wg_ip, p.host, p.wg_port, p.admin_port, pinned_key=p.public_key)
        for p in net.peers
    ]
    for target in statics:
        target.address = await resolve_host(host, target.host)
    info = NodeInfo(
        wg_ip=settings.wg_ip,
        name=settings.name,
        public_key=keys.public_b64,
        wg_port=settings.wg_port,
        admin_port=settings.admin_port,
        mobile=settings.mobile,
    )
    node = Node(
        info=info,
        private_key=keys.private,
        shared_key=net.shared_key,
        subnet=net.subnet,
        statics=statics,
        timers=net.timers,
        now=trio.current_time(),
        rng=rng or Random(),
        lazy=net.links == "lazy",
        gateways=net.gateways,
        exit_node=settings.exit_node,
        boot_number=boot_number,
    )
    for client in settings.clients:  # the static's state file (client_config.py)
        node.add_client(client.name, client.public_key, client.wg_ip, trio.current_time())
    if net.gateways:
        networks = await read_local_networks(host, settings.interface, fallback=None)
        node.set_local_networks(networks or [], trio.current_time())
    return node


def forward_plan(settings: Settings) -> ForwardPlan:
    """What the node of ``settings`` forwards, and whether it uses an exit node."""
    return plan_for(
        settings.interface,
        settings.network.subnet,
        settings.wg_ip,
        is_static=settings.is_static,
        gateways=settings.network.gateways,
        exit_node=settings.exit_node,
    )


async def import_in_thread(module: str) -> None:
    """Import ``module`` in a worker thread unless it is loaded already: the
    loop keeps serving meanwhile. Abandoned on cancellation: a stop never
    waits for an import."""
    if module not in sys.modules:
        await trio.to_thread.run_sync(importlib.import_module, module, abandon_on_cancel=True)
        if gc.get_freeze_count():
            # Start-up froze what its imports made, the cycles they left
            # included (cli.imports_done): those go now, when it costs no
            # start-up its CPU (20 ms), and these imports are frozen too.
            gc.unfreeze()
            gc.collect()
            gc.freeze()


class Daemon:
    def __init__(
        self,
        settings: Settings,
        node: Node,
        keys: KeyPair,
        *,
        device: WgDevice,
        routes: Routes,
        forwarding: Forwarding,
        host: Host,
        notifier: Notifier | None = None,
        load_settings: Callable[[], Settings] | None = None,
        timeline: Timeline | None = None,
        demand: DemandSource | None = None,
        dns_port: int | None = None,
    ) -> None:
        self.settings = settings
        self.dns_port = dns_port  # the mesh's names on our wg IP (None: no DNS server)
        self.nameserver: nameserver.Nameserver | None = None  # once it serves
        self._resolved_pointed = False  # systemd-resolved sends the domain to us
        self.demand = demand  # lazy links on a dynamic node: who we send to
        self.node = node
        self.keys = keys
        self.device = device
        self.routes = routes
        self.forwarding = forwarding
        self.host = host
        self._sock: DatagramSocket | None = None  # bound in _setup
        self._kick = trio.Event()
        self._wg_wake = trio.Event()
        self._link_deleted = False  # the link watch saw our interface go
        # Start-up: the interface exists (peers and routes may be set), and all
        # of it is set up (a static's forwarding too: its routes wait for that).
        self._device_made = trio.Event()
        self._brought_up = trio.Event()
        self._wg_read_at = -math.inf  # when the WireGuard reader looks next
        self._resolve_wake = trio.Event()
        self._address_wake = trio.Event()
        self._monitoring = False  # the link watch runs: addresses need no frequent polling
        self._applied_version = -1
        self._routes_known: set[Route] | None = None  # our routes in the kernel, if known
        self._routes_fresh = False  # on a link just made: the first full pass need not read
        self.backend = ""
        self.startup_error: StartupError | None = None
        self._handshakes = HandshakeClock()
        self._peers_path = control.peers_path(settings.interface)
        self.notifier = notifier or Notifier(None)
        self._load_settings = load_settings  # what a reload reads (None: nothing to re-read)
        self._reload_wake = trio.Event()
        # Set once start-up has settled (``Node.settling``).
        self._settled = trio.Event()
        self._status_sent: str | None = None
        self.timeline = timeline or Timeline()
        self.counters: Counter[str] = Counter()  # path switches, conflicts (metrics)
        self.listeners: list[Callable[[ev.Event], None]] = []  # the core's events (API)
        self.api_address: tuple[str, int] | None = None  # where the API listens, once it does

    # --- lifecycle ----------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start up, then serve until cancelled; ``task_status.started()`` once the
        interface is up. The admin channel needs no WireGuard device: the socket
        is bound, and the interface is set up while the local addresses are
        read and the hellos travel (the core sends nothing into the tunnel
        before the reconciler has applied its routes). The reconciler starts
        as soon as the interface exists: a static's forwarding (tens of ms of
        `nft` on a busy box) is set up meanwhile, and only the forwarding's
        own routes wait for it; its first peers are what every node waits for."""
        try:
            sock = await self._open_socket()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive, sock)
                nursery.start_soon(self._say_hello, nursery)
                nursery.start_soon(self._wireguard)
                try:
                    await self._set_up_device()
                except StartupError as exc:
                    self.startup_error = exc
                    nursery.cancel_scope.cancel()
                    return
                nursery.start_soon(self._resolve)
                nursery.start_soon(self._local_addresses)
                nursery.start_soon(self._watch_links)
                if self.settings.is_static:
                    nursery.start_soon(self._remember_peers)
                if self.settings.hopping and not self.settings.is_static:
                    nursery.start_soon(self._hop_ports)
                if self.demand is not None:
                    nursery.start_soon(self._demand, self.demand)
                nursery.start_soon(self._summaries)
                status = DaemonStatus(self, trio.current_time())
                path = control.socket_path(self.settings.interface)
                await nursery.start(
                    partial(control.serve, command=status.command), path, status.snapshot
                )
                if self.settings.tui:
                    # Imported here: a headless daemon does not load urwid (7 MB, 0.1 s).
                    from . import tui

                    await nursery.start(tui.run, status, nursery.cancel_scope)  # q cancels
                self._serve_manager(nursery)
                if self.settings.api is not None:
                    # After READY=1: the web stack's imports do not delay start-up.
                    nursery.start_soon(self._serve_api, status)
                if self.dns_port is not None:
                    nursery.start_soon(self._serve_dns, self.dns_port)
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
        self._routes_known = None  # unknown until the device says (below)
        plan = forward_plan(s)
        for pause in (*(SETUP_RETRY_PAUSES if pauses is None else pauses), None):
            try:
                # A static's nftables table (tens of ms of `nft`) needs no
                # interface: it is loaded while the interface is made.
                async with _first_command_error(), trio.open_nursery() as nursery:
                    nursery.start_soon(self.forwarding.prepare, plan)
                    await self._make_device(plan)
                    self._device_made.set()
                await self.forwarding.apply(plan)  # the interface's own settings
                self.timeline.mark("device up")
                if not self._brought_up.is_set():
                    self._brought_up.set()
                    self._wg_wake.set()  # the forwarding's routes, if they wait
                return
            except CommandError as exc:
                if pause is None or exc.returncode == 127:  # out of attempts, or no such binary
                    raise
                log.warning("setting up %s: %s (retrying in %.1f s)", s.interface, exc, pause)
                await trio.sleep(pause)

    async def _make_device(self, plan: ForwardPlan) -> None:
        s = self.settings
        # A crashed run's interface with the key we kept: its links carry
        # traffic meanwhile (kept, not made anew). A static's nodes renew
        # their sessions with it themselves (wgdev._adopt).
        self.backend = await self.device.create(
            adopt_key=self.keys.public_b64, renew_kept=not s.is_static
        )
        self.timeline.mark("device created")
        if self.device.fresh:  # made by us: no routes of ours on it yet
            self._routes_known, self._routes_fresh = set(), True
        await self.device.configure(self.keys.private, s.wg_port)
        await self.device.set_address(s.wg_ip, s.network.subnet.prefixlen)
        if plan.route_table:  # the underlay stays outside our routes
            await self.device.set_fwmark(route_table(s.interface))

    async def _open_socket(self) -> DatagramSocket:
        s = self.settings
        port = s.admin_port
        # Marked like WireGuard's own datagrams: the underlay never enters our routes.
        mark = route_table(s.interface) if forward_plan(s).route_table else 0
        try:
            sock = await self.host.open_datagram_socket(port, mark)
        except OSError as exc:
            raise StartupError(f"cannot use admin port {port}: {exc.strerror}") from None
        self._sock = sock
        self.timeline.mark("admin socket bound")
        return sock

    async def _say_hello(self, nursery: trio.Nursery) -> None:
        """Our local addresses (the hello carries them), then the hellos, while
        the interface is set up; then the core's timers (not before: no hello
        may go without the addresses)."""
        s = self.settings
        addresses = await read_local_addresses(self.host, s.interface, fallback=[])
        self.node.set_local_addresses(addresses, trio.current_time())
        now = trio.current_time()
        if self.settings.is_static:
            # A crash (no bye) leaves the nodes waiting for their next ping:
            # call back those the previous run knew.
            self.node.call_back(self.host.read_peers_file(self._peers_path), now)
        self.node.handle_timer(now)
        await self._flush()
        nursery.start_soon(self._drive)

    async def _set_up_device(self) -> None:
        s = self.settings
        try:
            await self._bring_up()
        except CommandError as exc:
            raise StartupError(f"cannot set up interface {s.interface}: {exc}") from None
        log.info(
            "%s %s on %s (%s) key %s… wg port %d admin port %d%s",
            s.name,
            s.wg_ip,
            s.interface,
            self.backend,
            self.keys.public_b64[:8],
            s.wg_port,
            s.admin_port,
            ", static" if s.is_static else ", mobile" if s.mobile else "",
        )

    async def _cleanup(self) -> None:
        self.notifier.stopping()
        sock = self._sock
        if sock is not None:
            self.node.shutdown(trio.current_time())
            await self._flush()
            sock.close()
        try:
            await self.forwarding.release()
        except CommandError as exc:
            log.error("cleanup: %s", exc)
        try:
            actual = await self.routes.read(self.settings.interface)
            await self.routes.apply(self.settings.interface, set(), actual)
        except CommandError as exc:
            log.debug("route cleanup: %s", exc)
        if self.demand is not None:
            try:
                await self.demand.remove()
            except CommandError as exc:
                log.error("cleanup: %s", exc)
        try:
            await self.device.destroy()
        except CommandError as exc:
            log.error("cleanup: %s", exc)
        log.info("stopped")

    # --- the core's inputs and outputs ---------------------------------------

    async def _receive(self, sock: DatagramSocket) -> None:
        node = self.node
        while True:
            try:
                data, addr = await sock.recvfrom(MAX_DATAGRAM + 512)
            except OSError as exc:  # e.g. ICMP port unreachable reported on Linux
                log.debug("admin socket: %s", exc)
                continue
            if node.receive_datagram(data, (addr[0], addr[1]), trio.current_time()):
                await self._flush()
            # else junk, dropped and counted: nothing to do (cheap under a flood)

    async def _drive(self) -> None:
        node = self.node
        while True:
            deadline = node.get_timer()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._kick.wait()
            self._kick = trio.Event()
            now = trio.current_time()
            deadline = node.get_timer()
            if deadline is not None and now >= deadline:
                node.handle_timer(now)
                await self._flush()

    async def _flush(self) -> None:
        """Carry out what the core wants after an input."""
        node, sock = self.node, self._sock
        assert sock is not None  # bound in _setup, before the first flush
        self._log_events()
        for data, addr in node.datagrams_to_send():
            await _sendto(sock, data, addr)
            self.timeline.mark("first hello sent")
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

    def _log_events(self) -> None:
        """The core's events, as log lines (worded by ``event_text``), counted
        and handed to the listeners (the API's event stream)."""
        for event in self.node.events():
            if isinstance(event, ev.PeerConnected):
                self.timeline.mark("first session")
            level = event_text.level(event)
            if log.isEnabledFor(level):
                log.log(level, "%s", event_text.describe(event))
            self._count(event)
            for listener in list(self.listeners):
                listener(event)

    def _count(self, event: ev.Event) -> None:
        match event:
            case ev.DirectLink():
                self.counters["switch_direct"] += 1
            case ev.DirectLinkFailed(lost=True) | ev.PeerLeftLink():
                self.counters["switch_relayed"] += 1
            case ev.Conflict() | ev.RefusedByPeer():
                self.counters["conflicts"] += 1

    async def wait_settled(self) -> None:
        """Until start-up has settled (``Node.settling``), at most ``SETTLE_MAX``."""
        with trio.move_on_after(SETTLE_MAX):
            await self._settled.wait()

    async def _serve_api(self, status: DaemonStatus) -> None:
        assert self.settings.api is not None
        # Imported here, once start-up has settled, and in a thread: the web
        # stack's 0.25 s of imports delays neither the first handshakes nor
        # the direct links, nor the other daemons on a busy machine.
        await self.wait_settled()
        await import_in_thread("hypercorn.trio.run")
        from . import api

        token_file = api_token.token_path(self.settings.network.path)
        async with trio.open_nursery() as nursery:
            app = await nursery.start(api.serve, status, self.settings.api, token_file)
            self.api_address = None if app is None else app.address

    async def _serve_dns(self, port: int) -> None:
        """The mesh's names on our wg IP (nameserver.py), once the interface
        has it; dnspython is imported in a thread, once start-up has settled."""
        await self.wait_settled()
        await import_in_thread("dns.message")
        from . import nameserver

        node, net = self.node, self.settings.network
        server = nameserver.Nameserver(
            net.dns_domain,
            net.subnet,
            node.names,
            lambda: (node.state_version, node.table_version, tuple(node.listings.versions.items())),
        )
        self.nameserver = server
        s = self.settings
        # Where systemd-resolved runs, this machine's own lookups of the
        # mesh's names go to us (the standard port only: resolved knows no other).
        # An interface set up again is pointed again (_restore_interface).
        self._resolved_pointed = port == DNS_PORT and resolved.resolved_runs()
        if self._resolved_pointed:
            await resolved.point(s.interface, s.wg_ip, net.dns_domain)
        try:
            await nameserver.serve(server, s.wg_ip, port)
        finally:
            if self._resolved_pointed:
                self._resolved_pointed = False
                with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                    await resolved.revert(s.interface)

    # --- WireGuard and routes -------------------------------------------------

    async def _wireguard(self) -> None:
        node = self.node
        timers = node.timers
        ifname = self.settings.interface
        next_full = 0.0
        forwarding_behind = False  # its routes wait for start-up's forwarding
        await self._device_made.wait()
        while True:
            now = trio.current_time()
            if self._link_deleted:
                # Asked of the kernel first: a userspace daemon keeps answering
                # for a moment after its interface is gone.
                self._link_deleted = False
                if await self._interface_gone():
                    await self._restore_interface()
                    continue
            try:
                actual = await self._read_wireguard()
                version = node.state_version
                desired = node.desired_peers()
                if (
                    version != self._applied_version
                    or now >= next_full
                    or (forwarding_behind and self._brought_up.is_set())
                ):
                    await self.device.apply_peers(desired, actual)
                    if desired:
                        self.timeline.mark("first peer set")
                    if self.settings.is_static and desired.keys() - actual.keys():
                        # Read back before the routes: the reading that shows
                        # a new node's peer lists it in our table, which its
                        # first peers wait for; the route's `ip` (3-25 ms on a
                        # busy machine) can follow: until the node's own
                        # handshake with us, our WireGuard has no endpoint for
                        # it, so nothing relayed could reach it anyway.
                        await self._read_wireguard()
                    routes = node.desired_routes()
                    await self._apply_routes(ifname, routes, read=now >= next_full)
                    forwarding_behind = not self._brought_up.is_set()
                    if not forwarding_behind:
                        await self.forwarding.set_routes(
                            node.desired_subnet_routes(), node.desired_relay_routes()
                        )
                    self._applied_version = version
                    node.wg_applied(version, trio.current_time())
                    await self._flush()
                    next_full = now + timers.reconcile_interval
                    if desired:
                        # Read back at once: the handshake with a new peer is
                        # what gives a static node the peer's NAT outside.
                        continue
                delay = node.wg_poll_interval(now)
                if not self._settled.is_set():
                    if not node.settling(trio.current_time()):
                        self.timeline.mark("settled")
                        self._settled.set()
                    elif (quiet := node.quiet_until - now) > 0:
                        delay = min(delay, quiet)  # look again when it may have settled
            except CommandError as exc:
                log.warning("%s (retrying)", exc)
                delay = RETRY_AFTER_FAILURE
                self._applied_version = -1
                # While start-up still sets the interface up, it is start-up's to retry.
                if self._brought_up.is_set() and await self._interface_gone():
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
        self.node.interface_reset(trio.current_time())
        self._handshakes = HandshakeClock()
        await self._flush()
        log.info("interface %s set up again (%s)", ifname, self.backend)
        if self._resolved_pointed:
            # systemd-resolved forgot the link's DNS settings with the link.
            s = self.settings
            await resolved.point(ifname, s.wg_ip, s.network.dns_domain)

    async def _read_wireguard(self) -> dict[str, WgPeerReading]:
        """A WireGuard reading, handed to the core (and what it sends, sent)."""
        actual = await self.device.read_peers()
        if any(p.handshake_age is not None for p in actual.values()):
            self.timeline.mark("first handshake")
        wall = self.host.wall_clock()
        corrected = self._handshakes.correct(actual, wall, trio.current_time())
        self.node.update_wg(corrected, trio.current_time())
        await self._flush()
        return actual

    async def _apply_routes(self, ifname: str, desired: set[Route], *, read: bool) -> None:
        """Our kernel routes as ``desired``. What the kernel has is read on a
        full pass (``read``) and whenever we do not know it; in between it is
        what we applied last: one ``ip`` process less per change, and a route
        someone else removed comes back at the next full pass."""
        actual = self._routes_known
        if (read and not self._routes_fresh) or actual is None:
            actual = await self.routes.read(ifname)
        self._routes_fresh = False
        self._routes_known = None  # unknown until the change has gone through
        if actual != desired:
            await self.routes.apply(ifname, desired, actual)
        self._routes_known = set(desired)

    # --- local addresses (LAN discovery, roaming) ----------------------------

    async def _local_addresses(self) -> None:
        node = self.node
        while True:
            interval = node.timers.local_addresses_interval
            if self._monitoring:
                interval = max(interval, 30.0)  # a backstop: the link watch reports changes
            with trio.move_on_after(interval):
                await self._address_wake.wait()
                await trio.sleep(0.05)  # a change comes in bursts (address, routes, link)
            self._address_wake = trio.Event()
            current = [address for address, _port in node.info.local_endpoints]
            addresses = await read_local_addresses(self.host, self.settings.interface, current)
            if node.set_local_addresses(addresses, trio.current_time()):
                try:
                    await self.device.rebind(node.desired_peers())
                except CommandError as exc:
                    log.warning("%s", exc)
                await self._addresses_moved()
            await self._flush()

    async def _addresses_moved(self) -> None:
        """Our addresses changed: a network of a gateway may now be local (or no
        longer), and a gateway's networks may leave through other interfaces."""
        s = self.settings
        if not s.network.gateways:
            return
        networks = await read_local_networks(self.host, s.interface, fallback=None)
        if networks is not None:
            self.node.set_local_networks(networks, trio.current_time())
        plan = forward_plan(s)
        if plan.routes:
            try:
                await self.forwarding.apply(plan)
            except CommandError as exc:
                log.warning("%s (retrying at the next change)", exc)

    async def _watch_links(self) -> None:
        """Keep the host's link watch running (restarted with backoff if it
        cannot run or ends)."""
        backoff = 1.0
        while True:
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.host.watch_links, self._on_link_change)
                    self._monitoring = True
            except* OSError as failed:
                log.debug("cannot watch address changes: %s", failed.exceptions[0])
            finally:
                self._monitoring = False
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MONITOR_RESTART_MAX)

    def _on_link_change(self, deleted: str | None) -> None:
        if deleted == self.settings.interface:
            self._link_deleted = True
            self._wg_wake.set()  # our interface is gone: the reconciler notices
        else:
            self._address_wake.set()

    # --- lazy links: who we send to -------------------------------------------------

    async def _demand(self, sensor: DemandSource) -> None:
        """Tell the core which mesh addresses we talked with lately. The sensor's
        table is (re)installed when missing: at start, and after someone
        flushed the ruleset."""
        node = self.node
        subnet = self.settings.network.subnet
        installed = False
        backoff = RETRY_AFTER_FAILURE
        while True:
            try:
                if not installed:
                    await sensor.install()
                    installed = True
                destinations = {ip for ip in sensor.read() if ip in subnet}
            except CommandError as exc:
                log.warning("lazy links see no traffic (pairs stay relayed): %s", exc)
                installed = False
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MONITOR_RESTART_MAX)
                continue
            backoff = RETRY_AFTER_FAILURE
            destinations.discard(self.settings.wg_ip)
            if destinations:
                node.set_demand(destinations, trio.current_time())
                await self._flush()
            await trio.sleep(DEMAND_INTERVAL)

    # --- port hopping (-H) -----------------------------------------------------

    async def _hop_ports(self) -> None:
        """A firewall may block our WireGuard port: after hop_after without any
        static peer, move to another port (as the original tool's -H does)."""
        node = self.node
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

    async def _remember_peers(self) -> None:
        node = self.node
        written: dict[IPv4Address, Endpoint] | None = None
        while True:
            await trio.sleep(1.0)
            endpoints = node.peer_endpoints()
            if endpoints != written:
                try:
                    await self.host.write_peers_file(self._peers_path, endpoints)
                    written = endpoints
                except OSError as exc:
                    log.debug("cannot write %s: %s", self._peers_path, exc)

    # --- DNS ------------------------------------------------------------------

    async def _resolve(self) -> None:
        node = self.node
        while True:
            # A mobile looks its statics up only when the core asks (a static
            # lost): its one static answers, and every lookup costs bytes.
            interval = math.inf if self.settings.mobile else node.timers.resolve_interval
            with trio.move_on_after(interval):
                await self._resolve_wake.wait()
            self._resolve_wake = trio.Event()
            for target in list(node.statics.values()):
                address = await resolve_host(self.host, target.host)
                if address is not None or target.address is None:
                    node.set_static_address(target.wg_ip, address, trio.current_time())
            await self._flush()
            await trio.sleep(1.0)  # at most one round of lookups a second

    async def _summaries(self) -> None:
        node = self.node
        while True:
            await trio.sleep(node.timers.summary_interval)
            if self.settings.verbosity < 1:  # a reload may change it
                continue
            status = node.statistics(trio.current_time())
            parts = [
                f"{p.name}:{'direct' if p.path == 'direct' else 'via ' + (p.gateway_name or '?')}"
                + (f":{p.rtt * 1000:.1f}ms" if p.rtt is not None else "")
                for p in status.peers
            ]
            log.info("peers (%d): %s", len(parts), " ".join(parts) or "none")
            if status.drops:
                log.info("dropped datagrams: %s", status.drops)

    # --- reload (SIGHUP) and the service manager ----------------------------------

    def request_reload(self) -> None:
        """Re-read the configuration (SIGHUP): at once, or right after start-up."""
        self._reload_wake.set()

    def _serve_manager(self, nursery: trio.Nursery) -> None:
        """Set up and serving: tell the service manager, and keep telling it."""
        self._tell_ready()
        nursery.start_soon(self._reloads)
        if self.notifier.enabled:
            nursery.start_soon(self._report_status)
        if self.notifier.watchdog_interval:
            nursery.start_soon(self._watchdog, self.notifier.watchdog_interval)

    def _tell_ready(self) -> None:
        self._status_sent = self._service_status()
        self.notifier.ready(self._status_sent)

    async def _reloads(self) -> None:
        while True:
            await self._reload_wake.wait()
            self._reload_wake = trio.Event()
            await self.reload()

    async def reload(self) -> None:
        """Read the files again and apply what changed (``reload.plan_reload``);
        a file that no longer validates keeps everything as it runs."""
        self.notifier.reloading()
        started = trio.current_time()
        try:
            if self._load_settings is None:
                raise ConfigError("no configuration to read again")
            loaded = self._load_settings()
        except ConfigError as exc:
            log.error("reload: %s; the running configuration stays", exc)
        else:
            change = plan_reload(self.settings, loaded)
            await self._apply(change)
            log.info(
                "reloaded in %.0f ms: %s",
                (trio.current_time() - started) * 1000,
                "; ".join(change.applied) or "no change that applies",
            )
        self._tell_ready()

    async def _apply(self, change: Reload) -> None:
        for line in change.needs_restart:
            log.warning("reload: %s", line)
        running, settings = self.settings.network, change.settings.network
        if settings.timers != running.timers or settings.peers != running.peers:
            targets = []
            for peer in settings.peers:
                target = StaticTarget(
                    peer.wg_ip, peer.host, peer.wg_port, peer.admin_port, pinned_key=peer.public_key
                )
                if peer not in running.peers:  # new, or moved: where is it now?
                    target.address = await resolve_host(self.host, peer.host)
                targets.append(target)
            self.node.reconfigure(settings.timers, targets, trio.current_time())
        self.settings = change.settings
        logging.getLogger().setLevel(_log_level(change.settings))
        for warning in set(settings.warnings) - set(running.warnings):
            log.warning("%s", warning)
        await self._flush()

    def _service_status(self) -> str:
        now = trio.current_time()
        doc = status_document(self.node.statistics(now), interface=self.settings.interface)
        return service_status(doc)

    async def _report_status(self) -> None:
        """``STATUS=`` whenever the one-line summary changes (looked at once a second,
        computed only when the node's state moved)."""
        token = None
        while True:
            await trio.sleep(STATUS_CHECK_INTERVAL)
            node = self.node
            current = (node.state_version, node.table_version, len(node.sessions))
            if current == token:
                continue
            token, text = current, self._service_status()
            if text != self._status_sent:
                self._status_sent = text
                self.notifier.status(text)

    async def _watchdog(self, interval: float) -> None:
        """``WATCHDOG=1`` from the trio loop itself: a hung loop stops saying it."""
        while True:
            self.notifier.watchdog()
            await trio.sleep(interval)


class DaemonStatus:
    """The running daemon as ``status`` and the TUI read it."""

    def __init__(self, daemon: Daemon, started: float) -> None:
        self._daemon = daemon
        self._started = started

    def snapshot(self) -> Doc:
        """The status document. Someone is looking: latency to every peer is
        measured for a while (``latency_watch``)."""
        daemon, node = self._daemon, self._daemon.node
        now = trio.current_time()
        node.watch_latency(now + node.timers.latency_watch, now)
        doc = status_document(
            node.statistics(now),
            interface=daemon.settings.interface,
            backend=daemon.backend,
            uptime=now - self._started,
        )
        if daemon.nameserver is not None:
            doc["dns"] = jsonable(daemon.nameserver.statistics(now))
        return doc

    def token(self) -> object:
        """Changes whenever the snapshot may have changed beyond ages and counters."""
        node = self._daemon.node
        return (node.state_version, node.table_version, len(node.sessions))

    # --- what the HTTP API (api.ApiSource) and the TUI's map add ---------------------

    def mesh(self) -> Doc:
        """The mesh map document (``mesh_text``). Someone is looking: a dynamic
        node keeps its static's map coming for a while (``MESH_WATCH``)."""
        daemon, node = self._daemon, self._daemon.node
        now = trio.current_time()
        node.watch_mesh(now + MESH_WATCH, now)
        daemon._kick.set()  # a request to the static may be due now
        return mesh_text.mesh_document(
            node.mesh_picture(now), me=node.info.wg_ip, source=node.mesh.source
        )

    def mesh_token(self) -> object:
        return self._daemon.node.mesh.token()

    def routes(self) -> Doc:
        node = self._daemon.node
        routes = sorted(node.desired_routes(), key=lambda r: r.dest)
        peers = sorted(node.desired_peers().values(), key=lambda p: p.public_key)
        return {
            "interface": self._daemon.settings.interface,
            "routes": [
                {"dest": f"{r.dest}/32", "via": None if r.via is None else str(r.via)}
                for r in routes
            ],
            "wireguard_peers": [
                {
                    "public_key": p.public_key,
                    "allowed_ips": [str(ip) for ip in p.allowed_ips],
                    "endpoint": None if p.endpoint is None else f"{p.endpoint[0]}:{p.endpoint[1]}",
                    "persistent_keepalive": p.persistent_keepalive,
                }
                for p in peers
            ],
        }

    def counters(self) -> Mapping[str, int]:
        return self._daemon.counters

    def reprobe(self, wg_ip: IPv4Address) -> str | None:
        daemon = self._daemon
        state = daemon.node.reprobe(wg_ip, trio.current_time())
        daemon._kick.set()  # a retry due now: the core's timer runs at once
        return state

    def request_reload(self) -> None:
        self._daemon.request_reload()

    def command(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """A control request other than the status (``client_config.client_main``,
        and the API's clients). A refusal is ``{"error": line, "status": code}``
        (HTTP's: 400 a malformed request, 404 no such client, 409 refused)."""
        daemon, node = self._daemon, self._daemon.node
        now = trio.current_time()
        op = request.get("op")
        try:
            if op == "client-list":
                return {"clients": self._clients_now(now)}
            if op == "client-add" and node.is_static and daemon.settings.private_key is None:
                # A fresh key at every start would break every client's config.
                return {
                    "error": "this node's key is not pinned: a client's config names it, so "
                    "pin it first (publicKey in network.yaml, see the README's security notes)",
                    "status": 409,
                }
            if op == "client-add":
                name, key, wanted = request.get("name"), request.get("public_key"), None
                if not isinstance(name, str) or not isinstance(key, str):
                    return {"error": "client-add needs a name and a public key", "status": 400}
                if request.get("wg_ip") is not None:
                    try:
                        wanted = IPv4Address(str(request["wg_ip"]))
                    except ValueError:
                        error = f"--ip {request['wg_ip']}: not an IPv4 address"
                        return {"error": error, "status": 400}
                client = node.add_client(name, key, wanted, now)
            elif op == "client-remove":
                name = request.get("name")
                if not isinstance(name, str):
                    return {"error": "client-remove needs a name", "status": 400}
                client = node.remove_client(name, now)
            else:
                return {"error": f"unknown request {op!r}", "status": 400}
        except ClientRefused as exc:
            return {"error": str(exc), "status": 404 if op == "client-remove" else 409}
        daemon._wg_wake.set()  # the peer goes in (or out) now
        daemon._kick.set()
        s = daemon.settings
        static = s.static
        assert static is not None  # add_client refuses on any other node
        routes = [g for gw in s.network.gateways for g in gw.routes if g.prefixlen > 0]
        allowed = [str(s.network.subnet), *dict.fromkeys(str(r) for r in routes)]
        return {
            "client": {"name": client.name, "wg_ip": str(client.wg_ip)},
            "peer": {
                "name": s.name,
                "public_key": node.info.public_key,
                "endpoint": f"{static.host}:{node.info.wg_port}",
                "allowed_ips": allowed,
                "mesh": str(s.network.subnet),
            },
            "state_file": client_config.state_path(s.network.path, s.wg_ip),
            "clients": client_config.document(list(node.clients.values()))["clients"],
        }

    def _clients_now(self, now: float) -> list[dict[str, Any]]:
        doc = status_document(self._daemon.node.statistics(now), interface="")
        return [
            {k: p.get(k) for k in ("name", "wg_ip", "public_key", "endpoint", "handshake_age")}
            | {"rx_bytes": p.get("rx_bytes", 0), "tx_bytes": p.get("tx_bytes", 0)}
            for p in doc["peers"]
            if p.get("client") and p.get("path") == "direct"
        ]

    def set_log_level(self, level: int) -> None:
        """Until the next reload, which sets the configured verbosity again."""
        logging.getLogger().setLevel(level)

    def add_listener(self, listener: Callable[[ev.Event], None]) -> Callable[[], None]:
        listeners = self._daemon.listeners
        listeners.append(listener)
        return lambda: listeners.remove(listener)


async def resolve_host(host: Host, name: str) -> str | None:
    """``name`` if it is an IPv4 address, else what the host's resolver says."""
    try:
        return str(IPv4Address(name))
    except ValueError:
        return await host.resolve(name)


async def read_local_addresses(host: Host, interface: str, fallback: list[str]) -> list[str]:
    """The host's addresses except on our interface; ``fallback`` (logged) if ``ip`` fails."""
    try:
        return await host.local_addresses(exclude=interface)
    except CommandError as exc:
        log.warning("%s (retrying)", exc)
        return fallback


async def read_local_networks(
    host: Host, interface: str, fallback: list[IPv4Network] | None
) -> list[IPv4Network] | None:
    """The host's prefixes except on our interface; ``fallback`` (logged) if ``ip`` fails."""
    try:
        return await host.local_networks(exclude=interface)
    except CommandError as exc:
        log.warning("%s (retrying)", exc)
        return fallback


@contextlib.asynccontextmanager
async def _first_command_error() -> AsyncIterator[None]:
    """A nursery's failure as the CommandError it was (the first, if two
    tasks failed) for the retry around it; anything else goes on as raised."""
    try:
        yield
    except BaseExceptionGroup as group:
        failed, rest = group.split(CommandError)
        if failed is None or rest is not None:
            raise
        first: BaseException = failed
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


async def _sendto(sock: DatagramSocket, data: bytes, addr: Endpoint) -> None:
    try:
        await sock.sendto(data, addr)
    except OSError as exc:  # unreachable network, no route: the core retries
        log.debug("send to %s:%d failed: %s", addr[0], addr[1], exc.strerror)


# --- the process -------------------------------------------------------------------


async def serve(
    settings: Settings,
    load_settings: Callable[[], Settings] | None = None,
    notifier: Notifier | None = None,
    timeline: Timeline | None = None,
    admin_socket: socket.socket | None = None,
    early_device: EarlyStart | None = None,
) -> StartupError | None:
    """Run a daemon on this machine until SIGINT/SIGTERM (or ``q`` in the TUI).
    SIGHUP reloads ``load_settings()`` when headless; with the TUI it means the
    terminal hung up, and stops the daemon. Returns the startup error, if any.
    ``admin_socket``: the admin port, bound already (see ``SystemHost``);
    ``early_device``: the interface's first command, started already."""
    host = SystemHost(admin_socket)
    timeline = timeline or Timeline()
    daemon: Daemon | None = None
    hangup_early = False

    def on_hangup() -> None:
        nonlocal hangup_early
        if daemon is None:
            hangup_early = True  # still building the node: reload right after start-up
        else:
            daemon.request_reload()

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        release_held_signals()
        async with trio.open_nursery() as nursery:
            hangup = None if settings.tui else on_hangup  # TUI: the terminal hung up
            nursery.start_soon(_on_signals, signals, nursery.cancel_scope, hangup)
            # A pinned static keeps its key; any other node its crashed run's,
            # one boot number higher (see crash_kept_key).
            pinned = settings.private_key
            kept = pinned is None
            key_path = control.runtime_path(settings.interface, "key")
            boot_number = 0
            if pinned is not None:
                keys = KeyPair.from_private(pinned)
            else:
                keys, boot_number = crash_kept_key(key_path, settings.wg_ip)
            node = await build_node(settings, keys, host, boot_number=boot_number)
            timeline.mark("node built")
            device = WgInterface(
                settings.interface, existing=settings.existing_interface, early=early_device
            )
            restore = control.runtime_path(settings.interface, "restore")
            daemon = Daemon(
                settings,
                node,
                keys,
                device=device,
                routes=RouteTable(),
                forwarding=HostForwarding(restore),
                host=host,
                notifier=notifier,
                load_settings=load_settings,
                timeline=timeline,
                demand=_demand_sensor(settings),
                dns_port=DNS_PORT if settings.network.dns_enabled else None,
            )
            if hangup_early:
                daemon.request_reload()
            try:
                await daemon.run()
            finally:  # not after a crash: that is what the file is for
                if kept:
                    runfiles.remove(key_path)
            nursery.cancel_scope.cancel()  # it ended by itself (startup failed, or q)
    return None if daemon is None else daemon.startup_error


def crash_kept_key(path: str, wg_ip: IPv4Address) -> tuple[KeyPair, int]:
    """An unpinned node's key pair and boot number: the key a crashed run of
    ``wg_ip`` left in ``path`` with its boot number plus one, else a new key
    and 0; kept there (root only, in the run directory) until a clean stop
    removes it.

    Why: a new key claiming our wg IP must wait while the others ask the old
    run whether it is still alive (``incumbentTimeout``); the same key is a
    restart, taken at once (core/handshake.py rule 5). The boot number tells
    the new run from the old one wherever the static's table goes: a pair
    peer drops its link to the old run at once (core/pairs.py rule 6). So
    the number is written before it is used, and if it cannot be, the run
    takes a new key (two runs with one key and one number would look alike).
    A clean stop says bye, so its next start waits for nothing either way.
    """
    try:
        text = runfiles.read_private(path, KEY_FILE_MAX)
    except (OSError, UnicodeDecodeError):
        text = None
    ip, key, number = [*(text or "").split(), "", "", ""][:3]
    if ip == str(wg_ip) and (not number or (number.isascii() and number.isdigit())):
        try:
            kept = KeyPair.from_private(from_b64(key))
        except ValueError:
            kept = None  # not a key of ours: make one
        boot_number = int(number or 0) + 1  # (no number: an older release's first run)
        if kept is not None and boot_number <= MAX_BOOT_NUMBER:
            try:
                runfiles.write_private(path, f"{wg_ip} {to_b64(kept.private)} {boot_number}\n")
                return kept, boot_number
            except OSError as exc:
                log.warning("cannot count this run of the kept key, so a new key: %s", exc)
                return KeyPair.generate(), 0
    keys = KeyPair.generate()
    try:
        runfiles.write_private(path, f"{wg_ip} {to_b64(keys.private)} 0\n")
    except OSError as exc:
        log.warning("cannot keep this run's key for a restart after a crash: %s", exc)
    return keys, 0


def _demand_sensor(settings: Settings) -> DemandSensor | None:
    """Lazy links (a mobile node's always are) need to know who a dynamic node
    sends to; statics relay only."""
    lazy = settings.network.links == "lazy" or settings.mobile
    if not lazy or settings.is_static:
        return None
    return DemandSensor(settings.interface, settings.admin_port)


_HELD = (signal.SIGTERM, signal.SIGHUP)
_held_signals: list[int] = []


def _hold_signal(signum: int, _frame: object) -> None:
    _held_signals.append(signum)


def hold_signals() -> dict[int, Any]:
    """Until ``serve`` listens for them, a SIGTERM or SIGHUP waits for it
    (``release_held_signals``). Raised from a handler while trio's run loop
    starts, it would break the loop (TrioInternalError); left to its default
    action, it would kill us with an interface made and not deleted.
    Returns the handlers before, for ``restore_signals``."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, _hold_signal) for signum in _HELD}


def restore_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def release_held_signals() -> None:
    """Raise again what ``hold_signals`` held: trio's signal receiver, in
    place now, gets it."""
    held, _held_signals[:] = list(_held_signals), []
    for signum in held:
        signal.raise_signal(signum)


async def _on_signals(
    signals: AsyncIterator[int], scope: trio.CancelScope, on_hangup: Callable[[], None] | None
) -> None:
    """SIGHUP calls ``on_hangup`` (None: it stops, as the other signals do)."""
    async for signum in signals:
        if signum == signal.SIGHUP and on_hangup is not None:
            log.info("SIGHUP received, reloading")
            on_hangup()
            continue
        log.info("%s received, shutting down", signal.Signals(signum).name)
        scope.cancel()
        return


class JournalFormatter(logging.Formatter):
    """``<priority>LEVEL message``: journald stamps the time and reads the
    syslog priority from the prefix (sd-daemon(3))."""

    def __init__(self) -> None:
        super().__init__("%(levelname)-7s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_syslog_priority(record.levelno)}>{super().format(record)}"


def _syslog_priority(level: int) -> int:
    """debug 7, info 6, warning 4, error 3, critical 2."""
    for limit, priority in (
        (logging.INFO, 7),
        (logging.WARNING, 6),
        (logging.ERROR, 4),
        (logging.CRITICAL, 3),
    ):
        if level < limit:
            return priority
    return 2


def _log_level(settings: Settings) -> int:
    return logging.DEBUG if settings.verbosity >= 2 else logging.INFO


def setup_logging(settings: Settings, stream: object = None) -> None:
    root = logging.getLogger()
    level = _log_level(settings)
    root.setLevel(level)
    # At -vv with milliseconds: what happens within a second is read from them.
    clock = "%(asctime)s.%(msecs)03d" if level == logging.DEBUG else "%(asctime)s"
    fmt = logging.Formatter(f"{clock} %(levelname)-7s %(message)s", "%H:%M:%S")
    stream = stream or sys.stderr
    if settings.tui:  # lines go to the TUI's log pane, never onto its screen
        log_capture.capture_logging(fmt)
    else:
        handler = logging.StreamHandler(stream)  # type: ignore[arg-type]
        handler.setFormatter(JournalFormatter() if to_journal(stream) else fmt)
        root.addHandler(handler)
    if settings.logfile:
        file_handler = logging.FileHandler(settings.logfile)
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)


def main(
    settings: Settings,
    *,
    load_settings: Callable[[], Settings] | None = None,
    timeline: Timeline | None = None,
    admin_socket: socket.socket | None = None,
    early_device: EarlyStart | None = None,
) -> int:
    """The daemon's process: logging, the service manager's notifier, ``serve``;
    ``load_settings`` is what a reload (SIGHUP) reads, ``admin_socket`` the
    admin port bound by the command line before the daemon's imports, and
    ``early_device`` the interface's command it started then."""
    setup_logging(settings)
    if timeline is not None:
        timeline.attach(log)
    for warning in settings.network.warnings:  # e.g. a subnet read with its host bits cleared
        log.warning("%s", warning)
    notifier = Notifier.from_environ()
    handlers = hold_signals()
    try:
        error = trio.run(
            serve, settings, load_settings, notifier, timeline, admin_socket, early_device
        )
    except KeyboardInterrupt:  # a second Ctrl-C during cleanup
        return 130
    finally:
        restore_signals(handlers)
        notifier.close()
        if settings.tui:  # stderr again (e.g. a startup error the TUI never showed)
            log_capture.release_logging()
    if error is not None:
        log.error("%s", error)
        return 1
    return 0
