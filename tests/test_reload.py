"""Reload (SIGHUP) on fake machines under the mock clock, and what it plans.

alice (static) and bob (dynamic) mesh; bob's network.yaml and peer.yaml
change and bob reloads, read through the real command line
(``cli.build_settings``) as the daemon's own reload does. A working link
is never touched; a file that no longer validates changes nothing and says
so in one line. The same in real namespaces, with pings running, is in
``test_service_netns.py``. At the end: log lines under journald.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import signal
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TextIO

import pytest
import trio
from msgspec.structs import replace

from tests.fake_host import ALICE_IP, BOB_IP, FakeNet, Machine, make_settings, mock_clock
from tests.waits import wait_for
from wg_netmanager import cli
from wg_netmanager import daemon as daemon_module
from wg_netmanager.config import Settings, load_network
from wg_netmanager.model import Gateway
from wg_netmanager.proc import CommandError
from wg_netmanager.reload import plan_reload

CAROL_IP = "192.0.2.3"
CAROL = f"""\
  - endPoint: {CAROL_IP}:50003
    adminPort: 50503
    wgIp: 10.1.1.3
"""


class Mesh:
    """alice (static) and bob; bob's settings come from files, as on a real machine."""

    def __init__(self, tmp_path: Path) -> None:
        alice_settings, _ = make_settings(tmp_path)
        self.network = tmp_path / "network.yaml"
        self.original = self.network.read_text()
        self.peer = tmp_path / "peer.yaml"
        self.peer.write_text("name: bob\nwgIp: 10.1.1.2\n")
        self.net = FakeNet()
        self.alice = Machine(alice_settings, self.net.host(ALICE_IP))
        self.bob = Machine(self.load(), self.net.host(BOB_IP))

    def load(self) -> Settings:
        """bob's settings from the files as they are now (what a reload reads)."""
        argv = ["-c", str(self.network), "-p", str(self.peer), "--no-tui", "-i", "wg0"]
        return cli.build_settings(cli.docopt(cli.USAGE, argv))

    def add_carol(self) -> Machine:
        """A second static, carol, running with the file that lists her."""
        text = self.network.read_text()
        self.network.write_text(text.replace("timers:", CAROL + "timers:"))
        network = load_network(str(self.network))
        settings = replace(
            self.alice.settings,
            network=network,
            wg_ip=IPv4Address("10.1.1.3"),
            name="carol",
            wg_port=50003,
            admin_port=50503,
        )
        return Machine(settings, self.net.host(CAROL_IP))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def removed_keys(machine: Machine) -> set[str]:
    """WireGuard peers the daemon removed (``wg set ... peer K remove``)."""
    return {
        c[i + 1]
        for c in machine.device.commands
        for i, word in enumerate(c[:-2])
        if word == "peer" and c[i + 2] == "remove"
    }


def test_reload_adds_a_static_and_applies_timers_without_touching_the_link(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    mesh = Mesh(tmp_path)
    result: dict[str, object] = {}

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            alice = await mesh.alice.daemon()
            await nursery.start(alice.run)
            bob = await mesh.bob.daemon(load_settings=mesh.load)
            await nursery.start(bob.run)
            await wait_for(lambda: alice.keys.public_b64 in mesh.bob.device.peers)
            carol_machine = mesh.add_carol()
            carol = await carol_machine.daemon()
            await nursery.start(carol.run)
            edit(mesh.network, "pingInterval: 0.2", "pingInterval: 0.5")
            alice_session = bob.node.sessions[IPv4Address("10.1.1.1")]
            started = trio.current_time()
            await bob.reload()
            await wait_for(lambda: carol.keys.public_b64 in mesh.bob.device.peers)
            result["took"] = trio.current_time() - started
            result["same session"] = bob.node.sessions[IPv4Address("10.1.1.1")] is alice_session
            result["timers"] = bob.node.timers.ping_interval
            result["statics"] = sorted(str(ip) for ip in bob.node.statics)
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    assert result["same session"] and result["timers"] == 0.5
    assert result["statics"] == ["10.1.1.1", "10.1.1.3"]
    assert isinstance(result["took"], float) and result["took"] < 0.5
    assert removed_keys(mesh.bob) == set()  # alice's WireGuard peer was never touched
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reloaded")]
    assert line.endswith(
        "ms: pingInterval 0.2 -> 0.5; static 10.1.1.3 added (192.0.2.3:50003 admin 50503)"
    )


def test_reload_removes_a_static(tmp_path: Path) -> None:
    mesh = Mesh(tmp_path)
    carol_machine = mesh.add_carol()
    mesh.bob.settings = mesh.load()  # bob starts knowing carol

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            alice, carol = await mesh.alice.daemon(), await carol_machine.daemon()
            await nursery.start(alice.run)
            await nursery.start(carol.run)
            bob = await mesh.bob.daemon(load_settings=mesh.load)
            await nursery.start(bob.run)
            await wait_for(lambda: carol.keys.public_b64 in mesh.bob.device.peers)
            await wait_for(lambda: alice.keys.public_b64 in mesh.bob.device.peers)
            mesh.network.write_text(mesh.original)
            await bob.reload()
            # Gone from bob's WireGuard, and carol dropped bob at once (bye).
            await wait_for(lambda: carol.keys.public_b64 not in mesh.bob.device.peers)
            await wait_for(lambda: bob.keys.public_b64 not in carol_machine.device.peers)
            assert alice.keys.public_b64 not in removed_keys(mesh.bob)
            await trio.sleep(2.0)  # and it stays gone: no hellos to carol any more
            assert IPv4Address("10.1.1.3") not in bob.node.sessions
            assert alice.keys.public_b64 in mesh.bob.device.peers
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())


@pytest.mark.parametrize(
    ("file", "old", "new", "named"),
    [
        ("network", "deadAfter: 0.6", "deadAfter: [0.6", "network.yaml: line"),
        ("network", "deadAfter: 0.6", "deadAfter: -1", "network.yaml: timers.deadAfter"),
        ("network", "adminPort: 50501", "adminPort: x", "network.yaml: peers[0].adminPort"),
        ("peer", "name: bob", "name: b o b", "peer.yaml: name"),
    ],
)
def test_a_file_that_no_longer_validates_keeps_the_running_configuration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, file: str, old: str, new: str, named: str
) -> None:
    mesh = Mesh(tmp_path)
    path = mesh.network if file == "network" else mesh.peer
    kept: dict[str, object] = {}

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            alice = await mesh.alice.daemon()
            await nursery.start(alice.run)
            bob = await mesh.bob.daemon(load_settings=mesh.load)
            await nursery.start(bob.run)
            await wait_for(lambda: alice.keys.public_b64 in mesh.bob.device.peers)
            edit(mesh.network, "pingInterval: 0.2", "pingInterval: 0.4")  # would apply, but
            edit(path, old, new)  # one of the files is broken
            caplog.clear()
            await bob.reload()
            kept["settings"] = bob.settings is mesh.bob.settings
            kept["timers"] = bob.node.timers.ping_interval
            await trio.sleep(3.0)  # the daemon goes on: bob stays in alice's WireGuard
            kept["alive"] = bob.keys.public_b64 in mesh.alice.device.peers
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    assert kept == {"settings": True, "timers": 0.2, "alive": True}
    [error] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    message = error.getMessage()
    assert error.levelno == logging.ERROR and "\n" not in message
    assert message.startswith(f"reload: {tmp_path}/{named}")
    assert message.endswith("; the running configuration stays")


def test_reload_applies_verbosity_and_keeps_what_needs_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mesh = Mesh(tmp_path)
    root = logging.getLogger()
    level = root.level
    levels: list[int] = []

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            bob = await mesh.bob.daemon(load_settings=mesh.load)
            await nursery.start(bob.run)
            mesh.peer.write_text("name: robert\nwgIp: 10.1.1.2\nverbosity: 2\n")
            edit(mesh.network, "subnet: 10.1.1.0/24", "subnet: 10.1.0.0/16")
            with caplog.at_level(logging.INFO):
                await bob.reload()
                levels.append(root.level)
            assert bob.settings.name == "bob" and bob.settings.verbosity == 2
            assert str(bob.settings.network.subnet) == "10.1.1.0/24"
            nursery.cancel_scope.cancel()

    try:
        trio.run(scenario, clock=mock_clock())
    finally:
        root.setLevel(level)
    assert levels == [logging.DEBUG]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "reload: name bob -> robert needs a restart; still bob",
        f"reload: {mesh.network}: network.subnet 10.1.1.0/24 -> 10.1.0.0/16 needs a restart;"
        " still 10.1.1.0/24",
    ]
    assert any(r.getMessage().endswith("ms: verbosity 0 -> 2") for r in caplog.records)


def test_a_reload_asked_for_during_start_up_comes_right_after_it(tmp_path: Path) -> None:
    mesh = Mesh(tmp_path)
    loads: list[float] = []

    def load() -> Settings:
        loads.append(trio.current_time())
        return mesh.load()

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            bob = await mesh.bob.daemon(load_settings=load)
            bob.request_reload()
            mesh.bob.device.fail["configure"] = CommandError(["wg"], 1, "busy")
            await nursery.start(bob.run)  # set up after a retry (0.1 s)
            await trio.sleep(0.01)
            assert len(loads) == 1 and loads[0] >= 0.1
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())


class Signals:
    """What ``trio.open_signal_receiver`` yields, from a list."""

    def __init__(self, *signums: int) -> None:
        self._signums = list(signums)

    def __aiter__(self) -> Signals:
        return self

    async def __anext__(self) -> int:
        await trio.lowlevel.checkpoint()
        if not self._signums:
            raise StopAsyncIteration
        return self._signums.pop(0)


def test_sighup_reloads_and_sigterm_stops_and_a_terminal_hangup_stops() -> None:
    hangups: list[int] = []

    async def scenario() -> None:
        with trio.CancelScope() as scope:
            await daemon_module._on_signals(
                Signals(signal.SIGHUP, signal.SIGHUP), scope, lambda: hangups.append(1)
            )
        assert not scope.cancel_called and hangups == [1, 1]
        with trio.CancelScope() as scope:
            await daemon_module._on_signals(
                Signals(signal.SIGHUP, signal.SIGTERM, signal.SIGHUP),
                scope,
                lambda: hangups.append(2),
            )
        assert scope.cancel_called and hangups == [1, 1, 2]  # nothing after SIGTERM
        # With the TUI, SIGHUP is the terminal hanging up: the daemon stops.
        with trio.CancelScope() as scope:
            await daemon_module._on_signals(Signals(signal.SIGHUP), scope, None)
        assert scope.cancel_called

    trio.run(scenario)


# --- the plan, pure ----------------------------------------------------------------------


def settings_with(base: Settings, **changes: object) -> Settings:
    fields = ("peers", "timers", "shared_key", "gateways", "links", "dns_domain", "dns_enabled")
    network = {k: v for k, v in changes.items() if k in fields}
    rest = {k: v for k, v in changes.items() if k not in network}
    return replace(base, network=replace(base.network, **network), **rest)  # type: ignore[arg-type]


def test_the_plan_of_a_reload(tmp_path: Path) -> None:
    alice, bob = make_settings(tmp_path)
    same = plan_reload(bob, bob)
    assert same.settings == bob and same.applied == () and same.needs_restart == ()
    [static] = bob.network.peers
    moved = replace(static, host="alice.example.org")
    changed = plan_reload(bob, settings_with(bob, peers=(moved,), shared_key=bytes(32)))
    assert changed.applied == ("static 10.1.1.1 now at alice.example.org:50001 admin 50501",)
    assert changed.settings.network.peers == (moved,)
    # The key itself is never shown.
    assert changed.needs_restart == (
        f"{bob.network.path}: network.sharedKey changed; that needs a restart",
    )
    assert changed.settings.network.shared_key == bob.network.shared_key
    lazy = plan_reload(bob, settings_with(bob, links="lazy"))
    assert lazy.needs_restart == (
        f"{bob.network.path}: network.links eager -> lazy needs a restart; still eager",
    )
    assert lazy.settings.network.links == "eager"
    renamed = plan_reload(bob, settings_with(bob, dns_domain="corp", dns_enabled=False))
    assert renamed.needs_restart == (
        f"{bob.network.path}: network.dns.domain mesh -> corp needs a restart; still mesh",
        f"{bob.network.path}: network.dns.enabled True -> False needs a restart; still True",
    )
    assert renamed.settings.network.dns_domain == "mesh"
    assert renamed.settings.network.dns_enabled
    mobile = plan_reload(bob, replace(bob, mobile=True))
    assert mobile.needs_restart == ("mobile False -> True needs a restart; still False",)
    assert not mobile.settings.mobile
    # alice's own entry stays as it runs (whether she is static cannot change).
    gone = plan_reload(alice, settings_with(alice, peers=()))
    assert gone.settings.network.peers == alice.network.peers and gone.settings.is_static
    assert gone.needs_restart[-1].startswith(
        f"{alice.network.path}: peers: this node's entry 192.0.2.1:50001 admin 50501 -> "
        "(none: dynamic) needs a restart"
    )


def test_gateways_and_the_exit_node_need_a_restart(tmp_path: Path) -> None:
    """Whether a node pings fast and forwards is fixed for its run."""
    _alice, bob = make_settings(tmp_path)
    lamp = (Gateway(IPv4Address("10.1.1.1"), (IPv4Network("192.168.1.0/24"),)),)
    changed = plan_reload(bob, settings_with(bob, gateways=lamp, exit_node=IPv4Address("10.1.1.1")))
    assert changed.needs_restart == (
        f"{bob.network.path}: gateways changed; that needs a restart",
        "exit node None -> 10.1.1.1 needs a restart; still None",
    )
    assert changed.settings.network.gateways == () and changed.settings.exit_node is None


# --- log lines under journald --------------------------------------------------------------


@contextlib.contextmanager
def daemon_logging(settings: Settings, stream: TextIO) -> Iterator[logging.Logger]:
    """The daemon's logging set up for ``settings`` onto ``stream``; the root
    logger's handlers and level as they were afterwards."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        daemon_module.setup_logging(settings, stream)
        yield logging.getLogger("wg_netmanager")
    finally:
        root.handlers[:] = before
        root.setLevel(level)


def test_log_lines_for_the_journal_carry_a_priority_and_no_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, bob = make_settings(tmp_path)
    for journal in (False, True):
        path = tmp_path / f"stderr-{journal}"
        with path.open("w") as stream:
            st = os.fstat(stream.fileno())
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + (0 if journal else 1)}")
            with daemon_logging(bob, stream) as log:
                log.info("alice (10.1.1.1) connected")
                log.warning("no static peer")
                log.error("cannot set up wg0")
        lines = path.read_text().splitlines()
        if journal:
            assert lines == [
                "<6>INFO    alice (10.1.1.1) connected",
                "<4>WARNING no static peer",
                "<3>ERROR   cannot set up wg0",
            ]
        else:  # another stream than systemd's: a terminal's lines, with the time
            assert [line[9:] for line in lines] == [
                "INFO    alice (10.1.1.1) connected",
                "WARNING no static peer",
                "ERROR   cannot set up wg0",
            ]
            assert lines[0][2] == ":" and lines[0][5] == ":"


def test_log_lines_at_vv_carry_milliseconds(tmp_path: Path) -> None:
    """-vv is for reading timing (the start-up timeline, a path's steps):
    its lines carry milliseconds; the default's do not."""
    _, bob = make_settings(tmp_path)
    seen = {}
    for verbosity in (0, 2):
        stream = io.StringIO()
        with daemon_logging(replace(bob, verbosity=verbosity), stream) as log:
            log.warning("no static peer")
        seen[verbosity] = stream.getvalue()
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING no static peer\n", seen[0])
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} WARNING no static peer\n", seen[2])
