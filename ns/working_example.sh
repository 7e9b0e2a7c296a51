#!/usr/bin/env bash
# The working example: a static VPS, a VPS behind its own firewall, and two
# nodes on one home LAN behind a NAT router.
#
#              Alpha-VPS          Internet       Beta-VPS
#           behind firewall ---------+---------  public IP
#                                    |
#                                  Router (NAT)
#                                    |
#                       192.168.x.x  |
#             Charlie   ------------------------  Delta
#
#   namespace P-inet: bridge br0 = the "internet" 198.51.100.0/24 (the
#   bridge itself has 198.51.100.254, every internet box's default gateway;
#   it forwards nothing, so unknown destinations are dropped)
#
#      P-beta            P-fw                     P-router
#   198.51.100.1     wan 198.51.100.4          wan 198.51.100.3
#   (static node)    NAT (Alpha's firewall)    NAT (home router)
#        |                |                         |
#   =====+===== br0 ======+=========================+=========  P-inet
#                         |                         |
#                  lan 192.168.2.1           lan 192.168.1.1
#                         |                  +------+------+
#                     P-alpha            P-charlie      P-delta
#                   192.168.2.2         192.168.1.2   192.168.1.3
#
# charlie and delta share one LAN bridge, so they reach each other directly
# on 192.168.1.x.  Every node's interface is "eth0" (NAT boxes: "wan" and
# the bridge "lan").
#
# Both NAT boxes: masquerade, no port forwarding, forward WAN->LAN only
# established/related, and drop unsolicited inbound traffic to themselves
# (but answer pings).  Linux masquerade keeps the inside source port when it
# can: the mapping is endpoint-independent, the filtering conntrack-based
# (address and port dependent), so two NATed nodes can punch a hole by
# sending to each other's outside endpoint at about the same time.  No
# hairpinning: a LAN host cannot reach another LAN host through the router's
# outside address.
#
# SYMMETRIC=1 (at `up`): alpha's firewall gives every new flow a random
# outside port (masquerade fully-random), i.e. endpoint-dependent mapping:
# NAT traversal to alpha must fail there.
#
# Usage (as root):
#   ns/working_example.sh up   [PREFIX]           # PREFIX defaults to "wgnm"
#   ns/working_example.sh down [PREFIX]           # idempotent
#   ns/working_example.sh exec PREFIX BOX CMD...  # BOX: beta fw alpha router
#                                                 #   charlie delta inet (cafe)
#   ns/working_example.sh list [PREFIX]
#   ns/working_example.sh roam PREFIX
#
# `roam` moves delta from the home LAN to behind a new NAT router "cafe"
# (wan 198.51.100.5, lan 192.168.3.1; delta becomes 192.168.3.2): delta's
# cable into the home LAN is removed and a new one plugged into the cafe's
# LAN. The delta namespace, its other interfaces (e.g. wg0) and the processes
# running in it stay.
set -euo pipefail

# shellcheck source=ns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

working_example_up() {
    local p=$1 inet fw router
    inet=$(tb_ns "$p" inet)
    fw=$(tb_ns "$p" fw)
    router=$(tb_ns "$p" router)

    tb_ns_add "$p" inet
    tb_bridge_add "$inet" br0 198.51.100.254/24

    tb_ns_add "$p" beta
    tb_plug "$inet" br0 beta "$(tb_ns "$p" beta)" eth0 198.51.100.1/24 198.51.100.254

    tb_home_router "$p" fw "$inet" br0 198.51.100.4/24 198.51.100.254 192.168.2.1/24
    if [ "${SYMMETRIC:-0}" = 1 ]; then
        tb_nat_port_random "$fw" wan
        tb_log "fw: symmetric NAT (random outside port per flow)"
    fi
    tb_ns_add "$p" alpha
    tb_plug "$fw" lan alpha "$(tb_ns "$p" alpha)" eth0 192.168.2.2/24 192.168.2.1

    tb_home_router "$p" router "$inet" br0 198.51.100.3/24 198.51.100.254 192.168.1.1/24
    tb_ns_add "$p" charlie
    tb_plug "$router" lan charlie "$(tb_ns "$p" charlie)" eth0 192.168.1.2/24 192.168.1.1
    tb_ns_add "$p" delta
    tb_plug "$router" lan delta "$(tb_ns "$p" delta)" eth0 192.168.1.3/24 192.168.1.1
}

working_example_roam() {
    local p=$1 inet delta cafe
    inet=$(tb_ns "$p" inet)
    delta=$(tb_ns "$p" delta)
    cafe=$(tb_ns "$p" cafe)
    tb_ns_exists "$delta" || tb_die "no such box: $delta (is the testbed up?)"
    tb_ns_exists "$inet" || tb_die "no such box: $inet (is the testbed up?)"
    tb_ns_exists "$cafe" && tb_die "$cafe exists already (delta roamed before)"
    tb_home_router "$p" cafe "$inet" br0 198.51.100.5/24 198.51.100.254 192.168.3.1/24
    # Unplug from the home LAN (the veth's other end in the router goes too,
    # and with it delta's default route), then plug into the cafe's LAN.
    ip -n "$delta" link del eth0
    tb_plug "$cafe" lan delta "$delta" eth0 192.168.3.2/24 192.168.3.1
    tb_log "delta roamed to the cafe (192.168.3.2 behind 198.51.100.5)"
}

if [ "${1:-}" = roam ]; then
    [ "$#" -eq 2 ] || tb_die "usage: $(basename "$0") roam PREFIX"
    tb_check_prefix "$2"
    tb_require_root
    working_example_roam "$2"
    exit 0
fi

tb_main "$(basename "$0")" working_example_up "$@"
