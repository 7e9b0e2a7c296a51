"""The TUI's widgets: the header, three panes and three dialogs.

Each pane is a ``urwid.WidgetWrap`` that owns its state and is fed the
status document (``update``); ``tui.App`` composes them in a frame and
routes the keys. The dialogs close themselves on their keys and say so with
the ``close`` signal (as urwid's ``examples/pop_up.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import urwid

from .log_capture import LOG_LINES, LogBuffer
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
    subnet_lines,
)

TICK = 1.0  # s: ages, rates and uptime move even when nothing happens
FLASH = 2.0  # s a row stays highlighted after its path changed
LEVELS = (("DEBUG", logging.DEBUG), ("INFO", logging.INFO), ("WARNING", logging.WARNING))
Size = tuple[()] | tuple[int] | tuple[int, int]
Rates = tuple[float | None, float | None]  # bytes per second received, sent

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

HELP = """\
Keys

  q            quit (clean shutdown, as with SIGTERM)
  ↑ ↓  j k     move the selection / scroll the focused pane
  PgUp PgDn    page up / down, Home End: first / last
  Tab          next pane (peers, gateways, log), Shift-Tab previous
  Enter        details of the selected node; Esc or Enter closes them
  m            the mesh map: every node and link of the whole mesh; Esc or m closes it
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


class Row(urwid.Text):
    """One selectable line (a peer, a log line); ``key`` names what it shows."""

    _selectable = True

    def __init__(self, markup: Any, key: str = "") -> None:
        super().__init__(markup, wrap="clip")
        self.key = key

    def keypress(self, size: Size, key: str) -> str | None:
        return key


# --- the header and the panes --------------------------------------------------------


class Header(urwid.WidgetWrap[urwid.AttrMap]):
    """This node in two lines, and wg IP conflicts in red under them."""

    def __init__(self) -> None:
        self._text = urwid.Text("", wrap="clip")
        super().__init__(urwid.AttrMap(self._text, "header"))

    def update(self, doc: Doc) -> None:
        text: list[str | tuple[str, str]] = [" " + "\n ".join(header_lines(doc))]
        for line in conflict_lines(doc):
            text += ["\n", ("conflict", f" {line} ")]  # loud: someone else uses our wg IP
        self._text.set_text(text)


class Pane(urwid.WidgetWrap[urwid.Pile]):
    """A title line (highlighted while the pane has the focus) over a list."""

    def __init__(self, *heads: urwid.Widget) -> None:
        self.walker: urwid.SimpleFocusListWalker[Any] = urwid.SimpleFocusListWalker([])
        self._title = urwid.Text("", wrap="clip")
        self._title_map = urwid.AttrMap(self._title, "title")
        rows: list[Any] = [("pack", w) for w in (self._title_map, *heads)]
        super().__init__(urwid.Pile([*rows, urwid.ListBox(self.walker)]))

    def set_title(self, text: str) -> None:
        self._title.set_text(text)

    def set_focused(self, focused: bool) -> None:
        self._title_map.set_attr_map({None: "title_focus" if focused else "title"})


class PeerTable(Pane):
    """One row per peer: sortable, coloured by path, flashing for ``FLASH``
    s after its path changed, with byte rates from two samples."""

    def __init__(self) -> None:
        self._colhead = urwid.Text("", wrap="clip")
        super().__init__(urwid.AttrMap(self._colhead, "colhead"))
        self.doc: Doc = {}
        self.sort_index = 0
        self._samples: dict[str, tuple[float, int, int]] = {}
        self._rates: dict[str, Rates] = {}
        self._signatures: dict[str, tuple[Any, ...]] = {}
        self._changed: dict[str, float] = {}
        self._updated = False
        self._set_title()

    @property
    def sort_key(self) -> str:
        return SORT_KEYS[self.sort_index]

    def update(self, doc: Doc, now: float) -> None:
        """A new snapshot: note path changes and byte counters, then show it."""
        self.doc = doc
        seen = set()
        for peer in doc.get("peers", []):
            ip = str(peer.get("wg_ip"))
            seen.add(ip)
            signature = (peer.get("path"), peer.get("kind"), peer.get("gateway"))
            old = self._signatures.get(ip)
            if old != signature and self._updated:
                self._changed[ip] = now
            self._signatures[ip] = signature
            self._update_rate(ip, peer, now)
        for ip in set(self._signatures) - seen:
            for table in (self._signatures, self._changed, self._samples, self._rates):
                table.pop(ip, None)
        self._updated = True
        self.show(now)

    def cycle_sort(self, now: float) -> None:
        self.sort_index = (self.sort_index + 1) % len(SORT_KEYS)
        self.show(now)

    def rates(self, ip: str) -> Rates:
        return self._rates.get(ip, (None, None))

    def selected_ip(self) -> str | None:
        if not len(self.walker):
            return None
        row = self.walker[self.walker.focus or 0].original_widget
        return getattr(row, "key", "") or None

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

    def _rows(self) -> tuple[list[Mapping[str, Any]], list[list[str]]]:
        peers = sort_peers(self.doc.get("peers", []), self.sort_key)
        rows = []
        for peer in peers:
            cells = peer_cells(peer)
            rx_rate, tx_rate = self.rates(str(peer.get("wg_ip")))
            direct = peer.get("path") == "direct"
            rates = [fmt_rate(rx_rate) if direct else "-", fmt_rate(tx_rate) if direct else "-"]
            rows.append(cells[:8] + rates + cells[8:])
        return peers, rows

    def show(self, now: float) -> None:
        """Rows in the current order; the selection stays on its node."""
        columns = list(COLUMNS[:8]) + list(RATE_COLUMNS) + list(COLUMNS[8:])
        headers = [h for h, _ in columns]
        right = [r for _, r in columns]
        peers, rows = self._rows()
        widths = column_widths(headers, rows)
        self._colhead.set_text(" " + format_row(headers, widths, right))
        selected = self.selected_ip()
        widgets = []
        focus = 0
        for i, (peer, row) in enumerate(zip(peers, rows, strict=True)):
            ip = str(peer.get("wg_ip"))
            flashing = now - self._changed.get(ip, -math.inf) < FLASH
            attr = "flash" if flashing else path_kind(peer)
            widgets.append(
                urwid.AttrMap(Row(" " + format_row(row, widths, right), ip), attr, "selected")
            )
            if ip == selected:
                focus = i
        if not widgets:
            widgets.append(urwid.AttrMap(Row(" (no other node known yet)"), None, None))
        self.walker[:] = widgets
        self.walker.set_focus(focus)
        self._set_title()

    def _set_title(self) -> None:
        n = len(self.doc.get("peers", []))
        self.set_title(f" Peers ({n})  sort: {self.sort_key}  [s]")


class GatewayList(Pane):
    """Who forwards for whom, and the networks behind gateways."""

    def __init__(self) -> None:
        super().__init__()
        self.set_title(" Gateways: who forwards for whom")

    def update(self, doc: Doc) -> None:
        lines = gateway_lines(doc)
        if doc.get("is_static"):
            lines.append("this node is static: it forwards for nodes without a direct link")
        subnets = subnet_lines(doc)
        if subnets:
            lines += ["networks behind gateways:", *subnets]
        focus = self.walker.focus if len(self.walker) else 0
        self.walker[:] = [urwid.AttrMap(Row(" " + line), None, "selected") for line in lines]
        self.walker.set_focus(min(focus or 0, len(lines) - 1))


class LogPane(Pane):
    """The captured log lines at or above a level; follows the tail unless
    scrolled back."""

    def __init__(self, logs: LogBuffer) -> None:
        super().__init__()
        self.logs = logs
        self.level_index = 1  # INFO
        self._seq = 0  # last log line in the walker
        self._level = -1  # filter the walker was built for
        self._set_title()

    @property
    def level(self) -> tuple[str, int]:
        return LEVELS[self.level_index]

    def cycle_level(self) -> None:
        self.level_index = (self.level_index + 1) % len(LEVELS)
        self.update()

    def update(self) -> bool:
        """Add new log lines; True if anything changed."""
        self.logs.shown = True
        level = self.level[1]
        lines = self.logs.lines
        if level != self._level:
            self._level, self._seq = level, 0
            self.walker[:] = []
            follow = True
        else:
            if not lines or lines[-1][0] <= self._seq:
                return False
            follow = not self.walker or self.walker.focus == len(self.walker) - 1
        new = [
            urwid.AttrMap(Row(" " + text, str(seq)), _level_attr(lvl), "selected")
            for seq, lvl, text in lines
            if seq > self._seq and lvl >= level
        ]
        self._seq = lines[-1][0] if lines else self._seq
        self.walker.extend(new)
        excess = len(self.walker) - LOG_LINES
        if excess > 0:
            del self.walker[:excess]
        if follow and self.walker:
            self.walker.set_focus(len(self.walker) - 1)
        self._set_title()
        return True

    def _set_title(self) -> None:
        self.set_title(f" Log  level: {self.level[0]}+  [f]")


class Body(urwid.Pile):
    """The three panes: the peer table takes the rows it needs (up to 60 %),
    the gateways up to 4 lines, the log the rest."""

    def __init__(self, peers: PeerTable, gateways: GatewayList, log: LogPane) -> None:
        super().__init__([peers, gateways, log])
        self._peers, self._gateways = peers, gateways

    def _fit(self, size: Size) -> None:
        if len(size) != 2:
            return
        maxrow = size[1]
        peers, gateways = len(self._peers.walker), len(self._gateways.walker)
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

    def render(self, size: Size, focus: bool = False) -> Any:
        self._fit(size)
        return super().render(size, focus)

    def keypress(self, size: Size, key: str) -> str | None:
        self._fit(size)
        return super().keypress(size, key)


# --- dialogs -------------------------------------------------------------------------


class Dialog(urwid.Overlay[Any, Any]):
    """A box over the screen, as large as its text wants and the screen allows."""

    def __init__(self, top: urwid.Widget, bottom: urwid.Widget, wanted: tuple[int, int]) -> None:
        self.wanted = wanted
        super().__init__(top, bottom, "center", wanted[0], "middle", wanted[1])

    def _fit(self, size: Size) -> None:
        if len(size) == 2:
            width, height = min(self.wanted[0], size[0]), min(self.wanted[1], size[1])
            if (self.width, self.height) != (width, height):
                self.set_overlay_parameters("center", width, "middle", height)

    def render(self, size: Size, focus: bool = False) -> Any:
        self._fit(size)
        return super().render(size, focus)

    def keypress(self, size: Size, key: str) -> str | None:
        self._fit(size)
        return super().keypress(size, key)


class DetailDialog(urwid.WidgetWrap[urwid.AttrMap]):
    """Everything known about one node; Esc or Enter closes it (``close``)."""

    signals = ["close"]

    def __init__(self) -> None:
        self._walker: urwid.SimpleFocusListWalker[Any] = urwid.SimpleFocusListWalker([])
        box = urwid.LineBox(urwid.ListBox(self._walker), title="node")
        super().__init__(urwid.AttrMap(box, "dialog"))

    def show(self, lines: list[str]) -> None:
        """New content; the scroll position stays where it was."""
        focus = self._walker.focus if len(self._walker) else 0
        self._walker[:] = [Row(" " + line) for line in lines]
        self._walker.set_focus(min(focus or 0, len(lines) - 1))

    def keypress(self, size: Size, key: str) -> str | None:
        if key in ("esc", "enter"):
            self._emit("close")
            return None
        return super().keypress(size, {"j": "down", "k": "up"}.get(key, key))


class MapDialog(urwid.WidgetWrap[urwid.AttrMap]):
    """The mesh map as a matrix (``mesh_text.matrix_lines``), cells coloured by
    path; Esc, Enter or m closes it (``close``)."""

    signals = ["close"]
    CELL_ATTRS = {"L": "lan", "N": "nat", "S": "static", "D": "direct", "·": "via"}

    def __init__(self) -> None:
        self._walker: urwid.SimpleFocusListWalker[Any] = urwid.SimpleFocusListWalker([])
        self._box = urwid.LineBox(urwid.ListBox(self._walker), title="mesh map")
        super().__init__(urwid.AttrMap(self._box, "dialog"))

    def show(self, lines: list[str], title: str = "mesh map") -> None:
        """New content (the matrix first: its rows' cells are coloured)."""
        self._box.set_title(title)
        focus = self._walker.focus if len(self._walker) else 0
        header = lines[0] if lines else ""
        start = len(header) - len(header.lstrip(" "))
        end = len(header)
        rows = []
        for index, line in enumerate(lines):
            if index > 0 and line[:1] in (" ", "*") and len(line) >= end:
                rows.append(Row([" " + line[:start], *self._cells(line[start:end]), line[end:]]))
            else:
                rows.append(Row(" " + line))
            if not line:  # the matrix ends at the first empty line
                start = end = 10**9
        self._walker[:] = rows
        self._walker.set_focus(min(focus or 0, max(0, len(rows) - 1)))

    def _cells(self, text: str) -> list[tuple[str, str] | str]:
        return [(self.CELL_ATTRS[c], c) if c in self.CELL_ATTRS else c for c in text]

    def keypress(self, size: Size, key: str) -> str | None:
        if key in ("esc", "enter", "m"):
            self._emit("close")
            return None
        return super().keypress(size, {"j": "down", "k": "up"}.get(key, key))


class HelpDialog(urwid.WidgetWrap[urwid.AttrMap]):
    """The keys and the paths; any key closes it (``close``)."""

    signals = ["close"]

    def __init__(self) -> None:
        text = urwid.Padding(urwid.Text(HELP, wrap="clip"), left=1)
        box = urwid.LineBox(urwid.Filler(text, valign="top"), title="help")
        super().__init__(urwid.AttrMap(box, "dialog"))

    def selectable(self) -> bool:
        return True  # takes every key: any key closes it

    def keypress(self, size: Size, key: str) -> str | None:
        self._emit("close")
        return None


def detail_lines(doc: Doc, ip: str, rates: Rates) -> list[str]:
    """The detail view of the peer ``ip`` of ``doc``: known fields first, then the rest."""
    peer = next((p for p in doc.get("peers", []) if str(p.get("wg_ip")) == ip), None)
    if peer is None:
        return [f"{ip}: no longer known"]
    rx_rate, tx_rate = rates
    gateway = ""
    if path_kind(peer) == "via":
        gateway = f" ({peer.get('gateway')})"
    local = ", ".join(str(e) for e in peer.get("local_endpoints") or []) or "-"
    rows = [
        ("name", str(peer.get("name"))),
        ("wg IP", ip),
        ("public key", str(peer.get("public_key") or "-")),
        ("static node", "yes" if peer.get("is_static") else "no"),
        ("mobile node", "yes" if peer.get("mobile") else "no"),
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
        "tx_bytes", "session_age", "mobile",
    }  # fmt: skip
    rows += [(k.replace("_", " "), str(v)) for k, v in sorted(peer.items()) if k not in known]
    width = max(len(k) for k, _ in rows)
    return [f"{k.ljust(width)}  {v}" for k, v in rows] + ["", "Esc or Enter closes"]


def dialog_size(lines: list[str]) -> tuple[int, int]:
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
