"""Load and validate network.yaml (shared by every node) and peer.yaml (this node).

Every problem raises ``ConfigError`` with a one-line message of the form
``<file>: <field>: <problem>; <fix>`` so that the CLI can print it as is.
How command-line values override peer.yaml is decided in ``cli.py``.

Loading is pure: what is accepted but worth a word (a subnet written with
host bits set, as the original tool's own example does) comes back in
``NetworkConfig.warnings``; ``check`` prints them, the daemon logs them.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import re
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Any

import msgspec
import yaml

from wg_netmanager.core.timers import Timers, timer_names
from wg_netmanager.keys import from_b64
from wg_netmanager.model import DEFAULT_ROUTE, Gateway, repr_without
from wg_netmanager.noise import public_key

if TYPE_CHECKING:  # (the wire format it needs is not loaded before the admin socket)
    from wg_netmanager.core.clients import Client

MAX_FILE_SIZE = 1 << 20  # a real config is a few hundred bytes; refuse before parsing
MIN_PORT, MAX_PORT = 1, 65535
MAX_KEEPALIVE = 65535  # WireGuard's limit for persistent keepalive
MAX_TIMER = 86400.0  # no protocol timer needs more than a day; also keeps sleeps finite
# A node's ports when nothing names them: these plus the last octet of its wg IP.
WG_PORT_BASE, ADMIN_PORT_BASE = 50000, 50500
MAX_VERBOSITY = 2  # -vv: commands and drops
STATIC_OPTION = "-s/--static"
LINK_MODES = ("eager", "lazy")  # network.links; the first is the default
DEFAULT_DNS_DOMAIN = "mesh"  # network.dns.domain

_EXAMPLES = {  # how to fill in a missing field
    "network": "a 'network:' section with sharedKey and subnet",
    "peers": "a 'peers:' list with at least one static peer (or give -s/--static)",
    "sharedKey": "'sharedKey: <output of wg_netmanager genkey>'",
    "subnet": "e.g. 'subnet: 10.1.1.0/24'",
    "endPoint": "e.g. 'endPoint: vps.example.org:50001'",
    "adminPort": "e.g. 'adminPort: 50000'",
    "wgIp": "e.g. 'wgIp: 10.1.1.1'",
    "routes": "e.g. 'routes: [192.168.1.0/24]'",
}
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_LABEL_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?")
_DNS_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # RFC 1123 host name label


class ConfigError(Exception):
    """A bad configuration; ``str()`` is one line naming the file, the field and the fix."""

    def __init__(self, message: str) -> None:
        # Values quoted from a file may hold newlines or tabs; the message stays one line.
        super().__init__(" ".join(message.split()))


class StaticPeer(msgspec.Struct, frozen=True):
    """A node with a fixed underlay address, listed under ``peers:`` in network.yaml."""

    wg_ip: IPv4Address
    host: str  # host name or IPv4 address; resolved by the daemon (dynamic DNS)
    wg_port: int
    admin_port: int
    public_key: bytes | None = None  # pinned: nobody else can ever be this static

    @property
    def endpoint_text(self) -> str:
        return f"{self.host}:{self.wg_port}"


class NetworkConfig(msgspec.Struct, frozen=True):
    path: str
    shared_key: bytes  # whoever has it can join the mesh (not in the repr)
    subnet: IPv4Network
    peers: tuple[StaticPeer, ...]
    timers: Timers
    # "lazy": direct links only between nodes that exchange traffic (see
    # docs/architecture.md, lazy links); "eager": every pair, always.
    links: str = "eager"
    warnings: tuple[str, ...] = ()  # one line each ("<file>: <field>: ..."), for stderr or the log
    # Nodes that forward from the mesh into networks of devices without the
    # daemon (or to the internet: an exit node), in order of preference.
    gateways: tuple[Gateway, ...] = ()
    # The mesh's names in DNS (nameserver.py): every node answers for
    # <name>.<dns_domain> on its wg IP, port 53, unless dns.enabled is false.
    dns_domain: str = DEFAULT_DNS_DOMAIN
    dns_enabled: bool = True

    def __repr__(self) -> str:
        return repr_without(self, ("shared_key",))

    def gateway(self, wg_ip: IPv4Address) -> Gateway | None:
        """The entry of ``gateways:`` for ``wg_ip``, if there is one."""
        return next((g for g in self.gateways if g.wg_ip == wg_ip), None)

    def exit_nodes(self) -> tuple[IPv4Address, ...]:
        """The gateways whose routes include 0.0.0.0/0, in the file's order."""
        return tuple(g.wg_ip for g in self.gateways if DEFAULT_ROUTE in g.routes)


class PeerConfig(msgspec.Struct, frozen=True):
    """peer.yaml; None = not set there."""

    name: str | None = None
    wg_ip: IPv4Address | None = None
    wg_interface: str | None = None
    existing_interface: bool | None = None
    private_key_file: str | None = None
    verbosity: int | None = None  # as many -v; a reload applies it
    exit_node: IPv4Address | None = None  # send the default route through this gateway
    mobile: bool | None = None  # a metered roaming node (see docs/architecture.md)


DEFAULT_API = ("127.0.0.1", 50080)


class Settings(msgspec.Struct, frozen=True):
    """Everything the daemon needs, after command line > peer.yaml > defaults."""

    network: NetworkConfig
    interface: str
    wg_ip: IPv4Address
    name: str
    existing_interface: bool
    wg_port: int
    admin_port: int
    verbosity: int
    logfile: str | None
    tui: bool
    hopping: bool
    # A pinned static's own key (its publicKey is in network.yaml); None: a
    # fresh key pair at every clean start (a crashed run's is kept, runfiles.py).
    private_key: bytes | None = None  # (not in the repr)
    # The exit node this node sends its default route through (opt-in); it is
    # a gateway of network.yaml with the route 0.0.0.0/0.
    exit_node: IPv4Address | None = None
    # Where the HTTP API listens (--api; the command line's default is
    # DEFAULT_API); None: off.
    api: tuple[str, int] | None = None
    # --mobile / peer.yaml mobile: one static link, no pings, lazy links
    # (docs/architecture.md, "Mobile nodes"); never a static.
    mobile: bool = False
    # A static's plain WireGuard clients, from its state file next to
    # network.yaml (client_config.py); the running daemon owns them after start.
    clients: tuple[Client, ...] = ()

    def __repr__(self) -> str:
        return repr_without(self, ("private_key",))

    @property
    def static(self) -> StaticPeer | None:
        """This node's own entry in network.yaml ``peers:``, if it has one."""
        return next((p for p in self.network.peers if p.wg_ip == self.wg_ip), None)

    @property
    def is_static(self) -> bool:
        return self.static is not None


def generate_shared_key() -> str:
    return base64.b64encode(os.urandom(32)).decode("ascii")


def warn_if_world_readable(path: str) -> str | None:
    """A warning line if group or others may read ``path`` (it holds the shared key)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & 0o044 == 0:
        return None
    return (
        f"warning: {path} is readable by group/others but holds the shared key; "
        f"run 'chmod 600 {path}'"
    )


# ---------------------------------------------------------------- reading YAML


# libyaml's parser where PyYAML was built with it: a tenth of the pure-Python
# parser's time (1.3 ms of a start-up for network.yaml); same safe constructor.
_SafeBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeBase):
    """SafeLoader that rejects duplicate keys (plain PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            # Merge keys (<<) may legitimately be overridden, so only plain keys count.
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def _read_text(path: str, option: str) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_SIZE + 1)  # bounded: -c may name a pipe or a device
    except FileNotFoundError:
        if os.path.islink(path):
            raise ConfigError(f"{path}: dangling symbolic link; fix the link") from None
        raise ConfigError(
            f"{path}: no such file; create it or give its path with {option}"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; give the YAML file with {option}") from None
    except NotADirectoryError:
        raise ConfigError(f"{path}: a parent in the path is not a directory; check it") from None
    except PermissionError:
        raise ConfigError(
            f"{path}: permission denied; run as root or make it readable by this user"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"{path}: symbolic link loop; fix the link") from None
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_SIZE:
        raise ConfigError(f"{path}: larger than 1 MiB; this is not a wg_netmanager config file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: byte {exc.start} is not UTF-8 text; is this really a YAML file?"
        ) from None


def _parse_yaml(path: str, text: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        lines = text.splitlines()
        if mark is None:
            where = "somewhere"
        elif mark.line >= len(lines):  # libyaml puts the stream's end on a line of its own
            where = f"line {max(len(lines), 1)}, end of file"
        else:
            where = f"line {mark.line + 1}, column {mark.column + 1}"
        problem = exc.problem or exc.context or "invalid YAML"
        fix = "fix the file there"
        if mark is not None and _char_at(lines, mark.line, mark.column) == "\t":
            # e.g. a block copied from a web page, indented with tabs (libyaml's
            # message does not name the character)
            problem = problem.replace("found character that", "found a tab that")
            fix = "YAML indents with spaces, never tabs: replace the tabs with spaces"
        raise ConfigError(f"{path}: {where}: YAML error: {problem}; {fix}") from None
    except yaml.reader.ReaderError as exc:
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ConfigError(
            f"{path}: character {exc.position}: non-printable character {char:#x} "
            "in YAML; is this really a YAML file?"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply; this is not a config file") from None
    except (ValueError, TypeError, OverflowError) as exc:
        # PyYAML lets some constructor errors through, e.g. a date like 2001-13-01
        # or an integer of more than 4300 digits.
        reason = str(exc).split(";")[0]  # drop Python's advice about sys.set_int_max_str_digits
        raise ConfigError(f"{path}: invalid YAML value: {reason}; quote it or fix it") from None


def _char_at(lines: list[str], line: int, column: int) -> str:
    return lines[line][column : column + 1] if 0 <= line < len(lines) else ""


def _load_yaml(path: str, option: str, missing_ok: bool) -> Any:
    if missing_ok and not os.path.lexists(path):
        return None
    return _parse_yaml(path, _read_text(path, option))


# ---------------------------------------------------------------- field checks


def _show(value: Any) -> str:
    """A short description of a YAML value for error messages."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "nothing"}[value]
    if isinstance(value, int) and value.bit_length() > 64:
        return "a huge number"  # repr() of a huge int can itself fail (4300 digit limit)
    if isinstance(value, str | int | float):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    # Never repr() containers: YAML aliases can make them exponentially large.
    if isinstance(value, dict):
        return "a mapping"
    return "a list" if isinstance(value, list) else f"a {type(value).__name__}"


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) and len(key) <= 40 else _show(key)


def _at(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _mapping(path: str, where: str, value: Any, expected: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {where}: expected {expected}, got {_show(value)}")
    return value


def _check_keys(
    path: str,
    where: str,
    mapping: dict[Any, Any],
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
) -> None:
    valid = required + optional
    for key in mapping:
        if key not in valid:
            raise ConfigError(
                f"{path}: {_at(where, _key_text(key))}: unknown key; "
                f"valid keys here: {', '.join(valid)}"
            )
    for key in required:
        if mapping.get(key) is None:
            raise ConfigError(f"{path}: {_at(where, key)}: missing; add {_EXAMPLES[key]}")


def _text(path: str, where: str, value: Any, example: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{path}: {where}: expected text like {example}, got {_show(value)}")
    return value


def _port(path: str, where: str, value: Any) -> int:
    # bool is an int in Python, but 'adminPort: true' is surely a mistake.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{path}: {where}: expected a port number, got {_show(value)}")
    if not MIN_PORT <= value <= MAX_PORT:
        raise ConfigError(f"{path}: {where}: port out of range: {_show(value)}; use 1..65535")
    return value


def parse_ipv4(text: str, where: str) -> IPv4Address:
    """Parse a wgIp; ``where`` is the "<file>: <field>" prefix of the error."""
    try:
        return IPv4Address(text)
    except ValueError:
        pass
    if ":" in text:
        raise ConfigError(f"{where}: {_show(text)}: IPv6 is not supported; use an IPv4 address")
    raise ConfigError(f"{where}: {_show(text)} is not an IPv4 address; write it like 10.1.1.7")


def check_wg_ip(ip: IPv4Address, subnet: IPv4Network, where: str, subnet_path: str) -> None:
    """A node's wgIp must be a usable host address of the subnet."""
    if ip not in subnet:
        raise ConfigError(
            f"{where}: {ip} is outside subnet {subnet} of {subnet_path}; pick an address inside it"
        )
    if ip in (subnet.network_address, subnet.broadcast_address):
        kind = "network" if ip == subnet.network_address else "broadcast"
        raise ConfigError(
            f"{where}: {ip} is the {kind} address of subnet {subnet}; pick another address"
        )


def check_name(name: str, where: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(
            f"{where}: {_show(name)} is not a valid name; use 1..32 characters of A-Z a-z 0-9 _ . -"
        )
    return name


def check_interface(name: str, where: str) -> str:
    # The kernel's dev_valid_name(): at most IFNAMSIZ-1 bytes, no '/', ':' or whitespace.
    if (
        not 1 <= len(name.encode()) <= 15
        or name in (".", "..")
        or any(c in "/:" or c.isspace() or not c.isprintable() for c in name)
    ):
        raise ConfigError(
            f"{where}: {_show(name)} is not a valid interface name; "
            "use 1..15 characters without '/', ':' or spaces, e.g. wg0"
        )
    return name


def _shared_key(path: str, value: Any) -> bytes:
    # The value itself is never quoted: it is (or is close to) the network secret.
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (AttributeError, UnicodeEncodeError, binascii.Error):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(
            f"{path}: network.sharedKey: not base64 of 32 bytes; "
            "make one with 'wg_netmanager genkey'"
        )
    return raw


def _subnet(path: str, value: Any) -> tuple[IPv4Network, str | None]:
    """The subnet, and a warning if it had to be normalised.

    ``10.1.1.0/8`` (the original tool's own example) has host bits set; it is
    read as the network ``10.0.0.0/8``, as the original did, with a warning.
    Refused as ambiguous: no prefix length (/24? /32?), and host bits set with
    a mask instead of a length (``/0.0.0.255`` is read as a hostmask, not a
    netmask). Octets with leading zeros (octal?) are not IPv4 at all.
    """
    where = f"{path}: network.subnet"
    text = _text(path, "network.subnet", value, "10.1.1.0/24").strip()
    if ":" in text:
        raise ConfigError(f"{where}: IPv6 is not supported; use an IPv4 subnet like 10.1.1.0/24")
    if "/" not in text:
        raise ConfigError(f"{where}: {_show(text)} has no prefix length; write it like 10.1.1.0/24")
    warning = None
    try:
        subnet = IPv4Network(text)
    except ValueError:
        try:
            subnet = IPv4Network(text, strict=False)
        except ValueError:
            raise ConfigError(
                f"{where}: {_show(text)} is not an IPv4 subnet; write it like 10.1.1.0/24"
            ) from None
        if not re.fullmatch(r"[0-9]{1,2}", text.rpartition("/")[2]):
            raise ConfigError(
                f"{where}: {text} has host bits set and a mask instead of a prefix length; "
                f"write {subnet}"
            ) from None
        warning = _host_bits_warning(where, text, subnet)
    if subnet.prefixlen > 30:
        raise ConfigError(
            f"{where}: /{subnet.prefixlen} leaves no room for nodes; use /30 or wider"
        )
    return subnet, warning


def _host_bits_warning(where: str, text: str, subnet: IPv4Network) -> str:
    """Says what ``text`` was read as, and the narrower network it may have meant."""
    address = IPv4Address(text.partition("/")[0])  # valid: the whole text parsed
    zero_octets = 4 - len(address.packed.rstrip(b"\0"))
    # 10.1.1.0/8 may have meant 10.1.1.0/24: the longest whole-octet prefix the address starts.
    narrow = 8 * (4 - zero_octets)
    hint = ""
    if subnet.prefixlen < narrow <= 24:
        hint = f" (or {address}/{narrow} if only that was meant)"
    return (
        f"{where}: {text} has host bits set; read as {subnet} "
        f"({subnet.network_address + 1} to {subnet.broadcast_address - 1}); "
        f"write {subnet}{hint} to silence this"
    )


def _endpoint(path: str, where: str, value: Any) -> tuple[str, int]:
    text = _text(path, where, value, "vps.example.org:50001").strip()
    if text.startswith("[") or text.count(":") > 1:
        raise ConfigError(f"{path}: {where}: IPv6 is not supported; use a host name or IPv4")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(
            f"{path}: {where}: {_show(text)} needs host:port, e.g. vps.example.org:50001"
        )
    if not re.fullmatch(r"[0-9]{1,5}", port_text):
        raise ConfigError(f"{path}: {where}: port {_show(port_text)} is not a number; use 1..65535")
    port = _port(path, where, int(port_text))
    labels = host.removesuffix(".").split(".")
    if all(label.isdigit() for label in labels):
        # Looks numeric: must be a full dotted quad, not something inet_aton would guess at.
        parse_ipv4(host, f"{path}: {where}")
    elif len(host) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise ConfigError(f"{path}: {where}: {_show(host)} is not a valid host name or IPv4")
    return host, port


def _peers(
    path: str, value: Any, subnet: IPv4Network, given: tuple[StaticPeer, ...] = ()
) -> tuple[StaticPeer, ...]:
    """The file's ``peers:`` (``value``; None: missing) plus ``given`` on the command line."""
    if value is None:
        if not given:
            raise ConfigError(f"{path}: peers: missing; add {_EXAMPLES['peers']}")
        value = []
    elif not isinstance(value, list):
        raise ConfigError(
            f"{path}: peers: expected a list of static peers "
            f"(- endPoint/adminPort/wgIp), got {_show(value)}"
        )
    elif not value and not given:
        raise ConfigError(f"{path}: peers: empty; add at least one static peer")
    peers: list[tuple[str, StaticPeer]] = []
    for index, item in enumerate(value):
        where = f"peers[{index}]"
        entry = _mapping(path, where, item, "a mapping with endPoint, adminPort and wgIp")
        _check_keys(path, where, entry, ("endPoint", "adminPort", "wgIp"), ("publicKey",))
        ip_text = _text(path, f"{where}.wgIp", entry["wgIp"], "10.1.1.1")
        wg_ip = parse_ipv4(ip_text.strip(), f"{path}: {where}.wgIp")
        check_wg_ip(wg_ip, subnet, f"{path}: {where}.wgIp", path)
        host, wg_port = _endpoint(path, f"{where}.endPoint", entry["endPoint"])
        admin_port = _port(path, f"{where}.adminPort", entry["adminPort"])
        if admin_port == wg_port:
            raise ConfigError(
                f"{path}: {where}.adminPort: same as the WireGuard port of endPoint; "
                "both are UDP ports on one host, pick another"
            )
        pinned = None
        if entry.get("publicKey") is not None:
            key_text = _text(path, f"{where}.publicKey", entry["publicKey"], "wg pubkey output")
            try:
                pinned = from_b64(key_text.strip())
            except ValueError:
                raise ConfigError(
                    f"{path}: {where}.publicKey: not a WireGuard public key (base64 of 32 "
                    "bytes); put the output of 'wg pubkey' there"
                ) from None
        peer = StaticPeer(wg_ip, host, wg_port, admin_port, pinned)
        _check_unique(peers, f"{path}: {where}.wgIp", f"{path}: {where}.endPoint", peer)
        peers.append((where, peer))
    for given_peer in given:
        where = f"command line: {STATIC_OPTION} {given_peer.wg_ip}@{given_peer.endpoint_text}"
        check_wg_ip(given_peer.wg_ip, subnet, where, path)
        if any(p == given_peer for _, p in peers):
            continue  # said twice, alike: no conflict
        _check_unique(peers, where, where, given_peer)
        peers.append((f"{STATIC_OPTION} {given_peer.wg_ip}", given_peer))
    return tuple(peer for _, peer in peers)


def _check_unique(
    peers: list[tuple[str, StaticPeer]], ip_where: str, endpoint_where: str, peer: StaticPeer
) -> None:
    for other_where, other in peers:
        if other.wg_ip == peer.wg_ip:
            raise ConfigError(
                f"{ip_where}: {peer.wg_ip} is already used by {other_where}; "
                "every node needs its own wgIp"
            )
        if (other.host.lower(), other.wg_port) == (peer.host.lower(), peer.wg_port):
            raise ConfigError(
                f"{endpoint_where}: {peer.host}:{peer.wg_port} is already used by "
                f"{other_where}; every static peer needs its own endpoint"
            )


def parse_static(text: str) -> StaticPeer:
    """One ``-s/--static WGIP@HOST:WGPORT[,ADMINPORT]``; the admin port defaults
    to 50500 + the last octet of WGIP (as the static itself would use).
    Checked against the subnet by ``load_network``."""
    where = f"command line: {STATIC_OPTION}"
    example = "write it like 10.1.1.1@vps.example.org:50001 (or ...:50001,50501)"
    ip_text, at, rest = text.strip().partition("@")
    if not at or not ip_text or not rest:
        raise ConfigError(f"{where}: {_show(text)} is not WGIP@HOST:WGPORT; {example}")
    wg_ip = parse_ipv4(ip_text, f"{where} {ip_text}@...")
    endpoint_text, comma, admin_text = rest.partition(",")
    host, wg_port = _endpoint("command line", f"{STATIC_OPTION} {text.strip()}", endpoint_text)
    if comma:
        if not re.fullmatch(r"[0-9]{1,5}", admin_text):
            raise ConfigError(
                f"{where} {text.strip()}: admin port {_show(admin_text)} is not a number; "
                "use 1..65535"
            )
        admin_port = _port("command line", f"{STATIC_OPTION} {text.strip()}", int(admin_text))
    else:
        admin_port = ADMIN_PORT_BASE + wg_ip.packed[-1]
    if admin_port == wg_port:
        raise ConfigError(
            f"{where} {text.strip()}: admin port and WireGuard port are both {wg_port}; "
            "give another admin port after a comma"
        )
    return StaticPeer(wg_ip, host, wg_port, admin_port)


def _links(path: str, value: Any) -> str:
    if value not in LINK_MODES:
        raise ConfigError(
            f"{path}: network.links: expected eager or lazy, got {_show(value)}; "
            "lazy links only the nodes that talk"
        )
    return str(value)


def _dns(path: str, value: Any) -> tuple[str, bool]:
    """``network.dns``: the domain the nodes answer for (lower case, no final
    dot) and whether they do."""
    if value is None:
        return DEFAULT_DNS_DOMAIN, True
    dns = _mapping(path, "network.dns", value, "a mapping with domain and enabled")
    _check_keys(path, "network.dns", dns, (), ("domain", "enabled"))
    enabled = dns.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(
            f"{path}: network.dns.enabled: expected true or false, got {_show(enabled)}"
        )
    raw = dns.get("domain", DEFAULT_DNS_DOMAIN)
    text = _text(path, "network.dns.domain", raw, DEFAULT_DNS_DOMAIN).strip().lower()
    domain = text[:-1] if text.endswith(".") else text
    labels = domain.split(".")
    if len(domain) > 253 or not all(_DNS_LABEL_RE.fullmatch(label) for label in labels):
        raise ConfigError(
            f"{path}: network.dns.domain: {_show(raw)} is not a DNS name; use labels of "
            "letters, digits and '-' joined by dots, e.g. 'mesh' or 'wg.example.org'"
        )
    return domain, enabled


# Networks a gateway route must not touch: they are never forwarded.
_UNROUTABLE = tuple(
    IPv4Network(n)
    for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32")
)


def _route(path: str, where: str, value: Any, subnet: IPv4Network) -> IPv4Network:
    """One network of a gateway's ``routes``: strict CIDR, outside the mesh."""
    text = _text(path, where, value, "192.168.1.0/24").strip()
    where = f"{path}: {where}"
    if ":" in text:
        raise ConfigError(
            f"{where}: IPv6 is not supported; use an IPv4 network like 192.168.1.0/24"
        )
    address, slash, length = text.partition("/")
    if not slash:
        raise ConfigError(
            f"{where}: {_show(text)} has no prefix length; write it like 192.168.1.0/24 "
            f"(or {address}/32 for one host)"
        )
    if not re.fullmatch(r"[0-9]{1,2}", length):
        raise ConfigError(f"{where}: {_show(text)}: write the prefix length as a number, e.g. /24")
    try:
        network = IPv4Network(text)
    except ValueError:
        try:
            loose = IPv4Network(text, strict=False)
        except ValueError:
            raise ConfigError(
                f"{where}: {_show(text)} is not an IPv4 network; write it like 192.168.1.0/24"
            ) from None
        raise ConfigError(f"{where}: {text} has host bits set; write {loose}") from None
    if network == DEFAULT_ROUTE:
        return network  # an exit node: the mesh's own routes are more specific
    if network.overlaps(subnet):
        raise ConfigError(
            f"{where}: {network} overlaps the mesh subnet {subnet}; a gateway's routes lie "
            "outside it (only an exit node's 0.0.0.0/0 may contain it)"
        )
    for bad in _UNROUTABLE:
        if network.overlaps(bad):
            raise ConfigError(
                f"{where}: {network} overlaps {bad}, which is never forwarded; "
                "list the devices' own network"
            )
    return network


def _gateways(path: str, value: Any, subnet: IPv4Network) -> tuple[Gateway, ...]:
    """``gateways:``: each node once, each with at least one route."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(
            f"{path}: gateways: expected a list of gateways (- wgIp/routes), got {_show(value)}"
        )
    gateways: list[Gateway] = []
    for index, item in enumerate(value):
        where = f"gateways[{index}]"
        entry = _mapping(path, where, item, "a mapping with wgIp and routes")
        _check_keys(path, where, entry, ("wgIp", "routes"), ("masquerade",))
        ip_text = _text(path, f"{where}.wgIp", entry["wgIp"], "10.1.1.3")
        wg_ip = parse_ipv4(ip_text.strip(), f"{path}: {where}.wgIp")
        check_wg_ip(wg_ip, subnet, f"{path}: {where}.wgIp", path)
        for other_index, other in enumerate(gateways):
            if other.wg_ip == wg_ip:
                raise ConfigError(
                    f"{path}: {where}.wgIp: {wg_ip} is already gateways[{other_index}]; "
                    "list all its routes in one entry"
                )
        items = entry["routes"]
        if not isinstance(items, list) or not items:
            raise ConfigError(
                f"{path}: {where}.routes: expected a list of networks like "
                f"[192.168.1.0/24], got {_show(items)}"
            )
        routes: list[IPv4Network] = []
        for route_index, route_value in enumerate(items):
            route_where = f"{where}.routes[{route_index}]"
            route = _route(path, route_where, route_value, subnet)
            if route in routes:
                raise ConfigError(f"{path}: {route_where}: {route} is listed twice; drop one")
            routes.append(route)
        masquerade = entry.get("masquerade", True)
        if not isinstance(masquerade, bool):
            raise ConfigError(
                f"{path}: {where}.masquerade: expected true or false, got {_show(masquerade)}"
            )
        gateways.append(Gateway(wg_ip, tuple(routes), masquerade))
    return tuple(gateways)


def exit_node_of(
    network: NetworkConfig, wg_ip: IPv4Address, exit_node: IPv4Address | None, where: str
) -> IPv4Address | None:
    """Check this node's choice of exit node (``where``: the option or file that made it)."""
    if exit_node is None:
        return None
    exits = network.exit_nodes()
    listed = ", ".join(str(ip) for ip in exits) or "none is listed"
    if exit_node == wg_ip:
        raise ConfigError(f"{where}: {exit_node} is this node itself; pick another exit node")
    if exit_node not in exits:
        raise ConfigError(
            f"{where}: {exit_node} is no exit node of {network.path}: no gateways entry with "
            f"wgIp {exit_node} routes 0.0.0.0/0 (exit nodes: {listed})"
        )
    own = network.gateway(wg_ip)
    if own is not None and DEFAULT_ROUTE in own.routes:
        raise ConfigError(
            f"{where}: this node is an exit node itself ({network.path} routes 0.0.0.0/0 "
            "through it); it cannot use another"
        )
    return exit_node


def _timers(path: str, value: Any) -> Timers:
    if value is None:
        return Timers()
    names = timer_names()
    section = _mapping(path, "timers", value, "a mapping of timer names to seconds")
    _check_keys(path, "timers", section, (), tuple(names))
    defaults = Timers()
    changes: dict[str, Any] = {}
    for key, number in section.items():
        where = f"{path}: timers.{key}"
        is_int = isinstance(getattr(defaults, names[key]), int)
        kind = "a whole number of seconds" if is_int else "a number of seconds"
        limit = MAX_KEEPALIVE if is_int else MAX_TIMER
        if isinstance(number, bool) or not isinstance(number, int if is_int else int | float):
            raise ConfigError(f"{where}: expected {kind}, got {_show(number)}")
        if not number > 0:  # also catches .nan
            raise ConfigError(f"{where}: {_show(number)} is not positive; use {kind} > 0")
        if number > limit:  # also catches .inf and huge ints (which would not fit a float)
            raise ConfigError(f"{where}: {_show(number)} is too large; use at most {limit:g}")
        changes[names[key]] = number
    return Timers(**changes)


# ---------------------------------------------------------------- the two files


def load_network(path: str, statics: tuple[StaticPeer, ...] = ()) -> NetworkConfig:
    """network.yaml, its ``peers`` merged with ``statics`` from the command line
    (``parse_static``); with those, the file may leave ``peers`` out."""
    doc = _load_yaml(path, "-c/--config", missing_ok=False)
    if doc is None:
        raise ConfigError(f"{path}: file is empty; it needs a 'network:' and a 'peers:' section")
    top = _mapping(path, "top level", doc, "a mapping with network, peers and timers")
    if statics:
        _check_keys(path, "", top, ("network",), ("peers", "timers", "gateways"))
    else:
        _check_keys(path, "", top, ("network", "peers"), ("timers", "gateways"))
    net = _mapping(path, "network", top["network"], "a mapping with sharedKey and subnet")
    _check_keys(path, "network", net, ("sharedKey", "subnet"), ("links", "dns"))
    shared_key = _shared_key(path, net["sharedKey"])
    subnet, subnet_warning = _subnet(path, net["subnet"])
    peers = _peers(path, top.get("peers"), subnet, statics)
    dns_domain, dns_enabled = _dns(path, net.get("dns"))
    return NetworkConfig(
        path=path,
        shared_key=shared_key,
        subnet=subnet,
        peers=peers,
        timers=_timers(path, top.get("timers")),
        links=_links(path, net.get("links", LINK_MODES[0])),
        warnings=(subnet_warning,) if subnet_warning else (),
        gateways=_gateways(path, top.get("gateways"), subnet),
        dns_domain=dns_domain,
        dns_enabled=dns_enabled,
    )


def load_peer(path: str, required: bool) -> PeerConfig:
    """peer.yaml; a missing file gives an empty PeerConfig unless ``required``."""
    doc = _load_yaml(path, "-p/--peer-config", missing_ok=not required)
    if doc is None:  # missing (and optional) or empty: nothing is set
        return PeerConfig()
    top = _mapping(path, "top level", doc, "a mapping with name, wgIp, wgInterface")
    keys = (
        "name",
        "wgIp",
        "wgInterface",
        "existingInterface",
        "verbosity",
        "privateKeyFile",
        "exitNode",
        "mobile",
    )
    _check_keys(path, "", top, (), keys)
    name = wg_ip = interface = existing = verbosity = key_file = exit_node = mobile = None
    if top.get("name") is not None:
        name = check_name(_text(path, "name", top["name"], "alice"), f"{path}: name")
    if top.get("wgIp") is not None:
        wg_ip = parse_ipv4(_text(path, "wgIp", top["wgIp"], "10.1.1.7").strip(), f"{path}: wgIp")
    if top.get("wgInterface") is not None:
        text = _text(path, "wgInterface", top["wgInterface"], "wg0")
        interface = check_interface(text, f"{path}: wgInterface")
    if top.get("existingInterface") is not None:
        existing = top["existingInterface"]
        if not isinstance(existing, bool):
            raise ConfigError(
                f"{path}: existingInterface: expected true or false, got {_show(existing)}"
            )
    if top.get("verbosity") is not None:
        verbosity = top["verbosity"]
        if (
            not isinstance(verbosity, int)
            or isinstance(verbosity, bool)
            or not 0 <= verbosity <= MAX_VERBOSITY
        ):
            raise ConfigError(
                f"{path}: verbosity: expected 0, 1 or 2 (as many -v), got {_show(verbosity)}"
            )
    if top.get("mobile") is not None:
        mobile = top["mobile"]
        if not isinstance(mobile, bool):
            raise ConfigError(f"{path}: mobile: expected true or false, got {_show(mobile)}")
    if top.get("privateKeyFile") is not None:
        example = "/etc/wg_netmanager/wg0.key"
        key_file = _text(path, "privateKeyFile", top["privateKeyFile"], example)
    if top.get("exitNode") is not None:
        text = _text(path, "exitNode", top["exitNode"], "10.1.1.1")
        exit_node = parse_ipv4(text.strip(), f"{path}: exitNode")
    return PeerConfig(
        name=name,
        wg_ip=wg_ip,
        wg_interface=interface,
        existing_interface=existing,
        verbosity=verbosity,
        private_key_file=key_file,
        exit_node=exit_node,
        mobile=mobile,
    )


def load_private_key(path: str, pinned: bytes, where: str) -> bytes:
    """A pinned static's private key from ``path`` (``wg genkey`` output, root only).

    ``where`` names what pins it, for the one-line error.
    """
    fix = f"put this node's key there ('wg genkey > {path}; chmod 600 {path}')"
    try:
        with open(path, "rb") as file:
            info = os.fstat(file.fileno())
            text = file.read(200)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file, but {where} pins this node's key; {fix}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}; {fix}") from None
    if info.st_mode & 0o077:
        raise ConfigError(f"{path}: readable by group/others; run 'chmod 600 {path}'")
    try:
        private = from_b64(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ConfigError(f"{path}: not a WireGuard private key; {fix}") from None
    if public_key(private) != pinned:
        raise ConfigError(
            f"{path}: its public key is not the one {where} pins; put the matching key "
            "there, or the output of 'wg pubkey' for this key into network.yaml"
        )
    return private
