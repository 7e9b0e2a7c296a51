"""Figures of the HTTP API, the web UI and the mesh map (prints medians).

    sudo .venv/bin/python -m scripts.bench_api [--runs 3] [--window 20] [--cycles 3]
        [--nodes 100] [--only cpu,latency,sizes,imports]

Run from the repository root (``-m``: it imports the test-support library ``tests``).

cpu      the working example in namespaces (``ns/working_example.sh``); charlie's
         daemon CPU% over ``--window`` seconds with nobody watching, then with
         headless chromium showing its web UI (``tests.browser``), ``--runs`` times
         each (goal: under 1 % more while one browser watches);
latency  the LAN between charlie and delta is cut and healed ``--cycles`` times while
         event streams are read in charlie's box (its own change) and in alpha's
         (the change as beta's merged map brings it): seconds from the core's event
         to the status and map documents that show it (goal: under 0.5 s locally);
sizes    ``--nodes`` simulated nodes (two statics; the others public, behind NATs
         or on home LANs; ``tests/sim.py``): what the map's protocol and the API's
         documents weigh;
imports  what ``python -X importtime`` says the web stack adds to the daemon.

cpu and latency need root, wireguard-go, chromium and chromium-driver.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from tests import browser
from tests.faults import FaultMesh, fault_mesh
from tests.http import StubSource
from tests.sim import Nat, SimNet
from wg_netmanager import wire
from wg_netmanager.core.mesh_map import _chunks, _groups, relayed_pairs
from wg_netmanager.core.timers import Timers
from wg_netmanager.mesh_text import mesh_document
from wg_netmanager.status_text import status_document

URL = "http://127.0.0.1:50080/"

# An event stream reader run in a box: one JSON line per message, with its arrival time.
READER = r"""
import json, socket, sys, time
sock = socket.create_connection(("127.0.0.1", 50080))
sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
buffer, kind = b"", None
while True:
    data = sock.recv(65536)
    if not data:
        break
    buffer += data
    while b"\n" in buffer:
        line, buffer = buffer.split(b"\n", 1)
        text = line.decode(errors="replace").rstrip("\r")
        if text.startswith("event: "):
            kind = text[7:]
        elif text.startswith("data: ") and kind is not None:
            doc = json.loads(text[6:])
            out = {"t": time.time(), "kind": kind, "size": len(text)}
            if kind == "status":
                out["paths"] = {p["wg_ip"]: [p["path"], p["kind"]] for p in doc["peers"]}
            elif kind == "mesh":
                out["links"] = sorted(l["a"] + "-" + l["b"] + ":" + l["kind"] for l in doc["links"])
            elif kind == "event":
                out.update(type=doc["type"], time=doc["time"], text=doc["text"])
            print(json.dumps(out), flush=True)
"""


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- cpu ------------------------------------------------------------------------------


def cpu_percent(mesh: FaultMesh, box: str, seconds: float) -> float:
    before, started = mesh.cpu_seconds(box), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (mesh.cpu_seconds(box) - before) / (time.monotonic() - started)


def bench_cpu(runs: int, window: float) -> None:
    missing = browser.available()
    if missing:
        print(f"cpu: skipped, needs {missing}")
        return
    with tempfile.TemporaryDirectory() as tmp, fault_mesh(Path(tmp)) as mesh:
        mesh.verbose = False
        mesh.start_all()
        mesh.wait(mesh.all_direct, 60)
        time.sleep(5.0)
        # Nobody watching first: a look keeps latency measured for a minute after.
        idle = [cpu_percent(mesh, "charlie", window) for _ in range(runs)]
        with browser.Browser(mesh.tb.box_cmd, "charlie", Path(tmp)) as chromium:
            chromium.get(URL)
            chromium.wait_js(
                "return document.querySelectorAll('#map g.node').length",
                lambda n: n == 4,
                timeout=20,
            )
            time.sleep(2.0)
            watched = [cpu_percent(mesh, "charlie", window) for _ in range(runs)]
        print(f"cpu: charlie's daemon, {window:g} s windows, {runs} runs each")
        print(f"  nobody watching      {median(idle):6.2f} %  ({fmt(idle)})")
        print(f"  one browser watching {median(watched):6.2f} %  ({fmt(watched)})")
        print(f"  the browser costs    {median(watched) - median(idle):6.2f} % of one core")
        mesh.stop_all()


def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


# --- latency ---------------------------------------------------------------------------------


class Reader:
    """The event stream of the daemon in ``box``, read by a program in that box;
    its lines collected by a thread as they come (a reader that falls behind
    is dropped by the daemon)."""

    def __init__(self, mesh: FaultMesh, box: str) -> None:
        argv = mesh.tb.box_cmd(box, sys.executable, "-c", READER)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.lines: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))  # list.append is atomic

    def taken(self) -> list[dict[str, Any]]:
        """The lines so far, and a fresh start."""
        lines, self.lines = self.lines, []
        return lines

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)
        self._thread.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def first_after(
    lines: list[dict[str, Any]], since: float, kind: str, test: Any
) -> dict[str, Any] | None:
    return next((x for x in lines if x["t"] >= since and x["kind"] == kind and test(x)), None)


def bench_latency(cycles: int) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        fault_mesh(Path(tmp), pingInterval=2, deadAfter=6, linkTimeout=1) as mesh,
    ):
        mesh.verbose = False
        mesh.start_all()
        mesh.wait(mesh.all_direct, 60)
        local, remote = Reader(mesh, "charlie"), Reader(mesh, "alpha")
        # alpha's stream keeps beta's map coming: it shows charlie and delta's link.
        time.sleep(3.0)
        status_lat, mesh_lat, remote_lat = [], [], []
        delta, pair = "10.1.1.4", "10.1.1.3-10.1.1.4"
        mesh.start_probers({"charlie": ["delta"], "delta": ["charlie"]}, duration=600)
        for _ in range(cycles):
            for fault, want in (("lan-cut", "relayed"), ("lan-heal", "lan")):
                mesh.fault(fault)
                mesh.wait(
                    (lambda: mesh.relayed("charlie", "delta"))
                    if want == "relayed"
                    else (lambda: mesh.direct("charlie", "delta")),
                    40,
                )
                time.sleep(3.0)
                lines, far_lines = local.taken(), remote.taken()
                events = [
                    x
                    for x in lines
                    if x["kind"] == "event"
                    and x["type"] in ("DirectLink", "DirectLinkFailed", "PeerLeftLink")
                    and "delta" in x["text"]
                ]
                if not events:
                    continue
                event = events[-1]
                moved = event["time"]

                def shows(x: dict[str, Any], w: str = want) -> bool:
                    path = x["paths"].get(delta, ["", ""])
                    return (path[0] == "via") if w == "relayed" else (path[1] == "lan")

                def has_link(x: dict[str, Any], w: str = want) -> bool:
                    lan = f"{pair}:lan" in x["links"]
                    return (not lan) if w == "relayed" else lan

                status = first_after(lines, moved - 0.05, "status", shows)
                doc = first_after(lines, moved - 0.05, "mesh", has_link)
                far = first_after(far_lines, moved - 0.05, "mesh", has_link)
                if status:
                    status_lat.append(max(0.0, status["t"] - moved))
                if doc:
                    mesh_lat.append(max(0.0, doc["t"] - moved))
                if far:
                    remote_lat.append(max(0.0, far["t"] - moved))
        local.close()
        remote.close()
        mesh.stop_probers()
        print(f"latency: from the core's path event to the event stream ({cycles} cut/heal cycles)")
        print(f"  status at charlie           {median(status_lat):.3f} s  ({fmt(status_lat)})")
        print(f"  map at charlie              {median(mesh_lat):.3f} s  ({fmt(mesh_lat)})")
        print(f"  map at alpha (beta's merge) {median(remote_lat):.3f} s  ({fmt(remote_lat)})")
        mesh.stop_all()


# --- sizes ----------------------------------------------------------------------------


def big_mesh(nodes: int, seed: int = 1) -> SimNet:
    """Two statics; a third of the others public, a third behind their own NAT
    (every fourth symmetric), a third on home LANs of five behind one NAT."""
    net = SimNet(Timers(), seed=seed, wg_period=0.2)
    net.add_host("s1", "198.51.100.1", "10.1.1.1", static=True)
    net.add_host("s2", "198.51.100.2", "10.1.1.2", static=True)
    homes: list[Nat] = []
    for i in range(nodes - 2):
        ip = f"10.1.1.{3 + i}"  # the simulator's subnet is a /24
        name = f"n{i}"
        if i % 3 == 0:
            net.add_host(name, f"203.0.{i // 250}.{1 + i % 250}", ip)
        elif i % 3 == 1:
            nat = Nat(f"198.18.{i // 250}.{1 + i % 250}", symmetric=i % 4 == 1)
            net.add_host(name, f"192.168.{i % 250}.2", ip, nat=nat)
        else:
            home = len(homes) if (i // 3) % 5 == 0 or not homes else len(homes) - 1
            if home == len(homes):
                homes.append(Nat(f"198.19.{home // 250}.{1 + home % 250}"))
            net.add_host(
                name, f"10.200.{home}.{2 + (i // 3) % 5}", ip, nat=homes[home], lan=f"h{home}"
            )
    for name in net.hosts:
        net.start(name)
    return net


def bench_sizes(nodes: int) -> None:
    started = time.monotonic()
    net = big_mesh(nodes)
    net.run_for(30.0)
    took = time.monotonic() - started
    s1 = net.hosts["s1"].node
    assert s1 is not None
    dynamic = [h.node for name, h in net.hosts.items() if name.startswith("n") and h.node]
    picture = s1.mesh_picture(net.now)
    links = sum(len(r.links) for r in picture)
    reports = [sum(wire.encoded_size(_report(c)) for c in _chunks(r)) for r in picture]
    groups = _groups([c for r in picture for c in _chunks(r)])
    map_bytes = [
        wire.encoded_size(wire.MapPart(s1.mesh.version, i, len(groups), g))
        for i, g in enumerate(groups)
    ]
    me = IPv4Address("10.1.1.1")
    doc = json.dumps(mesh_document(picture, me=me, source=me), separators=(",", ":"))
    explicit = json.dumps(
        mesh_document(picture, me=me, source=me, relayed=True), separators=(",", ":")
    )
    static_status = status_document(s1.statistics(net.now), interface="wg0")
    node_status = status_document(dynamic[0].statistics(net.now), interface="wg0")
    seqs_before = [n.mesh._seq for n in dynamic]
    net.run_for(60.0)
    seqs_after = [n.mesh._seq for n in dynamic]
    # One link breaks: two nodes of a home LAN lose their LAN while they talk.
    a, b = [name for name, h in net.hosts.items() if h.lan == "h0"][:2]
    net.flows[(a, b)] = net.flows[(b, a)] = 1000.0
    net.run_for(3.0)
    version = s1.mesh.version
    net.partitioned.add(frozenset((a, b)))
    net.run_for(8.0)
    link_change = [len(body) + wire.TRANSPORT_OVERHEAD for body in s1.mesh._encode(version)]
    version = s1.mesh.version
    net.stop(next(name for name in net.hosts if name.startswith("n")))  # one node leaves
    net.run_for(2.0)
    change = [len(body) + wire.TRANSPORT_OVERHEAD for body in s1.mesh._encode(version)]
    from wg_netmanager import metrics

    metrics_text = metrics.exposition(StubSource(status=static_status))()
    print(f"sizes: {nodes} simulated nodes ({took:.0f} s to simulate 30 s), seen at static s1")
    print(f"  direct links on the map        {links // 2}")
    print(f"  relayed pairs (implied)        {len(relayed_pairs(picture))}")
    print(f"  one node's report              median {median(reports):.0f} B, max {max(reports)} B")
    print(f"  the merged map (MapPart)       {len(map_bytes)} datagrams, {sum(map_bytes)} B")
    print(f"  a change: a LAN link breaks    {len(link_change)} datagrams, {sum(link_change)} B")
    print(f"  a change: one node leaves      {len(change)} datagrams, {sum(change)} B")
    idle = sum(b - a for a, b in zip(seqs_before, seqs_after, strict=True))
    print(f"  reports in 60 s idle           {idle} (all nodes)")
    print(f"  /api/v1/mesh                   {len(doc)} B (relayed listed: {len(explicit)} B)")
    print(f"  /api/v1/status at the static   {_json_size(static_status)} B")
    print(f"  /api/v1/status at a node       {_json_size(node_status)} B")
    print(f"  /metrics at the static         {len(metrics_text)} B")


def _json_size(doc: Any) -> int:
    return len(json.dumps(doc, separators=(",", ":")))


def _report(chunk: wire.NodeLinks) -> wire.LinkReport:
    return wire.LinkReport(2**40, 0, 1, chunk)


# --- imports -------------------------------------------------------------------------------


def import_ms(*modules: str) -> float:
    """Cumulative import time of ``modules`` (ms) in a fresh interpreter, the daemon loaded."""
    code = "import wg_netmanager.daemon\n" + "".join(f"import {m}\n" for m in modules)
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    total = 0
    for line in res.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if match and match.group(2).strip() in modules:
            total += int(match.group(1))
    return total / 1000


def bench_imports(runs: int) -> None:
    api = median([import_ms("wg_netmanager.api", "hypercorn.trio.run") for _ in range(runs)])
    prom = median([import_ms("wg_netmanager.metrics") for _ in range(runs)])
    print(f"imports (after the daemon's own, {runs} runs): web stack {api:.0f} ms "
          f"(after READY=1), prometheus_client {prom:.0f} ms (at the first scrape)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--only", default="cpu,latency,sizes,imports")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    if "imports" in parts:
        bench_imports(args.runs)
    if "sizes" in parts:
        bench_sizes(args.nodes)
    if "cpu" in parts:
        bench_cpu(args.runs, args.window)
    if "latency" in parts:
        bench_latency(args.cycles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
