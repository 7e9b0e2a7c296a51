"""The three-box testbed (ns/three_boxes.sh) models what we claim it does.

alice (198.51.100.1) and bob (198.51.100.2) sit directly on the "internet";
charlie (192.168.1.2) sits behind a masquerading NAT router whose WAN address
is 198.51.100.3.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import Testbed, require_netns, script_path, unique_prefix, wait_until

pytestmark = pytest.mark.netns

ALICE = "198.51.100.1"
BOB = "198.51.100.2"
ROUTER_WAN = "198.51.100.3"
CHARLIE = "192.168.1.2"
BOXES = ("inet", "alice", "bob", "router", "charlie")

# A UDP endpoint run inside a box: binds ADDR:PORT, optionally sends a probe
# to DEST:DPORT (repeated until something arrives), then prints every
# datagram received as "from IP:PORT DATA" until nothing came for IDLE
# seconds or the overall deadline passed.  With ECHO=1 it answers each
# datagram with b"pong".  Everything is bounded.
UDP_TOOL = r"""
import socket, sys, time
addr, port, dest, dport, echo, idle, total = sys.argv[1:8]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, int(port)))
print("ready", flush=True)
deadline = time.monotonic() + float(total)
got = 0
last = time.monotonic()
tries = 0
while time.monotonic() < deadline:
    if dest != "-" and got == 0 and tries < 20:
        s.sendto(b"ping", (dest, int(dport)))
        tries += 1
    s.settimeout(0.2)
    try:
        data, src = s.recvfrom(2048)
    except socket.timeout:
        if got and time.monotonic() - last > float(idle):
            break
        continue
    got += 1
    last = time.monotonic()
    print(f"from {src[0]}:{src[1]} {data.decode()}", flush=True)
    if echo == "1":
        s.sendto(b"pong", src)
print("done", flush=True)
"""


def udp_tool(
    addr: str,
    port: int,
    dest: str = "-",
    dport: int = 0,
    echo: bool = False,
    idle: float = 0.5,
    total: float = 5.0,
) -> list[str]:
    return [
        sys.executable,
        "-c",
        UDP_TOOL,
        addr,
        str(port),
        dest,
        str(dport),
        "1" if echo else "0",
        str(idle),
        str(total),
    ]


def received(log: Path) -> list[str]:
    return [ln for ln in log.read_text().splitlines() if ln.startswith("from ")]


@pytest.fixture(scope="module")
def tb() -> Iterator[Testbed]:
    require_netns()
    with Testbed(script_path("three_boxes"), unique_prefix()) as bed:
        yield bed


def test_namespaces_exist(tb: Testbed) -> None:
    assert tb.namespaces() == sorted(tb.ns(b) for b in BOXES)


def test_bob_pings_alice(tb: Testbed) -> None:
    assert tb.ping("bob", ALICE)
    assert tb.ping("alice", BOB)


def test_charlie_pings_alice_through_nat(tb: Testbed) -> None:
    assert tb.ping("charlie", ALICE)
    assert tb.ping("charlie", BOB)


def test_alice_cannot_reach_charlie(tb: Testbed) -> None:
    assert not tb.ping("alice", CHARLIE)
    # Even with a route to the LAN via the router's WAN address, the router
    # drops unsolicited inbound traffic (no port forwarding).
    tb.run("alice", "ip", "route", "add", "192.168.1.0/24", "via", ROUTER_WAN, check=True)
    try:
        assert not tb.ping("alice", CHARLIE)
    finally:
        tb.run("alice", "ip", "route", "del", "192.168.1.0/24", check=True)


def test_udp_from_charlie_arrives_from_router_wan(tb: Testbed, tmp_path: Path) -> None:
    log = tmp_path / "alice.log"
    rx = tb.spawn("alice", udp_tool(ALICE, 40000, echo=True), log)
    try:
        assert wait_until(lambda: "ready" in log.read_text(), timeout=10)
        res = tb.run(
            "charlie",
            *udp_tool(CHARLIE, 40001, dest=ALICE, dport=40000, total=5),
            timeout=20,
        )
        assert res.returncode == 0, res.stderr
        # charlie got the answer back through the NAT (established traffic)
        assert "from 198.51.100.1:40000 pong" in res.stdout.splitlines()
        assert wait_until(lambda: "done" in log.read_text(), timeout=10)
    finally:
        tb.stop(rx)
    lines = received(log)
    assert lines, log.read_text()
    for line in lines:
        assert line.startswith(f"from {ROUTER_WAN}:"), line


def test_nat_filters_by_endpoint(tb: Testbed, tmp_path: Path) -> None:
    """After charlie talks to alice, alice's answers get in, bob's packets to
    the same mapped port do not (Linux masquerade: endpoint-dependent
    filtering, so NAT traversal needs both sides to send)."""
    alice_log = tmp_path / "alice.log"
    charlie_log = tmp_path / "charlie.log"
    rx = tb.spawn("alice", udp_tool(ALICE, 40010, echo=True, idle=3, total=8), alice_log)
    try:
        assert wait_until(lambda: "ready" in alice_log.read_text(), timeout=10)
        ch = tb.spawn(
            "charlie",
            udp_tool(CHARLIE, 40011, dest=ALICE, dport=40010, idle=3, total=8),
            charlie_log,
        )
        assert wait_until(lambda: received(alice_log), timeout=10), alice_log.read_text()
        mapped = received(alice_log)[0].split()[1]
        ip, port = mapped.split(":")
        assert ip == ROUTER_WAN
        # bob sends to the NAT mapping charlie just created
        for _ in range(3):
            tb.run(
                "bob",
                sys.executable,
                "-c",
                "import socket,sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                ".sendto(b'intruder', (sys.argv[1], int(sys.argv[2])))",
                ip,
                port,
                timeout=10,
                check=True,
            )
            time.sleep(0.1)
        assert wait_until(lambda: "done" in charlie_log.read_text(), timeout=15)
        assert ch.wait(timeout=10) == 0
    finally:
        tb.stop(rx)
    got = received(charlie_log)
    assert f"from {ALICE}:40010 pong" in got
    assert not [ln for ln in got if "intruder" in ln], got


def test_two_boxes_run_wireguard_go_wg0(tb: Testbed) -> None:
    boxes = {"alice": 51820, "bob": 51821}
    started: dict[str, int] = {}
    try:
        for box in boxes:
            before = set(tb.pids(box))
            # daemonizes: returns once wg0 and its control socket exist
            res = tb.run(box, "wireguard-go", "wg0", timeout=20)
            assert res.returncode == 0, res.stdout + res.stderr
            new = [p for p in tb.pids(box) if p not in before and _comm(p) == "wireguard-go"]
            assert len(new) == 1, (box, new)
            started[box] = new[0]
        for box, port in boxes.items():
            tb.run(box, "wg", "set", "wg0", "listen-port", str(port), check=True)
        for box, port in boxes.items():
            res = tb.run(box, "wg", "show", "wg0", "listen-port", check=True)
            assert res.stdout.strip() == str(port)
        # nothing ended up in the host's shared socket directory
        assert not Path("/run/wireguard/wg0.sock").exists() or _host_has_own_wg0()
        for box in boxes:
            tb.run(box, "ip", "link", "del", "wg0", check=True)
        for box, pid in started.items():
            assert wait_until(functools.partial(_gone, pid), timeout=10), (
                f"wireguard-go in {box} (pid {pid}) did not exit after link deletion"
            )
            assert pid not in tb.pids(box)
    finally:
        for box, pid in started.items():
            # only PIDs we started, inside our own namespace
            if _alive(pid) and pid in tb.pids(box):
                os.kill(pid, signal.SIGKILL)


def test_down_removes_everything(tmp_path: Path) -> None:
    require_netns()
    bed = Testbed(script_path("three_boxes"), unique_prefix())
    try:
        t0 = time.monotonic()
        bed.up()
        t_up = time.monotonic() - t0
        assert len(bed.namespaces()) == len(BOXES)
        # a process left running inside a box is stopped by down
        bed.run("bob", "wireguard-go", "wg0", timeout=20, check=True)
        # up again on the same prefix first tears the old one down
        bed.up()
        assert len(bed.namespaces()) == len(BOXES)
    finally:
        t0 = time.monotonic()
        bed.down()
        t_down = time.monotonic() - t0
    assert bed.namespaces() == []
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    assert f"{bed.prefix}-" not in out
    assert not Path(f"/run/wgnm-testbed/{bed.prefix}").exists()
    bed.down()  # idempotent
    print(f"testbed up {t_up:.2f}s, down {t_down:.2f}s")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and _comm(pid) != ""


def _gone(pid: int) -> bool:
    return not _alive(pid)


def _host_has_own_wg0() -> bool:
    # a real wg0 of the host (not ours) would also have a socket there
    res = subprocess.run(["ip", "link", "show", "wg0"], capture_output=True, timeout=10)
    return res.returncode == 0
