#!/usr/bin/env bash
# Three-box testbed: one static node, one dynamic node, one node behind NAT.
#
#   namespace P-inet: bridge br0 = the "internet" 198.51.100.0/24
#   (the bridge itself has 198.51.100.254, the default gateway of all
#   internet boxes; it forwards nothing, so unknown destinations are dropped)
#
#        P-alice              P-bob                 P-router
#     198.51.100.1/24      198.51.100.2/24      wan 198.51.100.3/24
#     (static node)        (dynamic node)       NAT: masquerade, no port
#          |                    |               forwarding, WAN->LAN only
#          |                    |               established/related
#   =======+====== br0 =========+===================+==========  P-inet
#                                                   |
#                                            lan 192.168.1.1/24
#                                                   |  (bridge "lan"
#                                                   |   in P-router)
#                                               P-charlie
#                                            192.168.1.2/24
#                                            default via 192.168.1.1
#                                            (dynamic node behind NAT)
#
# Every box's interface towards its network is "eth0" (router: "wan").
#
# Usage (as root):
#   ns/three_boxes.sh up   [PREFIX]           # PREFIX defaults to "wgnm"
#   ns/three_boxes.sh down [PREFIX]           # idempotent
#   ns/three_boxes.sh exec PREFIX BOX CMD...  # BOX: alice bob router charlie inet
#   ns/three_boxes.sh list [PREFIX]           # namespaces of the testbed
#
# `exec` runs CMD in the box's network namespace and in a private mount
# namespace whose /run/wireguard is the box's own directory, so several boxes
# can each run `wireguard-go wg0`.
set -euo pipefail

# shellcheck source=ns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

three_boxes_up() {
    local p=$1 inet alice bob router charlie
    inet=$(tb_ns "$p" inet)
    alice=$(tb_ns "$p" alice)
    bob=$(tb_ns "$p" bob)
    router=$(tb_ns "$p" router)
    charlie=$(tb_ns "$p" charlie)

    tb_ns_add "$p" inet
    tb_bridge_add "$inet" br0 198.51.100.254/24

    tb_ns_add "$p" alice
    tb_plug "$inet" br0 alice "$alice" eth0 198.51.100.1/24 198.51.100.254

    tb_ns_add "$p" bob
    tb_plug "$inet" br0 bob "$bob" eth0 198.51.100.2/24 198.51.100.254

    tb_ns_add "$p" router
    tb_plug "$inet" br0 router "$router" wan 198.51.100.3/24 198.51.100.254
    tb_bridge_add "$router" lan 192.168.1.1/24
    tb_nat "$router" wan lan

    tb_ns_add "$p" charlie
    tb_plug "$router" lan charlie "$charlie" eth0 192.168.1.2/24 192.168.1.1
}

tb_main "$(basename "$0")" three_boxes_up "$@"
