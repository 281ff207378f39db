#!/usr/bin/env bash
# The README's test command: set up the machine, then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  cargo test --no-fail-fast "$@"
fi
