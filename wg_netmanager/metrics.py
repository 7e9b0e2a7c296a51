"""``/metrics``: the status document in the Prometheus text format (prometheus_client).

Made at scrape time from one status document (nothing is kept between
scrapes but the daemon's own counters), in a registry of its own: per peer
its bytes, round trip, handshake age and path kind (``path`` label: lan,
nat, static, via, ...), dropped datagrams by reason (``core.events.DropReason``),
path switches, conflicts, failed ``ip``/``wg`` calls, and the build.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from . import __version__, proc
from .api import ApiSource
from .status_text import counts, path_kind

PREFIX = "wgnm"


class _StatusCollector(Collector):
    def __init__(self, source: ApiSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        doc = self._source.snapshot()
        labels = ["peer", "name", "path"]
        rx = CounterMetricFamily(
            f"{PREFIX}_peer_rx_bytes", "Bytes received from a peer", labels=labels
        )
        tx = CounterMetricFamily(f"{PREFIX}_peer_tx_bytes", "Bytes sent to a peer", labels=labels)
        rtt = GaugeMetricFamily(
            f"{PREFIX}_peer_rtt_seconds", "Admin round trip to a peer", labels=labels
        )
        handshake = GaugeMetricFamily(
            f"{PREFIX}_peer_handshake_age_seconds",
            "Seconds since the last WireGuard handshake with a peer",
            labels=labels,
        )
        up = GaugeMetricFamily(
            f"{PREFIX}_peer_up", "1 for every peer known (direct or via a gateway)", labels=labels
        )
        for peer in doc.get("peers", []):
            values = [str(peer.get("wg_ip")), str(peer.get("name")), path_kind(peer)]
            up.add_metric(values, 1)
            if peer.get("path") == "direct":
                rx.add_metric(values, peer.get("rx_bytes") or 0)
                tx.add_metric(values, peer.get("tx_bytes") or 0)
            if peer.get("rtt") is not None:
                rtt.add_metric(values, peer["rtt"])
            if peer.get("handshake_age") is not None:
                handshake.add_metric(values, peer["handshake_age"])
        yield from (up, rx, tx, rtt, handshake)
        nodes = GaugeMetricFamily(f"{PREFIX}_peers", "Peers by path", labels=["path"])
        for path, number in counts(doc).items():
            if path != "nodes":
                nodes.add_metric([path], number)
        yield nodes
        drops = CounterMetricFamily(
            f"{PREFIX}_dropped_datagrams", "Admin datagrams dropped, by reason", labels=["reason"]
        )
        for reason, number in sorted((doc.get("drops") or {}).items()):
            drops.add_metric([reason], number)
        yield drops
        counters = self._source.counters()
        switches = CounterMetricFamily(
            f"{PREFIX}_path_switches", "A peer's traffic moved to another path", labels=["to"]
        )
        for to in ("direct", "relayed"):
            switches.add_metric([to], counters.get(f"switch_{to}", 0))
        yield switches
        yield CounterMetricFamily(
            f"{PREFIX}_conflicts",
            "Two live nodes claimed one wg IP or key (seen here)",
            value=counters.get("conflicts", 0),
        )
        failed = CounterMetricFamily(
            f"{PREFIX}_command_failures", "Failed ip/wg calls", labels=["command"]
        )
        for command in sorted({"ip", "wg", *proc.failures}):
            failed.add_metric([command], proc.failures.get(command, 0))
        yield failed
        yield GaugeMetricFamily(
            f"{PREFIX}_uptime_seconds",
            "Seconds since the daemon started",
            value=doc.get("uptime") or 0,
        )
        info = InfoMetricFamily(f"{PREFIX}_build", "The running wg_netmanager")
        info.add_metric(
            [],
            {
                "version": __version__,
                "python": platform.python_version(),
                "node": str(doc.get("name")),
                "wg_ip": str(doc.get("wg_ip")),
                "interface": str(doc.get("interface")),
                "backend": str(doc.get("backend")),
                "static": "true" if doc.get("is_static") else "false",
            },
        )
        yield info


def exposition(source: ApiSource) -> Callable[[], bytes]:
    """A function that makes one scrape's text."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(source))
    return lambda: generate_latest(registry)
