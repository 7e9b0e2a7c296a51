"""The local control socket: ``wg_netmanager status`` reads the running daemon.

The daemon listens on a unix stream socket, ``/run/wg_netmanager/<if>.sock``
(directory 0700, socket 0600: root only). One /run may serve daemons of
several network namespaces (``ip netns``, testbeds), each with its own ``wg0``:
outside the host's namespace (or a container's own: PID 1's) the name also
carries the namespace's inode, ``<if>.netns-<inode>.sock`` (the number
``lsns -t net`` shows), and ``status`` looks for the one of its own namespace.
The static node's peers file follows the same rule (``runtime_path``).

The protocol is one-shot: a client connects and sends its request, one line
ended by a newline or by closing its sending side; the daemon writes one JSON
document and a newline, and closes. An empty request (or none within
``SEND_TIMEOUT``) asks for the status document (``status_text``: the core's
``NodeStatus`` plus interface, backend, uptime; public keys, never a private
or shared key). Any other request is a JSON object with an ``op`` (``client
add``, ``client list``, ``client remove``: see ``client_main``) answered by
the daemon's command handler; ``{"error": "..."}`` is a refusal in one line.

The directory can be moved with the environment variable
``WG_NETMANAGER_RUN_DIR`` (tests keep their sockets out of the machine's
/run). A socket that still answers belongs to another daemon and is never
taken over; a stale one is replaced. On shutdown the daemon removes its
socket (only if it is still the one it created).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import stat
import sys
from collections.abc import Callable, Mapping
from typing import Any

import trio

from .status_text import Doc, render_text

log = logging.getLogger("wg_netmanager")

RUN_DIR_ENV = "WG_NETMANAGER_RUN_DIR"
DEFAULT_RUN_DIR = "/run/wg_netmanager"
SEND_TIMEOUT = 2.0  # seconds a client may take to read the document
CLIENT_TIMEOUT = 5.0  # seconds ``status`` waits for the daemon
MAX_DOCUMENT = 16 << 20
MAX_REQUEST = 64 << 10
# The host's network namespace has this inode since Linux 6.18 (PROC_NET_INIT_INO);
# others are numbered from 0xF0000000 up, so no other namespace can have it.
INIT_NETNS_INODE = 0xEFFFFFF9


class ControlError(Exception):
    """The control socket cannot be used; one line for the user."""


def run_dir() -> str:
    return os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR


def netns_key() -> str | None:
    """None in the host's network namespace (or PID 1's: a container's own);
    elsewhere ``netns-<inode>`` of this process's network namespace.
    """
    own = _netns_id("self")
    if own is None or own[1] == INIT_NETNS_INODE:  # no /proc: nothing to tell apart
        return None
    if _netns_id("1") == own:  # kernels before the fixed number; needs root
        return None
    return f"netns-{own[1]}"


def _netns_id(pid: str) -> tuple[int, int] | None:
    """(device, inode) of the network namespace of process ``pid``; None if hidden."""
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def runtime_path(interface: str, suffix: str) -> str:
    """``<run dir>/<if>[.netns-<inode>].<suffix>``: one name per daemon on this host.

    Interface names have at most 15 characters, so ``<if>.netns-<inode>`` (10
    digits) never equals another interface's plain name.
    """
    key = netns_key()
    stem = interface if key is None else f"{interface}.{key}"
    return os.path.join(run_dir(), f"{stem}.{suffix}")


def socket_path(interface: str) -> str:
    return runtime_path(interface, "sock")


def peers_path(interface: str) -> str:
    """Where a static node remembers its nodes' admin endpoints across a crash."""
    return runtime_path(interface, "peers")


# --- the daemon's side ---------------------------------------------------------


def _prepare_dir(directory: str) -> None:
    """Create ``directory`` 0700, or check that an existing one is ours and private."""
    with contextlib.suppress(FileExistsError):
        os.makedirs(directory, mode=0o700)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise ControlError(f"{directory} is not a directory")
    if st.st_uid != os.geteuid():
        raise ControlError(f"{directory} belongs to uid {st.st_uid}, not to us")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(directory, 0o700)


def _is_live(path: str) -> bool:
    """True if a process accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def bind(path: str) -> socket.socket:
    """A listening unix socket at ``path`` (0600, in a 0700 directory)."""
    _prepare_dir(os.path.dirname(path) or ".")
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ControlError("it exists and is not a socket")
        if _is_live(path):
            raise ControlError("in use by another daemon")
        os.unlink(path)  # stale: its daemon died without cleaning up
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)  # inside a 0700 directory: nobody else can reach it meanwhile
        os.chmod(path, 0o600)
        sock.listen(8)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


Command = Callable[[Mapping[str, Any]], Mapping[str, Any]]


async def serve(
    path: str,
    snapshot: Callable[[], Mapping[str, Any]],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    *,
    command: Command | None = None,
) -> None:
    """Answer every connection on ``path`` until cancelled: ``snapshot()`` as
    JSON for an empty request, ``command(request)`` for any other.

    Never ends the daemon: if the socket cannot be made, a warning is logged
    and ``status`` is simply unavailable.
    """
    try:
        raw = bind(path)
    except (ControlError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        log.warning("control socket %s: %s; 'wg_netmanager status' is unavailable", path, reason)
        task_status.started()
        return
    ino = os.stat(path).st_ino
    listener = trio.socket.from_stdlib_socket(raw)
    log.debug("control socket %s", path)
    try:
        task_status.started()
        while True:
            conn, _ = await listener.accept()
            with conn:
                request = b""
                with trio.move_on_after(SEND_TIMEOUT):
                    request = await _read_request(conn)
                try:
                    answer = _answer(request, snapshot, command)
                    data = json.dumps(answer, separators=(",", ":")).encode() + b"\n"
                except Exception:  # a bug must not end the daemon; the client sees EOF
                    log.exception("control request failed")
                    continue
                with trio.move_on_after(SEND_TIMEOUT):
                    await _send_all(conn, data)
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == ino:
                os.unlink(path)


async def _read_request(conn: trio.socket.SocketType) -> bytes:
    """The request: up to a newline or the client's end of sending (bounded)."""
    data = b""
    try:
        while b"\n" not in data and len(data) <= MAX_REQUEST:
            chunk = await conn.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        log.debug("control client: %s", exc.strerror)
    return data.partition(b"\n")[0].strip()


def _answer(
    request: bytes, snapshot: Callable[[], Mapping[str, Any]], command: Command | None
) -> Mapping[str, Any]:
    if not request:
        return snapshot()
    try:
        obj = json.loads(request)
    except ValueError:
        return {"error": "the request is not JSON"}
    if not isinstance(obj, dict) or not isinstance(obj.get("op"), str):
        return {"error": "the request has no op"}
    if command is None:
        return {"error": f"this daemon does not serve {obj['op']!r}"}
    return command(obj)


async def _send_all(conn: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            sent = await conn.send(view)
            view = view[sent:]
    except OSError as exc:  # the client went away
        log.debug("control client: %s", exc.strerror)


# --- the client: ``wg_netmanager status`` ------------------------------------


def fetch(path: str, timeout: float = CLIENT_TIMEOUT, request: Doc | None = None) -> Doc:
    """Read the status document (or the answer to ``request``) from the daemon
    listening on ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(
                f"no daemon is running in this network namespace (no control socket at {path})"
            ) from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}; run as root") from None
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise ControlError(
                    f"no daemon is running in this network namespace (no control socket at {path})"
                ) from None
            raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        chunks, size = [], 0
        try:
            if request is not None:
                sock.sendall(json.dumps(request).encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)  # the request is complete
            while size <= MAX_DOCUMENT:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except TimeoutError:
            raise ControlError(f"the daemon at {path} did not answer in {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"reading {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError(f"the daemon at {path} sent no valid status") from None
    if not isinstance(doc, dict):
        raise ControlError(f"the daemon at {path} sent no valid status")
    return doc


def status_main(interface: str, as_json: bool) -> int:
    """``wg_netmanager status [--json] [<interface>]``: print the peer table once."""
    path = socket_path(interface)
    try:
        doc = fetch(path)
    except ControlError as exc:
        print(f"wg_netmanager: error: {interface}: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(render_text(doc))
    return 0
