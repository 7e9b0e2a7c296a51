"""The names this node knows: name -> wg IPs, for the mesh's DNS (nameserver.py).

Pure. Rules (the story is in docs/architecture.md, "Names"):

1. A name is known from ourselves, our plain WireGuard clients, our sessions
   (the node announced it over its own handshake) and the tables of the
   statics we have sessions with (nodes and other statics' clients). One
   wg IP has one name: ours first, then our client's, then the session's,
   then a table's (the statics agree; the freshest entry wins).
2. Names are case-insensitive: the table's keys are lower case.
3. Two wg IPs with the same name: both addresses are answered, lowest first,
   so the duplicate shows instead of one node silently shadowing the other.
4. A name that cannot be a DNS name (an empty label, from a name such as
   ``a..b``) is left out: nobody could ask for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address

NameTable = Mapping[str, tuple[IPv4Address, ...]]


def name_table(holders: Iterable[Mapping[IPv4Address, str]]) -> dict[str, tuple[IPv4Address, ...]]:
    """Rules 1-4: ``holders`` are wg IP -> name maps, the most trusted first."""
    by_ip: dict[IPv4Address, str] = {}
    for holder in holders:
        for wg_ip, name in holder.items():
            by_ip.setdefault(wg_ip, name)
    by_name: dict[str, list[IPv4Address]] = {}
    for wg_ip, name in by_ip.items():
        key = name.lower()
        if not key or "" in key.split("."):
            continue
        by_name.setdefault(key, []).append(wg_ip)
    return {name: tuple(sorted(ips)) for name, ips in by_name.items()}
