"""Service figures on the working example in namespaces: medians of several runs.

    sudo .venv/bin/python -m scripts.bench_service [--runs 3] [--reloads 3]

Run from the repository root (``-m``: it imports the test-support library ``tests``).

Each run builds a fresh testbed (ns/working_example.sh), starts beta (the
static) and charlie (dynamic, behind a NAT) each with its own
``NOTIFY_SOCKET`` (a unix socket path, as systemd gives one) and the other
two plainly, waits until all six links are direct, then:

ready      seconds from exec of the daemon to its READY=1 (interface up,
           admin socket bound; peers are not waited for), beta and charlie
reload     seconds from SIGHUP to READY=1 after RELOADING=1, as the service
           manager sees it (``--reloads`` times each, alternating a timer
           in network.yaml), and the daemon's own "reloaded in N ms"
loss       pings lost during those reloads: every ordered pair of the four
           pings its peer's wg IP every 20 ms from before the first reload
           to after the last (goal: 0)

All traffic stays inside the namespaces the benchmark creates; every run
removes them (and its processes) when it ends, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.faults import fault_mesh
from tests.services import PING_INTERVAL, NotifySocket, ping_losses, start_pings

NOTIFIED = ("beta", "charlie")  # started under a "service manager"
Result = dict[str, list[float]]


def one_run(tmp: Path, reloads: int) -> Result:
    result: Result = {}
    managers = {box: NotifySocket(str(tmp / f"notify-{box}.sock")) for box in NOTIFIED}
    try:
        with fault_mesh(tmp) as mesh:
            for box in mesh.nodes:
                prefix = []
                if box in managers:
                    prefix = ["env", f"NOTIFY_SOCKET={managers[box].address}"]
                spawned = time.monotonic()
                mesh.start(box, *prefix)
                if box in managers:
                    ready = managers[box].wait_for("READY=1", timeout=20)
                    result.setdefault(f"ready {box} (s)", []).append(ready - spawned)
            mesh.wait(mesh.all_direct, 60)
            pause = 1.0
            count = int((reloads * 2 * pause + 2 * pause) / PING_INTERVAL)
            pings = start_pings(mesh, list(itertools.permutations(mesh.nodes, 2)), count)
            time.sleep(pause)
            base = mesh.config.read_text()
            for index in range(reloads):
                mesh.config.write_text(base + f"timers:\n  pingInterval: {5 + index % 2}\n")
                for box, manager in managers.items():
                    hangup = time.monotonic()
                    os.kill(mesh.procs[box].pid, signal.SIGHUP)
                    reloading = manager.wait_for("RELOADING=1", timeout=10, after=hangup)
                    ready = manager.wait_for("READY=1", timeout=10, after=reloading)
                    result.setdefault(f"reload {box} (s)", []).append(ready - hangup)
                time.sleep(pause)
            losses = ping_losses(pings, timeout=count * PING_INTERVAL + 30)
            result[f"pings lost (of {count * len(losses)})"] = [float(sum(losses.values()))]
            for box in managers:
                own = re.findall(r"reloaded in (\d+) ms", mesh.log(box))
                assert len(own) == reloads, mesh.log(box)
                result[f"reload {box}, own (s)"] = [int(ms) / 1000 for ms in own]
            codes = mesh.stop_all()
            assert set(codes.values()) == {0}, (codes, mesh.logs())
    finally:
        for manager in managers.values():
            manager.close()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reloads", type=int, default=3)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_service: needs root (network namespaces)", file=sys.stderr)
        return 2
    merged: Result = {}
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="wgnm-service-") as tmp:
            result = one_run(Path(tmp), args.reloads)
        print(f"run {run + 1}: " + ", ".join(f"{k} {max(v):.3f}" for k, v in result.items()))
        for key, values in result.items():
            merged.setdefault(key, []).extend(values)
    print(f"\nmedians over {args.runs} runs ({args.reloads} reloads each):")
    for key, values in merged.items():
        low, high = min(values), max(values)
        median = statistics.median(values)
        print(f"  {key:24} {median:8.3f}  ({low:.3f}-{high:.3f}, n={len(values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
