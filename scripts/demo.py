"""Live demo: a namespace testbed with wg_netmanager in every box.

Builds the testbed, starts one daemon per box (logs in a temp directory), and
redraws once a second: a ping matrix over the WireGuard addresses and each
box's paths (direct, or via which gateway). On a terminal, one box's daemon
(charlie's unless ``--tui BOX``) runs with its full-screen TUI, as a user
sees it, in a tmux pane next to the matrix; ``q`` there or Ctrl-C in either
pane ends the demo. Then everything is removed.

    sudo scripts/demo.sh                      # the seed's working example
    sudo scripts/demo.sh --topology three_boxes
    sudo scripts/demo.sh --tui beta           # the static node's TUI
    sudo scripts/demo.sh --no-tui             # the matrix only

demo.sh runs ``python -m scripts.demo`` from the repository root (``-m``: it
imports the test-support library ``tests``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from subprocess import PIPE

from tests.netns import Testbed, network_yaml, script_path, unique_prefix
from wg_netmanager.config import generate_shared_key

ROOT = Path(__file__).resolve().parent.parent

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


def pair_states(tb: Testbed, nodes: dict[str, str]) -> dict[tuple[str, str], str]:
    """For each pair of boxes: "direct", "via <gateway>", or "-" (no route yet)."""
    by_ip = {ip: name for name, ip in nodes.items()}
    routes: dict[str, dict[str, str]] = {}
    for box in nodes:
        out = tb.run(box, "ip", "-4", "route", "show", "dev", "wg0", "proto", "57").stdout
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
    tb: Testbed,
    nodes: dict[str, str],
    started: float,
    timeline: list[str],
    last: dict[tuple[str, str], str],
    stop: threading.Event,
) -> None:
    """Sample every pair's path every 50 ms: the phases (via the gateway, then
    LAN, then NAT-direct) happen faster than the ping matrix can redraw."""
    while not stop.wait(0.05):
        for pair, state in pair_states(tb, nodes).items():
            if last.get(pair) != state:
                last[pair] = state
                when = time.monotonic() - started
                timeline.append(f"{when:5.2f} s  {pair[0]}<->{pair[1]}: {state}")


def paths(tb: Testbed, box: str, nodes: dict[str, str]) -> str:
    by_ip = {ip: name for name, ip in nodes.items()}
    out = tb.run(box, "ip", "-4", "route", "show", "dev", "wg0", "proto", "57").stdout
    parts = []
    for line in out.splitlines():
        fields = line.split()
        dest = fields[0].removesuffix("/32")
        if "via" in fields:
            gateway = fields[fields.index("via") + 1]
            parts.append(f"{by_ip.get(dest, dest)} via {by_ip.get(gateway, gateway)}")
        else:
            parts.append(f"{by_ip.get(dest, dest)} direct")
    return ", ".join(sorted(parts)) or "(no routes yet)"


def draw(
    tb: Testbed,
    nodes: dict[str, str],
    started: float,
    pool: concurrent.futures.Executor,
    timeline: list[str],
    last: dict[tuple[str, str], str],
) -> None:
    names = list(nodes)
    pairs = [(a, b) for a in names for b in names if a != b]
    results = dict(zip(pairs, pool.map(lambda p: tb.ping(p[0], nodes[p[1]]), pairs), strict=True))
    lines = [f"wg_netmanager demo - {time.monotonic() - started:5.1f} s - Ctrl-C to stop", ""]
    lines.append("ping from \\ to " + "".join(f"{n:>9}" for n in names))
    for a in names:
        cells = "".join(
            f"{'-' if a == b else ('ok' if results[(a, b)] else 'LOST'):>9}" for b in names
        )
        lines.append(f"{a:<15}{cells}")
    lines.append("")
    for box in names:
        lines.append(f"{box:<8} {paths(tb, box, nodes)}")
    lines += ["", "timeline (which path each pair uses):"]
    # As much of the timeline as fits (a tmux pane next to a TUI may be short).
    room = shutil.get_terminal_size((80, 40)).lines - len(lines) - 1
    lines += timeline[-max(room, 3) :]
    sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
    sys.stdout.flush()


def show(tb: Testbed, nodes: dict[str, str], seconds: float) -> None:
    """Redraw the matrix and the timeline until ``seconds`` (0: Ctrl-C)."""
    started = time.monotonic()
    timeline: list[str] = []
    last: dict[tuple[str, str], str] = {}
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch_timeline, args=(tb, nodes, started, timeline, last, stop), daemon=True
    )
    watcher.start()
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        try:
            while not seconds or time.monotonic() - started < seconds:
                draw(tb, nodes, started, pool, timeline, last)
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            watcher.join(timeout=5)


def daemon_argv(config: Path, box: str, ip: str, tui: bool) -> list[str]:
    argv = [sys.executable, "-m", "wg_netmanager", "-c", str(config)]
    return [*argv, "-t" if tui else "--no-tui", "wg0", ip, box]


def with_tmux(tb: Testbed, args: argparse.Namespace, config: Path, tmp: str) -> None:
    """The matrix (this script, ``--watch``) and the TUI box's daemon in two
    panes of a private tmux server; returns when either ends (or on detach)."""
    server = f"wgnm-demo-{os.getpid()}"

    def tmux(*words: str) -> str:
        run = subprocess.run(["tmux", "-L", server, *words], check=True, timeout=10, stdout=PIPE)
        return run.stdout.decode()

    # Whichever pane ends first (q in the TUI, Ctrl-C) ends the whole session.
    end = f"; tmux -L {server} kill-session -t demo"
    env = f"env PYTHONPATH={shlex.quote(str(ROOT))} "
    matrix = [sys.executable, "-m", "scripts.demo", "--watch", tb.prefix]
    matrix += ["--topology", args.topology, "--seconds", str(args.seconds)]
    _, nodes = TOPOLOGIES[args.topology]
    tui = daemon_argv(config, args.tui, nodes[args.tui], tui=True)
    tui = tb.box_cmd(args.tui, *tui, "--logfile", str(Path(tmp) / f"{args.tui}.log"))
    size = shutil.get_terminal_size((160, 48))
    # Side by side if the TUI keeps 100 columns next to a 60-column matrix, else stacked.
    split = ["-h", "-l", str(size.columns - 60)] if size.columns >= 160 else ["-v", "-p", "62"]
    cols, rows = str(size.columns), str(size.lines)
    tmux(
        "new-session", "-d", "-s", "demo", "-x", cols, "-y", rows, "-c", str(ROOT),
        shlex.join(matrix) + end,
    )  # fmt: skip
    socket = tmux("display-message", "-p", "#{socket_path}").strip()
    tmux("split-window", "-t", "demo", *split, env + shlex.join(tui) + end)
    tmux("set-option", "-t", "demo", "status-left-length", "100")
    tmux(
        "set-option",
        "-t",
        "demo",
        "status-left",
        f" {args.tui}'s TUI: arrows Enter ?  |  q or Ctrl-C ends the demo"
        "  |  Ctrl-b o: other pane  Ctrl-b z: zoom",
    )
    for option in ("status-right", "window-status-format", "window-status-current-format"):
        tmux("set-option", "-t", "demo", option, "")
    attach_env = {k: v for k, v in os.environ.items() if k != "TMUX"}  # nested in a tmux too
    try:
        subprocess.run(["tmux", "-L", server, "attach", "-t", "demo"], env=attach_env, check=False)
    finally:
        subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, check=False)
        Path(socket).unlink(missing_ok=True)  # tmux leaves it behind


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", choices=sorted(TOPOLOGIES), default="working_example")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: Ctrl-C)")
    parser.add_argument(
        "--tui", default="charlie", metavar="BOX", help="whose TUI to show (default charlie)"
    )
    parser.add_argument("--no-tui", action="store_true", help="the matrix only")
    parser.add_argument("--prefix", help="testbed prefix (default: a fresh one)")
    parser.add_argument("--watch", metavar="PREFIX", help=argparse.SUPPRESS)  # the matrix pane
    args = parser.parse_args()
    script, nodes = TOPOLOGIES[args.topology]
    if args.watch:
        show(Testbed(script_path(script), args.watch), nodes, args.seconds)
        return 0
    if args.tui not in nodes:
        parser.error(f"--tui: {args.tui} is not a box of {args.topology}: {', '.join(nodes)}")
    use_tmux = not args.no_tui and sys.stdout.isatty() and shutil.which("tmux") is not None
    if not args.no_tui and not use_tmux:
        print("no terminal or no tmux: showing the matrix only (no TUI)")
    with (
        tempfile.TemporaryDirectory(prefix="wgnm-demo-") as tmp,
        Testbed(script_path(script), args.prefix or unique_prefix("demo")) as tb,
    ):
        config = Path(tmp) / "network.yaml"
        config.write_text(network_yaml(generate_shared_key()))
        env = {"PYTHONPATH": str(ROOT)}
        for box, ip in nodes.items():
            if not (use_tmux and box == args.tui):
                tb.spawn(
                    box, daemon_argv(config, box, ip, tui=False), Path(tmp) / f"{box}.log", env=env
                )
        if use_tmux:
            with_tmux(tb, args, config, tmp)
        else:
            show(tb, nodes, args.seconds)
        print(f"\nstopping; daemon logs were in {tmp}:")
        for log in sorted(Path(tmp).glob("*.log")):
            tail = log.read_text().splitlines()[-3:]
            print(f"--- {log.name}\n" + "\n".join(tail))
    print("testbed removed")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
