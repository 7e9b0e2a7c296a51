"""The backends' commands, and the first one started before the daemon's
imports (``backends.start_early``), with stand-in commands: no root needed.
Against real WireGuard: tests/test_wgdev_netns.py and every daemon run in
the namespace tests."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from wg_netmanager import backends
from wg_netmanager.backends import Command, EarlyStart, start_early
from wg_netmanager.proc import CommandError
from wg_netmanager.wgdev import WgInterface

NAME = "wgtest0"  # no such link here


@pytest.fixture(autouse=True)
def sigterm_restored() -> Iterator[None]:
    """start_early sets its own SIGTERM handler (for the daemon's imports)."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / name
    path.write_text(f"import sys, time\n{body}\n")
    return [sys.executable, str(path)]


def early_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_body: str, second_body: str
) -> tuple[EarlyStart, WgInterface]:
    """A stand-in first command started early, then a device that takes it
    over (and would try the second); no UAPI socket to wait for, no link to
    delete here. Each command is a Python script of that body."""
    first: Command = ("first", script(tmp_path, "first.py", first_body), None)
    second: Command = ("second", script(tmp_path, "second.py", second_body), None)
    early = start_early(NAME, [first, second])
    assert early is not None
    monkeypatch.setattr("wg_netmanager.wgdev.backend_commands", lambda _name: [first, second])
    dev = WgInterface(NAME, early=early)

    async def nothing() -> None:
        pass

    monkeypatch.setattr(dev, "_wait_ready", nothing)
    monkeypatch.setattr(dev, "_delete_link", nothing)
    return early, dev


def test_the_first_command_runs_while_we_go_on_and_create_takes_it_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "made"
    made = f"time.sleep(0.2); open({str(marker)!r}, 'w')"
    early, dev = early_device(tmp_path, monkeypatch, made, "sys.exit(1)")
    assert not marker.exists()  # started, not waited for
    assert signal.getsignal(signal.SIGTERM) is backends._exit_on_signal
    assert trio.run(dev.create) == "first"
    assert early.taken and marker.exists() and dev.fresh


def test_an_early_command_that_fails_is_not_run_again_the_next_one_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    counted = f"open({str(runs)!r}, 'a').write('x'); sys.exit(3)"
    _early, dev = early_device(tmp_path, monkeypatch, counted, "pass")
    assert trio.run(dev.create) == "second"
    assert runs.read_text() == "x"  # once


def test_all_failing_is_one_error_naming_each_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_tun = "print('no tun', file=sys.stderr); sys.exit(1)"
    _early, dev = early_device(tmp_path, monkeypatch, no_tun, "sys.exit(1)")
    with pytest.raises(CommandError, match="no WireGuard backend worked") as caught:
        trio.run(dev.create)
    assert "first:" in caught.value.stderr and "no tun" in caught.value.stderr
    assert "second:" in caught.value.stderr


def test_nothing_is_started_early_for_a_link_that_exists_or_a_command_that_cannot_start(
    tmp_path: Path,
) -> None:
    assert start_early("lo", [("x", ["true"], None)]) is None  # create decides about it
    missing: Command = ("x", [str(tmp_path / "no-such-program")], None)
    assert start_early(NAME, [missing]) is None  # create tries it, and the rest


def test_an_early_start_never_taken_over_is_waited_for_and_its_link_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deleted: list[list[str]] = []
    monkeypatch.setattr(backends.subprocess, "run", lambda argv, **_kw: deleted.append(argv))
    early = start_early(NAME, [("x", script(tmp_path, "x.py", "time.sleep(0.1)"), None)])
    assert early is not None
    monkeypatch.setattr(backends, "link_exists", lambda name: name == NAME)  # it made the link
    early.abandon()
    assert early.process.returncode == 0
    assert deleted == [["ip", "link", "del", "dev", NAME]]


def test_a_sigterm_before_the_daemon_handles_signals_is_a_clean_stop(tmp_path: Path) -> None:
    """Between the early start and the daemon's own signal handling (its
    imports), a SIGTERM unwinds through the command line, whose ``finally``
    abandons the early start: exit 0, as the daemon's own SIGTERM is."""
    early = start_early(NAME, [("x", script(tmp_path, "x.py", "pass"), None)])
    assert early is not None
    with pytest.raises(SystemExit) as stopped:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1.0)  # (the handler runs at once; this is never waited out)
    assert stopped.value.code == 0
    early.finish()
