"""The pair-path machine alone, through a recording ``PairHost``.

Every row of ``TRANSITIONS`` is taken by one of the scenarios below, each
through the machine's real inputs (probes, readies, ``wg show`` readings,
timers); the last test checks that together they walk the whole table and
nothing outside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TypeVar

import pytest
from msgspec.structs import replace

from wg_netmanager import wire
from wg_netmanager.core import events as ev
from wg_netmanager.core.pair_path import TRANSITIONS, PathState, Trigger
from wg_netmanager.core.pairs import MET_PAIR_HELLO_RETRY, Pairs
from wg_netmanager.core.sessions import Keys, Session
from wg_netmanager.core.timers import Timers
from wg_netmanager.keys import to_b64
from wg_netmanager.model import Endpoint, WgPeerReading
from wg_netmanager.wire import NodeInfo, TableEntry

S, T = PathState, Trigger
TIMERS = Timers()
ME = NodeInfo(IPv4Address("10.1.1.3"), "charlie", to_b64(b"c" * 32), 50003, 50503)
PEER = IPv4Address("10.1.1.4")  # higher than ours: we are the side that re-probes a lost LAN
_E = TypeVar("_E")

PEER_LAN: Endpoint = ("192.168.1.3", 50504)
PEER_OUTSIDE: Endpoint = ("198.51.100.3", 40004)  # behind our NAT (charlie and delta)
OTHER_OUTSIDE: Endpoint = ("198.51.100.4", 40002)  # behind another NAT (alpha's firewall)


@dataclass
class FakeHost:
    """A node as ``Pairs`` sees it, with every request recorded."""

    info: NodeInfo = ME
    visible_endpoint: Endpoint | None = ("198.51.100.3", 40003)
    sessions: dict[IPv4Address, Session] = field(default_factory=dict)
    entries: dict[IPv4Address, TableEntry] = field(default_factory=dict)
    readings: dict[str, WgPeerReading] = field(default_factory=dict)
    sent: list[tuple[wire.Message, Endpoint]] = field(default_factory=list)
    relayed: list[wire.Message] = field(default_factory=list)
    events: list[ev.Event] = field(default_factory=list)
    forgotten: list[IPv4Address] = field(default_factory=list)
    relayed_ips: list[IPv4Address] = field(default_factory=list)  # reached via a static
    hellos: list[tuple[IPv4Address, float]] = field(default_factory=list)

    def listed(self, wg_ip: IPv4Address) -> TableEntry | None:
        return self.entries.get(wg_ip)

    def relayed_peers(self) -> list[IPv4Address]:
        return self.relayed_ips

    def via_gateway(self, wg_ip: IPv4Address) -> bool:
        return False

    def reading(self, public_key: str) -> WgPeerReading | None:
        return self.readings.get(public_key)

    def gateway_rtt(self) -> float:
        return 0.01

    def send(self, message: wire.Message, addr: Endpoint, to: IPv4Address) -> None:
        self.sent.append((message, addr))

    def send_relayed(self, message: wire.Message, to: IPv4Address) -> bool:
        self.relayed.append(message)
        return True

    def say_hello(self, addr: Endpoint, to: IPv4Address, now: float) -> None:
        self.hellos.append((to, now))

    def ping(self, session: Session, now: float) -> None:
        session.record_ping(now)

    def forget(self, wg_ip: IPv4Address) -> None:
        self.forgotten.append(wg_ip)
        del self.sessions[wg_ip]

    def changed(self, now: float) -> None:
        pass

    def emit(self, event: ev.Event) -> None:
        self.events.append(event)

    def ref(self, wg_ip: IPv4Address) -> ev.PeerRef:
        return ev.PeerRef(wg_ip, "delta")

    def events_of(self, kind: type[_E]) -> list[_E]:
        return [e for e in self.events if isinstance(e, kind)]

    def random_bytes(self, size: int) -> bytes:
        return bytes(size)

    def jitter(self, interval: float) -> float:
        return interval

    def moves(self) -> list[tuple[str, str, str]]:
        return [
            (e.old, e.trigger, e.new) for e in self.events if isinstance(e, ev.PathStateChanged)
        ]


class PairLab:
    """One pair path from charlie's side, with time under the test's control."""

    def __init__(self, lan: bool = True, outside: Endpoint | None = PEER_OUTSIDE) -> None:
        self.host = FakeHost()
        self.now = 100.0
        locals_ = (PEER_LAN,) if lan else ()
        info = NodeInfo(PEER, "delta", to_b64(b"d" * 32), 50004, 50504, locals_)
        self.key = info.public_key
        self.host.sessions[PEER] = Session(
            info=info,
            boot=b"b" * 8,
            addr=(str(PEER), 50504),
            keys=Keys(1, 2, bytes(32), bytes(32)),
            established=self.now,
            last_heard=self.now,
            pinger=False,
        )
        self.host.entries[PEER] = TableEntry(info, outside, None, 0.5)
        self.pairs = Pairs(self.host, TIMERS)
        self.pairs.opened(PEER, self.now)

    @property
    def path_state(self) -> PathState:
        return self.pairs.paths[PEER].state

    @property
    def session(self) -> Session:
        return self.host.sessions[PEER]

    def later(self, seconds: float) -> None:
        self.now += seconds
        self.pairs.handle_timer(self.now)

    def wg(self, handshake_age: float | None = None, rx: int = 0, tx: int = 0) -> None:
        """``wg show`` has the peer (with a handshake ``handshake_age`` ago)."""
        self.host.readings[self.key] = WgPeerReading(self.key, PEER_LAN, (), handshake_age, rx, tx)
        self.pairs.on_wg(self.now)

    def wg_gone(self) -> None:
        self.host.readings.pop(self.key, None)
        self.pairs.on_wg(self.now)

    def probe_answered(self) -> None:
        token = self.pairs.paths[PEER].token_for(PEER_LAN)
        self.pairs.on_probe_ack(self.session, token, PEER_LAN, self.now)

    def peer_ready(self, direct: bool = False) -> None:
        attempt = self.pairs.paths[PEER].peer_attempt + 1
        self.pairs.on_ready(self.session, attempt, direct, self.now)

    def peer_moves(self) -> None:
        """The static's table shows the peer at new LAN addresses (it roamed)."""
        moved = replace(self.session.info, local_endpoints=(("192.168.7.3", 50504),))
        entry = self.host.entries[PEER]
        self.host.entries[PEER] = replace(entry, info=moved)
        self.pairs.prune(self.now)

    def installing_nat(self) -> None:
        """No LAN to probe, behind another NAT: its outside endpoint at once."""
        assert self.path_state is S.INSTALLING and self.pairs.paths[PEER].kind == "nat"

    def installing(self) -> None:
        self.probe_answered()
        assert self.path_state is S.INSTALLING

    def punching(self) -> None:
        self.installing()
        self.wg()  # installed (no handshake yet)
        self.peer_ready()
        assert self.path_state is S.PUNCHING

    def direct(self) -> None:
        self.punching()
        self.wg(handshake_age=0.0)
        assert self.path_state is S.DIRECT


# --- one scenario per rule; each returns the lab it ends in --------------------


def lan_found() -> PairLab:
    lab = PairLab()
    lab.probe_answered()
    assert lab.pairs.paths[PEER].kind == "lan"
    return lab


def nat_after_the_probe_window() -> PairLab:
    lab = PairLab()
    lab.later(TIMERS.probe_window + 0.01)
    assert lab.path_state is S.INSTALLING and lab.pairs.paths[PEER].endpoint == PEER_OUTSIDE
    return lab


def nat_at_once_behind_another_nat() -> PairLab:
    lab = PairLab(outside=OTHER_OUTSIDE)
    path = lab.pairs.paths[PEER]
    assert lab.path_state is S.INSTALLING and path.kind == "nat" and path.endpoint == OTHER_OUTSIDE
    # the LAN is probed all the same
    assert lab.host.sent == [(wire.Probe(path.token_for(PEER_LAN)), PEER_LAN)]
    return lab


def lan_answers_a_nat_attempt() -> PairLab:
    """Behind different outside addresses and still on one LAN (two uplinks):
    the LAN wins, and is waited for from then on."""
    lab = nat_at_once_behind_another_nat()
    lab.probe_answered()
    assert any(isinstance(e, ev.LanAnswers) for e in lab.host.events)
    assert lab.path_state is S.PROBING  # not the outside endpoint at once, this time
    lab.probe_answered()
    assert lab.path_state is S.INSTALLING and lab.pairs.paths[PEER].kind == "lan"
    return lab


def an_outside_endpoint_learned_changes_nothing() -> PairLab:
    """The static learns the peer's outside endpoint (its first handshake) after
    the LAN link is up: nothing moved, the link stays."""
    lab = PairLab(outside=None)
    lab.direct()
    lab.host.entries[PEER] = replace(lab.host.entries[PEER], wg_endpoint=PEER_OUTSIDE)
    lab.pairs.prune(lab.now)
    assert lab.path_state is S.DIRECT
    assert not any(isinstance(e, ev.PairAddressesChanged) for e in lab.host.events)
    return lab


def a_relayed_pair_tries_an_outside_endpoint_once_known() -> PairLab:
    lab = no_outside_known()
    lab.host.entries[PEER] = replace(lab.host.entries[PEER], wg_endpoint=OTHER_OUTSIDE)
    lab.pairs.prune(lab.now)
    assert lab.path_state is S.INSTALLING and lab.pairs.paths[PEER].endpoint == OTHER_OUTSIDE
    return lab


def another_nat_learned_while_probing() -> PairLab:
    """The static learns the peer's outside endpoint (its first handshake)
    within the probe window: behind another NAT, so it is tried at once, not
    at the window's end; one behind our own NAT still waits for the LAN."""
    ours = PairLab(outside=None)
    ours.later(TIMERS.probe_window / 3)
    ours.host.entries[PEER] = replace(ours.host.entries[PEER], wg_endpoint=PEER_OUTSIDE)
    ours.pairs.prune(ours.now)
    assert ours.path_state is S.PROBING
    lab = PairLab(outside=None)
    assert lab.path_state is S.PROBING
    lab.later(TIMERS.probe_window / 3)
    lab.host.entries[PEER] = replace(lab.host.entries[PEER], wg_endpoint=OTHER_OUTSIDE)
    lab.pairs.prune(lab.now)
    path = lab.pairs.paths[PEER]
    assert lab.path_state is S.INSTALLING and path.kind == "nat" and path.endpoint == OTHER_OUTSIDE
    assert not any(isinstance(e, ev.PairAddressesChanged) for e in lab.host.events)
    return lab


def no_outside_known() -> PairLab:
    lab = PairLab(lan=False, outside=None)
    assert lab.path_state is S.RELAYED
    assert "not known" in lab.pairs.paths[PEER].reason
    return lab


def both_ready_then_handshake() -> PairLab:
    lab = PairLab()
    lab.direct()
    # The peer is told at once, so it follows without waiting for its own reading.
    assert any(isinstance(m, wire.Ready) and m.direct for m, _ in lab.host.sent)
    return lab


def peer_initiated_first() -> PairLab:
    lab = PairLab()
    lab.installing()
    lab.wg(handshake_age=0.0)  # its initiation reached us before we were ready
    assert lab.path_state is S.DIRECT
    return lab


def peer_saw_the_handshake_while_installing() -> PairLab:
    lab = PairLab()
    lab.installing()
    lab.wg()
    lab.peer_ready(direct=True)
    assert lab.path_state is S.DIRECT
    return lab


def peer_saw_the_handshake_while_punching() -> PairLab:
    lab = PairLab()
    lab.punching()
    lab.peer_ready(direct=True)
    assert lab.path_state is S.DIRECT
    return lab


def peer_never_ready() -> PairLab:
    lab = PairLab()
    lab.installing()
    lab.wg()
    lab.later(2 * TIMERS.punch_timeout + 0.01)
    assert lab.path_state is S.FAILED
    assert "never got ready" in lab.pairs.paths[PEER].reason
    return lab


def punch_times_out_and_retries() -> PairLab:
    lab = PairLab()
    lab.punching()
    lab.later(TIMERS.punch_timeout + 0.01)
    assert lab.path_state is S.FAILED
    lab.wg_gone()  # the reconciler removed the trial peer
    lab.later(TIMERS.path_retry_min + 0.01)
    assert lab.path_state is S.PROBING  # retried with backoff
    return lab


def link_stops_answering() -> PairLab:
    lab = PairLab()
    lab.direct()
    lab.later(1.0)
    lab.wg(handshake_age=1.0, rx=100, tx=100)  # working: something came back
    lab.later(1.0)
    lab.wg(handshake_age=2.0, rx=100, tx=1000)  # sent a lot, nothing came back
    path = lab.pairs.paths[PEER]
    assert lab.path_state is S.DIRECT and path.suspect_since == lab.now  # pinged first
    pings = lab.session.ping_seq
    lab.later(TIMERS.link_probe_interval + 0.01)
    assert lab.session.ping_seq > pings
    lab.later(TIMERS.link_timeout)
    lab.wg(handshake_age=3.0, rx=100, tx=2000)
    assert lab.path_state is S.FAILED
    # The peer is told over the link and through a static, and the LAN is re-probed.
    assert any(isinstance(m, wire.Ready) and m.leaving for m in lab.host.relayed)
    assert lab.pairs.paths[PEER].lan_lost_until > lab.now
    return lab


def handshake_goes_stale() -> PairLab:
    lab = PairLab()
    lab.direct()
    lab.later(1.0)
    lab.wg(handshake_age=TIMERS.direct_stale_after + 1.0)
    assert lab.path_state is S.FAILED
    return lab


def peer_restarts_a_direct_link() -> PairLab:
    """A fresh probe on a direct link: follow the peer; the old peer goes first."""
    lab = PairLab()
    lab.direct()
    lab.pairs.on_probe(lab.session, 12345, PEER_LAN, lab.now)
    assert lab.path_state is S.CLEARING  # WireGuard still has the old session
    lab.wg()  # a reading before the removal took effect: still clearing
    lab.wg_gone()
    assert lab.path_state is S.PROBING  # cleared: probing afresh
    path = lab.pairs.paths[PEER]
    assert lab.host.sent[-1] == (wire.Probe(path.token_for(PEER_LAN)), PEER_LAN)
    return lab


def roaming_restarts(state: PathState, in_wireguard: bool) -> PairLab:
    lab = in_state(state)
    if in_wireguard:
        lab.wg()
    else:
        lab.host.readings.pop(lab.key, None)
    attempt = lab.pairs.paths[PEER].attempt
    lab.peer_moves()
    assert lab.pairs.paths[PEER].attempt == attempt + 1
    assert lab.path_state is (S.CLEARING if in_wireguard else S.PROBING)
    return lab


def relayed_restarts_while_wireguard_has_it() -> PairLab:
    lab = no_outside_known()
    lab.wg()  # a leftover of an earlier attempt
    lab.pairs.on_ready(lab.session, 1, False, lab.now)
    assert lab.path_state is S.CLEARING
    lab.pairs.on_ready(lab.session, 2, False, lab.now)  # the peer starts over again
    assert lab.path_state is S.CLEARING
    return lab


def unlisted_peer_whose_daemon_is_gone() -> PairLab:
    lab = PairLab()
    lab.direct()
    del lab.host.entries[PEER]  # no static lists it any more
    lab.pairs.prune(lab.now)
    assert PEER in lab.host.sessions  # its link may vouch for it
    lab.later(TIMERS.link_timeout + 0.01)
    lab.pairs.prune(lab.now)
    assert lab.host.forgotten == [PEER]
    assert PEER not in lab.pairs.paths
    return lab


SCENARIOS: list[Callable[[], PairLab]] = [
    lan_found,
    nat_after_the_probe_window,
    nat_at_once_behind_another_nat,
    lan_answers_a_nat_attempt,
    an_outside_endpoint_learned_changes_nothing,
    a_relayed_pair_tries_an_outside_endpoint_once_known,
    another_nat_learned_while_probing,
    no_outside_known,
    both_ready_then_handshake,
    peer_initiated_first,
    peer_saw_the_handshake_while_installing,
    peer_saw_the_handshake_while_punching,
    peer_never_ready,
    punch_times_out_and_retries,
    link_stops_answering,
    handshake_goes_stale,
    peer_restarts_a_direct_link,
    relayed_restarts_while_wireguard_has_it,
    unlisted_peer_whose_daemon_is_gone,
]
ROAMING = [
    (state, in_wg)
    for state in (S.CLEARING, S.PROBING, S.INSTALLING, S.PUNCHING, S.DIRECT, S.FAILED)
    for in_wg in (False, True)
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_scenario(scenario: Callable[[], PairLab]) -> None:
    scenario()


@pytest.mark.parametrize(("state", "in_wireguard"), ROAMING)
def test_roaming_restarts_the_attempt_from_any_state(state: PathState, in_wireguard: bool) -> None:
    roaming_restarts(state, in_wireguard)


def in_state(state: PathState) -> PairLab:
    lab = PairLab()
    if state is S.INSTALLING:
        lab.installing()
    elif state is S.PUNCHING:
        lab.punching()
    elif state is S.DIRECT:
        lab.direct()
    elif state is S.FAILED:
        lab = peer_never_ready()
    elif state is S.CLEARING:
        lab.direct()
        lab.pairs.on_probe(lab.session, 12345, PEER_LAN, lab.now)
    assert lab.path_state is state
    return lab


@pytest.mark.parametrize("state", [s for s in PathState if s is not S.RELAYED])
def test_a_later_run_of_the_peers_key_ends_the_pair_at_once_from_any_state(
    state: PathState,
) -> None:
    """Rule 6: the peer restarted with its key kept (a static lists its next
    boot number); the old run's link is dead, whatever it looked like."""
    lab = in_state(state)
    entry = lab.host.entries[PEER]
    lab.host.entries[PEER] = replace(entry, boot_number=1)
    lab.pairs.prune(lab.now)
    assert lab.host.forgotten == [PEER] and PEER not in lab.pairs.paths
    assert ev.PairPeerRestarted(ev.PeerRef(PEER, "delta"), 1) in lab.host.events


@pytest.mark.parametrize("state", [S.PROBING, S.DIRECT])
def test_an_earlier_runs_entry_changes_nothing(state: PathState) -> None:
    """Rule 6: a static that has not met the session's run yet lists the one
    before, at addresses that are no news: no restart, no roll-back."""
    lab = in_state(state)
    lab.session.boot_number = 2
    entry = lab.host.entries[PEER]
    before = (lab.session.info, lab.pairs.paths[PEER].attempt, list(lab.host.events))
    old = replace(entry.info, local_endpoints=(("192.168.7.3", 50504),))
    lab.host.entries[PEER] = replace(entry, info=old, wg_endpoint=OTHER_OUTSIDE, boot_number=1)
    lab.pairs.prune(lab.now)
    after = (lab.session.info, lab.pairs.paths[PEER].attempt, lab.host.events)
    assert after == before and lab.path_state is state and not lab.host.forgotten
    # The same run's entry is news as ever (it roamed).
    lab.host.entries[PEER] = replace(entry, info=old, boot_number=2)
    lab.pairs.prune(lab.now)
    assert lab.session.info == old


def test_the_scenarios_walk_every_transition_and_nothing_else() -> None:
    taken: set[tuple[str, str, str]] = set()
    for scenario in SCENARIOS:
        taken |= set(scenario().host.moves())
    for state, in_wg in ROAMING:
        taken |= set(roaming_restarts(state, in_wg).host.moves())
    table = {
        (old.value, trigger.value, new.value)
        for old, row in TRANSITIONS.items()
        for trigger, new in row.items()
    }
    assert taken - table == set()
    assert table - taken == set()


def test_the_table_reaches_direct_and_back_from_every_state() -> None:
    def reachable(start: PathState) -> set[PathState]:
        seen, todo = {start}, [start]
        while todo:
            for new in TRANSITIONS[todo.pop()].values():
                if new not in seen:
                    seen.add(new)
                    todo.append(new)
        return seen

    assert set(TRANSITIONS) == set(PathState)
    assert {t for row in TRANSITIONS.values() for t in row} == set(Trigger)
    for state in PathState:
        assert S.DIRECT in reachable(state) and S.RELAYED in reachable(state) | {S.FAILED}


def test_a_move_the_table_lacks_is_a_bug() -> None:
    lab = PairLab()
    path = lab.pairs.paths[PEER]
    with pytest.raises(RuntimeError, match="no transition from"):
        lab.pairs._move(PEER, path, T.LINK_LOST, lab.now)  # probing has no link to lose


# --- probing the peer's local addresses (rule 7) -------------------------------------


def test_late_messages_of_the_attempt_that_failed_start_no_other() -> None:
    # Both ends gave the attempt up; the peer's repeated Ready and probe of it
    # arrive after. Followed, each end would restart the other for ever.
    lab = PairLab()
    lab.punching()
    lab.pairs.on_probe(lab.session, 7 << 32, PEER_OUTSIDE, lab.now)  # the peer's attempt
    lab.later(TIMERS.punch_timeout + 0.01)
    lab.wg_gone()
    path = lab.pairs.paths[PEER]
    attempt = path.attempt
    assert path.state is S.FAILED
    lab.pairs.on_ready(lab.session, path.peer_attempt, False, lab.now)
    lab.pairs.on_probe(lab.session, 7 << 32 | 1, PEER_OUTSIDE, lab.now)
    assert path.state is S.FAILED and path.attempt == attempt  # its backoff stands
    lab.peer_ready()  # a new attempt of the peer's is followed
    assert path.attempt == attempt + 1 and path.state is not S.FAILED


def test_a_probe_answer_proves_the_address_its_token_went_to_and_no_other() -> None:
    # A peer that read the token of the probe to its own address cannot
    # answer for another address it named: each address has its own token.
    lab = PairLab()
    path = lab.pairs.paths[PEER]
    stranger: Endpoint = ("192.0.2.1", 53)
    lab.pairs.on_probe_ack(lab.session, path.token_for(stranger), PEER_LAN, lab.now)
    assert lab.path_state is PathState.PROBING and not path.lan_proven
    lab.probe_answered()
    assert path.lan_proven == {PEER_LAN}


def test_a_lan_gone_direct_on_the_peers_word_is_proven_by_the_next_reading() -> None:
    # The peer's probe arrived from its LAN (not an answer to ours: nothing
    # proven), and the peer saw the handshake before our reading did. Once a
    # reading shows the handshake from the LAN address, it is proven, so a
    # lost LAN is re-probed there at once, not only at the next attempt.
    lab = PairLab()
    path = lab.pairs.paths[PEER]
    lab.pairs.on_probe(lab.session, 7 << 32, PEER_LAN, lab.now)
    assert lab.path_state is S.INSTALLING and not path.lan_proven
    lab.host.readings[lab.key] = WgPeerReading(lab.key, None, (), None, 0, 0)
    lab.pairs.on_wg(lab.now)  # installed, no handshake seen yet
    lab.peer_ready()
    lab.peer_ready(direct=True)  # the peer saw the handshake
    assert lab.path_state is S.DIRECT and not path.lan_proven
    lab.later(0.5)
    lab.wg(handshake_age=0.5, rx=100, tx=100)  # our reading: from the LAN address
    assert path.lan_proven == {PEER_LAN}


def test_an_unanswered_address_is_probed_again_on_our_own_retry_only() -> None:
    lab = PairLab()
    lab.later(TIMERS.probe_window + 0.01)  # no answer: the NAT endpoint
    lab.later(2 * TIMERS.punch_timeout + 0.01)  # the peer never got ready
    assert lab.path_state is PathState.FAILED
    lab.host.sent.clear()
    lab.peer_ready()  # the peer starts an attempt: ours follows, no probe again
    assert lab.path_state is not PathState.PROBING
    assert not [m for m, _ in lab.host.sent if isinstance(m, wire.Probe)]
    lab.later(TIMERS.punch_timeout * 4)  # failed again; we retry at our own pace
    lab.later(TIMERS.path_retry_max)
    probes = [(m, dest) for m, dest in lab.host.sent if isinstance(m, wire.Probe)]
    assert (wire.Probe(lab.pairs.paths[PEER].token_for(PEER_LAN)), PEER_LAN) in probes


@pytest.mark.parametrize("listing", ["none", "another key", "a later run"])
def test_a_pair_session_no_static_lists_probes_nothing(listing: str) -> None:
    """Rule 6 ends such a session at once; before it does, not one probe may
    go to the addresses it named (each handshake would buy another round)."""
    host = FakeHost()
    info = NodeInfo(PEER, "delta", to_b64(b"d" * 32), 50004, 50504, (PEER_LAN,))
    host.sessions[PEER] = Session(
        info=info,
        boot=b"b" * 8,
        addr=(str(PEER), 50504),
        keys=Keys(1, 2, bytes(32), bytes(32)),
        established=100.0,
        last_heard=100.0,
        pinger=False,
    )
    if listing == "another key":
        host.entries[PEER] = TableEntry(replace(info, public_key=to_b64(b"e" * 32)), None, None, 0)
    elif listing == "a later run":
        host.entries[PEER] = TableEntry(info, PEER_OUTSIDE, None, 0.5, boot_number=1)
    pairs = Pairs(host, TIMERS)
    pairs.opened(PEER, 100.0)
    assert not [m for m, _ in host.sent if isinstance(m, wire.Probe)]
    pairs.prune(100.0)
    assert host.forgotten == [PEER] and PEER not in pairs.paths


def test_start_up_settles_once_every_eager_pair_is_direct_or_has_failed() -> None:
    """What the daemon holds back until start-up has settled (Node.settling)."""
    lab = PairLab()
    lab.host.relayed_peers = lambda: [PEER]  # type: ignore[method-assign]
    states = []
    for step in (lab.probe_answered, lab.wg, lab.peer_ready, lambda: lab.wg(handshake_age=0.0)):
        states.append((lab.path_state, lab.pairs.settling()))
        step()
    states.append((lab.path_state, lab.pairs.settling()))
    assert states == [
        (S.PROBING, True),
        (S.INSTALLING, True),
        (S.INSTALLING, True),
        (S.PUNCHING, True),
        (S.DIRECT, False),
    ]
    failed = peer_never_ready()
    failed.host.relayed_peers = lambda: [PEER]  # type: ignore[method-assign]
    assert not failed.pairs.settling()
    del failed.pairs.paths[PEER]  # a node we reach through the static, no session yet
    assert failed.pairs.settling()
    failed.host.entries[PEER] = replace(
        failed.host.entries[PEER], info=replace(failed.host.entries[PEER].info, client=True)
    )
    assert not failed.pairs.settling()  # a phone: no pair is ever tried


def test_the_lower_wg_ip_fires_when_the_higher_says_it_fired() -> None:
    """A NAT punch: the higher wg IP's WireGuard sends first; once its daemon
    applied that, its Ready(fired) (through the gateway, the longer way) lets
    the lower one send at once instead of after punch_stagger."""
    waits = PairLab(lan=False, outside=OTHER_OUTSIDE)
    waits.punching()
    waits.later(TIMERS.punch_stagger / 2)
    assert not waits.pairs.paths[PEER].firing  # (we are the lower: 10.1.1.3 < .4)
    lab = PairLab(lan=False, outside=OTHER_OUTSIDE)
    lab.punching()
    path = lab.pairs.paths[PEER]
    lab.pairs.on_ready(lab.session, path.peer_attempt, False, lab.now, fired=True)
    lab.later(lab.host.gateway_rtt())
    assert path.firing and lab.path_state is S.PUNCHING
    assert path.endpoint is not None and lab.pairs.trial_peers()[lab.key].endpoint == OTHER_OUTSIDE


def test_a_new_attempt_of_the_lower_wg_ip_waits_for_the_higher_to_fire_again() -> None:
    """Firing is per attempt. A lower wg IP that fired in a failed punch and
    fired again at once in the next would send with the higher one: crossed
    initiations, each WireGuard answering the other's and dropping the answer
    to its own, and the pair waits 5 s for WireGuard's retry (a LAN healed
    after a failed punch; a CI run saw it)."""
    lab = PairLab(lan=False, outside=OTHER_OUTSIDE)
    lab.punching()
    lab.later(TIMERS.punch_stagger + lab.host.gateway_rtt())
    assert lab.pairs.paths[PEER].firing  # the fallback fired (we are the lower)
    lab.later(TIMERS.punch_timeout)
    assert lab.path_state is S.FAILED
    lab.wg_gone()
    lab.later(TIMERS.path_retry_max)  # the retry, its peer back in, the peer ready
    assert lab.path_state is S.INSTALLING
    lab.wg()
    lab.peer_ready()
    assert lab.path_state is S.PUNCHING
    assert not lab.pairs.paths[PEER].firing
    assert lab.pairs.trial_peers()[lab.key].endpoint is None
    lab.later(TIMERS.punch_stagger + lab.host.gateway_rtt())
    assert lab.pairs.trial_peers()[lab.key].endpoint == OTHER_OUTSIDE


def test_the_higher_wg_ip_says_fired_once_its_wireguard_has_sent_the_initiation() -> None:
    """Not when the endpoint is applied: WireGuard sends a moment later (later
    still on a busy machine), and the lower wg IP's initiation, sent on our
    word, would cross ours: both WireGuards would wait 5 s for a retry."""
    lab = PairLab(lan=False, outside=OTHER_OUTSIDE)
    lab.host.info = replace(ME, wg_ip=IPv4Address("10.1.1.5"))  # higher than the peer
    lab.installing_nat()
    lab.wg(tx=32)  # (bytes sent earlier do not count)
    lab.peer_ready()
    assert lab.path_state is S.PUNCHING and lab.pairs.paths[PEER].firing

    def said_fired() -> list[tuple[wire.Message, Endpoint]]:
        return [(m, to) for m, to in lab.host.sent if isinstance(m, wire.Ready) and m.fired]

    lab.wg(tx=32)  # the endpoint is in, WireGuard has not sent yet
    assert said_fired() == []
    lab.wg(tx=180)  # the initiation has left
    lab.wg(tx=328)  # (once per attempt)
    attempt = lab.pairs.paths[PEER].attempt
    assert said_fired() == [(wire.Ready(attempt, fired=True), (str(PEER), 50504))]
    # The repeated Ready says so too: a lost one costs ready_interval, not punch_stagger.
    lab.later(TIMERS.ready_interval)
    lab.wg(tx=328)
    assert said_fired()[1:] == [(wire.Ready(attempt, fired=True), (str(PEER), 50504))]


@pytest.mark.parametrize("higher", [True, False])
def test_a_punch_whose_wireguard_sent_nothing_sets_its_peer_up_again_once(higher: bool) -> None:
    """Rule 9: wireguard-go sometimes sent nothing on the setting that gave it
    the endpoint; the pair would wait out punch_timeout (6 s)."""
    lab = PairLab(lan=False, outside=OTHER_OUTSIDE)
    if higher:
        lab.host.info = replace(ME, wg_ip=IPv4Address("10.1.1.5"))
    lab.installing_nat()
    lab.wg(tx=32)
    lab.peer_ready()
    if not higher:
        lab.later(TIMERS.punch_stagger + lab.host.gateway_rtt())  # the fallback fires
    assert lab.pairs.paths[PEER].firing
    assert lab.pairs.trial_peers()[lab.key].endpoint == OTHER_OUTSIDE
    lab.later(TIMERS.punch_send_check / 2)
    lab.wg(tx=32)
    assert lab.key in lab.pairs.trial_peers() and not lab.host.events_of(ev.PunchResent)
    lab.later(TIMERS.punch_send_check / 2)
    lab.wg(tx=32)  # nothing sent since it fired
    assert lab.host.events_of(ev.PunchResent) == [ev.PunchResent(lab.host.ref(PEER))]
    assert lab.key not in lab.pairs.trial_peers()  # out of WireGuard ...
    lab.wg(tx=32)
    assert lab.key not in lab.pairs.trial_peers()
    lab.wg_gone()
    peer = lab.pairs.trial_peers()[lab.key]  # ... and back in, firing again
    assert peer.endpoint == OTHER_OUTSIDE and peer.persistent_keepalive == TIMERS.keepalive
    assert lab.path_state is S.PUNCHING
    lab.later(TIMERS.punch_send_check)
    lab.wg()  # silent again: once per attempt, then punch_timeout decides
    assert len(lab.host.events_of(ev.PunchResent)) == 1 and lab.key in lab.pairs.trial_peers()
    lab.wg(tx=148, handshake_age=0.0)
    assert lab.path_state is S.DIRECT


def test_a_punch_whose_wireguard_sends_is_left_alone() -> None:
    lab = PairLab(lan=False, outside=OTHER_OUTSIDE)
    lab.host.info = replace(ME, wg_ip=IPv4Address("10.1.1.5"))
    lab.installing_nat()
    lab.wg()
    lab.peer_ready()
    lab.wg(tx=148)
    lab.later(TIMERS.punch_send_check * 3)
    lab.wg(tx=148)
    assert not lab.host.events_of(ev.PunchResent) and lab.key in lab.pairs.trial_peers()


@pytest.mark.parametrize("state", list(PathState))
def test_only_a_punch_under_way_says_when_it_began(state: PathState) -> None:
    """The node reads WireGuard every wg_poll_punch for a while after it."""
    lab = PairLab() if state is S.RELAYED else in_state(state)
    began = lab.pairs.punch_began()
    if state is S.PUNCHING:
        assert began == lab.pairs.paths[PEER].since and began <= lab.now
    else:
        assert began is None


def test_a_pair_hello_goes_at_once_when_the_static_lists_the_peers_endpoint() -> None:
    """The lower wg IP's hello goes through the static's tunnel, which reaches
    the peer only once the static's WireGuard has met it: its table then
    shows the peer's endpoint, and a hello goes at once instead of at the
    next retry of the backoff (on every NAT pair's path at a start). The
    next follows soon: the peer's WireGuard drops it until the peer has our
    route too, from its copy of the table, which can come a moment later."""
    host = FakeHost(relayed_ips=[PEER])
    entry = TableEntry(NodeInfo(PEER, "delta", to_b64(b"d" * 32), 50004, 50504), None, None, 0.5)
    host.entries[PEER] = entry  # listed; the static has not seen its handshake yet
    pairs, now = Pairs(host, TIMERS), 100.0
    pairs.handle_timer(now)
    assert host.hellos == [(PEER, now)]  # the first at once
    pairs.handle_timer(now + 0.01)
    assert len(host.hellos) == 1  # then the backoff
    host.entries[PEER] = replace(entry, wg_endpoint=PEER_OUTSIDE)
    assert min(pairs.deadlines()) <= now + 0.02
    pairs.handle_timer(now + 0.02)
    assert host.hellos[-1] == (PEER, now + 0.02)  # at once, before the retry was due
    pairs.handle_timer(now + 0.03)
    assert len(host.hellos) == 2  # once ...
    pairs.handle_timer(now + 0.02 + MET_PAIR_HELLO_RETRY)
    assert host.hellos[-1] == (PEER, now + 0.02 + MET_PAIR_HELLO_RETRY)  # ... then soon again
    pairs.handle_timer(now + 0.02 + 2 * MET_PAIR_HELLO_RETRY)
    assert len(host.hellos) == 3  # and the backoff doubles from there
    pairs.handle_timer(now + 0.02 + 3 * MET_PAIR_HELLO_RETRY)
    assert len(host.hellos) == 4


def test_a_path_gone_direct_on_the_peers_word_waits_for_our_side_of_the_handshake() -> None:
    """The peer initiated and saw the handshake; our WireGuard (the
    responder's) counts it only once the peer's keepalive has come in. A
    reading before that is not a stale handshake (a bench run lost its LAN
    link for seconds that way); one that still shows none after
    ``link_timeout`` is."""
    lab = peer_saw_the_handshake_while_installing()
    lab.later(0.003)
    lab.wg()  # no handshake on our side yet
    assert lab.path_state is S.DIRECT
    lab.later(0.01)
    lab.wg(handshake_age=0.0)  # the keepalive came in
    lab.later(TIMERS.link_timeout)
    lab.wg(handshake_age=TIMERS.link_timeout, rx=100, tx=100)
    assert lab.path_state is S.DIRECT

    lab = peer_saw_the_handshake_while_installing()
    lab.later(TIMERS.link_timeout)
    lab.wg()  # never
    assert lab.path_state is S.FAILED
    assert (S.DIRECT.value, T.HANDSHAKE_STALE.value, S.FAILED.value) in lab.host.moves()
