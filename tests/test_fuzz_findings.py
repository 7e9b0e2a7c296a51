"""What the fuzzers of test_fuzz_node.py found, each as the smallest test that shows it.

Each test states the rule it checks; the fuzzers leave exactly these cases
out (see ``unaccepted`` and the insider's notes there), so that they keep
looking for new ones.
"""

from __future__ import annotations

from tests.helpers import QUICK_TIMERS, wg_ip
from tests.lab import Lab
from wg_netmanager import wire
from wg_netmanager.core.events import DropReason

T = QUICK_TIMERS
ALICE, BOB = wg_ip(1), wg_ip(2)


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
