"""The start-up timeline: first occurrences, logged at -vv from the process's start."""

from __future__ import annotations

import logging
import time

import pytest

from wg_netmanager.timeline import Timeline, process_start


def test_a_step_counts_once_and_is_logged_when_logging_is_there(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test_timeline")
    timeline = Timeline(origin=time.monotonic() - 0.5)
    timeline.mark("config read")  # before logging is set up
    with caplog.at_level(logging.DEBUG, logger="test_timeline"):
        timeline.attach(log)
        timeline.mark("first hello sent")
        timeline.mark("config read")  # again: not a first
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(": ", 1)[1] for line in lines] == ["config read", "first hello sent"]
    assert all(line.startswith("startup +") and " ms (cpu " in line for line in lines)
    config_ms = timeline.ms("config read")
    assert config_ms is not None and 500 <= config_ms < 5000
    assert timeline.ms("first handshake") is None


def test_nothing_is_logged_below_debug(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test_timeline_quiet")
    with caplog.at_level(logging.INFO, logger="test_timeline_quiet"):
        timeline = Timeline()
        timeline.attach(log)
        timeline.mark("device up")
    assert caplog.records == []


def test_the_process_started_before_now_and_not_long_before_this_test_run() -> None:
    now = time.monotonic()
    started = process_start(now)
    # pytest took far more than 50 ms to get here (the kernel's clock ticks are 10 ms),
    # and started at most an hour ago
    assert 0.05 < now - started < 3600
