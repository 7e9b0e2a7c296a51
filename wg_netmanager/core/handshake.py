"""First contact and identity: sessions by Noise handshake, and who may hold a wg IP.

Rules (the story is in docs/architecture.md, "Sessions and identity"):

1. A session exists only after a Noise XXpsk3 handshake (noise.py): INIT,
   RESPONSE, FINISH. Each side's static key is its WireGuard key, and the
   payload (NodeInfo and a random boot id) must announce exactly that key: a
   node can only ever claim a WireGuard key it holds. The pre-shared key comes
   from the network's shared key, so a session proves membership too. Each
   side proves it is alive now (the other's fresh ephemeral is in every key),
   so a replayed handshake message changes nothing and no clocks are needed.
   A RESPONSE or FINISH that does not authenticate is dropped and changes
   nothing: anyone who saw the index can send junk on it, and the real one
   must still be taken.
2. A static whose ``publicKey`` is pinned in network.yaml is that key: a
   handshake claiming its wg IP with another key is refused.
3. An INIT costs the responder two DH operations and a pending entry, so it
   is answered only within a per-source-IP budget, and not at all once the
   pending table is half full; beyond that the answer is a COOKIE (a MAC of
   the source address under a rotating secret) that the initiator repeats in
   its INIT, which proves the return path and bypasses the budget. A copy of
   an INIT already answered (a retry always has a fresh ephemeral) is
   dropped before any work. Spoofed or replayed INITs therefore neither fill
   the table nor lock a node out. No answer to an unproven address is larger
   than what it answers (INIT padding; a ``Refused`` names the holder by wg
   IP, name, key and ports only: never larger than the FINISH it answers);
   the FINISH goes where the INIT went, wherever the RESPONSE came from.
4. One wg IP, one live node; one WireGuard key, one node. A proven claim of
   our own wg IP, of a plain WireGuard client's (core/clients.py), of a key
   another session shows, or by a barred boot is refused: the claimant is
   told (``Refused`` over the keys of its own handshake, so only it can read
   it, only now) and both sides report a conflict. A boot replaced by a
   newer one, or refused, is barred for ``dead_after``: refused at once
   while another boot holds the wg IP. A refusal of a barred boot does not
   renew its bar, so a claimant that keeps calling gets in once the holder
   is gone.
   One name, one live node too (compared without case, as DNS does): a
   proven claim of a name that we, a session of another wg IP, a table entry
   of another wg IP or a plain WireGuard client uses is refused the same way
   (not barred: nothing but the name is wrong, and the claimant gets in once
   the holder is gone). A boot's own renewal with its name unchanged is not
   judged again. Our own name is judged by the one called: an initiator that
   finds it on the responder makes no session, reports itself refused and
   calls that peer again only slowly (the responder refuses it and reports
   the conflict).
5. A proven new boot with the holder's own key is a restart, accepted at
   once, from the holder's own address (one key, one UDP port, one socket)
   or with a higher boot number (``wire.Hello``: a later run of that key,
   and only the key's holder can say so); never one with a lower number
   than the holder's (an earlier run). Any other claim (another key, as an
   unpinned node makes at a start after a clean stop, or another address
   with the same number) first pings the holder: a pong within
   ``incumbent_timeout`` (at least 3 RTTs) makes the newcomer refused,
   silence makes it the holder (at once if a ping of ours went unanswered
   so long already). An address proves nothing: a member on the path can
   send from it and read what goes there.
6. A new handshake of a boot we have a session with only renews its keys; the
   previous keys stay valid for receiving (both sides may have started one).
7. When both sides start a handshake with each other at once, the lower wg
   IP's initiation goes on: the lower side drops the other's INIT. The
   higher side answers it but keeps its own until a handshake with that
   peer finishes (an INIT names nobody's key: anyone could have sent it).
8. Everything is bounded: pending handshakes, bars, sessions per source IP.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address
from typing import Protocol

import msgspec

from .. import noise, wire
from ..keys import from_b64, to_b64
from ..model import Endpoint
from ..noise import NoiseError
from ..wire import Cookie, Finish, Init, NodeInfo, Response
from . import events as ev
from .events import DropReason
from .limits import MAX_SOURCES, TokenBuckets
from .sessions import Contender, Keys, Session
from .timers import Timers

# INITs answered per source IP without a cookie: a burst and a refill rate.
INIT_BURST = 8.0
INIT_RATE = 4.0  # per second
# Cookie replies, all sources together: each is smaller than the INIT it
# answers (no amplification) and costs no state; a per-source limit would let
# a flood in a victim's name keep the victim's own INITs from getting one.
COOKIE_BURST = 256.0
COOKIE_RATE = 256.0
MAX_PENDING = 512  # handshakes in progress, both roles together
MAX_SEEN_INITS = 4096  # ephemeral keys of INITs answered lately (replays are dropped)
COOKIE_SECRET_LIFETIME = 120.0  # seconds; the previous secret stays valid as long
MAX_BARRED = 1024  # boots refused (replaced or in conflict), all wg IPs together
MAX_CONFLICTS = 8  # conflicts kept for status and TUI
PROLOGUE = b"wg_netmanager admin/2"

ConflictEvent = ev.Conflict | ev.RefusedByPeer


class Barred:
    """Boots that may not have a session: wg IP -> boot -> until (rules 4 and 8)."""

    def __init__(self) -> None:
        self._until: dict[IPv4Address, dict[bytes, float]] = {}

    def __len__(self) -> int:
        return sum(len(boots) for boots in self._until.values())

    def __contains__(self, claim: tuple[IPv4Address, bytes]) -> bool:
        wg_ip, boot = claim
        return boot in self._until.get(wg_ip, {})

    def holds(self, wg_ip: IPv4Address, boot: bytes, now: float) -> bool:
        return self._until.get(wg_ip, {}).get(boot, -math.inf) > now

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


class Pending(msgspec.Struct):
    """A handshake in progress (either role)."""

    state: noise.Handshake
    wg_ip: IPv4Address  # who it is with (claimed until it finishes)
    addr: Endpoint
    index: int  # ours
    expires: float
    init: Init | None = None  # ours (we initiated), to repeat with a cookie
    remote_index: int = 0  # the initiator's (we respond)
    cookie_used: bool = False


class HandshakeHost(Protocol):
    """What ``Handshake`` reads of its node and may ask of it."""

    @property
    def info(self) -> NodeInfo: ...

    @property
    def boot(self) -> bytes: ...

    @property
    def boot_number(self) -> int: ...

    @property
    def sessions(self) -> Mapping[IPv4Address, Session]: ...

    def establish(
        self,
        info: NodeInfo,
        boot: bytes,
        addr: Endpoint,
        keys: Keys,
        now: float,
        boot_number: int = 0,
    ) -> Session | None:
        """A proven boot gets a session (replacing an older boot's); None: no room."""

    def renew(
        self, session: Session, info: NodeInfo, addr: Endpoint, keys: Keys, now: float
    ) -> None:
        """A new handshake of the session's own boot: new keys (rule 6)."""

    def forget_keys(self, keys: Keys) -> None:
        """Keys that will not be used (a refused claimant's)."""

    def contending(self, keys: Keys, wg_ip: IPv4Address) -> None:
        """A contender's keys: known (no STALE for them), not yet a session's."""

    def drop_session(self, wg_ip: IPv4Address, now: float) -> None: ...

    def ping(self, session: Session, now: float) -> None: ...

    def send_frame(self, frame: wire.Frame, addr: Endpoint) -> None: ...

    def send_with(self, keys: Keys, message: wire.Message, addr: Endpoint, to: IPv4Address) -> None:
        """Seal ``message`` with ``keys`` (not necessarily a session's)."""

    def client_holding(self, wg_ip: IPv4Address) -> NodeInfo | None:
        """The plain WireGuard client that has this wg IP, if one does."""

    def name_holder(self, name: str, wg_ip: IPv4Address) -> NodeInfo | None:
        """Who else uses ``name`` (lower case) under a wg IP other than
        ``wg_ip``: a client, a session or a table entry (rule 4)."""

    def back_off(self, wg_ip: IPv4Address, now: float) -> None:
        """We may not have a session with this peer now: call it only slowly."""

    def pinned(self, wg_ip: IPv4Address) -> bytes | None:
        """The static key network.yaml pins for this wg IP, if any (rule 2)."""

    def used_index(self, index: int) -> bool: ...

    def emit(self, event: ev.Event) -> None: ...

    def drop(self, reason: DropReason) -> None: ...

    def ref(self, wg_ip: IPv4Address) -> ev.PeerRef: ...

    def random_bytes(self, size: int) -> bytes: ...


class Handshake:
    """First contact and identity of one node (rules: the module docstring)."""

    def __init__(
        self, host: HandshakeHost, timers: Timers, *, private_key: bytes, psk: bytes
    ) -> None:
        self._host = host
        self.timers = timers
        self._private = private_key
        self._psk = psk
        self.pending: dict[int, Pending] = {}  # by our index
        self._initiating: dict[IPv4Address, int] = {}  # wg IP -> our index
        self.barred = Barred()
        self.rate = TokenBuckets(INIT_BURST, INIT_RATE, MAX_SOURCES)  # INITs by source IP
        self._cookies_sent = TokenBuckets(COOKIE_BURST, COOKIE_RATE, 1)
        # INITs lately answered: ephemeral key -> (until, with a RESPONSE?)
        self._seen_inits: dict[bytes, tuple[float, bool]] = {}
        self._secrets: tuple[bytes, bytes] | None = None  # (current, previous)
        self._secret_until = -math.inf
        self.conflicts: list[ConflictEvent] = []  # recent conflicts, for status and TUI

    # --- starting one -------------------------------------------------------------

    def initiate(self, to: IPv4Address, addr: Endpoint, now: float) -> None:
        """Start a handshake with ``to`` at ``addr`` (a newer one replaces ours)."""
        old = self._initiating.pop(to, None)
        if old is not None:
            self.pending.pop(old, None)
        if not self._room(now):
            self._host.drop(DropReason.RATE_LIMITED)
            return
        state = self._noise(initiator=True)
        index = self._new_index()
        init = Init(
            self._host.info.wg_ip, to, index, bytes(wire.COOKIE_SIZE), state.write_message()
        )
        self.pending[index] = Pending(state, to, addr, index, self._expiry(now), init)
        self._initiating[to] = index
        self._host.send_frame(init, addr)

    def initiating(self, to: IPv4Address) -> bool:
        return to in self._initiating

    # --- frames -----------------------------------------------------------------------

    def on_init(self, frame: Init, addr: Endpoint, now: float) -> None:
        host = self._host
        mine = self._initiating.get(frame.sender)
        if mine is not None and host.info.wg_ip < frame.sender:
            host.drop(DropReason.CROSSED_HANDSHAKE)  # ours goes on (rule 7)
            return
        with_cookie = hmac.compare_digest(frame.cookie, self._cookie(addr, frame, now, 0)) or (
            self._secrets is not None
            and hmac.compare_digest(frame.cookie, self._cookie(addr, frame, now, 1))
        )
        if frame.cookie != bytes(wire.COOKIE_SIZE) and not with_cookie:
            host.drop(DropReason.BAD_COOKIE)
            return
        ephemeral = frame.noise[: noise.DHLEN]
        until, answered = self._seen_inits.get(ephemeral, (-math.inf, False))
        if until > now and (answered or not with_cookie):
            # A retry has a fresh ephemeral: this is a copy (a replay, spoofed
            # or not). It costs nothing and drains nobody's budget (rule 3).
            host.drop(DropReason.REPLAY)
            return
        busy = len(self.pending) >= MAX_PENDING // 2
        if not with_cookie and (busy or not self.rate.allow(addr[0], now)):
            # Rule 3: prove the return path first (the reply is smaller than the INIT).
            self._seen(ephemeral, now, answered=False)
            if self._cookies_sent.allow(0, now):
                cookie = self._cookie(addr, frame, now, 0)
                reply = Cookie(host.info.wg_ip, frame.sender, frame.index, cookie)
                host.send_frame(reply, addr)
                host.drop(DropReason.COOKIE_SENT)
            else:
                host.drop(DropReason.RATE_LIMITED)
            return
        if not self._room(now):
            host.drop(DropReason.RATE_LIMITED)
            return
        state = self._noise(initiator=False)
        try:
            state.read_message(frame.noise)
        except NoiseError:
            host.drop(DropReason.BAD_HANDSHAKE)
            return
        self._seen(ephemeral, now, answered=True)
        # We are the higher wg IP: theirs goes on (rule 7), and so does ours
        # until one of them finishes: message 1 names nobody's key, so this
        # one may be anybody's.
        index = self._new_index()
        payload = wire.encode_hello(host.info, host.boot, host.boot_number)
        message = state.write_message(payload)
        self.pending[index] = Pending(
            state, frame.sender, addr, index, self._expiry(now), remote_index=frame.index
        )
        host.send_frame(Response(host.info.wg_ip, frame.sender, index, frame.index, message), addr)

    def on_cookie(self, frame: Cookie, addr: Endpoint, now: float) -> None:
        pending = self.pending.get(frame.to_index)
        if pending is None or pending.init is None or pending.cookie_used or pending.addr != addr:
            self._host.drop(DropReason.NO_HANDSHAKE)
            return
        pending.cookie_used = True  # once: a cookie that does not help will not help twice
        pending.init = Init(
            pending.init.sender, pending.init.receiver, pending.index, frame.cookie,
            pending.init.noise,
        )  # fmt: skip
        self._host.send_frame(pending.init, addr)

    def on_response(self, frame: Response, addr: Endpoint, now: float) -> None:
        pending = self.pending.get(frame.to_index)
        if pending is None or pending.init is None or pending.wg_ip != frame.sender:
            self._host.drop(DropReason.NO_HANDSHAKE)
            return
        try:
            payload = pending.state.read_message(frame.noise)
        except NoiseError:
            self._host.drop(DropReason.BAD_HANDSHAKE)  # the real one may still come (rule 1)
            return
        self._forget_pending(pending)
        hello = self._proven(pending, payload)
        if hello is None:
            return
        me = self._host
        finish = pending.state.write_message(wire.encode_hello(me.info, me.boot, me.boot_number))
        # Where the INIT went, whatever the RESPONSE's source: the FINISH is
        # larger (it carries our hello), and a source proves nothing. The
        # responder must read it there to have keys: that is the session's address.
        self._host.send_frame(
            Finish(self._host.info.wg_ip, frame.sender, frame.index, finish), pending.addr
        )
        keys = self._keys(pending.state, pending.index, frame.index)
        self._identity(
            hello.info, hello.boot, pending.addr, keys, now, hello.number, initiator=True
        )

    def on_finish(self, frame: Finish, addr: Endpoint, now: float) -> None:
        pending = self.pending.get(frame.to_index)
        if pending is None or pending.init is not None or pending.wg_ip != frame.sender:
            self._host.drop(DropReason.NO_HANDSHAKE)
            return
        if pending.addr != addr:
            self._host.drop(DropReason.NO_HANDSHAKE)  # the RESPONSE went elsewhere
            return
        try:
            payload = pending.state.read_message(frame.noise)
        except NoiseError:
            self._host.drop(DropReason.BAD_HANDSHAKE)  # the real one may still come (rule 1)
            return
        self._forget_pending(pending)
        hello = self._proven(pending, payload)
        if hello is None:
            return
        info = hello.info
        keys = self._keys(pending.state, pending.index, pending.remote_index)
        self._identity(info, hello.boot, addr, keys, now, hello.number, initiator=False)
        session = self._host.sessions.get(info.wg_ip)
        if session is not None and session.keys is keys:  # ours to it is not needed now
            index = self._initiating.pop(info.wg_ip, None)
            if index is not None:
                del self.pending[index]

    def on_pong(self, session: Session, seq: int, now: float) -> None:
        """A pong answering the holder check means two live claimants (rule 5)."""
        contender = session.contender
        if contender is not None and seq >= contender.ping_seq:
            session.contender = None
            self._refuse(contender.info, contender.boot, contender.addr, contender.keys,
                         session.info, now)  # fmt: skip

    def handle_timer(self, now: float, due: Iterable[Session]) -> None:
        """Contenders whose holder did not answer in time take over (rule 5).

        ``due``: the sessions with a deadline at or before ``now`` (a
        contender's deadline is one of them)."""
        for session in due:
            contender = session.contender
            if contender is not None and now >= contender.deadline:
                session.contender = None
                c = contender
                named = self._name_holder(c.info)  # taken while it waited?
                if named is not None:
                    self._refuse(c.info, c.boot, c.addr, c.keys, named, now, name=True)
                    continue
                new = self._host.establish(c.info, c.boot, c.addr, c.keys, now, c.boot_number)
                if new is None:
                    self._host.forget_keys(c.keys)
                elif self._host.sessions.get(c.info.wg_ip) is new:  # (a pair may go at once)
                    # What it sent meanwhile was dropped (a static's table?):
                    # its pong says which table version to ask for.
                    self._host.ping(new, now)

    def expire(self, now: float) -> None:
        for index in [i for i, p in self.pending.items() if p.expires <= now]:
            self._forget_pending(self.pending[index])
        for ephemeral in [e for e, (until, _) in self._seen_inits.items() if until <= now]:
            del self._seen_inits[ephemeral]
        self.barred.expire(now)

    def replaced(self, wg_ip: IPv4Address, old_boot: bytes, now: float) -> None:
        """A newer boot took over: the old one may not come back (rule 4)."""
        self.barred.bar(wg_ip, old_boot, now + self.timers.dead_after, now)

    def refused(self, holder: NodeInfo, by: IPv4Address, now: float) -> None:
        """A peer refused us (over our own handshake's keys): say why, loudly."""
        me = self._host.info
        key_twin = holder.public_key == me.public_key and holder.wg_ip != me.wg_ip
        self._note_conflict(
            ev.RefusedByPeer(
                peer=self._host.ref(by),
                holder_name=holder.name,
                holder_ip=holder.wg_ip,
                holder_key=holder.public_key,
                key_twin=key_twin,
                our_ip=me.wg_ip,
                name_twin=not key_twin
                and holder.wg_ip != me.wg_ip
                and holder.name.lower() == me.name.lower(),
            )
        )

    # --- identity (rules 1, 2, 4, 5, 6) -------------------------------------------------

    def _proven(self, pending: Pending, payload: bytes) -> wire.Hello | None:
        """The handshake's payload, if it announces the key the handshake proved."""
        host = self._host
        try:
            hello = wire.decode_hello(payload)
        except wire.Drop as drop:
            host.drop(drop.reason)
            return None
        info = hello.info
        proven = pending.state.remote_static
        if info.wg_ip != pending.wg_ip or proven is None or from_b64(info.public_key) != proven:
            host.drop(DropReason.KEY_NOT_PROVEN)
            return None
        pinned = host.pinned(info.wg_ip)
        if pinned is not None and pinned != proven:
            host.drop(DropReason.PINNED_KEY)
            return None
        return hello

    def _identity(
        self,
        info: NodeInfo,
        boot: bytes,
        addr: Endpoint,
        keys: Keys,
        now: float,
        number: int = 0,
        *,
        initiator: bool,
    ) -> None:
        """A finished handshake: a new session, renewed keys, a contender, or a refusal."""
        host = self._host
        if info.wg_ip == host.info.wg_ip:
            self._refuse(info, boot, addr, keys, host.info, now)
            return
        client = host.client_holding(info.wg_ip)
        if client is not None:  # rule 4: a plain WireGuard client holds it
            self._refuse(info, boot, addr, keys, client, now)
            return
        twin = self._key_holder(info.public_key, info.wg_ip)
        if twin is not None:
            # Two WireGuard peers with one key cannot be told apart (and a
            # key is kept only by its own node's next run: this one was copied).
            self._refuse(info, boot, addr, keys, twin, now)
            return
        session = host.sessions.get(info.wg_ip)
        same_boot = (
            session is not None
            and session.boot == boot
            and session.info.public_key == info.public_key
        )
        if not (same_boot and session is not None and session.info.name == info.name):
            named = self._name_holder(info)
            if named is not None and named.wg_ip == host.info.wg_ip and initiator:
                # We called it and it answers with our name: it holds it (rule 4).
                host.forget_keys(keys)
                self.refused(info, info.wg_ip, now)
                host.back_off(info.wg_ip, now)
                return
            if named is not None:
                self._refuse(info, boot, addr, keys, named, now, name=True)
                return
        if same_boot and session is not None:
            host.renew(session, info, addr, keys, now)
            return
        if session is not None and self.barred.holds(info.wg_ip, boot, now):
            self._refuse(info, boot, addr, keys, session.info, now)
            return
        if session is not None and not self._restart(session, info, number, addr, now):
            self._ask_holder(session, info, boot, addr, keys, now, number)
            return
        if host.establish(info, boot, addr, keys, now, number) is None:
            host.forget_keys(keys)

    def _name_holder(self, info: NodeInfo) -> NodeInfo | None:
        """Who else uses the claimant's name: we, a client, a session or a
        table entry of another wg IP (rule 4)."""
        me = self._host.info
        name = info.name.lower()
        if me.name.lower() == name and me.wg_ip != info.wg_ip:
            return me
        return self._host.name_holder(name, info.wg_ip)

    def _restart(
        self, session: Session, info: NodeInfo, number: int, addr: Endpoint, now: float
    ) -> bool:
        """May a proven new boot replace the holder at once (rule 5)? With the
        holder's key, from its address or as a later run of that key (never an
        earlier one); or if the holder failed the check already: a ping of
        ours unanswered for the check's wait, and nothing heard from it since
        (so the nodes of a crashed static find its new run at once: they were
        pinging it)."""
        if info.public_key == session.info.public_key:
            if number > session.boot_number:
                return True
            if addr == session.addr and number == session.boot_number:
                return True
        wait = self._holder_wait(session)
        return any(
            sent <= now - wait and session.last_heard < sent for sent in session.ping_sent.values()
        )

    def _holder_wait(self, session: Session) -> float:
        return max(self.timers.incumbent_timeout, 3 * (session.rtt or 0.0))

    def _ask_holder(
        self,
        session: Session,
        info: NodeInfo,
        boot: bytes,
        addr: Endpoint,
        keys: Keys,
        now: float,
        number: int = 0,
    ) -> None:
        """A proven new boot from another address: is the current holder still alive?"""
        old = session.contender
        if old is not None:
            self._host.forget_keys(old.keys)  # the latest claim's keys are the ones to use
            if old.boot == boot:  # the same claimant again: the holder was asked already
                session.contender = Contender(
                    info, boot, addr, keys, old.deadline, old.ping_seq, old.boot_number
                )
                self._host.contending(keys, info.wg_ip)
                return
        self._host.ping(session, now)
        deadline = now + self._holder_wait(session)
        session.contender = Contender(info, boot, addr, keys, deadline, session.ping_seq, number)
        self._host.contending(keys, info.wg_ip)
        self._host.emit(ev.HolderAsked(self._host.ref(info.wg_ip), addr))

    def _refuse(
        self,
        info: NodeInfo,
        boot: bytes,
        addr: Endpoint,
        keys: Keys,
        holder: NodeInfo,
        now: float,
        *,
        name: bool = False,
    ) -> None:
        """Two live nodes claim one wg IP (or one WireGuard key, or, ``name``, one
        name): the holder keeps it, the claimant is told over its own handshake's
        keys (rule 4)."""
        host = self._host
        host.drop(DropReason.CONFLICT)
        if not name and not self.barred.holds(info.wg_ip, boot, now):
            # Not renewed by its retries: once the holder is gone, it gets in.
            self.barred.bar(info.wg_ip, boot, now + self.timers.dead_after, now)
        self._note_conflict(
            ev.Conflict(
                address=addr,
                claimant_key=info.public_key,
                claimed_ip=info.wg_ip,
                holder_name=holder.name,
                holder_ip=holder.wg_ip,
                holder_key=holder.public_key,
                key_twin=holder.wg_ip != info.wg_ip and holder.public_key == info.public_key,
                name_twin=name,
                claimant_name=info.name,
            )
        )
        host.send_with(keys, wire.Refused.of(holder), addr, info.wg_ip)
        host.forget_keys(keys)

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

    # --- helpers -----------------------------------------------------------------------

    def _noise(self, initiator: bool) -> noise.Handshake:
        return noise.Handshake(
            initiator=initiator,
            static_private=self._private,
            psk=self._psk,
            prologue=PROLOGUE,
            random_bytes=self._host.random_bytes,
        )

    def _keys(self, state: noise.Handshake, local: int, remote: int) -> Keys:
        transport = state.transport()
        return Keys(local, remote, transport.send, transport.receive)

    def _new_index(self) -> int:
        while True:
            index = int.from_bytes(self._host.random_bytes(4), "big")
            if index and index not in self.pending and not self._host.used_index(index):
                return index

    def _room(self, now: float) -> bool:
        """Make room for one more pending handshake: expired ones go first."""
        if len(self.pending) < MAX_PENDING:
            return True
        self.expire(now)
        return len(self.pending) < MAX_PENDING

    def _expiry(self, now: float) -> float:
        return now + self.timers.challenge_lifetime

    def _seen(self, ephemeral: bytes, now: float, answered: bool) -> None:
        """An INIT answered (with a RESPONSE, or only a COOKIE): its copies are not."""
        if len(self._seen_inits) >= MAX_SEEN_INITS and ephemeral not in self._seen_inits:
            self.expire(now)
            while len(self._seen_inits) >= MAX_SEEN_INITS:
                del self._seen_inits[next(iter(self._seen_inits))]
        self._seen_inits[ephemeral] = (self._expiry(now), answered)

    def _forget_pending(self, pending: Pending) -> None:
        self.pending.pop(pending.index, None)
        if self._initiating.get(pending.wg_ip) == pending.index:
            del self._initiating[pending.wg_ip]

    def _cookie(self, addr: Endpoint, frame: Init, now: float, which: int) -> bytes:
        """A MAC of the source address and the INIT's identity (rule 3)."""
        if self._secrets is None or now >= self._secret_until:
            fresh = self._host.random_bytes(32)
            current = self._secrets[0] if self._secrets is not None else fresh
            self._secrets = (fresh, current)
            self._secret_until = now + COOKIE_SECRET_LIFETIME
        secret = self._secrets[which]
        data = f"{addr[0]}:{addr[1]}|{frame.sender}|{frame.index}|".encode() + frame.noise
        return hmac.new(secret, data, hashlib.blake2b).digest()[: wire.COOKIE_SIZE]


def public_key_b64(private: bytes) -> str:
    return to_b64(noise.public_key(private))
