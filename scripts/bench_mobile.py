"""A mobile node's idle bytes on its underlay, for real: medians of several runs.

    sudo .venv/bin/python -m scripts.bench_mobile [--runs 3] [--seconds 240]

Run from the repository root (``-m``: it imports the test-support library ``tests``).

Each run builds a fresh working example in namespaces (ns/working_example.sh:
beta static and public, alpha behind its own NAT, charlie and delta on a home
LAN behind a NAT router) with ``links: lazy``, starts alpha with ``--mobile``
and the others as usual, waits until everyone pings alpha and charlie (that
traffic opens direct links; they close after idleAfter, 5 s here), lets the
mesh settle, then counts for ``--seconds`` what crosses the underlay
interface (eth0) of alpha, the mobile, and of charlie, an ordinary node with
the same one static link:

eth0       bytes per second in and out, as the interface counts them
           (Ethernet frames, and the ARP that keeps the NAT box's address)
ipv4       IPv4 bytes per second in and out of eth0, headers included
           (nftables counters): what a cellular link would carry
wg, admin  the same for the node's WireGuard port and its admin port

The window should span whole WireGuard rekey cycles (two minutes each) to be
fair to both nodes: 240 s by default. All traffic stays inside the
namespaces the benchmark creates; every run removes them (and its
processes) when it ends, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.faults import NODES, FaultMesh, fault_mesh

IDLE = 5.0  # idleAfter: the direct links the first pings open close soon
SETTLE = 15.0  # seconds after that before counting
TABLE = "bench_mobile"
BOXES = {"alpha": "mobile", "charlie": "ordinary"}
Result = dict[str, float]


def ports(box: str) -> tuple[int, int]:
    """WireGuard and admin port of a box (the daemon's defaults)."""
    octet = int(NODES[box].rsplit(".", 1)[1])
    return 50000 + octet, 50500 + octet


def install_counters(mesh: FaultMesh, box: str) -> None:
    wg, admin = ports(box)
    rules = [f"add table inet {TABLE}"]
    for chain, hook, iface in (("in", "input", "iifname"), ("out", "output", "oifname")):
        rules.append(f"add chain inet {TABLE} {chain} {{ type filter hook {hook} priority 0; }}")
        match = f'add rule inet {TABLE} {chain} {iface} "eth0"'
        rules.append(f"{match} meta nfproto ipv4 counter comment ipv4")
        for port in (wg, admin):
            direction = "dport" if chain == "in" else "sport"
            rules.append(f"{match} udp {direction} {port} counter comment port{port}")
    res = mesh.tb.run(box, "nft", "-f", "-", input="\n".join(rules) + "\n")
    assert res.returncode == 0, res.stderr


def read_counters(mesh: FaultMesh, box: str) -> Result:
    """Cumulative bytes: eth0 frames, and IPv4 in all and per port (nftables)."""
    link = json.loads(mesh.tb.run(box, "ip", "-s", "-j", "link", "show", "dev", "eth0").stdout)
    stats = link[0]["stats64"]
    out = mesh.tb.run(box, "nft", "list", "table", "inet", TABLE).stdout
    counted: dict[str, int] = {}
    for count, name in re.findall(r"counter packets \d+ bytes (\d+) comment \"(\w+)\"", out):
        counted[name] = counted.get(name, 0) + int(count)
    wg, admin = ports(box)
    return {
        "eth0": stats["rx"]["bytes"] + stats["tx"]["bytes"],
        "ipv4": counted.get("ipv4", 0),
        "wg": counted.get(f"port{wg}", 0),
        "admin": counted.get(f"port{admin}", 0),
    }


def one_run(tmp: Path, seconds: float) -> dict[str, Result]:
    with fault_mesh(tmp, links="lazy", idleAfter=IDLE) as mesh:
        for box in ("beta", "charlie", "delta"):
            mesh.start(box)
        mesh.start("alpha", options=["--mobile"])
        mesh.wait(lambda: mesh.all_ping(), 30)
        mesh.wait(lambda: all(len(mesh.peers(box)) == 1 for box in BOXES), 3 * IDLE + 30)
        time.sleep(SETTLE)
        for box in BOXES:
            install_counters(mesh, box)
        before = {box: read_counters(mesh, box) for box in BOXES}
        started = time.monotonic()
        time.sleep(seconds)
        after = {box: read_counters(mesh, box) for box in BOXES}
        took = time.monotonic() - started
        assert all(len(mesh.peers(box)) == 1 for box in BOXES), mesh.logs()
        codes = mesh.stop_all()
        assert set(codes.values()) == {0}, (codes, mesh.logs())
    return {
        box: {key: (after[box][key] - before[box][key]) / took for key in before[box]}
        for box in BOXES
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=240.0, help="counting window per run")
    args = ap.parse_args(argv)
    if not 1 <= args.runs <= 20 or not 10 <= args.seconds <= 3600:
        ap.error("--runs within [1, 20], --seconds within [10, 3600]")
    runs: list[dict[str, Result]] = []
    for index in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-mobile-") as tmp:
            result = one_run(Path(tmp), args.seconds)
        runs.append(result)
        shown = "   ".join(
            f"{box}: " + " ".join(f"{k} {v:.2f}" for k, v in values.items())
            for box, values in result.items()
        )
        print(f"run {index + 1} (B/s): {shown}", flush=True)
    print(f"\nidle underlay bytes per second, medians of {args.runs} runs of {args.seconds:g} s:")
    for box, role in BOXES.items():
        keys = runs[0][box]
        medians = "  ".join(
            f"{key} {statistics.median(r[box][key] for r in runs):6.2f}" for key in keys
        )
        print(f"  {box:8} ({role:8})  {medians}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
