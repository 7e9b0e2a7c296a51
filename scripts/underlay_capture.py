"""Count a box's underlay traffic by kind, run inside a box of a testbed.

    python -m scripts.underlay_capture --dev eth0 --wg-port 50003 --admin-port 50503 \\
        [--start-at T] --duration 30 --out FILE
    python -m scripts.underlay_capture --dev eth0 --nebula-port 50003 ...   (Nebula instead)

Listens on ``--dev`` with a packet socket (both directions, as ``/proc/net/dev``
counts them: whole Ethernet frames) for ``--duration`` seconds from
``--start-at`` (a ``time.monotonic()`` time, shared by all network
namespaces; default: at once; what comes before is not counted) and writes JSON
to ``--out``: per kind, bytes and packets out and in, and the first packets
one by one (time, direction, kind, remote address, frame size). Kinds:

- ``wg init``, ``wg response``, ``wg cookie``: WireGuard handshake messages;
  ``wg keepalive`` (a data message with an empty payload, 32 bytes of UDP),
  ``wg data``: on the WireGuard port (``--wg-port``)
- ``admin N B``: datagrams on the admin port (``--admin-port``), by UDP payload size
  (the payload is sealed: its size is what tells a ping from a table)
- ``nebula handshake``, ``nebula message``, ``nebula lighthouse``, ``nebula test``, ...:
  Nebula's packets on ``--nebula-port``, by the type in their header
- ``udp``, ``icmp``, ``arp``, ``other``

Prints ``ready`` once listening. Needs root (a packet socket). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import struct
import time
from typing import Any

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
MAX_LISTED = 400  # packets listed one by one
WG_TYPES = {1: "wg init", 2: "wg response", 3: "wg cookie"}
NEBULA_TYPES = {
    0: "handshake",
    1: "message",
    2: "recv error",
    3: "lighthouse",
    4: "test",
    5: "close tunnel",
    6: "control",
}


def classify(
    frame: bytes, outgoing: bool, wg_port: int, admin_port: int, nebula_port: int = 0
) -> tuple[str, str]:
    """(kind, remote address) of one Ethernet frame."""
    ethertype = struct.unpack_from("!H", frame, 12)[0] if len(frame) >= 14 else 0
    if ethertype == 0x0806:
        return "arp", ""
    if ethertype != 0x0800 or len(frame) < 34:
        return "other", ""
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    proto = ip[9]
    src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    remote = dst if outgoing else src
    if proto == 1:
        return "icmp", remote
    if proto != 17 or len(ip) < ihl + 8:
        return "other", remote
    sport, dport = struct.unpack_from("!HH", ip, ihl)
    payload = ip[ihl + 8 :]
    local_port = sport if outgoing else dport
    remote_port = dport if outgoing else sport
    where = f"{remote}:{remote_port}"
    if local_port == nebula_port and payload:
        return f"nebula {NEBULA_TYPES.get(payload[0] & 0x0F, 'other')}", where
    if local_port == wg_port and payload:
        kind = WG_TYPES.get(payload[0])
        if kind is None:
            kind = "wg keepalive" if len(payload) == 32 else "wg data"
        return kind, where
    if local_port == admin_port:
        return f"admin {len(payload)} B", where
    return "udp", where


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dev", default="eth0")
    ap.add_argument("--wg-port", type=int, default=0)
    ap.add_argument("--admin-port", type=int, default=0)
    ap.add_argument("--nebula-port", type=int, default=0)
    ap.add_argument("--start-at", type=float, help="monotonic time the window opens")
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if not 0 < args.duration <= 3600:
        ap.error("--duration must be within (0, 3600]")
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((args.dev, 0))
    kinds: dict[str, list[int]] = {}
    listed: list[list[Any]] = []
    started = time.monotonic() if args.start_at is None else args.start_at
    if not -1 < started - time.monotonic() < 600:
        ap.error("--start-at must be within the next 600 s")
    print("ready", flush=True)
    end = started + args.duration
    while (left := end - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            continue
        frame, addr = sock.recvfrom(65535)
        if time.monotonic() < started:
            continue
        outgoing = addr[2] == PACKET_OUTGOING
        kind, remote = classify(frame, outgoing, args.wg_port, args.admin_port, args.nebula_port)
        counts = kinds.setdefault(kind, [0, 0, 0, 0])
        base = 0 if outgoing else 2
        counts[base] += len(frame)
        counts[base + 1] += 1
        if len(listed) < MAX_LISTED:
            t = round(time.monotonic() - started, 3)
            listed.append([t, "out" if outgoing else "in", kind, remote, len(frame)])
    took = max(0.0, time.monotonic() - started)
    doc = {
        "seconds": round(took, 3),
        "kinds": {
            k: {"out_bytes": c[0], "out_packets": c[1], "in_bytes": c[2], "in_packets": c[3]}
            for k, c in sorted(kinds.items())
        },
        "packets": listed,
    }
    tmp = f"{args.out}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
