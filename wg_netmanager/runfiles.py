"""Small root-only files in the run directory, written and read the one safe way.

What a daemon keeps for its next run after a crash (a static's call-back
list, the host changes to undo, the key a crashed run used) lives in
``/run/wg_netmanager``: a directory of ours, closed to everyone else. A file
is written atomically (a temporary file, then a rename), 0600, never through
a link or into a file someone else made; it is read only if that still holds.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time


def private_dir(directory: str) -> bool:
    """Is ``directory`` ours and closed to everyone else (so its files are ours)?"""
    try:
        st = os.lstat(directory)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def write_private(path: str, text: str) -> None:
    """Replace ``path`` with ``text``, root only; OSError if it cannot."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if not private_dir(directory):
        raise PermissionError(f"{directory} is not a private directory of ours")
    tmp = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a leftover of a crashed run with our PID
    # O_EXCL | O_NOFOLLOW: never write through a link or into a file someone else made.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_private(path: str, max_size: int, max_age: float | None = None) -> str | None:
    """What :func:`write_private` wrote, if only we could have written it (and
    it is at most ``max_age`` seconds old); None if not. OSError (except a
    missing file) and UnicodeDecodeError go to the caller."""
    if not private_dir(os.path.dirname(path)):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, encoding="utf-8") as f:
        info = os.fstat(f.fileno())
        if info.st_uid != os.geteuid() or info.st_size > max_size:
            return None
        if max_age is not None and time.time() - info.st_mtime > max_age:
            return None
        return f.read(max_size)


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
