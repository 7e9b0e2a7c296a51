# shellcheck shell=bash
# Shared helpers for the network-namespace testbeds in this directory.
#
# Source it from a testbed script (which must run as root):
#     . "$(dirname "$0")/lib.sh"
#
# Conventions
#   * A testbed is identified by a PREFIX ([a-z0-9_], at most 12 chars, no '-').
#     Every box is a network namespace named "${PREFIX}-${BOX}", so
#     "^${PREFIX}-" selects exactly the namespaces of one testbed.
#   * Every box gets a state directory ${TB_STATE_ROOT}/${PREFIX}/${BOX}.
#     Its subdirectory "wireguard" is bind-mounted over /run/wireguard by
#     tb_box_exec, inside a private mount namespace, so that wireguard-go's
#     control sockets (/var/run/wireguard/<if>.sock, /var/run -> /run) of
#     different boxes do not clash, while all commands run in the same box
#     see the same sockets (e.g. `wireguard-go wg0` then `wg show wg0`).
#   * Only addresses inside the namespaces are used: 198.51.100.0/24 for the
#     "internet", 192.168.x.0/24 for LANs.  Nothing touches the host's
#     network namespace.
#   * Interfaces are created directly inside their namespaces
#     (`ip link add ... netns X type veth peer ... netns Y`), so names never
#     collide with the host's or with other testbeds'.
#   * A box may have its own /etc files in ${TB_ETC_NETNS}/${PREFIX}-${BOX}/
#     (tb_hosts): `ip netns exec`, and so tb_box_exec, bind-mounts every file
#     there over its namesake in /etc for the process it starts, but only if
#     the file exists at that moment: write them before starting daemons.
#     The directories a testbed created are listed in
#     ${TB_STATE_ROOT}/${PREFIX}/etc_netns and removed by tb_down.

TB_STATE_ROOT=${TB_STATE_ROOT:-/run/wgnm-testbed}
# Fixed in iproute2 (NETNS_ETC_DIR), so not configurable.
TB_ETC_NETNS=/etc/netns

tb_log() {
    [ -n "${TB_QUIET:-}" ] || printf '[testbed] %s\n' "$*" >&2
}

tb_die() {
    printf '[testbed] error: %s\n' "$*" >&2
    exit 1
}

tb_require_root() {
    [ "$(id -u)" -eq 0 ] || tb_die "must run as root"
}

tb_check_prefix() {
    case "$1" in
        '' | *[!a-z0-9_]*) tb_die "bad prefix '$1' (allowed: a-z 0-9 _)" ;;
    esac
    [ "${#1}" -le 12 ] || tb_die "prefix '$1' too long (max 12 chars)"
}

# tb_ns PREFIX BOX -> namespace name
tb_ns() {
    printf '%s-%s\n' "$1" "$2"
}

tb_ns_exists() {
    [ -e "/run/netns/$1" ]
}

# tb_ns_add PREFIX BOX: new namespace with lo up, IPv6 off, plus the box's
# state directory.
tb_ns_add() {
    local ns
    ns=$(tb_ns "$1" "$2")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # IPv4-only testbed: no IPv6 link-local chatter or DAD.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
        net.ipv6.conf.default.disable_ipv6=1
    mkdir -p "${TB_STATE_ROOT}/$1/$2/wireguard" "${TB_STATE_ROOT}/$1/$2/wg_netmanager"
    chmod 0700 "${TB_STATE_ROOT}/$1/$2/wireguard" "${TB_STATE_ROOT}/$1/$2/wg_netmanager"
}

# tb_bridge_add NS BRIDGE [ADDR/LEN]: a switch (Linux bridge, no STP, no
# forward delay) inside namespace NS, optionally with an address.
tb_bridge_add() {
    local ns=$1 br=$2 addr=${3:-}
    ip -n "$ns" link add name "$br" type bridge stp_state 0 forward_delay 0
    ip -n "$ns" link set "$br" up
    if [ -n "$addr" ]; then
        ip -n "$ns" addr add "$addr" dev "$br"
    fi
}

# tb_plug SWITCH_NS BRIDGE PORT_NAME BOX_NS IFNAME [ADDR/LEN [GATEWAY]]
# A veth cable from box BOX_NS (interface IFNAME) to bridge BRIDGE in
# SWITCH_NS (port PORT_NAME, unique within SWITCH_NS, <= 15 chars).
# With GATEWAY, it becomes the box's default route.
tb_plug() {
    local swns=$1 br=$2 port=$3 ns=$4 ifname=$5 addr=${6:-} gw=${7:-}
    ip link add name "$ifname" netns "$ns" type veth peer name "$port" netns "$swns"
    ip -n "$swns" link set "$port" master "$br"
    ip -n "$swns" link set "$port" up
    ip -n "$ns" link set "$ifname" up
    if [ -n "$addr" ]; then
        ip -n "$ns" addr add "$addr" dev "$ifname"
    fi
    if [ -n "$gw" ]; then
        ip -n "$ns" route add default via "$gw"
    fi
}

# tb_nat NS WAN_IF LAN_IF: turn box NS into a typical home NAT router:
# forwarding on, LAN traffic leaving via WAN_IF is masqueraded, from WAN to
# LAN only established/related traffic is forwarded (no port forwarding),
# everything else that would be forwarded is dropped.  The router itself
# still answers e.g. pings on its WAN address, like most home routers.
tb_nat() {
    local ns=$1 wan=$2 lan=$3
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$ns" nft -f - <<EOF
table ip tb_nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "$wan" masquerade
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        ct state invalid drop
        iifname "$lan" oifname "$wan" accept
    }
}
EOF
}

# tb_box_exec PREFIX BOX CMD...: run CMD in the box, in a private mount
# namespace with the box's own /run/wireguard.  Replaces the calling shell
# (exec), so the PID of the caller becomes the PID of CMD.
tb_box_exec() {
    local prefix=$1 box=$2 ns dir
    shift 2
    [ "$#" -gt 0 ] || tb_die "exec: no command given"
    ns=$(tb_ns "$prefix" "$box")
    dir="${TB_STATE_ROOT}/${prefix}/${box}/wireguard"
    tb_ns_exists "$ns" || tb_die "no such box: $ns (is the testbed up?)"
    [ -d "$dir" ] || tb_die "no state directory $dir (is the testbed up?)"
    # The mount point itself lives on the host's /run (an empty directory).
    mkdir -p /run/wireguard /run/wg_netmanager
    # shellcheck disable=SC2016  # $1/$@ are for the inner sh
    exec ip netns exec "$ns" unshare -m --propagation private \
        sh -c 'mount --bind "$1" /run/wireguard && mount --bind "$2" /run/wg_netmanager &&
               shift 2 && exec "$@"' sh "$dir" "${dir%/wireguard}/wg_netmanager" "$@"
}

# tb_list_ns PREFIX: the namespaces belonging to the testbed PREFIX.
tb_list_ns() {
    ip netns list | awk -v p="$1-" 'index($1, p) == 1 { print $1 }'
}

# tb_kill_ns_pids NS: stop processes still living in namespace NS (only ever
# processes the testbed's user started there): SIGTERM, wait up to ~3 s,
# then SIGKILL, wait up to ~2 s.
tb_kill_ns_pids() {
    local ns=$1 pids _
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] || return 0
    tb_log "stopping processes in $ns: $(echo "$pids" | tr '\n' ' ')"
    # shellcheck disable=SC2086  # word splitting of the PID list is intended
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 30); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] || return 0
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    for _ in $(seq 20); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] || return 0
        sleep 0.1
    done
    tb_log "warning: processes left in $ns: $pids"
    return 0
}

# tb_down PREFIX: remove every namespace of the testbed (killing what runs
# inside first) and its state directory.  Idempotent.
tb_down() {
    local prefix=$1 ns
    for ns in $(tb_list_ns "$prefix"); do
        tb_kill_ns_pids "$ns"
        ip netns del "$ns" 2>/dev/null || tb_log "warning: could not delete $ns"
    done
    tb__etc_netns_down "$prefix"
    rm -rf "${TB_STATE_ROOT:?}/${prefix:?}"
    rmdir "$TB_STATE_ROOT" 2>/dev/null || true
    return 0
}

# tb__etc_netns_down PREFIX: remove the ${TB_ETC_NETNS}/PREFIX-BOX
# directories the testbed created (as listed by tb_hosts), and
# ${TB_ETC_NETNS} itself if the testbed created it and it is empty now.
tb__etc_netns_down() {
    local prefix=$1 list path box
    list="${TB_STATE_ROOT}/${prefix}/etc_netns"
    [ -f "$list" ] || return 0
    while IFS= read -r path; do
        box=${path#"${TB_ETC_NETNS}/${prefix}-"}
        case "$box" in
            "$path" | '' | *[!a-z0-9_]*) ;; # not one of ours: leave it
            *) rm -rf -- "$path" ;;
        esac
    done <"$list"
    if grep -qxF "$TB_ETC_NETNS" "$list"; then
        rmdir "$TB_ETC_NETNS" 2>/dev/null || true
    fi
}

tb__up_exit() {
    local rc=$?
    trap - EXIT
    if [ "$rc" -ne 0 ]; then
        tb_log "up failed (exit $rc), cleaning up"
        tb_down "$TB_UP_PREFIX"
    fi
    exit "$rc"
}

# tb_main USAGE_NAME UP_FUNCTION "$@": the common command-line front end.
#   up [PREFIX] | down [PREFIX] | exec PREFIX BOX CMD... | list [PREFIX]
# UP_FUNCTION PREFIX builds the topology; on failure everything is torn down.
# TB_USAGE_EXTRA, if set, is appended to the usage message (a script's own
# subcommands).
tb_main() {
    local name=$1 upfn=$2 cmd prefix
    shift 2
    cmd=${1:-}
    [ "$#" -gt 0 ] && shift
    case "$cmd" in
        up)
            prefix=${1:-wgnm}
            tb_check_prefix "$prefix"
            tb_require_root
            tb_down "$prefix"
            # Tear down on any failure while building (set -e is on).
            TB_UP_PREFIX=$prefix
            trap tb__up_exit EXIT
            "$upfn" "$prefix"
            trap - EXIT
            tb_log "$name $prefix is up: $(tb_list_ns "$prefix" | tr '\n' ' ')"
            ;;
        down)
            prefix=${1:-wgnm}
            tb_check_prefix "$prefix"
            tb_require_root
            tb_down "$prefix"
            ;;
        exec)
            [ "$#" -ge 3 ] || tb_die "usage: $name exec PREFIX BOX CMD..."
            tb_check_prefix "$1"
            tb_require_root
            tb_box_exec "$@"
            ;;
        list)
            prefix=${1:-wgnm}
            tb_check_prefix "$prefix"
            tb_list_ns "$prefix"
            ;;
        *)
            echo "usage: $name up [PREFIX] | down [PREFIX] | exec PREFIX BOX CMD... | list [PREFIX]${TB_USAGE_EXTRA:+ | $TB_USAGE_EXTRA}" >&2
            exit 2
            ;;
    esac
}

# tb_nat_drop_inbound NS WAN_IF: the NAT box NS also drops unsolicited
# traffic from WAN_IF to itself (except ICMP echo requests, so it still
# answers pings).  Dropping in the input hook means the packet's conntrack
# entry is never confirmed, so a probe that reaches the NAT before its LAN
# host has sent anything leaves no trace: the host's later outgoing packet
# keeps its source port (no clash with a stale inbound entry), and two NATed
# nodes can punch a hole by sending to each other's outside endpoint at about
# the same time.  Use after tb_nat.
tb_nat_drop_inbound() {
    local ns=$1 wan=$2
    ip netns exec "$ns" nft -f - <<NFT
table ip tb_nat_in {
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "$wan" ct state established,related accept
        iifname "$wan" icmp type echo-request accept
        iifname "$wan" drop
    }
}
NFT
}

# tb_nat_port_random NS WAN_IF: make the NAT of tb_nat "symmetric": every new
# flow (conntrack entry) leaving WAN_IF gets a random outside port, so one
# inside socket talking to two destinations is seen from two different
# ports (endpoint-dependent mapping; NAT traversal must fail).  Use after
# tb_nat.
tb_nat_port_random() {
    local ns=$1 wan=$2
    ip netns exec "$ns" nft -f - <<NFT
flush chain ip tb_nat postrouting
add rule ip tb_nat postrouting oifname "$wan" masquerade fully-random
NFT
}

# tb_bridge_plain NS: frames switched by the bridges in NS skip the IP
# firewall (br_netfilter, when the kernel has it, would otherwise pass
# bridged IPv4 traffic through the ip forward hook, where tb_nat's policy
# drop would cut two hosts on the same LAN off from each other).
tb_bridge_plain() {
    local ns=$1
    if ip netns exec "$ns" test -e /proc/sys/net/bridge/bridge-nf-call-iptables; then
        ip netns exec "$ns" sysctl -qw net.bridge.bridge-nf-call-iptables=0 \
            net.bridge.bridge-nf-call-arptables=0
    fi
}

# tb_home_router PREFIX BOX UP_NS UP_BRIDGE WAN_ADDR/LEN WAN_GW LAN_ADDR/LEN:
# a new box BOX whose interface "wan" is plugged into bridge UP_BRIDGE of
# namespace UP_NS (port name BOX), with a LAN bridge "lan" and NAT as
# tb_nat + tb_nat_drop_inbound.
tb_home_router() {
    local p=$1 box=$2 upns=$3 upbr=$4 wan=$5 gw=$6 lan=$7 ns
    ns=$(tb_ns "$p" "$box")
    tb_ns_add "$p" "$box"
    tb_plug "$upns" "$upbr" "$box" "$ns" wan "$wan" "$gw"
    tb_bridge_add "$ns" lan "$lan"
    tb_bridge_plain "$ns"
    tb_nat "$ns" wan lan
    tb_nat_drop_inbound "$ns" wan
}

# ---------------------------------------------------------------------------
# Fault injection and changes at run time.

# tb_need_ns NS: die unless namespace NS exists.
tb_need_ns() {
    tb_ns_exists "$1" || tb_die "no such box: $1 (is the testbed up?)"
}

# tb_check_box BOX: die unless BOX is a valid box name ([a-z0-9_]+).
tb_check_box() {
    case "$1" in
        '' | *[!a-z0-9_]*) tb_die "bad box name '$1' (allowed: a-z 0-9 _)" ;;
    esac
}

# tb_nft_replace NS FAMILY TABLE BODY: create the nft table FAMILY TABLE in
# namespace NS with BODY (its chains), atomically replacing a table of that
# name if there is one (one transaction: add, delete, add).
tb_nft_replace() {
    local ns=$1 family=$2 table=$3 body=$4
    ip netns exec "$ns" nft -f - <<NFT
table $family $table
delete table $family $table
table $family $table {
$body
}
NFT
}

# tb_nft_delete NS FAMILY TABLE: delete the nft table FAMILY TABLE in
# namespace NS; no error if there is none.
tb_nft_delete() {
    local ns=$1 family=$2 table=$3
    ip netns exec "$ns" nft -f - <<NFT
table $family $table
delete table $family $table
NFT
}

# tb_bridge_cut NS TABLE LOCAL_IP PEER_IP...: the bridges of switch box NS
# no longer pass IPv4 between LOCAL_IP and any PEER_IP, both directions (nft
# table "bridge TABLE" of its own, forward hook; replaces an earlier one), as
# a failing switch or Wi-Fi client isolation would. The hosts' packets still
# leave them (a WireGuard on them counts them as sent); traffic to and from
# the switch box itself, and ARP, still pass. Undo with tb_nft_delete NS
# bridge TABLE.
tb_bridge_cut() {
    local ns=$1 table=$2 local_ip=$3 peers
    shift 3
    [ "$#" -gt 0 ] || tb_die "tb_bridge_cut: no peer address"
    peers=$(IFS=,; printf '%s' "$*")
    tb_nft_replace "$ns" bridge "$table" "
    chain forward {
        type filter hook forward priority filter; policy accept;
        ip saddr $local_ip ip daddr { $peers } drop
        ip saddr { $peers } ip daddr $local_ip drop
    }"
}

# tb_bridge_isolate NS: the bridges in namespace NS forward nothing between
# their ports (nft table "bridge tb_partition", forward chain policy drop).
# Links, carrier and addresses stay; traffic to a bridge's own address is
# not forwarded but delivered, so it still gets there.
tb_bridge_isolate() {
    tb_nft_replace "$1" bridge tb_partition "
    chain forward {
        type filter hook forward priority filter; policy drop;
    }"
}

# tb_bridge_unisolate NS: undo tb_bridge_isolate (no error if not isolated).
tb_bridge_unisolate() {
    tb_nft_delete "$1" bridge tb_partition
}

# tb_has_addr NS IFNAME ADDR/LEN: true if IFNAME in NS has exactly that
# IPv4 address and prefix length.
tb_has_addr() {
    ip -n "$1" -4 -o addr show dev "$2" | awk -v a="$3" '$4 == a { f = 1 } END { exit !f }'
}

# tb_addr_in_use PREFIX IP: true if a box of testbed PREFIX has address IP.
tb_addr_in_use() {
    local prefix=$1 ip=$2 ns
    for ns in $(tb_list_ns "$prefix"); do
        if ip -n "$ns" -4 -o addr show |
            awk -v a="$ip" '{ split($4, x, "/") } x[1] == a { f = 1 } END { exit !f }'; then
            return 0
        fi
    done
    return 1
}

# tb_readdress NS IFNAME OLD/LEN NEW/LEN GATEWAY: IFNAME's address OLD is
# replaced by NEW, as a DHCP client does when a renewal brings a new lease
# (old address removed, new one added; removing the last address of a
# device also removes the routes through it), then the default route via
# GATEWAY is restored.  Idempotent: with NEW already there, OLD is removed
# if still present and the route ensured.
tb_readdress() {
    local ns=$1 ifname=$2 old=$3 new=$4 gw=$5
    if tb_has_addr "$ns" "$ifname" "$new"; then
        if tb_has_addr "$ns" "$ifname" "$old"; then
            ip -n "$ns" addr del "$old" dev "$ifname"
        fi
    else
        tb_has_addr "$ns" "$ifname" "$old" || tb_die "$ns: $ifname has neither $old nor $new"
        ip -n "$ns" addr del "$old" dev "$ifname"
        ip -n "$ns" addr add "$new" dev "$ifname"
    fi
    ip -n "$ns" route replace default via "$gw" dev "$ifname"
}

# tb_hosts PREFIX BOX [LINE...]: write the box's hosts file
# ${TB_ETC_NETNS}/PREFIX-BOX/hosts: a localhost line, then one line per LINE
# (e.g. "198.51.100.1 beta.test").  Processes started in the box afterwards
# (tb_box_exec, `ip netns exec`) see it as /etc/hosts through a bind mount
# of that file, made when they start, and only if the file exists then
# (earlier ones keep the host's /etc/hosts).  So the file is rewritten in
# place (truncated, same inode), never replaced by a rename, which running
# processes would not see.  A reader may catch the file empty for the
# moment between truncation and write.
# Also writes a resolv.conf (once) pointing at the box's own loopback, so that
# names missing from the hosts file fail at once.
tb_hosts() {
    local prefix=$1 box=$2 ns state dir line
    shift 2
    tb_check_box "$box"
    ns=$(tb_ns "$prefix" "$box")
    tb_need_ns "$ns"
    state="${TB_STATE_ROOT}/${prefix}"
    [ -d "$state/$box" ] || tb_die "no state directory $state/$box (is the testbed up?)"
    for line in "$@"; do
        case "$line" in
            *$'\n'*) tb_die "hosts: a LINE must not contain a newline" ;;
        esac
    done
    dir="${TB_ETC_NETNS}/${ns}"
    # Record before creating, so that tb_down removes what we made even if
    # we are interrupted in between.
    if [ ! -d "$TB_ETC_NETNS" ]; then
        printf '%s\n' "$TB_ETC_NETNS" >>"$state/etc_netns"
        install -d -m 0755 "$TB_ETC_NETNS"
    fi
    if [ ! -d "$dir" ]; then
        printf '%s\n' "$dir" >>"$state/etc_netns"
        install -d -m 0755 "$dir"
    fi
    # `>` opens with O_TRUNC: same inode, seen through existing bind mounts.
    printf '%s\n' "127.0.0.1	localhost" "$@" >"$dir/hosts"
    chmod 0644 "$dir/hosts"
    # Names not in the hosts file fail at once, on the box's own loopback,
    # instead of waiting for the host's nameserver (unreachable from a box).
    if [ ! -e "$dir/resolv.conf" ]; then
        printf '%s\n' "nameserver 127.0.0.1" "options timeout:1 attempts:1" >"$dir/resolv.conf"
        chmod 0644 "$dir/resolv.conf"
    fi
}
