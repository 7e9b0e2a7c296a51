"""How the mesh grows: lazy links from 16 to 1,000 nodes in the simulator.

    python -m scripts.bench_scale [--sizes 16,64,256,1000] [--seeds 3] [--pairs 20]
                                  [--statics 1] [--json FILE]

Run from the repository root (``-m``: it imports the test-support library ``tests``).

One mesh per size and seed (``tests.sim.lan_mesh``): ``--statics`` public
static nodes, every other node in a LAN of eight behind its own
endpoint-independent NAT, lazy links (network.yaml ``links: lazy``),
default timers, each core reading `wg show` on its own schedule as the
daemon does. All nodes start together; then, in simulated time:

converge   until every node has a route to every other (via the static) and
           sampled pairs ping; its time, and the static's TX meanwhile
idle       30 s later, 120 s with no traffic: bytes each node sends (admin
           datagrams with UDP/IP headers, WireGuard keepalives and
           handshakes) and CPU in its core, per second; WireGuard peers per node
join       one more node starts: the CPU it costs each other core within 5 s
           (minus an idle 5 s of the same core), dynamic nodes and static
restart    a dynamic node restarts (new key): the same
memory     each core's objects (deep size, shared timers and RNG not
           counted), and the table entries it holds
traffic    ``--pairs`` random pairs of dynamic nodes start pinging (200 B/s
           each way) at once: seconds until each pair is direct (both ways
           one hop), pairs direct within 1 s, polls (every 50 ms) at which a
           pair did not ping (how many pairs, and the most polls in a row:
           a poll that falls between one end's switch to the direct link and
           the other's (the relayed Ready in flight, then applied) counts),
           WireGuard peers per node with that traffic

CPU is time.process_time() around the calls into each core (the
simulator's own work is not counted). Prints medians over seeds; asserts
nothing. The issue's figures for the eager mesh of before are printed
alongside for N = 16, 64 and 128.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from random import Random
from typing import Any

from tests.sim import Host, SimNet, lan_mesh
from wg_netmanager.core.node import Node
from wg_netmanager.core.timers import Timers

PING = 200.0  # bytes per second each way: an ICMP echo every half second
SETTLE = 30.0  # after convergence, before idle is measured (fast polls end)
IDLE = 120.0  # one WireGuard handshake period
CHANGE_WINDOW = 5.0
TRAFFIC_LIMIT = 10.0
POLL = 0.05
SAMPLED_PATHS = 2000  # node pairs whose path is checked at convergence

# The table (eager links, before): N -> (peers per node, static TX
# MB/s while converging, CPU s per node per simulated s converging, idle B/s
# of a dynamic node as admin + keepalive + handshakes, idle B/s of the static).
BEFORE = {
    16: (15, 0.2, 0.13, (10, 20, 18), 152),
    64: (63, 3.2, 1.4, (10, 84, 78), 627),
    128: (127, 12.8, 6.3, (10, 169, 157), 1275),
}


@dataclass
class Run:
    n: int
    seed: int
    wall: float = 0.0
    converge: float = 0.0
    converge_cpu_node: float = 0.0  # CPU s per node until converged
    converge_cpu_static: float = 0.0  # the static's CPU s until converged
    static_tx_mb: float = 0.0
    peers_median: float = 0.0
    peers_max: float = 0.0
    idle_admin: float = 0.0  # B/s, median dynamic node
    idle_keepalive: float = 0.0
    idle_handshake: float = 0.0
    idle_static: float = 0.0
    idle_cpu_dynamic: float = 0.0  # ms of CPU per simulated s
    idle_cpu_static: float = 0.0
    join_dynamic: float = 0.0  # ms of CPU, median dynamic node
    join_static: float = 0.0
    join_newcomer: float = 0.0
    restart_dynamic: float = 0.0
    restart_static: float = 0.0
    memory_dynamic: float = 0.0  # KiB
    memory_static: float = 0.0
    entries_dynamic: float = 0.0  # table entries a dynamic node holds
    pairs: int = 0
    direct_within_1s: int = 0
    direct_median: float = 0.0
    direct_max: float = 0.0
    missed_polls: int = 0
    missed_pairs: int = 0  # pairs that missed a poll
    missed_longest: int = 0  # the most polls in a row one pair missed
    traffic_peers_median: float = 0.0
    traffic_peers_max: float = 0.0


# --- measuring ---------------------------------------------------------------------


def up_names(net: SimNet) -> list[str]:
    return [name for name, host in net.hosts.items() if host.node is not None]


def node_of(host: Host) -> Node:
    assert host.node is not None
    return host.node


def routable(net: SimNet, names: list[str], rng: Random) -> bool:
    """Every node has a route to every other; sampled paths (and every node's
    to and from the static) work."""
    ips = {net.hosts[n].wg_ip for n in names}
    for name in names:
        dests = {route.dest for route in node_of(net.hosts[name]).desired_routes()}
        if not ips - {net.hosts[name].wg_ip} <= dests:
            return False
    static = names[0]
    pairs = [(static, n) for n in names[1:]]
    pairs += [tuple(rng.sample(names, 2)) for _ in range(SAMPLED_PATHS)]  # type: ignore[misc]
    return all(net.pings(a, b) for a, b in pairs)


def deep_size(root: object, skip: tuple[type, ...]) -> int:
    """Bytes of every object reachable from ``root`` (each counted once)."""
    seen: set[int] = set()
    todo = [root]
    total = 0
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, skip) or callable(obj):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            todo.extend(obj.keys())
            todo.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            todo.extend(obj)
        if hasattr(obj, "__dict__"):
            todo.append(vars(obj))
        for slot in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, slot):
                todo.append(getattr(obj, slot))
    return total


def node_memory(node: Node) -> int:
    return deep_size(node, (Timers, Random, type, type(sys)))


def cpu_window(net: SimNet, seconds: float) -> dict[str, float]:
    before = dict(net.cpu)
    net.run_for(seconds)
    return {name: net.cpu.get(name, 0.0) - before.get(name, 0.0) for name in net.hosts}


def change_cost(
    net: SimNet, change: Callable[[], None], dynamic: Iterable[str], static: str
) -> tuple[float, float, dict[str, float]]:
    """CPU (ms) a change costs the median dynamic node and the static: the
    window after it minus an idle window of the same length just before."""
    idle = cpu_window(net, CHANGE_WINDOW)
    before = dict(net.cpu)
    change()
    net.run_for(CHANGE_WINDOW)
    after = {n: net.cpu.get(n, 0.0) - before.get(n, 0.0) for n in net.hosts}
    extra = {n: after[n] - idle.get(n, 0.0) for n in net.hosts}
    dyn = statistics.median(extra[n] for n in dynamic)
    return dyn * 1e3, extra[static] * 1e3, after


def direct(net: SimNet, a: str, b: str) -> bool:
    return net.path(a, b) == [a, b] and net.path(b, a) == [b, a]


# --- one run -------------------------------------------------------------------------


def run(n: int, seed: int, statics: int, pair_count: int) -> Run:
    started = time.monotonic()
    rng = Random(seed)
    result = Run(n, seed)
    net = lan_mesh(n + 1, statics=statics, seed=seed)  # one more: the newcomer
    names = list(net.hosts)
    newcomer = names[-1]
    static = names[0]
    members = names[:-1]
    dynamic = members[statics:]
    net.measure_cpu = True
    for name in members:
        net.start(name)
    took = net.wait_for(lambda: routable(net, members, rng), limit=120.0, step=0.01)
    result.converge = took
    result.converge_cpu_node = sum(net.cpu.values()) / n
    result.converge_cpu_static = net.cpu.get(static, 0.0)
    static_tx = (
        net.sent_bytes.get(static, 0)
        + net.keepalive_bytes.get(static, 0)
        + net.handshake_bytes.get(static, 0)
    )
    result.static_tx_mb = static_tx / 1e6
    net.run_for(SETTLE)
    peers = [len(node_of(net.hosts[m]).desired_peers()) for m in members]
    result.peers_median, result.peers_max = statistics.median(peers), max(peers)

    def counters() -> dict[str, tuple[int, int, int]]:
        return {
            m: (
                net.sent_bytes.get(m, 0),
                net.keepalive_bytes.get(m, 0),
                net.handshake_bytes.get(m, 0),
            )
            for m in members
        }

    before = counters()
    idle_cpu = cpu_window(net, IDLE)
    after = counters()
    rates = {m: [(a - b) / IDLE for a, b in zip(after[m], before[m], strict=True)] for m in members}
    result.idle_admin = statistics.median(rates[m][0] for m in dynamic)
    result.idle_keepalive = statistics.median(rates[m][1] for m in dynamic)
    result.idle_handshake = statistics.median(rates[m][2] for m in dynamic)
    result.idle_static = sum(rates[static])
    result.idle_cpu_dynamic = statistics.median(idle_cpu[m] for m in dynamic) / IDLE * 1e3
    result.idle_cpu_static = idle_cpu[static] / IDLE * 1e3

    samples = [static, *rng.sample(dynamic, min(5, len(dynamic)))]
    memory = {m: node_memory(node_of(net.hosts[m])) for m in samples}
    result.memory_static = memory[static] / 1024
    result.memory_dynamic = statistics.median(memory[m] for m in samples[1:]) / 1024
    result.entries_dynamic = statistics.median(
        sum(len(t) for t in node_of(net.hosts[m]).listings.tables.values()) for m in samples[1:]
    )

    dyn, stat, after_join = change_cost(net, lambda: net.start(newcomer), dynamic, static)
    result.join_dynamic, result.join_static = dyn, stat
    result.join_newcomer = after_join[newcomer] * 1e3
    restarting = rng.choice(dynamic)
    others = [m for m in dynamic if m != restarting]

    def restart() -> None:
        net.stop(restarting)
        net.start(restarting)

    result.restart_dynamic, result.restart_static, _ = change_cost(net, restart, others, static)
    net.run_for(SETTLE)

    pairs = sample_pairs(dynamic, pair_count, rng)
    for a, b in pairs:
        net.flows[(a, b)] = net.flows[(b, a)] = PING
    times: dict[tuple[str, str], float] = {}
    missed = 0
    run_of: dict[tuple[str, str], int] = {}  # polls in a row a pair did not ping
    longest: dict[tuple[str, str], int] = {}
    t0 = net.now
    while net.now - t0 < TRAFFIC_LIMIT and len(times) < len(pairs):
        net.run_for(POLL)
        for pair in pairs:
            if not net.pings(*pair):
                missed += 1
                run_of[pair] = run_of.get(pair, 0) + 1
                longest[pair] = max(longest.get(pair, 0), run_of[pair])
            else:
                run_of[pair] = 0
            if pair not in times and direct(net, *pair):
                times[pair] = net.now - t0
    waits = [times.get(p, float("inf")) for p in pairs]
    result.pairs = len(pairs)
    result.direct_within_1s = sum(1 for w in waits if w <= 1.0)
    result.direct_median = statistics.median(waits) if waits else 0.0
    result.direct_max = max(waits, default=0.0)
    result.missed_polls = missed
    result.missed_pairs = len(longest)
    result.missed_longest = max(longest.values(), default=0)
    peers = [len(node_of(net.hosts[m]).desired_peers()) for m in up_names(net)]
    result.traffic_peers_median, result.traffic_peers_max = statistics.median(peers), max(peers)
    result.wall = time.monotonic() - started
    return result


def sample_pairs(names: list[str], count: int, rng: Random) -> list[tuple[str, str]]:
    """``count`` distinct pairs of distinct nodes, no node in two pairs if possible."""
    pool = list(names)
    rng.shuffle(pool)
    pairs = [(pool[2 * i], pool[2 * i + 1]) for i in range(min(count, len(pool) // 2))]
    while len(pairs) < count and len(names) >= 2:
        a, b = rng.sample(names, 2)
        if (a, b) not in pairs and (b, a) not in pairs:
            pairs.append((a, b))
    return pairs


# --- output --------------------------------------------------------------------------


def med(runs: list[Run], field: str) -> float:
    return float(statistics.median(getattr(r, field) for r in runs))


def report(runs: list[Run]) -> None:
    n = runs[0].n

    def f(field: str, fmt: str = "{:.2f}") -> str:
        return fmt.format(med(runs, field))

    print(f"\nN = {n} ({len(runs)} seeds; wall {f('wall', '{:.0f}')} s per run)")
    rows = [
        ("converged: every node routes to every other", f"{f('converge')} s"),
        ("  static TX meanwhile", f"{f('static_tx_mb')} MB"),
        ("  CPU until then: per node / the static",
         f"{f('converge_cpu_node', '{:.3f}')} / {f('converge_cpu_static')} s"),
        ("WireGuard peers per node, idle (median / max)",
         f"{f('peers_median', '{:.0f}')} / {f('peers_max', '{:.0f}')}"),
        ("idle TX B/s, dynamic: admin + keepalive + handshakes",
         f"{f('idle_admin', '{:.1f}')} + {f('idle_keepalive', '{:.1f}')}"
         f" + {f('idle_handshake', '{:.1f}')}"),
        ("idle TX B/s, static", f"{f('idle_static', '{:.0f}')}"),
        ("idle CPU ms per s: dynamic / static",
         f"{f('idle_cpu_dynamic', '{:.3f}')} / {f('idle_cpu_static', '{:.2f}')}"),
        ("one join, CPU ms: dynamic / static / newcomer",
         f"{f('join_dynamic', '{:.2f}')} / {f('join_static', '{:.1f}')}"
         f" / {f('join_newcomer', '{:.1f}')}"),
        ("one restart, CPU ms: dynamic / static",
         f"{f('restart_dynamic', '{:.2f}')} / {f('restart_static', '{:.1f}')}"),
        ("memory KiB: dynamic / static (table entries held by a dynamic)",
         f"{f('memory_dynamic', '{:.0f}')} / {f('memory_static', '{:.0f}')}"
         f" ({f('entries_dynamic', '{:.0f}')})"),
        ("traffic: pairs direct within 1 s / pairs",
         f"{f('direct_within_1s', '{:.0f}')} / {f('pairs', '{:.0f}')}"),
        ("  seconds to direct (median / max)",
         f"{f('direct_median')} / {f('direct_max')}"),
        ("  polls at which a sampled pair did not ping (pairs; most in a row)",
         f"{f('missed_polls', '{:.0f}')} ({f('missed_pairs', '{:.0f}')};"
         f" {f('missed_longest', '{:.0f}')})"),
        ("  WireGuard peers per node with traffic (median / max)",
         f"{f('traffic_peers_median', '{:.0f}')} / {f('traffic_peers_max', '{:.0f}')}"),
    ]  # fmt: skip
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    before = BEFORE.get(n)
    if before is not None:
        peers, tx, cpu, (admin, keepalive, handshake), static = before
        print(
            f"  before (issue, eager): {peers} peers per node, static TX {tx} MB/s converging,"
            f" {cpu} s CPU per node per simulated s, idle {admin} + {keepalive} + {handshake}"
            f" B/s dynamic, {static} B/s static"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,64,256,1000", help="node counts, comma-separated")
    parser.add_argument("--seeds", type=int, default=3, help="runs per size (medians)")
    parser.add_argument("--pairs", type=int, default=20, help="pairs that start pinging")
    parser.add_argument("--statics", type=int, default=1, choices=(1, 2))
    parser.add_argument("--json", help="write every run's figures to this file")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    if any(not 4 <= n <= 4000 for n in sizes):
        parser.error("--sizes: each between 4 and 4000")
    everything: list[dict[str, Any]] = []
    for n in sizes:
        runs = []
        for seed in range(1, args.seeds + 1):
            runs.append(run(n, seed, args.statics, args.pairs))
            print(f"  (N={n} seed {seed}: {runs[-1].wall:.0f} s)", file=sys.stderr, flush=True)
        report(runs)
        everything += [asdict(r) for r in runs]
    if args.json:
        with open(args.json, "w") as out:
            json.dump(everything, out, indent=1)


if __name__ == "__main__":
    main()
