"""The status document and its text forms, shared by the TUI and ``status``.

The *status document* is a JSON-ready dict: the fields of the core's
``NodeStatus`` (a ``msgspec.Struct``, as are the records in it) with
addresses as text (``"10.1.1.2"``), endpoints as ``"a.b.c.d:port"`` and a
few facts only the daemon knows (``interface``, ``backend``, ``uptime``).
It is what ``wg_netmanager status --json`` prints and what the TUI renders,
so both show the same thing. It never holds a private or shared key
(``_SECRET_WORDS`` are dropped as a second line of defence; the core's
statistics carry none).

Everything here is pure formatting: no I/O, no trio, no urwid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Protocol

import msgspec

from .event_text import describe

Doc = dict[str, Any]
"""A status document (see the module docstring)."""


class StatusSource(Protocol):
    """Where the TUI gets its status documents (the daemon's is ``daemon.DaemonStatus``)."""

    def snapshot(self) -> Doc:
        """The current status document."""
        ...

    def token(self) -> object:
        """Changes whenever the snapshot may have changed beyond ages and counters."""
        ...


# Peer table columns: (header, right-aligned?)
COLUMNS = (
    ("NAME", False),
    ("WG IP", False),
    ("PATH", False),
    ("ENDPOINT", False),
    ("LATENCY", True),
    ("HANDSHAKE", True),
    ("RX", True),
    ("TX", True),
    ("KEY AGE", True),
)
RATE_COLUMNS = (("RX/s", True), ("TX/s", True))  # the TUI only: needs two samples
_SECRET_WORDS = ("private", "shared", "preshared", "secret")
_PLAIN = {str, int, float, bool}
KEY_SHORT = 8  # characters of a public key shown in tables and headers

# Path kinds, in sort order: the attribute names the TUI colours by.
PATH_ORDER = {"lan": 0, "nat": 1, "static": 2, "direct": 3, "via": 4, "unreachable": 5}


# --- the document ----------------------------------------------------------


def jsonable(value: Any, key: str = "") -> Any:
    """``value`` with addresses and endpoints as text, tuples as lists.

    A field whose name ends in ``endpoint`` holding ``(ip, port)`` becomes
    ``"ip:port"``; one ending in ``endpoints`` becomes a list of those.
    """
    if value is None or type(value) in _PLAIN:
        return value
    if isinstance(value, IPv4Address | IPv4Network):
        return str(value)
    if key.endswith("endpoint") and _is_endpoint(value):
        return f"{value[0]}:{value[1]}"
    if isinstance(value, msgspec.Struct):
        value = {name: getattr(value, name) for name in type(value).__struct_fields__}
    if isinstance(value, Mapping):
        return {
            str(k): jsonable(v, str(k))
            for k, v in value.items()
            if not any(word in str(k).lower() for word in _SECRET_WORDS)
        }
    if key.endswith("endpoints") and isinstance(value, list | tuple):
        return [f"{e[0]}:{e[1]}" if _is_endpoint(e) else jsonable(e) for e in value]
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [jsonable(v) for v in items]
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _is_endpoint(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def status_document(
    status: Any, *, interface: str, backend: str = "", uptime: float | None = None
) -> Doc:
    """The status document of a core ``NodeStatus`` (any record of that shape)."""
    doc: Doc = jsonable(status)
    # Conflicts are the core's events: shown as the log shows them.
    doc["conflicts"] = [describe(c) for c in getattr(status, "conflicts", None) or ()]
    doc["interface"] = interface
    doc["backend"] = backend
    doc["uptime"] = uptime
    return doc


# --- cells -----------------------------------------------------------------


def path_kind(peer: Mapping[str, Any]) -> str:
    """``lan``/``nat``/``static``/``direct``/``via``/``unreachable``: colour and sort key."""
    path = peer.get("path")
    if path == "via":
        return "via"
    if path == "direct":
        kind = peer.get("kind") or ""
        return kind if kind in ("lan", "nat", "static") else "direct"
    return "unreachable"


def path_label(peer: Mapping[str, Any]) -> str:
    """``direct LAN``, ``direct NAT``, ``direct static``, ``direct``, ``via beta``,
    ...; a mobile peer's with ``, mobile``, a plain WireGuard client's with ``, client``."""
    label = _path_label(peer)
    if peer.get("client"):
        return label + ", client"
    return label + ", mobile" if peer.get("mobile") else label


def _path_label(peer: Mapping[str, Any]) -> str:
    kind = path_kind(peer)
    if kind == "via":
        return f"via {peer.get('gateway_name') or peer.get('gateway') or '?'}"
    if kind in ("lan", "nat"):
        return f"direct {kind.upper()}"
    if kind == "static":
        return "direct static"
    if kind == "direct":
        return "direct"
    path = peer.get("path")
    return "unreachable" if path in (None, "", "unreachable") else str(path)


def fmt_ms(seconds: float | None) -> str:
    """A round-trip time: ``0.42 ms``, ``1.2 ms``, ``123 ms``; ``-`` if unknown."""
    if seconds is None:
        return "-"
    ms = seconds * 1000.0
    if ms < 1.0:
        return f"{ms:.2f} ms"
    if ms < 100.0:
        return f"{ms:.1f} ms"
    return f"{ms:.0f} ms"


def fmt_age(seconds: float | None) -> str:
    """``5 s``, ``3m 05s``, ``2h 03m``, ``4d 01h``; ``-`` if unknown."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def fmt_bytes(count: float | None) -> str:
    """``532 B``, ``12.4 KiB``, ``3.1 MiB``, ``1.2 GiB``; ``-`` if unknown."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024.0 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024.0
    raise AssertionError("unreachable")


def fmt_rate(per_second: float | None) -> str:
    return "-" if per_second is None else fmt_bytes(per_second) + "/s"


def short_key(key: str | None) -> str:
    return "-" if not key else key[:KEY_SHORT] + "…"


def peer_cells(peer: Mapping[str, Any]) -> list[str]:
    """The ``COLUMNS`` cells of one peer."""
    direct = peer.get("path") == "direct"
    return [
        str(peer.get("name") or "?"),
        str(peer.get("wg_ip") or "?"),
        path_label(peer),
        str(peer.get("endpoint") or "-"),
        fmt_ms(peer.get("rtt")),
        fmt_age(peer.get("handshake_age")),
        fmt_bytes(peer.get("rx_bytes")) if direct else "-",
        fmt_bytes(peer.get("tx_bytes")) if direct else "-",
        fmt_age(peer.get("session_age")),
    ]


def _ip_key(text: str) -> tuple[int, str]:
    try:
        return (int(IPv4Address(text)), "")
    except ValueError:
        return (1 << 33, text)


SORT_KEYS = ("wg IP", "name", "path", "latency")


def sort_peers(peers: Iterable[Mapping[str, Any]], key: str = "wg IP") -> list[Mapping[str, Any]]:
    """Peers ordered by one of ``SORT_KEYS`` (ties: by wg IP)."""

    def by(peer: Mapping[str, Any]) -> tuple[Any, ...]:
        ip = _ip_key(str(peer.get("wg_ip", "")))
        if key == "name":
            return (str(peer.get("name", "")).lower(), ip)
        if key == "path":
            kind = path_kind(peer)
            gateway = str(peer.get("gateway_name") or "") if kind == "via" else ""
            return (PATH_ORDER.get(kind, 9), gateway, ip)
        if key == "latency":
            rtt = peer.get("rtt")
            return (rtt is None, rtt or 0.0, ip)
        return (ip,)

    return sorted(peers, key=by)


# --- tables and summaries -------------------------------------------------------


def column_widths(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    return widths


def format_row(cells: Sequence[str], widths: Sequence[int], right: Sequence[bool]) -> str:
    parts = [
        cell.rjust(width) if r else cell.ljust(width)
        for cell, width, r in zip(cells, widths, right, strict=True)
    ]
    return "  ".join(parts).rstrip()


def counts(doc: Mapping[str, Any]) -> dict[str, int]:
    peers = doc.get("peers", [])
    kinds = [path_kind(p) for p in peers]
    return {
        "nodes": len(peers),
        "direct": sum(k not in ("via", "unreachable") for k in kinds),
        "via": kinds.count("via"),
        "unreachable": kinds.count("unreachable"),
    }


def service_status(doc: Mapping[str, Any]) -> str:
    """The line ``systemctl status`` shows: "3 nodes, 3 direct, 0 via gateway"."""
    c = counts(doc)
    line = f"{c['nodes']} node{'' if c['nodes'] == 1 else 's'}, {c['direct']} direct, "
    line += f"{c['via']} via gateway"
    if c["unreachable"]:
        line += f", {c['unreachable']} unreachable"
    if doc.get("statics_total") and not doc.get("statics_connected") and not doc.get("is_static"):
        line += ", no static peer reached"
    return line


def header_lines(doc: Mapping[str, Any]) -> list[str]:
    """Two lines about this node: identity and ports, then endpoint, uptime, counts."""
    backend = f" ({doc['backend']})" if doc.get("backend") else ""
    static = ", static" if doc.get("is_static") else ", mobile" if doc.get("mobile") else ""
    first = (
        f"{doc.get('name', '?')} {doc.get('wg_ip', '?')} on {doc.get('interface', '?')}{backend}"
        f"{static}  key {short_key(doc.get('public_key'))}"
        f"  ports wg {doc.get('wg_port', '?')} admin {doc.get('admin_port', '?')}"
    )
    c = counts(doc)
    connected, total = doc.get("statics_connected", 0), doc.get("statics_total", 0)
    if doc.get("is_static"):
        # A static is its own gateway: what matters is whom it serves and
        # whether it reaches the other statics.
        second = f"static node  up {fmt_age(doc.get('uptime'))}  serving {c['nodes']} nodes" + (
            f"  other statics {connected}/{total}" if total else "  the only static"
        )
        return [first, second]
    second = (
        f"visible as {doc.get('visible_endpoint') or '-'}  up {fmt_age(doc.get('uptime'))}"
        f"  nodes {c['nodes']}  direct {c['direct']}  via gateway {c['via']}"
        + (f"  unreachable {c['unreachable']}" if c["unreachable"] else "")
        + f"  statics {connected}/{total}"
    )
    return [first, second]


def conflict_lines(doc: Mapping[str, Any]) -> list[str]:
    """Recent wg IP conflicts (two live nodes claiming one address), newest last."""
    return [str(line) for line in doc.get("conflicts") or []]


def gateway_lines(doc: Mapping[str, Any]) -> list[str]:
    """Who forwards for whom: the ``via`` peers grouped by their gateway."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for peer in doc.get("peers", []):
        if path_kind(peer) == "via":
            gw = str(peer.get("gateway") or "?")
            groups.setdefault(gw, []).append(peer)
    if not groups:
        return ["no node is reached through a gateway"]
    names = {str(p.get("wg_ip")): str(p.get("name")) for p in doc.get("peers", [])}
    lines = []
    for gw in sorted(groups, key=_ip_key):
        members = ", ".join(
            f"{p.get('name')} {p.get('wg_ip')}" for p in sort_peers(groups[gw], "wg IP")
        )
        lines.append(f"{names.get(gw, '?')} {gw} forwards for {len(groups[gw])}: {members}")
    return lines


_SUBNET_NOTES = {
    "own": "served by this node",
    "local": "on our own network: reached directly",
    "unused": "not used (this node has no --exit-node)",
    "relay": "forwarded for the nodes that use it",
}


def subnet_lines(doc: Mapping[str, Any]) -> list[str]:
    """The networks behind gateways: each one's gateways in order, whether
    each is up, and which one this node uses (``used``)."""
    lines = []
    for subnet in doc.get("subnets") or []:
        route, role = str(subnet.get("route")), subnet.get("role")
        serving, alive = subnet.get("serving"), set(subnet.get("alive") or ())
        parts = []
        names = subnet.get("names") or ()
        for index, ip in enumerate(subnet.get("gateways") or ()):
            name = names[index] if index < len(names) else ""
            state = "up" if ip in alive else "down"
            if ip == serving and role in ("routed", "exit", "relay", "local"):
                state += ", used" if role in ("routed", "exit") else ", forwarded to"
            parts.append(f"{name + ' ' if name else ''}{ip} ({state})")
        label = f"{route} (exit)" if route == "0.0.0.0/0" else route
        note = _SUBNET_NOTES.get(str(role), "")
        if role in ("routed", "exit") and serving is None:
            note = "no gateway alive: unreachable"
        lines.append(f"{label}: {'  '.join(parts)}" + (f"  - {note}" if note else ""))
    return lines


def dns_line(doc: Mapping[str, Any]) -> str | None:
    """The DNS server's one line (None: it does not run)."""
    dns = doc.get("dns")
    if not dns:
        return None
    listening = dns.get("listening")
    where = f"on {listening}" if listening else "not listening yet (retrying)"
    answers, drops = dns.get("answers") or {}, dns.get("drops") or {}
    line = f"dns: *.{dns.get('domain')} {where}, {dns.get('names', 0)} names"
    line += f", answered {sum(answers.values())}"
    if answers:
        line += " (" + ", ".join(f"{code} {n}" for code, n in sorted(answers.items())) + ")"
    if drops:
        line += f", dropped {sum(drops.values())} ("
        line += ", ".join(f"{why} {n}" for why, n in sorted(drops.items())) + ")"
    return line


def render_text(doc: Mapping[str, Any], sort_key: str = "wg IP") -> str:
    """The ``status`` output: header, peer table, gateways, networks behind gateways."""
    peers = sort_peers(doc.get("peers", []), sort_key)
    headers = [h for h, _ in COLUMNS]
    right = [r for _, r in COLUMNS]
    rows = [peer_cells(p) for p in peers]
    widths = column_widths(headers, rows)
    lines = [*header_lines(doc), *conflict_lines(doc), ""]
    lines.append(format_row(headers, widths, right))
    lines += [format_row(row, widths, right) for row in rows]
    if not rows:
        lines.append("(no other node known yet)")
    lines += ["", *gateway_lines(doc)]
    subnets = subnet_lines(doc)
    if subnets:
        lines += ["", "networks behind gateways:", *subnets]
    dns = dns_line(doc)
    if dns:
        lines += ["", dns]
    return "\n".join(lines)


def summary_line(doc: Mapping[str, Any]) -> str:
    """One log line for the headless ``-v`` summary: ``name:path:latency`` per peer."""
    parts = []
    for peer in sort_peers(doc.get("peers", [])):
        part = f"{peer.get('name')}:{path_label(peer).replace(', ', ',').replace(' ', '-')}"
        if peer.get("rtt") is not None:
            part += ":" + fmt_ms(peer["rtt"]).replace(" ", "")
        parts.append(part)
    return f"peers ({len(parts)}): " + (" ".join(parts) or "none")
