"""Running as a system service: the systemd unit for one node.

``wg_netmanager install`` prints it (as the original tool's ``install`` did);
see the README for where to save it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from wg_netmanager.config import Settings

UNIT_NAME = "wg_netmanager.service"  # the original tool's name, so its users find theirs
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@%$+=:,./-]+")  # after doubling % and $


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


def systemd_unit(settings: Settings, command: Sequence[str]) -> str:
    """A unit that runs ``command`` (absolute paths, headless) at boot.

    Restarted a second after a failure, except after exit code 2: that is a
    configuration error, which a restart would not fix. SIGTERM goes to the
    daemon only (KillMode=mixed): it removes its routes and interface itself,
    which also ends a wireguard-go it started.
    """
    who = f"{settings.name} ({settings.wg_ip}) on {settings.interface}"
    service = UNIT_NAME.removesuffix(".service")
    lines = [
        f"# wg_netmanager for {who}, printed by 'wg_netmanager install'.",
        f"# Save it as /etc/systemd/system/{UNIT_NAME}, then run:",
        f"#   systemctl daemon-reload && systemctl enable --now {service}",
        "[Unit]",
        f"Description=wg_netmanager: WireGuard mesh node {who}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(exec_quote(word) for word in command),
        "KillMode=mixed",
        "Restart=on-failure",
        "RestartSec=1",
        "RestartPreventExitStatus=2",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines)
