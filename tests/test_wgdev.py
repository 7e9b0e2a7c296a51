"""Tests of the WireGuard / route adapters that need no root: parsing, planning,
proc.run error handling and the fakes."""

from __future__ import annotations

import base64
import logging
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import FakeRoutes, FakeWgDevice
from wg_netmanager import uapi
from wg_netmanager.backends import backend_commands, kernel_may_have_wireguard
from wg_netmanager.model import Route, WgPeer, WgPeerReading
from wg_netmanager.proc import CommandError, run, run_batch
from wg_netmanager.routes import (
    ROUTE_PROTO,
    Routes,
    RouteTable,
    parse_routes,
    plan_route_changes,
)
from wg_netmanager.wgdev import (
    WgDevice,
    WgInterface,
    is_valid_key,
    parse_dump,
    plan_peer_changes,
)


def key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


K1, K2, K3, K4 = key(1), key(2), key(3), key(4)
PRIVATE = base64.b64encode(b"\x99" * 32).decode()


def net(text: str) -> IPv4Network:
    return IPv4Network(text)


def nets(*texts: str) -> tuple[IPv4Network, ...]:
    return tuple(sorted(IPv4Network(t) for t in texts))


def reading(
    k: str,
    *ips: str,
    endpoint: tuple[str, int] | None = None,
    keepalive: int = 0,
) -> WgPeerReading:
    return WgPeerReading(k, endpoint, nets(*ips), None, 0, 0, keepalive)


# ---------------------------------------------------------------------------
# parse_dump

NOW = 1_700_000_100.0

DUMP = (
    f"{PRIVATE}\t{K4}\t51820\toff\n"
    f"{K1}\t(none)\t192.0.2.1:51820\t10.1.1.2/32,10.1.1.3/32\t1700000090\t1234\t5678\t25\n"
    f"{K2}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n"
    f"{K3}\t(none)\t[2001:db8::1]:51820\t10.1.1.4/32,fd00::4/128\t1700000200\t1\t2\toff\n"
)


def test_parse_dump_peers() -> None:
    peers = parse_dump(DUMP, NOW)
    assert set(peers) == {K1, K2, K3}
    p1 = peers[K1]
    assert p1 == WgPeerReading(
        public_key=K1,
        endpoint=("192.0.2.1", 51820),
        allowed_ips=nets("10.1.1.2/32", "10.1.1.3/32"),
        handshake_age=10.0,
        rx_bytes=1234,
        tx_bytes=5678,
        persistent_keepalive=25,
    )
    p2 = peers[K2]
    assert p2.endpoint is None
    assert p2.allowed_ips == ()
    assert p2.handshake_age is None  # 0 = never
    assert p2.persistent_keepalive == 0  # off
    p3 = peers[K3]
    assert p3.endpoint is None  # IPv6 endpoint is not an Endpoint
    assert p3.allowed_ips == nets("10.1.1.4/32")  # IPv6 allowed-ip ignored
    assert p3.handshake_age == 0.0  # handshake "in the future" (clock step): clamped


def test_parse_dump_skips_garbage_and_never_logs_lines(caplog: pytest.LogCaptureFixture) -> None:
    text = (
        f"{PRIVATE}\t{K4}\t51820\toff\n"
        "\n"
        "garbage\n"
        f"{K1}\t(none)\t(none)\t(none)\tnotanumber\t0\t0\toff\n"
        f"notakey\t(none)\t(none)\t(none)\t0\t0\t0\toff\n"
        f"{K2}\t(none)\t(none)\t10.1.1.999/32\t0\t0\t0\toff\n"
        f"{K3}\t(none)\t(none)\t10.1.1.5/32\t0\t0\t0\t25\textra\n"
        f"{K4}\t(none)\t(none)\t10.1.1.6/32\t0\t0\t0\toff\n"
    )
    with caplog.at_level(logging.DEBUG, logger="wg_netmanager"):
        peers = parse_dump(text, NOW)
    assert list(peers) == [K4]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 5
    assert PRIVATE not in caplog.text


def test_parse_dump_empty_and_interface_only() -> None:
    assert parse_dump("", NOW) == {}
    assert parse_dump(f"{PRIVATE}\t{K4}\t51820\toff\n", NOW) == {}


# ---------------------------------------------------------------------------
# the userspace API (wireguard-go's socket)


def hx(k: str) -> str:
    return base64.b64decode(k).hex()


PRIVATE_HEX = (b"\x99" * 32).hex()
GET = (
    f"private_key={PRIVATE_HEX}\nlisten_port=51820\n"
    f"public_key={hx(K1)}\nendpoint=192.0.2.1:51820\nlast_handshake_time_sec=1700000090\n"
    "last_handshake_time_nsec=500000000\ntx_bytes=5678\nrx_bytes=1234\n"
    "persistent_keepalive_interval=25\nallowed_ip=10.1.1.3/32\nallowed_ip=10.1.1.2/32\n"
    "protocol_version=1\n"
    f"public_key={hx(K2)}\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"
    "tx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n"
    f"public_key={hx(K3)}\nendpoint=[2001:db8::1]:51820\nallowed_ip=fd00::4/128\n"
    "allowed_ip=10.1.1.4/32\nsome_future_key=1\n"
)


def test_uapi_reading_is_what_wg_show_dump_says() -> None:
    peers = uapi.parse_get(GET, NOW)
    assert set(peers) == {K1, K2, K3}
    assert peers[K1] == WgPeerReading(
        public_key=K1,
        endpoint=("192.0.2.1", 51820),
        allowed_ips=nets("10.1.1.2/32", "10.1.1.3/32"),
        handshake_age=9.5,
        rx_bytes=1234,
        tx_bytes=5678,
        persistent_keepalive=25,
    )
    assert peers[K2] == WgPeerReading(K2, None, (), None, 0, 0, 0)
    assert peers[K3].endpoint is None and peers[K3].allowed_ips == nets("10.1.1.4/32")
    assert uapi.parse_get("", NOW) == {}


def test_uapi_skips_a_malformed_peer_without_quoting_it(caplog: pytest.LogCaptureFixture) -> None:
    text = f"public_key=zz{hx(K1)[2:]}\nrx_bytes=1\npublic_key={hx(K2)}\nrx_bytes=x\n"
    text += f"public_key={hx(K3)}\nallowed_ip=10.1.1.999/32\nrx_bytes=7\n"
    with caplog.at_level(logging.DEBUG, logger="wg_netmanager"):
        peers = uapi.parse_get(GET.split("public_key")[0] + text, NOW)
    assert list(peers) == [K3] and peers[K3].rx_bytes == 7 and peers[K3].allowed_ips == ()
    assert PRIVATE_HEX not in caplog.text and hx(K1)[2:] not in caplog.text


def test_uapi_sets_what_the_planned_wg_set_commands_say() -> None:
    desired = {
        K1: WgPeer(K1, nets("10.1.1.2/32"), ("192.0.2.1", 51820), 25),
        K3: WgPeer(K3, ()),
    }
    actual = {K1: reading(K1, "10.1.1.2/32", "10.1.1.5/32"), K2: reading(K2, "10.1.1.9/32")}
    shrink, grow = plan_peer_changes("wg0", desired, actual)
    assert uapi.set_lines(shrink) == [
        f"public_key={hx(K2)}",
        "remove=true",
        f"public_key={hx(K1)}",
        "replace_allowed_ips=true",
        "allowed_ip=10.1.1.2/32",
        "endpoint=192.0.2.1:51820",
        "persistent_keepalive_interval=25",
    ]
    assert uapi.set_lines(grow) == [f"public_key={hx(K3)}", "replace_allowed_ips=true"]
    assert uapi.set_lines(["wg", "set", "wg0", "listen-port", "51820"]) == ["listen_port=51820"]
    # A peer that turns its keepalive on goes after the others: wireguard-go
    # carries "turned on" to the next peer of the request (see set_lines).
    argv = ["wg", "set", "wg0", "peer", K1, "endpoint", "192.0.2.1:51820"]
    argv += ["persistent-keepalive", "25", "peer", K2, "allowed-ips", "", "peer", K3, "remove"]
    assert uapi.set_lines(argv) == [
        f"public_key={hx(K2)}",
        "replace_allowed_ips=true",
        f"public_key={hx(K3)}",
        "remove=true",
        f"public_key={hx(K1)}",
        "endpoint=192.0.2.1:51820",
        "persistent_keepalive_interval=25",
    ]
    # set_fwmark's hex, and "off" (UAPI takes the mark in decimal, 0 for none)
    assert uapi.set_lines(["wg", "set", "wg0", "fwmark", "0x51d0"]) == ["fwmark=20944"]
    assert uapi.set_lines(["wg", "set", "wg0", "fwmark", "off"]) == ["fwmark=0"]
    for bad in (
        ["wg", "show", "wg0"],
        ["wg", "set", "wg0", "private-key", "/dev/stdin"],
        ["wg", "set", "wg0", "peer"],
    ):
        with pytest.raises(ValueError):
            uapi.set_lines(bad)


def test_uapi_talks_over_a_unix_socket_and_reports_a_refusal(tmp_path: Path) -> None:
    path = str(tmp_path / "wg0.sock")
    requests: list[bytes] = []

    async def serve_one(listener: trio.SocketListener, answer: bytes) -> None:
        async with await listener.accept() as stream:
            got = b""
            while not got.endswith(b"\n\n"):
                got += await stream.receive_some(4096)
            requests.append(got)
            await stream.send_all(answer)

    async def main() -> tuple[str, CommandError, CommandError]:
        sock = trio.socket.socket(trio.socket.AF_UNIX)
        await sock.bind(path)
        sock.listen()
        async with trio.SocketListener(sock) as listener, trio.open_nursery() as nursery:
            nursery.start_soon(serve_one, listener, GET.encode() + b"errno=0\n\n")
            body = await uapi.request(path, "get=1")
            nursery.start_soon(serve_one, listener, b"errno=22\n\n")
            with pytest.raises(CommandError) as refused:
                await uapi.request(path, "set=1", ["listen_port=1"])
        with pytest.raises(CommandError) as missing:
            await uapi.request(str(tmp_path / "nothing.sock"), "get=1")
        return body, refused.value, missing.value

    body, refused, missing = trio.run(main)
    assert uapi.parse_get(body, NOW) == uapi.parse_get(GET, NOW)
    assert requests == [b"get=1\n\n", b"set=1\nlisten_port=1\n\n"]
    assert refused.argv[0] == "uapi" and "errno 22" in str(refused)
    assert missing.returncode == 1 and "nothing.sock" in str(missing)


def test_is_valid_key() -> None:
    assert is_valid_key(K1)
    assert not is_valid_key("")
    assert not is_valid_key(K1[:-2])
    assert not is_valid_key("-" * 44)


# ---------------------------------------------------------------------------
# plan_peer_changes


def wgset(*clauses: str) -> list[str]:
    return ["wg", "set", "wg0", *clauses]


def test_plan_nothing_to_do() -> None:
    desired = {K1: WgPeer(K1, nets("10.1.1.2/32"), ("192.0.2.1", 1), 25)}
    actual = {K1: reading(K1, "10.1.1.2/32", endpoint=("192.0.2.1", 1), keepalive=25)}
    assert plan_peer_changes("wg0", desired, actual) == []
    assert plan_peer_changes("wg0", {}, {}) == []


def test_plan_add_peer() -> None:
    desired = {
        K1: WgPeer(K1, nets("10.1.1.3/32", "10.1.1.2/32"), ("192.0.2.1", 51820), 25),
        K2: WgPeer(K2, ()),
    }
    assert plan_peer_changes("wg0", desired, {}) == [
        wgset(
            *("peer", K1, "allowed-ips", "10.1.1.2/32,10.1.1.3/32"),
            *("endpoint", "192.0.2.1:51820", "persistent-keepalive", "25"),
            *("peer", K2, "allowed-ips", ""),
        )
    ]


def test_plan_remove_peer_and_empty_allowed_ips() -> None:
    actual = {K1: reading(K1, "10.1.1.2/32"), K2: reading(K2, "10.1.1.3/32")}
    desired = {K2: WgPeer(K2, ())}
    assert plan_peer_changes("wg0", desired, actual) == [
        wgset("peer", K1, "remove", "peer", K2, "allowed-ips", "")
    ]


def test_plan_endpoint_only_when_known_and_different() -> None:
    actual = {K1: reading(K1, "10.1.1.2/32", endpoint=("198.51.100.7", 4444))}
    # None: keep what WireGuard learned (roaming)
    assert plan_peer_changes("wg0", {K1: WgPeer(K1, nets("10.1.1.2/32"))}, actual) == []
    same = {K1: WgPeer(K1, nets("10.1.1.2/32"), ("198.51.100.7", 4444))}
    assert plan_peer_changes("wg0", same, actual) == []
    other = {K1: WgPeer(K1, nets("10.1.1.2/32"), ("192.0.2.1", 51820))}
    assert plan_peer_changes("wg0", other, actual) == [
        wgset("peer", K1, "endpoint", "192.0.2.1:51820")
    ]


def test_plan_keepalive_change() -> None:
    actual = {K1: reading(K1, "10.1.1.2/32", keepalive=25)}
    desired = {K1: WgPeer(K1, nets("10.1.1.2/32"), None, 0)}
    assert plan_peer_changes("wg0", desired, actual) == [
        wgset("peer", K1, "persistent-keepalive", "0")
    ]


def test_plan_moving_address_shrinks_before_grow() -> None:
    # 10.1.1.3 moves from K1 (direct) to K2 (now the gateway); K3 goes away
    actual = {
        K1: reading(K1, "10.1.1.2/32", "10.1.1.3/32"),
        K2: reading(K2, "10.1.1.4/32"),
        K3: reading(K3, "10.1.1.5/32"),
    }
    desired = {
        K1: WgPeer(K1, nets("10.1.1.2/32"), None, 25),
        K2: WgPeer(K2, nets("10.1.1.3/32", "10.1.1.4/32")),
    }
    assert plan_peer_changes("wg0", desired, actual) == [
        wgset(
            *("peer", K3, "remove"),
            *("peer", K1, "allowed-ips", "10.1.1.2/32", "persistent-keepalive", "25"),
        ),
        wgset("peer", K2, "allowed-ips", "10.1.1.3/32,10.1.1.4/32"),
    ]


def test_plan_swap_loses_before_gains() -> None:
    actual = {K1: reading(K1, "10.1.1.2/32", "10.1.1.9/32"), K2: reading(K2, "10.1.1.3/32")}
    desired = {
        K1: WgPeer(K1, nets("10.1.1.3/32", "10.1.1.9/32")),
        K2: WgPeer(K2, nets("10.1.1.2/32")),
    }
    assert plan_peer_changes("wg0", desired, actual) == [
        wgset(
            *("peer", K1, "allowed-ips", "10.1.1.9/32"),
            *("peer", K2, "allowed-ips", ""),
        ),
        wgset(
            *("peer", K1, "allowed-ips", "10.1.1.3/32,10.1.1.9/32"),
            *("peer", K2, "allowed-ips", "10.1.1.2/32"),
        ),
    ]


def test_plan_skips_invalid_key() -> None:
    desired = {"bogus": WgPeer("bogus", nets("10.1.1.2/32")), K1: WgPeer(K1, ())}
    assert plan_peer_changes("wg0", desired, {}) == [wgset("peer", K1, "allowed-ips", "")]


class WgModel:
    """What ``wg set`` does with allowed-ips: replace the peer's list, taking
    each address away from whichever other peer had it."""

    def __init__(self, owners: dict[str, set[IPv4Network]]) -> None:
        self.peers = {k: set(v) for k, v in owners.items()}
        self.steals = 0  # assignments of an address another peer still had

    def apply(self, argv: list[str]) -> None:
        assert argv[:3] == ["wg", "set", "wg0"]
        words = argv[3:]
        i = 0
        current: str | None = None
        while i < len(words):
            word = words[i]
            if word == "peer":
                current = words[i + 1]
                self.peers.setdefault(current, set())
                i += 2
            elif word == "remove":
                assert current is not None
                del self.peers[current]
                i += 1
            elif word == "allowed-ips":
                assert current is not None
                new = {IPv4Network(t) for t in words[i + 1].split(",") if t}
                for k, other in self.peers.items():
                    if k != current and other & new:
                        self.steals += 1
                        other -= new
                self.peers[current] = new
                i += 2
            else:  # endpoint / persistent-keepalive
                i += 2

    def owner(self, address: IPv4Network) -> str | None:
        for k, v in self.peers.items():
            if address in v:
                return k
        return None


ADDRS = [IPv4Network(f"10.1.1.{i}/32") for i in range(2, 8)]
KEYS = [K1, K2, K3, K4]


@st.composite
def assignments(draw: st.DrawFn) -> dict[str, set[IPv4Network]]:
    """Non-overlapping allowed-ips for a subset of the keys."""
    present = draw(st.sets(st.sampled_from(KEYS)))
    result: dict[str, set[IPv4Network]] = {k: set() for k in present}
    if present:
        for addr in ADDRS:
            k = draw(st.sampled_from([None, *sorted(present)]))
            if k is not None:
                result[k].add(addr)
    return result


@settings(max_examples=300, deadline=None)
@given(assignments(), assignments())
def test_plan_reaches_desired_and_never_misroutes(
    before: dict[str, set[IPv4Network]], after: dict[str, set[IPv4Network]]
) -> None:
    actual = {k: WgPeerReading(k, None, tuple(sorted(v)), None, 0, 0) for k, v in before.items()}
    desired = {k: WgPeer(k, tuple(sorted(v))) for k, v in after.items()}
    model = WgModel(before)
    plan = plan_peer_changes("wg0", desired, actual)
    assert len(plan) <= 2
    for i, argv in enumerate(plan):
        model.apply(argv)
        for addr in ADDRS:
            new_owner = next((k for k, v in after.items() if addr in v), None)
            got = model.owner(addr)
            if i == 0 and len(plan) == 2:
                # after the first (shrink) command an address is either
                # unassigned or already where it belongs
                assert got in (None, new_owner)
            else:
                assert got == new_owner
    assert model.steals == 0  # no address was ever on two peers at once
    assert model.peers == after
    # and a second pass finds nothing to do
    again = {k: WgPeerReading(k, None, tuple(sorted(v)), None, 0, 0) for k, v in after.items()}
    assert plan_peer_changes("wg0", desired, again) == []


# ---------------------------------------------------------------------------
# routes


def test_parse_routes() -> None:
    text = (
        "10.1.1.3 via 10.1.1.1 proto 57 onlink \n"
        "10.1.1.2 proto 57 scope link \n"
        "10.1.1.4/32 scope link \n"
        "10.1.1.5 via 10.1.1.2 dev wg0 proto static metric 10\n"
        "10.1.1.0/24 proto kernel scope link src 10.1.1.1\n"
        "default via 10.1.1.1\n"
        "unreachable 10.1.1.9\n"
        "10.1.1.6 via inet6 fe80::1\n"
        "192.168.1.0/24 via 10.1.1.3 proto 57 onlink \n"
        "192.168.1.7/24 via 10.1.1.3\n"
        "garbage here\n"
        "\n"
    )
    assert parse_routes(text) == {
        Route(IPv4Address("10.1.1.3"), IPv4Address("10.1.1.1")),
        Route(IPv4Address("10.1.1.2")),
        Route(IPv4Address("10.1.1.4")),
        Route(IPv4Address("10.1.1.5"), IPv4Address("10.1.1.2")),
        # networks count too (what `ip route` shows is filtered by our proto 57)
        Route(IPv4Address("10.1.1.0"), None, 24),
        Route(IPv4Address("0.0.0.0"), IPv4Address("10.1.1.1"), 0),
        Route(IPv4Address("192.168.1.0"), IPv4Address("10.1.1.3"), 24),
    }


def R(dest: str, via: str | None = None) -> Route:
    return Route(IPv4Address(dest), None if via is None else IPv4Address(via))


def test_plan_routes_order() -> None:
    actual = {R("10.1.1.2"), R("10.1.1.3", "10.1.1.2"), R("10.1.1.4")}
    desired = {R("10.1.1.3", "10.1.1.5"), R("10.1.1.5"), R("10.1.1.4")}
    p = ["proto", ROUTE_PROTO]
    assert plan_route_changes("wg0", desired, actual) == [
        ["ip", "-4", "route", "replace", "10.1.1.5/32", "dev", "wg0", *p],
        [
            "ip",
            "-4",
            "route",
            "replace",
            "10.1.1.3/32",
            "via",
            "10.1.1.5",
            "dev",
            "wg0",
            *p,
            "onlink",
        ],
        # 10.1.1.3 changed gateway: replaced above, not deleted
        ["ip", "-4", "route", "del", "10.1.1.2/32", "dev", "wg0", *p],
    ]
    assert plan_route_changes("wg0", desired, desired) == []


def test_plan_routes_networks_by_destination_network() -> None:
    """A network is one destination: its gateway changes by replace; a /32
    and a /24 with the same address are two destinations."""
    lan = IPv4Network("192.168.1.0/24")
    actual = {Route.to(lan, IPv4Address("10.1.1.3")), R("192.168.1.0"), R("10.1.1.3")}
    desired = {Route.to(lan, IPv4Address("10.1.1.1")), R("10.1.1.3")}
    p = ["proto", ROUTE_PROTO]
    via = ["via", "10.1.1.1", "dev", "wg0", *p, "onlink"]
    assert plan_route_changes("wg0", desired, actual) == [
        ["ip", "-4", "route", "replace", "192.168.1.0/24", *via],
        ["ip", "-4", "route", "del", "192.168.1.0/32", "dev", "wg0", *p],
    ]
    routes = {Route.to(lan, IPv4Address("10.1.1.1"))}
    text = "192.168.1.0/24 via 10.1.1.1 proto 57 onlink \n"
    assert parse_routes(text) == routes  # read back as it was written: nothing to do
    assert plan_route_changes("wg0", routes, parse_routes(text)) == []
    assert plan_route_changes("wg0", set(), routes) == [
        ["ip", "-4", "route", "del", "192.168.1.0/24", "via", "10.1.1.1", "dev", "wg0", *p]
    ]


def test_plan_routes_duplicate_dest_does_not_crash() -> None:
    desired = {R("10.1.1.3"), R("10.1.1.3", "10.1.1.2")}
    plan = plan_route_changes("wg0", desired, {R("10.1.1.3", "10.1.1.9")})
    assert len(plan) == 1 and plan[0][3] == "replace"


# ---------------------------------------------------------------------------
# proc.run


def test_run_ok_and_stdin() -> None:
    async def main() -> str:
        return await run(["sh", "-c", "tr a-z A-Z"], stdin=b"hello")

    assert trio.run(main) == "HELLO"


def test_command_error_shows_command_and_stderr_not_stdin(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        await run(["sh", "-c", "cat >/dev/null; echo boom >&2; exit 3"], stdin=b"SECRETKEY")

    with caplog.at_level(logging.DEBUG, logger="wg_netmanager"), pytest.raises(CommandError) as ei:
        trio.run(main)
    err = ei.value
    assert err.returncode == 3
    assert err.stderr.strip() == "boom"
    assert err.argv[0] == "sh"
    assert "sh -c" in str(err) and "boom" in str(err) and "exit code 3" in str(err)
    assert "SECRETKEY" not in str(err) and "SECRETKEY" not in caplog.text
    assert "sh -c" in caplog.text  # the command is logged at DEBUG


def test_run_missing_binary_and_timeout() -> None:
    async def missing() -> None:
        await run(["/nonexistent/wg_netmanager-test-binary"])

    with pytest.raises(CommandError) as ei:
        trio.run(missing)
    assert ei.value.returncode == 127

    async def slow() -> None:
        await run(["sleep", "5"], timeout=0.1)

    with pytest.raises(CommandError) as ei:
        trio.run(slow)
    assert ei.value.returncode is None
    assert "timed out" in str(ei.value)


# Read-only ip commands: the batch tests need no root and change nothing.
LO = ["ip", "-4", "addr", "show", "dev", "lo"]
MISSING = ["ip", "-4", "addr", "show", "dev", "wgnm-missing0"]


def test_a_batch_runs_in_one_process_and_names_what_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> tuple[dict[int, str], dict[int, str]]:
        everything = await run_batch([LO, MISSING, LO, MISSING], keep_going=True)
        fine = await run_batch([LO, LO], keep_going=True)
        return everything, fine

    with caplog.at_level(logging.DEBUG, logger="wg_netmanager"):
        failures, fine = trio.run(main)
    assert sorted(failures) == [1, 3]
    assert all("wgnm-missing0" in text for text in failures.values())
    assert fine == {}
    runs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("run: ")]
    assert runs == ["run: ip -4 -force -batch - (with stdin)"] * 2


def test_a_batch_stops_at_the_first_failure_and_raises_for_it() -> None:
    async def main() -> None:
        await run_batch([LO, MISSING, ["ip", "-4", "addr", "show", "dev", "wgnm-other0"]])

    with pytest.raises(CommandError) as ei:
        trio.run(main)
    assert ei.value.argv == MISSING
    assert "wgnm-missing0" in ei.value.stderr and "wgnm-other0" not in ei.value.stderr


def test_a_batch_of_one_is_the_command_itself() -> None:
    async def main() -> dict[int, str]:
        return await run_batch([MISSING], keep_going=True)

    assert list(trio.run(main)) == [0]
    with pytest.raises(CommandError) as ei:
        trio.run(run_batch, [MISSING])
    assert ei.value.argv == MISSING


def test_a_batch_refuses_what_ip_would_read_differently() -> None:
    for commands in (
        [LO, ["wg", "show"]],  # not ip
        [LO, ["ip", "addr", "show", "dev", "lo"]],  # other options
        [LO, ["ip", "-4", "addr", "show", "dev", "lo lo"]],  # a word with a space
    ):
        with pytest.raises(ValueError):
            trio.run(run_batch, commands)


WG_MODULE = "kernel/drivers/net/wireguard/wireguard.ko"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, False),  # a container or a VM without modules
        ({"sys/module/wireguard/version": "1.0.0"}, True),  # loaded or built in
        ({"lib/modules/6.1.0-9/modules.dep": "kernel/drivers/net/tun.ko:\n"}, False),
        (
            {"lib/modules/6.1.0-9/modules.dep": f"{WG_MODULE}.xz: kernel/lib/crypto/x.ko.xz\n"},
            True,  # loadable
        ),
        ({"lib/modules/6.1.0-9/modules.builtin": f"{WG_MODULE}\n"}, True),  # built in
        ({"lib/modules/5.10.0-1/modules.dep": f"{WG_MODULE}:\n"}, False),  # another kernel's
    ],
)
def test_the_kernel_backend_is_tried_first_only_where_it_can_be(
    tmp_path: Path, files: dict[str, str], expected: bool
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert kernel_may_have_wireguard(str(tmp_path), release="6.1.0-9") is expected


def test_without_a_kernel_module_userspace_goes_first_and_the_kernel_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("wg_netmanager.backends.kernel_may_have_wireguard", lambda: False)
    order = [argv[0] for _backend, argv, _env in backend_commands("wg0")]
    assert order == ["wireguard-go", "boringtun-cli", "boringtun", "ip"]
    monkeypatch.setattr("wg_netmanager.backends.kernel_may_have_wireguard", lambda: True)
    order = [argv[0] for _backend, argv, _env in backend_commands("wg0")]
    assert order == ["ip", "wireguard-go", "boringtun-cli", "boringtun"]


# ---------------------------------------------------------------------------
# fakes


def test_fakes_implement_protocols() -> None:
    # checked by mypy: both implementations fit each protocol
    fake: WgDevice = FakeWgDevice()
    real: WgDevice = WgInterface("wg0")
    assert fake.name == real.name == "wg0"
    tables: list[Routes] = [FakeRoutes(), RouteTable()]
    assert len(tables) == 2


def test_fake_wg_device() -> None:
    dev = FakeWgDevice("wg0")

    async def main() -> None:
        with pytest.raises(CommandError):
            await dev.read_peers()
        assert await dev.create() == "wireguard-go"
        await dev.configure(b"\x01" * 32, 51820)
        await dev.set_address(IPv4Address("10.1.1.1"), 24)
        desired = {K1: WgPeer(K1, nets("10.1.1.2/32"), ("192.0.2.1", 51820), 25)}
        await dev.apply_peers(desired, await dev.read_peers())
        dev.set_handshake(K1, 3.0)
        dev.set_endpoint(K1, ("192.0.2.9", 1000))
        # endpoint None keeps the learned one, handshake and counters survive
        await dev.apply_peers({K1: WgPeer(K1, nets("10.1.1.2/32"))}, await dev.read_peers())
        peers = await dev.read_peers()
        assert peers[K1].endpoint == ("192.0.2.9", 1000)
        assert peers[K1].handshake_age == 3.0
        assert peers[K1].persistent_keepalive == 0
        dev.fail["read_peers"] = CommandError(["wg"], 1, "injected")
        with pytest.raises(CommandError, match="injected"):
            await dev.read_peers()
        await dev.read_peers()  # only once
        await dev.destroy()
        assert not await dev.exists()

    trio.run(main)
    assert dev.listen_port == 51820
    assert ("configure", (51820,)) in dev.calls
    assert all(b"\x01" * 32 not in args for _, args in dev.calls)
    assert dev.commands[0][:5] == ["wg", "set", "wg0", "peer", K1]


def test_fake_routes() -> None:
    routes: Routes = FakeRoutes()
    assert isinstance(routes, FakeRoutes)

    async def main() -> None:
        await routes.apply("wg0", {R("10.1.1.2"), R("10.1.1.3", "10.1.1.2")}, set())
        assert await routes.read("wg0") == {R("10.1.1.2"), R("10.1.1.3", "10.1.1.2")}
        assert await routes.read("wg1") == set()
        await routes.apply("wg0", {R("10.1.1.3")}, await routes.read("wg0"))
        assert await routes.read("wg0") == {R("10.1.1.3")}

    trio.run(main)
    assert routes.call_names() == ["apply", "read", "read", "read", "apply", "read"]
    assert routes.commands[-1][:7] == ["ip", "-4", "route", "del", "10.1.1.2/32", "dev", "wg0"]
