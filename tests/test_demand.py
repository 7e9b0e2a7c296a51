"""The lazy-link traffic sensor's pure parts: its nftables table and the
netlink answers it reads (the real kernel: tests/test_lazy_netns.py)."""

from __future__ import annotations

import errno
import struct
from ipaddress import IPv4Address

import pytest

from wg_netmanager import demand
from wg_netmanager.demand import HEADER, NFGEN, NLMSG_DONE, NLMSG_ERROR, parse, ruleset

NESTED = 0x8000  # NLA_F_NESTED: the kernel sets it on nested attributes


def attr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + bytes(-len(data) % 4)


def message(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(HEADER.size + len(payload), kind, 0, 1, 0) + payload


def elements(*addresses: str) -> bytes:
    """A GETSETELEM answer listing ``addresses`` (as the kernel nests them)."""
    listed = b"".join(
        attr(
            demand.NFTA_LIST_ELEM | NESTED,
            attr(
                demand.NFTA_SET_ELEM_KEY | NESTED,
                attr(demand.NFTA_DATA_VALUE, IPv4Address(a).packed),
            )
            + attr(6, struct.pack(">Q", 4000)),  # NFTA_SET_ELEM_EXPIRATION: skipped
        )
        for a in addresses
    )
    body = NFGEN.pack(demand.NFPROTO_INET, 0, 0)
    body += attr(demand.NFTA_SET_ELEM_LIST_TABLE, b"wgnm_demand_wg0\0")
    body += attr(demand.NFTA_SET_ELEM_LIST_ELEMENTS | NESTED, listed)
    kind = (demand.NFNL_SUBSYS_NFTABLES << 8) | 14  # NFT_MSG_NEWSETELEM
    return message(kind, body)


def test_parse_reads_every_address_until_done() -> None:
    first = elements("10.1.1.3", "10.1.1.4")
    assert parse(first) == ({IPv4Address("10.1.1.3"), IPv4Address("10.1.1.4")}, False)
    done = message(NLMSG_DONE, struct.pack("=i", 0))
    assert parse(elements("10.1.1.9") + done) == ({IPv4Address("10.1.1.9")}, True)


def test_parse_skips_what_it_does_not_know_and_stops_at_truncation() -> None:
    odd = elements("10.1.1.3").replace(IPv4Address("10.1.1.3").packed, b"\x0a\x01\x01\x03", 1)
    assert parse(odd)[0] == {IPv4Address("10.1.1.3")}
    truncated = elements("10.1.1.3", "10.1.1.4")[:-12]
    assert parse(truncated) == (set(), False)  # a header claiming more than came: nothing
    assert parse(b"\x00" * 7) == (set(), False)


def test_a_netlink_error_is_raised_with_its_errno() -> None:
    error = message(NLMSG_ERROR, struct.pack("=i", -errno.ENOENT) + bytes(16))
    with pytest.raises(OSError) as info:
        parse(error)
    assert info.value.errno == errno.ENOENT


def test_ruleset_leaves_out_the_daemons_own_datagrams() -> None:
    rules = ruleset("wg0", 50502)
    table = demand.table_name("wg0")
    assert rules.startswith(f"table inet {table} {{}}\ndelete table inet {table}\n")
    assert 'oifname "wg0" udp sport 50502 return' in rules
    assert 'iifname "wg0" udp dport 50502 return' in rules
    # the exclusion comes before the update in each chain
    assert rules.index("sport 50502") < rules.index("update @dests { ip daddr }")
    assert demand.table_name("wg0") != demand.table_name("wg_0")
