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

0. ``wire.open_datagram`` on raw bytes: seal checks (outsider view).
1. ``wire.decode`` on a plaintext: header and JSON body decoder, the code
   behind the seal that only key holders reach. Whatever decodes must
   re-encode to something that decodes to the same thing.
2. ``Node.receive_datagram`` on raw bytes (outsider): only drops, no answer.
3. ``Node.receive_datagram`` on a plaintext sealed with the shared key
   (insider), to a node that already has a session with 10.1.1.9; the next
   byte picks the sender among the subnet, the header is filled in so that
   the fuzzer spends its time on bodies rather than on finding the wg IPs.
   Then ``handle_timer`` and ``statistics`` run too.
4. Like 3, with a JSON body built from the input (structure-aware: every
   message type and field, mostly well-typed values), so that the message
   handlers are reached without the fuzzer having to discover JSON first.

Unless ``-dict=`` is given, a dictionary of the format's tokens (field names,
message types) is written to a temporary file and passed to libFuzzer.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import sys
import tempfile
from contextlib import suppress
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from random import Random
from typing import Any

import atheris

# Coverage feedback from our code only (not nacl, base64, json): faster, same signal.
with atheris.instrument_imports(include=["wg_netmanager"]):
    from tests.helpers import ADMIN_KEY as KEY
    from tests.helpers import make_node
    from wg_netmanager import wire
    from wg_netmanager.core import node as core
    from wg_netmanager.core.timers import Timers

SUBNET = IPv4Network("10.1.1.0/28")
VICTIM = IPv4Address("10.1.1.1")
PEER = IPv4Address("10.1.1.9")
PEER_BOOT = bytes(range(1, 9))
PUBKEY = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
PEER_KEY = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="  # one key per node
PEER_ADDR = ("198.51.100.9", 50509)


def fresh_node() -> core.Node:
    # Deterministic randomness: a crash reproduces from its input alone, and
    # the victim's challenge is the same every time (see HANDSHAKE).
    info = wire.NodeInfo(VICTIM, "victim", PUBKEY, 50001, 50501)
    statics = [
        core.StaticTarget(IPv4Address(f"10.1.1.{o}"), f"198.51.100.{o}", 50000 + o, 50500 + o)
        for o in (1, 2)
    ]
    return make_node(info, statics=statics, timers=Timers(), subnet=SUBNET, rng=Random(0))


def _handshake() -> list[bytes]:
    """The two hellos that open a session for PEER with a fresh_node()."""
    node = fresh_node()
    info = wire.NodeInfo(PEER, "peer", PEER_KEY, 50009, 50509)
    first = wire.seal_message(
        KEY, wire.Header(PEER, PEER_BOOT, 1, VICTIM), wire.Hello(info, bytes(16))
    )
    node.receive_datagram(first, PEER_ADDR, 0.0)
    (answer, _), *_ = node.datagrams_to_send()
    _, hello = wire.open_datagram(KEY, answer)
    assert isinstance(hello, wire.Hello)
    echo = wire.Hello(info, bytes(16), hello.challenge, want_echo=False)
    second = wire.seal_message(KEY, wire.Header(PEER, PEER_BOOT, 2, VICTIM), echo)
    node.receive_datagram(second, PEER_ADDR, 0.0)
    assert PEER in node.sessions, "handshake template no longer opens a session"
    return [first, second]


HANDSHAKE = _handshake()


def node_with_session() -> core.Node:
    node = fresh_node()
    for datagram in HANDSHAKE:
        node.receive_datagram(datagram, PEER_ADDR, 0.0)
    node.datagrams_to_send()
    return node


def check_decode(plaintext: bytes) -> None:
    try:
        header, message = wire.decode(plaintext)
    except wire.Drop:
        return
    # A decoded message is well-formed: encoding it gives what decodes to it.
    again = wire.decode(wire.encode(header, message))
    assert again == (header, message), (again, header, message)


def check_outsider(data: bytes) -> None:
    node = fresh_node()
    node.datagrams_to_send()
    before = sum(node.drops.values())
    node.receive_datagram(data, ("203.0.113.1", 4000), 1.0)
    try:
        wire.open_datagram(KEY, data)
    except wire.Drop:
        # Junk: counted once, never answered.
        assert sum(node.drops.values()) == before + 1, node.drops
        assert node.datagrams_to_send() == []


def check_insider(data: bytes) -> None:
    if len(data) < 2:
        return
    node = node_with_session()
    octet, flags = data[0] % 16, data[1]
    sender = IPv4Address(f"10.1.1.{octet}")
    # Mostly the live session's boot and next counter: what gets past the
    # replay window into the message handlers.
    boot = PEER_BOOT if flags & 1 else bytes(8)
    counter = 3 if flags & 2 else 2**64 - 1
    to = VICTIM if flags & 4 else wire.UNKNOWN_RECEIVER
    plaintext = struct.pack("!4s4s8sQ", sender.packed, to.packed, boot, counter) + data[2:]
    datagram = wire.seal(KEY, plaintext, nonce=bytes(wire.NONCE_SIZE))
    node.receive_datagram(datagram, PEER_ADDR, 1.0)
    for sent, _dest in node.datagrams_to_send():
        assert len(sent) <= wire.MAX_DATAGRAM
    due = node.get_timer()
    if due is not None:
        now = max(due, 1.0)
        node.handle_timer(now)
        after = node.get_timer()
        assert after is None or after > now, f"timer spin: {after} <= {now}"
    node.statistics(2.0)


# --- structure-aware bodies -----------------------------------------------

# Field kinds per message type, as wire._decode_body reads them.
SCHEMA: dict[str, dict[str, str]] = {
    "hello": {"i": "info", "c": "hex16", "e": "hex16?", "w": "bool"},
    "ping": {"s": "count", "tv": "count"},
    "pong": {"s": "count", "tv": "count"},
    "treq": {},
    "bye": {},
    "table": {"v": "count", "p": "count", "n": "count", "e": "entries"},
    "probe": {"n": "count"},
    "pack": {"n": "count"},
    "ready": {"a": "count", "d": "bool", "l": "bool"},
    "refused": {"e": "hex16", "i": "info"},
    "relay": {"to": "ip", "d": "b64"},
}
INFO = {"ip": "ip", "n": "name", "k": "key", "wp": "port", "ap": "port", "l": "endpoints"}
ENTRY = {"i": "info", "b": "hex8", "we": "endpoint?", "ae": "endpoint?", "age": "age"}


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
    if kind in ("hex8", "hex16"):
        return fdp.ConsumeBytes(int(kind[3:])).hex()
    if kind == "ip":
        return f"10.1.1.{fdp.ConsumeIntInRange(0, 20)}"
    if kind == "port":
        return fdp.ConsumeIntInRange(0, 65536)
    if kind == "name":
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 34))
    if kind == "key":
        return PUBKEY if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(44)
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


def structured_body(data: bytes) -> bytes:
    fdp = atheris.FuzzedDataProvider(data)
    kind = fdp.PickValueInList(sorted(SCHEMA))
    body: dict[str, Any] = {"t": kind}
    for key, sub in SCHEMA[kind].items():
        if fdp.ConsumeIntInRange(0, 31):  # now and then a field is missing
            body[key] = _value(fdp, sub)
    return json.dumps(body, separators=(",", ":")).encode()


def test_one_input(data: bytes) -> None:
    if not data:
        return
    target, rest = data[0] % 5, data[1:]
    if target == 0:
        with suppress(wire.Drop):  # the only outcome besides success
            wire.open_datagram(KEY, rest)
    elif target == 1:
        check_decode(rest)
    elif target == 2:
        check_outsider(rest)
    elif target == 3:
        check_insider(rest)
    elif len(rest) >= 2:
        body = structured_body(rest[2:])
        check_decode(struct.pack("!4s4s8sQ", PEER.packed, VICTIM.packed, PEER_BOOT, 3) + body)
        check_insider(rest[:2] + body)


def tokens() -> list[str]:
    words = {*SCHEMA, *(k for fields in SCHEMA.values() for k in fields), *INFO, *ENTRY, "t"}
    out = [f'"{w}"' for w in sorted(words)]  # JSON strings, quotes included
    return [*out, '":"', '","', "null", "true", "false", '"10.1.1.9"', "{", "}", "[", "]"]


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
