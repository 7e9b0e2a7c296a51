"""Gateway benchmark in namespaces: medians of several runs.

    sudo .venv/bin/python -m scripts.bench_gateways [--runs 3] [--only cold,failover,stop]

Run from the repository root (``-m``: it imports the test-support library ``tests``).

Each run builds a fresh testbed (ns/working_example.sh with ``lan-device``:
a lamp at 192.168.1.10 that runs no daemon on the home LAN of charlie and
delta, both its gateways, charlie first; default timers) and measures with
pings every 20 ms (``ping -D``) and the reachability probers of
tests/prober.py over the WireGuard addresses:

cold       all four daemons start at once: seconds until the lamp answers
           alpha and beta (the nodes that need a gateway; ``lamp``), until
           they hear every other node (``mesh``), and the lamp's answer after
           the mesh (``lamp after mesh``: the larger of the two nodes)
failover   charlie's machine dies (daemon SIGKILL, its WireGuard gone): the
           longest silence of the lamp's answers at alpha and beta (``gap``);
           then charlie starts again: seconds until the LAN is served by it
           again (``return``, gatewayReturn 10 s included) and the longest
           silence around that move (``return gap``)
stop       charlie is stopped (SIGTERM: it says bye): the longest silence

All traffic stays inside the namespaces the benchmark creates; every run
removes them (and its processes) when it ends, also on failure or Ctrl-C.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from scripts.scenarios import Result, run_scenarios
from tests.faults import NODES
from tests.gateways import LAMP, LAN, GatewayMesh, gateway_mesh

USERS = ("alpha", "beta")  # the nodes that reach the lamp through a gateway
PING_INTERVAL = 0.02


def converge(mesh: GatewayMesh) -> None:
    mesh.start_all()
    mesh.wait(mesh.all_direct, 30)
    mesh.wait(lambda: all(mesh.reaches(box, LAMP) for box in USERS), 10)


def cold(mesh: GatewayMesh) -> Result:
    mesh.start_probers({box: [b for b in mesh.nodes if b != box] for box in USERS})
    mesh.start_probers({box: list(USERS) for box in mesh.nodes if box not in USERS})
    logs = {box: mesh.ping_log(box, LAMP, PING_INTERVAL) for box in USERS}
    time.sleep(0.5)
    wall, started = time.time(), time.monotonic()
    mesh.start_all()
    mesh.wait(lambda: all(log.answers() for log in logs.values()), 30, interval=0.02)
    others = {box: [b for b in mesh.nodes if b != box] for box in USERS}
    mesh.wait(lambda: all(mesh.hear_each_other(b, others[b], started) for b in USERS), 30)
    lamp, up = {}, {}
    for box in USERS:
        lamp[box] = logs[box].answers()[0] - wall
        peers = mesh.probe(box)
        up[box] = max(peers[NODES[p]]["first_reply"] for p in others[box]) - started
    return {
        "lamp": max(lamp.values()),
        "mesh": max(up.values()),
        "lamp after mesh": max(lamp[b] - up[b] for b in USERS),
    }


def failover(mesh: GatewayMesh) -> Result:
    converge(mesh)
    time.sleep(2.0)
    logs = [mesh.ping_log(box, LAMP, PING_INTERVAL) for box in USERS]
    time.sleep(1.0)
    killed = time.time()
    mesh.kill_box("charlie")
    mesh.wait(lambda: all(log.answered_after(killed + 0.5) for log in logs), 15, interval=0.02)
    time.sleep(1.0)
    gap = max(log.longest_gap(after=killed - 0.5) for log in logs)
    restarted, since = time.time(), time.monotonic()
    mesh.start("charlie")
    charlie = f"via {NODES['charlie']}"
    mesh.wait(lambda: all(mesh.route_to(b, LAN) == charlie for b in USERS), 40, interval=0.05)
    back = time.monotonic() - since
    time.sleep(2.0)
    return {
        "gap": gap,
        "return": back,
        "return gap": max(log.longest_gap(after=restarted) for log in logs),
    }


def stop(mesh: GatewayMesh) -> Result:
    converge(mesh)
    time.sleep(2.0)
    logs = [mesh.ping_log(box, LAMP, PING_INTERVAL) for box in USERS]
    time.sleep(1.0)
    stopped = time.time()
    mesh.tb.stop(mesh.procs["charlie"], sig=signal.SIGTERM)
    mesh.wait(lambda: all(log.answered_after(stopped + 0.5) for log in logs), 15, interval=0.02)
    return {"gap": max(log.longest_gap(after=stopped - 0.5) for log in logs)}


SCENARIOS: dict[str, Callable[[GatewayMesh], Result]] = {
    "cold": cold,
    "failover": failover,
    "stop": stop,
}


def measure(name: str) -> Result:
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-gw-{name}-") as tmp,
        gateway_mesh(Path(tmp), verbose=False) as mesh,
    ):
        result = SCENARIOS[name](mesh)
        mesh.stop_pings()
        mesh.stop_probers()
        mesh.stop_all()
    return result


def main(argv: list[str] | None = None) -> int:
    description = __doc__.split("\n\n")[0]
    return run_scenarios(description, list(SCENARIOS), measure, argv, key_width=16, unit=" s")


if __name__ == "__main__":
    sys.exit(main())
