"""A mobile node for real: the working example with alpha started ``--mobile``.

alpha (behind its own NAT) comes up after the others and is reachable from
every node within 3 s; that traffic makes it open direct links, closed again
once idle; then its one WireGuard peer, beta, carries the whole subnet with
the mobile keepalive, and alpha sends no admin datagram at all (an nftables
counter on its admin port). (alpha has the lowest dynamic wg IP here, so
eager nodes would not open a pair towards it anyway: the simulator tests
that they never do.)
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import NODES, FaultMesh, fault_mesh

pytestmark = pytest.mark.netns

ALPHA_ADMIN_PORT = 50502
COUNTER_TABLE = "mobile_test"  # ours, in alpha's namespace
QUIET_WINDOW = 10.0  # seconds of watching alpha's admin port while idle
PINGING = 5.0  # seconds every other node pings alpha from before its start
IDLE = 3.0  # idleAfter: alpha's direct links close soon after the pings


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[FaultMesh]:
    with fault_mesh(tmp_path, idleAfter=IDLE) as mesh:
        yield mesh


def start_pings(
    mesh: FaultMesh, boxes: list[str], seconds: float
) -> dict[str, subprocess.Popen[str]]:
    """``ping -D`` from each box to alpha, 10 a second, for ``seconds``."""
    argv = ["ping", "-D", "-n", "-i", "0.1", "-w", f"{seconds:g}", NODES["alpha"]]
    return {
        box: subprocess.Popen(
            mesh.tb.box_cmd(box, *argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for box in boxes
    }


def first_reply(proc: subprocess.Popen[str]) -> float | None:
    """The wall-clock time of a ``ping -D``'s first reply (None: none)."""
    out, _ = proc.communicate(timeout=60)
    found = re.search(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.MULTILINE)
    return float(found.group(1)) if found else None


def admin_packets_sent(mesh: FaultMesh) -> int:
    out = mesh.tb.run("alpha", "nft", "list", "table", "inet", COUNTER_TABLE).stdout
    found = re.search(r"counter packets (\d+)", out)
    assert found, out
    return int(found.group(1))


def test_a_mobile_node_is_reachable_at_once_links_on_traffic_and_stays_quiet(
    mesh: FaultMesh,
) -> None:
    for box in ("beta", "charlie", "delta"):
        mesh.start(box)
    mesh.wait(lambda: mesh.direct("charlie", "delta"), 20)
    others = ["beta", "charlie", "delta"]

    # Cold start: reachable from every node within 3 s of the daemon's start.
    pings = start_pings(mesh, others, PINGING)
    time.sleep(0.5)  # (the pings run)
    spawned = time.time()
    mesh.start("alpha", options=["--mobile"])
    replies = {box: first_reply(proc) for box, proc in pings.items()}
    took = {box: None if at is None else round(at - spawned, 2) for box, at in replies.items()}
    print(f"alpha (--mobile) answers after (s, from its spawn): {took}")
    assert all(t is not None and t < 3.0 for t in took.values()), (took, mesh.logs())
    assert "mobile" in mesh.log("alpha")

    # That traffic made alpha open direct links (its sensor sees both ways).
    assert mesh.direct("charlie", "alpha") and mesh.direct("delta", "alpha"), mesh.logs()

    # Idle: the links close; one WireGuard peer (beta) is left, carrying the
    # whole subnet, with the mobile keepalive.
    mesh.wait(lambda: len(mesh.peers("alpha")) == 1, 3 * IDLE + 5)
    fields = mesh.tb.run("alpha", "wg", "show", "wg0", "dump").stdout.splitlines()[1].split("\t")
    assert "10.1.1.0/24" in fields[3].split(",") and fields[7] == "40", fields
    assert mesh.route("charlie", "alpha") == f"via {NODES['beta']}"

    # ... and not one admin datagram from alpha (no pings, no hellos).
    nft = (
        f"add table inet {COUNTER_TABLE}\n"
        f"add chain inet {COUNTER_TABLE} out {{ type filter hook output priority 0; }}\n"
        f"add rule inet {COUNTER_TABLE} out udp sport {ALPHA_ADMIN_PORT} counter\n"
    )
    assert mesh.tb.run("alpha", "nft", "-f", "-", input=nft).returncode == 0
    time.sleep(QUIET_WINDOW)
    assert admin_packets_sent(mesh) == 0, mesh.log("alpha")
    assert mesh.pings("delta", "alpha")

    codes = mesh.stop_all()
    assert set(codes.values()) == {0}, (codes, mesh.logs())
    assert "Traceback" not in mesh.logs()
