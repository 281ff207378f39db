#!/usr/bin/env bash
# Splits a camera inventory into shard pipelines: shard K gets cameras K*PER_SHARD to
# (K+1)*PER_SHARD-1 of the inventory, in its order, so order it by site (cameras of one site
# share scenes, and so links, and stay on one engine).
#
#   deploy/k8s/make-shards.sh CAMERAS.tsv PER_SHARD [OUT_DIR]
#
# CAMERAS.tsv: one camera a line, `id<TAB>uri[<TAB>fps]` (fps defaults to 1); blank lines and
# lines starting with # are skipped. Writes OUT_DIR/shard-K.yaml (default: the shards/ folder
# next to this script, whose old shard files are removed) and prints the shard count: set it as
# the StatefulSet's replicas and list the files in kustomization.yaml.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { echo "usage: $0 CAMERAS.tsv PER_SHARD [OUT_DIR]" >&2; exit 2; }
inventory=$1 per_shard=$2 out=${3:-$here/shards}
case $per_shard in ''|*[!0-9]*|0) echo "PER_SHARD must be a positive integer, got '$per_shard'" >&2; exit 2;; esac
[ -r "$inventory" ] || { echo "cannot read camera inventory $inventory" >&2; exit 2; }
# Written to a scratch folder first: a bad inventory leaves the old shard files in place.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
count=$(awk -F '\t' -v per="$per_shard" -v out="$tmp" -v template="$here/shard-template.yaml" '
  function header(k,   line) {
    while ((getline line < template) > 0) { gsub(/@SHARD@/, k, line); print line > file(k) }
    close(template)
  }
  function file(k) { return out "/shard-" k ".yaml" }
  /^[[:space:]]*(#|$)/ { next }
  {
    if (NF < 2 || $1 == "" || $2 == "") { printf "%s:%d: expected id<TAB>uri[<TAB>fps]\n", FILENAME, FNR > "/dev/stderr"; bad = 1; exit 2 }
    if ($1 !~ /^[A-Za-z0-9._-]+$/) { printf "%s:%d: camera id %s: use letters, digits, . _ -\n", FILENAME, FNR, $1 > "/dev/stderr"; bad = 1; exit 2 }
    if ($2 ~ /["\\]/) { printf "%s:%d: camera uri must not hold quotes or backslashes\n", FILENAME, FNR > "/dev/stderr"; bad = 1; exit 2 }
    if (NF >= 3 && $3 != "" && $3 !~ /^[0-9]+([.][0-9]+)?$/) { printf "%s:%d: fps %s is not a number\n", FILENAME, FNR, $3 > "/dev/stderr"; bad = 1; exit 2 }
    if ($1 in seen) { printf "%s:%d: camera id %s repeats line %d\n", FILENAME, FNR, $1, seen[$1] > "/dev/stderr"; bad = 1; exit 2 }
    seen[$1] = FNR
    k = int(n / per); n++
    if (k != last) { if (last != "") close(file(last)); header(k); last = k }
    fps = (NF >= 3 && $3 != "") ? $3 : 1
    printf "  - id: \"%s\"\n    uri: \"%s\"\n    sampling:\n      fps: %s\n", $1, $2, fps > file(k)
  }
  END {
    if (bad) exit 2
    if (n == 0) { print "no cameras in the inventory" > "/dev/stderr"; exit 2 }
    print int((n + per - 1) / per)
  }
' last="" "$inventory")
mkdir -p "$out"
rm -f "$out"/shard-*.yaml
mv "$tmp"/shard-*.yaml "$out"/
echo "$count"
