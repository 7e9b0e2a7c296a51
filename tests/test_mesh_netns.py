"""The real daemon in the three-box testbed, over wireguard-go.

alice is static with a public address, bob is dynamic on the same "internet",
charlie is dynamic behind a masquerading NAT router. Each box runs
``python -m wg_netmanager`` in its own namespace and mount namespace.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import Daemons, daemons_in, network_yaml
from tests.waits import wait_until

pytestmark = pytest.mark.netns

NODES = {"alice": "10.1.1.1", "bob": "10.1.1.2", "charlie": "10.1.1.3"}
NETWORK_YAML = network_yaml(pingInterval=1, deadAfter=3)


def shifted_clock(offset: str) -> list[str]:
    """argv prefix running a command with its wall clock shifted (libfaketime).

    The preload library rather than the ``faketime`` wrapper: the wrapper forks
    and would take our SIGTERM instead of the daemon.
    """
    libs = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    assert libs, "libfaketime missing: run scripts/install.sh"
    # Only the wall clock: the protocol never reads it, which is the point.
    return ["env", f"LD_PRELOAD={libs[0]}", f"FAKETIME={offset}", "DONT_FAKE_MONOTONIC=1"]


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Daemons]:
    with daemons_in("three_boxes", tmp_path, NODES, NETWORK_YAML, Daemons) as mesh:
        yield mesh


def test_mesh_forms_heals_and_cleans_up(mesh: Daemons) -> None:
    boxes = list(NODES)
    for box in boxes:
        mesh.start(box)
    assert wait_until(lambda: mesh.all_ping(boxes), timeout=15), mesh.logs()
    # bob and charlie first went through alice, the gateway, then direct
    # (charlie's NAT lets bob's WireGuard answer in once charlie has sent).
    assert "charlie (10.1.1.3) reachable via alice" in mesh.log("bob")
    assert wait_until(lambda: "via" not in mesh.routes("bob") + mesh.routes("charlie"), 10)
    assert len(mesh.peers("alice")) == 2 and len(mesh.peers("bob")) == 2

    # charlie crashes: no bye, so the others must notice the silence.
    mesh.tb.stop(mesh.procs["charlie"], sig=signal.SIGKILL)
    assert wait_until(lambda: "10.1.1.3" not in mesh.routes("bob"), timeout=8), mesh.logs()
    assert wait_until(lambda: len(mesh.peers("alice")) == 1, timeout=8), mesh.logs()
    assert wait_until(lambda: len(mesh.peers("bob")) == 1, timeout=8), mesh.logs()

    # charlie comes back (with the key its crashed run kept, one boot number
    # on), and a clock two hours ahead.
    mesh.start("charlie", *shifted_clock("+2h"))
    started = time.monotonic()
    assert wait_until(lambda: mesh.all_ping(boxes), timeout=15), mesh.logs()
    print(f"charlie reachable again {time.monotonic() - started:.2f} s after its restart")

    # SIGTERM: every daemon exits 0 quickly and leaves nothing behind.
    for box in boxes:
        begin = time.monotonic()
        assert mesh.tb.stop(mesh.procs[box], sig=signal.SIGTERM, timeout=5) == 0, mesh.logs()
        assert time.monotonic() - begin < 2.5
    for box in boxes:
        assert mesh.tb.run(box, "ip", "link", "show", "wg0").returncode != 0
        assert mesh.tb.pids(box) == [], f"processes left in {box}"
        assert mesh.tb.run(box, "ip", "-4", "route", "show", "proto", "57").stdout == ""
    assert "Traceback" not in mesh.logs()
