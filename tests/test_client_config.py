"""``wg_netmanager client``: the control request, the state file, the wg-quick
config and the command's errors (the daemon side on real unix sockets; the
whole path for real in tests/test_clients_netns.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
import trio

from tests import qr
from wg_netmanager import cli, client_config, control
from wg_netmanager.config import ConfigError
from wg_netmanager.core.clients import Client
from wg_netmanager.keys import KeyPair, to_b64

MESH = IPv4Network("10.1.1.0/24")
PHONE = Client("phone", IPv4Address("10.1.1.50"), KeyPair.generate().public_b64)
ANSWER = {
    "client": {"name": "phone", "wg_ip": "10.1.1.50"},
    "peer": {
        "name": "beta",
        "public_key": "STATICKEY=",
        "endpoint": "vps.example.org:50001",
        "allowed_ips": ["10.1.1.0/24", "192.168.50.0/24"],
        "mesh": "10.1.1.0/24",
    },
}


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "run"
    monkeypatch.setenv(control.RUN_DIR_ENV, str(path))
    return path


# --- the control socket's requests -----------------------------------------------------


def test_a_request_gets_the_command_s_answer_and_none_gets_the_status(run_dir: Path) -> None:
    path = str(run_dir / "wg0.sock")
    seen: list[Mapping[str, Any]] = []

    def command(request: Mapping[str, Any]) -> Mapping[str, Any]:
        seen.append(request)
        return {"done": request["op"]}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: control.serve(
                    path, lambda: {"status": 1}, task_status, command=command
                )
            )
            ask = trio.to_thread.run_sync
            assert await ask(lambda: control.fetch(path, request={"op": "x", "a": 1})) == {
                "done": "x"
            }
            assert await ask(control.fetch, path) == {"status": 1}
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert seen == [{"op": "x", "a": 1}]


def test_a_daemon_without_commands_refuses_them_in_one_line(run_dir: Path) -> None:
    path = str(run_dir / "wg0.sock")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(control.serve, path, lambda: {"status": 1})
            answer = await trio.to_thread.run_sync(
                lambda: control.fetch(path, request={"op": "client-list"})
            )
            assert answer == {"error": "this daemon does not serve 'client-list'"}
            nursery.cancel_scope.cancel()

    trio.run(main)


# --- the state file --------------------------------------------------------------------


def test_the_state_file_round_trips_root_only_and_holds_no_private_key(tmp_path: Path) -> None:
    path = client_config.state_path(str(tmp_path / "network.yaml"), IPv4Address("10.1.1.1"))
    assert path == str(tmp_path / "clients-10.1.1.1.json")
    assert client_config.load(path, MESH) == ()  # none yet
    client_config.write(path, [PHONE])
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert client_config.load(path, MESH) == (PHONE,)
    assert set(json.loads(Path(path).read_text())["clients"][0]) == {
        "name",
        "wg_ip",
        "public_key",
    }


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{", "not a list of {name, wg_ip, public_key}"),
        ('{"clients": [{"name": "p", "wg_ip": "10.9.9.9", "public_key": "%s"}]}', "mesh"),
        ('{"clients": [{"name": "p", "wg_ip": "10.1.1.9", "public_key": "nokey"}]}', "fix or"),
        (
            '{"clients": [{"name": "p", "wg_ip": "10.1.1.9", "public_key": "%s"},'
            '{"name": "p", "wg_ip": "10.1.1.8", "public_key": "%s"}]}',
            "a name appears twice",
        ),
    ],
)
def test_a_broken_state_file_is_one_line_naming_file_and_fix(
    tmp_path: Path, text: str, words: str
) -> None:
    path = tmp_path / "clients-10.1.1.1.json"
    keys = tuple(KeyPair.generate().public_b64 for _ in range(text.count("%s")))
    path.write_text(text % keys)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=words) as caught:
        client_config.load(str(path), MESH)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_state_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "clients-10.1.1.1.json"
    client_config.write(str(path), [PHONE])
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        client_config.load(str(path), MESH)


# --- the config --------------------------------------------------------------------------


def test_the_config_is_a_complete_wg_quick_file() -> None:
    private = KeyPair.generate()
    text = client_config.render_config(to_b64(private.private), ANSWER)
    lines = text.splitlines()
    assert lines[0] == "[Interface]"
    assert f"PrivateKey = {to_b64(private.private)}" in lines
    assert "Address = 10.1.1.50/32" in lines
    assert "[Peer]" in lines
    assert "PublicKey = STATICKEY=" in lines
    assert "Endpoint = vps.example.org:50001" in lines
    assert "AllowedIPs = 10.1.1.0/24, 192.168.50.0/24" in lines
    assert "PersistentKeepalive = 25" in lines


def test_the_qr_code_fits_80_columns() -> None:
    text = client_config.render_config("A" * 43 + "=", ANSWER)
    code = client_config.qr_code(text)
    rows = code.splitlines()
    assert len(rows) > 20 and max(len(r) for r in rows) <= 80


def test_the_terminal_qr_code_reads_back_as_the_config(tmp_path: Path) -> None:
    """What a phone's camera reads off the terminal (zbarimg, as it would)."""
    missing = qr.available()
    if missing:
        pytest.fail(f"reading QR codes needs {missing}")
    text = client_config.render_config(to_b64(KeyPair.generate().private), ANSWER)
    picture = tmp_path / "terminal-qr.png"
    picture.write_bytes(qr.png_of_terminal(client_config.qr_code(text)))
    assert qr.read(picture) == text


# --- the command ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["client", "add", "phone", "wg0"],
        ["client", "list", "wg0"],
        ["client", "remove", "phone", "wg0"],
    ],
)
def test_no_daemon_is_one_line_and_exit_2(
    run_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("wg_netmanager: error: wg0: no daemon is running")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["client", "add", "--ip", "10.1.1.x", "phone", "wg0"], "--ip"),
        (["client", "add", "bad name!", "wg0"], "<client>"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    run_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err


def test_a_refusal_of_the_daemon_is_one_line_and_exit_2(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = control.socket_path("wg0")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: control.serve(
                    path,
                    lambda: {},
                    task_status,
                    command=lambda r: {"error": "wg IP 10.1.1.4 is in use by the node delta"},
                )
            )
            code = await trio.to_thread.run_sync(
                lambda: cli.main(["client", "add", "--ip", "10.1.1.4", "phone", "wg0"])
            )
            assert code == 2
            nursery.cancel_scope.cancel()

    trio.run(main)
    out, err = capsys.readouterr()
    assert out == ""  # no config, no key
    assert err == "wg_netmanager: error: wg0: wg IP 10.1.1.4 is in use by the node delta\n"
