"""26 real daemons in namespaces (ns/three_lans.sh), next to the simulator's figures.

    sudo .venv/bin/python -m scripts.bench_testbed [--runs N] [--only lazy,eager]
                                                   [--idle S] [--keep-logs DIR]

Run from the repository root (``-m``: it imports the test-support library ``tests``).

The testbed: two public statics (s1, s2) and three home LANs of eight dynamic
nodes (n3..n26), each LAN behind its own NAT router; the simulator's
``lan_mesh(26, statics=2)``. Every run builds a fresh testbed and starts a
prober (tests/prober.py, over wg0 only) in every box with the 25 others as
peers, then all 26 daemons together (``python -m wg_netmanager`` of this
checkout, default log level), with ``links: lazy`` or ``eager`` and
``idleAfter: IDLE_AFTER`` (so that the links the probers opened in lazy mode
close within the run). It measures:

converge   seconds from the start until every node heard every other (all
           650 directions; each prober asks every 0.5 s), and the median pair
idle       the probers stop; once links are settled (lazy: every dynamic
           node back to its two static peers; both modes: at least SETTLE s
           after the last probe), over ``--idle`` s: each daemon's CPU %
           (/proc/PID/stat, with the commands it ran; median and max over
           the daemons) and what else
           runs in its box (wireguard-go) at most; each box's underlay (eth0
           rx + tx from /proc/PID/net/dev) in B/s, as IP bytes (the frames'
           14-byte Ethernet headers taken off: the simulator counts IP and
           UDP headers), median and max of the dynamic nodes, and the two
           statics' mean; each daemon's RSS at the end; WireGuard peers of a
           dynamic node
by kind    the underlay of n3 and s1 over the same window (scripts/underlay_capture.py),
           IP bytes per second both ways: admin pings and pongs with
           WireGuard's handshakes and keepalives (what the simulator
           models), other admin datagrams (link reports, tables), ARP
sim        the same shape in the simulator (tests/sim.py, seed = the run's
           number): converged, SETTLE s later its underlay bytes over the
           same window, counted the same way (IP and UDP headers, both ways)

Prints each run's figures as it ends, then medians (scripts/scenarios.py),
with the load average (1 min) at the end of each window: the machine is
shared, and CPU figures move with its load; bytes do not. Asserts nothing.
Needs root. The namespaces and every process started in them go away on
exit, Ctrl-C and SIGTERM included (tests/netns.py Testbed.down).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from scripts.scenarios import Result, run_scenarios
from tests import procfs
from tests.faults import FaultMesh, Probing
from tests.helpers import SHARED_KEY_B64
from tests.netns import (
    REPO_ROOT,
    REQUIRED_TOOLS,
    Testbed,
    network_yaml,
    script_path,
    unique_prefix,
    which,
)
from tests.sim import lan_mesh
from tests.waits import wait_until
from wg_netmanager.core.timers import Timers

STATICS = ["s1", "s2"]
DYNAMIC = [f"n{k}" for k in range(3, 27)]
NODES = {box: f"10.1.1.{k}" for k, box in enumerate(STATICS + DYNAMIC, start=1)}
PROBING = Probing(interval=0.5, gap=2.0, flush=0.25)
CONVERGE_TIMEOUT = 120.0
IDLE_AFTER = 20.0  # network.yaml idleAfter: the probers' direct links close within the run
SETTLE = 30.0  # after the last probe (the simulator: after convergence), before idle
LINKS_TIMEOUT = IDLE_AFTER + 60.0  # lazy: until every dynamic node is back to its statics
ETHERNET = 14  # bytes of Ethernet header per frame, counted by /proc/net/dev
LINKS = ("lazy", "eager")
CAPTURED = ("n3", "s1")  # their underlay by kind (scripts/underlay_capture.py)
PING_SIZE = 160  # admin datagrams up to this size are pings and pongs; above: reports, tables

IDLE = 120.0  # set by --idle


class BenchError(Exception):
    pass


# --- the real testbed ----------------------------------------------------------------


def directions_heard(mesh: FaultMesh, started: float) -> list[float] | None:
    """Seconds from ``started`` to the first reply, for every ordered pair; None
    while some pair has not answered yet."""
    times = []
    for box in NODES:
        peers = mesh.probe(box)
        for other in NODES:
            if other == box:
                continue
            first = peers.get(NODES[other], {}).get("first_reply")
            if first is None:
                return None
            times.append(first - started)
    return times


def other_pids(mesh: FaultMesh, box: str) -> list[int]:
    """The processes in ``box`` besides its daemon (wireguard-go, when it runs)."""
    return [pid for pid in mesh.tb.pids(box) if pid != mesh.procs[box].pid]


def cpu(pid: int, children: bool = False) -> float:
    """CPU seconds of ``pid`` (``children``: with the commands it ran and waited for)."""
    stat = procfs.stat(pid)
    if stat is None:
        return 0.0
    ticks = stat.cutime + stat.cstime if children else 0
    return stat.cpu_seconds + ticks / procfs.CLK_TCK


def underlay_ip_bytes(pid: int) -> int:
    """eth0 rx + tx of ``pid``'s namespace, without the frames' Ethernet headers."""
    counters = procfs.net_dev(pid, "eth0")
    if counters is None:
        raise BenchError(f"no eth0 counters for PID {pid}")
    rx_bytes, rx_packets, tx_bytes, tx_packets = counters
    return rx_bytes + tx_bytes - ETHERNET * (rx_packets + tx_packets)


def says_ready(log: Path) -> bool:
    return log.exists() and "ready" in log.read_text()


def start_captures(mesh: FaultMesh, start_at: float) -> dict[str, Path]:
    """scripts/underlay_capture.py in the CAPTURED boxes over the idle window."""
    outs = {}
    for box in CAPTURED:
        k = int(NODES[box].rsplit(".", 1)[1])
        out = mesh.tmp / f"capture-{box}.json"
        argv = [sys.executable, "-m", "scripts.underlay_capture", "--dev", "eth0"]
        argv += ["--wg-port", str(50000 + k), "--admin-port", str(50500 + k)]
        argv += ["--start-at", repr(start_at), "--duration", str(IDLE), "--out", str(out)]
        log = mesh.tmp / f"capture-{box}.out"
        mesh.tb.spawn(box, argv, log, env={"PYTHONPATH": str(REPO_ROOT)})
        if not wait_until(functools.partial(says_ready, log), 5, 0.05):
            raise BenchError(f"the capture in {box} did not start")
        outs[box] = out
    return outs


def by_kind(out: Path) -> dict[str, float]:
    """IP bytes per second, both ways, of a capture: pings and pongs with
    WireGuard (what the simulator models), other admin datagrams (link
    reports, tables), ARP and the rest."""
    if not wait_until(out.exists, 15, 0.1):
        raise BenchError(f"no capture report {out}")
    doc = json.loads(out.read_text())
    sums = {"ping+WG": 0.0, "reports": 0.0, "ARP": 0.0, "rest": 0.0}
    for kind, c in doc["kinds"].items():
        size = c["out_bytes"] + c["in_bytes"] - ETHERNET * (c["out_packets"] + c["in_packets"])
        if kind.startswith("wg "):
            group = "ping+WG"
        elif kind.startswith("admin "):
            group = "ping+WG" if int(kind.split()[1]) <= PING_SIZE else "reports"
        else:
            group = "ARP" if kind == "arp" else "rest"
        sums[group] += size / doc["seconds"]
    return sums


def lazy_settled(mesh: FaultMesh) -> bool:
    return all(len(mesh.peers(box)) == len(STATICS) for box in DYNAMIC)


@contextmanager
def testbed_mesh(links: str, logs: Path) -> Iterator[FaultMesh]:
    config = network_yaml(SHARED_KEY_B64, len(STATICS), links=links, idleAfter=IDLE_AFTER)
    with Testbed(script_path("three_lans"), unique_prefix("tl")) as tb:
        mesh = FaultMesh(tb, logs, dict(NODES), config, verbose=False, probing=PROBING)
        try:
            yield mesh
        finally:
            mesh.stop_probers()
            mesh.stop_all()


def measure_real(links: str, logs: Path) -> Result:
    with testbed_mesh(links, logs) as mesh:
        peers = {box: [b for b in NODES if b != box] for box in NODES}
        mesh.start_probers(peers, duration=CONVERGE_TIMEOUT + 30)
        started = time.monotonic()
        mesh.start_all()
        heard: list[float] | None = None

        def converged() -> bool:
            nonlocal heard
            heard = directions_heard(mesh, started)
            return heard is not None

        if not wait_until(converged, timeout=CONVERGE_TIMEOUT, interval=0.25) or heard is None:
            raise BenchError(f"{links}: not every pair answered within {CONVERGE_TIMEOUT:g} s")
        mesh.stop_probers()
        quiet = time.monotonic()
        if links == "lazy" and not wait_until(lambda: lazy_settled(mesh), LINKS_TIMEOUT, 2.0):
            raise BenchError(f"{links}: direct links still open {LINKS_TIMEOUT:g} s after traffic")
        time.sleep(max(0.0, quiet + SETTLE - time.monotonic()))

        pids = {box: proc.pid for box, proc in mesh.procs.items()}
        others = {box: other_pids(mesh, box) for box in NODES}
        t0 = time.monotonic() + 5.0  # the captures' start, once they listen
        captures = start_captures(mesh, t0)
        time.sleep(max(0.0, t0 - time.monotonic()))
        cpu0 = {box: cpu(pid, children=True) for box, pid in pids.items()}
        other0 = {box: sum(cpu(p) for p in others[box]) for box in NODES}
        bytes0 = {box: underlay_ip_bytes(pid) for box, pid in pids.items()}
        time.sleep(IDLE)
        window = time.monotonic() - t0
        daemon_pct = {
            box: (cpu(pid, children=True) - cpu0[box]) / window * 100 for box, pid in pids.items()
        }
        other_pct = {
            box: (sum(cpu(p) for p in others[box]) - other0[box]) / window * 100 for box in NODES
        }
        rate = {box: (underlay_ip_bytes(pid) - bytes0[box]) / window for box, pid in pids.items()}
        rss = [(procfs.rss_kib(pid) or 0) / 1024 for pid in pids.values()]
        load = os.getloadavg()[0]
        dead = [box for box, proc in mesh.procs.items() if proc.poll() is not None]
        if dead:
            raise BenchError(f"{links}: daemons exited during the run: {', '.join(dead)}")
        wg_peers = [len(mesh.peers(box)) for box in DYNAMIC]
        kinds = {box: by_kind(out) for box, out in captures.items()}
    return {
        "converge s": max(heard),
        "pair median s": statistics.median(heard),
        "CPU % median": statistics.median(daemon_pct.values()),
        "CPU % max": max(daemon_pct.values()),
        "wg-go CPU % max": max(other_pct.values()),
        "B/s dynamic median": statistics.median(rate[b] for b in DYNAMIC),
        "B/s dynamic max": max(rate[b] for b in DYNAMIC),
        "B/s static": statistics.mean(rate[b] for b in STATICS),
        "RSS MiB median": statistics.median(rss),
        "RSS MiB max": max(rss),
        "WG peers dynamic": statistics.median(wg_peers),
        **{f"{box} {group} B/s": rate for box in CAPTURED for group, rate in kinds[box].items()},
        "load 1 min": load,
    }


# --- the simulator ------------------------------------------------------------------


def measure_sim(links: str, seed: int) -> Result:
    """The same shape and window in tests/sim.py (statics first, as the testbed's)."""
    net = lan_mesh(
        len(NODES),
        statics=len(STATICS),
        seed=seed,
        lazy=links == "lazy",
        timers=Timers(idle_after=IDLE_AFTER),
    )
    names = list(net.hosts)
    for name in names:
        net.start(name)
    net.wait_for(lambda: net.all_pairs_ping(names), limit=CONVERGE_TIMEOUT, step=0.05)
    net.run_for(SETTLE)
    before = dict(net.underlay)
    net.run_for(IDLE)
    rate = {n: (net.underlay.get(n, 0) - before.get(n, 0)) / IDLE for n in names}
    dynamic = names[len(STATICS) :]
    return {
        **{f"sim {box} B/s": rate[box] for box in CAPTURED},
        "sim B/s dynamic median": statistics.median(rate[n] for n in dynamic),
        "sim B/s dynamic max": max(rate[n] for n in dynamic),
        "sim B/s static": statistics.mean(rate[n] for n in names[: len(STATICS)]),
    }


# --- main -------------------------------------------------------------------------------


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through Testbed.down like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    global IDLE
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--idle", type=float, default=IDLE, help="idle window, seconds")
    ap.add_argument("--keep-logs", help="keep the daemons' logs in this directory")
    args, rest = ap.parse_known_args(argv)
    if not 10 <= args.idle <= 1800:
        ap.error("--idle must be within [10, 1800]")
    IDLE = args.idle
    if os.geteuid() != 0:
        print("bench_testbed: needs root (network namespaces)", file=sys.stderr)
        return 2
    missing = [t for t in REQUIRED_TOOLS if which(t) is None]
    if missing:
        print(f"bench_testbed: missing tools: {', '.join(missing)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    runs: dict[str, int] = {}

    def measure(links: str) -> Result:
        runs[links] = runs.get(links, 0) + 1
        with tempfile.TemporaryDirectory(prefix="bench_testbed.") as tmp:
            logs = Path(args.keep_logs or tmp) / f"{links}-{runs[links]}"
            logs.mkdir(parents=True, exist_ok=True)
            return {**measure_real(links, logs), **measure_sim(links, runs[links])}

    return run_scenarios(__doc__.splitlines()[0], LINKS, measure, rest, key_width=22, unit="")


if __name__ == "__main__":
    sys.exit(main())
