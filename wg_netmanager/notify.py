"""The service manager's notification protocol (sd_notify(3)), in a few lines.

systemd (``Type=notify``) passes the path of a unix datagram socket in
``NOTIFY_SOCKET`` (``@name`` for the abstract namespace); the daemon sends
newline-separated ``KEY=value`` fields to it: ``READY=1`` once the interface
is up and the admin socket bound, ``STATUS=...`` when the summary changes,
``WATCHDOG=1`` every half ``WATCHDOG_USEC``, ``RELOADING=1`` ... ``READY=1``
around a reload, ``STOPPING=1`` on shutdown. Without ``NOTIFY_SOCKET`` (a
terminal, OpenRC) every call does nothing. ``to_journal`` tells whether a
stream is journald's (log lines then carry a syslog priority prefix).

Written here rather than taken from PyPI: ``sdnotify`` (last release 2017)
swallows every error and knows nothing of the watchdog, and the libsystemd
bindings need a C toolchain and libsystemd headers; this is one ``sendto``.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Mapping, MutableMapping

log = logging.getLogger("wg_netmanager")


class Notifier:
    """Sends notifications to ``address`` (None: to nobody)."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        #: Seconds between ``WATCHDOG=1`` (half the manager's timeout), None if not asked.
        self.watchdog_interval = None if not watchdog_usec else watchdog_usec / 2e6
        self._sock: socket.socket | None = None

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for, taken out of ``environ`` (default
        ``os.environ``) so that ``ip``, ``wg`` and wireguard-go never see it."""
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", None) or None
        watchdog = _watchdog_usec(env)
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """One datagram of ``KEY=value`` fields; False if it could not be sent
        (logged at debug level: the daemon runs on without its manager)."""
        if self.address is None:
            return False
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]  # the abstract namespace
        elif not target.startswith("/"):
            log.debug("NOTIFY_SOCKET %r: only unix socket paths are supported", target)
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # MSG_DONTWAIT: a manager that does not read must never stall the trio loop.
            self._sock.sendto("\n".join(fields).encode(), socket.MSG_DONTWAIT, target)
        except OSError as exc:
            log.debug("notify %s: %s", fields[0], os.strerror(exc.errno or errno.EIO))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        # MONOTONIC_USEC: systemd's notify-reload (v253+) pairs the reload with it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def to_journal(stream: object) -> bool:
    """Is ``stream`` journald's? systemd says so in ``JOURNAL_STREAM`` (device:inode)."""
    expected = os.environ.get("JOURNAL_STREAM")
    try:
        st = os.fstat(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """``WATCHDOG_USEC`` if it is meant for this process (``WATCHDOG_PID``, if set, is ours)."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    text = env.get("WATCHDOG_USEC", "")
    return int(text) if text.isascii() and text.isdigit() and int(text) > 0 else None


def _one_line(text: str) -> str:
    return " ".join(text.split())
