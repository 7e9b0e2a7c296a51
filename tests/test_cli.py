"""Command line: precedence, port defaults, check/genkey/status/run and error output."""

from __future__ import annotations

import base64
import gc
import os
import socket
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import SHARED_KEY_B64, in_a_fresh_interpreter
from wg_netmanager import cli, control, daemon
from wg_netmanager.config import Settings

KEY = SHARED_KEY_B64
NETWORK = f"""\
network:
  sharedKey: {KEY}
  subnet: 10.1.1.0/24
peers:
  - endPoint: vps.example.org:50001
    adminPort: 50000
    wgIp: 10.1.1.1
timers:
  deadAfter: 5
"""
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    net = tmp_path / "net.yaml"
    net.write_text(NETWORK)
    net.chmod(0o600)
    (tmp_path / "peer.yaml").write_text("# sets nothing\n")
    return {"net": str(net), "peer": str(tmp_path / "peer.yaml")}


def settings_for(files: dict[str, str], *argv: str) -> Settings:
    args = cli.docopt(cli.USAGE, ["-c", files["net"], "-p", files["peer"], *argv])
    return cli.build_settings(args)


def write_peer(files: dict[str, str], text: str) -> None:
    Path(files["peer"]).write_text(text)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("wg_netmanager: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---------------------------------------------------------------- settings


def test_dynamic_node_port_defaults(files: dict[str, str]) -> None:
    s = settings_for(files, "wg7", "10.1.1.16", "bob")
    assert (s.interface, s.wg_ip, s.name) == ("wg7", IPv4Address("10.1.1.16"), "bob")
    assert (s.wg_port, s.admin_port) == (50016, 50516)
    assert not s.is_static and not s.existing_interface and not s.hopping
    assert (s.verbosity, s.logfile) == (0, None)
    assert s.network.timers.dead_after == 5


def test_static_node_uses_network_yaml_ports(files: dict[str, str]) -> None:
    s = settings_for(files, "wg0", "10.1.1.1", "alice")
    assert s.is_static and (s.wg_port, s.admin_port) == (50001, 50000)


def test_port_options_override(files: dict[str, str]) -> None:
    s = settings_for(files, "-w", "40000", "-u", "40001", "wg0", "10.1.1.1", "alice")
    assert (s.wg_port, s.admin_port) == (40000, 40001)
    s = settings_for(files, "--admin-port", "40001", "wg0", "10.1.1.16", "bob")
    assert (s.wg_port, s.admin_port) == (50016, 40001)


def test_options(files: dict[str, str]) -> None:
    s = settings_for(
        files, "-e", "-H", "-vv", "-v", "--logfile", "/tmp/x.log", "--no-tui", "a", "10.1.1.9", "c"
    )
    assert s.existing_interface and s.hopping and not s.tui
    assert (s.verbosity, s.logfile) == (3, "/tmp/x.log")


def test_peer_yaml_supplies_everything(files: dict[str, str]) -> None:
    write_peer(files, "name: carol\nwgIp: 10.1.1.20\nwgInterface: wgx\nexistingInterface: true\n")
    s = settings_for(files)
    assert (s.interface, s.wg_ip, s.name, s.existing_interface) == (
        "wgx",
        IPv4Address("10.1.1.20"),
        "carol",
        True,
    )
    assert (s.wg_port, s.admin_port) == (50020, 50520)


def test_mobile_from_the_command_line_or_peer_yaml(files: dict[str, str]) -> None:
    assert not settings_for(files, "wg0", "10.1.1.16", "bob").mobile
    assert settings_for(files, "--mobile", "wg0", "10.1.1.16", "bob").mobile
    write_peer(files, "name: carol\nwgIp: 10.1.1.20\nmobile: true\n")
    assert settings_for(files).mobile


def test_a_static_node_cannot_be_mobile(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("-c", files["net"], "-p", files["peer"], "check")
    code, out, err = run(capsys, *argv, "--mobile", "wg0", "10.1.1.1", "alice")
    assert_one_line_error(code, err, "command line: --mobile", "10.1.1.1", "static", "leave out")
    assert out == ""
    write_peer(files, "mobile: true\n")
    code, out, err = run(capsys, *argv, "wg0", "10.1.1.1", "alice")
    assert_one_line_error(code, err, f"{files['peer']}: mobile", "cannot be mobile", "false")


def test_check_says_mobile(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("-c", files["net"], "-p", files["peer"], "check", "--mobile", "wg3", "10.1.1.16", "b")
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "dynamic, mobile" in out


def test_interface_defaults_to_wg0(files: dict[str, str]) -> None:
    write_peer(files, "name: carol\nwgIp: 10.1.1.20\n")
    assert settings_for(files).interface == "wg0"


def test_command_line_beats_peer_yaml(files: dict[str, str]) -> None:
    write_peer(files, "name: carol\nwgIp: 10.1.1.20\nwgInterface: wgx\n")
    s = settings_for(files, "wg9", "10.1.1.30", "dave")
    assert (s.interface, s.wg_ip, s.name) == ("wg9", IPv4Address("10.1.1.30"), "dave")


def test_missing_default_peer_file_is_fine(
    files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    os.unlink(files["peer"])
    monkeypatch.setattr(cli, "DEFAULT_PEER_PATH", files["peer"])
    assert settings_for(files, "wg0", "10.1.1.16", "bob").name == "bob"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["wg0", "10.2.0.1", "bob"], ["command line: <wg_ip>", "outside subnet", "net.yaml"]),
        (["wg0", "10.1.1.255", "bob"], ["<wg_ip>", "broadcast"]),
        (["wg0", "banana", "bob"], ["<wg_ip>", "not an IPv4"]),
        (["wg0", "10.1.1.9", "bob smith"], ["<name>", "1..32"]),
        (["wg0", "10.1.1.9", "x" * 33], ["<name>", "1..32"]),
        (["wg0/1", "10.1.1.9", "bob"], ["<interface>", "valid interface name"]),
        (["a" * 16, "10.1.1.9", "bob"], ["<interface>", "1..15"]),
        (["wg:0", "10.1.1.9", "bob"], ["<interface>"]),
        (["-w", "0", "wg0", "10.1.1.9", "bob"], ["--wireguard-port", "1..65535"]),
        (["-u", "65536", "wg0", "10.1.1.9", "bob"], ["--admin-port", "1..65535"]),
        (["-u", "http", "wg0", "10.1.1.9", "bob"], ["--admin-port", "1..65535"]),
        (["-u", "50009", "wg0", "10.1.1.9", "bob"], ["-w/-u", "both 50009", "different ports"]),
    ],
)
def test_bad_command_line_values(
    files: dict[str, str], capsys: pytest.CaptureFixture[str], argv: list[str], fragments: list[str]
) -> None:
    code, out, err = run(capsys, "-c", files["net"], "-p", files["peer"], "check", *argv)
    assert_one_line_error(code, err, *fragments)
    assert out == ""


def test_peer_yaml_wg_ip_outside_subnet(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    write_peer(files, "name: carol\nwgIp: 10.9.9.9\n")
    code, _, err = run(capsys, "-c", files["net"], "-p", files["peer"], "check")
    assert_one_line_error(code, err, f"{files['peer']}: wgIp", "outside subnet")


@pytest.mark.parametrize(
    ("text", "missing"), [("name: carol\n", "wgIp"), ("wgIp: 10.1.1.5\n", "name")]
)
def test_wg_ip_and_name_required(
    files: dict[str, str], capsys: pytest.CaptureFixture[str], text: str, missing: str
) -> None:
    write_peer(files, text)
    code, _, err = run(capsys, "-c", files["net"], "-p", files["peer"], "check")
    assert_one_line_error(code, err, f"{files['peer']}: {missing}: not set", "<wg_ip>")


def test_explicit_peer_file_must_exist(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    os.unlink(files["peer"])
    code, _, err = run(capsys, "-c", files["net"], "-p", files["peer"], "check")
    assert_one_line_error(code, err, files["peer"], "no such file", "--peer-config")


def test_missing_network_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "missing.yaml")
    code, _, err = run(capsys, "-c", missing, "check", "wg0", "10.1.1.1", "alice")
    assert_one_line_error(code, err, missing, "no such file")


def test_bad_network_file(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    Path(files["net"]).write_text(NETWORK.replace("10.1.1.0/24", "10.1.1.1/255.255.255.0"))
    code, _, err = run(capsys, "-c", files["net"], "wg0", "10.1.1.1", "alice")
    assert_one_line_error(code, err, "network.subnet", "write 10.1.1.0/24")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["wg0"], "unexpected or repeated argument(s): wg0"),
        (["--bogus"], "--bogus"),
        (["-c"], "-c requires argument"),
        (["genkey", "extra"], "extra"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert "Usage:" in err and "Traceback" not in err
    assert err.splitlines()[-1].startswith("wg_netmanager: error: ")
    assert fragment in err.splitlines()[-1]


def test_command_with_too_few_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    # docopt reads this as the run line with interface "check".
    code, _, err = run(capsys, "check", "wg0", "10.1.1.1")
    assert_one_line_error(code, err, "check takes none or all three")


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "--wireguard-hopping" in out and "Usage:" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == cli.__version__


GATEWAYS = """\
gateways:
  - wgIp: 10.1.1.3
    routes: [192.168.1.0/24]
  - wgIp: 10.1.1.1
    routes: [0.0.0.0/0, 192.168.9.0/24]
    masquerade: false
"""


def test_exit_node_from_option_or_peer_yaml(files: dict[str, str]) -> None:
    Path(files["net"]).write_text(NETWORK + GATEWAYS)
    node = ["wg0", "10.1.1.9", "bob"]
    assert settings_for(files, *node).exit_node is None
    assert settings_for(files, "--exit-node", "10.1.1.1", *node).exit_node == IPv4Address(
        "10.1.1.1"
    )
    write_peer(files, "exitNode: 10.1.1.1\n")
    assert settings_for(files, *node).exit_node == IPv4Address("10.1.1.1")


@pytest.mark.parametrize(
    ("argv", "peer", "fragments"),
    [
        (["--exit-node", "10.1.1.3"], "", ["--exit-node", "10.1.1.3 is no exit node", "10.1.1.1"]),
        (["--exit-node", "10.1.1.9"], "", ["--exit-node", "this node itself"]),
        (["--exit-node", "10.1.1.x"], "", ["--exit-node", "not an IPv4 address"]),
        ([], "exitNode: 10.1.1.7\n", ["peer.yaml: exitNode", "10.1.1.7 is no exit node"]),
    ],
)
def test_bad_exit_node(
    files: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    peer: str,
    fragments: list[str],
) -> None:
    Path(files["net"]).write_text(NETWORK + GATEWAYS)
    write_peer(files, peer or "# nothing\n")
    code, out, err = run(
        capsys, "-c", files["net"], "-p", files["peer"], "check", *argv, "wg0", "10.1.1.9", "bob"
    )
    assert_one_line_error(code, err, *fragments)
    assert out == ""


def test_an_exit_node_uses_no_other(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    two_exits = GATEWAYS + "  - wgIp: 10.1.1.2\n    routes: [0.0.0.0/0]\n"
    Path(files["net"]).write_text(NETWORK + two_exits)
    code, _, err = run(
        capsys, "-c", files["net"], "check", "--exit-node", "10.1.1.1", "wg0", "10.1.1.2", "eve"
    )
    assert_one_line_error(code, err, "--exit-node", "an exit node itself", "cannot use another")


def test_check_shows_gateways_and_exit_node(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    Path(files["net"]).write_text(NETWORK + GATEWAYS)
    code, out, err = run(
        capsys, "-c", files["net"], "check", "--exit-node", "10.1.1.1", "wg0", "10.1.1.3", "carl"
    )
    assert code == 0, err
    assert "10.1.1.3        192.168.1.0/24  (this node)" in out
    assert "10.1.1.1        0.0.0.0/0, 192.168.9.0/24  (no masquerade)" in out
    assert "exit node:  10.1.1.1" in out


# ---------------------------------------------------------------- commands


def test_genkey(capsys: pytest.CaptureFixture[str]) -> None:
    keys = []
    for _ in range(2):
        code, out, err = run(capsys, "genkey")
        assert code == 0 and err == ""
        keys.append(out.strip())
        assert len(base64.b64decode(keys[-1], validate=True)) == 32
    assert keys[0] != keys[1]


def test_check_summary(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "-c", files["net"], "-p", files["peer"], "check", "wg3", "10.1.1.16", "bob"
    )
    assert code == 0 and err == ""
    for fragment in ["bob", "10.1.1.16", "wg3", "50016", "50516", "dynamic", "10.1.1.0/24"]:
        assert fragment in out
    assert "vps.example.org:50001" in out
    assert "deadAfter=5 (default 28)" in out
    assert "pingInterval" not in out  # only timers that differ from the defaults
    assert KEY not in out and KEY[:16] not in out
    assert "dns:        *.mesh on 10.1.1.16:53 (udp, tcp)" in out


def test_check_shows_the_dns_domain_or_off_and_a_bad_one_is_one_line(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("-c", files["net"], "-p", files["peer"], "check", "wg3", "10.1.1.16", "bob")
    net = Path(files["net"])
    text = net.read_text()
    net.write_text(
        text.replace("  subnet:", "  dns: {domain: Corp.Example, enabled: false}\n  subnet:")
    )
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "dns:        off (network.dns.enabled: false; domain corp.example)" in out
    net.write_text(text.replace("  subnet:", "  dns: {domain: corp_example}\n  subnet:"))
    code, _, err = run(capsys, *argv)
    assert_one_line_error(code, err, files["net"], "network.dns.domain", "'corp_example'")


def test_check_static_node(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "-c", files["net"], "-p", files["peer"], "check", "wg0", "10.1.1.1", "alice"
    )
    assert code == 0 and "static" in out and "50001" in out and "(this node)" in out


def test_check_warns_when_world_readable(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    os.chmod(files["net"], 0o644)
    code, out, err = run(
        capsys, "-c", files["net"], "-p", files["peer"], "check", "wg0", "10.1.1.16", "bob"
    )
    assert code == 0 and "chmod 600" in err and KEY not in out + err


@pytest.fixture
def fake_daemon(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Stands in for wg_netmanager.daemon.main."""
    seen: list[Settings] = []

    def main(
        settings: Settings,
        *,
        load_settings: object = None,
        timeline: object = None,
        admin_socket: socket.socket | None = None,
        early_device: object = None,
    ) -> int:
        seen.append(settings)
        if admin_socket is not None:  # bound by the command line before the daemon's imports
            admin_socket.close()
        return 7

    monkeypatch.setattr(daemon, "main", main)
    return seen


class StubEarly:
    """What backends.start_early returns, without a process."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.taken = False
        self.abandoned = False

    def abandon(self) -> None:
        self.abandoned = True


@pytest.mark.parametrize("taken", [True, False])
def test_a_run_starts_the_interface_before_the_daemons_imports_and_hands_it_over(
    files: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    fake_daemon: list[Settings],
    monkeypatch: pytest.MonkeyPatch,
    taken: bool,
) -> None:
    started: list[StubEarly] = []

    def start_early(name: str) -> StubEarly:
        started.append(StubEarly(name))
        return started[-1]

    handed: list[object] = []

    def main(settings: Settings, **kw: Any) -> int:
        handed.append(kw["early_device"])
        kw["admin_socket"].close()
        if kw["early_device"] is not None:  # the daemon's create() took it, or never got there
            kw["early_device"].taken = taken
        return 0

    monkeypatch.setattr(cli, "start_early", start_early)
    monkeypatch.setattr(daemon, "main", main)
    base = ["-c", files["net"], "-p", files["peer"], "--no-tui"]
    assert run(capsys, *base, "wgq", "10.1.1.16", "bob")[0] == 0
    [early] = started
    assert early.name == "wgq" and handed == [early]
    assert early.abandoned is not taken  # what it made goes, unless the daemon has it
    run(capsys, *base, "-e", "wgq", "10.1.1.16", "bob")  # someone else's interface
    assert len(started) == 1 and handed[1] is None


def test_run_calls_daemon(
    files: dict[str, str], capsys: pytest.CaptureFixture[str], fake_daemon: list[Settings]
) -> None:
    code, _, _ = run(
        capsys, "-c", files["net"], "-p", files["peer"], "-vv", "wg0", "10.1.1.16", "bob"
    )
    assert code == 7
    [settings] = fake_daemon
    assert settings.name == "bob" and settings.verbosity == 2
    assert not settings.tui  # stdout is captured, not a terminal


def test_run_config_error_does_not_start_daemon(
    files: dict[str, str], capsys: pytest.CaptureFixture[str], fake_daemon: list[Settings]
) -> None:
    code, _, err = run(capsys, "-c", files["net"], "-p", files["peer"], "wg0", "10.9.9.9", "bob")
    assert_one_line_error(code, err, "outside subnet")
    assert fake_daemon == []


def test_run_tui_only_on_a_terminal(
    files: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    fake_daemon: list[Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    base = ["-c", files["net"], "-p", files["peer"]]
    run(capsys, *base, "wg0", "10.1.1.16", "bob")
    run(capsys, *base, "--no-tui", "wg0", "10.1.1.16", "bob")
    assert [s.tui for s in fake_daemon] == [True, False]


def test_status(
    files: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, ...]] = []

    def status_main(interface: str, as_json: bool) -> int:
        calls.append((interface, as_json))
        return 0

    monkeypatch.setattr(control, "status_main", status_main)
    assert cli.main(["status", "-p", files["peer"], "--json", "wg5"]) == 0
    write_peer(files, "wgInterface: wgp\n")
    assert cli.main(["status", "-p", files["peer"]]) == 0
    monkeypatch.setattr(cli, "DEFAULT_PEER_PATH", files["peer"] + ".missing")
    assert cli.main(["status", "-p", files["peer"] + ".missing"]) == 0
    assert calls == [("wg5", True), ("wgp", False), ("wg0", False)]


def test_python_dash_m(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wg_netmanager",
            "-c",
            "missing.yaml",
            "check",
            "wg0",
            "10.1.1.1",
            "a",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "wg_netmanager: error: missing.yaml: no such file; "
        "create it or give its path with -c/--config"
    ]


def test_the_command_line_loads_neither_trio_nor_the_wire_format() -> None:
    # The admin socket is bound right after the configuration is read, before
    # the daemon's imports: whatever cli imports delays every node's first hello.
    code = (
        "import sys, wg_netmanager.cli; "
        "print(sorted(m for m in ('trio', 'wg_netmanager.wire', 'wg_netmanager.core.clients') "
        "if m in sys.modules))"
    )
    assert in_a_fresh_interpreter(code) == "[]"


def test_the_daemons_imports_make_no_dataclass() -> None:
    # A dataclass costs about 1 ms of CPU at import (its methods are compiled);
    # records are msgspec Structs (docs/architecture.md, Start-up).
    code = (
        "import sys, wg_netmanager.cli, wg_netmanager.daemon; "
        "print(sorted(f'{n}.{k}' for n, m in list(sys.modules.items()) "
        "if n.startswith('wg_netmanager') for k, v in vars(m).items() "
        "if isinstance(v, type) and v.__module__ == n and hasattr(v, '__dataclass_fields__')))"
    )
    assert in_a_fresh_interpreter(code) == "[]"


# Command lines the daemon's usage line may or may not parse alone: every one
# must read as the full usage text reads it (the same words, or the same exit).
ARGVS = [
    [],
    ["wg0", "10.1.1.3", "charlie"],
    ["-c", "net.yaml", "--no-tui", "-vv", "wg0", "10.1.1.3", "charlie"],
    ["-c", "net.yaml", "-v", "-v", "-t", "-s", "10.1.1.9@h:1", "-s", "10.1.1.8@h:2", "-i", "wg1"],
    ["--network_config", "n", "--peer_config", "p", "-e", "-H", "--mobile", "-a", "10.1.1.4"],
    ["-O", "--api", "off", "--exit-node", "10.1.1.1", "--logfile", "f", "-l", "-w", "1", "-u", "2"],
    ["--no-t", "--conf", "n", "wg0", "10.1.1.3", "x"],  # docopt's abbreviations
    ["-vvc", "n", "wg0", "10.1.1.3", "x"],
    ["--", "wg0", "10.1.1.3", "x"],
    ["wg0", "10.1.1.3"],  # two of three: an error
    ["--init", "systemd", "wg0", "10.1.1.3", "x"],  # another command's option
    ["--json"],
    ["--qr", "--ip", "10.1.1.9"],
    ["--root", "/tmp"],
    ["--nonsense"],
    ["-h"],
    ["--help"],
    ["--hel"],
    ["--version"],
    ["-vh"],
    ["check", "wg0", "10.1.1.3", "x"],
    ["status", "--json"],
    ["client", "add", "--ip", "10.1.1.9", "phone"],
    ["genkey"],
    ["install", "--init", "openrc", "--root", "/r"],
    ["wg0", "10.1.1.3", "status"],
]


def _parsed(parse: Any, argv: list[str]) -> tuple[str, object]:
    try:
        return "args", parse(argv)
    except SystemExit as exc:  # DocoptExit too: the message is the usage text
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("argv", ARGVS, ids=" ".join)
def test_the_fast_parse_reads_every_command_line_as_the_full_usage_does(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    full = _parsed(lambda a: cli.docopt(cli.USAGE, a, version=cli.__version__), argv)
    full_out = capsys.readouterr()
    assert _parsed(cli.parse_argv, argv) == full
    assert capsys.readouterr() == full_out  # help and version print the full text


def test_the_daemons_own_command_line_is_parsed_against_its_usage_line_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts: list[str] = []
    real = cli.docopt

    def recording(text: str, *args: Any, **kwargs: Any) -> Any:
        texts.append(text)
        return real(text, *args, **kwargs)

    monkeypatch.setattr(cli, "docopt", recording)
    cli.parse_argv(["-c", "net.yaml", "--no-tui", "-vv", "wg0", "10.1.1.3", "charlie"])
    assert texts == [cli.RUN_USAGE]
    cli.parse_argv(["status", "--json"])
    assert texts[1:] == [cli.USAGE]


def test_the_collector_is_off_during_the_start_up_imports_and_on_after() -> None:
    """The entry point (console script, ``python -m``) turns the garbage
    collector off for the imports; once the daemon is imported, what they
    made is frozen out of later passes and it is on again."""
    code = """
import gc
import wg_netmanager.__main__
off = not gc.isenabled()
from wg_netmanager import cli, daemon
cli.imports_done()
print(off, gc.isenabled(), gc.get_freeze_count() > 1000)
"""
    assert in_a_fresh_interpreter(code) == "True True True"


def test_imports_done_leaves_a_running_collector_alone() -> None:
    """Called as a function (the collector on), the command line changes
    nothing about it: no objects frozen."""
    frozen = gc.get_freeze_count()
    cli.imports_done()
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_the_deferred_imports_are_frozen_too_where_start_up_froze_its_own() -> None:
    code = """
import gc, trio, weakref
from wg_netmanager.daemon import import_in_thread
before = gc.get_freeze_count()
trio.run(import_in_thread, "xml.dom.minidom")  # nothing frozen yet: left alone
left = gc.get_freeze_count() == before
class Cycle:
    pass
garbage = Cycle()
garbage.me = garbage
gone = weakref.ref(garbage)
del garbage
gc.freeze()  # as start-up does, with the imports' cycles
trio.run(import_in_thread, "fractions")
# the cycle collected, and everything (the new module too) frozen again
print(left, gone() is None, len(gc.get_objects()) < 1000 < gc.get_freeze_count())
"""
    assert in_a_fresh_interpreter(code) == "True True True"
