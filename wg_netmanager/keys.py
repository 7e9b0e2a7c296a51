"""X25519 key pairs for WireGuard (pynacl) in WireGuard's base64 form."""

from __future__ import annotations

import base64
import binascii

import msgspec
from nacl.public import PrivateKey

from .model import repr_without


class KeyPair(msgspec.Struct, frozen=True):
    private: bytes  # raw 32 bytes; never logged, never on argv (nor in the repr)
    public: bytes

    def __repr__(self) -> str:
        return repr_without(self, ("private",))

    @classmethod
    def generate(cls) -> KeyPair:
        private = PrivateKey.generate()
        return cls(private=bytes(private), public=bytes(private.public_key))

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        return cls(private=private, public=bytes(PrivateKey(private).public_key))

    @property
    def public_b64(self) -> str:
        return to_b64(self.public)


def to_b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def from_b64(text: str) -> bytes:
    """Decode a WireGuard key; raises ValueError unless it is base64 of 32 bytes."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not base64") from exc
    if len(raw) != 32:
        raise ValueError("not 32 bytes")
    if to_b64(raw) != text:
        # Non-zero padding bits: a second spelling of the same key, which would
        # never match the canonical form `wg show` prints.
        raise ValueError("not canonical base64")
    return raw


def short(public_b64: str) -> str:
    """The short form shown in logs and the TUI (like `wg`'s own abbreviations)."""
    return public_b64[:8] + "…"
