"""The shared key, addresses and ``make_node()``.

Every test and script that needs a core builds it with :func:`make_node`, so
there is one place that knows how a ``Node`` is constructed. The addressing
scheme follows the daemon's defaults: node N has wg IP 10.1.1.N, underlay
address 198.51.100.N, WireGuard port 50000+N and admin port 50500+N.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from random import Random

from msgspec.structs import replace

from wg_netmanager import wire
from wg_netmanager.core.node import Node
from wg_netmanager.core.sessions import StaticTarget
from wg_netmanager.core.timers import Timers
from wg_netmanager.keys import KeyPair, to_b64
from wg_netmanager.model import Gateway
from wg_netmanager.noise import public_key
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
    private_key: bytes | None = None,
    lazy: bool = False,
    gateways: Sequence[Gateway] = (),
    exit_node: IPv4Address | None = None,
    boot_number: int = 0,
) -> Node:
    """A core keyed with :data:`SHARED_KEY`, as the daemon builds one.

    ``rng`` seeds everything random in the node (its own ``Random`` and its
    random bytes), so a seeded test repeats; without it the node uses the
    system's randomness. ``private_key`` is the node's X25519 key (WireGuard
    and admin sessions); by default a new one, and ``info.public_key`` is
    replaced by its public half. ``local_addresses``, if given, are set at
    ``now`` (a LAN address makes dynamic pairs probe each other).
    ``gateways`` and ``exit_node`` are network.yaml's ``gateways:`` and this
    node's choice of exit node. ``boot_number``: the runs of ``private_key``
    before this one (a restart after a crash keeps the key and counts).
    """
    if private_key is None:
        private_key = os.urandom(32) if rng is None else rng.randbytes(32)
        info = replace(info, public_key=to_b64(public_key(private_key)))
    node = Node(
        info=info,
        private_key=private_key,
        shared_key=SHARED_KEY,
        subnet=subnet,
        statics=list(statics),
        timers=timers,
        now=now,
        rng=None if rng is None else Random(rng.random()),
        random_bytes=os.urandom if rng is None else rng.randbytes,
        lazy=lazy,
        gateways=gateways,
        exit_node=exit_node,
        boot_number=boot_number,
    )
    if local_addresses is not None:
        node.set_local_addresses(list(local_addresses), now)
    return node


def in_a_fresh_interpreter(code: str, env: Mapping[str, str] | None = None) -> str:
    """What ``code`` prints in a new Python process (nothing imported yet),
    run from the repository root (``tests`` importable) with ``env``."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=None if env is None else dict(env),
        cwd=Path(__file__).parents[1],
        timeout=60,
    )
    return result.stdout.strip()
