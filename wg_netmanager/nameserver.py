"""The mesh's names in DNS: ``<name>.<domain>`` -> wg IPs, answered on our wg IP.

Two halves (the story is in docs/architecture.md, "Names"):

- :class:`Nameserver` is pure: bytes, the source and ``now`` in, the answer's
  bytes (or None: dropped, counted) out. dnspython parses and encodes; no
  DNS message is read by hand.
- :func:`serve` is the thin trio adapter: a UDP socket and a TCP listener
  bound to the wg IP, port 53, the bind retried with backoff while it fails
  (the address not there yet, the port taken), both closed on cancellation.

Rules:

1. Authoritative for the domain only, never recursive: a name outside it is
   REFUSED, an unknown name inside it NXDOMAIN, a known name (or the domain
   itself, or a name with known names below it) with a type other than A
   (or ANY) NOERROR with no answers. Names are case-insensitive.
2. Only members ask: a query from outside the mesh subnet is dropped. With
   the socket bound to the wg IP alone, that leaves the mesh interface and
   the node itself (whose queries to its own wg IP come from it).
3. Bounded work: a query longer than ``MAX_QUERY`` is dropped unparsed; each
   source has a token bucket (``RATE_BURST``, ``RATE``) taken before
   parsing; an answer that does not fit (512 bytes, or the query's EDNS
   size up to 1232) goes out truncated (TC), for the client to ask over TCP.
4. Garbage is dropped and counted by ``DnsDrop``, never answered: bytes
   that do not parse, and responses (answering those could loop). A query
   that parses but is not one we serve gets its error code (FORMERR for
   several questions, NOTIMP for another opcode, REFUSED for another class).
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import msgspec
import trio

from .core.limits import MAX_SOURCES, TokenBuckets
from .core.names import NameTable

log = logging.getLogger("wg_netmanager")

PORT = 53
TTL = 30  # seconds: a name's wg IP rarely changes, a node leaving should show soon
MAX_QUERY = 512  # bytes: a real query is under 100 (a name and an EDNS cookie)
UDP_ANSWER = 512  # bytes: without EDNS (RFC 1035)
MAX_UDP_ANSWER = 1232  # bytes: the EDNS size that never fragments (DNS flag day 2020)
RATE_BURST, RATE = 100.0, 50.0  # queries per source: a burst, then per second
NAMES_MAX_AGE = 1.0  # seconds the name table is reused while the core's token stays
TCP_MAX_CONNECTIONS = 32
TCP_MAX_QUERIES = 100  # per connection
TCP_IDLE = 10.0  # seconds a connection may wait between queries
BIND_RETRY_FIRST, BIND_RETRY_MAX = 1.0, 60.0  # seconds between attempts to bind


class DnsDrop(StrEnum):
    """Why a DNS message got no answer."""

    TOO_LONG = "too long"
    MALFORMED = "malformed"
    NOT_A_QUERY = "not a query"
    RATE_LIMITED = "rate limited"
    OUTSIDE_MESH = "outside the mesh"
    TCP_BUSY = "tcp busy"  # a connection beyond TCP_MAX_CONNECTIONS, closed at once


class NameserverStatus(msgspec.Struct, frozen=True):
    domain: str
    listening: str | None  # "10.1.1.3:53 udp+tcp" once bound
    names: int  # names known
    answers: dict[str, int]  # by response code: NOERROR, NXDOMAIN, REFUSED, ...
    drops: dict[str, int]  # by DnsDrop


class Nameserver:
    """The pure part: a query's bytes -> the answer's bytes (rules 1-4).

    ``names()`` is the table (core/names.py); ``token()`` changes whenever
    it may have, so the table is rebuilt only then (and every
    ``NAMES_MAX_AGE``).
    """

    def __init__(
        self,
        domain: str,
        subnet: IPv4Network,
        names: Callable[[], NameTable],
        token: Callable[[], object] = object,
    ) -> None:
        self.domain = domain
        self.subnet = subnet
        self._origin = dns.name.from_text(domain)
        self._names = names
        self._token = token
        self._cache: tuple[object, float, dict[tuple[bytes, ...], tuple[IPv4Address, ...]]] | None
        self._cache = None
        self._sources = TokenBuckets(RATE_BURST, RATE, MAX_SOURCES)
        self.answers: Counter[str] = Counter()
        self.drops: Counter[DnsDrop] = Counter()
        self.listening: str | None = None  # set by serve()
        self.address: tuple[str, int] | None = None  # where serve() listens

    def statistics(self, now: float) -> NameserverStatus:
        return NameserverStatus(
            domain=self.domain,
            listening=self.listening,
            names=len(self._table(now)),
            answers=dict(self.answers),
            drops={str(reason): n for reason, n in self.drops.items()},
        )

    def answer(self, data: bytes, source: str, now: float, *, tcp: bool = False) -> bytes | None:
        """The answer to ``data`` from ``source`` (an IP), or None: dropped and counted."""
        try:
            allowed = IPv4Address(source) in self.subnet
        except ValueError:
            allowed = False
        if not allowed:
            self.drops[DnsDrop.OUTSIDE_MESH] += 1
            return None
        if len(data) > MAX_QUERY:
            self.drops[DnsDrop.TOO_LONG] += 1
            return None
        if not self._sources.allow(source, now):
            self.drops[DnsDrop.RATE_LIMITED] += 1
            return None
        try:
            query = dns.message.from_wire(data)
        except Exception:  # dnspython raises many types for bad bytes; all mean garbage
            self.drops[DnsDrop.MALFORMED] += 1
            return None
        if query.flags & dns.flags.QR:
            self.drops[DnsDrop.NOT_A_QUERY] += 1
            return None
        response = dns.message.make_response(query, our_payload=MAX_UDP_ANSWER)
        response.flags &= ~dns.flags.RA  # rule 1: we recurse for nobody
        self._respond(query, response, now)
        if tcp:
            limit = 65535
        elif query.edns >= 0:
            limit = max(UDP_ANSWER, min(query.payload, MAX_UDP_ANSWER))
        else:
            limit = UDP_ANSWER
        self.answers[dns.rcode.to_text(response.rcode())] += 1
        try:
            # Unshuffled: two nodes with one name come lowest wg IP first (core/names.py).
            return response.to_wire(max_size=limit, want_shuffle=False)
        except dns.exception.TooBig:
            response.answer.clear()
            response.flags |= dns.flags.TC
            return response.to_wire(max_size=limit)

    def _respond(
        self, query: dns.message.Message, response: dns.message.Message, now: float
    ) -> None:
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return
        question = query.question[0]
        name = question.name
        if question.rdclass != dns.rdataclass.IN or not name.is_subdomain(self._origin):
            response.set_rcode(dns.rcode.REFUSED)
            return
        response.flags |= dns.flags.AA
        key = tuple(label.lower() for label in name.relativize(self._origin).labels)
        table = self._table(now)
        addresses = table.get(key)
        if addresses is None:
            # The domain itself, or a name with known names below it, exists.
            below = any(k[len(k) - len(key) :] == key for k in table) if key else True
            if not below:
                response.set_rcode(dns.rcode.NXDOMAIN)
            return
        if question.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY):
            rrset = dns.rrset.from_text_list(
                name, TTL, dns.rdataclass.IN, dns.rdatatype.A, [str(ip) for ip in addresses]
            )
            response.answer.append(rrset)

    def _table(self, now: float) -> dict[tuple[bytes, ...], tuple[IPv4Address, ...]]:
        token = self._token()
        cache = self._cache
        if cache is None or cache[0] != token or now - cache[1] >= NAMES_MAX_AGE or now < cache[1]:
            table = {
                tuple(label.encode("ascii") for label in name.split(".")): ips
                for name, ips in self._names().items()
                if name.isascii()
            }
            cache = self._cache = (token, now, table)
        return cache[2]


# --- the trio adapter -------------------------------------------------------------


async def serve(
    server: Nameserver,
    address: IPv4Address,
    port: int = PORT,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer on ``address``:``port`` (UDP and TCP) until cancelled. Started at
    once; the bind is retried with backoff (logged) while it fails."""
    task_status.started()
    backoff = BIND_RETRY_FIRST
    warned = False
    while True:
        try:
            udp, tcp = await _bind(address, port)
        except OSError as exc:
            level = logging.DEBUG if warned else logging.WARNING
            log.log(
                level,
                "DNS: cannot listen on %s:%d: %s (retrying in %.0f s)",
                address,
                port,
                exc.strerror or exc,
                backoff,
            )
            warned = True
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BIND_RETRY_MAX)
            continue
        break
    port = udp.getsockname()[1]  # port 0 (tests): the one the kernel chose
    server.listening = f"{address}:{port} udp+tcp"
    server.address = (str(address), port)
    log.info("DNS: answering *.%s on %s:%d (udp, tcp)", server.domain, address, port)
    try:
        with udp:
            listener = trio.SocketListener(tcp)
            async with listener, trio.open_nursery() as nursery:
                nursery.start_soon(_serve_udp, server, udp)
                nursery.start_soon(_serve_tcp, server, listener)
    finally:
        server.listening = server.address = None


async def _bind(address: IPv4Address, port: int) -> tuple[trio.socket.SocketType, Any]:
    udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        await udp.bind((str(address), port))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind after a restart
        await tcp.bind((str(address), udp.getsockname()[1]))
        tcp.listen(TCP_MAX_CONNECTIONS)
    except OSError:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


async def _serve_udp(server: Nameserver, sock: trio.socket.SocketType) -> None:
    while True:
        try:
            data, addr = await sock.recvfrom(MAX_QUERY + 1)
        except OSError as exc:  # e.g. ICMP port unreachable reported on Linux
            log.debug("DNS socket: %s", exc)
            continue
        reply = server.answer(data, addr[0], trio.current_time())
        if reply is not None:
            try:
                await sock.sendto(reply, addr)
            except OSError as exc:
                log.debug("DNS answer to %s:%d: %s", addr[0], addr[1], exc.strerror)


async def _serve_tcp(server: Nameserver, listener: trio.SocketListener) -> None:
    open_connections = 0

    async def connection(stream: trio.SocketStream) -> None:
        nonlocal open_connections
        open_connections += 1
        try:
            async with stream:
                if open_connections > TCP_MAX_CONNECTIONS:
                    server.drops[DnsDrop.TCP_BUSY] += 1
                    return
                peer = stream.socket.getpeername()[0]
                await _tcp_queries(server, stream, peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        finally:
            open_connections -= 1

    async with trio.open_nursery() as nursery:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # e.g. out of file descriptors: try again shortly
                log.debug("DNS accept: %s", exc)
                await trio.sleep(0.1)
                continue
            # Each connection in its own task: one slow client holds up nobody.
            nursery.start_soon(connection, stream)


async def _tcp_queries(server: Nameserver, stream: trio.SocketStream, peer: str) -> None:
    """Length-prefixed queries (RFC 1035 4.2.2) until the client closes, idles or misbehaves."""
    buffer = bytearray()
    for _ in range(TCP_MAX_QUERIES):
        with trio.move_on_after(TCP_IDLE):
            while len(buffer) < 2 or len(buffer) < 2 + int.from_bytes(buffer[:2], "big"):
                if len(buffer) >= 2 and int.from_bytes(buffer[:2], "big") > MAX_QUERY:
                    server.drops[DnsDrop.TOO_LONG] += 1
                    return
                chunk = await stream.receive_some(MAX_QUERY + 2)
                if not chunk:
                    return
                buffer += chunk
        if len(buffer) < 2 or len(buffer) < 2 + int.from_bytes(buffer[:2], "big"):
            return  # idle too long
        size = int.from_bytes(buffer[:2], "big")
        data, buffer = bytes(buffer[2 : 2 + size]), buffer[2 + size :]
        reply = server.answer(data, peer, trio.current_time(), tcp=True)
        if reply is None:
            return
        await stream.send_all(len(reply).to_bytes(2, "big") + reply)
