"""What the fuzzers of test_fuzz_node.py found, each as the smallest test that shows it.

Each test states the rule it checks and fails while the core breaks it. The
fuzzers check these rules too; they leave out only ``unaccepted`` (see there)
and, in ``first_probe``, the first probe to each address a pair peer names
(the price of finding a LAN, once per pair session).
"""

from __future__ import annotations

import os

from tests.helpers import QUICK_TIMERS, SHARED_KEY, wg_ip
from tests.lab import Lab
from tests.member import Member, source
from wg_netmanager import noise, wire
from wg_netmanager.core.events import DropReason
from wg_netmanager.core.handshake import PROLOGUE
from wg_netmanager.model import WgPeerReading
from wg_netmanager.wire import Ping, Pong, Ready

T = QUICK_TIMERS
ALICE, BOB = wg_ip(1), wg_ip(2)
ELSEWHERE = ("203.0.113.66", 6666)


class Responder(Member):
    """A member that also answers INITs (message 2, in its own name and key)."""

    def respond(self, init: wire.Init) -> bytes:
        state = noise.Handshake(
            initiator=False,
            static_private=self.private,
            psk=wire.derive_psk(SHARED_KEY),
            prologue=PROLOGUE,
            random_bytes=os.urandom,
        )
        state.read_message(init.noise)
        message = state.write_message(wire.encode_hello(self.info(), self.boot))
        return self.seal(wire.Response(self.wg_ip, init.sender, 7, init.index, message))


def test_a_datagram_dropped_while_its_keys_were_a_contenders_cannot_be_replayed_later() -> None:
    # Rule: a verbatim replay changes nothing. bob restarts at another
    # address; alice asks the old holder first and meanwhile drops what the
    # new boot sends over its contender keys (no STALE). Those counters are
    # never marked in the keys' replay window, so once the contender takes
    # over, an outsider's copy of such a datagram is accepted: a Ping here
    # refreshes last_heard and is answered.
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    lab.start("bob", 2)
    lab.handshake("alice", "bob")
    lab.crash("bob")
    moved = lab.start("bob", 2, address_octet=22)
    moved.handle_timer(lab.now)
    lab.settle()
    contender = alice.sessions[BOB].contender
    assert contender is not None and ALICE in moved.sessions
    moved._ping(moved.sessions[ALICE], lab.now)
    (ping,) = lab.collect()
    assert isinstance(ping.message, wire.Ping)
    assert lab.inject(ping.data, ping.source, "alice") == []  # a contender's: waits
    lab.run_until(lab.now + T.incumbent_timeout + 0.01)  # the old holder is silent
    session = alice.sessions[BOB]
    assert session.boot == moved.boot and session.keys is contender.keys
    lab.queue.clear()
    heard, replays = session.last_heard, alice.drops.get(DropReason.REPLAY, 0)
    lab.now += 0.5
    answers = lab.inject(ping.data, ping.source, "alice")  # an outsider's copy
    assert alice.drops.get(DropReason.REPLAY, 0) == replays + 1
    assert answers == [] and session.last_heard == heard


def test_a_live_holders_wg_ip_cannot_be_taken_from_its_own_address() -> None:
    # Rule: a live holder keeps its wg IP (a member speaks only for itself).
    # A member that can send from the holder's address and read what is sent
    # there (on the path to the holder, or in control of its NAT) is not the
    # holder: only a new boot with the holder's own key from its address is
    # a restart taken at once (handshake.py rule 5). With a key of its own
    # it is a contender like any other (bob is asked first), or it would take
    # bob's wg IP while bob is alive and bob's traffic would go to mallory.
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    lab.handshake("alice", "bob")
    mallory = Member(BOB, name="bob")
    bobs_address = lab.boxes["bob"].admin
    answers = lab.inject(mallory.init(ALICE), bobs_address, "alice")
    (response,) = [a for a in answers if isinstance(a.frame, wire.Response)]
    lab.queue.clear()  # (bob would drop it: no such handshake)
    lab.inject(mallory.finish(response.data), bobs_address, "alice")
    assert alice.sessions[BOB].info.public_key == bob.info.public_key
    assert bob.info.public_key in alice.desired_peers()


def test_a_response_that_does_not_authenticate_leaves_the_handshake_usable() -> None:
    # Rule: a frame in another member's name, without its keys, changes
    # nothing. A RESPONSE is taken from any address; one in alice's name
    # whose Noise message does not authenticate (random bytes on the index
    # of bob's INIT, which every member can read) is dropped, and alice's
    # real RESPONSE is still taken (or who sees bob's INITs could keep him
    # from ever reaching alice).
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    bob.handle_timer(lab.now)
    (init,) = lab.collect()
    frame = init.frame
    assert isinstance(frame, wire.Init)
    garbage = os.urandom(noise.MESSAGE_2 + 100)
    forged = Member.seal(wire.Response(ALICE, BOB, 7, frame.index, garbage))
    lab.inject(forged, ELSEWHERE, "bob")
    assert bob.drops == {DropReason.BAD_HANDSHAKE: 1}
    lab.settle()  # bob's INIT reaches alice, her RESPONSE reaches bob
    assert ALICE in bob.sessions and BOB in alice.sessions, bob.drops


def test_a_finish_that_does_not_authenticate_leaves_the_handshake_usable() -> None:
    # The same rule at the responder: a FINISH in bob's name from bob's
    # address, random bytes on the index of alice's RESPONSE, is dropped;
    # bob's real FINISH still finds the handshake (else bob would hold a
    # session that alice does not know).
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    bob.handle_timer(lab.now)
    lab.step()  # bob's INIT to alice; her RESPONSE is on its way back
    (response,) = lab.queue
    frame = response.frame
    assert isinstance(frame, wire.Response)
    garbage = os.urandom(noise.MESSAGE_3 + 100)
    forged = Member.seal(wire.Finish(BOB, ALICE, frame.index, garbage))
    lab.inject(forged, lab.boxes["bob"].admin, "alice")
    lab.settle()
    assert BOB in alice.sessions and ALICE in bob.sessions, alice.drops


def test_an_init_in_anothers_name_does_not_cancel_a_handshake_in_progress() -> None:
    # The same rule for message 1, which names nobody's key: any member can
    # write one in alice's name (and an outsider can replay one of alice's
    # once bob's record of it expired). bob, calling alice with the higher wg
    # IP, may take it for alice calling him at the same moment (rule 7) and
    # answer it, but keeps his own INIT going: alice's real RESPONSE must
    # still find it. Dynamic nodes usually have higher wg IPs than the
    # statics they call.
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    bob.handle_timer(lab.now)
    lab.collect()  # bob's INIT, on its way to alice
    mallory = Member(ALICE, name="alice")  # alice's wg IP; message 1 needs no key
    lab.inject(mallory.init(BOB), ELSEWHERE, "bob")
    lab.settle()
    assert ALICE in bob.sessions and BOB in alice.sessions, bob.drops


def test_a_member_cannot_make_a_node_probe_addresses_it_names_again_and_again() -> None:
    # Rule: no answer to an address nobody proved is larger than what it
    # answers (no amplifier). A pair peer's info names up to 8 LAN addresses,
    # any addresses, and one small message from the peer (a Ready of a new
    # attempt, leaving) starts a new attempt of the pair path: that attempt
    # must not probe them all again (one datagram in, eight out, to
    # addresses of its choice). Each is probed once per pair session, again
    # only once it answered its own probe (pairs.py rule 7).
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    bob = lab.start("bob", 2)
    lab.handshake("alice", "bob")
    mallory = Member(wg_ip(66))
    targets = tuple((f"192.0.2.{i}", 53) for i in range(1, wire.MAX_LOCAL_ENDPOINTS + 1))
    hello = wire.encode_hello(mallory.info(local_endpoints=targets), mallory.boot)

    def join(name: str) -> None:
        box = lab.boxes[name]
        (response,) = lab.inject(mallory.init(box.wg_ip), source(66), name)
        lab.inject(mallory.finish(response.data, hello), source(66), name)

    join("alice")
    # alice's WireGuard has them both: its table lists them (mallory's outside unknown).
    readings = {
        bob.info.public_key: WgPeerReading(bob.info.public_key, ("203.0.113.2", 1), (), 1.0, 1, 1),
        mallory.public_key: WgPeerReading(mallory.public_key, None, (), None, 0, 0),
    }
    alice.update_wg(readings, lab.now)
    lab.run_until(lab.now + 0.5)
    join("bob")  # a pair session: bob probes the addresses mallory named
    lab.run_until(lab.now + 1.0)
    path = bob.pairs.paths[mallory.wg_ip]
    lab.queue.clear()
    ready = mallory.send(BOB, Ready(path.peer_attempt + 1, leaving=True))
    answers = lab.inject(ready, source(66), "bob")
    probes = [a for a in answers if a.dest in targets]
    assert sum(len(a.data) for a in probes) <= len(ready), [a.dest for a in probes]


def test_a_finish_goes_only_where_the_init_went() -> None:
    # Rule: no answer to an address nobody proved is larger than what it
    # answers. A FINISH carries the initiator's hello: with its local
    # addresses, more than a terse RESPONSE. So it goes where the INIT went,
    # not wherever the RESPONSE came from. Here mallory answers for a static
    # that is down (not pinned: that much any member may), from a third
    # party's address.
    lab = Lab({"alice": 1})
    lab.start("alice")
    lab.crash("alice")
    lan = [f"198.51.100.{i}" for i in range(100, 100 + wire.MAX_LOCAL_ENDPOINTS)]
    bob = lab.start("bob", 2)
    bob.set_local_addresses(lan, lab.now)
    bob.handle_timer(lab.now)
    (init,) = [s for s in lab.collect() if isinstance(s.frame, wire.Init)]
    frame = init.frame
    assert isinstance(frame, wire.Init)
    mallory = Responder(ALICE, name="a")
    response = mallory.respond(frame)
    answers = lab.inject(response, ELSEWHERE, "bob")
    there = [a for a in answers if a.dest == ELSEWHERE]
    assert sum(len(a.data) for a in there) <= len(response), [a.frame for a in there]


def refused_bob() -> Lab:
    """mallory holds bob's wg IP at alice; bob comes and is refused (mallory
    answers the holder check)."""
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    mallory = Member(BOB, name="bob")
    (response,) = lab.inject(mallory.init(ALICE), source(66), "alice")
    lab.inject(mallory.finish(response.data), source(66), "alice")
    bob = lab.start("bob", 2)
    lab.queue.clear()
    bob.handle_timer(lab.now)
    for _ in range(3):  # bob's handshake; then alice asks the holder, mallory, ...
        lab.step()
    (ping,) = [m for s in lab.queue if s.dest == source(66) and (m := mallory.read(s.data))]
    assert isinstance(ping, Ping)
    lab.inject(mallory.send(ALICE, Pong(ping.seq)), source(66), "alice")  # ... who answers
    assert alice.drops[DropReason.CONFLICT] == 1
    assert alice.sessions[BOB].info.public_key == mallory.public_key
    return lab


def test_a_refused_node_calls_again_no_faster_than_its_backoff() -> None:
    # A refused node forgets the session and calls again at once (the static
    # target's backoff starts over), is refused again, and so on: one
    # handshake per round trip, forever, each costing the static two DH
    # operations.
    lab = refused_bob()
    start = len(lab.log)
    for _ in range(20):  # timers due now fire, as the daemon fires them
        lab.fire_timers()
    inits = [s for s in lab.log[start:] if s.sender == "bob" and isinstance(s.frame, wire.Init)]
    assert len(inits) <= 2, len(inits)


def test_a_refused_claimant_gets_in_once_the_holder_is_gone() -> None:
    # A boot refused for a conflict is barred for dead_after (handshake.py
    # rule 4). Its refused retries must not renew the bar: a node keeps
    # trying, as every node does, and must get in once the holder left, or an
    # insider who once took a member's wg IP first (while a static
    # restarted, say) would keep that member out until the member restarts.
    lab = Lab({"alice": 1})
    alice = lab.start("alice")
    mallory, bob = Member(BOB, name="bob"), Member(BOB, name="bob")  # bob: honest, by hand
    (response,) = lab.inject(mallory.init(ALICE), source(66), "alice")
    lab.inject(mallory.finish(response.data), source(66), "alice")
    lab.queue.clear()
    (response,) = lab.inject(bob.init(ALICE), source(2), "alice")
    answers = lab.inject(bob.finish(response.data), source(2), "alice")
    (ping,) = [m for s in answers if (m := mallory.read(s.data))]  # alice asks the holder ...
    assert isinstance(ping, Ping)
    lab.inject(mallory.send(ALICE, Pong(ping.seq)), source(66), "alice")  # ... who answers
    assert alice.drops[DropReason.CONFLICT] == 1
    # mallory falls silent; bob calls again every second, as its backoff lets it.
    for _ in range(int(4 * T.dead_after)):
        lab.now += 1.0  # (not run_until: it does not return while no node has a timer)
        lab.fire_timers()
        (response,) = lab.inject(bob.init(ALICE), source(2), "alice")
        lab.inject(bob.finish(response.data), source(2), "alice")
    assert BOB in alice.sessions and alice.sessions[BOB].boot == bob.boot, alice.drops
