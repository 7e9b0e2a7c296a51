"""The trio shell on fake machines, on a mock clock.

Daemons (a static one, alice, and a dynamic one, bob) run in one trio run
under ``trio.testing.MockClock(autojump_threshold=0)``; their machines are
in memory (``fake_host``: the UDP underlay, addresses, link changes, DNS,
call-back file), their WireGuard devices and route tables recording fakes.
This checks what the namespace tests cannot see cheaply: the order of setup,
retry after a failing command, cleanup on cancellation, a vanishing
interface, the link watch, a static's call-back after a crash. Seconds of
timers take no wall-clock time. The real host adapter's pure parts are at
the end.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import types
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
import trio
from msgspec.structs import replace

from tests.fake_host import (
    ALICE_IP,
    BOB_IP,
    FakeDemand,
    FakeNet,
    Machine,
    crash,
    make_settings,
    mock_clock,
)
from tests.helpers import SHARED_KEY_B64
from tests.waits import wait_for
from wg_netmanager import daemon as daemon_module
from wg_netmanager import host as host_module
from wg_netmanager import nameserver as nameserver_module
from wg_netmanager import resolved as resolved_module
from wg_netmanager.config import Settings
from wg_netmanager.forwarding import ForwardPlan
from wg_netmanager.model import Endpoint, Route
from wg_netmanager.proc import CommandError


def machines(tmp_path: Path) -> tuple[Machine, Machine]:
    """alice (static) and bob on one fake network."""
    alice_settings, bob_settings = make_settings(tmp_path)
    net = FakeNet()
    return Machine(alice_settings, net.host(ALICE_IP)), Machine(bob_settings, net.host(BOB_IP))


def with_timers(settings: Settings, **values: Any) -> Settings:
    network = replace(settings.network, timers=replace(settings.network.timers, **values))
    return replace(settings, network=network)


ALICE_ROUTE = Route(IPv4Address("10.1.1.1"))


def test_two_daemons_mesh_retry_and_clean_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    alice, bob = machines(tmp_path)
    # bob's first route change fails, as if `ip` hiccuped: logged and retried;
    # so does alice's first nftables load (while her interface is made).
    bob.routes.fail["apply"] = CommandError(["ip", "route", "replace"], 2, "RTNETLINK: busy")
    alice.forwarding.fail["prepare"] = CommandError(["nft", "-f", "-"], 1, "Error: busy")
    keys = []

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            alice_daemon, bob_daemon = await alice.daemon(), await bob.daemon()
            keys.extend([alice_daemon.keys, bob_daemon.keys])
            await nursery.start(alice_daemon.run)
            # Set up in order: interface, key and port, address; forwarding's
            # nftables meanwhile (it needs no interface), its sysctls after.
            assert alice.device.call_names()[:3] == ["create", "configure", "set_address"]
            assert alice.forwarding.call_names()[:3] == ["prepare", "prepare", "apply"]
            await nursery.start(bob_daemon.run)
            # A crashed run's kept interface: the static leaves the renewal of
            # its nodes' sessions to them (wgdev._adopt); a node renews its own.
            assert alice.device.calls[0] == ("create", (False,))
            assert bob.device.calls[0] == ("create", (True,))
            await wait_for(lambda: bob_daemon.keys.public_b64 in alice.device.peers)
            await wait_for(lambda: alice_daemon.keys.public_b64 in bob.device.peers)
            await wait_for(lambda: ALICE_ROUTE in bob.routes.tables.get("wg0", ()))
            assert alice.forwarding.plan is not None and alice.forwarding.plan.relay
            assert bob.forwarding.plan is not None and not bob.forwarding.plan.needs_table
            assert bob.device.peers[alice_daemon.keys.public_b64].endpoint == (ALICE_IP, 50001)
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    assert "RTNETLINK: busy" in caplog.text and "retrying" in caplog.text
    assert "setting up wg0: command `nft -f -` failed" in caplog.text
    # Cleanup: interfaces destroyed, our routes gone, sockets closed.
    assert not alice.device.created and not bob.device.created
    assert bob.routes.tables["wg0"] == set()
    assert "destroy" in alice.device.call_names()
    assert alice.forwarding.plan is None and "release" in alice.forwarding.call_names()
    assert not alice.host.net.sockets
    # Secrets never reach the log.
    for pair in keys:
        assert pair.private.hex() not in caplog.text
    assert SHARED_KEY_B64 not in caplog.text


def test_the_hello_goes_out_while_the_interface_is_being_set_up(tmp_path: Path) -> None:
    alice, bob = machines(tmp_path)
    # bob's interface takes a retry to come up: his session with alice does not wait for it.
    bob.device.fail["create"] = CommandError(["wireguard-go", "wg0"], 1, "resource busy")
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            alice_daemon = await alice.daemon()
            await nursery.start(alice_daemon.run)
            bob_daemon = await bob.daemon()
            nursery.start_soon(bob_daemon.run)
            await wait_for(lambda: IPv4Address("10.1.1.2") in alice_daemon.node.sessions)
            seen["bob's interface then"] = bob.device.created
            seen["bob's peers then"] = dict(bob.device.peers)
            await wait_for(lambda: alice_daemon.keys.public_b64 in bob.device.peers)
            await wait_for(lambda: ALICE_ROUTE in bob.routes.tables.get("wg0", ()))
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    assert seen == {"bob's interface then": False, "bob's peers then": {}}
    # Once up, the interface is configured before any peer goes onto it.
    names = bob.device.call_names()
    assert names.index("set_address") < names.index("apply_peers")


def test_a_failing_interface_after_the_hello_ends_the_daemon_with_a_bye(tmp_path: Path) -> None:
    alice, bob = machines(tmp_path)
    bob.device.fail_always["set_address"] = CommandError(["ip", "addr"], 2, "RTNETLINK: busy")
    errors = []

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            alice_daemon = await alice.daemon()
            await nursery.start(alice_daemon.run)
            bob_daemon = await bob.daemon()
            met = trio.Event()

            async def watch() -> None:
                await wait_for(lambda: IPv4Address("10.1.1.2") in alice_daemon.node.sessions)
                met.set()

            nursery.start_soon(watch)
            await bob_daemon.run()  # gives up after its retries
            errors.append(bob_daemon.startup_error)
            # bob said hello while trying, and bye when he gave up
            assert met.is_set()
            await wait_for(lambda: IPv4Address("10.1.1.2") not in alice_daemon.node.sessions, 0.1)
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    [error] = errors
    assert error is not None and "RTNETLINK: busy" in str(error)
    assert not bob.device.created and not bob.host.net.sockets.get((BOB_IP, 50502))


def test_dead_peer_is_removed_from_wireguard(tmp_path: Path) -> None:
    alice, bob = machines(tmp_path)

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start((await alice.daemon()).run)
            async with trio.open_nursery() as bob_nursery:
                bob_daemon = await bob.daemon()
                await bob_nursery.start(bob_daemon.run)
                await wait_for(lambda: bob_daemon.keys.public_b64 in alice.device.peers)
                crash(bob_daemon, bob_nursery.cancel_scope)
            gone = trio.current_time()
            await wait_for(lambda: bob_daemon.keys.public_b64 not in alice.device.peers)
            # deadAfter (0.6 s) of silence, then the next reconcile pass.
            assert 0.3 < trio.current_time() - gone < 1.5
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())


def test_setup_failure_is_one_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    alice, _bob = machines(tmp_path)
    alice.device.fail_always["configure"] = CommandError(
        ["wg", "set", "wg0"], 1, "Operation not permitted"
    )
    result: dict[str, Any] = {}

    async def scenario() -> None:
        daemon = await alice.daemon()
        start = trio.current_time()
        await daemon.run()
        result.update(error=daemon.startup_error, took=trio.current_time() - start)

    trio.run(scenario, clock=mock_clock())
    error = result["error"]
    assert error is not None
    assert "Operation not permitted" in str(error)
    assert "\n" not in str(error)
    assert not alice.device.created
    # Every pause of the backoff (about 4 s in all), then it gives up.
    assert alice.device.call_names().count("configure") == len(daemon_module.SETUP_RETRY_PAUSES) + 1
    assert result["took"] == pytest.approx(sum(daemon_module.SETUP_RETRY_PAUSES))


def test_admin_port_in_use_is_reported(tmp_path: Path) -> None:
    alice, _bob = machines(tmp_path)
    errors = []

    async def scenario() -> None:
        blocker = await alice.host.open_datagram_socket(alice.settings.admin_port)
        daemon = await alice.daemon()
        await daemon.run()
        blocker.close()
        errors.append(daemon.startup_error)

    trio.run(scenario, clock=mock_clock())
    [error] = errors
    assert error is not None
    assert f"admin port {alice.settings.admin_port}" in str(error)
    assert os.strerror(errno.EADDRINUSE) in str(error)
    assert not alice.device.created


def test_port_hopping_moves_the_wireguard_port_when_no_static_answers(tmp_path: Path) -> None:
    _alice, bob = machines(tmp_path)  # alice never runs
    bob.settings = replace(with_timers(bob.settings, hop_after=0.5), hopping=True)

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            daemon = await bob.daemon()
            await nursery.start(daemon.run)
            assert bob.device.listen_port == 50002
            await wait_for(lambda: bob.device.listen_port != 50002)
            assert daemon.node.info.wg_port == bob.device.listen_port
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())


# --- faults: failing commands, a vanishing interface, a crashed static ---------


def test_transient_setup_failures_are_logged_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alice, _bob = machines(tmp_path)
    dev = alice.device
    dev.fail["create"] = CommandError(["wireguard-go", "wg0"], 1, "resource busy")
    dev.fail["configure"] = CommandError(["wg", "set", "wg0"], 1, "Operation not permitted")
    errors = []

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            daemon = await alice.daemon()
            await nursery.start(daemon.run)
            assert dev.created and dev.listen_port == 50001
            assert alice.forwarding.plan is not None and alice.forwarding.plan.relay
            errors.append(daemon.startup_error)
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    assert errors == [None]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("`wireguard-go wg0`" in w and "resource busy" in w for w in warnings)
    assert any("`wg set wg0`" in w and "Operation not permitted" in w for w in warnings)


def test_setup_gives_up_after_its_retries_with_one_line(tmp_path: Path) -> None:
    alice, _bob = machines(tmp_path)
    dev = alice.device
    dev.fail_always["set_address"] = CommandError(["ip", "addr"], 2, "RTNETLINK answers: busy")
    errors = []

    async def scenario() -> None:
        daemon = await alice.daemon()
        await daemon.run()
        errors.append(daemon.startup_error)

    trio.run(scenario, clock=mock_clock())
    [error] = errors
    assert error is not None
    assert "RTNETLINK answers: busy" in str(error) and "\n" not in str(error)
    assert dev.call_names().count("set_address") == len(daemon_module.SETUP_RETRY_PAUSES) + 1
    assert not dev.created


def test_missing_binary_is_not_retried(tmp_path: Path) -> None:
    alice, _bob = machines(tmp_path)
    alice.device.fail_always["create"] = CommandError(["wireguard-go", "wg0"], 127, "cannot start")
    errors = []

    async def scenario() -> None:
        daemon = await alice.daemon()
        await daemon.run()
        errors.append(daemon.startup_error)

    trio.run(scenario, clock=mock_clock())
    assert errors[0] is not None
    assert alice.device.call_names().count("create") == 1


@pytest.mark.parametrize("existing", [False, True])
def test_interface_deleted_under_the_daemon_is_set_up_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, existing: bool
) -> None:
    alice, bob = machines(tmp_path)
    bob.settings = replace(bob.settings, existing_interface=existing)

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            alice_daemon = await alice.daemon()
            await nursery.start(alice_daemon.run)
            bob_daemon = await bob.daemon()
            await nursery.start(bob_daemon.run)
            await wait_for(lambda: alice_daemon.keys.public_b64 in bob.device.peers)
            await wait_for(lambda: ALICE_ROUTE in bob.routes.tables.get("wg0", ()))
            creates = bob.device.call_names().count("create")
            bob.device.delete_externally()  # `ip link del wg0` by someone else
            bob.routes.tables["wg0"] = set()  # the kernel drops its routes with it
            if existing:
                await wait_for(lambda: "waiting for it" in caplog.text)
                await trio.sleep(3.0)
                assert bob.device.call_names().count("create") == creates  # not ours to make
                bob.device.created = True  # the administrator creates it again
            await wait_for(lambda: alice_daemon.keys.public_b64 in bob.device.peers)
            await wait_for(lambda: ALICE_ROUTE in bob.routes.tables.get("wg0", ()))
            assert bob.device.call_names().count("create") == creates + 1
            assert bob.device.listen_port == 50002 and bob.device.address is not None
            assert bob.device.private_key == bob_daemon.keys.private  # peers keep theirs
            nursery.cancel_scope.cancel()

    caplog.set_level(logging.INFO)
    trio.run(scenario, clock=mock_clock())
    assert "set up again" in caplog.text


def test_systemd_resolved_is_pointed_again_at_an_interface_set_up_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """resolved forgets a link's DNS settings with the link: after `ip link
    del` the daemon runs `resolvectl dns`/`domain` again, and reverts once at exit."""
    alice, bob = machines(tmp_path)
    calls: list[list[str]] = []

    async def resolvectl(argv: list[str], **_: Any) -> str:
        calls.append(list(argv))
        return ""

    monkeypatch.setattr(resolved_module, "run", resolvectl)
    monkeypatch.setattr(resolved_module, "resolved_runs", lambda: True)

    async def serve(*_: object) -> None:
        await trio.sleep_forever()

    monkeypatch.setattr(nameserver_module, "serve", serve)
    point = [
        ["resolvectl", "dns", "wg0", str(bob.settings.wg_ip)],
        ["resolvectl", "domain", "wg0", "~mesh"],
    ]

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            alice_daemon = await alice.daemon()
            await nursery.start(alice_daemon.run)
            bob_daemon = await bob.daemon()
            bob_daemon.dns_port = daemon_module.DNS_PORT
            await nursery.start(bob_daemon.run)
            await wait_for(lambda: calls == point)
            await wait_for(lambda: alice_daemon.keys.public_b64 in bob.device.peers)
            bob.device.delete_externally()
            await wait_for(lambda: len(calls) == 4)
            assert calls == point + point
            await wait_for(lambda: alice_daemon.keys.public_b64 in bob.device.peers)
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    assert calls == [*point, *point, ["resolvectl", "revert", "wg0"]]


def test_the_link_watch_wakes_the_reconciler_and_the_address_reader(tmp_path: Path) -> None:
    """A deleted interface is noticed at once, not at the next `wg show`; a new
    local address is announced and WireGuard rebound at once, not at the next
    periodic read (30 s while the watch runs)."""
    alice, bob = machines(tmp_path)
    bob.settings = with_timers(bob.settings, reconcile_interval=60.0, wg_poll_slow=60.0)

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            alice_daemon = await alice.daemon()
            await nursery.start(alice_daemon.run)
            daemon = await bob.daemon()
            await nursery.start(daemon.run)
            await wait_for(lambda: bob.host.watching)
            await wait_for(lambda: ALICE_ROUTE in bob.routes.tables.get("wg0", ()))
            # A handshake: nothing is awaited any more, `wg show` is read only every 60 s.
            bob.device.set_handshake(alice_daemon.keys.public_b64, 1.0)
            await trio.sleep(1.0)
            # An address change: read again within the burst pause, announced, rebound.
            reads = bob.host.address_reads
            bob.host.addresses = [BOB_IP, "192.168.7.2"]
            bob.host.link_changed()
            start = trio.current_time()
            await wait_for(lambda: "rebind" in bob.device.call_names())
            assert trio.current_time() - start < 0.1
            assert bob.host.address_reads == reads + 1
            assert ("192.168.7.2", 50502) in daemon.node.info.local_endpoints
            # A failing read keeps what we had (logged, retried later).
            bob.host.fail_addresses = 1
            bob.host.link_changed()
            await wait_for(lambda: bob.host.fail_addresses == 0)
            await trio.sleep(0.1)
            assert ("192.168.7.2", 50502) in daemon.node.info.local_endpoints
            # Another link going away means nothing to the reconciler; ours does.
            bob.host.link_changed("eth7")
            bob.device.delete_externally()
            bob.routes.tables["wg0"] = set()
            await trio.sleep(1.0)
            assert not bob.device.created
            bob.host.link_changed("wg0")
            start = trio.current_time()
            await wait_for(
                lambda: ALICE_ROUTE in bob.routes.tables.get("wg0", ()) and bob.device.peers
            )
            assert trio.current_time() - start < 0.5
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())


def test_a_deleted_interface_is_set_up_again_even_while_its_daemon_still_answers(
    tmp_path: Path,
) -> None:
    """wireguard-go keeps answering on its socket for a moment after its
    interface is gone: the link watch's word is checked with the kernel, not
    with a reading that still succeeds."""
    alice, bob = machines(tmp_path)
    bob.settings = with_timers(bob.settings, reconcile_interval=60.0, wg_poll_slow=60.0)

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            alice_daemon = await alice.daemon()
            await nursery.start(alice_daemon.run)
            await nursery.start((await bob.daemon()).run)
            await wait_for(lambda: bob.host.watching)
            await wait_for(lambda: ALICE_ROUTE in bob.routes.tables.get("wg0", ()))
            bob.device.set_handshake(alice_daemon.keys.public_b64, 1.0)
            await trio.sleep(1.0)  # nothing awaited: `wg show` only every 60 s
            lingering = dict(bob.device.peers)
            real_read = bob.device.read_peers

            async def read_peers() -> dict[str, Any]:
                if bob.device.created:
                    return await real_read()
                await trio.lowlevel.checkpoint()
                return dict(lingering)  # the old daemon, still answering

            bob.device.read_peers = read_peers  # type: ignore[method-assign]
            creates = bob.device.call_names().count("create")
            bob.device.delete_externally()
            bob.routes.tables["wg0"] = set()
            bob.host.link_changed("wg0")
            start = trio.current_time()
            await wait_for(lambda: bob.device.call_names().count("create") > creates)
            assert trio.current_time() - start < 0.1
            await wait_for(lambda: ALICE_ROUTE in bob.routes.tables.get("wg0", ()))
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())


def test_a_link_watch_that_cannot_run_is_retried_with_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _alice, bob = machines(tmp_path)
    bob.host.watch_error = FileNotFoundError(errno.ENOENT, "No such file or directory", "ip")

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start((await bob.daemon()).run)
            await trio.sleep(10.0)
            assert not bob.host.watching  # and the daemon still runs
            bob.host.watch_error = None
            await wait_for(lambda: bob.host.watching, seconds=20.0)
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    assert "cannot watch address changes" in caplog.text


def test_lazy_links_hear_the_sensor_and_survive_its_failures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _alice, bob = machines(tmp_path)
    bob.settings = replace(bob.settings, network=replace(bob.settings.network, links="lazy"))
    talked = IPv4Address("10.1.1.7")
    sensor = FakeDemand(seen={talked, IPv4Address(BOB_IP), IPv4Address("192.0.2.9")}, failures=2)
    wanted: list[set[IPv4Address]] = []

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            daemon = await bob.daemon(demand=sensor)
            assert daemon.node.pairs.lazy
            await nursery.start(daemon.run)
            await wait_for(lambda: sensor.installs == 1, seconds=10.0)
            await trio.sleep(daemon_module.DEMAND_INTERVAL * 2)
            wanted.append(set(daemon.node.pairs._wanted))
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    # Only other mesh addresses are demand: not bob himself, not the underlay.
    assert wanted == [{talked}]
    assert sensor.removed  # the table goes with the daemon
    failures = [r for r in caplog.records if "lazy links see no traffic" in r.getMessage()]
    assert len(failures) == 2 and "nft: not found" in failures[0].getMessage()


def test_static_calls_back_its_nodes_after_a_crash(tmp_path: Path) -> None:
    """No bye from the crashed static, and the dynamic node pings only every
    10 s: without the peers file it would take up to 10 s to meet the new run."""
    alice, bob = machines(tmp_path)
    alice.settings = with_timers(alice.settings, ping_interval=10.0, dead_after=30.0)
    bob.settings = with_timers(bob.settings, ping_interval=10.0, dead_after=30.0)
    peers_file = str(tmp_path / "run" / "wg0.peers")

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start((await bob.daemon()).run)
            async with trio.open_nursery() as alice_nursery:
                first = await alice.daemon()
                await alice_nursery.start(first.run)
                await wait_for(lambda: first.keys.public_b64 in bob.device.peers)
                await trio.sleep(2.0)  # past bob's early first ping, and the file is written
                crash(first, alice_nursery.cancel_scope)
            assert alice.host.files[peers_file] == {IPv4Address("10.1.1.2"): (BOB_IP, 50502)}
            async with trio.open_nursery() as alice_nursery:
                second = await alice.daemon()
                await alice_nursery.start(second.run)
                started = trio.current_time()
                await wait_for(lambda: second.keys.public_b64 in bob.device.peers)
                assert trio.current_time() - started < 1.5
                alice_nursery.cancel_scope.cancel()
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())


def test_a_static_known_by_name_is_looked_up_again_when_it_is_lost(tmp_path: Path) -> None:
    """Dynamic DNS: the static's machine moves to another address (and its
    name with it); the lost session makes bob ask the resolver at once."""
    alice_settings, bob_settings = make_settings(tmp_path, static_host="vps.example.org")
    net = FakeNet()
    bob = Machine(bob_settings, net.host(BOB_IP))
    bob.host.names["vps.example.org"] = ALICE_IP
    moved = "192.0.2.9"

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start((await bob.daemon()).run)
            async with trio.open_nursery() as alice_nursery:
                first = await Machine(alice_settings, net.host(ALICE_IP)).daemon()
                await alice_nursery.start(first.run)
                await wait_for(lambda: first.keys.public_b64 in bob.device.peers)
                crash(first, alice_nursery.cancel_scope)
            bob.host.names["vps.example.org"] = moved
            lookups = len(bob.host.lookups)
            second = await Machine(alice_settings, net.host(moved)).daemon()
            await nursery.start(second.run)
            started = trio.current_time()
            await wait_for(lambda: second.keys.public_b64 in bob.device.peers)
            # deadAfter (0.6 s) and a lookup, not resolveInterval (60 s)
            assert trio.current_time() - started < 2.0
            assert len(bob.host.lookups) == lookups + 1
            assert bob.device.peers[second.keys.public_b64].endpoint == (moved, 50001)
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())


def test_a_mobile_node_is_quiet_once_it_has_its_static(tmp_path: Path) -> None:
    """No pings, no name lookups: after meeting alice, bob (mobile) sends
    nothing on the admin port while WireGuard shows the link alive."""
    alice_settings, bob_settings = make_settings(tmp_path, static_host="vps.example.org")
    bob_settings = replace(bob_settings, mobile=True)
    net = FakeNet()
    alice = Machine(alice_settings, net.host(ALICE_IP))
    bob = Machine(bob_settings, net.host(BOB_IP))
    bob.host.names["vps.example.org"] = ALICE_IP
    sent: dict[str, int] = {}
    real_send = net.send

    def counting_send(data: bytes, source: Endpoint, destination: Endpoint) -> None:
        sent[source[0]] = sent.get(source[0], 0) + 1
        real_send(data, source, destination)

    net.send = counting_send  # type: ignore[method-assign]
    result: dict[str, Any] = {}

    async def handshakes(keys: tuple[str, str]) -> None:
        """WireGuard as it works: a handshake every two minutes (and at once)."""
        while True:
            alice.device.set_handshake(keys[1], 0.0)
            bob.device.set_handshake(keys[0], 0.0)
            await trio.sleep(120.0)

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            alice_daemon, bob_daemon = await alice.daemon(), await bob.daemon()
            await nursery.start(alice_daemon.run)
            await nursery.start(bob_daemon.run)
            keys = (alice_daemon.keys.public_b64, bob_daemon.keys.public_b64)
            await wait_for(lambda: keys[0] in bob.device.peers and keys[1] in alice.device.peers)
            nursery.start_soon(handshakes, keys)
            await trio.sleep(5.0)
            before, lookups = sent.get(BOB_IP, 0), len(bob.host.lookups)
            await trio.sleep(600.0)
            result.update(
                sent=sent.get(BOB_IP, 0) - before,
                lookups=len(bob.host.lookups) - lookups,
                peer=bob.device.peers[keys[0]],
                listed=keys[1] in alice.device.peers,
            )
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    assert result["sent"] == 0 and result["lookups"] == 0
    assert result["listed"]  # alice kept bob: his WireGuard shows signs of life
    peer = result["peer"]
    assert peer.persistent_keepalive == bob_settings.network.timers.mobile_keepalive
    assert IPv4Network("10.1.1.0/24") in peer.allowed_ips  # mobile.py rule 4


def test_a_mobile_node_runs_the_traffic_sensor_whatever_the_link_mode(tmp_path: Path) -> None:
    _alice, bob = make_settings(tmp_path)
    assert bob.network.links == "eager"
    assert daemon_module._demand_sensor(bob) is None
    assert daemon_module._demand_sensor(replace(bob, mobile=True)) is not None


# --- the real host adapter: its pure parts ------------------------------------------


def test_peers_file_is_private_and_only_a_recent_one_counts(tmp_path: Path) -> None:
    path = str(tmp_path / "run" / "wg0.peers")
    endpoints = {IPv4Address("10.1.1.2"): ("198.51.100.2", 50502)}
    host_module.write_peers_file(path, endpoints)
    assert os.stat(path).st_mode & 0o077 == 0
    assert os.stat(os.path.dirname(path)).st_mode & 0o077 == 0
    assert json.loads(Path(path).read_text()) == {"10.1.1.2": ["198.51.100.2", 50502]}
    assert host_module.SystemHost().read_peers_file(path) == endpoints
    old = time.time() - host_module.PEERS_FILE_MAX_AGE - 1
    os.utime(path, (old, old))
    assert host_module.read_peers_file(path) == {}  # from a run long ago
    Path(path).write_text('{"10.1.1.2": ["not an address", 1]}')
    assert host_module.read_peers_file(path) == {}
    assert host_module.read_peers_file(str(tmp_path / "missing")) == {}


def test_ip_monitor_lines_that_mean_a_link_was_deleted() -> None:
    deleted = host_module.deleted_link
    assert (
        deleted("Deleted 7: wg0: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 1420 qdisc noqueue") == "wg0"
    )
    assert deleted("Deleted 7: wg0    inet 10.1.1.2/24 scope global wg0") is None  # an address
    assert deleted("7: wg0: <POINTOPOINT,NOARP> mtu 1420 qdisc noop state DOWN") is None
    assert deleted("3: eth0    inet 192.168.1.5/24 brd 192.168.1.255 scope global eth0") is None
    assert deleted("") is None


def test_local_addresses_skip_our_interface_and_loopback() -> None:
    text = (
        "1: lo    inet 127.0.0.1/8 scope host lo\n"
        "2: eth0    inet 192.168.1.5/24 brd 192.168.1.255 scope global eth0\n"
        "3: veth0@if4    inet 10.9.0.2/24 scope global veth0\n"
        "7: wg0    inet 10.1.1.2/24 scope global wg0\n"
    )
    assert host_module.parse_local_addresses(text, "wg0") == ["10.9.0.2", "192.168.1.5"]


def test_an_admin_port_bound_before_the_event_loop_keeps_what_arrived_meanwhile() -> None:
    early = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    early.bind(("127.0.0.1", 0))
    port = early.getsockname()[1]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.sendto(b"hello before the loop", ("127.0.0.1", port))

    async def main() -> tuple[bytes, int]:
        host = host_module.SystemHost(admin_socket=early)
        sock = await host.open_datagram_socket(port)
        with trio.fail_after(5):
            data, _addr = await sock.recvfrom(100)
        # a second socket on another port is bound as usual
        other = await host.open_datagram_socket(0)
        other_port = other.getsockname()[1]  # type: ignore[attr-defined]
        sock.close()
        other.close()
        return data, other_port

    with sender:
        data, other_port = trio.run(main)
    assert data == b"hello before the loop"
    assert other_port not in (0, port)


def test_the_web_stack_and_the_dns_server_wait_until_start_up_has_settled(tmp_path: Path) -> None:
    """Their imports (a third of a second of CPU, holding the GIL) must not
    compete with the first handshakes: they wait until no WireGuard
    handshake is awaited, or SETTLE_MAX."""
    alice, bob = machines(tmp_path)
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            alice_daemon = await alice.daemon()
            await nursery.start(alice_daemon.run)
            bob_daemon = await bob.daemon()
            await nursery.start(bob_daemon.run)
            await wait_for(lambda: alice_daemon.keys.public_b64 in bob.device.peers)
            start = trio.current_time()
            await bob_daemon.wait_settled()  # alice's handshake never shows: the bound
            seen["unsettled wait"] = trio.current_time() - start
            bob.device.set_handshake(alice_daemon.keys.public_b64, 0.0)
            start = trio.current_time()
            await wait_for(lambda: bob_daemon.timeline.ms("settled") is not None)
            seen["settled after"] = trio.current_time() - start
            start = trio.current_time()
            await bob_daemon.wait_settled()
            seen["settled wait"] = trio.current_time() - start
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    assert seen["unsettled wait"] == pytest.approx(daemon_module.SETTLE_MAX)
    assert seen["settled after"] < 1.0  # the next fast `wg show` reading
    assert seen["settled wait"] == 0


def test_a_static_alone_settles_once_its_start_has_been_quiet_for_settle_quiet(
    tmp_path: Path,
) -> None:
    """Not at once (its nodes start with it, and its imports would take their
    CPU), and not at its next slow `wg show` reading either: the daemon looks
    again when the quiet is over."""
    alice, _bob = machines(tmp_path)
    seen: dict[str, float] = {}

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            alice_daemon = await alice.daemon()
            start = trio.current_time()
            await nursery.start(alice_daemon.run)
            await alice_daemon.wait_settled()
            seen["settled after"] = trio.current_time() - start
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    quiet = alice.settings.network.timers.settle_quiet
    assert quiet <= seen["settled after"] < quiet + 0.1


def test_the_interface_is_set_up_while_the_addresses_are_read_and_no_hello_goes_without_them(
    tmp_path: Path,
) -> None:
    """At a start, ``ip addr show`` and the interface's set-up run at once
    (neither waits for the other's processes); the hellos wait for the
    addresses, which they carry (LAN discovery)."""
    alice, bob = machines(tmp_path)
    bob.host.addresses = ["192.168.5.9"]
    bob.host.address_gate = gate = trio.Event()  # a slow `ip addr show`
    bob_ip = IPv4Address("10.1.1.2")
    seen: list[tuple[object, ...]] = []

    async def scenario() -> None:
        with trio.fail_after(30):  # (an interface set up after the read would wait for ever)
            async with trio.open_nursery() as nursery:
                await steps(nursery)

    async def steps(nursery: trio.Nursery) -> None:
        alice_daemon, bob_daemon = await alice.daemon(), await bob.daemon()
        await nursery.start(alice_daemon.run)
        nursery.start_soon(bob_daemon.run)
        await wait_for(lambda: bob.device.address is not None)  # up meanwhile
        await trio.sleep(1.0)  # (a hello would have arrived by now)
        seen.append((bob_daemon.node.info.local_endpoints, bob_ip in alice_daemon.node.sessions))
        gate.set()
        await wait_for(lambda: bob_ip in alice_daemon.node.sessions)
        seen.append((alice_daemon.node.sessions[bob_ip].info.local_endpoints,))
        nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    assert seen == [((), False), ((("192.168.5.9", 50502),),)]


def test_a_static_sets_its_first_peers_while_its_forwarding_is_set_up(tmp_path: Path) -> None:
    """A static's forwarding (its nftables table: tens of ms of `nft` on a
    busy box) does not hold up the peers every node waits for: they are set
    once the interface exists; only the forwarding's own routes wait."""
    alice, bob = machines(tmp_path)
    gate = trio.Event()
    prepare = alice.forwarding.prepare

    async def slow_prepare(plan: ForwardPlan) -> None:
        await gate.wait()  # alice's `nft -f -`
        await prepare(plan)

    alice.forwarding.prepare = slow_prepare  # type: ignore[method-assign]
    seen: list[object] = []

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            alice_daemon, bob_daemon = await alice.daemon(), await bob.daemon()
            nursery.start_soon(alice_daemon.run)
            await nursery.start(bob_daemon.run)
            alice_key, bob_key = alice_daemon.keys.public_b64, bob_daemon.keys.public_b64
            with trio.move_on_after(5.0):
                await wait_for(lambda: alice_key in bob.device.peers)
            # bob set alice's peer (she listed him): her forwarding still waits
            seen.append((bob_key in alice.device.peers, alice_key in bob.device.peers))
            seen.append((alice.forwarding.plan, alice.forwarding.call_names().count("set_routes")))
            gate.set()
            await wait_for(lambda: "set_routes" in alice.forwarding.call_names())
            seen.append(alice.forwarding.plan is not None)
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    assert seen == [(True, True), (None, 0), True]


def test_a_static_lists_a_new_node_before_its_route_is_in(tmp_path: Path) -> None:
    """The static's reading that shows a new node's peer lists the node in
    its table, and the node's first peers wait for that table: the static
    reads back right after setting the peer, not after the route's `ip`
    process (3-25 ms on a busy machine)."""
    alice, bob = machines(tmp_path)
    gate = trio.Event()
    apply = alice.routes.apply

    async def slow_apply(ifname: str, desired: set[Route], actual: set[Route]) -> None:
        await gate.wait()  # alice's route to bob: a slow `ip`
        await apply(ifname, desired, actual)

    alice.routes.apply = slow_apply  # type: ignore[method-assign]
    seen: list[bool] = []

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            alice_daemon, bob_daemon = await alice.daemon(), await bob.daemon()
            await nursery.start(alice_daemon.run)
            await nursery.start(bob_daemon.run)
            alice_key = alice_daemon.keys.public_b64
            with trio.move_on_after(5.0):
                await wait_for(lambda: alice_key in bob.device.peers)
            seen.append(alice_key in bob.device.peers)  # bob listed: he set alice's peer
            seen.append(not alice.routes.tables.get("wg0"))  # alice's route still waits
            gate.set()
            await wait_for(lambda: bool(alice.routes.tables.get("wg0")))
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    assert seen == [True, True]


def test_routes_are_read_back_on_a_full_pass_and_on_an_interface_we_did_not_make(
    tmp_path: Path,
) -> None:
    """A change applies the difference from what was applied last: no `ip
    route show` each time. The full pass (every reconcile_interval) reads the
    kernel, so a route someone removed comes back. A link this run made has
    no routes, so even the first full pass skips the read (one process less
    before the first peers at a start); a kept link is read."""
    _, bob = machines(tmp_path)
    via = Route(IPv4Address("10.1.1.3"), IPv4Address("10.1.1.1"))

    async def scenario() -> list[tuple[int, set[Route]]]:
        daemon = await bob.daemon()
        steps = []

        async def apply(desired: set[Route], *, read: bool) -> None:
            await daemon._apply_routes("wg0", desired, read=read)
            steps.append((bob.routes.call_names().count("read"), set(bob.routes.tables["wg0"])))

        bob.device.kept = True  # a crashed run's link: its routes unknown
        await daemon._bring_up()
        await apply({ALICE_ROUTE}, read=False)  # nothing known yet: read
        await apply({ALICE_ROUTE, via}, read=False)  # a change: what was applied is known
        bob.routes.tables["wg0"].discard(via)
        await apply({ALICE_ROUTE, via}, read=True)  # a full pass, after someone removed one
        bob.device.kept = False
        bob.routes.tables["wg0"].clear()  # deleting a link takes its routes along
        await daemon._bring_up()  # a new link
        await apply({ALICE_ROUTE}, read=True)  # the first full pass: known empty
        bob.routes.tables["wg0"].discard(ALICE_ROUTE)
        await apply({ALICE_ROUTE}, read=True)  # the next full pass reads again
        return steps

    assert trio.run(scenario, clock=mock_clock()) == [
        (1, {ALICE_ROUTE}),
        (1, {ALICE_ROUTE, via}),
        (2, {ALICE_ROUTE, via}),
        (2, {ALICE_ROUTE}),
        (3, {ALICE_ROUTE}),
    ]


def test_a_stop_does_not_wait_for_the_web_stacks_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice_settings, _ = make_settings(tmp_path)
    alice = Machine(replace(alice_settings, api=("127.0.0.1", 0)), FakeNet().host(ALICE_IP))
    importing = threading.Event()
    release = threading.Event()

    def slow_import(name: str) -> None:  # an import on a busy machine
        importing.set()
        release.wait(10)

    monkeypatch.setattr(
        daemon_module, "importlib", types.SimpleNamespace(import_module=slow_import)
    )
    # Not loaded yet, as at a real start (another test may have imported it).
    monkeypatch.delitem(sys.modules, "hypercorn.trio.run", raising=False)

    async def scenario() -> float:
        async with trio.open_nursery() as nursery:
            daemon = await alice.daemon()
            await nursery.start(daemon.run)
            assert await trio.to_thread.run_sync(importing.wait, 10)
            begin = time.monotonic()
            nursery.cancel_scope.cancel()
        return time.monotonic() - begin

    try:
        assert trio.run(scenario) < 2.0
    finally:
        release.set()


def test_a_signal_before_the_daemon_listens_is_acted_on_once_it_does() -> None:
    """A SIGTERM between the start of trio's run and ``serve``'s signal
    receiver (a quick restart caught one) waits for the receiver: raised from
    a handler inside trio's run loop, it broke the loop (TrioInternalError,
    exit 1); by default it would kill the daemon with its interface left."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}

    async def listen() -> list[int]:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
            daemon_module.release_held_signals()
            got = []
            with trio.move_on_after(1.0):
                async for signum in signals:
                    got.append(signum)
            return got

    try:
        previous = daemon_module.hold_signals()
        os.kill(os.getpid(), signal.SIGHUP)  # during start-up: held, nothing happens
        os.kill(os.getpid(), signal.SIGTERM)
        assert trio.run(listen) == [signal.SIGHUP, signal.SIGTERM]
        daemon_module.restore_signals(previous)  # as main() does after its run
        assert {s: signal.getsignal(s) for s in before} == before
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
