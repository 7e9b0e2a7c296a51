#!/usr/bin/env bash
# Two public statics and three home LANs of eight nodes, each LAN behind its
# own NAT router: the shape of the simulator's lan_mesh(26, statics=2).
#
#   namespace P-inet: bridge br0 = the "internet" 198.51.100.0/24 (the
#   bridge itself has 198.51.100.254, every internet box's default gateway)
#
#      P-s1           P-s2          P-r0            P-r1            P-r2
#   198.51.100.1  198.51.100.2  wan .10         wan .11         wan .12
#   (static)      (static)      NAT             NAT             NAT
#        |            |          |               |               |
#   =====+============+==========+=== br0 =======+===============+====  P-inet
#                                |               |               |
#                         lan 192.168.1.1  lan 192.168.2.1  lan 192.168.3.1
#                          P-n3 .. P-n10    P-n11 .. P-n18   P-n19 .. P-n26
#                          .2 .. .9         .2 .. .9         .2 .. .9
#
# Node k (3..26) sits on LAN (k-3)/8 at 192.168.<LAN+1>.<(k-3)%8+2>; its wg
# IP is meant to be 10.1.1.k (the statics 10.1.1.1 and 10.1.1.2). The NAT
# routers are tb_home_router (masquerade, endpoint-independent mapping, no
# port forwarding, unsolicited inbound dropped); see lib.sh.
#
# Usage (as root):
#   ns/three_lans.sh up [PREFIX] | down [PREFIX] | exec PREFIX BOX CMD... | list [PREFIX]
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

three_lans_up() {
    local p=$1 inet lan k seat router
    inet=$(tb_ns "$p" inet)
    tb_ns_add "$p" inet
    tb_bridge_add "$inet" br0 198.51.100.254/24
    for k in 1 2; do
        tb_ns_add "$p" "s$k"
        tb_plug "$inet" br0 "s$k" "$(tb_ns "$p" "s$k")" eth0 "198.51.100.$k/24" 198.51.100.254
    done
    for lan in 0 1 2; do
        router=$(tb_ns "$p" "r$lan")
        tb_home_router "$p" "r$lan" "$inet" br0 "198.51.100.$((10 + lan))/24" 198.51.100.254 \
            "192.168.$((lan + 1)).1/24"
        for seat in 0 1 2 3 4 5 6 7; do
            k=$((3 + 8 * lan + seat))
            tb_ns_add "$p" "n$k"
            tb_plug "$router" lan "n$k" "$(tb_ns "$p" "n$k")" eth0 \
                "192.168.$((lan + 1)).$((seat + 2))/24" "192.168.$((lan + 1)).1"
        done
    done
}

tb_main "$(basename "$0")" three_lans_up "$@"
