"""First contact and identity: who may hold a session for a wg IP.

Rules (the story is in docs/architecture.md, "No clocks in the protocol"):

1. A hello creates or replaces a session only if it echoes a challenge we
   issued within ``challenge_lifetime``; each challenge counts once. Anything
   unproven is answered with a challenge (rate limited per source IP, so we
   reflect nothing) and changes nothing.
2. A boot replaced by a newer one, or refused because its wg IP's holder is
   alive, is barred for ``dead_after``: if it proves itself again, that is a
   conflict, not a session.
3. One wg IP, one live node; one WireGuard key, one node. A proven claim of
   our own wg IP, of a key another session shows, or by a barred boot is
   refused: the claimant is told (``Refused``, echoing its challenge so a
   replay means nothing) and both sides report a conflict.
4. A proven new boot from the holder's own address is a restart (one UDP
   port, one socket): accepted at once. From another address the holder is
   pinged first; a pong within ``incumbent_timeout`` (at least 3 RTTs) makes
   the newcomer refused, silence makes it the holder.
5. Challenges and bars are bounded: the oldest challenge, and the wg IP with
   the oldest bar, make room.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import Protocol

from .. import wire
from ..model import Endpoint
from ..wire import Header, Hello, NodeInfo, Refused
from . import events as ev
from .events import DropReason
from .limits import MAX_SOURCES, TokenBuckets
from .sessions import Contender, Session
from .timers import Timers

# Answers to unauthenticated datagrams (challenges) per source IP: a burst
# and a refill rate, so the node cannot be used to reflect traffic.
CHALLENGE_BURST = 8.0
CHALLENGE_RATE = 4.0  # per second
MAX_CONFLICTS = 8  # conflicts kept for status and TUI
MAX_CHALLENGES = 1024
MAX_BARRED = 1024  # boots refused (replaced or in conflict), all wg IPs together


class Challenges:
    """Challenges we issued and until when they count (rules 1 and 5)."""

    def __init__(self) -> None:
        self._expiry: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._expiry)

    def issue(self, challenge: bytes, now: float, lifetime: float) -> None:
        """Remember ``challenge`` (fresh random bytes) until ``now + lifetime``."""
        if len(self._expiry) >= MAX_CHALLENGES:
            self.expire(now)
            while len(self._expiry) >= MAX_CHALLENGES:
                self._expiry.pop(next(iter(self._expiry)))
        self._expiry[challenge] = now + lifetime

    def take(self, echo: bytes | None, now: float) -> bool:
        """True if ``echo`` is a live challenge of ours; it is used up either way."""
        expiry = None if echo is None else self._expiry.pop(echo, None)
        return expiry is not None and expiry > now

    def expire(self, now: float) -> None:
        for challenge in [c for c, expiry in self._expiry.items() if expiry <= now]:
            del self._expiry[challenge]


class Barred:
    """Boots that may not have a session: wg IP -> boot -> until (rules 2 and 5)."""

    def __init__(self) -> None:
        self._until: dict[IPv4Address, dict[bytes, float]] = {}

    def __len__(self) -> int:
        return sum(len(boots) for boots in self._until.values())

    def __contains__(self, claim: tuple[IPv4Address, bytes]) -> bool:
        wg_ip, boot = claim
        return boot in self._until.get(wg_ip, {})

    def bar(self, wg_ip: IPv4Address, boot: bytes, until: float, now: float) -> None:
        self._until.setdefault(wg_ip, {})[boot] = until
        if len(self) > MAX_BARRED:
            self.expire(now)
            while len(self) > MAX_BARRED:
                oldest = min(self._until, key=lambda ip: min(self._until[ip].values()))
                del self._until[oldest]

    def expire(self, now: float) -> None:
        for wg_ip, boots in list(self._until.items()):
            for boot in [b for b, until in boots.items() if until <= now]:
                del boots[boot]
            if not boots:
                del self._until[wg_ip]


ConflictEvent = ev.Conflict | ev.RefusedByPeer


class HandshakeHost(Protocol):
    """What ``Handshake`` reads of its node and may ask of it."""

    @property
    def info(self) -> NodeInfo: ...

    @property
    def sessions(self) -> Mapping[IPv4Address, Session]: ...

    def establish(self, header: Header, info: NodeInfo, addr: Endpoint, now: float) -> Session:
        """A proven boot gets a session (replacing an older boot's)."""

    def update_info(self, session: Session, info: NodeInfo, now: float) -> None:
        """A session's node announced new info (addresses, port)."""

    def drop_session(self, wg_ip: IPv4Address, now: float) -> None: ...

    def ping(self, session: Session, now: float) -> None: ...

    def send(self, message: wire.Message, addr: Endpoint, to: IPv4Address) -> None: ...

    def emit(self, event: ev.Event) -> None: ...

    def drop(self, reason: DropReason) -> None: ...

    def ref(self, wg_ip: IPv4Address) -> ev.PeerRef: ...

    def random_bytes(self, size: int) -> bytes: ...


class Handshake:
    """First contact and identity of one node (rules: the module docstring)."""

    def __init__(self, host: HandshakeHost, timers: Timers) -> None:
        self._host = host
        self.timers = timers
        self.challenges = Challenges()
        self.barred = Barred()
        self.rate = TokenBuckets(CHALLENGE_BURST, CHALLENGE_RATE, MAX_SOURCES)  # by IP
        self.conflicts: list[ConflictEvent] = []  # recent conflicts, for status and TUI

    def on_hello(self, header: Header, hello: Hello, addr: Endpoint, now: float) -> None:
        host = self._host
        info = hello.info
        if info.wg_ip != header.wg_ip:
            host.drop(DropReason.MALFORMED)
            return
        ours = header.wg_ip == host.info.wg_ip  # another boot claims our own wg IP
        session: Session | None = None if ours else host.sessions.get(header.wg_ip)
        if self.challenges.take(hello.echo, now):
            if ours:
                self._refuse(header, hello, addr, host.info, now)
                return
            twin = self._key_holder(info.public_key, header.wg_ip)
            if twin is not None:
                # Two WireGuard peers with one key cannot be told apart (and a
                # key is made fresh at every start: this one was copied).
                self._refuse(header, hello, addr, twin, now)
                return
            if session is not None and session.boot != header.boot:
                if (header.wg_ip, header.boot) in self.barred:
                    self._refuse(header, hello, addr, session.info, now)
                    return
                if addr != session.addr:
                    self._ask_holder(session, header, hello, addr, now)
                    return
            if session is None or session.boot != header.boot:
                session = host.establish(header, info, addr, now)
            elif not session.replay.accept(header.counter):
                host.drop(DropReason.REPLAY)
                return
        elif session is not None and session.boot == header.boot and header.to == host.info.wg_ip:
            # (An unaddressed hello is a challenge meant for anyone: one sent
            # to a third node and replayed here must not count as the session's.)
            if not session.replay.accept(header.counter):
                host.drop(DropReason.REPLAY)
                return
        else:
            session = None  # not proven: answer with a challenge, change nothing
        if session is not None:
            session.last_heard = now
            if session.info.public_key != info.public_key:
                host.drop(DropReason.KEY_CHANGED)  # one boot, one key: not that boot's node
                return
            if session.info != info:
                host.update_info(session, info, now)
        if hello.want_echo:  # (an unproven claim of our own wg IP too: a live one proves itself)
            if not self.rate.allow(addr[0], now) and session is None:
                host.drop(DropReason.RATE_LIMITED)
                return
            self.send_hello(addr, now, hello.challenge, want_echo=session is None, to=header.wg_ip)
        elif session is None and not self.send_challenge(addr, now):
            host.drop(DropReason.RATE_LIMITED)

    def on_refused(self, header: Header, refused: Refused, now: float) -> None:
        host = self._host
        if not self.challenges.take(refused.echo, now):
            host.drop(DropReason.STALE_REFUSAL)  # not an answer to a hello of ours: a replay?
            return
        holder, me = refused.holder, host.info
        self._note_conflict(
            ev.RefusedByPeer(
                peer=host.ref(header.wg_ip),
                holder_name=holder.name,
                holder_ip=holder.wg_ip,
                holder_key=holder.public_key,
                key_twin=holder.public_key == me.public_key and holder.wg_ip != me.wg_ip,
                our_ip=me.wg_ip,
            )
        )
        if header.wg_ip in host.sessions:
            host.drop_session(header.wg_ip, now)  # it will not talk to us: not a session

    def on_pong(self, session: Session, seq: int, now: float) -> None:
        """A pong answering the holder check means two live claimants (rule 4)."""
        contender = session.contender
        if contender is not None and seq >= contender.ping_seq:
            session.contender = None
            self._refuse(contender.header, contender.hello, contender.addr, session.info, now)

    def handle_timer(self, now: float) -> None:
        """Contenders whose holder did not answer in time take over (rule 4)."""
        for session in list(self._host.sessions.values()):
            contender = session.contender
            if contender is not None and now >= contender.deadline:
                session.contender = None
                header, hello = contender.header, contender.hello
                self._host.establish(header, hello.info, contender.addr, now)
                if hello.want_echo:
                    self.send_hello(contender.addr, now, hello.challenge, False, header.wg_ip)

    def expire(self, now: float) -> None:
        self.challenges.expire(now)
        self.barred.expire(now)

    def deadlines(self) -> list[float]:
        return [s.contender.deadline for s in self._host.sessions.values() if s.contender]

    def replaced(self, wg_ip: IPv4Address, old_boot: bytes, now: float) -> None:
        """A newer boot took over: the old one may not come back (rule 2)."""
        self.barred.bar(wg_ip, old_boot, now + self.timers.dead_after, now)

    def send_challenge(self, addr: Endpoint, now: float) -> bool:
        """Answer an unauthenticated datagram with a challenge, unless ``addr``
        had its share (False: the caller counts the drop, once)."""
        if not self.rate.allow(addr[0], now):
            return False
        self.send_hello(addr, now, echo=None, want_echo=True)
        return True

    def send_hello(
        self,
        addr: Endpoint,
        now: float,
        echo: bytes | None,
        want_echo: bool,
        to: IPv4Address = wire.UNKNOWN_RECEIVER,
    ) -> None:
        host = self._host
        challenge = host.random_bytes(wire.CHALLENGE_SIZE)
        self.challenges.issue(challenge, now, self.timers.challenge_lifetime)
        host.send(Hello(host.info, challenge, echo, want_echo), addr, to)

    def _ask_holder(
        self, session: Session, header: Header, hello: Hello, addr: Endpoint, now: float
    ) -> None:
        """A proven new boot from another address: is the current holder still alive?"""
        if session.contender is not None and session.contender.header.boot == header.boot:
            return  # asked already (a repeated hello)
        self._host.ping(session, now)
        deadline = now + max(self.timers.incumbent_timeout, 3 * (session.rtt or 0.0))
        session.contender = Contender(header, hello, addr, deadline, session.ping_seq)
        self._host.emit(ev.HolderAsked(self._host.ref(header.wg_ip), addr))

    def _refuse(
        self, header: Header, hello: Hello, addr: Endpoint, holder: NodeInfo, now: float
    ) -> None:
        """Two live nodes claim one wg IP (or one WireGuard key): the holder keeps
        it, the newcomer is told (rule 3)."""
        self._host.drop(DropReason.CONFLICT)
        self.barred.bar(header.wg_ip, header.boot, now + self.timers.dead_after, now)
        self._note_conflict(
            ev.Conflict(
                address=addr,
                claimant_key=hello.info.public_key,
                claimed_ip=header.wg_ip,
                holder_name=holder.name,
                holder_ip=holder.wg_ip,
                holder_key=holder.public_key,
                key_twin=holder.wg_ip != header.wg_ip,
            )
        )
        if self.rate.allow(addr[0], now):
            self._host.send(Refused(hello.challenge, holder), addr, header.wg_ip)

    def _key_holder(self, public_key: str, wg_ip: IPv4Address) -> NodeInfo | None:
        """Who else (we, or a session of another wg IP) has this WireGuard key."""
        if public_key == self._host.info.public_key:
            return self._host.info
        for ip, session in self._host.sessions.items():
            if ip != wg_ip and session.info.public_key == public_key:
                return session.info
        return None

    def _note_conflict(self, conflict: ConflictEvent) -> None:
        """Report a conflict (once); keep the latest few for status and TUI."""
        if conflict in self.conflicts:
            return
        self._host.emit(conflict)
        self.conflicts = [*self.conflicts, conflict][-MAX_CONFLICTS:]
