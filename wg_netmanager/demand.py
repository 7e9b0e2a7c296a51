"""Which mesh addresses this node exchanges traffic with: demand for lazy links.

No packet reaches Python. nftables keeps the answer: a table of ours
(``inet wgnm_demand_<if>_<hash>``) whose dynamic set gets the far address
of every packet that leaves or arrives through the mesh interface (sent,
received, or forwarded by this host), each entry expiring ``timeout``
seconds after its last packet. The daemons' own datagrams (from or to our
admin port: pings, tables) do not count, or the links would keep themselves
alive. The daemon reads the set's keys a few times a second over netlink
(one dump request, no process: about a tenth of a millisecond), so a pair
that starts talking gets its direct link within a second, and an idle mesh
costs nothing measurable.

The netlink part speaks just enough of nf_tables (NFT_MSG_GETSETELEM, one
dump, keys only) to list IPv4 keys; everything it does not expect it skips.
``nft monitor`` would not do: it does not report what the datapath adds.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import struct
from ipaddress import IPv4Address
from typing import Protocol

from .proc import CommandError, run

log = logging.getLogger("wg_netmanager.demand")

TIMEOUT = 5  # seconds an address stays in the set after its last packet
SET = "dests"
# netlink / nf_tables constants (linux/netlink.h, linux/netfilter/nf_tables.h)
NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETSETELEM = 13
NFPROTO_INET = 1
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_DATA_VALUE = 1
NLA_TYPE_MASK = 0x3FFF  # without the nested and byte-order flags
HEADER = struct.Struct("=IHHII")  # nlmsghdr
NFGEN = struct.Struct("=BBH")  # nfgenmsg
ATTR = struct.Struct("=HH")
MAX_DUMP = 1 << 20  # bytes of answers read for one dump (thousands of addresses)


def table_name(interface: str) -> str:
    """Our demand table for ``interface`` (nft names: letters, digits, _)."""
    safe = "".join(c if c.isalnum() else "_" for c in interface)
    return f"wgnm_demand_{safe}_{hashlib.blake2b(interface.encode(), digest_size=3).hexdigest()}"


def ruleset(interface: str, admin_port: int, timeout: int = TIMEOUT) -> str:
    """The table, anew (a crashed predecessor's goes first)."""
    table = table_name(interface)
    ours = f"udp sport {admin_port} return"  # our daemon's datagrams
    to_us = f"udp dport {admin_port} return"  # the other daemons' to ours
    sent = f"update @{SET} {{ ip daddr }}"
    received = f"update @{SET} {{ ip saddr }}"
    return (
        f"table inet {table} {{}}\n"  # so that the delete never fails
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        f"  set {SET} {{\n"
        "    type ipv4_addr\n"
        "    flags dynamic, timeout\n"
        f"    timeout {timeout}s\n"
        "  }\n"
        "  chain sent {\n"
        "    type filter hook output priority filter; policy accept;\n"
        f'    oifname "{interface}" {ours}\n'
        f'    oifname "{interface}" {sent}\n'
        "  }\n"
        "  chain received {\n"
        "    type filter hook input priority filter; policy accept;\n"
        f'    iifname "{interface}" {to_us}\n'
        f'    iifname "{interface}" {received}\n'
        "  }\n"
        "  chain forwarded {\n"
        "    type filter hook forward priority filter; policy accept;\n"
        f'    oifname "{interface}" {sent}\n'
        f'    iifname "{interface}" {received}\n'
        "  }\n"
        "}\n"
    )


def _attr(kind: int, payload: bytes) -> bytes:
    data = ATTR.pack(ATTR.size + len(payload), kind) + payload
    return data + bytes(-len(data) % 4)


def request(table: str, sequence: int = 1) -> bytes:
    """The dump request for the keys of our set."""
    body = NFGEN.pack(NFPROTO_INET, 0, 0)
    body += _attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
    body += _attr(NFTA_SET_ELEM_LIST_SET, SET.encode() + b"\0")
    kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return HEADER.pack(HEADER.size + len(body), kind, flags, sequence, 0) + body


def _attrs(data: bytes) -> list[tuple[int, bytes]]:
    out, offset = [], 0
    while offset + ATTR.size <= len(data):
        length, kind = ATTR.unpack_from(data, offset)
        if length < ATTR.size or offset + length > len(data):
            break
        out.append((kind & NLA_TYPE_MASK, data[offset + ATTR.size : offset + length]))
        offset += (length + 3) & ~3
    return out


def parse(answer: bytes) -> tuple[set[IPv4Address], bool]:
    """The IPv4 keys in a dump's answer datagrams, and whether it is done.

    Raises OSError for a netlink error (e.g. the table is gone: ENOENT).
    """
    found: set[IPv4Address] = set()
    offset = 0
    while offset + HEADER.size <= len(answer):
        length, kind, _flags, _seq, _pid = HEADER.unpack_from(answer, offset)
        if length < HEADER.size or offset + length > len(answer):
            break
        payload = answer[offset + HEADER.size : offset + length]
        offset += (length + 3) & ~3
        if kind == NLMSG_DONE:
            return found, True
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", payload)
            if code:
                raise OSError(-code, os.strerror(-code))
            continue
        for attr, value in _attrs(payload[NFGEN.size :]):
            if attr != NFTA_SET_ELEM_LIST_ELEMENTS:
                continue
            for elem_kind, elem in _attrs(value):
                if elem_kind != NFTA_LIST_ELEM:
                    continue
                for key_kind, key in _attrs(elem):
                    if key_kind != NFTA_SET_ELEM_KEY:
                        continue
                    for data_kind, data in _attrs(key):
                        if data_kind == NFTA_DATA_VALUE and len(data) == 4:
                            found.add(IPv4Address(data))
    return found, False


class DemandSource(Protocol):
    """What the daemon needs of a sensor (tests give it a fake)."""

    async def install(self) -> None: ...

    async def remove(self) -> None: ...

    def read(self) -> set[IPv4Address]: ...


class DemandSensor:
    """The nftables table and its reader for one interface (and our admin port)."""

    def __init__(self, interface: str, admin_port: int) -> None:
        self.interface = interface
        self.admin_port = admin_port
        self.table = table_name(interface)
        self._sequence = 0

    async def install(self) -> None:
        await run(["nft", "-f", "-"], stdin=ruleset(self.interface, self.admin_port).encode())

    async def remove(self) -> None:
        cleanup = f"table inet {self.table} {{}}\ndelete table inet {self.table}\n"
        await run(["nft", "-f", "-"], stdin=cleanup.encode())

    def read(self) -> set[IPv4Address]:
        """The addresses traffic went to or came from in the last ``TIMEOUT`` seconds.

        Raises ``CommandError`` (argv names the request) when the kernel
        refuses, e.g. because someone deleted our table.
        """
        self._sequence = (self._sequence + 1) & 0xFFFFFFFF
        argv = ["netlink", "getsetelem", self.table, SET]
        try:
            with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
                sock.settimeout(1.0)
                sock.send(request(self.table, self._sequence))
                found: set[IPv4Address] = set()
                received = 0
                while received < MAX_DUMP:
                    answer = sock.recv(65536)
                    received += len(answer)
                    keys, done = parse(answer)
                    found |= keys
                    if done or not answer:
                        return found
                return found
        except OSError as exc:
            code = exc.errno if exc.errno is not None else errno.EIO
            raise CommandError(argv, code, exc.strerror or str(exc)) from None
