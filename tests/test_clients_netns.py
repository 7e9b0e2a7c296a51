"""A plain WireGuard client for real: the working example's static beta
(pinned) registers a "phone" with ``wg_netmanager client add``; charlie's
box runs no daemon, only wireguard-go configured from the printed wg-quick
config (``wg setconf`` and ``ip``). The phone reaches delta (a dynamic node
behind the home router) through beta and is reached by it; beta restarted
keeps it; ``client remove`` cuts it everywhere.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import REPO_ROOT, Daemons, daemons_in, network_yaml
from wg_netmanager.keys import KeyPair, to_b64

pytestmark = pytest.mark.netns

NODES = {"beta": "10.1.1.1", "alpha": "10.1.1.2", "delta": "10.1.1.4"}
PHONE_IP = "10.1.1.50"
PHONE_IF = "wgc"


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Daemons]:
    beta_key = KeyPair.generate()
    key_file = tmp_path / "beta.key"
    key_file.write_text(to_b64(beta_key.private) + "\n")
    key_file.chmod(0o600)
    peer = tmp_path / "beta-peer.yaml"
    peer.write_text(f"privateKeyFile: {key_file}\n")
    pin = f"    wgIp: 10.1.1.1\n    publicKey: {beta_key.public_b64}\n"
    config = network_yaml(pingInterval=1).replace("    wgIp: 10.1.1.1\n", pin)
    with daemons_in("working_example", tmp_path, NODES, config, Daemons) as mesh:
        mesh.start("beta", options=["-p", str(peer)])
        mesh.start("alpha")
        mesh.start("delta")
        mesh.wait(lambda: mesh.route("delta", "beta") == "direct", 20)
        mesh.wait(lambda: mesh.route("alpha", "beta") == "direct", 20)
        yield mesh


def cli(mesh: Daemons, *argv: str) -> subprocess.CompletedProcess[str]:
    """``wg_netmanager ARGV`` in beta's box."""
    program = [sys.executable, "-m", "wg_netmanager", *argv]
    return mesh.tb.run("beta", "env", f"PYTHONPATH={REPO_ROOT}", *program, timeout=20)


def wg_setconf_text(config: str) -> str:
    """The printed wg-quick config without wg-quick's own keys (what ``wg setconf`` reads)."""
    return "".join(
        line + "\n" for line in config.splitlines() if not line.startswith(("Address", "DNS"))
    )


def phone_up(mesh: Daemons, config: str) -> None:
    """charlie becomes the phone: wireguard-go and the config, nothing else."""
    tb = mesh.tb
    tb.spawn("charlie", ["wireguard-go", "-f", PHONE_IF], mesh.tmp / "phone.log")
    assert mesh.wait(lambda: tb.run("charlie", "wg", "show", PHONE_IF).returncode == 0, 10) < 10
    run = tb.run("charlie", "wg", "setconf", PHONE_IF, "/dev/stdin", input=wg_setconf_text(config))
    assert run.returncode == 0, run.stderr
    for argv in (
        ["ip", "addr", "add", f"{PHONE_IP}/32", "dev", PHONE_IF],
        ["ip", "link", "set", PHONE_IF, "up"],
        ["ip", "route", "add", "10.1.1.0/24", "dev", PHONE_IF],
    ):
        assert tb.run("charlie", *argv).returncode == 0, argv


def test_a_phone_joins_through_the_static_survives_its_restart_and_is_cut_on_removal(
    mesh: Daemons,
) -> None:
    tb = mesh.tb
    added_at = time.monotonic()
    add = cli(mesh, "client", "add", "--ip", PHONE_IP, "phone", "wg0")
    assert add.returncode == 0, add.stderr
    config = add.stdout
    assert f"Address = {PHONE_IP}/32" in config and "Endpoint = 198.51.100.1:50001" in config
    assert "AllowedIPs = 10.1.1.0/24" in config and "PersistentKeepalive = 25" in config
    phone_up(mesh, config)

    mesh.wait(lambda: tb.ping("charlie", NODES["delta"]), 20)
    print(f"client add to the phone's first ping answered: {time.monotonic() - added_at:.2f} s")
    # The phone reaches every node, the static itself included, and every node the phone.
    for box, ip in NODES.items():
        assert mesh.wait(lambda ip=ip: tb.ping("charlie", ip), 10) < 10, box
        assert tb.ping(box, PHONE_IP), box
    assert mesh.route("delta", "beta") == "direct"
    assert f"{PHONE_IP} via 10.1.1.1" in mesh.routes("delta")

    listed = cli(mesh, "client", "list", "wg0")
    assert listed.returncode == 0 and "phone" in listed.stdout and PHONE_IP in listed.stdout
    phone = next(p for p in mesh.status("beta")["peers"] if p["wg_ip"] == PHONE_IP)
    assert phone["client"] and phone["handshake_age"] is not None and phone["rx_bytes"] > 0
    on_delta = next(p for p in mesh.status("delta")["peers"] if p["wg_ip"] == PHONE_IP)
    assert on_delta["client"] and on_delta["path"] == "via"
    again = cli(mesh, "client", "add", "--ip", PHONE_IP, "tablet", "wg0")
    assert again.returncode == 2 and "in use by the client phone" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    # The static restarts: the registration is read back, the phone works on.
    mesh.stop_all()
    mesh.start("beta", options=["-p", str(mesh.tmp / "beta-peer.yaml")])
    mesh.start("delta")
    mesh.wait(lambda: tb.ping("delta", PHONE_IP), 30)
    assert tb.ping("charlie", NODES["delta"])

    removed = cli(mesh, "client", "remove", "phone", "wg0")
    assert removed.returncode == 0, removed.stderr
    mesh.wait(lambda: PHONE_IP not in mesh.routes("delta"), 10)
    assert not tb.ping("charlie", NODES["delta"])
    assert not tb.ping("delta", PHONE_IP)
    state = (mesh.tmp / "clients-10.1.1.1.json").read_text()
    assert "phone" not in state
