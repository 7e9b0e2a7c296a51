#!/usr/bin/env bash
# Install everything needed to develop and test wg_netmanager on Debian 12 /
# Ubuntu: the system packages (WireGuard userspace, iproute2, nftables, ...)
# and a virtualenv .venv with the package installed editable plus its test
# extras.  Idempotent and quick on reruns: apt only runs when a package is
# missing, pip only when setup.cfg/pyproject.toml changed since the last
# successful install.
#
# Usage: scripts/install.sh [--nebula]  (as root, or a user with sudo)
#        --nebula: also Nebula (the Debian package), which only the benchmark
#                  scripts/bench_mesh.py runs, side by side with wg_netmanager
# Env:   PYTHON=python3.11             interpreter for the venv (default python3)
#        WGNM_FORCE_PIP=1              reinstall into the venv even if unchanged
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}

# systemd: its systemd-analyze verifies the shipped unit (nothing is started).
# chromium, chromium-driver: the web UI's test in a real (headless) browser.
# zbar-tools: zbarimg reads the clients' QR codes back, as a phone's camera would.
PACKAGES=(wireguard-tools wireguard-go iproute2 nftables iputils-ping tmux faketime python3-venv
    systemd chromium chromium-driver zbar-tools)
for arg in "$@"; do
    case "$arg" in
        --nebula) PACKAGES+=(nebula) ;;
        *) die "unknown option '$arg' (usage: scripts/install.sh [--nebula])" ;;
    esac
done

# --- system packages ------------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    SUDO=(false)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
    say "system packages present"
else
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: ${missing[*]}"
    [ "${SUDO[0]:-}" != false ] || die "not root and no sudo; cannot install: ${missing[*]}"
    say "installing system packages: ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${PACKAGES[@]}"
fi

# --- virtualenv -----------------------------------------------------------
# When run as root (e.g. `sudo scripts/test.sh`) in a checkout owned by a
# normal user, build the venv as that user so the tree stays theirs.
owner=$(stat -c %U "$ROOT")
AS_OWNER=()
if [ "$(id -u)" -eq 0 ] && [ "$owner" != root ] && [ "$owner" != UNKNOWN ] &&
    command -v runuser >/dev/null 2>&1; then
    owner_home=$(getent passwd "$owner" | cut -d: -f6)
    AS_OWNER=(runuser -u "$owner" -- env HOME="${owner_home:-/tmp}")
fi
as_owner() {
    if [ "${#AS_OWNER[@]}" -gt 0 ]; then
        "${AS_OWNER[@]}" "$@"
    else
        "$@"
    fi
}

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$PYTHON is $("$PYTHON" -V 2>&1); wg_netmanager needs Python >= 3.11 (set PYTHON=...)"

VENV="$ROOT/.venv"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "venv present: .venv ($("$VENV/bin/python" -V 2>&1))"
else
    if [ -e "$VENV" ]; then
        say "venv .venv is broken, recreating"
        rm -rf "$VENV"
    fi
    say "creating venv .venv with $("$PYTHON" -V 2>&1)"
    as_owner "$PYTHON" -m venv "$VENV"
fi

STAMP="$VENV/.wgnm-install-stamp"
want=$(cat setup.cfg pyproject.toml 2>/dev/null | sha256sum | cut -d' ' -f1)
have=$(cat "$STAMP" 2>/dev/null || true)
if [ "$want" = "$have" ] && [ -z "${WGNM_FORCE_PIP:-}" ] &&
    "$VENV/bin/python" -c 'import wg_netmanager, pytest, mypy, ruff' 2>/dev/null; then
    say "python packages up to date"
else
    say "installing wg_netmanager (editable) with test extras into .venv"
    as_owner "$VENV/bin/python" -m pip install -q -e '.[test]'
    # shellcheck disable=SC2016  # positional parameters of the inner sh
    as_owner sh -c 'printf "%s\n" "$1" > "$2"' sh "$want" "$STAMP"
fi
say "install done"
