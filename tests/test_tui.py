"""The terminal UI rendered to text: what a person reads on the screen.

Most tests build the widgets from a status document (by hand from the core's
``NodeStatus``/``PeerStatus``, or from a simulated mesh) and render them at a
fixed size; the last ones run the real urwid main loop on trio against a
pseudo-terminal read back through pyte.
"""

from __future__ import annotations

import fcntl
import functools
import io
import logging
import os
import re
import struct
import termios
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import msgspec
import pyte
import pytest
import trio
import urwid

from tests.fake_host import ALICE_IP, BOB_IP, FakeNet, Machine, make_settings
from tests.sim import NAMES, Nat, SimNet, working_example
from tests.status_samples import BOB_KEY, CHARLIE_KEY, peer, sample_doc, sample_subnets, table
from wg_netmanager import control, panes, status_text, tui


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_app(doc: dict[str, Any] | None = None, logs: tui.LogBuffer | None = None) -> tui.App:
    clock = Clock()
    app = tui.App(tui.StaticSource(doc or sample_doc()), logs, clock=clock)
    app.refresh()
    return app


def screen(app: tui.App, cols: int = 140, rows: int = 40) -> list[str]:
    return app.render_lines(cols, rows)


def names_in_order(lines: list[str]) -> list[str]:
    return list(table(lines))


def press(app: tui.App, *keys: str, size: tuple[int, int] = (140, 40)) -> None:
    for key in keys:
        app.top.keypress(size, key)


# --- the screen ---------------------------------------------------------------


def test_header_and_peer_table_read_like_a_person_expects() -> None:
    lines = screen(make_app())
    text = "\n".join(lines)
    assert lines[0].strip().startswith("bob 10.1.1.2 on wg0 (wireguard-go)")
    assert "key Qk9Ca2V5…" in lines[0] and BOB_KEY not in text.split("Peers")[0]
    assert "ports wg 50002 admin 50502" in lines[0]
    assert "visible as 198.51.100.2:50002" in lines[1] and "up 1h 02m" in lines[1]
    assert "nodes 3  direct 2  via gateway 1" in lines[1]
    rows = table(lines)
    assert list(rows) == ["alice", "charlie", "dave"]
    assert rows["alice"] == {
        "NAME": "alice",
        "WG IP": "10.1.1.1",
        "PATH": "direct static",
        "ENDPOINT": "198.51.100.1:50001",
        "LATENCY": "1.2 ms",
        "HANDSHAKE": "5 s",
        "RX": "12.1 KiB",
        "TX": "2.3 KiB",
        "RX/s": "-",  # one sample: no rate yet
        "TX/s": "-",
        "KEY AGE": "1m 23s",
    }
    assert rows["charlie"]["PATH"] == "via alice"
    assert rows["charlie"]["LATENCY"] == "-" and rows["charlie"]["HANDSHAKE"] == "-"
    assert rows["dave"]["PATH"] == "direct LAN" and rows["dave"]["LATENCY"] == "30.4 ms"
    assert "alice 10.1.1.1 forwards for 1: charlie 10.1.1.3" in text
    assert "q quit" in lines[-1] and "? help" in lines[-1]


def test_the_gateway_pane_shows_the_networks_behind_gateways() -> None:
    text = "\n".join(screen(make_app(sample_doc(subnets=sample_subnets()))))
    assert "networks behind gateways:" in text
    assert "192.168.1.0/24: charlie 10.1.1.3 (down)  dave 10.1.1.4 (up, used)" in text
    assert "networks behind" not in "\n".join(screen(make_app()))


def test_a_conflict_is_shown_loudly_under_the_header() -> None:
    doc = sample_doc()
    assert not doc["conflicts"]
    assert "CONFLICT" not in "\n".join(screen(make_app(doc)))
    text = (
        "CONFLICT: 198.51.100.66:50503 (key TUFMTE9S…) claims wg IP 10.1.1.3, which"
        " charlie (key Q0hBUkxJ…) still uses; refused"
    )
    doc["conflicts"] = [text]
    app = make_app(doc)
    lines = screen(app, cols=160)
    assert lines[2].strip() == text  # right under the two header lines
    canvas = app.top.render((160, 40), focus=False)
    third_row = list(canvas.content())[2]
    layers = [getattr(attr, "layers", (attr,))[0] for attr, _charset, _text in third_row]
    assert "conflict" in layers  # red, over the header's blue
    assert text in status_text.render_text(doc)


def test_rows_are_coloured_by_path_and_flash_after_a_change() -> None:
    doc = sample_doc()
    source = tui.StaticSource(doc)
    clock = Clock()
    app = tui.App(source, clock=clock)
    app.refresh()

    def attr_of(name: str) -> str | None:
        canvas = app.top.render((140, 40), focus=False)
        for row_text, row_attrs in zip(canvas.text, canvas.content(), strict=True):
            if row_text.decode().split()[:1] == [name]:
                return row_attrs[0][0]
        raise AssertionError(name)

    assert (attr_of("alice"), attr_of("charlie"), attr_of("dave")) == ("static", "via", "lan")
    # charlie goes direct over NAT: its row flashes for a while, then takes its colour.
    charlie = dict(doc["peers"][1], path="direct", kind="nat", gateway=None, gateway_name=None)
    source.doc = dict(doc, peers=[doc["peers"][0], charlie, doc["peers"][2]])
    clock.now += 1.0
    app.refresh()
    assert attr_of("charlie") == "flash" and attr_of("alice") == "static"
    assert table(screen(app))["charlie"]["PATH"] == "direct NAT"
    clock.now += panes.FLASH + 0.1
    app.refresh()
    assert attr_of("charlie") == "nat"


def test_rates_from_two_samples() -> None:
    doc = sample_doc()
    source = tui.StaticSource(doc)
    clock = Clock()
    app = tui.App(source, clock=clock)
    app.refresh()
    dave = dict(doc["peers"][2], rx_bytes=2048 + 4096, tx_bytes=4096 + 1024)
    source.doc = dict(doc, peers=[doc["peers"][0], doc["peers"][1], dave])
    clock.now += 2.0
    app.refresh()
    row = table(screen(app))["dave"]
    assert (row["RX/s"], row["TX/s"]) == ("2.0 KiB/s", "512 B/s")
    assert table(screen(app))["charlie"]["RX/s"] == "-"  # relayed: WireGuard counts at alice


def test_sort_cycles_wg_ip_name_path_latency() -> None:
    peers = (
        peer("10.1.1.9", "zed", "direct", "nat", rtt=0.002),
        peer("10.1.1.3", "mia", "via", "gateway", gateway=IPv4Address("10.1.1.1"),
             gateway_name="alice"),
        peer("10.1.1.1", "alice", "direct", "static", rtt=0.050, is_static=True),
        peer("10.1.1.5", "bea", "direct", "lan", rtt=0.001),
    )  # fmt: skip
    app = make_app(sample_doc(peers=peers))
    assert "sort: wg IP" in "\n".join(screen(app))
    assert names_in_order(screen(app)) == ["alice", "mia", "bea", "zed"]
    press(app, "s")
    assert "sort: name" in "\n".join(screen(app))
    assert names_in_order(screen(app)) == ["alice", "bea", "mia", "zed"]
    press(app, "s")
    assert names_in_order(screen(app)) == ["bea", "zed", "alice", "mia"]  # LAN, NAT, static, via
    press(app, "s")
    assert "sort: latency" in "\n".join(screen(app))
    assert names_in_order(screen(app)) == ["bea", "zed", "alice", "mia"]  # 1, 2, 50 ms, none
    press(app, "s")
    assert "sort: wg IP" in "\n".join(screen(app))


def test_selection_survives_sorting_and_refresh() -> None:
    app = make_app()
    press(app, "j")  # charlie
    assert app.selected_ip() == "10.1.1.3"
    press(app, "s", "s")  # by path: dave, alice, charlie
    assert app.selected_ip() == "10.1.1.3"
    app.refresh()
    assert app.selected_ip() == "10.1.1.3"
    press(app, "k")
    assert app.selected_ip() == "10.1.1.1"


def log_buffer() -> tui.LogBuffer:
    buffer = tui.LogBuffer()
    buffer.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.Logger("test_tui")  # not registered: nothing else sees these
    logger.addHandler(buffer)
    logger.setLevel(logging.DEBUG)
    logger.debug("run: wg show wg0 dump")
    logger.info("charlie (10.1.1.3) reachable via alice (10.1.1.1)")
    logger.warning("cannot resolve vps.example.org")
    logger.error("wg set failed\nsecond line of the error")
    return buffer


def log_pane(app: tui.App) -> list[str]:
    lines = screen(app)
    start = next(i for i, line in enumerate(lines) if line.startswith(" Log "))
    return [line.strip() for line in lines[start + 1 : -1] if line.strip()]


def test_log_pane_and_level_filter() -> None:
    app = make_app(logs=log_buffer())
    assert "level: INFO+" in "\n".join(screen(app))
    assert log_pane(app) == [
        "INFO charlie (10.1.1.3) reachable via alice (10.1.1.1)",
        "WARNING cannot resolve vps.example.org",
        "ERROR wg set failed",
        "second line of the error",
    ]
    press(app, "f")
    assert "level: WARNING+" in "\n".join(screen(app))
    assert log_pane(app)[0] == "WARNING cannot resolve vps.example.org"
    assert len(log_pane(app)) == 3
    press(app, "f")
    assert "level: DEBUG+" in "\n".join(screen(app))
    assert log_pane(app)[0] == "DEBUG run: wg show wg0 dump" and len(log_pane(app)) == 5
    press(app, "f")
    assert "level: INFO+" in "\n".join(screen(app))


def test_log_pane_follows_the_tail_and_scrolls() -> None:
    buffer = tui.LogBuffer()
    app = make_app(logs=buffer)
    for i in range(100):
        buffer.emit(logging.makeLogRecord({"msg": f"line {i}", "levelno": logging.INFO}))
    app.update_log()
    assert log_pane(app)[-1] == "line 99"
    press(app, "tab", "tab")  # the log pane
    press(app, "page up", "page up")
    visible = log_pane(app)
    assert "line 99" not in visible
    buffer.emit(logging.makeLogRecord({"msg": "line 100", "levelno": logging.INFO}))
    app.update_log()
    assert log_pane(app) == visible  # scrolled back: stays put
    press(app, "end")
    assert log_pane(app)[-1] == "line 100"


def test_log_buffer_is_bounded() -> None:
    buffer = tui.LogBuffer(capacity=10)
    for i in range(25):
        buffer.emit(logging.makeLogRecord({"msg": f"m{i}", "levelno": logging.INFO}))
    assert [line for _, _, line in buffer.lines] == [f"m{i}" for i in range(15, 25)]
    assert buffer.seq == 25


def test_detail_view_shows_everything_known_and_closes() -> None:
    app = make_app()
    press(app, "down", "enter")  # charlie
    text = "\n".join(screen(app))
    assert "┐" in text and " node " in text
    details = {
        m.group(1): m.group(2).strip()
        for m in re.finditer(r"│ ([a-z][a-zA-Z ]+?)\s{2,}(.+?)│", text)
    }
    assert details["name"] == "charlie"
    assert details["wg IP"] == "10.1.1.3"
    assert details["public key"] == CHARLIE_KEY
    assert details["path"] == "via alice (10.1.1.1)"
    assert details["reason"] == "no direct session yet"
    assert details["endpoint"] == "198.51.100.3:20000"
    assert details["local endpoints"] == "192.168.1.3:50503"
    assert details["latency"] == "-"
    assert details["handshake"] == "never"
    assert "Esc or Enter closes" in text
    press(app, "esc")
    assert "┐" not in "\n".join(screen(app)) and app.overlay is None
    press(app, "up", "enter")
    assert app.detail_ip == "10.1.1.1"
    assert re.search(r"latency\s+1\.2 ms", "\n".join(screen(app)))
    assert re.search(r"handshake\s+5 s ago", "\n".join(screen(app)))
    press(app, "enter")
    assert app.overlay is None


def test_help_and_quit() -> None:
    quits: list[int] = []
    app = tui.App(tui.StaticSource(sample_doc()), on_quit=lambda: quits.append(1))
    app.refresh(0.0)
    press(app, "?")
    assert "s            sort the peers" in "\n".join(screen(app))
    press(app, "x")
    assert app.overlay is None
    press(app, "enter", "q")  # q quits from the detail view too
    assert quits == [1] and app.quit_requested


def test_tab_moves_the_focus_between_panes() -> None:
    app = make_app(logs=log_buffer())
    assert app.pane == 0
    press(app, "tab")
    assert app.pane == 1 and app.body.focus_position == 1
    press(app, "tab", "tab")
    assert app.pane == 0
    press(app, "shift tab")
    assert app.pane == 2


@pytest.mark.parametrize("size", [(80, 24), (40, 10), (20, 5), (10, 3), (3, 2), (1, 1)])
def test_small_terminals_do_not_crash(size: tuple[int, int]) -> None:
    app = make_app(logs=log_buffer())
    for keys in ((), ("enter",), ("esc", "?"), ("x", "tab", "f", "s")):
        press(app, *keys, size=size)
        lines = screen(app, *size)
        assert len(lines) == size[1] and all(len(line) == size[0] for line in lines)


def test_no_peers_yet() -> None:
    app = make_app(sample_doc(peers=()))
    text = "\n".join(screen(app, 100, 20))
    assert "(no other node known yet)" in text
    assert "nodes 0  direct 0  via gateway 0" in text
    press(app, "enter")  # nothing selected: no detail view
    assert app.overlay is None


# --- from a simulated mesh ---------------------------------------------------------


def doc_of(net: SimNet, name: str) -> dict[str, Any]:
    node = net.hosts[name].node
    assert node is not None
    return status_text.status_document(node.statistics(net.now), interface="wg0")


def test_simulated_mesh_paths_as_the_screen_shows_them() -> None:
    net = working_example(symmetric_alpha=True)
    for name in NAMES:
        net.start(name)
    net.run_for(10.0)
    rows = table(screen(make_app(doc_of(net, "charlie"))))
    assert set(rows) == {"beta", "alpha", "delta"}
    assert rows["beta"]["PATH"] == "direct static" and rows["beta"]["LATENCY"].endswith(" ms")
    assert rows["delta"]["PATH"] == "direct LAN"
    assert rows["alpha"]["PATH"] == "via beta"  # symmetric NAT: stays relayed
    app = make_app(doc_of(net, "charlie"))
    press(app, "s", "s")  # by path
    assert names_in_order(screen(app)) == ["delta", "beta", "alpha"]
    while app.selected_ip() != "10.1.1.2":
        press(app, "down")
    press(app, "enter")
    assert "symmetric NAT" in "\n".join(screen(app))  # the reason it is relayed
    # beta (static) sees everyone directly.
    rows = table(screen(make_app(doc_of(net, "beta"))))
    assert {r["PATH"] for r in rows.values()} == {"direct"}


def test_status_document_has_no_secrets_and_text_addresses() -> None:
    net = SimNet()
    net.add_host("beta", "198.51.100.1", "10.1.1.1", static=True)
    net.add_host("alpha", "192.168.2.2", "10.1.1.2", nat=Nat("198.51.100.4"))
    net.start("beta")
    net.start("alpha")
    net.run_for(3.0)
    doc = doc_of(net, "alpha")
    text = repr(doc)
    host = net.hosts["alpha"]
    assert host.keys is not None and host.keys.private.hex() not in text
    assert "private" not in text and "shared" not in text
    assert doc["wg_ip"] == "10.1.1.2" and doc["peers"][0]["wg_ip"] == "10.1.1.1"
    assert doc["peers"][0]["endpoint"] == "198.51.100.1:50001"


# --- the real main loop on trio, in a pseudo-terminal -----------------------------------


class Pty:
    """A pseudo-terminal: urwid writes to the slave side, pyte reads the master side."""

    def __init__(self, cols: int, rows: int) -> None:
        self.master, self.slave = os.openpty()
        self.raw = b""
        self.resize(cols, rows)
        self.input = open(self.slave, "rb", buffering=0, closefd=False)  # noqa: SIM115
        self.output = io.TextIOWrapper(
            open(self.slave, "wb", buffering=0, closefd=False),  # noqa: SIM115
            encoding="utf-8",
            write_through=True,
        )
        os.set_blocking(self.master, False)

    def resize(self, cols: int, rows: int) -> None:
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def pump(self) -> int:
        got = 0
        while True:
            try:
                data = os.read(self.master, 65536)
            except (BlockingIOError, OSError):
                return got
            if not data:
                return got
            got += len(data)
            self.raw += data
            self.stream.feed(data)

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def close(self) -> None:
        self.input.close()
        self.output.close()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def pty() -> Iterator[Pty]:
    p = Pty(120, 30)
    try:
        yield p
    finally:
        p.close()


async def until(pty: Pty, predicate: Any, seconds: float = 5.0) -> None:
    with trio.fail_after(seconds):
        while True:
            pty.pump()
            if predicate(pty.text()):
                return
            await trio.sleep(0.02)


def test_main_loop_on_trio_keys_refresh_and_terminal_restored(pty: Pty) -> None:
    doc = sample_doc()
    source = tui.StaticSource(doc)
    logs = tui.LogBuffer()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            app = tui.App(
                source, logs, on_quit=nursery.cancel_scope.cancel, clock=trio.current_time
            )
            scr = urwid.display.raw.Screen(input=pty.input, output=pty.output)
            await nursery.start(tui.run_app, app, scr)
            await until(pty, lambda t: "charlie" in t and "sort: wg IP" in t)
            os.write(pty.master, b"s")
            await until(pty, lambda t: "sort: name" in t)
            # A log line shows up without a key press (the refresher wakes on it).
            logs.emit(logging.makeLogRecord({"msg": "hello from the log", "levelno": 20}))
            await until(pty, lambda t: "hello from the log" in t)
            # A new peer shows up on the next refresh (at most TICK later).
            extra = peer("10.1.1.7", "gina", "direct", "nat", rtt=0.0042)
            source.doc = dict(doc, peers=[*doc["peers"], status_text.jsonable(extra)])
            await until(pty, lambda t: "gina" in t and "4.2 ms" in t)
            # Resize: the table is drawn again at the new width.
            pty.resize(70, 20)
            os.kill(os.getpid(), __import__("signal").SIGWINCH)
            await until(pty, lambda t: "gina" in t and t.splitlines()[19].startswith(" q quit"))
            os.write(pty.master, b"q")
            await trio.sleep(5)  # q cancels the nursery well before this
            raise AssertionError("q did not quit")

    trio.run(main)
    pty.pump()
    # Left the alternate screen (pyte does not keep a second buffer) and cbreak mode.
    assert termios.tcgetattr(pty.slave)[3] & termios.ICANON
    assert pty.raw.rfind(b"\x1b[?1049l") > pty.raw.rfind(b"gina")


def test_main_loop_restores_the_terminal_after_a_crash(pty: Pty) -> None:
    class Broken(tui.StaticSource):
        calls = 0

        def snapshot(self) -> dict[str, Any]:
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("boom")
            return super().snapshot()

    async def main() -> None:
        app = tui.App(Broken(sample_doc()), clock=trio.current_time)
        scr = urwid.display.raw.Screen(input=pty.input, output=pty.output)
        await tui.run_app(app, scr)

    with pytest.raises(BaseException) as info:
        trio.run(main)
    assert "boom" in repr(info.value) or "boom" in str(info.value.__context__)
    assert termios.tcgetattr(pty.slave)[3] & termios.ICANON


def test_redraws_are_rate_limited(pty: Pty, monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[float] = []
    original = tui._Loop.draw_screen

    def counting(self: tui._Loop) -> None:
        draws.append(trio.current_time())
        original(self)

    monkeypatch.setattr(tui._Loop, "draw_screen", counting)
    logs = tui.LogBuffer()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            app = tui.App(tui.StaticSource(sample_doc()), logs, clock=trio.current_time)
            scr = urwid.display.raw.Screen(input=pty.input, output=pty.output)
            await nursery.start(tui.run_app, app, scr)
            await trio.sleep(0.3)
            draws.clear()
            start = trio.current_time()
            while trio.current_time() - start < 2.0:  # a log line every 10 ms
                logs.emit(logging.makeLogRecord({"msg": "busy", "levelno": 20}))
                await trio.sleep(0.01)
                pty.pump()
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert 2 <= len(draws) <= 2.0 / tui.MIN_INTERVAL + 2, draws


def test_capture_and_release_logging() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    stream = io.StringIO()
    try:
        buffer = tui.capture_logging(logging.Formatter("%(levelname)s %(message)s"))
        assert buffer in root.handlers
        logging.getLogger("wg_netmanager").warning("startup trouble")
        assert "startup trouble" in buffer.lines[-1][2]
        tui.release_logging(stream)  # no TUI ever showed it: printed now
        assert "WARNING startup trouble" in stream.getvalue()
        assert buffer not in root.handlers
        tui.release_logging(stream)  # idempotent
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)


def test_daemon_with_tui_quits_cleanly_on_q(
    pty: Pty, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TUI in the daemon's nursery; q = clean shutdown (fake machines)."""
    monkeypatch.setenv(control.RUN_DIR_ENV, str(tmp_path / "run"))
    alice_settings, bob_settings = make_settings(tmp_path)
    net = FakeNet()
    alice = Machine(alice_settings, net.host(ALICE_IP))
    bob = Machine(msgspec.structs.replace(bob_settings, tui=True), net.host(BOB_IP))
    scr = urwid.display.raw.Screen(input=pty.input, output=pty.output)
    monkeypatch.setattr(tui, "run", functools.partial(tui.run, screen=scr))
    root = logging.getLogger()
    before = list(root.handlers)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start((await alice.daemon()).run)
            async with trio.open_nursery() as bob_nursery:
                bob_nursery.start_soon((await bob.daemon()).run)
                await until(pty, lambda t: "alice" in t and "direct static" in t, 10)
                assert "bob 10.1.1.2 on wg0 (wireguard-go)" in pty.text()
                os.write(pty.master, b"q")
                with trio.fail_after(5):
                    while bob.device.created:  # noqa: ASYNC110 - the fake has no events
                        await trio.sleep(0.02)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)  # the wall clock: a real terminal answers in its own time
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)
    assert "destroy" in bob.device.call_names()
    assert termios.tcgetattr(pty.slave)[3] & termios.ICANON
    assert not (tmp_path / "run" / "wg0.sock").exists()


# --- the mesh map ------------------------------------------------------------------


def mesh_sample() -> dict[str, Any]:
    """The working example's map: charlie and delta on a LAN, alpha relayed, a
    fifth node down."""

    def node(ip: str, name: str, gateway: str | None = "10.1.1.1", **more: Any) -> dict[str, Any]:
        return {"wg_ip": ip, "name": name, "is_static": False, "up": True, "gateway": gateway,
                "exceptions": [], **more}  # fmt: skip

    return {
        "me": "10.1.1.3",
        "source": "10.1.1.1",
        "nodes": [
            node("10.1.1.1", "beta", None, is_static=True),
            node("10.1.1.2", "alpha"),
            node("10.1.1.3", "charlie"),
            node("10.1.1.4", "delta"),
            node("10.1.1.5", "echo", up=False),
        ],
        "links": [
            {"a": "10.1.1.1", "b": "10.1.1.2", "kind": "static", "rtt": 0.0123},
            {"a": "10.1.1.1", "b": "10.1.1.3", "kind": "static", "rtt": 0.011},
            {"a": "10.1.1.1", "b": "10.1.1.4", "kind": "static", "rtt": None},
            {"a": "10.1.1.3", "b": "10.1.1.4", "kind": "lan", "rtt": 0.0004},
        ],
    }


def test_m_opens_the_mesh_map_every_node_every_pair_and_esc_closes_it() -> None:
    app = tui.App(tui.StaticSource(sample_doc(), mesh_sample()), clock=lambda: 0.0)
    app.refresh(0.0)
    press(app, "m")
    text = "\n".join(screen(app))
    assert "mesh map, merged by beta" in text
    rows = {line.split("│")[1].split()[0].lstrip("*"): line for line in screen(app)
            if "│" in line and re.search(r"10\.1\.1\.\d\s", line)}  # fmt: skip
    assert set(rows) == {"beta", "alpha", "charlie", "delta", "echo"}
    # Row charlie: S to beta, relayed to alpha, itself, LAN to delta, blank to echo (down).
    cells = rows["charlie"].split("10.1.1.3", 1)[1].split()
    assert cells[:4] == ["S", "·", "\\", "L"]
    assert "charlie - delta  lan  0.40 ms" in text
    assert "via beta: alpha-charlie, alpha-delta" in text
    assert "down: echo" in text
    # The cells are coloured by path (the LAN cell with the LAN colour).
    canvas = app.top.render((140, 40), focus=True)
    bar = "│".encode()
    charlie_row = next(
        i for i, line in enumerate(canvas.text) if b"charlie 10.1.1.3" in line and bar in line
    )
    attrs = [str(a) for a, _cs, _n in list(canvas.content())[charlie_row] if a is not None]
    attrs = [a.split("'")[1] if a.startswith("LayeredAttr") else a for a in attrs]
    assert "lan" in attrs and "via" in attrs and "static" in attrs
    press(app, "esc")
    assert not any("merged by" in line for line in screen(app))


def test_the_map_of_a_source_without_one_says_so() -> None:
    class Plain:
        def snapshot(self) -> dict[str, Any]:
            return sample_doc()

        def token(self) -> object:
            return 0

    app = tui.App(Plain(), clock=lambda: 0.0)
    app.refresh(0.0)
    press(app, "m")
    assert any("no mesh map here" in line for line in screen(app))
