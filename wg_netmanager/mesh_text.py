"""The mesh map document (``/api/v1/mesh``, the web UI, the TUI's map) and its text form.

The document is made from ``Node.mesh_picture()`` (``core/mesh_map.py``)::

    {"me": "10.1.1.3", "source": "10.1.1.1",          # whose merged map it is
     "nodes": [{"wg_ip", "name", "is_static", "up", "gateway",
                "exceptions": [[peer, gateway or null], ...]}, ...],
     "links": [{"a", "b", "kind", "rtt"}, ...],       # direct links, a < b
     "relayed": [{"a", "b", "via"}, ...]}             # only with relayed=True

Relayed pairs are implied (every pair of up nodes without a direct link goes
through ``a``'s gateway for ``b``, see ``mesh_map.relayed_pairs``), so the
document grows with the links, not the square of the nodes; the web UI and
the TUI derive them. Pure formatting: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address
from typing import Any

from .core.mesh_map import relayed_pairs
from .status_text import Doc, _ip_key, fmt_ms
from .wire import NodeLinks

# Matrix cells: what a pair's path is, seen from the row's node.
CELL = {"lan": "L", "nat": "N", "static": "S", "direct": "D", "via": "·", "self": "\\", "": " "}


def mesh_document(
    records: Iterable[NodeLinks],
    *,
    me: IPv4Address,
    source: IPv4Address | None,
    relayed: bool = False,
) -> Doc:
    records = list(records)
    up = {r.wg_ip for r in records if r.up}
    links: dict[frozenset[IPv4Address], dict[str, Any]] = {}
    for record in records:
        for link in record.links:
            if record.wg_ip not in up or link.peer not in up or link.peer == record.wg_ip:
                continue
            key = frozenset((record.wg_ip, link.peer))
            a, b = sorted(key)
            have = links.get(key)
            if have is None:
                links[key] = {"a": str(a), "b": str(b), "kind": link.kind, "rtt": link.rtt}
            elif link.rtt is not None and (have["rtt"] is None or link.rtt < have["rtt"]):
                have["rtt"] = link.rtt  # both ends measure one round trip: the fresher is lower
    doc: Doc = {
        "me": str(me),
        "source": None if source is None else str(source),
        "nodes": [
            {
                "wg_ip": str(r.wg_ip),
                "name": r.name,
                "is_static": r.is_static,
                "up": r.up,
                "gateway": None if r.gateway is None else str(r.gateway),
                "exceptions": [
                    [str(ip), None if gw is None else str(gw)] for ip, gw in r.exceptions
                ],
            }
            for r in records
        ],
        "links": sorted(links.values(), key=lambda link: (_ip_key(link["a"]), _ip_key(link["b"]))),
    }
    if relayed:
        doc["relayed"] = [
            {"a": str(a), "b": str(b), "via": str(via)} for a, b, via in relayed_pairs(records)
        ]
    return doc


def _relayed_from_doc(doc: Mapping[str, Any]) -> dict[frozenset[str], str]:
    """The implied relayed pairs of a document (as ``mesh_map.relayed_pairs``)."""
    nodes = [n for n in doc.get("nodes", []) if n.get("up")]
    direct = {frozenset((link["a"], link["b"])) for link in doc.get("links", [])}
    exceptions = {n["wg_ip"]: dict(map(tuple, n.get("exceptions") or [])) for n in nodes}

    def gateway(node: Mapping[str, Any], to: str) -> str | None:
        return exceptions[node["wg_ip"]].get(to, node.get("gateway"))

    out = {}
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            pair = frozenset((a["wg_ip"], b["wg_ip"]))
            if pair in direct:
                continue
            via = gateway(a, b["wg_ip"]) or gateway(b, a["wg_ip"])
            if via and via not in pair:
                out[pair] = via
    return out


def matrix_lines(doc: Mapping[str, Any], max_nodes: int = 40) -> list[str]:
    """The map as a matrix: one row and one column per node, a cell per pair
    (``CELL``: LAN, NAT, static link, direct, relayed), then the direct links
    with their round trips, the relayed pairs by gateway, and the nodes that
    are down."""
    nodes = sorted(doc.get("nodes", []), key=lambda n: _ip_key(n["wg_ip"]))
    if not nodes:
        return ["no node known yet"]
    shown = nodes[:max_nodes]
    kinds = {frozenset((link["a"], link["b"])): link["kind"] for link in doc.get("links", [])}
    relayed = _relayed_from_doc(doc)
    names = {n["wg_ip"]: n["name"] for n in nodes}
    width = max(len(_label(n)) for n in shown)
    lines = []
    header = " " * (width + 1) + " ".join(_column(i) for i in range(len(shown)))
    lines.append(header)
    for i, row in enumerate(shown):
        cells = []
        for col in shown:
            pair = frozenset((row["wg_ip"], col["wg_ip"]))
            if col is row:
                kind = "self"
            elif not row["up"] or not col["up"]:
                kind = ""
            else:
                kind = kinds.get(pair) or ("via" if pair in relayed else "")
            cells.append(CELL[kind])
        lines.append(f"{_label(row).ljust(width)} " + " ".join(cells) + f"  {_column(i)}")
    if len(nodes) > len(shown):
        lines.append(f"(and {len(nodes) - len(shown)} more nodes)")
    lines.append("L LAN  N NAT  S static link  D direct  · relayed")
    lines.append("")
    for link in doc.get("links", []):
        rtt = fmt_ms(link.get("rtt")) if link.get("rtt") is not None else "-"
        lines.append(
            f"{names.get(link['a'], '?')} - {names.get(link['b'], '?')}  {link['kind']}  {rtt}"
        )
    by_gateway: dict[str, list[str]] = {}
    for pair, via in relayed.items():
        a, b = sorted(pair, key=_ip_key)
        by_gateway.setdefault(via, []).append(f"{names.get(a, a)}-{names.get(b, b)}")
    for via in sorted(by_gateway, key=_ip_key):
        pairs = sorted(by_gateway[via])
        lines.append(f"via {names.get(via, via)}: " + ", ".join(pairs))
    down = [n["name"] for n in nodes if not n["up"]]
    if down:
        lines.append("down: " + ", ".join(down))
    return lines


def _label(node: Mapping[str, Any]) -> str:
    mark = "*" if node.get("is_static") else " "
    return f"{mark}{node['name']} {node['wg_ip']}"


def _column(index: int) -> str:
    """A one-character column name: 0-9, then a-z, then A-Z."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return digits[index] if index < len(digits) else "?"
