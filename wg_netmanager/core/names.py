"""The names this node knows: name -> wg IPs, for the mesh's DNS (nameserver.py).

Pure. Rules (the story is in docs/architecture.md, "Names"):

1. A name is known from ourselves, our plain WireGuard clients, our sessions
   (the node announced it over its own handshake) and the tables of the
   statics we have sessions with (nodes and other statics' clients). One
   wg IP has one name: ours first, then our client's, then the session's,
   then a table's (the statics agree; the freshest entry wins).
2. Names are case-insensitive: the table's keys are lower case.
3. One name, one address. Names are unique in the mesh (a claim of a used
   name is refused: handshake.py rule 4), so two wg IPs with one name are
   a race (two statics each took one while apart): the more trusted holder's
   address is answered, the lowest of equally trusted ones; the conflict is
   in the log.
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
    by_name: dict[str, IPv4Address] = {}
    for holder in holders:
        level: dict[str, IPv4Address] = {}
        for wg_ip, name in holder.items():
            if wg_ip in by_ip:
                continue  # named by a more trusted holder
            by_ip[wg_ip] = name
            key = name.lower()
            if not key or "" in key.split(".") or key in by_name:
                continue
            if key not in level or wg_ip < level[key]:
                level[key] = wg_ip
        by_name.update(level)
    return {name: (wg_ip,) for name, wg_ip in by_name.items()}
