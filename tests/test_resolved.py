"""Pointing systemd-resolved at the mesh's name server, and taking it back."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from ipaddress import IPv4Address
from typing import Any

import pytest
import trio

from wg_netmanager import resolved
from wg_netmanager.proc import CommandError

WG_IP = IPv4Address("10.1.1.3")


class FakeResolvectl:
    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail  # the subcommand that fails

    async def __call__(self, argv: Sequence[str], **_: Any) -> str:
        self.calls.append(list(argv))
        if argv[1] == self.fail:
            raise CommandError(list(argv), 1, "Failed to set DNS configuration: Link wg0 not known")
        return ""


def test_lookups_of_the_domain_only_go_to_our_wg_ip_and_are_taken_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeResolvectl()
    monkeypatch.setattr(resolved, "run", fake)
    assert trio.run(resolved.point, "wg0", WG_IP, "mesh") is True
    trio.run(resolved.revert, "wg0")
    assert fake.calls == [
        ["resolvectl", "dns", "wg0", "10.1.1.3"],
        ["resolvectl", "domain", "wg0", "~mesh"],  # routing-only: nothing else comes to us
        ["resolvectl", "revert", "wg0"],
    ]


def test_a_failure_is_one_warning_with_the_command_and_no_crash(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeResolvectl(fail="dns")
    monkeypatch.setattr(resolved, "run", fake)
    with caplog.at_level(logging.WARNING, logger="wg_netmanager.resolved"):
        assert trio.run(resolved.point, "wg0", WG_IP, "mesh") is False
    (record,) = caplog.records
    assert "resolvectl dns wg0 10.1.1.3" in record.getMessage()
    assert "Link wg0 not known" in record.getMessage()
    fake.fail = "revert"
    trio.run(resolved.revert, "wg0")  # the interface may be gone: no error


def test_only_where_systemd_resolved_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setattr(resolved.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(resolved, "RESOLVED_DIR", str(tmp_path / "resolve"))
    assert not resolved.resolved_runs()
    (tmp_path / "resolve").mkdir()
    assert resolved.resolved_runs()
    monkeypatch.setattr(resolved.shutil, "which", lambda name: None)
    assert not resolved.resolved_runs()
