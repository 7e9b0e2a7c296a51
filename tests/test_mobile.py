"""Mobile nodes (``--mobile``, core/mobile.py): one static link, no pings,
liveness from WireGuard's counters, failover, and the byte budget.

The rules one by one on hand-driven cores (``Lab``, with a WireGuard whose
counters the test moves), then the whole mesh in the simulator: at most
5 B/s on the underlay over ten idle minutes, reachable from everyone within
3 s of a cold start, failover to a second static with traffic.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.helpers import SUBNET, wg_ip
from tests.lab import Lab
from tests.sim import Nat, SimNet
from wg_netmanager import wire
from wg_netmanager.core import events as ev
from wg_netmanager.core.mobile import quiet_limit
from wg_netmanager.core.node import Node
from wg_netmanager.core.timers import Timers
from wg_netmanager.model import WgPeerReading

TIMERS = Timers()
S1, S2, M = wg_ip(1), wg_ip(5), wg_ip(2)


# --- hand-driven cores with a WireGuard the test moves --------------------------------


@dataclass
class Wg:
    """Per (node, peer key): handshake time and byte counters, as ``wg show``
    would report them; ``feed`` hands every node its reading."""

    lab: Lab
    handshake: dict[tuple[str, str], float] = field(default_factory=dict)
    rx: dict[tuple[str, str], int] = field(default_factory=dict)
    tx: dict[tuple[str, str], int] = field(default_factory=dict)
    keepalive_at: dict[str, float] = field(default_factory=dict)  # the mobile's, per static

    keys: dict[str, str] = field(default_factory=dict)  # name -> key, kept after a crash

    def key(self, name: str) -> str:
        if name in self.lab.boxes:
            self.keys[name] = self.lab.boxes[name].node.info.public_key
        return self.keys[name]

    def feed(self) -> None:
        lab = self.lab
        for name, box in lab.boxes.items():
            node = box.node
            readings = {}
            for key, peer in node.desired_peers().items():
                other = next((b for b in lab.boxes.values() if b.node.info.public_key == key), None)
                pair = (name, key)
                self.handshake.setdefault(pair, lab.now)
                endpoint = None if other is None else (other.address, other.node.info.wg_port)
                readings[key] = WgPeerReading(
                    public_key=key,
                    endpoint=endpoint,
                    allowed_ips=peer.allowed_ips,
                    handshake_age=lab.now - self.handshake[pair],
                    rx_bytes=self.rx.get(pair, 0),
                    tx_bytes=self.tx.get(pair, 0),
                )
            node.update_wg(readings, lab.now)
            node.wg_applied(node.state_version, lab.now)
        lab.settle()

    def count(self, a: str, b: str, sent: int = 0, received: int = 0) -> None:
        """``a``'s WireGuard peer ``b`` sent and received this much more."""
        pair = (a, self.key(b))
        self.tx[pair] = self.tx.get(pair, 0) + sent
        self.rx[pair] = self.rx.get(pair, 0) + received

    def handshake_now(self, a: str, b: str) -> None:
        """``a`` initiates a WireGuard handshake with ``b`` (and confirms it)."""
        self.handshake[(a, self.key(b))] = self.lab.now
        self.handshake[(b, self.key(a))] = self.lab.now
        self.count(a, b, sent=148 + 32, received=92)
        self.count(b, a, sent=92, received=148 + 32)

    def run(self, until: float, step: float = 5.0, alive: bool = True) -> None:
        """Time passes, WireGuard read every ``step``; ``alive``: the mobile's
        keepalives (every mobile_keepalive) reach its static, and it
        handshakes every two minutes."""
        while self.lab.now < until:
            self.lab.run_until(min(until, self.lab.now + step))
            if alive:
                for static in [ip for ip in self.mobile.sessions if ip in self.mobile.statics]:
                    name = next(n for n, b in self.lab.boxes.items() if b.wg_ip == static)
                    if self.lab.now >= self.keepalive_at.get(name, 0.0):
                        self.keepalive_at[name] = self.lab.now + TIMERS.mobile_keepalive
                        self.count(name, "m", received=32)
                        self.count("m", name, sent=32)
                    if self.lab.now - self.handshake.get(("m", self.key(name)), 0.0) >= 120:
                        self.handshake_now("m", name)
            self.feed()

    @property
    def mobile(self) -> Node:
        return self.lab.boxes["m"].node


def mobile_lab(*statics: str) -> Wg:
    """Statics s1 (10.1.1.1) and s2 (10.1.1.5) as named, and the mobile m
    (10.1.1.2) started after them; default timers."""
    octets = {"s1": 1, "s2": 5}
    lab = Lab({name: octets[name] for name in statics}, timers=TIMERS)
    for name in statics:
        lab.start(name)
    lab.start("m", 2, mobile=True)
    wg = Wg(lab)
    for _ in range(5):  # handshakes, tables, WireGuard readings: everyone settles
        lab.run_until(lab.now + 0.1)
        wg.feed()
    return wg


def sent_by(lab: Lab, name: str, since: int) -> list[wire.Message | None]:
    return [s.message for s in lab.log[since:] if s.sender == name]


def events_of(node: Node) -> Iterator[ev.Event]:
    yield from node.events()


# --- one static -----------------------------------------------------------------------


def test_a_mobile_keeps_one_static_and_stops_greeting_the_others() -> None:
    wg = mobile_lab("s1", "s2")
    lab, m = wg.lab, wg.mobile
    held = [ip for ip in (S1, S2) if ip in m.sessions]
    assert len(held) == 1
    other = "s2" if held == [S1] else "s1"
    assert M not in lab.boxes[other].node.sessions  # the second one got a Bye
    assert any(isinstance(e, ev.StaticDeclined) for e in m.events())
    m.take_resolve_requests()  # (those of the start)
    mark = len(lab.log)
    wg.run(lab.now + 600.0)
    assert [s for s in lab.log[mark:] if s.sender == "m"] == []  # no hello, no ping
    assert M not in lab.boxes[other].node.sessions and m.take_resolve_requests() == set()


def test_the_mobile_is_no_pinger_and_the_static_sends_it_no_keepalive() -> None:
    wg = mobile_lab("s1")
    m, s1 = wg.mobile, wg.lab.boxes["s1"].node
    assert not m.sessions[S1].pinger
    to_static = m.desired_peers()[s1.info.public_key]
    assert to_static.persistent_keepalive == TIMERS.mobile_keepalive
    assert SUBNET in to_static.allowed_ips  # the whole subnet via its static (rule 4)
    assert s1.desired_peers()[m.info.public_key].persistent_keepalive == 0
    assert SUBNET not in s1.desired_peers()[m.info.public_key].allowed_ips
    entry = next(e for e in s1.table.entries(s1.sessions, s1._wg, 0.0) if e.info.wg_ip == M)
    assert entry.info.mobile  # gossiped in the static's table


def test_latency_is_measured_only_by_the_mobile_itself() -> None:
    wg = mobile_lab("s1")
    lab, m, s1 = wg.lab, wg.mobile, wg.lab.boxes["s1"].node
    mark = len(lab.log)
    s1.watch_latency(lab.now + 10.0, lab.now)
    wg.run(lab.now + 10.0, step=1.0)
    assert sent_by(lab, "s1", mark) == []  # nobody spends a mobile's bytes from afar
    m.watch_latency(lab.now + 10.0, lab.now)
    wg.run(lab.now + 10.0, step=1.0)
    assert any(isinstance(msg, wire.Ping) for msg in sent_by(lab, "m", mark))
    assert m.sessions[S1].rtt is not None


# --- liveness from WireGuard ----------------------------------------------------------


def test_the_static_keeps_a_mobile_while_its_wireguard_shows_signs_and_drops_it_after() -> None:
    wg = mobile_lab("s1")
    lab, s1 = wg.lab, wg.lab.boxes["s1"].node
    wg.run(lab.now + 600.0)  # keepalives and handshakes only: no admin datagram
    assert M in s1.sessions and S1 in wg.mobile.sessions
    gone = lab.now
    wg.key("m")
    lab.crash("m")  # it vanished: no bye, no keepalives
    wg.run(lab.now + 300.0, alive=False)
    assert M not in s1.sessions
    silent = [e for e in s1.events() if isinstance(e, ev.PeerSilent)]
    assert silent and silent[0].peer.wg_ip == M
    # Not before mobile_dead_after (and a reading later at most).
    assert TIMERS.mobile_dead_after <= lab.now - gone


def test_the_static_drops_a_silent_mobile_after_mobile_dead_after() -> None:
    wg = mobile_lab("s1")
    lab, s1 = wg.lab, wg.lab.boxes["s1"].node
    start = lab.now
    wg.run(start + TIMERS.mobile_dead_after - 10.0, alive=False)
    assert M in s1.sessions
    wg.run(start + TIMERS.mobile_dead_after + 10.0, alive=False)
    assert M not in s1.sessions


def test_the_mobile_drops_a_static_that_shows_no_sign_for_its_quiet_limit() -> None:
    wg = mobile_lab("s1")
    lab, m = wg.lab, wg.mobile
    wg.run(lab.now + 100.0)
    quiet_since = m.sessions[S1].last_heard  # its last handshake (idle: nothing else comes)
    assert quiet_since < lab.now - 50.0
    lab.boxes.pop("s1")  # gone without a word; the mobile's WireGuard stops hearing it
    m.update_wg({}, lab.now)  # (its peer stays in WireGuard, no handshake any more)
    lab.run_until(quiet_since + quiet_limit(TIMERS) - 1.0)
    assert S1 in m.sessions
    lab.run_until(quiet_since + quiet_limit(TIMERS) + 1.0)
    assert S1 not in m.sessions


# --- traffic: a suspect static, failover --------------------------------------------------


def test_traffic_without_answer_makes_the_static_suspect_a_pong_clears_it() -> None:
    wg = mobile_lab("s1")
    lab, m = wg.lab, wg.mobile
    mark = len(lab.log)
    wg.count("m", "s1", sent=400)  # user traffic out, nothing back (yet)
    wg.feed()
    lab.run_until(lab.now + 0.1)
    pings = [msg for msg in sent_by(lab, "m", mark) if isinstance(msg, wire.Ping)]
    assert pings  # suspect: pinged at once (over the underlay, not WireGuard)
    lab.run_until(lab.now + 5 * TIMERS.link_timeout)
    assert S1 in m.sessions  # it answered
    assert m._gateway_watch.suspect_since is None


def test_a_static_that_neither_passes_traffic_nor_answers_is_left_for_another() -> None:
    wg = mobile_lab("s1", "s2")
    lab, m = wg.lab, wg.mobile
    (first,) = [ip for ip in (S1, S2) if ip in m.sessions]
    name, other, other_ip = ("s1", "s2", S2) if first == S1 else ("s2", "s1", S1)
    wg.key(name)
    lost = lab.crash(name)  # silently: no pong, no WireGuard answer
    wg.count("m", name, sent=400)
    m.update_wg(
        {
            k: WgPeerReading(k, None, p.allowed_ips, 1.0, wg.rx.get(("m", k), 0), 400)
            for k, p in m.desired_peers().items()
        },
        lab.now,
    )
    start = lab.now
    lab.run_until(start + TIMERS.link_timeout + 0.5)
    assert first not in m.sessions and other_ip in m.sessions  # failed over at once
    assert any(isinstance(e, ev.GatewayUnanswered) for e in m.events())
    assert m.statics[first].next_hello >= start + TIMERS.hello_retry_slow  # the others first
    assert lost.node.sessions.get(M) is not None  # (it never heard a thing)
    for _ in range(3):  # the new static's WireGuard and table
        wg.feed()
        lab.run_until(lab.now + 0.1)
    assert SUBNET in m.desired_peers()[wg.key(other)].allowed_ips


def test_a_static_lets_a_mobile_go_that_another_static_heard_since() -> None:
    wg = mobile_lab("s1", "s2")
    lab, m = wg.lab, wg.mobile
    (first,) = [ip for ip in (S1, S2) if ip in m.sessions]
    name, other = ("s1", "s2") if first == S1 else ("s2", "s1")
    old = lab.boxes[name].node
    # The path between the mobile and its static breaks (both stay up) and
    # the mobile moves to the other static; the old one must not keep
    # listing it until mobile_dead_after, drawing traffic for it.
    wg.run(lab.now + 20.0, alive=False)
    m._drop_session(first, lab.now)
    for _ in range(10):
        lab.run_until(lab.now + 0.1)
        wg.feed()
    assert lab.boxes[other].wg_ip in m.sessions
    assert M not in old.sessions
    moved = [e for e in old.events() if isinstance(e, ev.MobileMoved)]
    assert moved and moved[0].to.wg_ip == lab.boxes[other].wg_ip


def test_a_static_calling_back_a_mobile_that_moved_on_does_not_take_it_away() -> None:
    """A static restarted after a crash calls back the nodes of its peers
    file; the mobile declines (a Bye), but that static may list it for a
    moment. Its gateway must not take that for a move."""
    wg = mobile_lab("s1", "s2")
    lab, m = wg.lab, wg.mobile
    (first,) = [ip for ip in (S1, S2) if ip in m.sessions]
    name, other = ("s1", "s2") if first == S1 else ("s2", "s1")
    gateway = lab.boxes[name].node
    wg.run(lab.now + 30.0)
    assert lab.now - gateway.sessions[M].last_heard > 10.0  # idle: quiet there a while
    restarted = lab.start(other)
    for _ in range(3):  # it meets the other static, and they swap tables
        lab.run_until(lab.now + 0.5)
        wg.feed()
    assert lab.boxes[name].wg_ip in restarted.sessions and restarted.table.version
    restarted.call_back({M: lab.boxes["m"].admin}, lab.now)
    lab.step()  # INIT -> the mobile, which answers
    lab.step()  # RESPONSE -> the static: a session (its FINISH and the mobile's Bye follow)
    assert M in restarted.sessions
    key = wg.key("m")
    readings = dict(restarted._wg)
    readings[key] = WgPeerReading(key, None, (), None, 0, 0)  # in its WireGuard, never heard
    restarted.update_wg(readings, lab.now)
    restarted.handle_timer(lab.now + TIMERS.table_push_delay)  # lists the mobile, for a moment
    lab.settle()
    assert M not in restarted.sessions and first in m.sessions
    assert M in gateway.sessions


# --- the mesh: budget, cold start, failover (simulator) -----------------------------------

PING = 200.0  # bytes per second each way


def mobile_mesh(
    seed: int = 1, second_static: bool = True, wg_period: float | None = None
) -> SimNet:
    """The working example with alpha mobile (behind its own NAT; the highest
    wg IP, so that eager nodes would open a pair towards it), and a second
    public static gamma."""
    net = SimNet(Timers(), seed=seed, wg_period=wg_period)
    net.add_host("beta", "198.51.100.1", "10.1.1.1", static=True)
    if second_static:
        net.add_host("gamma", "198.51.100.5", "10.1.1.5", static=True)
    net.add_host("alpha", "192.168.2.2", "10.1.1.9", nat=Nat("198.51.100.4"), mobile=True)
    home = Nat("198.51.100.3")
    net.add_host("charlie", "192.168.1.2", "10.1.1.3", nat=home, lan="home")
    net.add_host("delta", "192.168.1.3", "10.1.1.4", nat=home, lan="home")
    return net


def reachable_by_all(net: SimNet, name: str = "alpha") -> bool:
    return all(net.pings(other, name) for other in net.hosts if other != name)


def direct(net: SimNet, a: str, b: str) -> bool:
    return net.path(a, b) == [a, b] and net.path(b, a) == [b, a]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cold_start_reachable_from_every_node_within_3_s(seed: int) -> None:
    net = mobile_mesh(seed)
    for name in ("beta", "gamma", "charlie", "delta"):
        net.start(name)
    net.run_for(5.0)
    net.start("alpha")
    took = net.wait_for(lambda: reachable_by_all(net), limit=10.0)
    assert took < 3.0, f"reachable after {took:.2f} s"


def test_idle_mobile_stays_within_5_bytes_a_second_for_ten_minutes() -> None:
    net = mobile_mesh(wg_period=0.5)
    for name in net.hosts:
        net.start(name)
    assert net.wait_for(lambda: reachable_by_all(net), limit=5.0) < 3.0
    net.run_for(60.0)
    before = dict(net.underlay)
    net.run_for(600.0)
    rate = {name: (net.underlay.get(name, 0) - before.get(name, 0)) / 600.0 for name in net.hosts}
    assert rate["alpha"] <= 5.0, rate
    assert rate["charlie"] > 5 * rate["alpha"]  # an ordinary node pays for pings and peers
    assert reachable_by_all(net)
    alpha = net.hosts["alpha"].node
    assert alpha is not None and not alpha.pairs.paths  # nobody opened a pair to it


def test_others_never_open_a_pair_to_a_mobile_but_its_traffic_does() -> None:
    net = mobile_mesh()
    for name in net.hosts:
        net.start(name)
    net.run_for(10.0)
    assert direct(net, "charlie", "delta")  # eager between the others
    assert not any(direct(net, "alpha", n) for n in ("charlie", "delta"))
    net.flows[("charlie", "alpha")] = PING  # one way, towards the mobile
    took = net.wait_for(lambda: direct(net, "alpha", "charlie"), limit=5.0)
    assert took < 1.5, took
    assert not direct(net, "alpha", "delta")


def test_failover_to_the_second_static_with_traffic() -> None:
    net = mobile_mesh()
    for name in net.hosts:
        net.start(name)
    net.run_for(10.0)
    alpha = net.hosts["alpha"].node
    assert alpha is not None
    (first,) = [ip for ip in alpha.sessions if ip in alpha.statics]
    gateway = next(n for n, h in net.hosts.items() if h.wg_ip == first)
    other = "gamma" if gateway == "beta" else "beta"
    net.flows[("alpha", gateway)] = net.flows[(gateway, "alpha")] = PING
    net.run_for(5.0)
    net.partitioned.add(frozenset(("alpha", gateway)))  # both stay up: only the path breaks
    took = net.wait_for(lambda: net.pings("alpha", other), limit=30.0)
    assert took < 6.0, f"alpha failed over after {took:.2f} s"
    # The old static let it go too: nobody routes to alpha through it.
    assert net.wait_for(lambda: reachable_by_all(net), limit=10.0) < 5.0
    node = net.hosts[gateway].node
    assert node is not None and alpha.info.wg_ip not in node.sessions


def test_a_node_the_mobile_never_heard_of_reaches_it_and_gets_a_direct_link() -> None:
    """A lost table change: the mobile does not ping, so it cannot learn that
    it missed one. The static forwards anyway (rule 4), and traffic makes
    the mobile ask for the whole table."""
    net = mobile_mesh(second_static=False)
    for name in net.hosts:
        net.start(name)
    net.run_for(10.0)
    alpha = net.hosts["alpha"].node
    assert alpha is not None
    # As if the last change, the one that listed delta, was lost:
    del alpha.listings.tables[wg_ip(1)][net.hosts["delta"].wg_ip]
    alpha.listings.versions[wg_ip(1)] -= 1
    alpha._recompute(net.now)
    assert net.pings("delta", "alpha")  # via beta, accepted through the subnet
    net.flows[("delta", "alpha")] = PING
    took = net.wait_for(lambda: direct(net, "alpha", "delta"), limit=10.0)
    assert took < 2.0, took
    assert net.hosts["delta"].wg_ip in alpha.listings.tables[wg_ip(1)]


def test_pairs_of_a_mobile_are_closed_when_idle() -> None:
    net = SimNet(Timers(idle_after=20.0))
    net.add_host("beta", "198.51.100.1", "10.1.1.1", static=True)
    net.add_host("alpha", "198.51.100.2", "10.1.1.2", mobile=True)
    net.add_host("charlie", "198.51.100.3", "10.1.1.3")
    for name in net.hosts:
        net.start(name)
    net.run_for(5.0)
    net.flows[("alpha", "charlie")] = PING
    assert net.wait_for(lambda: direct(net, "alpha", "charlie"), limit=5.0) < 1.5
    net.flows.clear()
    assert net.wait_for(lambda: not direct(net, "alpha", "charlie"), limit=60.0) < 35.0
    net.run_for(0.5)  # (the Bye on its way)
    assert all(net.pings(a, b) for a, b in itertools.permutations(net.hosts, 2))
