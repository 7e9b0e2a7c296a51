"""The trio shell with recording fakes for WireGuard and routes, over loopback UDP.

Two daemons (a static one and a dynamic one) in one trio run talk over real
UDP sockets on 127.0.0.1; their WireGuard devices and route tables are fakes.
This checks what the namespace tests cannot see cheaply: the order of setup,
retry after a failing command, and cleanup on cancellation.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio

from wg_netmanager.config import Settings, load_network
from wg_netmanager.daemon import Daemon
from wg_netmanager.fakes import FakeRoutes, FakeWgDevice
from wg_netmanager.model import Route
from wg_netmanager.proc import CommandError


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
    static_admin, dynamic_admin = free_udp_ports(2)
    path = tmp_path / "network.yaml"
    path.write_text(
        f"""\
network:
  sharedKey: 8CY3eUZz0jNqSi1bhPk9NUFyXyb2EaXGvOyPtgd8ADs=
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
        settings("10.1.1.1", "alice", static_admin, 50001),
        settings("10.1.1.2", "bob", dynamic_admin, 50002),
    )


async def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    with trio.fail_after(seconds):
        # Polling on purpose: the fakes have no events to wait on.
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


def test_two_daemons_mesh_retry_and_clean_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    alice_settings, bob_settings = make_settings(tmp_path)
    alice_dev, bob_dev = FakeWgDevice(), FakeWgDevice()
    alice_routes, bob_routes = FakeRoutes(), FakeRoutes()
    # bob's first route change fails, as if `ip` hiccuped: logged and retried.
    bob_routes.fail["apply"] = CommandError(["ip", "route", "replace"], 2, "RTNETLINK: busy")
    alice = Daemon(alice_settings, device=alice_dev, routes=alice_routes)
    bob = Daemon(bob_settings, device=bob_dev, routes=bob_routes)

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(alice.run)
            await nursery.start(bob.run)
            await wait_for(lambda: bob.keys.public_b64 in alice_dev.peers)
            await wait_for(lambda: alice.keys.public_b64 in bob_dev.peers)
            await wait_for(lambda: Route(IPv4Address("10.1.1.1")) in bob_routes.tables["wg0"])
            assert alice_dev.forwarding and not bob_dev.forwarding
            assert bob_dev.peers[alice.keys.public_b64].endpoint == ("127.0.0.1", 50001)
            nursery.cancel_scope.cancel()

    trio.run(scenario)
    assert "RTNETLINK: busy" in caplog.text and "retrying" in caplog.text
    # Cleanup: interfaces destroyed, our routes gone.
    assert not alice_dev.created and not bob_dev.created
    assert bob_routes.tables["wg0"] == set()
    assert "destroy" in alice_dev.call_names()
    # Secrets never reach the log.
    for daemon in (alice, bob):
        assert daemon.keys.private.hex() not in caplog.text
    assert "8CY3eUZz0jNqSi1bhPk9NUFyXyb2EaXGvOyPtgd8ADs=" not in caplog.text


def test_dead_peer_is_removed_from_wireguard(tmp_path: Path) -> None:
    alice_settings, bob_settings = make_settings(tmp_path)
    alice_dev = FakeWgDevice()
    alice = Daemon(alice_settings, device=alice_dev, routes=FakeRoutes())
    bob = Daemon(bob_settings, device=FakeWgDevice(), routes=FakeRoutes())

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(alice.run)
            async with trio.open_nursery() as bob_nursery:
                await bob_nursery.start(bob.run)
                await wait_for(lambda: bob.keys.public_b64 in alice_dev.peers)
                # Silence bob without a bye, as if its machine lost power.
                assert bob.node is not None
                bob.node.shutdown = lambda now: None  # type: ignore[method-assign]
                bob_nursery.cancel_scope.cancel()
            await wait_for(lambda: bob.keys.public_b64 not in alice_dev.peers, seconds=3.0)
            nursery.cancel_scope.cancel()

    trio.run(scenario)


def test_setup_failure_is_one_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    alice_settings, _ = make_settings(tmp_path)
    dev = FakeWgDevice()
    dev.fail["configure"] = CommandError(["wg", "set", "wg0"], 1, "Operation not permitted")
    alice = Daemon(alice_settings, device=dev, routes=FakeRoutes())
    trio.run(alice.run)
    assert alice.startup_error is not None
    assert "Operation not permitted" in str(alice.startup_error)
    assert "\n" not in str(alice.startup_error)
    assert not dev.created


def test_admin_port_in_use_is_reported(tmp_path: Path) -> None:
    alice_settings, _ = make_settings(tmp_path)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("0.0.0.0", alice_settings.admin_port))
    try:
        dev = FakeWgDevice()
        alice = Daemon(alice_settings, device=dev, routes=FakeRoutes())
        trio.run(alice.run)
    finally:
        blocker.close()
    assert alice.startup_error is not None
    assert f"admin port {alice_settings.admin_port}" in str(alice.startup_error)
    assert not dev.created


def test_port_hopping_moves_the_wireguard_port_when_no_static_answers(tmp_path: Path) -> None:
    from dataclasses import replace

    _, bob_settings = make_settings(tmp_path)
    timers = replace(bob_settings.network.timers, hop_after=0.5)
    network = replace(bob_settings.network, timers=timers)
    bob_settings = replace(bob_settings, network=network, hopping=True)
    dev = FakeWgDevice()
    bob = Daemon(bob_settings, device=dev, routes=FakeRoutes())  # alice never runs

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(bob.run)
            assert dev.listen_port == 50002
            await wait_for(lambda: dev.listen_port != 50002, seconds=5.0)
            assert bob.node is not None and bob.node.info.wg_port == dev.listen_port
            nursery.cancel_scope.cancel()

    trio.run(scenario)
