"""WgInterface and the route adapter against real interfaces, in network
namespaces this test creates (``wgnmt-<pid>-<n>-<box>``) and always deletes.

Each box runs an *agent*: a Python process inside the box's network namespace
and a private mount namespace (wireguard-go keeps its UAPI socket in
/var/run/wireguard/<if>.sock, a path shared by all network namespaces, and
every box uses ``wg0``; a tmpfs there per box keeps them apart).  The test
sends the agent JSON requests ("create", "apply_peers", ...), which it runs
with the real adapters.  Pings run in the namespaces with ``ip netns exec``.

Needs root and wireguard-go/wg/ip/ping/unshare: skipped locally without them,
but a failure in CI (env CI set), where they must be present.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import procfs
from tests.netns import REPO_ROOT, require_root, require_tools
from tests.waits import wait_until

pytestmark = pytest.mark.netns

TOOLS = ("ip", "wg", "wireguard-go", "ping", "unshare")
_counter = itertools.count(1)


@pytest.fixture(autouse=True)
def _preconditions() -> None:
    # Skips locally without root or tools; fails loudly in CI.
    require_root()
    require_tools(*TOOLS)


AGENT = r"""
import base64, json, logging, sys
from ipaddress import IPv4Address, IPv4Network
import trio
from wg_netmanager.backends import start_early
from wg_netmanager.forwarding import HostForwarding, plan_for
from wg_netmanager.model import Route, WgPeer
from wg_netmanager.proc import CommandError, run
from wg_netmanager.routes import RouteTable
from wg_netmanager.wgdev import WgInterface

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                    format="%(asctime)s agent %(name)s %(message)s")
dev = routes = None

def peer(p):
    ep = tuple(p["endpoint"]) if p.get("endpoint") else None
    ips = tuple(sorted(IPv4Network(n) for n in p["ips"]))
    return WgPeer(p["key"], ips, ep, p.get("keepalive", 0))

def route(r):
    return Route(IPv4Address(r[0]), IPv4Address(r[1]) if r[1] else None)

async def handle(req):
    global dev, routes
    op = req["op"]
    if op == "new":
        early = start_early(req["name"]) if req.get("early") else None
        dev = WgInterface(req["name"], req.get("existing", False), early=early)
        routes = RouteTable()
    elif op == "abandon_early":  # started, and never taken over (the daemon died first)
        start_early(req["name"]).abandon()
    elif op == "create":
        return await dev.create(req.get("adopt_key"), renew_kept=req.get("renew_kept", True))
    elif op == "configure":
        await dev.configure(base64.b64decode(req["key"]), req["port"])
    elif op == "set_address":
        await dev.set_address(IPv4Address(req["ip"]), req["prefixlen"])
    elif op == "enable_forwarding":  # as a static node (the restore file on the box's tmpfs)
        forwarding = HostForwarding("/var/run/wireguard/wgnm/" + dev.name + ".restore")
        subnet = IPv4Network(req.get("subnet", "10.77.1.0/24"))
        plan = plan_for(dev.name, subnet, subnet[1], is_static=True, gateways=(), exit_node=None)
        await forwarding.apply(plan)
    elif op == "set_fwmark":
        await dev.set_fwmark(req["mark"])
    elif op == "apply_peers":
        desired = {p["key"]: peer(p) for p in req["peers"]}
        await dev.apply_peers(desired, await dev.read_peers())
    elif op == "read_peers":
        return {k: {"ips": [str(n) for n in r.allowed_ips],
                    "endpoint": list(r.endpoint) if r.endpoint else None,
                    "keepalive": r.persistent_keepalive,
                    "handshake_age": r.handshake_age}
                for k, r in (await dev.read_peers()).items()}
    elif op == "apply_routes":
        name = dev.name
        await routes.apply(name, {route(r) for r in req["routes"]}, await routes.read(name))
    elif op == "read_routes":
        return sorted([str(r.dest), str(r.via) if r.via else None]
                      for r in await routes.read(dev.name))
    elif op == "destroy":
        await dev.destroy()
    elif op == "exists":
        return await dev.exists()
    elif op == "run":
        return await run(req["argv"])
    else:
        raise ValueError(op)

for line in sys.stdin:
    req = json.loads(line)
    try:
        reply = {"ok": trio.run(handle, req)}
    except CommandError as exc:
        reply = {"err": str(exc)}
    print(json.dumps(reply), flush=True)
"""

# Runs as: ip netns exec NS unshare -m --propagation private sh -c SETUP python -c AGENT
SETUP = (
    "mkdir -p /var/run/wireguard && mount -t tmpfs -o mode=0700 none /var/run/wireguard"
    ' && exec "$0" -c "$1"'
)


class AgentError(Exception):
    pass


class Agent:
    def __init__(self, ns: str, log_path: Path) -> None:
        self.ns = ns
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in close())
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("LOG_LEVEL", None)
        self.proc = subprocess.Popen(
            [
                *("ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private"),
                *("sh", "-c", SETUP, sys.executable, AGENT),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=REPO_ROOT,
        )

    def call(self, op: str, timeout: float = 15.0, **kwargs: Any) -> Any:
        """Send a request; return its result or raise AgentError (CommandError text)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **kwargs}).encode() + b"\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"agent in {self.ns}: no answer to {op} in {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"agent in {self.ns} died:\n{self.log()}")
        reply = json.loads(line)
        if "err" in reply:
            raise AgentError(reply["err"])
        return reply["ok"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=3)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def sh(*argv: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr}")
    return res


def netns_pids(ns: str) -> list[int]:
    res = sh("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in res.stdout.split()]


def live_wireguard_go(ns: str) -> list[int]:
    """PIDs of running (not zombie) wireguard-go processes in ``ns``."""
    found = []
    for pid in netns_pids(ns):
        stat = procfs.stat(pid)
        if stat is not None and stat.comm == "wireguard-go" and stat.state not in "ZX":
            found.append(pid)
    return found


class VethLab:
    """Namespaces joined by veths, with one agent per namespace."""

    def __init__(self, tmp_path: Path) -> None:
        self.prefix = f"wgnmt-{os.getpid()}-{next(_counter)}-"
        self.tmp_path = tmp_path
        self.namespaces: list[str] = []
        self.agents: dict[str, Agent] = {}

    def ns(self, box: str) -> str:
        return self.prefix + box

    def add_box(self, box: str) -> Agent:
        ns = self.ns(box)
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        agent = Agent(ns, self.tmp_path / f"agent-{box}.log")
        self.agents[box] = agent
        return agent

    def link(self, a: str, a_ip: str, b: str, b_ip: str) -> None:
        """A veth between boxes a and b (created inside the namespaces)."""
        ifa, ifb = f"v{a}{b}", f"v{b}{a}"
        sh("ip", "-n", self.ns(a), "link", "add", ifa, "type", "veth", "peer", "name", ifb)
        sh("ip", "-n", self.ns(a), "link", "set", ifb, "netns", self.ns(b))
        sh("ip", "-n", self.ns(a), "link", "set", ifa, "up")
        sh("ip", "-n", self.ns(a), "addr", "add", a_ip, "dev", ifa)
        sh("ip", "-n", self.ns(b), "addr", "add", b_ip, "dev", ifb)
        sh("ip", "-n", self.ns(b), "link", "set", ifb, "up")

    def ping(self, box: str, address: str, count: int = 1, wait: float = 1.0) -> bool:
        res = sh(
            *("ip", "netns", "exec", self.ns(box), "ping", "-n", "-q"),
            *("-c", str(count), "-i", "0.2", "-W", str(wait), address),
            check=False,
        )
        return res.returncode == 0

    def teardown(self) -> None:
        for agent in self.agents.values():
            try:
                agent.close()
            except Exception as exc:  # keep cleaning up
                print(f"closing agent in {agent.ns}: {exc}")
        for ns in self.namespaces:
            # only processes inside our own namespaces: the agents' children
            # and the wireguard-go daemons they started
            for pid in netns_pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()


@pytest.fixture
def veth_lab(tmp_path: Path) -> Iterator[VethLab]:
    lab = VethLab(tmp_path)
    try:
        yield lab
    finally:
        lab.teardown()
        for path in sorted(tmp_path.glob("agent-*.log")):
            print(f"----- {path.name}\n{path.read_text(errors='replace')[-20000:]}")


def keypair() -> tuple[str, str]:
    """(private key b64, public key b64)"""
    from nacl.public import PrivateKey

    sk = PrivateKey.generate()
    return (
        base64.b64encode(bytes(sk)).decode(),
        base64.b64encode(bytes(sk.public_key)).decode(),
    )


def bring_up(agent: Agent, priv: str, wg_ip: str, name: str = "wg0") -> str:
    agent.call("new", name=name)
    backend = agent.call("create")
    agent.call("configure", key=priv, port=51820)
    agent.call("set_address", ip=wg_ip, prefixlen=24)
    return str(backend)


def test_two_boxes_tunnel_reconcile_destroy(veth_lab: VethLab) -> None:
    a, b = veth_lab.add_box("a"), veth_lab.add_box("b")
    veth_lab.link("a", "198.51.100.1/24", "b", "198.51.100.2/24")
    (a_priv, a_pub), (b_priv, b_pub) = keypair(), keypair()
    t0 = time.monotonic()
    assert bring_up(a, a_priv, "10.77.0.1") in ("kernel", "wireguard-go", "boringtun")
    create_s = time.monotonic() - t0
    bring_up(b, b_priv, "10.77.0.2")
    print(f"create+configure+address: {create_s * 1000:.0f} ms")

    a.call("apply_peers", peers=[{"key": b_pub, "ips": ["10.77.0.2/32"]}])
    b.call(
        "apply_peers",
        peers=[{"key": a_pub, "ips": ["10.77.0.1/32"], "endpoint": ["198.51.100.1", 51820]}],
    )
    a.call("apply_routes", routes=[["10.77.0.2", None]])
    b.call("apply_routes", routes=[["10.77.0.1", None]])
    assert a.call("read_routes") == [["10.77.0.2", None]]

    assert veth_lab.ping("b", "10.77.0.1", wait=2), "b -> a over the tunnel"
    assert veth_lab.ping("a", "10.77.0.2"), "a -> b over the tunnel"
    peers = a.call("read_peers")
    assert peers[b_pub]["endpoint"] == ["198.51.100.2", 51820]  # learned by roaming
    assert peers[b_pub]["handshake_age"] is not None
    assert peers[b_pub]["handshake_age"] < 10

    # reconcile a changed set: b gets a second address and a keepalive, a
    # third peer appears, then disappears again
    _, c_pub = keypair()
    desired = [
        {"key": b_pub, "ips": ["10.77.0.2/32", "10.77.0.3/32"], "keepalive": 25},
        {"key": c_pub, "ips": ["10.77.0.9/32"], "endpoint": ["198.51.100.9", 51820]},
    ]
    a.call("apply_peers", peers=desired)
    peers = a.call("read_peers")
    assert set(peers) == {b_pub, c_pub}
    assert peers[b_pub]["ips"] == ["10.77.0.2/32", "10.77.0.3/32"]
    assert peers[b_pub]["keepalive"] == 25
    assert peers[b_pub]["endpoint"] == ["198.51.100.2", 51820]  # endpoint None: kept
    assert peers[c_pub] == {
        "ips": ["10.77.0.9/32"],
        "endpoint": ["198.51.100.9", 51820],
        "keepalive": 0,
        "handshake_age": None,
    }
    # 10.77.0.3 moves from b to c, b loses its keepalive
    a.call(
        "apply_peers",
        peers=[
            {"key": b_pub, "ips": ["10.77.0.2/32"]},
            {"key": c_pub, "ips": ["10.77.0.3/32", "10.77.0.9/32"]},
        ],
    )
    peers = a.call("read_peers")
    assert peers[b_pub]["ips"] == ["10.77.0.2/32"] and peers[b_pub]["keepalive"] == 0
    assert peers[c_pub]["ips"] == ["10.77.0.3/32", "10.77.0.9/32"]
    a.call("apply_peers", peers=[{"key": b_pub, "ips": ["10.77.0.2/32"]}])
    assert set(a.call("read_peers")) == {b_pub}
    dump = a.call("run", argv=["wg", "show", "wg0", "dump"]).splitlines()
    assert len(dump) == 2 and dump[1].startswith(b_pub)
    assert veth_lab.ping("a", "10.77.0.2"), "still up after reconciling"

    # create() again keeps a stale interface with the key it is given (a
    # crashed run's, kept by this one): the same link, its peers still there
    index = a.call("run", argv=["cat", "/sys/class/net/wg0/ifindex"])
    a.call("new", name="wg0")
    assert a.call("create", adopt_key=a_pub) in ("kernel", "userspace")
    assert a.call("run", argv=["cat", "/sys/class/net/wg0/ifindex"]) == index
    assert set(a.call("read_peers")) == {b_pub}
    assert a.call("read_peers")[b_pub]["handshake_age"] is not None
    assert veth_lab.ping("a", "10.77.0.2"), "the kept interface carries traffic"
    # The first setting of a kept peer renews its session (the peer may have
    # dropped the crashed run's); the next ones leave it alone.
    a.call("apply_peers", peers=[{"key": b_pub, "ips": ["10.77.0.2/32"]}])
    assert a.call("read_peers")[b_pub]["handshake_age"] is None, "session renewed"
    assert veth_lab.ping("a", "10.77.0.2"), "a new handshake, traffic again"
    assert a.call("read_peers")[b_pub]["handshake_age"] is not None
    a.call("apply_peers", peers=[{"key": b_pub, "ips": ["10.77.0.2/32"]}])
    assert a.call("read_peers")[b_pub]["handshake_age"] is not None, "renewed once only"
    # A static's run leaves its kept peers' sessions as they are (its nodes renew them).
    a.call("new", name="wg0")
    assert a.call("create", adopt_key=a_pub, renew_kept=False) in ("kernel", "userspace")
    a.call("apply_peers", peers=[{"key": b_pub, "ips": ["10.77.0.2/32"]}])
    assert a.call("read_peers")[b_pub]["handshake_age"] is not None, "not renewed"

    # routes: gateway routes, gateway change, removal; foreign routes untouched
    a.call("run", argv=["ip", "route", "add", "10.77.0.50/32", "dev", "wg0", "proto", "static"])
    a.call("apply_routes", routes=[["10.77.0.2", None], ["10.77.0.3", "10.77.0.2"]])
    assert a.call("read_routes") == [["10.77.0.2", None], ["10.77.0.3", "10.77.0.2"]]
    a.call("apply_routes", routes=[["10.77.0.2", None], ["10.77.0.3", None]])
    assert a.call("read_routes") == [["10.77.0.2", None], ["10.77.0.3", None]]
    a.call("apply_routes", routes=[["10.77.0.2", None]])
    assert a.call("read_routes") == [["10.77.0.2", None]]
    shown = a.call("run", argv=["ip", "-4", "route", "show", "dev", "wg0"])
    assert "10.77.0.50 proto static" in shown

    # address change leaves exactly one address
    a.call("set_address", ip="10.77.0.11", prefixlen=24)
    addrs = a.call("run", argv=["ip", "-4", "-o", "addr", "show", "dev", "wg0"])
    assert addrs.count(" inet ") == 1 and "10.77.0.11/24" in addrs

    # create() without that key replaces a stale interface
    assert bring_up(a, a_priv, "10.77.0.1") in ("kernel", "wireguard-go", "boringtun")
    assert a.call("run", argv=["cat", "/sys/class/net/wg0/ifindex"]) != index
    assert a.call("read_peers") == {}

    # destroy: no interface, no daemon left; idempotent
    a.call("destroy")
    assert a.call("exists") is False
    assert wait_until(lambda: not live_wireguard_go(veth_lab.ns("a")), 3.0, interval=0.05), (
        "wireguard-go left"
    )
    a.call("destroy")
    assert live_wireguard_go(veth_lab.ns("b")), "b's daemon is unaffected"

    # the private keys never reached a command line or a log line: a
    # userspace daemon gets them over its socket, the kernel through wg's stdin
    hex_keys = [base64.b64decode(k).hex() for k in (a_priv, b_priv)]
    for agent in (a, b):
        text = agent.log()
        assert "private-key /dev/stdin" in text or "wg0.sock set=1" in text
        assert a_priv not in text and b_priv not in text
        assert not any(k in text for k in hex_keys)


def test_a_peer_set_after_one_whose_keepalive_turns_on_still_starts_its_handshake(
    veth_lab: VethLab,
) -> None:
    """wireguard-go carries "keepalive turned on" from one peer of a request to
    the next: a new peer without an endpoint (a punch's, being installed) got a
    keepalive it could not send, and the initiation due once its endpoint was
    set waited 5 s (uapi.set_lines puts such peers last)."""
    a, b = veth_lab.add_box("a"), veth_lab.add_box("b")
    veth_lab.link("a", "198.51.100.1/24", "b", "198.51.100.2/24")
    (a_priv, a_pub), (b_priv, b_pub) = keypair(), keypair()
    bring_up(a, a_priv, "10.77.0.1")
    bring_up(b, b_priv, "10.77.0.2")
    b.call("apply_peers", peers=[{"key": a_pub, "ips": ["10.77.0.1/32"]}])
    first = keypair()[1]
    while first > b_pub:  # planned before b's peer (plan_peer_changes sorts by key)
        first = keypair()[1]
    other = {"key": first, "ips": ["10.77.0.9/32"], "endpoint": ["198.51.100.9", 51820]}
    other["keepalive"] = 25
    a.call("apply_peers", peers=[other, {"key": b_pub, "ips": []}])  # installed
    fired = {"key": b_pub, "ips": [], "endpoint": ["198.51.100.2", 51820], "keepalive": 25}
    a.call("apply_peers", peers=[other, fired])
    deadline = time.monotonic() + 2.0
    while a.call("read_peers")[b_pub]["handshake_age"] is None:
        assert time.monotonic() < deadline, "no handshake within 2 s of the endpoint"
        time.sleep(0.05)


def test_an_interface_started_before_the_imports_is_taken_over_or_removed(
    veth_lab: VethLab,
) -> None:
    """The command line starts the first backend's command before the
    daemon's imports: create() takes it over (one interface, one daemon), and
    one never taken over (the daemon died while importing) is removed."""
    a = veth_lab.add_box("a")
    a.call("new", name="wg0", early=True)
    assert wait_until(lambda: a.call("exists"), 3.0, interval=0.02)  # made while we "import"
    assert a.call("create") in ("kernel", "wireguard-go", "boringtun")
    assert len(live_wireguard_go(veth_lab.ns("a"))) <= 1
    priv, _ = keypair()
    a.call("configure", key=priv, port=51820)
    assert a.call("read_peers") == {}
    a.call("destroy")
    assert wait_until(lambda: not live_wireguard_go(veth_lab.ns("a")), 3.0, interval=0.05)
    a.call("abandon_early", name="wg1")
    assert a.call("run", argv=["ip", "-o", "link", "show"]).count("wg1") == 0
    assert wait_until(lambda: not live_wireguard_go(veth_lab.ns("a")), 3.0, interval=0.05), (
        "wireguard-go left"
    )


def test_existing_interface_and_refusals(veth_lab: VethLab) -> None:
    a = veth_lab.add_box("a")
    _, other_pub = keypair()
    # an administrator's interface wgx, with an address, a peer and a route
    a.call("run", argv=["wireguard-go", "wgx"])
    a.call("run", argv=["wg", "set", "wgx", "peer", other_pub, "allowed-ips", "10.9.0.2/32"])
    a.call("run", argv=["ip", "addr", "add", "10.9.0.1/24", "dev", "wgx"])
    a.call("run", argv=["ip", "link", "set", "wgx", "up"])
    a.call("new", name="wgx", existing=True)
    assert a.call("create") == "existing"
    assert a.call("read_peers") == {}
    assert "inet " not in a.call("run", argv=["ip", "-4", "addr", "show", "dev", "wgx"])
    priv, _ = keypair()
    a.call("configure", key=priv, port=51821)
    a.call("set_address", ip="10.9.0.5", prefixlen=24)
    a.call("apply_peers", peers=[{"key": other_pub, "ips": ["10.9.0.2/32"]}])
    a.call("apply_routes", routes=[["10.9.0.2", None]])
    a.call("set_fwmark", mark=0x776E1234)
    assert a.call("run", argv=["wg", "show", "wgx", "fwmark"]).strip() == "0x776e1234"
    a.call("destroy")
    assert a.call("exists") is True  # not ours to delete
    assert a.call("run", argv=["wg", "show", "wgx", "fwmark"]).strip() == "off"
    assert a.call("read_peers") == {}
    assert a.call("read_routes") == []
    assert "inet " not in a.call("run", argv=["ip", "-4", "addr", "show", "dev", "wgx"])
    a.call("destroy")

    # existing=True but missing: a clear error
    a.call("new", name="wgmissing", existing=True)
    with pytest.raises(AgentError, match="does not exist"):
        a.call("create")
    a.call("destroy")  # safe after a failed create

    # a non-WireGuard interface with our name is never deleted
    a.call("run", argv=["ip", "link", "add", "wgdummy", "type", "veth", "peer", "name", "wgdp"])
    a.call("new", name="wgdummy")
    with pytest.raises(AgentError, match="refusing to delete"):
        a.call("create")
    a.call("destroy")
    assert a.call("exists") is True


def test_forwarding_through_middle_box(veth_lab: VethLab) -> None:
    """A - B - C: A and C only peer with B, which forwards between them."""
    a, b, c = veth_lab.add_box("a"), veth_lab.add_box("b"), veth_lab.add_box("c")
    # separate underlay links: A and C cannot reach each other directly
    veth_lab.link("a", "198.51.100.1/30", "b", "198.51.100.2/30")
    veth_lab.link("b", "198.51.100.5/30", "c", "198.51.100.6/30")
    (a_priv, a_pub), (b_priv, b_pub), (c_priv, c_pub) = keypair(), keypair(), keypair()
    A, B, C = "10.77.1.1", "10.77.1.2", "10.77.1.3"
    bring_up(a, a_priv, A)
    bring_up(b, b_priv, B)
    bring_up(c, c_priv, C)
    a.call(
        "apply_peers",
        peers=[{"key": b_pub, "ips": [f"{B}/32", f"{C}/32"], "endpoint": ["198.51.100.2", 51820]}],
    )
    c.call(
        "apply_peers",
        peers=[{"key": b_pub, "ips": [f"{B}/32", f"{A}/32"], "endpoint": ["198.51.100.5", 51820]}],
    )
    b.call(
        "apply_peers",
        peers=[
            {"key": a_pub, "ips": [f"{A}/32"], "endpoint": ["198.51.100.1", 51820]},
            {"key": c_pub, "ips": [f"{C}/32"], "endpoint": ["198.51.100.6", 51820]},
        ],
    )
    a.call("apply_routes", routes=[[B, None], [C, B]])
    c.call("apply_routes", routes=[[B, None], [A, B]])
    b.call("apply_routes", routes=[[A, None], [C, None]])

    assert veth_lab.ping("a", B, wait=2) and veth_lab.ping("c", B, wait=2), "direct tunnels"
    assert not veth_lab.ping("a", C), "B must not forward before enable_forwarding"

    b.call("enable_forwarding")
    assert veth_lab.ping("a", C, count=3), "A -> C through B"
    assert veth_lab.ping("c", A), "C -> A through B"

    sysctl = Path("/proc/sys/net/ipv4")
    in_b = ["ip", "netns", "exec", veth_lab.ns("b"), "cat"]
    # the per-interface flag was enough: the global switch is still off
    assert sh(*in_b, str(sysctl / "ip_forward")).stdout.strip() == "0"
    assert sh(*in_b, str(sysctl / "conf/wg0/forwarding")).stdout.strip() == "1"
    # and B sent no ICMP redirects while forwarding in and out of wg0
    snmp = sh(*in_b, "/proc/net/snmp").stdout.splitlines()
    icmp = [line.split()[1:] for line in snmp if line.startswith("Icmp:")]
    counters = dict(zip(icmp[0], icmp[1], strict=True))
    assert counters["OutRedirects"] == "0"
