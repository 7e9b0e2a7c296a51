"""The WireGuard backends' commands, and the first one started early.

Light on purpose (the standard library only): the command line imports it
before the daemon's imports (trio and the rest, a quarter of a second of CPU
on a busy 2-core box) and starts the first backend's command then, so that
the interface is made while Python imports. ``wgdev.WgInterface.create``
takes the started command over (``EarlyStart``); the backends after it are
tried there as always.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from types import FrameType

Command = tuple[str, list[str], dict[str, str] | None]  # backend, argv, environment
SOCKET_DIR = "/var/run/wireguard"  # where wireguard-go and boringtun put X.sock

# Environment variables that would change how a userspace daemon starts
# (LOG_LEVEL: wireguard-go's daemon would keep our stdout and stderr).
_DAEMON_ENV_DROP = (
    "LOG_LEVEL",
    "WG_PROCESS_FOREGROUND",
    "WG_TUN_FD",
    "WG_UAPI_FD",
    "WG_TUN_NAME_FILE",
    "WG_LOG_LEVEL",
)


def kernel_may_have_wireguard(root: str = "/", release: str | None = None) -> bool:
    """Is ``ip link add X type wireguard`` worth trying first?

    Yes if the module is loaded or built in (``/sys/module/wireguard``), or
    one the kernel can load is listed for the running kernel. Where neither
    is (a container, a VM without modules), that try only fails: a process
    and 6-17 ms on the way to the first handshake when four daemons start on
    two cores.
    """
    if os.path.isdir(os.path.join(root, "sys/module/wireguard")):
        return True
    modules = os.path.join(root, "lib/modules", release or os.uname().release)
    for listing in ("modules.dep", "modules.builtin"):
        try:
            with open(os.path.join(modules, listing), "rb") as f:
                if b"/wireguard.ko" in f.read():
                    return True
        except OSError:
            continue
    return False


def backend_commands(name: str) -> list[Command]:
    """The commands that make interface ``name``, in the order to try them:
    the kernel module, wireguard-go, boringtun; the kernel last where it has
    no WireGuard module to load (still tried: modules may be kept elsewhere)."""
    env = {k: v for k, v in os.environ.items() if k not in _DAEMON_ENV_DROP}
    kernel: Command = ("kernel", ["ip", "link", "add", name, "type", "wireguard"], None)
    userspace: list[Command] = [
        ("wireguard-go", ["wireguard-go", name], env),
        ("boringtun", ["boringtun-cli", name], env),
        ("boringtun", ["boringtun", name], env),
    ]
    return [kernel, *userspace] if kernel_may_have_wireguard() else [*userspace, kernel]


def link_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


class EarlyStart:
    """The first backend's command, started before the daemon's imports.

    ``WgInterface.create`` takes it over (``take``) and waits for it as for a
    command it ran itself. If the daemon never gets that far (its imports
    fail, a signal), the command line calls ``abandon``: the interface the
    command made goes, so nothing is left half set up.
    """

    def __init__(
        self, name: str, commands: list[Command], process: subprocess.Popen[bytes]
    ) -> None:
        self.name = name
        # The backends in the order chosen, the first one started already.
        self.commands = commands
        self.backend, self.argv, _env = commands[0]
        self.process = process
        self.started = time.monotonic()
        self.taken = False

    def take(self) -> EarlyStart:
        self.taken = True
        return self

    def finish(self) -> tuple[int, str]:
        """Wait for the command (blocking): its exit code and stderr."""
        _out, err = self.process.communicate()
        return self.process.returncode, err.decode(errors="replace")

    def abandon(self) -> None:
        """Not taken over: wait for the command and delete what it made."""
        code, _err = self.finish()
        if code == 0 and link_exists(self.name):  # (a userspace daemon goes with its link)
            argv = ["ip", "link", "del", "dev", self.name]
            subprocess.run(argv, capture_output=True, check=False)


def start_early(name: str, commands: list[Command] | None = None) -> EarlyStart | None:
    """Start the first backend's command for ``name``, unless a link of that
    name exists (a stale or kept one: ``create`` decides about it) or the
    command cannot be started (``create`` tries the next ones)."""
    if link_exists(name) or os.path.exists(os.path.join(SOCKET_DIR, f"{name}.sock")):
        return None  # (a socket without its link: a daemon still going)
    commands = commands or backend_commands(name)
    _backend, argv, env = commands[0]
    try:
        process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError:
        return None
    # A SIGTERM while the daemon imports (before it handles signals) ends
    # the command line's way, through ``abandon``, not silently.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    return EarlyStart(name, commands, process)


def _exit_on_signal(_signum: int, _frame: FrameType | None) -> None:
    # A stop, as the daemon's own SIGTERM is: exit 0 once what we made is gone.
    raise SystemExit(0)
