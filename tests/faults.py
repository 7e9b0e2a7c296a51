"""Fault injection on the working example in namespaces, for tests and benchmarks.

``FaultMesh`` runs the four daemons of the seed's working example (beta
static; alpha behind its own NAT; charlie and delta on one LAN behind a home
router) and adds what fault tests need: probers that measure outages to the
millisecond (tests/prober.py over the WireGuard addresses), the route one box
uses to another, and the testbed's fault commands (``lan-cut``, ``partition``,
``readdress``, ...; see ns/working_example.sh).

Every wait is bounded; the testbed (namespaces, processes) goes away on exit
of ``fault_mesh`` whatever happens (see tests/netns.py).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from netns import REPO_ROOT, Daemons, daemons_in, network_yaml, wait_until

NODES = {"beta": "10.1.1.1", "alpha": "10.1.1.2", "charlie": "10.1.1.3", "delta": "10.1.1.4"}
DYNAMIC = ["alpha", "charlie", "delta"]
BETA_UNDERLAY = "198.51.100.1"  # the static's public address (its admin port: 50501)
PROBE_PORT = 7777
PROBE_INTERVAL = 0.05  # seconds between a prober's requests to each peer
PROBE_GAP = 0.3  # silences longer than this are outages

# Run in the attacker box: COUNT junk datagrams to DEST:PORT (a third with the
# current version byte), paced to about 50 000 in a few seconds.
FLOOD = """
import os, random, socket, sys, time
count, dest, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rng = random.Random(5)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
started = time.monotonic()
for i in range(count):
    size = rng.choice((1, 40, 64, 200, 800, 1232, 1400))
    data = os.urandom(size)
    if i % 3 == 0:
        data = b"\\x01" + data[1:]  # the current version byte: must be decrypted to be refused
    s.sendto(data, (dest, port))
    if i % 2000 == 1999:
        time.sleep(0.05)  # about 50 000 in a few seconds, not all in the kernel's buffer at once
print(f"sent {count} in {time.monotonic() - started:.2f} s", flush=True)
"""


class FaultMesh(Daemons):
    """The working example's daemons plus probers and fault commands."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probers: dict[str, subprocess.Popen[bytes]] = {}

    # -- the daemons ------------------------------------------------------

    def start_all(self, *prefix: str) -> None:
        for box in NODES:
            self.start(box, *prefix)

    def stop_all(self, sig: int = signal.SIGTERM) -> dict[str, int]:
        """Signal every daemon at once (they shut down in parallel); their exit codes."""
        procs = {box: p for box, p in self.procs.items() if p.poll() is None}
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        codes = {}
        for box, proc in procs.items():
            try:
                codes[box] = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                codes[box] = self.tb.stop(proc, sig=signal.SIGKILL, timeout=5)
        return codes

    def cpu_seconds(self, box: str) -> float:
        """User + system CPU time the daemon in ``box`` used so far."""
        fields = Path(f"/proc/{self.procs[box].pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
        return ticks / 100.0  # USER_HZ

    def status(self, box: str) -> dict[str, Any]:
        """``wg_netmanager status --json`` in ``box``."""
        argv = [sys.executable, "-m", "wg_netmanager", "status", "--json", "wg0"]
        res = self.tb.run(box, "env", f"PYTHONPATH={REPO_ROOT}", *argv, timeout=15)
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert isinstance(doc, dict)
        return doc

    # -- what the boxes see -----------------------------------------------

    def route(self, a: str, b: str) -> str | None:
        """How ``a`` routes to ``b``'s wg IP: "direct", "via <ip>" or None."""
        for line in self.routes(a).splitlines():
            fields = line.split()
            if fields[:1] == [NODES[b]]:
                return f"via {fields[fields.index('via') + 1]}" if "via" in fields else "direct"
        return None

    def direct(self, a: str, b: str) -> bool:
        return self.route(a, b) == "direct" and self.route(b, a) == "direct"

    def relayed(self, a: str, b: str) -> bool:
        beta = f"via {NODES['beta']}"
        return self.route(a, b) == beta and self.route(b, a) == beta

    def all_direct(self) -> bool:
        return all(self.direct(a, b) for a, b in itertools.combinations(NODES, 2))

    def pings(self, a: str, b: str) -> bool:
        return self.tb.ping(a, NODES[b], timeout=1.0)

    def all_ping(self, boxes: list[str] | None = None) -> bool:
        names = boxes or list(NODES)
        return all(self.pings(a, b) for a, b in itertools.permutations(names, 2))

    def wait(self, predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> float:
        """Seconds until ``predicate`` held (bounded); AssertionError with the logs if never."""
        started = time.monotonic()
        assert wait_until(predicate, timeout=timeout, interval=interval), self.logs()
        return time.monotonic() - started

    # -- faults -----------------------------------------------------------

    def fault(self, *command: str) -> float:
        """Run a testbed fault command (``lan-cut``, ``heal``, ...); when it took effect."""
        res = self.tb._script(command[0], self.tb.prefix, *command[1:], timeout=30)
        assert res.returncode == 0, res.stdout + res.stderr
        return time.monotonic()

    def flood(self, count: int) -> subprocess.CompletedProcess[str]:
        """``count`` junk datagrams from the attacker box to beta's admin port."""
        return self.tb.run("evil", sys.executable, "-c", FLOOD, str(count), BETA_UNDERLAY, "50501")

    # -- probers ----------------------------------------------------------

    def start_probers(self, pairs: dict[str, list[str]], duration: float = 300.0) -> None:
        """A prober in each box of ``pairs`` (box -> peers), over wg0 only."""
        for box, peers in pairs.items():
            argv = [sys.executable, str(REPO_ROOT / "tests" / "prober.py"), "--me", NODES[box]]
            argv += ["--peers", ",".join(NODES[p] for p in peers), "--port", str(PROBE_PORT)]
            argv += ["--interval", str(PROBE_INTERVAL), "--duration", str(duration)]
            argv += ["--gap-threshold", str(PROBE_GAP), "--flush-interval", "0.2", "--dev", "wg0"]
            argv += ["--out", str(self.tmp / f"probe-{box}.json")]
            self.probers[box] = self.tb.spawn(box, argv, self.tmp / f"probe-{box}.out")
        for box in pairs:
            out = self.tmp / f"probe-{box}.out"
            self.wait(lambda out=out: out.exists() and "ready" in out.read_text(), 10)

    def probe(self, box: str) -> dict[str, Any]:
        """The prober's latest report: peer wg IP -> its record (see tests/prober.py)."""
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads((self.tmp / f"probe-{box}.json").read_text())
            peers = doc.get("peers", doc)
            assert isinstance(peers, dict)
            return peers
        return {}

    def answering(self, box: str, peer: str, since: float) -> bool:
        """``box``'s prober heard ``peer`` after monotonic time ``since``."""
        last = self.probe(box).get(NODES[peer], {}).get("last_reply")
        return last is not None and last > since

    def hear_each_other(self, box: str, peers: list[str], since: float) -> bool:
        """``box`` and every one of ``peers`` heard each other after ``since``."""
        return all(self.answering(box, p, since) and self.answering(p, box, since) for p in peers)

    def wait_heard(self, box: str, peers: list[str], since: float, timeout: float) -> float:
        """Seconds from ``since`` until ``box`` and ``peers`` hear each other (bounded)."""
        self.wait(lambda: self.hear_each_other(box, peers, since), timeout, interval=0.02)
        return time.monotonic() - since

    def outages(self, box: str, peer: str, after: float = 0.0) -> list[float]:
        """Lengths of the silences ``box``'s prober saw from ``peer`` that ended after ``after``."""
        record = self.probe(box).get(NODES[peer], {})
        return [end - start for start, end in record.get("outages", []) if end > after]

    def stop_probers(self) -> None:
        for proc in self.probers.values():
            self.tb.stop(proc, timeout=5)
        self.probers = {}


@contextlib.contextmanager
def fault_mesh(tmp: Path, **timers: float) -> Iterator[FaultMesh]:
    """A fresh working example with its four daemons configured (not started)."""
    nodes = dict(NODES)  # a test may add a box (e.g. an impostor in "evil")
    with daemons_in("working_example", tmp, nodes, network_yaml(**timers), FaultMesh) as mesh:
        try:
            yield mesh
        finally:
            mesh.stop_probers()
