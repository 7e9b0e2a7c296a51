"""Waiting for a condition, bounded: ``wait_until`` polls from plain code
(threads, subprocesses, namespaces), ``wait_for`` from a trio task."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import trio


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until truthy; False after ``timeout`` seconds.

    The predicate is called at least once, at most ``timeout / interval + 2``
    times.
    """
    deadline = time.monotonic() + timeout
    max_tries = int(timeout / max(interval, 0.001)) + 2
    for _ in range(max_tries):
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))
    return bool(predicate())


async def wait_for(
    predicate: Callable[[], Any], seconds: float = 5.0, interval: float = 0.01
) -> None:
    """In trio: poll ``predicate`` until truthy; ``trio.TooSlowError`` after ``seconds``."""
    with trio.fail_after(seconds):
        # Polling on purpose: the fakes and the screen have no events to wait on.
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(interval)
