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
