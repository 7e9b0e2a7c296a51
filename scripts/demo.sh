#!/usr/bin/env bash
# Install what is needed (idempotent), then run the live namespace demo.
# Usage: sudo scripts/demo.sh [--topology working_example|three_boxes] [--seconds N]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
echo "==> checking/installing what the demo needs (the first run takes a minute)"
bash scripts/install.sh
exec .venv/bin/python -m scripts.demo "$@"
