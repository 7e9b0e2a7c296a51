"""An installed service, read back: the daemon's command line it would run.

``wg_netmanager install --root ROOT`` writes the systemd unit or OpenRC
script and ``/etc/wg_netmanager/<interface>/`` under ROOT. These helpers
read them the way systemd and OpenRC would, with the service's ``/etc``
paths moved under ROOT, so a test can hand the result to the command line
parser (or run it) and see which node the service would start.
"""

from __future__ import annotations

import configparser
import shlex
import subprocess
from pathlib import Path

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
