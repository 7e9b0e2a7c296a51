"""``Node.reconfigure``: network.yaml read again while running (a reload).

Timers apply at once, static peers come and go, and every session that
stays is left alone: same boot, same session object, no datagram to it.
"""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from tests.helpers import QUICK_TIMERS, static_target, wg_ip
from tests.lab import Lab


def meshed(*statics: str) -> Lab:
    """Statics alpha (1) and beta (2), bob (16) dynamic, all in session."""
    lab = Lab({"alpha": 1, "beta": 2})
    for name in statics:
        lab.start(name)
    lab.start("bob", 16)
    lab.fire_timers()
    for name in statics:
        lab.handshake("bob", name)
    return lab


def test_the_same_configuration_changes_nothing() -> None:
    lab = meshed("alpha", "beta")
    bob = lab.boxes["bob"].node
    sessions, version = dict(bob.sessions), bob.state_version
    bob.reconfigure(QUICK_TIMERS, [static_target(1), static_target(2)], lab.now)
    assert bob.datagrams_to_send() == []
    assert bob.sessions == sessions and bob.state_version == version


def test_new_timers_apply_at_once() -> None:
    lab = meshed("alpha")
    lab.run_until(0.2)
    bob = lab.boxes["bob"].node
    faster = replace(QUICK_TIMERS, ping_interval=0.25)
    bob.reconfigure(faster, [static_target(1), static_target(2)], lab.now)
    assert bob.timers is faster and bob.handshake.timers is faster and bob.pairs.timers is faster
    # The next ping to alpha comes within the new interval, not the old one.
    assert bob.sessions[wg_ip(1)].next_ping <= lab.now + 0.25 * 1.1


def test_a_new_keepalive_reaches_the_wireguard_peers() -> None:
    lab = meshed("alpha", "beta")
    lab.handshake("alpha", "beta")
    alpha = lab.boxes["alpha"].node
    version = alpha.state_version
    alpha.reconfigure(replace(QUICK_TIMERS, keepalive=7), [static_target(1), static_target(2)], 0)
    beta_key = alpha.sessions[wg_ip(2)].info.public_key
    assert alpha.desired_peers()[beta_key].persistent_keepalive == 7
    assert alpha.state_version > version  # the daemon applies it


def test_a_removed_static_gets_a_bye_and_the_others_stay() -> None:
    lab = meshed("alpha", "beta")
    bob = lab.boxes["bob"].node
    alpha_session = bob.sessions[wg_ip(1)]
    bob.reconfigure(QUICK_TIMERS, [static_target(1)], lab.now)
    sent = lab.collect()
    assert [(s.dest, type(s.message).__name__) for s in sent] == [(("198.51.100.2", 50502), "Bye")]
    lab.settle()
    assert wg_ip(2) not in bob.sessions and wg_ip(2) not in bob.statics
    assert wg_ip(16) not in lab.boxes["beta"].node.sessions  # beta dropped bob at once
    assert bob.sessions[wg_ip(1)] is alpha_session
    # Long after: beta is never greeted again, alpha's session lives on.
    lab.run_until(lab.now + 10)
    assert wg_ip(2) not in bob.sessions and bob.sessions[wg_ip(1)] is alpha_session


def test_an_added_static_is_greeted_at_once() -> None:
    lab = Lab({"alpha": 1, "beta": 2})
    lab.start("alpha")
    lab.start("beta")
    bob = lab.start("bob", 16)
    bob.reconfigure(QUICK_TIMERS, [static_target(1)], lab.now)  # bob knows only alpha
    lab.fire_timers()
    lab.handshake("bob", "alpha")
    assert wg_ip(2) not in bob.sessions
    alpha_session = bob.sessions[wg_ip(1)]
    lab.run_until(5.0)
    bob.reconfigure(QUICK_TIMERS, [static_target(1), static_target(2)], lab.now)
    lab.fire_timers()  # no waiting for a backoff: the hello goes now
    assert wg_ip(2) in bob.sessions and wg_ip(16) in lab.boxes["beta"].node.sessions
    assert bob.sessions[wg_ip(1)] is alpha_session


def test_a_static_that_moved_keeps_its_session_and_is_reached_at_its_new_place() -> None:
    lab = meshed("alpha", "beta")
    lab.handshake("alpha", "beta")
    alpha = lab.boxes["alpha"].node
    session, version = alpha.sessions[wg_ip(2)], alpha.state_version
    moved = replace(static_target(2), host="beta.example.org", wg_port=51820, address="192.0.2.2")
    alpha.reconfigure(QUICK_TIMERS, [static_target(1), moved], lab.now)
    assert alpha.sessions[wg_ip(2)] is session
    assert alpha.statics[wg_ip(2)].host == "beta.example.org"
    assert alpha.desired_peers()[session.info.public_key].endpoint == ("192.0.2.2", 51820)
    assert alpha.state_version > version  # the daemon sets WireGuard's endpoint


@pytest.mark.parametrize(
    ("who", "statics"),
    [("bob", [1, 16]), ("alpha", [2])],  # bob listed as a static; alpha no longer listed
)
def test_our_own_role_cannot_change_while_running(who: str, statics: list[int]) -> None:
    node = meshed("alpha").boxes[who].node
    with pytest.raises(ValueError, match="whether this node is static"):
        node.reconfigure(QUICK_TIMERS, [static_target(octet) for octet in statics], 0.0)
