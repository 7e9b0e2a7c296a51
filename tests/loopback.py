"""Daemons in the test's own process, over 127.0.0.1: their settings.

The daemons get recording fakes for WireGuard and routes (tests/fakes.py);
their admin sockets are real UDP sockets on loopback.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address
from pathlib import Path

from tests.helpers import SHARED_KEY_B64
from wg_netmanager.config import Settings, load_network


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
