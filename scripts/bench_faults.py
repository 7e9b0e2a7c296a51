"""Fault benchmark on the working example in namespaces: medians of several runs.

    sudo .venv/bin/python -m scripts.bench_faults [--runs 3] [--only failover,restart]

Run from the repository root (``-m``: it imports the test-support library ``tests``).

Each run builds a fresh testbed (ns/working_example.sh: beta static and
public, alpha behind its own NAT, charlie and delta on a home LAN behind a
NAT router), starts the four daemons with default timers, waits until all six
links are direct, injects one fault and measures, with probers sending a UDP
echo every 50 ms over the WireGuard addresses (tests/prober.py):

failover   the LAN between charlie and delta breaks (lan-cut) while they
           talk: seconds until both route via beta (``failover``), the longest
           silence either prober saw (``gap``); then the LAN heals: seconds
           until both route directly again (``redirect``)
restart    beta is killed (SIGKILL, no bye) and started again 3 s later:
           seconds from its return (its interface up again) until every node
           and beta hear each other again
roam       delta moves to another network behind another NAT (roam): seconds
           until delta and every other node hear each other again
partition  the internet bridge forwards nothing for 10 s (deadAfter 6 s, so
           every session across it dies): seconds from the heal until all
           pairs ping, and until all links are direct again
flood      50 000 junk datagrams from another box to beta's admin port in a few
           seconds: beta's CPU seconds, and datagrams muted without decryption

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
from tests.faults import DYNAMIC, FaultMesh, fault_mesh


def converge(mesh: FaultMesh) -> None:
    mesh.start_all()
    mesh.wait(mesh.all_direct, 30)


def failover(mesh: FaultMesh) -> Result:
    converge(mesh)
    mesh.start_probers({"charlie": ["delta"], "delta": ["charlie"]})
    time.sleep(2.0)
    mesh.fault("lan-cut")
    took = mesh.wait(lambda: mesh.relayed("charlie", "delta"), 20)
    time.sleep(5.0)
    mesh.fault("lan-heal")
    back = mesh.wait(lambda: mesh.direct("charlie", "delta"), 20)
    time.sleep(1.0)
    gaps = mesh.outages("charlie", "delta") + mesh.outages("delta", "charlie")
    return {"failover": took, "gap": max(gaps, default=0.0), "redirect": back}


def restart(mesh: FaultMesh) -> Result:
    converge(mesh)
    mesh.start_probers({box: [b for b in mesh.nodes if b != box] for box in mesh.nodes})
    time.sleep(3.0)
    mesh.tb.stop(mesh.procs["beta"], sig=signal.SIGKILL, timeout=5)
    time.sleep(3.0)
    spawned = time.monotonic()
    mesh.start("beta")
    # Its return: the new daemon's interface is up (it has the crashed run's
    # key, so the key on wg0 does not tell).
    mesh.wait(lambda: "beta 10.1.1.1 on wg0" in mesh.log("beta", 1), 15, interval=0.02)
    back = time.monotonic()
    took = mesh.wait_heard("beta", DYNAMIC, back, 15)
    return {"back after return": took, "return after spawn": back - spawned}


def roam(mesh: FaultMesh) -> Result:
    converge(mesh)
    mesh.start_probers({"delta": ["beta", "charlie", "alpha"]})
    mesh.start_probers({b: ["delta"] for b in ("beta", "charlie", "alpha")})
    time.sleep(2.0)
    moved = mesh.fault("roam")
    took = mesh.wait_heard("delta", ["beta", "charlie", "alpha"], moved, 20)
    return {"reachable": took, "all direct": mesh.wait(mesh.all_direct, 20)}


def partition(mesh: FaultMesh) -> Result:
    converge(mesh)
    mesh.fault("partition")
    time.sleep(10.0)
    mesh.fault("heal")
    took = mesh.wait(mesh.all_ping, 30)
    return {"all ping": took, "then all direct": mesh.wait(mesh.all_direct, 30)}


JUNK = ("malformed", "bad seal", "unknown version", "muted source")  # drop reasons


def flood(mesh: FaultMesh) -> Result:
    mesh.fault("attacker")
    converge(mesh)
    time.sleep(1.0)
    before = mesh.cpu_seconds("beta")
    started = time.monotonic()
    res = mesh.flood(50_000)
    sent_for = time.monotonic() - started
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    time.sleep(1.0)
    drops = mesh.status("beta")["drops"]
    return {
        "CPU s": mesh.cpu_seconds("beta") - before,
        "sent in s": sent_for,
        "received": sum(drops.get(k, 0) for k in JUNK),
        "muted": drops.get("muted source", 0),
    }


SCENARIOS: dict[str, tuple[Callable[[FaultMesh], Result], dict[str, float]]] = {
    "failover": (failover, {}),
    "restart": (restart, {}),
    "roam": (roam, {}),
    "partition": (partition, {"pingInterval": 2, "deadAfter": 6}),
    "flood": (flood, {}),
}


def measure(name: str) -> Result:
    run, timers = SCENARIOS[name]
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp,
        fault_mesh(Path(tmp), links=None, **timers) as mesh,
    ):
        result = run(mesh)
        mesh.stop_all()
    return result


def main(argv: list[str] | None = None) -> int:
    return run_scenarios(__doc__.split("\n\n")[0], list(SCENARIOS), measure, argv)


if __name__ == "__main__":
    sys.exit(main())
