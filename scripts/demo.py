"""Live demo: a namespace testbed with wg_netmanager in every box.

Builds the testbed, starts one daemon per box (headless, logs in a temp
directory), and redraws once a second: a ping matrix over the WireGuard
addresses and each box's paths (direct, or via which gateway). Ctrl-C stops
the daemons and removes everything.

    sudo scripts/demo.sh                      # the seed's working example
    sudo scripts/demo.sh --topology three_boxes

demo.sh runs ``python -m scripts.demo`` from the repository root (``-m``: it
imports the test-support library ``tests``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.netns import Daemons, Testbed, network_yaml, script_path, unique_prefix
from wg_netmanager.config import generate_shared_key

TOPOLOGIES: dict[str, tuple[str, dict[str, str]]] = {
    # script, box -> wg IP; the first box is the static node
    "three_boxes": (
        "three_boxes",
        {"alice": "10.1.1.1", "bob": "10.1.1.2", "charlie": "10.1.1.3"},
    ),
    "working_example": (
        "working_example",
        {"beta": "10.1.1.1", "alpha": "10.1.1.2", "charlie": "10.1.1.3", "delta": "10.1.1.4"},
    ),
}


def pair_states(daemons: Daemons) -> dict[tuple[str, str], str]:
    """For each pair of boxes: "direct", "via <gateway>", or "-" (no route yet)."""
    nodes = daemons.nodes
    by_ip = {ip: name for name, ip in nodes.items()}
    routes: dict[str, dict[str, str]] = {}
    for box in nodes:
        out = daemons.routes(box)
        table = routes[box] = {}
        for line in out.splitlines():
            fields = line.split()
            dest = by_ip.get(fields[0].removesuffix("/32"), fields[0])
            via = fields[fields.index("via") + 1] if "via" in fields else None
            table[dest] = f"via {by_ip.get(via, via)}" if via else "direct"
    states = {}
    for a, b in itertools.combinations(nodes, 2):
        ab, ba = routes[a].get(b, "-"), routes[b].get(a, "-")
        states[(a, b)] = ab if ab == ba else f"{ab} / {ba}"
    return states


def watch_timeline(
    daemons: Daemons,
    started: float,
    timeline: list[str],
    last: dict[tuple[str, str], str],
    stop: threading.Event,
) -> None:
    """Sample every pair's path every 50 ms: the phases (via the gateway, then
    LAN, then NAT-direct) happen faster than the ping matrix can redraw."""
    while not stop.wait(0.05):
        for pair, state in pair_states(daemons).items():
            if last.get(pair) != state:
                last[pair] = state
                when = time.monotonic() - started
                timeline.append(f"{when:5.2f} s  {pair[0]}<->{pair[1]}: {state}")


def paths(daemons: Daemons, box: str) -> str:
    by_ip = {ip: name for name, ip in daemons.nodes.items()}
    parts = []
    for line in daemons.routes(box).splitlines():
        fields = line.split()
        dest = fields[0].removesuffix("/32")
        if "via" in fields:
            gateway = fields[fields.index("via") + 1]
            parts.append(f"{by_ip.get(dest, dest)} via {by_ip.get(gateway, gateway)}")
        else:
            parts.append(f"{by_ip.get(dest, dest)} direct")
    return ", ".join(sorted(parts)) or "(no routes yet)"


def draw(
    daemons: Daemons,
    started: float,
    pool: concurrent.futures.Executor,
    timeline: list[str],
    last: dict[tuple[str, str], str],
) -> None:
    names = list(daemons.nodes)
    pairs = [(a, b) for a in names for b in names if a != b]
    results = dict(zip(pairs, pool.map(lambda p: daemons.pings(*p), pairs), strict=True))
    lines = [f"wg_netmanager demo - {time.monotonic() - started:5.1f} s - Ctrl-C to stop", ""]
    lines.append("ping from \\ to " + "".join(f"{n:>9}" for n in names))
    for a in names:
        cells = "".join(
            f"{'-' if a == b else ('ok' if results[(a, b)] else 'LOST'):>9}" for b in names
        )
        lines.append(f"{a:<15}{cells}")
    lines.append("")
    for box in names:
        lines.append(f"{box:<8} {paths(daemons, box)}")
    lines += ["", "timeline (which path each pair uses):", *timeline[-14:]]
    sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", choices=sorted(TOPOLOGIES), default="working_example")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: Ctrl-C)")
    args = parser.parse_args()
    script, nodes = TOPOLOGIES[args.topology]
    with (
        tempfile.TemporaryDirectory(prefix="wgnm-demo-") as tmp,
        Testbed(script_path(script), unique_prefix("demo")) as tb,
    ):
        config = network_yaml(shared_key=generate_shared_key())
        daemons = Daemons(tb, Path(tmp), nodes, config, verbose=False)
        started = time.monotonic()
        daemons.start_all()
        timeline: list[str] = []
        last: dict[tuple[str, str], str] = {}
        stop = threading.Event()
        watcher = threading.Thread(
            target=watch_timeline, args=(daemons, started, timeline, last, stop), daemon=True
        )
        watcher.start()
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            try:
                while not args.seconds or time.monotonic() - started < args.seconds:
                    draw(daemons, started, pool, timeline, last)
                    time.sleep(0.2)
            except KeyboardInterrupt:
                pass
            finally:
                stop.set()
                watcher.join(timeout=5)
        print(f"\nstopping; daemon logs were in {tmp}:")
        for log in sorted(Path(tmp).glob("*.log")):
            tail = log.read_text().splitlines()[-3:]
            print(f"--- {log.name}\n" + "\n".join(tail))
    print("testbed removed")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
