"""Full-screen live view of the running daemon (urwid on trio).

Runs as one more task in the daemon's nursery (``run``), on urwid's
``TrioEventLoop``: no second thread, no second event loop. It only reads:
every refresh takes the core's ``statistics()`` through the same status
document ``wg_netmanager status`` prints (``status_text``), so a slow
terminal can delay the picture but never the protocol.

Redraws happen after a key press, and otherwise from one refresher task at
most ``1 / MIN_INTERVAL`` times a second: when the core's state changed
(checked every ``POLL`` s), when a log line arrived, and once a ``TICK`` for
the ages and rates. The MainLoop draws nothing on its own (its idle redraw,
which would follow every datagram the daemon handles, is gated).

Screen: a header (this node), the peer table (sortable, coloured by path,
rows flash for ``FLASH`` s after their path changed), the gateways (who
forwards for whom), the log (level filter), a footer with the keys; Enter
opens the detail view of the selected node, ``?`` the help.

Logging: in TUI mode the daemon calls ``capture_logging`` instead of adding
a stderr handler; the lines go to a bounded buffer that the log pane shows.
When the TUI ends (``q``, a signal, a crash) the terminal is restored first,
then ``release_logging`` sends further lines to stderr again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import trio
import urwid

from . import control
from .status_text import (
    COLUMNS,
    RATE_COLUMNS,
    SORT_KEYS,
    Doc,
    column_widths,
    conflict_lines,
    fmt_age,
    fmt_bytes,
    fmt_ms,
    fmt_rate,
    format_row,
    gateway_lines,
    header_lines,
    path_kind,
    path_label,
    peer_cells,
    sort_peers,
)

log = logging.getLogger("wg_netmanager")

MIN_INTERVAL = 0.25  # s between two refreshes: at most 4 redraws a second
POLL = 0.25  # s between checks whether the core's state changed
TICK = 1.0  # s: ages, rates and uptime move even when nothing happens
FLASH = 2.0  # s a row stays highlighted after its path changed
LOG_LINES = 2000  # log lines kept
LEVELS = (("DEBUG", logging.DEBUG), ("INFO", logging.INFO), ("WARNING", logging.WARNING))

PALETTE = [
    ("header", "white", "dark blue"),
    ("footer", "black", "light gray"),
    ("title", "white", "dark gray"),
    ("title_focus", "black", "light cyan"),
    ("colhead", "white,bold", ""),
    ("lan", "light green", ""),
    ("nat", "light cyan", ""),
    ("static", "light blue", ""),
    ("direct", "light green", ""),
    ("via", "yellow", ""),
    ("unreachable", "light red", ""),
    ("flash", "black", "yellow"),
    ("selected", "black", "light gray"),
    ("log_debug", "dark gray", ""),
    ("log_info", "", ""),
    ("log_warning", "yellow", ""),
    ("log_error", "light red", ""),
    ("dialog", "white", "dark blue"),
    ("conflict", "white,bold", "dark red"),
]

FOOTER = " q quit  ↑↓/jk select  Enter details  Tab pane  s sort  f log filter  ? help"
HELP = """\
Keys

  q            quit (clean shutdown, as with SIGTERM)
  ↑ ↓  j k     move the selection / scroll the focused pane
  PgUp PgDn    page up / down, Home End: first / last
  Tab          next pane (peers, gateways, log), Shift-Tab previous
  Enter        details of the selected node; Esc or Enter closes them
  s            sort the peers by wg IP, name, path, latency
  f            log level filter: DEBUG, INFO, WARNING
  ?            this help; any key closes it

Paths

  direct LAN     direct WireGuard link over the local network
  direct NAT     direct link through NAT (hole punching)
  direct static  direct link to a static node
  via X          relayed by the static node X
  unreachable    known, but no way to it right now

A row flashes for a moment when its path changes."""

# --- log capture -------------------------------------------------------------


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


# --- data sources --------------------------------------------------------------


class Source(Protocol):
    def snapshot(self) -> Doc:
        """The current status document."""

    def token(self) -> object:
        """Changes whenever the snapshot may have changed beyond ages and counters."""


class DaemonSource:
    """The running daemon (``daemon.Daemon``), read inside its trio run."""

    def __init__(self, daemon: Any, started: float) -> None:
        self.daemon = daemon
        self.started = started

    def snapshot(self) -> Doc:
        return control.daemon_snapshot(self.daemon, self.started)

    def token(self) -> object:
        node = self.daemon.node
        return (node.state_version, node.table_version, len(node.sessions))


class StaticSource:
    """A fixed document (tests, demos)."""

    def __init__(self, doc: Doc) -> None:
        self.doc = doc

    def snapshot(self) -> Doc:
        return self.doc

    def token(self) -> object:
        return id(self.doc)


# --- widgets -------------------------------------------------------------------


class _Row(urwid.Text):
    """One selectable line (a peer, a log line)."""

    _selectable = True

    def __init__(self, markup: Any, key: str = "") -> None:
        super().__init__(markup, wrap="clip")
        self.key = key

    def keypress(self, size: tuple[()] | tuple[int] | tuple[int, int], key: str) -> str | None:
        return key


class _Top(urwid.WidgetPlaceholder):
    """The top widget: app keys first, then the focused pane."""

    def __init__(self, app: App) -> None:
        super().__init__(app.frame)
        self.app = app

    def keypress(self, size: tuple[()] | tuple[int] | tuple[int, int], key: str) -> str | None:
        passed = self.app.handle_key(key)
        if passed is None:
            return None
        return super().keypress(size, passed)


class _Body(urwid.Pile):
    """The three panes: the peer table takes the rows it needs (up to 60 %),
    the gateways up to 4 lines, the log the rest."""

    wanted = (1, 1)  # peer rows, gateway lines

    def _fit(self, size: tuple[()] | tuple[int] | tuple[int, int]) -> None:
        if len(size) != 2:
            return
        maxrow = size[1]
        peers, gateways = self.wanted
        gw_rows = 1 + min(max(gateways, 1), 4)
        room = maxrow - gw_rows
        if room < 8:  # tiny terminal: share alike
            heights: list[tuple[str, int]] = [("weight", 1)] * 3
        else:
            peer_rows = min(2 + max(peers, 1), max(3, room * 3 // 5))
            heights = [("given", peer_rows), ("given", gw_rows), ("weight", 1)]
        contents: Any = self.contents  # urwid's types cannot express "same widget, new height"
        for i, (kind, amount) in enumerate(heights):
            widget, options = contents[i]
            wanted: Any = self.options(kind, amount)  # type: ignore[call-overload]
            if options != wanted:
                contents[i] = (widget, wanted)

    def render(self, size: tuple[()] | tuple[int] | tuple[int, int], focus: bool = False) -> Any:
        self._fit(size)
        return super().render(size, focus)

    def keypress(self, size: tuple[()] | tuple[int] | tuple[int, int], key: str) -> str | None:
        self._fit(size)
        return super().keypress(size, key)


class _Dialog(urwid.Overlay[Any, Any]):
    """A box over the screen, as large as its text wants and the screen allows."""

    def __init__(self, top: urwid.Widget, bottom: urwid.Widget, wanted: tuple[int, int]) -> None:
        self.wanted = wanted
        super().__init__(top, bottom, "center", wanted[0], "middle", wanted[1])

    def _fit(self, size: tuple[()] | tuple[int] | tuple[int, int]) -> None:
        if len(size) == 2:
            width, height = min(self.wanted[0], size[0]), min(self.wanted[1], size[1])
            if (self.width, self.height) != (width, height):
                self.set_overlay_parameters("center", width, "middle", height)

    def render(self, size: tuple[()] | tuple[int] | tuple[int, int], focus: bool = False) -> Any:
        self._fit(size)
        return super().render(size, focus)

    def keypress(self, size: tuple[()] | tuple[int] | tuple[int, int], key: str) -> str | None:
        self._fit(size)
        return super().keypress(size, key)


def _pane(title: urwid.AttrMap, *rest: urwid.Widget) -> urwid.Pile:
    return urwid.Pile([("pack", title), *[("pack", w) for w in rest[:-1]], rest[-1]])


class App:
    """The widgets and their state; ``top`` is the urwid widget to show."""

    def __init__(
        self,
        source: Source,
        logs: LogBuffer | None = None,
        *,
        on_quit: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.source = source
        self.logs = logs if logs is not None else LogBuffer()
        self.on_quit = on_quit
        self.clock = clock
        self.doc: Doc = {}
        self.sort_index = 0
        self.level_index = 1  # INFO
        self.pane = 0  # 0 peers, 1 gateways, 2 log
        self.overlay: str | None = None  # "detail" | "help"
        self.detail_ip: str | None = None
        self.quit_requested = False
        self._samples: dict[str, tuple[float, int, int]] = {}
        self._rates: dict[str, tuple[float | None, float | None]] = {}
        self._signatures: dict[str, tuple[Any, ...]] = {}
        self._changed: dict[str, float] = {}
        self._refreshed = False
        self._log_seq = 0  # last log line in the walker
        self._log_level = -1  # filter the walker was built for

        self.header = urwid.Text("", wrap="clip")
        self.peer_title = urwid.Text("", wrap="clip")
        self.colhead = urwid.Text("", wrap="clip")
        self.peer_walker: urwid.SimpleFocusListWalker[Any] = urwid.SimpleFocusListWalker([])
        self.peer_list = urwid.ListBox(self.peer_walker)
        self.gw_title = urwid.Text("", wrap="clip")
        self.gw_walker: urwid.SimpleFocusListWalker[Any] = urwid.SimpleFocusListWalker([])
        self.gw_list = urwid.ListBox(self.gw_walker)
        self.log_title = urwid.Text("", wrap="clip")
        self.log_walker: urwid.SimpleFocusListWalker[Any] = urwid.SimpleFocusListWalker([])
        self.log_list = urwid.ListBox(self.log_walker)
        self.titles = [
            urwid.AttrMap(self.peer_title, "title"),
            urwid.AttrMap(self.gw_title, "title"),
            urwid.AttrMap(self.log_title, "title"),
        ]
        self.body = _Body(
            [
                _pane(self.titles[0], urwid.AttrMap(self.colhead, "colhead"), self.peer_list),
                _pane(self.titles[1], self.gw_list),
                _pane(self.titles[2], self.log_list),
            ]
        )
        self.frame = urwid.Frame(
            self.body,
            header=urwid.AttrMap(self.header, "header"),
            footer=urwid.AttrMap(urwid.Text(FOOTER, wrap="clip"), "footer"),
        )
        self.detail_walker: urwid.SimpleFocusListWalker[Any] = urwid.SimpleFocusListWalker([])
        self.detail_box = urwid.AttrMap(
            urwid.LineBox(urwid.ListBox(self.detail_walker), title="node"), "dialog"
        )
        self.help_box = urwid.AttrMap(
            urwid.LineBox(
                urwid.Filler(urwid.Padding(urwid.Text(HELP, wrap="clip"), left=1), valign="top"),
                title="help",
            ),
            "dialog",
        )
        self.top = _Top(self)
        self._titles()

    # --- state in, widgets out -------------------------------------------------

    @property
    def sort_key(self) -> str:
        return SORT_KEYS[self.sort_index]

    @property
    def level(self) -> tuple[str, int]:
        return LEVELS[self.level_index]

    def refresh(self, now: float | None = None) -> None:
        """Take a new snapshot and update every widget."""
        now = self.clock() if now is None else now
        self.doc = self.source.snapshot()
        peers = self.doc.get("peers", [])
        seen = set()
        for peer in peers:
            ip = str(peer.get("wg_ip"))
            seen.add(ip)
            signature = (peer.get("path"), peer.get("kind"), peer.get("gateway"))
            old = self._signatures.get(ip)
            if old != signature and self._refreshed:
                self._changed[ip] = now
            self._signatures[ip] = signature
            self._update_rate(ip, peer, now)
        for ip in set(self._signatures) - seen:
            for table in (self._signatures, self._changed, self._samples, self._rates):
                table.pop(ip, None)
        self._refreshed = True
        self._render(now)

    def _update_rate(self, ip: str, peer: Mapping[str, Any], now: float) -> None:
        rx, tx = int(peer.get("rx_bytes") or 0), int(peer.get("tx_bytes") or 0)
        sample = self._samples.get(ip)
        if sample is None:
            self._samples[ip] = (now, rx, tx)
            return
        then, rx0, tx0 = sample
        if now - then >= 0.9 * TICK:
            dt = now - then
            self._rates[ip] = (max(0, rx - rx0) / dt, max(0, tx - tx0) / dt)
            self._samples[ip] = (now, rx, tx)

    def _render(self, now: float) -> None:
        text: list[str | tuple[str, str]] = [" " + "\n ".join(header_lines(self.doc))]
        for line in conflict_lines(self.doc):
            text += ["\n", ("conflict", f" {line} ")]  # loud: someone else uses our wg IP
        self.header.set_text(text)
        self._render_peers(now)
        self._render_gateways()
        self.update_log()
        self._render_detail()
        self._titles()

    def _peer_rows(self) -> tuple[list[Mapping[str, Any]], list[list[str]]]:
        peers = sort_peers(self.doc.get("peers", []), self.sort_key)
        rows = []
        for peer in peers:
            cells = peer_cells(peer)
            rx_rate, tx_rate = self._rates.get(str(peer.get("wg_ip")), (None, None))
            direct = peer.get("path") == "direct"
            rates = [fmt_rate(rx_rate) if direct else "-", fmt_rate(tx_rate) if direct else "-"]
            rows.append(cells[:8] + rates + cells[8:])
        return peers, rows

    def _render_peers(self, now: float) -> None:
        columns = list(COLUMNS[:8]) + list(RATE_COLUMNS) + list(COLUMNS[8:])
        headers = [h for h, _ in columns]
        right = [r for _, r in columns]
        peers, rows = self._peer_rows()
        widths = column_widths(headers, rows)
        self.colhead.set_text(" " + format_row(headers, widths, right))
        selected = self.selected_ip()
        widgets = []
        focus = 0
        for i, (peer, row) in enumerate(zip(peers, rows, strict=True)):
            ip = str(peer.get("wg_ip"))
            flashing = now - self._changed.get(ip, -math.inf) < FLASH
            attr = "flash" if flashing else path_kind(peer)
            widgets.append(
                urwid.AttrMap(_Row(" " + format_row(row, widths, right), ip), attr, "selected")
            )
            if ip == selected:
                focus = i
        if not widgets:
            widgets.append(urwid.AttrMap(_Row(" (no other node known yet)"), None, None))
        self.peer_walker[:] = widgets
        self.peer_walker.set_focus(focus)

    def _render_gateways(self) -> None:
        lines = gateway_lines(self.doc)
        if self.doc.get("is_static"):
            lines.append("this node is static: it forwards for nodes without a direct link")
        focus = self.gw_walker.focus if len(self.gw_walker) else 0
        self.gw_walker[:] = [urwid.AttrMap(_Row(" " + line), None, "selected") for line in lines]
        self.gw_walker.set_focus(min(focus or 0, len(lines) - 1))
        self.body.wanted = (len(self.peer_walker), len(lines))

    def update_log(self) -> bool:
        """Add new log lines to the log pane; True if anything changed."""
        self.logs.shown = True
        level = self.level[1]
        lines = self.logs.lines
        if level != self._log_level:
            self._log_level, self._log_seq = level, 0
            self.log_walker[:] = []
            follow = True
        else:
            if not lines or lines[-1][0] <= self._log_seq:
                return False
            follow = not self.log_walker or self.log_walker.focus == len(self.log_walker) - 1
        new = [
            urwid.AttrMap(_Row(" " + text, str(seq)), _level_attr(lvl), "selected")
            for seq, lvl, text in lines
            if seq > self._log_seq and lvl >= level
        ]
        self._log_seq = lines[-1][0] if lines else self._log_seq
        self.log_walker.extend(new)
        excess = len(self.log_walker) - LOG_LINES
        if excess > 0:
            del self.log_walker[:excess]
        if follow and self.log_walker:
            self.log_walker.set_focus(len(self.log_walker) - 1)
        self._titles()
        return True

    def _titles(self) -> None:
        n = len(self.doc.get("peers", []))
        self.peer_title.set_text(f" Peers ({n})  sort: {self.sort_key}  [s]")
        self.gw_title.set_text(" Gateways: who forwards for whom")
        self.log_title.set_text(f" Log  level: {self.level[0]}+  [f]")
        for i, title in enumerate(self.titles):
            title.set_attr_map({None: "title_focus" if i == self.pane else "title"})

    # --- detail view ---------------------------------------------------------------

    def selected_ip(self) -> str | None:
        if not len(self.peer_walker):
            return None
        row = self.peer_walker[self.peer_walker.focus or 0].original_widget
        return getattr(row, "key", "") or None

    def detail_lines(self, ip: str) -> list[str]:
        peer = next((p for p in self.doc.get("peers", []) if str(p.get("wg_ip")) == ip), None)
        if peer is None:
            return [f"{ip}: no longer known"]
        rx_rate, tx_rate = self._rates.get(ip, (None, None))
        gateway = ""
        if path_kind(peer) == "via":
            gateway = f" ({peer.get('gateway')})"
        local = ", ".join(str(e) for e in peer.get("local_endpoints") or []) or "-"
        rows = [
            ("name", str(peer.get("name"))),
            ("wg IP", ip),
            ("public key", str(peer.get("public_key") or "-")),
            ("static node", "yes" if peer.get("is_static") else "no"),
            ("path", path_label(peer) + gateway),
            ("reason", str(peer.get("reason") or "-")),
            ("endpoint", str(peer.get("endpoint") or "-")),
            ("local endpoints", local),
            ("latency", fmt_ms(peer.get("rtt"))),
            ("handshake", _ago(peer.get("handshake_age"))),
            ("received", f"{fmt_bytes(peer.get('rx_bytes'))}  ({fmt_rate(rx_rate)})"),
            ("sent", f"{fmt_bytes(peer.get('tx_bytes'))}  ({fmt_rate(tx_rate)})"),
            ("key age", fmt_age(peer.get("session_age"))),
        ]
        known = {
            "name", "wg_ip", "public_key", "is_static", "path", "kind", "reason", "gateway",
            "gateway_name", "endpoint", "local_endpoints", "rtt", "handshake_age", "rx_bytes",
            "tx_bytes", "session_age",
        }  # fmt: skip
        rows += [(k.replace("_", " "), str(v)) for k, v in sorted(peer.items()) if k not in known]
        width = max(len(k) for k, _ in rows)
        return [f"{k.ljust(width)}  {v}" for k, v in rows] + ["", "Esc or Enter closes"]

    def _render_detail(self) -> None:
        if self.overlay != "detail" or self.detail_ip is None:
            return
        focus = self.detail_walker.focus if len(self.detail_walker) else 0
        lines = self.detail_lines(self.detail_ip)
        self.detail_walker[:] = [_Row(" " + line) for line in lines]
        self.detail_walker.set_focus(min(focus or 0, len(lines) - 1))
        dialog = self.top.original_widget
        if isinstance(dialog, _Dialog):
            dialog.wanted = _dialog_size(lines)

    def _show(self, overlay: str | None) -> None:
        self.overlay = overlay
        if overlay is None:
            self.top.original_widget = self.frame
            return
        if overlay == "detail":
            lines = self.detail_lines(self.detail_ip or "")
            box: urwid.Widget = self.detail_box
        else:
            lines = HELP.splitlines()
            box = self.help_box
        self.top.original_widget = _Dialog(box, self.frame, _dialog_size(lines))

    # --- keys ----------------------------------------------------------------------

    def handle_key(self, key: Any) -> str | None:
        """Act on ``key``; return the key the focused widget should get, or None."""
        if not isinstance(key, str):
            return None  # mouse events: not used
        if key in ("q", "Q"):
            self.quit_requested = True
            self.on_quit()
            return None
        if self.overlay == "help":
            self._show(None)
            return None
        if self.overlay == "detail":
            if key in ("esc", "enter"):
                self._show(None)
                self.detail_ip = None
                return None
            return {"j": "down", "k": "up"}.get(key, key)
        if key == "?":
            self._show("help")
        elif key in ("tab", "shift tab"):
            self.pane = (self.pane + (1 if key == "tab" else -1)) % 3
            self.body.focus_position = self.pane
            self._titles()
        elif key == "s":
            self.sort_index = (self.sort_index + 1) % len(SORT_KEYS)
            self._render_peers(self.clock())
            self._titles()
        elif key == "f":
            self.level_index = (self.level_index + 1) % len(LEVELS)
            self.update_log()
        elif key == "enter":
            ip = self.selected_ip()
            if ip is not None:
                self.detail_ip = ip
                self._show("detail")
                self._render_detail()
        elif key in ("j", "k"):
            return "down" if key == "j" else "up"
        else:
            return key
        return None

    # --- tests and tools -------------------------------------------------------------

    def render_lines(self, cols: int, rows: int) -> list[str]:
        """The screen as text lines at ``cols`` x ``rows``."""
        canvas = self.top.render((cols, rows), focus=True)
        return [line.decode("utf-8") for line in canvas.text]


def _dialog_size(lines: list[str]) -> tuple[int, int]:
    """Width and height of a framed box around ``lines`` with a margin of one column."""
    return (max(map(len, lines), default=0) + 4, len(lines) + 2)


def _level_attr(level: int) -> str:
    if level >= logging.ERROR:
        return "log_error"
    if level >= logging.WARNING:
        return "log_warning"
    return "log_info" if level >= logging.INFO else "log_debug"


def _ago(age: float | None) -> str:
    return "never" if age is None else f"{fmt_age(age)} ago"


# --- running it ----------------------------------------------------------------------


class _Loop(urwid.MainLoop):
    """A MainLoop that draws only when asked: after input, or by the refresher."""

    dirty = True

    def entering_idle(self) -> None:
        if self.dirty:
            self.dirty = False
            super().entering_idle()


async def run(
    daemon: Any,
    cancel_scope: trio.CancelScope,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    *,
    screen: urwid.BaseScreen | None = None,
) -> None:
    """The TUI of ``daemon`` until cancelled; ``q`` cancels ``cancel_scope`` (clean shutdown).

    ``screen``: the terminal (default: urwid's raw screen on stdin/stdout).
    """
    logs = capture_logging()
    app = App(
        DaemonSource(daemon, trio.current_time()),
        logs,
        on_quit=cancel_scope.cancel,
        clock=trio.current_time,
    )
    with contextlib.ExitStack() as stack:
        try:
            if screen is None:
                screen = urwid.display.raw.Screen(input=_keyboard(stack), output=sys.stdout)
            await run_app(app, screen, task_status=task_status)
        finally:
            release_logging()  # the terminal is back: later lines (cleanup) go to stderr


def _keyboard(stack: contextlib.ExitStack) -> Any:
    """Where the keys come from: stdin if it is a terminal, else /dev/tty, else nowhere
    (a pipe nobody writes to: the screen still updates; signals still stop the daemon)."""
    if sys.stdin.isatty():
        return sys.stdin
    try:
        return stack.enter_context(open("/dev/tty", "rb", buffering=0))
    except OSError:
        log.warning("no terminal to read keys from: the TUI only displays; stop with Ctrl-C")
    read_end, write_end = os.pipe()
    stack.callback(os.close, write_end)
    return stack.enter_context(open(read_end, "rb", buffering=0))


async def run_app(
    app: App,
    screen: urwid.BaseScreen | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Show ``app`` full screen until cancelled; the terminal is restored on every exit."""
    event_loop = urwid.TrioEventLoop()
    loop = _Loop(
        app.top,
        PALETTE,
        screen=screen,
        event_loop=event_loop,
        handle_mouse=False,
        input_filter=lambda keys, raw: _mark_dirty(loop, keys),
    )
    app.refresh()
    with loop.start():  # leaves the alternate screen and cbreak mode whatever happens
        async with trio.open_nursery() as nursery:
            nursery.start_soon(event_loop.run_async)
            nursery.start_soon(_refresher, app, loop)
            task_status.started()


def _mark_dirty(loop: _Loop, keys: list[Any]) -> list[Any]:
    loop.dirty = True
    return keys


async def _refresher(app: App, loop: _Loop) -> None:
    """Refresh and redraw on changes, at most every MIN_INTERVAL, at least every TICK."""
    woken = trio.Event()

    def wake() -> None:
        woken.set()

    app.logs.set_waker(wake)
    try:
        last_token = app.source.token()
        refreshed = drawn = trio.current_time()
        while True:
            now = trio.current_time()
            with trio.move_on_at(min(refreshed + TICK, now + POLL)):
                await woken.wait()
            now = trio.current_time()
            if now < drawn + MIN_INTERVAL:
                await trio.sleep(drawn + MIN_INTERVAL - now)
                now = trio.current_time()
            woken = trio.Event()
            token = app.source.token()
            if token != last_token or now >= refreshed + TICK:
                app.refresh(now)
                refreshed, last_token = now, token
            elif not app.update_log():
                continue
            loop.draw_screen()
            drawn = now
    finally:
        app.logs.set_waker(None)


def render_once(doc: Doc, cols: int = 120, rows: int = 30, logs: Iterable[str] = ()) -> str:
    """The screen for ``doc`` as text (README captures, tests)."""
    buffer = LogBuffer()
    for line in logs:
        buffer.seq += 1
        buffer.lines.append((buffer.seq, logging.INFO, line))
    app = App(StaticSource(doc), buffer)
    app.refresh(0.0)
    return "\n".join(line.rstrip() for line in app.render_lines(cols, rows))
