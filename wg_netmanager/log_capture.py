"""Log lines for the TUI's log pane instead of stderr.

In TUI mode the daemon calls ``capture_logging`` instead of adding a stderr
handler: the root logger's lines go to a bounded :class:`LogBuffer` that the
log pane shows. When the TUI ends (``q``, a signal, a crash) the terminal is
restored first, then ``release_logging`` sends further lines to stderr again.
No urwid here: a headless daemon imports this module too.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

LOG_LINES = 2000  # log lines kept


class LogBuffer(logging.Handler):
    """Keeps the last ``capacity`` log lines as (sequence number, level, text)."""

    def __init__(self, capacity: int = LOG_LINES) -> None:
        super().__init__(logging.DEBUG)
        self.lines: deque[tuple[int, int, str]] = deque(maxlen=capacity)
        self.seq = 0
        self.shown = False  # a TUI has displayed the buffer
        self._waker: Callable[[], None] | None = None
        self._waker_thread: int | None = None

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        """Call ``waker()`` after each line emitted in the current thread."""
        self._waker = waker
        self._waker_thread = threading.get_ident() if waker else None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        for line in text.splitlines() or [""]:
            self.seq += 1
            self.lines.append((self.seq, record.levelno, line))
        waker = self._waker
        if waker is not None and threading.get_ident() == self._waker_thread:
            waker()


_capture: LogBuffer | None = None


def capture_logging(formatter: logging.Formatter | None = None) -> LogBuffer:
    """Send the root logger's lines to a buffer for the log pane (not to stderr)."""
    global _capture
    if _capture is None:
        _capture = LogBuffer()
        if formatter is not None:
            _capture.setFormatter(formatter)
        logging.getLogger().addHandler(_capture)
    # urwid logs every redraw at DEBUG: never into our own pane (it would redraw again).
    logging.getLogger("urwid").setLevel(logging.WARNING)
    logging.captureWarnings(True)  # a Python warning printed to stderr would tear the screen
    return _capture


def release_logging(stream: Any = None) -> None:
    """Back to stderr after the TUI (idempotent). Lines no TUI ever showed are printed."""
    global _capture
    buffer, _capture = _capture, None
    if buffer is None:
        return
    logging.captureWarnings(False)
    root = logging.getLogger()
    root.removeHandler(buffer)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(buffer.formatter or logging.Formatter())
    root.addHandler(handler)
    if not buffer.shown:
        for _seq, _level, line in buffer.lines:
            handler.stream.write(line + "\n")
        handler.flush()
