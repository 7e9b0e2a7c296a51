"""Point systemd-resolved at our name server for the mesh's domain, and take it back.

Where systemd-resolved runs, ``resolvectl dns <if> <wg ip>`` and
``resolvectl domain <if> ~<domain>`` send this machine's lookups of
``*.<domain>`` (and only those: ``~`` makes it a routing-only domain) to the
daemon's own name server, so ``ssh charlie.mesh`` works; ``resolvectl revert
<if>`` on exit. Elsewhere nothing happens (the README says what to add).
"""

from __future__ import annotations

import logging
import os
import shutil
from ipaddress import IPv4Address

from .proc import CommandError, run

log = logging.getLogger(__name__)

RESOLVED_DIR = "/run/systemd/resolve"  # made by systemd-resolved while it runs


def resolved_runs() -> bool:
    return shutil.which("resolvectl") is not None and os.path.isdir(RESOLVED_DIR)


def link_commands(interface: str, wg_ip: IPv4Address, domain: str) -> list[list[str]]:
    return [
        ["resolvectl", "dns", interface, str(wg_ip)],
        ["resolvectl", "domain", interface, f"~{domain}"],
    ]


async def point(interface: str, wg_ip: IPv4Address, domain: str) -> bool:
    """Send lookups of ``*.<domain>`` to ``wg_ip`` on ``interface``; whether
    it worked (a failure is logged with its command and stderr, and names
    still answer on the wg IP for whoever asks there)."""
    try:
        for argv in link_commands(interface, wg_ip, domain):
            await run(argv)
    except CommandError as exc:
        log.warning("DNS: could not point systemd-resolved at %s: %s", wg_ip, exc)
        return False
    log.info("DNS: systemd-resolved sends *.%s to %s on %s", domain, wg_ip, interface)
    return True


async def revert(interface: str) -> None:
    try:
        await run(["resolvectl", "revert", interface])
    except CommandError as exc:  # (the interface may be gone already)
        log.debug("DNS: resolvectl revert %s: %s", interface, exc)
