"""An installed service, read back, and a service manager's notify socket.

``wg_netmanager install --root ROOT`` writes the systemd unit or OpenRC
script and ``/etc/wg_netmanager/<interface>/`` under ROOT. These helpers
read them the way systemd and OpenRC would, with the service's ``/etc``
paths moved under ROOT, so a test can hand the result to the command line
parser (or run it) and see which node the service would start.
:class:`NotifySocket` receives what a daemon tells systemd (sd_notify).
"""

from __future__ import annotations

import configparser
import re
import select
import shlex
import socket
import subprocess
import time
from pathlib import Path

from tests.netns import Daemons
from wg_netmanager import service

CONFIG_DIR = service.CONFIG_DIR


def unit_of(text: str) -> configparser.ConfigParser:
    """A unit file's sections (systemd's syntax is close enough to INI for ours)."""
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def options_of(root: Path, interface: str) -> list[str]:
    """The words of ``OPTIONS=`` in the instance's options file."""
    text = (root / CONFIG_DIR.lstrip("/") / interface / "options").read_text()
    [line] = [line for line in text.splitlines() if line.startswith("OPTIONS=")]
    return shlex.split(line.removeprefix("OPTIONS="))[0].split()


def systemd_argv(root: Path, interface: str) -> list[str]:
    """ExecStart of ``wg_netmanager@<interface>`` as systemd runs it: ``%i``
    filled in, ``$OPTIONS`` split into words, paths under ``root``."""
    unit = unit_of((root / service.UNIT_DIR.lstrip("/") / service.UNIT_NAME).read_text())
    words = []
    for word in shlex.split(unit["Service"]["ExecStart"]):
        if word == "$OPTIONS":
            words += options_of(root, interface)
            continue
        word = word.replace("%i", interface)
        if word.startswith(CONFIG_DIR + "/"):
            word = str(root) + word
        words.append(word)
    return words


def openrc_script(root: Path) -> Path:
    return root / service.INIT_DIR.lstrip("/") / service.SCRIPT_NAME


def run_openrc(root: Path, interface: str, shell_code: str) -> subprocess.CompletedProcess[str]:
    """Source the installed OpenRC script (its ``/etc`` paths under ``root``)
    as ``openrc-run`` would for ``wg_netmanager.<interface>``, then run
    ``shell_code``; OpenRC's helpers (ebegin, eend, supervise-daemon) echo
    what they are asked."""
    script = openrc_script(root).read_text().replace(CONFIG_DIR + "/", f"{root}{CONFIG_DIR}/")
    stubs = 'ebegin() { echo "ebegin $*"; }\neend() { echo "eend $*"; return "$1"; }\n'
    copy = root / "openrc-under-test.sh"
    copy.write_text(stubs + script)
    bin_dir = root / "openrc-stubs"  # a program: dash allows no '-' in function names
    bin_dir.mkdir(exist_ok=True)
    supervise = bin_dir / "supervise-daemon"
    supervise.write_text('#!/bin/sh\necho "supervise-daemon $*"\n')
    supervise.chmod(0o755)
    return subprocess.run(
        ["sh", "-c", f'. "$1"\n{shell_code}', "sh", str(copy)],
        env={
            "RC_SVCNAME": f"{service.SCRIPT_NAME}.{interface}",
            "PATH": f"{bin_dir}:/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def openrc_argv(root: Path, interface: str) -> list[str]:
    """``command`` and the words of ``command_args`` as supervise-daemon runs them."""
    result = run_openrc(root, interface, 'printf "%s\\n" "$command" $command_args')
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


class NotifySocket:
    """A service manager's end of sd_notify: a bound unix datagram socket.

    ``address`` is what ``NOTIFY_SOCKET`` says (``@name`` for the abstract
    namespace, which is per network namespace: a daemon in a box needs a
    path). ``received()`` collects every datagram so far with the
    ``time.monotonic()`` it was read at.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.heard: list[tuple[float, str]] = []  # (monotonic time, field)

    def datagrams(self) -> list[str]:
        """Every datagram that arrived since the last look, in order."""
        out: list[str] = []
        while True:
            try:
                datagram = self.sock.recv(4096).decode()
            except BlockingIOError:
                return out
            self.heard += [(time.monotonic(), f) for f in datagram.split("\n")]
            out.append(datagram)

    def received(self) -> list[str]:
        """The fields of every datagram since the last look, in order."""
        return [f for datagram in self.datagrams() for f in datagram.split("\n")]

    def wait_for(self, field: str, timeout: float, after: float = 0.0) -> float:
        """When ``field`` arrived (``time.monotonic()``), waiting up to ``timeout``
        seconds; only arrivals after ``after`` count. TimeoutError if it never came."""
        deadline = time.monotonic() + timeout
        while True:
            self.received()
            for at, got in self.heard:
                if got == field and at > after:
                    return at
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {field} within {timeout} s; heard {self.heard}")
            select.select([self.sock], [], [], min(remaining, 0.5))

    def close(self) -> None:
        self.sock.close()


# --- pings between boxes, counted --------------------------------------------------------

PING_INTERVAL = 0.02  # seconds between pings: 50 a second on every pair


def start_pings(
    mesh: Daemons, pairs: list[tuple[str, str]], count: int
) -> dict[tuple[str, str], Path]:
    """``count`` pings from a to b's wg IP, every PING_INTERVAL, for each pair,
    in the background (spawned in the boxes); their outputs."""
    outputs = {}
    for a, b in pairs:
        out = mesh.tmp / f"ping-{a}-{b}-{time.monotonic_ns()}.out"
        argv = ["ping", "-n", "-q", "-i", str(PING_INTERVAL), "-c", str(count), "-W", "2"]
        mesh.tb.spawn(a, [*argv, mesh.nodes[b]], out)
        outputs[(a, b)] = out
    return outputs


def ping_losses(outputs: dict[tuple[str, str], Path], timeout: float) -> dict[tuple[str, str], int]:
    """Pings not answered, per pair, once every ping finished (waiting up to ``timeout`` s)."""
    losses = {}
    deadline = time.monotonic() + timeout
    for pair, out in outputs.items():
        while "packets transmitted" not in out.read_text():
            assert time.monotonic() < deadline, f"{pair}: ping did not finish"
            time.sleep(0.2)
        found = re.search(r"(\d+) packets transmitted, (\d+) received", out.read_text())
        assert found is not None, out.read_text()
        losses[pair] = int(found[1]) - int(found[2])
    return losses
