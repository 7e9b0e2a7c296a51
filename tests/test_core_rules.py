"""Protocol rules of the core, driven by hand (datagram by datagram) and through SimNet.

The hand-driven ``Lab`` (tests/lab.py) delivers datagrams instantly and only
when told to, so a test can count round trips, capture a datagram and replay
it later, or forge one sealed with the shared key (what a member gone rogue,
or a buggy one, can send). Every node's clock can be offset: the protocol must
never depend on the absolute value of ``now``.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import fields, replace
from ipaddress import IPv4Address, IPv4Network
from random import Random
from typing import Any

import pytest

from tests.helpers import ADMIN_KEY as ADMIN
from tests.helpers import QUICK_TIMERS, SUBNET, admin_port, make_node, wg_port
from tests.lab import Lab, Sent
from tests.sim import Nat, SimNet
from wg_netmanager import event_text, wire
from wg_netmanager.core import events as ev
from wg_netmanager.core.handshake import CHALLENGE_BURST, CHALLENGE_RATE, MAX_CHALLENGES
from wg_netmanager.core.node import Node
from wg_netmanager.core.sessions import StaticTarget
from wg_netmanager.keys import KeyPair
from wg_netmanager.model import Route
from wg_netmanager.wire import Bye, Header, Hello, NodeInfo, Ping, Table, TableEntry

T = QUICK_TIMERS


def forge(
    wg_ip: IPv4Address | str,
    message: wire.Message,
    *,
    boot: bytes | None = None,
    counter: int = 1,
    key: bytes = ADMIN,
    to: IPv4Address | str | None = None,
) -> bytes:
    """A datagram sealed with the shared key: anything a member could send.

    ``to`` names the receiver where the header has such a field.
    """
    header = make_header(wg_ip, os.urandom(8) if boot is None else boot, counter, to)
    return wire.seal_message(key, header, message)


def make_header(
    wg_ip: IPv4Address | str, boot: bytes, counter: int, to: IPv4Address | str | None = None
) -> Header:
    header = Header(IPv4Address(wg_ip), boot, counter)
    if to is not None and "to" in {f.name for f in fields(Header)}:
        header = replace(header, to=IPv4Address(to))  # type: ignore[call-arg]
    return header


def info_for(wg_ip: str, name: str = "x") -> NodeInfo:
    ip = IPv4Address(wg_ip)
    return NodeInfo(ip, name, KeyPair.generate().public_b64, wg_port(ip), admin_port(ip))


def snapshot(node: Node, now: float) -> Any:
    """Everything a datagram could change, except the drop counters."""
    return (
        replace(node.statistics(now), drops={}),
        dict(node.desired_peers()),
        set(node.desired_routes()),
        node.state_version,
        {
            ip: (
                s.boot,
                s.info,
                s.addr,
                s.last_heard,
                s.established,
                s.replay.highest,
                s.replay.bitmap,
            )
            for ip, s in node.sessions.items()
        },
        {ip: dict(listing) for ip, listing in node.listings.tables.items()},
    )


def two_nodes() -> tuple[Lab, Node, Node]:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    lab.handshake("alice", "bob")
    return lab, alice, bob


def peer_keys(node: Node) -> set[str]:
    return set(node.desired_peers())


def hellos(sent: list[Sent]) -> list[Hello]:
    out = []
    for s in sent:
        message = s.message
        assert isinstance(message, Hello), message
        out.append(message)
    return out


# --- handshake ----------------------------------------------------------------


def test_handshake_is_one_and_a_half_round_trips() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    alice.handle_timer(0.0)
    bob.handle_timer(0.0)
    lab.collect()
    assert [s.sender for s in lab.queue] == ["bob"]  # only the dynamic side calls

    first = lab.step()
    assert isinstance(first.message, Hello)
    assert first.message.echo is None and first.message.want_echo
    assert not alice.sessions and not bob.sessions  # a hello alone proves nothing

    second = lab.step()
    assert second.sender == "alice"
    assert isinstance(second.message, Hello)
    assert second.message.echo == first.message.challenge
    assert second.message.want_echo
    assert lab.boxes["alice"].wg_ip in bob.sessions
    assert not alice.sessions

    third = lab.step()
    assert third.sender == "bob"
    assert isinstance(third.message, Hello)
    assert third.message.echo == second.message.challenge
    assert not third.message.want_echo
    assert lab.boxes["bob"].wg_ip in alice.sessions
    assert lab.boxes["alice"].wg_ip in bob.sessions
    assert lab.queue == []  # 3 datagrams = 1.5 round trips, then quiet
    assert alice.sessions[lab.boxes["bob"].wg_ip].boot == bob.boot
    assert bob.sessions[lab.boxes["alice"].wg_ip].boot == alice.boot
    assert peer_keys(alice) == {bob.info.public_key}


def test_an_echo_we_never_issued_proves_nothing() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    hello = Hello(info_for("10.1.1.9"), os.urandom(16), echo=os.urandom(16), want_echo=False)
    answers = lab.inject(forge("10.1.1.9", hello), ("198.51.100.9", 50509), "alice")
    assert not alice.sessions
    assert len(answers) == 1  # a challenge, nothing else
    assert hellos(answers)[0].echo is None


def test_an_expired_challenge_proves_nothing() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    bob.handle_timer(0.0)
    lab.step()  # bob's hello reaches alice; her challenge is queued
    lab.now = T.challenge_lifetime + 0.001
    lab.step()  # bob answers, echoing alice's challenge
    lab.step()  # too late for alice
    assert not alice.sessions


def test_hello_whose_info_disagrees_with_the_header_is_malformed() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    hello = Hello(info_for("10.1.1.8"), os.urandom(16))
    assert lab.inject(forge("10.1.1.9", hello), ("198.51.100.9", 1), "alice") == []
    assert alice.drops == {"malformed": 1}


# --- replays ------------------------------------------------------------------


def capture_ping(lab: Lab, pinger: Node) -> Sent:
    lab.now += T.ping_interval * 1.2
    pinger.handle_timer(lab.now)
    sent = [s for s in lab.collect() if isinstance(s.message, Ping)]
    assert sent
    return sent[0]


def test_replayed_datagram_of_the_session_changes_nothing() -> None:
    lab, alice, bob = two_nodes()
    handshake = list(lab.log)
    ping = capture_ping(lab, bob)
    lab.settle()  # delivered once: alice answers with a pong
    assert sum(isinstance(s.message, wire.Pong) for s in lab.log) == 1

    lab.now += 1.5  # later, still within dead_after
    before = snapshot(alice, lab.now)
    drops_before = dict(alice.drops)
    # The ping, and bob's hello that completed the handshake.
    replays = [ping, handshake[-1]]
    for sent in replays:
        assert lab.inject(sent.data, sent.source, "alice") == []
    assert snapshot(alice, lab.now) == before
    assert alice.drops == {**drops_before, "replay": drops_before.get("replay", 0) + len(replays)}


def test_replayed_challenge_answer_to_the_dynamic_side_changes_nothing() -> None:
    lab, _, bob = two_nodes()
    answer = next(s for s in lab.log if s.sender == "alice")
    lab.now += 1.0
    before = snapshot(bob, lab.now)
    assert lab.inject(answer.data, answer.source, "bob") == []
    assert snapshot(bob, lab.now) == before
    assert bob.drops == {"replay": 1}


def test_replayed_first_hello_of_the_session_changes_nothing() -> None:
    lab, alice, _ = two_nodes()
    first = lab.log[0]
    assert first.sender == "bob"
    lab.now += 2.0
    before = snapshot(alice, lab.now)
    answers = lab.inject(first.data, first.source, "alice")
    assert snapshot(alice, lab.now) == before
    assert answers == []


def test_datagram_for_another_node_is_refused() -> None:
    lab = Lab({"alice": 1, "carol": 3})
    alice = lab.start("alice")
    lab.start("carol")
    bob = lab.start("bob", 2)
    lab.fire_timers()
    assert len(bob.sessions) == 2
    lab.now += T.ping_interval * 1.2
    bob.handle_timer(lab.now)
    pings = [s for s in lab.collect() if isinstance(s.message, Ping)]
    to_carol = next(s for s in pings if s.dest == lab.boxes["carol"].admin)
    lab.queue.clear()
    before = snapshot(alice, lab.now)
    answers = lab.inject(to_carol.data, to_carol.source, "alice")
    assert answers == []
    assert snapshot(alice, lab.now) == before


def restart_bob(lab: Lab) -> tuple[Node, Node]:
    """bob crashes; a new bob (same wg IP and machine, new key) joins."""
    old = lab.crash("bob").node
    lab.now += 0.5
    new = lab.start("bob", 2)
    lab.fire_timers()
    return old, new


def test_restart_with_new_key_replaces_the_old_key_at_once() -> None:
    lab, alice, _ = two_nodes()
    old_key = lab.boxes["bob"].node.info.public_key
    lab.crash("bob")
    new = lab.start("bob", 2)
    new.handle_timer(lab.now)
    lab.collect()
    for _ in range(3):  # the same 1.5 round trips, no waiting for the old one to die
        lab.step()
    assert lab.queue == []
    bob_ip = lab.boxes["bob"].wg_ip
    assert alice.sessions[bob_ip].boot == new.boot
    assert peer_keys(alice) == {new.info.public_key}
    assert old_key not in alice.desired_peers()
    owners = [p for p in alice.desired_peers().values() if any(bob_ip in n for n in p.allowed_ips)]
    assert len(owners) == 1
    assert any(isinstance(e, ev.PeerRestarted) for e in alice.events())


def test_replayed_handshake_of_an_old_boot_cannot_bring_back_the_old_key() -> None:
    lab, alice, _ = two_nodes()
    capture_ping(lab, lab.boxes["bob"].node)
    lab.settle()
    old_transcript = [s for s in lab.log if s.sender == "bob"]
    assert len(old_transcript) >= 3
    old, new = restart_bob(lab)
    old.shutdown(lab.now)  # a bye of the old boot, captured too
    old_transcript += [
        Sent("bob", lab.boxes["bob"].admin, d, x) for x, d in old.datagrams_to_send()
    ]
    bob_ip = lab.boxes["bob"].wg_ip
    assert alice.sessions[bob_ip].boot == new.boot

    for later in (0.1, 4 * T.dead_after):  # before and after the old boot's retirement ends
        lab.run_until(lab.now + later)
        assert alice.sessions[bob_ip].boot == new.boot  # kept alive by its pings
        for sent in old_transcript:
            answers = lab.inject(sent.data, sent.source, "alice")
            # At most a challenge goes back, to the address the replay came from.
            assert len(answers) <= 1
            for hello in hellos(answers):
                assert hello.want_echo and hello.info == alice.info
            assert all(a.dest == sent.source for a in answers)
            assert alice.sessions[bob_ip].boot == new.boot
            assert peer_keys(alice) == {new.info.public_key}
        lab.settle()  # the live bob gets the challenges: harmless
        assert alice.sessions[bob_ip].boot == new.boot
        assert peer_keys(alice) == {new.info.public_key}
        assert new.sessions[lab.boxes["alice"].wg_ip].boot == alice.boot
    assert not any(event_text.level(e) >= logging.ERROR for e in alice.events())


def test_replayed_hello_of_an_old_boot_to_a_restarted_receiver() -> None:
    """The receiver restarted; bob's old hello is replayed to the new one."""
    lab, _, bob = two_nodes()
    first = lab.log[0]
    lab.crash("alice")
    lab.now += 1.0
    alice = lab.start("alice")
    answers = lab.inject(first.data, first.source, "alice")
    assert not alice.sessions
    assert len(answers) == 1 and hellos(answers)[0].want_echo
    lab.settle()  # bob (same boot) answers the challenge: a real, live session
    assert alice.sessions[lab.boxes["bob"].wg_ip].boot == bob.boot


# --- conflicts ----------------------------------------------------------------


def conflicts(events: Iterable[ev.Event]) -> list[str]:
    """The conflicts among ``events``, as the log shows them."""
    found = [e for e in events if isinstance(e, ev.Conflict | ev.RefusedByPeer)]
    assert all(event_text.level(e) == logging.ERROR for e in found)
    return [event_text.describe(e) for e in found]


def test_second_live_node_claiming_a_used_ip_is_refused_and_told() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    first = lab.start("bob", 2)
    lab.fire_timers()
    bob_ip = lab.boxes["bob"].wg_ip
    alice.events()
    # Another machine, given the same wg IP by mistake (or by a rogue member).
    second = lab.start("bob-second", 2, address_octet=22)
    lab.run_until(lab.now + 3 * T.incumbent_timeout)
    # The holder answered alice's ping: it keeps its wg IP, the newcomer is refused.
    assert alice.sessions[bob_ip].boot == first.boot
    assert peer_keys(alice) == {first.info.public_key}
    (alice_says,) = conflicts(alice.events())
    assert "198.51.100.22" in alice_says and str(bob_ip) in alice_says
    assert second.info.public_key[:8] in alice_says and first.info.public_key[:8] in alice_says
    assert conflicts(alice.statistics(lab.now).conflicts) == [alice_says]
    assert alice.drops.get("conflict", 0) >= 1
    # ... and the newcomer knows why, with the holder's name and what to do.
    (second_hears,) = conflicts(second.events())
    assert "bob" in second_hears and "another wg IP" in second_hears
    assert conflicts(second.statistics(lab.now).conflicts) == [second_hears]
    assert not second.desired_peers() and not second.desired_routes()
    # Its retries change nothing and are not logged again.
    lab.run_until(lab.now + 4 * T.dead_after)
    assert alice.sessions[bob_ip].boot == first.boot
    assert conflicts(alice.events()) == [] and conflicts(second.events()) == []
    assert not second.desired_peers()


def test_new_boot_from_another_address_is_a_restart_if_the_holder_is_silent() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    lab.start("bob", 2)
    lab.fire_timers()
    bob_ip = lab.boxes["bob"].wg_ip
    lab.crash("bob")
    moved = lab.start("bob", 2, address_octet=22)  # came back elsewhere (new DHCP lease)
    moved.handle_timer(lab.now)
    lab.settle()
    assert alice.sessions[bob_ip].boot != moved.boot  # asked the old one first ...
    lab.run_until(lab.now + T.incumbent_timeout + 0.01)
    assert alice.sessions[bob_ip].boot == moved.boot  # ... which did not answer
    assert peer_keys(alice) == {moved.info.public_key}
    assert moved.sessions[lab.boxes["alice"].wg_ip].boot == alice.boot
    assert conflicts(alice.events()) == []


def test_replaced_boot_coming_back_is_a_conflict() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    first = lab.start("bob", 2)
    lab.fire_timers()
    bob_ip = lab.boxes["bob"].wg_ip
    first_box = lab.crash("bob")  # still running, only cut off for a while
    second = lab.start("bob", 2, address_octet=22)  # another machine, same wg IP
    lab.run_until(lab.now + T.incumbent_timeout + 0.01)
    assert alice.sessions[bob_ip].boot == second.boot
    alice.events()
    lab.boxes["bob-first"] = replace(first_box, name="bob-first")  # back on the wire
    lab.run_until(lab.now + 2 * T.ping_interval)  # the first one pings, gets challenged
    (text,) = conflicts(alice.events())
    assert str(bob_ip) in text
    assert alice.drops.get("conflict", 0) >= 1
    assert alice.sessions[bob_ip].boot == second.boot
    assert peer_keys(alice) == {second.info.public_key}
    assert first.info.public_key not in alice.desired_peers()
    assert conflicts(first.events())  # the first one is told too


def test_claiming_the_receivers_own_ip_is_refused() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    own = alice.info.wg_ip
    source = ("198.51.100.66", 50501)
    impostor = replace(alice.info, public_key=info_for("10.1.1.1").public_key)
    boot = os.urandom(8)
    # Unproven claims are not logged (they could be replays) ...
    assert lab.inject(forge(own, Ping(1, 0), boot=boot, to=own), source, "alice") == []
    (challenge,) = hellos(
        lab.inject(
            forge(own, Hello(impostor, os.urandom(16)), boot=boot, counter=2, to=own),
            source,
            "alice",
        )
    )
    assert challenge.want_echo and alice.events() == []
    # ... a claimant that answers the challenge is alive: a conflict, and told so.
    mine = os.urandom(16)
    proof = Hello(impostor, mine, echo=challenge.challenge, want_echo=False)
    (refusal,) = lab.inject(forge(own, proof, boot=boot, counter=3, to=own), source, "alice")
    assert refusal.message == wire.Refused(mine, alice.info) and refusal.dest == source
    assert alice.drops == {"own wg IP": 1, "conflict": 1}
    assert not alice.sessions
    (text,) = conflicts(alice.events())
    assert "198.51.100.66" in text
    # Our own datagram coming back (a loop in the underlay) is no conflict.
    own_datagram = forge(own, Ping(1, 0), boot=alice.boot, counter=5, to=own)
    assert lab.inject(own_datagram, ("198.51.100.1", 50501), "alice") == []
    assert alice.drops == {"own wg IP": 1, "conflict": 1, "own datagram": 1}


def test_a_second_node_showing_a_used_wireguard_key_is_refused() -> None:
    """WireGuard peers are known by key: two nodes with one key cannot both be
    peers (and keys are made fresh at every start, so this one was copied)."""
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    lab.fire_timers()
    clone = lab.start("clone", 3)
    clone.info = replace(clone.info, public_key=bob.info.public_key)
    lab.run_until(lab.now + 1.0)
    assert clone.info.wg_ip not in alice.sessions
    bob_peer = alice.desired_peers()[bob.info.public_key]
    assert IPv4Network("10.1.1.2/32") in bob_peer.allowed_ips
    (text,) = conflicts(alice.events())
    assert "WireGuard key" in text and "10.1.1.3" in text and "bob" in text
    (heard,) = conflicts(clone.events())
    assert "our WireGuard key is bob's (10.1.1.2) too" in heard


def test_a_replayed_refusal_changes_nothing() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    refusal = forge(alice.info.wg_ip, wire.Refused(os.urandom(16), alice.info), to=bob.info.wg_ip)
    assert lab.inject(refusal, lab.boxes["alice"].admin, "bob") == []
    assert bob.drops == {"stale refusal": 1}
    assert bob.events() == [] and bob.handshake.conflicts == []


# --- subnet -------------------------------------------------------------------

OUTSIDE = ["8.8.8.8", "10.1.1.0", "10.1.1.255", "10.1.2.1", "0.0.0.0", "255.255.255.255"]


@pytest.mark.parametrize("claimed", OUTSIDE)
def test_header_ip_outside_the_subnet_is_refused(claimed: str) -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    source = ("198.51.100.9", 50509)
    hello = Hello(info_for(claimed), os.urandom(16), want_echo=True)
    assert lab.inject(forge(claimed, hello), source, "alice") == []
    # Even answering a challenge correctly does not help.
    real = Hello(info_for("10.1.1.9"), os.urandom(16))
    (challenge,) = hellos(lab.inject(forge("10.1.1.9", real), source, "alice"))
    echo = Hello(info_for(claimed), os.urandom(16), echo=challenge.challenge, want_echo=False)
    assert lab.inject(forge(claimed, echo, counter=2), source, "alice") == []
    assert alice.drops == {"outside subnet": 2}
    assert not alice.sessions
    assert not alice.desired_peers() and not alice.desired_routes()


def test_table_entries_outside_the_subnet_are_refused() -> None:
    lab, alice, bob = two_nodes()
    alice_ip = lab.boxes["alice"].wg_ip
    ep = ("203.0.113.5", 40000)
    entries = [TableEntry(bob.info, bob.boot, ep, ep, 0.0)]
    entries += [TableEntry(info_for(ip), os.urandom(8), ep, ep, 0.0) for ip in OUTSIDE]
    good = info_for("10.1.1.50", "good")
    entries.append(TableEntry(good, os.urandom(8), ep, ep, 0.0))
    half = len(entries) // 2
    for part, chunk in enumerate((entries[:half], entries[half:])):
        table = Table(10**6, part, 2, tuple(chunk))
        data = forge(alice_ip, table, boot=alice.boot, counter=10**6 + part, to=bob.info.wg_ip)
        assert len(data) <= wire.MAX_DATAGRAM
        lab.inject(data, lab.boxes["alice"].admin, "bob")
    assert bob.drops == {"outside subnet": len(OUTSIDE)}
    assert set(bob.listings.tables[alice_ip]) == {good.wg_ip}
    assert bob.desired_routes() == {Route(alice_ip), Route(good.wg_ip, alice_ip)}
    (peer,) = bob.desired_peers().values()
    assert [str(n) for n in peer.allowed_ips] == ["10.1.1.1/32", "10.1.1.50/32"]
    assert all(p.wg_ip not in map(IPv4Address, OUTSIDE) for p in bob.statistics(lab.now).peers)


# --- drop counters ------------------------------------------------------------


def test_drops_are_counted_by_reason() -> None:
    lab, alice, bob = two_nodes()
    bob_ip, source, to = bob.info.wg_ip, lab.boxes["bob"].admin, alice.info.wg_ip
    assert alice.drops == {}
    ping = capture_ping(lab, bob)
    lab.settle()
    good = wire.seal_message(
        ADMIN, make_header(bob_ip, bob.boot, 10**5, to=alice.info.wg_ip), Ping(99, 0)
    )
    cases: list[tuple[str, bytes]] = [
        ("bad seal", forge(bob_ip, Ping(1, 0), key=wire.derive_admin_key(bytes(32)), to=to)),
        ("bad seal", good[:-1] + bytes([good[-1] ^ 1])),
        (
            "malformed",
            wire.seal(
                ADMIN,
                wire.encode(make_header(bob_ip, bob.boot, 7, to=alice.info.wg_ip), Bye())[:-3],
            ),
        ),
        ("malformed", good[:30]),
        ("malformed", b""),
        ("unknown version", b"\x02" + good[1:]),
        ("replay", ping.data),
        ("no session", forge(bob_ip, Ping(1, 0), to=to)),  # a boot alice does not know
    ]
    expected: dict[str, int] = {}
    for reason, data in cases:
        lab.inject(data, source, "alice")
        expected[reason] = expected.get(reason, 0) + 1
        assert alice.drops == expected, reason
        assert alice.statistics(lab.now).drops == expected
    assert alice.sessions[bob_ip].boot == bob.boot


def test_no_session_answers_with_a_challenge_and_changes_nothing() -> None:
    lab, alice, bob = two_nodes()
    before = snapshot(alice, lab.now)
    bye = forge(bob.info.wg_ip, Bye(), to=alice.info.wg_ip)
    answers = lab.inject(bye, ("198.51.100.77", 1234), "alice")
    assert snapshot(alice, lab.now) == before  # a bye from an unknown boot drops nothing
    (hello,) = hellos(answers)
    assert hello.echo is None and hello.want_echo
    assert answers[0].dest == ("198.51.100.77", 1234)


# --- rate limiting ---------------------------------------------------------------


def test_unauthenticated_answers_are_rate_limited_per_source() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    attacker, bystander = ("198.51.100.66", 4444), ("198.51.100.67", 4444)
    rng = Random(5)
    duration, count = 2.0, 1000
    answered = answered_hellos = 0
    for i in range(count):
        lab.now = duration * i / count
        wg_ip = f"10.1.1.{rng.randrange(2, 255)}"
        kind = i % 3
        message: wire.Message
        if kind == 0:
            message = Hello(info_for(wg_ip), rng.randbytes(16), want_echo=True)
        elif kind == 1:
            message = Hello(info_for(wg_ip), rng.randbytes(16), rng.randbytes(16), False)
        else:
            message = Ping(i, 0)
        data = forge(wg_ip, message, boot=rng.randbytes(8), to=alice.info.wg_ip)
        answers = lab.inject(data, attacker, "alice")
        assert all(a.dest == attacker for a in answers)
        answered += len(answers)
        answered_hellos += len(answers) if kind != 2 else 0
    limit = CHALLENGE_BURST + CHALLENGE_RATE * duration
    assert CHALLENGE_BURST <= answered <= limit + 1
    # Each datagram counted once: a ping of no session as such (answered or
    # not), a hello only when its answer was suppressed.
    assert alice.drops["no session"] == count // 3
    assert alice.drops["rate limited"] + alice.drops["no session"] == count - answered_hellos
    assert not alice.sessions
    assert len(alice.handshake.challenges) <= MAX_CHALLENGES
    # Another source is not affected.
    hello = Hello(info_for("10.1.1.200"), os.urandom(16))
    assert len(lab.inject(forge("10.1.1.200", hello), bystander, "alice")) == 1
    # The bucket refills at the documented rate.
    lab.now += 1.0
    ping = forge("10.1.1.201", Ping(1, 0), to=alice.info.wg_ip)
    refill = [lab.inject(ping, attacker, "alice") for _ in range(10)]
    assert sum(map(len, refill)) == int(CHALLENGE_RATE)


# --- liveness -------------------------------------------------------------------


def test_dead_node_is_dropped_after_dead_after_of_silence() -> None:
    lab, alice, bob = two_nodes()
    bob_ip = bob.info.wg_ip
    lab.run_until(10 * T.dead_after)  # bob pings: alive all along
    assert bob_ip in alice.sessions
    last = alice.sessions[bob_ip].last_heard
    assert last > 9 * T.dead_after - 2 * T.ping_interval
    lab.crash("bob")
    alice.events()
    alice.handle_timer(last + T.dead_after - 0.01)
    assert bob_ip in alice.sessions
    assert alice.get_timer() == pytest.approx(last + T.dead_after)
    alice.handle_timer(last + T.dead_after)
    assert bob_ip not in alice.sessions
    assert alice.desired_peers() == {} and alice.desired_routes() == set()
    assert any(isinstance(e, ev.PeerSilent) for e in alice.events())


def test_dynamic_side_drops_a_dead_static_and_calls_again() -> None:
    lab, alice, bob = two_nodes()
    alice_ip = alice.info.wg_ip
    lab.crash("alice")
    lab.run_until(lab.now + T.dead_after + 0.01)
    assert alice_ip not in bob.sessions
    assert bob.desired_peers() == {}
    lab.queue.clear()
    lab.now += T.hello_retry_min
    bob.handle_timer(lab.now)
    assert any(isinstance(s.message, Hello) for s in lab.collect())


def test_bye_drops_at_once() -> None:
    lab, alice, bob = two_nodes()
    bob.shutdown(lab.now)
    (bye,) = lab.collect()
    assert isinstance(bye.message, Bye)
    lab.settle()
    assert not alice.sessions
    assert alice.desired_peers() == {} and alice.desired_routes() == set()
    assert any(isinstance(e, ev.PeerSaidBye) for e in alice.events())


# --- clocks ---------------------------------------------------------------------


@pytest.mark.parametrize("offsets", [(0.0, 7200.0), (7200.0, 0.0), (-7200.0, 7200.0), (1e9, 3.0)])
def test_handshake_and_liveness_ignore_the_clocks_absolute_value(
    offsets: tuple[float, float],
) -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice", clock_offset=offsets[0])
    bob = lab.start("bob", 2, clock_offset=offsets[1])
    lab.fire_timers()
    lab.run_until(5 * T.dead_after)
    assert bob.info.wg_ip in alice.sessions and alice.info.wg_ip in bob.sessions
    assert alice.drops == {} and bob.drops == {}
    assert bob.sessions[alice.info.wg_ip].rtt is not None


def test_unissued_echo_proves_nothing_with_a_negative_clock() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice", clock_offset=-7200.0)
    hello = Hello(info_for("10.1.1.9"), os.urandom(16), echo=os.urandom(16), want_echo=False)
    lab.inject(forge("10.1.1.9", hello), ("198.51.100.9", 50509), "alice")
    assert not alice.sessions


def test_first_resolve_request_does_not_depend_on_the_clock() -> None:
    static = StaticTarget(IPv4Address("10.1.1.1"), "static.example", 50001, 50501)
    node = make_node(info_for("10.1.1.2"), statics=[static], timers=T, now=-7200.0)
    node.handle_timer(-7200.0)
    assert node.take_resolve_requests() == {IPv4Address("10.1.1.1")}


def three_boxes(seed: int = 1) -> SimNet:
    net = SimNet(T, seed=seed)
    net.add_host("alice", "198.51.100.1", "10.1.1.1", static=True)
    net.add_host("bob", "198.51.100.2", "10.1.1.2")
    net.add_host("charlie", "192.168.1.2", "10.1.1.3", nat=Nat("198.51.100.3"))
    return net


def test_sim_clock_offset_is_what_the_core_sees() -> None:
    net = three_boxes()
    net.hosts["bob"].clock_offset = 7200.0
    net.start("alice")
    net.start("bob")
    net.run_for(1.0)
    bob = net.hosts["bob"].node
    assert bob is not None
    session = bob.sessions[IPv4Address("10.1.1.1")]
    assert 7200.0 < session.established < 7201.0
    assert 7200.0 < session.last_heard <= net.clock(net.hosts["bob"])
    assert net.clock(net.hosts["alice"]) == net.now


@pytest.mark.parametrize(
    "offsets",
    [(0.0, 7200.0, -7200.0), (-7200.0, 0.0, 7200.0), (7200.0, -7200.0, 0.0)],
)
def test_mesh_converges_with_clocks_hours_apart(offsets: tuple[float, float, float]) -> None:
    net = three_boxes()
    for name, offset in zip(("alice", "bob", "charlie"), offsets, strict=True):
        net.hosts[name].clock_offset = offset
        net.start(name)
    assert net.wait_for(net.all_pairs_ping, limit=3.0) < 1.0
    net.run_for(4 * T.dead_after)  # pings keep every session alive
    assert net.all_pairs_ping()
    for host in net.hosts.values():
        assert host.node is not None
        assert not {"replay", "no session", "conflict"} & set(host.node.drops)


@pytest.mark.parametrize("who", ["bob", "alice"])
def test_restart_with_clock_set_back_two_hours_is_accepted(who: str) -> None:
    net = three_boxes()
    for name in ("alice", "bob", "charlie"):
        net.start(name)
    assert net.wait_for(net.all_pairs_ping, limit=3.0) < 3.0
    net.run_for(2.0)
    host = net.hosts[who]
    assert host.node is not None
    old_key = host.node.info.public_key
    net.stop(who, clean=False)
    net.run_for(0.2)
    host.clock_offset -= 7200.0  # the machine's clock now runs two hours behind
    net.start(who)
    assert net.wait_for(net.all_pairs_ping, limit=5.0) < T.ping_interval * 1.2
    new_key = host.node.info.public_key
    for other in net.hosts.values():
        if other is host:
            continue
        assert other.node is not None
        keys = set(other.node.desired_peers())
        assert old_key not in keys
        if who == "alice" or other.name == "alice":
            assert new_key in keys
        assert not any(event_text.level(e) >= logging.ERROR for e in other.node.events())
    net.run_for(3 * T.dead_after)
    assert net.all_pairs_ping()


# --- routes -------------------------------------------------------------------------


def check_routes(net: SimNet) -> None:
    """Per node: AllowedIPs never overlap, every route has exactly one peer that
    accepts it, via routes point at a static node that is a direct peer."""
    for host in net.hosts.values():
        node = host.node
        if node is None:
            continue
        owner: dict[IPv4Address, str] = {}
        for peer in node.desired_peers().values():
            for network in peer.allowed_ips:
                assert network.prefixlen == 32, (host.name, peer)
                ip = network.network_address
                assert ip not in owner, f"{host.name}: {ip} in two peers' AllowedIPs"
                owner[ip] = peer.public_key
                assert ip != host.wg_ip
                assert ip in SUBNET and ip not in (
                    SUBNET.network_address,
                    SUBNET.broadcast_address,
                )
        dests = [r.dest for r in node.desired_routes()]
        assert len(dests) == len(set(dests)), f"{host.name}: two routes for one destination"
        assert set(dests) == set(owner), f"{host.name}: routes and AllowedIPs disagree"
        for route in node.desired_routes():
            if route.via is None:
                session = node.sessions.get(route.dest)
                assert session is not None, (host.name, route)
                assert owner[route.dest] == session.info.public_key
            else:
                assert route.via != route.dest
                assert route.via in node.statics, (host.name, route)
                assert Route(route.via) in node.desired_routes(), (host.name, route)
                assert owner[route.dest] == owner[route.via], (host.name, route)


def route_walk(net: SimNet, a: str, b: str) -> list[str]:
    """Follow only the routes (not WireGuard's acceptance) from a towards b."""
    by_ip = {h.wg_ip: h for h in net.hosts.values() if h.node is not None}
    dest = net.hosts[b].wg_ip
    hops, here = [a], net.hosts[a]
    while here.wg_ip != dest:
        assert here.node is not None
        route = next((r for r in here.node.desired_routes() if r.dest == dest), None)
        nxt = None if route is None else by_ip.get(route.via or route.dest)
        if nxt is None:
            return hops  # lost, not looped
        assert nxt.name not in hops, f"routing loop {[*hops, nxt.name]}"
        hops.append(nxt.name)
        here = nxt
    return hops


def five_boxes(seed: int, loss: float) -> SimNet:
    net = SimNet(T, seed=seed, loss=loss)
    net.add_host("s1", "198.51.100.1", "10.1.1.1", static=True)
    net.add_host("s2", "198.51.100.2", "10.1.1.2", static=True)
    net.add_host("pub", "198.51.100.3", "10.1.1.3")
    net.add_host("nat", "192.168.1.4", "10.1.1.4", nat=Nat("198.51.100.4"))
    net.add_host("sym", "192.168.2.5", "10.1.1.5", nat=Nat("198.51.100.5", symmetric=True))
    return net


def start_in_random_order(seed: int) -> tuple[SimNet, Random, list[str]]:
    rng = Random(seed)
    net = five_boxes(seed, loss=rng.choice([0.0, 0.05, 0.2]))
    order = list(net.hosts)
    rng.shuffle(order)
    for name, at in zip(order, sorted(rng.uniform(0.0, 1.0) for _ in order), strict=True):
        while net.now < at:
            net.run_for(min(0.01, at - net.now))
            check_routes(net)
        net.start(name)
        check_routes(net)
    return net, rng, order


def check_no_loops(net: SimNet) -> None:
    for a, b in itertools.permutations([n for n, h in net.hosts.items() if h.node], 2):
        route_walk(net, a, b)


def check_symmetric_gateways(net: SimNet) -> None:
    """Two nodes that reach each other via static nodes must pick the same one:
    WireGuard at each end accepts the other's packets only from the peer whose
    AllowedIPs hold the other's address."""
    names = [n for n, h in net.hosts.items() if h.node]
    for a, b in itertools.combinations(names, 2):
        ab, ba = gateway(net, a, b), gateway(net, b, a)
        if ab is not None and ba is not None:
            assert ab == ba, f"{a} -> {b} via {ab}, {b} -> {a} via {ba}"


# Start order and loss are random per seed. (Seed 5 of this topology on the
# core as of this writing also hits the asymmetric gateway choice that
# test_gateway_choice_is_symmetric_after_a_restart pins down.)
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 6, 7])
def test_mesh_converges_from_any_start_order_with_sane_routes(seed: int) -> None:
    net, _, _ = start_in_random_order(seed)

    def converged() -> bool:
        check_routes(net)
        check_no_loops(net)
        return net.all_pairs_ping()

    took = net.wait_for(converged, limit=10.0)
    assert took < 10.0, f"no convergence (seed {seed})"
    for a, b in itertools.permutations(net.hosts, 2):
        path = net.path(a, b)
        assert path is not None and len(path) == len(set(path)) <= 3, (a, b, path)
        assert route_walk(net, a, b) == path
    check_symmetric_gateways(net)
    for _ in range(200):
        net.run_for(0.01)
        check_routes(net)
        check_no_loops(net)


# (Seed 5 currently ends in the timer spin of test_handle_timer_at_the_deadline_makes_progress.)
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 6, 7])
def test_routes_stay_sane_through_crashes_and_restarts(seed: int) -> None:
    """AllowedIPs never overlap, via routes only point at direct static peers, and
    routes never loop: checked every 10 ms while nodes crash or leave and return."""
    net, rng, order = start_in_random_order(seed)
    for _ in range(2):
        net.run_for(rng.uniform(0.5, 2.0))
        victim = rng.choice(order)
        net.stop(victim, clean=rng.random() < 0.5)
        for _ in range(rng.randrange(0, 50)):
            net.run_for(0.01)
            check_routes(net)
            check_no_loops(net)
        net.start(victim)
    for _ in range(int(2 * T.dead_after / 0.01)):
        net.run_for(0.01)
        check_routes(net)
        check_no_loops(net)


def gateway(net: SimNet, a: str, b: str) -> IPv4Address | None:
    node = net.hosts[a].node
    assert node is not None
    dest = net.hosts[b].wg_ip
    route = next((r for r in node.desired_routes() if r.dest == dest), None)
    return None if route is None else route.via


def wait_checking(
    net: SimNet, until: Callable[[], bool], always: Callable[[], bool], limit: float
) -> float:
    def predicate() -> bool:
        assert always(), f"invariant broken at {net.now:.2f}"
        return until()

    return net.wait_for(predicate, limit=limit)


@pytest.mark.parametrize("how", ["partition", "crash"])
def test_gateway_is_the_lowest_common_static_and_fails_over(how: str) -> None:
    """Both ends of a relayed pair pick the same gateway: the lowest static
    that lists both. No local stickiness: two ends with different histories
    would otherwise pick different gateways and drop each other's packets."""
    net = SimNet(T, seed=3)
    net.add_host("s1", "198.51.100.1", "10.1.1.1", static=True)
    net.add_host("s2", "198.51.100.2", "10.1.1.2", static=True)
    net.add_host("d", "192.168.1.10", "10.1.1.10", nat=Nat("198.51.100.10", symmetric=True))
    net.add_host("x", "192.168.2.11", "10.1.1.11", nat=Nat("198.51.100.11", symmetric=True))
    s1_ip, s2_ip = net.hosts["s1"].wg_ip, net.hosts["s2"].wg_ip
    net.partitioned.add(frozenset(("x", "s1")))  # at first only s2 lists x
    for name in net.hosts:
        net.start(name)
    assert net.wait_for(lambda: net.pings("d", "x"), limit=5.0) < 5.0
    assert gateway(net, "d", "x") == s2_ip == gateway(net, "x", "d")
    assert net.path("d", "x") == ["d", "s2", "x"]

    net.partitioned.clear()  # s1 lists x too now, and s1 has the lower wg IP
    took = wait_checking(
        net,
        until=lambda: (
            gateway(net, "d", "x") == s1_ip == gateway(net, "x", "d") and net.pings("d", "x")
        ),
        always=lambda: gateway(net, "d", "x") in (s1_ip, s2_ip),
        limit=5.0,
    )
    assert took < 5.0
    net.run_for(2 * T.dead_after)
    assert net.path("d", "x") == ["d", "s1", "x"]

    if how == "partition":
        net.partitioned.add(frozenset(("x", "s1")))  # s1 stops listing x after dead_after
    else:
        net.stop("s1", clean=False)
    took = wait_checking(
        net,
        until=lambda: gateway(net, "d", "x") == s2_ip and net.pings("d", "x"),
        always=lambda: gateway(net, "d", "x") in (s1_ip, s2_ip),
        limit=10.0,
    )
    assert took <= T.dead_after + 1.0
    assert net.path("d", "x") == ["d", "s2", "x"]
    check_routes(net)


def test_gateway_choice_is_symmetric_after_a_restart() -> None:
    net = SimNet(T, seed=1)
    net.add_host("s1", "198.51.100.1", "10.1.1.1", static=True)
    net.add_host("s2", "198.51.100.2", "10.1.1.2", static=True)
    # Symmetric NATs: a and x can only ever reach each other through a static.
    net.add_host("a", "192.168.1.10", "10.1.1.10", nat=Nat("198.51.100.10", symmetric=True))
    net.add_host("x", "192.168.2.11", "10.1.1.11", nat=Nat("198.51.100.11", symmetric=True))
    net.partitioned.add(frozenset(("x", "s1")))  # a and x first meet through s2
    for name in net.hosts:
        net.start(name)
    assert net.wait_for(lambda: net.pings("a", "x"), limit=5.0) < 5.0
    net.partitioned.clear()
    net.run_for(3.0)
    assert net.pings("a", "x")
    net.stop("x", clean=False)
    net.run_for(0.2)
    net.start("x")  # x meets s1 and s2 at once and picks the lowest
    assert net.wait_for(lambda: net.pings("a", "x"), limit=2 * T.dead_after) < 2 * T.dead_after
    check_symmetric_gateways(net)


def test_handle_timer_at_the_deadline_makes_progress() -> None:
    lab = Lab({"alice": 1})
    lab.now = 13.218601970135468
    alice = lab.start("alice")
    lab.start("bob", 2)
    lab.fire_timers()
    bob_ip = IPv4Address("10.1.1.2")
    assert alice.sessions[bob_ip].last_heard == 13.218601970135468
    lab.crash("bob")
    for _ in range(20):
        due = alice.get_timer()
        if due is None:
            break
        alice.handle_timer(due)
        after = alice.get_timer()
        assert after is None or after > due, f"deadline {due} still due after handle_timer"
    assert bob_ip not in alice.sessions
