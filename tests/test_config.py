"""network.yaml / peer.yaml loading: the happy path and one test per kind of mistake."""

from __future__ import annotations

import base64
import builtins
import copy
import os
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import SHARED_KEY_B64
from wg_netmanager import config
from wg_netmanager.config import (
    ConfigError,
    PeerConfig,
    Settings,
    StaticPeer,
    generate_shared_key,
    load_network,
    load_peer,
    warn_if_world_readable,
)
from wg_netmanager.core.timers import Timers, timer_names
from wg_netmanager.model import Gateway

KEY = SHARED_KEY_B64
NETWORK: dict[str, Any] = {
    "network": {"sharedKey": KEY, "subnet": "10.1.1.0/24"},
    "peers": [
        {"endPoint": "vps.example.org:50001", "adminPort": 50000, "wgIp": "10.1.1.1"},
        {"endPoint": "192.0.2.7:50002", "adminPort": 50003, "wgIp": "10.1.1.2"},
    ],
}


def write(path: Path, content: str | bytes) -> str:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return str(path)


def network_file(tmp_path: Path, change: Callable[[dict[str, Any]], None] | None = None) -> str:
    data = copy.deepcopy(NETWORK)
    if change:
        change(data)
    return write(tmp_path / "net.yaml", yaml.safe_dump(data))


def error_of(load: Callable[[], object]) -> str:
    with pytest.raises(ConfigError) as info:
        load()
    message = str(info.value)
    assert "\n" not in message
    assert KEY not in message
    return message


def assert_network_error(path: str, *fragments: str) -> str:
    message = error_of(lambda: load_network(path))
    assert message.startswith(path + ": "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------- happy path


def test_loads_network(tmp_path: Path) -> None:
    net = load_network(network_file(tmp_path))
    assert net.shared_key == base64.b64decode(KEY)
    assert net.subnet == IPv4Network("10.1.1.0/24")
    assert net.peers == (
        StaticPeer(IPv4Address("10.1.1.1"), "vps.example.org", 50001, 50000),
        StaticPeer(IPv4Address("10.1.1.2"), "192.0.2.7", 50002, 50003),
    )
    assert net.peers[0].endpoint_text == "vps.example.org:50001"
    assert net.timers == Timers()


def test_shared_key_not_in_repr(tmp_path: Path) -> None:
    net = load_network(network_file(tmp_path))
    text = repr(net) + str(net)
    assert KEY not in text
    assert repr(net.shared_key) not in text


def test_original_rust_tool_file_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path / "net.yaml",
        """\
# comment
network:
  sharedKey: YDUBM6FhERePZ4gPlxzAbCN7K61BPjy7HApWYL+P128=
  subnet: 10.1.0.0/16

peers:
  - endPoint: 192.168.1.70:50000
    adminPort: 55555
    wgIp: 10.1.1.1
  - endPoint: 192.168.1.212:50000
    adminPort: 55555
    wgIp: 10.1.1.2
""",
    )
    assert len(load_network(path).peers) == 2


def test_timers(tmp_path: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["timers"] = {"deadAfter": 5, "pingInterval": 0.5, "keepalive": 10}

    timers = load_network(network_file(tmp_path, change)).timers
    assert (timers.dead_after, timers.ping_interval, timers.keepalive) == (5, 0.5, 10)
    assert timers.hello_retry_min == Timers().hello_retry_min


def test_every_timer_name_is_accepted(tmp_path: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["timers"] = dict.fromkeys(timer_names(), 3)

    timers = load_network(network_file(tmp_path, change)).timers
    assert all(getattr(timers, name) == 3 for name in timer_names().values())


def test_links(tmp_path: Path) -> None:
    assert load_network(network_file(tmp_path)).links == "eager"

    def lazy(data: dict[str, Any]) -> None:
        data["network"]["links"] = "lazy"

    assert load_network(network_file(tmp_path, lazy)).links == "lazy"

    def wrong(data: dict[str, Any]) -> None:
        data["network"]["links"] = ["lazy"]

    assert_network_error(
        network_file(tmp_path, wrong), "network.links: expected eager or lazy, got"
    )


def test_dns_domain_and_switch(tmp_path: Path) -> None:
    network = load_network(network_file(tmp_path))
    assert (network.dns_domain, network.dns_enabled) == ("mesh", True)

    def corp(data: dict[str, Any]) -> None:
        data["network"]["dns"] = {"domain": "WG.Example.org.", "enabled": False}

    network = load_network(network_file(tmp_path, corp))
    assert (network.dns_domain, network.dns_enabled) == ("wg.example.org", False)


@pytest.mark.parametrize(
    ("dns", "message"),
    [
        ({"domain": "my mesh"}, "network.dns.domain: 'my mesh' is not a DNS name; use labels"),
        ({"domain": "-mesh"}, "network.dns.domain: '-mesh' is not a DNS name"),
        ({"domain": "a..b"}, "network.dns.domain: 'a..b' is not a DNS name"),
        ({"domain": ""}, "network.dns.domain: '' is not a DNS name"),
        ({"domain": "x" * 64}, "is not a DNS name"),
        ({"domain": 7}, "network.dns.domain: expected text like mesh, got 7"),
        ({"enabled": "no"}, "network.dns.enabled: expected true or false, got 'no'"),
        ({"domian": "mesh"}, "network.dns.domian: unknown key; valid keys here: domain, enabled"),
        ("mesh", "network.dns: expected a mapping with domain and enabled, got 'mesh'"),
    ],
)
def test_a_bad_dns_section_is_one_line_naming_the_field(
    tmp_path: Path, dns: object, message: str
) -> None:
    def change(data: dict[str, Any]) -> None:
        data["network"]["dns"] = dns

    assert_network_error(network_file(tmp_path, change), message)


def test_empty_timers_section(tmp_path: Path) -> None:
    path = write(tmp_path / "net.yaml", yaml.safe_dump(NETWORK) + "timers:\n")
    assert load_network(path).timers == Timers()


def test_settings_static() -> None:
    net = config.NetworkConfig(
        "n.yaml", bytes(32), IPv4Network("10.1.1.0/24"),
        (StaticPeer(IPv4Address("10.1.1.1"), "h", 1, 2),), Timers(),
    )  # fmt: skip

    def make(ip: str) -> Settings:
        return Settings(net, "wg0", IPv4Address(ip), "n", False, 1, 2, 0, None, False, False)

    assert make("10.1.1.1").static == net.peers[0] and make("10.1.1.1").is_static
    assert make("10.1.1.9").static is None and not make("10.1.1.9").is_static


# ---------------------------------------------------------------- file-level errors


def test_missing_file(tmp_path: Path) -> None:
    assert_network_error(str(tmp_path / "nope.yaml"), "no such file", "--config")


def test_directory(tmp_path: Path) -> None:
    assert_network_error(str(tmp_path), "is a directory")


def test_parent_is_a_file(tmp_path: Path) -> None:
    parent = write(tmp_path / "file", "x")
    assert_network_error(parent + "/net.yaml", "not a directory")


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, where chmod 000 does not stop reading.
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    path = network_file(tmp_path)
    monkeypatch.setattr(builtins, "open", refuse)
    assert_network_error(path, "permission denied")


def test_symlink_loop(tmp_path: Path) -> None:
    os.symlink(tmp_path / "b.yaml", tmp_path / "a.yaml")
    os.symlink(tmp_path / "a.yaml", tmp_path / "b.yaml")
    assert_network_error(str(tmp_path / "a.yaml"), "symbolic link loop")


def test_dangling_symlink(tmp_path: Path) -> None:
    os.symlink(tmp_path / "gone.yaml", tmp_path / "net.yaml")
    assert_network_error(str(tmp_path / "net.yaml"), "dangling symbolic link")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "~\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    assert_network_error(write(tmp_path / "net.yaml", text), "empty", "network:", "peers:")


def test_huge_file(tmp_path: Path) -> None:
    path = write(tmp_path / "net.yaml", "# " + "x" * (1 << 20))
    assert_network_error(path, "larger than 1 MiB")


def test_binary_garbage(tmp_path: Path) -> None:
    path = write(tmp_path / "net.yaml", b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00\x00")
    assert_network_error(path, "not UTF-8")


def test_non_printable_character(tmp_path: Path) -> None:
    path = write(tmp_path / "net.yaml", "network:\n  subnet: a\x00b\n")
    assert_network_error(path, "non-printable")


def test_yaml_syntax_error_has_line_number(tmp_path: Path) -> None:
    path = write(tmp_path / "net.yaml", "network:\n  sharedKey: x\n subnet: [\n")
    assert_network_error(path, "line 3", "YAML")


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    path = write(tmp_path / "net.yaml", f"network:\n  sharedKey: {KEY}\n  sharedKey: {KEY}\n")
    assert_network_error(path, "line 3", "duplicate key 'sharedKey'")


def test_merge_keys_still_work(tmp_path: Path) -> None:
    text = f"""\
network:
  sharedKey: {KEY}
  subnet: 10.1.1.0/24
peers:
  - &base
    endPoint: "h:1"
    adminPort: 2
    wgIp: 10.1.1.1
  - <<: *base
    endPoint: "h:3"
    wgIp: 10.1.1.3
"""
    assert load_network(write(tmp_path / "net.yaml", text)).peers[1].wg_port == 3


@pytest.mark.parametrize(
    "text",
    [
        "[" * 3000 + "]" * 3000,  # deeper than the recursion limit
        "a: 2001-13-01",  # PyYAML raises a bare ValueError for bad dates
        "a: " + "1" * 5000,  # more digits than int() converts
    ],
)
def test_yaml_that_pyyaml_chokes_on(tmp_path: Path, text: str) -> None:
    assert_network_error(write(tmp_path / "net.yaml", text))


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_top_level_not_a_mapping(tmp_path: Path, text: str) -> None:
    assert_network_error(write(tmp_path / "net.yaml", text), "top level", "mapping")


# ---------------------------------------------------------------- field errors


def _set(*keys: Any, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value

    return change


_DELETE = object()
P0 = "peers[0]"

FIELD_ERRORS = [
    # (change, fragments the message must contain)
    (_set("network", value=_DELETE), ["network: missing"]),
    (_set("peers", value=_DELETE), ["peers: missing"]),
    (_set("network", value="x"), ["network: expected a mapping", "'x'"]),
    (_set("network", "sharedKey", value=_DELETE), ["network.sharedKey: missing", "genkey"]),
    (_set("network", "sharedKey", value="not base64!"), ["network.sharedKey: not base64 of 32"]),
    (_set("network", "sharedKey", value=KEY[:-4]), ["network.sharedKey", "genkey"]),
    (_set("network", "sharedKey", value=12345), ["network.sharedKey", "genkey"]),
    (_set("network", "sharedKey", value="ÄÖÜ"), ["network.sharedKey", "genkey"]),
    (_set("network", "subnet", value=5), ["network.subnet: expected text", "got 5"]),
    (_set("network", "subnet", value=_DELETE), ["network.subnet: missing"]),
    (_set("network", "subnet", value="10.1.1.1/255.255.255.0"), ["host bits", "10.1.1.0/24"]),
    (_set("network", "subnet", value="fd00::/64"), ["network.subnet", "IPv6 is not supported"]),
    (_set("network", "subnet", value="10.1.1.0"), ["network.subnet", "prefix length"]),
    (_set("network", "subnet", value="10.1.1.0/33"), ["network.subnet", "not an IPv4 subnet"]),
    (_set("network", "subnet", value="10.1.1.0/31"), ["network.subnet", "/31"]),
    (_set("network", "extra", value=1), ["network.extra: unknown key", "sharedKey, subnet"]),
    (_set("extra", value=1), ["extra: unknown key", "network, peers, timers"]),
    (_set("peers", value="vps:1"), ["peers: expected a list", "'vps:1'"]),
    (_set("peers", value=[]), ["peers: empty", "at least one"]),
    (_set("peers", 0, value="vps:1"), [f"{P0}: expected a mapping"]),
    (_set("peers", 0, "wgIp", value=_DELETE), [f"{P0}.wgIp: missing"]),
    (_set("peers", 0, "wgIp", value=7), [f"{P0}.wgIp: expected text"]),
    (_set("peers", 0, "wgIp", value="10.1.1.300"), [f"{P0}.wgIp", "not an IPv4 address"]),
    (_set("peers", 0, "wgIp", value="fd00::1"), [f"{P0}.wgIp", "IPv6"]),
    (_set("peers", 0, "wgIp", value="10.2.0.1"), [f"{P0}.wgIp", "outside subnet 10.1.1.0/24"]),
    (_set("peers", 0, "wgIp", value="10.1.1.0"), [f"{P0}.wgIp", "network address"]),
    (_set("peers", 0, "wgIp", value="10.1.1.255"), [f"{P0}.wgIp", "broadcast address"]),
    (_set("peers", 1, "wgIp", value="10.1.1.1"), ["peers[1].wgIp", "already used by peers[0]"]),
    (_set("peers", 0, "endPoint", value="vps.example.org"), [f"{P0}.endPoint", "host:port"]),
    (_set("peers", 0, "endPoint", value=":5"), [f"{P0}.endPoint", "host:port"]),
    (_set("peers", 0, "endPoint", value="vps:0"), [f"{P0}.endPoint", "1..65535"]),
    (_set("peers", 0, "endPoint", value="vps:65536"), [f"{P0}.endPoint", "1..65535"]),
    (_set("peers", 0, "endPoint", value="vps:http"), [f"{P0}.endPoint", "not a number"]),
    (_set("peers", 0, "endPoint", value="[fd00::1]:5"), [f"{P0}.endPoint", "IPv6"]),
    (_set("peers", 0, "endPoint", value="10.1.1:5"), [f"{P0}.endPoint", "not an IPv4"]),
    (_set("peers", 0, "endPoint", value="bad host:5"), [f"{P0}.endPoint", "not a valid host"]),
    (_set("peers", 1, "endPoint", value="VPS.example.org:50001"), ["peers[1].endPoint", "already"]),
    (_set("peers", 0, "adminPort", value=0), [f"{P0}.adminPort", "1..65535"]),
    (_set("peers", 0, "adminPort", value=70000), [f"{P0}.adminPort", "1..65535"]),
    (_set("peers", 0, "adminPort", value=True), [f"{P0}.adminPort", "expected a port", "true"]),
    (_set("peers", 0, "adminPort", value="50000"), [f"{P0}.adminPort", "expected a port"]),
    (_set("peers", 0, "adminPort", value=50001), [f"{P0}.adminPort", "same as the WireGuard"]),
    (_set("peers", 0, "adminPort", value=1 << 10000), [f"{P0}.adminPort", "huge number"]),
    (_set("peers", 0, "wgip", value="x"), [f"{P0}.wgip: unknown key", "wgIp"]),
    (_set("timers", value=[1]), ["timers: expected a mapping"]),
    (_set("timers", value={"deadafter": 1}), ["timers.deadafter: unknown key", "deadAfter"]),
    (_set("timers", value={"deadAfter": 0}), ["timers.deadAfter", "not positive"]),
    (_set("timers", value={"deadAfter": -1.5}), ["timers.deadAfter", "not positive"]),
    (_set("timers", value={"deadAfter": float("nan")}), ["timers.deadAfter", "not positive"]),
    (_set("timers", value={"deadAfter": float("inf")}), ["timers.deadAfter", "too large"]),
    (_set("timers", value={"deadAfter": 1 << 2000}), ["timers.deadAfter", "too large"]),
    (_set("timers", value={"deadAfter": "5"}), ["timers.deadAfter", "expected a number"]),
    (_set("timers", value={"deadAfter": True}), ["timers.deadAfter", "expected a number"]),
    (_set("timers", value={"keepalive": 2.5}), ["timers.keepalive", "whole number"]),
    (_set("timers", value={"keepalive": 70000}), ["timers.keepalive", "65535"]),
]


G0 = "gateways[0]"
LAN = {"wgIp": "10.1.1.3", "routes": ["192.168.1.0/24"]}


def _gateways(*entries: Any) -> Callable[[dict[str, Any]], None]:
    return _set("gateways", value=list(entries))


def _routes(*routes: Any) -> Callable[[dict[str, Any]], None]:
    return _gateways({"wgIp": "10.1.1.3", "routes": list(routes)})


FIELD_ERRORS += [
    (_set("gateways", value="10.1.1.3"), ["gateways: expected a list", "wgIp/routes"]),
    (_gateways("10.1.1.3"), [f"{G0}: expected a mapping", "wgIp and routes"]),
    (_gateways({"routes": ["192.168.1.0/24"]}), [f"{G0}.wgIp: missing", "10.1.1.1"]),
    (_gateways({"wgIp": "10.1.1.3"}), [f"{G0}.routes: missing", "192.168.1.0/24"]),
    (_gateways({**LAN, "route": []}), [f"{G0}.route: unknown key", "wgIp, routes, masquerade"]),
    (_gateways({**LAN, "wgIp": "10.2.0.3"}), [f"{G0}.wgIp", "outside subnet 10.1.1.0/24"]),
    (_gateways({**LAN, "wgIp": "10.1.1.255"}), [f"{G0}.wgIp", "broadcast address"]),
    (_gateways({**LAN, "wgIp": "charlie"}), [f"{G0}.wgIp", "not an IPv4 address"]),
    (_gateways(LAN, LAN), ["gateways[1].wgIp", "already gateways[0]", "one entry"]),
    (_gateways({**LAN, "routes": "192.168.1.0/24"}), [f"{G0}.routes: expected a list"]),
    (_gateways({**LAN, "routes": []}), [f"{G0}.routes: expected a list", "got a list"]),
    (_gateways({**LAN, "masquerade": "no"}), [f"{G0}.masquerade", "true or false", "'no'"]),
    (_routes("192.168.1.0"), [f"{G0}.routes[0]", "no prefix length", "/24", "/32"]),
    (_routes("192.168.1.1/24"), [f"{G0}.routes[0]", "host bits set", "write 192.168.1.0/24"]),
    (_routes("192.168.1.0/33"), [f"{G0}.routes[0]", "not an IPv4 network"]),
    (_routes("192.168.01.0/24"), [f"{G0}.routes[0]", "not an IPv4 network"]),
    (_routes("192.168.1.0/255.255.255.0"), [f"{G0}.routes[0]", "prefix length as a number"]),
    (_routes("lan"), [f"{G0}.routes[0]", "no prefix length"]),
    (_routes(24), [f"{G0}.routes[0]: expected text", "192.168.1.0/24"]),
    (_routes("fd00::/64"), [f"{G0}.routes[0]", "IPv6 is not supported"]),
    (_routes("10.1.1.128/25"), [f"{G0}.routes[0]", "overlaps the mesh subnet 10.1.1.0/24"]),
    (_routes("10.0.0.0/8"), [f"{G0}.routes[0]", "overlaps the mesh subnet", "0.0.0.0/0"]),
    (_routes("10.1.1.7/32"), [f"{G0}.routes[0]", "overlaps the mesh subnet"]),
    (_routes("127.0.0.0/8"), [f"{G0}.routes[0]", "never forwarded"]),
    (_routes("224.0.0.0/3"), [f"{G0}.routes[0]", "never forwarded"]),
    (_routes("192.0.0.0/2"), [f"{G0}.routes[0]", "overlaps 224.0.0.0/4"]),
    (_routes("192.168.1.0/24", "192.168.1.0/24"), [f"{G0}.routes[1]", "listed twice"]),
]


@pytest.mark.parametrize(("change", "fragments"), FIELD_ERRORS)
def test_field_errors(tmp_path: Path, change: Any, fragments: list[str]) -> None:
    assert_network_error(network_file(tmp_path, change), *fragments)


def test_bad_key_is_never_quoted(tmp_path: Path) -> None:
    secret = "almost-the-real-key-but-wrong"
    message = assert_network_error(
        network_file(tmp_path, _set("network", "sharedKey", value=secret))
    )
    assert secret not in message


def test_long_values_are_shortened(tmp_path: Path) -> None:
    message = assert_network_error(
        network_file(tmp_path, _set("peers", 0, "wgIp", value="x" * 500))
    )
    assert len(message) < 300


def test_gateways(tmp_path: Path) -> None:
    entries = [
        {"wgIp": "10.1.1.3", "routes": ["192.168.1.0/24", "192.168.7.5/32"]},
        {"wgIp": " 10.1.1.4", "routes": ["192.168.1.0/24"], "masquerade": False},
        {"wgIp": "10.1.1.1", "routes": ["0.0.0.0/0"]},
    ]
    net = load_network(network_file(tmp_path, _gateways(*entries)))
    lan = IPv4Network("192.168.1.0/24")
    assert net.gateways == (
        Gateway(IPv4Address("10.1.1.3"), (lan, IPv4Network("192.168.7.5/32")), True),
        Gateway(IPv4Address("10.1.1.4"), (lan,), False),
        Gateway(IPv4Address("10.1.1.1"), (IPv4Network("0.0.0.0/0"),), True),
    )
    assert net.exit_nodes() == (IPv4Address("10.1.1.1"),)
    assert net.gateway(IPv4Address("10.1.1.4")) == net.gateways[1]
    assert net.gateway(IPv4Address("10.1.1.9")) is None
    assert load_network(network_file(tmp_path)).gateways == ()  # optional


def test_a_route_may_hold_a_statics_address(tmp_path: Path) -> None:
    """The mesh's own traffic never takes a gateway's route (forwarding.py:
    it is marked), so a network may hold a static's endpoint (192.0.2.7)."""
    path = network_file(tmp_path, _routes("192.0.2.0/24"))
    assert load_network(path).gateways[0].routes == (IPv4Network("192.0.2.0/24"),)


# ---------------------------------------------------------------- peer.yaml


def test_load_peer(tmp_path: Path) -> None:
    path = write(
        tmp_path / "peer.yaml",
        "name: alice\nwgIp: 10.1.1.1\nwgInterface: wg0\nexistingInterface: false\n",
    )
    assert load_peer(path, required=True) == PeerConfig(
        "alice", IPv4Address("10.1.1.1"), "wg0", False
    )


def test_load_peer_mobile(tmp_path: Path) -> None:
    path = write(tmp_path / "peer.yaml", "mobile: true\n")
    assert load_peer(path, required=True) == PeerConfig(mobile=True)


def test_peer_missing_optional_and_required(tmp_path: Path) -> None:
    path = str(tmp_path / "peer.yaml")
    assert load_peer(path, required=False) == PeerConfig()
    message = error_of(lambda: load_peer(path, required=True))
    assert path in message and "--peer-config" in message


def test_peer_empty_file_sets_nothing(tmp_path: Path) -> None:
    assert load_peer(write(tmp_path / "peer.yaml", "# nothing\n"), required=True) == PeerConfig()


def test_peer_other_read_errors_even_when_optional(tmp_path: Path) -> None:
    assert "is a directory" in error_of(lambda: load_peer(str(tmp_path), required=False))


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("name: 'al ice'\n", ["name:", "not a valid name"]),
        ("name: " + "a" * 33 + "\n", ["name:", "1..32"]),
        ("name: 007\n", ["name: expected text", "got 7"]),
        ("wgIp: 10.1.1\n", ["wgIp:", "not an IPv4"]),
        ("wgInterface: wireguard-interface0\n", ["wgInterface:", "1..15"]),
        ("wgInterface: wg/0\n", ["wgInterface:", "'/'"]),
        ("existingInterface: 'yes'\n", ["existingInterface:", "true or false"]),
        ("mobile: 1\n", ["mobile:", "true or false", "got 1"]),
        ("mobile: yes please\n", ["mobile:", "true or false"]),
        ("wgip: 10.1.1.1\n", ["wgip: unknown key", "wgIp"]),
        ("exitNode: 10.1.1\n", ["exitNode:", "not an IPv4"]),
        ("exitNode: [10.1.1.1]\n", ["exitNode: expected text", "10.1.1.1"]),
        ("- name\n", ["top level", "mapping"]),
    ],
)
def test_peer_errors(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = write(tmp_path / "peer.yaml", text)
    message = error_of(lambda: load_peer(path, required=True))
    assert message.startswith(path + ": ")
    for fragment in fragments:
        assert fragment in message, message


# ---------------------------------------------------------------- helpers


def test_generate_shared_key() -> None:
    first, second = generate_shared_key(), generate_shared_key()
    assert len(base64.b64decode(first, validate=True)) == 32
    assert first != second


def test_world_readable_warning(tmp_path: Path) -> None:
    path = network_file(tmp_path)
    os.chmod(path, 0o644)
    warning = warn_if_world_readable(path)
    assert warning is not None and path in warning and "chmod 600" in warning
    os.chmod(path, 0o640)
    assert warn_if_world_readable(path) is not None
    os.chmod(path, 0o600)
    assert warn_if_world_readable(path) is None
    assert warn_if_world_readable(str(tmp_path / "missing")) is None


# ---------------------------------------------------------------- properties

_fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_fuzz
@given(data=st.binary(max_size=400))
def test_random_bytes_only_raise_config_error(tmp_path_factory: Any, data: bytes) -> None:
    path = write(tmp_path_factory.mktemp("fuzz") / "net.yaml", data)
    for load in (lambda: load_network(path), lambda: load_peer(path, required=True)):
        try:
            load()
        except ConfigError as exc:
            assert "\n" not in str(exc)


_yaml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["10.1.1.5", "10.1.1.0/24", "h:1", KEY, "fd00::1", "wgIp"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@_fuzz
@given(
    where=st.sampled_from(
        [
            ("network",),
            ("peers",),
            ("timers",),
            ("network", "subnet"),
            ("network", "sharedKey"),
            ("peers", 0),
            ("peers", 0, "wgIp"),
            ("peers", 0, "endPoint"),
            ("peers", 0, "adminPort"),
        ]
    ),
    value=_yaml_values,
)
def test_any_value_anywhere_only_raises_config_error(
    tmp_path_factory: Any, where: tuple[Any, ...], value: Any
) -> None:
    path = network_file(tmp_path_factory.mktemp("fuzz"), _set(*where, value=value))
    try:
        load_network(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)
