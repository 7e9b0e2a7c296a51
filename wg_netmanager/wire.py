"""Admin-channel datagrams: sealing and message encoding.

Datagram layout (all integers big-endian)::

    version (1) | nonce (24) | XChaCha20-Poly1305( header | body ) incl. tag (16)
    header = sender wg_ip (4) | receiver wg_ip (4, 0.0.0.0 if unknown: hellos only)
             | sender boot id (8) | counter (8)
    body   = compact JSON object with a type field "t"

The version byte is authenticated as associated data and checked before any
decryption, so a future format is rejected cheaply and cleanly. The AEAD key is
derived from the shared key with keyed BLAKE2b and a personalisation string, so
the same shared key never serves two purposes.

Replay protection lives in the core (boot id + counter window + a challenge
on first contact); this module only frames, seals and validates shapes. Every
problem with received bytes raises ``Drop`` carrying a reason for the counters.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.encoding import RawEncoder
from nacl.exceptions import CryptoError
from nacl.hash import blake2b

from .core.events import DropReason
from .keys import from_b64
from .model import Endpoint

VERSION = 1
NONCE_SIZE = 24
TAG_SIZE = 16
HEADER = struct.Struct("!4s4s8sQ")
BOOT_SIZE = 8
CHALLENGE_SIZE = 16
# One datagram must cross a 1280-byte MTU path (IPv6 minimum) in one piece:
# 1280 - 40 (IPv6) - 8 (UDP). Tables larger than this are split.
MAX_DATAGRAM = 1232
OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE + HEADER.size
MAX_NAME = 32
MAX_LOCAL_ENDPOINTS = 8


class Drop(Exception):
    """Received bytes that are not a valid datagram; ``reason`` feeds the counters."""

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def derive_admin_key(shared_key: bytes) -> bytes:
    return blake2b(
        b"admin-channel",
        key=shared_key,
        person=b"wg_netmanager/1",
        digest_size=32,
        encoder=RawEncoder,
    )


def seal(key: bytes, plaintext: bytes, nonce: bytes | None = None) -> bytes:
    """``nonce``: NONCE_SIZE random bytes (the core passes its own randomness,
    so a seeded simulation repeats byte for byte); None: fresh from the OS."""
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    if len(nonce) != NONCE_SIZE:
        raise ValueError("an XChaCha20-Poly1305 nonce is 24 bytes")
    version = bytes([VERSION])
    return (
        version + nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, version, nonce, key)
    )


def open_sealed(key: bytes, datagram: bytes) -> bytes:
    if len(datagram) < 1 + NONCE_SIZE + TAG_SIZE:
        raise Drop(DropReason.MALFORMED, "too short")
    if datagram[0] != VERSION:
        raise Drop(DropReason.UNKNOWN_VERSION, str(datagram[0]))
    if len(datagram) > MAX_DATAGRAM:
        raise Drop(DropReason.MALFORMED, "too long")
    nonce = datagram[1 : 1 + NONCE_SIZE]
    try:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(
            datagram[1 + NONCE_SIZE :], datagram[:1], nonce, key
        )
    except CryptoError:
        raise Drop(DropReason.BAD_SEAL) from None


# --- messages -------------------------------------------------------------


UNKNOWN_RECEIVER = IPv4Address(0)


@dataclass(frozen=True)
class Header:
    wg_ip: IPv4Address  # the sender
    boot: bytes
    counter: int
    # The receiver, so that a datagram captured on its way to one node cannot
    # be replayed to another (counters are per sender, not per pair).
    to: IPv4Address = UNKNOWN_RECEIVER


@dataclass(frozen=True)
class NodeInfo:
    """What a node says about itself; gossiped unchanged by static nodes."""

    wg_ip: IPv4Address
    name: str
    public_key: str  # WireGuard base64
    wg_port: int
    admin_port: int
    local_endpoints: tuple[Endpoint, ...] = ()  # underlay addresses (LAN discovery)


@dataclass(frozen=True)
class Hello:
    """First contact and key announcement.

    ``challenge`` is fresh randomness the receiver must echo; a hello whose
    ``echo`` matches a challenge we issued proves the sender is alive now, so
    its boot id (and key) can be trusted without comparing clocks.
    """

    info: NodeInfo
    challenge: bytes
    echo: bytes | None = None
    want_echo: bool = True


@dataclass(frozen=True)
class Ping:
    seq: int
    table_version: int = 0


@dataclass(frozen=True)
class Pong:
    seq: int
    table_version: int = 0


@dataclass(frozen=True)
class TableRequest:
    pass


@dataclass(frozen=True)
class TableEntry:
    """A node as a static node knows it: its info plus what only the static sees."""

    info: NodeInfo
    boot: bytes
    wg_endpoint: Endpoint | None  # as WireGuard on the static sees it (NAT outside)
    admin_endpoint: Endpoint | None  # source of its admin datagrams at the static
    age: float  # seconds since the static last heard from it


@dataclass(frozen=True)
class Table:
    """One part of a static node's table; a version is complete when all parts arrived."""

    version: int
    part: int
    parts: int
    entries: tuple[TableEntry, ...]


@dataclass(frozen=True)
class Bye:
    pass


@dataclass(frozen=True)
class Probe:
    """Sent to a peer's local (LAN) address: does the underlay reach it directly?"""

    token: int


@dataclass(frozen=True)
class ProbeAck:
    token: int


@dataclass(frozen=True)
class Ready:
    """The sender has the receiver in its WireGuard: a handshake will be answered.

    ``direct`` says the sender saw the handshake and moved the receiver's
    address to the direct link; the receiver follows at once, so the two
    sides disagree (and packets between them are lost) only for a moment.
    ``leaving`` says only that the sender left the direct link (attempt
    ``attempt`` begins): the receiver leaves it too, at once.
    """

    attempt: int
    direct: bool = False
    leaving: bool = False


@dataclass(frozen=True)
class Refused:
    """Your claim to your wg IP is refused: ``holder`` is alive and uses it.

    ``echo`` is the challenge of the refused hello, so only the boot that sent
    it, and only while that challenge is fresh, takes the refusal to heart: a
    replayed Refused changes nothing.
    """

    echo: bytes
    holder: NodeInfo


@dataclass(frozen=True)
class Relay:
    """To a static node: pass ``datagram`` (sealed by the sender for ``to``) on
    to ``to``'s admin endpoint, unopened.

    For the one message that must get through when a direct link between two
    dynamic nodes breaks: "I left the link". Over the link it is lost, and
    through the gateway's tunnel too, because the peer's WireGuard drops what
    the gateway forwards from an address the peer still has as a direct peer.
    """

    to: IPv4Address
    datagram: bytes


MAX_RELAYED = 512  # bytes of a relayed datagram (a Ready is about 100)

Message = (
    Hello | Ping | Pong | TableRequest | Table | Bye | Probe | ProbeAck | Ready | Refused | Relay
)


# --- encoding -------------------------------------------------------------


def _ep(endpoint: Endpoint | None) -> str | None:
    return None if endpoint is None else f"{endpoint[0]}:{endpoint[1]}"


def _info(info: NodeInfo) -> dict[str, Any]:
    return {
        "ip": str(info.wg_ip),
        "n": info.name,
        "k": info.public_key,
        "wp": info.wg_port,
        "ap": info.admin_port,
        "l": [_ep(e) for e in info.local_endpoints],
    }


def _entry(entry: TableEntry) -> dict[str, Any]:
    return {
        "i": _info(entry.info),
        "b": entry.boot.hex(),
        "we": _ep(entry.wg_endpoint),
        "ae": _ep(entry.admin_endpoint),
        "age": round(entry.age, 1),
    }


def _body(message: Message) -> dict[str, Any]:
    match message:
        case Hello():
            return {
                "t": "hello",
                "i": _info(message.info),
                "c": message.challenge.hex(),
                "e": None if message.echo is None else message.echo.hex(),
                "w": message.want_echo,
            }
        case Ping():
            return {"t": "ping", "s": message.seq, "tv": message.table_version}
        case Pong():
            return {"t": "pong", "s": message.seq, "tv": message.table_version}
        case TableRequest():
            return {"t": "treq"}
        case Table():
            return {
                "t": "table",
                "v": message.version,
                "p": message.part,
                "n": message.parts,
                "e": [_entry(e) for e in message.entries],
            }
        case Bye():
            return {"t": "bye"}
        case Probe():
            return {"t": "probe", "n": message.token}
        case ProbeAck():
            return {"t": "pack", "n": message.token}
        case Ready():
            body: dict[str, Any] = {"t": "ready", "a": message.attempt, "d": message.direct}
            if message.leaving:
                body["l"] = True
            return body
        case Refused():
            return {"t": "refused", "e": message.echo.hex(), "i": _info(message.holder)}
        case Relay():
            return {
                "t": "relay",
                "to": str(message.to),
                "d": base64.b64encode(message.datagram).decode(),
            }
    raise TypeError(f"not a message: {message!r}")  # our own bug, not network input


def encode(header: Header, message: Message) -> bytes:
    body = json.dumps(_body(message), separators=(",", ":")).encode()
    return HEADER.pack(header.wg_ip.packed, header.to.packed, header.boot, header.counter) + body


def encoded_size(message: Message) -> int:
    """Bytes on the wire once sealed (for splitting tables)."""
    body = json.dumps(_body(message), separators=(",", ":")).encode()
    return OVERHEAD + len(body)


# --- decoding: strict, every surprise is Drop(DropReason.MALFORMED) ----------------


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(key)
    # bool is an int in Python; a JSON true is never a valid number here.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise Drop(DropReason.MALFORMED, f"field {key!r}")
    return value


def _port(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise Drop(DropReason.MALFORMED, "port")
    return value


def _decode_ep(value: Any) -> Endpoint | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 21:
        raise Drop(DropReason.MALFORMED, "endpoint")
    host, sep, port = value.rpartition(":")
    # isascii: str.isdigit() is true for '²' and Arabic-Indic digits too.
    if not sep or not (port.isascii() and port.isdigit()) or len(port) > 5:
        raise Drop(DropReason.MALFORMED, "endpoint")
    try:
        IPv4Address(host)
    except ValueError:
        raise Drop(DropReason.MALFORMED, "endpoint") from None
    return (host, _port(int(port)))


def _bytes(value: Any, size: int) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size or not value.isalnum():
        raise Drop(DropReason.MALFORMED, "bytes")  # isalnum: fromhex would skip spaces
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise Drop(DropReason.MALFORMED, "bytes") from None


def _ip(value: Any) -> IPv4Address:
    if not isinstance(value, str) or len(value) > 15:
        raise Drop(DropReason.MALFORMED, "ip")
    try:
        return IPv4Address(value)
    except ValueError:
        raise Drop(DropReason.MALFORMED, "ip") from None


def _b64(value: Any, limit: int) -> bytes:
    if not isinstance(value, str) or not 0 < len(value) <= (limit + 2) // 3 * 4:
        raise Drop(DropReason.MALFORMED, "base64")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Drop(DropReason.MALFORMED, "base64") from None
    if base64.b64encode(data).decode() != value or len(data) > limit:  # canonical, bounded
        raise Drop(DropReason.MALFORMED, "base64")
    return data


def _decode_info(obj: Any) -> NodeInfo:
    if not isinstance(obj, dict):
        raise Drop(DropReason.MALFORMED, "info")
    name = _get(obj, "n", str)
    if not 0 < len(name) <= MAX_NAME or not name.isprintable():
        raise Drop(DropReason.MALFORMED, "name")
    key = _get(obj, "k", str)
    try:
        from_b64(key)
        wg_ip = IPv4Address(_get(obj, "ip", str))
    except ValueError:
        raise Drop(DropReason.MALFORMED, "key or ip") from None
    locals_ = _get(obj, "l", list)
    if len(locals_) > MAX_LOCAL_ENDPOINTS:
        raise Drop(DropReason.MALFORMED, "too many local endpoints")
    endpoints = tuple(_decode_ep(e) for e in locals_)
    if None in endpoints:
        raise Drop(DropReason.MALFORMED, "local endpoint")
    return NodeInfo(
        wg_ip=wg_ip,
        name=name,
        public_key=key,
        wg_port=_port(obj.get("wp")),
        admin_port=_port(obj.get("ap")),
        local_endpoints=endpoints,  # type: ignore[arg-type]
    )


def _decode_entry(obj: Any) -> TableEntry:
    if not isinstance(obj, dict):
        raise Drop(DropReason.MALFORMED, "entry")
    age = _get(obj, "age", (int, float))
    if not 0 <= age < 1e9:
        raise Drop(DropReason.MALFORMED, "age")
    return TableEntry(
        info=_decode_info(obj.get("i")),
        boot=_bytes(obj.get("b"), BOOT_SIZE),
        wg_endpoint=_decode_ep(obj.get("we")),
        admin_endpoint=_decode_ep(obj.get("ae")),
        age=float(age),
    )


def _count(obj: dict[str, Any], key: str) -> int:
    value = _get(obj, key, int)
    if not 0 <= value < 2**63:
        raise Drop(DropReason.MALFORMED, key)
    return int(value)


def _decode_body(obj: Any) -> Message:
    if not isinstance(obj, dict):
        raise Drop(DropReason.MALFORMED, "body")
    kind = obj.get("t")
    if kind == "hello":
        echo = obj.get("e")
        return Hello(
            info=_decode_info(obj.get("i")),
            challenge=_bytes(obj.get("c"), CHALLENGE_SIZE),
            echo=None if echo is None else _bytes(echo, CHALLENGE_SIZE),
            want_echo=_get(obj, "w", bool),
        )
    if kind == "ping":
        return Ping(seq=_count(obj, "s"), table_version=_count(obj, "tv"))
    if kind == "pong":
        return Pong(seq=_count(obj, "s"), table_version=_count(obj, "tv"))
    if kind == "treq":
        return TableRequest()
    if kind == "table":
        parts = _count(obj, "n")
        part = _count(obj, "p")
        if not 0 <= part < parts <= 4096:
            raise Drop(DropReason.MALFORMED, "table part")
        entries = _get(obj, "e", list)
        return Table(
            version=_count(obj, "v"),
            part=part,
            parts=parts,
            entries=tuple(_decode_entry(e) for e in entries),
        )
    if kind == "bye":
        return Bye()
    if kind == "probe":
        return Probe(_count(obj, "n"))
    if kind == "pack":
        return ProbeAck(_count(obj, "n"))
    if kind == "ready":
        leaving = obj.get("l", False)
        if not isinstance(leaving, bool):
            raise Drop(DropReason.MALFORMED, "field 'l'")
        return Ready(_count(obj, "a"), _get(obj, "d", bool), leaving)
    if kind == "refused":
        return Refused(_bytes(obj.get("e"), CHALLENGE_SIZE), _decode_info(obj.get("i")))
    if kind == "relay":
        return Relay(_ip(obj.get("to")), _b64(obj.get("d"), MAX_RELAYED))
    raise Drop(DropReason.MALFORMED, "unknown message type")


def decode(plaintext: bytes) -> tuple[Header, Message]:
    if len(plaintext) < HEADER.size:
        raise Drop(DropReason.MALFORMED, "short header")
    ip, to, boot, counter = HEADER.unpack_from(plaintext)
    try:
        body = json.loads(plaintext[HEADER.size :])
    except (ValueError, RecursionError):
        raise Drop(DropReason.MALFORMED, "not json") from None
    return Header(IPv4Address(ip), boot, counter, IPv4Address(to)), _decode_body(body)


def open_datagram(key: bytes, datagram: bytes) -> tuple[Header, Message]:
    return decode(open_sealed(key, datagram))


def seal_message(key: bytes, header: Header, message: Message, nonce: bytes | None = None) -> bytes:
    return seal(key, encode(header, message), nonce)
