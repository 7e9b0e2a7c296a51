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

from tests import procfs
from tests.netns import Testbed, require_netns, script_path, unique_prefix
from tests.waits import wait_until

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
            new = [p for p in tb.pids(box) if p not in before and procfs.comm(p) == "wireguard-go"]
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


def _alive(pid: int) -> bool:
    return procfs.comm(pid) != ""  # "" once the process is gone


def _gone(pid: int) -> bool:
    return not _alive(pid)


def _host_has_own_wg0() -> bool:
    # a real wg0 of the host (not ours) would also have a socket there
    res = subprocess.run(["ip", "link", "show", "wg0"], capture_output=True, timeout=10)
    return res.returncode == 0


# ---------------------------------------------------------------------------
# ns/working_example.sh: beta (static, public), alpha behind its own NAT
# firewall "fw", charlie and delta on one home LAN behind "router";
# `roam` moves delta behind a third NAT "cafe".

BETA = "198.51.100.1"
FW_WAN = "198.51.100.4"
HOME_WAN = "198.51.100.3"
CAFE_WAN = "198.51.100.5"
ALPHA = "192.168.2.2"
CHARLIE_LAN = "192.168.1.2"
DELTA_LAN = "192.168.1.3"
DELTA_CAFE = "192.168.3.2"
WE_BOXES = ("inet", "beta", "fw", "alpha", "router", "charlie", "delta")

# Binds ADDR on every PORT given, prints "ready", then "PORT from IP:SPORT
# DATA" for each datagram until EXPECT datagrams arrived or TOTAL seconds
# passed.
UDP_SINK = r"""
import selectors, socket, sys, time
addr, total, expect, *ports = sys.argv[1:]
sel = selectors.DefaultSelector()
for port in ports:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, int(port)))
    sel.register(s, selectors.EVENT_READ, port)
print("ready", flush=True)
deadline = time.monotonic() + float(total)
got = 0
while got < int(expect) and time.monotonic() < deadline:
    for key, _ in sel.select(timeout=0.1):
        data, src = key.fileobj.recvfrom(2048)
        got += 1
        print(f"{key.data} from {src[0]}:{src[1]} {data.decode()}", flush=True)
print("done", flush=True)
"""

# Binds ADDR:PORT and sends one datagram to each DEST:DPORT, COUNT rounds.
UDP_SEND = r"""
import socket, sys, time
addr, port, count, *dests = sys.argv[1:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, int(port)))
for _ in range(int(count)):
    for dest in dests:
        ip, dport = dest.rsplit(":", 1)
        s.sendto(b"probe", (ip, int(dport)))
    time.sleep(0.05)
"""


def _we_up(symmetric: bool = False) -> Testbed:
    bed = Testbed(script_path("working_example"), unique_prefix("we"))
    old = os.environ.pop("SYMMETRIC", None)
    try:
        if symmetric:
            os.environ["SYMMETRIC"] = "1"
        bed.up()
    finally:
        os.environ.pop("SYMMETRIC", None)
        if old is not None:
            os.environ["SYMMETRIC"] = old
    return bed


@pytest.fixture(scope="module")
def we() -> Iterator[Testbed]:
    require_netns()
    bed = _we_up()
    try:
        yield bed
    finally:
        bed.down()


@pytest.fixture(scope="module")
def we_symmetric() -> Iterator[Testbed]:
    require_netns()
    bed = _we_up(symmetric=True)
    try:
        yield bed
    finally:
        bed.down()


def quick_ping(bed: Testbed, box: str, ip: str) -> bool:
    """One ICMP echo with a 0.3 s wait: plenty inside the testbed (answers
    take well under a millisecond), and quick for checks expecting none."""
    res = bed.run(box, "ping", "-n", "-q", "-c1", "-W0.3", ip, timeout=10)
    return res.returncode == 0


def _wait_log(log: Path, text: str, timeout: float = 10) -> bool:
    return wait_until(lambda: log.exists() and text in log.read_text(), timeout=timeout)


def udp_sources(
    bed: Testbed,
    rx: tuple[str, str, list[int]],
    tx: tuple[str, str, int],
    tmp: Path,
    count: int = 3,
) -> dict[int, set[str]]:
    """Send ``count`` rounds of datagrams from one socket (box, ip, port of
    ``tx``) to each port of ``rx`` (box, ip, ports); return, per receiving
    port, the set of "IP:PORT" sources seen there."""
    rx_box, rx_ip, ports = rx
    tx_box, tx_ip, tx_port = tx
    log = tmp / f"sink-{rx_box}-{ports[0]}.log"
    expect = count * len(ports)
    sink = bed.spawn(
        rx_box, [sys.executable, "-c", UDP_SINK, rx_ip, "5", str(expect), *map(str, ports)], log
    )
    try:
        assert _wait_log(log, "ready"), log.read_text()
        dests = [f"{rx_ip}:{p}" for p in ports]
        bed.run(
            tx_box,
            *[sys.executable, "-c", UDP_SEND, tx_ip, str(tx_port), str(count), *dests],
            timeout=20,
            check=True,
        )
        assert _wait_log(log, "done"), log.read_text()
    finally:
        bed.stop(sink)
    seen: dict[int, set[str]] = {p: set() for p in ports}
    for line in log.read_text().splitlines():
        if " from " in line:
            port, _, src, _ = line.split()
            seen[int(port)].add(src)
    return seen


def hole_punch(
    bed: Testbed,
    first: tuple[str, str, str],
    second: tuple[str, str, str],
    port: int,
    tmp: Path,
    total: float = 5,
) -> tuple[list[str], list[str]]:
    """Simultaneous open through two NATs: ``first`` (box, inside ip, the
    other's NAT outside ip) starts sending to ``second``'s outside endpoint
    (its probes die at the second NAT), 0.5 s later ``second`` sends to
    ``first``'s.  Both use ``port`` inside and expect it kept outside.
    Returns the lines each side received."""
    a_box, a_ip, a_target = first
    b_box, b_ip, b_target = second
    log = tmp / f"punch-{a_box}.log"
    proc = bed.spawn(
        a_box,
        udp_tool(a_ip, port, dest=a_target, dport=port, echo=True, idle=1, total=total),
        log,
    )
    try:
        assert _wait_log(log, "ready"), log.read_text()
        time.sleep(0.5)
        res = bed.run(
            b_box,
            *udp_tool(b_ip, port, dest=b_target, dport=port, idle=0.5, total=total - 1),
            timeout=total + 10,
        )
        assert res.returncode == 0, res.stderr
        assert _wait_log(log, "done", timeout=total + 5), log.read_text()
    finally:
        bed.stop(proc)
    b_got = [ln for ln in res.stdout.splitlines() if ln.startswith("from ")]
    return received(log), b_got


def test_we_namespaces_exist(we: Testbed) -> None:
    assert we.namespaces() == sorted(we.ns(b) for b in WE_BOXES)


def test_we_nodes_reach_beta(we: Testbed) -> None:
    for box in ("alpha", "charlie", "delta"):
        assert we.ping(box, BETA), box


def test_we_charlie_and_delta_share_the_lan(we: Testbed, tmp_path: Path) -> None:
    assert we.ping("charlie", DELTA_LAN)
    assert we.ping("delta", CHARLIE_LAN)
    # on the LAN they see each other's own address, not the router's
    seen = udp_sources(we, ("delta", DELTA_LAN, [40300]), ("charlie", CHARLIE_LAN, 40301), tmp_path)
    assert seen[40300] == {f"{CHARLIE_LAN}:40301"}


def test_we_no_unsolicited_inbound(we: Testbed) -> None:
    routes = [("192.168.2.0/24", FW_WAN), ("192.168.1.0/24", HOME_WAN)]
    for net, via in routes:
        we.run("beta", "ip", "route", "add", net, "via", via, check=True)
    try:
        for target in (ALPHA, CHARLIE_LAN, DELTA_LAN):
            assert not quick_ping(we, "beta", target), target
        # alpha's LAN and the home LAN are separate worlds
        assert not quick_ping(we, "alpha", CHARLIE_LAN)
    finally:
        for net, _ in routes:
            we.run("beta", "ip", "route", "del", net, check=True)
    # the NAT boxes still answer pings on their outside address
    assert we.ping("beta", FW_WAN) and we.ping("beta", HOME_WAN)


def test_we_udp_from_alpha_arrives_from_fw_wan(we: Testbed, tmp_path: Path) -> None:
    """Endpoint-independent mapping: one inside socket talking to two
    destinations is seen from one outside endpoint (masquerade keeps the
    inside port when it is free)."""
    seen = udp_sources(we, ("beta", BETA, [40200, 40201]), ("alpha", ALPHA, 40202), tmp_path)
    assert seen == {40200: {f"{FW_WAN}:40202"}, 40201: {f"{FW_WAN}:40202"}}
    seen = udp_sources(we, ("beta", BETA, [40210]), ("delta", DELTA_LAN, 40212), tmp_path)
    assert seen == {40210: {f"{HOME_WAN}:40212"}}


def test_we_hole_punch_between_two_nats(we: Testbed, tmp_path: Path) -> None:
    """charlie sends to alpha's outside endpoint first (dropped by the fw,
    leaving no conntrack entry there), then alpha sends to charlie's: both
    get through, from the inside ports."""
    charlie_got, alpha_got = hole_punch(
        we, ("charlie", CHARLIE_LAN, FW_WAN), ("alpha", ALPHA, HOME_WAN), 40400, tmp_path
    )
    assert f"from {FW_WAN}:40400 ping" in charlie_got, charlie_got
    assert f"from {HOME_WAN}:40400 pong" in alpha_got, alpha_got
    assert all(ln.startswith(f"from {HOME_WAN}:40400 ") for ln in alpha_got), alpha_got


def test_we_symmetric_nat_randomises_ports(we_symmetric: Testbed, tmp_path: Path) -> None:
    seen = udp_sources(
        we_symmetric, ("beta", BETA, [40200, 40201]), ("alpha", ALPHA, 40202), tmp_path
    )
    (src1,), (src2,) = seen[40200], seen[40201]  # one mapping per destination
    assert src1.split(":")[0] == src2.split(":")[0] == FW_WAN
    assert src1 != src2, "symmetric NAT must map each destination to its own port"
    # charlie's (normal) home router still keeps the port
    seen = udp_sources(
        we_symmetric, ("beta", BETA, [40210, 40211]), ("charlie", CHARLIE_LAN, 40212), tmp_path
    )
    assert seen == {40210: {f"{HOME_WAN}:40212"}, 40211: {f"{HOME_WAN}:40212"}}


def test_we_symmetric_nat_defeats_hole_punch(we_symmetric: Testbed, tmp_path: Path) -> None:
    charlie_got, alpha_got = hole_punch(
        we_symmetric,
        ("charlie", CHARLIE_LAN, FW_WAN),
        ("alpha", ALPHA, HOME_WAN),
        40400,
        tmp_path,
        total=2,
    )
    assert charlie_got == [] and alpha_got == []


def test_we_roam_and_down(tmp_path: Path) -> None:
    require_netns()
    bed = _we_up()
    try:
        # a process and an interface in delta survive the move
        sleeper = bed.spawn("delta", ["sleep", "60"], tmp_path / "sleep.log")
        bed.run("delta", "ip", "link", "add", "keep0", "type", "bridge", check=True)
        t0 = time.monotonic()
        res = subprocess.run(
            ["bash", bed.script, "roam", bed.prefix], capture_output=True, text=True, timeout=30
        )
        t_roam = time.monotonic() - t0
        assert res.returncode == 0, res.stdout + res.stderr
        assert sleeper.poll() is None and sleeper.pid in bed.pids("delta")
        assert bed.run("delta", "ip", "link", "show", "keep0").returncode == 0
        assert bed.namespaces() == sorted(bed.ns(b) for b in (*WE_BOXES, "cafe"))
        addrs = bed.run("delta", "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
        assert f"{DELTA_CAFE}/24" in addrs and DELTA_LAN not in addrs
        assert bed.ping("delta", BETA)
        seen = udp_sources(bed, ("beta", BETA, [40500]), ("delta", DELTA_CAFE, 40501), tmp_path)
        assert seen == {40500: {f"{CAFE_WAN}:40501"}}
        # delta has left the home LAN, and the cafe lets nothing in either
        assert not quick_ping(bed, "charlie", DELTA_LAN)
        assert not quick_ping(bed, "charlie", DELTA_CAFE)
        # roaming twice is refused
        res = subprocess.run(
            ["bash", bed.script, "roam", bed.prefix], capture_output=True, text=True, timeout=30
        )
        assert res.returncode != 0
        print(f"roam took {t_roam:.2f}s")
    finally:
        bed.down()
    assert bed.namespaces() == []
    assert not Path(f"/run/wgnm-testbed/{bed.prefix}").exists()


# -- fault injection (working_example.sh lan-cut/lan-heal, partition/heal,
# attacker, readdress, move-beta, hosts) --------------------------------------

EVIL = "198.51.100.66"
DELTA_NEW = "192.168.1.33"
BETA_NEW = "198.51.100.11"
ETC_NETNS = Path("/etc/netns")

# Resolves NAME COUNT times, 20 per second, printing "I ADDRESS" (or "I error").
RESOLVE_LOOP = r"""
import socket, sys, time
name, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    try:
        print(i, socket.gethostbyname(name), flush=True)
    except OSError as e:
        print(i, "error", e, flush=True)
    time.sleep(0.05)
"""

# Reads /etc/hosts COUNT times, 20 per second, printing "I has" or "I lacks"
# (NAME in it or not); no name lookups, so no DNS fallback.
HOSTS_WATCH = r"""
import sys, time
name, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    with open("/etc/hosts") as f:
        print(i, "has" if name in f.read() else "lacks", flush=True)
    time.sleep(0.05)
"""


def we_cmd(bed: Testbed, cmd: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``ns/working_example.sh CMD PREFIX ARGS...`` for ``bed``."""
    return subprocess.run(
        ["bash", bed.script, cmd, bed.prefix, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def fault(bed: Testbed, cmd: str, *args: str) -> None:
    """Run a fault command; it must succeed and say what it did."""
    res = we_cmd(bed, cmd, *args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stderr.startswith("[testbed] "), res.stderr


def addrs(bed: Testbed, box: str) -> str:
    return bed.run(box, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout


def default_route(bed: Testbed, box: str) -> str:
    return bed.run(box, "ip", "-4", "route", "show", "default").stdout


def log_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_we_faults_refuse_misuse() -> None:
    """Without the testbed up (or with wrong arguments) every command fails
    with an error message and changes nothing."""
    bed = Testbed(script_path("working_example"), unique_prefix("nx"))
    for cmd, *args in (
        ("lan-cut",),
        ("lan-heal",),
        ("partition",),
        ("heal",),
        ("attacker",),
        ("readdress",),
        ("move-beta", BETA_NEW),
        ("hosts", "charlie", f"{BETA} beta.test"),
    ):
        res = we_cmd(bed, cmd, *args)
        assert res.returncode != 0 and "[testbed] error: " in res.stderr, (cmd, res)
        res = subprocess.run(
            ["bash", bed.script, cmd], capture_output=True, text=True, timeout=30, check=False
        )
        assert res.returncode != 0 and "usage: " in res.stderr, (cmd, res)
    assert not (ETC_NETNS / bed.ns("charlie")).exists()
    assert not Path(f"/run/wgnm-testbed/{bed.prefix}").exists()


def test_we_lan_cut_and_heal(we: Testbed) -> None:
    try:
        fault(we, "lan-cut")
        fault(we, "lan-cut")  # idempotent
        we.run("delta", "ip", "neigh", "flush", "to", CHARLIE_LAN, "dev", "eth0")
        assert not quick_ping(we, "delta", CHARLIE_LAN)
        assert not quick_ping(we, "charlie", DELTA_LAN)
        # ARP is not IPv4: delta's ping still resolved charlie's MAC address
        neigh = we.run("delta", "ip", "neigh", "show", CHARLIE_LAN, "dev", "eth0").stdout
        assert "lladdr" in neigh, neigh
        # both still reach the internet through the router
        assert we.ping("charlie", BETA) and we.ping("delta", BETA)
    finally:
        fault(we, "lan-heal")
    fault(we, "lan-heal")  # no table left: still fine
    assert "tb_lan_cut" not in we.run("router", "nft", "list", "tables").stdout
    assert wait_until(lambda: quick_ping(we, "charlie", DELTA_LAN), timeout=5)
    assert we.ping("delta", CHARLIE_LAN)


def test_we_partition_and_heal(we: Testbed) -> None:
    try:
        fault(we, "partition")
        fault(we, "partition")  # idempotent
        assert not quick_ping(we, "charlie", BETA)
        assert not quick_ping(we, "beta", FW_WAN)
        # no carrier change, addresses stay
        link = we.run("beta", "ip", "-o", "link", "show", "eth0").stdout
        assert "LOWER_UP" in link and "state UP" in link, link
        assert f"{BETA}/24" in addrs(we, "beta")
    finally:
        fault(we, "heal")
    fault(we, "heal")  # no table left: still fine
    # neighbour entries that failed during the partition take a moment
    assert wait_until(lambda: quick_ping(we, "charlie", BETA), timeout=5)
    assert wait_until(lambda: quick_ping(we, "beta", FW_WAN), timeout=5)


def test_we_attacker_readdress_move_beta_hosts_and_down(tmp_path: Path) -> None:
    require_netns()
    etc_netns_existed = ETC_NETNS.exists()
    bed = _we_up()
    try:
        # started before delta has a hosts file: keeps the host's /etc/hosts
        early_log = tmp_path / "early.log"
        early = bed.spawn(
            "delta", [sys.executable, "-c", HOSTS_WATCH, "beta.test", "300"], early_log
        )
        assert wait_until(lambda: log_lines(early_log), timeout=10)

        # hosts: written in place, so a running process sees every change
        fault(bed, "hosts", "charlie", f"{BETA} beta.test")
        hosts = ETC_NETNS / bed.ns("charlie") / "hosts"
        assert hosts.read_text() == f"127.0.0.1\tlocalhost\n{BETA} beta.test\n"
        inode = hosts.stat().st_ino
        res_log = tmp_path / "resolve.log"
        resolver = bed.spawn(
            "charlie", [sys.executable, "-c", RESOLVE_LOOP, "beta.test", "300"], res_log
        )
        assert wait_until(lambda: f"0 {BETA}" in log_lines(res_log), timeout=10), res_log

        # attacker: a NAT-less box on the internet
        fault(bed, "attacker")
        fault(bed, "attacker")  # idempotent
        assert bed.namespaces() == sorted(bed.ns(b) for b in (*WE_BOXES, "evil"))
        assert f"{EVIL}/24" in addrs(bed, "evil")
        assert "via 198.51.100.254 dev eth0" in default_route(bed, "evil")
        assert bed.ping("evil", BETA)

        # move-beta: the old address is gone, the new one reachable
        fault(bed, "move-beta", BETA_NEW)
        fault(bed, "move-beta", BETA_NEW)  # idempotent
        assert f"{BETA_NEW}/24" in addrs(bed, "beta") and f"{BETA}/" not in addrs(bed, "beta")
        assert "via 198.51.100.254 dev eth0" in default_route(bed, "beta")
        assert bed.ping("charlie", BETA_NEW) and bed.ping("evil", BETA_NEW)
        assert not quick_ping(bed, "charlie", BETA)
        for taken in (EVIL, HOME_WAN, "198.51.100.254", "10.0.0.1"):
            assert we_cmd(bed, "move-beta", taken).returncode != 0, taken

        # the resolver in charlie follows the new hosts file
        fault(bed, "hosts", "charlie", f"{BETA_NEW} beta.test")
        assert wait_until(lambda: any(ln.endswith(f" {BETA_NEW}") for ln in log_lines(res_log)), 10)
        assert hosts.stat().st_ino == inode
        # ... while delta's early process never sees its later hosts file,
        # and a process started afterwards does
        fault(bed, "hosts", "delta", f"{BETA_NEW} beta.test")
        assert "beta.test" in bed.run("delta", "cat", "/etc/hosts").stdout
        seen = len(log_lines(early_log))
        assert wait_until(lambda: len(log_lines(early_log)) > seen + 2, timeout=10)
        assert all(ln.endswith(" lacks") for ln in log_lines(early_log)), early_log.read_text()
        for bad in ("nobox", "../x"):
            assert we_cmd(bed, "hosts", bad, "1.2.3.4 x").returncode != 0
            assert not (ETC_NETNS / f"{bed.prefix}-{bad}").exists()
        bed.stop(early)
        bed.stop(resolver)

        # readdress: delta's new lease on the home LAN
        fault(bed, "readdress")
        fault(bed, "readdress")  # idempotent
        assert f"{DELTA_NEW}/24" in addrs(bed, "delta")
        assert f"{DELTA_LAN}/" not in addrs(bed, "delta")
        assert "via 192.168.1.1 dev eth0" in default_route(bed, "delta")
        assert bed.ping("charlie", DELTA_NEW) and bed.ping("delta", BETA_NEW)
        assert not quick_ping(bed, "charlie", DELTA_LAN)
        # lan-cut covers delta's new address too
        fault(bed, "lan-cut")
        assert not quick_ping(bed, "charlie", DELTA_NEW)
        fault(bed, "lan-heal")
        assert bed.ping("charlie", DELTA_NEW)
    finally:
        bed.down()
    assert bed.namespaces() == []
    assert not list(ETC_NETNS.glob(f"{bed.prefix}-*"))
    assert not Path(f"/run/wgnm-testbed/{bed.prefix}").exists()
    if not etc_netns_existed:
        assert not ETC_NETNS.exists()


def test_we_readdress_refused_after_roam() -> None:
    require_netns()
    bed = _we_up()
    try:
        fault(bed, "roam")
        res = we_cmd(bed, "readdress")
        assert res.returncode != 0 and "roamed" in res.stderr, res.stderr
        assert f"{DELTA_CAFE}/24" in addrs(bed, "delta")
        fault(bed, "lan-cut")  # harmless after a roam
        assert bed.ping("delta", BETA)
    finally:
        bed.down()
    assert bed.namespaces() == []


# ---------------------------------------------------------------------------
# ns/two_routers.sh: beta (static, public); charlie behind "outer"; delta
# behind "inner", which itself sits on outer's LAN (double NAT).

OUTER_WAN = "198.51.100.3"
INNER_WAN = "192.168.1.10"
DELTA_INNER = "192.168.5.2"
TR_BOXES = ("inet", "beta", "outer", "charlie", "inner", "delta")


@pytest.fixture(scope="module")
def tr() -> Iterator[Testbed]:
    require_netns()
    with Testbed(script_path("two_routers"), unique_prefix("tr")) as bed:
        yield bed


def test_tr_namespaces_exist(tr: Testbed) -> None:
    assert tr.namespaces() == sorted(tr.ns(b) for b in TR_BOXES)


def test_tr_nodes_reach_beta_through_the_nats(tr: Testbed, tmp_path: Path) -> None:
    assert tr.ping("charlie", BETA)
    assert tr.ping("delta", BETA)
    assert tr.ping("delta", CHARLIE_LAN)  # outward, through the inner NAT
    seen = udp_sources(tr, ("beta", BETA, [40600]), ("delta", DELTA_INNER, 40601), tmp_path)
    assert seen == {40600: {f"{OUTER_WAN}:40601"}}  # NATed twice, port kept
    seen = udp_sources(
        tr, ("charlie", CHARLIE_LAN, [40610]), ("delta", DELTA_INNER, 40611), tmp_path
    )
    assert seen == {40610: {f"{INNER_WAN}:40611"}}


def test_tr_no_unsolicited_inbound(tr: Testbed) -> None:
    assert tr.ping("charlie", INNER_WAN)  # the inner router is on charlie's LAN
    tr.run("beta", "ip", "route", "add", "192.168.0.0/16", "via", OUTER_WAN, check=True)
    tr.run("charlie", "ip", "route", "add", "192.168.5.0/24", "via", INNER_WAN, check=True)
    try:
        assert not quick_ping(tr, "beta", CHARLIE_LAN)
        assert not quick_ping(tr, "beta", DELTA_INNER)
        assert not quick_ping(tr, "charlie", DELTA_INNER)
    finally:
        tr.run("beta", "ip", "route", "del", "192.168.0.0/16", check=True)
        tr.run("charlie", "ip", "route", "del", "192.168.5.0/24", check=True)


def test_tr_down_removes_everything(tmp_path: Path) -> None:
    require_netns()
    bed = Testbed(script_path("two_routers"), unique_prefix("tr"))
    try:
        bed.up()
        assert len(bed.namespaces()) == len(TR_BOXES)
        bed.spawn("delta", ["sleep", "60"], tmp_path / "sleep.log")
    finally:
        bed.down()
    assert bed.namespaces() == []
    assert not Path(f"/run/wgnm-testbed/{bed.prefix}").exists()


# ---------------------------------------------------------------------------
# ns/three_lans.sh: statics s1 and s2; three LANs of eight (n3..n26), each
# behind its own NAT router r0..r2 (scripts/bench_testbed.py).

TL_BOXES = ("inet", "s1", "s2", "r0", "r1", "r2", *(f"n{k}" for k in range(3, 27)))


def test_three_lans_nodes_reach_the_statics_and_their_own_lan_only(tmp_path: Path) -> None:
    require_netns()
    with Testbed(script_path("three_lans"), unique_prefix("tl")) as bed:
        assert bed.namespaces() == sorted(bed.ns(b) for b in TL_BOXES)
        assert bed.ping("n3", "198.51.100.2") and bed.ping("n26", "198.51.100.1")
        assert bed.ping("n3", "192.168.1.9")  # n10: the same LAN
        seen = udp_sources(
            bed, ("s1", "198.51.100.1", [40700]), ("n19", "192.168.3.2", 40701), tmp_path
        )
        assert seen == {40700: {"198.51.100.12:40701"}}  # through r2's NAT, port kept
        bed.run("n3", "ip", "route", "add", "192.168.2.0/24", "via", "192.168.1.1", check=True)
        assert not quick_ping(bed, "n3", "192.168.2.2")  # n11, behind another NAT
    assert bed.namespaces() == []
