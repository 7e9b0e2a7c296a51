#!/usr/bin/env bash
# Two nested home routers (double NAT).
#
#   namespace P-inet: bridge br0 = the "internet" 198.51.100.0/24 (the
#   bridge itself has 198.51.100.254, every internet box's default gateway;
#   it forwards nothing)
#
#      P-beta                         P-outer
#   198.51.100.1                  wan 198.51.100.3
#   (static node)                 NAT (home router)
#        |                              |
#   =====+======== br0 =================+=================  P-inet
#                                       |
#                                lan 192.168.1.1
#                              +--------+---------+
#                          P-charlie           P-inner
#                         192.168.1.2      wan 192.168.1.10
#                                          NAT (second router)
#                                          lan 192.168.5.1
#                                                 |
#                                              P-delta
#                                            192.168.5.2
#
# delta's traffic is masqueraded twice (to 192.168.1.10, then to
# 198.51.100.3).  charlie reaches inner's WAN address but not delta.  Both
# NAT boxes: masquerade, no port forwarding, forward WAN->LAN only
# established/related, drop unsolicited inbound to themselves (but answer
# pings); see tb_nat and tb_nat_drop_inbound in lib.sh.
#
# Usage (as root):
#   ns/two_routers.sh up   [PREFIX]           # PREFIX defaults to "wgnm"
#   ns/two_routers.sh down [PREFIX]           # idempotent
#   ns/two_routers.sh exec PREFIX BOX CMD...  # BOX: beta outer charlie inner delta inet
#   ns/two_routers.sh list [PREFIX]
set -euo pipefail

# shellcheck source=ns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

two_routers_up() {
    local p=$1 inet outer inner
    inet=$(tb_ns "$p" inet)
    outer=$(tb_ns "$p" outer)
    inner=$(tb_ns "$p" inner)

    tb_ns_add "$p" inet
    tb_bridge_add "$inet" br0 198.51.100.254/24

    tb_ns_add "$p" beta
    tb_plug "$inet" br0 beta "$(tb_ns "$p" beta)" eth0 198.51.100.1/24 198.51.100.254

    tb_home_router "$p" outer "$inet" br0 198.51.100.3/24 198.51.100.254 192.168.1.1/24
    tb_ns_add "$p" charlie
    tb_plug "$outer" lan charlie "$(tb_ns "$p" charlie)" eth0 192.168.1.2/24 192.168.1.1

    tb_home_router "$p" inner "$outer" lan 192.168.1.10/24 192.168.1.1 192.168.5.1/24
    tb_ns_add "$p" delta
    tb_plug "$inner" lan delta "$(tb_ns "$p" delta)" eth0 192.168.5.2/24 192.168.5.1
}

tb_main "$(basename "$0")" two_routers_up "$@"
