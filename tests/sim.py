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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from random import Random

from tests.helpers import SUBNET, make_node
from wg_netmanager.core import events as ev
from wg_netmanager.core.node import Node
from wg_netmanager.core.sessions import StaticTarget
from wg_netmanager.core.timers import Timers
from wg_netmanager.keys import KeyPair
from wg_netmanager.model import DEFAULT_ROUTE, Endpoint, Gateway, WgPeer, WgPeerReading
from wg_netmanager.wire import NodeInfo

WG_TICK = 0.02  # seconds between two readings of "wg show", by default
UDP_IP = 28  # IPv4 and UDP headers
KEEPALIVE = 32  # a WireGuard keepalive (an empty data message)
HANDSHAKE = 148 + 92 + KEEPALIVE + 3 * UDP_IP  # both ways, with the confirming keepalive


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
    up: bool = False
    # Added to the simulation time for everything this host's core sees (its
    # ``now``) and subtracted from its timer deadlines: machines whose clocks
    # differ by hours, or a clock set back between restarts.
    clock_offset: float = 0.0
    # Its own network.yaml ``gateways:`` if it differs from everyone's (None:
    # the SimNet's), and the exit node it opted in to.
    gateways: tuple[Gateway, ...] | None = None
    exit_node: IPv4Address | None = None

    @property
    def network(self) -> IPv4Network:
        """The prefix of its underlay address (its connected route)."""
        return IPv4Network(f"{self.address}/24", strict=False)


@dataclass
class Device:
    """A machine that runs no daemon (a printer, a lamp) on a host's LAN."""

    name: str
    address: str
    lan: str


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
    ) -> None:
        self.lazy = lazy  # lazy direct links (network.yaml links: lazy)
        self.rng = Random(seed)
        self.gateways = tuple(gateways)
        self.devices: dict[str, Device] = {}
        # Every event of every core, with the simulation time, while recording.
        self.record_events = False
        self.events: list[tuple[float, str, ev.Event]] = []
        self.timers = timers or Timers()
        self.latency = latency
        self.loss = loss
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
        self._learned: dict[tuple[str, str], Endpoint] = {}
        # The WireGuard model's per-peer state, by (host name, peer key).
        self._handshake_at: dict[tuple[str, str], float] = {}
        self._rx: dict[tuple[str, str], int] = {}
        self._tx: dict[tuple[str, str], int] = {}
        self._keepalive_at: dict[tuple[str, str], float] = {}
        self._desired_keys: dict[str, frozenset[str]] = {}  # per host, at the last tick
        # User traffic: (from, to) -> bytes per second, e.g. a ping running.
        self.flows: dict[tuple[str, str], float] = {}
        self.wg_period = wg_period  # see run_until
        self._next_wg = 0.0

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
        self.hosts[name] = host
        if static:
            self.statics.append((address, host.wg_ip, host.wg_port, host.admin_port))
        return host

    def add_device(self, name: str, address: str, lan: str) -> Device:
        device = Device(name, address, lan)
        self.devices[name] = device
        return device

    def start(self, name: str) -> None:
        host = self.hosts[name]
        host.keys = KeyPair.generate()
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
        host.node = make_node(
            info,
            statics=statics,
            timers=self.timers,
            now=self.clock(host),
            rng=self.rng,
            local_addresses=[host.address],
            private_key=host.keys.private,
            lazy=self.lazy,
            gateways=self.gateways if host.gateways is None else host.gateways,
            exit_node=host.exit_node,
        )
        host.node.set_local_networks([host.network], self.clock(host))
        host.up = True
        self._after(host)

    def stop(self, name: str, clean: bool = True) -> None:
        host = self.hosts[name]
        if clean and host.node is not None:
            host.node.shutdown(self.clock(host))
            self._flush(host)
        host.up = False
        host.node = None

    # --- running --------------------------------------------------------

    def run_until(self, t: float) -> None:
        """Advance to ``t``: deliver, fire timers, and read "wg show" every tick.

        The WireGuard model reads every ``WG_TICK`` seconds, counted from the
        start of each call; with ``wg_period`` set, every ``wg_period``
        seconds on one schedule across calls instead (coarser and cheaper,
        for a long run advanced in small real-time steps).
        """
        tick = self.wg_period or WG_TICK
        next_wg = self.now if self.wg_period is None else self._next_wg
        while True:
            next_event = self._queue[0][0] if self._queue else float("inf")
            if next_wg <= next_event and next_wg <= t:
                self.now = next_wg
                self._traffic(tick)
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

    def _after(self, host: Host) -> None:
        """After any input: send what the core wants to send, re-arm its timer."""
        self._flush(host)
        node = host.node
        if node is None:
            return
        due = node.get_timer()
        if due is not None and self._timer_due.get(host.name) != due:
            self._timer_due[host.name] = due
            node_at_schedule = node

            def fire() -> None:
                if host.node is node_at_schedule and self._timer_due.get(host.name) == due:
                    self._timer_due.pop(host.name, None)
                    node_at_schedule.handle_timer(self.clock(host))
                    self._check_spin(host)
                    self._after(host)

            self._schedule(max(due - host.clock_offset, self.now), fire)

    def _check_spin(self, host: Host) -> None:
        """A core whose deadline stays due after handle_timer would hang the run."""
        node = host.node
        due = None if node is None else node.get_timer()
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
        if host.node is None:
            return
        happened = host.node.events()
        if self.record_events:
            self.events += [(self.now, host.name, event) for event in happened]
        host.node.take_resolve_requests()
        for data, dest in host.node.datagrams_to_send():
            self.sent_bytes[host.name] = self.sent_bytes.get(host.name, 0) + len(data) + 28
            if IPv4Address(dest[0]) not in SUBNET:  # (tunnelled: counted on its first hop)
                self._meter(host, len(data) + UDP_IP)
            self._transmit(host, host.admin_port, dest, data)

    # --- the underlay ---------------------------------------------------

    def _source_seen_by(self, host: Host, port: int, dest_host: Host, dest: Endpoint) -> Endpoint:
        if host.nat is None or (host.lan is not None and host.lan == dest_host.lan):
            return (host.address, port)
        return host.nat.outbound((host.address, port), dest)

    def _find(self, dest: Endpoint, sender: Host) -> Host | None:
        for host in self.hosts.values():
            if host.address == dest[0] and (
                host.nat is None or (host.lan is not None and host.lan == sender.lan)
            ):
                return host
            if host.nat is not None and host.nat.public_ip == dest[0]:
                inside = host.nat.inbound(dest[1], (sender.address, 0))
                if inside is not None and inside[0] == host.address:
                    return host
        return None

    def _transmit(self, host: Host, port: int, dest: Endpoint, data: bytes) -> None:
        if IPv4Address(dest[0]) in SUBNET:
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

        def arrive() -> None:
            if target.node is not None and target.up:
                self._meter(target, len(data) + UDP_IP)
                target.node.receive_datagram(data, source, self.clock(target))
                self._after(target)

        self._schedule(self.now + self.latency, arrive)

    def _tunnel(self, host: Host, port: int, dest: Endpoint, data: bytes) -> None:
        """An admin datagram to a wg IP: it arrives if the WireGuard path works."""
        target = next((h for h in self.hosts.values() if str(h.wg_ip) == dest[0]), None)
        if target is None:
            return
        self._count_first_hop(host, target.wg_ip, len(data) + 60)
        if self.path(host.name, target.name) is None:
            return
        if self.rng.random() < self.loss:
            return

        def arrive() -> None:
            if target.node is not None and target.up:
                target.node.receive_datagram(data, (str(host.wg_ip), port), self.clock(target))
                self._after(target)

        self._schedule(self.now + self.latency * 2, arrive)

    # --- the WireGuard model ----------------------------------------------

    def _by_key(self, public_key: str) -> Host | None:
        for host in self.hosts.values():
            if host.node is not None and host.node.info.public_key == public_key:
                return host
        return None

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
            self._learned[(a.name, b.node.info.public_key)] = self._wg_source(b, a)
            self._learned[(b.name, a.node.info.public_key)] = self._wg_source(a, b)
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
        peer = peer_for(host.node, dest)
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

    @staticmethod
    def _add(counters: dict[tuple[str, str], int], key: tuple[str, str], size: float) -> None:
        counters[key] = counters.get(key, 0) + round(size)

    def _traffic(self, tick: float) -> None:
        """One tick of user flows and persistent keepalives. A flow is also the
        demand both ends' sensors would see (lazy links)."""
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
                host.node.set_demand(destinations, self.clock(host))
                self._after(host)
        for host in self.hosts.values():
            if host.node is None:
                continue
            for key, peer in host.node.desired_peers().items():
                pair = (host.name, key)
                if peer.persistent_keepalive <= 0:
                    self._keepalive_at.pop(pair, None)
                    continue
                due = self._keepalive_at.setdefault(pair, self.now)
                if self.now < due:
                    continue
                self._keepalive_at[pair] = self.now + peer.persistent_keepalive
                self._add(self._tx, pair, KEEPALIVE)
                self._meter(host, KEEPALIVE + UDP_IP)
                other = self._by_key(key)
                if other is not None and other.node is not None and self.wg_link_up(host, other):
                    self._add(self._rx, (other.name, host.node.info.public_key), KEEPALIVE)
                    self._meter(other, KEEPALIVE + UDP_IP)

    def _feed_wg(self) -> None:
        for host in self.hosts.values():
            if host.node is None:
                continue
            readings = {}
            desired = host.node.desired_peers()
            keys = frozenset(desired)
            if self._desired_keys.get(host.name) != keys:
                self._desired_keys[host.name] = keys
                states = (self._handshake_at, self._rx, self._tx, self._keepalive_at, self._learned)
                gone = {p for st in states for p in st if p[0] == host.name and p[1] not in keys}
                for pair in gone:
                    # A removed peer comes back with no handshake and zero counters.
                    for state in states:
                        state.pop(pair, None)
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
                since = self._handshake_at.get(pair)
                readings[key] = WgPeerReading(
                    public_key=key,
                    endpoint=endpoint,
                    allowed_ips=peer.allowed_ips,
                    handshake_age=None if since is None else self.now - since,
                    rx_bytes=self._rx.get(pair, 0),
                    tx_bytes=self._tx.get(pair, 0),
                )
            host.node.update_wg(readings, self.clock(host))
            # The daemon applies the desired state right after computing it.
            host.node.wg_applied(host.node.state_version, self.clock(host))
            self._after(host)

    def _forward(self, src: Host, dst_ip: IPv4Address, origin: IPv4Address) -> Host | None:
        """One hop of a packet from ``origin`` at ``src`` towards ``dst_ip``."""
        assert src.node is not None
        route = next((r for r in src.node.desired_routes() if r.dest == dst_ip), None)
        if route is None and dst_ip not in SUBNET:
            return None
        # No /32 route: the interface's own subnet route still sends it into
        # WireGuard, which picks the peer by AllowedIPs (a mobile's gateway).
        next_ip = None if route is None else route.via or route.dest
        peer = peer_for(src.node, dst_ip)
        if peer is None:
            return None
        nxt = self._by_key(peer.public_key)
        if nxt is None or next_ip not in (None, nxt.wg_ip) or not self.wg_link_up(src, nxt):
            return None
        assert nxt.node is not None
        back = nxt.node.desired_peers().get(src.node.info.public_key)
        if back is None or peer_for(nxt.node, origin) != back:
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


def peer_for(node: Node, dest: IPv4Address) -> WgPeer | None:
    """The peer WireGuard sends ``dest`` to (and accepts it from): the longest
    AllowedIPs prefix that holds it."""
    best: WgPeer | None = None
    length = -1
    for peer in node.desired_peers().values():
        for net in peer.allowed_ips:
            if net.prefixlen > length and dest in net:
                best, length = peer, net.prefixlen
    return best


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
