"""Command line entry point: ``wg_netmanager [check|genkey|status] ...``.

Where each setting comes from, first match wins:

* interface, wg_ip, name: the ``<interface> <wg_ip> <name>`` arguments (all three
  or none), else ``wgInterface``/``wgIp``/``name`` in peer.yaml, else interface
  ``wg0``; wg_ip and name have no default.
* existing interface: ``-e``, else ``existingInterface`` in peer.yaml, else false.
* ports: ``-w``/``-u``, else this node's entry in network.yaml ``peers:`` (a
  static node; its endPoint port and adminPort), else 50000/50500 + the last
  octet of wg_ip.

network.yaml (``-c``) must exist. peer.yaml (``-p``) may be missing when it is
the default path, but not when given explicitly. Every configuration problem is
reported as one ``wg_netmanager: error: ...`` line on stderr with exit code 2.
"""

from __future__ import annotations

import importlib
import re
import sys
from types import ModuleType
from typing import Any

from docopt import DocoptExit, docopt

from wg_netmanager import __version__
from wg_netmanager.config import (
    ConfigError,
    Settings,
    check_interface,
    check_name,
    check_wg_ip,
    generate_shared_key,
    load_network,
    load_peer,
    parse_ipv4,
    warn_if_world_readable,
)
from wg_netmanager.core.timers import Timers, timer_names

DEFAULT_NETWORK_PATH = "/etc/wg_netmanager/network.yaml"
DEFAULT_PEER_PATH = "/etc/wg_netmanager/peer.yaml"
DEFAULT_INTERFACE = "wg0"
WG_PORT_BASE, ADMIN_PORT_BASE = 50000, 50500
COMMANDS = ("check", "genkey", "status")

# Command patterns come before the bare run pattern: docopt picks the first of
# equally good matches, and [<interface> ...] would otherwise swallow "genkey".
USAGE = f"""wg_netmanager - WireGuard mesh network manager

Usage:
  wg_netmanager check [options] [-v...] [(<interface> <wg_ip> <name>)]
  wg_netmanager genkey
  wg_netmanager status [--json] [options] [-v...] [<interface>]
  wg_netmanager [options] [-v...] [(<interface> <wg_ip> <name>)]
  wg_netmanager (-h | --help)
  wg_netmanager --version

Options:
  -c NETWORK, --config NETWORK      network file [default: {DEFAULT_NETWORK_PATH}]
  -p PEER, --peer-config PEER       this node's file [default: {DEFAULT_PEER_PATH}]
  -e, --existing-wg                 use an existing WireGuard interface
  -w PORT, --wireguard-port PORT    WireGuard UDP port (default 50000 + last octet of wg_ip)
  -u PORT, --admin-port PORT        admin UDP port (default 50500 + last octet of wg_ip)
  -H, --wireguard-hopping           change the WireGuard port when the static peers stay unreachable
  -v, --verbose                     more log output (repeatable: -vv)
  -l FILE, --logfile FILE           also write the log to FILE
  --no-tui                          run headless (log lines only)
  --json                            status as JSON
  -h, --help                        show this
  --version                         show the version
"""


def _error(message: str) -> None:
    print(f"wg_netmanager: error: {message}", file=sys.stderr)


def _cli_port(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 1 <= int(text) <= 65535:
        raise ConfigError(f"command line: {option}: {text!r} is not a port; use 1..65535")
    return int(text)


def build_settings(args: dict[str, Any]) -> Settings:
    """Combine docopt's ``args``, network.yaml and peer.yaml (see module docstring)."""
    network = load_network(args["--config"])
    peer_path = args["--peer-config"]
    peer = load_peer(peer_path, required=peer_path != DEFAULT_PEER_PATH)
    if args["<interface>"] is not None:  # docopt gives all three or none
        interface = check_interface(args["<interface>"], "command line: <interface>")
        ip_where = "command line: <wg_ip>"
        wg_ip = parse_ipv4(args["<wg_ip>"], ip_where)
        name = check_name(args["<name>"], "command line: <name>")
    else:
        interface = peer.wg_interface or DEFAULT_INTERFACE
        if peer.wg_ip is None or peer.name is None:
            missing = "wgIp" if peer.wg_ip is None else "name"
            raise ConfigError(
                f"{peer_path}: {missing}: not set and no <interface> <wg_ip> <name> given; "
                f"set wgIp and name in {peer_path} or pass all three arguments"
            )
        ip_where = f"{peer_path}: wgIp"
        wg_ip, name = peer.wg_ip, peer.name
    check_wg_ip(wg_ip, network.subnet, ip_where, network.path)

    static = next((p for p in network.peers if p.wg_ip == wg_ip), None)
    wg_port = _cli_port(args["--wireguard-port"], "--wireguard-port")
    admin_port = _cli_port(args["--admin-port"], "--admin-port")
    last_octet = wg_ip.packed[-1]
    if wg_port is None:
        wg_port = static.wg_port if static else WG_PORT_BASE + last_octet
    if admin_port is None:
        admin_port = static.admin_port if static else ADMIN_PORT_BASE + last_octet
    if wg_port == admin_port:
        raise ConfigError(
            f"command line: -w/-u: WireGuard and admin port are both {wg_port}; "
            "give them different ports"
        )
    return Settings(
        network=network,
        interface=interface,
        wg_ip=wg_ip,
        name=name,
        existing_interface=args["--existing-wg"] or bool(peer.existing_interface),
        wg_port=wg_port,
        admin_port=admin_port,
        verbosity=args["--verbose"],
        logfile=args["--logfile"],
        tui=not args["--no-tui"] and sys.stdout.isatty(),
        hopping=args["--wireguard-hopping"],
    )


def describe(settings: Settings) -> list[str]:
    """The ``check`` summary; never mentions the shared key."""
    network, static = settings.network, settings.static
    role = f"static (endPoint {static.endpoint_text})" if static else "dynamic"
    lines = [
        f"network:    {network.path}, subnet {network.subnet}",
        f"node:       {settings.name} {settings.wg_ip} on {settings.interface}"
        + (" (existing interface)" if settings.existing_interface else ""),
        f"role:       {role}",
        f"ports:      WireGuard {settings.wg_port}/udp, admin {settings.admin_port}/udp",
        f"mode:       {'TUI' if settings.tui else 'headless'}, verbosity {settings.verbosity}"
        + (", port hopping" if settings.hopping else "")
        + (f", log file {settings.logfile}" if settings.logfile else ""),
        "static peers:",
    ]
    for peer in network.peers:
        me = "  (this node)" if peer.wg_ip == settings.wg_ip else ""
        lines.append(f"  {peer.wg_ip!s:15} {peer.endpoint_text}  admin {peer.admin_port}{me}")
    if static and settings.wg_port != static.wg_port:
        # Other nodes only know the port written in network.yaml.
        lines.append(
            f"note: -w {settings.wg_port} differs from the endPoint port in {network.path}"
        )
    defaults, changed = Timers(), []
    for camel, attr in timer_names().items():
        value, default = getattr(network.timers, attr), getattr(defaults, attr)
        if value != default:
            changed.append(f"{camel}={value:g} (default {default:g})")
    lines.append("timers:     " + (", ".join(changed) if changed else "defaults"))
    return lines


def _module(name: str) -> ModuleType | None:
    """Import wg_netmanager.<name> lazily; None if that module does not exist (yet)."""
    try:
        return importlib.import_module(f"wg_netmanager.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"wg_netmanager.{name}":
            raise  # a missing dependency inside it is a real bug
        return None


def _status(args: dict[str, Any]) -> int:
    if args["<interface>"] is not None:
        interface = check_interface(args["<interface>"], "command line: <interface>")
    else:
        peer_path = args["--peer-config"]
        peer = load_peer(peer_path, required=peer_path != DEFAULT_PEER_PATH)
        interface = peer.wg_interface or DEFAULT_INTERFACE
    control = _module("control")
    if control is None:
        _error("status is not available in this build (wg_netmanager.control is missing)")
        return 1
    return int(control.status_main(interface, bool(args["--json"])))


def _usage_error(exc: DocoptExit) -> str:
    message = str(exc.code or "").removesuffix(DocoptExit.usage.strip()).strip()
    if message.startswith("Warning: found unmatched"):
        # docopt lists the leftovers as reprs: Argument(None, 'x'), Option('-v', '--verbose', 0, 1)
        pattern = r"Option\((None|'[^']*'), (None|'[^']*')|Argument\(None, '([^']*)'"
        words = [
            argument or (long if long != "None" else short).strip("'")
            for short, long, argument in re.findall(pattern, message)
        ]
        return "unexpected or repeated argument(s): " + (" ".join(words) or "?")
    return message or "the arguments fit no usage line"


def main(argv: list[str] | None = None) -> int:
    try:
        args = docopt(USAGE, argv, version=__version__)
    except DocoptExit as exc:
        print(DocoptExit.usage.strip(), file=sys.stderr)
        _error(f"{_usage_error(exc)}; see --help")
        return 2
    except SystemExit as exc:  # --help or --version: docopt printed the text
        return 0 if exc.code is None else 2
    if args["<interface>"] in COMMANDS and not any(args[c] for c in COMMANDS):
        # "check wg0 10.1.1.1" fits the run line as interface=check; it never means that.
        _error(f"{args['<interface>']} takes none or all three of <interface> <wg_ip> <name>")
        return 2
    try:
        if args["genkey"]:
            print(generate_shared_key())
            return 0
        if args["status"]:
            return _status(args)
        settings = build_settings(args)
        warning = warn_if_world_readable(settings.network.path)
        if warning:
            print(warning, file=sys.stderr)
        if args["check"]:
            print("\n".join(describe(settings)))
            return 0
        daemon = _module("daemon")
        if daemon is None:
            _error("the daemon is not available in this build (wg_netmanager.daemon is missing)")
            return 1
        return int(daemon.main(settings))
    except ConfigError as exc:
        _error(str(exc))
        return 2
