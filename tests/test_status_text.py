"""The status header as a person reads it, for a dynamic node and for a
static one; the networks behind gateways."""

from __future__ import annotations

from typing import Any

from tests.status_samples import sample_doc, sample_subnets
from wg_netmanager.status_text import (
    dns_line,
    header_lines,
    path_label,
    render_text,
    subnet_lines,
    summary_line,
)


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "beta",
        "wg_ip": "10.1.1.1",
        "interface": "wg0",
        "backend": "wireguard-go",
        "public_key": "QUxJQ0VrZXlBTElDRWtleUFMSUNFa2V5QUxJQ0VrZXk=",
        "wg_port": 50001,
        "admin_port": 50501,
        "uptime": 65.0,
        "visible_endpoint": None,
        "statics_connected": 0,
        "statics_total": 0,
        "peers": [
            {"name": n, "wg_ip": f"10.1.1.{i}", "path": "direct", "kind": ""}
            for i, n in ((2, "alpha"), (3, "charlie"), (4, "delta"))
        ],
    }
    return {**base, **changes}


def test_a_static_says_whom_it_serves_not_a_meaningless_statics_count() -> None:
    first, second = header_lines(doc(is_static=True))
    assert ", static" in first
    assert "serving 3 nodes" in second and "the only static" in second
    assert "statics 0/0" not in second and "visible as" not in second


def test_a_static_with_other_statics_counts_them() -> None:
    _, second = header_lines(doc(is_static=True, statics_connected=1, statics_total=2))
    assert "other statics 1/2" in second


def test_a_dynamic_node_shows_its_outside_and_its_statics() -> None:
    _, second = header_lines(
        doc(is_static=False, visible_endpoint="198.51.100.3:50003", statics_connected=1,
            statics_total=1)
    )  # fmt: skip
    assert "visible as 198.51.100.3:50003" in second and "statics 1/1" in second


def test_networks_behind_gateways_who_serves_whether_up_which_one_used() -> None:
    doc = sample_doc(subnets=sample_subnets())
    assert subnet_lines(doc) == [
        "192.168.1.0/24: charlie 10.1.1.3 (down)  dave 10.1.1.4 (up, used)",
        "0.0.0.0/0 (exit): alice 10.1.1.1 (up)  - not used (this node has no --exit-node)",
    ]
    text = render_text(doc)
    assert text.endswith("networks behind gateways:\n" + "\n".join(subnet_lines(doc)))
    assert doc["subnets"][0]["serving"] == "10.1.1.4"  # --json: addresses as text
    assert "networks behind" not in render_text(sample_doc())  # none in the file: no section


def test_a_network_without_a_gateway_alive_says_so() -> None:
    subnet = {
        "route": "192.168.1.0/24",
        "gateways": ["10.1.1.3"],
        "names": [""],
        "alive": [],
        "serving": None,
        "role": "routed",
    }
    assert subnet_lines({"subnets": [subnet]}) == [
        "192.168.1.0/24: 10.1.1.3 (down)  - no gateway alive: unreachable"
    ]
    own = dict(subnet, role="own", alive=["10.1.1.3"])
    assert subnet_lines({"subnets": [own]}) == [
        "192.168.1.0/24: 10.1.1.3 (up)  - served by this node"
    ]


def test_a_mobile_node_and_a_mobile_peer_say_so() -> None:
    alpha = {"name": "alpha", "wg_ip": "10.1.1.2", "path": "via", "gateway_name": "beta"}
    mobile = doc(
        is_static=False,
        mobile=True,
        peers=[{**alpha, "mobile": True}, {**alpha, "name": "delta", "wg_ip": "10.1.1.4"}],
    )
    assert ", mobile" in header_lines(mobile)[0]
    assert ", mobile" not in header_lines(doc(is_static=False))[0]
    assert path_label(mobile["peers"][0]) == "via beta, mobile"
    assert path_label(mobile["peers"][1]) == "via beta"
    assert "alpha:via-beta,mobile delta:via-beta" in summary_line(mobile)


def test_a_plain_wireguard_client_says_so_on_its_static_and_elsewhere() -> None:
    phone = {"name": "phone", "wg_ip": "10.1.1.50", "client": True}
    on_static = {**phone, "path": "direct", "kind": "client", "rx_bytes": 300}
    elsewhere = {**phone, "path": "via", "gateway_name": "beta"}
    assert path_label(on_static) == "direct, client"
    assert path_label(elsewhere) == "via beta, client"
    text = render_text(doc(is_static=True, peers=[on_static]))
    assert "phone  10.1.1.50  direct, client" in text


def test_the_dns_line_says_where_it_listens_what_it_answered_and_dropped() -> None:
    dns = {
        "domain": "mesh",
        "listening": "10.1.1.1:53 udp+tcp",
        "names": 4,
        "answers": {"NOERROR": 5, "REFUSED": 1},
        "drops": {"malformed": 2},
    }
    text = render_text(doc(dns=dns))
    assert text.endswith(
        "\n\ndns: *.mesh on 10.1.1.1:53 udp+tcp, 4 names, answered 6 (NOERROR 5, REFUSED 1), "
        "dropped 2 (malformed 2)"
    )
    waiting = {**dns, "listening": None, "answers": {}, "drops": {}}
    assert dns_line(doc(dns=waiting)) == (
        "dns: *.mesh not listening yet (retrying), 4 names, answered 0"
    )
    assert dns_line(doc()) is None
    assert "dns:" not in render_text(doc())
