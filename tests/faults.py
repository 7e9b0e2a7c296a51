"""Fault injection on the working example in namespaces, for tests and benchmarks.

``FaultMesh`` runs the four daemons of the seed's working example (beta
static; alpha behind its own NAT; charlie and delta on one LAN behind a home
router) and adds what fault tests and benchmarks need: probers that measure
outages to the millisecond (tests/prober.py over the WireGuard addresses, at
the pace a ``Probing`` sets), and the testbed's fault commands (``lan-cut``,
``partition``, ``readdress``, ...; see ns/working_example.sh).

Every wait is bounded; the testbed (namespaces, processes) goes away on exit
of ``fault_mesh`` whatever happens (see tests/netns.py).
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import SHARED_KEY_B64
from tests.netns import REPO_ROOT, Daemons, Testbed, daemons_in, network_yaml

NODES = {"beta": "10.1.1.1", "alpha": "10.1.1.2", "charlie": "10.1.1.3", "delta": "10.1.1.4"}
DYNAMIC = ["alpha", "charlie", "delta"]
BETA_UNDERLAY = "198.51.100.1"  # the static's public address (its admin port: 50501)

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


@dataclass(frozen=True)
class Probing:
    """How the probers measure; the defaults are the fault tests'."""

    interval: float = 0.05  # seconds between a prober's requests to each peer
    gap: float = 0.3  # silences longer than this are outages
    flush: float = 0.2  # seconds between rewrites of a prober's report
    port: int = 7777


class FaultMesh(Daemons):
    """The working example's daemons plus probers and fault commands."""

    def __init__(
        self,
        tb: Testbed,
        tmp: Path,
        nodes: dict[str, str],
        config_text: str,
        *,
        verbose: bool = True,
        probing: Probing = Probing(),
        program: Sequence[str] = (),
    ) -> None:
        super().__init__(tb, tmp, nodes, config_text, verbose=verbose, program=program)
        self.probing = probing
        self.probers: dict[str, subprocess.Popen[bytes]] = {}

    def relayed(self, a: str, b: str) -> bool:
        beta = f"via {self.nodes['beta']}"
        return self.route(a, b) == beta and self.route(b, a) == beta

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
        p = self.probing
        for box, peers in pairs.items():
            argv = [sys.executable, str(REPO_ROOT / "tests" / "prober.py"), "--me", self.nodes[box]]
            argv += ["--peers", ",".join(self.nodes[b] for b in peers), "--port", str(p.port)]
            argv += ["--interval", str(p.interval), "--duration", str(duration)]
            argv += ["--gap-threshold", str(p.gap), "--flush-interval", str(p.flush)]
            argv += ["--dev", "wg0", "--out", str(self.tmp / f"probe-{box}.json")]
            self.probers[box] = self.tb.spawn(box, argv, self.tmp / f"probe-{box}.out")

        def ready(out: Path) -> bool:
            return out.exists() and "ready" in out.read_text()

        for box in pairs:
            self.wait(functools.partial(ready, self.tmp / f"probe-{box}.out"), 10)

    def probe_report(self, box: str) -> dict[str, Any] | None:
        """The latest report of ``box``'s prober (see tests/prober.py); None if none yet."""
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads((self.tmp / f"probe-{box}.json").read_text())
            assert isinstance(doc, dict)
            return doc
        return None

    def probe(self, box: str) -> dict[str, Any]:
        """The prober's latest per-peer records: peer wg IP -> its record."""
        peers = (self.probe_report(box) or {}).get("peers", {})
        assert isinstance(peers, dict)
        return peers

    def answering(self, box: str, peer: str, since: float) -> bool:
        """``box``'s prober heard ``peer`` after monotonic time ``since``."""
        last = self.probe(box).get(self.nodes[peer], {}).get("last_reply")
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
        record = self.probe(box).get(self.nodes[peer], {})
        return [end - start for start, end in record.get("outages", []) if end > after]

    def stop_probers(self) -> None:
        """Stop every prober at once (none outlives the others' replies); each writes
        its final report."""
        procs = [p for p in self.probers.values() if p.poll() is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            self.tb.stop(proc, timeout=5)
        self.probers = {}


@contextlib.contextmanager
def fault_mesh(tmp: Path, *, links: str | None = None, **timers: float) -> Iterator[FaultMesh]:
    """A fresh working example with its four daemons configured (not started)."""
    nodes = dict(NODES)  # a test may add a box (e.g. an impostor in "evil")
    config = network_yaml(SHARED_KEY_B64, links=links, **timers)
    with daemons_in("working_example", tmp, nodes, config, FaultMesh) as mesh:
        try:
            yield mesh
        finally:
            mesh.stop_probers()
