"""The wire format: the outer seal, frames, message bodies, and sizes.

Every bad input is a ``Drop`` with a reason, never another exception; every
good one round-trips; no datagram the core builds exceeds ``MAX_DATAGRAM``,
and no answer to an unproven address is larger than an INIT.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from ipaddress import IPv4Address, IPv4Network
from random import Random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from tests.helpers import ADMIN_KEY as KEY
from tests.helpers import SHARED_KEY, make_node
from wg_netmanager import noise, wire
from wg_netmanager.core.node import Node
from wg_netmanager.core.sessions import Keys, Session, StaticTarget
from wg_netmanager.keys import from_b64, to_b64
from wg_netmanager.model import WgPeerReading
from wg_netmanager.wire import (
    MAX_DATAGRAM,
    Drop,
    NodeInfo,
    Ping,
    Pong,
    Table,
    TableEntry,
)

OTHER_KEY = wire.derive_admin_key(bytes(range(1, 33)))
A, B = IPv4Address("10.1.1.7"), IPv4Address("10.1.1.1")
PUBKEY = to_b64(bytes(range(100, 132)))
INFO = NodeInfo(
    wg_ip=A,
    name="alice",
    public_key=PUBKEY,
    wg_port=51820,
    admin_port=51821,
    local_endpoints=(("192.168.1.7", 51821),),
)


def sealed_stale() -> bytes:
    return wire.seal_frame(KEY, wire.Stale(A, B, 7))


def reason(key: bytes, datagram: bytes) -> str:
    with pytest.raises(Drop) as caught:
        wire.open_frame(key, datagram)
    return caught.value.reason


# --- the outer seal ----------------------------------------------------------------


def test_seal_open_round_trip() -> None:
    inner = b"any inner bytes"
    assert wire.open_sealed(KEY, wire.seal(KEY, inner)) == inner


def test_nonces_are_fresh_unless_given() -> None:
    assert wire.seal(KEY, b"x") != wire.seal(KEY, b"x")
    nonce = bytes(range(24))
    assert wire.seal(KEY, b"x", nonce) == wire.seal(KEY, b"x", nonce)
    assert wire.seal(KEY, b"x", nonce)[1:25] == nonce
    with pytest.raises(ValueError):
        wire.seal(KEY, b"x", bytes(12))


def test_every_single_byte_tamper_is_detected() -> None:
    datagram = sealed_stale()
    for i in range(len(datagram)):
        bad = bytearray(datagram)
        bad[i] ^= 0x01
        assert reason(KEY, bytes(bad)) in ("bad seal", "unknown version", "old protocol version")


def test_wrong_shared_key_is_bad_seal() -> None:
    assert reason(OTHER_KEY, sealed_stale()) == "bad seal"


def test_truncation_at_every_length_is_a_drop() -> None:
    datagram = sealed_stale()
    for length in range(len(datagram)):
        assert reason(KEY, datagram[:length]) in ("malformed", "bad seal")


def test_versions_are_checked_before_decryption() -> None:
    datagram = sealed_stale()
    assert reason(KEY, b"\x01" + datagram[1:]) == "old protocol version"
    assert reason(KEY, b"\x03" + datagram[1:]) == "unknown version"


def test_the_largest_datagram_opens_one_more_byte_is_malformed() -> None:
    room = MAX_DATAGRAM - wire.SEAL_OVERHEAD
    assert len(wire.seal(KEY, bytes(room))) == MAX_DATAGRAM
    assert wire.open_sealed(KEY, wire.seal(KEY, bytes(room))) == bytes(room)
    assert reason(KEY, wire.seal(KEY, bytes(room + 1))) == "malformed"


def test_the_keys_are_separated_by_purpose() -> None:
    assert wire.derive_admin_key(SHARED_KEY) != wire.derive_psk(SHARED_KEY)
    assert wire.derive_admin_key(SHARED_KEY) != wire.derive_admin_key(bytes(32))
    assert len(wire.derive_psk(SHARED_KEY)) == 32


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_only_drop(data: bytes) -> None:
    with pytest.raises(Drop):
        wire.open_frame(KEY, data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1200))
def test_sealed_random_inner_decodes_or_drops(inner: bytes) -> None:
    try:
        frame = wire.decode_frame(inner)
    except Drop as drop:
        assert drop.reason == "malformed"
        return
    assert wire.decode_frame(wire.encode_frame(frame)) == frame


# --- frames ----------------------------------------------------------------------------

FRAMES: list[wire.Frame] = [
    wire.Init(A, B, 5, bytes(16), os.urandom(noise.MESSAGE_1)),
    wire.Init(A, B, 2**32 - 1, os.urandom(16), os.urandom(noise.MESSAGE_1)),
    wire.Response(B, A, 6, 5, os.urandom(noise.MESSAGE_2 + 40)),
    wire.Finish(A, B, 6, os.urandom(noise.MESSAGE_3 + 40)),
    wire.Cookie(B, A, 5, os.urandom(16)),
    wire.Stale(B, A, 9),
    wire.Transport(
        A, B, 6, 2**64 - 1, os.urandom(40), wire.Transport.make_header(A, B, 6, 2**64 - 1)
    ),
]


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_each_frame_round_trips_sealed(frame: wire.Frame) -> None:
    assert wire.open_frame(KEY, wire.seal_frame(KEY, frame)) == frame


def test_an_init_is_padded_to_its_fixed_size_with_zeros_only() -> None:
    inner = wire.encode_frame(FRAMES[0])
    assert len(inner) == wire.INIT_SIZE
    with pytest.raises(Drop):
        wire.decode_frame(inner[:-1])
    with pytest.raises(Drop):
        wire.decode_frame(inner + b"\x00")
    with pytest.raises(Drop):
        wire.decode_frame(inner[:-1] + b"\x01")  # padding must be zeros: no hidden payload


@pytest.mark.parametrize("frame", FRAMES[2:], ids=lambda f: type(f).__name__)
def test_short_frames_are_malformed(frame: wire.Frame) -> None:
    inner = wire.encode_frame(frame)
    if isinstance(frame, wire.Response | wire.Finish | wire.Transport):
        minimum = len(inner) - 40  # what is left without payload
        cut = inner[: minimum - 1]
    else:
        cut = inner[:-1]
    with pytest.raises(Drop) as caught:
        wire.decode_frame(cut)
    assert caught.value.reason == "malformed"


def test_an_unknown_kind_is_malformed() -> None:
    inner = bytes([99]) + A.packed + B.packed + bytes(40)
    with pytest.raises(Drop):
        wire.decode_frame(inner)


# --- messages --------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z0-9_.-]{1,32}", fullmatch=True)
ipv4 = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
ports = st.integers(1, 65535)
endpoints = st.tuples(ipv4.map(str), ports)
keys32 = st.binary(min_size=32, max_size=32).map(to_b64)
counts = st.integers(0, 2**63 - 1)
infos = (
    st.builds(
        NodeInfo,
        wg_ip=ipv4,
        name=names,
        public_key=keys32,
        wg_port=ports,
        admin_port=ports,
        local_endpoints=st.lists(endpoints, max_size=wire.MAX_LOCAL_ENDPOINTS).map(tuple),
    )
    | st.builds(
        NodeInfo,
        wg_ip=ipv4,
        name=names,
        public_key=keys32,
        wg_port=ports,
        admin_port=ports,
        local_endpoints=st.lists(endpoints, max_size=wire.MAX_MOBILE_LOCAL_ENDPOINTS).map(tuple),
        mobile=st.just(True),
    )
    | st.builds(
        NodeInfo,
        wg_ip=ipv4,
        name=names,
        public_key=keys32,
        wg_port=ports,
        admin_port=ports,
        client=st.just(True),
    )
)
entries = st.builds(
    TableEntry,
    info=infos,
    wg_endpoint=st.none() | endpoints,
    admin_endpoint=st.none() | endpoints,
    age=st.integers(0, 10**8).map(lambda tenths: tenths / 10),
    boot_number=st.just(0) | st.integers(1, wire.MAX_BOOT_NUMBER),
)


@st.composite
def tables(draw: st.DrawFn) -> Table:
    parts = draw(st.integers(1, 4096))
    version = draw(st.integers(1, 2**62))
    base = draw(st.just(0) | st.integers(1, version - 1)) if version > 1 else 0
    removed = tuple(draw(st.lists(ipv4, max_size=4))) if base else ()
    return Table(
        version=version,
        part=draw(st.integers(0, parts - 1)),
        parts=parts,
        entries=tuple(draw(st.lists(entries, max_size=3))),
        base=base,
        removed=removed,
    )


messages = st.one_of(
    st.builds(Ping, seq=counts, table_version=counts),
    st.builds(Pong, seq=counts, table_version=counts),
    st.just(wire.TableRequest()),
    tables(),
    st.just(wire.Bye()),
    st.builds(wire.Info, info=infos),
    st.builds(wire.Refused, holder=infos),
    st.builds(wire.Relay, to=ipv4, datagram=st.binary(min_size=1, max_size=wire.MAX_RELAYED)),
    st.builds(wire.Probe, token=counts),
    st.builds(wire.ProbeAck, token=counts),
    st.builds(wire.PathChallenge, token=counts),
    st.builds(wire.PathResponse, token=counts),
    st.builds(wire.Ready, attempt=counts, direct=st.booleans(), leaving=st.booleans()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=messages)
def test_every_message_round_trips(message: wire.Message) -> None:
    assert wire.decode_message(wire.encode_message(message)) == message


@settings(max_examples=60, deadline=None)
@given(
    info=infos.filter(lambda i: not i.client),
    boot=st.binary(min_size=8, max_size=8),
    number=st.just(0) | st.integers(1, wire.MAX_BOOT_NUMBER),
)
def test_the_handshake_payload_round_trips(info: NodeInfo, boot: bytes, number: int) -> None:
    assert wire.decode_hello(wire.encode_hello(info, boot, number)) == (info, boot, number)


def test_a_boot_number_is_said_only_when_set_and_older_nodes_read_around_it() -> None:
    boot = bytes(range(wire.BOOT_SIZE))
    plain = wire.encode_hello(INFO, boot)
    assert b'"bn"' not in plain
    numbered = wire.encode_hello(INFO, boot, 3)
    assert numbered == plain[:-1] + b',"bn":3}'
    # An earlier release of protocol 2 reads only the keys it knows.
    assert json.loads(numbered)["b"] == boot.hex()
    entry = wire.encode_message(Table(2, 0, 1, (replace(_ENTRY, boot_number=3),)))
    assert json.loads(entry)["e"][0]["bn"] == 3
    assert b'"bn"' not in wire.encode_message(Table(2, 0, 1, (_ENTRY,)))


@pytest.mark.parametrize("value", [0, -1, 2**63, 1.5, "3", True, None])
def test_a_bad_boot_number_is_malformed(value: object) -> None:
    hello = json.loads(wire.encode_hello(INFO, bytes(wire.BOOT_SIZE), 1))
    hello["bn"] = value
    with pytest.raises(Drop):
        wire.decode_hello(json.dumps(hello).encode())
    body = good_body("table")
    body["e"][0]["bn"] = value
    with pytest.raises(Drop):
        decode_body(body)


def test_encoding_is_compact_json() -> None:
    body = wire.encode_message(Ping(1, 2))
    assert body == b'{"t":"ping","s":1,"tv":2}'


def test_only_a_mobile_node_says_so_and_every_other_encoding_stays_as_it_was() -> None:
    plain = wire.encode_message(wire.Info(INFO))
    assert plain == (
        b'{"t":"info","i":{"ip":"10.1.1.7","n":"alice","k":"' + PUBKEY.encode() + b'",'
        b'"wp":51820,"ap":51821,"l":["192.168.1.7:51821"]}}'
    )
    mobile = replace(INFO, mobile=True)
    body = wire.encode_message(wire.Info(mobile))
    assert body == plain[:-2] + b',"m":true}}'
    assert wire.decode_message(body) == wire.Info(mobile)
    assert wire.decode_message(plain[:-2] + b',"m":false}}') == wire.Info(INFO)


def test_a_client_entry_says_so_and_has_no_local_endpoints() -> None:
    plain = wire.encode_message(wire.Info(replace(INFO, local_endpoints=())))
    client = replace(INFO, local_endpoints=(), client=True)
    body = wire.encode_message(wire.Info(client))
    assert body == plain[:-2] + b',"c":true}}'
    assert wire.decode_message(body) == wire.Info(client)
    with pytest.raises(wire.Drop):  # a client runs no daemon: it has no LAN to probe
        wire.decode_message(wire.encode_message(wire.Info(replace(INFO, client=True))))
    with pytest.raises(wire.Drop):
        wire.decode_message(plain[:-2] + b',"c":true,"m":true}}')
    with pytest.raises(wire.Drop):
        wire.decode_message(plain[:-2] + b',"c":1}}')


def test_nobody_can_handshake_as_a_client() -> None:
    client = replace(INFO, local_endpoints=(), client=True)
    with pytest.raises(wire.Drop):
        wire.decode_hello(wire.encode_hello(client, bytes(wire.BOOT_SIZE)))
    boot = bytes(wire.BOOT_SIZE)
    hello = wire.decode_hello(wire.encode_hello(replace(client, client=False), boot))
    assert not hello.info.client


def test_a_mobile_announces_one_local_endpoint_less() -> None:
    body = good_body("info")
    body["i"]["l"] = [f"192.168.1.{i}:1" for i in range(wire.MAX_LOCAL_ENDPOINTS)]
    assert decode_body(body)  # as many as a node may announce
    body["i"]["m"] = True
    with pytest.raises(Drop):
        decode_body(body)
    node = make_node(replace(INFO, mobile=True))
    node.set_local_addresses([f"192.168.1.{i}" for i in range(10)], 0.0)
    assert len(node.info.local_endpoints) == wire.MAX_MOBILE_LOCAL_ENDPOINTS


@pytest.mark.parametrize("mobile", [False, True], ids=["node", "mobile"])
def test_a_node_whose_hello_carries_a_boot_number_announces_one_local_endpoint_less(
    mobile: bool,
) -> None:
    limit = wire.MAX_MOBILE_LOCAL_ENDPOINTS if mobile else wire.MAX_LOCAL_ENDPOINTS
    node = make_node(replace(INFO, mobile=mobile), boot_number=1)
    node.set_local_addresses([f"192.168.1.{i}" for i in range(10)], 0.0)
    assert len(node.info.local_endpoints) == limit - 1


def test_encoding_a_non_message_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        wire.encode_message("ping")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wire.encode_frame("frame")  # type: ignore[arg-type]


_ENTRY = TableEntry(INFO, ("198.51.100.7", 40000), ("198.51.100.7", 40001), 1.5)
_GOOD: dict[str, wire.Message] = {
    "info": wire.Info(INFO),
    "ping": Ping(1, 2),
    "pong": Pong(1, 2),
    "table": Table(1, 0, 2, (_ENTRY,)),
    "delta": Table(5, 0, 1, (_ENTRY,), 4, (IPv4Address("10.1.1.9"),)),
    "refused": wire.Refused(INFO),
    "relay": wire.Relay(IPv4Address("10.1.1.4"), b"sealed"),
    "ready": wire.Ready(3, True, False),
}


def good_body(kind: str) -> dict[str, Any]:
    body = json.loads(wire.encode_message(_GOOD[kind]))
    assert isinstance(body, dict)
    return body


def decode_body(body: Any) -> wire.Message:
    return wire.decode_message(json.dumps(body).encode())


def test_good_bodies_decode() -> None:
    for kind, message in _GOOD.items():
        assert decode_body(good_body(kind)) == message


def _set(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = body
    for step in path[:-1]:
        target = target[step]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value


_DELETE = object()
_B64_31 = to_b64(bytes(31)).rstrip("=")
# (message kind, path into the JSON body, bad value)
BAD_FIELDS: list[tuple[str, tuple[Any, ...], Any]] = [
    # ports
    *[("info", ("i", "wp"), v) for v in (True, False, 0, -1, 65536, "51820", 51820.0, None)],
    ("info", ("i", "ap"), _DELETE),
    # names: the local rule, so no invisible characters and no look-alikes
    *[
        ("info", ("i", "n"), v)
        for v in ("", "x" * 33, "bob\n", "bob\x00", "\u200b", "b\u043eb", "bob bob", "é", 5, None)
    ],
    # keys
    *[
        ("info", ("i", "k"), v)
        for v in (
            "not a key",
            "",
            to_b64(bytes(31)),
            to_b64(bytes(33)),
            _B64_31,
            PUBKEY[:-1] + "é",
            PUBKEY.rstrip("="),
            12,
        )
    ],
    # ip
    *[("info", ("i", "ip"), v) for v in ("10.1.1", "10.1.1.256", "::1", 167837953, "010.1.1.1")],
    # local endpoints
    ("info", ("i", "l"), [f"192.168.1.{i}:1" for i in range(wire.MAX_LOCAL_ENDPOINTS + 1)]),
    *[
        ("info", ("i", "l"), [v])
        for v in (
            "192.168.1.7",
            "192.168.1.7:",
            "192.168.1.7:0",
            "192.168.1.7:65536",
            "192.168.1.7:-1",
            "192.168.1.7:+80",
            "host.example:80",
            "[::1]:80",
            None,
            80,
            "192.168.1.7:²",
            "192.168.1.7:٨٠",
        )
    ],
    ("info", ("i", "l"), "192.168.1.7:80"),
    ("info", ("i", "l"), None),
    ("info", ("i",), None),
    ("info", ("i",), []),
    # the mobile flag: a JSON boolean or nothing; a mobile has one local endpoint less
    *[("info", ("i", "m"), v) for v in (1, 0, "true", None, [True], {})],
    ("table", ("e", 0, "i", "m"), 1),
    # counts
    *[("ping", ("s",), v) for v in (-1, True, 1.0, 2**63, "1")],
    ("ping", ("tv",), _DELETE),
    ("pong", ("tv",), -5),
    ("pong", ("s",), None),
    # tables
    *[("table", ("n",), v) for v in (0, 4097)],
    *[("table", ("p",), v) for v in (2, -1)],
    *[("table", ("v",), v) for v in (-1, False)],
    *[("table", ("e",), v) for v in (None, {})],
    ("table", ("e", 0), "entry"),
    *[("table", ("e", 0, "age"), v) for v in (-0.1, 1e9, "1", True)],
    ("table", ("e", 0, "we"), "1.2.3.4"),
    ("table", ("e", 0, "ae"), 5),
    ("table", ("e", 0, "i", "n"), ""),
    ("delta", ("b",), 0),
    ("delta", ("b",), 5),  # a change on top of itself
    ("delta", ("b",), 6),
    ("delta", ("r",), None),
    ("delta", ("r",), ["10.1.1"]),
    ("delta", ("r",), _DELETE),
    # refusals, relays, readies
    ("refused", ("i",), None),
    ("refused", ("i", "ip"), "10.1.1"),
    *[("relay", ("to",), v) for v in ("10.1.1", None)],
    *[
        ("relay", ("d",), v)
        for v in (
            "",
            "not base64!",
            "c2VhbGVk"[:-1],
            "c2VhbGVk\n",
            "A" * (4 * wire.MAX_RELAYED),
            base64.b64encode(bytes(wire.MAX_RELAYED + 1)).decode(),
            5,
        )
    ],
    ("ready", ("l",), "yes"),
    ("ready", ("d",), _DELETE),
    # the type
    *[("ping", ("t",), v) for v in ("nope", None, _DELETE, ["ping"], "PING", "hello")],
]


@pytest.mark.parametrize(("kind", "path", "value"), BAD_FIELDS)
def test_wrong_fields_are_malformed(kind: str, path: tuple[Any, ...], value: Any) -> None:
    body = good_body(kind)
    _set(body, path, value)
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
    with pytest.raises(Drop) as caught:
        wire.decode_message(raw)
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize(
    "payload",
    [
        b"{}",
        b'{"i":null,"b":"0000000000000000"}',
        json.dumps(
            {"i": json.loads(wire.encode_message(wire.Info(INFO)))["i"], "b": "00"}
        ).encode(),
        json.dumps(
            {"i": json.loads(wire.encode_message(wire.Info(INFO)))["i"], "b": "00000000000000 0"}
        ).encode(),
    ],
)
def test_bad_handshake_payloads_are_malformed(payload: bytes) -> None:
    with pytest.raises(Drop):
        wire.decode_hello(payload)


def test_non_canonical_key_is_malformed() -> None:
    canonical = to_b64(bytes(32))
    other = canonical[:-2] + "B="  # base64 of the same 32 bytes, non-zero padding bits
    with pytest.raises(ValueError, match="canonical"):
        from_b64(other)
    body = good_body("info")
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
    body = good_body(draw(st.sampled_from(sorted(_GOOD))))
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


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mangled_bodies())
def test_mangled_bodies_decode_or_drop(body: dict[str, Any]) -> None:
    try:
        message = decode_body(body)
    except Drop as drop:
        assert drop.reason == "malformed"
        return
    # Whatever is accepted is a well-formed message that encodes back to itself.
    assert wire.decode_message(wire.encode_message(message)) == message


# --- sizes ----------------------------------------------------------------------------------

BIG_EP = ("255.255.255.255", 65535)


def worst_info(i: int, mobile: bool = False) -> NodeInfo:
    locals_ = wire.MAX_MOBILE_LOCAL_ENDPOINTS if mobile else wire.MAX_LOCAL_ENDPOINTS
    return NodeInfo(
        wg_ip=IPv4Address("10.0.0.0") + i,
        name="x" * wire.MAX_NAME,
        public_key=to_b64(struct.pack("!I", i) * 8),
        wg_port=65535,
        admin_port=65535,
        local_endpoints=(BIG_EP,) * locals_,
        mobile=mobile,
    )


@pytest.mark.parametrize("numbered", [False, True], ids=["first run", "boot number"])
@pytest.mark.parametrize("mobile", [False, True], ids=["node", "mobile"])
def test_no_answer_to_an_init_is_larger_than_the_init(mobile: bool, numbered: bool) -> None:
    """The admin port never amplifies towards an unproven address."""
    info = worst_info(2**24 - 2, mobile)
    if numbered:  # one local endpoint fewer (Node.set_local_addresses)
        info = replace(info, local_endpoints=info.local_endpoints[1:])
    number = wire.MAX_BOOT_NUMBER if numbered else 0
    payload = wire.encode_hello(info, bytes(8), number)
    response = wire.Response(B, A, 2**32 - 1, 2**32 - 1, bytes(noise.MESSAGE_2 + len(payload)))
    init = wire.seal_frame(KEY, FRAMES[0])
    assert len(wire.seal_frame(KEY, response)) <= len(init)
    assert len(wire.seal_frame(KEY, wire.Cookie(B, A, 1, bytes(16)))) < len(init)
    smallest_transport = wire.TRANSPORT_OVERHEAD
    assert len(wire.seal_frame(KEY, wire.Stale(B, A, 1))) < smallest_transport


@pytest.mark.parametrize("kind", ["node", "mobile", "client"])
def test_no_refusal_is_larger_than_the_finish_it_answers(kind: str) -> None:
    """The FINISH's source proved nothing (a member on the path sent it): the
    largest holder a Refused can name against the smallest claim."""
    holder = replace(worst_info(0, mobile=kind == "mobile"), wg_ip=IPv4Address("255.255.255.254"))
    if kind == "client":
        holder = replace(holder, local_endpoints=(), client=True)
    claimant = NodeInfo(IPv4Address("1.0.0.0"), "x", to_b64(bytes(32)), 1, 1)
    payload = wire.encode_hello(claimant, bytes(8))
    finish = wire.Finish(A, B, 2**32 - 1, bytes(noise.MESSAGE_3 + len(payload)))
    assert wire.encoded_size(wire.Refused.of(holder)) <= len(wire.seal_frame(KEY, finish))
    # It still names the holder: all that a refused node reports (RefusedByPeer).
    said = wire.decode_message(wire.encode_message(wire.Refused.of(holder)))
    assert isinstance(said, wire.Refused)
    assert (said.holder.wg_ip, said.holder.name, said.holder.public_key) == (
        holder.wg_ip,
        holder.name,
        holder.public_key,
    )


def static_with_sessions(infos: list[NodeInfo]) -> Node:
    """A static node as the core runs it, with a session and a WireGuard reading per info."""
    own = NodeInfo(IPv4Address("10.0.0.1"), "static", to_b64(bytes(32)), 51820, 51821)
    node = make_node(
        own,
        statics=[StaticTarget(own.wg_ip, "static", 51820, 51821, address="198.51.100.1")],
        subnet=IPv4Network("10.0.0.0/8"),
        rng=Random(1),
    )
    readings = {}
    for index, info in enumerate(infos):
        node.sessions[info.wg_ip] = Session(
            info=info,
            boot=struct.pack("!Q", index),
            addr=BIG_EP,
            keys=Keys(index + 1, 2**32 - 1 - index, bytes(32), bytes(32)),
            established=0.0,
            last_heard=0.0,
            pinger=False,
            peer_ready=True,  # a static's sessions are (Node._establish)
        )
        readings[info.public_key] = WgPeerReading(info.public_key, BIG_EP, (), 1.0, 0, 0)
    node._recompute(0.0)  # its WireGuard peers, as a session's establishment makes them
    node.update_wg(readings, 0.0)
    node.datagrams_to_send()
    return node


def parts_of(node: Node, now: float) -> list[bytes]:
    """The whole table as the static encodes it, each part sealed in a TRANSPORT frame."""
    entries = node.table.entries(node.sessions, node._wg, now)
    out = []
    for body in node.table.full_parts(entries):
        header = wire.Transport.make_header(B, A, 2**32 - 1, 2**64 - 1)
        ciphertext = noise.encrypt(bytes(32), 2**64 - 2, header, body)
        frame = wire.Transport(B, A, 2**32 - 1, 2**64 - 1, ciphertext, header)
        out.append(wire.seal_frame(KEY, frame))
    return out


@pytest.mark.parametrize("version", [1, 7, 10**6, 2**62])
def test_a_table_of_200_worst_case_entries_fits_in_datagrams(version: int) -> None:
    infos = [worst_info(i) for i in range(2, 202)]
    node = static_with_sessions(infos)
    node.table.version = version
    datagrams = parts_of(node, now=999_999.0)
    assert len(datagrams) > 1
    assert max(len(d) for d in datagrams) <= MAX_DATAGRAM
    tables = [
        wire.decode_message(
            noise.decrypt(bytes(32), 2**64 - 2, f.header, f.ciphertext)  # type: ignore[union-attr]
        )
        for f in (wire.open_frame(KEY, d) for d in datagrams)
    ]
    assert [t.part for t in tables] == list(range(len(tables)))  # type: ignore[union-attr]
    received = [e.info for t in tables for e in t.entries]  # type: ignore[union-attr]
    assert received == infos


def test_an_empty_table_is_one_part() -> None:
    node = static_with_sessions([])
    node.table.version = 5
    assert node.table.full_parts([]) == [wire.encode_message(Table(5, 0, 1, ()))]


def test_a_change_of_many_entries_is_split_too() -> None:
    infos = [worst_info(i) for i in range(2, 102)]
    node = static_with_sessions(infos)
    entries = node.table.entries(node.sessions, node._wg, 0.0)
    node.table.take_change(entries)  # the baseline
    moved = [replace_endpoint(e) for e in entries]
    node.table.update(moved, 0.0, 0.0)
    base, parts = node.table.take_change(moved)
    assert base and len(parts) > 1
    assert all(wire.TRANSPORT_OVERHEAD + len(p) <= MAX_DATAGRAM for p in parts)


def replace_endpoint(entry: TableEntry) -> TableEntry:
    return TableEntry(entry.info, ("203.0.113.1", 1), entry.admin_endpoint, entry.age)
