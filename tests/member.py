"""``Member``: a node of the mesh written by hand, to attack the others.

It holds what any member holds (the shared key, a key pair of its own, every
datagram it can capture and open with the shared key) and builds frames
itself: genuine handshakes for its own identity, with any payload it likes,
and forged frames in anybody's name. What it cannot have is another node's
private key or session keys; the tests show that this is all it takes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from msgspec.structs import replace

from tests.helpers import ADMIN_KEY, SHARED_KEY, admin_port, wg_port
from wg_netmanager import noise, wire
from wg_netmanager.core.handshake import PROLOGUE
from wg_netmanager.core.sessions import Keys
from wg_netmanager.keys import to_b64
from wg_netmanager.model import Endpoint
from wg_netmanager.wire import NodeInfo


@dataclass
class Member:
    wg_ip: IPv4Address
    name: str = "mallory"
    private: bytes = field(default_factory=lambda: os.urandom(32))
    boot: bytes = field(default_factory=lambda: os.urandom(8))
    boot_number: int = 0  # said in its hellos (wire.Hello)
    keys: dict[IPv4Address, Keys] = field(default_factory=dict)  # finished sessions
    _pending: dict[int, tuple[noise.Handshake, IPv4Address]] = field(default_factory=dict)

    @property
    def public_key(self) -> str:
        return to_b64(noise.public_key(self.private))

    def info(self, **changes: object) -> NodeInfo:
        info = NodeInfo(
            self.wg_ip, self.name, self.public_key, wg_port(self.wg_ip), admin_port(self.wg_ip)
        )
        return replace(info, **changes)

    def _noise(self, initiator: bool) -> noise.Handshake:
        return noise.Handshake(
            initiator=initiator,
            static_private=self.private,
            psk=wire.derive_psk(SHARED_KEY),
            prologue=PROLOGUE,
            random_bytes=os.urandom,
        )

    # --- frames, sealed -----------------------------------------------------------

    @staticmethod
    def seal(frame: wire.Frame) -> bytes:
        return wire.seal_frame(ADMIN_KEY, frame)

    @staticmethod
    def open(data: bytes) -> wire.Frame:
        return wire.open_frame(ADMIN_KEY, data)

    def init(self, to: IPv4Address, cookie: bytes = bytes(wire.COOKIE_SIZE)) -> bytes:
        """Noise message 1 of a handshake with ``to``."""
        state = self._noise(initiator=True)
        index = int.from_bytes(os.urandom(4), "big") | 1
        self._pending[index] = (state, to)
        return self.seal(wire.Init(self.wg_ip, to, index, cookie, state.write_message()))

    def finish(self, response: bytes, payload: bytes | None = None) -> bytes:
        """Message 3 for a RESPONSE; the payload is ours to choose (default: honest)."""
        frame = self.open(response)
        assert isinstance(frame, wire.Response), frame
        state, to = self._pending.pop(frame.to_index)
        state.read_message(frame.noise)
        hello = wire.encode_hello(self.info(), self.boot, self.boot_number)
        body = hello if payload is None else payload
        message = state.write_message(body)
        transport = state.transport()
        self.keys[to] = Keys(frame.to_index, frame.index, transport.send, transport.receive)
        return self.seal(wire.Finish(self.wg_ip, to, frame.index, message))

    def send(
        self, to: IPv4Address, message: wire.Message, as_ip: IPv4Address | None = None
    ) -> bytes:
        """``message`` over our own session with ``to`` (``as_ip``: claiming another sender)."""
        keys = self.keys[to]
        counter = keys.next_counter()
        sender = self.wg_ip if as_ip is None else as_ip
        header = wire.Transport.make_header(sender, to, keys.remote_index, counter)
        body = wire.encode_message(message)
        ciphertext = noise.encrypt(keys.send, counter, header, body)
        return self.seal(wire.Transport(sender, to, keys.remote_index, counter, ciphertext, header))

    def read(self, data: bytes) -> wire.Message | None:
        """A TRANSPORT frame for us, read with our session keys."""
        frame = self.open(data)
        if not isinstance(frame, wire.Transport):
            return None
        for keys in self.keys.values():
            if keys.local_index == frame.to_index:
                body = noise.decrypt(keys.receive, frame.counter, frame.header, frame.ciphertext)
                return wire.decode_message(body)
        return None


def forged_transport(
    sender: IPv4Address, to: IPv4Address, to_index: int, counter: int, size: int = 64
) -> bytes:
    """A TRANSPORT frame in ``sender``'s name without its keys: random ciphertext."""
    header = wire.Transport.make_header(sender, to, to_index, counter)
    ciphertext = os.urandom(size)
    return wire.seal_frame(
        ADMIN_KEY, wire.Transport(sender, to, to_index, counter, ciphertext, header)
    )


def source(octet: int) -> Endpoint:
    return (f"198.51.100.{octet}", 50500 + octet)
