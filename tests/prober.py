#!/usr/bin/env python3
"""Reachability prober, run inside each box of a testbed (one per node).

    python tests/prober.py --me 10.1.1.2 --peers 10.1.1.1,10.1.1.3 \\
        --port 7777 --interval 0.02 --duration 20 --out FILE

Binds UDP 0.0.0.0:PORT and

* answers every echo request (first byte ``E``) with a reply (first byte
  ``R``, same payload) to its sender;
* every ``--interval`` seconds sends an echo request to each peer's
  ``PEER:PORT``, from source address ``--me`` (so nothing leaves through
  the underlay before the overlay address exists: sends fail and are
  ignored, e.g. ENETUNREACH or EADDRNOTAVAIL).  With ``--dev wg0`` a request
  or reply is only sent while the main routing table's route to its
  destination goes through wg0 (read from /proc/self/net/route at most once
  per interval; policy routing is not considered), so nothing leaks out
  through a default route on the underlay before the overlay's routes exist.

A request carries the sender's wg IP, a sequence number and its
``time.monotonic()`` send time.  ``time.monotonic()`` is CLOCK_MONOTONIC,
which all network namespaces share, so times written by probers in
different boxes are directly comparable (and comparable with the
``time.monotonic()`` of a benchmark driving them).

Per peer the output records: first and last reply (receive time), sent and
received counts, the longest interval between two consecutive replies after
the first one (``max_gap``), the silence at the end (``tail_gap``), the
requests sent after the first reply that never got one (``lost_after_first``),
each silence longer than ``--gap-threshold`` (``outages``: [last reply
before, first reply after]; bounded list) and round-trip times.

Stops after ``--duration`` seconds (counted from ``--start-at`` if given) or
on SIGTERM/SIGINT, then writes JSON to ``--out`` atomically (temporary file
+ rename).  With ``--flush-interval`` it also rewrites ``--out`` that often
while running (``"final": false``), so a driver can watch progress.  Prints
``ready`` on stdout once the socket is bound.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import select
import signal
import socket
import statistics
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; Python < 3.13 lacks it
MAX_DURATION = 3600.0
MAX_START_DELAY = 600.0
MAX_OUTAGES = 200  # per peer; older ones beyond this are counted, not listed
MAX_RTT_SAMPLES = 5000  # per peer, for the RTT statistics
MAX_TRACKED = 200_000  # per peer: answered sequence numbers kept for duplicate detection
PAYLOAD = struct.Struct("!4sQd")  # sender wg IP, sequence number, monotonic send time
ECHO, REPLY = b"E", b"R"


@dataclass
class PeerStats:
    ip: str
    sent: int = 0
    send_errors: int = 0
    received: int = 0
    duplicates: int = 0
    first_reply: float | None = None
    first_reply_seq: int | None = None
    last_reply: float | None = None
    max_gap: float = 0.0
    max_gap_at: float | None = None  # the reply that ended the longest gap
    outages: list[list[float]] = field(default_factory=list)
    outages_dropped: int = 0
    rtts: list[float] = field(default_factory=list)
    replies_after_first: int = 0
    replied: set[int] = field(default_factory=set)

    def on_reply(self, seq: int, sent: float, now: float, gap_threshold: float) -> None:
        if seq in self.replied:  # WireGuard refuses replays, so this would be odd
            self.duplicates += 1
            return
        if len(self.replied) < MAX_TRACKED:
            self.replied.add(seq)
        self.received += 1
        if self.first_reply_seq is not None and seq > self.first_reply_seq:
            self.replies_after_first += 1
        if len(self.rtts) < MAX_RTT_SAMPLES:
            self.rtts.append(now - sent)
        if self.first_reply is None:
            self.first_reply = now
            self.first_reply_seq = seq
        else:
            assert self.last_reply is not None
            gap = now - self.last_reply
            if gap > self.max_gap:
                self.max_gap = gap
                self.max_gap_at = now
            if gap > gap_threshold:
                if len(self.outages) < MAX_OUTAGES:
                    self.outages.append([round(self.last_reply, 6), round(now, 6)])
                else:
                    self.outages_dropped += 1
        self.last_reply = now

    def report(self, end: float, last_seq: int) -> dict[str, Any]:
        lost = None
        if self.first_reply_seq is not None:
            # requests sent after the first answered one that got no reply
            # (those still in flight at the very end count as lost, too)
            lost = last_seq - self.first_reply_seq - self.replies_after_first
        rtts = sorted(self.rtts)
        return {
            "sent": self.sent,
            "send_errors": self.send_errors,
            "received": self.received,
            "duplicates": self.duplicates,
            "first_reply": self.first_reply,
            "last_reply": self.last_reply,
            "max_gap": round(self.max_gap, 6) if self.first_reply is not None else None,
            "max_gap_at": self.max_gap_at,
            "tail_gap": round(end - self.last_reply, 6) if self.last_reply is not None else None,
            "lost_after_first": lost,
            "outages": self.outages,
            "outages_dropped": self.outages_dropped,
            "rtt_min": rtts[0] if rtts else None,
            "rtt_median": statistics.median(rtts) if rtts else None,
            "rtt_max": rtts[-1] if rtts else None,
        }


class Prober:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.me = str(args.me)
        self.me_packed = socket.inet_aton(self.me)
        self.peers = {p: PeerStats(p) for p in args.peers}
        self.stop = False
        self.seq = 0
        self.started: float | None = None
        self.ended: float | None = None
        self.echoes = 0
        self.bad = 0
        self.not_routed = 0
        self.routes: list[tuple[int, int, int, str]] = []
        self.routes_read = -1e9
        self.pktinfo = [
            (socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=I4s4s", 0, self.me_packed, bytes(4)))
        ]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", args.port))
        self.sock.setblocking(False)

    def _routed(self, ip: str) -> bool:
        """Whether the route to ``ip`` goes through --dev (if given)."""
        if self.args.dev is None:
            return True
        now = time.monotonic()
        if now - self.routes_read >= self.args.interval:
            self.routes = read_routes()
            self.routes_read = now
        return route_dev(self.routes, ip) == str(self.args.dev)

    def _send(self, data: bytes, addr: tuple[str, int]) -> bool:
        if not self._routed(addr[0]):
            self.not_routed += 1
            return False
        try:
            # Source address --me: before the overlay address exists the send
            # fails instead of leaking out through the default route.
            self.sock.sendmsg([data], self.pktinfo, 0, addr)
        except OSError:  # ENETUNREACH, EADDRNOTAVAIL, ENOKEY, EAGAIN...: just a miss
            return False
        return True

    def _send_requests(self, now: float) -> None:
        self.seq += 1
        for peer in self.peers.values():
            data = ECHO + PAYLOAD.pack(self.me_packed, self.seq, now)
            peer.sent += 1
            if not self._send(data, (peer.ip, self.args.port)):
                peer.send_errors += 1

    def _receive(self) -> None:
        for _ in range(1000):  # bounded drain
            try:
                data, addr = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP errors reported on the socket
                continue
            now = time.monotonic()
            if len(data) != 1 + PAYLOAD.size:
                self.bad += 1
                continue
            kind, body = data[:1], data[1:]
            if kind == ECHO:
                self.echoes += 1
                self._send(REPLY + body, addr)
            elif kind == REPLY:
                sender, seq, sent = PAYLOAD.unpack(body)
                peer = self.peers.get(addr[0])
                if sender != self.me_packed or peer is None or not 0 < seq <= self.seq:
                    self.bad += 1
                    continue
                peer.on_reply(seq, sent, now, self.args.gap_threshold)
            else:
                self.bad += 1

    def _discard(self) -> None:
        for _ in range(1000):  # bounded drain
            try:
                self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue

    def report(self, final: bool) -> dict[str, Any]:
        end = self.ended if self.ended is not None else time.monotonic()
        return {
            "me": self.me,
            "port": self.args.port,
            "interval": self.args.interval,
            "gap_threshold": self.args.gap_threshold,
            "pid": os.getpid(),
            "started": self.started,
            "ended": end,
            "final": final,
            "echoes_answered": self.echoes,
            "bad_datagrams": self.bad,
            "not_routed": self.not_routed,
            "peers": {ip: p.report(end, self.seq) for ip, p in self.peers.items()},
        }

    def write(self, final: bool) -> None:
        out = self.args.out
        tmp = f"{out}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.report(final), f, indent=1)
        os.replace(tmp, out)

    def run(self) -> None:
        args = self.args
        print("ready", flush=True)
        if args.start_at is not None:
            while not self.stop:
                remaining = args.start_at - time.monotonic()
                if remaining <= 0:
                    break
                time.sleep(min(remaining, 0.05))
                self._discard()  # not answering yet; no stale requests later
        self.started = time.monotonic()
        deadline = self.started + args.duration
        next_send = self.started
        next_flush = self.started + args.flush_interval if args.flush_interval > 0 else None
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        while not self.stop:
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= next_send:
                self._send_requests(now)
                next_send += args.interval
                if next_send < now:  # fell behind: skip the missed ticks
                    next_send = now + args.interval
            if next_flush is not None and now >= next_flush:
                self.write(final=False)
                next_flush = now + args.flush_interval
            wait = min(next_send, deadline) - time.monotonic()
            if next_flush is not None:
                wait = min(wait, next_flush - time.monotonic())
            wait = max(0.0, min(wait, 0.1))
            if poller.poll(wait * 1000):
                self._receive()
        self.ended = time.monotonic()
        self._receive()
        self.write(final=True)
        self.sock.close()


def read_routes() -> list[tuple[int, int, int, str]]:
    """The main table as (destination, mask, metric, device), from
    /proc/self/net/route (addresses there are little-endian hex)."""
    routes: list[tuple[int, int, int, str]] = []
    try:
        with open("/proc/self/net/route") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return routes
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or not int(fields[3], 16) & 1:  # RTF_UP
            continue
        dest = int.from_bytes(int(fields[1], 16).to_bytes(4, "little"), "big")
        mask = int.from_bytes(int(fields[7], 16).to_bytes(4, "little"), "big")
        routes.append((dest, mask, int(fields[6]), fields[0]))
    return routes


def route_dev(routes: list[tuple[int, int, int, str]], ip: str) -> str | None:
    """The device of the longest-prefix (then lowest-metric) match for ``ip``."""
    addr = int(ipaddress.IPv4Address(ip))
    best: tuple[int, int, str] | None = None
    for dest, mask, metric, dev in routes:
        if addr & mask == dest:
            key = (mask.bit_count(), -metric, dev)
            if best is None or key[:2] > best[:2]:
                best = key
    return best[2] if best else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--me", required=True, type=ipaddress.IPv4Address, help="own wg IP")
    ap.add_argument("--peers", required=True, help="comma-separated wg IPs")
    ap.add_argument("--port", type=int, default=7777)
    ap.add_argument("--interval", type=float, default=0.02, help="seconds between requests")
    ap.add_argument("--duration", type=float, required=True, help="seconds to run")
    ap.add_argument("--out", required=True, help="JSON result file")
    ap.add_argument("--dev", default=None, help="send only while the route goes through DEV")
    ap.add_argument("--start-at", type=float, default=None, help="time.monotonic() to begin at")
    ap.add_argument(
        "--gap-threshold",
        type=float,
        default=None,
        help="silences longer than this are listed as outages (default max(0.1, 10*interval))",
    )
    ap.add_argument(
        "--flush-interval",
        type=float,
        default=0.0,
        help="also rewrite --out this often while running (0: only at the end)",
    )
    args = ap.parse_args(argv)
    try:
        peers = [str(ipaddress.IPv4Address(p.strip())) for p in args.peers.split(",") if p.strip()]
    except ValueError as exc:
        ap.error(f"--peers: {exc}")
    args.peers = [p for p in dict.fromkeys(peers) if p != str(args.me)]
    if not 0.001 <= args.interval <= 60:
        ap.error("--interval must be within [0.001, 60]")
    if not 0 < args.duration <= MAX_DURATION:
        ap.error(f"--duration must be within (0, {MAX_DURATION:g}]")
    if not 1 <= args.port <= 65535:
        ap.error("--port must be within [1, 65535]")
    if args.start_at is not None and args.start_at - time.monotonic() > MAX_START_DELAY:
        ap.error(f"--start-at is more than {MAX_START_DELAY:g} s in the future")
    if args.gap_threshold is None:
        args.gap_threshold = max(0.1, 10 * args.interval)
    if not 0 <= args.flush_interval <= 60:
        ap.error("--flush-interval must be within [0, 60]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prober = Prober(args)

    def on_signal(signum: int, frame: object) -> None:
        prober.stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with contextlib.suppress(BrokenPipeError):
        prober.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
