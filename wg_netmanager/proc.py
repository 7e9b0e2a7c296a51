"""Run external commands (``ip``, ``wg``, ``wireguard-go``) from trio.

Every command of the I/O adapters goes through :func:`run`, so there is one
place that logs commands and one exception type, :class:`CommandError`, for
every way a command can fail (non-zero exit, missing binary, timeout).

Secrets (private keys) are only ever passed as ``stdin``, which is neither
logged nor part of the error message. :func:`run_batch` runs several ``ip``
commands in one process (``ip -batch -``), each logged as it would be run.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import subprocess
import time
from collections import Counter
from collections.abc import Mapping, Sequence

import trio

log = logging.getLogger("wg_netmanager.proc")

DEFAULT_TIMEOUT = 10.0
"""Seconds before a command counts as hung. ``ip`` and ``wg`` take milliseconds;
a stuck userspace daemon must not freeze the caller's loop forever."""

_MAX_STDERR = 2000

failures: Counter[str] = Counter()
"""Failed commands of this process by program (``ip``, ``wg``): the metrics show them."""


class CommandError(Exception):
    """An external command failed.

    ``returncode`` is the exit status; 127 when the binary could not be
    started (for instance not installed), ``None`` when it timed out.
    """

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        super().__init__(list(argv), returncode, stderr)
        failures[os.path.basename(argv[0]) if argv else "?"] += 1
        self.argv: list[str] = list(argv)
        self.returncode = returncode
        self.stderr = stderr

    def __str__(self) -> str:
        if self.returncode is None:
            status = "did not finish"
        else:
            status = f"failed with exit code {self.returncode}"
        detail = self.stderr.strip()
        if len(detail) > _MAX_STDERR:
            detail = detail[:_MAX_STDERR] + "..."
        text = f"command `{shlex.join(self.argv)}` {status}"
        return f"{text}: {detail}" if detail else text


async def run(
    argv: Sequence[str],
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    # a default bound that turns into CommandError, unlike a caller's fail_after
    timeout: float | None = DEFAULT_TIMEOUT,  # noqa: ASYNC109
) -> str:
    """Run ``argv`` (no shell) and return its stdout as text.

    ``stdin`` is fed to the command (use it for secrets: it is never logged);
    ``env`` is the child's *whole* environment (``None``: inherit ours);
    ``timeout`` in seconds, ``None`` for no limit.  On timeout the child is
    killed.  Raises :class:`CommandError` unless the exit status is 0.
    """
    argv = [str(a) for a in argv]
    log.debug("run: %s%s", shlex.join(argv), " (with stdin)" if stdin is not None else "")
    started = time.monotonic()
    try:
        with trio.fail_after(math.inf if timeout is None else timeout):
            result = await trio.run_process(
                argv,
                stdin=b"" if stdin is None else stdin,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=None if env is None else dict(env),
            )
    except trio.TooSlowError:
        log.debug("timed out after %.1f s: %s", timeout, shlex.join(argv))
        raise CommandError(argv, None, f"timed out after {timeout} s") from None
    except OSError as exc:  # binary missing, not executable, ...
        raise CommandError(argv, 127, f"cannot start: {exc}") from exc
    assert isinstance(result, subprocess.CompletedProcess)
    elapsed_ms = (time.monotonic() - started) * 1000
    stderr = result.stderr.decode("utf-8", errors="replace")
    if result.returncode != 0:
        log.debug("exit %d after %.1f ms: %s", result.returncode, elapsed_ms, stderr.strip())
        raise CommandError(argv, result.returncode, stderr)
    if stderr.strip():
        log.debug("ok after %.1f ms, stderr: %s", elapsed_ms, stderr.strip())
    else:
        log.debug("ok after %.1f ms", elapsed_ms)
    return result.stdout.decode("utf-8", errors="replace")


_BATCH_FAILED = re.compile(r"^Command failed -:(\d+)$")


async def run_batch(
    commands: Sequence[Sequence[str]], *, keep_going: bool = False
) -> dict[int, str]:
    """Run several ``ip`` commands in one process: ``ip [options] -batch -``.

    Each command is an argv as for :func:`run`: ``ip``, then options shared
    by every command of the batch (e.g. ``-4``), then the command itself
    (``route replace ...``). One command runs as it is. Without
    ``keep_going`` the batch stops at the first failure and raises
    :class:`CommandError` naming that command; with it (``-force``) every
    command runs and the failures come back as {index: error text}.
    """
    if len(commands) == 1:
        try:
            await run(commands[0])
        except CommandError as exc:
            if not keep_going or exc.returncode in (127, None):  # not started, or hung
                raise
            return {0: exc.stderr.strip()}
        return {}
    options: list[str] | None = None
    lines = []
    for argv in commands:
        words = [str(a) for a in argv]
        if words[0] != "ip" or any(not w or w.split() != [w] for w in words):
            raise ValueError(f"not an ip command for a batch: {words}")
        count = next((i for i, w in enumerate(words[1:], 1) if not w.startswith("-")), len(words))
        if options is None:
            options = words[1:count]
        elif words[1:count] != options:
            raise ValueError(f"options differ within a batch: {words}")
        lines.append(" ".join(words[count:]))
        log.debug("batched: %s", shlex.join(words))
    argv = ["ip", *(options or []), *(["-force"] if keep_going else []), "-batch", "-"]
    try:
        await run(argv, stdin="".join(f"{line}\n" for line in lines).encode())
    except CommandError as exc:
        if exc.returncode == 127 or exc.returncode is None:
            raise
        failures = _batch_failures(exc.stderr)
        if not failures:  # e.g. ip refused its own options
            raise
        if not keep_going:
            index, text = min(failures.items())
            raise CommandError(commands[index], exc.returncode, text) from None
        return failures
    return {}


def _batch_failures(stderr: str) -> dict[int, str]:
    """{command index: its error text} from ``ip -batch``'s stderr, where each
    failure's messages end with ``Command failed -:N`` (N from 1)."""
    failures: dict[int, str] = {}
    text: list[str] = []
    for line in stderr.splitlines():
        match = _BATCH_FAILED.match(line.strip())
        if match:
            failures[int(match.group(1)) - 1] = "\n".join(text)
            text = []
        elif line.strip():
            text.append(line.strip())
    return failures
