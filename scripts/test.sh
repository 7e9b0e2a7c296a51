#!/usr/bin/env bash
# Install (idempotent), then lint, type-check and run the test suite.
# The network-namespace tests need root: run `sudo scripts/test.sh`
# (or scripts/test.sh as root).  Extra arguments go to pytest, e.g.
#   sudo scripts/test.sh -k testbed -x
# Runs every step even if an earlier one fails; exits non-zero if any failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

bash scripts/install.sh

failed=()
step() {
    local name=$1
    shift
    printf '==> %s\n' "$name"
    if "$@"; then
        return 0
    fi
    failed+=("$name")
}

step "ruff check" .venv/bin/ruff check .
step "mypy" .venv/bin/python -m mypy
step "pytest" .venv/bin/python -m pytest -q "$@"

if [ "${#failed[@]}" -gt 0 ]; then
    printf '==> FAILED: %s\n' "${failed[*]}" >&2
    exit 1
fi
printf '==> all checks passed\n'
