"""The start-up timeline: milliseconds from the process's start to each first.

``cli.main`` makes one :class:`Timeline` per process and hands it to the
daemon; each step marks its first occurrence (``config read``, ``admin
socket bound``, ``first hello sent``, ``device created``, ``first peer
set``, ``first handshake``, ...). At ``-vv`` every mark is logged as
``startup +212 ms (cpu 150 ms): admin socket bound``, with the CPU time the
process had used by then (the rest was waiting: for other processes, the
network, a busy machine); marks made before logging is set up are logged
when it is (:meth:`Timeline.attach`). ``scripts/bench_mesh.py`` reads these
lines for its start-up split.

The origin is the process's start as the kernel counts it (``starttime`` of
``/proc/self/stat``, in clock ticks: 10 ms steps), so the interpreter's own
start-up is included; the steps between marks are exact. The real monotonic
clock is read, never trio's: the timeline is about this process's wall time.
"""

from __future__ import annotations

import logging
import os
import time


def process_start(now: float | None = None) -> float:
    """When this process started, on the ``time.monotonic()`` clock; ``now``
    (or the current time) if the kernel does not say."""
    mono = time.monotonic() if now is None else now
    try:
        with open("/proc/self/stat", "rb") as f:
            # The command name (field 2) may hold spaces and parentheses: split after it.
            fields = f.read().rpartition(b")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, ValueError, IndexError, AttributeError):
        return mono
    # min(): a process cannot have started after now (tick rounding).
    return min(mono, mono - (since_boot - started))


class Timeline:
    """First occurrences of start-up steps, relative to ``origin`` (monotonic)."""

    def __init__(self, origin: float | None = None) -> None:
        self.origin = process_start() if origin is None else origin
        self.marks: dict[str, float] = {}
        self.cpu: dict[str, float] = {}  # process CPU seconds at each mark
        self._log: logging.Logger | None = None

    def mark(self, step: str) -> None:
        """Record ``step`` now, unless it happened before."""
        if step in self.marks:
            return
        self.marks[step] = time.monotonic()
        self.cpu[step] = time.process_time()
        self._emit(step)

    def ms(self, step: str) -> float | None:
        """Milliseconds from the origin to ``step``; None if it has not happened."""
        at = self.marks.get(step)
        return None if at is None else (at - self.origin) * 1000

    def attach(self, log: logging.Logger) -> None:
        """Log the marks so far to ``log`` (at debug level), and every later one."""
        self._log = log
        for step in self.marks:
            self._emit(step)

    def _emit(self, step: str) -> None:
        if self._log is not None and self._log.isEnabledFor(logging.DEBUG):
            cpu = self.cpu[step] * 1000
            self._log.debug("startup +%.0f ms (cpu %.0f ms): %s", self.ms(step), cpu, step)
