"""Gateways in namespaces, for tests and benchmarks: the working example with
a lamp that runs no daemon on charlie's and delta's home LAN (``lan-device``)
and a web host that only beta reaches (``exit-net``), network.yaml with
``gateways:`` (charlie, then delta, for the LAN; beta as exit node).

``PingLog`` pings from a box in the background (``ping -D``, every
``interval``) and reads back when answers came: the longest silence is a
failover's gap. ``host_state`` is everything of ours a box could keep after
a stop (routes, rules, nftables tables, sysctls), to compare with the state
before the start.

Every wait is bounded; the testbed goes away on leaving ``gateway_mesh``
whatever happens.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.faults import NODES, FaultMesh
from tests.helpers import SHARED_KEY_B64
from tests.netns import Testbed, network_yaml, require_netns, script_path, unique_prefix
from wg_netmanager.forwarding import route_table

LAN = "192.168.1.0/24"
LAMP = "192.168.1.10"  # on the home LAN; runs no daemon
WEB = "203.0.113.80"  # behind beta: reached only through it as an exit node
ALPHA_ROUTER = "192.168.2.1"  # alpha's own LAN (its firewall)
GATEWAYS = f"""\
gateways:
  - wgIp: {NODES["charlie"]}
    routes: [{LAN}]
  - wgIp: {NODES["delta"]}
    routes: [{LAN}]
  - wgIp: {NODES["beta"]}
    routes: [0.0.0.0/0]
"""
# What a box may keep of ours after a stop: compared before and after.
SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv4.conf.eth0.forwarding",
    "net.ipv4.conf.all.send_redirects",
    "net.ipv4.conf.all.src_valid_mark",
)


def gateway_config(**timers: float) -> str:
    return network_yaml(SHARED_KEY_B64, links=None, **timers) + GATEWAYS


class GatewayMesh(FaultMesh):
    """The working example's daemons, a lamp and a web host; pings in the background."""

    def __init__(self, tb: Testbed, tmp: Path, config_text: str) -> None:
        super().__init__(tb, tmp, dict(NODES), config_text)
        self.ping_logs: dict[str, PingLog] = {}

    def route_to(self, box: str, network: str) -> str | None:
        """``box``'s own route (our route table) for ``network`` (``via X``,
        or "direct"); None if none."""
        table = str(route_table("wg0"))
        out = self.tb.run(box, "ip", "-4", "route", "show", "table", table).stdout
        for line in out.splitlines():
            fields = line.split()
            if fields[:1] == [network]:
                return f"via {fields[fields.index('via') + 1]}" if "via" in fields else "direct"
        return None

    def allowed_ips(self, box: str) -> set[str]:
        """Every network in any AllowedIPs of ``box``'s WireGuard."""
        out = self.tb.run(box, "wg", "show", "wg0", "allowed-ips").stdout
        return {n for line in out.splitlines() for n in line.split()[1:]}

    def reaches(self, box: str, address: str) -> bool:
        return self.tb.ping(box, address, timeout=1.0)

    def kill_box(self, box: str) -> None:
        """``box``'s machine dies: its daemon is killed (no bye) and its
        WireGuard goes with it. What the daemon set up on the host stays."""
        self.tb.stop(self.procs[box], sig=9)
        self.tb.run(box, "ip", "link", "del", "wg0")

    def ping_log(self, box: str, address: str, interval: float = 0.05) -> PingLog:
        log = PingLog(self.tb, box, address, self.tmp / f"ping-{box}-{address}.log", interval)
        self.ping_logs[f"{box}-{address}"] = log
        return log

    def stop_pings(self) -> None:
        for log in self.ping_logs.values():
            log.stop()
        self.ping_logs = {}


class PingLog:
    """``ping -D -O -i INTERVAL ADDRESS`` in a box, its output in a file."""

    def __init__(
        self, tb: Testbed, box: str, address: str, path: Path, interval: float = 0.05
    ) -> None:
        self.tb, self.path = tb, path
        # stdbuf: ping writes a line at a time, not 4 KiB blocks into the file.
        argv = [
            "stdbuf",
            "-oL",
            "ping",
            "-n",
            "-D",
            "-O",
            "-W",
            "1",
            "-i",
            f"{interval:g}",
            address,
        ]
        self.proc: subprocess.Popen[bytes] = tb.spawn(box, argv, path)

    def answers(self) -> list[float]:
        """Wall-clock times (``time.time()``) of the answers so far."""
        with contextlib.suppress(OSError):
            text = self.path.read_text(errors="replace")
            return [float(m) for m in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", text, re.M)]
        return []

    def answered_after(self, when: float) -> bool:
        return any(t > when for t in self.answers())

    def longest_gap(self, after: float = 0.0, before: float = float("inf")) -> float:
        """The longest silence between two answers in (after, before]."""
        times = [t for t in self.answers() if after <= t <= before]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def stop(self) -> None:
        self.tb.stop(self.proc, timeout=3)


def host_state(tb: Testbed, box: str) -> dict[str, str]:
    """What of ours a box could keep: routes with our proto in any table,
    the policy rules, nftables tables, the sysctls we may change."""
    state = {
        "routes": tb.run(box, "ip", "-4", "route", "show", "table", "all", "proto", "57").stdout,
        "rules": tb.run(box, "ip", "-4", "rule", "show").stdout,
        "nft": tb.run(box, "nft", "list", "tables").stdout,
    }
    for key in SYSCTLS:
        state[key] = tb.run(box, "sysctl", "-n", key).stdout.strip()
    return state


@contextlib.contextmanager
def gateway_mesh(
    tmp: Path, *, symmetric: bool = False, verbose: bool = True, **timers: float
) -> Iterator[GatewayMesh]:
    """A fresh working example (``symmetric``: alpha's NAT is symmetric, so it
    stays relayed) with the lamp and the web host, daemons configured, not started."""
    require_netns()
    tb = Testbed(script_path("working_example"), unique_prefix("gw"))
    old = os.environ.pop("SYMMETRIC", None)
    try:
        if symmetric:
            os.environ["SYMMETRIC"] = "1"
        tb.up()
    finally:
        os.environ.pop("SYMMETRIC", None)
        if old is not None:
            os.environ["SYMMETRIC"] = old
    mesh = GatewayMesh(tb, tmp, gateway_config(**timers))
    mesh.verbose = verbose
    try:
        mesh.fault("lan-device")
        mesh.fault("exit-net")
        yield mesh
    except BaseException:
        print(mesh.logs())
        raise
    finally:
        mesh.stop_pings()
        tb.down()
