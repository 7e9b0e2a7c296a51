"""``Lab``: the hand-driven harness for protocol cores.

Nodes on one flat underlay (node N at 198.51.100.N, wg IP 10.1.1.N) with
instant, in-order delivery, and only when told to: a test can count round
trips, capture a datagram and replay it later, or inject a forged one. Time
moves only when the test moves it (``now``, ``run_until``), and every node's
clock can be offset: the protocol must never depend on the absolute value of
``now``. For many nodes over a lossy, NATed underlay see ``tests/sim.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from random import Random

from msgspec.structs import replace

from tests.helpers import (
    ADMIN_KEY,
    QUICK_TIMERS,
    SUBNET,
    admin_port,
    make_node,
    node_info,
    static_target,
    wg_ip,
)
from wg_netmanager import noise, wire
from wg_netmanager.core.node import Node
from wg_netmanager.core.timers import Timers
from wg_netmanager.keys import to_b64
from wg_netmanager.model import Endpoint, WgPeerReading


@dataclass
class Sent:
    sender: str
    source: Endpoint  # as the receiver sees it
    dest: Endpoint
    data: bytes
    # A TRANSPORT frame's message, read with the keys its sender used (a
    # test's privilege: nobody on the wire can); None for handshake frames.
    message: wire.Message | None = None

    @property
    def frame(self) -> wire.Frame:
        return wire.open_frame(ADMIN_KEY, self.data)


def read_message(
    sender: Node, frame: wire.Frame, receiver: Node | None = None
) -> wire.Message | None:
    """The message in ``frame`` as ``sender`` sealed it, or as ``receiver``
    would open it (the sender may have forgotten the keys at once, e.g. after
    a Bye); None: not a TRANSPORT, or no keys known."""
    if not isinstance(frame, wire.Transport):
        return None
    candidates = []
    for node, index, key in (
        (sender, "remote_index", "send"),
        (receiver, "local_index", "receive"),
    ):
        for session in node.sessions.values() if node is not None else ():
            contender = session.contender.keys if session.contender else None
            for keys in (session.keys, session.previous, contender):
                if keys is not None and getattr(keys, index) == frame.to_index:
                    candidates.append(getattr(keys, key))
    for secret in candidates:
        try:
            body = noise.decrypt(secret, frame.counter, frame.header, frame.ciphertext)
        except noise.NoiseError:
            continue
        return wire.decode_message(body)
    return None


@dataclass
class Box:
    name: str
    address: str
    wg_ip: IPv4Address
    node: Node
    clock_offset: float

    @property
    def admin(self) -> Endpoint:
        return (self.address, admin_port(self.wg_ip))


class Lab:
    """Nodes on one flat underlay with instant, in-order, on-demand delivery.

    ``statics`` maps each static node's name to its octet; ``start`` a
    dynamic one with an octet of its own.
    """

    def __init__(
        self,
        statics: dict[str, int],
        timers: Timers = QUICK_TIMERS,
        seed: int = 1,
        subnet: IPv4Network = SUBNET,
    ) -> None:
        self.static_config = {name: octet for name, octet in statics.items()}
        self.timers = timers
        self.subnet = subnet
        self.rng = Random(seed)
        self.now = 0.0
        self.boxes: dict[str, Box] = {}
        self.queue: list[Sent] = []
        self.log: list[Sent] = []

    def clock(self, box: Box) -> float:
        return self.now + box.clock_offset

    def start(
        self,
        name: str,
        octet: int | None = None,
        *,
        address_octet: int | None = None,
        clock_offset: float = 0.0,
        mobile: bool = False,
        private_key: bytes | None = None,
        boot_number: int = 0,
    ) -> Node:
        """A node (its key: ``private_key``, as a pinned static keeps it, or a
        run after a crash with ``boot_number``; or new)."""
        octet = self.static_config[name] if octet is None else octet
        address = f"198.51.100.{octet if address_octet is None else address_octet}"
        info = replace(node_info(name, octet), mobile=mobile)
        if private_key is not None:
            info = replace(info, public_key=to_b64(noise.public_key(private_key)))
        node = make_node(
            info,
            private_key=private_key,
            statics=[static_target(other) for other in self.static_config.values()],
            timers=self.timers,
            now=self.now + clock_offset,
            rng=self.rng,
            subnet=self.subnet,
            boot_number=boot_number,
        )
        self.boxes[name] = Box(name, address, wg_ip(octet), node, clock_offset)
        return node

    def crash(self, name: str) -> Box:
        return self.boxes.pop(name)

    def box_at(self, dest: Endpoint) -> Box | None:
        return next((b for b in self.boxes.values() if b.admin == dest), None)

    def collect(self) -> list[Sent]:
        out = []
        for box in self.boxes.values():
            for data, dest in box.node.datagrams_to_send():
                receiver = self.box_at(dest)
                frame = wire.open_frame(ADMIN_KEY, data)
                message = read_message(box.node, frame, receiver.node if receiver else None)
                out.append(Sent(box.name, box.admin, dest, data, message))
        self.queue += out
        self.log += out
        return out

    def inject(self, data: bytes, source: Endpoint, to: str) -> list[Sent]:
        """Hand ``data`` to a node as if it came from ``source``; returns its answers."""
        box = self.boxes[to]
        box.node.receive_datagram(data, source, self.clock(box))
        return [s for s in self.collect() if s.sender == to]

    def step(self) -> Sent:
        """Deliver the oldest queued datagram; returns it."""
        self.collect()
        sent = self.queue.pop(0)
        box = self.box_at(sent.dest)
        if box is not None:
            box.node.receive_datagram(sent.data, sent.source, self.clock(box))
        self.collect()
        return sent

    def settle(self, limit: int = 10_000) -> list[Sent]:
        delivered = []
        self.collect()
        while self.queue:
            delivered.append(self.step())
            assert len(delivered) < limit, "datagram storm"
        return delivered

    def fire_timers(self) -> None:
        for box in list(self.boxes.values()):
            due = box.node.get_timer()
            if due is not None and due <= self.clock(box):
                box.node.handle_timer(self.clock(box))
        self.settle()

    def run_until(self, t: float) -> None:
        """Advance the clock, firing timers when due and delivering everything at once."""
        self.fire_timers()
        while True:
            dues = [
                due - box.clock_offset
                for box in self.boxes.values()
                if (due := box.node.get_timer()) is not None
            ]
            upcoming = min(dues, default=math.inf)  # (no timer at all: nothing to run)
            if upcoming > t:
                break
            self.now = max(self.now, upcoming)
            self.fire_timers()
        self.now = t

    def wg_applied(self) -> None:
        """Every node's WireGuard and routes become what it asked for (a
        static lists a node once its WireGuard has it); then the table pushes
        that follow are delivered."""
        for _ in range(2):  # a table change, then what it changes on the receivers
            for box in self.boxes.values():
                node = box.node
                readings = {
                    key: WgPeerReading(key, None, peer.allowed_ips, 1.0, 0, 0)
                    for key, peer in node.desired_peers().items()
                }
                node.update_wg(readings, self.now)
                node.wg_applied(node.state_version, self.now)
            self.settle()
            self.run_until(self.now + self.timers.table_push_delay + 0.01)

    def handshake(self, a: str, b: str) -> None:
        """Let everyone's timers fire now and deliver until quiet."""
        self.fire_timers()
        assert self.boxes[b].wg_ip in self.boxes[a].node.sessions
        assert self.boxes[a].wg_ip in self.boxes[b].node.sessions
