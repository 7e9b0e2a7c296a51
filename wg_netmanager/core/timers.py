"""Every timer of the protocol, in one place.

Defaults are for real networks; tests and the testbeds shorten them through
``timers:`` in network.yaml (camelCase names of these fields).
"""

from __future__ import annotations

import msgspec


class Timers(msgspec.Struct, frozen=True):
    # First contact: resend hellos to an unanswering static peer with
    # exponential backoff between these bounds (seconds).
    hello_retry_min: float = 0.1
    hello_retry_max: float = 1.0
    # After this long without an answer, back off further to save traffic.
    hello_retry_slow: float = 5.0
    hello_slow_after: float = 30.0
    # Liveness: a ping every ping_interval (jittered); silence for dead_after
    # drops the node (its routes and WireGuard peer go away).
    ping_interval: float = 12.0
    dead_after: float = 28.0
    # A ping without a pong this long (at least 3 round trips) is followed by
    # another at once, and so on every pong_timeout: a static that crashed and
    # came back is found within about a second, not at the next ping_interval.
    pong_timeout: float = 1.0
    # A new boot claiming a wg IP whose session may still be alive (a restart
    # with a new key or from another address, or a second machine with the
    # same wg IP): the holder gets one ping and this long to answer; an answer
    # means two live nodes claim one address (a conflict: the newcomer is
    # refused).
    incumbent_timeout: float = 1.0
    # Re-resolve static peers' host names (dynamic DNS).
    resolve_interval: float = 60.0
    # Read `wg show` often while a handshake or endpoint is awaited or a direct
    # link is suspect, every wg_poll_active while a direct link carries traffic
    # (that is how a broken one is noticed within seconds), rarely otherwise.
    wg_poll_fast: float = 0.2
    # For wg_first_window after peers were set while one awaits its first
    # handshake (a start, a new peer): every wg_poll_first. A static learns a
    # NAT's outside endpoint from that handshake, and the pairs behind NATs
    # wait for it. Not in a mesh of more than FIRST_POLL_MAX_PEERS (the whole
    # dump is read each time). The reading that shows a node's first handshake
    # is on the path of every NAT pair's start; the fast reads end with the
    # last first handshake.
    wg_poll_first: float = 0.02
    wg_first_window: float = 1.0
    # For wg_punch_window after a punch began: every wg_poll_punch. The path
    # goes direct (routes and all) at the reading that shows the handshake,
    # which takes a round trip; a slower reading would be most of the wait.
    wg_poll_punch: float = 0.01
    wg_punch_window: float = 0.3
    wg_poll_active: float = 1.0
    # A static peer without a first handshake this long after it appeared in
    # our WireGuard is removed and set again, once per session: WireGuard
    # itself would retry only 5 s after an initiation that went unanswered.
    first_handshake_resend: float = 1.0
    wg_poll_slow: float = 5.0
    # Reconcile WireGuard and routes at least this often, even without changes
    # (repairs what someone else changed, retries failed commands).
    reconcile_interval: float = 5.0
    # A static node pushes a table change at once, or this long after its
    # last push if that was sooner (coalesces bursts).
    table_push_delay: float = 0.01
    # A challenge sent on first contact stays valid this long.
    challenge_lifetime: float = 10.0
    # Direct links between dynamic nodes (LAN, NAT traversal): how long to
    # wait for LAN probe answers, for a WireGuard handshake once both sides
    # are ready, how often to repeat "ready", and the retry backoff after a
    # failed attempt. A direct link without a handshake for direct_stale_after
    # (WireGuard re-handshakes every 2 min while in use) falls back to relay.
    probe_window: float = 0.15
    # The lower wg IP of a pair starts sending once the higher one says its
    # initiation has left, or this long (plus the gateway round trip) after
    # both were ready if that word is lost (it is repeated every
    # ready_interval): two handshake initiations that cross leave both
    # WireGuards waiting 5 s for a retry. The timeout covers one such retry.
    punch_stagger: float = 0.25
    # A punch whose WireGuard has sent nothing this long after it fired is
    # set up again (pairs.py rule 9).
    punch_send_check: float = 0.1
    punch_timeout: float = 6.0
    ready_interval: float = 0.25
    path_retry_min: float = 2.0
    path_retry_max: float = 300.0
    direct_stale_after: float = 200.0
    # A direct link that carries our packets but brings nothing back becomes
    # suspect (WireGuard's byte counters; see core/pairs.py): the peer gets a
    # ping every link_probe_interval, and if nothing at all comes back over
    # the link for link_timeout, traffic goes back to the gateway.
    link_probe_interval: float = 0.3
    link_timeout: float = 1.5
    # After a direct LAN link was lost, the lower wg IP of the pair probes the
    # peer's LAN addresses this often, for this long, so the link returns
    # within about a second of the LAN coming back.
    lan_reprobe_interval: float = 1.0
    lan_reprobe_for: float = 300.0
    # Latency to dynamic peers is measured (admin ping over the tunnel) only
    # while someone watches (TUI, `status`): an idle mesh stays quiet.
    latency_interval: float = 2.0
    latency_watch: float = 60.0  # how long one `status` request keeps measuring
    # With -H: change the WireGuard port after this long without any static peer.
    hop_after: float = 30.0
    # Local (LAN) addresses are re-read this often (roaming, DHCP).
    local_addresses_interval: float = 5.0
    # Start-up has settled (the daemon then imports its web and DNS stacks:
    # a third of a second of CPU) only once our WireGuard peers and routes
    # have not changed for this long: a static whose nodes are still
    # arriving, or a node whose peers are, is not settled yet.
    settle_quiet: float = 0.5
    # Log a compact peer summary this often at -v in headless mode.
    summary_interval: float = 30.0
    # Lazy links (network.yaml ``links: lazy``): a pair session and its direct
    # link exist while the pair carries traffic; after this long without any,
    # they are closed (peer removed, no keepalives) and traffic goes via the
    # gateway again until it asks for a direct link anew.
    idle_after: float = 180.0
    # Gateways (network.yaml gateways:): a gateway pings its static peers this
    # often, and the sessions between a gateway and the nodes that watch it
    # (statics, its users) end after gateway_dead_after of silence, so that
    # its networks move to the next gateway within seconds. A preferred
    # gateway that comes back serves again once alive for gateway_return
    # (no flapping).
    gateway_ping: float = 1.0
    gateway_dead_after: float = 3.0
    gateway_return: float = 10.0
    # WireGuard persistent keepalive towards static peers (seconds).
    keepalive: int = 25
    # Mobile nodes (--mobile): the keepalive towards their one static, which
    # holds their NAT mapping open. With WireGuard's handshake every two
    # minutes (176 + 120 + 60 bytes), 25 s would cost about 5.3 B/s; 40 s
    # costs about 4.5 (lower it if your carrier's NAT forgets sooner). A
    # static drops a mobile whose WireGuard shows no sign of it (its
    # keepalives, a handshake) for mobile_dead_after: two keepalives and a bit.
    mobile_keepalive: int = 40
    mobile_dead_after: float = 100.0


def timer_names() -> dict[str, str]:
    """camelCase name (as written in network.yaml) -> field name."""
    names = {}
    for field in Timers.__struct_fields__:
        head, *rest = field.split("_")
        names[head + "".join(part.capitalize() for part in rest)] = field
    return names
