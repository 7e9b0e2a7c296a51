"""forwarding.py's plans: the nftables table, policy rules, our own route
tables, sysctls and the restore file (the real thing: test_gateways_netns.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
import trio

from wg_netmanager import forwarding
from wg_netmanager.forwarding import (
    PREF_EXIT,
    PREF_NETWORKS,
    PREF_RELAY,
    PREF_SUPPRESS,
    Changes,
    ForwardPlan,
    HostForwarding,
    Rule,
    TableRoute,
    _read_restore,
    _write_restore,
    egress_interfaces,
    nft_delete,
    nft_ruleset,
    nft_table,
    our_rules,
    parse_table,
    parse_tables,
    plan_for,
    plan_table,
    relay_table,
    route_table,
    wanted_rules,
    wanted_sysctls,
)
from wg_netmanager.model import DEFAULT_ROUTE, Gateway, Route
from wg_netmanager.proc import CommandError

MESH = IPv4Network("10.1.1.0/24")
LAN = IPv4Network("192.168.1.0/24")
ME = IPv4Address("10.1.1.3")
CONF = "/proc/sys/net/ipv4/conf"


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def plan(me: str, *, static: bool = False, exit_node: str | None = None) -> ForwardPlan:
    gateways = (Gateway(ME, (LAN,)), Gateway(IPv4Address("10.1.1.1"), (DEFAULT_ROUTE,)))
    return plan_for(
        "wg0",
        MESH,
        IPv4Address(me),
        is_static=static,
        gateways=gateways,
        exit_node=None if exit_node is None else IPv4Address(exit_node),
    )


def test_plan_for_each_role() -> None:
    node = plan("10.1.1.9")  # may route the LAN through charlie: its own table and marks
    assert node.route_table and not node.forwards and not node.exit_client
    assert not node.needs_table  # no nftables for that
    gateway = plan("10.1.1.3")  # serves the LAN; the exit node it does not use
    assert gateway.routes == (LAN,) and gateway.forwards and not gateway.relay
    assert not gateway.route_table
    static = plan("10.1.1.1", static=True)
    assert static.relay and static.relay_table and static.routes == (DEFAULT_ROUTE,)
    assert static.route_table  # it routes the LAN too
    lone = plan_for(
        "wg0", MESH, IPv4Address("10.1.1.1"), is_static=True, gateways=(), exit_node=None
    )
    assert lone.relay and not lone.relay_table and not lone.route_table  # nothing to route
    user = plan("10.1.1.3", exit_node="10.1.1.1")
    assert user.exit_client and user.route_table and user.forwards


def test_a_static_forwards_mesh_to_mesh_and_nothing_else() -> None:
    text = nft_ruleset(ForwardPlan("wg0", MESH, relay=True))
    assert lines(text)[:3] == [
        f"table inet {nft_table('wg0')} {{}}",  # the delete never fails
        f"delete table inet {nft_table('wg0')}",
        f"table inet {nft_table('wg0')} {{",
    ]
    rules = [line for line in lines(text) if line.startswith(("iifname", "oifname"))]
    assert rules == ['iifname "wg0" oifname "wg0" accept', 'iifname "wg0" counter drop']
    assert "masquerade" not in text and "mark" not in text


def test_a_gateway_forwards_into_its_networks_only_and_masquerades() -> None:
    plan = ForwardPlan("wg0", MESH, served=(Gateway(ME, (LAN, DEFAULT_ROUTE)),))
    text = nft_ruleset(plan, switched=["eth0"])
    assert (
        'iifname "wg0" oifname != "wg0" ip daddr != 10.1.1.0/24 '
        "ip daddr { 192.168.1.0/24, 0.0.0.0/0 } accept"
    ) in text
    assert 'iifname "wg0" oifname "wg0" accept' not in text  # not a static: no relaying
    assert 'iifname "wg0" counter drop' in text
    # Its answers come back in where we switched forwarding on: only those.
    assert 'iifname { "eth0" } oifname "wg0" ct state established,related accept' in text
    assert 'iifname { "eth0" } counter drop' in text
    assert "ip saddr" not in text  # masqueraded: the LAN never starts a connection in
    assert "type nat hook postrouting priority srcnat" in text
    assert text.count(" masquerade") == 1 and "ip daddr != 10.1.1.0/24" in text.split("nat {")[1]


def test_without_masquerade_the_lan_may_reach_the_mesh() -> None:
    plan = ForwardPlan("wg0", MESH, served=(Gateway(ME, (LAN,), masquerade=False),))
    text = nft_ruleset(plan, switched=["eth0", "eth1"])
    assert "masquerade" not in text
    assert 'iifname { "eth0", "eth1" } oifname "wg0" ip saddr { 192.168.1.0/24 } accept' in text
    assert "iifname" in nft_ruleset(plan) and "eth0" not in nft_ruleset(plan)


def test_an_exit_nodes_user_keeps_wireguards_mark_on_answers() -> None:
    text = nft_ruleset(ForwardPlan("wg0", MESH, exit_client=True, route_table=True))
    assert "mark" not in nft_ruleset(ForwardPlan("wg0", MESH, relay=True, route_table=True))
    mark = hex(route_table("wg0"))
    assert "meta l4proto udp meta mark set ct mark" in text
    assert f"meta l4proto udp meta mark {mark} ct mark set meta mark" in text
    assert 'iifname "wg0" counter drop' in text  # it forwards nothing


def test_nft_delete_never_fails_on_a_missing_table() -> None:
    table = nft_table("wg0")
    assert nft_delete("wg0") == f"table inet {table} {{}}\ndelete table inet {table}\n"


def test_numbers_are_per_interface_and_stable() -> None:
    assert route_table("wg0") == route_table("wg0") != route_table("wg1")
    assert relay_table("wg0") != route_table("wg0")
    assert route_table("wg0") >> 16 == 0x776E and relay_table("wg0") >> 16 == 0x7772
    assert nft_table("wg.0").startswith("wgnm_wg_0_")


def test_rules_wanted_and_found() -> None:
    plan = ForwardPlan(
        "wg0", MESH, relay=True, relay_table=True, exit_client=True, route_table=True
    )
    mark, table, relay = hex(route_table("wg0")), str(route_table("wg0")), str(relay_table("wg0"))
    want = wanted_rules(plan)
    assert want == {
        Rule(PREF_RELAY, ("iif", "wg0", "lookup", relay)),
        Rule(PREF_NETWORKS, ("not", "fwmark", mark, "lookup", table, "suppress_prefixlength", "0")),
        Rule(
            PREF_SUPPRESS, ("not", "fwmark", mark, "lookup", "main", "suppress_prefixlength", "0")
        ),
        Rule(PREF_EXIT, ("not", "fwmark", mark, "lookup", table)),
    }
    assert Rule(PREF_EXIT, ("lookup", "9")).argv("del") == [
        "ip",
        "-4",
        "rule",
        "del",
        "lookup",
        "9",
        "pref",
        str(PREF_EXIT),
    ]
    # As `ip -j -4 rule show` prints them (iproute2 6.1), among others' rules.
    doc = json.loads(
        '[{"priority":0,"src":"all","table":"local"},'
        f'{{"priority":{PREF_RELAY},"src":"all","iif":"wg0","iif_detached":null,"table":"{relay}"}},'
        f'{{"priority":{PREF_NETWORKS},"not":null,"src":"all","fwmark":"{mark}","table":"{table}","suppress_prefixlen":0}},'
        f'{{"priority":{PREF_SUPPRESS},"not":null,"src":"all","fwmark":"{mark}","table":"main","suppress_prefixlen":0}},'
        f'{{"priority":{PREF_EXIT},"not":null,"src":"all","fwmark":"{mark}","table":"{table}"}},'
        '{"priority":100,"src":"all","fwmark":"0x1","table":"7"},'
        f'{{"priority":200,"src":"all","table":"{route_table("wg1")}"}},'
        '{"priority":32766,"src":"all","table":"main"}]'
    )
    assert our_rules(doc, "wg0") == want
    assert our_rules("garbage", "wg0") == set()


def test_route_table_plan() -> None:
    via = IPv4Address("10.1.1.3")
    text = (
        "192.168.1.0/24 via 10.1.1.3 dev wg0 proto 57 onlink \n"
        "default dev wg0 proto 57 scope link \n"
    )
    actual = parse_table(text)
    assert actual == {TableRoute(LAN, via), TableRoute(DEFAULT_ROUTE)}
    moved = {TableRoute(LAN, IPv4Address("10.1.1.1")), TableRoute(DEFAULT_ROUTE)}
    replace = ["ip", "-4", "route", "replace", "192.168.1.0/24", "via", "10.1.1.1", "dev", "wg0"]
    assert plan_table("wg0", 9, moved, actual) == [
        [*replace, "table", "9", "proto", "57", "onlink"]
    ]


def test_our_tables_in_one_listing() -> None:
    text = (
        "default dev wg0 table 2004007862 scope link \n"
        "throw 192.168.1.0/24 table 2004007862 \n"
        "192.168.7.0/24 via 10.1.1.3 dev wg0 table 2003745718 onlink \n"
        "10.1.1.5 via 10.1.1.1 dev wg0 onlink \n"  # the main table: routes.py's
    )
    assert parse_tables(text) == {
        2004007862: {TableRoute(DEFAULT_ROUTE), TableRoute(LAN, throw=True)},
        2003745718: {TableRoute(IPv4Network("192.168.7.0/24"), IPv4Address("10.1.1.3"))},
    }
    assert parse_tables("") == {}


def test_relay_table_plan() -> None:
    text = (
        "192.168.1.0/24 dev wg0 proto 57 scope link \n"
        "throw 192.168.5.0/24 proto 57 \n"
        "default dev wg0 proto 57 scope link \n"
    )
    actual = parse_table(text)
    assert actual == {
        TableRoute(LAN),
        TableRoute(IPv4Network("192.168.5.0/24"), throw=True),
        TableRoute(DEFAULT_ROUTE),
    }
    desired = {
        TableRoute(LAN),
        TableRoute(IPv4Network("192.168.5.0/24")),
        TableRoute(IPv4Network("192.168.7.0/24"), throw=True),
    }
    assert plan_table("wg0", 9, desired, actual) == [
        [
            "ip",
            "-4",
            "route",
            "replace",
            "192.168.5.0/24",
            "dev",
            "wg0",
            "table",
            "9",
            "proto",
            "57",
        ],
        ["ip", "-4", "route", "replace", "throw", "192.168.7.0/24", "table", "9", "proto", "57"],
        ["ip", "-4", "route", "del", "0.0.0.0/0", "table", "9"],
    ]
    assert plan_table("wg0", 9, actual, actual) == []


def test_egress_interfaces() -> None:
    text = (
        "default via 192.168.1.1 dev eth0 \n"
        "10.20.0.0/16 via 192.168.2.254 dev eth1 \n"
        "10.20.5.0/24 dev eth2 proto kernel scope link src 10.20.5.1 \n"
        "192.168.1.0/24 dev eth0 proto kernel scope link src 192.168.1.2 \n"
        "192.168.2.0/24 dev eth1 proto kernel scope link src 192.168.2.2 \n"
        "10.1.1.2 via 10.1.1.1 dev wg0 proto 57 onlink \n"
        "unreachable 10.99.0.0/16 \n"
    )
    assert egress_interfaces(text, [LAN], ["wg0"]) == ["eth0"]
    assert egress_interfaces(text, [IPv4Network("10.20.0.0/16")], ["wg0"]) == ["eth1", "eth2"]
    assert egress_interfaces(text, [IPv4Network("172.16.0.0/12")], ["wg0"]) == ["eth0"]
    assert egress_interfaces(text, [DEFAULT_ROUTE], ["wg0"]) == ["eth0", "eth1", "eth2"]
    assert egress_interfaces("", [LAN], ["wg0"]) == []


def test_sysctls_only_what_the_role_needs() -> None:
    assert wanted_sysctls(ForwardPlan("wg0", MESH), []) == {}
    assert wanted_sysctls(ForwardPlan("wg0", MESH, relay=True), []) == {
        f"{CONF}/wg0/forwarding": "1",
        f"{CONF}/wg0/send_redirects": "0",
        f"{CONF}/all/send_redirects": "0",
    }
    gateway = ForwardPlan("wg0", MESH, served=(Gateway(ME, (LAN,)),))
    assert wanted_sysctls(gateway, ["eth0"]) == {
        f"{CONF}/wg0/forwarding": "1",
        f"{CONF}/eth0/forwarding": "1",
    }
    assert wanted_sysctls(ForwardPlan("wg0", MESH, route_table=True), []) == {}
    assert wanted_sysctls(ForwardPlan("wg0", MESH, exit_client=True, route_table=True), []) == {
        f"{CONF}/all/src_valid_mark": "1"
    }


def test_restore_file(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    path = str(directory / "wg0.restore")
    changes = Changes({f"{CONF}/eth0/forwarding": "0", f"{CONF}/all/send_redirects": "1"}, True)
    _write_restore(path, changes)
    assert os.stat(directory).st_mode & 0o777 == 0o700
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert _read_restore(path) == changes
    # Only what we would write is ever taken back.
    sysctls = {"/etc/passwd": "0", f"{CONF}/../../x": "1", f"{CONF}/eth0/forwarding": "1; rm"}
    Path(path).write_text(json.dumps({"sysctls": sysctls, "nft": "yes", "policy": 1}))
    assert _read_restore(path) == Changes()
    Path(path).write_text("not json")
    assert not _read_restore(path)
    os.chmod(directory, 0o777)  # someone else could have written it
    with pytest.raises(PermissionError):
        _write_restore(path, changes)
    assert not _read_restore(path)
    assert not _read_restore(str(tmp_path / "missing" / "wg0.restore"))


class FakeSystem:
    """``ip``, ``nft`` and /proc/sys of one machine, as HostForwarding uses them."""

    def __init__(self) -> None:
        self.sysctls = {
            f"{CONF}/{name}": value
            for name, value in (
                ("eth0/forwarding", "0"),
                ("wg0/forwarding", "0"),
                ("wg0/send_redirects", "1"),
                ("all/send_redirects", "1"),
                ("all/src_valid_mark", "0"),
            )
        }
        self.rules: list[dict[str, object]] = [{"priority": 0, "table": "local"}]
        self.tables: dict[str, set[str]] = {}
        self.nft: set[str] = set()
        self.commands: list[str] = []
        self.failed: list[str] = []

    async def run(self, argv: list[str], stdin: bytes | None = None, **_: object) -> str:
        self.commands.append(" ".join(argv))
        if argv[:2] == ["nft", "-f"]:
            text = (stdin or b"").decode()
            name = text.split()[2]
            self.nft.discard(name)
            if text.count(f"table inet {name} {{") > 1:  # created anew after the delete
                self.nft.add(name)
            return ""
        words = [w for w in argv[1:] if w not in ("-4", "-N")]
        if words[:2] == ["rule", "show"] or argv[1:4] == ["-j", "-4", "rule"]:
            return json.dumps(self.rules)
        if words[:2] in (["rule", "add"], ["rule", "del"]):
            entry = self._rule(words[2:])
            if words[1] == "add":
                self.rules.append(entry)
            else:
                self.rules.remove(entry)
            return ""
        if words[:2] == ["route", "show"]:
            table = words[words.index("table") + 1]
            if table == "all":  # only our proto: the tables' lines say which table
                assert words[words.index("proto") + 1] == "57"
                return "".join(
                    f"{line} table {name}\n"
                    for name, lines in sorted(self.tables.items())
                    for line in sorted(lines)
                )
            if table == "main":
                return "default via 192.168.1.1 dev eth0\n192.168.1.0/24 dev eth0 scope link\n"
            if table not in self.tables:
                self.failed.append(" ".join(argv))
                raise CommandError(argv, 2, "Error: ipv4: FIB table does not exist.")
            return "".join(line + "\n" for line in sorted(self.tables[table]))
        if words[:2] == ["route", "flush"]:
            self.tables.pop(words[-1], None)
            return ""
        if words[:2] == ["route", "replace"]:
            table = words[words.index("table") + 1]
            self.tables.setdefault(table, set()).add(" ".join(words[2 : words.index("table")]))
            return ""
        raise AssertionError(f"unexpected command {argv}")

    @staticmethod
    def _rule(words: list[str]) -> dict[str, object]:
        entry: dict[str, object] = {"priority": int(words[words.index("pref") + 1])}
        if "not" in words:
            entry["not"] = None
        for key, name in (("fwmark", "fwmark"), ("iif", "iif"), ("lookup", "table")):
            if key in words:
                entry[name] = words[words.index(key) + 1]
        if "suppress_prefixlength" in words:
            entry["suppress_prefixlen"] = int(words[words.index("suppress_prefixlength") + 1])
        return entry

    async def read(self, path: str) -> str:
        return self.sysctls[path]

    async def write(self, path: str, value: str) -> None:
        if path not in self.sysctls:
            raise CommandError(["write", path, value], 2, "No such file or directory")
        self.sysctls[path] = value


@pytest.fixture
def system(monkeypatch: pytest.MonkeyPatch) -> FakeSystem:
    fake = FakeSystem()
    monkeypatch.setattr(forwarding, "run", fake.run)
    monkeypatch.setattr(forwarding, "_read_sysctl", fake.read)
    monkeypatch.setattr(forwarding, "_write_sysctl", fake.write)
    return fake


def test_a_gateway_exit_user_and_static_changes_and_undoes_everything(
    system: FakeSystem, tmp_path: Path
) -> None:
    path = str(tmp_path / "run" / "wg0.restore")
    clean = (dict(system.sysctls), list(system.rules))
    gateways = (Gateway(IPv4Address("10.1.1.1"), (LAN,)), Gateway(ME, (DEFAULT_ROUTE,)))
    plan = plan_for(
        "wg0", MESH, IPv4Address("10.1.1.1"), is_static=True, gateways=gateways, exit_node=ME
    )
    lan_route = Route.to(IPv4Network("192.168.7.0/24"), ME)

    async def run_and_crash() -> None:
        host = HostForwarding(path)
        await host.apply(plan)
        await host.set_routes({lan_route}, frozenset({DEFAULT_ROUTE}))

    trio.run(run_and_crash)  # and never released: a crash
    assert system.sysctls[f"{CONF}/eth0/forwarding"] == "1"  # the LAN's answers come back there
    assert system.sysctls[f"{CONF}/all/src_valid_mark"] == "1"
    assert len(system.rules) == 5 and system.nft == {nft_table("wg0")}
    assert system.tables[str(route_table("wg0"))] == {
        "192.168.7.0/24 via 10.1.1.3 dev wg0",
        "0.0.0.0/0 dev wg0",
    }
    assert system.tables[str(relay_table("wg0"))] == {"0.0.0.0/0 dev wg0", "throw 192.168.1.0/24"}
    assert _read_restore(path).sysctls[f"{CONF}/eth0/forwarding"] == "0"

    async def next_start_then_stop() -> None:
        host = HostForwarding(path)
        await host.apply(plan)  # undoes the crash's leftovers first, then sets up
        assert len(system.rules) == 5 and system.nft == {nft_table("wg0")}
        assert _read_restore(path).sysctls[f"{CONF}/eth0/forwarding"] == "0"  # not the "1" left
        await host.release()
        await host.release()  # twice: nothing more

    trio.run(next_start_then_stop)
    assert system.failed == []  # no command asked for a table that does not exist
    assert (system.sysctls, system.rules) == clean
    assert system.nft == set() and system.tables == {}
    assert not os.path.exists(path)


def test_a_plain_node_touches_nothing(system: FakeSystem, tmp_path: Path) -> None:
    plan = plan_for(
        "wg0", MESH, IPv4Address("10.1.1.9"), is_static=False, gateways=(), exit_node=None
    )

    async def run() -> None:
        host = HostForwarding(str(tmp_path / "run" / "wg0.restore"))
        await host.apply(plan)
        await host.set_routes(set(), frozenset())
        await host.release()

    trio.run(run)
    assert system.commands == []  # not even a look for leftovers: no restore file


@pytest.mark.netns
def test_our_tables_listed_by_number_where_rt_tables_names_them() -> None:
    """An administrator's name for our table number must not hide it: the
    listing is read in a namespace of ours with the table named in rt_tables.d."""
    from tests.netns import REPO_ROOT, require_netns, unique_prefix

    require_netns()
    ns = unique_prefix("wgnmrt")
    named = Path(f"/etc/iproute2/rt_tables.d/{ns}.conf")
    probe = (
        "import trio; from wg_netmanager import forwarding;"
        "print(sorted(trio.run(forwarding._our_tables)))"
    )
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        ip = ["ip", "-n", ns]
        subprocess.run([*ip, "link", "set", "lo", "up"], check=True)
        subprocess.run(
            [*ip, "route", "add", "10.9.0.0/24", "dev", "lo", "table", "4242", "proto", "57"],
            check=True,
        )
        named.parent.mkdir(parents=True, exist_ok=True)
        named.write_text("4242 wgnm_admins_name\n")
        listed = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", probe],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            timeout=30,
        ).stdout
        assert listed.strip() == "[4242]"
    finally:
        named.unlink(missing_ok=True)
        subprocess.run(["ip", "netns", "del", ns], check=False)
