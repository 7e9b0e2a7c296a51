"""The demo shows what a user sees: the ping matrix and, beside it, one box's TUI.

``scripts/demo.py`` runs in a terminal of a private tmux server (as a
newcomer's terminal); it opens its own tmux inside, with the matrix in one
pane and charlie's daemon with its TUI in the other, and ends by itself
after ``--seconds``, removing the testbed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import require_netns, require_tools, script_path, unique_prefix, wait_until

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.netns


class Terminal:
    """A private tmux server with one 200x50 session: the newcomer's terminal."""

    def __init__(self) -> None:
        self.server = f"wgnm-demo-test-{os.getpid()}"
        self.socket = ""

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.server, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    def start(self, command: str) -> None:
        result = self("new-session", "-d", "-s", "t", "-x", "200", "-y", "50", command)
        assert result.returncode == 0, result.stderr
        self.socket = self("display-message", "-p", "#{socket_path}").stdout.strip()

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "t").stdout


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    require_netns()
    require_tools("tmux")
    term = Terminal()
    try:
        yield term
    finally:
        term("kill-server")
        if term.socket:
            Path(term.socket).unlink(missing_ok=True)


def test_demo_shows_the_matrix_and_a_tui(terminal: Terminal) -> None:
    prefix = unique_prefix("dm")
    demo = [sys.executable, "-m", "scripts.demo", "--topology", "three_boxes"]
    demo += ["--seconds", "12", "--prefix", prefix]
    # The pane stays after the demo, so that its last words can be read.
    terminal.start(
        f"cd {shlex.quote(str(REPO))} && {shlex.join(demo)}; echo DEMO-EXIT=$?; sleep 60"
    )
    try:

        def both_shown() -> bool:
            screen = terminal.screen()
            matrix = "ping from" in screen and screen.count(" ok") >= 6  # 3 boxes, 6 pairs
            tui = "charlie 10.1.1.3 on wg0" in screen and "Peers (2)" in screen
            return matrix and tui and "direct static" in screen

        assert wait_until(both_shown, timeout=30, interval=0.5), terminal.screen()
        assert "q quit" in terminal.screen()  # the TUI's key line: the real TUI, not a log
        assert wait_until(lambda: "DEMO-EXIT=" in terminal.screen(), timeout=40), terminal.screen()
        screen = terminal.screen()
        assert "DEMO-EXIT=0" in screen and "testbed removed" in screen, screen
        assert "--- charlie.log" in screen  # its log went to a file too
    finally:
        subprocess.run(
            ["bash", script_path("three_boxes"), "down", prefix],
            capture_output=True,
            timeout=60,
            check=False,
        )
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    assert f"{prefix}-" not in listed.stdout
