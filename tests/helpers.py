"""Small shared pieces: the shared key, addresses, ``make_node()``, waiting.

Every test and script that needs a core builds it with :func:`make_node`, so
there is one place that knows how a ``Node`` is constructed. The addressing
scheme follows the daemon's defaults: node N has wg IP 10.1.1.N, underlay
address 198.51.100.N, WireGuard port 50000+N and admin port 50500+N.
"""

from __future__ import annotations

import base64
import os
import socket
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from random import Random
from typing import Any

import trio

from wg_netmanager import wire
from wg_netmanager.config import Settings, load_network
from wg_netmanager.core.node import Node, StaticTarget
from wg_netmanager.core.timers import Timers
from wg_netmanager.keys import KeyPair
from wg_netmanager.wire import NodeInfo

#: The one shared key of every test mesh; ``SHARED_KEY_B64`` is its
#: network.yaml form. For tests only: it is no secret.
SHARED_KEY = bytes(range(32))
SHARED_KEY_B64 = base64.b64encode(SHARED_KEY).decode()
ADMIN_KEY = wire.derive_admin_key(SHARED_KEY)
SUBNET = IPv4Network("10.1.1.0/24")
DEFAULT_TIMERS = Timers()
#: Liveness in seconds rather than tens of seconds, for protocol tests.
QUICK_TIMERS = Timers(ping_interval=1.0, dead_after=3.0)


# --- addresses and cores ------------------------------------------------------


def wg_ip(octet: int) -> IPv4Address:
    return IPv4Address(f"10.1.1.{octet}")


def underlay(octet: int) -> str:
    return f"198.51.100.{octet}"


def wg_port(ip: IPv4Address) -> int:
    return 50000 + ip.packed[3]


def admin_port(ip: IPv4Address) -> int:
    return 50500 + ip.packed[3]


def node_info(name: str, octet: int, public_key: str | None = None) -> NodeInfo:
    """Node ``octet``'s identity with the default ports (a fresh key if none given)."""
    ip = wg_ip(octet)
    key = KeyPair.generate().public_b64 if public_key is None else public_key
    return NodeInfo(ip, name, key, wg_port(ip), admin_port(ip))


def static_target(octet: int) -> StaticTarget:
    """Static node ``octet`` as network.yaml lists it, already resolved."""
    ip, address = wg_ip(octet), underlay(octet)
    return StaticTarget(ip, address, wg_port(ip), admin_port(ip), address)


def make_node(
    info: NodeInfo,
    *,
    statics: Sequence[StaticTarget] = (),
    timers: Timers = DEFAULT_TIMERS,
    now: float = 0.0,
    rng: Random | None = None,
    subnet: IPv4Network = SUBNET,
    local_addresses: Sequence[str] | None = None,
) -> Node:
    """A core keyed with :data:`SHARED_KEY`, as the daemon builds one.

    ``rng`` seeds everything random in the node (its own ``Random`` and its
    random bytes), so a seeded test repeats; without it the node uses the
    system's randomness. ``local_addresses``, if given, are set at ``now``
    (a LAN address makes dynamic pairs probe each other).
    """
    node = Node(
        info=info,
        shared_key=SHARED_KEY,
        subnet=subnet,
        statics=list(statics),
        timers=timers,
        now=now,
        rng=None if rng is None else Random(rng.random()),
        random_bytes=os.urandom if rng is None else rng.randbytes,
    )
    if local_addresses is not None:
        node.set_local_addresses(list(local_addresses), now)
    return node


# --- waiting -------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until truthy; False after ``timeout`` seconds.

    The predicate is called at least once, at most ``timeout / interval + 2``
    times.
    """
    deadline = time.monotonic() + timeout
    max_tries = int(timeout / max(interval, 0.001)) + 2
    for _ in range(max_tries):
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))
    return bool(predicate())


async def wait_for(
    predicate: Callable[[], Any], seconds: float = 5.0, interval: float = 0.01
) -> None:
    """In trio: poll ``predicate`` until truthy; ``trio.TooSlowError`` after ``seconds``."""
    with trio.fail_after(seconds):
        # Polling on purpose: the fakes and the screen have no events to wait on.
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(interval)


# --- daemons in-process, over loopback --------------------------------------------


def free_udp_ports(count: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def make_settings(tmp_path: Path) -> tuple[Settings, Settings]:
    """Settings of two daemons on 127.0.0.1 (alice static, bob dynamic), quick timers."""
    static_admin, dynamic_admin = free_udp_ports(2)
    path = tmp_path / "network.yaml"
    path.write_text(
        f"""\
network:
  sharedKey: {SHARED_KEY_B64}
  subnet: 10.1.1.0/24
peers:
  - endPoint: 127.0.0.1:50001
    adminPort: {static_admin}
    wgIp: 10.1.1.1
timers:
  pingInterval: 0.2
  deadAfter: 0.6
  reconcileInterval: 0.2
"""
    )
    network = load_network(str(path))

    def settings(ip: str, name: str, admin_port: int, wg_port: int) -> Settings:
        return Settings(
            network=network,
            interface="wg0",
            wg_ip=IPv4Address(ip),
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
        settings("10.1.1.1", "alice", static_admin, 50001),
        settings("10.1.1.2", "bob", dynamic_admin, 50002),
    )
