"""Bounded per-source token buckets (pure: time is passed in).

Three uses in the core: answers to unauthenticated datagrams (challenges),
so a node cannot be used to reflect traffic; datagrams that fail to open, so
a source that floods the admin port with junk is muted before decryption;
and the relays a static passes on for each sender.
"""

from __future__ import annotations

from collections.abc import Hashable

MAX_SOURCES = 4096  # buckets kept per use (see TokenBuckets)


class TokenBuckets:
    """One bucket of ``burst`` tokens per key, refilled at ``rate`` per second.

    At most ``max_keys`` buckets are kept: when that many sources are
    tracked, the full ones (which say nothing) are forgotten, and if none is
    (a flood from spoofed addresses) all are, which costs an attacker nothing
    it could not get by spoofing anyway and keeps memory bounded.
    """

    def __init__(self, burst: float, rate: float, max_keys: int) -> None:
        self.burst = burst
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, time)

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: Hashable, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.burst, now))
        # max(): a clock that went backwards must not drain the bucket.
        return min(self.burst, tokens + max(0.0, now - last) * self.rate)

    def allow(self, key: Hashable, now: float) -> bool:
        """Take one token if there is one; False (and nothing taken) otherwise."""
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._forget_full(now)
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def _forget_full(self, now: float) -> None:
        """Make room: a full bucket says nothing; if none is, forget them all."""
        full = [k for k in self._buckets if self._tokens(k, now) >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()

    def empty(self, key: Hashable, now: float) -> bool:
        """True while ``key`` has no token left (takes nothing)."""
        return key in self._buckets and self._tokens(key, now) < 1.0
