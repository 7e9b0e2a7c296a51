"""Handshake ages that survive a wrong wall clock.

``wg show`` reports each peer's latest handshake as wall-clock seconds. Our
wall clock may disagree with the one WireGuard uses (a userspace WireGuard
under a shifted clock, an NTP step), so ``now - latest`` can be hours off.
What cannot be off is *that the value changed*: a new handshake happened
between two readings. This keeps, per peer, when (on the monotonic clock) we
first saw its current handshake value, and reports ages from that.
"""

from __future__ import annotations

from collections.abc import Mapping

from msgspec.structs import replace

from .model import WgPeerReading


class HandshakeClock:
    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, float]] = {}  # key -> (wall stamp, first seen)

    def correct(
        self, readings: Mapping[str, WgPeerReading], now_wall: float, now: float
    ) -> dict[str, WgPeerReading]:
        out = {}
        for key, reading in readings.items():
            if reading.handshake_age is None:
                self._seen.pop(key, None)
                out[key] = reading
                continue
            stamp = round(now_wall - reading.handshake_age)
            previous = self._seen.get(key)
            if previous is None or abs(previous[0] - stamp) > 1:
                # A handshake we had not seen: it happened since the last reading
                # (all our peers are created by us, with no handshake yet).
                previous = (stamp, now)
                self._seen[key] = previous
            out[key] = replace(reading, handshake_age=now - previous[1])
        for key in self._seen.keys() - readings.keys():
            del self._seen[key]
        return out
