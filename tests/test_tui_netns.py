"""The TUI of a real daemon in the three-box testbed, driven through tmux.

alice (static) and charlie (behind NAT) run headless; bob runs with the TUI
inside a tmux session (the tmux server on the host, bob's daemon in its box
through the testbed's ``exec``). The test reads the screen with
``capture-pane``, presses keys with ``send-keys``, reads ``status`` from a
second process, and quits with ``q``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import (
    REPO_ROOT,
    Testbed,
    network_yaml,
    require_netns,
    require_tools,
    script_path,
    unique_prefix,
)
from tests.sim import SimNet
from tests.waits import wait_until

pytestmark = pytest.mark.netns

NODES = {"alice": "10.1.1.1", "bob": "10.1.1.2", "charlie": "10.1.1.3"}
NETWORK_YAML = network_yaml(pingInterval=1, deadAfter=3)


def core_measures_every_latency() -> bool:
    """Whether the core reports an RTT for dynamic peers too (else only for static ones)."""
    net = SimNet()
    net.add_host("beta", "198.51.100.1", "10.1.1.1", static=True)
    net.add_host("alpha", "198.51.100.2", "10.1.1.2")
    net.add_host("gamma", "198.51.100.3", "10.1.1.3")
    for name in ("beta", "alpha", "gamma"):
        net.start(name)
    net.run_for(30.0)
    node = net.hosts["alpha"].node
    assert node is not None
    return any(p.name == "gamma" and p.rtt is not None for p in node.statistics(net.now).peers)


class Tmux:
    """A private tmux server (own socket), one session."""

    def __init__(self, name: str) -> None:
        self.server = name
        self.session = name
        self.socket = ""

    def __call__(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.server, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, command: str, cols: int = 140, rows: int = 40) -> None:
        size = ["-x", str(cols), "-y", str(rows)]
        res = self("new-session", "-d", "-s", self.session, *size, command)
        assert res.returncode == 0, res.stderr
        self.socket = self("display-message", "-p", "#{socket_path}").stdout.strip()

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", self.session).stdout

    def keys(self, *keys: str) -> None:
        res = self("send-keys", "-t", self.session, *keys)
        assert res.returncode == 0, res.stderr

    def kill(self) -> None:
        self("kill-server")
        if self.socket:  # tmux leaves its socket file behind
            Path(self.socket).unlink(missing_ok=True)


def row(screen: str, name: str) -> str:
    return next((line for line in screen.splitlines() if line.split()[:1] == [name]), "")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    require_netns()
    require_tools("tmux")
    t = Tmux(f"wgnm-tui-{os.getpid()}")
    try:
        yield t
    finally:
        t.kill()


def test_tui_shows_the_mesh_takes_keys_and_quits_cleanly(tmux: Tmux, tmp_path: Path) -> None:
    all_latencies = core_measures_every_latency()
    config = tmp_path / "network.yaml"
    config.write_text(NETWORK_YAML)
    config.chmod(0o600)
    env = {"PYTHONPATH": str(REPO_ROOT)}

    def run_dir(box: str) -> str:  # /run is shared by the boxes: one control dir each
        return str(tmp_path / f"run-{box}")

    with Testbed(script_path("three_boxes"), unique_prefix("tui")) as tb:
        for box in ("alice", "charlie"):
            argv = [sys.executable, "-m", "wg_netmanager", "-c", str(config), "--no-tui", "-v"]
            tb.spawn(
                box,
                [*argv, "wg0", NODES[box], box],
                tmp_path / f"{box}.log",
                env={**env, "WG_NETMANAGER_RUN_DIR": run_dir(box)},
            )
        exit_file = tmp_path / "bob.exit"
        bob = tb.box_cmd(
            "bob",
            "env",
            f"PYTHONPATH={REPO_ROOT}",
            f"WG_NETMANAGER_RUN_DIR={run_dir('bob')}",
            sys.executable, "-m", "wg_netmanager", "-c", str(config), "-v",
            "--logfile", str(tmp_path / "bob.log"),
            "wg0", NODES["bob"], "bob",
        )  # fmt: skip
        command = f"{shlex.join(bob)}; echo EXIT=$? | tee {exit_file}; sleep 60"
        tmux.start(command)

        def logs() -> str:
            text = "\n".join(f"--- {p.name}\n{p.read_text()}" for p in tmp_path.glob("*.log"))
            return f"{text}\n--- screen\n{tmux.screen()}"

        def mesh_shown() -> bool:
            screen = tmux.screen()
            alice, charlie = row(screen, "alice"), row(screen, "charlie")
            return (
                "direct static" in alice
                and " ms " in alice
                and "direct NAT" in charlie
                and (" ms " in charlie or not all_latencies)
            )

        assert wait_until(mesh_shown, timeout=20, interval=0.2), logs()
        screen = tmux.screen()
        assert screen.splitlines()[0].strip().startswith("bob 10.1.1.2 on wg0 (wireguard-go)")
        assert "nodes 2  direct 2  via gateway 0" in screen
        assert "198.51.100.1:50001" in row(screen, "alice")
        assert "charlie (10.1.1.3) reachable via alice" in screen  # the log pane
        assert "Traceback" not in screen

        # s: by name (alice, charlie); Enter: alice's details; Esc closes them.
        tmux.keys("s")
        assert wait_until(lambda: "sort: name" in tmux.screen(), timeout=3), logs()
        tmux.keys("Enter")
        assert wait_until(lambda: "public key" in tmux.screen(), timeout=3), logs()
        screen = tmux.screen()
        assert "10.1.1.1" in screen and "direct static" in screen and "Esc or Enter" in screen
        tmux.keys("Escape")
        assert wait_until(lambda: "public key" not in tmux.screen(), timeout=3), logs()
        tmux.keys("f")
        assert wait_until(lambda: "level: WARNING+" in tmux.screen(), timeout=3), logs()
        # The terminal shrinks: everything is laid out again for 90x24.
        assert tmux("resize-window", "-t", tmux.session, "-x", "90", "-y", "24").returncode == 0

        def relaid() -> bool:
            lines = tmux.screen().splitlines()
            return (
                len(lines) == 24
                and lines[-1].startswith(" q quit")
                and "charlie" in "\n".join(lines)
            )

        assert wait_until(relaid, timeout=3), logs()

        # A second process reads the same peers through the control socket.
        status = [sys.executable, "-m", "wg_netmanager", "status"]
        for box in ("bob", "alice"):
            res = tb.run(
                box, "env", f"PYTHONPATH={REPO_ROOT}", f"WG_NETMANAGER_RUN_DIR={run_dir(box)}",
                *status, "--json", "wg0",
            )  # fmt: skip
            assert res.returncode == 0, res.stderr
            doc = json.loads(res.stdout)
            assert doc["name"] == box and doc["interface"] == "wg0"
            others = {n: ip for n, ip in NODES.items() if n != box}
            assert {p["name"]: p["wg_ip"] for p in doc["peers"]} == others
        res = tb.run(
            "bob", "env", f"PYTHONPATH={REPO_ROOT}", f"WG_NETMANAGER_RUN_DIR={run_dir('bob')}",
            *status, "wg0",
        )  # fmt: skip
        assert res.returncode == 0 and "direct static" in row(res.stdout, "alice"), res.stderr

        # q: clean shutdown, exit code 0, nothing left behind; the terminal is usable again.
        tmux.keys("q")
        assert wait_until(exit_file.exists, timeout=8), logs()
        assert wait_until(lambda: "EXIT=" in exit_file.read_text(), timeout=2)
        assert exit_file.read_text().strip() == "EXIT=0", logs()
        assert tb.run("bob", "ip", "link", "show", "wg0").returncode != 0
        assert not Path(run_dir("bob"), "wg0.sock").exists()
        screen = tmux.screen()
        assert "stopped" in screen and "EXIT=0" in screen and "Peers (" not in screen
        assert "Traceback" not in logs()


def test_the_static_tui_shows_latency_to_every_node(tmux: Tmux, tmp_path: Path) -> None:
    """The static is the machine a user most likely watches: its nodes ping it,
    it pings nobody on its own, so the TUI must make it measure."""
    config = tmp_path / "network.yaml"
    config.write_text(NETWORK_YAML)
    config.chmod(0o600)
    env = {"PYTHONPATH": str(REPO_ROOT)}
    with Testbed(script_path("three_boxes"), unique_prefix("tuis")) as tb:
        for box in ("bob", "charlie"):
            argv = [sys.executable, "-m", "wg_netmanager", "-c", str(config), "--no-tui"]
            tb.spawn(
                box,
                [*argv, "wg0", NODES[box], box],
                tmp_path / f"{box}.log",
                env={**env, "WG_NETMANAGER_RUN_DIR": str(tmp_path / f"run-{box}")},
            )
        alice = tb.box_cmd(
            "alice",
            "env",
            f"PYTHONPATH={REPO_ROOT}",
            f"WG_NETMANAGER_RUN_DIR={tmp_path / 'run-alice'}",
            sys.executable, "-m", "wg_netmanager", "-c", str(config),
            "--logfile", str(tmp_path / "alice.log"),
            "wg0", NODES["alice"], "alice",
        )  # fmt: skip
        tmux.start(f"{shlex.join(alice)}; sleep 60")

        def logs() -> str:
            text = "\n".join(f"--- {p.name}\n{p.read_text()}" for p in tmp_path.glob("*.log"))
            return f"{text}\n--- screen\n{tmux.screen()}"

        def latencies_shown() -> bool:
            screen = tmux.screen()
            return all(" ms " in row(screen, name) for name in ("bob", "charlie"))

        assert wait_until(latencies_shown, timeout=20, interval=0.2), logs()
        header = tmux.screen().splitlines()[:2]
        assert header[0].strip().startswith("alice 10.1.1.1 on wg0 (wireguard-go), static")
        assert "static node" in header[1] and "serving 2 nodes" in header[1], header
        assert "the only static" in header[1] and "statics 0/0" not in header[1]
        tmux.keys("q")
