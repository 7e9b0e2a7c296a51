"""The Noise XXpsk3 implementation against the published test vector, and its refusals;
records that hold keys keep them out of their repr."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wg_netmanager import noise
from wg_netmanager.core.pair_path import PairPath
from wg_netmanager.core.sessions import Keys
from wg_netmanager.keys import KeyPair
from wg_netmanager.noise import Handshake, NoiseError

VECTOR = json.loads(
    (Path(__file__).parent / "data" / "noise_xxpsk3_25519_chachapoly_blake2b.json").read_text()
)


def fixed(key_hex: str) -> Callable[[int], bytes]:
    key = bytes.fromhex(key_hex)
    return lambda size: key[:size]


def pair(v: dict[str, Any]) -> tuple[Handshake, Handshake]:
    initiator = Handshake(
        initiator=True,
        static_private=bytes.fromhex(v["init_static"]),
        psk=bytes.fromhex(v["init_psks"][0]),
        prologue=bytes.fromhex(v["init_prologue"]),
        random_bytes=fixed(v["init_ephemeral"]),
    )
    responder = Handshake(
        initiator=False,
        static_private=bytes.fromhex(v["resp_static"]),
        psk=bytes.fromhex(v["resp_psks"][0]),
        prologue=bytes.fromhex(v["resp_prologue"]),
        random_bytes=fixed(v["resp_ephemeral"]),
    )
    return initiator, responder


def test_the_published_vector_byte_for_byte() -> None:
    assert VECTOR["protocol_name"].encode() == noise.PROTOCOL_NAME
    initiator, responder = pair(VECTOR)
    messages = VECTOR["messages"]
    for i, message in enumerate(messages[:3]):
        writer, reader = (initiator, responder) if i % 2 == 0 else (responder, initiator)
        payload = bytes.fromhex(message["payload"])
        sent = writer.write_message(payload)
        assert sent.hex() == message["ciphertext"], f"handshake message {i + 1}"
        assert reader.read_message(sent) == payload
    i_keys, r_keys = initiator.transport(), responder.transport()
    assert i_keys.handshake_hash.hex() == VECTOR["handshake_hash"]
    assert r_keys.handshake_hash == i_keys.handshake_hash
    assert i_keys.remote_static == noise.public_key(bytes.fromhex(VECTOR["resp_static"]))
    assert r_keys.remote_static == noise.public_key(bytes.fromhex(VECTOR["init_static"]))
    # Transport messages keep alternating, each side counting its own nonces from 0.
    counters = {"i": 0, "r": 0}
    for i, message in enumerate(messages[3:], start=3):
        side = "i" if i % 2 == 0 else "r"
        send, receive = (
            (i_keys.send, r_keys.receive) if side == "i" else (r_keys.send, i_keys.receive)
        )
        payload = bytes.fromhex(message["payload"])
        sent = noise.encrypt(send, counters[side], b"", payload)
        assert sent.hex() == message["ciphertext"], f"transport message {i + 1}"
        assert noise.decrypt(receive, counters[side], b"", sent) == payload
        counters[side] += 1


def random_pair(psk_b: bytes = b"\x01" * 32) -> tuple[Handshake, Handshake]:
    initiator = Handshake(
        initiator=True, static_private=os.urandom(32), psk=b"\x01" * 32, prologue=b"p",
        random_bytes=os.urandom,
    )  # fmt: skip
    responder = Handshake(
        initiator=False, static_private=os.urandom(32), psk=psk_b, prologue=b"p",
        random_bytes=os.urandom,
    )  # fmt: skip
    return initiator, responder


def test_a_wrong_psk_fails_at_the_last_message() -> None:
    initiator, responder = random_pair(psk_b=b"\x02" * 32)
    responder.read_message(initiator.write_message())
    initiator.read_message(responder.write_message())
    last = initiator.write_message(b"hello")
    for _ in range(2):
        with pytest.raises(NoiseError):
            responder.read_message(last)
    assert not responder.done


@pytest.mark.parametrize("step", [1, 2])
def test_a_message_that_does_not_authenticate_changes_nothing(step: int) -> None:
    # Anyone who saw the index can send junk in the peer's name: the real
    # message must still be read after it.
    initiator, responder = random_pair()
    order = [(initiator, responder), (responder, initiator), (initiator, responder)]
    for i, (writer, reader) in enumerate(order):
        message = writer.write_message(b"payload")
        if i == step:
            for forged in (os.urandom(len(message)), message[:-1] + bytes([message[-1] ^ 1])):
                with pytest.raises(NoiseError):
                    reader.read_message(forged)
        assert reader.read_message(message) == b"payload"
    assert initiator.transport().send == responder.transport().receive
    assert initiator.transport().receive == responder.transport().send


@settings(max_examples=200, deadline=None)
@given(step=st.integers(0, 2), position=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_flipped_bit_in_a_handshake_message_is_refused(
    step: int, position: int, bit: int
) -> None:
    initiator, responder = random_pair()
    order = [(initiator, responder), (responder, initiator), (initiator, responder)]
    for i, (writer, reader) in enumerate(order):
        message = writer.write_message(b"payload")
        if i == step:
            index = position % len(message)
            bad = bytearray(message)
            bad[index] ^= 1 << bit
            with pytest.raises(NoiseError):
                reader.read_message(bytes(bad))
                # A flipped bit in message 1 (the plain ephemeral) is only caught
                # when the handshake goes on: finish it to see that it fails.
                writer.read_message(reader.write_message())
                reader.read_message(writer.write_message())
            return
        reader.read_message(message)


def test_messages_out_of_order_are_our_bug() -> None:
    initiator, _ = random_pair()
    with pytest.raises(RuntimeError):
        initiator.read_message(b"\x00" * 64)
    with pytest.raises(RuntimeError):
        initiator.transport()


SECRET = bytes(range(32))


@pytest.mark.parametrize(
    ("record", "shown"),
    [
        (KeyPair(private=SECRET, public=b"P" * 32), f"KeyPair(public={b'P' * 32!r})"),
        (noise.CipherState(SECRET, 7), "CipherState(n=7)"),
        (
            noise.Transport(SECRET, SECRET, b"R", b"H"),
            "Transport(remote_static=b'R', handshake_hash=b'H')",
        ),
        (Keys(1, 2, SECRET, SECRET), "Keys(local_index=1, remote_index=2, sent=0, replay="),
        (PairPath(probe_key=SECRET), "PairPath(state=<PathState.RELAYED: 'relayed'>, kind=None,"),
    ],
    ids=["KeyPair", "CipherState", "Transport", "Keys", "PairPath"],
)
def test_records_keep_their_keys_out_of_their_repr(record: object, shown: str) -> None:
    text = repr(record)
    assert text.startswith(shown)
    assert repr(SECRET) not in text and SECRET.hex() not in text
