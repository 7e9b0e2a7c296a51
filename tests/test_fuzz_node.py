"""Hostile input against a whole ``Node``: dropped and counted, never a crash or a leak.

Two attackers:

- an outsider, without the shared key: random bytes, mangled (truncated,
  bit-flipped, oversized) copies of real datagrams, and verbatim replays of
  real datagrams in any order, from any source, at any later time. These
  must never change state (a victim that sees them against a twin that does
  not), and each one is dropped and counted once in ``node.drops`` (or, an
  INIT, answered: a responder cannot tell a copy from a retry).
- an insider, a member with the shared key and key pairs of its own
  (``tests.member``), against a victim in a small live mesh of honest nodes:
  genuine handshakes for any wg IP (colliding with members and statics too),
  any well-formed message over its own sessions, pair-path moves, and frames
  forged in honest members' names (random ciphertext on their indices and
  counters, its own keys under their wg IP, handshake frames it cannot
  complete, replays). It may change state for itself (it is a member), but a
  frame in an honest member's name must change nothing the victim holds for
  that member, and no honest member's wg IP may ever map to another key. It
  must not crash the node, spin its timer, make it answer an unproven
  address with more than it sent, or grow any container past a fixed cap;
  once it stops, the honest mesh is whole again.

The real datagrams come from an in-memory mesh (two static, two dynamic nodes,
a burst of handshakes past the INIT budget, restarts) that runs the real
protocol: handshakes, cookies, pings, tables, LAN probes, a direct pair link.
``scripts/fuzz_wire.py`` is the coverage-guided (atheris) counterpart, for the
codec and a Node; a test below runs it briefly.

Gaps found here have tests of their own below, or in test_fuzz_findings.py.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.util
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from random import Random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.helpers import ADMIN_KEY as ADMIN
from tests.helpers import QUICK_TIMERS, SHARED_KEY, make_node, node_info, static_target, wg_ip
from tests.member import Member
from tests.netns import REPO_ROOT, in_ci
from wg_netmanager import noise, wire
from wg_netmanager.core.events import DropReason
from wg_netmanager.core.handshake import (
    INIT_BURST,
    MAX_BARRED,
    MAX_CONFLICTS,
    MAX_PENDING,
    MAX_SEEN_INITS,
    PROLOGUE,
)
from wg_netmanager.core.limits import MAX_SOURCES
from wg_netmanager.core.node import JUNK_BURST, MAX_OLD_VERSION_SOURCES, Node
from wg_netmanager.core.pair_path import PathState
from wg_netmanager.core.replay import WINDOW
from wg_netmanager.core.sessions import MAX_PINGS_IN_FLIGHT, Keys, StaticTarget
from wg_netmanager.core.timers import Timers
from wg_netmanager.model import Endpoint, WgPeerReading
from wg_netmanager.wire import (
    Bye,
    Info,
    NodeInfo,
    PathChallenge,
    PathResponse,
    Ping,
    Pong,
    Probe,
    ProbeAck,
    Ready,
    Refused,
    Relay,
    Table,
    TableEntry,
    TableRequest,
)

# A small subnet: an insider that picks wg IPs at random then collides with
# real members and statics often, which is where the interesting states are.
SUBNET = IPv4Network("10.1.1.0/28")
HOSTS = SUBNET.num_addresses - 2  # usable wg IPs
T = QUICK_TIMERS
STATIC_OCTETS = (1, 2)
MAX_TABLE_PARTS = 4096  # the decoder's limit for Table.parts


def underlay(octet: int) -> str:
    return f"198.51.100.{octet}"


def admin(octet: int) -> Endpoint:
    return (underlay(octet), 50500 + octet)


def statics(pinned: bytes | None = None) -> list[StaticTarget]:
    """The statics of network.yaml; ``pinned``: the publicKey pinned for the first."""
    targets = [static_target(o) for o in STATIC_OCTETS]
    targets[0].pinned_key = pinned
    return targets


# --- a small mesh of real nodes -------------------------------------------------


@dataclass(frozen=True)
class Captured:
    sender: str  # a node's name, or "" for a datagram from outside the mesh
    source: Endpoint  # as the receiver sees it
    dest: Endpoint
    data: bytes
    receiver: str | None  # the node it goes to (None: nobody in the mesh)


class Mesh:
    """Nodes on one flat underlay, and a WireGuard that handshakes as soon as
    both sides have each other as peers.

    Node N is at 198.51.100.N (or another address it was started at) and,
    through the tunnel, at its wg IP; its admin port is 50500+N. Datagrams
    wait in ``queue`` until delivered (in order, instantly); ``log`` keeps
    everything sent. Randomness comes from one seeded ``Random``: a mesh
    repeats byte for byte, and so does a deep copy of it.
    """

    def __init__(self, seed: int, timers: Timers = T, pinned: bytes | None = None) -> None:
        self.rng = Random(seed)
        self.timers = timers
        self.pinned = pinned
        self.now = 0.0
        self.nodes: dict[str, Node] = {}
        self.address: dict[str, str] = {}
        self.queue: list[Captured] = []
        self.log: list[Captured] = []
        # Keys whose WireGuard is outside the mesh (an attacker's): the nodes'
        # WireGuard has them as peers, but no handshake ever happens.
        self.outside_keys: set[str] = set()

    def start(self, name: str, octet: int, address_octet: int | None = None) -> Node:
        node = make_node(
            node_info(name, octet),
            statics=statics(self.pinned),
            timers=self.timers,
            now=self.now,
            rng=self.rng,
            subnet=SUBNET,
            # A LAN address makes dynamic pairs probe each other.
            local_addresses=[underlay(octet if address_octet is None else address_octet)],
        )
        self.nodes[name] = node
        self.address[name] = underlay(octet if address_octet is None else address_octet)
        return node

    def where(self, dest: Endpoint) -> str | None:
        for name, node in self.nodes.items():
            host = dest[0] in (str(node.info.wg_ip), self.address[name])
            if host and dest[1] == node.info.admin_port:
                return name
        return None

    def source_of(self, name: str, dest: Endpoint) -> Endpoint:
        """Admin traffic to a wg IP goes through the tunnel: the receiver sees
        the sender's wg IP, as the kernel would show it."""
        node = self.nodes[name]
        tunnel = IPv4Address(dest[0]) in SUBNET
        host = str(node.info.wg_ip) if tunnel else self.address[name]
        return (host, node.info.admin_port)

    def collect(self) -> list[Captured]:
        out = []
        for name, node in self.nodes.items():
            node.events()  # outputs the daemon consumes: captured state holds none
            node.take_resolve_requests()
            for data, dest in node.datagrams_to_send():
                out.append(Captured(name, self.source_of(name, dest), dest, data, self.where(dest)))
        self.queue += out
        self.log += out
        return out

    def deliver(self, limit: int | None = None) -> None:
        """Deliver queued datagrams (all, or the first ``limit``) and their answers."""
        self.collect()
        for count in range(10_000):
            if not self.queue or (limit is not None and count >= limit):
                return
            item = self.queue.pop(0)
            if item.receiver is not None:
                self.nodes[item.receiver].receive_datagram(item.data, item.source, self.now)
            self.collect()
        raise AssertionError("datagram storm in the mesh")

    def feed_wg(self) -> None:
        """Every node applied its desired state and read `wg show`."""
        by_key = {n.info.public_key: (name, n) for name, n in self.nodes.items()}
        for node in self.nodes.values():
            node.wg_applied(node.state_version, self.now)
            readings = {}
            for key, peer in node.desired_peers().items():
                endpoint, age = peer.endpoint, None
                if key in by_key:
                    name, owner = by_key[key]
                    if node.info.public_key in owner.desired_peers():
                        endpoint, age = (self.address[name], owner.info.wg_port), 0.0
                elif key not in self.outside_keys:
                    continue
                readings[key] = WgPeerReading(key, endpoint, peer.allowed_ips, age, 0, 0)
            node.update_wg(readings, self.now)

    def advance(self, until: float) -> int:
        """Time passes: timers fire at their deadlines (as the daemon fires
        them), everything is delivered at once. Returns the timers fired."""
        fired = 0
        self.deliver()
        while True:
            due = min((d for n in self.nodes.values() if (d := n.get_timer()) is not None), default=None)
            if due is None or due > until:
                break
            self.now = max(self.now, due)
            for name, node in self.nodes.items():
                deadline = node.get_timer()
                if deadline is not None and deadline <= self.now:
                    node.handle_timer(self.now)
                    fired += 1
                    after = node.get_timer()
                    # A deadline still due right after handle_timer would spin the daemon.
                    assert after is None or after > self.now, (name, after, self.now)
            self.deliver()
            self.feed_wg()
            self.deliver()
        self.now = max(self.now, until)
        return fired


def converged(mesh: Mesh) -> None:
    ips = {n.info.wg_ip for n in mesh.nodes.values()}
    for name, node in mesh.nodes.items():
        assert set(node.sessions) == ips - {node.info.wg_ip}, f"mesh did not converge at {name}"
        for ip, session in node.sessions.items():
            holder = next(n for n in mesh.nodes.values() if n.info.wg_ip == ip)
            assert (session.info.public_key, session.boot) == (holder.info.public_key, holder.boot)
        assert all(p.state is PathState.DIRECT for p in node.pairs.paths.values()), name


# --- a real exchange, captured ------------------------------------------------


@dataclass(frozen=True)
class Capture:
    now: float
    nodes: dict[str, Node]  # the converged state; deep-copy before use
    log: tuple[Captured, ...]


@functools.cache
def capture() -> Capture:
    """Run a real mesh: handshakes, cookies, tables, a direct LAN pair,
    restarts at the same and at another address, pings."""
    mesh = Mesh(seed=7)
    for name, octet in (("s1", 1), ("s2", 2), ("d5", 5), ("d6", 6)):
        mesh.start(name, octet)
    mesh.advance(5.0)
    # Handshakes from d5 to s1 in one instant, past s1's INIT budget: the last
    # gets a COOKIE and comes back with it, the others' RESPONSEs find no
    # handshake at d5 (each replaced the one before), the session renews its
    # keys (the previous keys stay for receiving).
    d5, s1 = mesh.nodes["d5"], mesh.nodes["s1"]
    for _ in range(int(INIT_BURST) + 2):
        d5.handshake.initiate(s1.info.wg_ip, admin(1), mesh.now)
    mesh.deliver()
    assert s1.drops.get(DropReason.COOKIE_SENT) and s1.sessions[d5.info.wg_ip].previous
    mesh.advance(6.0)
    # A restart at the same address (accepted at once; its old keys' datagrams
    # are left to replay) ...
    mesh.nodes["d6"].shutdown(mesh.now)
    mesh.deliver()
    mesh.start("d6", 6)
    mesh.advance(9.0)
    # ... and one at another address: the holder is asked first, and what the
    # new boot sends meanwhile waits for that answer (contender keys).
    mesh.start("d5", 5, address_octet=7)
    mesh.advance(16.0)
    converged(mesh)
    # An outsider replays an old boot's TRANSPORT to s1 from an address of
    # its own: s1 answers STALE (smaller) there, for the replays below to try.
    old = next(
        c
        for c in mesh.log
        if c.receiver == "s1"
        and c.sender == "d6"
        and isinstance(wire.open_frame(ADMIN, c.data), wire.Transport)
    )
    mesh.nodes["s1"].receive_datagram(old.data, ("203.0.113.50", 7777), mesh.now)
    mesh.deliver()
    assert any(isinstance(wire.open_frame(ADMIN, c.data), wire.Stale) for c in mesh.log)
    for node in mesh.nodes.values():
        assert not node._outbox and not node._events
    return Capture(mesh.now, mesh.nodes, tuple(mesh.log))


# --- state snapshots ----------------------------------------------------------

# Per class: anti-abuse bookkeeping that a hostile datagram may legitimately
# touch (counters, buckets, handshakes answered to an address nobody proves),
# caches of derived data (filled lazily, so on one twin only), and outputs
# the test drains itself.
BOOKKEEPING = {
    "Node": frozenset(
        {
            *("drops", "_junk", "_stale_sent", "_old_versions", "_sources"),
            *("_outbox", "_events", "_rng", "_random_bytes"),
        }
    ),
    "Handshake": frozenset(
        {"pending", "_seen_inits", "rate", "_cookies_sent", "_secrets", "_secret_until"}
    ),
}
BACK_REFERENCES = frozenset({"_host"})


def freeze(value: Any) -> Any:
    """A hashable, structural copy: dataclasses, plain and __slots__ objects
    (replay windows, token buckets) and containers compare by content; dict
    order does not matter."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return (type(value).__name__, tuple(freeze(getattr(value, f.name)) for f in fields))
    if isinstance(value, dict):
        return ("dict", frozenset((freeze(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, set | frozenset):
        return ("set", frozenset(freeze(v) for v in value))
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, IPv4Address | IPv4Network | bytes | str | int | float | None):
        return value
    if hasattr(value, "__slots__"):
        return (type(value).__name__, tuple(freeze(getattr(value, s)) for s in value.__slots__))
    if hasattr(value, "__dict__") and not callable(value):
        # e.g. token buckets, the node's parts; a part's view of its node is
        # a back reference, not state of its own.
        skip = BACK_REFERENCES | BOOKKEEPING.get(type(value).__name__, frozenset())
        own = {k: v for k, v in vars(value).items() if k not in skip}
        return (type(value).__name__, freeze(own))
    return value


def state(node: Node, now: float) -> Any:
    """Everything a datagram could change except bookkeeping (see BOOKKEEPING).

    Attributes are enumerated, not listed by hand, so that state added to the
    core later is covered without touching this test.
    """
    skip = BOOKKEEPING["Node"]
    attrs = {k: freeze(v) for k, v in vars(node).items() if k not in skip}
    stats = dataclasses.replace(node.statistics(now), drops={})
    return (attrs, freeze(stats), freeze(node.desired_peers()), freeze(node.desired_routes()))


def changed(before: Any, after: Any) -> list[str]:
    """Which parts of two ``state`` snapshots differ (for readable failures)."""
    names = [k for k in before[0] | after[0] if before[0].get(k) != after[0].get(k)]
    extra = ["statistics", "desired peers", "desired routes"]
    return names + [n for n, a, b in zip(extra, before[1:], after[1:], strict=True) if a != b]


def total_drops(node: Node) -> int:
    return sum(node.drops.values())


def drain(node: Node) -> list[tuple[bytes, Endpoint]]:
    node.events()  # the daemon logs and forgets them after every input
    node.take_resolve_requests()
    return node.datagrams_to_send()


def frames(out: list[tuple[bytes, Endpoint]]) -> list[tuple[wire.Frame, Endpoint]]:
    return [(wire.open_frame(ADMIN, data), dest) for data, dest in out]


def hostile(node: Node, data: bytes, source: Endpoint, now: float) -> None:
    """``data`` to ``node``, answered with throwaway randomness: what it draws
    for an answer (nonces, ephemerals, a cookie secret) must not show in any
    state compared, and its twin's random stream stays in step with its own."""
    saved = node._random_bytes, node._rng
    node._random_bytes, node._rng = os.urandom, Random()
    try:
        node.receive_datagram(data, source, now)
    finally:
        node._random_bytes, node._rng = saved


# --- outsider -------------------------------------------------------------------

ENDPOINTS = st.tuples(st.ip_addresses(v=4).map(str), st.integers(1, 65535))


@st.composite
def outsider_action(draw: st.DrawFn, log_size: int, mine: list[int]) -> tuple[Any, ...]:
    kinds = ["replay", "junk", "truncate", "flip", "extend", "oversize", "tick"]
    kind = draw(st.sampled_from(kinds))
    # Often a datagram that was sent to the victim (the others are not even
    # for it), or one of the freshest: their counters may still be ahead of
    # some receiver's window, which is where replay protection bites.
    fresh = st.integers(log_size - 4, log_size - 1)
    index = draw(st.sampled_from(mine) | st.integers(0, log_size - 1) | fresh)
    if kind == "junk":
        arg: Any = draw(st.binary(max_size=1500))
    elif kind == "truncate":
        arg = draw(st.integers(0, 10_000))  # taken modulo the datagram's length
    elif kind == "flip":
        arg = (draw(st.integers(0, 10_000)), draw(st.integers(1, 255)))
    elif kind == "extend":
        arg = draw(st.binary(min_size=1, max_size=64))
    elif kind == "oversize":
        arg = draw(st.integers(1, 3 * wire.MAX_DATAGRAM))
    else:
        arg = None
    source = draw(st.none() | ENDPOINTS)  # None: the original source
    dt = draw(st.floats(0.0, 0.3) | st.sampled_from([1.0, 4.0, 12.0]))
    return kind, index, arg, source, dt


def mangle(kind: str, data: bytes, arg: Any) -> bytes:
    if kind == "junk":
        return bytes(arg)
    if kind == "truncate":
        return data[: arg % len(data)]
    if kind == "flip":
        position, mask = arg
        out = bytearray(data)
        out[position % len(out)] ^= mask
        return bytes(out)
    if kind == "extend":
        return data + arg
    if kind == "oversize":
        return data + bytes(max(arg, wire.MAX_DATAGRAM + 1 - len(data)))
    return data


def keys_for(node: Node, sender: IPv4Address, index: int) -> Keys | None:
    session = node.sessions.get(sender)
    if session is None:
        return None
    for keys in (session.keys, session.previous):
        if keys is not None and keys.local_index == index:
            return keys
    return None


def expected_replay(victim: Node, frame: wire.Frame) -> tuple[str | None, tuple[type, ...]]:
    """(the one drop reason a verbatim replay must get, where it is
    determined; the frames it may be answered with), from the state before."""
    me = victim.info.wg_ip
    if frame.receiver != me:
        return DropReason.NOT_FOR_US, ()
    if frame.sender == me and isinstance(frame, wire.Transport | wire.Stale):
        return DropReason.OWN_WG_IP, ()
    match frame:
        case wire.Transport():
            if keys_for(victim, frame.sender, frame.to_index) is not None:
                return DropReason.REPLAY, ()  # the victim saw this very counter before
            # An old boot's, or old keys': the peer is told (smaller than what came).
            return DropReason.NO_SESSION, (wire.Stale,)
        case wire.Init():
            # A copy (dropped), or one whose record expired: answered like any
            # INIT, by a RESPONSE or a COOKIE no larger than the INIT.
            return None, (wire.Response, wire.Cookie)
        case wire.Response() | wire.Finish() | wire.Cookie():
            if frame.to_index in victim.handshake.pending:
                return None, ()
            return DropReason.NO_HANDSHAKE, ()
        case wire.Stale():
            session = victim.sessions.get(frame.sender)
            if session is not None and session.keys.remote_index == frame.to_index:
                return None, ()
            return DropReason.STALE_INDEX, ()
    raise AssertionError(frame)


def twins(name: str) -> tuple[Node, Node]:
    """The captured node twice: a victim for hostile input and a twin that
    never sees it (each with its own copy of the random stream, in step)."""
    node = copy.deepcopy(capture().nodes[name])
    return node, copy.deepcopy(node)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_outsider_junk_and_replays_change_nothing_and_are_counted(data: st.DataObject) -> None:
    cap = capture()
    name = data.draw(st.sampled_from(sorted(cap.nodes)), label="victim")
    victim, twin = twins(name)
    log = cap.log
    # Long sequences: one example then covers many datagrams and their order
    # (hypothesis otherwise spends most examples on one or two actions).
    mine = [i for i, c in enumerate(log) if c.receiver == name]
    actions = data.draw(st.lists(outsider_action(len(log), mine), min_size=8, max_size=40))
    now = cap.now
    for kind, index, arg, source, dt in actions:
        now += dt
        if kind == "tick":
            # Time passes for both (sessions time out, INITs and pings go out):
            # whatever the victim got before must not show in what it does now.
            outs = []
            for node in (victim, twin):
                due = node.get_timer()
                if due is not None and due <= now:
                    node.handle_timer(now)
                outs.append(drain(node))
            assert outs[0] == outs[1], (frames(outs[0]), frames(outs[1]))
            reference = state(twin, now)
            assert state(victim, now) == reference, changed(reference, state(victim, now))
            continue
        item = log[index]
        datagram = mangle(kind, item.data, arg)
        source = source or item.source
        if kind == "replay" and unaccepted(victim, item):
            continue  # see unaccepted()
        before = dict(victim.drops)
        expected = expected_replay(victim, wire.open_frame(ADMIN, item.data))
        hostile(victim, datagram, source, now)
        out = drain(victim)
        after, reference = state(victim, now), state(twin, now)  # statistics() depends on now
        assert after == reference, (kind, item, changed(reference, after))
        if kind == "replay":
            check_replay(victim, item, source, before, expected, out)
        else:
            # Junk: exactly one drop, no answer.
            assert total_drops(victim) == total_drops_of(before) + 1 and out == [], (kind, out)


def total_drops_of(drops: dict[DropReason, int]) -> int:
    return sum(drops.values())


def unaccepted(victim: Node, item: Captured) -> bool:
    """A TRANSPORT sent to the victim under keys it holds now, but never
    accepted: one that came while those keys were a contender's (the holder
    was being asked). test_fuzz_findings.py shows that a replay of it is
    accepted once the contender takes over; with that fixed, the victim's
    window has every such counter and this is never true."""
    frame = wire.open_frame(ADMIN, item.data)
    if not isinstance(frame, wire.Transport) or frame.receiver != victim.info.wg_ip:
        return False
    keys = keys_for(victim, frame.sender, frame.to_index)
    if keys is None:
        return False
    window, counter = keys.replay, frame.counter
    offset = window.highest - counter
    return counter > window.highest or (offset < WINDOW and not window.bitmap >> offset & 1)


def check_replay(
    victim: Node,
    item: Captured,
    source: Endpoint,
    before: dict[DropReason, int],
    expected: tuple[str | None, tuple[type, ...]],
    out: list[tuple[bytes, Endpoint]],
) -> None:
    """What a verbatim replay may do: be dropped and counted once, or (an
    INIT) be answered; an answer goes only to the source, no larger."""
    new = {r: n - before.get(r, 0) for r, n in victim.drops.items() if n != before.get(r, 0)}
    if new == {DropReason.MUTED_SOURCE: 1}:
        assert out == []  # the source sent too much junk: not even opened
        return
    reason, answers = expected
    # Dropped once, or (an INIT) answered with a RESPONSE and not counted.
    responses = [f for f, _ in frames(out) if isinstance(f, wire.Response)]
    assert sum(new.values()) + len(responses) == 1, (item, new, frames(out))
    if reason is not None:
        assert new == {reason: 1}, (reason, item, new)
    assert len(out) <= 1
    for (answer, dest), (sent, _) in zip(frames(out), out, strict=True):
        assert isinstance(answer, answers), (item, answer)
        assert dest == source and len(sent) <= len(item.data), (item, answer, dest)


@pytest.mark.parametrize("name", ["s1", "s2", "d5", "d6"])
def test_every_captured_datagram_replayed_changes_nothing(name: str) -> None:
    # Exhaustive where the random test above samples: every datagram of the
    # capture, verbatim, in order, to this node, from where it came and then,
    # after time passed, from an address of the attacker's.
    cap = capture()
    victim, twin = twins(name)
    now = cap.now
    for later, attacker in ((0.0, None), (T.dead_after / 2, ("203.0.113.77", 7777))):
        now += later
        for node in (victim, twin):
            while (due := node.get_timer()) is not None and due <= now:
                node.handle_timer(due)
        assert drain(victim) == drain(twin)
        reference = state(twin, now)
        for item in cap.log:
            if unaccepted(victim, item):
                continue
            source = attacker or item.source
            before = dict(victim.drops)
            expected = expected_replay(victim, wire.open_frame(ADMIN, item.data))
            hostile(victim, item.data, source, now)
            out = drain(victim)
            assert state(victim, now) == reference, (item, changed(reference, state(victim, now)))
            check_replay(victim, item, source, before, expected, out)


def test_a_replayed_init_whose_record_expired_is_answered_but_changes_nothing() -> None:
    # The responder keeps INITs it answered for challenge_lifetime; after
    # that a copy looks like a new handshake: answered (no larger), nothing
    # else. The same INIT again at once is a copy again.
    cap = capture()
    victim, twin = twins("s1")
    init = next(
        c
        for c in cap.log
        if c.receiver == "s1" and isinstance(wire.open_frame(ADMIN, c.data), wire.Init)
    )
    now = cap.now
    attacker = ("203.0.113.66", 6666)
    for count in (1, 2):
        hostile(victim, init.data, attacker, now)
        out = drain(victim)
        assert state(victim, now) == state(twin, now)
        if count == 1:
            ((answer, dest),) = frames(out)
            assert isinstance(answer, wire.Response) and dest == attacker
            assert len(out[0][0]) <= len(init.data)
        else:
            assert out == [] and victim.drops[DropReason.REPLAY] == 1


def genuine_ping(victim: Node, peer: str, source: Endpoint, now: float) -> list[Any]:
    """``peer``'s next real ping (its keys, its next counter); what the victim answers."""
    sender = capture().nodes[peer]
    me = victim.info.wg_ip
    keys = sender.sessions[me].keys
    counter = keys.sent + 1000  # after anything it sent
    header = wire.Transport.make_header(sender.info.wg_ip, me, keys.remote_index, counter)
    body = noise.encrypt(keys.send, counter, header, wire.encode_message(Ping(999)))
    frame = wire.Transport(sender.info.wg_ip, me, keys.remote_index, counter, body, header)
    victim.receive_datagram(wire.seal_frame(ADMIN, frame), source, now)
    return [read(victim, frame) for frame, _dest in frames(drain(victim))]


def read(sender: Node, frame: wire.Frame) -> wire.Message | None:
    """A TRANSPORT frame ``sender`` sealed, read with its own keys (a test's privilege)."""
    if not isinstance(frame, wire.Transport):
        return None
    session = sender.sessions[frame.receiver]
    body = noise.decrypt(session.keys.send, frame.counter, frame.header, frame.ciphertext)
    return wire.decode_message(body)


def test_junk_flood_is_counted_once_each_and_mutes_only_its_source() -> None:
    victim, twin = twins("s1")
    now = capture().now
    flooder = ("203.0.113.66", 6666)
    count = 10 * int(JUNK_BURST)
    junk = Random(0)
    before = total_drops(victim)
    for i in range(count):
        victim.receive_datagram(junk.randbytes(i % 200), flooder, now + i * 1e-4)
    assert total_drops(victim) == before + count  # muted or not, each datagram counted once
    assert victim.drops[DropReason.MUTED_SOURCE] > count // 2
    assert drain(victim) == []
    assert state(victim, now) == state(twin, now)
    # Another source (here: a real peer, at its real address) is heard as before.
    assert any(isinstance(m, Pong) for m in genuine_ping(victim, "s2", admin(2), now))


def test_spoofed_junk_does_not_silence_a_peer() -> None:
    # Junk muting keyed by the claimed (spoofable) source endpoint would let an
    # off-path outsider who spoofs a static peer's admin endpoint (public in
    # network.yaml) at ~JUNK_RATE/s silence that peer.
    victim, _ = twins("s1")
    now = capture().now
    for _ in range(3 * int(JUNK_BURST)):
        victim.receive_datagram(b"\x02" + bytes(60), admin(2), now)  # source spoofed
    answers = genuine_ping(victim, "s2", admin(2), now)
    assert victim.drops.get(DropReason.MUTED_SOURCE, 0) == 0, victim.drops
    assert any(isinstance(m, Pong) for m in answers)


def test_each_dropped_datagram_is_counted_once() -> None:
    # TRANSPORT frames for keys nobody has, from one source: each is dropped
    # ('no session') once, and the STALE answers stop at the source's budget
    # without a second count ('rate limited').
    victim, _ = twins("s1")
    victim.drops.clear()
    now = capture().now
    count = 30
    for counter in range(count):
        header = wire.Transport.make_header(wg_ip(9), victim.info.wg_ip, 12345, counter)
        frame = wire.Transport(wg_ip(9), victim.info.wg_ip, 12345, counter, bytes(32), header)
        victim.receive_datagram(wire.seal_frame(ADMIN, frame), ("203.0.113.9", 9), now)
    stales = frames(drain(victim))
    assert 0 < len(stales) < count  # the rate limit did apply
    assert all(isinstance(f, wire.Stale) for f, _ in stales)
    assert victim.drops == {DropReason.NO_SESSION: count}, victim.drops
