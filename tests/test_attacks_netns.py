"""A member gone rogue, against real daemons in the working example.

The attacker sits in box "evil" (198.51.100.66, on the internet) or is a
member's own machine. It holds the shared key; it runs tests/member.py's
``Member`` (genuine handshakes for its own key, frames forged in any name)
over real UDP sockets. The core's side of each attack is in
tests/test_sessions.py; here the daemons, sockets and kernel are real.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import BETA_UNDERLAY, NODES, FaultMesh, fault_mesh
from tests.netns import REPO_ROOT

pytestmark = pytest.mark.netns


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[FaultMesh]:
    with fault_mesh(tmp_path) as m:
        yield m


def run_script(mesh: FaultMesh, box: str, script: str, *args: str) -> str:
    res = mesh.tb.run(
        box, "env", f"PYTHONPATH={REPO_ROOT}", sys.executable, "-c", script, *args, timeout=30
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


FORGE_BYES = """
import os, socket, sys, time
from ipaddress import IPv4Address
from tests.member import forged_transport
# Byes in charlie's name to beta, with every index and counter a guess could
# take: without charlie's session keys none of them opens.
charlie, beta = IPv4Address("10.1.1.3"), IPv4Address("10.1.1.1")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(300):
    data = forged_transport(charlie, beta, int.from_bytes(os.urandom(4), "big"), i)
    s.sendto(data, (sys.argv[1], 50501))
    if i % 20 == 19:
        time.sleep(0.01)  # not a flood: each one is to be looked at
print("sent")
"""


def test_a_member_cannot_speak_for_another_node(mesh: FaultMesh) -> None:
    mesh.fault("attacker")
    mesh.start_all()
    mesh.wait(mesh.all_direct, 30)
    mesh.start_probers({"charlie": ["beta", "delta"], "beta": ["charlie"]})
    time.sleep(1.0)
    started = time.monotonic()
    run_script(mesh, "evil", FORGE_BYES, BETA_UNDERLAY)
    # And then a daemon of its own that claims charlie's wg IP.
    mesh.nodes["evil"] = NODES["charlie"]
    mesh.start("evil")
    mesh.wait(lambda: "CONFLICT" in mesh.log("beta"), 15)
    mesh.wait(lambda: "refuses us" in mesh.log("evil"), 15)
    time.sleep(2.0)
    drops = mesh.status("beta")["drops"]
    assert drops.get("bad transport", 0) + drops.get("no session", 0) >= 290, drops
    assert drops.get("conflict", 0) <= 10, drops  # refused: it waits before it asks again
    charlie = mesh.status("beta")["peers"]
    assert [p for p in charlie if p["name"] == "charlie"], charlie
    # charlie never noticed: no gap, still direct everywhere.
    assert mesh.outages("charlie", "beta", after=started) == []
    assert mesh.outages("beta", "charlie", after=started) == []
    mesh.tb.stop(mesh.procs.pop("evil"), timeout=5)
    del mesh.nodes["evil"]
    assert mesh.all_direct()
    mesh.stop_all()


AMPLIFY = """
import json, socket, sys, time
from ipaddress import IPv4Address
from tests.member import Member
from wg_netmanager import wire
beta = (sys.argv[1], 50501)
mallory = Member(IPv4Address("10.1.1.66"))
own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
own.bind(("0.0.0.0", 50566))
own.settimeout(2.0)
own.sendto(mallory.init(IPv4Address("10.1.1.1")), beta)
response, _ = own.recvfrom(2048)
own.sendto(mallory.finish(response), beta)
time.sleep(0.5)
# The "victim": another address of ours, as if spoofed. Everything beta
# sends there is counted against what we sent from there.
victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
victim.bind(("0.0.0.0", 50567))
victim.settimeout(0.5)
sent = 0
for i in range(200):
    data = mallory.send(IPv4Address("10.1.1.1"), wire.TableRequest() if i % 2 else wire.Ping(i, 0))
    victim.sendto(data, beta)
    sent += len(data)
received = 0
try:
    while True:
        received += len(victim.recvfrom(4096)[0])
except TimeoutError:
    pass
print(json.dumps({"sent": sent, "received": received}))
"""


def test_no_amplification_towards_an_address_a_member_spoofs(mesh: FaultMesh) -> None:
    mesh.fault("attacker")
    mesh.start_all()
    mesh.wait(mesh.all_direct, 30)
    result = json.loads(run_script(mesh, "evil", AMPLIFY, BETA_UNDERLAY).strip().splitlines()[-1])
    # Pongs and one path challenge at most, each no larger than what it answers.
    assert result["received"] <= result["sent"], result
    drops = mesh.status("beta")["drops"]
    assert drops.get("rate limited", 0) >= 90, drops  # the table requests
    mesh.stop_all()


SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(20):
    s.sendto(b"from the mesh", (sys.argv[1], 9999))
"""
RECEIVE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
s.settimeout(float(sys.argv[1]))
got = 0
try:
    while True:
        s.recvfrom(100)
        got += 1
except TimeoutError:
    pass
print(got)
"""
HOST = "198.51.100.66"  # "evil", a plain host on the static's network: not a mesh node


def test_the_static_forwards_mesh_traffic_only_into_the_mesh(mesh: FaultMesh) -> None:
    mesh.fault("attacker")
    mesh.start_all()
    mesh.wait(mesh.all_direct, 30)
    beta_key = mesh.tb.run("beta", "wg", "show", "wg0", "public-key").stdout.strip()
    # alpha (a member, root on its own machine) sends into beta's tunnel what
    # is meant for a host on beta's other network.
    listener = mesh.tb.spawn(
        "evil", [sys.executable, "-c", RECEIVE, "4"], mesh.tmp / "listener.log"
    )
    time.sleep(0.5)
    allowed = "10.1.1.1/32," + HOST + "/32"
    for argv in (
        ["wg", "set", "wg0", "peer", beta_key, "allowed-ips", allowed],
        ["ip", "route", "replace", HOST + "/32", "dev", "wg0"],
    ):
        assert mesh.tb.run("alpha", *argv).returncode == 0
    assert mesh.tb.run("alpha", sys.executable, "-c", SEND, HOST).returncode == 0
    listener.wait(timeout=10)
    assert (mesh.tmp / "listener.log").read_text().strip() == "0"
    counters = mesh.tb.run("beta", "nft", "list", "ruleset").stdout
    assert 'iifname "wg0" counter packets' in counters
    assert "packets 0 " not in counters.split("wgnm_wg0")[1]  # our rule dropped them
    mesh.tb.run("alpha", "ip", "route", "del", HOST + "/32", "dev", "wg0")
    mesh.stop_all()
    # Restored on exit: no table of ours, send_redirects as before.
    assert "wgnm_" not in mesh.tb.run("beta", "nft", "list", "tables").stdout
