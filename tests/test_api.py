"""The HTTP API (``wg_netmanager.api``): documents, access, bounds, events, metrics.

Most tests call the ASGI application in memory (``tests.http.asgi_request``)
in front of daemons on fake machines on trio's mock clock, so the API shows
what the daemon holds: alice (static) and bob on one fake network. The last
ones run hypercorn on a real loopback socket (bounds of the HTTP layer, a
port in use).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from msgspec.structs import replace

from tests.fake_host import ALICE_IP, BOB_IP, FakeNet, Machine, make_settings, mock_clock
from tests.helpers import in_a_fresh_interpreter
from tests.http import EventStream, StubSource, asgi_request, get, http_request
from tests.sim import NAMES, working_example
from tests.waits import wait_for
from wg_netmanager import api, cli, client_config
from wg_netmanager.api import Api
from wg_netmanager.api_token import TokenError, ensure_token, read_token
from wg_netmanager.daemon import Daemon, DaemonStatus
from wg_netmanager.keys import KeyPair, from_b64
from wg_netmanager.status_text import status_document

TOKEN = "t0k3n-" + "x" * 40


def two_daemons(tmp_path: Path) -> tuple[Machine, Machine]:
    alice_settings, bob_settings = make_settings(tmp_path)
    net = FakeNet()
    return Machine(alice_settings, net.host(ALICE_IP)), Machine(bob_settings, net.host(BOB_IP))


def run_meshed(tmp_path: Path, scenario: Any) -> None:
    """``scenario(alice_daemon, bob_daemon, nursery)`` once the two have met."""
    alice, bob = two_daemons(tmp_path)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            a, b = await alice.daemon(), await bob.daemon()
            await nursery.start(a.run)
            await nursery.start(b.run)
            await wait_for(lambda: b.node.statistics(trio.current_time()).statics_connected == 1)
            await wait_for(lambda: len(a.node.mesh_picture(trio.current_time())) == 2)
            await wait_for(lambda: bool(b.node.desired_routes()))
            await scenario(a, b, nursery)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=mock_clock())


def app_of(daemon: Daemon, *, loopback: bool = True, token: str | None = TOKEN) -> Api:
    return Api(DaemonStatus(daemon, trio.current_time()), loopback=loopback, token=token)


# --- the documents -----------------------------------------------------------------


def test_status_is_the_status_document_and_peers_routes_mesh_are_of_the_same_picture(
    tmp_path: Path,
) -> None:
    async def scenario(alice: Daemon, bob: Daemon, nursery: trio.Nursery) -> None:
        app = app_of(bob)
        status = (await asgi_request(app, "GET", "/api/v1/status")).json()
        now = trio.current_time()
        # The document of `status --json`, made from the same node at the same moment.
        expected = status_document(bob.node.statistics(now), interface="wg0", backend="fake")
        assert {k: v for k, v in status.items() if k not in ("uptime", "backend")} == {
            k: v for k, v in expected.items() if k not in ("uptime", "backend")
        }
        peers = (await asgi_request(app, "GET", "/api/v1/peers")).json()
        assert peers == status["peers"] and peers[0]["name"] == "alice"
        routes = (await asgi_request(app, "GET", "/api/v1/routes")).json()
        assert {"dest": "10.1.1.1/32", "via": None} in routes["routes"]
        assert routes["wireguard_peers"][0]["public_key"] == alice.keys.public_b64
        # The map as alice merged it: bob reported its link to her, and asks
        # her for the map once someone looks at it.
        await asgi_request(app, "GET", "/api/v1/mesh")
        await wait_for(lambda: bob.node.mesh.source == alice.node.info.wg_ip)
        mesh = (await asgi_request(app, "GET", "/api/v1/mesh")).json()
        assert mesh["me"] == "10.1.1.2" and mesh["source"] == "10.1.1.1"
        assert {n["name"]: n["up"] for n in mesh["nodes"]} == {"alice": True, "bob": True}
        assert [(link["a"], link["b"], link["kind"]) for link in mesh["links"]] == [
            ("10.1.1.1", "10.1.1.2", "static")
        ]

    run_meshed(tmp_path, scenario)


def test_openapi_describes_every_route(tmp_path: Path) -> None:
    async def main() -> None:
        app = Api(StubSource(), loopback=True, token=TOKEN)
        doc = (await asgi_request(app, "GET", "/api/v1/openapi.json")).json()
        assert doc["openapi"].startswith("3.")
        for method, path in app._routes:
            assert method.lower() in doc["paths"][path], path
        assert "post" in doc["paths"]["/api/v1/peers/{wg_ip}/reprobe"]
        assert "get" in doc["paths"]["/api/v1/events"]
        clients = doc["paths"]["/api/v1/clients/{name}"]["delete"]
        assert {"401", "403", "404"} <= set(clients["responses"])
        assert "shown this once" in doc["paths"]["/api/v1/clients"]["post"]["summary"]

    trio.run(main)


def test_metrics_in_the_prometheus_format(tmp_path: Path) -> None:
    async def scenario(alice: Daemon, bob: Daemon, nursery: trio.Nursery) -> None:
        bob.node.drops[api.ev.DropReason.BAD_SEAL] = 3
        answer = await asgi_request(app_of(bob), "GET", "/metrics")
        assert answer.status == 200 and answer.headers["content-type"].startswith("text/plain")
        text = answer.text
        assert 'wgnm_peer_up{name="alice",path="static",peer="10.1.1.1"} 1.0' in text
        assert 'wgnm_peer_rx_bytes_total{name="alice",path="static",peer="10.1.1.1"}' in text
        assert 'wgnm_dropped_datagrams_total{reason="bad seal"} 3.0' in text
        assert 'wgnm_path_switches_total{to="direct"} 0.0' in text
        assert 'wgnm_command_failures_total{command="wg"}' in text
        assert "wgnm_conflicts_total 0.0" in text
        assert "wgnm_build_info{backend=" in text and 'node="bob"' in text

    run_meshed(tmp_path, scenario)


def test_reprobe_tries_a_failed_direct_path_again_at_once() -> None:
    net = working_example(symmetric_alpha=True)
    for name in NAMES:
        net.start(name)
    net.run_for(10.0)
    alpha = net.hosts["alpha"].node
    assert alpha is not None
    charlie = net.hosts["charlie"].wg_ip
    path = alpha.pairs.paths[charlie]
    # Its NAT maps per destination: attempts fail, and the next waits its backoff.
    net.wait_for(lambda: path.state.value == "failed" and path.retry_at > net.now + 1.0, 60.0)
    attempt = path.attempt
    assert alpha.reprobe(charlie, net.now) == "retrying"
    net._after(net.hosts["alpha"])
    net.run_for(0.05)
    assert path.attempt == attempt + 1  # not after the backoff: now
    delta = net.hosts["delta"].node
    assert delta is not None and delta.reprobe(net.hosts["charlie"].wg_ip, net.now) == "direct"
    beta = net.hosts["beta"].node
    assert beta is not None and beta.reprobe(charlie, net.now) is None  # a static has no pairs


# --- plain WireGuard clients ------------------------------------------------------------------

BEARER = {"authorization": f"Bearer {TOKEN}"}


def pinned(daemon: Daemon) -> None:
    """The static's key is pinned (a client's config names it)."""
    daemon.settings = replace(daemon.settings, private_key=daemon.keys.private)


def test_a_client_is_added_listed_and_removed_on_a_static_with_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario(alice: Daemon, bob: Daemon, nursery: trio.Nursery) -> None:
        pinned(alice)
        app = app_of(alice)
        body = json.dumps({"name": "phone", "wg_ip": "10.1.1.50"}).encode()
        refused = await asgi_request(app, "POST", "/api/v1/clients", body=body)
        assert refused.status == 401 and not alice.node.clients  # a write: the token
        added = await asgi_request(app, "POST", "/api/v1/clients", body=body, headers=BEARER)
        assert added.status == 201, added.text
        assert added.headers["cache-control"] == "no-store"  # the private key, once
        doc = added.json()
        assert doc["client"] == {"name": "phone", "wg_ip": "10.1.1.50"}
        config = doc["config"]
        private = next(x for x in config.splitlines() if x.startswith("PrivateKey = "))[13:]
        client = alice.node.clients[IPv4Address("10.1.1.50")]
        assert KeyPair.from_private(from_b64(private)).public_b64 == client.public_key
        assert f"PublicKey = {alice.keys.public_b64}" in config
        assert "Address = 10.1.1.50/32" in config and "AllowedIPs = 10.1.1.0/24" in config
        assert doc["qr_svg"].startswith("<svg") and doc["qr_svg"] == client_config.qr_svg(config)
        state = tmp_path / "clients-10.1.1.1.json"
        assert state.stat().st_mode & 0o777 == 0o600
        assert private not in state.read_text() and client.public_key in state.read_text()
        assert private not in caplog.text and "client phone (10.1.1.50) added" in caplog.text
        # Reads are open on loopback; the list is the control socket's.
        listed = (await asgi_request(app, "GET", "/api/v1/clients")).json()["clients"]
        assert [(c["name"], c["wg_ip"]) for c in listed] == [("phone", "10.1.1.50")]
        again = await asgi_request(app, "POST", "/api/v1/clients", body=body, headers=BEARER)
        assert again.status == 409 and "name 'phone' is in use" in again.json()["error"]
        removed = await asgi_request(app, "DELETE", "/api/v1/clients/phone", headers=BEARER)
        assert removed.status == 200 and removed.json()["removed"]["name"] == "phone"
        assert not alice.node.clients and json.loads(state.read_text()) == {"clients": []}
        gone = await asgi_request(app, "DELETE", "/api/v1/clients/phone", headers=BEARER)
        assert gone.status == 404 and "no client named 'phone'" in gone.json()["error"]

    run_meshed(tmp_path, scenario)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"name": "phone"}, 409, "not a static"),
        ({"wg_ip": "10.1.1.50"}, 400, "name"),
        ({"name": "phone", "wg_ip": "10.1.1"}, 400, "wg_ip: '10.1.1' is not an IPv4 address"),
    ],
)
def test_elsewhere_or_malformed_a_client_is_a_clear_4xx(
    tmp_path: Path, body: dict[str, str], status: int, words: str
) -> None:
    async def scenario(alice: Daemon, bob: Daemon, nursery: trio.Nursery) -> None:
        answer = await asgi_request(
            app_of(bob), "POST", "/api/v1/clients", body=json.dumps(body).encode(), headers=BEARER
        )
        assert answer.status == status and words in answer.json()["error"], answer.text
        assert not bob.node.clients

    run_meshed(tmp_path, scenario)
    assert not list(tmp_path.glob("clients-*"))


def test_an_unpinned_static_or_a_bad_name_is_refused_with_409(tmp_path: Path) -> None:
    async def scenario(alice: Daemon, bob: Daemon, nursery: trio.Nursery) -> None:
        app = app_of(alice)
        body = json.dumps({"name": "phone"}).encode()
        answer = await asgi_request(app, "POST", "/api/v1/clients", body=body, headers=BEARER)
        assert answer.status == 409 and "not pinned" in answer.json()["error"]
        pinned(alice)
        body = json.dumps({"name": "ph one"}).encode()
        answer = await asgi_request(app, "POST", "/api/v1/clients", body=body, headers=BEARER)
        assert answer.status == 409 and "name 'ph one'" in answer.json()["error"]
        assert not alice.node.clients

    run_meshed(tmp_path, scenario)


def test_a_client_add_waits_for_the_clients_lock_without_stopping_the_daemon(
    tmp_path: Path,
) -> None:
    """A ``client`` command holds the directory's lock: the API's add waits for
    it in a thread, and the daemon (its other requests, its protocol) goes on."""
    order: list[tuple[str, int]] = []

    async def scenario(alice: Daemon, bob: Daemon, nursery: trio.Nursery) -> None:
        pinned(alice)
        app = app_of(alice)
        held = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(held, fcntl.LOCK_EX)  # as `client add` holds it
        threading.Timer(1.0, os.close, [held]).start()  # closing it lets go
        done = trio.Event()

        async def add() -> None:
            body = json.dumps({"name": "phone"}).encode()
            answer = await asgi_request(app, "POST", "/api/v1/clients", body=body, headers=BEARER)
            order.append(("add", answer.status))
            done.set()

        nursery.start_soon(add)
        await trio.testing.wait_all_tasks_blocked()
        order.append(("status", (await asgi_request(app, "GET", "/api/v1/status")).status))
        await done.wait()  # (the lock goes 1 s later in real time; the clock here is virtual)

    run_meshed(tmp_path, scenario)
    assert order == [("status", 200), ("add", 201)]


def test_a_state_file_that_cannot_be_written_undoes_the_add(tmp_path: Path) -> None:
    async def scenario(alice: Daemon, bob: Daemon, nursery: trio.Nursery) -> None:
        pinned(alice)
        (tmp_path / "clients-10.1.1.1.json").mkdir()  # in the way of the file
        body = json.dumps({"name": "phone"}).encode()
        answer = await asgi_request(
            app_of(alice), "POST", "/api/v1/clients", body=body, headers=BEARER
        )
        assert answer.status == 503 and "the client is not added" in answer.json()["error"]
        assert "PrivateKey" not in answer.text and not alice.node.clients

    run_meshed(tmp_path, scenario)


# --- access ----------------------------------------------------------------------------


def test_writes_need_the_token_reads_on_loopback_do_not(tmp_path: Path) -> None:
    async def scenario(alice: Daemon, bob: Daemon, nursery: trio.Nursery) -> None:
        app = app_of(bob)
        assert (await asgi_request(app, "GET", "/api/v1/status")).status == 200
        body = json.dumps({"level": "debug"}).encode()
        no_token = await asgi_request(app, "POST", "/api/v1/log-level", body=body)
        assert no_token.status == 401 and no_token.headers["www-authenticate"] == "Bearer"
        wrong = await asgi_request(
            app, "POST", "/api/v1/log-level", body=body, headers={"authorization": "Bearer nope"}
        )
        assert wrong.status == 403
        assert logging.getLogger().level != logging.DEBUG
        bearer = {"authorization": f"Bearer {TOKEN}"}
        right = await asgi_request(app, "POST", "/api/v1/log-level", body=body, headers=bearer)
        assert right.status == 200 and logging.getLogger().level == logging.DEBUG
        bad = await asgi_request(
            app, "POST", "/api/v1/log-level", body=b'{"level":"loud"}', headers=bearer
        )
        assert bad.status == 400
        reload = await asgi_request(app, "POST", "/api/v1/reload", headers=bearer)
        assert reload.status == 202
        # bob is dynamic, alice a static: alice is no pair to try again.
        missing = await asgi_request(app, "POST", "/api/v1/peers/10.1.1.1/reprobe", headers=bearer)
        assert missing.status == 404
        assert (await asgi_request(app, "GET", "/api/v1/reload")).status == 405
        # Without a token file, writes are refused even on loopback.
        tokenless = app_of(bob, token=None)
        refused = await asgi_request(tokenless, "POST", "/api/v1/reload", headers=bearer)
        assert refused.status == 403

    logging.getLogger().setLevel(logging.WARNING)
    run_meshed(tmp_path, scenario)


def test_beyond_loopback_every_read_needs_the_token_and_the_login_gives_a_cookie() -> None:
    async def main() -> None:
        app = Api(StubSource(), loopback=False, token=TOKEN)
        host = {"host": "10.1.1.1:50080"}
        for path in ("/api/v1/status", "/api/v1/mesh", "/api/v1/events", "/metrics"):
            assert (await asgi_request(app, "GET", path, headers=host)).status == 401, path
        # The UI's files hold no data: served to anyone, who then logs in.
        assert (await asgi_request(app, "GET", "/", headers=host)).status == 200
        wrong = await asgi_request(
            app, "POST", "/api/v1/login", headers=host, body=b'{"token":"nope"}'
        )
        assert wrong.status == 403 and "set-cookie" not in wrong.headers
        login = await asgi_request(
            app,
            "POST",
            "/api/v1/login",
            headers={**host, "content-type": "application/json"},
            body=json.dumps({"token": TOKEN}).encode(),
        )
        assert login.status == 204
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        with_cookie = {**host, "cookie": cookie.split(";")[0]}
        assert (await asgi_request(app, "GET", "/api/v1/status", headers=with_cookie)).status == 200
        bearer = {**host, "authorization": f"Bearer {TOKEN}"}
        assert (await asgi_request(app, "GET", "/api/v1/status", headers=bearer)).status == 200
        logout = await asgi_request(app, "POST", "/api/v1/logout", headers=host)
        assert "Max-Age=0" in logout.headers["set-cookie"]

    trio.run(main)


def test_a_foreign_host_or_origin_is_refused() -> None:
    async def main() -> None:
        source = StubSource()
        app = Api(source, loopback=True, token=TOKEN)
        # A DNS-rebinding page: its own name, our loopback address.
        rebound = await asgi_request(app, "GET", "/api/v1/status", headers={"host": "evil.test"})
        assert rebound.status == 403
        for host in ("127.0.0.1:50080", "localhost:50080", "[::1]:50080", "127.0.0.1"):
            answer = await asgi_request(app, "GET", "/api/v1/status", headers={"host": host})
            assert answer.status == 200, host
        bearer = {"authorization": f"Bearer {TOKEN}"}
        foreign = {**bearer, "origin": "http://evil.test"}
        assert (await asgi_request(app, "POST", "/api/v1/reload", headers=foreign)).status == 403
        own = {**bearer, "origin": "http://127.0.0.1:50080"}
        assert (await asgi_request(app, "POST", "/api/v1/reload", headers=own)).status == 202
        assert source.reloads == 1

    trio.run(main)


def test_static_files_are_a_fixed_list_no_path_reaches_the_file_system() -> None:
    async def main() -> None:
        app = Api(StubSource(), loopback=True, token=TOKEN)
        page = await asgi_request(app, "GET", "/")
        assert page.status == 200 and b'src="app.js"' in page.body
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert (
            (await asgi_request(app, "GET", "/app.js"))
            .headers["content-type"]
            .startswith("text/javascript")
        )
        for path in (
            "/../api_token.py",
            "/web/app.js",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/..%2fsetup.cfg",
            "/app.js/../../api.py",
            "//etc/passwd",
            "/static/../../wg_netmanager/api.py",
        ):
            assert (await asgi_request(app, "GET", path)).status == 404, path

    trio.run(main)


def test_the_token_is_made_once_private_and_never_through_a_link(tmp_path: Path) -> None:
    path = str(tmp_path / "api-token")
    token, made = ensure_token(path)
    assert made and len(token) >= 40
    assert (Path(path).stat().st_mode & 0o777) == 0o600
    assert ensure_token(path) == (token, False)
    Path(path).chmod(0o644)
    with pytest.raises(TokenError, match="chmod 600"):
        read_token(path)
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(TokenError, match="symbolic link"):
        read_token(str(link))


# --- bounds ---------------------------------------------------------------------------


def test_request_bodies_are_bounded_in_size_and_time() -> None:
    async def main() -> None:
        app = Api(StubSource(), loopback=True, token=TOKEN)
        bearer = {"authorization": f"Bearer {TOKEN}"}
        declared = {**bearer, "content-length": str(api.MAX_BODY + 1)}
        answer = await asgi_request(app, "POST", "/api/v1/log-level", headers=declared)
        assert answer.status == 413
        # Without a length: counted as it comes.
        chunks = [b"x" * 4096] * (api.MAX_BODY // 4096 + 2)
        answer = await asgi_request(app, "POST", "/api/v1/log-level", headers=bearer, body=chunks)
        assert answer.status == 413
        started = trio.current_time()
        answer = await asgi_request(
            app, "POST", "/api/v1/log-level", headers=bearer, body=[b'{"le'], stall=True
        )
        assert answer.status == 408
        assert trio.current_time() - started == pytest.approx(api.BODY_TIMEOUT)

    trio.run(main, clock=mock_clock())


# --- the event stream -----------------------------------------------------------------------


def test_event_stream_sends_status_mesh_and_log_then_changes_as_they_happen(
    tmp_path: Path,
) -> None:
    async def scenario(alice: Daemon, bob: Daemon, nursery: trio.Nursery) -> None:
        app = app_of(alice)
        remove = DaemonStatus(alice, 0.0).add_listener(app.feed.on_event)
        handler = api.FeedLogHandler(app.feed)
        logging.getLogger().addHandler(handler)
        try:
            nursery.start_soon(app.feed.run)
            stream = EventStream(app)
            await nursery.start(stream.run)
            assert stream.status == 200
            await stream.wait_for(lambda events: {"status", "mesh"} <= {k for k, _ in events})
            kinds = [k for k, _ in stream.events()]
            assert kinds[:2] == ["status", "mesh"]
            first_mesh = next(d for k, d in stream.events() if k == "mesh")
            assert {n["name"] for n in first_mesh["nodes"]} == {"alice", "bob"}
            # bob leaves: the event, the log line and the new map arrive.
            started = trio.current_time()
            bob.node.shutdown(trio.current_time())
            await bob._flush()

            def bob_down(events: list[tuple[str, Any]]) -> bool:
                meshes = [d for k, d in events if k == "mesh"]
                return any(n["name"] == "bob" and not n["up"] for m in meshes for n in m["nodes"])

            await stream.wait_for(bob_down)
            assert trio.current_time() - started < 0.5
            texts = [d["text"] for k, d in stream.events() if k in ("event", "log")]
            assert any("bob" in t and "bye" in t for t in texts), texts
            assert any(k == "event" and d["type"] == "PeerSaidBye" for k, d in stream.events())
            stream.close()
        finally:
            logging.getLogger().removeHandler(handler)
            remove()

    run_meshed(tmp_path, scenario)


def test_at_most_max_streams_at_once() -> None:
    async def main() -> None:
        app = Api(StubSource(), loopback=True, token=TOKEN)
        streams = [app.feed.open_stream() for _ in range(api.MAX_STREAMS)]
        answer = await asgi_request(app, "GET", "/api/v1/events")
        assert answer.status == 503
        for stream in streams:
            stream.close()

    trio.run(main)


def test_a_stream_that_cannot_keep_up_is_closed_and_the_others_go_on() -> None:
    async def main() -> None:
        feed = Api(StubSource(), loopback=True, token=TOKEN).feed
        slow, fast = feed.open_stream(), feed.open_stream()
        while True:  # the fast reader takes what it was given at once
            try:
                fast.receive_nowait()
            except trio.WouldBlock:
                break
        record = logging.LogRecord("x", logging.INFO, "", 0, "line", (), None)
        got = []
        for _ in range(api.STREAM_QUEUE + 10):
            feed.on_log(record, "line")
            got.append(fast.receive_nowait())
        chunks = []
        with pytest.raises(trio.EndOfChannel):
            while True:
                chunks.append(slow.receive_nowait())
        assert len(chunks) == api.STREAM_QUEUE
        assert got[-1].startswith(b"event: log")
        feed.on_log(record, "after")
        assert b"after" in fast.receive_nowait()

    trio.run(main)


# --- over a real socket ---------------------------------------------------------------------


def test_over_tcp_headers_are_bounded_and_an_idle_client_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "IDLE_TIMEOUT", 0.5)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            app = await nursery.start(
                api.serve, StubSource(), ("127.0.0.1", 0), str(tmp_path / "api-token")
            )
            assert app is not None and app.address is not None
            answer, _ = await http_request(app.address, get("/api/v1/status"))
            assert answer.startswith(b"HTTP/1.1 200") and b'"name":"alice"' in answer
            assert b"server:" not in answer.lower()
            huge = get("/api/v1/status", extra=f"X-Big: {'a' * (api.MAX_HEADERS + 100)}\r\n")
            answer, _ = await http_request(app.address, huge)
            assert answer.startswith(b"HTTP/1.1 431")
            # A client that starts a request and stops: closed after the idle timeout.
            slow, seconds = await http_request(app.address, b"GET /api/v1/status HTTP/1.1\r\nHo")
            assert slow == b"" and seconds < 3.0
            # The token was made on first use, root only.
            assert (tmp_path / "api-token").stat().st_mode & 0o777 == 0o600
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_port_in_use_leaves_the_api_off_and_the_daemon_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            first = await nursery.start(
                api.serve, StubSource(), ("127.0.0.1", 0), str(tmp_path / "api-token")
            )
            assert first is not None and first.address is not None
            second = await nursery.start(
                api.serve, StubSource(), first.address, str(tmp_path / "api-token")
            )
            assert second is None
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert "the API is off" in caplog.text


# --- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, ("127.0.0.1", 50080)),
        ("off", None),
        ("10.1.1.1:8080", ("10.1.1.1", 8080)),
        ("[::1]:50080", ("::1", 50080)),
    ],
)
def test_api_option(given: str | None, expected: tuple[str, int] | None) -> None:
    assert cli.parse_api(given) == expected


@pytest.mark.parametrize(
    "given", ["localhost:80", "10.1.1.1", "10.1.1.1:0", "10.1.1.1:http", ":80"]
)
def test_a_bad_api_option_is_one_line_naming_the_option_and_the_fix(
    given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, _ = make_settings(tmp_path)
    monkeypatch.setattr(cli, "DEFAULT_PEER_PATH", str(tmp_path / "no-peer.yaml"))
    argv = ["check", "-c", alice.network.path, "--api", given, "wg0", "10.1.1.2", "bob"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--api" in err and "or off" in err, err


def test_check_says_where_the_api_listens_and_where_its_token_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, _ = make_settings(tmp_path)
    monkeypatch.setattr(cli, "DEFAULT_PEER_PATH", str(tmp_path / "no-peer.yaml"))
    assert cli.main(["check", "-c", alice.network.path, "wg0", "10.1.1.2", "bob"]) == 0
    out = capsys.readouterr().out
    assert f"api:        http://127.0.0.1:50080/ (token {tmp_path}/api-token)" in out
    assert not (tmp_path / "api-token").exists()  # check makes nothing
    argv = ["check", "-c", alice.network.path, "--api", "off", "wg0", "10.1.1.2", "bob"]
    assert cli.main(argv) == 0
    assert "api:        off" in capsys.readouterr().out


# --- in the daemon -----------------------------------------------------------------------------


def test_the_daemon_serves_the_api_after_start_up_with_a_token_next_to_its_config(
    tmp_path: Path,
) -> None:
    alice_settings, _ = make_settings(tmp_path)
    machine = Machine(replace(alice_settings, api=("127.0.0.1", 0)), FakeNet().host(ALICE_IP))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            daemon = await machine.daemon()
            await nursery.start(daemon.run)
            await wait_for(lambda: daemon.api_address is not None, seconds=20)
            assert daemon.api_address is not None
            answer, _ = await http_request(daemon.api_address, get("/api/v1/status"))
            assert answer.startswith(b"HTTP/1.1 200")
            doc = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            assert (doc["name"], doc["is_static"]) == ("alice", True)
            nursery.cancel_scope.cancel()

    trio.run(main)
    token = tmp_path / "api-token"
    assert token.stat().st_mode & 0o777 == 0o600


def test_a_headless_daemon_loads_no_web_stack_until_it_serves() -> None:
    code = (
        "import sys, wg_netmanager.daemon, wg_netmanager.cli\n"
        "web = ('hypercorn', 'h11', 'h2', 'prometheus_client')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in web or m.endswith('.api')))"
    )
    assert in_a_fresh_interpreter(code) == "[]"
