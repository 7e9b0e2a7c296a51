"""What ``/proc`` says about a process: name, command line, state, CPU, memory,
and the routes and interface counters of its network namespace.

A process that is gone reads as ``""``, ``None`` or ``[]`` (see each
function), except :func:`cpu_seconds`, which raises ``OSError``: a measurement
of a process that vanished is a failure. (``tests/prober.py`` reads
``/proc/self/net/route`` itself: it runs inside the boxes as a program of its
own.)
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")  # USER_HZ: the unit of the CPU times in stat

Pid = int | str  # a PID, or "self"


@dataclass(frozen=True)
class Stat:
    """The fields of ``/proc/PID/stat`` that tests use; CPU times in clock ticks."""

    comm: str
    state: str  # R, S, D, Z (zombie), X (dead), ...
    utime: int
    stime: int
    cutime: int  # waited-for children
    cstime: int

    @property
    def cpu_seconds(self) -> float:
        return (self.utime + self.stime) / CLK_TCK


def _read_stat(pid: Pid) -> Stat:
    text = Path(f"/proc/{pid}/stat").read_text()
    # comm is in parentheses and may itself contain spaces and parentheses.
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()  # from field 3 (state) on
    ticks = [int(f) for f in fields[11:15]]  # fields 14-17
    return Stat(comm, fields[0], *ticks)


def stat(pid: Pid) -> Stat | None:
    """``/proc/PID/stat``; None if the process is gone."""
    try:
        return _read_stat(pid)
    except OSError:
        return None


def cpu_seconds(pid: Pid) -> float:
    """User + system CPU time ``pid`` used so far (OSError if it is gone)."""
    return _read_stat(pid).cpu_seconds


def comm(pid: Pid) -> str:
    """The process's name (``/proc/PID/comm``); "" if it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cmdline(pid: Pid) -> list[str]:
    """The process's argv; [] if it is gone (or a kernel thread)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1] if raw else []


def rss_kib(pid: Pid = "self") -> int | None:
    """Resident memory (VmRSS) in KiB; None if the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


@dataclass(frozen=True)
class NetRoute:
    """A line of ``/proc/PID/net/route``: the main table, IPv4."""

    dev: str
    dest: str
    gateway: str | None
    mask: str


def _hex_ip(value: str) -> str:
    return socket.inet_ntoa(int(value, 16).to_bytes(4, "little"))


def net_routes(pid: Pid = "self") -> list[NetRoute] | None:
    """The main routing table of ``pid``'s network namespace; None if it is gone."""
    try:
        lines = Path(f"/proc/{pid}/net/route").read_text().splitlines()[1:]
    except OSError:
        return None
    routes = []
    for line in lines:
        f = line.split()
        if len(f) < 8:
            continue
        gateway = _hex_ip(f[2]) if int(f[2], 16) else None
        routes.append(NetRoute(f[0], _hex_ip(f[1]), gateway, _hex_ip(f[7])))
    return routes


def net_dev(pid: Pid, ifname: str) -> tuple[int, int, int, int] | None:
    """(rx bytes, rx packets, tx bytes, tx packets) of ``ifname`` in the network
    namespace of ``pid``; None if the process or the interface is gone."""
    try:
        text = Path(f"/proc/{pid}/net/dev").read_text()
    except OSError:
        return None
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        if name.strip() == ifname:
            f = rest.split()
            return int(f[0]), int(f[1]), int(f[8]), int(f[9])
    return None
