"""A static pinned by its public key in network.yaml: configuration and meshing."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.fake_host import FakeNet
from tests.helpers import SHARED_KEY_B64
from tests.lab import Lab
from wg_netmanager import cli, daemon
from wg_netmanager.config import ConfigError, load_network
from wg_netmanager.keys import KeyPair, from_b64, to_b64

STATIC_KEY = KeyPair.generate()


def network(tmp_path: Path, public_key: str = STATIC_KEY.public_b64) -> Path:
    path = tmp_path / "network.yaml"
    path.write_text(
        f"""\
network:
  sharedKey: {SHARED_KEY_B64}
  subnet: 10.1.1.0/24
peers:
  - endPoint: 198.51.100.1:50001
    adminPort: 50501
    wgIp: 10.1.1.1
    publicKey: {public_key}
"""
    )
    path.chmod(0o600)
    return path


def key_file(tmp_path: Path, key: KeyPair = STATIC_KEY, mode: int = 0o600) -> Path:
    path = tmp_path / "wg0.key"
    path.write_text(to_b64(key.private) + "\n")
    path.chmod(mode)
    return path


def settings_for(tmp_path: Path, *argv: str, peer_yaml: str | None = None) -> cli.Settings:
    peer = tmp_path / "peer.yaml"
    peer.write_text(peer_yaml or "")
    args = cli.docopt(cli.USAGE, ["-c", str(network(tmp_path)), "-p", str(peer), *argv])
    return cli.build_settings(args)


def test_the_pinned_key_is_read_from_network_yaml(tmp_path: Path) -> None:
    (static,) = load_network(str(network(tmp_path))).peers
    assert static.public_key == STATIC_KEY.public


@pytest.mark.parametrize("bad", ["not a key", to_b64(bytes(31)), "''"])
def test_a_bad_pinned_key_is_a_one_line_error(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_network(str(network(tmp_path, bad)))
    message = str(caught.value)
    assert "peers[0].publicKey" in message and "wg pubkey" in message and "\n" not in message


def test_the_pinned_static_runs_with_its_own_key(tmp_path: Path) -> None:
    path = key_file(tmp_path)
    settings = settings_for(
        tmp_path, "--no-tui", "wg0", "10.1.1.1", "beta", peer_yaml=f"privateKeyFile: {path}\n"
    )
    assert settings.private_key == STATIC_KEY.private
    assert repr(STATIC_KEY.private) not in repr(settings)
    assert to_b64(STATIC_KEY.private) not in "\n".join(cli.describe(settings))


def garbage_key_file(tmp_path: Path) -> None:
    (tmp_path / "wg0.key").write_text("garbage")
    (tmp_path / "wg0.key").chmod(0o600)


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda p: None, "no such file"),
        (lambda p: key_file(p, mode=0o644), "chmod 600"),
        (lambda p: key_file(p, KeyPair.generate()), "not the one"),
        (lambda p: garbage_key_file(p), "not a"),
    ],
)
def test_a_missing_or_wrong_key_file_is_a_one_line_error(
    tmp_path: Path, setup: object, fragment: str
) -> None:
    setup(tmp_path)  # type: ignore[operator]
    path = tmp_path / "wg0.key"
    with pytest.raises(ConfigError) as caught:
        settings_for(tmp_path, "wg0", "10.1.1.1", "beta", peer_yaml=f"privateKeyFile: {path}\n")
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    assert STATIC_KEY.private.hex() not in str(caught.value)


def test_a_dynamic_node_needs_no_key_file_and_pins_the_static(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "--no-tui", "wg0", "10.1.1.7", "bob")
    assert settings.private_key is None
    host = FakeNet().host("198.51.100.7")

    async def build() -> None:
        node = await daemon.build_node(settings, KeyPair.generate(), host)
        (target,) = node.statics.values()
        assert target.pinned_key == STATIC_KEY.public

    trio.run(build)


def test_a_node_meshes_with_the_pinned_static() -> None:
    lab = Lab({"beta": 1})
    beta = lab.start("beta")
    bob = lab.start("bob", 2)
    pinned = bob.statics[beta.info.wg_ip]
    pinned.pinned_key = KeyPair.generate().public  # not beta's: no session
    lab.run_until(2.0)
    assert not bob.sessions and bob.drops.get("not the pinned key", 0) >= 1
    pinned.pinned_key = from_b64(beta.info.public_key)  # beta's own
    lab.run_until(5.0)
    assert beta.info.wg_ip in bob.sessions
