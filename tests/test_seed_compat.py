"""Users of the original tool (gin66/wg_netmanager, Rust) migrate without edits.

Its files and command lines are copied here verbatim from its README and
repository, and every field it documents must be read as it read it.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from tests import services
from wg_netmanager import cli, daemon, service
from wg_netmanager.config import ConfigError, Settings, load_network, load_peer

# The original README's example, verbatim ("Here a work in progress example
# (filename net.yaml)").
SEED_README_NETWORK = """\
network:
  sharedKey: YDUBM6FhERePZ4gPlxzAbCN7K61BPjy7HApWYL+P128=
  subnet: 10.1.1.0/8

peers:
  - endPoint: 192.168.1.70:50000
    adminPort: 55555
    wgIp: 10.1.1.1
  - endPoint: 192.168.1.212:50000
    adminPort: 55555
    wgIp: 10.1.1.2
"""

# The original repository's network.yaml, verbatim: the same with comments
# (one holds a non-ASCII dash).
SEED_NETWORK_FILE = """\
# This is an example config file for a wireguard network
#
# A network uses ONE shared private key.
# Any new network participant can use this key to join at any current node
#
# Private address ranges as reference:
# 10.0.0.0/8 IP addresses: 10.0.0.0 \u2013 10.255.255.255
# 172.16.0.0/12 IP addresses: 172.16.0.0 \u2013 172.31.255.255
# 192.168.0.0/16 IP addresses: 192.168.0.0 \u2013 192.168.255.255
#
# For peers with static ports: make sure, that firewall does not block arriving UDP traffic
# In the case below, this would be 50000 and 55555
#
network:
  sharedKey: YDUBM6FhERePZ4gPlxzAbCN7K61BPjy7HApWYL+P128=
  subnet: 10.1.1.0/8

peers:
  - endPoint: 192.168.1.70:50000
    adminPort: 55555
    wgIp: 10.1.1.1
  - endPoint: 192.168.1.212:50000
    adminPort: 55555
    wgIp: 10.1.1.2
"""

# The original repository's peer.yaml, verbatim.
SEED_PEER_FILE = """\
name: alice
wgIp: 10.1.1.1
wgInterface: wg0
existingInterface: false
"""

# The same in the original README, verbatim: its lines are indented with a
# tab, which YAML forbids (the original could not read it either).
SEED_README_PEER = (
    "\tname: alice\n\twgIp: 10.1.1.1\n\twgInterface: wg0\n\texistingInterface: false\n"
)

SEED_KEY = "YDUBM6FhERePZ4gPlxzAbCN7K61BPjy7HApWYL+P128="

# The original README's command lines, verbatim after the prompt.
SEED_INVOCATIONS = {
    "alice": "wg_netmanager -c net.yaml -i wg0 -a 10.1.1.1  -n alice",
    "bob": "wg_netmanager -c net.yaml -i wg0 -a 10.1.1.16 -n bob",
    "charlie": "wg_netmanager -c net.yaml -i wg0 -a 10.1.1.21 -n charlie",
}
# "start the wg_netmanager with: wg_netmanager -c network.yaml <wireguard-interface>
# <wireguard-ip> <name>", filled in.
SEED_POSITIONAL = "wg_netmanager -c network.yaml wg0 10.1.1.16 bob"
# Its security section: a node claiming 8.8.8.8. "If the subnet does not include
# 8.8.8.8, then other nodes will not accept it"; 10.0.0.0/8 does not.
SEED_ATTACKER = "wg_netmanager -c net.yaml wg0 8.8.8.8  alice"


def argv_of(line: str) -> list[str]:
    words = shlex.split(line)
    assert words[0] == "wg_netmanager"
    return words[1:]


@pytest.fixture
def seed_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with the seed's files under the names its README uses."""
    for name in ("net.yaml", "network.yaml"):
        (tmp_path / name).write_text(SEED_README_NETWORK)
        (tmp_path / name).chmod(0o600)
    monkeypatch.chdir(tmp_path)
    # The machine's own /etc/wg_netmanager/peer.yaml must not take part.
    monkeypatch.setattr(cli, "DEFAULT_PEER_PATH", str(tmp_path / "no-peer.yaml"))
    return tmp_path


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """The settings the daemon would have been started with."""
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
        return 0

    monkeypatch.setattr(daemon, "main", main)
    return seen


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("wg_netmanager: error: ") and "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- the files


@pytest.mark.parametrize("text", [SEED_README_NETWORK, SEED_NETWORK_FILE])
def test_seed_network_file_reads_as_the_original_read_it(tmp_path: Path, text: str) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(text)
    net = load_network(str(path))
    assert len(net.shared_key) == 32 and net.shared_key.hex().startswith("603501")  # "YDUB"
    # ipnet's contains() uses the network, so the original accepted every 10.x.y.z.
    assert net.subnet == IPv4Network("10.0.0.0/8")
    [(alice, bob)] = [net.peers]
    assert (alice.wg_ip, alice.host, alice.wg_port, alice.admin_port) == (
        IPv4Address("10.1.1.1"),
        "192.168.1.70",
        50000,
        55555,
    )
    assert (bob.wg_ip, bob.host, bob.wg_port, bob.admin_port) == (
        IPv4Address("10.1.1.2"),
        "192.168.1.212",
        50000,
        55555,
    )
    assert alice.endpoint_text == "192.168.1.70:50000"
    [warning] = net.warnings
    assert f"{path}: network.subnet: 10.1.1.0/8 has host bits set" in warning
    assert "read as 10.0.0.0/8" in warning and "write 10.0.0.0/8" in warning
    assert "10.1.1.0/24" in warning  # the narrower reading the user may have meant
    assert SEED_KEY not in warning


def test_seed_dyndns_static_keeps_its_host_name(tmp_path: Path) -> None:
    # "For dyndns-reachable servers, use the hostname instead of an ip."
    path = tmp_path / "net.yaml"
    path.write_text(SEED_README_NETWORK.replace("192.168.1.70", "alice.dyndns.example"))
    alice = load_network(str(path)).peers[0]
    assert (alice.host, alice.wg_port) == ("alice.dyndns.example", 50000)


def test_seed_peer_file_reads_as_the_original_read_it(tmp_path: Path) -> None:
    path = tmp_path / "peer.yaml"
    path.write_text(SEED_PEER_FILE)
    peer = load_peer(str(path), required=True)
    assert (peer.name, peer.wg_ip, peer.wg_interface, peer.existing_interface) == (
        "alice",
        IPv4Address("10.1.1.1"),
        "wg0",
        False,
    )
    # "The last one is actually only needed, if set to true."
    path.write_text(SEED_PEER_FILE.replace("false", "true"))
    assert load_peer(str(path), required=True).existing_interface is True


def test_seed_readme_peer_block_with_tabs_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "peer.yaml"
    path.write_text(SEED_README_PEER)
    with pytest.raises(ConfigError) as err:
        load_peer(str(path), required=True)
    assert "line 1, column 1" in str(err.value) and "spaces, never tabs" in str(err.value)


@pytest.mark.parametrize(
    ("subnet", "read_as"),
    [
        ("10.1.1.7/24", "10.1.1.0/24"),
        ("10.1.1.0/16", "10.1.0.0/16"),
        ("10.1.1.0/8", "10.0.0.0/8"),
    ],
)
def test_subnet_with_host_bits_is_normalised_with_one_warning(
    tmp_path: Path, subnet: str, read_as: str
) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(SEED_README_NETWORK.replace("10.1.1.0/8", subnet))
    net = load_network(str(path))
    assert net.subnet == IPv4Network(read_as)
    [warning] = net.warnings
    assert f"{subnet} has host bits set; read as {read_as}" in warning


def test_subnet_without_host_bits_gives_no_warning(tmp_path: Path) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(SEED_README_NETWORK.replace("10.1.1.0/8", "10.0.0.0/8"))
    assert load_network(str(path)).warnings == ()


@pytest.mark.parametrize(
    ("subnet", "fragments"),
    [
        # /24 or /32?
        ("10.1.1.0", ["no prefix length"]),
        # a netmask, or (as Python and some tools read /0.0.0.255) a hostmask?
        ("10.1.1.0/255.0.0.0", ["host bits set and a mask", "write 10.0.0.0/8"]),
        ("10.1.1.7/0.0.0.255", ["host bits set and a mask", "write 10.1.1.0/24"]),
        # octal or decimal?
        ("010.1.1.0/8", ["not an IPv4 subnet"]),
    ],
)
def test_ambiguous_subnets_are_still_refused(
    tmp_path: Path, subnet: str, fragments: list[str]
) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(SEED_README_NETWORK.replace("10.1.1.0/8", subnet))
    with pytest.raises(ConfigError) as err:
        load_network(str(path))
    for fragment in fragments:
        assert fragment in str(err.value)


# ---------------------------------------------------------------- the command lines


def test_seed_readme_invocations_start_the_daemon(
    seed_dir: Path, capsys: pytest.CaptureFixture[str], started: list[Settings]
) -> None:
    for name, line in SEED_INVOCATIONS.items():
        code, _, err = run(capsys, argv_of(line))
        assert (code, err) == (0, "")  # the daemon logs the subnet's warning
        assert started[-1].name == name
    alice, bob, charlie = started
    # alice is the first static peer: the ports of her entry (the original's
    # ListenPort and my_admin_port); the others 50000/50500 + the last octet.
    assert (alice.interface, alice.wg_ip, alice.is_static) == ("wg0", IPv4Address("10.1.1.1"), True)
    assert (alice.wg_port, alice.admin_port) == (50000, 55555)
    assert (bob.wg_ip, bob.is_static, bob.wg_port, bob.admin_port) == (
        IPv4Address("10.1.1.16"),
        False,
        50016,
        50516,
    )
    assert (charlie.wg_port, charlie.admin_port) == (50021, 50521)
    assert all(s.network.path == "net.yaml" for s in started)
    assert all(not s.tui and s.logfile is None and s.verbosity == 0 for s in started)


def test_seed_readme_positional_form(
    seed_dir: Path, capsys: pytest.CaptureFixture[str], started: list[Settings]
) -> None:
    code, _, err = run(capsys, argv_of(SEED_POSITIONAL))
    assert code == 0, err
    assert (started[0].interface, started[0].name) == ("wg0", "bob")


def test_seed_readme_attacker_is_refused(
    seed_dir: Path, capsys: pytest.CaptureFixture[str], started: list[Settings]
) -> None:
    code, _, err = run(capsys, argv_of(SEED_ATTACKER))
    line = one_line_error(code, err)
    assert "8.8.8.8 is outside subnet 10.0.0.0/8" in line and started == []


def test_v_and_e_and_t(
    seed_dir: Path,
    capsys: pytest.CaptureFixture[str],
    started: list[Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "Eventually use further -v or a -t"; "... with the -e commandline switch".
    base = argv_of(SEED_INVOCATIONS["bob"])
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    for extra in (["-v"], ["-vv"], ["-t"], ["-e"]):
        code, _, err = run(capsys, [*base, *extra])
        assert code == 0, err
    verbose, very, tui, existing = started
    assert (verbose.verbosity, very.verbosity) == (1, 2)
    assert tui.tui and existing.existing_interface and not verbose.existing_interface


def test_t_needs_a_terminal(
    seed_dir: Path, capsys: pytest.CaptureFixture[str], started: list[Settings]
) -> None:
    code, _, err = run(capsys, [*argv_of(SEED_INVOCATIONS["bob"]), "-t"])
    assert "-t: standard output is not a terminal" in one_line_error(code, err)
    code, _, err = run(capsys, [*argv_of(SEED_INVOCATIONS["bob"]), "-t", "--no-tui"])
    assert "-t and --no-tui" in one_line_error(code, err)
    assert started == []


def test_peer_yaml_supplies_what_i_a_n_leave_out(
    seed_dir: Path, capsys: pytest.CaptureFixture[str], started: list[Settings]
) -> None:
    (seed_dir / "peer.yaml").write_text(SEED_PEER_FILE)
    code, _, err = run(capsys, ["-c", "net.yaml", "-p", "peer.yaml"])
    assert code == 0, err
    code, _, err = run(capsys, ["-c", "net.yaml", "-p", "peer.yaml", "-a", "10.1.1.16"])
    assert code == 0, err
    code, _, err = run(capsys, ["-c", "net.yaml", "-p", "peer.yaml", "-n", "zed", "-i", "wg5"])
    assert code == 0, err
    from_file, other_ip, other_name = started
    assert (from_file.name, from_file.wg_ip, from_file.interface) == (
        "alice",
        IPv4Address("10.1.1.1"),
        "wg0",
    )
    assert (other_ip.name, other_ip.wg_ip) == ("alice", IPv4Address("10.1.1.16"))
    assert (other_name.name, other_name.wg_ip, other_name.interface) == (
        "zed",
        IPv4Address("10.1.1.1"),
        "wg5",
    )


def test_long_option_spellings_of_the_original(
    seed_dir: Path, capsys: pytest.CaptureFixture[str], started: list[Settings]
) -> None:
    (seed_dir / "peer.yaml").write_text(SEED_PEER_FILE)
    argv = ["--network_config", "net.yaml", "--peer_config", "peer.yaml"]
    argv += ["--wireguard-interface", "wg3", "--wireguard-address", "10.1.1.16", "--name", "bob"]
    code, _, err = run(capsys, argv)
    assert code == 0, err
    [s] = started
    assert (s.network.path, s.interface, s.wg_ip, s.name) == (
        "net.yaml",
        "wg3",
        IPv4Address("10.1.1.16"),
        "bob",
    )
    # The same file twice is fine; two different files are not.
    code, _, err = run(
        capsys, ["-c", "net.yaml", "--network_config", "net.yaml", "-p", "peer.yaml"]
    )
    assert code == 0, err
    code, _, err = run(capsys, ["-c", "net.yaml", "--network_config", "network.yaml"])
    assert "--config and --network_config name different files" in one_line_error(code, err)
    code, _, err = run(capsys, ["-c", "net.yaml", "--peer_config", "missing.yaml"])
    assert "missing.yaml: no such file" in one_line_error(code, err)


def test_positionals_and_i_a_n_together_are_refused(
    seed_dir: Path, capsys: pytest.CaptureFixture[str], started: list[Settings]
) -> None:
    code, _, err = run(capsys, ["-c", "net.yaml", "-n", "bob", "wg0", "10.1.1.16", "bob"])
    assert "give one form" in one_line_error(code, err)
    code, _, err = run(capsys, ["-c", "net.yaml", "-a", "10.1.1.300", "-n", "bob"])
    assert "-a/--wireguard-address" in one_line_error(code, err)
    code, _, err = run(capsys, ["-c", "net.yaml", "-a", "10.1.1.16"])
    line = one_line_error(code, err)
    assert "name: not set and not on the command line" in line and "give -n" in line
    assert started == []


def test_l_logs_to_name_dot_log(
    seed_dir: Path, capsys: pytest.CaptureFixture[str], started: list[Settings]
) -> None:
    code, _, err = run(capsys, [*argv_of(SEED_INVOCATIONS["charlie"]), "-l"])
    assert code == 0, err
    code, _, err = run(capsys, ["-lv", *argv_of(SEED_INVOCATIONS["charlie"])])
    assert code == 0, err
    assert [(s.logfile, s.verbosity) for s in started] == [("charlie.log", 0), ("charlie.log", 1)]


@pytest.mark.parametrize(
    "argv",
    [
        ["-l", "/var/log/wg.log", "-c", "net.yaml", "wg0", "10.1.1.16", "bob"],
        ["-c", "net.yaml", "-l", "/var/log/wg.log", "-i", "wg0", "-a", "10.1.1.16", "-n", "bob"],
        ["-c", "net.yaml", "-l/var/log/wg.log", "-a", "10.1.1.16", "-n", "bob"],
        ["check", "-l", "/var/log/wg.log", "-c", "net.yaml", "wg0", "10.1.1.16", "bob"],
    ],
)
def test_l_with_a_file_says_what_to_write(
    seed_dir: Path, capsys: pytest.CaptureFixture[str], started: list[Settings], argv: list[str]
) -> None:
    code, out, err = run(capsys, argv)
    line = one_line_error(code, err)
    assert "-l takes no file name" in line and "write --logfile /var/log/wg.log" in line
    assert out == "" and started == []


def test_l_and_logfile_together_are_refused(
    seed_dir: Path, capsys: pytest.CaptureFixture[str], started: list[Settings]
) -> None:
    code, _, err = run(capsys, ["-l", "--logfile", "x.log", *argv_of(SEED_INVOCATIONS["bob"])])
    assert "-l and --logfile" in one_line_error(code, err)


def test_logfile_with_a_file(
    seed_dir: Path, capsys: pytest.CaptureFixture[str], started: list[Settings]
) -> None:
    code, _, err = run(capsys, ["--logfile", "/tmp/x.log", *argv_of(SEED_INVOCATIONS["bob"])])
    assert code == 0, err
    assert started[0].logfile == "/tmp/x.log"


def test_capital_o_prints_the_configuration_and_exits(
    seed_dir: Path, capsys: pytest.CaptureFixture[str], started: list[Settings]
) -> None:
    code, out, err = run(capsys, [*argv_of(SEED_INVOCATIONS["alice"]), "-O"])
    assert code == 0 and started == []
    assert "alice 10.1.1.1 on wg0" in out and "static (endPoint 192.168.1.70:50000)" in out
    assert "WireGuard 50000/udp, admin 55555/udp" in out and "subnet 10.0.0.0/8" in out
    [warning] = err.splitlines()
    assert warning.startswith("warning: net.yaml: network.subnet: 10.1.1.0/8 has host bits")
    assert SEED_KEY not in out + err
    check_code, check_out, _ = run(capsys, ["check", *argv_of(SEED_INVOCATIONS["alice"])])
    assert (check_code, check_out) == (code, out)


def test_usage_shows_the_original_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, ["--help"])
    assert code == 0
    for option in (
        "--network_config",
        "--peer_config",
        "-i IF, --wireguard-interface",
        "-a IP, --wireguard-address",
        "-n NAME, --name",
        "-t, --tui",
        "-l ",
        "--logfile FILE",
        "-O ",
        "wg_netmanager install",
    ):
        assert option in out, option


# ---------------------------------------------------------------- install

# The original's `install` printed a systemd unit; here it is the service
# installer (tests/test_service.py has the rest). Its invocations work as
# they were, into a temporary root.


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A temporary root where systemd runs (as sd_booted() sees it)."""
    path = tmp_path / "root"
    (path / "run/systemd/system").mkdir(parents=True)
    return path


def test_install_of_the_original_invocation_installs_that_node(
    seed_dir: Path, root: Path, capsys: pytest.CaptureFixture[str], started: list[Settings]
) -> None:
    argv = ["install", *argv_of(SEED_INVOCATIONS["alice"]), "-l", "-v", "--root", str(root)]
    code, out, err = run(capsys, argv)
    assert code == 0 and started == []
    assert "host bits" in err and SEED_KEY not in out + err
    conf = root / "etc/wg_netmanager/wg0"
    assert out.splitlines()[:4] == [
        f"written   {conf}/network.yaml",
        f"written   {conf}/peer.yaml",
        f"written   {conf}/options",
        f"written   {root}/etc/systemd/system/wg_netmanager@.service",
    ]
    assert "note: left out: the log file alice.log" in out
    assert "next: systemctl daemon-reload && systemctl enable --now wg_netmanager@wg0" in out
    assert (conf / "network.yaml").read_text() == SEED_README_NETWORK
    # The service would run this very node: the unit's command line, as systemd runs it.
    words = services.systemd_argv(root, "wg0")
    settings = cli.build_settings(cli.docopt(cli.USAGE, words[words.index("-c") :]))
    assert (settings.name, settings.wg_ip, settings.interface) == (
        "alice",
        IPv4Address("10.1.1.1"),
        "wg0",
    )
    assert (settings.verbosity, settings.logfile, settings.tui) == (1, None, False)
    assert settings.is_static and settings.admin_port == 55555
    # Again: nothing to do.
    code, out, _ = run(capsys, argv)
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[:4]] == ["unchanged"] * 4


def test_install_takes_t_and_leaves_it_out(
    seed_dir: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(
        capsys, [*argv_of(SEED_INVOCATIONS["bob"]), "-t", "install", "--root", str(root)]
    )
    assert code == 0
    words = services.systemd_argv(root, "wg0")
    assert "--no-tui" in words and "-t" not in words


def test_install_takes_the_node_from_peer_yaml(
    seed_dir: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (seed_dir / "peer.yaml").write_text(SEED_PEER_FILE)
    argv = ["--network_config", "net.yaml", "-p", "peer.yaml", "install", "--root", str(root)]
    code, _, _ = run(capsys, argv)
    assert code == 0
    peer = load_peer(str(root / "etc/wg_netmanager/wg0/peer.yaml"), required=True)
    assert (peer.name, peer.wg_ip, peer.wg_interface) == ("alice", IPv4Address("10.1.1.1"), "wg0")


def test_install_refuses_a_bad_configuration(
    seed_dir: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, ["install", "--root", str(root), *argv_of(SEED_ATTACKER)])
    assert "outside subnet" in one_line_error(code, err) and out == ""
    assert not (root / "etc").exists()


@pytest.mark.parametrize(
    ("word", "quoted"),
    [
        ("/usr/bin/wg_netmanager", "/usr/bin/wg_netmanager"),
        ("/etc/my net/network.yaml", '"/etc/my net/network.yaml"'),
        ("50%.log", "50%%.log"),
        ("$HOME/x", "$$HOME/x"),
        ('a"b\\c', '"a\\"b\\\\c"'),
    ],
)
def test_exec_quote(word: str, quoted: str) -> None:
    assert service.exec_quote(word) == quoted


# ---------------------------------------------------------------- the daemon logs the warning


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    root.handlers[:] = before
    root.setLevel(level)


async def _no_daemon(settings: object, *_: object) -> None:
    return None


def test_daemon_logs_the_warnings_once_at_start(
    tmp_path: Path,
    root_handlers: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(SEED_README_NETWORK)
    args = cli.docopt(cli.USAGE, ["-c", str(path), "--no-tui", "wg0", "10.1.1.16", "bob"])
    settings = cli.build_settings(args)
    with caplog.at_level(logging.WARNING):
        monkeypatch.setattr(daemon, "serve", _no_daemon)
        assert daemon.main(settings) == 0
    lines = [r.getMessage() for r in caplog.records if "host bits" in r.getMessage()]
    assert lines == [settings.network.warnings[0]]
    assert not lines[0].startswith("warning:")


def test_python_dash_m_check_of_the_seed_files(seed_dir: Path) -> None:
    (seed_dir / "peer.yaml").write_text(SEED_PEER_FILE)
    result = subprocess.run(
        [sys.executable, "-m", "wg_netmanager", "-c", "net.yaml", "-p", "peer.yaml", "check"],
        cwd=seed_dir,
        env={**os.environ, "PYTHONPATH": str(Path(cli.__file__).resolve().parent.parent)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "alice 10.1.1.1 on wg0" in result.stdout
    assert len(result.stderr.splitlines()) == 1 and "read as 10.0.0.0/8" in result.stderr
