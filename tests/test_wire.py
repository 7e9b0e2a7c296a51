"""Sealing and the message codec: round trips, and every bad input is a Drop."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import struct
from ipaddress import IPv4Address, IPv4Network
from random import Random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import ADMIN_KEY as KEY
from tests.helpers import SHARED_KEY as SHARED
from tests.helpers import make_node
from wg_netmanager import wire
from wg_netmanager.core.node import Node
from wg_netmanager.core.replay import ReplayWindow
from wg_netmanager.core.sessions import Session, StaticTarget
from wg_netmanager.keys import from_b64, to_b64
from wg_netmanager.model import WgPeerReading
from wg_netmanager.wire import (
    MAX_DATAGRAM,
    Bye,
    Drop,
    Header,
    Hello,
    NodeInfo,
    Ping,
    Pong,
    Table,
    TableEntry,
    TableRequest,
)

OTHER_KEY = wire.derive_admin_key(bytes(range(1, 33)))
HEADER = Header(IPv4Address("10.1.1.7"), bytes.fromhex("0102030405060708"), 42)
HEADER_FIELDS = {f.name for f in dataclasses.fields(Header)}


def header_bytes(header: Header = HEADER) -> bytes:
    """The plaintext header as the encoder lays it out."""
    return wire.encode(header, Bye())[: wire.HEADER.size]


PUBKEY = to_b64(bytes(range(100, 132)))
INFO = NodeInfo(
    wg_ip=IPv4Address("10.1.1.7"),
    name="bob",
    public_key=PUBKEY,
    wg_port=51820,
    admin_port=51821,
    local_endpoints=(("192.168.1.7", 51820),),
)
HELLO = Hello(INFO, challenge=bytes(range(16)), echo=bytes(range(16, 32)), want_echo=False)


def sealed_ping() -> bytes:
    return wire.seal_message(KEY, HEADER, Ping(7, 3))


def reason(key: bytes, datagram: bytes) -> str:
    """The Drop reason for a datagram; fails the test on success or any other exception."""
    with pytest.raises(Drop) as caught:
        wire.open_datagram(key, datagram)
    return caught.value.reason


# --- sealing --------------------------------------------------------------


def test_seal_open_round_trip() -> None:
    datagram = wire.seal(KEY, b"hello world")
    assert datagram[0] == wire.VERSION == 1
    assert len(datagram) == 1 + wire.NONCE_SIZE + len(b"hello world") + wire.TAG_SIZE
    assert wire.open_sealed(KEY, datagram) == b"hello world"
    assert wire.open_datagram(KEY, sealed_ping()) == (HEADER, Ping(7, 3))


def test_nonces_are_fresh() -> None:
    a, b = wire.seal(KEY, b"x"), wire.seal(KEY, b"x")
    assert a[1:25] != b[1:25]
    assert a != b


def test_given_nonce_is_used() -> None:
    nonce = bytes(24)
    assert wire.seal(KEY, b"x", nonce) == wire.seal(KEY, b"x", nonce)
    assert wire.seal(KEY, b"x", nonce)[1:25] == nonce


def test_every_single_byte_tamper_is_detected() -> None:
    datagram = sealed_ping()
    for position in range(len(datagram)):
        for flip in (0x01, 0x80, 0xFF):
            tampered = bytearray(datagram)
            tampered[position] ^= flip
            expected = "unknown version" if position == 0 else "bad seal"
            assert reason(KEY, bytes(tampered)) == expected, (position, flip)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_tamper_is_detected(data: st.DataObject) -> None:
    datagram = bytearray(wire.seal_message(KEY, HEADER, HELLO))
    position = data.draw(st.integers(0, len(datagram) - 1))
    datagram[position] ^= data.draw(st.integers(1, 255))
    assert reason(KEY, bytes(datagram)) == ("unknown version" if position == 0 else "bad seal")


def test_wrong_shared_key_is_bad_seal() -> None:
    assert reason(OTHER_KEY, sealed_ping()) == "bad seal"
    # The raw shared key is not the admin key either.
    assert reason(SHARED, sealed_ping()) == "bad seal"


def test_truncation_at_every_length_is_a_drop() -> None:
    datagram = sealed_ping()
    minimum = 1 + wire.NONCE_SIZE + wire.TAG_SIZE
    for length in range(len(datagram)):
        expected = "malformed" if length < minimum else "bad seal"
        assert reason(KEY, datagram[:length]) == expected, length


def test_sealed_but_shorter_than_a_header_is_malformed() -> None:
    for length in range(wire.HEADER.size):
        assert reason(KEY, wire.seal(KEY, bytes(length))) == "malformed"


def test_largest_datagram_opens_one_more_byte_is_malformed() -> None:
    room = MAX_DATAGRAM - 1 - wire.NONCE_SIZE - wire.TAG_SIZE
    biggest = wire.seal(KEY, bytes(room))
    assert len(biggest) == MAX_DATAGRAM
    assert wire.open_sealed(KEY, biggest) == bytes(room)
    too_big = wire.seal(KEY, bytes(room + 1))  # a valid seal, only too long
    assert len(too_big) == MAX_DATAGRAM + 1
    with pytest.raises(Drop) as caught:
        wire.open_sealed(KEY, too_big)
    assert caught.value.reason == "malformed"
    assert reason(KEY, wire.seal(KEY, bytes(60_000))) == "malformed"


def test_unknown_version_is_refused_before_decryption(monkeypatch: pytest.MonkeyPatch) -> None:
    # A datagram that is a perfectly valid AEAD if the version byte 2 were accepted.
    nonce = os.urandom(wire.NONCE_SIZE)
    plaintext = wire.encode(HEADER, Ping(1, 1))
    body = wire.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, b"\x02", nonce, KEY)
    datagram = b"\x02" + nonce + body
    assert wire.crypto_aead_xchacha20poly1305_ietf_decrypt(body, b"\x02", nonce, KEY) == plaintext
    calls: list[bytes] = []

    def spy(*args: Any) -> bytes:
        calls.append(args[0])
        raise AssertionError("decryption attempted")

    monkeypatch.setattr(wire, "crypto_aead_xchacha20poly1305_ietf_decrypt", spy)
    for version in (0, 2, 255):
        assert reason(KEY, bytes([version]) + datagram[1:]) == "unknown version"
    assert calls == []
    # Oversized and short datagrams never reach the cipher either.
    assert reason(KEY, b"\x01" + bytes(MAX_DATAGRAM)) == "malformed"
    assert reason(KEY, b"\x01" + bytes(10)) == "malformed"
    assert calls == []


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_only_drop(data: bytes) -> None:
    for candidate in (data, b"\x01" + data):
        with pytest.raises(Drop):
            wire.open_datagram(KEY, candidate)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(0, 65536), seed=st.integers(0, 2**32))
def test_random_large_bytes_only_drop(size: int, seed: int) -> None:
    data = Random(seed).randbytes(size)
    for candidate in (data, b"\x01" + data[1:]):
        with pytest.raises(Drop):
            wire.open_datagram(KEY, candidate)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=1200))
def test_sealed_random_plaintext_only_drops(plaintext: bytes) -> None:
    """Someone with the shared key sending nonsense: still only Drop."""
    datagram = wire.seal(KEY, header_bytes() + plaintext)
    try:
        wire.open_datagram(KEY, datagram)
    except Drop as drop:
        assert drop.reason == "malformed"


# --- derive_admin_key -----------------------------------------------------


def test_derive_admin_key() -> None:
    a = wire.derive_admin_key(SHARED)
    assert len(a) == 32
    assert a != SHARED
    assert a == wire.derive_admin_key(bytes(SHARED))  # deterministic
    keys = {wire.derive_admin_key(bytes([i]) * 32) for i in range(50)}
    assert len(keys) == 50
    assert wire.derive_admin_key(bytes(32)) != bytes(32)
    flipped = bytes([SHARED[0] ^ 1]) + SHARED[1:]
    assert wire.derive_admin_key(flipped) != a


# --- message round trips ----------------------------------------------------

ipv4 = st.ip_addresses(v=4)
ports = st.integers(1, 65535)
endpoints = st.tuples(ipv4.map(str), ports)
names = st.text(min_size=1, max_size=wire.MAX_NAME).filter(str.isprintable)
public_keys = st.binary(min_size=32, max_size=32).map(to_b64)
infos = st.builds(
    NodeInfo,
    wg_ip=ipv4,
    name=names,
    public_key=public_keys,
    wg_port=ports,
    admin_port=ports,
    local_endpoints=st.lists(endpoints, max_size=wire.MAX_LOCAL_ENDPOINTS).map(tuple),
)
headers = st.builds(
    Header,
    wg_ip=ipv4,
    boot=st.binary(min_size=8, max_size=8),
    counter=st.integers(0, 2**64 - 1),
    # The receiver, where the header names one.
    **({"to": ipv4} if "to" in HEADER_FIELDS else {}),
)
counts = st.integers(0, 2**63 - 1)
challenges = st.binary(min_size=16, max_size=16)
entries = st.builds(
    TableEntry,
    info=infos,
    boot=st.binary(min_size=8, max_size=8),
    wg_endpoint=st.none() | endpoints,
    admin_endpoint=st.none() | endpoints,
    # The encoder keeps one decimal; such values survive exactly.
    age=st.integers(0, 10**7).map(lambda tenths: tenths / 10),
)


@st.composite
def tables(draw: st.DrawFn) -> Table:
    parts = draw(st.integers(1, 4096))
    return Table(
        version=draw(counts),
        part=draw(st.integers(0, parts - 1)),
        parts=parts,
        entries=tuple(draw(st.lists(entries, max_size=4))),
    )


messages = st.one_of(
    st.builds(Hello, info=infos, challenge=challenges, echo=st.none(), want_echo=st.booleans()),
    st.builds(Hello, info=infos, challenge=challenges, echo=challenges, want_echo=st.booleans()),
    st.builds(Ping, seq=counts, table_version=counts),
    st.builds(Pong, seq=counts, table_version=counts),
    st.just(TableRequest()),
    tables(),
    st.just(Bye()),
    st.builds(wire.Refused, echo=challenges, holder=infos),
    st.builds(wire.Relay, to=ipv4, datagram=st.binary(min_size=1, max_size=wire.MAX_RELAYED)),
    st.builds(wire.Probe, token=counts),
    st.builds(wire.ProbeAck, token=counts),
    st.builds(wire.Ready, attempt=counts, direct=st.booleans(), leaving=st.booleans()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=headers, message=messages)
def test_encode_decode_round_trip(header: Header, message: wire.Message) -> None:
    assert wire.decode(wire.encode(header, message)) == (header, message)
    datagram = wire.seal_message(KEY, header, message)
    assert len(datagram) == wire.encoded_size(message)
    if len(datagram) <= MAX_DATAGRAM:
        assert wire.open_datagram(KEY, datagram) == (header, message)
    else:
        assert reason(KEY, datagram) == "malformed"


@pytest.mark.parametrize(
    "message",
    [
        Hello(INFO, bytes(16)),
        Hello(INFO, bytes(16), bytes(range(16)), want_echo=False),
        Ping(0, 0),
        Ping(2**63 - 1, 2**63 - 1),
        Pong(5, 6),
        TableRequest(),
        Table(3, 0, 1, ()),
        Table(3, 1, 2, (TableEntry(INFO, bytes(8), None, ("1.2.3.4", 5), 0.0),)),
        Bye(),
        wire.Refused(bytes(range(16)), INFO),
        wire.Relay(IPv4Address("10.1.1.4"), bytes(range(256)) * 2),
        wire.Ready(7, leaving=True),
        wire.Ready(7, direct=True),
    ],
)
def test_each_message_type_round_trips_sealed(message: wire.Message) -> None:
    header = Header(IPv4Address("10.1.1.250"), os.urandom(8), 2**64 - 1)
    assert wire.open_datagram(KEY, wire.seal_message(KEY, header, message)) == (header, message)


def test_encoding_is_compact_json() -> None:
    plaintext = wire.encode(HEADER, Ping(1, 2))
    # Sender first, boot and counter last; a receiver field may sit in between.
    assert plaintext[:4] == HEADER.wg_ip.packed
    assert plaintext[wire.HEADER.size - 16 : wire.HEADER.size] == HEADER.boot + (42).to_bytes(8)
    assert plaintext[wire.HEADER.size :] == b'{"t":"ping","s":1,"tv":2}'


def test_encoding_a_non_message_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        wire.encode(HEADER, "ping")  # type: ignore[arg-type]


# --- decoder strictness ---------------------------------------------------


def good_body(kind: str) -> dict[str, Any]:
    body = json.loads(wire.encode(HEADER, _GOOD[kind])[wire.HEADER.size :])
    assert isinstance(body, dict)
    return body


_ENTRY = TableEntry(INFO, bytes(8), ("198.51.100.7", 40000), ("198.51.100.7", 40001), 1.5)
_GOOD: dict[str, wire.Message] = {
    "hello": HELLO,
    "ping": Ping(1, 2),
    "pong": Pong(1, 2),
    "table": Table(1, 0, 2, (_ENTRY,)),
    "refused": wire.Refused(bytes(16), INFO),
    "relay": wire.Relay(IPv4Address("10.1.1.4"), b"sealed"),
}


def decode_body(body: Any) -> wire.Message:
    plaintext = header_bytes()
    return wire.decode(plaintext + json.dumps(body).encode())[1]


def test_good_bodies_decode() -> None:
    for kind, message in _GOOD.items():
        assert decode_body(good_body(kind)) == message


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def mutate(body: dict[str, Any]) -> None:
        target: Any = body
        for step in path[:-1]:
            target = target[step]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return mutate


_DELETE = object()
_B64_31 = to_b64(bytes(31)).rstrip("=")
# (message kind, path into the JSON body, bad value)
BAD_FIELDS: list[tuple[str, tuple[Any, ...], Any]] = [
    # ports
    ("hello", ("i", "wp"), True),
    ("hello", ("i", "wp"), False),
    ("hello", ("i", "wp"), 0),
    ("hello", ("i", "wp"), -1),
    ("hello", ("i", "wp"), 65536),
    ("hello", ("i", "wp"), "51820"),
    ("hello", ("i", "wp"), 51820.0),
    ("hello", ("i", "wp"), None),
    ("hello", ("i", "ap"), _DELETE),
    # names
    ("hello", ("i", "n"), ""),
    ("hello", ("i", "n"), "x" * 33),
    ("hello", ("i", "n"), "bob\n"),
    ("hello", ("i", "n"), "bob\x00"),
    ("hello", ("i", "n"), "\u200b"),
    ("hello", ("i", "n"), 5),
    ("hello", ("i", "n"), None),
    # keys
    ("hello", ("i", "k"), "not a key"),
    ("hello", ("i", "k"), ""),
    ("hello", ("i", "k"), to_b64(bytes(31))),
    ("hello", ("i", "k"), to_b64(bytes(33))),
    ("hello", ("i", "k"), _B64_31),
    ("hello", ("i", "k"), PUBKEY[:-1] + "é"),
    ("hello", ("i", "k"), PUBKEY.rstrip("=")),
    ("hello", ("i", "k"), 12),
    # ip
    ("hello", ("i", "ip"), "10.1.1"),
    ("hello", ("i", "ip"), "10.1.1.256"),
    ("hello", ("i", "ip"), "::1"),
    ("hello", ("i", "ip"), 167837953),
    ("hello", ("i", "ip"), "010.1.1.1"),
    # local endpoints
    ("hello", ("i", "l"), [f"192.168.1.{i}:1" for i in range(wire.MAX_LOCAL_ENDPOINTS + 1)]),
    ("hello", ("i", "l"), ["192.168.1.7"]),
    ("hello", ("i", "l"), ["192.168.1.7:"]),
    ("hello", ("i", "l"), ["192.168.1.7:0"]),
    ("hello", ("i", "l"), ["192.168.1.7:65536"]),
    ("hello", ("i", "l"), ["192.168.1.7:-1"]),
    ("hello", ("i", "l"), ["192.168.1.7:+80"]),
    ("hello", ("i", "l"), ["host.example:80"]),
    ("hello", ("i", "l"), ["[::1]:80"]),
    ("hello", ("i", "l"), [None]),
    ("hello", ("i", "l"), [80]),
    ("hello", ("i", "l"), "192.168.1.7:80"),
    ("hello", ("i", "l"), None),
    # challenge / echo / want_echo
    ("hello", ("c",), "00" * 15),
    ("hello", ("c",), "00" * 17),
    ("hello", ("c",), "zz" * 16),
    ("hello", ("c",), None),
    ("hello", ("e",), "00"),
    ("hello", ("e",), 0),
    ("hello", ("w",), "true"),
    ("hello", ("w",), 1),
    ("hello", ("w",), _DELETE),
    ("hello", ("i",), None),
    ("hello", ("i",), []),
    # counts
    ("ping", ("s",), -1),
    ("ping", ("s",), True),
    ("ping", ("s",), 1.0),
    ("ping", ("s",), 2**63),
    ("ping", ("s",), "1"),
    ("ping", ("tv",), _DELETE),
    ("pong", ("tv",), -5),
    ("pong", ("s",), None),
    # tables
    ("table", ("n",), 0),
    ("table", ("n",), 4097),
    ("table", ("p",), 2),
    ("table", ("p",), -1),
    ("table", ("v",), -1),
    ("table", ("v",), False),
    ("table", ("e",), None),
    ("table", ("e",), {}),
    ("table", ("e", 0), "entry"),
    ("table", ("e", 0, "age"), -0.1),
    ("table", ("e", 0, "age"), 1e9),
    ("table", ("e", 0, "age"), "1"),
    ("table", ("e", 0, "age"), True),
    ("table", ("e", 0, "b"), "00" * 7),
    ("table", ("e", 0, "b"), None),
    ("table", ("e", 0, "we"), "1.2.3.4"),
    ("table", ("e", 0, "ae"), 5),
    ("table", ("e", 0, "i", "n"), ""),
    # refusals
    ("refused", ("e",), "00" * 15),
    ("refused", ("e",), None),
    ("refused", ("i",), None),
    ("refused", ("i", "ip"), "10.1.1"),
    # relays
    ("relay", ("to",), "10.1.1"),
    ("relay", ("to",), None),
    ("relay", ("d",), ""),
    ("relay", ("d",), "not base64!"),
    ("relay", ("d",), "c2VhbGVk"[:-1]),
    ("relay", ("d",), "c2VhbGVk\n"),
    ("relay", ("d",), "A" * (4 * wire.MAX_RELAYED)),
    ("relay", ("d",), base64.b64encode(bytes(wire.MAX_RELAYED + 1)).decode()),
    ("relay", ("d",), 5),
    # the type
    ("ping", ("t",), "nope"),
    ("ping", ("t",), None),
    ("ping", ("t",), _DELETE),
    ("ping", ("t",), ["ping"]),
    ("ping", ("t",), "PING"),
]


@pytest.mark.parametrize(("kind", "path", "value"), BAD_FIELDS)
def test_wrong_fields_are_malformed(kind: str, path: tuple[Any, ...], value: Any) -> None:
    body = good_body(kind)
    _set(path, value)(body)
    with pytest.raises(Drop) as caught:
        decode_body(body)
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"null",
        b"[]",
        b'"hello"',
        b"1",
        b"\xff\xfe",
        b'{"t":"ping","s":1,"tv":2',
        b'{"t":"ping","s":NaN,"tv":2}',
        b'{"t":"ping","s":Infinity,"tv":2}',
        b'{"t":"ping","s":1e400,"tv":2}',
        b'{"t":"ping","s":1,"tv":2}x',
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b"[" * 100_000,
    ],
)
def test_bad_json_is_malformed(raw: bytes) -> None:
    plaintext = header_bytes() + raw
    with pytest.raises(Drop) as caught:
        wire.decode(plaintext)
    assert caught.value.reason == "malformed"


def test_deep_nesting_in_a_datagram_is_a_drop() -> None:
    room = MAX_DATAGRAM - wire.OVERHEAD
    for body in (b"[" * room, b"[" * (room // 2) + b"]" * (room // 2)):
        datagram = wire.seal(KEY, wire.encode(HEADER, Bye())[: wire.HEADER.size] + body)
        assert len(datagram) <= MAX_DATAGRAM
        assert reason(KEY, datagram) == "malformed"


def test_short_header_is_malformed() -> None:
    for length in range(wire.HEADER.size):
        with pytest.raises(Drop) as caught:
            wire.decode(bytes(length))
        assert caught.value.reason == "malformed"


@pytest.mark.parametrize("port", ["²", "8²", "⑧"])
def test_unicode_digit_port_is_malformed_not_a_crash(port: str) -> None:
    body = good_body("hello")
    body["i"]["l"] = [f"192.168.1.7:{port}"]
    with pytest.raises(Drop) as caught:
        decode_body(body)
    assert caught.value.reason == "malformed"


def test_non_ascii_decimal_port_is_malformed() -> None:
    body = good_body("hello")
    body["i"]["l"] = ["192.168.1.7:٨٠"]
    with pytest.raises(Drop):
        decode_body(body)


@pytest.mark.parametrize(("field", "size"), [("c", 16), ("e", 16)])
def test_hex_with_whitespace_is_malformed(field: str, size: int) -> None:
    body = good_body("hello")
    body[field] = "00" * (size - 1) + "  "
    with pytest.raises(Drop) as caught:
        decode_body(body)
    assert caught.value.reason == "malformed"


def test_non_canonical_key_is_malformed() -> None:
    canonical = to_b64(bytes(32))  # "AAAA...AAA="
    other = canonical[:-2] + "B="  # base64 of the same 32 bytes, non-zero padding bits
    with pytest.raises(ValueError, match="canonical"):
        from_b64(other)
    body = good_body("hello")
    body["i"]["k"] = other
    with pytest.raises(Drop):
        decode_body(body)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=20,
)


@st.composite
def mangled_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body with a few fields replaced by arbitrary JSON values."""
    kind = draw(st.sampled_from(sorted(_GOOD)))
    body = good_body(kind)
    for _ in range(draw(st.integers(1, 3))):
        target: Any = body
        while True:
            keys = list(target) if isinstance(target, dict) else list(range(len(target)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            child = target[key]
            if isinstance(child, dict | list) and child and draw(st.booleans()):
                target = child
                continue
            target[key] = draw(_json)
            break
    return body


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mangled_bodies())
def test_mangled_bodies_decode_or_drop(body: dict[str, Any]) -> None:
    try:
        message = decode_body(body)
    except Drop as drop:
        assert drop.reason == "malformed"
        return
    # Whatever is accepted is a well-formed message that encodes back to itself.
    assert wire.decode(wire.encode(HEADER, message)) == (HEADER, message)


# --- sizes ----------------------------------------------------------------

BIG_EP = ("255.255.255.255", 65535)


def worst_info(i: int, name: str) -> NodeInfo:
    return NodeInfo(
        wg_ip=IPv4Address("10.0.0.0") + i,
        name=name,
        public_key=to_b64(struct.pack("!I", i) * 8),
        wg_port=65535,
        admin_port=65535,
        local_endpoints=(BIG_EP,) * wire.MAX_LOCAL_ENDPOINTS,
    )


def static_node_with_sessions(infos: list[NodeInfo], *, table_version: int) -> Node:
    """A static node as the core runs it, with a session and a WireGuard reading per info."""
    own = NodeInfo(IPv4Address("10.0.0.1"), "static", to_b64(bytes(32)), 51820, 51821)
    node = make_node(
        own,
        statics=[StaticTarget(own.wg_ip, "static", 51820, 51821, address="198.51.100.1")],
        subnet=IPv4Network("10.0.0.0/16"),
        rng=Random(1),
    )
    readings = {}
    for index, info in enumerate(infos):
        node.sessions[info.wg_ip] = Session(
            info=info,
            boot=struct.pack("!Q", 2**64 - 1 - index),
            addr=BIG_EP,
            replay=ReplayWindow(0),
            established=0.0,
            last_heard=0.0,
            pinger=False,
        )
        readings[info.public_key] = WgPeerReading(info.public_key, BIG_EP, (), 1.0, 0, 0)
    node.update_wg(readings, 0.0)
    node.datagrams_to_send()
    node.table.version = table_version
    return node


def send_table(node: Node, now: float) -> list[bytes]:
    some = next(iter(node.sessions.values()))
    node._send_table(some, now)
    return [data for data, _ in node.datagrams_to_send()]


def reassemble(datagrams: list[bytes]) -> list[TableEntry]:
    tables = [wire.open_datagram(KEY, d)[1] for d in datagrams]
    assert all(isinstance(t, Table) for t in tables)
    assert [t.part for t in tables] == list(range(len(tables)))  # type: ignore[union-attr]
    assert {t.parts for t in tables} == {len(tables)}  # type: ignore[union-attr]
    return [e for t in tables for e in t.entries]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "table_version"),
    [("x" * 32, 1), ("é" * 32, 7), ("\U0001f600" * 32, 3), ("x" * 32, 10**6)],
)
def test_table_of_200_worst_case_entries_fits_in_datagrams(name: str, table_version: int) -> None:
    infos = [worst_info(i, name) for i in range(2, 202)]
    node = static_node_with_sessions(infos, table_version=table_version)
    datagrams = send_table(node, now=999_999.0)
    assert len(datagrams) > 1
    assert max(len(d) for d in datagrams) <= MAX_DATAGRAM
    received = reassemble(datagrams)
    assert [e.info for e in received] == infos


def test_empty_table_is_one_part() -> None:
    node = static_node_with_sessions([], table_version=5)
    some = Session(INFO, bytes(8), BIG_EP, ReplayWindow(0), 0.0, 0.0, False)
    node._send_table(some, 1.0)
    (datagram,) = [d for d, _ in node.datagrams_to_send()]
    assert wire.open_datagram(KEY, datagram)[1] == Table(5, 0, 1, ())


def test_worst_case_hello_and_single_entry_fit() -> None:
    for name in ("x" * 32, "é" * 32, "\U0001f600" * 32):
        info = worst_info(3, name)
        hello = Hello(info, bytes(16), bytes(16), True)
        assert wire.encoded_size(hello) <= MAX_DATAGRAM
        entry = TableEntry(info, bytes(8), BIG_EP, BIG_EP, 1e9 - 1)
        table = Table(2**63 - 1, 4095, 4096, (entry,))
        assert wire.encoded_size(table) <= MAX_DATAGRAM


def _boundary_infos() -> list[NodeInfo]:
    """Entries whose first table part, as the core measures it (version 0, part 0,
    one part), is exactly MAX_DATAGRAM bytes; two small entries follow."""

    def info(i: int, size: list[int]) -> NodeInfo:
        name_length, wg_digits, admin_digits = size
        return NodeInfo(
            wg_ip=IPv4Address("10.0.0.0") + i,
            name="n" * name_length,
            public_key=to_b64(bytes([i]) * 32),
            wg_port=int("9" * wg_digits),
            admin_port=int("9" * admin_digits),
        )

    def first_part_size(sizes: list[list[int]]) -> int:
        entries = tuple(
            TableEntry(info(i + 2, size), struct.pack("!Q", 2**64 - 1 - i), BIG_EP, BIG_EP, 0.0)
            for i, size in enumerate(sizes)
        )
        return wire.encoded_size(Table(0, 0, 1, entries))

    sizes = [[1, 1, 1]]
    while first_part_size([*sizes, [1, 1, 1]]) <= MAX_DATAGRAM:
        sizes.append([1, 1, 1])
    for size in sizes:  # grow names and port numbers one byte at a time
        for slot, limit in ((0, wire.MAX_NAME), (1, 4), (2, 4)):
            while first_part_size(sizes) < MAX_DATAGRAM and size[slot] < limit:
                size[slot] += 1
    assert first_part_size(sizes) == MAX_DATAGRAM
    return [info(i + 2, size) for i, size in enumerate(sizes)] + [
        info(50, [1, 1, 1]),
        info(51, [1, 1, 1]),
    ]


def test_table_part_at_the_limit_stays_within_it() -> None:
    node = static_node_with_sessions(_boundary_infos(), table_version=123_456)
    datagrams = send_table(node, now=0.0)
    assert len(datagrams) == 2
    assert max(len(d) for d in datagrams) <= MAX_DATAGRAM


def test_boundary_table_with_small_numbers_is_exact() -> None:
    """The same case with one-digit numbers: parts are measured with the largest
    part numbers, so they stay within the limit, nearly full, never over."""
    node = static_node_with_sessions(_boundary_infos(), table_version=1)
    datagrams = send_table(node, now=0.0)
    assert all(len(d) <= MAX_DATAGRAM for d in datagrams)
    assert len(datagrams[0]) > MAX_DATAGRAM // 2
    assert len(reassemble(datagrams)) == len(_boundary_infos())
