"""The service manager's notifications, received on a real unix datagram socket.

First the notifier alone (path and abstract ``@`` addresses, the environment
it takes, a manager that is not there), then a daemon on a fake machine
under the mock clock telling a real socket: READY=1 once set up (before any
peer), STATUS= when the summary changes, WATCHDOG=1 every half
WATCHDOG_USEC, RELOADING=1 ... READY=1 around a reload, STOPPING=1 last.
The real process does the same in ``test_service_netns.py``.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.fake_host import ALICE_IP, BOB_IP, FakeNet, Machine, make_settings, mock_clock
from tests.services import NotifySocket
from tests.waits import wait_for
from wg_netmanager.notify import Notifier


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
    else:
        address = f"@wg_netmanager-test-{os.getpid()}-{id(tmp_path)}"
    m = NotifySocket(address)
    yield m
    m.close()


def test_notifier_sends_each_kind_as_one_datagram(manager: NotifySocket) -> None:
    notifier = Notifier(manager.address)
    assert notifier.ready("0 nodes, 0 direct, 0 via gateway")
    assert notifier.status("1 node,\n1 direct")  # one line, whatever it is given
    assert notifier.watchdog() and notifier.stopping()
    assert notifier.reloading()
    datagrams = manager.datagrams()
    assert datagrams[:4] == [
        "READY=1\nSTATUS=0 nodes, 0 direct, 0 via gateway",
        "STATUS=1 node, 1 direct",
        "WATCHDOG=1",
        "STOPPING=1",
    ]
    reloading, monotonic = datagrams[4].split("\n")
    assert reloading == "RELOADING=1" and monotonic.startswith("MONOTONIC_USEC=")
    now = time.clock_gettime(time.CLOCK_MONOTONIC)
    assert abs(int(monotonic.partition("=")[2]) / 1e6 - now) < 5
    notifier.close()


def test_notifier_takes_its_settings_out_of_the_environment() -> None:
    env = {
        "NOTIFY_SOCKET": "@x",
        "WATCHDOG_USEC": "20000000",
        "WATCHDOG_PID": str(os.getpid()),
        "PATH": "/bin",
    }
    notifier = Notifier.from_environ(env)
    assert (notifier.address, notifier.watchdog_interval) == ("@x", 10.0)
    assert env == {"PATH": "/bin"}  # ip, wg and wireguard-go never see them
    # The watchdog of another process (our parent's), or nonsense: none.
    for value, pid in (("20000000", "1"), ("0", ""), ("2e7", ""), ("", "")):
        env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": value, "WATCHDOG_PID": pid}
        assert Notifier.from_environ(env).watchdog_interval is None
    assert not Notifier.from_environ({}).enabled


def test_a_missing_manager_is_no_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for address in (None, str(tmp_path / "nobody"), "vsock:2:1234"):
        notifier = Notifier(address)
        assert not notifier.ready()
        notifier.close()
    assert "only unix socket paths" in caplog.text


def test_the_daemon_tells_its_manager(
    tmp_path: Path, manager: NotifySocket, caplog: pytest.LogCaptureFixture
) -> None:
    alice_settings, bob_settings = make_settings(tmp_path)
    net = FakeNet()
    alice = Machine(alice_settings, net.host(ALICE_IP))
    bob = Machine(bob_settings, net.host(BOB_IP))
    notifier = Notifier(manager.address, watchdog_usec=2_000_000)  # WATCHDOG=1 every 1 s
    heard: list[tuple[float, str]] = []  # (mock time, field)
    set_up = False
    marks: dict[str, float] = {}  # mock times

    async def listen() -> None:
        while True:
            await trio.lowlevel.wait_readable(manager.sock)
            heard.extend((trio.current_time(), f) for f in manager.received())

    def fields(after: float = -1.0, before: float = float("inf")) -> list[str]:
        return [f for t, f in heard if after <= t < before and f != "WATCHDOG=1"]

    async def scenario() -> None:
        nonlocal set_up
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            daemon = await alice.daemon(notifier=notifier, load_settings=lambda: alice_settings)
            await nursery.start(daemon.run)
            marks["ready"] = trio.current_time()
            set_up = alice.device.created and not daemon.node.sessions
            await nursery.start((await bob.daemon()).run)
            await wait_for(lambda: "STATUS=1 node, 1 direct, 0 via gateway" in fields())
            await trio.sleep(10.0)
            marks["reload"] = trio.current_time()
            daemon.request_reload()
            await trio.sleep(0.5)
            marks["stop"] = trio.current_time()
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=mock_clock())
    heard.extend((marks["stop"], f) for f in manager.received())
    notifier.close()
    # Ready once the interface is up and the admin socket bound, before any peer.
    assert set_up
    ready, reloading, stop = marks["ready"], marks["reload"], marks["stop"]
    assert fields(before=ready + 1e-9) == ["READY=1", "STATUS=0 nodes, 0 direct, 0 via gateway"]
    assert fields(ready + 1e-9, reloading) == ["STATUS=1 node, 1 direct, 0 via gateway"]
    reload = fields(reloading, stop)
    assert reload[0] == "RELOADING=1" and reload[1].startswith("MONOTONIC_USEC=")
    assert reload[2:] == ["READY=1", "STATUS=1 node, 1 direct, 0 via gateway"]
    assert fields(stop) == ["STOPPING=1"]
    # The watchdog: from the start, every second (half of WATCHDOG_USEC), never missed.
    beats = [t for t, f in heard if f == "WATCHDOG=1"]
    assert beats[0] == marks["ready"] and len(beats) >= 10
    assert {round(b - a, 6) for a, b in itertools.pairwise(beats)} == {1.0}
    assert "reloaded in 0 ms: no change that applies" in caplog.text
