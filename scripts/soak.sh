#!/usr/bin/env bash
# Soak: N RTSP cameras looping real footage, `mlink run` under a one-model budget with links
# and online training, sampled every 10 s; writes DIR/report.json and DIR/report.svg.
# Not part of the README's test command (tests/soak.rs is its 2-minute version).
#
#   scripts/soak.sh [CAMERAS] [MINUTES] [DIR]      (defaults: 8 cameras, 30 minutes, out/soak)
set -euo pipefail
cd "$(dirname "$0")/.."
cameras=${1:-8}
minutes=${2:-30}
dir=${3:-out/soak}
cargo build --release --bin mlink --example soak
exec target/release/examples/soak --cameras "$cameras" --minutes "$minutes" --out "$dir" \
  --mlink target/release/mlink
