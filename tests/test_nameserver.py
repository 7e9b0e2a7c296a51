"""The mesh's names in DNS: the name table (core/names.py), the answers
(nameserver.Nameserver, pure: bytes in, bytes out) and the names a core
knows (Node.names). The UDP/TCP adapter is exercised in
test_dns_netns.py."""

from __future__ import annotations

import logging
import random
import socket
from ipaddress import IPv4Address, IPv4Network

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.lab import Lab
from wg_netmanager.core.names import name_table
from wg_netmanager.keys import KeyPair
from wg_netmanager.nameserver import (
    BIND_RETRY_FIRST,
    MAX_QUERY,
    RATE_BURST,
    TTL,
    UDP_ANSWER,
    DnsDrop,
    Nameserver,
    serve,
)

SUBNET = IPv4Network("10.1.1.0/24")
ASKER = "10.1.1.9"
NAMES = {
    "alpha": (IPv4Address("10.1.1.1"),),
    "beta": (IPv4Address("10.1.1.2"),),
    "charlie": (IPv4Address("10.1.1.3"),),
    "db.eu": (IPv4Address("10.1.1.4"),),
}


def server(
    names: dict[str, tuple[IPv4Address, ...]] | None = None, domain: str = "mesh"
) -> Nameserver:
    table = NAMES if names is None else names
    return Nameserver(domain, SUBNET, lambda: table)


def ask(
    ns: Nameserver,
    name: str,
    rdtype: str = "A",
    *,
    source: str = ASKER,
    now: float = 0.0,
    **query_args: object,
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **query_args)  # type: ignore[arg-type]
    reply = ns.answer(query.to_wire(), source, now)
    assert reply is not None
    response = dns.message.from_wire(reply)
    assert response.id == query.id
    assert response.flags & dns.flags.QR
    assert not response.flags & dns.flags.RA  # never recursion
    return response


def addresses(response: dns.message.Message) -> list[str]:
    return [rd.address for rrset in response.answer for rd in rrset]


# --- the table ---------------------------------------------------------------


def test_a_name_is_lower_case_and_the_more_trusted_holder_names_a_wg_ip() -> None:
    me = {IPv4Address("10.1.1.1"): "Alpha"}
    listed = {IPv4Address("10.1.1.1"): "impostor", IPv4Address("10.1.1.2"): "Beta"}
    assert name_table([me, listed]) == {
        "alpha": (IPv4Address("10.1.1.1"),),
        "beta": (IPv4Address("10.1.1.2"),),
    }


def test_one_name_is_one_address_the_more_trusted_holder_s_then_the_lowest() -> None:
    table = name_table([{IPv4Address("10.1.1.7"): "twin"}, {IPv4Address("10.1.1.5"): "TWIN"}])
    assert table == {"twin": (IPv4Address("10.1.1.7"),)}
    assert addresses(ask(server(table), "twin.mesh")) == ["10.1.1.7"]
    listed = {IPv4Address("10.1.1.9"): "twin", IPv4Address("10.1.1.8"): "Twin"}
    assert name_table([listed]) == {"twin": (IPv4Address("10.1.1.8"),)}


def test_a_name_with_an_empty_label_is_left_out() -> None:
    assert name_table([{IPv4Address("10.1.1.7"): "a..b", IPv4Address("10.1.1.8"): ".x"}]) == {}


# --- answers -------------------------------------------------------------------


def test_a_known_name_gets_its_a_record_authoritatively() -> None:
    response = ask(server(), "charlie.mesh")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert addresses(response) == ["10.1.1.3"]
    assert response.answer[0].ttl == TTL
    assert str(response.answer[0].name) == "charlie.mesh."


def test_names_are_case_insensitive_and_the_answer_keeps_the_asked_case() -> None:
    response = ask(server(), "ChArLiE.MeSh.")
    assert addresses(response) == ["10.1.1.3"]
    assert str(response.answer[0].name) == "ChArLiE.MeSh."


def test_a_name_with_a_dot_is_two_labels_and_its_parent_exists() -> None:
    ns = server()
    assert addresses(ask(ns, "db.eu.mesh")) == ["10.1.1.4"]
    parent = ask(ns, "eu.mesh")
    assert parent.rcode() == dns.rcode.NOERROR
    assert parent.answer == []


def test_the_domain_itself_exists_with_no_address() -> None:
    response = ask(server(), "mesh")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []


def test_an_unknown_name_in_the_domain_is_nxdomain() -> None:
    response = ask(server(), "nobody.mesh")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert response.answer == []


@pytest.mark.parametrize("name", ["example.com", "charlie.mesh.example.com", "mesh.org", "."])
def test_a_name_outside_the_domain_is_refused(name: str) -> None:
    response = ask(server(), name)
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA
    assert response.answer == []


@pytest.mark.parametrize("rdtype", ["AAAA", "MX", "TXT", "SRV", "PTR"])
def test_other_types_of_a_known_name_are_noerror_without_answers(rdtype: str) -> None:
    response = ask(server(), "charlie.mesh", rdtype)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []


def test_any_is_answered_with_the_a_records() -> None:
    assert addresses(ask(server(), "charlie.mesh", "ANY")) == ["10.1.1.3"]


def test_another_class_is_refused() -> None:
    response = ask(server(), "charlie.mesh", rdclass=dns.rdataclass.CH)
    assert response.rcode() == dns.rcode.REFUSED


def test_another_opcode_is_not_implemented() -> None:
    query = dns.message.make_query("charlie.mesh", "A")
    query.set_opcode(dns.opcode.NOTIFY)
    reply = server().answer(query.to_wire(), ASKER, 0.0)
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.NOTIMP


def test_several_questions_are_a_format_error() -> None:
    query = dns.message.make_query("charlie.mesh", "A")
    query.find_rrset(
        query.question,
        dns.name.from_text("beta.mesh"),
        dns.rdataclass.IN,
        dns.rdatatype.A,
        create=True,
        force_unique=True,
    )
    assert len(query.question) == 2
    reply = server().answer(query.to_wire(), ASKER, 0.0)
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR


def test_another_domain_is_served_when_configured() -> None:
    ns = server(domain="corp.example")
    assert addresses(ask(ns, "charlie.corp.example")) == ["10.1.1.3"]
    assert ask(ns, "charlie.mesh").rcode() == dns.rcode.REFUSED


def test_an_edns_query_gets_an_edns_answer() -> None:
    response = ask(server(), "charlie.mesh", use_edns=0, payload=1232)
    assert response.edns == 0
    assert addresses(response) == ["10.1.1.3"]


def test_an_answer_too_large_for_udp_is_truncated_and_whole_over_tcp() -> None:
    many = {"crowd": tuple(IPv4Address(f"10.1.1.{i}") for i in range(1, 120))}
    ns = server(many)
    udp = ask(ns, "crowd.mesh")
    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    query = dns.message.make_query("crowd.mesh", "A")
    reply = ns.answer(query.to_wire(), ASKER, 0.0, tcp=True)
    assert reply is not None and len(reply) > UDP_ANSWER
    assert len(addresses(dns.message.from_wire(reply))) == 119


def test_answers_are_counted_by_code() -> None:
    ns = server()
    ask(ns, "charlie.mesh")
    ask(ns, "nobody.mesh")
    ask(ns, "example.com")
    ask(ns, "example.com")
    assert ns.statistics(0.0).answers == {"NOERROR": 1, "NXDOMAIN": 1, "REFUSED": 2}
    assert ns.statistics(0.0).names == len(NAMES)


# --- what is dropped ---------------------------------------------------------------


def test_a_query_from_outside_the_mesh_is_dropped() -> None:
    ns = server()
    query = dns.message.make_query("charlie.mesh", "A").to_wire()
    assert ns.answer(query, "192.168.1.5", 0.0) is None
    assert ns.answer(query, "not an address", 0.0) is None
    assert ns.drops == {DnsDrop.OUTSIDE_MESH: 2}


def test_a_response_is_never_answered() -> None:
    ns = server()
    response = dns.message.make_response(dns.message.make_query("charlie.mesh", "A"))
    assert ns.answer(response.to_wire(), ASKER, 0.0) is None
    assert ns.drops == {DnsDrop.NOT_A_QUERY: 1}


def test_garbage_and_oversized_queries_are_dropped_and_counted() -> None:
    ns = server()
    assert ns.answer(b"", ASKER, 0.0) is None
    assert ns.answer(b"\x12\x34\x01", ASKER, 0.0) is None
    assert ns.answer(b"\x00" * (MAX_QUERY + 1), ASKER, 0.0) is None
    assert ns.drops == {DnsDrop.MALFORMED: 2, DnsDrop.TOO_LONG: 1}
    assert ns.statistics(0.0).drops == {"malformed": 2, "too long": 1}


def test_a_source_beyond_its_burst_is_dropped_until_its_bucket_refills() -> None:
    ns = server()
    query = dns.message.make_query("charlie.mesh", "A").to_wire()
    answered = sum(ns.answer(query, ASKER, 0.0) is not None for _ in range(int(RATE_BURST) + 20))
    assert answered == RATE_BURST
    assert ns.drops[DnsDrop.RATE_LIMITED] == 20
    assert ns.answer(query, "10.1.1.10", 0.0) is not None  # others still get answers
    assert ns.answer(query, ASKER, 1.0) is not None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=MAX_QUERY + 10))
def test_random_bytes_never_raise(data: bytes) -> None:
    ns = server()
    reply = ns.answer(data, ASKER, 0.0)
    if reply is not None:
        assert dns.message.from_wire(reply).flags & dns.flags.QR


def test_mutated_queries_never_raise() -> None:
    """Bit flips of real queries reach deeper into the parser than random bytes."""
    rng = random.Random(17)
    ns = server()
    seeds = [
        dns.message.make_query(name, rdtype, use_edns=edns).to_wire()
        for name in ("charlie.mesh", "db.eu.mesh", "example.com")
        for rdtype in ("A", "AAAA", "ANY")
        for edns in (False, 0)
    ]
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        ns.answer(bytes(data), ASKER, rng.random() * 1000)
    assert sum(ns.answers.values()) + sum(ns.drops.values()) == 3000


def test_the_table_is_rebuilt_when_the_token_changes() -> None:
    calls: list[int] = []
    state = {"token": 1}

    def names() -> dict[str, tuple[IPv4Address, ...]]:
        calls.append(1)
        return NAMES

    ns = Nameserver("mesh", SUBNET, names, lambda: state["token"])
    for _ in range(5):
        ask(ns, "charlie.mesh", now=0.1)
    assert len(calls) == 1
    state["token"] = 2
    ask(ns, "charlie.mesh", now=0.2)
    assert len(calls) == 2


# --- the names a core knows ---------------------------------------------------------


def test_a_node_knows_itself_its_sessions_the_tables_and_the_clients() -> None:
    lab = Lab({"s1": 1})
    lab.start("s1")
    lab.start("alpha", 5)
    lab.start("bravo", 6)
    lab.fire_timers()
    static = lab.boxes["s1"].node
    static.add_client("Phone", KeyPair.generate().public_b64, IPv4Address("10.1.1.200"), lab.now)
    lab.wg_applied()
    expected = {
        "s1": (IPv4Address("10.1.1.1"),),
        "alpha": (IPv4Address("10.1.1.5"),),
        "bravo": (IPv4Address("10.1.1.6"),),
        "phone": (IPv4Address("10.1.1.200"),),
    }
    assert static.names() == expected
    assert lab.boxes["alpha"].node.names() == expected


# --- the adapter on loopback ---------------------------------------------------------


def test_the_adapter_answers_over_udp_and_tcp_and_survives_garbage() -> None:
    """The real sockets on 127.0.0.1 (a port the kernel picks): UDP, TCP with
    two queries on one connection, and junk on both, which changes nothing."""
    ns = Nameserver("mesh", IPv4Network("127.0.0.0/8"), lambda: NAMES)

    def client(address: tuple[str, int]) -> list[dns.message.Message]:
        host, port = address
        query = dns.message.make_query("charlie.mesh", "A")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
            junk.sendto(b"\xff" * 40, address)
        udp = dns.query.udp(query, host, port=port, timeout=5)
        with socket.create_connection(address, timeout=5) as tcp:
            for name in ("beta.mesh", "example.com"):
                dns.query.send_tcp(tcp, dns.message.make_query(name, "A"))
            first, _ = dns.query.receive_tcp(tcp)
            second, _ = dns.query.receive_tcp(tcp)
        with socket.create_connection(address, timeout=5) as tcp:
            tcp.sendall(b"\x00\x05hello")  # a malformed query: the server hangs up
            assert tcp.recv(10) == b""
        return [udp, first, second]

    async def scenario() -> list[dns.message.Message]:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, ns, IPv4Address("127.0.0.1"), 0)
            with trio.fail_after(10):
                while ns.address is None:  # noqa: ASYNC110 (bound in serve's own time)
                    await trio.sleep(0.01)
                answers = await trio.to_thread.run_sync(client, ns.address)
            nursery.cancel_scope.cancel()
        assert ns.address is None and ns.listening is None  # closed on cancellation
        return answers

    udp, first, second = trio.run(scenario)
    assert addresses(udp) == ["10.1.1.3"]
    assert addresses(first) == ["10.1.1.2"]
    assert second.rcode() == dns.rcode.REFUSED
    assert ns.drops == {DnsDrop.MALFORMED: 2}


def test_a_port_in_use_is_retried_until_it_is_free(caplog: pytest.LogCaptureFixture) -> None:
    ns = Nameserver("mesh", IPv4Network("127.0.0.0/8"), lambda: NAMES)
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, ns, IPv4Address("127.0.0.1"), port)
            await trio.sleep(BIND_RETRY_FIRST * 3.5)  # three attempts at least
            assert ns.address is None
            taken.close()
            with trio.fail_after(BIND_RETRY_FIRST * 8):
                while ns.address is None:  # noqa: ASYNC110 (retrying on its own clock)
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.DEBUG, logger="wg_netmanager"):
        trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the first failure; the retries at debug level
    assert f"cannot listen on 127.0.0.1:{port}" in warnings[0].getMessage()
    assert any(f"answering *.mesh on 127.0.0.1:{port}" in r.getMessage() for r in caplog.records)
