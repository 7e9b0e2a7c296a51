"""One /run, several network namespaces: every daemon keeps its own control
socket and peers file, and ``status`` reaches the daemon of its own namespace.

The fast tests fake the namespace inodes; the ``netns`` test runs two real
daemons for ``wg0`` in two namespaces that share the host's /run (only
wireguard-go's /run/wireguard is private to each, as it must be).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import require_netns, unique_prefix, wait_until
from wg_netmanager import control

REPO = Path(__file__).resolve().parent.parent
HOST_INODE = control.INIT_NETNS_INODE


def fake_namespaces(monkeypatch: pytest.MonkeyPatch, own: int, init: int | None) -> None:
    """This process's network namespace has inode ``own``, PID 1's ``init``
    (None: not allowed to look)."""
    ids = {"self": (4, own), "1": None if init is None else (4, init)}
    monkeypatch.setattr(control, "_netns_id", ids.get)


def test_host_namespace_keeps_the_plain_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    # Linux 6.18 and later: the host's namespace has a fixed inode; PID 1 need not be readable.
    fake_namespaces(monkeypatch, own=HOST_INODE, init=None)
    assert control.socket_path("wg0") == str(run / "wg0.sock")
    assert control.peers_path("wg0") == str(run / "wg0.peers")
    # Older kernels, or a container's own namespace: the one PID 1 is in.
    fake_namespaces(monkeypatch, own=4026531992, init=4026531992)
    assert control.socket_path("wg0") == str(run / "wg0.sock")


def test_other_namespaces_are_keyed_by_inode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    fake_namespaces(monkeypatch, own=4026532281, init=HOST_INODE)
    assert control.socket_path("wg0") == str(run / "wg0.netns-4026532281.sock")
    assert control.peers_path("wg0") == str(run / "wg0.netns-4026532281.peers")
    # Not allowed to look at PID 1: keyed all the same (never shared by two daemons).
    fake_namespaces(monkeypatch, own=4026532282, init=None)
    assert control.socket_path("wg1") == str(run / "wg1.netns-4026532282.sock")


def test_this_process_is_in_the_host_namespace() -> None:
    # What the tests above assume of the machine the suite runs on.
    assert control.netns_key() is None


# ---------------------------------------------------------------- two real daemons

NETWORK_YAML = """\
network:
  sharedKey: 8CY3eUZz0jNqSi1bhPk9NUFyXyb2EaXGvOyPtgd8ADs=
  subnet: 10.1.1.0/24
peers:
  - endPoint: 127.0.0.1:50001
    adminPort: 50501
    wgIp: 10.1.1.1
"""

# wireguard-go keeps its sockets in /var/run/wireguard (= /run/wireguard): a
# private tmpfs there, in a mount namespace of its own, and nothing else private.
IN_NAMESPACE = (
    "mkdir -p /run/wireguard && exec unshare -m --propagation private sh -c "
    '\'mount -t tmpfs -o mode=0700 tmpfs /run/wireguard && exec "$@"\' sh "$@"'
)


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env["PATH"] = env.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    # The machine's own /run/wg_netmanager, shared by both namespaces: the point of the test.
    env.pop(control.RUN_DIR_ENV, None)
    return env


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=20, env=_env(), check=False
    )


def _netns_inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino


@contextlib.contextmanager
def namespaces(*names: str) -> Iterator[None]:
    made: list[str] = []
    try:
        for name in names:
            result = _ip("netns", "add", name)
            assert result.returncode == 0, result.stderr
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        yield
    finally:
        for name in made:
            # Whatever our daemons left running there (their wireguard-go) ends with them.
            for pid in _ip("netns", "pids", name).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", name)


def _status(ns: str) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "wg_netmanager"]
    return subprocess.run(
        [*argv, "status", "--json", "wg0"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
        check=False,
    )


def _status_doc(ns: str) -> dict[str, Any] | None:
    result = _status(ns)
    if result.returncode != 0:
        return None
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


@pytest.mark.netns
def test_two_daemons_for_wg0_in_two_namespaces_sharing_run(tmp_path: Path) -> None:
    require_netns()
    prefix = unique_prefix("ctl")
    boxes = {f"{prefix}-left": "left", f"{prefix}-right": "right"}
    config = tmp_path / "network.yaml"
    config.write_text(NETWORK_YAML)
    config.chmod(0o600)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    sockets: dict[str, str] = {}
    leftovers: list[str] = []
    with namespaces(*boxes):
        try:
            for ns, name in boxes.items():
                key = f"/run/wg_netmanager/wg0.netns-{_netns_inode(ns)}"
                sockets[ns] = f"{key}.sock"
                leftovers += [sockets[ns], f"{key}.peers"]
                daemon = [sys.executable, "-m", "wg_netmanager", "-c", str(config)]
                daemon += ["--no-tui", "-vv", "wg0", "10.1.1.1", name]
                log = (tmp_path / f"{name}.log").open("wb")
                procs[ns] = subprocess.Popen(
                    ["ip", "netns", "exec", ns, "sh", "-c", IN_NAMESPACE, "sh", *daemon],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=_env(),
                )
                log.close()
            docs: dict[str, dict[str, Any]] = {}

            def both_answer() -> bool:
                for ns in boxes:
                    doc = _status_doc(ns)
                    if doc is not None:
                        docs[ns] = doc
                return len(docs) == 2

            assert wait_until(both_answer, timeout=30, interval=0.5), _logs(tmp_path)
            for ns, name in boxes.items():
                assert (docs[ns]["name"], docs[ns]["interface"]) == (name, "wg0")
            # Each daemon's own socket and peers file (statics write theirs every second).
            for path in leftovers:
                assert wait_until(lambda p=path: os.path.exists(p), timeout=10), path
            # The host's namespace has no wg0 daemon of ours: neither is found from there.
            host = subprocess.run(
                [sys.executable, "-m", "wg_netmanager", "status", "--json", "wg0"],
                capture_output=True,
                text=True,
                timeout=30,
                env=_env(),
                check=False,
            )
            if host.returncode == 0:
                assert json.loads(host.stdout)["name"] not in boxes.values()
            else:
                assert "no daemon is running in this network namespace" in host.stderr
            logs = _logs(tmp_path)
            assert "in use by another daemon" not in logs, logs
            assert "'wg_netmanager status' is unavailable" not in logs, logs
            # Stopping one leaves the other reachable; each removes only its own socket.
            for ns, proc in procs.items():
                os.kill(proc.pid, signal.SIGTERM)
                assert proc.wait(timeout=10) == 0, _logs(tmp_path)
                assert not os.path.exists(sockets[ns])
                assert _status_doc(ns) is None
                for other in (o for o, p in procs.items() if p.poll() is None):
                    doc = _status_doc(other)
                    assert doc is not None and doc["name"] == boxes[other]
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait(timeout=10)
            for path in leftovers:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(tmp_path.glob("*.log")))
