"""Gateways for real: a lamp that runs no daemon on the home LAN of charlie
and delta (both its gateways, charlie first) and a web host that only beta
reaches (beta the exit node), in the working example's namespaces with
wireguard-go (tests/gateways.py, ns/working_example.sh ``lan-device``,
``exit-net``).

Every node reaches the lamp, over a direct link to its gateway and relayed
by the static; a gateway whose machine dies is replaced within seconds and
takes the traffic back once, after ``gatewayReturn``; a node that opted in
sends its default route to the exit node while its own underlay stays
outside; a route no file lists is never installed; after a stop, and after
a crash and the next start, nothing of ours is left on any box.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.faults import NODES
from tests.gateways import (
    ALPHA_ROUTER,
    LAMP,
    LAN,
    WEB,
    GatewayMesh,
    gateway_config,
    gateway_mesh,
    host_state,
)
from wg_netmanager.forwarding import route_table

pytestmark = pytest.mark.netns

RETURN = 3.0  # gatewayReturn: seconds a returning first gateway waits
BOXES = list(NODES)


def moves_in_log(mesh: GatewayMesh, box: str, start: int = 0) -> list[str]:
    """The log lines of ``box`` saying which gateway it uses for the LAN."""
    found = re.findall(r"^\S+ (?:INFO|WARNING) +(.*)$", mesh.log(box, start), re.MULTILINE)
    return [text for text in found if text.startswith(f"{LAN} ")]


def test_lan_device_direct_failover_return_and_nothing_left(tmp_path: Path) -> None:
    with gateway_mesh(tmp_path, gatewayReturn=RETURN) as mesh:
        before = {box: host_state(mesh.tb, box) for box in BOXES}
        # charlie's own file (tampered) adds a network; nobody else's lists it.
        rogue = tmp_path / "charlie.yaml"
        rogue.write_text(
            gateway_config(gatewayReturn=RETURN).replace(
                f"routes: [{LAN}]", f"routes: [{LAN}, 8.8.8.0/24]", 1
            )
        )
        rogue.chmod(0o600)
        for box in BOXES:
            mesh.start(box, config=rogue if box == "charlie" else None)
        mesh.wait(lambda: all(mesh.reaches(b, LAMP) for b in BOXES), 30)
        mesh.wait(mesh.all_direct, 30)
        # Over the direct link to the first gateway; its LAN's own nodes route nothing.
        assert mesh.route_to("alpha", LAN) == f"via {NODES['charlie']}"
        assert mesh.route_to("beta", LAN) == f"via {NODES['charlie']}"
        assert mesh.route_to("charlie", LAN) is None and mesh.route_to("delta", LAN) is None
        assert all(mesh.reaches(b, LAMP) for b in BOXES)
        for box in BOXES:  # the tampered file changed nothing elsewhere
            assert "8.8.8" not in mesh.routes(box) and "8.8.8.0/24" not in mesh.allowed_ips(box)
        assert "0.0.0.0/0" not in mesh.allowed_ips("alpha")  # nobody opted in
        status = mesh.status("alpha")
        lan = next(s for s in status["subnets"] if s["route"] == LAN)
        assert lan["serving"] == NODES["charlie"] and lan["role"] == "routed"

        # charlie's machine dies: delta takes over within seconds.
        alpha_ping, beta_ping = mesh.ping_log("alpha", LAMP), mesh.ping_log("beta", LAMP)
        mesh.wait(lambda: alpha_ping.answers() and beta_ping.answers(), 10)
        killed = time.time()
        mesh.kill_box("charlie")
        mesh.wait(
            lambda: alpha_ping.answered_after(killed + 1) and beta_ping.answered_after(killed + 1),
            15,
        )
        settled = time.time()
        mesh.wait(lambda: alpha_ping.answered_after(settled), 5)
        for log in (alpha_ping, beta_ping):
            assert log.longest_gap(after=killed - 1) <= 5.0
        assert mesh.route_to("alpha", LAN) == f"via {NODES['delta']}"
        assert mesh.route_to("beta", LAN) == f"via {NODES['delta']}"

        # charlie comes back (the next start cleans up what the dead one
        # left): after gatewayReturn the LAN is served by it again, once.
        back = time.monotonic()
        mesh.start("charlie", config=rogue)
        mesh.wait(lambda: mesh.route_to("alpha", LAN) == f"via {NODES['charlie']}", 30)
        assert time.monotonic() - back >= RETURN
        returned = time.time()
        time.sleep(2 * RETURN)
        assert alpha_ping.longest_gap(after=returned - RETURN) < 1.0
        moves = moves_in_log(mesh, "alpha")
        assert moves[-2:] == [
            f"{LAN} now via delta ({NODES['delta']}): charlie ({NODES['charlie']}) is gone",
            f"{LAN} back via charlie ({NODES['charlie']}) (listed before delta ({NODES['delta']}))",
        ], moves
        assert len(moves) <= 4, moves  # before: up, perhaps preferred (whoever showed up first)
        assert "undoing what a previous run left" in mesh.log("charlie", 1)

        mesh.stop_pings()
        codes = mesh.stop_all()
        assert set(codes.values()) == {0}, codes
        for box in BOXES:
            assert host_state(mesh.tb, box) == before[box], box


def test_relayed_and_the_exit_node(tmp_path: Path) -> None:
    """alpha behind a symmetric NAT: relayed by beta to the lamp; it opts in
    to beta as exit node, reaches the web host through it, and its own
    underlay (LAN, beta's endpoint, the mesh itself) stays outside."""
    with gateway_mesh(tmp_path, symmetric=True, gatewayReturn=RETURN) as mesh:
        before = {box: host_state(mesh.tb, box) for box in BOXES}
        for box in BOXES:
            options = ["--exit-node", NODES["beta"]] if box == "alpha" else []
            mesh.start(box, options=options)
        mesh.wait(lambda: all(mesh.reaches(b, LAMP) for b in BOXES), 30)
        mesh.wait(lambda: mesh.reaches("alpha", WEB), 15)
        assert mesh.route_to("alpha", LAN) == f"via {NODES['beta']}"  # relayed
        assert mesh.relayed("alpha", "charlie")
        assert not mesh.reaches("delta", WEB) and not mesh.reaches("charlie", WEB)
        # The default route goes into the mesh; the underlay does not.
        mark = hex(route_table("wg0"))
        assert "dev wg0" in mesh.tb.run("alpha", "ip", "-4", "route", "get", WEB).stdout
        underlay = mesh.tb.run("alpha", "ip", "-4", "route", "get", "198.51.100.1", "mark", mark)
        assert "dev eth0" in underlay.stdout and "wg0" not in underlay.stdout
        assert "dev eth0" in mesh.tb.run("alpha", "ip", "-4", "route", "get", ALPHA_ROUTER).stdout
        assert mesh.reaches("alpha", ALPHA_ROUTER) and mesh.all_ping()
        assert "0.0.0.0/0" in mesh.allowed_ips("alpha") and "0.0.0.0/0" not in mesh.allowed_ips(
            "delta"
        )
        exit_status = next(s for s in mesh.status("alpha")["subnets"] if s["route"] == "0.0.0.0/0")
        assert exit_status["role"] == "exit" and exit_status["serving"] == NODES["beta"]

        # A crash leaves alpha's rules behind; the next start takes them over.
        mesh.tb.stop(mesh.procs["alpha"], sig=9)
        assert mark in mesh.tb.run("alpha", "ip", "-4", "rule", "show").stdout
        old_key = mesh.tb.run("alpha", "wg", "show", "wg0", "public-key").stdout
        mesh.start("alpha", options=["--exit-node", NODES["beta"]])
        # The new run's interface (it keeps the crashed run's key).
        mesh.wait(lambda: "alpha 10.1.1.2 on wg0" in mesh.log("alpha", 1), 30)
        assert mesh.tb.run("alpha", "wg", "show", "wg0", "public-key").stdout == old_key
        mesh.wait(lambda: mesh.reaches("alpha", WEB) and mesh.reaches("alpha", LAMP), 30)
        rules = mesh.tb.run("alpha", "ip", "-4", "rule", "show").stdout
        assert rules.count(f"fwmark {mark}") == 3  # ours (networks, main, default), once each

        codes = mesh.stop_all()
        assert set(codes.values()) == {0}, codes
        for box in BOXES:
            assert host_state(mesh.tb, box) == before[box], box
