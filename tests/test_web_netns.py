"""The web UI in a real browser, from a real daemon, in the working example.

Four daemons (beta static; alpha behind its own NAT; charlie and delta on a
home LAN) serve their API on each box's loopback (the default). Headless
chromium runs inside charlie's namespace (``tests.browser``), loads
charlie's UI and checks that the peer table and the map show every node and
every link of the whole mesh (links charlie cannot see itself come from the
map beta merged), then that a link change appears live: the LAN between
charlie and delta is cut. Then, on beta's page (a pinned static), a plain
WireGuard client is added through the form (the token asked for first): the
config is shown once with its QR code, which zbarimg reads off the
screenshot as exactly that config; the remove button takes the client out.
Screenshots are kept in the test's tmp dir (their paths are printed).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import browser, qr
from tests.faults import FaultMesh, fault_mesh
from wg_netmanager.keys import KeyPair, to_b64

pytestmark = pytest.mark.netns

URL = "http://127.0.0.1:50080/"
TABLE = (
    "return [...document.querySelectorAll('#peers tbody tr')]"
    ".map(r => r.dataset.wgIp + ' ' + r.dataset.pathKind)"
)
NODES_JS = (
    "return [...document.querySelectorAll('#map g.node')]"
    ".map(g => g.dataset.name + ':' + g.dataset.up)"
)
LINKS_JS = (
    "return [...document.querySelectorAll('#map g.link')]"
    ".map(g => g.dataset.a + '-' + g.dataset.b + ':' + g.dataset.kind)"
)
SOURCE_JS = "return document.getElementById('map-source').textContent"
CHARLIE_DELTA = "10.1.1.3-10.1.1.4"
CLIENTS_JS = "return [...document.querySelectorAll('#clients tbody tr')].map(r => r.dataset.name)"


def pin_beta(mesh: FaultMesh, tmp_path: Path) -> list[str]:
    """beta's key pinned in network.yaml (clients need it); its daemon's options."""
    key = KeyPair.generate()
    key_file = tmp_path / "beta.key"
    key_file.write_text(to_b64(key.private) + "\n")
    key_file.chmod(0o600)
    peer = tmp_path / "beta-peer.yaml"
    peer.write_text(f"privateKeyFile: {key_file}\n")
    pin = f"    wgIp: 10.1.1.1\n    publicKey: {key.public_b64}\n"
    mesh.config.write_text(mesh.config.read_text().replace("    wgIp: 10.1.1.1\n", pin, 1))
    return ["-p", str(peer)]


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[FaultMesh]:
    missing = browser.available() or qr.available()
    if missing:
        pytest.fail(f"the browser test needs {missing}; run scripts/install.sh")
    with fault_mesh(tmp_path, pingInterval=2, deadAfter=6, linkTimeout=1) as mesh:
        beta = pin_beta(mesh, tmp_path)
        for box in mesh.nodes:
            mesh.start(box, options=beta if box == "beta" else ())
        mesh.wait(mesh.all_direct, timeout=60)
        # The API starts once start-up has settled (at most 3 s after the
        # interface is up): half a second after the last link went direct.
        mesh.wait(lambda: all("API and web UI at" in mesh.log(box) for box in mesh.nodes), 10)
        yield mesh
        mesh.stop_all()


def test_the_ui_shows_every_node_and_link_and_a_link_change_live(
    mesh: FaultMesh, tmp_path: Path
) -> None:
    # The token was made on first use next to network.yaml, root only.
    assert (tmp_path / "api-token").stat().st_mode & 0o777 == 0o600
    with browser.Browser(mesh.tb.box_cmd, "charlie", tmp_path) as chromium:
        chromium.get(URL)
        rows = chromium.wait_js(TABLE, lambda rows: len(rows) == 3, timeout=20)
        assert sorted(rows) == ["10.1.1.1 static", "10.1.1.2 nat", "10.1.1.4 lan"]
        # The map: every node up, every link of the whole mesh, merged by beta.
        chromium.wait_js(SOURCE_JS, lambda text: "merged by beta" in text, timeout=20)
        nodes = chromium.wait_js(NODES_JS, lambda nodes: len(nodes) == 4, timeout=10)
        assert sorted(nodes) == ["alpha:true", "beta:true", "charlie:true", "delta:true"]
        expected = {
            "10.1.1.1-10.1.1.2:static",
            "10.1.1.1-10.1.1.3:static",
            "10.1.1.1-10.1.1.4:static",
            "10.1.1.2-10.1.1.3:nat",
            "10.1.1.2-10.1.1.4:nat",  # alpha-delta: only beta's map knows it
            f"{CHARLIE_DELTA}:lan",
        }
        chromium.wait_js(LINKS_JS, lambda links: set(links) == expected, timeout=20)
        before = chromium.screenshot(tmp_path / "web-ui.png")
        print(f"\nscreenshot: {before}")
        # The LAN breaks while charlie and delta talk: the link leaves the map
        # and the table, live.
        mesh.start_probers({"charlie": ["delta"], "delta": ["charlie"]})
        time.sleep(1.0)
        cut = mesh.fault("lan-cut")
        chromium.wait_js(LINKS_JS, lambda links: f"{CHARLIE_DELTA}:lan" not in links, timeout=40)
        shown = time.monotonic() - cut
        rows = chromium.wait_js(TABLE, lambda rows: "10.1.1.4 lan" not in rows, timeout=10)
        after = chromium.screenshot(tmp_path / "web-ui-lan-cut.png")
        print(f"screenshot after lan-cut: {after} (map changed {shown:.1f} s after the cut)")
        log = chromium.js("return document.getElementById('log').textContent")
        assert "delta" in log
        add_and_remove_a_client(mesh, tmp_path)
        # SIGTERM with the browser's event stream open: every daemon exits cleanly.
        mesh.stop_probers()
        started = time.monotonic()
        assert set(mesh.stop_all().values()) == {0}, mesh.logs()
        print(f"all four stopped {time.monotonic() - started:.1f} s after SIGTERM")


def add_and_remove_a_client(mesh: FaultMesh, tmp_path: Path) -> None:
    """On beta's page: the form, the token, the config once with its QR code
    (read back off the screenshot), the client in the list, then removed."""
    token = (tmp_path / "api-token").read_text().strip()
    workdir = tmp_path / "beta-browser"
    workdir.mkdir()
    with browser.Browser(mesh.tb.box_cmd, "beta", workdir) as chromium:
        chromium.get(URL)
        chromium.wait_js("return !document.getElementById('clients-section').hidden", bool, 20)
        add = (
            "document.getElementById('client-name').value = 'phone';"
            "document.getElementById('client-form').requestSubmit();"
        )
        chromium.js(add)  # a write without the token: the page asks for it
        chromium.wait_js("return !document.getElementById('login').hidden", bool, 10)
        chromium.js(
            f"document.getElementById('token').value = {token!r};"
            "document.getElementById('login-form').requestSubmit();"
        )
        chromium.wait_js("return document.getElementById('login').hidden", bool, 10)
        chromium.js(add)
        config_js = "return document.getElementById('client-config').textContent"
        config = chromium.wait_js(config_js, lambda text: "PrivateKey = " in text, 10)
        assert "Address = 10.1.1.254/32" in config and "Endpoint = " in config
        chromium.wait_js(
            "const img = document.getElementById('client-qr');"
            "img.scrollIntoView(); return img.complete && img.naturalWidth > 0",
            bool,
            10,
        )
        shot = chromium.screenshot(tmp_path / "web-ui-client.png")
        print(f"screenshot with the client's QR code: {shot}")
        assert qr.read(shot) == config  # what the WireGuard app's camera reads
        chromium.wait_js(CLIENTS_JS, lambda names: names == ["phone"], 20)
        chromium.js("document.getElementById('client-done').click()")
        assert chromium.js(config_js) == ""  # shown once: gone from the page
        chromium.js("document.querySelector('#clients button.remove').click()")
        chromium.wait_js(CLIENTS_JS, lambda names: names == [], 20)
    state = (tmp_path / "clients-10.1.1.1.json").read_text()
    assert '"clients": []' in state and "PrivateKey" not in mesh.log("beta")
