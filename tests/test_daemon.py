"""The trio shell with recording fakes for WireGuard and routes, over loopback UDP.

Two daemons (a static one and a dynamic one) in one trio run talk over real
UDP sockets on 127.0.0.1; their WireGuard devices and route tables are fakes.
This checks what the namespace tests cannot see cheaply: the order of setup,
retry after a failing command, and cleanup on cancellation.
"""

from __future__ import annotations

import logging
import socket
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio

from tests.fakes import FakeRoutes, FakeWgDevice
from tests.helpers import SHARED_KEY_B64
from tests.loopback import make_settings
from tests.waits import wait_for
from wg_netmanager.daemon import Daemon
from wg_netmanager.model import Route
from wg_netmanager.proc import CommandError


def crash(daemon: Daemon, scope: trio.CancelScope) -> None:
    """Stop ``daemon`` without a bye, as if its machine lost power."""
    assert daemon.node is not None
    daemon.node.shutdown = lambda now: None  # type: ignore[method-assign]
    scope.cancel()


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
    assert SHARED_KEY_B64 not in caplog.text


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
                crash(bob, bob_nursery.cancel_scope)
            await wait_for(lambda: bob.keys.public_b64 not in alice_dev.peers, seconds=3.0)
            nursery.cancel_scope.cancel()

    trio.run(scenario)


def test_setup_failure_is_one_clear_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wg_netmanager.daemon.SETUP_RETRY_PAUSES", (0.01,))
    alice_settings, _ = make_settings(tmp_path)
    dev = FakeWgDevice()
    dev.fail_always["configure"] = CommandError(["wg", "set", "wg0"], 1, "Operation not permitted")
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


# --- faults: failing commands, a vanishing interface, a crashed static ---------


def test_transient_setup_failures_are_logged_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alice_settings, _ = make_settings(tmp_path)
    dev = FakeWgDevice()
    dev.fail["create"] = CommandError(["wireguard-go", "wg0"], 1, "resource busy")
    dev.fail["configure"] = CommandError(["wg", "set", "wg0"], 1, "Operation not permitted")
    alice = Daemon(alice_settings, device=dev, routes=FakeRoutes())

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(alice.run)
            assert dev.created and dev.listen_port == 50001 and dev.forwarding
            nursery.cancel_scope.cancel()

    trio.run(scenario)
    assert alice.startup_error is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("`wireguard-go wg0`" in w and "resource busy" in w for w in warnings)
    assert any("`wg set wg0`" in w and "Operation not permitted" in w for w in warnings)


def test_setup_gives_up_after_its_retries_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wg_netmanager.daemon.SETUP_RETRY_PAUSES", (0.01, 0.01))
    alice_settings, _ = make_settings(tmp_path)
    dev = FakeWgDevice()
    dev.fail_always["set_address"] = CommandError(["ip", "addr"], 2, "RTNETLINK answers: busy")
    alice = Daemon(alice_settings, device=dev, routes=FakeRoutes())
    trio.run(alice.run)
    assert alice.startup_error is not None
    assert "RTNETLINK answers: busy" in str(alice.startup_error)
    assert dev.call_names().count("set_address") == 3
    assert not dev.created


def test_missing_binary_is_not_retried(tmp_path: Path) -> None:
    alice_settings, _ = make_settings(tmp_path)
    dev = FakeWgDevice()
    dev.fail_always["create"] = CommandError(["wireguard-go", "wg0"], 127, "cannot start")
    alice = Daemon(alice_settings, device=dev, routes=FakeRoutes())
    trio.run(alice.run)
    assert alice.startup_error is not None
    assert dev.call_names().count("create") == 1


@pytest.mark.parametrize("existing", [False, True])
def test_interface_deleted_under_the_daemon_is_set_up_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, existing: bool
) -> None:
    from dataclasses import replace

    alice_settings, bob_settings = make_settings(tmp_path)
    bob_settings = replace(bob_settings, existing_interface=existing)
    alice_dev, bob_dev = FakeWgDevice(), FakeWgDevice()
    bob_routes = FakeRoutes()
    alice = Daemon(alice_settings, device=alice_dev, routes=FakeRoutes())
    bob = Daemon(bob_settings, device=bob_dev, routes=bob_routes)
    alice_route = Route(IPv4Address("10.1.1.1"))

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(alice.run)
            await nursery.start(bob.run)
            await wait_for(lambda: alice.keys.public_b64 in bob_dev.peers)
            await wait_for(lambda: alice_route in bob_routes.tables["wg0"])
            creates = bob_dev.call_names().count("create")
            bob_dev.delete_externally()  # `ip link del wg0` by someone else
            bob_routes.tables["wg0"] = set()  # the kernel drops its routes with it
            if existing:
                await wait_for(lambda: "waiting for it" in caplog.text)
                await trio.sleep(0.3)
                assert bob_dev.call_names().count("create") == creates  # not ours to make
                bob_dev.created = True  # the administrator creates it again
            await wait_for(lambda: alice.keys.public_b64 in bob_dev.peers)
            await wait_for(lambda: alice_route in bob_routes.tables["wg0"])
            assert bob_dev.call_names().count("create") == creates + 1
            assert bob_dev.listen_port == 50002 and bob_dev.address is not None
            assert bob_dev.private_key == bob.keys.private  # same key: peers keep theirs
            nursery.cancel_scope.cancel()

    caplog.set_level(logging.INFO)
    trio.run(scenario)
    assert "set up again" in caplog.text


def test_static_calls_back_its_nodes_after_a_crash(tmp_path: Path) -> None:
    """No bye from the crashed static, and the dynamic node pings only every
    10 s: without the peers file it would take up to 10 s to meet the new run."""
    from dataclasses import replace

    alice_settings, bob_settings = make_settings(tmp_path)
    timers = replace(bob_settings.network.timers, ping_interval=10.0, dead_after=30.0)
    network = replace(bob_settings.network, timers=timers)
    alice_settings = replace(alice_settings, network=network)
    bob_settings = replace(bob_settings, network=network)
    bob_dev = FakeWgDevice()
    bob = Daemon(bob_settings, device=bob_dev, routes=FakeRoutes())
    first = Daemon(alice_settings, device=FakeWgDevice(), routes=FakeRoutes())
    second = Daemon(alice_settings, device=FakeWgDevice(), routes=FakeRoutes())

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(bob.run)
            async with trio.open_nursery() as alice_nursery:
                await alice_nursery.start(first.run)
                await wait_for(lambda: first.keys.public_b64 in bob_dev.peers)
                await trio.sleep(2.0)  # past bob's early first ping, and the file is written
                crash(first, alice_nursery.cancel_scope)
            peers_file = tmp_path / "run" / "wg0.peers"
            assert "10.1.1.2" in peers_file.read_text()
            assert peers_file.stat().st_mode & 0o077 == 0
            async with trio.open_nursery() as alice_nursery:
                await alice_nursery.start(second.run)
                started = trio.current_time()
                await wait_for(lambda: second.keys.public_b64 in bob_dev.peers, seconds=5.0)
                assert trio.current_time() - started < 1.5
                alice_nursery.cancel_scope.cancel()
            nursery.cancel_scope.cancel()

    trio.run(scenario)
