"""The Noise Protocol Framework's XXpsk3 handshake on pynacl primitives.

``Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b`` (revision 34 of the spec,
https://noiseprotocol.org/noise.html): X25519, ChaCha20-Poly1305 (IETF),
BLAKE2b with HMAC-based HKDF. The code follows the spec's objects one to one
(CipherState, SymmetricState, HandshakeState) and is checked against the
published cacophony test vector for exactly this protocol name
(tests/test_noise.py), so it is the reviewed construction, not a new one.

    XXpsk3:
      -> e
      <- e, ee, s, es
      -> s, se, psk

Why XX: neither side needs to know the other's static key in advance (one
file, no keys), both static keys are transmitted encrypted and authenticated,
and each side proves it is alive *now* (its DH with the other's fresh
ephemeral), so no clocks and no timestamps are needed against replay. The
pre-shared key (derived from the network's shared key) makes membership part
of the session keys. Keys are 32-byte raw X25519 keys.

Only what wg_netmanager needs is here: this one pattern, ephemerals from the
caller's randomness (so simulations and test vectors are exact), transport
encryption with an explicit nonce (datagrams arrive out of order; the caller
keeps a replay window).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import msgspec
from msgspec.structs import replace
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
)
from nacl.exceptions import CryptoError

from .model import repr_without

PROTOCOL_NAME = b"Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b"
DHLEN = 32
HASHLEN = 64
KEYLEN = 32
TAGLEN = 16
MAX_NONCE = 2**64 - 1  # reserved by the spec: never used
# Message sizes with an empty payload. Every payload has a tag: with the psk
# modifier, message 1's "e" already mixes a key.
MESSAGE_1 = DHLEN + TAGLEN
MESSAGE_2 = DHLEN + (DHLEN + TAGLEN) + TAGLEN
MESSAGE_3 = (DHLEN + TAGLEN) + TAGLEN


class NoiseError(Exception):
    """A handshake or transport message that does not authenticate."""


def public_key(private: bytes) -> bytes:
    return crypto_scalarmult_base(private)


def _dh(private: bytes, public: bytes) -> bytes:
    try:
        return crypto_scalarmult(private, public)
    except (CryptoError, ValueError) as exc:  # e.g. a low-order point: all-zero output
        raise NoiseError("bad public key") from exc


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2b).digest()


def _hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> list[bytes]:
    temp = _hmac(chaining_key, ikm)
    out = [_hmac(temp, b"\x01")]
    for i in range(2, outputs + 1):
        out.append(_hmac(temp, out[-1] + bytes([i])))
    return out


def _nonce(n: int) -> bytes:
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def encrypt(key: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
    if not 0 <= n < MAX_NONCE:
        raise ValueError("nonce out of range")
    return crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, ad, _nonce(n), key)


def decrypt(key: bytes, n: int, ad: bytes, ciphertext: bytes) -> bytes:
    if not 0 <= n < MAX_NONCE:
        raise NoiseError("nonce out of range")
    try:
        return crypto_aead_chacha20poly1305_ietf_decrypt(ciphertext, ad, _nonce(n), key)
    except CryptoError:
        raise NoiseError("does not authenticate") from None


class CipherState(msgspec.Struct):
    key: bytes | None = None  # (not in the repr)
    n: int = 0

    def __repr__(self) -> str:
        return repr_without(self, ("key",))

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self.key is None:
            return plaintext
        out = encrypt(self.key, self.n, ad, plaintext)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self.key is None:
            return ciphertext
        out = decrypt(self.key, self.n, ad, ciphertext)
        self.n += 1
        return out


class _Symmetric:
    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASHLEN:
            self.h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            self.h = _hash(protocol_name)
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = _hkdf(self.ck, ikm, 2)
        self.cipher = CipherState(temp_k[:KEYLEN])

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = _hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cipher = CipherState(temp_k[:KEYLEN])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        k1, k2 = _hkdf(self.ck, b"", 2)
        return k1[:KEYLEN], k2[:KEYLEN]


class Transport(msgspec.Struct, frozen=True):
    """The keys of a finished handshake: ``send`` and ``receive`` (ChaChaPoly),
    the peer's static key and the handshake hash (unique per handshake)."""

    send: bytes  # (the keys are not in the repr)
    receive: bytes
    remote_static: bytes
    handshake_hash: bytes

    def __repr__(self) -> str:
        return repr_without(self, ("send", "receive"))


class Handshake:
    """One side of one XXpsk3 handshake; messages in order, each exactly once.

    ``random_bytes`` supplies the ephemeral private key. A message that does
    not authenticate raises ``NoiseError`` and changes nothing: over datagrams
    anyone who saw an index can send junk on it, so the real message must
    still be read after a forgery (WireGuard, too, just drops a bad one).
    """

    def __init__(
        self,
        *,
        initiator: bool,
        static_private: bytes,
        psk: bytes,
        prologue: bytes,
        random_bytes: Callable[[int], bytes],
    ) -> None:
        if len(static_private) != DHLEN or len(psk) != KEYLEN:
            raise ValueError("a static key and a psk are 32 bytes")
        self.initiator = initiator
        self._s = static_private
        self._s_pub = public_key(static_private)
        self._psk = psk
        self._random_bytes = random_bytes
        self._e: bytes | None = None
        self._e_pub = b""
        self._re = b""
        self.remote_static: bytes | None = None
        self._step = 0  # messages done
        self._state = _Symmetric(PROTOCOL_NAME)
        self._state.mix_hash(prologue)

    @property
    def done(self) -> bool:
        return self._step == 3

    def _expect(self, step: int, writing: bool) -> None:
        ours = (step % 2 == 0) == self.initiator
        if self._step != step or ours != writing:
            raise RuntimeError(f"handshake message {step + 1} out of order")  # our bug

    def _new_ephemeral(self) -> bytes:
        self._e = self._random_bytes(DHLEN)
        self._e_pub = public_key(self._e)
        self._state.mix_hash(self._e_pub)
        self._state.mix_key(self._e_pub)  # psk modifier: "e" also mixes the key
        return self._e_pub

    def _take_ephemeral(self, data: bytes) -> None:
        self._re = data
        self._state.mix_hash(data)
        self._state.mix_key(data)

    def _mix_dh(self, private: bytes | None, public: bytes) -> None:
        assert private is not None
        self._state.mix_key(_dh(private, public))

    def write_message(self, payload: bytes = b"") -> bytes:
        state = self._state
        if self._step == 0:
            self._expect(0, writing=True)
            out = self._new_ephemeral()
        elif self._step == 1:
            self._expect(1, writing=True)
            out = self._new_ephemeral()
            self._mix_dh(self._e, self._re)  # ee
            out += state.encrypt_and_hash(self._s_pub)  # s
            self._mix_dh(self._s, self._re)  # es (responder side)
        else:
            self._expect(2, writing=True)
            assert self.remote_static is not None
            out = state.encrypt_and_hash(self._s_pub)  # s
            self._mix_dh(self._s, self._re)  # se (initiator side)
            state.mix_key_and_hash(self._psk)  # psk
        out += state.encrypt_and_hash(payload)
        self._step += 1
        return out

    def read_message(self, message: bytes) -> bytes:
        state = self._state
        # Kept to undo a message that does not authenticate (see the class).
        saved = (state.h, state.ck, replace(state.cipher), self._re, self.remote_static)
        try:
            if self._step == 0:
                self._expect(0, writing=False)
                if len(message) < MESSAGE_1:
                    raise NoiseError("message 1 too short")
                self._take_ephemeral(message[:DHLEN])
                rest = message[DHLEN:]
            elif self._step == 1:
                self._expect(1, writing=False)
                if len(message) < MESSAGE_2:
                    raise NoiseError("message 2 too short")
                self._take_ephemeral(message[:DHLEN])
                self._mix_dh(self._e, self._re)  # ee
                end = DHLEN + DHLEN + TAGLEN
                self.remote_static = state.decrypt_and_hash(message[DHLEN:end])  # s
                self._mix_dh(self._e, self.remote_static)  # es (initiator side)
                rest = message[end:]
            else:
                self._expect(2, writing=False)
                if len(message) < MESSAGE_3:
                    raise NoiseError("message 3 too short")
                end = DHLEN + TAGLEN
                self.remote_static = state.decrypt_and_hash(message[:end])  # s
                self._mix_dh(self._e, self.remote_static)  # se (responder side)
                state.mix_key_and_hash(self._psk)  # psk
                rest = message[end:]
            payload = state.decrypt_and_hash(rest)
        except NoiseError:
            state.h, state.ck, state.cipher, self._re, self.remote_static = saved
            raise
        self._step += 1
        return payload

    def transport(self) -> Transport:
        """The transport keys; only once all three messages are done."""
        if not self.done or self.remote_static is None:
            raise RuntimeError("handshake not finished")  # our bug
        k1, k2 = self._state.split()
        send, receive = (k1, k2) if self.initiator else (k2, k1)
        return Transport(send, receive, self.remote_static, self._state.h)
