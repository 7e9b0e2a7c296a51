"""WireGuard's userspace API, spoken in-process to wireguard-go and boringtun.

A userspace WireGuard serves its configuration on a unix socket
(``/var/run/wireguard/<if>.sock``), the same cross-platform protocol that
``wg`` speaks to it (https://www.wireguard.com/xplatform/): ``get=1`` answers
with the device and its peers as ``key=value`` lines, ``set=1`` followed by
such lines changes them; both end with an empty line and the daemon answers
``errno=N``. Speaking it ourselves costs a socket round trip instead of a
``wg`` process (fork, exec, the same socket round trip): the reconciler reads
the device every fraction of a second while links come up.

The ``wg set`` commands that ``wgdev.plan_peer_changes`` plans are translated
line for line (:func:`set_lines`), so the kernel backend (which ``wg`` drives
over netlink) and the userspace ones apply the very same plan. Keys are hex
here and base64 in ``wg``'s syntax. A failure is a
:class:`~wg_netmanager.proc.CommandError` whose argv names the socket, like a
failed ``wg``.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from ipaddress import IPv4Network

import trio

from .model import WgPeerReading, parse_endpoint
from .proc import DEFAULT_TIMEOUT, CommandError

log = logging.getLogger("wg_netmanager.uapi")

MAX_REPLY = 1 << 22  # a device with thousands of peers is a few hundred kB


def hex_key(b64: str) -> str:
    return base64.b64decode(b64, validate=True).hex()


def b64_key(hex_text: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_text)).decode()


def parse_get(text: str, now_wall: float) -> dict[str, WgPeerReading]:
    """The peers of a ``get=1`` answer, as :func:`wgdev.parse_dump` reads ``wg show dump``.

    ``now_wall`` is the current ``time.time()``: handshake times are wall-clock
    instants, turned into ages (clamped to >= 0). Lines of the device itself
    (its private key among them) are skipped, never kept or logged; an
    unknown key is ignored (newer daemons add some); a malformed peer is
    skipped with a warning that does not quote it.
    """
    peers: dict[str, WgPeerReading] = {}
    peer: dict[str, object] | None = None

    def finish() -> None:
        if peer is None:
            return
        try:
            key = b64_key(str(peer["public_key"]))
            sec = int(str(peer.get("last_handshake_time_sec", "0")))
            nsec = int(str(peer.get("last_handshake_time_nsec", "0")))
            latest = sec + nsec / 1e9
            endpoint = peer.get("endpoint")
            peers[key] = WgPeerReading(
                public_key=key,
                endpoint=None if endpoint is None else parse_endpoint(str(endpoint)),
                allowed_ips=tuple(sorted(peer["allowed"])),  # type: ignore[call-overload]
                handshake_age=None if latest == 0 else max(0.0, now_wall - latest),
                rx_bytes=int(str(peer.get("rx_bytes", "0"))),
                tx_bytes=int(str(peer.get("tx_bytes", "0"))),
                persistent_keepalive=int(str(peer.get("persistent_keepalive_interval", "0"))),
            )
        except (ValueError, KeyError):
            log.warning("uapi: a peer with a malformed field; skipped")

    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "public_key":
            finish()
            peer = {"public_key": value, "allowed": set()}
        elif peer is None:
            continue  # the device's own lines
        elif key == "allowed_ip":
            if ":" not in value:  # IPv6: not ours to manage, and not representable
                try:
                    peer["allowed"].add(IPv4Network(value, strict=False))  # type: ignore[attr-defined]
                except ValueError:
                    log.warning("uapi: a malformed allowed_ip; skipped")
        else:
            peer[key] = value
    finish()
    return peers


def set_lines(argv: Sequence[str]) -> list[str]:
    """The ``set=1`` lines that do what ``wg set <if> ...`` (``argv``) does.

    Understands what the adapters plan: ``listen-port``, ``peer KEY`` with
    ``remove``, ``allowed-ips`` (the whole list: replaced), ``endpoint``,
    ``persistent-keepalive`` and ``fwmark``. ``private-key`` is refused: it goes in with
    :func:`configure_lines`, never through an argv.
    """
    if list(argv[:2]) != ["wg", "set"] or len(argv) < 3:
        raise ValueError(f"not a wg set command: {list(argv)}")
    words = list(argv[3:])
    lines: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "remove":
            lines.append("remove=true")
            i += 1
            continue
        if i + 1 >= len(words):
            raise ValueError(f"wg set: {word} without a value")
        value = words[i + 1]
        i += 2
        if word == "peer":
            lines.append(f"public_key={hex_key(value)}")
        elif word == "listen-port":
            lines.append(f"listen_port={int(value)}")
        elif word == "allowed-ips":
            lines.append("replace_allowed_ips=true")
            lines += [f"allowed_ip={net}" for net in value.split(",") if net]
        elif word == "endpoint":
            lines.append(f"endpoint={value}")
        elif word == "fwmark":
            lines.append(f"fwmark={0 if value == 'off' else int(value, 0)}")
        elif word == "persistent-keepalive":
            interval = 0 if value == "off" else int(value)
            lines.append(f"persistent_keepalive_interval={interval}")
        else:
            raise ValueError(f"wg set: {word} is not translated")
    return _keepalive_turned_on_last(lines)


def _keepalive_turned_on_last(lines: list[str]) -> list[str]:
    """The peers whose persistent keepalive is set non-zero go after the others.

    wireguard-go (0.0.20220316, and its source since) keeps "keepalive turned
    on" from one peer of a ``set=1`` to the next: a peer that follows such a
    peer in the same request, and has no endpoint yet (a punch's peer while
    it is installed), is sent a keepalive. That fails (no endpoint), but its
    handshake initiation counts as sent, so the initiation due once the
    endpoint is set is held back for 5 s (RekeyTimeout): a NAT punch then
    failed in about one start in eight. A peer whose own line sets the
    keepalive is told its own. The order of the peers in one request changes
    nothing else: the planned commands never give one address to two peers.
    """
    blocks: list[list[str]] = [[]]  # device lines, then one block per peer
    for line in lines:
        if line.startswith("public_key="):
            blocks.append([])
        blocks[-1].append(line)
    device, peers = blocks[0], blocks[1:]

    def turns_keepalive_on(block: list[str]) -> bool:
        return any(
            line.startswith("persistent_keepalive_interval=") and not line.endswith("=0")
            for line in block
        )

    ordered = [b for b in peers if not turns_keepalive_on(b)]
    ordered += [b for b in peers if turns_keepalive_on(b)]
    return device + [line for block in ordered for line in block]


def configure_lines(private_key: bytes, listen_port: int) -> list[str]:
    return [f"private_key={private_key.hex()}", f"listen_port={listen_port}"]


async def request(path: str, command: str, lines: Sequence[str] = ()) -> str:
    """Send ``command`` (``get=1`` or ``set=1``) and ``lines``; the answer without
    its ``errno=0``. CommandError for a refused request, a socket that is not
    there, or a daemon that does not answer within ``proc.DEFAULT_TIMEOUT``."""
    argv = ["uapi", path, command]
    # The lines may hold a private key: never logged, never in an error.
    log.debug("uapi: %s %s (%d lines)", path, command, len(lines))
    payload = "".join(f"{line}\n" for line in (command, *lines)) + "\n"
    reply = b""
    try:
        with trio.fail_after(DEFAULT_TIMEOUT):
            stream = await trio.open_unix_socket(path)
            async with stream:
                await stream.send_all(payload.encode())
                while not (reply.endswith(b"\n\n") or len(reply) > MAX_REPLY):
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    reply += chunk
    except trio.TooSlowError:
        raise CommandError(argv, None, f"timed out after {DEFAULT_TIMEOUT} s") from None
    except OSError as exc:
        raise CommandError(argv, 1, f"cannot talk to {path}: {exc.strerror or exc}") from None
    text = reply.decode("utf-8", errors="replace")
    body, _, last = text.rstrip("\n").rpartition("\n")
    if not last.startswith("errno="):
        body, last = text, ""
    if last != "errno=0":
        code = last.partition("=")[2]
        raise CommandError(argv, 1, f"refused (errno {code or '?'})")
    return body
