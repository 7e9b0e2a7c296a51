"""Plain WireGuard clients at the edges: the state file, the wg-quick config,
and the ``wg_netmanager client add|list|remove`` command.

The rules are the core's (core/clients.py); the story is in
docs/architecture.md, "Plain WireGuard clients".

- *The state file* lives next to network.yaml, ``clients-<static wg IP>.json``
  (mode 0600, root only): name, wg IP and public key of each client, never a
  private key. The static's daemon reads it at start; the ``client`` command
  writes it (as root, outside the service's sandbox) with the list the
  daemon answered, and the API's requests have the daemon write it (its
  unit lets it write its own configuration directory), always under a lock
  on the directory, so the file and the running daemon agree after every
  request.
- *The client's key pair* is made where the config is made: here, in the
  command's process (only the public key goes to the daemon), or in the
  API's handler (api.py); the private key is shown once, inside the config
  (on stdout, or in the API's answer), and is stored, logged and passed in
  argv nowhere.
- *The config*: the client's Address (its /32), the static as the one peer
  with the endpoint network.yaml gives it, AllowedIPs the mesh subnet plus
  the networks behind gateways (not 0.0.0.0/0: a phone keeps its own
  internet), PersistentKeepalive 25 (the phone calls in and keeps its NAT
  open; the static never calls it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import stat
import sys
from collections.abc import Iterator, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from . import wire
from .config import ConfigError
from .core.clients import Client
from .keys import KeyPair, from_b64, to_b64

KEEPALIVE = 25  # seconds: the client's keepalive towards its static
MAX_FILE = 1 << 20


def state_path(network_path: str, wg_ip: IPv4Address) -> str:
    """Where the static at ``wg_ip`` keeps its clients: next to network.yaml."""
    return os.path.join(os.path.dirname(os.path.abspath(network_path)), f"clients-{wg_ip}.json")


# --- the state file -----------------------------------------------------------------


def load(path: str, subnet: IPv4Network) -> tuple[Client, ...]:
    """The clients in ``path`` (none if it does not exist); ``ConfigError`` in one line."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return ()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"{path}: a symbolic link; remove it") from None
        raise ConfigError(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        st = os.fstat(file.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file; remove it")
        if st.st_mode & 0o077:
            raise ConfigError(f"{path}: readable by others; run 'chmod 600 {path}'")
        data = file.read(MAX_FILE + 1)
    try:
        obj = json.loads(data)
        items = obj["clients"]
        if not isinstance(items, list):
            raise TypeError
        clients = tuple(_client(item, subnet) for item in items)
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{path}: clients: not a list of {{name, wg_ip, public_key}} in the mesh {subnet}; "
            "fix or remove the file (the clients then need adding again)"
        ) from None
    for field in ("name", "wg_ip", "public_key"):
        values = [getattr(c, field) for c in clients]
        if len(set(values)) != len(values):
            raise ConfigError(f"{path}: clients: a {field} appears twice; remove one of them")
    return clients


def _client(item: Any, subnet: IPv4Network) -> Client:
    if not isinstance(item, dict):
        raise TypeError
    name, key, ip = item["name"], item["public_key"], IPv4Address(item["wg_ip"])
    if not isinstance(name, str) or not wire.NAME_RE.fullmatch(name) or ip not in subnet:
        raise ValueError
    from_b64(key)  # ValueError if no key
    return Client(name, ip, key)


def document(clients: Sequence[Client]) -> dict[str, Any]:
    return {
        "clients": [
            {"name": c.name, "wg_ip": str(c.wg_ip), "public_key": c.public_key}
            for c in sorted(clients, key=lambda c: c.wg_ip)
        ]
    }


def write(path: str, clients: Sequence[Client]) -> None:
    """Replace ``path`` with ``clients`` (0600, atomically: a crash leaves the old file)."""
    temp = f"{path}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(document(clients), file, indent=2)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


@contextlib.contextmanager
def locked(directory: str) -> Iterator[None]:
    """One ``client`` command at a time per configuration directory."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- the config -----------------------------------------------------------------------


def render_config(private_key: str, answer: Mapping[str, Any]) -> str:
    """The wg-quick config for the client the daemon registered (``answer``)."""
    client, peer = answer["client"], answer["peer"]
    return "\n".join(
        [
            "[Interface]",
            f"# {client['name']}: a plain WireGuard client of the mesh {peer['mesh']}",
            f"PrivateKey = {private_key}",
            f"Address = {client['wg_ip']}/32",
            "",
            "[Peer]",
            f"# {peer['name']}, the static node it joins through",
            f"PublicKey = {peer['public_key']}",
            f"Endpoint = {peer['endpoint']}",
            f"AllowedIPs = {', '.join(peer['allowed_ips'])}",
            f"PersistentKeepalive = {KEEPALIVE}",
            "",
        ]
    )


def qr_code(text: str) -> str:
    """``text`` as a QR code for a terminal (Unicode half blocks: 80 columns
    hold a whole config), for the WireGuard app's "scan from QR code"."""
    import segno  # only for --qr

    out = io.StringIO()
    segno.make(text, error="l", micro=False).terminal(out=out, compact=True)
    return out.getvalue()


def qr_svg(text: str) -> str:
    """``text`` as a QR code in SVG (black on white, with the quiet zone),
    for the web UI."""
    import segno

    out = io.BytesIO()
    segno.make(text, error="l", micro=False).save(
        out, kind="svg", scale=4, border=4, dark="#000", light="#fff", xmldecl=False
    )
    return out.getvalue().decode()


# --- the command ---------------------------------------------------------------------


def client_main(interface: str, op: str, name: str | None, wg_ip: str | None, qr: bool) -> int:
    """``wg_netmanager client add|list|remove``: 0, or 2 with one line on stderr."""
    from .control import ControlError, fetch, socket_path  # trio: only when used

    path = socket_path(interface)
    try:
        if op == "list":
            answer = _ask(fetch, path, {"op": "client-list"})
            print(_list_text(answer["clients"]))
            return 0
        if op == "add":
            keys = KeyPair.generate()
            request = {"op": "client-add", "name": name, "public_key": keys.public_b64}
            request["wg_ip"] = wg_ip
            answer = _ask(fetch, path, request)
            _save(fetch, path, answer, undo={"op": "client-remove", "name": name})
            config = render_config(to_b64(keys.private), answer)
            sys.stdout.write(config)
            if qr:
                sys.stdout.write("\n" + qr_code(config))
            return 0
        answer = _ask(fetch, path, {"op": "client-remove", "name": name})
        _save(fetch, path, answer, undo=None)
        print(f"client {name} ({answer['client']['wg_ip']}) removed")
        return 0
    except (ControlError, ConfigError) as exc:
        print(f"wg_netmanager: error: {interface}: {exc}", file=sys.stderr)
        return 2


def _ask(fetch: Any, path: str, request: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = fetch(path, request=request)
    if "error" in answer:
        raise ConfigError(str(answer["error"]))
    return answer


def save(answer: Mapping[str, Any]) -> None:
    """Write the daemon's list (a ``client-add``/``client-remove`` answer) to
    its state file, under the directory's lock; ``OSError`` if it cannot."""
    file = str(answer["state_file"])
    clients = [
        Client(c["name"], IPv4Address(c["wg_ip"]), c["public_key"]) for c in answer["clients"]
    ]
    with locked(os.path.dirname(file)):
        write(file, clients)


def _save(fetch: Any, path: str, answer: Mapping[str, Any], undo: dict[str, Any] | None) -> None:
    """Write the daemon's list to its state file; if that fails, undo the add."""
    file = str(answer["state_file"])
    try:
        save(answer)
    except OSError as exc:
        if undo is not None:
            with contextlib.suppress(Exception):
                fetch(path, request=undo)
        what = "not added" if undo is not None else "removed until the daemon restarts"
        raise ConfigError(f"{file}: {exc.strerror or exc}; the client is {what}") from None


def _list_text(clients: Sequence[Mapping[str, Any]]) -> str:
    from .status_text import column_widths, fmt_age, fmt_bytes, format_row

    headers = ["NAME", "WG IP", "ENDPOINT", "HANDSHAKE", "RX", "TX", "KEY"]
    right = [False, False, False, True, True, True, False]
    rows = [
        [
            str(c["name"]),
            str(c["wg_ip"]),
            str(c.get("endpoint") or "-"),
            fmt_age(c.get("handshake_age")),
            fmt_bytes(c.get("rx_bytes", 0)),
            fmt_bytes(c.get("tx_bytes", 0)),
            str(c["public_key"]),
        ]
        for c in clients
    ]
    if not rows:
        return "no client on this node"
    widths = column_widths(headers, rows)
    return "\n".join(format_row(r, widths, right) for r in [headers, *rows])
