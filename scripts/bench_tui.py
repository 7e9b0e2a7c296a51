"""Benchmark the terminal UI: idle CPU and keystroke latency (prints numbers).

    .venv/bin/python -m scripts.bench_tui [--runs 3] [--nodes 20] [--idle 10] [--keys 20]

Run from the repository root (``-m``: it imports the test-support library ``tests``).

Each run starts a child process on a pseudo-terminal (140x40) that shows the
real TUI (``wg_netmanager.tui``, urwid on trio) of one node of a simulated
mesh (``tests/sim.py``: ``--nodes`` cores, two static, the others public,
behind their own NAT (some symmetric) or on one home LAN). The simulation is
fast-forwarded until the mesh has converged, then advanced in real time
beside the TUI. The parent reads the terminal through pyte and measures:

idle    the child's CPU% (utime+stime from /proc) over ``--idle`` seconds
        without input, and the bytes per second it writes to the terminal;
        the same for a child running only the simulation (no TUI), so the
        difference is what the TUI costs;
keys    ``--keys`` keystrokes, alternately ``s`` (sort) and ``f`` (log
        filter), 0.25-0.45 s apart: the time from writing the key to the
        pty until the screen shows the new sort key / filter (the arrival
        of the output that completes the update).

Reports the median of each run and the median over the runs. Needs no root
and no network; takes about ``runs * (idle * 2 + 15)`` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests import procfs

REPO = Path(__file__).resolve().parent.parent

COLS, ROWS = 140, 40
SORTS = ("wg IP", "name", "path", "latency")
LEVELS = ("DEBUG", "INFO", "WARNING")
VIEWED = "n05"  # the node whose TUI is shown (on the home LAN)


# --- the child: a simulated mesh and (optionally) the TUI ---------------------------


def build_net(count: int) -> Any:
    from tests.sim import Nat, SimNet

    # The model's `wg show` every 0.05 s, on one schedule across the many short
    # steps the real-time loop below takes.
    net = SimNet(seed=7, wg_period=0.05)
    net.add_host("n01", "198.51.100.1", "10.1.1.1", static=True)
    net.add_host("n02", "198.51.100.2", "10.1.1.2", static=True)
    home = Nat("198.51.100.200")
    for i in range(3, count + 1):
        name, ip = f"n{i:02d}", f"10.1.1.{i}"
        if i % 3 == 0:
            net.add_host(name, f"198.51.100.{i}", ip)
        elif i % 3 == 1:
            nat = Nat(f"198.51.100.{100 + i}", symmetric=i % 4 == 0)
            net.add_host(name, f"192.168.{i}.2", ip, nat=nat)
        else:
            net.add_host(name, f"192.168.1.{i}", ip, nat=home, lan="home")
    return net


def child(count: int, with_tui: bool, stats: str) -> None:
    import trio

    from wg_netmanager import status_text, tui

    log = logging.getLogger("wg_netmanager")
    logging.getLogger().setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")
    net = build_net(count)
    for name in list(net.hosts):
        net.start(name)
    host = net.hosts[VIEWED]
    node = host.node
    original_events = node.events

    def events() -> Any:  # the viewed node's events become log lines, as in the daemon
        out = original_events()
        for event in out:
            log.log(event.level, "%s", event.text)
        return out

    node.events = events
    spent = [0.0]  # thread CPU seconds inside the TUI's own code
    if with_tui:
        tui.capture_logging(fmt)
        for cls, name in (
            (tui.App, "refresh"),
            (tui.App, "update_log"),
            (tui._Loop, "draw_screen"),
            (tui._Loop, "process_input"),
        ):
            setattr(cls, name, _accounted(getattr(cls, name), spent))
    net.run_for(15.0)  # converge
    net.wg_period = 0.5  # idle: the model's `wg show` twice a second

    class SimSource:
        def snapshot(self) -> dict[str, Any]:
            return status_text.status_document(
                node.statistics(net.now), interface="wg0", backend="sim", uptime=net.now
            )

        def token(self) -> object:
            return (node.state_version, node.table_version, len(node.sessions))

    async def advance(origin: float, sim_origin: float) -> None:
        while True:
            await trio.sleep(0.1)
            net.run_until(sim_origin + trio.current_time() - origin)

    async def report() -> None:  # SIGUSR1: append "monotonic tui_cpu" to the stats file
        with trio.open_signal_receiver(signal.SIGUSR1) as signals:
            async for _ in signals:
                _append(stats, f"{time.monotonic()} {spent[0]}\n")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(advance, trio.current_time(), net.now)
            if stats:
                nursery.start_soon(report)
            if with_tui:
                app = tui.App(
                    SimSource(),
                    tui.capture_logging(fmt),
                    on_quit=nursery.cancel_scope.cancel,
                    clock=trio.current_time,
                )
                await nursery.start(tui.run_app, app)
            else:
                print("ready", flush=True)

    trio.run(main)
    if with_tui:
        tui.release_logging()


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line)


def _accounted(method: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.thread_time()
        try:
            return method(*args, **kwargs)
        finally:
            spent[0] += time.thread_time() - t

    return wrapper


# --- the parent: a pty, pyte, /proc ------------------------------------------------------


class Terminal:
    """The child on a pty; a thread feeds everything it writes to a pyte screen."""

    def __init__(self, argv: list[str]) -> None:
        import pyte

        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        env = dict(os.environ, TERM="xterm-256color", PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.lock = threading.Condition()
        self.bytes = 0
        self.last_chunk = 0.0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                data = b""
            with self.lock:
                if not data:
                    self.bytes = -1
                    self.lock.notify_all()
                    return
                now = time.monotonic()
                self.stream.feed(data)
                self.bytes += len(data)
                self.last_chunk = now
                self.lock.notify_all()

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.screen.display)

    def wait(self, predicate: Callable[[str], bool], timeout: float) -> float | None:
        """monotonic time when ``predicate(screen)`` first held; None on timeout."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                if predicate("\n".join(self.screen.display)):
                    return self.last_chunk or time.monotonic()
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.bytes < 0:
                    return None
                self.lock.wait(remaining)

    def cpu_seconds(self) -> float:
        return procfs.cpu_seconds(self.proc.pid)

    def stop(self) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.reader.join(timeout=2)
        os.close(self.master)
        return self.proc.returncode


def idle_window(term: Terminal, seconds: float, stats: Path | None = None) -> dict[str, float]:
    """CPU %, bytes/s to the terminal, and the TUI code's own CPU % over ``seconds`` idle."""
    if stats is not None:
        os.kill(term.proc.pid, signal.SIGUSR1)
    cpu0, bytes0, t0 = term.cpu_seconds(), term.bytes, time.monotonic()
    time.sleep(seconds)
    cpu1, bytes1, t1 = term.cpu_seconds(), term.bytes, time.monotonic()
    result = {
        "cpu": 100.0 * (cpu1 - cpu0) / (t1 - t0),
        "bytes_per_s": (bytes1 - bytes0) / (t1 - t0),
    }
    if stats is not None:
        os.kill(term.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            lines = stats.read_text().split("\n") if stats.exists() else []
            if len([line for line in lines if line]) >= 2:
                (a, spent_a), (b, spent_b) = (map(float, line.split()) for line in lines[:2])
                result["tui_cpu"] = 100.0 * (spent_b - spent_a) / (b - a)
                break
            time.sleep(0.05)
    return result


def child_argv(args: argparse.Namespace, with_tui: bool, stats: Path | None = None) -> list[str]:
    argv = [sys.executable, "-m", "scripts.bench_tui", "--child", "--nodes", str(args.nodes)]
    argv += ["--stats", str(stats)] if stats else []
    return argv + ([] if with_tui else ["--no-tui"])


def run_tui(args: argparse.Namespace, rng: random.Random, stats: Path) -> dict[str, Any]:
    term = Terminal(child_argv(args, True, stats))
    try:
        ready = term.wait(lambda t: f"Peers ({args.nodes - 1})" in t, timeout=60)
        if ready is None:
            raise SystemExit(f"the TUI did not come up:\n{term.text()}")
        time.sleep(2.0)
        idle = idle_window(term, args.idle, stats)
        complete = []
        sort, level = 0, 1
        for i in range(args.keys):
            time.sleep(rng.uniform(0.25, 0.45))
            if i % 2 == 0:
                sort = (sort + 1) % len(SORTS)
                key, expect = b"s", f"sort: {SORTS[sort]} "
            else:
                level = (level + 1) % len(LEVELS)
                key, expect = b"f", f"level: {LEVELS[level]}+"

            def shows(screen: str, text: str = expect) -> bool:
                return text in screen

            sent = time.monotonic()
            os.write(term.master, key)
            done = term.wait(shows, timeout=5)
            if done is None:
                raise SystemExit(f"no screen update after {key!r}:\n{term.text()}")
            complete.append(done - sent)
        os.write(term.master, b"q")
        term.proc.wait(timeout=10)
        code = term.proc.returncode
    finally:
        term.stop()
    return {
        **idle,
        "key_ms": 1000 * statistics.median(complete),
        "key_p90_ms": 1000 * sorted(complete)[int(0.9 * (len(complete) - 1))],
        "exit": code,
    }


def run_baseline(args: argparse.Namespace) -> dict[str, Any]:
    term = Terminal(child_argv(args, False))
    try:
        if term.wait(lambda t: "ready" in t, timeout=60) is None:
            raise SystemExit(f"the simulation did not come up:\n{term.text()}")
        time.sleep(2.0)
        idle = idle_window(term, args.idle)
    finally:
        term.stop()
    return idle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--idle", type=float, default=10.0, help="idle window, seconds")
    parser.add_argument("--keys", type=int, default=20, help="keystrokes per run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-tui", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stats", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.nodes, not args.no_tui, args.stats)
        return
    import trio

    print(
        f"TUI benchmark: {args.nodes} simulated nodes, {COLS}x{ROWS} pty, {args.runs} runs, "
        f"python {sys.version.split()[0]}, trio {trio.__version__}"
    )
    rng = random.Random(1)
    tui_runs, base_runs = [], []
    workdir = Path(tempfile.mkdtemp(prefix="bench_tui."))
    for run in range(1, args.runs + 1):
        t = run_tui(args, rng, workdir / f"stats-{run}")
        b = run_baseline(args)
        tui_runs.append(t)
        base_runs.append(b)
        print(
            f"run {run}: idle CPU {t['cpu']:.2f} % with TUI, {b['cpu']:.2f} % simulation only "
            f"(TUI {t['cpu'] - b['cpu']:+.2f} %; its own code {t.get('tui_cpu', -1):.2f} %), "
            f"{t['bytes_per_s']:.0f} B/s to the terminal; "
            f"keystroke to screen update median {t['key_ms']:.1f} ms "
            f"(p90 {t['key_p90_ms']:.1f} ms); exit code after q {t['exit']}"
        )

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    tui_cpu, base_cpu = med(tui_runs, "cpu"), med(base_runs, "cpu")
    shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"median of {args.runs}: idle CPU {tui_cpu:.2f} % with TUI, {base_cpu:.2f} % without "
        f"(TUI {tui_cpu - base_cpu:+.2f} %; its own code {med(tui_runs, 'tui_cpu'):.2f} %), "
        f"{med(tui_runs, 'bytes_per_s'):.0f} B/s; "
        f"keystroke latency {med(tui_runs, 'key_ms'):.1f} ms "
        f"(p90 {med(tui_runs, 'key_p90_ms'):.1f} ms)"
    )


if __name__ == "__main__":
    main()
