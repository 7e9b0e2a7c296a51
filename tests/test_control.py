"""The control socket and ``wg_netmanager status``: one JSON document per connection."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from tests.fake_host import (
    ALICE_IP,
    BOB_IP,
    FakeNet,
    Machine,
    make_settings,
    mock_clock,
)
from tests.fakes import FakeWgDevice
from tests.helpers import SHARED_KEY_B64
from tests.status_samples import BOB_KEY, sample_doc, table
from tests.waits import wait_for
from wg_netmanager import cli, control
from wg_netmanager.keys import to_b64


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "run"
    monkeypatch.setenv(control.RUN_DIR_ENV, str(path))
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def status(interface: str, as_json: bool) -> int:
    return control.status_main(interface, as_json)


async def serving(
    nursery: trio.Nursery, path: str, snapshot: Callable[[], Any] = sample_doc
) -> trio.CancelScope:
    scope = trio.CancelScope()

    async def serve(task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await control.serve(path, snapshot, task_status=task_status)

    await nursery.start(serve)
    return scope


def test_round_trip_json_and_text(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = control.socket_path("wg7")
    assert path == str(run_dir / "wg7.sock")
    outputs: dict[str, tuple[int, str, str]] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            scope = await serving(nursery, path)
            assert mode(run_dir) == 0o700
            assert stat.S_ISSOCK(os.lstat(path).st_mode) and mode(Path(path)) == 0o600
            for as_json in (True, False):
                code = await trio.to_thread.run_sync(status, "wg7", as_json)
                out, err = capsys.readouterr()
                outputs["json" if as_json else "text"] = (code, out, err)
            scope.cancel()

    trio.run(main)
    assert not os.path.exists(path)  # removed on shutdown

    code, out, err = outputs["json"]
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc == json.loads(json.dumps(sample_doc()))
    assert {"name", "wg_ip", "public_key", "peers", "interface", "uptime"} <= set(doc)
    assert doc["wg_ip"] == "10.1.1.2" and doc["public_key"] == BOB_KEY
    charlie = doc["peers"][1]
    assert charlie["wg_ip"] == "10.1.1.3" and charlie["gateway"] == "10.1.1.1"
    assert charlie["endpoint"] == "198.51.100.3:20000" and charlie["path"] == "via"
    assert all("private" not in k and "shared" not in k for k in doc)

    code, out, err = outputs["text"]
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("bob 10.1.1.2 on wg0 (wireguard-go)")
    rows = table(lines)
    assert rows["alice"]["PATH"] == "direct static" and rows["alice"]["LATENCY"] == "1.2 ms"
    assert rows["charlie"]["PATH"] == "via alice"
    assert rows["dave"]["PATH"] == "direct LAN"
    assert "alice 10.1.1.1 forwards for 1: charlie 10.1.1.3" in out


def test_no_daemon_is_one_line_and_exit_1(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert status("wg0", False) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("wg_netmanager: error: wg0: no daemon is running")
    # Through the command line as well.
    assert cli.main(["status", "--json", "wg0"]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    # A stale socket (its daemon was killed) is the same answer.
    run_dir.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(run_dir / "wg0.sock"))
    stale.close()
    assert status("wg0", True) == 1
    assert "no daemon is running" in capsys.readouterr().err


def test_stale_socket_is_replaced_and_a_live_one_is_not_taken(
    run_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir.mkdir(mode=0o755)  # too open: tightened
    path = str(run_dir / "wg0.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await serving(nursery, path, lambda: {"who": "first"})
            assert mode(run_dir) == 0o700
            # A second daemon on the same interface name: warns, does not steal.
            await serving(nursery, path, lambda: {"who": "second"})
            doc = await trio.to_thread.run_sync(control.fetch, path)
            assert doc == {"who": "first"}
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.WARNING):
        trio.run(main)
    assert "in use by another daemon" in caplog.text
    assert not os.path.exists(path)


def test_a_failing_snapshot_does_not_end_the_server(
    run_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(run_dir / "wg0.sock")
    calls: list[int] = []

    def snapshot() -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("bug")
        return {"ok": True}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await serving(nursery, path, snapshot)
            with pytest.raises(control.ControlError, match="no valid status"):
                await trio.to_thread.run_sync(control.fetch, path)
            assert await trio.to_thread.run_sync(control.fetch, path) == {"ok": True}
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.ERROR):
        trio.run(main)
    assert "control request failed" in caplog.text


def test_a_client_that_never_reads_does_not_block_others(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "SEND_TIMEOUT", 0.3)
    path = str(run_dir / "wg0.sock")
    big = {"blob": "x" * (4 << 20)}  # more than the socket buffers hold

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await serving(nursery, path, lambda: big)
            lazy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            lazy.connect(path)  # and never reads
            try:
                with trio.fail_after(5):
                    doc = await trio.to_thread.run_sync(control.fetch, path)
                assert doc == big
            finally:
                lazy.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_unusable_directory_is_a_warning_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(control.RUN_DIR_ENV, str(blocker))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(control.serve, control.socket_path("wg0"), dict)

    with caplog.at_level(logging.WARNING):
        trio.run(main)  # serve returned at once
    assert "'wg_netmanager status' is unavailable" in caplog.text


def test_running_daemon_answers_status(run_dir: Path, tmp_path: Path) -> None:
    alice_settings, bob_settings = make_settings(tmp_path)
    # Two daemons in one process: each its own interface name, so its own socket.
    bob_settings = msgspec.structs.replace(bob_settings, interface="wg1")
    net = FakeNet()
    alice = Machine(alice_settings, net.host(ALICE_IP))
    bob = Machine(bob_settings, net.host(BOB_IP), device=FakeWgDevice("wg1"))
    docs: dict[str, dict[str, Any]] = {}
    keys = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            alice_daemon, bob_daemon = await alice.daemon(), await bob.daemon()
            keys.extend([alice_daemon.keys, bob_daemon.keys])
            await nursery.start(alice_daemon.run)
            await nursery.start(bob_daemon.run)
            await wait_for(
                lambda: any(p.name == "alice" for p in bob_daemon.node.statistics(0).peers)
            )
            for interface in ("wg0", "wg1"):
                docs[interface] = await fetch(control.socket_path(interface))
            nursery.cancel_scope.cancel()

    trio.run(main, clock=mock_clock())
    assert not (run_dir / "wg0.sock").exists() and not (run_dir / "wg1.sock").exists()
    assert docs["wg0"]["name"] == "alice" and docs["wg0"]["is_static"]
    assert docs["wg0"]["interface"] == "wg0" and docs["wg0"]["backend"] == "wireguard-go"
    bob_doc = docs["wg1"]
    assert bob_doc["name"] == "bob" and bob_doc["public_key"] == keys[1].public_b64
    assert [p["name"] for p in bob_doc["peers"]] == ["alice"]
    assert bob_doc["peers"][0]["path"] == "direct" and bob_doc["peers"][0]["kind"] == "static"
    assert bob_doc["uptime"] >= 0
    text = json.dumps(docs)
    for pair in keys:
        assert pair.private.hex() not in text
        assert to_b64(pair.private) not in text
    assert SHARED_KEY_B64 not in text


async def fetch(path: str) -> dict[str, Any]:
    """What ``control.fetch`` reads, without a thread (the mock clock would run on meanwhile)."""
    stream = await trio.open_unix_socket(path)
    async with stream:
        chunks = [chunk async for chunk in stream]
    doc: dict[str, Any] = json.loads(b"".join(chunks))
    return doc
