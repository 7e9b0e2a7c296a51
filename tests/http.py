"""HTTP for the API tests: an in-memory ASGI client, a raw HTTP/1.1 client
over TCP, and a stand-in for the daemon behind the API.

``asgi_request`` calls the application as hypercorn would, without sockets,
so it runs on trio's mock clock; ``http_request`` speaks real HTTP to a
listening server (``Connection: close``, the whole answer read).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

import trio

from wg_netmanager.core import events as ev

HTTP_WAIT = 10.0  # seconds a raw request may take, answer included


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; repeated ones joined with ", "
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def _scope(method: str, path: str, headers: Mapping[str, str]) -> dict[str, Any]:
    raw_path, _, query = path.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 50080),
    }


async def asgi_request(
    app: Any,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | Iterable[bytes] = b"",
    stall: bool = False,
) -> Answer:
    """One request to the ASGI ``app``. ``body`` as one piece or as chunks;
    ``stall``: after the chunks the client sends nothing more, ever."""
    given = {"host": "127.0.0.1:50080", **(headers or {})}
    chunks = [body] if isinstance(body, bytes) else list(body)
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": stall or i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    start: dict[str, Any] = {}
    parts: list[bytes] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        else:
            parts.append(message.get("body", b""))

    await app(_scope(method, path, given), receive, send)
    headers_out: dict[str, str] = {}
    for k, v in start.get("headers", []):
        name = k.decode().lower()
        value = v.decode()
        headers_out[name] = f"{headers_out[name]}, {value}" if name in headers_out else value
    return Answer(start["status"], headers_out, b"".join(parts))


class EventStream:
    """``GET /api/v1/events`` on an ASGI app, read as it comes (in a nursery)."""

    def __init__(self, app: Any, headers: Mapping[str, str] | None = None) -> None:
        self._app = app
        self._headers = {"host": "127.0.0.1:50080", **(headers or {})}
        self.status: int | None = None
        self.buffer = b""
        self._gone = trio.Event()
        self._arrived = trio.Event()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async def receive() -> dict[str, Any]:
            await self._gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                task_status.started()
            else:
                self.buffer += message.get("body", b"")
                self._arrived.set()

        await self._app(_scope("GET", "/api/v1/events", self._headers), receive, send)

    def close(self) -> None:
        self._gone.set()

    def events(self) -> list[tuple[str, Any]]:
        """(kind, data) of every complete event so far (comments left out)."""
        out = []
        for block in self.buffer.decode().split("\n\n"):
            kind, data = None, None
            for line in block.splitlines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
            if kind is not None:
                out.append((kind, data))
        return out

    async def wait_for(self, predicate: Callable[[list[tuple[str, Any]]], bool]) -> None:
        while not predicate(self.events()):
            await self._arrived.wait()
            self._arrived = trio.Event()


async def http_request(address: tuple[str, int], raw: bytes) -> tuple[bytes, float]:
    """Send ``raw`` to ``address`` and read until the server closes (at most
    ``HTTP_WAIT`` seconds): (answer, seconds)."""
    started = trio.current_time()
    stream = await trio.open_tcp_stream(*address)
    answer = b""
    async with stream:
        with trio.fail_after(HTTP_WAIT):
            await stream.send_all(raw)
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not data:
                    break
                answer += data
    return answer, trio.current_time() - started


def get(path: str, host: str = "127.0.0.1", extra: str = "") -> bytes:
    """A raw GET with ``Connection: close``."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode()


@dataclass
class StubSource:
    """A daemon as the API sees it (``api.ApiSource``), with fixed documents."""

    status: dict[str, Any] = field(
        default_factory=lambda: {
            "name": "alice",
            "wg_ip": "10.1.1.1",
            "interface": "wg0",
            "peers": [],
            "drops": {},
            "uptime": 1.0,
        }
    )
    mesh_doc: dict[str, Any] = field(
        default_factory=lambda: {"me": "10.1.1.1", "source": None, "nodes": [], "links": []}
    )
    version: int = 0
    reloads: int = 0
    listeners: list[Callable[[ev.Event], None]] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        return self.status

    def token(self) -> object:
        return self.version

    def mesh(self) -> dict[str, Any]:
        return self.mesh_doc

    def mesh_token(self) -> object:
        return self.version

    def routes(self) -> dict[str, Any]:
        return {"interface": "wg0", "routes": [], "wireguard_peers": []}

    def counters(self) -> dict[str, int]:
        return {}

    def reprobe(self, wg_ip: IPv4Address) -> str | None:
        return None

    def request_reload(self) -> None:
        self.reloads += 1

    def set_log_level(self, level: int) -> None:
        pass

    def add_listener(self, listener: Callable[[ev.Event], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def command(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """As a dynamic node answers the clients' requests."""
        if request.get("op") == "client-list":
            return {"clients": []}
        return {"error": "this node is not a static: add clients on a static node", "status": 409}
