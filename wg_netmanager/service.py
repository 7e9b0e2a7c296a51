"""Running as a system service: ``wg_netmanager install`` (also ``service install``).

The package ships a systemd template unit (``data/wg_netmanager@.service``,
instance = interface) and an OpenRC script (``data/wg_netmanager.openrc``,
one symlink ``wg_netmanager.<interface>`` per interface). Installing one
node writes, under ``--root`` (default ``/``):

- the unit (``/etc/systemd/system/wg_netmanager@.service``) or the script
  (``/etc/init.d/wg_netmanager`` and its symlink), with the path of this
  installation's executable instead of the shipped ``/usr/local/bin`` one;
- ``/etc/wg_netmanager/<interface>/network.yaml``: a copy of ``-c``'s file;
- ``.../peer.yaml``: this node (name, wgIp, wgInterface, and -e, -v and
  --mobile, which a reload can then change or report);
- ``.../options``: ``OPTIONS="..."``, the rest of the command line (ports,
  ``-H``, ``-s``), read by both the unit and the script.

Idempotent: a file whose content and mode are already right is left alone;
every file is reported as written, updated or unchanged. Nothing is enabled
or started: the report ends with the commands that do it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

import msgspec

from wg_netmanager.config import ConfigError, Settings

SYSTEMD, OPENRC = "systemd", "openrc"
INIT_SYSTEMS = (SYSTEMD, OPENRC)
UNIT_NAME = "wg_netmanager@.service"
SCRIPT_NAME = "wg_netmanager"
SHIPPED_EXECUTABLE = "/usr/local/bin/wg_netmanager"
CONFIG_DIR = "/etc/wg_netmanager"
UNIT_DIR = "/etc/systemd/system"
INIT_DIR = "/etc/init.d"
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@%$+=:,./-]+")  # after doubling % and $
_OPTION_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")  # safe unquoted in sh and EnvironmentFile
_INSTANCE = re.compile(r"[A-Za-z0-9_.:-]+")  # what a systemd instance name may hold unescaped
_HOME_DIRS = ("/home/", "/root/", "/run/user/")


def shipped(name: str) -> str:
    """A file shipped in the package's ``data`` directory."""
    # Imported here: importlib.resources costs every command a few ms, and
    # only install reads these files.
    from importlib import resources

    return (resources.files("wg_netmanager") / "data" / name).read_text(encoding="utf-8")


def exec_quote(word: str) -> str:
    """``word`` as one argument of an ``ExecStart=`` line (systemd.service(5) quoting).

    systemd expands ``%`` specifiers and ``$`` variables even inside quotes,
    so both are doubled; quotes and backslashes are escaped inside double quotes.
    """
    word = word.replace("%", "%%").replace("$", "$$")
    if _PLAIN_WORD.fullmatch(word):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in escaped)
    return f'"{escaped}"'


def sh_quote(word: str) -> str:
    """``word`` for a double-quoted sh string."""
    return "".join("\\" + c if c in '"\\$`' else c for c in word)


def detect_init(root: str = "/") -> str | None:
    """The init system running under ``root`` (sd_booted(3) for systemd), None if unknown."""
    if os.path.isdir(os.path.join(root, "run/systemd/system")):
        return SYSTEMD
    if os.path.exists(os.path.join(root, "run/openrc")) or os.path.exists(
        os.path.join(root, "sbin/openrc-run")
    ):
        return OPENRC
    return None


def executable() -> list[str]:
    """How a service starts this very installation: its console script, else ``python -m``."""
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script) == "wg_netmanager" and os.path.isfile(script):
        return [os.path.abspath(script)]
    beside = os.path.join(os.path.dirname(sys.executable), "wg_netmanager")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return [beside]  # the console script of the interpreter's own environment
    return [sys.executable, "-m", "wg_netmanager"]


def under_home(command: Sequence[str]) -> bool:
    """Does the command live under a home directory (which ProtectHome=yes hides)?"""
    paths = [command[0], os.path.realpath(command[0]), sys.prefix, os.path.realpath(sys.prefix)]
    return any(path.startswith(_HOME_DIRS) for path in paths)


# --- what goes where ------------------------------------------------------------------


class File(msgspec.Struct, frozen=True):
    path: str  # absolute, as on the target system (without --root)
    content: str
    mode: int
    link: bool = False  # content is a symbolic link's target


def unit_text(command: Sequence[str]) -> str:
    text = shipped(UNIT_NAME)
    start = " ".join(exec_quote(word) for word in command)
    text = text.replace(f"ExecStart={SHIPPED_EXECUTABLE} ", f"ExecStart={start} ", 1)
    if under_home(command):
        text = text.replace("ProtectHome=yes", "ProtectHome=read-only", 1)
    return text


def openrc_text(command: Sequence[str]) -> str:
    text = shipped(f"{SCRIPT_NAME}.openrc")
    text = text.replace(f'command="{SHIPPED_EXECUTABLE}"', f'command="{sh_quote(command[0])}"', 1)
    prefix = " ".join(command[1:])
    return text.replace('command_prefix=""', f'command_prefix="{sh_quote(prefix)}"', 1)


def peer_text(settings: Settings) -> str:
    lines = [
        "# This node, written by 'wg_netmanager install'. A reload (SIGHUP) applies verbosity;",
        "# the other fields need a restart.",
        f"name: {settings.name}",
        f"wgIp: {settings.wg_ip}",
        f"wgInterface: {settings.interface}",
    ]
    if settings.existing_interface:
        lines.append("existingInterface: true")
    if settings.verbosity:
        lines.append(f"verbosity: {settings.verbosity}")
    if settings.exit_node is not None:
        lines.append(f"exitNode: {settings.exit_node}")
    if settings.mobile:
        lines.append("mobile: true")
    return "\n".join(lines) + "\n"


def options_text(interface: str, options: Sequence[str]) -> str:
    for word in options:
        if not _OPTION_WORD.fullmatch(word):
            raise ConfigError(
                f"install: option {word!r} holds characters the service's OPTIONS line "
                "cannot carry; give it without spaces, quotes or $"
            )
    return (
        f"# More command-line options of wg_netmanager on {interface}, written by\n"
        "# 'wg_netmanager install'; read by the systemd unit and the OpenRC script.\n"
        "# Options given here need a restart; the files' contents need only a reload.\n"
        f'OPTIONS="{" ".join(options)}"\n'
    )


def plan(
    settings: Settings,
    init: str,
    options: Sequence[str],
    network_text: str,
    command: Sequence[str],
) -> list[File]:
    """The files installing ``settings`` as a service of ``init`` consists of."""
    interface = settings.interface
    if not _INSTANCE.fullmatch(interface):
        raise ConfigError(
            f"install: interface {interface!r} cannot name a service instance; "
            "use letters, digits, '_', '.', ':' and '-'"
        )
    conf = f"{CONFIG_DIR}/{interface}"
    files = [
        File(f"{conf}/network.yaml", network_text, 0o600),
        File(f"{conf}/peer.yaml", peer_text(settings), 0o600),
        File(f"{conf}/options", options_text(interface, options), 0o600),
    ]
    if init == SYSTEMD:
        files.append(File(f"{UNIT_DIR}/{UNIT_NAME}", unit_text(command), 0o644))
    else:
        script = f"{INIT_DIR}/{SCRIPT_NAME}"
        files.append(File(script, openrc_text(command), 0o755))
        files.append(File(f"{script}.{interface}", SCRIPT_NAME, 0o777, link=True))
    return files


def next_steps(init: str, interface: str) -> list[str]:
    if init == SYSTEMD:
        unit = f"wg_netmanager@{interface}"
        return [
            f"systemctl daemon-reload && systemctl enable --now {unit}",
            f"systemctl status {unit}; journalctl -u {unit}; systemctl reload {unit}",
        ]
    service = f"{SCRIPT_NAME}.{interface}"
    return [
        f"rc-update add {service} default && rc-service {service} start",
        f"rc-service {service} status; rc-service {service} reload",
    ]


# --- writing ---------------------------------------------------------------------------


def install(files: Sequence[File], root: str = "/") -> list[tuple[str, str]]:
    """Write ``files`` under ``root``; (state, path) each: written, updated or unchanged."""
    report = []
    for file in files:
        path = os.path.join(root, file.path.lstrip("/"))
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        state = _place_link(path, file.content) if file.link else _place_file(path, file)
        report.append((state, path))
    return report


def _place_file(path: str, file: File) -> str:
    data = file.content.encode()
    try:
        with open(path, "rb") as existing:
            old: bytes | None = existing.read()
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        old, mode = None, None
    if old == data and mode == file.mode:
        return "unchanged"
    temporary = f"{path}.wg_netmanager-new"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, file.mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temporary, file.mode)  # whatever the umask
        os.replace(temporary, path)  # never a half-written unit or key file
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise
    return "written" if old is None else "updated"


def _place_link(path: str, target: str) -> str:
    if os.path.islink(path):
        if os.readlink(path) == target:
            return "unchanged"
        os.unlink(path)
        os.symlink(target, path)
        return "updated"
    if os.path.lexists(path):
        raise ConfigError(f"install: {path} exists and is not a symbolic link; remove it first")
    os.symlink(target, path)
    return "written"
