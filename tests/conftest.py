"""Shared test setup."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def private_control_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process daemons put their control socket in the test's own directory,
    never in the machine's /run/wg_netmanager."""
    monkeypatch.setenv("WG_NETMANAGER_RUN_DIR", str(tmp_path / "run"))
    yield


@pytest.fixture(autouse=True)
def no_interface_started_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run through the command line in-process (its daemon stood in for)
    never starts a real interface command on this machine before the
    daemon's imports; tests/test_backends.py tests that part with stand-in
    commands, and the namespace tests' daemons (other processes) do it for real."""
    monkeypatch.setattr("wg_netmanager.cli.start_early", lambda name: None)
