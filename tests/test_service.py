"""``wg_netmanager install``: the systemd unit and OpenRC script it writes, into
a temporary root; systemd's own verifier on the unit; the OpenRC script's
syntax and the command line it runs; ``-s/--static`` on the command line, and
``verbosity`` in peer.yaml.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tests import services
from tests.helpers import SHARED_KEY_B64
from tests.netns import require_tools
from wg_netmanager import cli, daemon, service
from wg_netmanager.config import (
    ConfigError,
    Settings,
    StaticPeer,
    load_network,
    load_peer,
    parse_static,
)

NETWORK = f"""\
network:
  sharedKey: {SHARED_KEY_B64}
  subnet: 10.1.1.0/24
peers:
  - endPoint: vps.example.org:50001
    adminPort: 50501
    wgIp: 10.1.1.1
"""
NO_PEERS = NETWORK.partition("peers:")[0]


@pytest.fixture
def net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "network.yaml"
    path.write_text(NETWORK)
    path.chmod(0o600)
    monkeypatch.chdir(tmp_path)
    # The machine's own /etc/wg_netmanager/peer.yaml must not take part.
    monkeypatch.setattr(cli, "DEFAULT_PEER_PATH", str(tmp_path / "no-peer.yaml"))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command line with ``-c network.yaml`` (the fixture's) unless it names one."""
    words = list(argv) if "-c" in argv else ["-c", "network.yaml", *argv]
    code = cli.main(words)
    out, err = capsys.readouterr()
    return code, out, err


def install(
    capsys: pytest.CaptureFixture[str], root: Path, init: str, *argv: str
) -> tuple[int, str, str]:
    return run(capsys, "install", "--root", str(root), "--init", init, *argv)


def test_install_keeps_the_exit_node_in_peer_yaml(
    net: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    net.write_text(NETWORK + "gateways:\n  - wgIp: 10.1.1.1\n    routes: [0.0.0.0/0]\n")
    root = tmp_path / "root"
    argv = ["-c", str(net), "--exit-node", "10.1.1.1", "wg7", "10.1.1.5", "eve"]
    code, _, err = install(capsys, root, "systemd", *argv)
    assert code == 0, err
    assert "exitNode: 10.1.1.1\n" in (root / "etc/wg_netmanager/wg7/peer.yaml").read_text()
    assert services.options_of(root, "wg7") == []
    settings = cli.build_settings(cli.docopt(cli.USAGE, services.systemd_argv(root, "wg7")[1:]))
    assert settings.exit_node == IPv4Address("10.1.1.1")


# --- systemd ---------------------------------------------------------------------------


def test_the_unit_is_verified_by_systemd(
    net: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_tools("systemd-analyze")
    root = tmp_path / "root"
    odd = tmp_path / "my net 100%"  # the copy lands in /etc whatever the source's name
    odd.mkdir()
    (odd / "net.yaml").write_text(NETWORK)
    code, _, err = install(
        capsys, root, "systemd", "-c", str(odd / "net.yaml"), "wg0", "10.1.1.5", "eve"
    )
    assert code == 0, err
    units = root / "etc/systemd/system"
    # The shipped unit with this installation's executable (see the tests below).
    assert (units / service.UNIT_NAME).read_text() == service.unit_text(service.executable())
    (units / "wg_netmanager@wg0.service").symlink_to(service.UNIT_NAME)  # an instance
    result = subprocess.run(
        ["systemd-analyze", "verify", str(units / "wg_netmanager@wg0.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Unknown or misspelt settings are only warnings: none may appear.
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_the_unit_is_a_notify_service_with_reload_and_hardening() -> None:
    unit = services.unit_of(service.shipped(service.UNIT_NAME))
    s = unit["Service"]
    assert (s["Type"], s["NotifyAccess"], s["ExecReload"]) == (
        "notify",
        "main",
        "/bin/kill -HUP $MAINPID",
    )
    assert float(s["WatchdogSec"]) > 0 and s["Restart"] == "on-failure"
    assert s["RestartPreventExitStatus"] == "2" and s["KillMode"] == "mixed"
    assert s["CapabilityBoundingSet"] == "CAP_NET_ADMIN" and s["NoNewPrivileges"] == "yes"
    assert (s["ProtectSystem"], s["ProtectHome"], s["PrivateTmp"]) == ("strict", "yes", "yes")
    # Writable under ProtectSystem=strict: the control socket's and wireguard-go's directories.
    assert s["RuntimeDirectory"].split() == ["wg_netmanager", "wireguard"]
    assert s["RuntimeDirectoryPreserve"] == "yes"  # shared by the instances
    assert s["ReadWritePaths"] == "-/etc/wg_netmanager/%i"  # the API's clients file
    assert s["DeviceAllow"] == "/dev/net/tun rw"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_install_writes_the_layout_and_is_idempotent(
    net: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    argv = ["-c", str(net), "-w", "51820", "-H", "-vv", "-e", "--mobile"]
    argv += ["-s", "10.1.1.9@192.0.2.9:50009"]
    code, out, _ = install(capsys, root, "systemd", *argv, "wg7", "10.1.1.5", "eve")
    assert code == 0
    conf = root / "etc/wg_netmanager/wg7"
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in conf.iterdir()} == {
        "network.yaml": "0o600",  # it holds the shared key
        "peer.yaml": "0o600",
        "options": "0o600",
        "api-token": "0o600",  # made here: the service's /etc is read-only
    }
    assert (conf / "network.yaml").read_text() == NETWORK
    token = (conf / "api-token").read_text()
    # -e, -v and --mobile in peer.yaml (a reload applies the verbosity); the rest in OPTIONS.
    peer = (conf / "peer.yaml").read_text()
    assert "existingInterface: true\nverbosity: 2\nmobile: true\n" in peer
    assert services.options_of(root, "wg7") == [
        *("-w", "51820", "-H", "-s", "10.1.1.9@192.0.2.9:50009,50509"),
    ]
    settings = cli.build_settings(cli.docopt(cli.USAGE, services.systemd_argv(root, "wg7")[1:]))
    assert (settings.name, settings.interface, settings.wg_port) == ("eve", "wg7", 51820)
    assert settings.existing_interface and settings.hopping and settings.verbosity == 2
    assert settings.mobile
    assert [p.wg_ip for p in settings.network.peers] == [
        IPv4Address(a) for a in ("10.1.1.1", "10.1.1.9")
    ]
    assert SHARED_KEY_B64 not in out

    # Unchanged input (either spelling): nothing written. A changed network file: it is updated.
    for command in (["install"], ["service", "install"]):
        code, out, _ = run(
            capsys,
            *command,
            "--root",
            str(root),
            "--init",
            "systemd",
            *argv,
            "wg7",
            "10.1.1.5",
            "eve",
        )
        assert [line.split()[0] for line in out.splitlines()[:5]] == ["unchanged"] * 5
        assert (conf / "api-token").read_text() == token
    net.write_text(NETWORK.replace("vps.example.org", "vps2.example.org"))
    (conf / "options").chmod(0o644)
    code, out, _ = install(capsys, root, "systemd", *argv, "wg7", "10.1.1.5", "eve")
    assert [line.split()[0] for line in out.splitlines()[:4]] == [
        "updated",
        "unchanged",
        "updated",  # its mode is put right
        "unchanged",
    ]
    assert oct((conf / "options").stat().st_mode & 0o777) == "0o600"
    assert not [p for p in conf.iterdir() if p.name.endswith("-new")]


def test_install_asks_which_init_system_when_it_cannot_tell(
    net: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    code, out, err = run(capsys, "install", "--root", str(root), "wg0", "10.1.1.5", "eve")
    assert code == 2 and out == ""
    assert err.strip() == (
        "wg_netmanager: error: install: cannot tell which init system runs here; "
        "give --init systemd or --init openrc"
    )
    code, _, err = run(
        capsys, "install", "--root", str(root), "--init", "runit", "wg0", "10.1.1.5", "eve"
    )
    assert code == 2 and "--init 'runit'" in err
    (root / "sbin").mkdir(parents=True)
    (root / "sbin/openrc-run").touch()
    assert service.detect_init(str(root)) == service.OPENRC
    (root / "run/systemd/system").mkdir(parents=True)
    assert service.detect_init(str(root)) == service.SYSTEMD


def test_install_refuses_what_the_service_cannot_carry(
    net: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    code, _, err = install(capsys, root, "systemd", "wg+0", "10.1.1.5", "eve")
    assert code == 2 and "cannot name a service instance" in err
    (root / "etc/init.d").mkdir(parents=True)
    (root / "etc/init.d/wg_netmanager.wg0").write_text("someone's own script")
    code, _, err = install(capsys, root, "openrc", "wg0", "10.1.1.5", "eve")
    assert code == 2 and "is not a symbolic link; remove it first" in err
    assert (root / "etc/init.d/wg_netmanager.wg0").read_text() == "someone's own script"


def test_the_unit_is_the_shipped_one_with_the_executable_filled_in() -> None:
    shipped = service.shipped(service.UNIT_NAME)
    assert service.unit_text([service.SHIPPED_EXECUTABLE]) == shipped
    text = service.unit_text(["/usr/bin/wg_netmanager"])
    changed = [
        (a, b) for a, b in zip(shipped.splitlines(), text.splitlines(), strict=True) if a != b
    ]
    assert [(a.split()[0], b.split()[0]) for a, b in changed] == [
        ("ExecStart=/usr/local/bin/wg_netmanager", "ExecStart=/usr/bin/wg_netmanager")
    ]


def test_a_unit_for_an_installation_under_home_can_read_homes() -> None:
    text = service.unit_text(["/root/.local/bin/wg_netmanager"])
    assert "ProtectHome=read-only" in text and "ProtectHome=yes" not in text
    assert "ExecStart=/root/.local/bin/wg_netmanager -c" in text


def test_the_unit_runs_python_dash_m_quoted() -> None:
    text = service.unit_text(["/opt/my env/bin/python3", "-m", "wg_netmanager"])
    assert 'ExecStart="/opt/my env/bin/python3" -m wg_netmanager -c /etc/wg_netmanager/%i/' in text


# --- OpenRC ----------------------------------------------------------------------------


def test_the_openrc_script_is_valid_sh() -> None:
    result = subprocess.run(
        ["sh", "-n"],
        input=service.shipped("wg_netmanager.openrc"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = service.shipped("wg_netmanager.openrc")
    assert text.startswith("#!/sbin/openrc-run\n")
    assert "supervisor=supervise-daemon" in text and 'extra_started_commands="reload"' in text


def test_openrc_runs_this_node_and_reloads_with_sighup(
    net: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    code, out, _ = install(
        capsys, root, "openrc", "-c", str(net), "-u", "50999", "wg1", "10.1.1.5", "eve"
    )
    assert code == 0
    init = root / "etc/init.d"
    assert os.readlink(init / "wg_netmanager.wg1") == "wg_netmanager"
    assert os.access(init / "wg_netmanager", os.X_OK)
    assert (
        "next: rc-update add wg_netmanager.wg1 default && rc-service wg_netmanager.wg1 start" in out
    )
    words = services.openrc_argv(root, "wg1")
    command, args = words[0], words[1:]
    assert command == service.executable()[0]
    assert args[args.index("-c") :] == [
        *("-c", f"{root}/etc/wg_netmanager/wg1/network.yaml"),
        *("-p", f"{root}/etc/wg_netmanager/wg1/peer.yaml"),
        *("-i", "wg1", "--no-tui", "-u", "50999"),
    ]
    settings = cli.build_settings(cli.docopt(cli.USAGE, args[args.index("-c") :]))
    assert (settings.name, settings.interface, settings.admin_port) == ("eve", "wg1", 50999)
    # start_pre checks the configuration with the same words; reload is SIGHUP.
    result = services.run_openrc(root, "wg1", "start_pre && echo checked")
    assert result.returncode == 0 and result.stdout.strip() == "checked", result.stderr
    result = services.run_openrc(root, "wg1", "reload")
    assert result.stdout.splitlines() == [
        "ebegin Reloading wg_netmanager.wg1",
        "supervise-daemon wg_netmanager.wg1 --signal HUP",
        "eend 0",
    ]
    # A broken configuration fails start_pre with the one-line error.
    (root / "etc/wg_netmanager/wg1/peer.yaml").write_text("name: 'two words'\n")
    result = services.run_openrc(root, "wg1", "start_pre")
    assert result.returncode == 2 and "peer.yaml: name:" in result.stderr


# --- -s/--static -----------------------------------------------------------------------


def test_static_on_the_command_line() -> None:
    assert parse_static("10.1.1.1@vps.example.org:50001") == StaticPeer(
        IPv4Address("10.1.1.1"), "vps.example.org", 50001, 50501
    )
    assert parse_static("10.1.1.7@192.0.2.7:51820,50000") == StaticPeer(
        IPv4Address("10.1.1.7"), "192.0.2.7", 51820, 50000
    )


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("vps.example.org:50001", ["not WGIP@HOST:WGPORT", "10.1.1.1@vps.example.org:50001"]),
        ("10.1.1.1@", ["not WGIP@HOST:WGPORT"]),
        ("10.1.1.x@vps:1", ["not an IPv4 address"]),
        ("10.1.1.1@vps", ["host:port"]),
        ("10.1.1.1@vps:http", ["not a number"]),
        ("10.1.1.1@vps:50001,x", ["admin port 'x' is not a number"]),
        ("10.1.1.1@vps:50001,70000", ["1..65535"]),
        ("10.1.1.1@vps:50001,50001", ["both 50001"]),
        ("10.1.1.1@[fd00::1]:5", ["IPv6"]),
    ],
)
def test_bad_static_is_one_line(spec: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_static(spec)
    message = str(info.value)
    assert message.startswith("command line: -s/--static") and "\n" not in message
    for word in words:
        assert word in message


def test_static_merges_with_the_file_and_may_replace_its_peers(tmp_path: Path) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(NETWORK)
    extra = parse_static("10.1.1.2@192.0.2.2:50002")
    net = load_network(str(path), (extra,))
    assert [p.wg_ip for p in net.peers] == [IPv4Address("10.1.1.1"), IPv4Address("10.1.1.2")]
    # The same static twice, or as in the file: said twice, no conflict.
    same = parse_static("10.1.1.1@vps.example.org:50001,50501")
    assert len(load_network(str(path), (same, extra, extra)).peers) == 2
    path.write_text(NO_PEERS)
    assert load_network(str(path), (extra,)).peers == (extra,)
    with pytest.raises(ConfigError, match=r"peers: missing; add .* \(or give -s/--static\)"):
        load_network(str(path))


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("10.1.1.1@192.0.2.1:50001", ["10.1.1.1 is already used by peers[0]"]),
        ("10.1.1.2@vps.example.org:50001", ["vps.example.org:50001 is already used by peers[0]"]),
        ("10.2.0.1@192.0.2.1:50001", ["outside subnet 10.1.1.0/24"]),
    ],
)
def test_static_conflicting_with_the_file_is_refused(
    tmp_path: Path, spec: str, words: list[str]
) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(NETWORK)
    with pytest.raises(ConfigError) as info:
        load_network(str(path), (parse_static(spec),))
    message = str(info.value)
    assert message.startswith(f"command line: -s/--static {spec.split(',')[0]}")
    for word in words:
        assert word in message


def test_static_alone_makes_a_node_static_and_is_checked(
    net: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    net.write_text(NO_PEERS)
    code, out, _ = run(
        capsys, "check", "-s", "10.1.1.3@192.0.2.3:50003", "wg0", "10.1.1.3", "carol"
    )
    assert code == 0
    assert "static (endPoint 192.0.2.3:50003)" in out and "admin 50503  (this node)" in out
    code, _, err = run(capsys, "check", "wg0", "10.1.1.3", "carol")
    assert code == 2 and "peers: missing" in err and "-s/--static" in err


def test_a_reload_reads_the_files_again(
    net: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    loaders: list[Callable[[], Settings]] = []

    def main(
        settings: Settings,
        *,
        load_settings: Callable[[], Settings] | None = None,
        timeline: object = None,
        admin_socket: socket.socket | None = None,
        early_device: object = None,
    ) -> int:
        if admin_socket is not None:  # bound by the command line before the daemon's imports
            admin_socket.close()
        assert load_settings is not None
        loaders.append(load_settings)
        return 0

    monkeypatch.setattr(daemon, "main", main)
    code, _, _ = run(capsys, "-s", "10.1.1.2@192.0.2.2:50002", "wg0", "10.1.1.5", "eve")
    assert code == 0
    net.write_text(NETWORK + "timers:\n  pingInterval: 3\n")
    settings = loaders[0]()
    assert settings.network.timers.ping_interval == 3
    assert len(settings.network.peers) == 2  # the command line's static is still there
    net.write_text("network: [")
    with pytest.raises(ConfigError, match=r"network\.yaml: line 1"):
        loaders[0]()


# --- verbosity in peer.yaml (what a reload can change) ----------------------------------


@pytest.mark.parametrize(
    ("line", "cli_words", "expected"),
    [
        ("verbosity: 2", [], 2),
        ("verbosity: 1", ["-vv"], 2),
        ("verbosity: 0", ["-v"], 1),
        ("", [], 0),
    ],
)
def test_verbosity_from_peer_yaml_unless_given_as_v(
    net: Path, tmp_path: Path, line: str, cli_words: list[str], expected: int
) -> None:
    peer = tmp_path / "peer.yaml"
    peer.write_text(f"name: eve\nwgIp: 10.1.1.5\n{line}\n")
    args = cli.docopt(cli.USAGE, ["-c", str(net), "-p", str(peer), *cli_words])
    assert cli.build_settings(args).verbosity == expected


@pytest.mark.parametrize("value", ["3", "-1", "true", "'2'", "1.5"])
def test_bad_verbosity_is_one_line(tmp_path: Path, value: str) -> None:
    peer = tmp_path / "peer.yaml"
    peer.write_text(f"verbosity: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_peer(str(peer), required=True)
    assert str(info.value).startswith(f"{peer}: verbosity: expected 0, 1 or 2 (as many -v), got")


def test_a_configuration_error_under_journald_is_an_error(
    net: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = tmp_path / "stderr"
    with stderr.open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        monkeypatch.setattr("sys.stderr", stream)
        assert cli.main(["-c", str(net), "check", "wg0", "10.9.9.9", "eve"]) == 2
    [line] = stderr.read_text().splitlines()
    assert line.startswith("<3>wg_netmanager: error: command line: <wg_ip>: 10.9.9.9 is outside")
