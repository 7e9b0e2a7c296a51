"""The earliest of many deadlines, one per key, without walking them all.

A static node has a session with every node of the mesh; asking each of
them for its next deadline on every tick would cost O(N) per tick. Here
each key's deadline is *filed* when it changes (O(log N)), and the
earliest is read from the top of a heap.

Rules:

1. ``file(key, when)`` replaces the key's deadline (``None``: it has none).
   Whoever changes what a deadline is made of files it again; an entry
   filed before is then stale and skipped, never acted on.
2. ``earliest()`` is the smallest current deadline; ``due(now)`` the keys
   whose current deadline is at or before ``now``, earliest first. Reading
   them changes nothing: a key stays due until it is filed anew.
3. Stale entries are dropped when they reach the top, and all at once when
   they outnumber the live ones (the heap stays O(keys)).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

_SLACK = 64  # stale entries tolerated before a rebuild, beyond one per live key


class Deadlines(Generic[K]):
    def __init__(self) -> None:
        self._at: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()  # ties: first filed first; keys are never compared

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, key: K) -> bool:
        return key in self._at

    def get(self, key: K) -> float | None:
        return self._at.get(key)

    def file(self, key: K, when: float | None) -> None:
        """Rule 1."""
        if when is None:
            self._at.pop(key, None)
            return
        if self._at.get(key) == when:
            return
        self._at[key] = when
        heapq.heappush(self._heap, (when, next(self._seq), key))
        if len(self._heap) > 2 * len(self._at) + _SLACK:
            self._rebuild()

    def discard(self, key: K) -> None:
        self._at.pop(key, None)

    def clear(self) -> None:
        self._at.clear()
        self._heap.clear()

    def earliest(self) -> float | None:
        """Rule 2."""
        heap = self._heap
        while heap:
            when, _, key = heap[0]
            if self._at.get(key) == when:
                return when
            heapq.heappop(heap)  # stale (rule 3)
        return None

    def due(self, now: float) -> list[K]:
        """Rule 2: the keys due at ``now``, earliest first."""
        heap = self._heap
        taken: list[tuple[float, int, K]] = []
        out: list[K] = []
        seen: set[K] = set()
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            when, _, key = entry
            if self._at.get(key) == when and key not in seen:  # the same filing twice: once
                seen.add(key)
                out.append(key)
                taken.append(entry)
        for entry in taken:  # still due until filed anew
            heapq.heappush(heap, entry)
        return out

    def _rebuild(self) -> None:
        self._heap = [(when, next(self._seq), key) for key, when in self._at.items()]
        heapq.heapify(self._heap)
