"""Command line entry point: ``wg_netmanager [check|install|genkey|status] ...``.

Where each setting comes from, first match wins:

* interface, wg_ip, name: the ``<interface> <wg_ip> <name>`` arguments (all three
  or none), else ``-i``/``-a``/``-n`` (each on its own; the original tool's
  spelling), else ``wgInterface``/``wgIp``/``name`` in peer.yaml, else interface
  ``wg0``; wg_ip and name have no default.
* existing interface: ``-e``, else ``existingInterface`` in peer.yaml, else false.
* ports: ``-w``/``-u``, else this node's entry in network.yaml ``peers:`` (a
  static node; its endPoint port and adminPort), else 50000/50500 + the last
  octet of wg_ip.
* log file: ``--logfile FILE``, or ``-l`` for ``<name>.log`` in the current
  directory (the original tool's flag; ``-l FILE`` is refused with the fix).
* verbosity: ``-v``/``-vv``, else ``verbosity`` in peer.yaml, else 0.
* mobile: ``--mobile``, else ``mobile`` in peer.yaml, else false; never for
  a static node.
* static peers: network.yaml ``peers:`` plus every ``-s/--static``; with
  ``-s`` the file may have no ``peers:``.
* exit node: ``--exit-node``, else ``exitNode`` in peer.yaml, else none (the
  default route stays as it is).

network.yaml (``-c``/``--network_config``) must exist. peer.yaml
(``-p``/``--peer_config``) may be missing when it is the default path, but not
when another one is given. Every configuration problem is reported as one
``wg_netmanager: error: ...`` line on stderr with exit code 2.
"""

from __future__ import annotations

import gc
import os
import re
import socket
import sys
from ipaddress import IPv4Address, ip_address
from typing import TYPE_CHECKING, Any

from docopt import DocoptExit, docopt

from wg_netmanager import __version__, service
from wg_netmanager.api_token import FILE_NAME, TokenError, ensure_token, token_path
from wg_netmanager.backends import start_early
from wg_netmanager.config import (
    ADMIN_PORT_BASE,
    DEFAULT_API,
    WG_PORT_BASE,
    ConfigError,
    PeerConfig,
    Settings,
    check_interface,
    check_name,
    check_wg_ip,
    exit_node_of,
    generate_shared_key,
    load_network,
    load_peer,
    load_private_key,
    parse_ipv4,
    parse_static,
    warn_if_world_readable,
)
from wg_netmanager.core.timers import Timers, timer_names
from wg_netmanager.notify import to_journal
from wg_netmanager.timeline import Timeline

if TYPE_CHECKING:
    from wg_netmanager.core.clients import Client

CONFIG_DIR = "/etc/wg_netmanager"  # a pinned static keeps its key here: <interface>.key
DEFAULT_NETWORK_PATH = "/etc/wg_netmanager/network.yaml"
DEFAULT_PEER_PATH = "/etc/wg_netmanager/peer.yaml"
DEFAULT_INTERFACE = "wg0"
COMMANDS = ("check", "install", "service", "genkey", "status", "client")

# Command patterns come before the bare run pattern: docopt picks the first of
# equally good matches, and [<interface> ...] would otherwise swallow "genkey".
# No [default: ...] for -c/-p: None tells "not given" from "given as the default".
USAGE = f"""wg_netmanager - WireGuard mesh network manager

Usage:
  wg_netmanager check [options] [-v...] [(-s SPEC)...] [(<interface> <wg_ip> <name>)]
  wg_netmanager install [--init SYSTEM] [--root DIR] [options] [-v...] [(-s SPEC)...]
                        [(<interface> <wg_ip> <name>)]
  wg_netmanager service install [--init SYSTEM] [--root DIR] [options] [-v...] [(-s SPEC)...]
                                [(<interface> <wg_ip> <name>)]
  wg_netmanager genkey
  wg_netmanager status [--json] [options] [-v...] [<interface>]
  wg_netmanager client add [--ip WGIP] [--qr] [options] [-v...] <client> [<interface>]
  wg_netmanager client list [options] [-v...] [<interface>]
  wg_netmanager client remove [options] [-v...] <client> [<interface>]
  wg_netmanager [options] [-v...] [(-s SPEC)...] [(<interface> <wg_ip> <name>)]
  wg_netmanager (-h | --help)
  wg_netmanager --version

Commands:
  (none)    run the daemon (SIGINT/SIGTERM stop it; SIGHUP re-reads the files,
            or with the TUI stops it: the terminal hung up)
  check     validate the configuration, print what would run and exit (as -O)
  install   install this node as a service (systemd or OpenRC): the unit or
            init script and /etc/wg_netmanager/<interface>/; prints what it wrote
            (also as "service install")
  genkey    print a new sharedKey
  status    the running daemon's peer table (of this network namespace)
  client    on a static node: add, list or remove plain WireGuard clients (phones);
            add prints the client's wg-quick config (its private key, shown once)

Options:
  -c NETWORK, --config NETWORK      network file (default {DEFAULT_NETWORK_PATH})
  --network_config NETWORK          the same as -c
  -p PEER, --peer-config PEER       this node's file (default {DEFAULT_PEER_PATH})
  --peer_config PEER                the same as -p
  -i IF, --wireguard-interface IF   WireGuard interface, instead of <interface> (default wg0)
  -a IP, --wireguard-address IP     this node's wg IP, instead of <wg_ip>
  -n NAME, --name NAME              this node's name, instead of <name>
  -e, --existing-wg                 use an existing WireGuard interface
  -w PORT, --wireguard-port PORT    WireGuard UDP port (default 50000 + last octet of wg_ip)
  -u PORT, --admin-port PORT        admin UDP port (default 50500 + last octet of wg_ip)
  -H, --wireguard-hopping           change the WireGuard port when the static peers stay unreachable
  --mobile                          a metered roaming node: one static link, no pings, direct
                                    links only while they carry traffic
  -v, --verbose                     more log output (repeatable: -vv)
  -t, --tui                         full-screen terminal UI (the default on a terminal)
  --no-tui                          run headless (log lines only)
  -l                                also write the log to <name>.log in the current directory
  --logfile FILE                    also write the log to FILE
  -O                                print the resulting configuration and exit (as check)
  --api ADDR:PORT                   the HTTP API, metrics and web UI (default 127.0.0.1:50080;
                                    off: --api off; elsewhere than loopback it needs the token)
  -s SPEC, --static SPEC            a static peer WGIP@HOST:WGPORT[,ADMINPORT] besides the
                                    file's peers (repeatable; ADMINPORT default 50500 +
                                    last octet of WGIP)
  --exit-node WGIP                  send the default route through this exit node (a
                                    gateway of network.yaml with the route 0.0.0.0/0)
  --init SYSTEM                     install: systemd or openrc (default: the running one)
  --root DIR                        install: below DIR instead of / (packaging, tests)
  --json                            status as JSON
  --ip WGIP                         client add: the client's wg IP (default: the highest free one)
  --qr                              client add: also print the config as a QR code
  -h, --help                        show this
  --version                         show the version
"""


def _run_usage(usage: str) -> tuple[str, dict[str, bool | None], frozenset[str]]:
    """The daemon's own usage line alone (with the Options section), the
    values the full text gives what that line lacks (commands False, other
    arguments None), and the options only the other lines name."""
    head, options = usage.split("\nOptions:", 1)
    lines = [line.strip() for line in head.split("Usage:", 1)[1].split("\n\n", 1)[0].splitlines()]
    [run] = [line for line in lines if line.startswith("wg_netmanager [options]")]
    others = " ".join(line for line in lines if line != run).replace("[options]", "")
    words = set(re.findall(r"<[\w-]+>|--?[\w-]+|\b[a-z]+\b", others)) - {"wg_netmanager"}
    mine = set(re.findall(r"<[\w-]+>|--?[\w-]+", run))
    missing: dict[str, bool | None] = {}
    for word in sorted(words - mine):
        if word.startswith("<"):
            missing[word] = None
        elif not word.startswith("-"):
            missing[word] = False
    elsewhere = frozenset(w for w in words - mine if w.startswith("--"))
    return f"Usage:\n  {run}\n\nOptions:{options}", missing, elsewhere


RUN_USAGE, _RUN_MISSING, _ELSEWHERE = _run_usage(USAGE)


def parse_argv(argv: list[str]) -> dict[str, Any]:
    """``docopt(USAGE, argv)``, faster for the daemon's own command line.

    docopt's cost grows with the square of the usage text: the full text
    takes 15 ms of CPU at every start, the daemon's line alone 3 ms. So
    that line is tried first; help, the version, an error and whatever that
    line alone would accept but the full text does not (an option of
    another command) go to the full text, which answers as ever.
    """
    if not any(word in COMMANDS for word in argv):
        try:
            args = docopt(RUN_USAGE, argv, default_help=False)
        except DocoptExit:
            pass
        else:
            # Help and the version are named on lines of their own: in _ELSEWHERE.
            if not any(args[o] for o in _ELSEWHERE):
                return {**args, **_RUN_MISSING}
    return docopt(USAGE, argv, version=__version__)


def _error(message: str) -> None:
    priority = "<3>" if to_journal(sys.stderr) else ""  # journald: an error, not info
    print(f"{priority}wg_netmanager: error: {message}", file=sys.stderr)


def _cli_port(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 1 <= int(text) <= 65535:
        raise ConfigError(f"command line: {option}: {text!r} is not a port; use 1..65535")
    return int(text)


def parse_api(text: str | None) -> tuple[str, int] | None:
    """``--api``: ``ADDR:PORT`` (IPv4, or IPv6 in brackets), ``off``, or (None) the default."""
    if text is None:
        return DEFAULT_API
    if text == "off":
        return None
    host, sep, port = text.rpartition(":")
    fix = "give ADDR:PORT such as 127.0.0.1:50080 or the wg IP, or off"
    try:
        address = ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except ValueError:
        raise ConfigError(f"command line: --api {text!r}: no IP address; {fix}") from None
    if not sep or not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        raise ConfigError(f"command line: --api {text!r}: no port; {fix}")
    return str(address), int(port)


def _file_option(args: dict[str, Any], short: str, long: str, default: str) -> str:
    """``-c``/``--network_config`` (or ``-p``/``--peer_config``): one file, however spelt."""
    given = {args[short], args[long]} - {None}
    if len(given) > 1:
        raise ConfigError(f"command line: {short} and {long} name different files; give one")
    return given.pop() if given else default


def network_path(args: dict[str, Any]) -> str:
    return _file_option(args, "--config", "--network_config", DEFAULT_NETWORK_PATH)


def peer_path(args: dict[str, Any]) -> str:
    return _file_option(args, "--peer-config", "--peer_config", DEFAULT_PEER_PATH)


def _identity(
    args: dict[str, Any], peer: PeerConfig, peer_file: str
) -> tuple[str, IPv4Address, str, str]:
    """interface, wg_ip, name and where wg_ip came from (for error messages)."""
    options = (args["--wireguard-interface"], args["--wireguard-address"], args["--name"])
    if args["<interface>"] is not None:  # docopt gives all three or none
        if any(v is not None for v in options):
            raise ConfigError(
                "command line: <interface> <wg_ip> <name> and -i/-a/-n say the same; give one form"
            )
        interface = check_interface(args["<interface>"], "command line: <interface>")
        ip_where = "command line: <wg_ip>"
        wg_ip = parse_ipv4(args["<wg_ip>"], ip_where)
        name = check_name(args["<name>"], "command line: <name>")
        return interface, wg_ip, name, ip_where
    interface_opt, ip_opt, name_opt = options
    if interface_opt is not None:
        interface = check_interface(interface_opt, "command line: -i/--wireguard-interface")
    else:
        interface = peer.wg_interface or DEFAULT_INTERFACE
    if ip_opt is not None:
        ip_where = "command line: -a/--wireguard-address"
        ip: IPv4Address | None = parse_ipv4(ip_opt, ip_where)
    else:
        ip_where, ip = f"{peer_file}: wgIp", peer.wg_ip
    node_name = peer.name if name_opt is None else check_name(name_opt, "command line: -n/--name")
    if ip is None or node_name is None:
        missing, option = ("wgIp", "-a") if ip is None else ("name", "-n")
        raise ConfigError(
            f"{peer_file}: {missing}: not set and not on the command line; "
            f"set {missing} in {peer_file}, or give {option} (or <interface> <wg_ip> <name>)"
        )
    return interface, ip, node_name, ip_where


def build_settings(args: dict[str, Any]) -> Settings:
    """Combine docopt's ``args``, network.yaml and peer.yaml (see module docstring)."""
    statics = tuple(parse_static(spec) for spec in args["--static"])
    network = load_network(network_path(args), statics)
    peer_file = peer_path(args)
    peer = load_peer(peer_file, required=peer_file != DEFAULT_PEER_PATH)
    interface, wg_ip, name, ip_where = _identity(args, peer, peer_file)
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
    if args["-l"] and args["--logfile"] is not None:
        raise ConfigError(
            "command line: -l and --logfile: -l means --logfile <name>.log; give one of them"
        )
    logfile = f"{name}.log" if args["-l"] else args["--logfile"]
    if args["--tui"] and args["--no-tui"]:
        raise ConfigError("command line: -t and --no-tui contradict each other; give one")
    terminal = sys.stdout.isatty()
    # A service runs headless anyway.
    if args["--tui"] and not terminal and not args["install"]:
        raise ConfigError(
            "command line: -t: standard output is not a terminal, so there is no screen "
            "for the TUI; run it in a terminal, or leave out -t to run headless"
        )
    if args["--exit-node"] is not None:
        where = "command line: --exit-node"
        chosen: IPv4Address | None = parse_ipv4(args["--exit-node"].strip(), where)
    else:
        where, chosen = f"{peer_file}: exitNode", peer.exit_node
    exit_node = exit_node_of(network, wg_ip, chosen, where)
    mobile = args["--mobile"] or bool(peer.mobile)
    if mobile and static is not None:
        where, fix = "command line: --mobile", "leave out --mobile"
        if not args["--mobile"]:
            where, fix = f"{peer_file}: mobile", "remove it or set it to false"
        raise ConfigError(
            f"{where}: {wg_ip} is a static peer in {network.path}; a static node cannot "
            f"be mobile; {fix}"
        )
    private_key = None
    if static is not None and static.public_key is not None:
        key_path = peer.private_key_file or os.path.join(CONFIG_DIR, f"{interface}.key")
        where = f"{network.path}: peers[{network.peers.index(static)}].publicKey"
        private_key = load_private_key(key_path, static.public_key, where)
    clients: tuple[Client, ...] = ()
    if static is not None:
        # Here, not at the top: the wire format it loads would delay every
        # node's start (the admin socket is bound before the daemon's imports).
        from wg_netmanager import client_config

        clients = client_config.load(client_config.state_path(network.path, wg_ip), network.subnet)
    return Settings(
        network=network,
        interface=interface,
        wg_ip=wg_ip,
        name=name,
        existing_interface=args["--existing-wg"] or bool(peer.existing_interface),
        wg_port=wg_port,
        admin_port=admin_port,
        verbosity=args["--verbose"] or peer.verbosity or 0,
        logfile=logfile,
        tui=not args["--no-tui"] and terminal,
        hopping=args["--wireguard-hopping"],
        private_key=private_key,
        exit_node=exit_node,
        api=parse_api(args["--api"]),
        mobile=mobile,
        clients=clients,
    )


def describe(settings: Settings) -> list[str]:
    """The ``check`` summary; never mentions the shared key."""
    network, static = settings.network, settings.static
    role = f"static (endPoint {static.endpoint_text})" if static else "dynamic"
    if settings.mobile:
        role = "dynamic, mobile (one static link, no pings, lazy links)"
    lines = [
        f"network:    {network.path}, subnet {network.subnet}",
        f"node:       {settings.name} {settings.wg_ip} on {settings.interface}"
        + (" (existing interface)" if settings.existing_interface else ""),
        f"role:       {role}",
        f"ports:      WireGuard {settings.wg_port}/udp, admin {settings.admin_port}/udp",
        f"mode:       {'TUI' if settings.tui else 'headless'}, verbosity {settings.verbosity}"
        + (", port hopping" if settings.hopping else "")
        + (f", log file {settings.logfile}" if settings.logfile else ""),
        "api:        "
        + (
            "off"
            if settings.api is None
            else f"http://{_host_port(settings.api)}/ (token {token_path(network.path)})"
        ),
        "dns:        "
        + (
            f"*.{network.dns_domain} on {settings.wg_ip}:53 (udp, tcp)"
            if network.dns_enabled
            else f"off (network.dns.enabled: false; domain {network.dns_domain})"
        ),
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
    if network.gateways:
        lines.append("gateways:")
    for gateway in network.gateways:
        routes = ", ".join(str(r) for r in gateway.routes)
        notes = "" if gateway.masquerade else "  (no masquerade)"
        if gateway.wg_ip == settings.wg_ip:
            notes += "  (this node)"
        lines.append(f"  {gateway.wg_ip!s:15} {routes}{notes}")
    if settings.exit_node is not None:
        lines.append(f"exit node:  {settings.exit_node} (the default route goes through it)")
    return lines


def service_options(args: dict[str, Any], settings: Settings) -> tuple[list[str], list[str]]:
    """The options a service adds to its fixed ``-c``, ``-p`` and ``-i`` (its
    ``OPTIONS``), and notes on what it leaves out.

    Identity, ``-e`` and ``-v`` go into the instance's peer.yaml instead (a
    reload can change the verbosity there). A service logs to the journal or
    its log file, runs headless, and reaches the files it was given as copies.
    """
    words = []
    if args["--wireguard-port"] is not None:
        words += ["-w", str(settings.wg_port)]
    if args["--admin-port"] is not None:
        words += ["-u", str(settings.admin_port)]
    if settings.hopping:
        words.append("-H")
    if args["--api"] is not None:
        words += ["--api", "off" if settings.api is None else _host_port(settings.api)]
    for spec in args["--static"]:
        peer = parse_static(spec)
        words += ["-s", f"{peer.wg_ip}@{peer.endpoint_text},{peer.admin_port}"]
    notes = []
    if settings.logfile:
        notes.append(
            f"left out: the log file {settings.logfile} (a service logs to the journal, "
            "or with OpenRC to /var/log/wg_netmanager.<interface>.log)"
        )
    return words, notes


def _host_port(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _install(args: dict[str, Any], settings: Settings) -> int:
    init = args["--init"]
    root = args["--root"] or "/"
    if init is None:
        init = service.detect_init(root)
        if init is None:
            raise ConfigError(
                "install: cannot tell which init system runs here; "
                "give --init systemd or --init openrc"
            )
    elif init not in service.INIT_SYSTEMS:
        raise ConfigError(f"install: --init {init!r}: give --init systemd or --init openrc")
    options, notes = service_options(args, settings)
    with open(settings.network.path, encoding="utf-8-sig") as file:  # read once already
        network_text = file.read()
    files = service.plan(settings, init, options, network_text, service.executable())
    try:
        report = service.install(files, root)
    except OSError as exc:
        raise ConfigError(
            f"install: {exc.filename}: {exc.strerror}; run as root (or give --root DIR)"
        ) from None
    if settings.api is not None:
        # The service's /etc is read-only: its API token is made now.
        report.append(_install_token(root, settings.interface))
    for state, path in report:
        print(f"{state:9} {path}")
    for note in notes:
        print(f"note: {note}")
    if service.under_home(service.executable()) and init == service.SYSTEMD:
        print(
            "note: wg_netmanager is installed under a home directory, so the unit "
            "reads homes (ProtectHome=read-only); install it system-wide to hide them"
        )
    for step in service.next_steps(init, settings.interface):
        print(f"next: {step}")
    return 0


def _install_token(root: str, interface: str) -> tuple[str, str]:
    """The API token next to the installed network.yaml, made unless it exists."""
    conf = f"{service.CONFIG_DIR}/{interface}".lstrip("/")
    path = os.path.join(root, conf, FILE_NAME)
    try:
        _, made = ensure_token(path)
    except (OSError, TokenError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"install: {path}: {reason}") from None
    return ("written" if made else "unchanged", path)


def _client(args: dict[str, Any]) -> int:
    op = "add" if args["add"] else "remove" if args["remove"] else "list"
    name = args["<client>"]
    if name is not None:
        check_name(name, "command line: <client>")
    wg_ip = args["--ip"]
    if wg_ip is not None:
        parse_ipv4(wg_ip, "command line: --ip")
    from wg_netmanager.client_config import client_main

    return client_main(_interface_of(args), op, name, wg_ip, bool(args["--qr"]))


def _interface_of(args: dict[str, Any]) -> str:
    """``<interface>``, else ``-i``, else peer.yaml's, else wg0 (``status``, ``client``)."""
    if args["<interface>"] is not None and args["--wireguard-interface"] is not None:
        raise ConfigError("command line: <interface> and -i say the same; give one")
    if args["<interface>"] is not None:
        interface = check_interface(args["<interface>"], "command line: <interface>")
    elif args["--wireguard-interface"] is not None:
        where = "command line: -i/--wireguard-interface"
        interface = check_interface(args["--wireguard-interface"], where)
    else:
        peer_file = peer_path(args)
        peer = load_peer(peer_file, required=peer_file != DEFAULT_PEER_PATH)
        interface = peer.wg_interface or DEFAULT_INTERFACE
    return interface


def _status(args: dict[str, Any]) -> int:
    interface = _interface_of(args)
    # Imported here, as the daemon below: trio costs check and genkey a tenth of a second.
    from wg_netmanager import control

    return control.status_main(interface, bool(args["--json"]))


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


def _logfile_form(argv: list[str]) -> str | None:
    """If ``argv`` failed only because it gives ``-l`` a file (``-l FILE``,
    ``-lFILE``), the one-line fix; else None."""
    for index, word in enumerate(argv):
        if word == "--":
            break
        if word == "-l" and index + 1 < len(argv) and not argv[index + 1].startswith("-"):
            file, rest = argv[index + 1], argv[:index] + argv[index + 2 :]
        elif word.startswith("-l") and len(word) > 2:
            file, rest = word[2:], argv[:index] + argv[index + 1 :]
        else:
            continue
        try:
            docopt(USAGE, [*rest, "--logfile", file], version=__version__)
        except (DocoptExit, SystemExit):
            return None
        return (
            f"-l takes no file name: it logs to <name>.log in the current directory "
            f"(as the original tool's -l); to log to {file}, write --logfile {file}"
        )
    return None


def imports_done() -> None:
    """The start-up imports are done: what they made is frozen out of the
    garbage collector's passes, and the collector, off during the imports
    (``__main__``), is on again. Where it was on (the command line called as
    a function), nothing changes."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    timeline = Timeline()
    timeline.mark("command line module imported")
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_argv(argv)
    except DocoptExit as exc:
        fix = _logfile_form(argv)
        if fix is None:
            print(DocoptExit.usage.strip(), file=sys.stderr)
            fix = f"{_usage_error(exc)}; see --help"
        _error(fix)
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
        if args["client"]:
            return _client(args)
        settings = build_settings(args)
        timeline.mark("config read")
        warning = warn_if_world_readable(settings.network.path)
        if warning:
            print(warning, file=sys.stderr)
        if args["install"]:
            _print_warnings(settings)
            return _install(args, settings)
        if args["check"] or args["-O"]:
            _print_warnings(settings)
            print("\n".join(describe(settings)))
            return 0
        # Bound before the daemon's imports (most of its start-up): hellos that
        # arrive meanwhile wait in the socket's buffer instead of being refused
        # and resent after a backoff. If it fails, the daemon says why.
        admin_socket = _bind_admin_port(settings.admin_port)
        if admin_socket is not None:
            timeline.mark("admin socket bound")
        # The interface is made while the daemon imports (its first backend's
        # command: wireguard-go takes 20-40 ms on a busy box); the daemon takes
        # the command over, or if it never gets that far, what it made goes.
        early = None if settings.existing_interface else start_early(settings.interface)
        try:
            from wg_netmanager import daemon  # logs the configuration's warnings itself

            timeline.mark("daemon imported")
            imports_done()
            # A reload (SIGHUP) reads the same command line with the files as they are then.
            return daemon.main(
                settings,
                load_settings=lambda: build_settings(args),
                timeline=timeline,
                admin_socket=admin_socket,
                early_device=early,
            )
        finally:
            if early is not None and not early.taken:
                early.abandon()
    except ConfigError as exc:
        _error(str(exc))
        return 2


def _bind_admin_port(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("0.0.0.0", port))
    except OSError:
        sock.close()
        return None
    return sock


def _print_warnings(settings: Settings) -> None:
    for line in settings.network.warnings:
        print(f"warning: {line}", file=sys.stderr)
