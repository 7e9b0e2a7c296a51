"""The mesh's names in DNS, answered by the real daemons in the three-box testbed.

bob asks charlie's and alice's daemons (on their wg IPs, port 53, over the
tunnel) with dnspython, run in bob's namespace: charlie.mesh resolves at
both, over UDP and TCP; another domain is refused; junk is dropped and
counted in charlie's status. A second node with a used name is refused with
one CONFLICT line, and the name keeps one address.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import Daemons, daemons_in, network_yaml

pytestmark = pytest.mark.netns

NODES = {"alice": "10.1.1.1", "bob": "10.1.1.2", "charlie": "10.1.1.3"}

# Run in a box: each query as "server name type proto", one JSON line out.
ASK = r"""
import json, socket, sys, time
import dns.message, dns.query, dns.rcode
out = []
for spec in sys.argv[1:]:
    server, name, rdtype, proto = spec.split()
    if proto == "junk":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x00\x01junk", (server, 53))
        continue
    query = dns.message.make_query(name, rdtype)
    ask = dns.query.udp if proto == "udp" else dns.query.tcp
    started = time.perf_counter()
    response = ask(query, server, timeout=3)
    elapsed = time.perf_counter() - started
    out.append({
        "rcode": dns.rcode.to_text(response.rcode()),
        "addresses": [rd.address for rrset in response.answer for rd in rrset],
        "aa": bool(response.flags & 0x0400),
        "seconds": elapsed,
    })
print(json.dumps(out))
"""


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Daemons]:
    yaml = network_yaml(pingInterval=1, deadAfter=3)
    with daemons_in("three_boxes", tmp_path, NODES, yaml, Daemons) as mesh:
        yield mesh


def ask(mesh: Daemons, box: str, *specs: str) -> list[dict[str, object]]:
    res = mesh.tb.run(box, sys.executable, "-c", ASK, *specs, timeout=60)
    assert res.returncode == 0, res.stderr + mesh.logs()
    answers = json.loads(res.stdout)
    assert isinstance(answers, list)
    return answers


def listening(mesh: Daemons, box: str) -> bool:
    dns = mesh.status(box).get("dns") or {}
    return bool(dns.get("listening"))


def test_every_node_answers_for_the_mesh_names(mesh: Daemons) -> None:
    mesh.start_all()
    mesh.wait(lambda: mesh.all_ping(), timeout=20)
    for box in NODES:
        mesh.wait(lambda box=box: listening(mesh, box), timeout=10)  # type: ignore[misc]
    charlie, alice = NODES["charlie"], NODES["alice"]
    answers = ask(
        mesh,
        "bob",
        f"{charlie} - - junk",  # first: the UDP queries after it wait for it on that socket
        f"{charlie} charlie.mesh A udp",
        f"{alice} charlie.mesh A udp",
        f"{alice} CHARLIE.Mesh A tcp",
        f"{charlie} bob.mesh A tcp",
        f"{charlie} example.com A udp",
        f"{alice} nobody.mesh A udp",
        f"{charlie} charlie.mesh AAAA udp",
    )
    for answer in answers[:3]:
        assert answer["rcode"] == "NOERROR" and answer["aa"], answer
        assert answer["addresses"] == [charlie], answer
    assert answers[3]["addresses"] == [NODES["bob"]]
    assert answers[4]["rcode"] == "REFUSED" and answers[4]["addresses"] == []
    assert answers[5]["rcode"] == "NXDOMAIN"
    assert answers[6]["rcode"] == "NOERROR" and answers[6]["addresses"] == []

    dns = mesh.status("charlie")["dns"]
    assert dns["domain"] == "mesh" and dns["listening"] == f"{charlie}:53 udp+tcp"
    assert dns["names"] == 3
    assert dns["drops"] == {"malformed": 1}
    assert dns["answers"]["REFUSED"] == 1

    # The answer latency over the tunnel (bob -> charlie, UDP): figures only.
    timed = ask(mesh, "bob", *[f"{charlie} alice.mesh A udp"] * 50)
    assert all(a["addresses"] == [alice] for a in timed)
    median = statistics.median(float(str(a["seconds"])) for a in timed)
    print(f"DNS answer over the tunnel: median {median * 1000:.2f} ms (50 queries)")

    # Someone deletes charlie's interface: the daemon sets it up again, and
    # the sockets bound to its wg IP answer again once the address is back.
    mesh.tb.run("charlie", "ip", "link", "del", "wg0", check=True)
    mesh.wait(lambda: mesh.pings("bob", "charlie"), timeout=20)
    [again] = ask(mesh, "bob", f"{charlie} alice.mesh A tcp")
    assert again["addresses"] == [alice]
    assert "Traceback" not in mesh.logs()


def test_dns_off_leaves_port_53_alone(mesh: Daemons, tmp_path: Path) -> None:
    off = tmp_path / "off.yaml"
    off.write_text(
        network_yaml(pingInterval=1, deadAfter=3).replace(
            "network:\n", "network:\n  dns:\n    enabled: false\n", 1
        )
    )
    off.chmod(0o600)
    mesh.start("alice")
    mesh.start("bob", config=off)
    mesh.wait(lambda: mesh.pings("bob", "alice") and listening(mesh, "alice"), timeout=20)
    assert "dns" not in mesh.status("bob")
    sockets = mesh.tb.run("bob", "ss", "-lnu", "sport", "=", "53").stdout
    assert NODES["bob"] not in sockets
    assert NODES["alice"] in mesh.tb.run("alice", "ss", "-lnu", "sport", "=", "53").stdout


def test_a_second_node_with_a_used_name_gets_a_conflict_and_dns_one_address(
    mesh: Daemons,
) -> None:
    mesh.start("alice")
    mesh.start("bob")
    mesh.wait(lambda: mesh.pings("bob", "alice") and listening(mesh, "alice"), timeout=20)
    mesh.start("charlie", name="Bob")  # charlie's wg IP, bob's name
    mesh.wait(lambda: "refuses us" in mesh.log("charlie"), timeout=20)
    (line,) = [x for x in mesh.log("charlie").splitlines() if "CONFLICT" in x]
    assert "alice (10.1.1.1) refuses us: our name 'bob' is in use by 10.1.1.2" in line, line
    assert line.endswith("give this node another name"), line
    assert any("claims the name 'Bob'" in c for c in mesh.status("alice")["conflicts"])
    [answer] = ask(mesh, "bob", f"{NODES['alice']} bob.mesh A udp")
    assert answer["addresses"] == [NODES["bob"]], answer
    assert mesh.pings("bob", "alice") and not mesh.pings("alice", "charlie")
