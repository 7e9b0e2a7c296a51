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
#                                                 #   charlie delta inet (cafe evil
#                                                 #   lamp web)
#   ns/working_example.sh list [PREFIX]
#   ns/working_example.sh roam PREFIX
#   ns/working_example.sh lan-cut PREFIX | lan-heal PREFIX
#   ns/working_example.sh partition PREFIX | heal PREFIX
#   ns/working_example.sh attacker PREFIX
#   ns/working_example.sh lan-device PREFIX
#   ns/working_example.sh exit-net PREFIX
#   ns/working_example.sh readdress PREFIX
#   ns/working_example.sh move-beta PREFIX NEWADDR   # e.g. 198.51.100.11
#   ns/working_example.sh hosts PREFIX BOX [LINE...] # e.g. "198.51.100.1 beta.test"
#
# `roam` moves delta from the home LAN to behind a new NAT router "cafe"
# (wan 198.51.100.5, lan 192.168.3.1; delta becomes 192.168.3.2): delta's
# cable into the home LAN is removed and a new one plugged into the cafe's
# LAN. The delta namespace, its other interfaces (e.g. wg0) and the processes
# running in it stay.
#
# Faults and changes for tests.  All need the testbed up (else they fail),
# print one [testbed] line, and are idempotent (except `roam`):
#
# `lan-cut`: charlie (192.168.1.2) and delta (192.168.1.3, or 192.168.1.33
# after `readdress`) no longer reach each other directly: the home router's
# LAN bridge drops every IPv4 packet between them, both directions (nft
# table "bridge tb_lan_cut" in P-router, forward hook), as a failing switch
# would; their packets still leave them.  ARP still works, and both still
# reach the internet through the router.  Harmless after a roam.
# `lan-heal` deletes exactly that table (no error if there is none).
#
# `partition`: the internet bridge br0 (in P-inet) forwards nothing between
# its ports (nft table "bridge tb_partition" in P-inet, forward policy
# drop): no internet box reaches another, but links, carrier and addresses
# stay (the bridge's own 198.51.100.254 still answers).  `heal` deletes the
# table (no error if there is none).
#
# `attacker`: a box "evil" on the internet, 198.51.100.66/24 on eth0 into
# br0, default route via 198.51.100.254, no NAT.  Nothing happens if it is
# there already.  `down` removes it like every box.
#
# `lan-device`: a box "lamp" that runs no daemon (a printer, an IoT box) on
# the home LAN of charlie and delta: 192.168.1.10/24 on eth0 into the
# router's LAN bridge, default route via 192.168.1.1. The mesh reaches it
# only through a gateway (network.yaml gateways:). Nothing happens if it is
# there already.
#
# `exit-net`: a box "web" (203.0.113.80/24) behind beta, on a cable of its
# own (beta's eth1, 203.0.113.1/24; web's default route via beta): a host
# of "the internet" that only beta reaches (beta does not forward; the
# internet bridge knows nothing of 203.0.113.0/24), so only traffic that
# leaves through beta as an exit node gets there. Nothing happens if it is
# there already.
#
# `readdress`: delta's home LAN address changes as after a DHCP renewal
# with a new lease: 192.168.1.3/24 -> 192.168.1.33/24 on eth0 (the old
# address goes first, taking the routes along, then the new one comes and
# the default route via 192.168.1.1 is restored).  Refused once delta has
# roamed.
#
# `move-beta NEWADDR`: beta's public address changes (a VPS with a dynamic
# DNS name gets a new IP), e.g. 198.51.100.1 -> 198.51.100.11 (any
# 198.51.100.1-253 no box of the testbed has); the default route via
# 198.51.100.254 is restored.
#
# `hosts BOX [LINE...]`: write /etc/netns/P-BOX/hosts (a localhost line plus
# the LINEs), which `ip netns exec`, and so `exec`, bind-mounts over
# /etc/hosts for the processes it starts.  The file is rewritten in place
# (same inode), so processes started since it first existed see every later
# change.  Processes started before it existed keep the host's /etc/hosts
# for good: write hosts files BEFORE starting the daemons that should see
# them.  `down` removes the /etc/netns/P-* directories it created (and
# /etc/netns if it created that and it is empty then).
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

# Addresses the fault commands rely on.
WE_CHARLIE=192.168.1.2
WE_DELTA=192.168.1.3
WE_DELTA_NEW=192.168.1.33
WE_EVIL=198.51.100.66
WE_LAMP=192.168.1.10
WE_WEB=203.0.113.80
WE_BETA_EXIT=203.0.113.1

working_example_lan_cut() {
    local router
    router=$(tb_ns "$1" router)
    tb_need_ns "$router"
    tb_bridge_cut "$router" tb_lan_cut "$WE_CHARLIE" "$WE_DELTA" "$WE_DELTA_NEW"
    tb_log "lan cut: charlie $WE_CHARLIE x delta $WE_DELTA/$WE_DELTA_NEW"
}

working_example_lan_heal() {
    local router
    router=$(tb_ns "$1" router)
    tb_need_ns "$router"
    tb_nft_delete "$router" bridge tb_lan_cut
    tb_log "lan healed: charlie and delta reach each other again"
}

working_example_partition() {
    local inet
    inet=$(tb_ns "$1" inet)
    tb_need_ns "$inet"
    tb_bridge_isolate "$inet"
    tb_log "internet partitioned: br0 forwards nothing"
}

working_example_heal() {
    local inet
    inet=$(tb_ns "$1" inet)
    tb_need_ns "$inet"
    tb_bridge_unisolate "$inet"
    tb_log "internet healed: br0 forwards again"
}

working_example_attacker() {
    local p=$1 inet evil
    inet=$(tb_ns "$p" inet)
    evil=$(tb_ns "$p" evil)
    tb_need_ns "$inet"
    if tb_ns_exists "$evil"; then
        tb_has_addr "$evil" eth0 "$WE_EVIL/24" ||
            tb_die "$evil exists but has no $WE_EVIL/24 on eth0 (run down and up)"
        tb_log "attacker evil is there already ($WE_EVIL)"
        return 0
    fi
    tb_ns_add "$p" evil
    tb_plug "$inet" br0 evil "$evil" eth0 "$WE_EVIL/24" 198.51.100.254
    tb_log "attacker evil is on the internet ($WE_EVIL, no NAT)"
}

working_example_lan_device() {
    local p=$1 router lamp
    router=$(tb_ns "$p" router)
    lamp=$(tb_ns "$p" lamp)
    tb_need_ns "$router"
    if tb_ns_exists "$lamp"; then
        tb_has_addr "$lamp" eth0 "$WE_LAMP/24" ||
            tb_die "$lamp exists but has no $WE_LAMP/24 on eth0 (run down and up)"
        tb_log "lan device lamp is there already ($WE_LAMP)"
        return 0
    fi
    tb_ns_add "$p" lamp
    tb_plug "$router" lan lamp "$lamp" eth0 "$WE_LAMP/24" 192.168.1.1
    tb_log "lan device lamp is on the home LAN ($WE_LAMP, no daemon)"
}

working_example_exit_net() {
    local p=$1 beta web
    beta=$(tb_ns "$p" beta)
    web=$(tb_ns "$p" web)
    tb_need_ns "$beta"
    if tb_ns_exists "$web"; then
        tb_has_addr "$web" eth0 "$WE_WEB/24" ||
            tb_die "$web exists but has no $WE_WEB/24 on eth0 (run down and up)"
        tb_log "exit net web is there already ($WE_WEB behind beta)"
        return 0
    fi
    tb_ns_add "$p" web
    ip link add name eth1 netns "$beta" type veth peer name eth0 netns "$web"
    ip -n "$beta" addr add "$WE_BETA_EXIT/24" dev eth1
    ip -n "$beta" link set eth1 up
    ip -n "$web" addr add "$WE_WEB/24" dev eth0
    ip -n "$web" link set eth0 up
    ip -n "$web" route add default via "$WE_BETA_EXIT"
    tb_log "exit net: web ($WE_WEB) behind beta's eth1 ($WE_BETA_EXIT)"
}

working_example_readdress() {
    local p=$1 delta
    delta=$(tb_ns "$p" delta)
    tb_need_ns "$delta"
    if tb_ns_exists "$(tb_ns "$p" cafe)"; then
        tb_die "readdress: delta has roamed (it is not on the home LAN)"
    fi
    if tb_has_addr "$delta" eth0 "$WE_DELTA_NEW/24"; then
        tb_readdress "$delta" eth0 "$WE_DELTA/24" "$WE_DELTA_NEW/24" 192.168.1.1
        tb_log "delta has $WE_DELTA_NEW already"
        return 0
    fi
    tb_readdress "$delta" eth0 "$WE_DELTA/24" "$WE_DELTA_NEW/24" 192.168.1.1
    tb_log "delta readdressed: $WE_DELTA -> $WE_DELTA_NEW"
}

working_example_move_beta() {
    local p=$1 new=$2 beta old
    beta=$(tb_ns "$p" beta)
    tb_need_ns "$beta"
    [[ "$new" =~ ^198\.51\.100\.(25[0-3]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]?)$ ]] ||
        tb_die "move-beta: '$new' is not an address 198.51.100.1-253"
    old=$(ip -n "$beta" -4 -o addr show dev eth0 | awk 'NR == 1 { print $4 }')
    if [ "$old" = "$new/24" ]; then
        ip -n "$beta" route replace default via 198.51.100.254 dev eth0
        tb_log "beta has $new already"
        return 0
    fi
    [ -n "$old" ] || tb_die "move-beta: beta's eth0 has no address"
    if tb_addr_in_use "$p" "$new"; then
        tb_die "move-beta: $new is in use in testbed $p"
    fi
    tb_readdress "$beta" eth0 "$old" "$new/24" 198.51.100.254
    tb_log "beta moved: ${old%/*} -> $new"
}

working_example_hosts() {
    local p=$1 box=$2
    shift 2
    tb_hosts "$p" "$box" "$@"
    tb_log "hosts of $box written: ${TB_ETC_NETNS}/$(tb_ns "$p" "$box")/hosts (localhost + $# lines)"
}

TB_USAGE_EXTRA="roam PREFIX | lan-cut PREFIX | lan-heal PREFIX | partition PREFIX | heal PREFIX"
TB_USAGE_EXTRA+=" | attacker PREFIX | lan-device PREFIX | exit-net PREFIX"
TB_USAGE_EXTRA+=" | readdress PREFIX | move-beta PREFIX NEWADDR"
TB_USAGE_EXTRA+=" | hosts PREFIX BOX [LINE...]"

case "${1:-}" in
    roam | lan-cut | lan-heal | partition | heal | attacker | lan-device | exit-net | readdress)
        [ "$#" -eq 2 ] || tb_die "usage: $(basename "$0") $1 PREFIX"
        tb_check_prefix "$2"
        tb_require_root
        "working_example_${1//-/_}" "$2"
        exit 0
        ;;
    move-beta)
        [ "$#" -eq 3 ] || tb_die "usage: $(basename "$0") move-beta PREFIX NEWADDR"
        tb_check_prefix "$2"
        tb_require_root
        working_example_move_beta "$2" "$3"
        exit 0
        ;;
    hosts)
        [ "$#" -ge 3 ] || tb_die "usage: $(basename "$0") hosts PREFIX BOX [LINE...]"
        tb_check_prefix "$2"
        tb_require_root
        shift
        working_example_hosts "$@"
        exit 0
        ;;
esac

tb_main "$(basename "$0")" working_example_up "$@"
