"""Coverage-guided fuzzing (atheris / libFuzzer) of the admin datagram codec and a Node.

Usage::

    .venv/bin/pip install atheris          # PyPI wheels: Linux x86-64 only
    .venv/bin/python -m scripts.fuzz_wire -runs=200000
    .venv/bin/python -m scripts.fuzz_wire -max_total_time=600 corpus/   # keep a corpus
    .venv/bin/python -m scripts.fuzz_wire crash-<sha1>                  # re-run one input

Run from the repository root, or with it on PYTHONPATH (``-m``: it imports the
test-support library ``tests``).

Any libFuzzer flag works (``-help=1`` lists them). A crash (an exception other
than ``wire.Drop`` where Drop is expected, any exception out of the Node, or a
failed property) is written to ``crash-<sha1>`` in the current directory, or
under ``-artifact_prefix=``; exit status 0 means no crash in the runs done.

The first input byte picks a target, the rest is its input:

0. ``wire.open_frame`` on raw bytes: the outer seal (outsider view).
1. ``wire.decode_frame`` on the inner bytes of a frame, the code behind the
   seal that only key holders reach. Whatever decodes must encode to
   something that decodes to the same frame.
2. ``wire.decode_message`` and ``wire.decode_hello`` on a body, with the same
   round trip.
3. ``Node.receive_datagram`` on raw bytes (outsider): dropped and counted
   once, never answered.
4. ``Node.receive_datagram`` on inner bytes sealed with the shared key
   (insider), to a node that has a session with 10.1.1.9: the next bytes pick
   the kind and the sender among the subnet and fill in the header (mostly
   the session's index and next counter), so that the fuzzer spends its time
   on what follows; a TRANSPORT body is encrypted with the session's keys, as
   that peer would (any member may send any body over its own session). Then
   ``handle_timer`` and ``statistics`` run too.
5. Like 4, with a JSON body built from the input (structure-aware: every
   message type and field, mostly well-typed values), so that the message
   handlers are reached without the fuzzer having to discover JSON first.
6. A whole handshake with a fresh node, the payload of the peer's message
   (its hello: who it is) from the input, structure-aware or raw: as the
   initiator's FINISH, or as the RESPONSE to the node's own INIT to a static.

Unless ``-dict=`` is given, a dictionary of the format's tokens (field names,
message types) is written to a temporary file and passed to libFuzzer.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import suppress
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from random import Random
from typing import Any

import atheris

# Coverage feedback from our code only (not nacl, base64, json): faster, same signal.
with atheris.instrument_imports(include=["wg_netmanager"]):
    from tests.helpers import ADMIN_KEY as KEY
    from tests.helpers import SHARED_KEY, make_node
    from wg_netmanager import noise, wire
    from wg_netmanager.core import node as core
    from wg_netmanager.core.handshake import PROLOGUE
    from wg_netmanager.core.sessions import Keys, StaticTarget
    from wg_netmanager.core.timers import Timers
    from wg_netmanager.keys import to_b64

SUBNET = IPv4Network("10.1.1.0/28")
VICTIM = IPv4Address("10.1.1.1")
STATIC = IPv4Address("10.1.1.2")  # the victim's other static: it calls it (target 6)
PEER = IPv4Address("10.1.1.9")
PEER_PRIVATE = bytes(range(1, 33))
PEER_KEY = to_b64(noise.public_key(PEER_PRIVATE))
PEER_ADDR = ("198.51.100.9", 50509)
STATIC_ADDR = ("198.51.100.2", 50502)


def peer_info(ip: IPv4Address = PEER) -> wire.NodeInfo:
    octet = ip.packed[3]
    return wire.NodeInfo(ip, "peer", PEER_KEY, 50000 + octet, 50500 + octet)


def handshake_state(initiator: bool, seed: int) -> noise.Handshake:
    """The peer's side of a handshake, its ephemeral from ``seed``: an input
    replays exactly."""
    return noise.Handshake(
        initiator=initiator,
        static_private=PEER_PRIVATE,
        psk=wire.derive_psk(SHARED_KEY),
        prologue=PROLOGUE,
        random_bytes=Random(seed).randbytes,
    )


def fresh_node() -> core.Node:
    # Deterministic randomness: a crash reproduces from its input alone.
    info = wire.NodeInfo(VICTIM, "victim", "", 50001, 50501)
    statics = [
        StaticTarget(IPv4Address(f"10.1.1.{o}"), f"198.51.100.{o}", 50000 + o, 50500 + o,
                     f"198.51.100.{o}")
        for o in (1, 2)
    ]  # fmt: skip
    node = make_node(info, statics=statics, timers=Timers(), subnet=SUBNET, rng=Random(0))
    node.datagrams_to_send()
    return node


def finish_handshake(node: core.Node, payload: bytes, now: float) -> Keys | None:
    """The peer's INIT, the node's RESPONSE, the peer's FINISH with ``payload``;
    the peer's session keys (None: no RESPONSE came)."""
    state = handshake_state(initiator=True, seed=1)
    init = wire.Init(PEER, VICTIM, 1, bytes(wire.COOKIE_SIZE), state.write_message())
    node.receive_datagram(wire.seal_frame(KEY, init), PEER_ADDR, now)
    answers = [wire.open_frame(KEY, data) for data, _ in node.datagrams_to_send()]
    response = next((f for f in answers if isinstance(f, wire.Response)), None)
    if response is None:
        return None
    state.read_message(response.noise)
    finish = wire.Finish(PEER, VICTIM, response.index, state.write_message(payload))
    node.receive_datagram(wire.seal_frame(KEY, finish), PEER_ADDR, now)
    transport = state.transport()
    return Keys(1, response.index, transport.send, transport.receive)


def _with_session() -> tuple[core.Node, Keys]:
    node = fresh_node()
    keys = finish_handshake(node, wire.encode_hello(peer_info(), bytes(8)), 0.0)
    assert keys is not None and PEER in node.sessions, "the handshake template opens no session"
    node.datagrams_to_send()
    return node, keys


WITH_SESSION = _with_session()


def check_frame(inner: bytes) -> None:
    try:
        frame = wire.decode_frame(inner)
    except wire.Drop:
        return
    # A decoded frame is well-formed: encoding it gives what decodes to it.
    again = wire.decode_frame(wire.encode_frame(frame))
    assert again == frame, (again, frame)


def check_body(body: bytes) -> None:
    with suppress(wire.Drop):
        message = wire.decode_message(body)
        again = wire.decode_message(wire.encode_message(message))
        assert again == message, (again, message)
    with suppress(wire.Drop):
        hello = wire.decode_hello(body)
        assert wire.decode_hello(wire.encode_hello(*hello)) == hello


def check_outsider(data: bytes) -> None:
    node = fresh_node()
    before = sum(node.drops.values())
    node.receive_datagram(data, ("203.0.113.1", 4000), 1.0)
    try:
        wire.open_frame(KEY, data)
    except wire.Drop:
        # Junk: counted once, never answered.
        assert sum(node.drops.values()) == before + 1, node.drops
        assert node.datagrams_to_send() == []


def check_node(node: core.Node, now: float) -> None:
    """What holds after any input: bounded datagrams, no timer spin, a snapshot."""
    for sent, _dest in node.datagrams_to_send():
        assert len(sent) <= wire.MAX_DATAGRAM
    node.events()
    due = node.get_timer()
    if due is not None:
        now = max(due, now)
        node.handle_timer(now)
        after = node.get_timer()
        assert after is None or after > now, f"timer spin: {after} <= {now}"
    node.datagrams_to_send()
    node.statistics(now + 1.0)


def check_insider(data: bytes) -> None:
    if len(data) < 3:
        return
    node, keys = copy.deepcopy(WITH_SESSION)
    kind, octet, flags, rest = data[0] % 6 + 1, data[1] % 16, data[2], data[3:]
    sender = PEER if flags & 1 else IPv4Address(f"10.1.1.{octet}")
    receiver = VICTIM if flags & 2 else IPv4Address(f"10.1.1.{data[1] >> 4}")
    # Mostly the live session's index and next counter: what gets past the
    # replay window into the message handlers.
    index = keys.remote_index if flags & 4 else int.from_bytes(rest[:4].ljust(4, b"\0"), "big")
    counter = keys.next_counter() if flags & 8 else 2**64 - 2
    if kind == wire.Kind.TRANSPORT:
        header = wire.Transport.make_header(sender, receiver, index, counter)
        sealed = noise.encrypt(keys.send, counter, header, rest)
        inner = wire.encode_frame(wire.Transport(sender, receiver, index, counter, sealed, header))
    else:
        inner = bytes([kind]) + sender.packed + receiver.packed + rest
    node.receive_datagram(wire.seal(KEY, inner, bytes(wire.NONCE_SIZE)), PEER_ADDR, 1.0)
    check_node(node, 1.0)


def check_hello(payload: bytes, as_initiator: bool) -> None:
    node = fresh_node()
    if as_initiator:
        finish_handshake(node, payload, 0.0)
    else:
        # The node calls its static; the peer answers in that static's name.
        node.handle_timer(0.0)
        inits = [wire.open_frame(KEY, data) for data, _ in node.datagrams_to_send()]
        init = next(f for f in inits if isinstance(f, wire.Init) and f.receiver == STATIC)
        state = handshake_state(initiator=False, seed=2)
        state.read_message(init.noise)
        message = state.write_message(payload)
        response = wire.Response(STATIC, VICTIM, 5, init.index, message)
        node.receive_datagram(wire.seal_frame(KEY, response), STATIC_ADDR, 0.0)
    check_node(node, 0.0)


# --- structure-aware bodies -----------------------------------------------

# Field kinds per message type, as wire.decode_message reads them.
SCHEMA: dict[str, dict[str, str]] = {
    "ping": {"s": "count", "tv": "count"},
    "pong": {"s": "count", "tv": "count"},
    "treq": {},
    "bye": {},
    "table": {"v": "count", "p": "count", "n": "count", "e": "entries", "b": "count",
              "r": "ips"},
    "info": {"i": "info"},
    "probe": {"n": "count"},
    "pack": {"n": "count"},
    "pchal": {"n": "count"},
    "presp": {"n": "count"},
    "ready": {"a": "count", "d": "bool", "l": "bool", "f": "bool"},
    "refused": {"i": "info"},
    "relay": {"to": "ip", "d": "b64"},
}  # fmt: skip
HELLO = {"i": "info", "b": "hex8"}
INFO = {"ip": "ip", "n": "name", "k": "key", "wp": "port", "ap": "port", "l": "endpoints"}
ENTRY = {"i": "info", "we": "endpoint?", "ae": "endpoint?", "age": "age"}
KEYS = [PEER_KEY, to_b64(noise.public_key(bytes(32)))]


def _any(fdp: Any, depth: int = 0) -> Any:
    """Any JSON value (the wrong type for the field, usually)."""
    pick = fdp.ConsumeIntInRange(0, 6 if depth < 3 else 4)
    if pick == 0:
        return None
    if pick == 1:
        return fdp.ConsumeBool()
    if pick == 2:
        return fdp.ConsumeInt(9)
    if pick == 3:
        return fdp.ConsumeRegularFloat()
    if pick == 4:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if pick == 5:
        return [_any(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    return {fdp.ConsumeUnicodeNoSurrogates(3): _any(fdp, depth + 1) for _ in range(2)}


def _value(fdp: Any, kind: str) -> Any:
    if fdp.ConsumeIntInRange(0, 15) == 0:
        return _any(fdp)  # now and then the wrong type
    if kind.endswith("?"):
        if fdp.ConsumeBool():
            return None
        kind = kind[:-1]
    if kind == "count":
        return fdp.ConsumeIntInRange(0, 8) if fdp.ConsumeBool() else fdp.ConsumeInt(9)
    if kind == "bool":
        return fdp.ConsumeBool()
    if kind == "b64":
        return base64.b64encode(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600))).decode()
    if kind == "hex8":
        return fdp.ConsumeBytes(8).hex()
    if kind == "ip":
        return f"10.1.1.{fdp.ConsumeIntInRange(0, 20)}"
    if kind == "ips":
        return [_value(fdp, "ip") for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if kind == "port":
        return fdp.ConsumeIntInRange(0, 65536)
    if kind == "name":
        if fdp.ConsumeIntInRange(0, 3):  # mostly one the decoder takes
            return fdp.PickValueInList(["peer", "x", "a.b-c_9"])
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 34))
    if kind == "key":
        return (
            fdp.PickValueInList(KEYS) if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(44)
        )
    if kind == "endpoint":
        octet, port = fdp.ConsumeIntInRange(0, 255), fdp.ConsumeIntInRange(0, 70000)
        return f"198.51.100.{octet}:{port}"
    if kind == "endpoints":
        return [_value(fdp, "endpoint") for _ in range(fdp.ConsumeIntInRange(0, 9))]
    if kind == "age":
        return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 99)
    if kind == "info":
        return {key: _value(fdp, sub) for key, sub in INFO.items()}
    if kind == "entries":
        return [
            {key: _value(fdp, sub) for key, sub in ENTRY.items()}
            for _ in range(fdp.ConsumeIntInRange(0, 4))
        ]
    raise AssertionError(kind)


def _fields(fdp: Any, schema: dict[str, str], body: dict[str, Any]) -> bytes:
    for key, sub in schema.items():
        if fdp.ConsumeIntInRange(0, 31):  # now and then a field is missing
            body[key] = _value(fdp, sub)
    return json.dumps(body, separators=(",", ":")).encode()


def structured_body(data: bytes) -> bytes:
    fdp = atheris.FuzzedDataProvider(data)
    kind = fdp.PickValueInList(sorted(SCHEMA))
    return _fields(fdp, SCHEMA[kind], {"t": kind})


def structured_hello(data: bytes) -> bytes:
    fdp = atheris.FuzzedDataProvider(data)
    body = _fields(fdp, HELLO, {})
    if fdp.ConsumeBool():  # mostly the peer's own wg IP and key: past the identity checks
        obj = json.loads(body)
        if isinstance(obj.get("i"), dict):
            obj["i"].update({"ip": str(PEER), "k": PEER_KEY})
        body = json.dumps(obj, separators=(",", ":")).encode()
    return body


def _insider_structured(rest: bytes) -> None:
    if len(rest) < 3:
        return
    body = structured_body(rest[3:])
    check_body(body)
    # A TRANSPORT from the peer, over its session, to the node.
    check_insider(bytes([wire.Kind.TRANSPORT - 1, rest[1], rest[2] | 0b1111]) + body)


def _hello(rest: bytes) -> None:
    if not rest:
        return
    payload = structured_hello(rest[1:]) if rest[0] & 2 else rest[1:]
    check_body(payload)
    check_hello(payload, as_initiator=bool(rest[0] & 1))


def _open(rest: bytes) -> None:
    with suppress(wire.Drop):  # the only outcome besides success
        wire.open_frame(KEY, rest)


TARGETS: list[Callable[[bytes], None]] = [
    _open,
    check_frame,
    check_body,
    check_outsider,
    check_insider,
    _insider_structured,
    _hello,
]


def test_one_input(data: bytes) -> None:
    if data:
        TARGETS[data[0] % len(TARGETS)](data[1:])


def tokens() -> list[str]:
    words = {*SCHEMA, *(k for fields in SCHEMA.values() for k in fields), *INFO, *ENTRY}
    words |= {*HELLO, "t"}
    out = [f'"{w}"' for w in sorted(words)]  # JSON strings, quotes included
    extra = ['":"', '","', "null", "true", "false", f'"{PEER}"', f'"{PEER_KEY}"']
    return [*out, *extra, "{", "}", "[", "]"]


def main() -> None:
    argv = list(sys.argv)
    if not any(arg.startswith("-dict=") for arg in argv):
        # libFuzzer dictionary syntax: one quoted token per line. One file per
        # user, replaced atomically: libFuzzer reads it only once Fuzz() runs,
        # and Fuzz() never returns, so a per-run temporary file would be left.
        path = Path(tempfile.gettempdir()) / f"wg_netmanager-fuzz_wire-{os.getuid()}.dict"
        lines = []
        for token in tokens():
            escaped = token.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'"{escaped}"\n')
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as handle:
            handle.writelines(lines)
        os.replace(handle.name, path)
        argv.append(f"-dict={path}")
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
