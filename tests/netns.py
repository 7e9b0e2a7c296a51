"""Namespace testbeds from Python: ``Testbed`` and ``Daemons``.

The testbeds are the shell scripts in ``ns/`` (e.g. ``ns/three_boxes.sh``);
:class:`Testbed` drives one, :class:`Daemons` runs wg_netmanager in its boxes
and reads what they see (routes, peers, pings)::

    from tests.netns import Testbed, require_netns, script_path, unique_prefix

    require_netns()  # skip (locally) or fail (CI) without root / tools
    with Testbed(script_path("three_boxes"), unique_prefix()) as tb:
        assert tb.ping("charlie", "198.51.100.1")
        proc = tb.spawn("alice", ["wireguard-go", "-f", "wg0"], tmp_path / "wg.log")
        ...
        tb.stop(proc)

Everything is bounded in time; ``down()`` always runs on leaving the ``with``
block, stops the processes started with ``spawn()`` and removes the
namespaces (also killing whatever else still runs inside them).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import pytest

from tests import procfs
from tests.helpers import SHARED_KEY_B64
from tests.waits import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
NS_DIR = REPO_ROOT / "ns"

#: Tools every namespace test needs.
REQUIRED_TOOLS = ("wireguard-go", "wg", "ip", "nft", "ping", "unshare")

_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_counter = itertools.count(1)


def in_ci() -> bool:
    """True when running under CI (env var CI set to something truthy)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _missing(reason: str) -> None:
    """Skip locally, but fail loudly in CI where the precondition must hold."""
    if in_ci():
        pytest.fail(f"precondition missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        _missing("needs root (network namespaces); run `sudo scripts/test.sh`")


def which(tool: str) -> str | None:
    """shutil.which that also looks in the sbin directories."""
    path = os.environ.get("PATH", "") + os.pathsep + _SBIN_PATH
    return shutil.which(tool, path=path)


def require_tools(*tools: str) -> None:
    missing = [t for t in (tools or REQUIRED_TOOLS) if which(t) is None]
    if missing:
        _missing(f"missing tools: {', '.join(missing)}; run scripts/install.sh")


def require_netns() -> None:
    """All preconditions of a namespace test: root and the tools."""
    require_root()
    require_tools()


def script_path(name: str) -> str:
    """Path of testbed script ``ns/<name>.sh``."""
    return str(NS_DIR / f"{name}.sh")


def unique_prefix(base: str = "t") -> str:
    """A testbed prefix unique among concurrently running processes."""
    return f"{base}{os.getpid() % 100000}x{next(_counter)}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + os.pathsep + _SBIN_PATH
    # Boxes have their own /run/wg_netmanager (see ns/lib.sh); the in-process
    # override of the test session must not leak into them.
    env.pop("WG_NETMANAGER_RUN_DIR", None)
    return env


class Testbed:
    """One instance of a testbed script, e.g. ``ns/three_boxes.sh``.

    ``prefix`` names the namespaces (``<prefix>-<box>``); use
    :func:`unique_prefix` so parallel runs do not clash.
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, script: str, prefix: str) -> None:
        self.script = str(script)
        self.prefix = prefix
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    # -- life cycle ------------------------------------------------------

    def _script(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", self.script, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_env(),
            check=False,
        )

    def up(self, timeout: float = 60.0) -> None:
        """Build the testbed (after removing any leftover with this prefix).

        On failure everything is removed again and RuntimeError raised.
        """
        try:
            res = self._script("up", self.prefix, timeout=timeout)
        except BaseException:
            self.down()
            raise
        if res.returncode != 0:
            self.down()
            raise RuntimeError(
                f"{self.script} up {self.prefix} failed ({res.returncode}):\n"
                f"{res.stdout}{res.stderr}"
            )

    def down(self, timeout: float = 60.0) -> None:
        """Stop spawned processes and remove the testbed.  Idempotent."""
        procs, self._procs = self._procs, []
        for proc in procs:
            if proc.poll() is None:
                self.stop(proc, timeout=3)
        logs, self._logs = self._logs, []
        for f in logs:
            f.close()
        res = self._script("down", self.prefix, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(
                f"{self.script} down {self.prefix} failed ({res.returncode}):\n"
                f"{res.stdout}{res.stderr}"
            )

    def __enter__(self) -> Testbed:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    # -- introspection ---------------------------------------------------

    def ns(self, box: str) -> str:
        """Network namespace name of ``box``."""
        return f"{self.prefix}-{box}"

    def state_dir(self, box: str) -> Path:
        """``box``'s state directory on the host (see ns/lib.sh): its
        ``wireguard`` subdirectory is the box's /run/wireguard."""
        return Path(os.environ.get("TB_STATE_ROOT", "/run/wgnm-testbed")) / self.prefix / box

    def namespaces(self) -> list[str]:
        """This testbed's namespaces that currently exist."""
        res = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, env=_env()
        )
        names = [line.split()[0] for line in res.stdout.splitlines() if line.strip()]
        return sorted(n for n in names if n.startswith(self.prefix + "-"))

    def pids(self, box: str) -> list[int]:
        """PIDs of the processes living in ``box``'s network namespace."""
        res = subprocess.run(
            ["ip", "netns", "pids", self.ns(box)],
            capture_output=True,
            text=True,
            timeout=10,
            env=_env(),
        )
        return [int(x) for x in res.stdout.split()]

    # -- running things in boxes -----------------------------------------

    def box_cmd(self, box: str, *argv: str) -> list[str]:
        """argv that runs ``argv`` in ``box`` (network namespace + private
        mount namespace with the box's own /run/wireguard)."""
        return ["bash", self.script, "exec", self.prefix, box, *map(str, argv)]

    def run(
        self,
        box: str,
        *argv: str,
        timeout: float = 30.0,
        check: bool = False,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in ``box``; captures text stdout/stderr."""
        return subprocess.run(
            self.box_cmd(box, *argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            input=input,
            env=_env(),
        )

    def ping(self, box: str, ip: str, timeout: float = 1.0) -> bool:
        """One ICMP echo from ``box`` to ``ip``; True if answered."""
        wait = max(1, round(timeout))
        try:
            res = self.run(box, "ping", "-n", "-q", "-c1", f"-W{wait}", ip, timeout=wait + 10)
        except subprocess.TimeoutExpired:
            return False
        return res.returncode == 0

    def spawn(
        self,
        box: str,
        argv: Sequence[str],
        logfile: str | os.PathLike[str],
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in ``box``.

        stdout and stderr go to ``logfile``; stdin is /dev/null.  The process
        gets its own session/process group, and because the testbed's
        ``exec`` replaces itself all the way down, ``proc.pid`` is the PID of
        the command itself.  Stopped by :meth:`stop` or at :meth:`down`.
        """
        log = open(logfile, "ab")  # noqa: SIM115 - closed in down()
        self._logs.append(log)
        full_env = _env()
        if env:
            full_env.update(env)
        proc = subprocess.Popen(
            self.box_cmd(box, *argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=full_env,
        )
        self._procs.append(proc)
        return proc

    def stop(
        self, proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 5.0
    ) -> int:
        """Signal ``proc`` by PID, wait up to ``timeout`` s, then SIGKILL its
        process group (its own, see :meth:`spawn`).  Returns the exit code
        (negative signal number if killed by a signal)."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return proc.wait(timeout=10)
        return proc.returncode


def network_yaml(
    shared_key: str = SHARED_KEY_B64,
    statics: int = 1,
    /,
    *,
    links: str | None = None,
    **timers: float,
) -> str:
    """The testbeds' network.yaml: beta/alice static at 198.51.100.1, 10.1.1.0/24
    (``statics`` > 1: the k-th at 198.51.100.k, wg IP 10.1.1.k, default ports).

    ``timers`` use the camelCase names of network.yaml (``pingInterval=1``);
    ``links`` is network.links (None: not written, the default).
    """
    links_line = f"  links: {links}\n" if links else ""
    peers = "".join(
        f"  - endPoint: 198.51.100.{k}:{50000 + k}\n    adminPort: {50500 + k}\n"
        f"    wgIp: 10.1.1.{k}\n"
        for k in range(1, statics + 1)
    )
    text = f"""\
network:
  sharedKey: {shared_key}
  subnet: 10.1.1.0/24
{links_line}peers:
{peers}"""
    if timers:
        text += "timers:\n" + "".join(f"  {name}: {value:g}\n" for name, value in timers.items())
    return text


class Daemons:
    """wg_netmanager daemons in the boxes of a testbed, logs in ``tmp``.

    ``nodes`` maps box -> wg IP; box N's k-th start logs to ``{box}-{k}.log``.
    Daemons run headless, with ``-vv`` unless ``verbose`` is False (a
    benchmark's figures are for the default log level). ``program`` is the
    command of an installed wg_netmanager (e.g. a virtualenv's console
    script); by default this checkout runs, as ``python -m wg_netmanager``.
    """

    def __init__(
        self,
        tb: Testbed,
        tmp: Path,
        nodes: dict[str, str],
        config_text: str,
        *,
        verbose: bool = True,
        program: Sequence[str] = (),
    ) -> None:
        self.tb = tb
        self.tmp = tmp
        self.nodes = nodes
        self.verbose = verbose
        self.program = list(program)
        self.config = tmp / "network.yaml"
        self.config.write_text(config_text)
        self.config.chmod(0o600)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._starts: dict[str, int] = {}

    # -- the daemons ------------------------------------------------------

    def start(
        self,
        box: str,
        *prefix: str,
        options: Sequence[str] = (),
        config: Path | None = None,
        name: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start the daemon in ``box``; ``prefix`` wraps the command, ``options``
        are added to the daemon's own (e.g. ``-e``); ``config``: a network.yaml
        of its own instead of everyone's; ``name``: the node's (the box's by default)."""
        network = self.config if config is None else config
        program = self.program or [sys.executable, "-m", "wg_netmanager"]
        argv = [*prefix, *program, "-c", str(network)]
        argv += ["--no-tui", *(["-vv"] if self.verbose else []), *options]
        argv += ["wg0", self.nodes[box], name or box]
        count = self._starts.get(box, 0)
        self._starts[box] = count + 1
        # An installed program must not see this checkout on its path.
        env = None if self.program else {"PYTHONPATH": str(REPO_ROOT)}
        proc = self.tb.spawn(box, argv, self.tmp / f"{box}-{count}.log", env=env)
        self.procs[box] = proc
        return proc

    def start_all(self, *prefix: str) -> None:
        for box in self.nodes:
            self.start(box, *prefix)

    def stop_all(self, sig: int = signal.SIGTERM) -> dict[str, int]:
        """Signal every daemon at once (they shut down in parallel); their exit codes."""
        procs = {box: p for box, p in self.procs.items() if p.poll() is None}
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        codes = {}
        for box, proc in procs.items():
            try:
                codes[box] = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                codes[box] = self.tb.stop(proc, sig=signal.SIGKILL, timeout=5)
        return codes

    def cpu_seconds(self, box: str) -> float:
        """User + system CPU time the daemon in ``box`` used so far."""
        return procfs.cpu_seconds(self.procs[box].pid)

    def status(self, box: str) -> dict[str, Any]:
        """``wg_netmanager status --json`` in ``box``."""
        argv = [sys.executable, "-m", "wg_netmanager", "status", "--json", "wg0"]
        res = self.tb.run(box, "env", f"PYTHONPATH={REPO_ROOT}", *argv, timeout=15)
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert isinstance(doc, dict)
        return doc

    def log(self, box: str, start: int = 0) -> str:
        return (self.tmp / f"{box}-{start}.log").read_text()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(self.tmp.glob("*.log")))

    # -- what the boxes see -----------------------------------------------

    def routes(self, box: str) -> str:
        """The daemon's routes (proto 57) on wg0 in ``box``, as ``ip route`` prints them."""
        return self.tb.run(box, "ip", "-4", "route", "show", "dev", "wg0", "proto", "57").stdout

    def peers(self, box: str) -> list[str]:
        return self.tb.run(box, "wg", "show", "wg0", "peers").stdout.split()

    def route(self, a: str, b: str) -> str | None:
        """How ``a`` routes to ``b``'s wg IP: "direct", "via <ip>", or None if
        it has no route (or more than one) to it."""
        lines = [line.split() for line in self.routes(a).splitlines()]
        found = [fields for fields in lines if fields[:1] == [self.nodes[b]]]
        if len(found) != 1:
            return None
        fields = found[0]
        return f"via {fields[fields.index('via') + 1]}" if "via" in fields else "direct"

    def direct(self, a: str, b: str) -> bool:
        return self.route(a, b) == "direct" and self.route(b, a) == "direct"

    def all_direct(self) -> bool:
        return all(self.direct(a, b) for a, b in itertools.combinations(self.nodes, 2))

    def pings(self, a: str, b: str) -> bool:
        return self.tb.ping(a, self.nodes[b], timeout=1.0)

    def all_ping(self, boxes: list[str] | None = None) -> bool:
        names = boxes or list(self.nodes)
        return all(self.pings(a, b) for a, b in itertools.permutations(names, 2))

    def wait(self, predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> float:
        """Seconds until ``predicate`` held (bounded); AssertionError with the logs if never."""
        started = time.monotonic()
        assert wait_until(predicate, timeout=timeout, interval=interval), self.logs()
        return time.monotonic() - started


D = TypeVar("D", bound=Daemons)


@contextlib.contextmanager
def daemons_in(
    script: str, tmp: Path, nodes: dict[str, str], config_text: str, kind: type[D]
) -> Iterator[D]:
    """A fresh testbed with ``kind`` (a :class:`Daemons`); on failure the logs are printed."""
    require_netns()
    with Testbed(script_path(script), unique_prefix()) as tb:
        daemons = kind(tb, tmp, nodes, config_text)
        try:
            yield daemons
        except BaseException:
            print(daemons.logs())
            raise
