"""A static's call-back file: only what we wrote ourselves counts, and never a crash."""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from wg_netmanager import host

ENDPOINTS = {IPv4Address("10.1.1.2"): ("198.51.100.2", 50502)}


def written(tmp_path: Path) -> str:
    path = str(tmp_path / "run" / "wg0.peers")
    host.write_peers_file(path, ENDPOINTS)
    return path


@pytest.mark.parametrize(
    "doc",
    [
        {"10.1.1.2": [3325256705, 50502]},  # a number where an address belongs
        {"10.1.1.2": ["198.051.100.2", 50502]},
        {"10.1.1.2": ["198.51.100.2", True]},
        {"10.1.1.2": ["198.51.100.2", "50502"]},
        {"10.1.1.2": "198.51.100.2:50502"},
        {"not an ip": ["198.51.100.2", 50502]},
    ],
)
def test_junk_in_the_file_is_ignored_not_a_crash(tmp_path: Path, doc: object) -> None:
    path = written(tmp_path)
    Path(path).write_text(json.dumps(doc))
    found = host.read_peers_file(path)
    assert all(isinstance(h, str) and str(IPv4Address(h)) == h for h, _ in found.values())
    assert found == {} or found == ENDPOINTS


def test_a_file_in_a_directory_others_can_write_is_not_trusted(tmp_path: Path) -> None:
    path = written(tmp_path)
    assert host.read_peers_file(path) == ENDPOINTS
    os.chmod(os.path.dirname(path), 0o777)
    assert host.read_peers_file(path) == {}
    with pytest.raises(PermissionError):
        host.write_peers_file(path, ENDPOINTS)


def test_links_are_never_followed(tmp_path: Path) -> None:
    path = written(tmp_path)
    target = tmp_path / "elsewhere"
    target.write_text(Path(path).read_text())
    os.unlink(path)
    os.symlink(target, path)
    assert host.read_peers_file(path) == {}  # a link is not our file
    # A link planted where the temporary file goes is not written through.
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    os.unlink(path)
    os.symlink(victim, f"{path}.{os.getpid()}.tmp")
    host.write_peers_file(path, ENDPOINTS)
    assert victim.read_text() == "untouched"
    assert host.read_peers_file(path) == ENDPOINTS
