"""Full-screen live view of the running daemon (urwid on trio).

Runs as one more task in the daemon's nursery (``run``), on urwid's
``TrioEventLoop``: no second thread, no second event loop. It only reads:
every refresh takes a status document from a ``StatusSource`` (the
daemon's is ``daemon.DaemonStatus``: the document ``wg_netmanager status``
prints), so a slow terminal can delay the picture but never the protocol.

Redraws happen after a key press, and otherwise from one refresher task at
most ``1 / MIN_INTERVAL`` times a second: when the source's token changed
(checked every ``POLL`` s), when a log line arrived, and once a ``TICK`` for
the ages and rates. The MainLoop draws nothing on its own (its idle redraw,
which would follow every datagram the daemon handles, is gated).

Screen (widgets in ``panes``): a header (this node), the peer table
(sortable, coloured by path, rows flash for ``FLASH`` s after their path
changed), the gateways (who forwards for whom), the log (level filter), a
footer with the keys; Enter opens the detail view of the selected node,
``?`` the help. :class:`App` composes them and routes the keys.

Logging goes to the log pane while the TUI runs (``log_capture``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

import trio
import urwid

from .log_capture import LogBuffer, capture_logging, release_logging
from .mesh_text import matrix_lines
from .panes import (
    HELP,
    PALETTE,
    TICK,
    Body,
    DetailDialog,
    Dialog,
    GatewayList,
    Header,
    HelpDialog,
    LogPane,
    MapDialog,
    PeerTable,
    Size,
    detail_lines,
    dialog_size,
)
from .status_text import Doc, StatusSource

log = logging.getLogger("wg_netmanager")

MIN_INTERVAL = 0.25  # s between two refreshes: at most 4 redraws a second
POLL = 0.25  # s between checks whether the source's state changed
FOOTER = " q quit  ↑↓/jk select  Enter details  m mesh map  Tab pane  s sort  f log filter  ? help"


# --- data sources --------------------------------------------------------------


class StaticSource:
    """A fixed document (tests, demos)."""

    def __init__(self, doc: Doc, mesh: Doc | None = None) -> None:
        self.doc = doc
        self.mesh_doc = mesh

    def snapshot(self) -> Doc:
        return self.doc

    def mesh(self) -> Doc:
        return self.mesh_doc or {"nodes": [], "links": []}

    def token(self) -> object:
        return id(self.doc)


# --- the screen ------------------------------------------------------------------


class _Top(urwid.WidgetPlaceholder):
    """The top widget: app keys first, then the focused pane or the open dialog."""

    def __init__(self, app: App) -> None:
        super().__init__(app.frame)
        self.app = app

    def keypress(self, size: Size, key: str) -> str | None:
        passed = self.app.handle_key(key)
        if passed is None:
            return None
        return super().keypress(size, passed)


class App:
    """The panes in a frame, the dialogs over it, the keys; ``top`` is the
    urwid widget to show."""

    def __init__(
        self,
        source: StatusSource,
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
        self.pane = 0  # 0 peers, 1 gateways, 2 log
        self.overlay: str | None = None  # "detail" | "help" | "map"
        self.detail_ip: str | None = None
        self._map_title = "mesh map"
        self.quit_requested = False

        self.header = Header()
        self.peers = PeerTable()
        self.gateways = GatewayList()
        self.log = LogPane(self.logs)
        self.panes = (self.peers, self.gateways, self.log)
        self.body = Body(self.peers, self.gateways, self.log)
        self.frame = urwid.Frame(
            self.body,
            header=self.header,
            footer=urwid.AttrMap(urwid.Text(FOOTER, wrap="clip"), "footer"),
        )
        self.detail = DetailDialog()
        self.help = HelpDialog()
        self.map = MapDialog()
        for dialog in (self.detail, self.help, self.map):
            urwid.connect_signal(dialog, "close", self._close)
        self.top = _Top(self)
        self._focus_pane(0)

    def refresh(self, now: float | None = None) -> None:
        """Take a new snapshot and update every widget."""
        now = self.clock() if now is None else now
        self.doc = self.source.snapshot()
        self.header.update(self.doc)
        self.peers.update(self.doc, now)
        self.gateways.update(self.doc)
        self.log.update()
        self._update_detail()

    def update_log(self) -> bool:
        """Add new log lines to the log pane; True if anything changed."""
        return self.log.update()

    def selected_ip(self) -> str | None:
        return self.peers.selected_ip()

    # --- keys ----------------------------------------------------------------------

    def handle_key(self, key: Any) -> str | None:
        """Act on ``key``; return the key the focused widget should get, or None."""
        if not isinstance(key, str):
            return None  # mouse events: not used
        if key in ("q", "Q"):
            self.quit_requested = True
            self.on_quit()
            return None
        if self.overlay is not None:
            return key  # the dialog's own keys; it closes itself
        if key == "?":
            self._open("help", HELP.splitlines())
        elif key in ("tab", "shift tab"):
            self._focus_pane((self.pane + (1 if key == "tab" else -1)) % len(self.panes))
        elif key == "s":
            self.peers.cycle_sort(self.clock())
        elif key == "f":
            self.log.cycle_level()
        elif key == "m":
            self._open("map", self._map_lines())
        elif key == "enter":
            ip = self.selected_ip()
            if ip is not None:
                self.detail_ip = ip
                self._open("detail", self._detail_lines(ip))
        elif key in ("j", "k"):
            return "down" if key == "j" else "up"
        else:
            return key
        return None

    def _focus_pane(self, index: int) -> None:
        self.pane = index
        self.body.focus_position = index
        for i, pane in enumerate(self.panes):
            pane.set_focused(i == index)

    # --- dialogs ---------------------------------------------------------------------

    def _detail_lines(self, ip: str) -> list[str]:
        return detail_lines(self.doc, ip, self.peers.rates(ip))

    def _map_lines(self) -> list[str]:
        """The mesh map, if the source has one (the daemon's does)."""
        mesh = getattr(self.source, "mesh", None)
        if mesh is None:
            return ["no mesh map here"]
        doc = mesh()
        names = {n["wg_ip"]: n["name"] for n in doc.get("nodes", [])}
        source = doc.get("source")
        self._map_title = (
            "mesh map: this node's own view (no static's map yet)"
            if source is None
            else f"mesh map, merged by {names.get(source, source)}"
        )
        return [*matrix_lines(doc), "", "Esc or m closes"]

    def _open(self, overlay: str, lines: list[str]) -> None:
        self.overlay = overlay
        box = {"detail": self.detail, "map": self.map}.get(overlay, self.help)
        if overlay == "detail":
            self.detail.show(lines)
        elif overlay == "map":
            self.map.show(lines, self._map_title)
        self.top.original_widget = Dialog(box, self.frame, dialog_size(lines))

    def _update_detail(self) -> None:
        if self.overlay == "map":
            lines = self._map_lines()
            self.map.show(lines, self._map_title)
        elif self.overlay == "detail" and self.detail_ip is not None:
            lines = self._detail_lines(self.detail_ip)
            self.detail.show(lines)
        else:
            return
        dialog = self.top.original_widget
        if isinstance(dialog, Dialog):
            dialog.wanted = dialog_size(lines)

    def _close(self, dialog: urwid.Widget) -> None:
        self.overlay = None
        self.detail_ip = None
        self.top.original_widget = self.frame

    # --- tests and tools -------------------------------------------------------------

    def render_lines(self, cols: int, rows: int) -> list[str]:
        """The screen as text lines at ``cols`` x ``rows``."""
        canvas = self.top.render((cols, rows), focus=True)
        return [line.decode("utf-8") for line in canvas.text]


# --- running it ----------------------------------------------------------------------


class _Loop(urwid.MainLoop):
    """A MainLoop that draws only when asked: after input, or by the refresher."""

    dirty = True

    def entering_idle(self) -> None:
        if self.dirty:
            self.dirty = False
            super().entering_idle()


async def run(
    source: StatusSource,
    cancel_scope: trio.CancelScope,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    *,
    screen: urwid.BaseScreen | None = None,
) -> None:
    """The TUI of ``source`` until cancelled; ``q`` cancels ``cancel_scope`` (clean shutdown).

    ``screen``: the terminal (default: urwid's raw screen on stdin/stdout).
    """
    logs = capture_logging()
    app = App(
        source,
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
