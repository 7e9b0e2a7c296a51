"""Status documents as the TUI and ``wg_netmanager status`` read them.

:func:`sample_doc` is one node's document built by hand from the core's
``NodeStatus``/``PeerStatus`` (a static peer, one through a gateway, one on
the LAN); :func:`table` reads the peer table back from rendered lines.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from wg_netmanager import status_text
from wg_netmanager.core.status import NodeStatus, PeerStatus, SubnetStatus

ALICE_KEY = "QUxJQ0VrZXlBTElDRWtleUFMSUNFa2V5QUxJQ0VrZXk="
BOB_KEY = "Qk9Ca2V5Qk9Ca2V5Qk9Ca2V5Qk9Ca2V5Qk9Ca2V5MA="
CHARLIE_KEY = "Q0hBUkxJRWtleUNIQVJMSUVrZXlDSEFSTElFa2V5MDA="
DAVE_KEY = "REFWRWtleURBVkVrZXlEQVZFa2V5REFWRWtleURBVk0="


def make(cls: type[Any], **values: Any) -> Any:
    """A core status record from ``values``; fields added later default to None."""
    return cls(**{name: values.get(name) for name in cls.__struct_fields__})


def peer(ip: str, name: str, path: str, kind: str, **more: Any) -> PeerStatus:
    values: dict[str, Any] = {
        "wg_ip": IPv4Address(ip),
        "name": name,
        "public_key": more.pop("public_key", name.upper() * 4 + "="),
        "path": path,
        "kind": kind,
        "reason": "",
        "rx_bytes": 0,
        "tx_bytes": 0,
        "is_static": False,
    }
    values.update(more)
    result: PeerStatus = make(PeerStatus, **values)
    return result


def sample_subnets() -> tuple[SubnetStatus, ...]:
    """The lamp's LAN behind charlie (down) and dave (used), and an exit node not used."""
    charlie, dave, alice = (IPv4Address(f"10.1.1.{n}") for n in (3, 4, 1))
    return (
        SubnetStatus(
            IPv4Network("192.168.1.0/24"), (charlie, dave), ("charlie", "dave"), (dave,), dave,
            "routed",
        ),
        SubnetStatus(IPv4Network("0.0.0.0/0"), (alice,), ("alice",), (alice,), None, "unused"),
    )  # fmt: skip


def sample_status(
    peers: tuple[PeerStatus, ...] | None = None, subnets: tuple[SubnetStatus, ...] = ()
) -> NodeStatus:
    if peers is None:
        peers = (
            peer(
                "10.1.1.1", "alice", "direct", "static", public_key=ALICE_KEY,
                endpoint=("198.51.100.1", 50001), rtt=0.0012, handshake_age=5.0,
                rx_bytes=12345, tx_bytes=2345, session_age=83.0, is_static=True,
            ),
            peer(
                "10.1.1.3", "charlie", "via", "gateway", public_key=CHARLIE_KEY,
                reason="no direct session yet", gateway=IPv4Address("10.1.1.1"),
                gateway_name="alice", endpoint=("198.51.100.3", 20000),
                local_endpoints=(("192.168.1.3", 50503),),
            ),
            peer(
                "10.1.1.4", "dave", "direct", "lan", public_key=DAVE_KEY,
                reason="direct (lan) since the handshake", endpoint=("192.168.1.4", 50004),
                rtt=0.0304, handshake_age=12.0, rx_bytes=2048, tx_bytes=4096, session_age=40.0,
            ),
        )  # fmt: skip
    status: NodeStatus = make(
        NodeStatus,
        name="bob",
        wg_ip=IPv4Address("10.1.1.2"),
        public_key=BOB_KEY,
        wg_port=50002,
        admin_port=50502,
        is_static=False,
        visible_endpoint=("198.51.100.2", 50002),
        peers=peers,
        statics_connected=1,
        statics_total=1,
        drops={"bad seal": 2},
        table_version=0,
        subnets=subnets,
    )
    return status


def sample_doc(**kw: Any) -> dict[str, Any]:
    return status_text.status_document(
        sample_status(**kw),
        interface="wg0",
        backend="wireguard-go",
        uptime=3723.0,
    )


def table(lines: list[str]) -> dict[str, dict[str, str]]:
    """The peer table as {name: {column header: cell}}, split where 2+ spaces are."""
    head = next(i for i, line in enumerate(lines) if line.split()[:1] == ["NAME"])
    headers = re.split(r"\s{2,}", lines[head].strip())
    rows: dict[str, dict[str, str]] = {}
    for line in lines[head + 1 :]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != len(headers):
            break
        rows[cells[0]] = dict(zip(headers, cells, strict=True))
    return rows
