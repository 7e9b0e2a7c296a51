"""The HTTP API, the Prometheus metrics and the web UI, inside the daemon's nursery.

hypercorn's trio worker serves a small ASGI application (``Api``): the HTTP
protocol (h11/h2, header limits, idle timeouts) is a well-kept library's job;
ours is a dozen routes with strict limits, so no framework (and no anyio)
sits between. The daemon imports this module only once it is set up (it
costs about 0.2 s of imports); ``prometheus_client`` only at the first scrape.

Rules (the story is in docs/architecture.md, "HTTP API and web UI"):

1. *Access.* Listening on loopback, reads are open; anywhere else every
   request under ``/api/`` and ``/metrics`` needs the token. Every write
   needs it, always. The token comes as ``Authorization: Bearer <token>``
   or as the HttpOnly, SameSite=Strict cookie the UI gets from
   ``POST /api/v1/login``. No credential: 401; a wrong one: 403.
2. *Browsers.* On loopback the Host header must name a loopback address
   (a DNS-rebinding page cannot read the API); a write whose Origin is not
   the API's own is refused (403). Static files are a fixed list: no path
   reaches the file system.
3. *Bounds.* Request bodies: ``MAX_BODY`` bytes within ``BODY_TIMEOUT``
   (413, 408); headers: hypercorn's limit (``MAX_HEADERS``) and idle timeout;
   at most ``MAX_STREAMS`` event streams.
4. *One picture.* ``/api/v1/status`` is the status document of ``status
   --json`` (``DaemonStatus``); peers, metrics and the UI are made from it,
   the map from ``Node.mesh_picture`` (``mesh_text``).
5. *Clients* (plain WireGuard clients, on a static only): the requests of
   ``wg_netmanager client`` (``DaemonStatus.command``). ``POST
   /api/v1/clients`` makes the client's key pair here, registers its public
   key, writes the state file (as the command does) and answers the wg-quick
   config with the private key once, with its QR code; the private key is
   kept, logged and written nowhere (the answer is ``no-store``).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import math
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from functools import partial
from importlib import resources
from ipaddress import IPv4Address
from typing import Any, Protocol, cast
from urllib.parse import parse_qsl, unquote

import msgspec
import trio

from . import __version__, api_token, client_config, event_text
from .core import events as ev
from .keys import KeyPair, to_b64
from .status_text import Doc

log = logging.getLogger("wg_netmanager.api")

MAX_BODY = 16 * 1024  # bytes of a request body
BODY_TIMEOUT = 5.0  # seconds to send it
MAX_HEADERS = 8 * 1024  # bytes of a request's headers (hypercorn's limit)
IDLE_TIMEOUT = 5.0  # seconds a connection may stay open between requests
MAX_STREAMS = 32  # event streams at once
STREAM_QUEUE = 256  # messages queued for a slow stream before it is closed
KEEPALIVE = 15.0  # seconds between comments on a quiet event stream
LOG_BACKLOG = 200  # log lines a new stream starts with
TICK = 2.0  # seconds between status updates on the streams (ages, counters)
LOOK = 0.1  # seconds between looks for changes (paths, the map) while streams are open
COOKIE = "wgnm_token"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ApiSource(Protocol):
    """The running daemon as the API sees it (``daemon.DaemonStatus``)."""

    def snapshot(self) -> Doc:
        """The status document (as ``status --json``)."""
        ...

    def token(self) -> object:
        """Changes whenever the snapshot may have changed beyond ages and counters."""
        ...

    def mesh(self) -> Doc:
        """The mesh map document; someone looks: it is kept fresh for a while."""
        ...

    def mesh_token(self) -> object: ...

    def routes(self) -> Doc:
        """The kernel routes and WireGuard peers the daemon keeps."""
        ...

    def counters(self) -> Mapping[str, int]:
        """Path switches, conflicts, ... since start (``daemon.Daemon.counters``)."""
        ...

    def reprobe(self, wg_ip: IPv4Address) -> str | None:
        """A failed direct path to a dynamic peer is tried again now; the pair's
        state ("retrying", or as it was: "direct", "probing", ...), None: no such pair."""
        ...

    def request_reload(self) -> None: ...

    def set_log_level(self, level: int) -> None: ...

    def add_listener(self, listener: Callable[[ev.Event], None]) -> Callable[[], None]:
        """Call ``listener`` with every core event; returns its removal."""
        ...

    def command(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """A client request, as over the control socket (``client-add`` ...);
        a refusal is ``{"error": line, "status": HTTP code}``."""
        ...


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


class Response(msgspec.Struct):
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = msgspec.field(default_factory=list)


def json_response(doc: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(doc, separators=(",", ":")).encode())


class Request(msgspec.Struct):
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; a repeated header keeps its first value
    header_bytes: int

    @classmethod
    def from_scope(cls, scope: Scope) -> Request:
        headers: dict[str, str] = {}
        size = 0
        for raw_name, raw_value in scope.get("headers", []):
            name = raw_name.decode("latin-1").lower()
            headers.setdefault(name, raw_value.decode("latin-1"))
            size += len(raw_name) + len(raw_value) + 4
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        return cls(scope["method"], scope["path"], query, headers, size)

    def credential(self) -> str | None:
        auth = self.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        for part in self.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and value:
                return value
        return None


# Static files of the UI: the whole list (no path ever reaches the file system).
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
SECURITY_HEADERS = [
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
]


class Feed:
    """What the event streams carry: status and map on change, core events, log lines."""

    def __init__(self, source: ApiSource) -> None:
        self._source = source
        self._streams: set[trio.MemorySendChannel[bytes]] = set()
        self._log: deque[bytes] = deque(maxlen=LOG_BACKLOG)
        self._wake = trio.Event()
        self._status: bytes | None = None
        self._mesh: bytes | None = None
        self._tokens: tuple[object, object] | None = None

    def open_stream(self) -> trio.MemoryReceiveChannel[bytes]:
        """A new stream: the current status and map, the recent log lines, then what comes."""
        if len(self._streams) >= MAX_STREAMS:
            raise HttpError(503, f"at most {MAX_STREAMS} event streams")
        send, receive = trio.open_memory_channel[bytes](STREAM_QUEUE)
        self._wake.set()  # run() waits for a first stream
        self._tokens = None  # fresh documents (the other streams get them too)
        self._refresh()
        for chunk in (self._status, self._mesh, *self._log):
            if chunk is not None:
                send.send_nowait(chunk)
        self._streams.add(send)
        return receive

    def on_event(self, event: ev.Event) -> None:
        doc = {
            "time": time.time(),  # wall clock, as the log lines' times
            "type": type(event).__name__,
            "level": logging.getLevelName(event_text.level(event)),
            "text": event_text.describe(event),
        }
        self._publish(_sse("event", doc))
        self._wake.set()

    def on_log(self, record: logging.LogRecord, text: str) -> None:
        doc = {"time": record.created, "level": record.levelname, "text": text}
        chunk = _sse("log", doc)
        self._log.append(chunk)
        self._publish(chunk)

    def _publish(self, chunk: bytes) -> None:
        for stream in list(self._streams):
            try:
                stream.send_nowait(chunk)
            except trio.WouldBlock:  # a reader that cannot keep up starts afresh
                stream.close()
                self._streams.discard(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._streams.discard(stream)

    def _refresh(self) -> None:
        """New documents if the tokens moved (or were reset); each sent if it changed."""
        source = self._source
        tokens = (source.token(), source.mesh_token())
        if tokens == self._tokens:
            return
        self._tokens = tokens
        status = _sse("status", source.snapshot())
        if status != self._status:
            self._status = status
            self._publish(status)
        mesh = _sse("mesh", source.mesh())
        if mesh != self._mesh:
            self._mesh = mesh
            self._publish(mesh)

    async def run(self) -> None:
        """While streams are open: look for changes every LOOK (at once after
        an event), send the status every TICK (ages, counters)."""
        next_tick = trio.current_time()
        while True:
            if not self._streams:
                await self._wake.wait()
            with trio.move_on_after(LOOK):
                await self._wake.wait()
            self._wake = trio.Event()
            if not self._streams:
                continue
            now = trio.current_time()
            if now >= next_tick:
                next_tick = now + TICK
                self._tokens = None  # the status anew: ages and counters moved
            self._refresh()
            self._streams = {s for s in self._streams if not _closed(s)}


def _closed(stream: trio.MemorySendChannel[bytes]) -> bool:
    return stream.statistics().open_receive_channels == 0


def _sse(kind: str, doc: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(doc, separators=(',', ':'))}\n\n".encode()


class FeedLogHandler(logging.Handler):
    """Log lines to the event streams."""

    def __init__(self, feed: Feed) -> None:
        super().__init__()
        self._feed = feed

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._feed.on_log(record, record.getMessage())
        except Exception:  # a log line must never break the caller
            self.handleError(record)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


class Api:
    """The ASGI application (rules: the module docstring)."""

    def __init__(self, source: ApiSource, *, loopback: bool, token: str | None) -> None:
        self.source = source
        self.loopback = loopback
        self.token = token
        self.feed = Feed(source)
        self.address: tuple[str, int] | None = None  # where it listens, once it does
        self._static: dict[str, bytes] = {}
        self._metrics: Callable[[], bytes] | None = None
        self._routes: dict[
            tuple[str, str], Callable[[Request, bytes], Response | Awaitable[Response]]
        ] = {
            ("GET", "/api/v1/status"): lambda r, b: json_response(source.snapshot()),
            ("GET", "/api/v1/peers"): lambda r, b: json_response(source.snapshot()["peers"]),
            ("GET", "/api/v1/routes"): lambda r, b: json_response(source.routes()),
            ("GET", "/api/v1/mesh"): lambda r, b: json_response(source.mesh()),
            ("GET", "/api/v1/openapi.json"): lambda r, b: json_response(openapi()),
            ("GET", "/api/v1/clients"): self._clients,
            ("POST", "/api/v1/clients"): self._add_client,
            ("GET", "/metrics"): self._scrape,
            ("POST", "/api/v1/reload"): self._reload,
            ("POST", "/api/v1/log-level"): self._log_level,
            ("POST", "/api/v1/login"): self._login,
            ("POST", "/api/v1/logout"): self._logout,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets: not offered
        request = Request.from_scope(scope)
        try:
            response = await self._handle(request, receive, send)
        except HttpError as exc:
            response = json_response({"error": exc.message}, exc.status)
            response.headers += exc.headers
        except Exception:  # a bug must not end the daemon
            log.exception("API %s %s", request.method, request.path)
            response = json_response({"error": "internal error"}, 500)
        if response is not None:
            await _send_response(send, response, request)

    async def _handle(self, request: Request, receive: Receive, send: Send) -> Response | None:
        self._check_host(request)
        path = request.path
        if request.method in ("GET", "HEAD") and path in STATIC:
            return self._static_file(path)
        write = request.method in ("POST", "DELETE")
        if path in ("/api/v1/login", "/api/v1/logout"):
            self._check_origin(request)
        elif path.startswith("/api/") or path == "/metrics":
            self._check_access(request, write=write)
        if request.method == "GET" and path == "/api/v1/events":
            await self._events(receive, send)
            return None
        body = await _read_body(request, receive) if write else b""
        if write and path.startswith("/api/v1/peers/") and path.endswith("/reprobe"):
            return self._reprobe(path.removeprefix("/api/v1/peers/").removesuffix("/reprobe"))
        if path.startswith("/api/v1/clients/"):
            if request.method != "DELETE":
                raise HttpError(405, "method not allowed", [("allow", "DELETE")])
            return await self._remove_client(unquote(path.removeprefix("/api/v1/clients/")))
        handler = self._routes.get((request.method, path))
        if handler is None:
            methods = [m for m, p in self._routes if p == path]
            if methods:
                raise HttpError(405, "method not allowed", [("allow", ", ".join(methods))])
            raise HttpError(404, "not found")
        response = handler(request, body)
        return response if isinstance(response, Response) else await response

    # --- access ---------------------------------------------------------------

    def _check_host(self, request: Request) -> None:
        if request.header_bytes > MAX_HEADERS:
            raise HttpError(431, f"at most {MAX_HEADERS} bytes of headers")
        if not self.loopback:
            return  # the token guards everything there
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if not is_loopback(name):
            raise HttpError(403, "this API answers to loopback addresses only")

    def _check_origin(self, request: Request) -> None:
        origin = request.headers.get("origin")
        if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
            raise HttpError(403, "a write from another origin")

    def _check_access(self, request: Request, *, write: bool) -> None:
        if write:
            self._check_origin(request)
        if not write and self.loopback:
            return
        if self.token is None:
            raise HttpError(403, "no API token could be made; see the daemon's log")
        given = request.credential()
        if given is None:
            raise HttpError(401, "a token is needed", [("www-authenticate", "Bearer")])
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise HttpError(403, "wrong token")

    # --- routes ---------------------------------------------------------------

    def _static_file(self, path: str) -> Response:
        name, content_type = STATIC[path]
        body = self._static.get(name)
        if body is None:
            body = resources.files("wg_netmanager").joinpath("web", name).read_bytes()
            self._static[name] = body
        return Response(200, body, content_type, [("cache-control", "no-cache")])

    async def _events(self, receive: Receive, send: Send) -> None:
        stream = self.feed.open_stream()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": _headers("text/event-stream", [("cache-control", "no-store")]),
            }
        )
        try:
            async with trio.open_nursery() as nursery:

                async def gone() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(gone)
                while True:
                    chunk = b": keepalive\n\n"
                    with trio.move_on_after(KEEPALIVE):
                        try:
                            chunk = await stream.receive()
                        except trio.EndOfChannel:
                            break  # too slow a reader: it reconnects and starts afresh
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                nursery.cancel_scope.cancel()
        finally:
            stream.close()
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _scrape(self, request: Request, body: bytes) -> Response:
        if self._metrics is None:
            from . import metrics  # prometheus_client: only once someone scrapes

            self._metrics = metrics.exposition(self.source)
        return Response(200, self._metrics(), "text/plain; version=0.0.4; charset=utf-8")

    def _reprobe(self, text: str) -> Response:
        try:
            wg_ip = IPv4Address(text)
        except ValueError:
            raise HttpError(404, "not a wg IP") from None
        state = self.source.reprobe(wg_ip)
        if state is None:
            raise HttpError(404, f"{wg_ip} is no dynamic peer with a session")
        if state == "retrying":
            log.info("API: the direct path to %s is tried again", wg_ip)
        return json_response({"wg_ip": str(wg_ip), "state": state}, 202)

    def _command(self, request: dict[str, Any]) -> Mapping[str, Any]:
        answer = self.source.command(request)
        if "error" in answer:
            raise HttpError(int(answer.get("status", 409)), str(answer["error"]))
        return answer

    def _clients(self, request: Request, body: bytes) -> Response:
        return json_response(self._command({"op": "client-list"}))

    async def _add_client(self, request: Request, body: bytes) -> Response:
        doc = _json_body(body)
        name, wanted = doc.get("name"), doc.get("wg_ip") or None
        if not isinstance(name, str) or not name:
            raise HttpError(400, 'name: give the client\'s name: {"name": "phone"}')
        if wanted is not None:
            try:
                wanted = str(IPv4Address(str(wanted)))
            except ValueError:
                raise HttpError(400, f"wg_ip: {wanted!r} is not an IPv4 address") from None
        keys = KeyPair.generate()  # the private key lives in this answer only
        add = {"op": "client-add", "name": name, "public_key": keys.public_b64, "wg_ip": wanted}
        answer = self._command(add)
        try:
            await _save_clients(answer)
        except OSError as exc:
            self.source.command({"op": "client-remove", "name": name})
            raise HttpError(
                503,
                f"{answer['state_file']}: {exc.strerror or exc}; the client is not added "
                "(the service must be able to write its configuration directory)",
            ) from None
        config = client_config.render_config(to_b64(keys.private), answer)
        log.info("API: client %s (%s) added", name, answer["client"]["wg_ip"])
        doc = {
            "client": answer["client"],
            "config": config,
            "qr_svg": client_config.qr_svg(config),
            "clients": answer["clients"],
        }
        return json_response(doc, 201)

    async def _remove_client(self, name: str) -> Response:
        answer = self._command({"op": "client-remove", "name": name})
        try:
            await _save_clients(answer)
        except OSError as exc:
            raise HttpError(
                503,
                f"{answer['state_file']}: {exc.strerror or exc}; the client is removed "
                "until the daemon restarts",
            ) from None
        log.info("API: client %s (%s) removed", name, answer["client"]["wg_ip"])
        return json_response({"removed": answer["client"], "clients": answer["clients"]})

    def _reload(self, request: Request, body: bytes) -> Response:
        log.info("API: reload requested")
        self.source.request_reload()
        return json_response({"reload": "requested"}, 202)

    def _log_level(self, request: Request, body: bytes) -> Response:
        level = _json_body(body).get("level")
        if level not in LEVELS:
            raise HttpError(400, f"level: give one of {', '.join(LEVELS)}")
        self.source.set_log_level(LEVELS[level])
        log.warning("API: log level %s", level)
        return json_response({"level": level})

    def _login(self, request: Request, body: bytes) -> Response:
        if request.headers.get("content-type", "").startswith("application/json"):
            given = _json_body(body).get("token")
        else:
            given = dict(parse_qsl(body.decode("latin-1"))).get("token")
        if self.token is None:
            raise HttpError(403, "no API token could be made; see the daemon's log")
        if not isinstance(given, str) or not hmac.compare_digest(
            given.encode(), self.token.encode()
        ):
            raise HttpError(403, "wrong token")
        cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
        return Response(204, b"", headers=[("set-cookie", cookie)])

    def _logout(self, request: Request, body: bytes) -> Response:
        cookie = f"{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        return Response(204, b"", headers=[("set-cookie", cookie)])


async def _save_clients(answer: Mapping[str, Any]) -> None:
    """The clients file, written in a thread: the directory's lock may be held
    by a ``client`` command, and the write ends with an fsync."""
    await trio.to_thread.run_sync(client_config.save, answer)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(request: Request, receive: Receive) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise HttpError(413, f"at most {MAX_BODY} bytes")
    chunks, size = [], 0
    with trio.move_on_after(BODY_TIMEOUT) as scope:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise HttpError(413, f"at most {MAX_BODY} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                break
    if scope.cancelled_caught:
        raise HttpError(408, f"the body took longer than {BODY_TIMEOUT:g} s")
    return b"".join(chunks)


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        raise HttpError(400, "the body is no JSON") from None
    if not isinstance(doc, dict):
        raise HttpError(400, "the body is no JSON object")
    return doc


def _headers(content_type: str, extra: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    pairs = [("content-type", content_type), *SECURITY_HEADERS, *extra]
    return [(k.encode(), v.encode()) for k, v in pairs]


async def _send_response(send: Send, response: Response, request: Request) -> None:
    extra = list(response.headers)
    if response.content_type == "application/json":
        extra.append(("cache-control", "no-store"))
    extra.append(("content-length", str(len(response.body))))
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": _headers(response.content_type, extra),
        }
    )
    body = b"" if request.method == "HEAD" else response.body
    await send({"type": "http.response.body", "body": body})


# --- OpenAPI ------------------------------------------------------------------------

ENDPOINTS = (
    ("get", "/api/v1/status", "The status document (as `wg_netmanager status --json`)", False),
    ("get", "/api/v1/peers", "The peers of the status document", False),
    ("get", "/api/v1/routes", "Kernel routes and WireGuard peers the daemon keeps", False),
    ("get", "/api/v1/mesh", "The map of the whole mesh: nodes, direct links, gateways", False),
    ("get", "/api/v1/events", "Server-Sent Events: status, mesh, event, log", False),
    ("get", "/metrics", "Prometheus metrics", False),
    ("post", "/api/v1/peers/{wg_ip}/reprobe", "A failed direct path is tried again now", True),
    ("get", "/api/v1/clients", "The plain WireGuard clients of this static", False),
    (
        "post",
        "/api/v1/clients",
        'Register a plain WireGuard client (a static only): {"name": ..., "wg_ip": optional}; '
        "201 with `config` (the wg-quick config; its private key is shown this once and "
        "kept nowhere) and `qr_svg` (that config as a QR code)",
        True,
    ),
    ("delete", "/api/v1/clients/{name}", "Remove a plain WireGuard client", True),
    ("post", "/api/v1/reload", "Re-read network.yaml and peer.yaml (as SIGHUP)", True),
    ("post", "/api/v1/log-level", 'Set the log level: {"level": "debug|info|warning"}', True),
    ("post", "/api/v1/login", 'Trade {"token": ...} for an HttpOnly cookie', False),
    ("post", "/api/v1/logout", "Clear the cookie", False),
    ("get", "/api/v1/openapi.json", "This description", False),
)


_REFUSED = {
    "400": {"description": "A malformed request"},
    "409": {"description": "Refused: not a static, its key not pinned, name or wg IP in use"},
    "503": {"description": "The state file next to network.yaml cannot be written"},
}
WRITE_ANSWERS: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/api/v1/clients"): {"201": {"description": "Registered"}, **_REFUSED},
    ("delete", "/api/v1/clients/{name}"): {
        "200": {"description": "Removed"},
        "404": {"description": "No client of that name"},
        "503": _REFUSED["503"],
    },
}


def openapi() -> Doc:
    paths: dict[str, Any] = {}
    for method, path, summary, write in ENDPOINTS:
        operation: dict[str, Any] = {
            "summary": summary,
            "responses": {"200": {"description": "OK"}},
        }
        if write:
            operation["security"] = [{"bearer": []}, {"cookie": []}]
            operation["responses"] = {
                **WRITE_ANSWERS.get((method, path), {"202": {"description": "Accepted"}}),
                "401": {"description": "No token given"},
                "403": {"description": "Wrong token, or a write from another origin"},
            }
        for name in ("wg_ip", "name"):
            if f"{{{name}}}" in path:
                operation["parameters"] = [
                    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                ]
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wg_netmanager",
            "version": __version__,
            "description": "Reads are open on loopback; elsewhere, and for every write, "
            "the token (next to network.yaml, `api-token`) is needed.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": COOKIE},
            }
        },
        "paths": paths,
    }


# --- serving ---------------------------------------------------------------------------


def load_token(path: str) -> str | None:
    """The token from ``path``, made on first use; None (logged) if that is impossible."""
    try:
        token, made = api_token.ensure_token(path)
    except (OSError, api_token.TokenError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        log.warning(
            "API token %s: %s; writes are refused (run 'wg_netmanager install' or create it: "
            "umask 077; head -c 32 /dev/urandom | base64 > %s)",
            path,
            reason,
            path,
        )
        return None
    if made:
        log.info("API token made: %s (root only)", path)
    return token


async def serve(
    source: ApiSource,
    address: tuple[str, int],
    token_file: str,
    task_status: trio.TaskStatus[Api | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API on ``address`` until cancelled. Never ends the daemon: an
    address that cannot be bound is logged and the API is off (``started(None)``)."""
    from hypercorn.config import Config, Sockets
    from hypercorn.trio.run import worker_serve
    from hypercorn.utils import wrap_app

    host, port = address
    loopback = is_loopback(host)
    config = Config()
    # hypercorn's own lines: its errors only ("Running on ... CTRL + C" is not ours to say).
    http_log = logging.getLogger("wg_netmanager.api.http")
    http_log.setLevel(logging.WARNING)
    config.errorlog = http_log
    config.accesslog = None
    config.keep_alive_timeout = IDLE_TIMEOUT
    config.h11_max_incomplete_size = MAX_HEADERS
    config.h2_max_header_list_size = MAX_HEADERS
    config.graceful_timeout = 0.5
    config.include_server_header = False
    try:
        listener = _listen(host, port, config.backlog)
    except OSError as exc:
        log.warning(
            "API %s:%d: %s; the API is off (--api ADDR:PORT, or --api off)",
            host,
            port,
            exc.strerror or exc,
        )
        task_status.started(None)
        return
    sockets = Sockets([], [listener], [])
    app = Api(source, loopback=loopback, token=load_token(token_file))
    bound = listener.getsockname()
    app.address = (bound[0], bound[1])
    handler = FeedLogHandler(app.feed)
    root = logging.getLogger()
    remove_listener = source.add_listener(app.feed.on_event)
    try:
        async with trio.open_nursery() as nursery:
            serve_app = partial(
                worker_serve, wrap_app(cast(Any, app), 0, "asgi"), config, sockets=sockets
            )
            await nursery.start(serve_app)
            root.addHandler(handler)
            nursery.start_soon(app.feed.run)
            where = f"[{host}]:{app.address[1]}" if ":" in host else f"{host}:{app.address[1]}"
            token_note = "reads open, writes with the token" if loopback else "with the token"
            log.info("API and web UI at http://%s/ (%s)", where, token_note)
            task_status.started(app)
            await trio.sleep(math.inf)
    finally:
        root.removeHandler(handler)
        remove_listener()
        listener.close()


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
