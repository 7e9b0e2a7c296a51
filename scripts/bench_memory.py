"""Benchmark memory under churn: does it stay flat over a long simulated run?

    .venv/bin/python -m scripts.bench_memory [--minutes 10] [--nodes 20] [--seed 1]
                                             [--runs 1] [--tracemalloc] [--verbose]

Run from the repository root (``-m``: it imports the test-support library ``tests``).

One in-memory mesh (``tests/sim.py``, default ``Timers()``, no sockets, no
network traffic): two static nodes on public addresses and ``--nodes``
dynamic ones, a quarter of them on public addresses, one or two behind a
symmetric NAT of their own (their pairs with NAT'd dynamic nodes stay
relayed), the rest on a few LANs of 2-4 nodes behind one shared NAT each (so
LAN-direct links form); two more NAT'd "cafe" LANs start empty and take nodes
that roam. All nodes start at once and get a warm-up of 30 simulated
seconds, then ``--minutes`` of churn: every 2-6 s (a seeded
``random.Random``) one of

    stop      a running dynamic node stops, cleanly (bye) or by a crash
    start     a stopped one starts again (new key, new boot)
    static    a static restarts (clean or crash, back after 2-15 s; after a
              crash it calls its nodes back half of the time, as the daemon
              does from its file); never both statics at once
    roam      a node moves to another LAN / NAT / public address
    cut       a partition between two hosts, healed after 3-20 s
    flow      user traffic (a ping both ways) between two nodes on or off

Then every node is started, partitions heal, and the mesh settles for a
simulated minute: it must end with every pair pinging (``all_pairs_ping``),
or a "flat" result would only mean the mesh broke.

Measured at the end of the warm-up, every simulated minute and after the
settling minute (each after ``gc.collect()``): the process RSS (VmRSS from
/proc/self/status; and ``getrusage`` maxrss, the high-water mark), the
number of gc-tracked objects and live ``Node`` objects, with
``--tracemalloc`` the traced current and peak (slower), and the size of
every container of every live ``Node`` (all dicts, lists, sets, tuples and
TokenBuckets found in its attributes, plus inner sizes: barred boots,
listing entries, pending table parts, each session's ping_sent), as the max
over nodes and the total, and of SimNet's own dicts and NAT tables (a leak
in the simulator would hide or fake one in the core).

Reading the output: the table has one row per sample (minute 0 = end of the
warm-up, ``end`` = after settling). Columns: up (hosts running), RSS and
maxRSS in MiB, objs (gc-tracked objects, thousands), Nodes (live Node
objects: more than ``up`` for long means stopped cores are kept alive),
then ``S``: total, ``M``: max over nodes (sessions, paths, challenges,
barred boots, the three TokenBuckets, pair hellos, listing entries), then
SimNet's ``_keepalive_at``, ``_learned``, ``_handshake_at``, ``_queue`` and
the NAT mappings. The verdict compares the warm-up sample with the end
sample (both with every node up, so their sizes are comparable): RSS growth
in MiB and percent, the least-squares trend over the churn minutes, then
one line per container that changed (every one found, not just the
columns). A "WARNING: grew" line marks one that is more than twice its
warm-up size and above 50 at the end. ``--runs K`` repeats with seeds
seed..seed+K-1, each in a fresh process (RSS never shrinks much within one),
and prints the median growth. A benchmark, not a test: exits 0 unless
something raises. At the defaults one run takes about 4-6 minutes of wall
time (2 cores, python 3.11): the WireGuard model reads every host's peers
every 0.02 simulated s.
"""

from __future__ import annotations

import argparse
import collections
import gc
import heapq
import itertools
import json
import math
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import procfs
from tests.sim import Host, Nat, SimNet
from wg_netmanager.core.limits import TokenBuckets
from wg_netmanager.core.node import Node
from wg_netmanager.core.timers import Timers

REPO = Path(__file__).resolve().parent.parent

WARMUP = 30.0  # simulated seconds before the first sample
SETTLE = 60.0  # simulated seconds with every node up after the churn
SAMPLE_EVERY = 60.0
CHURN_GAP = (2.0, 6.0)  # seconds between churn actions
STATIC_DOWN = (2.0, 15.0)
CUT_FOR = (3.0, 20.0)
PING = 200.0  # bytes per second each way: an ICMP echo every half second
MAX_FLOWS = 8  # pairs with user traffic at once
GREW_FACTOR = 2.0  # "WARNING: grew": end > factor * warm-up ...
GREW_MIN = 50  # ... and end > this
MiB = 1024 * 1024


# --- the mesh ------------------------------------------------------------------------


@dataclass
class Site:
    """Where a dynamic node can be: public, on a NAT'd LAN, or behind a symmetric NAT."""

    name: str
    prefix: str  # underlay address = prefix + wg IP's last octet
    nat: Nat | None = None
    lan: str | None = None


@dataclass
class ChurnMesh:
    net: SimNet
    statics: list[str]
    dynamic: list[str]
    sites: list[Site]  # where roaming nodes may go
    site_of: dict[str, Site] = field(default_factory=dict)
    fixed: set[str] = field(default_factory=set)  # behind a symmetric NAT: never roams


def lan_sizes(count: int) -> list[int]:
    """``count`` nodes in LANs of about three (2-4 for any count above one)."""
    if count <= 0:
        return []
    groups = max(1, round(count / 3))
    base, extra = divmod(count, groups)
    return [base + 1 if i < extra else base for i in range(groups)]


def build_mesh(dynamic: int, seed: int) -> ChurnMesh:
    if not 1 <= dynamic <= 200:
        raise SystemExit("--nodes must be between 1 and 200")
    net = SimNet(Timers(), seed=seed)
    mesh = ChurnMesh(net, [], [], [])
    for i in (1, 2):
        name = f"s{i}"
        net.add_host(name, f"198.51.100.{i}", f"10.1.1.{i}", static=True)
        mesh.statics.append(name)
    n_sym = 1 if dynamic < 10 else 2
    n_sym = min(n_sym, max(0, dynamic - 1))
    n_pub = max(1, dynamic // 4) if dynamic > n_sym else 0
    n_lan = dynamic - n_sym - n_pub
    public = Site("public", "203.0.113.")
    lans = [
        Site(f"lan{k}", f"192.168.{k}.", Nat(f"198.51.100.{10 + k}"), f"lan{k}")
        for k in range(len(lan_sizes(n_lan)))
    ]
    cafes = [
        Site(f"cafe{k}", f"192.168.{100 + k}.", Nat(f"198.51.100.{40 + k}"), f"cafe{k}")
        for k in range(2)
    ]
    syms = [
        Site(f"sym{k}", f"172.16.{k}.", Nat(f"198.51.100.{60 + k}", symmetric=True))
        for k in range(n_sym)
    ]
    mesh.sites = [public, *lans, *cafes]
    # Who sits where, interleaved over the wg IPs (the same layout for every seed:
    # the lower wg IP of a pair plays another role than the higher one).
    places: list[Site] = [public] * n_pub + list(syms)
    for site, size in zip(lans, lan_sizes(n_lan), strict=True):
        places += [site] * size
    random.Random(0).shuffle(places)
    for index, site in enumerate(places):
        octet = 3 + index
        tag = "y" if site in syms else ("p" if site is public else "l")
        name = f"{tag}{octet:02d}"
        net.add_host(name, site.prefix + str(octet), f"10.1.1.{octet}", nat=site.nat, lan=site.lan)
        mesh.dynamic.append(name)
        mesh.site_of[name] = site
        if site in syms:
            mesh.fixed.add(name)
    return mesh


# --- churn -----------------------------------------------------------------------------


class Churn:
    def __init__(self, mesh: ChurnMesh, rng: random.Random, verbose: bool) -> None:
        self.mesh = mesh
        self.net = mesh.net
        self.rng = rng
        self.verbose = verbose
        self._later: list[tuple[float, int, str, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.counts: collections.Counter[str] = collections.Counter()

    def log(self, text: str) -> None:
        if self.verbose:
            print(f"  {self.net.now:8.2f}  {text}", flush=True)

    def later(self, delay: float, what: str, action: Callable[[], None]) -> None:
        heapq.heappush(self._later, (self.net.now + delay, next(self._seq), what, action))

    def next_due(self) -> float:
        return self._later[0][0] if self._later else math.inf

    def run_due(self, finish_all: bool = False) -> None:
        while self._later and (finish_all or self._later[0][0] <= self.net.now + 1e-9):
            _when, _, what, action = heapq.heappop(self._later)
            self.log(what)
            action()

    def up(self, name: str) -> bool:
        return self.net.hosts[name].up

    def act(self) -> None:
        dynamic = self.mesh.dynamic
        running = [n for n in dynamic if self.up(n)]
        stopped = [n for n in dynamic if not self.up(n)]
        statics_up = [n for n in self.mesh.statics if self.up(n)]
        # Starts outweigh stops once a quarter of the dynamic nodes is down; at most a half.
        choices: dict[str, float] = {
            "stop": 3.0 if len(running) > len(dynamic) // 2 else 0.0,
            "start": 3.0 * len(stopped) / max(1.0, len(dynamic) / 4),
            "static": 0.4 if len(statics_up) == len(self.mesh.statics) > 1 else 0.0,
            "roam": 1.0 if len(dynamic) > len(self.mesh.fixed) else 0.0,
            "cut": 1.0 if len(self.net.hosts) >= 2 else 0.0,
            "flow": 1.5 if len(dynamic) >= 2 else 0.0,
        }
        names = [k for k, w in choices.items() if w > 0]
        if not names:
            return
        kind = self.rng.choices(names, [choices[k] for k in names])[0]
        self.counts[kind] += 1
        getattr(self, f"_{kind}")(running, stopped)

    def _stop(self, running: list[str], _stopped: list[str]) -> None:
        name = self.rng.choice(running)
        clean = self.rng.random() < 0.5
        self.log(f"stop {name} ({'clean' if clean else 'crash'})")
        self.net.stop(name, clean=clean)

    def _start(self, _running: list[str], stopped: list[str]) -> None:
        name = self.rng.choice(stopped)
        self.log(f"start {name}")
        self.net.start(name)

    def _static(self, _running: list[str], _stopped: list[str]) -> None:
        name = self.rng.choice(self.mesh.statics)
        node = self.net.hosts[name].node
        assert node is not None
        known = node.peer_endpoints()  # what the daemon keeps in its file
        clean = self.rng.random() < 0.5
        call_back = not clean and self.rng.random() < 0.5
        self.log(f"static {name} stops ({'clean' if clean else 'crash'})")
        self.net.stop(name, clean=clean)

        def back() -> None:
            self.net.start(name)
            restarted = self.net.hosts[name].node
            if call_back and restarted is not None:
                restarted.call_back(known, self.net.clock(self.net.hosts[name]))
                self.net.run_for(0.0)  # deliver what it sent

        self.later(self.rng.uniform(*STATIC_DOWN), f"static {name} back", back)

    def _roam(self, _running: list[str], _stopped: list[str]) -> None:
        name = self.rng.choice([n for n in self.mesh.dynamic if n not in self.mesh.fixed])
        here = self.mesh.site_of[name]
        site = self.rng.choice([s for s in self.mesh.sites if s is not here])
        self.log(f"roam {name} {here.name} -> {site.name}")
        move(self.net.hosts[name], site, self.net)
        self.mesh.site_of[name] = site

    def _cut(self, _running: list[str], _stopped: list[str]) -> None:
        a, b = self.rng.sample(sorted(self.net.hosts), 2)
        pair = frozenset((a, b))
        if pair in self.net.partitioned:
            return
        self.log(f"cut {a}-{b}")
        self.net.partitioned.add(pair)
        self.later(
            self.rng.uniform(*CUT_FOR), f"heal {a}-{b}", lambda: self.net.partitioned.discard(pair)
        )

    def _flow(self, _running: list[str], _stopped: list[str]) -> None:
        flows = self.net.flows
        pairs = sorted({tuple(sorted(p)) for p in flows})
        if pairs and (len(pairs) >= MAX_FLOWS or self.rng.random() < 0.5):
            a, b = self.rng.choice(pairs)
            self.log(f"flow {a}-{b} off")
            flows.pop((a, b), None)
            flows.pop((b, a), None)
            return
        a, b = self.rng.sample(self.mesh.dynamic, 2)
        self.log(f"flow {a}-{b} on")
        flows[(a, b)] = flows[(b, a)] = PING


def move(host: Host, site: Site, net: SimNet) -> None:
    """As in tests/test_sim_paths.py test_roaming_node_re_forms_its_links."""
    octet = str(host.wg_ip).rsplit(".", 1)[1]
    host.address, host.lan, host.nat = site.prefix + octet, site.lan, site.nat
    if host.node is not None:
        host.node.set_local_addresses([host.address], net.clock(host))


# --- measuring -------------------------------------------------------------------------


def rss_bytes() -> int:
    return (procfs.rss_kib() or 0) * 1024


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def sizes_of(obj: object) -> dict[str, int]:
    """len() of every container attribute of ``obj`` (found, not listed: new ones count)."""
    out = {}
    for name, value in vars(obj).items():
        if isinstance(value, (str, bytes)):
            continue
        if isinstance(value, (dict, list, set, frozenset, tuple, TokenBuckets)) or (
            hasattr(value, "__len__") and not callable(value)
        ):
            try:
                out[name] = len(value)
            except TypeError:
                continue
    return out


def node_sizes(node: Node) -> dict[str, int]:
    sizes = sizes_of(node)
    sizes.pop("_desired", None)  # a pair; its parts below
    sizes["desired_peers"] = len(node.desired_peers())
    sizes["desired_routes"] = len(node.desired_routes())
    # Inner sizes: containers of containers.
    sizes["handshake.barred (boots)"] = len(node.handshake.barred)
    listings = node.listings
    sizes["listings (entries)"] = sum(len(entries) for entries in listings.tables.values())
    sizes["listings.pending (parts)"] = sum(len(p.received) for p in listings.pending.values())
    sessions = list(node.sessions.values())
    sizes["ping_sent (all sessions)"] = sum(len(s.ping_sent) for s in sessions)
    sizes["ping_sent (one session) (max)"] = max((len(s.ping_sent) for s in sessions), default=0)
    return sizes


def nat_sizes(mesh: ChurnMesh) -> dict[str, int]:
    nats = {id(h.nat): h.nat for h in mesh.net.hosts.values() if h.nat is not None}
    for site in mesh.sites:
        if site.nat is not None:
            nats[id(site.nat)] = site.nat
    return {
        "nat._mappings": sum(len(n._mappings) for n in nats.values()),
        "nat._reverse": sum(len(n._reverse) for n in nats.values()),
        "nat._reverse (remotes)": sum(
            len(remotes) for n in nats.values() for _inside, remotes in n._reverse.values()
        ),
    }


@dataclass
class Sample:
    label: str
    sim: float
    wall: float
    up: int
    rss: int
    maxrss: int
    objects: int
    live_nodes: int
    traced: tuple[int, int] | None
    node_max: dict[str, int]
    node_sum: dict[str, int]
    sim_sizes: dict[str, int]
    types: dict[str, int]


def take_sample(label: str, mesh: ChurnMesh, wall0: float) -> Sample:
    net = mesh.net
    gc.collect()
    # Memory first: counting the objects below allocates (and the pools stay).
    rss, maxrss = rss_bytes(), maxrss_bytes()
    traced = tracemalloc.get_traced_memory() if tracemalloc.is_tracing() else None
    objects = gc.get_objects()
    types = collections.Counter(type(o).__name__ for o in objects if not isinstance(o, Sample))
    live_nodes = types.get("Node", 0)
    count = len(objects)
    del objects
    node_max: dict[str, int] = {}
    node_sum: dict[str, int] = {}
    for host in net.hosts.values():
        if host.node is None:
            continue
        for key, value in node_sizes(host.node).items():
            node_max[key] = max(node_max.get(key, 0), value)
            if not key.endswith("(max)"):
                node_sum[key] = node_sum.get(key, 0) + value
    sim_sizes = {f"sim.{k}": v for k, v in sizes_of(net).items() if k != "hosts"}
    sim_sizes.update(nat_sizes(mesh))
    return Sample(
        label=label,
        sim=net.now,
        wall=time.perf_counter() - wall0,
        up=sum(h.up for h in net.hosts.values()),
        rss=rss,
        maxrss=maxrss,
        objects=count,
        live_nodes=live_nodes,
        traced=traced,
        node_max=node_max,
        node_sum=node_sum,
        sim_sizes=sim_sizes,
        types=dict(types),
    )


COLUMNS: list[tuple[str, str, Callable[[Sample], str]]] = [
    ("min", "{:>5}", lambda s: s.label),
    ("sim s", "{:>6}", lambda s: f"{s.sim:.0f}"),
    ("wall s", "{:>6}", lambda s: f"{s.wall:.0f}"),
    ("up", "{:>3}", lambda s: str(s.up)),
    ("RSS", "{:>6}", lambda s: f"{s.rss / MiB:.1f}"),
    ("maxRSS", "{:>6}", lambda s: f"{s.maxrss / MiB:.1f}"),
    ("objs k", "{:>6}", lambda s: f"{s.objects / 1000:.0f}"),
    ("Nodes", "{:>5}", lambda s: str(s.live_nodes)),
    ("S sess", "{:>6}", lambda s: str(s.node_sum.get("sessions", 0))),
    ("S path", "{:>6}", lambda s: str(s.node_sum.get("paths", 0))),
    ("M chal", "{:>6}", lambda s: str(s.node_max.get("_challenges", 0))),
    ("M bar", "{:>5}", lambda s: str(s.node_max.get("_barred (boots)", 0))),
    ("M rate", "{:>6}", lambda s: str(s.node_max.get("_rate", 0))),
    ("M junk", "{:>6}", lambda s: str(s.node_max.get("_junk", 0))),
    ("M rly", "{:>5}", lambda s: str(s.node_max.get("_relays", 0))),
    ("M hello", "{:>7}", lambda s: str(s.node_max.get("_pair_hello_at", 0))),
    ("M list", "{:>6}", lambda s: str(s.node_max.get("listings (entries)", 0))),
    ("sim ka", "{:>6}", lambda s: str(s.sim_sizes.get("sim._keepalive_at", 0))),
    ("sim lrn", "{:>7}", lambda s: str(s.sim_sizes.get("sim._learned", 0))),
    ("sim hs", "{:>6}", lambda s: str(s.sim_sizes.get("sim._handshake_at", 0))),
    ("queue", "{:>5}", lambda s: str(s.sim_sizes.get("sim._queue", 0))),
    ("nat", "{:>5}", lambda s: str(s.sim_sizes.get("nat._mappings", 0))),
]
TRACED_COLUMNS: list[tuple[str, str, Callable[[Sample], str]]] = [
    ("tm cur", "{:>6}", lambda s: f"{s.traced[0] / MiB:.1f}" if s.traced else "-"),
    ("tm pk", "{:>6}", lambda s: f"{s.traced[1] / MiB:.1f}" if s.traced else "-"),
]


def columns(traced: bool) -> list[tuple[str, str, Callable[[Sample], str]]]:
    return COLUMNS[:6] + (TRACED_COLUMNS if traced else []) + COLUMNS[6:]


def print_header(traced: bool) -> None:
    print(" ".join(fmt.format(title) for title, fmt, _ in columns(traced)), flush=True)


def print_row(sample: Sample) -> None:
    cols = columns(sample.traced is not None)
    print(" ".join(fmt.format(get(sample)) for _, fmt, get in cols), flush=True)


# --- one run ---------------------------------------------------------------------------


def pair_kinds(mesh: ChurnMesh) -> tuple[collections.Counter[str], list[str]]:
    """Each pair of up hosts: direct, relayed (via a third host) or lost, both
    ways; and the pairs relayed although neither is behind a symmetric NAT."""
    net = mesh.net
    kinds: collections.Counter[str] = collections.Counter()
    odd = []
    names = [n for n, h in net.hosts.items() if h.up]
    for a, b in itertools.combinations(names, 2):
        there, back = net.path(a, b), net.path(b, a)
        if there is None or back is None:
            kinds["lost"] += 1
        elif len(there) == 2 and len(back) == 2:
            kinds["direct"] += 1
        else:
            kinds["relayed"] += 1
            if a not in mesh.fixed and b not in mesh.fixed:
                where = [mesh.site_of[n].name if n in mesh.site_of else "static" for n in (a, b)]
                odd.append(f"{a}({where[0]})-{b}({where[1]})")
    return kinds, odd


def run(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    if args.tracemalloc:
        tracemalloc.start(1)
    wall0 = time.perf_counter()
    mesh = build_mesh(args.nodes, seed)
    net = mesh.net
    churn = Churn(mesh, random.Random(seed), args.verbose)
    layout = collections.Counter(mesh.site_of[n].name for n in mesh.dynamic)
    print(
        f"seed {seed}: {len(mesh.statics)} static + {len(mesh.dynamic)} dynamic nodes "
        f"({', '.join(f'{site} {count}' for site, count in sorted(layout.items()))}); "
        f"warm-up {WARMUP:g} s, churn {args.minutes:g} min, settle {SETTLE:g} s (simulated)",
        flush=True,
    )
    for name in net.hosts:
        net.start(name)
    net.run_for(WARMUP)
    warm_pings = net.all_pairs_ping()
    samples = [take_sample("0", mesh, wall0)]
    snapshot = tracemalloc.take_snapshot() if args.tracemalloc else None
    print_header(args.tracemalloc)
    print_row(samples[0])
    churn_start = net.now
    churn_end = churn_start + args.minutes * 60.0
    next_sample = churn_start + SAMPLE_EVERY
    next_action = churn_start + churn.rng.uniform(*CHURN_GAP)
    while net.now < churn_end - 1e-9:
        net.run_until(min(next_action, next_sample, churn.next_due(), churn_end))
        churn.run_due()
        if net.now >= next_action - 1e-9:
            churn.act()
            next_action += churn.rng.uniform(*CHURN_GAP)
        if net.now >= next_sample - 1e-9:
            minute = round((net.now - churn_start) / 60.0)
            samples.append(take_sample(str(minute), mesh, wall0))
            print_row(samples[-1])
            if len(samples) > 2:
                samples[-2].types = {}  # only the first and the last are compared
            next_sample += SAMPLE_EVERY
    if net.now - samples[-1].sim > 1.0:
        samples.append(take_sample(f"{(net.now - churn_start) / 60.0:.1f}", mesh, wall0))
        print_row(samples[-1])
    churn_wall = time.perf_counter() - wall0
    # Settle: everyone up, nothing cut, for a simulated minute.
    kinds_before, _ = pair_kinds(mesh)
    churn.run_due(finish_all=True)
    net.partitioned.clear()
    for name in net.hosts:
        if not net.hosts[name].up:
            net.start(name)
    settle_start = net.now
    took = net.wait_for(net.all_pairs_ping, limit=SETTLE, step=0.5)
    net.run_until(settle_start + SETTLE)
    pings = net.all_pairs_ping()
    kinds, odd = pair_kinds(mesh)
    samples.append(take_sample("end", mesh, wall0))
    print_row(samples[-1])
    wall = time.perf_counter() - wall0
    print()
    print(
        f"wall time {wall:.0f} s for {net.now:.0f} simulated s "
        f"({net.now / wall:.2f}x real time; churn part {churn_wall:.0f} s)"
    )
    print("churn actions: " + ", ".join(f"{k} {v}" for k, v in sorted(churn.counts.items())))
    print(
        "pairs at the end of the churn: "
        + ", ".join(f"{k} {v}" for k, v in sorted(kinds_before.items()))
    )
    took_text = f"after {took:.1f} s" if math.isfinite(took) else "NOT within the minute"
    print(
        f"all pairs ping after the warm-up: {'yes' if warm_pings else 'NO'}; after settling: "
        f"{'yes' if pings else 'NO'} (first {took_text}); pairs: "
        + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    )
    if odd:
        print(
            f"relayed although neither is behind a symmetric NAT ({len(odd)}; a retry "
            "backoff after failed attempts during the churn can explain some): " + ", ".join(odd)
        )
    result = verdict(samples)
    if snapshot is not None:
        print("\ntracemalloc, top growth by line (warm-up -> end):")
        for stat in tracemalloc.take_snapshot().compare_to(snapshot, "lineno")[:12]:
            print(f"  {stat}")
        tracemalloc.stop()
    result.update(
        seed=seed,
        wall=wall,
        sim=net.now,
        pings=pings,
        settled_after=took if math.isfinite(took) else None,
    )
    return result


def trend(samples: list[Sample], values: list[float]) -> float:
    """Least-squares slope of ``values`` (one per sample) per simulated minute."""
    if len(samples) < 2:
        return 0.0
    xs = [s.sim / 60.0 for s in samples]
    return statistics.linear_regression(xs, values[: len(samples)]).slope


def verdict(samples: list[Sample]) -> dict[str, Any]:
    base, end = samples[0], samples[-1]
    growth = end.rss - base.rss
    percent = 100.0 * growth / base.rss if base.rss else 0.0
    rss_trend = ", ".join(f"{s.rss / MiB:.1f}" for s in samples)
    print(
        f"\nVERDICT: RSS {base.rss / MiB:.1f} MiB after the warm-up -> {end.rss / MiB:.1f} MiB "
        f"at the end: {growth / MiB:+.1f} MiB ({percent:+.1f} %); "
        f"maxRSS {base.maxrss / MiB:.1f} -> {end.maxrss / MiB:.1f} MiB; "
        f"gc objects {base.objects} -> {end.objects}; live Node objects "
        f"{base.live_nodes} -> {end.live_nodes} (hosts up {base.up} -> {end.up})"
    )
    churning = samples[:-1]  # the warm-up and the churn minutes; not the settled end
    print(
        f"RSS per sample (MiB): {rss_trend}; trend during the churn "
        f"{trend(churning, [s.rss for s in churning]) / 1024:+.0f} KiB per simulated minute"
    )
    if base.traced and end.traced:
        print(
            f"tracemalloc current {base.traced[0] / MiB:.1f} -> {end.traced[0] / MiB:.1f} MiB, "
            f"peak {end.traced[1] / MiB:.1f} MiB"
        )
    rows: list[tuple[str, list[int], float]] = []
    groups: list[tuple[str, Callable[[Sample], dict[str, int]]]] = [
        ("node max", lambda s: s.node_max),
        ("node sum", lambda s: s.node_sum),
        ("", lambda s: s.sim_sizes),
    ]
    for label, get in groups:
        for key in sorted({k for s in samples for k in get(s)}):
            series = [get(s).get(key, 0) for s in samples]
            slope = trend(churning, [float(v) for v in series])
            rows.append((f"{label} {key}".strip(), series, slope))
    print(
        "\ncontainer sizes, warm-up -> end (peak during the run; trend during the churn "
        "per simulated minute); unchanged ones omitted:"
    )
    warnings = []
    for name, series, slope in rows:
        first, last = series[0], series[-1]
        if first == last == max(series):
            continue
        change = f"{last / first:.2f}x" if first else "from 0"
        print(f"  {name:40} {first:6} -> {last:6} ({change}, peak {max(series)}, {slope:+.1f}/min)")
        if last > GREW_FACTOR * first and last > GREW_MIN:
            warnings.append(
                f"WARNING: grew: {name} {first} -> {last} ({slope:+.1f} per simulated minute)"
            )
    types_grew = sorted(
        ((end.types.get(t, 0) - base.types.get(t, 0), t) for t in end.types),
        reverse=True,
    )[:8]
    print(
        "\nobject types that grew most (gc-tracked): "
        + ", ".join(f"{t} {d:+}" for d, t in types_grew if d > 0)
    )
    for line in warnings:
        print(line)
    if not warnings:
        print(f"no container grew more than {GREW_FACTOR:g}x its warm-up size to above {GREW_MIN}")
    return {
        "rss_base": base.rss,
        "rss_end": end.rss,
        "rss_growth": growth,
        "rss_percent": percent,
        "warnings": warnings,
    }


# --- main ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="simulated churn minutes")
    parser.add_argument("--nodes", type=int, default=20, help="dynamic nodes (plus 2 static)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1, help="repeat with seed, seed+1, ...")
    parser.add_argument("--tracemalloc", action="store_true", help="trace allocations (slower)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every churn action")
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)  # child: JSON here
    args = parser.parse_args()
    print(f"memory benchmark, python {sys.version.split()[0]}")
    if args.runs <= 1:
        result = run(args, args.seed)
        if args.result:
            Path(args.result).write_text(json.dumps(result))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_memory.") as tmp:
        for k in range(args.runs):
            seed = args.seed + k
            out = Path(tmp) / f"run-{seed}.json"
            argv = [sys.executable, "-m", "scripts.bench_memory", "--minutes", str(args.minutes)]
            argv += ["--nodes", str(args.nodes), "--seed", str(seed), "--result", str(out)]
            argv += ["--tracemalloc"] * args.tracemalloc + ["--verbose"] * args.verbose
            print(f"\n=== run {k + 1}/{args.runs} (seed {seed}, a fresh process) ===", flush=True)
            subprocess.run(argv, check=True, cwd=REPO)
            results.append(json.loads(out.read_text()))
    growth = statistics.median(r["rss_growth"] for r in results) / MiB
    percent = statistics.median(r["rss_percent"] for r in results)
    wall = statistics.median(r["wall"] for r in results)
    print(f"\n=== {args.runs} runs (seeds {args.seed}..{args.seed + args.runs - 1}) ===")
    for r in results:
        print(
            f"  seed {r['seed']}: RSS {r['rss_base'] / MiB:.1f} -> {r['rss_end'] / MiB:.1f} MiB "
            f"({r['rss_growth'] / MiB:+.1f} MiB, {r['rss_percent']:+.1f} %), "
            f"all pairs ping: {'yes' if r['pings'] else 'NO'}, wall {r['wall']:.0f} s, "
            f"{len(r['warnings'])} warnings"
        )
    print(f"MEDIAN RSS growth {growth:+.1f} MiB ({percent:+.1f} %), median wall {wall:.0f} s")


if __name__ == "__main__":
    main()
