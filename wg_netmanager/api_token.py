"""The HTTP API's token: one random secret per configuration directory.

It lives next to network.yaml (``<dir>/api-token``, mode 0600, root only),
is made on first use (the daemon's, or ``install``'s: a service's /etc is
read-only) and never logged. Clients send it as ``Authorization: Bearer``;
the web UI trades it once for an HttpOnly cookie. Light on purpose: the
command line imports it without the web stack.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat

FILE_NAME = "api-token"
TOKEN_BYTES = 32
MAX_TOKEN = 256  # characters read from the file, at most


class TokenError(Exception):
    """The token file cannot be used; one line for the user."""


def token_path(network_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(network_path)), FILE_NAME)


def read_token(path: str) -> str:
    """The token in ``path`` (a private regular file of ours, never through a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TokenError(f"{path} is a symbolic link; remove it") from None
        raise
    with os.fdopen(fd, "r", encoding="ascii", errors="replace") as file:
        st = os.fstat(file.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise TokenError(f"{path} is not a regular file; remove it")
        if st.st_uid != os.geteuid():
            raise TokenError(f"{path} belongs to uid {st.st_uid}, not to us; remove it")
        if st.st_mode & 0o077:
            raise TokenError(f"{path} is readable by others; run 'chmod 600 {path}'")
        token = file.read(MAX_TOKEN + 1).strip()
    if not 16 <= len(token) <= MAX_TOKEN or not token.isascii() or not token.isprintable():
        raise TokenError(f"{path} holds no valid token (16 to 256 characters); remove it")
    return token


def ensure_token(path: str) -> tuple[str, bool]:
    """(token, made): the token in ``path``, made (0600, exclusively) if there is none."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return read_token(path), False
    try:
        os.write(fd, (token + "\n").encode())
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    finally:
        os.close(fd)
    return token, True
