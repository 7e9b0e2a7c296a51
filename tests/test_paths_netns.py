"""Shorter routes for real: the seed's working example in namespaces, wireguard-go.

beta is static and public; alpha sits behind its own NAT firewall; charlie and
delta share a home LAN behind a NAT router. Expected: every pair first reaches
every other via beta, then charlie<->delta go direct on the LAN, then alpha,
charlie and delta reach each other through NAT traversal: six direct links.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import NODES, FaultMesh, fault_mesh
from tests.netns import Testbed
from tests.waits import wait_until

pytestmark = pytest.mark.netns


class PingWatch:
    """Pings every ordered pair every 0.5 s; remembers losses after first success."""

    def __init__(self, tb: Testbed) -> None:
        self.tb = tb
        self.first_ok: dict[tuple[str, str], float] = {}
        self.lost_after_ok: list[tuple[str, str, float]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, args=pair, daemon=True)
            for pair in itertools.permutations(NODES, 2)
        ]

    def _watch(self, a: str, b: str) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            ok = self.tb.ping(a, NODES[b], timeout=1.0)
            if ok:
                self.first_ok.setdefault((a, b), started)
            elif (a, b) in self.first_ok:
                self.lost_after_ok.append((a, b, started))
            self._stop.wait(max(0.0, 0.5 - (time.monotonic() - started)))

    def __enter__(self) -> PingWatch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[FaultMesh]:
    with fault_mesh(tmp_path, localAddressesInterval=0.5) as mesh:
        yield mesh


def test_working_example_goes_from_gateway_to_six_direct_links(mesh: FaultMesh) -> None:
    with PingWatch(mesh.tb) as watch:
        for box in NODES:
            mesh.start(box)
        assert wait_until(lambda: len(watch.first_ok) == 12, timeout=15), mesh.logs()
        assert wait_until(mesh.all_direct, timeout=15, interval=0.2), mesh.logs()
        time.sleep(1.0)  # a few more pings on the final paths
    # The gateway phase happened: at first the NATed nodes went through beta.
    logs = {box: mesh.log(box) for box in NODES}
    assert "reachable via beta" in logs["alpha"]
    assert "direct over LAN" in logs["charlie"] and "direct over LAN" in logs["delta"]
    assert "direct over NAT" in logs["alpha"]
    assert watch.lost_after_ok == [], mesh.logs()
    for box in NODES:
        assert "via" not in mesh.routes(box)
        assert len(mesh.tb.run(box, "wg", "show", "wg0", "peers").stdout.split()) == 3

    # Roaming: delta moves from the home LAN to a cafe behind another NAT.
    moved = mesh.fault("roam")
    assert wait_until(
        lambda: all(mesh.tb.ping("delta", NODES[b]) for b in NODES if b != "delta"), timeout=20
    ), mesh.logs()
    print(f"delta reachable again {time.monotonic() - moved:.1f} s after roaming")
    assert wait_until(mesh.all_direct, timeout=20, interval=0.2), mesh.logs()
    print(f"all direct again {time.monotonic() - moved:.1f} s after roaming")

    for box in NODES:
        assert mesh.tb.stop(mesh.procs[box], sig=signal.SIGTERM, timeout=5) == 0, mesh.logs()
    assert "Traceback" not in mesh.logs()
