"""Sessions and identity (core/handshake.py), and what a member gone rogue can do.

Honest nodes run in the hand-driven ``Lab`` (tests/lab.py). The attacker is a
``Member`` (tests/member.py): it holds the shared key and a key pair of its
own, opens every datagram it captures, and builds frames by hand. Each attack
of the threat list (impersonation, frozen view, amplification, quadratic
pushes, replay as denial) has a test here; the namespace tests repeat the
first ones against real daemons.
"""

from __future__ import annotations

import os
from ipaddress import IPv4Address
from typing import Any

import pytest
from msgspec.structs import replace

from tests.helpers import ADMIN_KEY, QUICK_TIMERS, SHARED_KEY, wg_ip
from tests.lab import Lab, Sent
from tests.member import Member, forged_transport, source
from wg_netmanager import event_text, noise, wire
from wg_netmanager.core import events as ev
from wg_netmanager.core.handshake import INIT_BURST, MAX_PENDING
from wg_netmanager.core.node import Node
from wg_netmanager.wire import Table, TableEntry

T = QUICK_TIMERS
ALICE, BOB = wg_ip(1), wg_ip(2)


def two_nodes() -> tuple[Lab, Node, Node]:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    lab.handshake("alice", "bob")
    return lab, alice, bob


def frames(sent: list[Sent]) -> list[wire.Frame]:
    return [s.frame for s in sent]


def snapshot(node: Node, now: float) -> Any:
    """Everything a datagram could change, except the drop counters."""
    return (
        replace(node.statistics(now), drops={}),
        dict(node.desired_peers()),
        set(node.desired_routes()),
        node.state_version,
        {
            ip: (s.boot, s.info, s.addr, s.last_heard, s.keys.local_index, s.keys.replay.highest)
            for ip, s in node.sessions.items()
        },
        {ip: dict(listing) for ip, listing in node.listings.tables.items()},
    )


def conflicts(events: list[ev.Event]) -> list[str]:
    found = [e for e in events if isinstance(e, ev.Conflict | ev.RefusedByPeer)]
    return [event_text.describe(e) for e in found]


def in_wireguard(node: Node, *keys: str) -> None:
    """The static's WireGuard has these peers (the Lab has no WireGuard): its table lists them."""
    from wg_netmanager.model import WgPeerReading

    readings = {k: WgPeerReading(k, ("203.0.113.9", 50000), (), 1.0, 10, 10) for k in keys}
    node.update_wg(readings, 0.0)


def mallory_joins(lab: Lab, to: str = "alice", mallory: Member | None = None) -> Member:
    """A member with a genuine session of its own with ``to``."""
    mallory = mallory or Member(wg_ip(66))
    octet = mallory.wg_ip.packed[3]
    box = lab.boxes[to]
    (response,) = lab.inject(mallory.init(box.wg_ip), source(octet), to)
    lab.inject(mallory.finish(response.data), source(octet), to)
    assert mallory.wg_ip in box.node.sessions
    lab.collect()
    lab.queue.clear()
    return mallory


# --- the handshake ---------------------------------------------------------------


def test_handshake_is_one_and_a_half_round_trips_and_binds_the_wireguard_key() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    alice.handle_timer(0.0)
    bob.handle_timer(0.0)
    lab.collect()
    assert [s.sender for s in lab.queue] == ["bob"]  # only the dynamic side calls
    first = lab.step()
    assert isinstance(first.frame, wire.Init)
    assert not alice.sessions and not bob.sessions  # an INIT alone proves nothing
    second = lab.step()
    assert isinstance(second.frame, wire.Response) and second.sender == "alice"
    assert ALICE in bob.sessions and not alice.sessions
    third = lab.step()
    assert isinstance(third.frame, wire.Finish)
    assert BOB in alice.sessions
    assert lab.queue == []  # 3 datagrams = 1.5 round trips, then quiet
    # Each side has the other's WireGuard key, proven by the handshake itself.
    assert alice.sessions[BOB].info.public_key == bob.info.public_key
    assert bob.sessions[ALICE].info.public_key == alice.info.public_key
    assert alice.sessions[BOB].boot == bob.boot and bob.sessions[ALICE].boot == alice.boot
    assert set(alice.desired_peers()) == {bob.info.public_key}


def test_a_payload_announcing_a_key_the_sender_does_not_hold_is_refused() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    mallory = Member(wg_ip(66))
    (response,) = lab.inject(mallory.init(ALICE), source(66), "alice")
    # Mallory's handshake, bob's WireGuard key in the payload: traffic meant
    # for bob would go to mallory's endpoint if this were believed.
    lie = wire.encode_hello(mallory.info(public_key=bob.info.public_key), mallory.boot)
    lab.inject(mallory.finish(response.data, lie), source(66), "alice")
    assert not alice.sessions
    assert alice.drops.get("key not proven") == 1
    assert bob.info.public_key not in alice.desired_peers()


def test_without_the_shared_key_nothing_opens() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    stranger = wire.seal_frame(wire.derive_admin_key(bytes(32)), wire.Stale(BOB, ALICE, 1))
    assert lab.inject(stranger, source(9), "alice") == []
    assert alice.drops == {"bad seal": 1}


def test_an_old_version_is_refused_and_said_once() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    old = b"\x01" + os.urandom(100)
    for _ in range(3):
        assert lab.inject(old, source(9), "alice") == []
    assert alice.drops == {"old protocol version": 3}
    said = [e for e in alice.events() if isinstance(e, ev.OldVersion)]
    assert len(said) == 1 and "older wg_netmanager" in event_text.describe(said[0])


# --- replays --------------------------------------------------------------------


def test_replayed_handshake_and_transport_frames_change_nothing() -> None:
    lab, alice, bob = two_nodes()
    handshake = [
        s for s in lab.log if s.sender == "bob" and not isinstance(s.frame, wire.Transport)
    ]
    lab.now += T.ping_interval * 1.2
    bob.handle_timer(lab.now)
    pings = [s for s in lab.collect() if isinstance(s.message, wire.Ping)]
    lab.settle()
    lab.now += 1.0
    before, drops = snapshot(alice, lab.now), dict(alice.drops)
    for sent in [*handshake, *pings]:
        assert lab.inject(sent.data, sent.source, "alice") == []  # not even answered
    assert snapshot(alice, lab.now) == before
    new = {k: v - drops.get(k, 0) for k, v in alice.drops.items() if v != drops.get(k, 0)}
    assert new == {"no such handshake": 1, "replay": 1 + len(pings)}  # FINISH; INIT, pings
    lab.settle()  # bob gets the stray RESPONSE: no such handshake there either
    assert snapshot(alice, lab.now) == before


# --- 1. impersonation -------------------------------------------------------------


def test_a_member_cannot_speak_for_another() -> None:
    lab, alice, bob = two_nodes()
    mallory = mallory_joins(lab)
    bob_session = alice.sessions[BOB]
    index, counter = bob_session.keys.local_index, bob_session.keys.replay.highest
    before = snapshot(alice, lab.now)
    forged = [
        # bob's index and the next counters, read off the wire: no keys, no luck.
        forged_transport(BOB, ALICE, index, counter + 1),
        forged_transport(BOB, ALICE, index, 2**40),
        # mallory's own keys, bob's name on the frame.
        mallory.send(ALICE, wire.Bye(), as_ip=BOB),
    ]
    for data in forged:
        lab.inject(data, lab.boxes["bob"].admin, "alice")
    assert snapshot(alice, lab.now) == before
    assert alice.drops["bad transport"] == 2 and alice.drops["no session"] == 1
    # bob's real datagrams still count (the forged counter moved no window).
    lab.now += T.ping_interval * 1.2
    bob.handle_timer(lab.now)
    lab.settle()
    assert alice.sessions[BOB].last_heard == lab.now


def test_a_member_claiming_a_live_nodes_wg_ip_is_refused_and_told() -> None:
    lab, alice, bob = two_nodes()
    lab.run_until(2.0)
    mallory = Member(BOB, name="bob")  # bob's wg IP, mallory's own key
    (response,) = lab.inject(mallory.init(ALICE), source(66), "alice")
    lab.inject(mallory.finish(response.data), source(66), "alice")
    # Asked: is the holder still there? bob answers the ping over its session.
    lab.run_until(lab.now + 3 * T.incumbent_timeout)
    assert alice.sessions[BOB].boot == bob.boot
    assert set(alice.desired_peers()) == {bob.info.public_key}
    (said,) = conflicts(alice.events())
    assert "198.51.100.66" in said and bob.info.public_key[:8] in said
    # mallory was told over its own handshake's keys, and only it can read that.
    refusals = [m for s in lab.log if s.sender == "alice" and (m := mallory.read(s.data))]
    assert refusals == [wire.Refused.of(alice.sessions[BOB].info)]
    assert alice.drops.get("conflict") == 1


# --- 2. a frozen view ---------------------------------------------------------------


def test_tables_come_only_from_the_static() -> None:
    lab, alice, bob = two_nodes()
    mallory = mallory_joins(lab, to="alice")
    in_wireguard(alice, bob.info.public_key, mallory.public_key)
    lab.run_until(lab.now + 1.0)  # alice's table, listing mallory, reaches bob
    assert mallory.wg_ip in bob.listings.tables[ALICE]
    mallory_joins(lab, to="bob", mallory=mallory)  # a pair session: kept while listed
    before = snapshot(bob, lab.now)
    frozen = Table(2**62, 0, 1, (TableEntry(mallory.info(), ("203.0.113.9", 1), None, 0.0),))
    lab.inject(mallory.send(BOB, frozen), source(66), "bob")
    lab.inject(mallory.send(BOB, frozen, as_ip=ALICE), lab.boxes["alice"].admin, "bob")
    assert bob.drops["table from non-static"] == 1 and bob.drops["no session"] == 1
    assert snapshot(bob, lab.now)[5] == before[5]  # bob's view of the tables
    # Later real tables still count: mallory falls silent (it never pings),
    # alice's table changes, and bob takes the change.
    lab.run_until(lab.now + T.dead_after + 1.0)
    assert mallory.wg_ip not in alice.sessions
    assert bob.listings.versions[ALICE] == alice.table.published > 1


def test_a_pinned_static_cannot_be_spoken_for_even_while_it_is_down() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    pinned = noise.public_key(os.urandom(32))  # not mallory's
    bob = lab.start("bob", 2)
    bob.statics[ALICE].pinned_key = pinned
    lab.crash("alice")
    mallory = Member(ALICE, name="alice")
    lab.now += 1.0
    bob.handle_timer(lab.now)  # bob says INIT to the static's address ...
    (init,) = [s for s in lab.collect() if isinstance(s.frame, wire.Init)]
    frame = init.frame
    assert isinstance(frame, wire.Init)
    # ... and mallory answers in the static's name, at its address.
    state = noise.Handshake(
        initiator=False, static_private=mallory.private, psk=wire.derive_psk(SHARED_KEY),
        prologue=b"wg_netmanager admin/2", random_bytes=os.urandom,
    )  # fmt: skip
    state.read_message(frame.noise)
    message = state.write_message(wire.encode_hello(mallory.info(), mallory.boot))
    response = Member.seal(wire.Response(ALICE, BOB, 7, frame.index, message))
    lab.inject(response, init.dest, "bob")
    assert not bob.sessions and bob.drops.get("not the pinned key") == 1
    assert alice.info.wg_ip not in bob.sessions


# --- 3. amplification ------------------------------------------------------------------


def test_no_answer_to_an_unproven_address_is_larger_than_what_it_answers() -> None:
    lab = Lab({"alice": 1})
    lab.start("alice")
    mallory = Member(wg_ip(66))
    init = mallory.init(ALICE)
    answers = [lab.inject(init, ("203.0.113.1", 4000 + i), "alice") for i in range(40)]
    kinds = {type(a.frame).__name__ for batch in answers for a in batch}
    assert kinds <= {"Response", "Cookie"}
    assert all(len(a.data) <= len(init) for batch in answers for a in batch)
    stale = forged_transport(BOB, ALICE, 12345, 1, size=16)  # the smallest TRANSPORT
    (answer,) = lab.inject(stale, ("203.0.113.2", 4000), "alice")
    assert isinstance(answer.frame, wire.Stale) and len(answer.data) < len(stale)


@pytest.mark.parametrize("claim", ["name", "wg IP"])
def test_a_refusal_is_no_larger_than_the_finish_it_answers(claim: str) -> None:
    # The holder says all it may (the longest name, every local address); the
    # claimant as little, from an address it does not own but reads (on the path).
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    big = ("255.255.255.255", 65535)
    for node, letter in ((alice, "a"), (bob, "b")):
        node.info = replace(node.info, name=letter * wire.MAX_NAME, local_endpoints=(big,) * 8)
    lab.handshake("alice", "bob")
    if claim == "name":
        mallory = Member(wg_ip(66), name="B" * wire.MAX_NAME)
    else:
        mallory = Member(ALICE, name="m")  # alice's own wg IP: alice holds it
    spoofed = ("203.0.113.77", 4000)
    (response,) = lab.inject(mallory.init(ALICE), spoofed, "alice")
    finish = mallory.finish(response.data)
    answers = lab.inject(finish, spoofed, "alice")
    assert [a.dest for a in answers] == [spoofed]
    assert spoofed not in alice._known_sources()  # nobody proved it
    refused = mallory.read(answers[0].data)
    assert isinstance(refused, wire.Refused)
    holder = alice.sessions[BOB].info if claim == "name" else alice.info
    # Who holds it, all the claimant reads (handshake.refused); nothing more.
    said = refused.holder
    assert (said.wg_ip, said.name, said.public_key) == (
        holder.wg_ip,
        holder.name,
        holder.public_key,
    )
    assert len(answers[0].data) <= len(finish)


def test_a_new_source_address_is_used_only_once_it_answered_from_there() -> None:
    lab, alice, _bob = two_nodes()
    mallory = mallory_joins(lab)
    victim = ("203.0.113.50", 9999)
    answers = lab.inject(mallory.send(ALICE, wire.Ping(1, 0)), victim, "alice")
    # One small challenge to the new address; the session stays where it was.
    challenges = [a for a in answers if a.dest == victim]
    assert len(challenges) == 1 and len(challenges[0].data) <= len(answers[0].data) + 64
    assert isinstance(mallory.read(challenges[0].data), wire.PathChallenge)
    assert alice.sessions[mallory.wg_ip].addr == source(66)
    # Table requests from there are answered to the proven address, and only so often.
    answered: list[Sent] = []
    for _ in range(100):
        answered += lab.inject(mallory.send(ALICE, wire.TableRequest()), victim, "alice")
    assert all(a.dest == source(66) for a in answered)
    assert len(answered) <= 2  # the burst; no refill within the same instant
    assert alice.drops["rate limited"] >= 98
    # Answering the challenge from the new address moves the session there.
    token = mallory.read(challenges[0].data)
    assert isinstance(token, wire.PathChallenge)
    lab.inject(mallory.send(ALICE, wire.PathResponse(token.token)), victim, "alice")
    assert alice.sessions[mallory.wg_ip].addr == victim


# --- 4. work per change -------------------------------------------------------------------


def test_one_change_costs_the_static_one_small_datagram_per_session() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    nodes = [lab.start(f"n{i}", 10 + i) for i in range(100)]
    lab.run_until(1.0)
    assert len(alice.sessions) == 100
    readings = {
        s.info.public_key: _reading(s.info.public_key) for s in alice.sessions.values()
    }  # the static's WireGuard has them all
    alice.update_wg(readings, lab.now)
    lab.run_until(2.0)
    lab.settle()
    start = len(lab.log)
    moved = replace(nodes[0].info, local_endpoints=(("192.168.7.7", 50510),))
    nodes[0].info = moved
    nodes[0]._announce(lab.now, ping=False)
    lab.run_until(lab.now + 0.1)
    from_alice = [s for s in lab.log[start:] if s.sender == "alice"]
    tables = [s for s in from_alice if isinstance(s.message, Table)]
    assert len(tables) == 100  # one change, one datagram per session ...
    assert max(len(s.data) for s in tables) < 400  # ... each about one entry
    assert all(s.message.base for s in tables if isinstance(s.message, Table))
    assert all(n.listings.tables[ALICE][nodes[0].info.wg_ip].info == moved for n in nodes[1:])


def _reading(key: str) -> Any:
    from wg_netmanager.model import WgPeerReading

    return WgPeerReading(key, ("203.0.113.9", 50000), (), 1.0, 10, 10)


def test_info_changes_are_rate_limited() -> None:
    lab, alice, _bob = two_nodes()
    mallory = mallory_joins(lab)
    for i in range(20):
        info = mallory.info(wg_port=40000 + i)
        lab.inject(mallory.send(ALICE, wire.Info(info)), source(66), "alice")
    assert alice.drops["rate limited"] == 20 - 4  # the burst, then one per 5 s
    assert alice.sessions[mallory.wg_ip].info.wg_port == 40003


def test_a_name_cannot_change_within_a_session() -> None:
    lab, alice, _bob = two_nodes()
    mallory = mallory_joins(lab)
    lab.inject(mallory.send(ALICE, wire.Info(mallory.info(name="bob"))), source(66), "alice")
    assert alice.sessions[mallory.wg_ip].info.name == mallory.name
    assert alice.drops["info changes identity"] == 1


# --- 5. replay as denial ---------------------------------------------------------------------


def test_replayed_inits_cost_nothing_and_lock_nobody_out() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    bob.handle_timer(0.0)
    (captured,) = lab.collect()
    lab.queue.clear()
    for _ in range(100):  # an outsider replays it, as if from bob, within a second
        lab.inject(captured.data, captured.source, "alice")
    assert alice.drops == {"replay": 99}  # the first copy was answered; no budget spent
    assert len(alice.handshake.pending) == 1
    lab.queue.clear()
    lab.now += 0.1
    bob.handshake.initiate(ALICE, lab.boxes["alice"].admin, lab.now)  # a retry: fresh
    lab.settle()
    assert BOB in alice.sessions and ALICE in bob.sessions
    assert not any(isinstance(s.frame, wire.Cookie) for s in lab.log)


def test_a_flood_in_a_nodes_name_costs_it_one_round_trip_not_its_session() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    spoofed = lab.boxes["bob"].admin
    for i in range(200):  # an insider's distinct INITs, as if from bob
        lab.inject(Member(wg_ip(100 + i % 50)).init(ALICE), spoofed, "alice")
    assert len(alice.handshake.pending) <= INIT_BURST
    assert alice.drops["cookie sent"] == 200 - len(alice.handshake.pending)
    lab.queue.clear()
    bob.handle_timer(lab.now)  # bob's own INIT: a cookie first, then it goes through
    lab.settle()
    assert BOB in alice.sessions and ALICE in bob.sessions
    assert any(isinstance(s.frame, wire.Cookie) and s.dest == spoofed for s in lab.log)
    assert len(alice.handshake.pending) < MAX_PENDING


# --- identity rules --------------------------------------------------------------------------


def test_a_restart_with_the_same_key_from_the_same_address_replaces_the_old_boot_at_once() -> None:
    # A pinned static keeps its key: only its holder can prove it.
    lab, alice, bob = two_nodes()
    lab.crash("bob")
    new = lab.start("bob", 2, private_key=bob.handshake._private)
    new.handle_timer(lab.now)
    lab.settle()
    assert alice.sessions[BOB].boot == new.boot
    assert set(alice.desired_peers()) == {bob.info.public_key}
    assert any(isinstance(e, ev.PeerRestarted) for e in alice.events())


def test_a_later_run_of_the_key_from_another_address_replaces_the_old_boot_at_once() -> None:
    # A run after a crash keeps its key and counts itself (daemon.crash_kept_key);
    # a NAT may have given it another outside port. Only the key's holder can
    # announce a run of that key.
    lab, alice, bob = two_nodes()
    lab.crash("bob")
    new = lab.start("bob", 2, address_octet=22, private_key=bob.handshake._private, boot_number=1)
    new.handle_timer(lab.now)
    lab.settle()
    session = alice.sessions[BOB]
    assert (session.boot, session.boot_number) == (new.boot, 1)
    events = alice.events()
    assert not [e for e in events if isinstance(e, ev.HolderAsked)]
    assert ev.PeerRestarted(ev.PeerRef(BOB, "bob"), bob.info.public_key, True, 1) in events
    assert conflicts(events) == []


@pytest.mark.parametrize("octet", [2, 22], ids=["holder's address", "another address"])
def test_an_earlier_run_of_the_key_is_asked_about_and_refused_while_the_later_one_lives(
    octet: int,
) -> None:
    # Two live processes with one key (a copied key file): the later run keeps
    # the wg IP, whatever address the earlier one calls from.
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2, boot_number=3)
    lab.handshake("alice", "bob")
    assert alice.sessions[BOB].boot_number == 3
    earlier = Member(BOB, "bob", private=bob.handshake._private, boot_number=2)
    (response,) = lab.inject(earlier.init(ALICE), source(octet), "alice")
    lab.inject(earlier.finish(response.data), source(octet), "alice")
    assert any(isinstance(e, ev.HolderAsked) for e in alice.events())
    lab.settle()  # bob answers the holder check
    assert (alice.sessions[BOB].boot, alice.sessions[BOB].boot_number) == (bob.boot, 3)
    assert conflicts(alice.events())


def test_a_boot_number_proves_nothing_without_the_key() -> None:
    # A member that claims a live node's wg IP with its own key and any number
    # is a contender like any other: the holder answers, the claim is refused.
    lab, alice, bob = two_nodes()
    mallory = Member(BOB, "bob", boot_number=wire.MAX_BOOT_NUMBER)
    (response,) = lab.inject(mallory.init(ALICE), source(2), "alice")
    lab.inject(mallory.finish(response.data), source(2), "alice")
    lab.settle()
    assert alice.sessions[BOB].boot == bob.boot and alice.sessions[BOB].boot_number == 0
    assert conflicts(alice.events())


def test_a_static_lists_the_run_it_has_a_session_with() -> None:
    # The boot number reaches the others through its table (pairs.py rule 6);
    # a restart with the key kept is a new version of it.
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    lab.handshake("alice", "bob")
    in_wireguard(alice, bob.info.public_key)
    version = alice.table.version
    assert [e.boot_number for e in alice.table.entries(alice.sessions, alice._wg, 0.0)] == [0]
    lab.crash("bob")
    new = lab.start("bob", 2, private_key=bob.handshake._private, boot_number=1)
    new.handle_timer(lab.now)
    lab.settle()
    in_wireguard(alice, bob.info.public_key)
    assert [e.boot_number for e in alice.table.entries(alice.sessions, alice._wg, 0.0)] == [1]
    assert alice.table.version > version


def test_a_key_that_comes_back_is_listed_only_once_the_statics_wireguard_has_it_again() -> None:
    # bob left (its peer is being removed from alice's WireGuard) and its next
    # run comes back with the same key before alice read `wg show` again: the
    # reading alice holds still shows the key, from before the removal. Were
    # bob listed now, it would set alice up as a peer at once and its first
    # WireGuard handshake would go unanswered (WireGuard retries after 5 s).
    lab, alice, bob = two_nodes()
    in_wireguard(alice, bob.info.public_key)
    lab.run_until(lab.now + T.table_push_delay + 0.01)
    assert bob.sessions[ALICE].peer_ready  # listed: alice's WireGuard has it
    bob.shutdown(lab.now)
    lab.settle()
    assert BOB not in alice.sessions and bob.info.public_key not in alice.desired_peers()
    lab.crash("bob")
    new = lab.start("bob", 2, private_key=bob.handshake._private, boot_number=1)
    new.handle_timer(lab.now)
    lab.run_until(lab.now + T.table_push_delay + 0.01)
    assert BOB in alice.sessions and not new.sessions[ALICE].peer_ready
    alice.update_wg({}, lab.now)  # removed meanwhile
    lab.run_until(lab.now + T.table_push_delay + 0.01)
    assert not new.sessions[ALICE].peer_ready
    in_wireguard(alice, bob.info.public_key)  # set again
    lab.run_until(lab.now + T.table_push_delay + 0.01)
    assert new.sessions[ALICE].peer_ready


def test_a_restart_with_a_new_key_from_the_same_address_waits_for_the_holder() -> None:
    # An address proves nothing (a member on the path can send from it): a
    # new key is asked about like any contender, and taken once the old boot
    # stays silent.
    lab, alice, bob = two_nodes()
    old_key = bob.info.public_key
    lab.crash("bob")
    new = lab.start("bob", 2)
    new.handle_timer(lab.now)
    lab.settle()
    assert alice.sessions[BOB].boot == bob.boot  # asked the old one first
    lab.run_until(lab.now + T.incumbent_timeout + 0.01)
    assert alice.sessions[BOB].boot == new.boot
    assert set(alice.desired_peers()) == {new.info.public_key} != {old_key}
    assert any(isinstance(e, ev.PeerRestarted) for e in alice.events())
    assert conflicts(alice.events()) == []


def test_a_holder_that_left_a_ping_unanswered_is_replaced_at_once() -> None:
    # It failed the holder check already: the nodes of a crashed static
    # were pinging it when its new run (with a new key) calls.
    lab, _alice, bob = two_nodes()
    lab.crash("alice")
    lab.now += T.ping_interval * 1.2
    bob.handle_timer(lab.now)  # a ping to the old run: no answer
    lab.collect()
    lab.queue.clear()
    lab.now += T.incumbent_timeout + 0.01
    new = lab.start("alice")
    new.call_back({BOB: lab.boxes["bob"].admin}, lab.now)
    lab.settle()
    assert bob.sessions[ALICE].boot == new.boot


def test_a_new_boot_from_another_address_waits_for_the_holder() -> None:
    lab, alice, bob = two_nodes()
    lab.crash("bob")
    moved = lab.start("bob", 2, address_octet=22)
    moved.handle_timer(lab.now)
    lab.settle()
    assert alice.sessions[BOB].boot == bob.boot  # asked the old one first
    lab.run_until(lab.now + T.incumbent_timeout + 0.01)
    assert alice.sessions[BOB].boot == moved.boot  # which did not answer
    assert conflicts(alice.events()) == []


def test_claiming_the_receivers_own_wg_ip_is_a_conflict() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    mallory = Member(ALICE, name="alice")
    (response,) = lab.inject(mallory.init(ALICE), source(66), "alice")
    lab.inject(mallory.finish(response.data), source(66), "alice")
    assert not alice.sessions
    (said,) = conflicts(alice.events())
    assert "198.51.100.66" in said


def test_a_copied_private_key_under_another_wg_ip_is_refused() -> None:
    lab, alice, _bob = two_nodes()
    clone = Member(wg_ip(3), name="clone", private=lab.boxes["bob"].node.handshake._private)
    (response,) = lab.inject(clone.init(ALICE), source(3), "alice")
    lab.inject(clone.finish(response.data), source(3), "alice")
    assert wg_ip(3) not in alice.sessions
    (said,) = conflicts(alice.events())
    assert "WireGuard key" in said


def test_a_new_handshake_of_the_same_boot_renews_the_keys_only() -> None:
    lab, alice, bob = two_nodes()
    session = alice.sessions[BOB]
    old_index = session.keys.local_index
    alice.events()
    bob.handshake.initiate(ALICE, lab.boxes["alice"].admin, lab.now)
    lab.settle()
    assert alice.sessions[BOB] is session and session.keys.local_index != old_index
    assert session.previous is not None and session.previous.local_index == old_index
    assert not [e for e in alice.events() if isinstance(e, ev.PeerRestarted | ev.PeerConnected)]
    lab.run_until(lab.now + 5 * T.ping_interval)  # and it keeps working
    assert alice.sessions[BOB].last_heard > lab.now - 2 * T.ping_interval


def test_handshakes_started_by_both_sides_at_once_end_in_one_session_each() -> None:
    lab, alice, bob = two_nodes()
    alice.handshake.initiate(BOB, lab.boxes["bob"].admin, lab.now)
    bob.handshake.initiate(ALICE, lab.boxes["alice"].admin, lab.now)
    lab.settle()
    assert alice.drops.get("crossed handshake") == 1 or bob.drops.get("crossed handshake") == 1
    # The higher side kept its own INIT going until the other's handshake finished.
    assert not alice.handshake.initiating(BOB) and not bob.handshake.initiating(ALICE)
    assert not alice.handshake.pending and not bob.handshake.pending
    lab.run_until(lab.now + 5 * T.ping_interval)
    assert BOB in alice.sessions and ALICE in bob.sessions
    assert alice.sessions[BOB].last_heard > lab.now - 2 * T.ping_interval


def test_a_restarted_peer_is_told_its_session_is_stale_and_comes_back_soon() -> None:
    lab, alice, bob = two_nodes()
    lab.crash("alice")  # the static restarts: bob's session keys mean nothing to it
    new = lab.start("alice")
    lab.now += T.ping_interval * 1.2
    bob.handle_timer(lab.now)
    lab.settle()
    lab.run_until(lab.now + T.incumbent_timeout + 0.01)  # its new key: the holder check
    assert alice.info.wg_ip in bob.sessions and bob.sessions[ALICE].boot == new.boot
    assert BOB in new.sessions
    assert any(isinstance(s.frame, wire.Stale) for s in lab.log)


def test_sessions_per_source_address_are_capped() -> None:
    from wg_netmanager.core.node import MAX_SESSIONS_PER_SOURCE

    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    behind_one_nat = ("203.0.113.7", 4000)
    for i in range(MAX_SESSIONS_PER_SOURCE + 3):
        member = Member(wg_ip(10 + i), name=f"m{i}")
        (response,) = lab.inject(member.init(ALICE), behind_one_nat, "alice")
        lab.inject(member.finish(response.data), behind_one_nat, "alice")
        lab.now += 1.0  # within every rate limit
    assert len(alice.sessions) == MAX_SESSIONS_PER_SOURCE
    assert alice.drops["session cap"] == 3


def test_names_from_the_wire_obey_the_local_rule() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    for name in ("bob\u200b", "b\u043eb", "bob bob", "x" * 33):  # zero-width, Cyrillic o, space
        mallory = Member(wg_ip(66), name=name)
        (response,) = lab.inject(mallory.init(ALICE), source(66), "alice")
        lab.inject(mallory.finish(response.data), source(66), "alice")
    assert not alice.sessions and alice.drops["malformed"] == 4


@pytest.mark.parametrize("claimed", ["8.8.8.8", "10.1.1.0", "10.1.1.255", "10.1.2.1"])
def test_a_wg_ip_outside_the_subnet_is_refused(claimed: str) -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    mallory = Member(IPv4Address(claimed))
    assert lab.inject(mallory.init(ALICE), source(66), "alice") == []
    assert alice.drops == {"outside subnet": 1}


def test_table_entries_outside_the_subnet_are_refused() -> None:
    lab, alice, bob = two_nodes()
    entries = [
        TableEntry(Member(IPv4Address(ip)).info(), None, None, 0.0)
        for ip in ("8.8.8.8", "10.1.2.1")
    ]
    good = Member(wg_ip(50), name="good").info()
    alice_session = bob.sessions[ALICE]
    # What alice would say, sealed with alice's own keys (the test's privilege).
    table = Table(alice.table.version + 1, 0, 1, (*entries, TableEntry(good, None, None, 0.0)))
    keys = alice.sessions[BOB].keys
    counter = keys.next_counter()
    header = wire.Transport.make_header(ALICE, BOB, keys.remote_index, counter)
    body = noise.encrypt(keys.send, counter, header, wire.encode_message(table))
    frame = wire.Transport(ALICE, BOB, keys.remote_index, counter, body, header)
    lab.inject(wire.seal_frame(ADMIN_KEY, frame), lab.boxes["alice"].admin, "bob")
    assert bob.drops == {"outside subnet": 2}
    assert set(bob.listings.tables[ALICE]) == {good.wg_ip}
    assert alice_session is bob.sessions[ALICE]


def test_a_contenders_datagrams_do_not_count_later_as_replays() -> None:
    lab, alice, _bob = two_nodes()
    lab.crash("bob")
    moved = lab.start("bob", 2, address_octet=22)
    moved.handle_timer(lab.now)
    lab.settle()
    assert alice.sessions[BOB].contender is not None  # the holder is being asked
    lab.now += 0.5
    moved.handle_timer(lab.now)
    moved._ping(moved.sessions[ALICE], lab.now)
    (ping,) = [s for s in lab.collect() if isinstance(s.message, wire.Ping)]
    lab.settle()  # dropped: not a session yet
    lab.run_until(lab.now + T.incumbent_timeout)
    assert alice.sessions[BOB].boot == moved.boot  # the takeover
    before = alice.drops.get("replay", 0)
    assert lab.inject(ping.data, ping.source, "alice") == []
    assert alice.drops["replay"] == before + 1


def test_a_refused_node_waits_before_it_asks_again() -> None:
    lab, alice, bob = two_nodes()
    lab.run_until(2.0)
    second = lab.start("bob-second", 2, address_octet=22)  # bob's wg IP, bob alive
    lab.run_until(lab.now + 10 * T.incumbent_timeout)
    assert alice.sessions[BOB].boot == bob.boot
    # Refused once, then again at the slow pace only, not in a tight loop.
    assert alice.drops["conflict"] <= 2 + 10 * T.incumbent_timeout / T.hello_retry_slow
    assert conflicts(second.events())


# --- names ------------------------------------------------------------------------------------


def named(lab: Lab, box: str, octet: int, name: str, **kwargs: Any) -> Node:
    """A node in box ``box`` that calls itself ``name`` (another box's name, say)."""
    node = lab.start(box, octet, **kwargs)
    node.info = replace(node.info, name=name)
    return node


def test_a_member_claiming_a_live_nodes_name_is_refused_and_told() -> None:
    lab, alice, bob = two_nodes()
    mallory = Member(wg_ip(66), name="BOB")  # names compare without case, as DNS does
    (response,) = lab.inject(mallory.init(ALICE), source(66), "alice")
    lab.inject(mallory.finish(response.data), source(66), "alice")
    assert mallory.wg_ip not in alice.sessions
    (said,) = conflicts(alice.events())
    assert "CONFLICT" in said and "name 'BOB'" in said and bob.info.public_key[:8] in said
    refusals = [m for s in lab.log if s.sender == "alice" and (m := mallory.read(s.data))]
    assert refusals == [wire.Refused.of(alice.sessions[BOB].info)]
    assert alice.drops["conflict"] == 1
    assert alice.names()["bob"] == (BOB,)  # one address: the holder's
    assert (mallory.wg_ip, mallory.boot) not in alice.handshake.barred  # only its name is wrong


def test_a_second_node_with_a_used_name_is_refused_and_says_so_in_one_line() -> None:
    lab, alice, bob = two_nodes()
    second = named(lab, "second", 7, "bob")
    lab.run_until(lab.now + 3.0)
    assert wg_ip(7) not in alice.sessions and alice.sessions[BOB].boot == bob.boot
    (theirs,) = conflicts(second.events())
    assert theirs.startswith("CONFLICT: alice (10.1.1.1) refuses us: our name 'bob' is in use")
    assert "give this node another name" in theirs and "\n" not in theirs
    (ours,) = conflicts(alice.events())
    assert "claims the name 'bob'" in ours
    # It asks again only at the slow pace (each ask is refused while bob lives).
    lab.run_until(lab.now + 10 * T.hello_retry_slow)
    assert alice.drops["conflict"] <= 2 + 10


def test_a_refused_claimant_of_a_name_gets_in_once_the_holder_is_gone() -> None:
    lab, alice, _bob = two_nodes()
    second = named(lab, "second", 7, "bob")
    lab.run_until(lab.now + 3.0)
    assert wg_ip(7) not in alice.sessions
    lab.crash("bob")  # silent: alice drops it after dead_after
    lab.run_until(lab.now + T.dead_after + 2 * T.hello_retry_slow)
    assert BOB not in alice.sessions
    assert alice.sessions[wg_ip(7)].boot == second.boot
    assert alice.names()["bob"] == (wg_ip(7),)


def test_a_restart_with_the_same_wg_ip_and_name_is_not_a_conflict() -> None:
    lab, alice, _bob = two_nodes()
    lab.crash("bob")
    again = lab.start("bob", 2)  # a new key and boot, from the same address
    lab.run_until(lab.now + 3.0)
    assert alice.sessions[BOB].boot == again.boot
    assert conflicts(alice.events()) == [] and conflicts(again.events()) == []


def test_a_node_calling_a_static_by_its_own_name_is_refused_by_it() -> None:
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    second = named(lab, "second", 7, "alice")
    lab.run_until(3.0)
    assert not alice.sessions and not second.sessions  # not even for a moment on its side
    (ours,) = conflicts(alice.events())
    assert "claims the name 'alice'" in ours
    (theirs,) = conflicts(second.events())
    assert "refuses us: our name 'alice' is in use by 10.1.1.1" in theirs
    assert alice.names() == {"alice": (ALICE,)}


def test_a_name_held_in_another_statics_table_is_refused() -> None:
    lab = Lab({"alice": 1, "carol": 3})
    alice, carol = lab.start("alice"), lab.start("carol")
    lab.run_until(1.0)
    bob = lab.start("bob", 2)
    lab.run_until(2.0)
    in_wireguard(carol, alice.info.public_key, bob.info.public_key)
    lab.run_until(3.0)  # carol's table, listing bob, reaches alice
    assert BOB in alice.listings.tables[wg_ip(3)]
    alice._forget_session(BOB)  # not a session of alice's any more: only carol's word
    mallory = Member(wg_ip(66), name="bob")
    (response,) = lab.inject(mallory.init(ALICE), source(66), "alice")
    lab.inject(mallory.finish(response.data), source(66), "alice")
    assert mallory.wg_ip not in alice.sessions
    assert any("claims the name 'bob'" in c for c in conflicts(alice.events()))
