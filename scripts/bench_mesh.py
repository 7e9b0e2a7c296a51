"""Benchmark the real daemon in the working-example testbed (ns/working_example.sh),
side by side with Nebula.

    sudo .venv/bin/python -m scripts.bench_mesh [--runs N] [--scenario a,n,b,c,d,q,j,k]
                                      [--install regular|checkout] [--python PATH] [--against DIR]
                                      [--keep-logs DIR] [--json FILE] [--symmetric]

Run from the repository root (``-m``: it imports the test-support library ``tests``).
Scenarios n, q and k need Nebula (``scripts/install.sh --nebula``: the Debian package).

The daemons are what users run: ``--install regular`` (the default) builds a
wheel of this checkout and installs it into a virtualenv of its own
(``.venv-bench``, made of the distribution's ``/usr/bin/python3`` as a user's
``python3 -m venv`` is, or of ``--python``), whose console script the boxes
run; ``--install checkout`` runs this checkout with ``python -m wg_netmanager``
instead. They log at
``-vv``: the start-up timeline (``startup +N ms (cpu M ms): step``, see
wg_netmanager/timeline.py) is read from their logs.

Four nodes: beta (static, 198.51.100.1, wg 10.1.1.1), alpha behind its own
NAT firewall (10.1.1.2), charlie and delta on one home LAN behind a NAT
router (10.1.1.3, 10.1.1.4).  Every run builds a fresh testbed, starts a
reachability prober (tests/prober.py) in every box, then the daemons
(``wg_netmanager -c CFG --no-tui -vv wg0 IP NAME``), and measures:

a  all four daemons started together: time until every pair answers in both
   directions (first prober reply), per pair; time until charlie<->delta
   are direct WireGuard peers over the LAN, and until all six links are
   direct ('n/a' if it does not happen within --direct-wait s); the CPU
   seconds the four boxes' daemons (with their commands and wireguard-go)
   used until every pair answered.
b  the same, beta started 0.5 s after the others; times from beta's start.
j  one node joins: beta, charlie and delta start together; once they reach
   each other and have settled (ours: their deferred web and DNS stacks
   loaded), alpha starts alone: time from its start until it and every
   other node answer each other, until alpha<->charlie are direct through
   both NATs, and alpha's CPU seconds until it reaches everyone. This is
   the start-up a user sees where each node has its own CPU (a, all four
   starting on the same two cores, measures the sum of their start-ups).
k  Nebula, as j (alternating with j).
c  after convergence (every pair pings, and the dynamic daemons have loaded
   their web and DNS stacks, deferred until start-up settled) charlie's
   daemon is SIGKILLed and restarted at once
   (it keeps its key, one boot number on, and the crashed run's interface,
   which has that key): time from the new start until charlie and every
   other node answer each other again without interruption, and since when
   its links are direct without a break.
n  Nebula (the Debian package) on the same testbed, all four started
   together: beta its lighthouse, every node on the wg IP and port ours
   uses, tun device wg0 (so the same probers run), punchy on; no relays, so
   every pair that answers is direct. Runs alternate with the other
   scenarios' (a1 n1 ... a2 n2 ...), and the figures of a are printed with
   their ratio to n's.
d  the quiet after use: the probers run for USE_TIME s after convergence
   (user traffic over the direct links), then stop; from QUIET_AFTER s after
   the last traffic, over QUIET_WINDOW s: every daemon's CPU% and RSS,
   wireguard-go's CPU%, the underlay bytes/s of every node's eth0, and by
   kind (scripts/underlay_capture.py: WireGuard handshakes, keepalives,
   data; admin datagrams by size; ...).
q  Nebula, as d (its packets by kind: handshake, message, lighthouse, test, ...).
o  with ``--against DIR``: a, with another checkout of wg_netmanager (a git
   worktree of an older commit, say) installed the same way, alternating
   with a: before and after a change, under the same load.

"Direct" is read every 50 ms (j: 20 ms) from each box's WireGuard UAPI socket (the
testbed keeps it on the host at $TB_STATE_ROOT/PREFIX/BOX/wireguard/wg0.sock)
and its routing table (/proc/PID/net/route of a process in the box): A-B is
direct when A has B's current public key as a peer with B/32 allowed and no
gateway route for B, and vice versa.  All times are CLOCK_MONOTONIC
(time.monotonic()), shared by the benchmark, the probers and every network
namespace.  Prints numbers; asserts nothing.  Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from tests import procfs
from tests.faults import DYNAMIC, NODES, FaultMesh, Probing
from tests.netns import (
    REPO_ROOT,
    REQUIRED_TOOLS,
    Testbed,
    network_yaml,
    script_path,
    unique_prefix,
    which,
)
from tests.procfs import CLK_TCK
from tests.waits import wait_until

PAIRS = list(itertools.combinations(NODES, 2))  # the six links
DIRECTED = list(itertools.permutations(NODES, 2))  # the twelve prober directions
HOME_LAN = "192.168.1."
NETWORK_YAML = network_yaml()
# Probers every 20 ms; a silence longer than 0.1 s is an outage.
PROBING = Probing(interval=0.02, gap=0.1, flush=0.1)
PROBE_MAX = 120.0  # a prober's own time limit (s); they are stopped much earlier
POLL = 0.05  # direct-path polling interval
# j: as often as the probers ping (Nebula's "direct" is its first reply):
# the machine is idle but for the joining node, and the figure is small.
POLL_JOIN = 0.02
CONVERGE_TIMEOUT = 20.0
SETTLED_WAIT = 5.0  # c: at most this long for the daemons' deferred imports
RECOVER_TIMEOUT = 15.0
BETA_DELAY = 0.5  # scenario b
USE_TIME = 5.0  # scenario d: user traffic for this long after convergence; then
QUIET_AFTER = 5.0  # from this long after the last traffic ...
QUIET_WINDOW = 30.0  # ... measure over this long
BENCH_VENV = REPO_ROOT / ".venv-bench"
ADMIN_PORT_BASE, WG_PORT_BASE = 50500, 50000  # the daemons' default ports (+ last octet)

SCENARIOS = {
    "a": "all four started together",
    "n": "Nebula, all four started together",
    "b": f"static beta started {BETA_DELAY} s after the others (times from beta's start)",
    "c": "charlie SIGKILLed after convergence, restarted at once (its key kept)",
    "d": f"quiet after use: {USE_TIME:g} s of traffic after convergence, then from "
    f"{QUIET_AFTER:g} s after the last traffic, over {QUIET_WINDOW:g} s",
    "q": "Nebula, quiet after use (as d)",
    "o": "another checkout (--against), all four started together (as a)",
    "j": "alpha joins the mesh the three others formed (times from alpha's start)",
    "k": "Nebula, alpha joins (as j)",
}
NEBULA = {"n": "a", "q": "d", "k": "j"}  # Nebula's scenarios, and ours they mirror
JOINER = "alpha"  # j, k: the node that starts last, alone


class BenchError(Exception):
    pass


# --- what runs in the boxes ---------------------------------------------------


def system_python() -> str:
    """The interpreter a user's ``python3 -m venv`` makes a venv of (README):
    the distribution's, where there is one, else the one running us. On a
    developer's machine ``python3`` on PATH may be another build (pyenv's is
    not built with profile-guided optimisation: ~20 % more start-up CPU)."""
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def venv_base(venv: Path) -> str | None:
    """The interpreter ``venv`` was made from (pyvenv.cfg), None if none."""
    try:
        lines = (venv / "pyvenv.cfg").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() == "executable":
            return os.path.realpath(value.strip())
    return None


def regular_install(
    venv: Path = BENCH_VENV, root: Path = REPO_ROOT, interpreter: str | None = None
) -> list[str]:
    """Install the checkout at ``root`` as users do: a wheel, built from a
    copy of its files (no build/ left behind), into ``venv`` (made once of
    ``interpreter``, made again if it was made of another; the wheel is
    reinstalled every time). Returns the console script's argv."""
    interpreter = interpreter or system_python()
    python = venv / "bin" / "python"
    if python.exists() and venv_base(venv) != os.path.realpath(interpreter):
        shutil.rmtree(venv)
    with tempfile.TemporaryDirectory(prefix="bench_wheel.") as tmp:
        src, dist = Path(tmp) / "src", Path(tmp) / "dist"
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "-co", "--exclude-standard"],
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
        for name in filter(None, listed.decode().split("\0")):
            if (root / name).is_file():
                (src / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / name, src / name)
        pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)]
        subprocess.run(pip, check=True, timeout=300, capture_output=True)
        [wheel] = dist.glob("wg_netmanager-*.whl")
        if not python.exists():
            subprocess.run([interpreter, "-m", "venv", str(venv)], check=True, timeout=120)
        install = [str(python), "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps"]
        subprocess.run([*install, str(wheel)], check=True, timeout=300, capture_output=True)
        # the dependencies, once (a no-op when they are there)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", str(wheel)],
            check=True,
            timeout=300,
            capture_output=True,
        )
    return [str(venv / "bin" / "wg_netmanager")]


def python_version(venv: Path) -> str:
    run = subprocess.run(
        [str(venv / "bin" / "python"), "-VV"], capture_output=True, text=True, timeout=30
    )
    return run.stdout.strip().replace("\n", " ")


def nebula_config(box: str, pki: Path, punch_delay: float | None = None) -> str:
    """Nebula's config for ``box``: beta the lighthouse, the wg IP and port ours
    uses, tun device wg0, NAT punching on, every packet allowed;
    ``punch_delay``: punchy.delay in s (None: Nebula's default, 1 s: the
    punch a node sends back when the lighthouse tells it of a newcomer)."""
    delay = "" if punch_delay is None else f"\n  delay: {punch_delay:g}s"
    octet = int(NODES[box].rsplit(".", 1)[1])
    lighthouse = box == "beta"
    hosts = "[]" if lighthouse else f'["{NODES["beta"]}"]'
    return f"""\
pki:
  ca: {pki}/ca.crt
  cert: {pki}/{box}.crt
  key: {pki}/{box}.key
static_host_map:
  "{NODES["beta"]}": ["198.51.100.1:{WG_PORT_BASE + 1}"]
lighthouse:
  am_lighthouse: {str(lighthouse).lower()}
  interval: 60
  hosts: {hosts}
listen:
  host: 0.0.0.0
  port: {WG_PORT_BASE + octet}
punchy:
  punch: true
  respond: true{delay}
tun:
  dev: wg0
  mtu: 1300
logging:
  level: info
  format: text
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: any
      host: any
"""


class NebulaMesh(FaultMesh):
    """Nebula in the boxes instead of wg_netmanager: certificates and configs
    made in ``tmp`` (``nebula-cert``), the same probers."""

    def __init__(
        self, tb: Testbed, tmp: Path, *, probing: Probing, punch_delay: float | None = None
    ) -> None:
        super().__init__(tb, tmp, dict(NODES), NETWORK_YAML, verbose=False, probing=probing)
        pki = tmp / "nebula"
        pki.mkdir(mode=0o700)

        def cert(*argv: str) -> None:
            subprocess.run(["nebula-cert", *argv], check=True, timeout=30, capture_output=True)

        cert("ca", "-name", "bench", "-out-crt", f"{pki}/ca.crt", "-out-key", f"{pki}/ca.key")
        for box, ip in NODES.items():
            cert(
                "sign",
                *("-ca-crt", f"{pki}/ca.crt", "-ca-key", f"{pki}/ca.key"),
                *("-name", box, "-ip", f"{ip}/24"),
                *("-out-crt", f"{pki}/{box}.crt", "-out-key", f"{pki}/{box}.key"),
            )
            (pki / f"{box}.yml").write_text(nebula_config(box, pki, punch_delay))
        self.pki = pki

    def start(
        self,
        box: str,
        *prefix: str,
        options: Sequence[str] = (),
        config: Path | None = None,
        name: str | None = None,
    ) -> subprocess.Popen[bytes]:
        assert config is None and name is None, "Nebula's boxes each have their own config"
        argv = [*prefix, "nebula", "-config", str(self.pki / f"{box}.yml"), *options]
        proc = self.tb.spawn(box, argv, self.tmp / f"{box}-0.log")
        self.procs[box] = proc
        return proc


# --- reading the boxes from the host ----------------------------------------


def uapi_get(path: Path, timeout: float = 0.5) -> dict[str, Any] | None:
    """The interface's state through wireguard-go's UAPI socket: own public
    key (hex) and peers {public key hex: {"endpoint", "allowed"}}; None if
    the socket is not there (yet) or does not answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(b"get=1\n\n")
            buf = b""
            while not buf.endswith(b"\n\n") and len(buf) < 1 << 20:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except OSError:
        return None
    own: str | None = None
    peers: dict[str, dict[str, Any]] = {}
    cur: dict[str, Any] | None = None
    for line in buf.decode(errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key == "private_key":
            own = _public_hex(value)
        elif key == "public_key":
            cur = peers.setdefault(value, {"endpoint": None, "allowed": set()})
        elif key == "endpoint" and cur is not None:
            cur["endpoint"] = value
        elif key == "allowed_ip" and cur is not None:
            cur["allowed"].add(value)
        elif key == "errno" and value != "0":
            return None
    return {"public": own, "peers": peers}


def inode(path: Path) -> str | None:
    """Which file ``path`` is: a socket made again (a new wireguard-go) is another."""
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{st.st_ino}:{st.st_ctime_ns}"


_pub_cache: dict[str, str] = {}


def _public_hex(private_hex: str) -> str:
    if private_hex not in _pub_cache:
        from nacl.public import PrivateKey

        _pub_cache[private_hex] = PrivateKey(bytes.fromhex(private_hex)).public_key.encode().hex()
    return _pub_cache[private_hex]


def gateway_routes(pid: int, ifname: str = "wg0") -> dict[str, str] | None:
    """{destination: gateway} of the host routes via a gateway on ``ifname``
    in the main table of ``pid``'s network namespace."""
    routes = procfs.net_routes(pid)
    if routes is None:
        return None
    return {
        r.dest: r.gateway
        for r in routes
        if r.dev == ifname and r.mask == "255.255.255.255" and r.gateway is not None
    }


# --- direct-path poller ------------------------------------------------------


class DirectPoller(threading.Thread):
    """Polls every box's WireGuard state and routes every ``interval`` s and
    records the first time each condition held."""

    def __init__(self, run: Run, interval: float = POLL) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.run_ = run
        self.stop_ = threading.Event()
        self.wg_up: dict[str, float] = {}
        self.pair_direct: dict[str, float] = {}
        self.cd_lan_direct: float | None = None
        self.all_direct: float | None = None
        # Each box's interface as it changes: (since, its key and its UAPI
        # socket's inode: a new interface, even with the key kept, is a new one).
        self.keys: dict[str, list[tuple[float, str]]] = {b: [] for b in NODES}
        # after mark(): first times with the restarted box's new interface
        self.marked: tuple[str, float] | None = None
        self.after: dict[str, float] = {}
        self.polls = 0
        self.errors = 0

    def run(self) -> None:
        deadline = time.monotonic() + 600
        while not self.stop_.is_set() and time.monotonic() < deadline:
            t = time.monotonic()
            try:
                self.poll(t)
            except Exception:  # never let a parsing surprise kill the measurement
                self.errors += 1
            self.polls += 1
            self.stop_.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def poll(self, t: float) -> None:
        if self.run_.nebula:  # no UAPI: its tun device's appearance is all there is to see
            for box in NODES:
                pid = self.run_.box_pid(box)
                if pid and procfs.net_dev(pid, "wg0") is not None:
                    self.wg_up.setdefault(box, t)
            return
        state: dict[str, dict[str, Any] | None] = {}
        routes: dict[str, dict[str, str] | None] = {}
        for box in NODES:
            state[box] = uapi_get(self.run_.uapi_path(box))
            pid = self.run_.box_pid(box)
            routes[box] = gateway_routes(pid) if pid else None
            st = state[box]
            if st is not None:
                self.wg_up.setdefault(box, t)
                keys = self.keys[box]
                ident = f"{st['public']}@{inode(self.run_.uapi_path(box))}"
                if st["public"] and (not keys or keys[-1][1] != ident):
                    keys.append((t, ident))

        def peer_of(a: str, b: str) -> dict[str, Any] | None:
            sa, sb, ra = state[a], state[b], routes[a]
            if sa is None or sb is None or ra is None or not sb["public"]:
                return None
            peer = sa["peers"].get(sb["public"])
            if peer is None or f"{NODES[b]}/32" not in peer["allowed"]:
                return None
            if NODES[b] in ra:  # a gateway route: reached via someone
                return None
            return peer

        direct: set[str] = set()
        cd_lan = False
        for a, b in PAIRS:
            pa, pb = peer_of(a, b), peer_of(b, a)
            if pa is None or pb is None:
                continue
            direct.add(f"{a}-{b}")
            self.pair_direct.setdefault(f"{a}-{b}", t)
            if {a, b} == {"charlie", "delta"}:
                ends = [pa["endpoint"] or "", pb["endpoint"] or ""]
                cd_lan = all(e.startswith(HOME_LAN) for e in ends)
                if cd_lan and self.cd_lan_direct is None:
                    self.cd_lan_direct = t
        if len(direct) == len(PAIRS) and self.all_direct is None:
            self.all_direct = t
        if self.marked is not None:
            # Since when each is direct without a break, from the mark on: a
            # new run that keeps the crashed run's interface (same key) sets
            # its pairs anew, so they may break and come back; a new
            # interface (another inode) counts from its first reading.
            box, since = self.marked
            if t > since and state[box] is not None:
                mine = [f"{a}-{b}" for a, b in PAIRS if box in (a, b)]
                holds = {f"{a}-{b}": f"{a}-{b}" in direct for a, b in PAIRS}
                holds["cd_lan"] = cd_lan
                holds["box_all"] = all(pair in direct for pair in mine)
                holds["all"] = len(direct) == len(PAIRS)
                for what, held in holds.items():
                    if held:
                        self.after.setdefault(what, t)
                    else:
                        self.after.pop(what, None)

    def mark(self, box: str, t: float) -> None:
        """From ``t`` on, also record since when links are direct without a break."""
        self.marked = (box, t)

    def stop(self) -> None:
        self.stop_.set()
        self.join(timeout=5)


# --- one run -------------------------------------------------------------------


class Run:
    """A fresh testbed with probers and daemons (a FaultMesh); always cleaned up on exit."""

    def __init__(
        self,
        args: argparse.Namespace,
        scenario: str,
        index: int,
        base: Path,
        program: Sequence[str] = (),
    ) -> None:
        self.args = args
        self.scenario = scenario
        self.index = index
        self.nebula = scenario in NEBULA
        self.dir = base / f"{scenario}{index}"
        self.dir.mkdir(mode=0o700)
        self.tb = Testbed(script_path("working_example"), unique_prefix("bm"))
        self.mesh: FaultMesh
        if self.nebula:
            self.mesh = NebulaMesh(
                self.tb, self.dir, probing=PROBING, punch_delay=args.nebula_punch_delay
            )
        else:
            # -vv: the start-up timeline is read from the logs
            self.mesh = FaultMesh(
                self.tb,
                self.dir,
                dict(NODES),
                NETWORK_YAML,
                verbose=not args.quiet_daemons,
                probing=PROBING,
                program=program,
            )
        self.poller: DirectPoller | None = None
        self.captures: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Run:
        if self.args.symmetric:
            os.environ["SYMMETRIC"] = "1"
        try:
            self.tb.up()
        finally:
            os.environ.pop("SYMMETRIC", None)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.args.keep_logs and not self.nebula:
                try:  # a diagnosis: the run's cleanup must not depend on it
                    self.keep_wireguard_state()
                except (OSError, subprocess.SubprocessError) as exc:
                    print(f"warning: {self.dir.name}: WireGuard state not kept: {exc}")
            if self.poller is not None:
                self.poller.stop()
            for proc in self.captures.values():
                self.tb.stop(proc, timeout=2)
            self.mesh.stop_probers()
            self.mesh.stop_all()
        finally:
            self.tb.down()
            if self.args.keep_logs:
                dest = Path(self.args.keep_logs) / self.dir.name
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(self.dir, dest, ignore=shutil.ignore_patterns("network.yaml"))

    def keep_wireguard_state(self) -> None:
        """What each WireGuard and the NAT routers' conntrack held at the
        run's end, next to the logs: why a punch failed is read there (no
        keys but public ones: ``wg show`` without ``dump``)."""
        for box in self.mesh.nodes:
            shown = [
                self.tb.run(box, "wg", "show", "wg0", what).stdout
                for what in ("endpoints", "latest-handshakes", "transfer")
            ]
            (self.dir / f"wg-{box}.txt").write_text("\n".join(shown))
        for router in ("fw", "router"):
            table = self.tb.run(router, "cat", "/proc/net/nf_conntrack").stdout
            (self.dir / f"conntrack-{router}.txt").write_text(table)

    # paths and pids
    def uapi_path(self, box: str) -> Path:
        return self.tb.state_dir(box) / "wireguard" / "wg0.sock"

    def box_pid(self, box: str) -> int | None:
        for procs in (self.mesh.probers, self.mesh.procs):
            proc = procs.get(box)
            if proc is not None and proc.poll() is None:
                return proc.pid
        return None

    # probers
    def start_probers(self) -> None:
        everyone = {box: [b for b in NODES if b != box] for box in NODES}
        self.mesh.start_probers(everyone, duration=PROBE_MAX)

    def probes(self) -> dict[str, dict[str, Any]]:
        reports = {box: self.mesh.probe_report(box) for box in NODES}
        return {box: report for box, report in reports.items() if report is not None}

    def stop_probers(self) -> dict[str, dict[str, Any]]:
        self.mesh.stop_probers()
        return self.probes()

    # daemons
    def spawn_daemon(self, box: str) -> float:
        t = time.monotonic()
        self.mesh.start(box)
        return t

    def start_captures(self, start_at: float, duration: float) -> dict[str, Path]:
        """An underlay capture in every box for ``duration`` s from ``start_at``."""
        outs = {}
        for box, ip in NODES.items():
            octet = int(ip.rsplit(".", 1)[1])
            out = self.dir / f"capture-{box}.json"
            argv = [sys.executable, "-m", "scripts.underlay_capture", "--dev", "eth0"]
            port_option = "--nebula-port" if self.nebula else "--wg-port"
            argv += [port_option, str(WG_PORT_BASE + octet)]
            argv += ["--admin-port", str(ADMIN_PORT_BASE + octet)]
            argv += ["--start-at", repr(start_at), "--duration", str(duration), "--out", str(out)]
            env = {"PYTHONPATH": str(REPO_ROOT)}
            self.captures[box] = self.tb.spawn(box, argv, self.dir / f"capture-{box}.out", env=env)
            outs[box] = out
        for box in NODES:
            ready = self.dir / f"capture-{box}.out"
            if not wait_until(functools.partial(says_ready, ready), 10, 0.05):
                raise BenchError(f"the capture in {box} did not start")
        return outs

    def capture_reports(self, outs: dict[str, Path]) -> dict[str, dict[str, Any]]:
        reports = {}
        for box, out in outs.items():
            wait_until(out.exists, 5, 0.05)
            with contextlib.suppress(OSError, ValueError):
                reports[box] = json.loads(out.read_text())
        return reports

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time so far per box: the daemon, the commands it ran and waited
        for, and wireguard-go (not its child: it daemonizes)."""
        cpu = {}
        for box, proc in self.mesh.procs.items():
            stat = procfs.stat(proc.pid)
            ticks = 0 if stat is None else stat.utime + stat.stime + stat.cutime + stat.cstime
            for pid in self.tb.pids(box):
                if procfs.comm(pid) == "wireguard-go" and (st := procfs.stat(pid)) is not None:
                    ticks += st.utime + st.stime
            cpu[box] = ticks / CLK_TCK
        return cpu

    def check_daemons(self) -> None:
        for box, p in self.mesh.procs.items():
            if p.poll() is not None:
                raise BenchError(f"daemon {box} exited with {p.returncode}")

    def start_poller(self, interval: float = POLL) -> None:
        self.poller = DirectPoller(self, interval)
        self.poller.start()

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for log in sorted(self.dir.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    # waiting
    def wait_all_reachable(
        self,
        timeout: float = CONVERGE_TIMEOUT,
        boxes: Collection[str] = NODES,
        interval: float = 0.1,
    ) -> float | None:
        """Monotonic time by which every direction between ``boxes`` had a first reply."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_daemons()
            t = all_reachable(self.probes(), boxes)
            if t is not None:
                return t
            time.sleep(interval)
        return None

    def wait_settled(self, boxes: Sequence[str]) -> None:
        """Until (at most SETTLED_WAIT s) ``boxes``' daemons have settled and
        loaded their deferred web and DNS stacks."""
        wait_until(
            lambda: all("API and web UI at" in self.mesh.log(box) for box in boxes),
            SETTLED_WAIT,
            0.05,
        )


def says_ready(out: Path) -> bool:
    return out.exists() and "ready" in out.read_text()


# --- analysis --------------------------------------------------------------------


def first_reply(probes: dict[str, dict[str, Any]], a: str, b: str) -> float | None:
    """When ``a``'s prober first got a reply from ``b``."""
    try:
        t = probes[a]["peers"][NODES[b]]["first_reply"]
    except KeyError:
        return None
    return float(t) if t is not None else None


def all_reachable(
    probes: dict[str, dict[str, Any]], boxes: Collection[str] = NODES
) -> float | None:
    times = [first_reply(probes, a, b) for a in boxes for b in boxes if a != b]
    if any(t is None for t in times):
        return None
    return max(t for t in times if t is not None)


def recovered_at(peer: dict[str, Any], since: float, end: float) -> float | None:
    """The time from which ``peer`` (a prober's per-peer record) answered
    without interruption until ``end``, if that began after ``since``."""
    last = peer.get("last_reply")
    if last is None or last <= since or end - last > PROBING.gap * 3:
        return None
    ends = [o[1] for o in peer.get("outages", []) if o[1] > since]
    return max(ends) if ends else since


def outage_start(peer: dict[str, Any], since: float) -> float | None:
    starts = [o[0] for o in peer.get("outages", []) if o[1] > since]
    return min(starts) if starts else None


def rel(t: float | None, t0: float) -> float | None:
    return None if t is None else round(t - t0, 4)


def reach_metrics(run: Run, probes: dict[str, dict[str, Any]], t0: float) -> dict[str, Any]:
    m: dict[str, Any] = {"all pairs reachable": rel(all_reachable(probes), t0)}
    for a, b in PAIRS:
        ab, ba = first_reply(probes, a, b), first_reply(probes, b, a)
        m[f"{a}-{b}"] = None if ab is None or ba is None else rel(max(ab, ba), t0)
        m[f"  {a}->{b} / {b}->{a}"] = [rel(ab, t0), rel(ba, t0)]
    poller = run.poller
    assert poller is not None
    if run.nebula:  # no relays: a pair that answers is a direct one
        m["charlie<->delta direct (LAN)"] = m["charlie-delta"]
        m["all six links direct"] = m["all pairs reachable"]
        for a, b in PAIRS:
            m[f"direct {a}-{b}"] = m[f"{a}-{b}"]
    else:
        m["charlie<->delta direct (LAN)"] = rel(poller.cd_lan_direct, t0)
        m["all six links direct"] = rel(poller.all_direct, t0)
        for a, b in PAIRS:
            m[f"direct {a}-{b}"] = rel(poller.pair_direct.get(f"{a}-{b}"), t0)
    for box in NODES:
        m[f"wg0 up {box}"] = rel(poller.wg_up.get(box), t0)
    # the protocol's share: from the last interface up (process start-up,
    # Python imports, wireguard-go) to the full mesh
    ups = [poller.wg_up.get(box) for box in NODES]
    t_all = all_reachable(probes)
    if t_all is not None and None not in ups:
        m["all reachable after last wg0 up"] = round(t_all - max(u for u in ups if u), 4)
    else:
        m["all reachable after last wg0 up"] = None
    t_lan = m["charlie<->delta direct (LAN)"]
    t_every = m["all pairs reachable"]
    t_nat = m["direct alpha-charlie"]
    for label, t in (("LAN", t_lan), ("NAT", t_nat)):
        after = None if t is None or t_every is None else round(t - t_every, 4)
        m[f"{label} direct after every pair pings"] = after
    if not run.nebula:
        m.update(timeline_split(run))
    return m


STARTUP_LINE = re.compile(r"startup \+(\d+) ms \(cpu (\d+) ms\): (.+)$", re.MULTILINE)


def startup_marks(log_text: str) -> dict[str, tuple[float, float]]:
    """The start-up timeline a daemon logged at -vv: step -> (seconds since its
    start, CPU seconds it had used by then)."""
    return {
        step: (int(ms) / 1000, int(cpu) / 1000) for ms, cpu, step in STARTUP_LINE.findall(log_text)
    }


def timeline_split(run: Run, boxes: Collection[str] = NODES) -> dict[str, Any]:
    """Per start-up step, when the slowest of ``boxes``' daemons got there (s
    since its start), and the most CPU one had used by then."""
    marks = {}
    for box in boxes:
        path = run.dir / f"{box}-0.log"
        marks[box] = startup_marks(path.read_text(errors="replace")) if path.exists() else {}
    steps: dict[str, tuple[float, float]] = {}
    for box_marks in marks.values():
        for step in box_marks:
            seen = [b[step] for b in marks.values() if step in b]
            if len(seen) == len(marks):
                steps[step] = (max(t for t, _ in seen), max(c for _, c in seen))
    m: dict[str, Any] = {}
    for step, (t, cpu) in sorted(steps.items(), key=lambda kv: kv[1][0]):
        m[f"startup: {step}"] = t
        m[f"startup cpu: {step}"] = cpu
    return m


# --- scenarios -----------------------------------------------------------------


def start_all(run: Run, delay_beta: float = 0.0) -> float:
    """Start the four daemons; returns t0 (beta's start if delayed)."""
    run.start_poller()
    t0 = time.monotonic()
    for box in NODES:
        if box != "beta" or delay_beta == 0:
            run.spawn_daemon(box)
    if delay_beta:
        time.sleep(max(0.0, t0 + delay_beta - time.monotonic()))
        t0 = run.spawn_daemon("beta")
    return t0


def scenario_ab(run: Run) -> dict[str, Any]:
    run.start_probers()
    t0 = start_all(run, BETA_DELAY if run.scenario == "b" else 0.0)
    t_all = run.wait_all_reachable()
    if t_all is None:
        raise BenchError(f"not all pairs reachable within {CONVERGE_TIMEOUT:g} s")
    cpu = run.cpu_seconds()
    poller = run.poller
    assert poller is not None
    # give direct paths (NAT traversal, LAN) a chance to appear
    wait_until(lambda: poller.all_direct is not None, run.args.direct_wait, POLL)
    poller.stop()
    probes = run.stop_probers()
    m = reach_metrics(run, probes, t0)
    m["CPU s until every pair pings (4 boxes)"] = round(sum(cpu.values()), 3)
    m["CPU s until every pair pings (busiest box)"] = round(max(cpu.values()), 3)
    return m


def scenario_c(run: Run) -> dict[str, Any]:
    run.start_probers()
    t_start = start_all(run)
    t_all = run.wait_all_reachable()
    if t_all is None:
        raise BenchError(f"not all pairs reachable within {CONVERGE_TIMEOUT:g} s")
    time.sleep(0.5)  # settle (routes, keepalives)
    # Converged: the dynamic nodes have also settled and loaded their web and
    # DNS stacks (about a second of CPU for the three, half a second after
    # their last change), which would otherwise share the two cores with the
    # restart and starve every box's prober for a moment.
    run.wait_settled(DYNAMIC)
    poller = run.poller
    assert poller is not None
    had_direct = poller.all_direct is not None
    run.tb.stop(run.mesh.procs["charlie"], sig=signal.SIGKILL, timeout=5)
    poller.mark("charlie", time.monotonic())
    t_r = run.spawn_daemon("charlie")
    pairs = [(a, b) for a, b in DIRECTED if "charlie" in (a, b)]

    def recovered() -> float | None:
        probes = run.probes()
        times = []
        for a, b in pairs:
            peer = probes.get(a, {}).get("peers", {}).get(NODES[b])
            if peer is None:
                return None
            t = recovered_at(peer, t_r, probes[a]["ended"])
            # require an interruption after the restart (a new interface means one),
            # unless the pair kept answering for 3 s
            if t is None or (t == t_r and time.monotonic() - t_r < 3):
                return None
            times.append(t)
        return max(times)

    deadline = time.monotonic() + RECOVER_TIMEOUT
    while time.monotonic() < deadline and recovered() is None:
        run.check_daemons()
        time.sleep(0.1)
    time.sleep(1.0)  # keep watching: a relapse after the first recovery counts
    if had_direct:  # give charlie's direct links the same chance as in a
        wait_until(lambda: "box_all" in poller.after, run.args.direct_wait, POLL)
    poller.stop()
    probes = run.stop_probers()
    m: dict[str, Any] = {"initial convergence": rel(t_all, t_start)}
    rec = []
    for a, b in pairs:
        peer = probes[a]["peers"][NODES[b]]
        t = recovered_at(peer, t_r, probes[a]["ended"])
        rec.append(t)
        m[f"  {a}->{b} again"] = rel(t, t_r)
        m[f"  {a}->{b} outage from"] = rel(outage_start(peer, t_r), t_r)
    done = [t for t in rec if t is not None]
    m["charlie reaches all again"] = rel(max(done), t_r) if len(done) == len(rec) else None
    starts = [s for a, b in pairs if (s := outage_start(probes[a]["peers"][NODES[b]], t_r))]
    if starts and len(done) == len(rec):
        m["outage (first loss to all back)"] = round(max(done) - min(starts), 4)
    else:
        m["outage (first loss to all back)"] = None
    keys = poller.keys["charlie"]
    new_key = next((t for t, _ in keys if t > t_r), None)
    m["charlie new wg0 up"] = rel(new_key, t_r)  # n/a: the crashed run's was kept
    m["charlie's wg0 kept (1) or made anew (0)"] = 0.0 if new_key is not None else 1.0
    after = poller.after
    m["charlie<->delta direct (LAN) again"] = rel(after.get("cd_lan"), t_r)
    m["charlie direct to all three again"] = rel(after.get("box_all"), t_r)
    m["all six links direct again"] = rel(after.get("all"), t_r)
    return m


def scenario_j(run: Run) -> dict[str, Any]:
    """j (ours) and k (Nebula): JOINER starts once the three others have met."""
    run.start_probers()
    run.start_poller(POLL_JOIN)
    others = [box for box in NODES if box != JOINER]
    for box in others:
        run.spawn_daemon(box)

    if run.wait_all_reachable(boxes=others) is None:
        raise BenchError(f"{', '.join(others)} did not reach each other in {CONVERGE_TIMEOUT:g} s")
    if not run.nebula:  # settled: their deferred imports done (as in c)
        run.wait_settled([box for box in DYNAMIC if box != JOINER])
    time.sleep(1.0)  # the machine quiet again but for keepalives
    t0 = run.spawn_daemon(JOINER)
    t_all = run.wait_all_reachable(interval=0.02)
    if t_all is None:
        raise BenchError(f"{JOINER} did not reach everyone in {CONVERGE_TIMEOUT:g} s")
    cpu = run.cpu_seconds()[JOINER]  # (read within 20 ms of t_all)
    poller = run.poller
    assert poller is not None
    mine = [f"{a}-{b}" for a, b in PAIRS if JOINER in (a, b)]
    if not run.nebula:
        wait_until(lambda: all(p in poller.pair_direct for p in mine), run.args.direct_wait, POLL)
    poller.stop()
    probes = run.stop_probers()
    m: dict[str, Any] = {f"{JOINER} reaches every node": rel(t_all, t0)}
    for other in others:
        there, back = first_reply(probes, JOINER, other), first_reply(probes, other, JOINER)
        both = None if there is None or back is None else max(there, back)
        pair = "-".join(sorted((JOINER, other), key=list(NODES).index))
        m[f"{pair}"] = rel(both, t0)
        # Nebula has no relays: a pair that answers is direct
        m[f"direct {pair}"] = m[pair] if run.nebula else rel(poller.pair_direct.get(pair), t0)
    directs = [m[f"direct {p}"] for p in mine]
    m[f"{JOINER} direct to all three"] = None if None in directs else max(directs)
    m[f"wg0 up {JOINER}"] = rel(poller.wg_up.get(JOINER), t0)
    m[f"CPU s until {JOINER} reaches every node ({JOINER})"] = round(cpu, 3)
    if not run.nebula:
        m.update(timeline_split(run, [JOINER]))
    return m


def scenario_d(run: Run) -> dict[str, Any]:
    run.start_probers()
    t0 = start_all(run)
    t_all = run.wait_all_reachable()
    if t_all is None:
        raise BenchError(f"not all pairs reachable within {CONVERGE_TIMEOUT:g} s")
    poller = run.poller
    assert poller is not None
    # user traffic (the probers), over direct links where they come up
    if not run.nebula:  # Nebula's pairs are direct once they answer
        wait_until(lambda: poller.all_direct is not None, run.args.direct_wait, POLL)
    time.sleep(max(0.0, t_all + USE_TIME - time.monotonic()))
    poller.stop()  # its UAPI reads would cost wireguard-go CPU
    run.stop_probers()  # the last traffic
    t_stop = time.monotonic()
    opens = t_stop + QUIET_AFTER
    captures = run.start_captures(opens, QUIET_WINDOW)
    time.sleep(max(0.0, opens - time.monotonic()))
    run.check_daemons()
    wg_pids = {
        box: [p for p in run.tb.pids(box) if procfs.comm(p) == "wireguard-go"] for box in NODES
    }
    before = _sample(run, wg_pids)
    time.sleep(max(0.0, opens + QUIET_WINDOW - time.monotonic()))
    after = _sample(run, wg_pids)
    run.check_daemons()
    kinds = run.capture_reports(captures)
    dt = after["t"] - before["t"]
    m: dict[str, Any] = {"convergence": rel(t_all, t0), "traffic stopped": rel(t_stop, t0)}
    for box in NODES:
        b0, b1 = before[box], after[box]
        m[f"{box} daemon CPU %"] = round((b1["cpu"] - b0["cpu"]) / CLK_TCK / dt * 100, 3)
        m[f"{box} daemon children CPU %"] = round((b1["ccpu"] - b0["ccpu"]) / CLK_TCK / dt * 100, 3)
        m[f"{box} wireguard-go CPU %"] = round((b1["wgcpu"] - b0["wgcpu"]) / CLK_TCK / dt * 100, 3)
        m[f"{box} daemon RSS MiB"] = round(max(b0["rss"], b1["rss"]) / 1024, 1)
        m[f"{box} eth0 bytes/s"] = round((b1["bytes"] - b0["bytes"]) / dt, 1)
        m[f"{box} eth0 packets/s"] = round((b1["packets"] - b0["packets"]) / dt, 2)
    m["max dynamic node eth0 bytes/s"] = max(m[f"{box} eth0 bytes/s"] for box in DYNAMIC)
    for box in NODES:
        report = kinds.get(box)
        if report is None:
            continue
        seconds = report["seconds"] or QUIET_WINDOW
        for kind, c in report["kinds"].items():
            rate = (c["out_bytes"] + c["in_bytes"]) / seconds
            m[f"  {box} {kind} B/s (out+in)"] = round(rate, 1)
    return m


def _sample(run: Run, wg_pids: dict[str, list[int]]) -> dict[str, Any]:
    out: dict[str, Any] = {"t": time.monotonic()}
    for box in NODES:
        pid = run.mesh.procs[box].pid
        stat = procfs.stat(pid)
        dev = procfs.net_dev(pid, "eth0")
        rss = procfs.rss_kib(pid)
        if stat is None or dev is None or rss is None:
            raise BenchError(f"cannot read /proc/{pid} ({box})")
        wg_stats = [procfs.stat(p) for p in wg_pids[box]]
        wg = sum(st.utime + st.stime for st in wg_stats if st is not None)
        out[box] = {
            "cpu": stat.utime + stat.stime,
            "ccpu": stat.cutime + stat.cstime,
            "wgcpu": wg,
            "rss": rss,
            "bytes": dev[0] + dev[2],
            "packets": dev[1] + dev[3],
        }
    return out


RUNNERS = {
    "a": scenario_ab,
    "o": scenario_ab,
    "n": scenario_ab,
    "b": scenario_ab,
    "c": scenario_c,
    "d": scenario_d,
    "q": scenario_d,
    "j": scenario_j,
    "k": scenario_j,
}


# --- reporting ---------------------------------------------------------------------


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{metric: {median, min, max, n, values}} over runs (None = n/a)."""
    keys: list[str] = []
    for r in results:
        for k in r.get("metrics", {}):
            if k not in keys:
                keys.append(k)
    summary: dict[str, dict[str, Any]] = {}
    for k in keys:
        values = [r.get("metrics", {}).get(k) for r in results]
        if any(isinstance(v, list) for v in values):
            summary[k] = {"values": values}
            continue
        nums = [v for v in values if isinstance(v, int | float)]
        summary[k] = {
            "median": statistics.median(nums) if nums else None,
            "min": min(nums) if nums else None,
            "max": max(nums) if nums else None,
            "n": len(nums),
            "values": values,
        }
    return summary


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def print_table(scenario: str, results: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    runs = len(results)
    failed = [r for r in results if r.get("error")]
    print(f"\n== scenario {scenario}: {SCENARIOS[scenario]} ({runs} runs", end="")
    print(f", {len(failed)} failed)" if failed else ")")
    unit = "" if scenario == "d" else " [s]"
    print(f"  {'metric' + unit:<36} {'median':>9} {'min':>9} {'max':>9}   runs")
    for k, s in summary.items():
        if "median" not in s:
            vals = " | ".join("/".join(fmt(x) for x in v) if v else "n/a" for v in s["values"])
            print(f"  {k:<36} {vals}")
            continue
        n = f"{s['n']}/{runs}" if s["n"] != runs else ""
        print(f"  {k:<36} {fmt(s['median']):>9} {fmt(s['min']):>9} {fmt(s['max']):>9}   {n}")
    for r in failed:
        print(f"  run {r['run']}: FAILED: {r['error']}")


# The figures: (figure, scenario of ours, metric; metric of Nebula's n).
COMPARED = [
    ("every pair pings", "a", "all pairs reachable"),
    ("alpha<->charlie direct through both NATs", "a", "direct alpha-charlie"),
    ("charlie<->delta direct on the LAN", "a", "charlie<->delta direct (LAN)"),
    ("all six links direct", "a", "all six links direct"),
    ("CPU s until every pair pings (4 boxes)", "a", "CPU s until every pair pings (4 boxes)"),
    ("  LAN direct after every pair pings", "a", "LAN direct after every pair pings"),
    ("  NAT direct after every pair pings", "a", "NAT direct after every pair pings"),
    ("restarted node reaches everyone again", "c", "charlie reaches all again"),
    ("a node joins: it and every node ping", "j", f"{JOINER} reaches every node"),
    ("a node joins: direct through both NATs", "j", "direct alpha-charlie"),
    (
        "a node joins: its CPU s until it pings all",
        "j",
        f"CPU s until {JOINER} reaches every node ({JOINER})",
    ),
    ("quiet after use: max dynamic node [B/s]", "d", "max dynamic node eth0 bytes/s"),
]


def fmt_range(s: dict[str, Any] | None) -> str:
    if not s or s.get("median") is None:
        return "n/a"
    return f"{s['median']:.2f} [{s['min']:.2f}-{s['max']:.2f}]"


def print_comparison(summaries: dict[str, dict[str, Any]]) -> None:
    """The issue's table (medians [range]; ratio ours/Nebula) and the start-up timeline."""
    ours_a, nebula = summaries.get("a", {}), summaries.get("n", {})
    print("\n== wg_netmanager and Nebula (medians [range]; times in s)")
    print(f"  {'figure':<42} {'wg_netmanager':>20} {'Nebula':>20} {'ratio':>6}")
    for figure, scenario, metric in COMPARED:
        ours = summaries.get(scenario, {}).get(metric)
        mirror = next((n for n, ours in NEBULA.items() if ours == scenario), None)
        theirs = None
        if mirror is not None and not figure.startswith(" "):
            theirs = summaries.get(mirror, {}).get(metric)
        ratio = ""
        if ours and theirs and ours.get("median") is not None and theirs.get("median"):
            ratio = f"{ours['median'] / theirs['median']:.2f}"
        if ours is None and theirs is None:
            continue
        print(f"  {figure:<42} {fmt_range(ours):>20} {fmt_range(theirs):>20} {ratio:>6}")
    other = summaries.get("o")
    if other:
        print("\n== this checkout and the other one (--against): medians [range]; times in s")
        print(f"  {'figure':<42} {'this':>20} {'other':>20} {'ratio':>6}")
        for figure, scenario, metric in COMPARED:
            if scenario != "a" or figure.startswith(" "):
                continue
            mine, theirs = ours_a.get(metric), other.get(metric)
            ratio = ""
            if mine and theirs and mine.get("median") is not None and theirs.get("median"):
                ratio = f"{mine['median'] / theirs['median']:.2f}"
            print(f"  {figure:<42} {fmt_range(mine):>20} {fmt_range(theirs):>20} {ratio:>6}")
    steps = [k.removeprefix("startup: ") for k in ours_a if k.startswith("startup: ")]
    if steps:
        print(
            "\n  start-up, slowest of the four daemons: s from its start, and its CPU s by then"
            " (medians [range])"
        )
        for step in steps:
            wall, cpu = ours_a[f"startup: {step}"], ours_a.get(f"startup cpu: {step}")
            print(f"    {step:<40} {fmt_range(wall):>20} {fmt_range(cpu):>20}")
        for name, summary in (("wg_netmanager", ours_a), ("Nebula", nebula)):
            ups = [summary.get(f"wg0 up {box}") for box in NODES]
            medians = [u["median"] for u in ups if u and u.get("median") is not None]
            if medians:
                print(f"    {'wg0 up (last box), ' + name:<40} {max(medians):>9.2f}")
    joined = summaries.get("j", {})
    steps = [k.removeprefix("startup: ") for k in joined if k.startswith("startup: ")]
    if steps:
        print(
            f"\n  start-up of the joining node ({JOINER}, j): s from its start; its CPU s by then"
        )
        for step in steps:
            wall, cpu = joined[f"startup: {step}"], joined.get(f"startup cpu: {step}")
            print(f"    {step:<40} {fmt_range(wall):>20} {fmt_range(cpu):>20}")


# --- main -----------------------------------------------------------------------


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


def git_state() -> dict[str, Any]:
    def git(*argv: str) -> str:
        try:
            res = subprocess.run(
                ["git", "-C", str(REPO_ROOT), *argv], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return res.stdout.strip()

    return {"head": git("rev-parse", "--short", "HEAD"), "dirty": git("status", "--short")}


def preflight(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        sys.exit("bench_mesh: needs root (network namespaces)")
    missing = [t for t in REQUIRED_TOOLS if which(t) is None]
    if missing:
        sys.exit(f"bench_mesh: missing tools: {', '.join(missing)}; run scripts/install.sh")
    nebula = set(NEBULA) & set(args.scenarios)
    if nebula and (which("nebula") is None or which("nebula-cert") is None):
        sys.exit(
            f"bench_mesh: scenario {','.join(sorted(nebula))} needs Nebula: run "
            "scripts/install.sh --nebula (or leave out n and q: --scenario a,b,c,d)"
        )


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3)")
    ap.add_argument(
        "--scenario", default="a,n,b,c,d,q", help="comma-separated, of a n b c d q j k (o)"
    )
    ap.add_argument(
        "--install",
        choices=("regular", "checkout"),
        default="regular",
        help="regular: a wheel installed into .venv-bench (what users run; the default); "
        "checkout: python -m wg_netmanager from this checkout",
    )
    ap.add_argument(
        "--python",
        metavar="PATH",
        help="the interpreter of the bench venvs (default: the distribution's /usr/bin/python3, "
        "which a user's 'python3 -m venv' uses, else this one)",
    )
    ap.add_argument(
        "--against",
        metavar="DIR",
        help="also run scenario o: scenario a with another checkout of wg_netmanager (a git "
        "worktree, e.g. of an older commit), installed the same way, alternating with a",
    )
    ap.add_argument(
        "--quiet-daemons",
        action="store_true",
        help="run the daemons at the default log level (no start-up timeline)",
    )
    ap.add_argument("--keep-logs", metavar="DIR", help="keep daemon logs (-vv) and probe data")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--symmetric", action="store_true", help="alpha's firewall: symmetric NAT")
    ap.add_argument(
        "--nebula-punch-delay",
        type=float,
        default=None,
        metavar="S",
        help="Nebula's punchy.delay (default: Nebula's own, 1 s); 0 is Nebula at its fastest",
    )
    ap.add_argument(
        "--direct-wait",
        type=float,
        default=3.0,
        help="a, b, c: after all pairs answer, wait up to this long for all links to be "
        "direct (default 3 s)",
    )
    args = ap.parse_args()
    scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad or not scenarios:
        ap.error(
            f"unknown scenario(s): {', '.join(bad) or '(none)'}; choose from a,n,b,c,d,q,j,k,o"
        )
    if not 1 <= args.runs <= 50:
        ap.error("--runs must be within 1..50")
    if not 0 <= args.direct_wait <= 60:
        ap.error("--direct-wait must be within 0..60")
    if args.against and "o" not in scenarios:
        scenarios.insert(scenarios.index("a") + 1 if "a" in scenarios else 0, "o")
    if "o" in scenarios and not args.against:
        ap.error("scenario o needs --against DIR")
    args.scenarios = scenarios
    return args


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


HEADLINES = {
    "a": "all pairs reachable",
    "o": "all pairs reachable",
    "n": "all pairs reachable",
    "b": "all pairs reachable",
    "c": "charlie reaches all again",
    "d": "max dynamic node eth0 bytes/s",
    "q": "max dynamic node eth0 bytes/s",
    "j": f"{JOINER} reaches every node",
    "k": f"{JOINER} reaches every node",
}


def schedule(scenarios: list[str], runs: int) -> list[tuple[str, int]]:
    """Run i of every scenario before run i + 1 of any: a and n alternate, and a
    change of load on the machine falls on all of them alike."""
    return [(scenario, i) for i in range(1, runs + 1) for scenario in scenarios]


def main() -> int:
    args = parse_args()
    preflight(args)
    if args.keep_logs:
        Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
    program: list[str] = []
    programs: dict[str, list[str]] = {}
    if args.against:
        print(f"installing {args.against} into {BENCH_VENV}-against (a wheel) ...", file=sys.stderr)
        programs["o"] = regular_install(
            Path(f"{BENCH_VENV}-against"), Path(args.against), args.python
        )
    if args.install == "regular" and set(args.scenarios) - set(NEBULA) - {"o"}:
        print(f"installing this checkout into {BENCH_VENV} (a wheel) ...", file=sys.stderr)
        program = regular_install(interpreter=args.python)
    began = time.monotonic()
    load0 = loadavg()
    if load0 > 0.5:
        print(
            f"warning: load average {load0:.2f} before starting: other work on this machine "
            f"({os.cpu_count()} CPUs) will slow the daemons' start-up and skew the times",
            file=sys.stderr,
        )
    all_results: dict[str, list[dict[str, Any]]] = {s: [] for s in args.scenarios}
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="bench_mesh.") as tmp:
        base = Path(tmp)
        for scenario, i in schedule(args.scenarios, args.runs):
            started = time.monotonic()
            result: dict[str, Any] = {"run": i}
            run = Run(args, scenario, i, base, programs.get(scenario, program))
            try:
                with run:
                    result["metrics"] = RUNNERS[scenario](run)
            except (
                AssertionError,  # a FaultMesh wait that timed out
                BenchError,
                RuntimeError,
                subprocess.SubprocessError,
                OSError,
            ) as exc:
                result["error"] = str(exc)
                print(f"[{scenario}{i}] FAILED: {exc}\n{run.log_tails()}", file=sys.stderr)
            result["seconds"] = round(time.monotonic() - started, 2)
            result["loadavg_after"] = loadavg()
            all_results[scenario].append(result)
            headline = HEADLINES[scenario]
            value = result.get("metrics", {}).get(headline)
            print(
                f"[{scenario}{i}] {headline}: {fmt(value)}  (run took {result['seconds']} s)",
                file=sys.stderr,
                flush=True,
            )
    summaries = {s: summarize(results) for s, results in all_results.items()}
    for scenario in args.scenarios:
        print_table(scenario, all_results[scenario], summaries[scenario])
    print_comparison(summaries)
    total = time.monotonic() - began
    print(f"\ntotal {total:.1f} s; times in s from the (re)start of the measured daemon(s)")
    print(f"load average before {load0:.2f}, after {loadavg():.2f} ({os.cpu_count()} CPUs)")
    if set(NEBULA) & set(args.scenarios):
        delay = args.nebula_punch_delay
        print(f"Nebula's punchy.delay: {'its default (1 s)' if delay is None else f'{delay:g} s'}")
    ran = " ".join(program) if program else "python -m wg_netmanager (this checkout)"
    print(f"wg_netmanager: {ran}")
    interpreter = venv_base(BENCH_VENV) if program else sys.executable
    if program:
        print(f"  its interpreter: {interpreter} ({python_version(BENCH_VENV)})")
    if args.json:
        doc = {
            "meta": {
                "runs": args.runs,
                "symmetric": args.symmetric,
                "nebula_punch_delay": args.nebula_punch_delay,
                "install": args.install,
                "interpreter": interpreter,
                "probe_interval": PROBING.interval,
                "poll_interval": POLL,
                "poll_interval_join": POLL_JOIN,
                "total_seconds": round(total, 1),
                "git": git_state(),
                "loadavg_before": load0,
                "cpus": os.cpu_count(),
            },
            "scenarios": {
                s: {"description": SCENARIOS[s], "runs": all_results[s], "summary": summaries[s]}
                for s in args.scenarios
            },
        }
        Path(args.json).write_text(json.dumps(doc, indent=1, default=str))
    failed = sum(1 for rs in all_results.values() for r in rs if r.get("error"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
