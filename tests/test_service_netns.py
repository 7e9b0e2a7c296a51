"""The real daemon as a service would run it, in namespaces with wireguard-go.

- On the working example: the static (beta) runs with ``NOTIFY_SOCKET``
  (a path: abstract sockets are per network namespace) and says READY=1
  once set up; pings run between every pair while beta and charlie reload
  (SIGHUP) a changed network.yaml: not one ping is lost, the processes and
  their WireGuard keys stay, the change is applied, beta says RELOADING=1
  then READY=1. A network.yaml that no longer validates changes nothing.
  SIGTERM: STOPPING=1 and exit 0.
- On three boxes: a network.yaml without ``peers`` and the static given
  with ``-s`` on every command line meshes.

The figures (exec to READY=1, reload time, loss) are printed by
``python -m scripts.bench_service``, not asserted here.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import NODES, FaultMesh, fault_mesh
from tests.helpers import SHARED_KEY_B64
from tests.netns import Daemons, daemons_in
from tests.services import NotifySocket, ping_losses, start_pings

pytestmark = pytest.mark.netns


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[FaultMesh]:
    with fault_mesh(tmp_path) as mesh:
        yield mesh


def public_key(mesh: FaultMesh, box: str) -> str:
    return mesh.tb.run(box, "wg", "show", "wg0", "public-key").stdout.strip()


def test_reload_while_pings_run_loses_nothing_and_applies_the_change(
    mesh: FaultMesh, tmp_path: Path
) -> None:
    manager = NotifySocket(str(tmp_path / "notify.sock"))
    try:
        started = time.monotonic()
        beta = mesh.start("beta", "env", f"NOTIFY_SOCKET={manager.address}")
        ready = manager.wait_for("READY=1", timeout=15)
        print(f"beta: READY=1 {ready - started:.2f} s after exec")
        for box in NODES:
            if box != "beta":
                mesh.start(box)
        mesh.wait(mesh.all_direct, 30)
        keys = {box: public_key(mesh, box) for box in NODES}
        pids = {box: proc.pid for box, proc in mesh.procs.items()}

        pings = start_pings(mesh, list(itertools.permutations(NODES, 2)), count=300)
        time.sleep(1.5)
        mesh.config.write_text(mesh.config.read_text() + "timers:\n  pingInterval: 5\n")
        hangup = time.monotonic()
        for box in ("beta", "charlie"):  # the static (everyone's gateway) and a dynamic node
            os.kill(mesh.procs[box].pid, signal.SIGHUP)
        reloading = manager.wait_for("RELOADING=1", timeout=10, after=hangup)
        again = manager.wait_for("READY=1", timeout=10, after=reloading)
        print(f"beta: reloaded, READY=1 {again - hangup:.3f} s after SIGHUP")
        for box in ("beta", "charlie"):
            mesh.wait(lambda box=box: "pingInterval 12 -> 5" in mesh.log(box), 10)
        losses = ping_losses(pings, timeout=30)
        print(f"pings lost during the reload: {losses}")
        assert set(losses.values()) == {0}, (losses, mesh.logs())
        # The same processes, the same interfaces and keys.
        assert {box: proc.pid for box, proc in mesh.procs.items()} == pids
        assert all(proc.poll() is None for proc in mesh.procs.values())
        assert {box: public_key(mesh, box) for box in NODES} == keys

        # A file that no longer validates: one error line, nothing changes.
        broken = mesh.config.read_text().replace("pingInterval: 5", "pingInterval: -5")
        mesh.config.write_text(broken)
        os.kill(mesh.procs["charlie"].pid, signal.SIGHUP)
        error = f"ERROR   reload: {mesh.config}: timers.pingInterval: -5 is not positive"
        mesh.wait(lambda: error in mesh.log("charlie"), 10)
        assert mesh.procs["charlie"].poll() is None and mesh.all_ping(["charlie", "delta"])

        stop = time.monotonic()
        assert mesh.tb.stop(beta, sig=signal.SIGTERM, timeout=5) == 0
        manager.wait_for("STOPPING=1", timeout=1, after=stop)
        assert "Traceback" not in mesh.logs()
    finally:
        manager.close()


THREE = {"alice": "10.1.1.1", "bob": "10.1.1.2", "charlie": "10.1.1.3"}


def test_a_static_given_on_the_command_line_alone_meshes(tmp_path: Path) -> None:
    text = f"""\
network:
  sharedKey: {SHARED_KEY_B64}
  subnet: 10.1.1.0/24
timers:
  pingInterval: 1
  deadAfter: 3
"""
    with daemons_in("three_boxes", tmp_path, THREE, text, Daemons) as mesh:
        for box in THREE:
            mesh.start(box, options=["-s", "10.1.1.1@198.51.100.1:50001"])
        took = mesh.wait(mesh.all_ping, 20)
        print(f"meshed {took:.2f} s after the starts, the static from -s alone")
        assert ", static" in mesh.log("alice")  # -s made alice the static
        codes = mesh.stop_all()
        assert set(codes.values()) == {0}, codes
