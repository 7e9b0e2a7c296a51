"""Admin-channel datagrams: the outer seal, frames, and messages.

Datagram layout (all integers big-endian)::

    version (1) | nonce (24) | XChaCha20-Poly1305(admin key; inner) incl. tag (16)
    inner = kind (1) | sender wg_ip (4) | receiver wg_ip (4) | by kind:
      INIT       sender index (4) | cookie (16) | Noise message 1 | zero padding
      RESPONSE   sender index (4) | receiver index (4) | Noise message 2 (+ NodeInfo)
      FINISH     receiver index (4) | Noise message 3 (+ NodeInfo)
      COOKIE     receiver index (4) | cookie (16)
      STALE      receiver index (4)
      TRANSPORT  receiver index (4) | counter (8) | ChaCha20-Poly1305(session key; body)

Two layers, two jobs:

- The *outer seal* under a key derived from the network's shared key (keyed
  BLAKE2b): whoever lacks the shared key can neither start a handshake nor
  read or forge a frame; junk is dropped before any other work. The version
  byte is authenticated and checked first, so an old node's datagram is
  recognised and refused cleanly.
- *Sessions* (core/handshake.py): a Noise XXpsk3 handshake (noise.py) binds
  each session to both nodes' own key pairs, and every message after it is a
  TRANSPORT frame under that session's keys, its header as associated data.
  A member can therefore speak only for itself.

An INIT is padded to ``INIT_SIZE`` so that no answer to it (a RESPONSE, a
COOKIE) is larger: the admin port never amplifies towards an address that has
not proven itself. Message bodies are compact JSON with a type field "t",
decoded strictly: every surprise raises ``Drop``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import struct
from enum import IntEnum
from ipaddress import IPv4Address
from typing import Any, NamedTuple

import msgspec
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.encoding import RawEncoder
from nacl.exceptions import CryptoError
from nacl.hash import blake2b

from . import noise
from .core.events import DropReason
from .keys import from_b64
from .model import Endpoint

VERSION = 2
OLD_VERSIONS = frozenset({1})  # recognised, to say why they are refused
NONCE_SIZE = 24
TAG_SIZE = 16
# One datagram must cross a 1280-byte MTU path (IPv6 minimum) in one piece:
# 1280 - 40 (IPv6) - 8 (UDP). Tables larger than this are split.
MAX_DATAGRAM = 1232
SEAL_OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE
INNER = struct.Struct("!B4s4s")  # kind, sender, receiver
INDEX = struct.Struct("!I")
COUNTER = struct.Struct("!Q")
COOKIE_SIZE = 16
BOOT_SIZE = 8
# The inner part of every INIT, padded: larger than any RESPONSE (Noise
# message 2 with the largest NodeInfo) and any COOKIE, checked by a test.
INIT_SIZE = 480
TRANSPORT_OVERHEAD = SEAL_OVERHEAD + INNER.size + INDEX.size + COUNTER.size + TAG_SIZE
MAX_NAME = 32
MAX_LOCAL_ENDPOINTS = 8
# A mobile node's info says "m":true: one endpoint fewer keeps its largest
# RESPONSE within INIT_SIZE. So does a hello with a boot number ("bn", see
# ``encode_hello``): its sender announces one endpoint fewer again.
MAX_MOBILE_LOCAL_ENDPOINTS = MAX_LOCAL_ENDPOINTS - 1
MAX_BOOT_NUMBER = 2**63 - 1
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")  # [0-9]: ASCII digits only
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")  # the same rule as for local names
UNKNOWN_RECEIVER = IPv4Address(0)


class Drop(Exception):
    """Received bytes that are not a valid datagram; ``reason`` feeds the counters."""

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _derive(shared_key: bytes, label: bytes) -> bytes:
    return blake2b(
        label, key=shared_key, person=b"wg_netmanager/1", digest_size=32, encoder=RawEncoder
    )


def derive_admin_key(shared_key: bytes) -> bytes:
    """The outer seal's key."""
    return _derive(shared_key, b"admin-channel")


def derive_psk(shared_key: bytes) -> bytes:
    """The Noise pre-shared key (membership is part of every session key)."""
    return _derive(shared_key, b"noise-psk")


def seal(key: bytes, inner: bytes, nonce: bytes | None = None) -> bytes:
    """``nonce``: NONCE_SIZE random bytes (the core passes its own randomness,
    so a seeded simulation repeats byte for byte); None: fresh from the OS."""
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    if len(nonce) != NONCE_SIZE:
        raise ValueError("an XChaCha20-Poly1305 nonce is 24 bytes")
    version = bytes([VERSION])
    return version + nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(inner, version, nonce, key)


def open_sealed(key: bytes, datagram: bytes) -> bytes:
    if len(datagram) < SEAL_OVERHEAD:
        raise Drop(DropReason.MALFORMED, "too short")
    if datagram[0] != VERSION:
        old = datagram[0] in OLD_VERSIONS
        raise Drop(DropReason.OLD_VERSION if old else DropReason.UNKNOWN_VERSION)
    if len(datagram) > MAX_DATAGRAM:
        raise Drop(DropReason.MALFORMED, "too long")
    nonce = datagram[1 : 1 + NONCE_SIZE]
    try:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(
            datagram[1 + NONCE_SIZE :], datagram[:1], nonce, key
        )
    except CryptoError:
        raise Drop(DropReason.BAD_SEAL) from None


# --- frames ---------------------------------------------------------------------


class Kind(IntEnum):
    INIT = 1
    RESPONSE = 2
    FINISH = 3
    COOKIE = 4
    STALE = 5
    TRANSPORT = 6


class Init(msgspec.Struct, frozen=True):
    """Noise message 1: a new handshake. ``cookie`` is zeros unless a COOKIE
    asked for it (the responder is busy, or this source used up its share)."""

    sender: IPv4Address
    receiver: IPv4Address
    index: int  # the initiator's index for this handshake
    cookie: bytes
    noise: bytes


class Response(msgspec.Struct, frozen=True):
    sender: IPv4Address
    receiver: IPv4Address
    index: int  # the responder's index
    to_index: int  # the initiator's index
    noise: bytes


class Finish(msgspec.Struct, frozen=True):
    sender: IPv4Address
    receiver: IPv4Address
    to_index: int  # the responder's index
    noise: bytes


class Cookie(msgspec.Struct, frozen=True):
    """Repeat your INIT (``to_index``) with this cookie: it proves the return path."""

    sender: IPv4Address
    receiver: IPv4Address
    to_index: int
    cookie: bytes


class Stale(msgspec.Struct, frozen=True):
    """No session has index ``to_index`` here (the sender restarted?): handshake again."""

    sender: IPv4Address
    receiver: IPv4Address
    to_index: int


class Transport(msgspec.Struct, frozen=True):
    sender: IPv4Address
    receiver: IPv4Address
    to_index: int
    counter: int
    ciphertext: bytes
    header: bytes  # the associated data of the ciphertext

    @staticmethod
    def make_header(
        sender: IPv4Address, receiver: IPv4Address, to_index: int, counter: int
    ) -> bytes:
        return (
            INNER.pack(Kind.TRANSPORT, sender.packed, receiver.packed)
            + INDEX.pack(to_index)
            + COUNTER.pack(counter)
        )


Frame = Init | Response | Finish | Cookie | Stale | Transport


def encode_frame(frame: Frame) -> bytes:
    """The inner bytes of ``frame`` (the caller seals them)."""
    match frame:
        case Init():
            head = INNER.pack(Kind.INIT, frame.sender.packed, frame.receiver.packed)
            body = head + INDEX.pack(frame.index) + frame.cookie + frame.noise
            return body.ljust(INIT_SIZE, b"\x00")
        case Response():
            head = INNER.pack(Kind.RESPONSE, frame.sender.packed, frame.receiver.packed)
            return head + INDEX.pack(frame.index) + INDEX.pack(frame.to_index) + frame.noise
        case Finish():
            head = INNER.pack(Kind.FINISH, frame.sender.packed, frame.receiver.packed)
            return head + INDEX.pack(frame.to_index) + frame.noise
        case Cookie():
            head = INNER.pack(Kind.COOKIE, frame.sender.packed, frame.receiver.packed)
            return head + INDEX.pack(frame.to_index) + frame.cookie
        case Stale():
            head = INNER.pack(Kind.STALE, frame.sender.packed, frame.receiver.packed)
            return head + INDEX.pack(frame.to_index)
        case Transport():
            return frame.header + frame.ciphertext
    raise TypeError(f"not a frame: {frame!r}")  # our own bug


def decode_frame(inner: bytes) -> Frame:
    if len(inner) < INNER.size + INDEX.size:
        raise Drop(DropReason.MALFORMED, "short frame")
    kind, sender_raw, receiver_raw = INNER.unpack_from(inner)
    sender, receiver = IPv4Address(sender_raw), IPv4Address(receiver_raw)
    rest = inner[INNER.size :]
    (first,) = INDEX.unpack_from(rest)
    if kind == Kind.INIT:
        if len(inner) != INIT_SIZE:
            raise Drop(DropReason.MALFORMED, "init size")
        cookie = rest[4 : 4 + COOKIE_SIZE]
        message = rest[4 + COOKIE_SIZE : 4 + COOKIE_SIZE + noise.MESSAGE_1]
        padding = rest[4 + COOKIE_SIZE + noise.MESSAGE_1 :]
        if padding.count(0) != len(padding):
            raise Drop(DropReason.MALFORMED, "init padding")
        return Init(sender, receiver, first, cookie, message)
    if kind == Kind.RESPONSE:
        if len(rest) < 8 + noise.MESSAGE_2:
            raise Drop(DropReason.MALFORMED, "short response")
        (second,) = INDEX.unpack_from(rest, 4)
        return Response(sender, receiver, first, second, rest[8:])
    if kind == Kind.FINISH:
        if len(rest) < 4 + noise.MESSAGE_3:
            raise Drop(DropReason.MALFORMED, "short finish")
        return Finish(sender, receiver, first, rest[4:])
    if kind == Kind.COOKIE:
        if len(rest) != 4 + COOKIE_SIZE:
            raise Drop(DropReason.MALFORMED, "cookie size")
        return Cookie(sender, receiver, first, rest[4:])
    if kind == Kind.STALE:
        if len(rest) != 4:
            raise Drop(DropReason.MALFORMED, "stale size")
        return Stale(sender, receiver, first)
    if kind == Kind.TRANSPORT:
        header_size = INNER.size + INDEX.size + COUNTER.size
        if len(inner) < header_size + TAG_SIZE:
            raise Drop(DropReason.MALFORMED, "short transport")
        (counter,) = COUNTER.unpack_from(inner, INNER.size + INDEX.size)
        return Transport(sender, receiver, first, counter, inner[header_size:], inner[:header_size])
    raise Drop(DropReason.MALFORMED, "unknown frame kind")


def open_frame(key: bytes, datagram: bytes) -> Frame:
    return decode_frame(open_sealed(key, datagram))


def seal_frame(key: bytes, frame: Frame, nonce: bytes | None = None) -> bytes:
    return seal(key, encode_frame(frame), nonce)


# --- messages -----------------------------------------------------------------------


class NodeInfo(msgspec.Struct, frozen=True):
    """What a node says about itself; gossiped unchanged by static nodes.

    ``public_key`` is the node's X25519 key (WireGuard base64): its WireGuard
    key and the static key of its admin sessions (the handshake proves it).
    ``mobile``: a metered roaming node (one static link, no pings; nobody
    else opens a direct link to it, see docs/architecture.md "Mobile nodes").
    ``client``: a plain WireGuard client (a phone) that a static lists as
    reachable through itself; it runs no daemon, so nobody handshakes or
    pairs with it (core/clients.py). Its ports are the static's, it has no
    local endpoints, and only a static's table carries such an entry.
    """

    wg_ip: IPv4Address
    name: str
    public_key: str
    wg_port: int
    admin_port: int
    local_endpoints: tuple[Endpoint, ...] = ()  # underlay addresses (LAN discovery)
    mobile: bool = False
    client: bool = False


class Ping(msgspec.Struct, frozen=True):
    seq: int
    table_version: int = 0


class Pong(msgspec.Struct, frozen=True):
    seq: int
    table_version: int = 0


class TableRequest(msgspec.Struct, frozen=True):
    """Send me your whole table (I missed a change)."""


class TableEntry(msgspec.Struct, frozen=True):
    """A node as a static node knows it: its info plus what only the static sees.

    ``boot_number``: which run of that key the static has a session with (from
    the node's own handshake, see ``Hello``); a higher one than a pair peer's
    session says the peer restarted (core/pairs.py rule 6).
    """

    info: NodeInfo
    wg_endpoint: Endpoint | None  # as WireGuard on the static sees it (NAT outside)
    admin_endpoint: Endpoint | None  # source of its admin datagrams at the static
    age: float  # seconds since the static last heard from it
    boot_number: int = 0


class Table(msgspec.Struct, frozen=True):
    """One part of a static's table at ``version``.

    ``base`` 0: the whole table (``entries``). Otherwise a change from version
    ``base``: ``entries`` new or changed, ``removed`` gone. A version counts
    once all its ``parts`` arrived.
    """

    version: int
    part: int
    parts: int
    entries: tuple[TableEntry, ...]
    base: int = 0
    removed: tuple[IPv4Address, ...] = ()


class Bye(msgspec.Struct, frozen=True):
    pass


class Info(msgspec.Struct, frozen=True):
    """The sender's info changed (addresses, WireGuard port)."""

    info: NodeInfo


class Probe(msgspec.Struct, frozen=True):
    """Sent to a peer's local (LAN) address: does the underlay reach it directly?"""

    token: int


class ProbeAck(msgspec.Struct, frozen=True):
    token: int


class PathChallenge(msgspec.Struct, frozen=True):
    """To a session's new source address: echo ``token`` from there (it is really yours)."""

    token: int


class PathResponse(msgspec.Struct, frozen=True):
    token: int


class Ready(msgspec.Struct, frozen=True):
    """The sender has the receiver in its WireGuard: a handshake will be answered.

    ``direct`` says the sender saw the handshake and moved the receiver's
    address to the direct link; the receiver follows at once, so the two
    sides disagree (and packets between them are lost) only for a moment.
    ``leaving`` says only that the sender left the direct link (attempt
    ``attempt`` begins): the receiver leaves it too, at once. ``fired`` says
    the sender's WireGuard has the receiver's endpoint and has sent its first
    initiation (it opens the sender's NAT): the receiver sends its own now.
    """

    attempt: int
    direct: bool = False
    leaving: bool = False
    fired: bool = False


class Refused(msgspec.Struct, frozen=True):
    """Your claim is refused: ``holder`` is alive and uses your wg IP (or your key).

    Sent over the session the claimant's own handshake just made, then that
    session is forgotten: only that claimant can read it, and only now.
    Made by ``of``: the holder named by wg IP, name, key and ports only.
    """

    holder: NodeInfo

    @classmethod
    def of(cls, holder: NodeInfo) -> Refused:
        """A refusal naming ``holder``: all the claimant reads of it, and
        never larger than the FINISH it answers (which carries the
        claimant's own info), so it amplifies nothing towards the FINISH's
        source, which need not be the claimant's. Checked by a test."""
        h = holder
        return cls(NodeInfo(h.wg_ip, h.name, h.public_key, h.wg_port, h.admin_port))


class Relay(msgspec.Struct, frozen=True):
    """To a static node: pass ``datagram`` (sealed by the sender for ``to``) on
    to ``to``'s admin endpoint, unopened.

    For the one message that must get through when a direct link between two
    dynamic nodes breaks: "I left the link". Over the link it is lost, and
    through the gateway's tunnel too, because the peer's WireGuard drops what
    the gateway forwards from an address the peer still has as a direct peer.
    """

    to: IPv4Address
    datagram: bytes


MAX_RELAYED = 512  # bytes of a relayed datagram (a Ready is about 130)


# --- the mesh map (core/mesh_map.py) ------------------------------------------------

LINK_KINDS = ("static", "lan", "nat", "direct")
MAX_LINKS = 4096  # links (or exceptions) of one node record, all its chunks together
MAX_MAP_PARTS = 4096


class LinkState(msgspec.Struct, frozen=True):
    """A direct WireGuard link of a node: to ``peer``, of ``kind`` (one of
    ``LINK_KINDS``: a static's link, a LAN or NAT-traversed pair, or direct
    otherwise), with the round trip its admin pings measured (None: unknown)."""

    peer: IPv4Address
    kind: str
    rtt: float | None


class NodeLinks(msgspec.Struct, frozen=True):
    """One node's links as the mesh map holds them.

    Relayed pairs are not listed one by one (they would make the map grow with
    the square of the nodes): every node the record's node knows and has no
    direct link with is reached via ``gateway``, except those in
    ``exceptions`` (another gateway, or None: no path). ``up`` is the
    static's view (a node that went away stays on the map, down, a while).
    """

    wg_ip: IPv4Address
    name: str
    is_static: bool
    up: bool
    gateway: IPv4Address | None
    links: tuple[LinkState, ...]
    exceptions: tuple[tuple[IPv4Address, IPv4Address | None], ...] = ()


class LinkReport(msgspec.Struct, frozen=True):
    """To a static node: the sender's own links (``record.wg_ip`` is the
    sender), part ``part`` of ``parts`` of report ``seq``. Sent on change only."""

    seq: int
    part: int
    parts: int
    record: NodeLinks


class MapRequest(msgspec.Struct, frozen=True):
    """To a static node: send me your merged map if it is newer than
    ``have``, and push its changes for ``watch`` seconds."""

    have: int
    watch: float


class MapPart(msgspec.Struct, frozen=True):
    """From a static node: part ``part`` of ``parts`` of its merged map at
    ``version``. A record with many links comes in chunks (same wg IP).

    ``base`` 0: the whole map. Otherwise a change from version ``base``:
    ``records`` new or changed, ``removed`` gone (as ``Table``).
    """

    version: int
    part: int
    parts: int
    records: tuple[NodeLinks, ...]
    base: int = 0
    removed: tuple[IPv4Address, ...] = ()


Message = (
    Ping
    | Pong
    | TableRequest
    | Table
    | Bye
    | Info
    | Probe
    | ProbeAck
    | PathChallenge
    | PathResponse
    | Ready
    | Refused
    | Relay
    | LinkReport
    | MapRequest
    | MapPart
)


# --- encoding -------------------------------------------------------------


def _ep(endpoint: Endpoint | None) -> str | None:
    return None if endpoint is None else f"{endpoint[0]}:{endpoint[1]}"


def _info(info: NodeInfo) -> dict[str, Any]:
    body = {
        "ip": str(info.wg_ip),
        "n": info.name,
        "k": info.public_key,
        "wp": info.wg_port,
        "ap": info.admin_port,
        "l": [_ep(e) for e in info.local_endpoints],
    }
    if info.mobile:  # only when set: every other node's encoding stays as it was
        body["m"] = True
    if info.client:
        body["c"] = True
    return body


def _entry(entry: TableEntry) -> dict[str, Any]:
    body = {
        "i": _info(entry.info),
        "we": _ep(entry.wg_endpoint),
        "ae": _ep(entry.admin_endpoint),
        "age": round(entry.age, 1),
    }
    if entry.boot_number:  # only when set: older nodes ignore it
        body["bn"] = entry.boot_number
    return body


def _body(message: Message) -> dict[str, Any]:
    match message:
        case Ping():
            return {"t": "ping", "s": message.seq, "tv": message.table_version}
        case Pong():
            return {"t": "pong", "s": message.seq, "tv": message.table_version}
        case TableRequest():
            return {"t": "treq"}
        case Table():
            body: dict[str, Any] = {
                "t": "table",
                "v": message.version,
                "p": message.part,
                "n": message.parts,
                "e": [_entry(e) for e in message.entries],
            }
            if message.base:
                body["b"] = message.base
                body["r"] = [str(ip) for ip in message.removed]
            return body
        case Bye():
            return {"t": "bye"}
        case Info():
            return {"t": "info", "i": _info(message.info)}
        case Probe():
            return {"t": "probe", "n": message.token}
        case ProbeAck():
            return {"t": "pack", "n": message.token}
        case PathChallenge():
            return {"t": "pchal", "n": message.token}
        case PathResponse():
            return {"t": "presp", "n": message.token}
        case Ready():
            body = {"t": "ready", "a": message.attempt, "d": message.direct}
            if message.leaving:
                body["l"] = True
            if message.fired:
                body["f"] = True
            return body
        case Refused():
            return {"t": "refused", "i": _info(message.holder)}
        case Relay():
            return {
                "t": "relay",
                "to": str(message.to),
                "d": base64.b64encode(message.datagram).decode(),
            }
        case LinkReport():
            return {
                "t": "links",
                "s": message.seq,
                "p": message.part,
                "n": message.parts,
                "r": encode_record(message.record),
            }
        case MapRequest():
            return {"t": "mreq", "v": message.have, "w": round(message.watch, 1)}
        case MapPart():
            body = {
                "t": "map",
                "v": message.version,
                "p": message.part,
                "n": message.parts,
                "r": [encode_record(r) for r in message.records],
            }
            if message.base:
                body["b"] = message.base
                body["x"] = [str(ip) for ip in message.removed]
            return body
    raise TypeError(f"not a message: {message!r}")  # our own bug


def _rtt_us(rtt: float | None) -> int | None:
    return None if rtt is None else max(0, round(rtt * 1e6))


def encode_record(record: NodeLinks) -> list[Any]:
    """A node record as compact JSON: ``[ip, name, flags, gateway, links, exceptions]``
    (flags: 1 static, 2 up; a link ``[peer, kind, rtt in µs]``)."""
    return [
        str(record.wg_ip),
        record.name,
        int(record.is_static) | int(record.up) << 1,
        None if record.gateway is None else str(record.gateway),
        [[str(link.peer), link.kind, _rtt_us(link.rtt)] for link in record.links],
        [[str(ip), None if gw is None else str(gw)] for ip, gw in record.exceptions],
    ]


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def encode_message(message: Message) -> bytes:
    """A message as a TRANSPORT body (before encryption)."""
    return _json(_body(message))


class Hello(NamedTuple):
    """A handshake payload: who the sender is, and which run of it.

    ``boot``: random per start (a pinned static keeps its key across
    restarts, and any node the key of a crashed run). ``number``: how many
    runs of this key came before this one (0: the first; a node that keeps
    its key after a crash counts its runs), so a later run can be told from
    an earlier one. Only the key's holder can announce either: the
    handshake proves the key that sent them.
    """

    info: NodeInfo
    boot: bytes
    number: int = 0


def encode_hello(info: NodeInfo, boot: bytes, number: int = 0) -> bytes:
    """``Hello`` encoded. The number only when set (older nodes ignore it):
    its sender announces one local endpoint fewer (see MAX_MOBILE_LOCAL_ENDPOINTS)."""
    body: dict[str, Any] = {"i": _info(info), "b": boot.hex()}
    if number:
        body["bn"] = number
    return _json(body)


def encoded_size(message: Message) -> int:
    """Bytes on the wire once in a sealed TRANSPORT frame (for splitting tables)."""
    return TRANSPORT_OVERHEAD + len(encode_message(message))


# --- decoding: strict, every surprise is Drop(MALFORMED) ----------------


def _malformed(detail: str) -> Drop:
    return Drop(DropReason.MALFORMED, detail)


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(key)
    # bool is an int in Python; a JSON true is never a valid number here.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _malformed(f"field {key!r}")
    return value


def _port(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise _malformed("port")
    return value


def _ipv4(text: str) -> int | None:
    """Dotted quad -> integer, by ipaddress.IPv4Address's rules (four decimal
    octets, ASCII digits, no leading zero, at most 255), None if it is not
    one. A table holds four addresses per node: this is the hot path, one
    regular expression instead of ipaddress's dozen calls."""
    if IPV4_RE.fullmatch(text) is None:
        return None
    a, b, c, d = text.split(".")
    return int(a) << 24 | int(b) << 16 | int(c) << 8 | int(d)


def _decode_ep(value: Any) -> Endpoint | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 21:
        raise _malformed("endpoint")
    host, sep, port = value.rpartition(":")
    # isascii: str.isdigit() is true for '²' and Arabic-Indic digits too.
    if not sep or not (port.isascii() and port.isdigit()) or len(port) > 5:
        raise _malformed("endpoint")
    if IPV4_RE.fullmatch(host) is None:
        raise _malformed("endpoint")
    return (host, _port(int(port)))


def _ip(value: Any) -> IPv4Address:
    if not isinstance(value, str) or len(value) > 15:
        raise _malformed("ip")
    number = _ipv4(value)
    if number is None:
        raise _malformed("ip")
    return IPv4Address(number)


def _b64(value: Any, limit: int) -> bytes:
    if not isinstance(value, str) or not 0 < len(value) <= (limit + 2) // 3 * 4:
        raise _malformed("base64")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("base64") from None
    if base64.b64encode(data).decode() != value or len(data) > limit:  # canonical, bounded
        raise _malformed("base64")
    return data


def _decode_info(obj: Any) -> NodeInfo:
    if not isinstance(obj, dict):
        raise _malformed("info")
    name = _get(obj, "n", str)
    # The local rule for names: no invisible characters, no look-alikes.
    if not NAME_RE.fullmatch(name):
        raise _malformed("name")
    key = _get(obj, "k", str)
    try:
        from_b64(key)
    except ValueError:
        raise _malformed("key") from None
    wg_ip = _ip(obj.get("ip"))
    mobile = obj.get("m", False)
    if not isinstance(mobile, bool):
        raise _malformed("field 'm'")
    client = obj.get("c", False)
    if not isinstance(client, bool) or (client and mobile):
        raise _malformed("field 'c'")
    locals_ = _get(obj, "l", list)
    if len(locals_) > (MAX_MOBILE_LOCAL_ENDPOINTS if mobile else MAX_LOCAL_ENDPOINTS):
        raise _malformed("too many local endpoints")
    if client and locals_:
        raise _malformed("a client with local endpoints")
    endpoints = tuple(_decode_ep(e) for e in locals_)
    if None in endpoints:
        raise _malformed("local endpoint")
    return NodeInfo(
        wg_ip=wg_ip,
        name=name,
        public_key=key,
        wg_port=_port(obj.get("wp")),
        admin_port=_port(obj.get("ap")),
        local_endpoints=endpoints,  # type: ignore[arg-type]
        mobile=mobile,
        client=client,
    )


def _decode_entry(obj: Any) -> TableEntry:
    if not isinstance(obj, dict):
        raise _malformed("entry")
    age = _get(obj, "age", (int, float))
    if not 0 <= age < 1e9:
        raise _malformed("age")
    return TableEntry(
        info=_decode_info(obj.get("i")),
        wg_endpoint=_decode_ep(obj.get("we")),
        admin_endpoint=_decode_ep(obj.get("ae")),
        age=float(age),
        boot_number=_boot_number(obj),
    )


def _boot_number(obj: dict[str, Any]) -> int:
    """The optional "bn" (absent: 0; present: a positive count)."""
    if "bn" not in obj:
        return 0
    number = _get(obj, "bn", int)
    if not 0 < number <= MAX_BOOT_NUMBER:
        raise _malformed("field 'bn'")
    return int(number)


def _count(obj: dict[str, Any], key: str) -> int:
    value = _get(obj, key, int)
    if not 0 <= value < 2**63:
        raise _malformed(key)
    return int(value)


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise _malformed("not json") from None
    if not isinstance(obj, dict):
        raise _malformed("body")
    return obj


def _decode_table(obj: dict[str, Any]) -> Table:
    parts = _count(obj, "n")
    part = _count(obj, "p")
    if not 0 <= part < parts <= 4096:
        raise _malformed("table part")
    entries = tuple(_decode_entry(e) for e in _get(obj, "e", list))
    base, removed = 0, tuple[IPv4Address, ...]()
    if "b" in obj:
        base = _count(obj, "b")
        removed = tuple(_ip(ip) for ip in _get(obj, "r", list))
        if base == 0:
            raise _malformed("table base")
    version = _count(obj, "v")
    if base and base >= version:
        raise _malformed("table base")
    return Table(version, part, parts, entries, base, removed)


def _decode_link(obj: Any) -> LinkState:
    if not isinstance(obj, list) or len(obj) != 3 or obj[1] not in LINK_KINDS:
        raise _malformed("link")
    rtt = obj[2]
    if rtt is not None and (
        not isinstance(rtt, int) or isinstance(rtt, bool) or not 0 <= rtt < 10**9
    ):
        raise _malformed("rtt")
    return LinkState(_ip(obj[0]), obj[1], None if rtt is None else rtt / 1e6)


def _decode_exception(obj: Any) -> tuple[IPv4Address, IPv4Address | None]:
    if not isinstance(obj, list) or len(obj) != 2:
        raise _malformed("exception")
    return _ip(obj[0]), None if obj[1] is None else _ip(obj[1])


def decode_record(obj: Any) -> NodeLinks:
    if not isinstance(obj, list) or len(obj) != 6:
        raise _malformed("record")
    ip, name, flags, gateway, links, exceptions = obj
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise _malformed("name")
    if not isinstance(flags, int) or isinstance(flags, bool) or not 0 <= flags <= 3:
        raise _malformed("flags")
    if not isinstance(links, list) or not isinstance(exceptions, list):
        raise _malformed("record")
    if len(links) > MAX_LINKS or len(exceptions) > MAX_LINKS:
        raise _malformed("too many links")
    return NodeLinks(
        wg_ip=_ip(ip),
        name=name,
        is_static=bool(flags & 1),
        up=bool(flags & 2),
        gateway=None if gateway is None else _ip(gateway),
        links=tuple(_decode_link(link) for link in links),
        exceptions=tuple(_decode_exception(e) for e in exceptions),
    )


def _parts(obj: dict[str, Any]) -> tuple[int, int]:
    parts, part = _count(obj, "n"), _count(obj, "p")
    if not 0 <= part < parts <= MAX_MAP_PARTS:
        raise _malformed("part")
    return part, parts


def _decode_map(obj: dict[str, Any]) -> MapPart:
    part, parts = _parts(obj)
    records = tuple(decode_record(r) for r in _get(obj, "r", list))
    version = _count(obj, "v")
    base, removed = 0, tuple[IPv4Address, ...]()
    if "b" in obj:
        base = _count(obj, "b")
        removed_list = _get(obj, "x", list)
        if not 0 < base < version or len(removed_list) > MAX_LINKS:
            raise _malformed("map base")
        removed = tuple(_ip(ip) for ip in removed_list)
    return MapPart(version, part, parts, records, base, removed)


def decode_message(data: bytes) -> Message:
    obj = _json_object(data)
    kind = obj.get("t")
    if kind == "ping":
        return Ping(seq=_count(obj, "s"), table_version=_count(obj, "tv"))
    if kind == "pong":
        return Pong(seq=_count(obj, "s"), table_version=_count(obj, "tv"))
    if kind == "treq":
        return TableRequest()
    if kind == "table":
        return _decode_table(obj)
    if kind == "bye":
        return Bye()
    if kind == "info":
        return Info(_decode_info(obj.get("i")))
    if kind == "probe":
        return Probe(_count(obj, "n"))
    if kind == "pack":
        return ProbeAck(_count(obj, "n"))
    if kind == "pchal":
        return PathChallenge(_count(obj, "n"))
    if kind == "presp":
        return PathResponse(_count(obj, "n"))
    if kind == "ready":
        leaving, fired = obj.get("l", False), obj.get("f", False)
        for key, flag in (("l", leaving), ("f", fired)):
            if not isinstance(flag, bool):
                raise _malformed(f"field {key!r}")
        return Ready(_count(obj, "a"), _get(obj, "d", bool), leaving, fired)
    if kind == "refused":
        return Refused(_decode_info(obj.get("i")))
    if kind == "relay":
        return Relay(_ip(obj.get("to")), _b64(obj.get("d"), MAX_RELAYED))
    if kind == "links":
        part, parts = _parts(obj)
        return LinkReport(_count(obj, "s"), part, parts, decode_record(obj.get("r")))
    if kind == "mreq":
        watch = _get(obj, "w", (int, float))
        if not 0 <= watch <= 3600:
            raise _malformed("watch")
        return MapRequest(_count(obj, "v"), float(watch))
    if kind == "map":
        return _decode_map(obj)
    raise _malformed("unknown message type")


def _bytes(value: Any, size: int) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size or not value.isalnum():
        raise _malformed("bytes")  # isalnum: fromhex would skip spaces
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise _malformed("bytes") from None


def decode_hello(data: bytes) -> Hello:
    """A handshake payload (see ``Hello``)."""
    obj = _json_object(data)
    info = _decode_info(obj.get("i"))
    if info.client:  # a plain WireGuard client speaks no admin protocol: a forgery
        raise _malformed("a handshake claiming to be a client")
    return Hello(info, _bytes(obj.get("b"), BOOT_SIZE), _boot_number(obj))
