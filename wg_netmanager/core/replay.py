"""Sliding-window replay filter, as WireGuard and IPsec use it.

Each sender numbers its datagrams with a counter that only grows for the life
of one boot id. The receiver accepts a counter once, and only within WINDOW
of the highest seen, so reordering is tolerated and replays are refused
without any clock.
"""

from __future__ import annotations

WINDOW = 64


class ReplayWindow:
    __slots__ = ("bitmap", "highest")

    def __init__(self, first: int) -> None:
        self.highest = first
        # bit i set: highest - i was seen. Everything before the first accepted
        # counter counts as seen: the sender's earlier datagrams (its first
        # hello) were sent before the session existed and must not replay into it.
        self.bitmap = (1 << WINDOW) - 1

    def accept(self, counter: int) -> bool:
        """True (and remembered) the first time ``counter`` is seen; False for a replay."""
        if counter > self.highest:
            shift = counter - self.highest
            # A jump past the window forgets everything: never shift by a huge
            # number (a forged counter of 2**60 must not cost memory).
            if shift >= WINDOW:
                self.bitmap = 1
            else:
                self.bitmap = ((self.bitmap << shift) | 1) & ((1 << WINDOW) - 1)
            self.highest = counter
            return True
        offset = self.highest - counter
        if offset >= WINDOW or self.bitmap >> offset & 1:
            return False
        self.bitmap |= 1 << offset
        return True
