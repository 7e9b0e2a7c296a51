"""An in-memory network of protocol cores with a fake clock.

Many ``Node`` cores are joined by a simulated underlay that can delay, drop,
partition and translate addresses like a NAT router; a small WireGuard model
turns each core's desired peers and routes into "does a ping from A reach B".
Everything is driven by one seeded ``random.Random``, so a failing run can be
replayed exactly. No sockets, no threads: minutes of protocol time run in
milliseconds.

Plain devices that run no daemon (``add_device``) sit on a host's LAN:
``reaches`` follows a packet to one through the cores' routes, AllowedIPs
and gateways (``gateways:`` of network.yaml, ``SimNet(gateways=...)``) and
its answer back, with WireGuard's source check at every hop.

The WireGuard model keeps what ``wg show`` reports: per peer the bytes sent
and received (persistent keepalives, admin datagrams through the tunnel, and
user traffic ``flows`` between hosts, counted on the first hop, which is the
hop a direct link is), and the age of the latest handshake, which keeps
growing while a link is down (WireGuard re-handshakes every two minutes
while a link works). A packet goes to the peer with the longest AllowedIPs
prefix that holds its address, as in WireGuard.

``underlay`` counts every host's bytes on the underlay, both ways, IP and
UDP headers included (28 bytes a packet): admin datagrams, WireGuard
keepalives (32 + 28), handshakes (initiation 148, response 92 and the
initiator's confirming keepalive, each + 28, at each end every two minutes),
tunnelled admin datagrams and flows on their first hop.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from random import Random
from typing import ParamSpec, TypeVar

from tests.helpers import SUBNET, make_node
from wg_netmanager.core import events as ev
from wg_netmanager.core.node import Node
from wg_netmanager.core.sessions import StaticTarget
from wg_netmanager.core.timers import Timers
from wg_netmanager.keys import KeyPair
from wg_netmanager.model import DEFAULT_ROUTE, Endpoint, Gateway, Route, WgPeer, WgPeerReading
from wg_netmanager.wire import NodeInfo

WG_TICK = 0.02  # seconds between two readings of "wg show", by default
UDP_IP = 28  # IPv4 and UDP headers
KEEPALIVE = 32  # a WireGuard keepalive (an empty data message)
HANDSHAKE = 148 + 92 + KEEPALIVE + 3 * UDP_IP  # both ways, with the confirming keepalive
_T = TypeVar("_T")
_P = ParamSpec("_P")


@dataclass
class Nat:
    """A NAT router: endpoint-independent mapping (full-cone-like) or symmetric.

    Inbound traffic passes only to a mapping whose inside host has already sent
    to that remote address (address-dependent filtering), like a stateful
    firewall.
    """

    public_ip: str
    symmetric: bool = False
    _mappings: dict[tuple[Endpoint, Endpoint | None], int] = field(default_factory=dict)
    _reverse: dict[int, tuple[Endpoint, set[str]]] = field(default_factory=dict)
    _ports: itertools.count = field(default_factory=lambda: itertools.count(20000))

    def outbound(self, inside: Endpoint, remote: Endpoint) -> Endpoint:
        key = (inside, remote if self.symmetric else None)
        port = self._mappings.get(key)
        if port is None:
            port = next(self._ports)
            self._mappings[key] = port
            self._reverse[port] = (inside, set())
        self._reverse[port][1].add(remote[0])
        return (self.public_ip, port)

    def inbound(self, port: int, remote: Endpoint) -> Endpoint | None:
        entry = self._reverse.get(port)
        if entry is None or remote[0] not in entry[1]:
            return None
        return entry[0]


@dataclass
class Host:
    name: str
    address: str  # underlay address (inside address when behind a NAT)
    wg_ip: IPv4Address
    wg_port: int
    admin_port: int
    nat: Nat | None = None
    lan: str | None = None  # hosts on the same LAN reach each other's inside address
    mobile: bool = False  # --mobile (core/mobile.py)
    node: Node | None = None
    keys: KeyPair | None = None
    boot_number: int = 0  # the runs of ``keys`` before the current one
    up: bool = False
    # Added to the simulation time for everything this host's core sees (its
    # ``now``) and subtracted from its timer deadlines: machines whose clocks
    # differ by hours, or a clock set back between restarts.
    clock_offset: float = 0.0
    # Its own network.yaml ``gateways:`` if it differs from everyone's (None:
    # the SimNet's), and the exit node it opted in to.
    gateways: tuple[Gateway, ...] | None = None
    exit_node: IPv4Address | None = None
    # Told when address, nat or lan change (a host roams): the network's
    # indexes of who is where are rebuilt.
    on_move: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name in _PLACE:
            moved = self.__dict__.get("on_move")
            if moved is not None:
                moved()

    @property
    def network(self) -> IPv4Network:
        """The prefix of its underlay address (its connected route)."""
        return IPv4Network(f"{self.address}/24", strict=False)


_PLACE = frozenset({"address", "nat", "lan"})


@dataclass
class Device:
    """A machine that runs no daemon (a printer, a lamp) on a host's LAN."""

    name: str
    address: str
    lan: str


class _PeerIndex:
    """One host's desired peers by AllowedIPs: the /32s (as the core makes
    them for nodes) in a dict, the few wider networks (gateways' networks, a
    mobile's subnet) longest first. A lookup is WireGuard's: the longest
    prefix that holds the address, the first peer among equals."""

    def __init__(self, peers: dict[str, WgPeer]) -> None:
        self.peers = peers
        self.owner: dict[IPv4Address, WgPeer] = {}
        wider: list[tuple[IPv4Network, WgPeer]] = []
        for peer in peers.values():
            for net in peer.allowed_ips:
                if net.prefixlen == 32:
                    self.owner.setdefault(net.network_address, peer)
                else:
                    wider.append((net, peer))
        wider.sort(key=lambda item: -item[0].prefixlen)  # (stable: the first among equals)
        self.wider = wider

    def lookup(self, address: IPv4Address) -> WgPeer | None:
        peer = self.owner.get(address)
        if peer is not None:
            return peer
        return next((p for net, p in self.wider if address in net), None)


class SimNet:
    def __init__(
        self,
        timers: Timers | None = None,
        seed: int = 1,
        latency: float = 0.002,
        loss: float = 0.0,
        wg_period: float | None = None,
        lazy: bool = False,
        gateways: Sequence[Gateway] = (),
        *,
        subnet: IPv4Network = SUBNET,
        wg_reads: str = "tick",
    ) -> None:
        if wg_reads not in ("tick", "daemon"):
            raise ValueError(f"wg_reads: 'tick' or 'daemon', not {wg_reads!r}")
        self.lazy = lazy  # lazy direct links (network.yaml links: lazy)
        self.rng = Random(seed)
        self.gateways = tuple(gateways)
        self.devices: dict[str, Device] = {}
        # Every event of every core, with the simulation time, while recording.
        self.record_events = False
        self.events: list[tuple[float, str, ev.Event]] = []
        self.timers = timers or Timers()
        self.latency = latency
        # Extra delay, uniform in [0, jitter), per datagram: later datagrams
        # may overtake earlier ones (reordering).
        self.jitter = 0.0
        self.loss = loss
        self.subnet = subnet
        self.now = 0.0
        self.hosts: dict[str, Host] = {}
        self.statics: list[tuple[str, IPv4Address, int, int]] = []
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._timer_due: dict[str, float] = {}
        self.partitioned: set[frozenset[str]] = set()
        self._spins: dict[str, int] = {}  # timer fired with no progress, per host
        self.sent_bytes: dict[str, int] = {}
        self.underlay: dict[str, int] = {}  # bytes in and out per host (see the docstring)
        self.received: dict[str, int] = {}  # admin datagrams delivered, per host
        self._learned: dict[tuple[str, str], Endpoint] = {}
        # The WireGuard model's per-peer state, by (host name, peer key).
        self._handshake_at: dict[tuple[str, str], float] = {}
        self._rx: dict[tuple[str, str], int] = {}
        self._tx: dict[tuple[str, str], int] = {}
        # (host, key) whose WireGuard sent its first initiation (a punch's).
        self._initiated: dict[tuple[str, str], bool] = {}
        self._keepalive_at: dict[tuple[str, str], float] = {}
        self._desired_keys: dict[str, frozenset[str]] = {}  # per host, at the last tick
        # Per host, the peer keys that have any of that state (so a removed
        # peer's state is found without scanning everyone's).
        self._state_keys: dict[str, set[str]] = {}
        # Keepalives and handshakes (bytes) per host, as WireGuard sends them.
        self.keepalive_bytes: dict[str, int] = {}
        self.handshake_bytes: dict[str, int] = {}
        # User traffic: (from, to) -> bytes per second, e.g. a ping running.
        self.flows: dict[tuple[str, str], float] = {}
        self.wg_period = wg_period  # see run_until
        self._next_wg = 0.0
        # "tick": every core reads `wg show` every tick (WG_TICK or wg_period).
        # "daemon": each on its own schedule, as the daemon does (its
        # wg_poll_interval, and soon after its desired state changed); the
        # tick then only carries the flows. Cheaper for many nodes.
        self.wg_reads = wg_reads
        self._wg_read_at: dict[str, float] = {}  # daemon reads: the next one, per host
        self._wg_last_read: dict[str, float] = {}
        self._wg_applied: dict[str, int] = {}
        # CPU seconds spent inside each core (receive, timers, readings ...),
        # measured with time.process_time while ``measure_cpu`` is true.
        self.measure_cpu = False
        self.cpu: dict[str, float] = {}
        # Indexes: who has which wg IP, key, underlay or NAT address.
        self._by_wg_ip: dict[str, Host] = {}
        self._by_key_index: dict[str, Host] = {}
        self._order: dict[str, int] = {}
        self._at_address: dict[str, list[Host]] | None = None  # None: rebuild
        self._behind_nat: dict[str, list[Host]] = {}
        # Per host: (desired peers, desired routes) as last indexed, by destination.
        self._peer_index: dict[str, _PeerIndex] = {}
        self._route_index: dict[str, tuple[object, dict[IPv4Address, Route]]] = {}

    # --- building -------------------------------------------------------

    def add_host(
        self,
        name: str,
        address: str,
        wg_ip: str,
        *,
        static: bool = False,
        nat: Nat | None = None,
        lan: str | None = None,
        mobile: bool = False,
    ) -> Host:
        octet = int(wg_ip.rsplit(".", 1)[1])
        host = Host(name, address, IPv4Address(wg_ip), 50000 + octet, 50500 + octet, nat, lan)
        host.mobile = mobile
        host.on_move = self._moved
        self.hosts[name] = host
        self._order[name] = len(self._order)
        self._by_wg_ip.setdefault(str(host.wg_ip), host)
        self._moved()
        if static:
            self.statics.append((address, host.wg_ip, host.wg_port, host.admin_port))
        return host

    def add_device(self, name: str, address: str, lan: str) -> Device:
        device = Device(name, address, lan)
        self.devices[name] = device
        return device

    def start(self, name: str, keep_key: bool = False) -> None:
        """Start ``name``'s core: with a new key, or (``keep_key``, a run
        after a crash, as the daemon does) the last run's, one boot number on."""
        host = self.hosts[name]
        self._unindex_key(host)
        if keep_key and host.keys is not None:
            host.boot_number += 1
        else:
            host.keys, host.boot_number = KeyPair.generate(), 0
        info = NodeInfo(
            wg_ip=host.wg_ip,
            name=name,
            public_key=host.keys.public_b64,
            wg_port=host.wg_port,
            admin_port=host.admin_port,
            mobile=host.mobile,
        )
        statics = [
            StaticTarget(wg_ip=ip, host=addr, wg_port=wp, admin_port=ap, address=addr)
            for addr, ip, wp, ap in self.statics
        ]
        started = time.process_time() if self.measure_cpu else 0.0
        host.node = make_node(
            info,
            statics=statics,
            timers=self.timers,
            now=self.clock(host),
            rng=self.rng,
            local_addresses=[host.address],
            private_key=host.keys.private,
            lazy=self.lazy,
            subnet=self.subnet,
            gateways=self.gateways if host.gateways is None else host.gateways,
            exit_node=host.exit_node,
            boot_number=host.boot_number,
        )
        host.node.set_local_networks([host.network], self.clock(host))
        if self.measure_cpu:
            self._charge(host, time.process_time() - started)
        self._by_key_index.setdefault(host.keys.public_b64, host)
        host.up = True
        self._after(host)
        if self.wg_reads == "daemon":
            self._wg_applied.pop(name, None)
            self._read_wg_at(host, self.now)

    def stop(self, name: str, clean: bool = True) -> None:
        host = self.hosts[name]
        if clean and host.node is not None:
            host.node.shutdown(self.clock(host))
            self._flush(host)
        host.up = False
        host.node = None
        self._unindex_key(host)

    # --- running --------------------------------------------------------

    def run_until(self, t: float) -> None:
        """Advance to ``t``: deliver, fire timers, and read "wg show" every tick.

        The WireGuard model reads every ``WG_TICK`` seconds, counted from the
        start of each call; with ``wg_period`` set, every ``wg_period``
        seconds on one schedule across calls instead (coarser and cheaper,
        for a long run advanced in small real-time steps). With ``wg_reads``
        "daemon" the tick carries only the flows, and each core's readings
        are events of their own (see ``_read_wg_at``).
        """
        tick = self.wg_period or WG_TICK
        next_wg = self.now if self.wg_period is None else self._next_wg
        while True:
            next_event = self._queue[0][0] if self._queue else float("inf")
            if next_wg <= next_event and next_wg <= t:
                self.now = next_wg
                self._traffic(tick)
                if self.wg_reads == "tick":
                    self._feed_wg()
                next_wg += tick
                continue
            if next_event > t:
                break
            when, _, action = heapq.heappop(self._queue)
            self.now = when
            action()
        self._next_wg = next_wg
        self.now = t

    def clock(self, host: Host) -> float:
        """The time as ``host``'s core sees it."""
        return self.now + host.clock_offset

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def wait_for(self, predicate: Callable[[], bool], limit: float, step: float = 0.01) -> float:
        """Advance until predicate holds; returns the time it took (inf if never)."""
        start = self.now
        while self.now - start < limit:
            if predicate():
                return self.now - start
            self.run_for(step)
        return float("inf")

    def _schedule(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), action))

    def _charge(self, host: Host, seconds: float) -> None:
        self.cpu[host.name] = self.cpu.get(host.name, 0.0) + seconds

    def _timed(self, host: Host, call: Callable[_P, _T], *args: _P.args, **kw: _P.kwargs) -> _T:
        """``call(...)``, a call into ``host``'s core, its CPU charged to the host."""
        if not self.measure_cpu:
            return call(*args, **kw)
        started = time.process_time()
        try:
            return call(*args, **kw)
        finally:
            self._charge(host, time.process_time() - started)

    def _after(self, host: Host) -> None:
        """After any input: send what the core wants to send, re-arm its timer."""
        self._flush(host)
        node = host.node
        if node is None:
            return
        due = self._timed(host, node.get_timer) if self.measure_cpu else node.get_timer()
        if due is not None and self._timer_due.get(host.name) != due:
            self._timer_due[host.name] = due
            node_at_schedule = node

            def fire() -> None:
                if host.node is node_at_schedule and self._timer_due.get(host.name) == due:
                    self._timer_due.pop(host.name, None)
                    self._timed(host, node_at_schedule.handle_timer, self.clock(host))
                    self._check_spin(host)
                    self._after(host)

            self._schedule(max(due - host.clock_offset, self.now), fire)
        if self.wg_reads == "daemon":
            self._wake_wg(host)

    def _check_spin(self, host: Host) -> None:
        """A core whose deadline stays due after handle_timer would hang the run."""
        node = host.node
        due = None if node is None else self._timed(host, node.get_timer)
        if due is None or due > self.clock(host):
            self._spins.pop(host.name, None)
            return
        spins = self._spins[host.name] = self._spins.get(host.name, 0) + 1
        if spins > 1000:
            raise RuntimeError(
                f"{host.name}: get_timer() stays at {due} <= now {self.clock(host)} "
                "after handle_timer (timer spin)"
            )

    def _flush(self, host: Host) -> None:
        node = host.node
        if node is None:
            return
        started = time.process_time() if self.measure_cpu else 0.0
        happened = node.events()
        node.take_resolve_requests()
        out = node.datagrams_to_send()
        if self.measure_cpu:
            self._charge(host, time.process_time() - started)
        if self.record_events:
            self.events += [(self.now, host.name, event) for event in happened]
        for data, dest in out:
            self.sent_bytes[host.name] = self.sent_bytes.get(host.name, 0) + len(data) + 28
            if IPv4Address(dest[0]) not in self.subnet:  # (tunnelled: counted on its first hop)
                self._meter(host, len(data) + UDP_IP)
            self._transmit(host, host.admin_port, dest, data)

    def _deliver(self, target: Host, data: bytes, source: Endpoint, metered: bool = False) -> None:
        """``metered``: over the underlay (a tunnelled one is counted on its first hop)."""
        node = target.node
        if node is not None and target.up:
            if metered:
                self._meter(target, len(data) + UDP_IP)
            self.received[target.name] = self.received.get(target.name, 0) + 1
            self._timed(target, node.receive_datagram, data, source, self.clock(target))
            self._after(target)

    # --- the underlay ---------------------------------------------------

    def _source_seen_by(self, host: Host, port: int, dest_host: Host, dest: Endpoint) -> Endpoint:
        if host.nat is None or (host.lan is not None and host.lan == dest_host.lan):
            return (host.address, port)
        return host.nat.outbound((host.address, port), dest)

    def _moved(self) -> None:
        self._at_address = None

    def _places(self) -> tuple[dict[str, list[Host]], dict[str, list[Host]]]:
        """Hosts by underlay address, and by the outside address of their NAT."""
        if self._at_address is None:
            self._at_address, self._behind_nat = {}, {}
            for host in self.hosts.values():
                self._at_address.setdefault(host.address, []).append(host)
                if host.nat is not None:
                    self._behind_nat.setdefault(host.nat.public_ip, []).append(host)
        return self._at_address, self._behind_nat

    def _find(self, dest: Endpoint, sender: Host) -> Host | None:
        """The first host (in the order they were added) that ``dest`` reaches."""
        at_address, behind_nat = self._places()
        found: Host | None = None
        for host in at_address.get(dest[0], ()):
            if host.nat is None or (host.lan is not None and host.lan == sender.lan):
                found = host
                break
        for host in behind_nat.get(dest[0], ()):
            if found is not None and self._order[host.name] > self._order[found.name]:
                break
            assert host.nat is not None
            inside = host.nat.inbound(dest[1], (sender.address, 0))
            if inside is not None and inside[0] == host.address:
                return host
        return found

    def _transmit(self, host: Host, port: int, dest: Endpoint, data: bytes) -> None:
        if IPv4Address(dest[0]) in self.subnet:
            self._tunnel(host, port, dest, data)
            return
        target = self._find(dest, host)
        if target is None or frozenset((host.name, target.name)) in self.partitioned:
            return
        source = self._source_seen_by(host, port, target, dest)
        if (
            target.nat is not None
            and dest[0] == target.nat.public_ip
            and target.nat.inbound(dest[1], source) is None
        ):
            return
        if self.rng.random() < self.loss:
            return
        delay = self.latency + self._jitter()
        self._schedule(self.now + delay, lambda: self._deliver(target, data, source, metered=True))

    def _tunnel(self, host: Host, port: int, dest: Endpoint, data: bytes) -> None:
        """An admin datagram to a wg IP: it arrives if the WireGuard path works."""
        target = self._by_wg_ip.get(dest[0])
        if target is None:
            return
        self._count_first_hop(host, target.wg_ip, len(data) + 60)
        if self.path(host.name, target.name) is None:
            return
        if self.rng.random() < self.loss:
            return
        source = (str(host.wg_ip), port)
        delay = self.latency * 2 + self._jitter()
        self._schedule(self.now + delay, lambda: self._deliver(target, data, source))

    def _jitter(self) -> float:
        return self.rng.uniform(0.0, self.jitter) if self.jitter > 0 else 0.0

    # --- the WireGuard model ----------------------------------------------

    def _by_key(self, public_key: str) -> Host | None:
        host = self._by_key_index.get(public_key)
        if host is None or host.node is None or host.node.info.public_key != public_key:
            return None
        return host

    def _unindex_key(self, host: Host) -> None:
        if host.keys is not None and self._by_key_index.get(host.keys.public_b64) is host:
            del self._by_key_index[host.keys.public_b64]

    def _peer_index_of(self, host: Host) -> _PeerIndex:
        assert host.node is not None
        peers = host.node.desired_peers()
        index = self._peer_index.get(host.name)
        if index is None or index.peers is not peers:
            index = self._peer_index[host.name] = _PeerIndex(peers)
        return index

    def _peer_owning(self, host: Host, dest: IPv4Address) -> WgPeer | None:
        """The peer ``host``'s WireGuard sends ``dest`` to (and accepts it from)."""
        return self._peer_index_of(host).lookup(dest)

    def _allows(self, host: Host, public_key: str, source: IPv4Address) -> bool:
        """Does ``host`` accept packets from ``source`` over its peer ``public_key``?"""
        index = self._peer_index_of(host)
        peer = index.peers.get(public_key)
        return peer is not None and index.lookup(source) is peer

    def _route_to(self, host: Host, dest: IPv4Address) -> Route | None:
        """``host``'s desired route for ``dest`` (the first, if there were several)."""
        assert host.node is not None
        routes = host.node.desired_routes()
        cached = self._route_index.get(host.name)
        if cached is None or cached[0] is not routes:
            index: dict[IPv4Address, Route] = {}
            for route in routes:
                index.setdefault(route.dest, route)
            cached = self._route_index[host.name] = (routes, index)
        return cached[1].get(dest)

    def wg_link_up(self, a: Host, b: Host) -> bool:
        """Both have each other as peers and one of them knows where the other is."""
        if a.node is None or b.node is None:
            return False
        pa = a.node.desired_peers().get(b.node.info.public_key)
        pb = b.node.desired_peers().get(a.node.info.public_key)
        if pa is None or pb is None:
            return False
        if frozenset((a.name, b.name)) in self.partitioned:
            return False
        up = self._reaches(a, b, self._endpoint(a, b)) or self._reaches(b, a, self._endpoint(b, a))
        if up:
            # Like WireGuard, both remember where the other's packets came from.
            learned = self._learned
            pair = (a.name, b.node.info.public_key)
            if pair not in learned:
                self._touch(pair)
            learned[pair] = self._wg_source(b, a)
            pair = (b.name, a.node.info.public_key)
            if pair not in learned:
                self._touch(pair)
            learned[pair] = self._wg_source(a, b)
        return up

    def _endpoint(self, a: Host, b: Host) -> Endpoint | None:
        """a's WireGuard endpoint for b: configured, else learned from b's packets."""
        assert a.node is not None and b.node is not None
        key = b.node.info.public_key
        peer = a.node.desired_peers().get(key)
        if peer is None:
            self._learned.pop((a.name, key), None)
            return None
        if peer.endpoint is not None:
            return peer.endpoint
        return self._learned.get((a.name, key))

    def _wg_source(self, a: Host, b: Host) -> Endpoint:
        """Where WireGuard packets from a appear to come from, at b."""
        dest = (b.nat.public_ip if b.nat else b.address, b.wg_port)
        return self._source_seen_by(a, a.wg_port, b, dest)

    def _reaches(self, a: Host, b: Host, endpoint: Endpoint | None) -> bool:
        """Do a's handshakes, sent to ``endpoint``, arrive at b's WireGuard?"""
        if endpoint is None:
            return False
        if endpoint == (b.address, b.wg_port):
            return b.nat is None or (b.lan is not None and b.lan == a.lan)
        if b.nat is None or b.nat.symmetric or endpoint[0] != b.nat.public_ip:
            return False
        if endpoint != b.nat.outbound((b.address, b.wg_port), ("0.0.0.0", 0)):
            return False
        # b's NAT lets a in only if b sent to exactly where a's packets come from.
        assert a.node is not None and b.node is not None
        return self._endpoint(b, a) == self._wg_source(a, b)

    def _count_first_hop(
        self, host: Host, dest: IPv4Address, size: float, underlay: float | None = None
    ) -> None:
        """Bytes for ``dest`` leave ``host`` over the peer owning it; counted on
        both ends of that first hop (received only if the link works).
        ``underlay``: the bytes on the wire (default: one packet, ``size`` + 28)."""
        if host.node is None:
            return
        peer = self._peer_owning(host, dest)
        if peer is None:
            return
        wire_size = size + UDP_IP if underlay is None else underlay
        self._add(self._tx, (host.name, peer.public_key), size)
        self._meter(host, wire_size)
        nxt = self._by_key(peer.public_key)
        if nxt is not None and nxt.node is not None and self.wg_link_up(host, nxt):
            self._add(self._rx, (nxt.name, host.node.info.public_key), size)
            self._meter(nxt, wire_size)

    def _meter(self, host: Host, size: float) -> None:
        self.underlay[host.name] = self.underlay.get(host.name, 0) + round(size)

    def _add(self, counters: dict[tuple[str, str], int], key: tuple[str, str], size: float) -> None:
        count = counters.get(key)
        if count is None:
            count = 0
            self._touch(key)
        counters[key] = count + round(size)

    def _touch(self, pair: tuple[str, str]) -> None:
        """Per-peer state now exists for ``pair`` (host name, peer key)."""
        keys = self._state_keys.get(pair[0])
        if keys is None:
            keys = self._state_keys[pair[0]] = set()
        keys.add(pair[1])

    def _traffic(self, tick: float) -> None:
        """One tick of user flows (and, unless each core reads on its own
        schedule, persistent keepalives). A flow is also the demand both
        ends' sensors would see (lazy links)."""
        demand: dict[str, set[IPv4Address]] = {}
        for (a, b), rate in self.flows.items():
            src, dst = self.hosts[a], self.hosts[b]
            if src.up and dst.up:
                self._count_first_hop(src, dst.wg_ip, rate * tick, underlay=rate * tick)
                if rate > 0:
                    demand.setdefault(a, set()).add(dst.wg_ip)
                    demand.setdefault(b, set()).add(src.wg_ip)
        for name, destinations in demand.items():
            host = self.hosts[name]
            if host.node is not None:
                self._demand(host, host.node, destinations)
        if self.wg_reads == "tick":
            for host in self.hosts.values():
                self._keepalives(host)

    def sense(self, name: str, peers: Iterable[str]) -> None:
        """``name``'s demand sensor reads traffic with ``peers`` now (one
        reading, as when the two ends' sensors see a flow's last packet
        apart)."""
        host = self.hosts[name]
        if host.node is not None:
            self._demand(host, host.node, {self.hosts[peer].wg_ip for peer in peers})

    def _demand(self, host: Host, node: Node, destinations: set[IPv4Address]) -> None:
        now = self.clock(host)
        self._timed(host, node.set_demand, destinations, now)
        self._after(host)

    def _keepalives(self, host: Host) -> None:
        """Persistent keepalives ``host``'s WireGuard has sent by now."""
        if host.node is None:
            return
        for key, peer in host.node.desired_peers().items():
            pair = (host.name, key)
            if peer.persistent_keepalive <= 0:
                self._keepalive_at.pop(pair, None)
                continue
            due = self._keepalive_at.get(pair)
            if due is None:
                due = self._keepalive_at[pair] = self.now
                self._touch(pair)
            while self.now >= due:
                if self.wg_reads == "tick":  # one per tick (due from this tick)
                    due = self._keepalive_at[pair] = self.now + peer.persistent_keepalive
                else:  # those since the last reading
                    due = self._keepalive_at[pair] = due + peer.persistent_keepalive
                self._add(self._tx, pair, KEEPALIVE)
                self._meter(host, KEEPALIVE + UDP_IP)
                self.keepalive_bytes[host.name] = self.keepalive_bytes.get(host.name, 0) + KEEPALIVE
                other = self._by_key(key)
                if other is not None and other.node is not None and self.wg_link_up(host, other):
                    self._add(self._rx, (other.name, host.node.info.public_key), KEEPALIVE)
                    self._meter(other, KEEPALIVE + UDP_IP)

    def _feed_wg(self) -> None:
        for host in self.hosts.values():
            self._read_wg(host)

    def _read_wg(self, host: Host) -> None:
        """One reading of ``host``'s `wg show`, then the desired state applied."""
        node = host.node
        if node is None:
            return
        readings = {}
        desired = node.desired_peers()
        keys = frozenset(desired)
        if self._desired_keys.get(host.name) != keys:
            self._desired_keys[host.name] = keys
            had = self._state_keys.get(host.name, set())
            gone = had - keys
            states = (
                self._handshake_at,
                self._rx,
                self._tx,
                self._keepalive_at,
                self._learned,
                self._initiated,
            )
            for key in gone:
                # A removed peer comes back with no handshake and zero counters.
                for state in states:
                    state.pop((host.name, key), None)
            had -= gone
        for key, peer in desired.items():
            other = self._by_key(key)
            up = other is not None and self.wg_link_up(host, other)
            endpoint = peer.endpoint
            if up and endpoint is None and other is not None:
                endpoint = self._source_seen_by(other, other.wg_port, host, (host.address, 0))
            pair = (host.name, key)
            last = self._handshake_at.get(pair)
            if up and (last is None or self.now - last >= 120.0):
                self._handshake_at[pair] = self.now
                # Each end as the initiator of its own: initiation and
                # confirming keepalive out, the response in.
                self._add(self._tx, pair, 148 + KEEPALIVE)
                self._add(self._rx, pair, 92)
                self._meter(host, HANDSHAKE)
                sent = self.handshake_bytes.get(host.name, 0) + 148 + KEEPALIVE
                self.handshake_bytes[host.name] = sent
            elif not up and peer.endpoint and last is None and pair not in self._initiated:
                # WireGuard sends its first initiation once it has an endpoint,
                # whether or not it gets through (a punch: the other NAT may
                # not be open yet); retries are not counted.
                self._initiated[pair] = True
                self._touch(pair)
                self._add(self._tx, pair, 148)
                self._meter(host, 148 + UDP_IP)
            since = self._handshake_at.get(pair)
            readings[key] = WgPeerReading(
                public_key=key,
                endpoint=endpoint,
                allowed_ips=peer.allowed_ips,
                handshake_age=None if since is None else self.now - since,
                rx_bytes=self._rx.get(pair, 0),
                tx_bytes=self._tx.get(pair, 0),
            )
        now = self.now + host.clock_offset
        started = time.process_time() if self.measure_cpu else 0.0
        node.update_wg(readings, now)
        # The daemon applies the desired state right after computing it.
        version = node.state_version
        node.wg_applied(version, now)
        if self.measure_cpu:
            self._charge(host, time.process_time() - started)
        self._wg_applied[host.name] = version
        self._after(host)

    # --- reading `wg show` as the daemon does ------------------------------------

    def _read_wg_at(self, host: Host, when: float) -> None:
        """Schedule ``host``'s next reading at ``when`` (unless one is due sooner)."""
        current = self._wg_read_at.get(host.name)
        if current is not None and current <= when:
            return
        self._wg_read_at[host.name] = when
        node = host.node

        def read() -> None:
            if self._wg_read_at.get(host.name) != when or host.node is not node:
                return
            del self._wg_read_at[host.name]
            self._wg_last_read[host.name] = self.now
            self._keepalives(host)
            version = self._wg_applied.get(host.name)
            self._read_wg(host)
            if host.node is None:
                return
            if self._wg_applied.get(host.name) != version and host.node.desired_peers():
                self._read_wg_at(host, self.now + WG_TICK)  # read back what was applied
            else:
                self._read_wg_at(host, self.now + host.node.wg_poll_interval(self.clock(host)))

        self._schedule(when, read)

    def _wake_wg(self, host: Host) -> None:
        """The daemon's wake-up after an input: a changed desired state is
        applied at once (a read takes WG_TICK), and a core that wants a
        reading sooner than planned gets it."""
        node = host.node
        if node is None:
            return
        soonest = self._wg_last_read.get(host.name, -WG_TICK) + WG_TICK
        if node.state_version != self._wg_applied.get(host.name):
            self._read_wg_at(host, max(self.now, soonest))
            return
        planned = self._wg_read_at.get(host.name)
        now = self.clock(host)
        fast = self.timers.wg_poll_fast
        if (
            planned is not None
            and planned > self.now + fast
            and self.now + node.wg_poll_interval(now) < planned
        ):
            self._read_wg_at(host, max(self.now, soonest))

    def _forward(self, src: Host, dst_ip: IPv4Address, origin: IPv4Address) -> Host | None:
        """One hop of a packet from ``origin`` at ``src`` towards ``dst_ip``."""
        assert src.node is not None
        route = self._route_to(src, dst_ip)
        if route is None and dst_ip not in self.subnet:
            return None
        # No /32 route: the interface's own subnet route still sends it into
        # WireGuard, which picks the peer by AllowedIPs (a mobile's gateway).
        next_ip = None if route is None else route.via or route.dest
        peer = self._peer_owning(src, dst_ip)
        if peer is None:
            return None
        nxt = self._by_key(peer.public_key)
        if nxt is None or next_ip not in (None, nxt.wg_ip) or not self.wg_link_up(src, nxt):
            return None
        if not self._allows(nxt, src.node.info.public_key, origin):
            return None  # WireGuard drops packets whose source the peer may not send
        return nxt

    def path(self, a: str, b: str) -> list[str] | None:
        """Host names a packet from a to b crosses, or None if it is lost."""
        src, dst = self.hosts[a], self.hosts[b]
        if src.node is None or dst.node is None:
            return None
        hops, here = [a], src
        for _ in range(8):
            nxt = self._forward(here, dst.wg_ip, src.wg_ip)
            if nxt is None:
                return None
            hops.append(nxt.name)
            if nxt is dst:
                return hops
            here = nxt
        return None  # a loop

    # --- devices behind gateways ----------------------------------------------------

    def _serves(self, host: Host, address: IPv4Address) -> bool:
        """Does ``host``'s own file make it a gateway for ``address``?"""
        gateways = self.gateways if host.gateways is None else host.gateways
        return any(
            g.wg_ip == host.wg_ip and any(address in r and r != DEFAULT_ROUTE for r in g.routes)
            for g in gateways
        )

    def _wg_hop(self, here: Host, dst: IPv4Address, origin: IPv4Address) -> Host | None:
        """The peer WireGuard sends a packet for ``dst`` to (longest AllowedIPs
        match), if the link is up and that peer accepts ``origin`` from us."""
        assert here.node is not None
        best: tuple[int, str] | None = None
        for key, peer in here.node.desired_peers().items():
            for net in peer.allowed_ips:
                if dst in net and (best is None or net.prefixlen > best[0]):
                    best = (net.prefixlen, key)
        if best is None:
            return None
        nxt = self._by_key(best[1])
        if nxt is None or nxt.node is None or not self.wg_link_up(here, nxt):
            return None
        back = nxt.node.desired_peers().get(here.node.info.public_key)
        if back is None or not any(origin in n for n in back.allowed_ips):
            return None  # WireGuard drops packets whose source the peer may not send
        return nxt

    def _toward_device(self, here: Host, device: Device, origin: Host) -> Host | Device | None:
        """One hop of a packet from ``origin``'s wg IP at ``here`` to ``device``."""
        assert here.node is not None
        dst = IPv4Address(device.address)
        on_lan = here.lan == device.lan and dst in here.network
        if here is not origin and dst in here.network:
            # Forwarded: only a gateway the file names lets it out of the mesh.
            return device if on_lan and self._serves(here, dst) else None
        if here.node.is_static and here is not origin:
            relay = [n for n in here.node.desired_relay_routes() if dst in n]
            if relay:
                return self._wg_hop(here, dst, origin.wg_ip)
        if on_lan:
            return device  # our own LAN (a connected route beats ours)
        routes = [r for r in here.node.desired_subnet_routes() if dst in r.network]
        if not routes:
            return None
        return self._wg_hop(here, dst, origin.wg_ip)

    def reaches(self, a: str, device_name: str) -> list[str] | None:
        """Host names a ping from ``a`` to the device crosses there and back
        (the gateway masquerades: the answer returns through it), or None."""
        device = self.devices[device_name]
        src = self.hosts[a]
        if src.node is None:
            return None
        hops, here = [a], src
        for _ in range(8):
            nxt = self._toward_device(here, device, src)
            if nxt is None:
                return None
            if isinstance(nxt, Device):
                hops.append(device.name)
                break
            hops.append(nxt.name)
            here = nxt
        else:
            return None
        if here is src:
            return hops
        # The answer: from the gateway back to a, with the device's source address.
        origin, at = IPv4Address(device.address), here
        for _ in range(8):
            if at is src:
                return hops
            assert at.node is not None
            nxt = self._wg_hop(at, src.wg_ip, origin)
            if nxt is None:
                return None
            hops.append(nxt.name)
            at = nxt
        return None

    def gateway_used(self, a: str, device_name: str) -> str | None:
        """The host that let ``a``'s ping out to the device (None: not reached,
        or ``a`` is on the device's LAN itself)."""
        hops = self.reaches(a, device_name)
        if hops is None or len(hops) < 3:
            return None
        return hops[hops.index(device_name) - 1]

    def pings(self, a: str, b: str) -> bool:
        return self.path(a, b) is not None and self.path(b, a) is not None

    def all_pairs_ping(self, names: list[str] | None = None) -> bool:
        names = names or [n for n, h in self.hosts.items() if h.up]
        return all(self.pings(a, b) for a, b in itertools.combinations(names, 2))


# --- the seed's working example -----------------------------------------------------

NAMES = ["beta", "alpha", "charlie", "delta"]  # the working example's hosts


def working_example(
    symmetric_alpha: bool = False, seed: int = 1, timers: Timers | None = None, lazy: bool = False
) -> SimNet:
    """beta static and public; alpha behind its own NAT; charlie and delta on
    one home LAN behind a NAT router (as ns/working_example.sh); not started."""
    net = SimNet(timers or Timers(), seed=seed, lazy=lazy)
    net.add_host("beta", "198.51.100.1", "10.1.1.1", static=True)
    net.add_host("alpha", "192.168.2.2", "10.1.1.2", nat=Nat("198.51.100.4", symmetric_alpha))
    home = Nat("198.51.100.3")
    net.add_host("charlie", "192.168.1.2", "10.1.1.3", nat=home, lan="home")
    net.add_host("delta", "192.168.1.3", "10.1.1.4", nat=home, lan="home")
    return net


def direct(net: SimNet, a: str, b: str) -> bool:
    return net.path(a, b) == [a, b] and net.path(b, a) == [b, a]


def all_direct(net: SimNet) -> bool:
    return all(direct(net, a, b) for a, b in itertools.combinations(NAMES, 2))


# --- a mesh that grows: LANs of eight -------------------------------------------------

LAN_SIZE = 8
BIG_SUBNET = IPv4Network("10.1.0.0/20")  # room for 4,000 nodes


def lan_mesh(
    count: int,
    *,
    statics: int = 1,
    seed: int = 1,
    timers: Timers | None = None,
    lazy: bool = True,
    wg_reads: str = "daemon",
    flow_period: float = 0.25,
) -> SimNet:
    """``count`` nodes: ``statics`` public static nodes, the others in LANs of
    eight, each LAN behind its own endpoint-independent NAT; not started.

    Names: ``s1``, ``s2`` for the statics, ``n<k>`` for the others (wg IP
    10.1.0.0 + k, counting the statics first). By default the cores read
    `wg show` as the daemon does and flows (the demand) are seen every
    ``flow_period`` seconds, as the daemon's sensor reads them.
    """
    net = SimNet(
        timers or Timers(),
        seed=seed,
        lazy=lazy,
        subnet=BIG_SUBNET,
        wg_reads=wg_reads,
        wg_period=flow_period if wg_reads == "daemon" else None,
    )
    base = BIG_SUBNET.network_address
    for k in range(1, statics + 1):
        net.add_host(f"s{k}", f"198.51.100.{k}", str(base + k), static=True)
    for index in range(count - statics):
        k = statics + 1 + index
        lan, seat = divmod(index, LAN_SIZE)
        nat = net.hosts[f"n{k - seat}"].nat if seat else Nat(_outside(lan))
        inside = f"172.{16 + lan // 256}.{lan % 256}.{seat + 2}"
        net.add_host(f"n{k}", inside, str(base + k), nat=nat, lan=f"lan{lan}")
    return net


def _outside(lan: int) -> str:
    return f"100.64.{lan // 250}.{lan % 250 + 1}"
