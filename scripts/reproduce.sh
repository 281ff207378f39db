#!/usr/bin/env bash
# Reproduces docs/results.md end to end: set-up, build, recording of the two workloads on real
# footage with real models, replay of every method against the baselines, and the Fig. 10
# simulation. Traces go to data/traces, reports and plots to out/.
#
# Recording runs every model on every frame: on a 2-core CPU about 10 minutes for vtest.avi
# (795 frames, four models) and under a minute for the face clips. An existing trace is kept
# (delete it to record again); the replays and simulations take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[reproduce] %s\n' "$*" >&2; }

log "set-up (packages, ONNX Runtime, footage, models)"
scripts/setup.sh

log "build"
cargo build
MLINK=./target/debug/mlink
mkdir -p data/traces out

for w in vtest faces; do
  if [ -f "data/traces/$w.trace" ]; then
    log "data/traces/$w.trace exists: kept"
  else
    log "recording pipelines/record-$w.yaml"
    "$MLINK" record "pipelines/record-$w.yaml" --out "data/traces/$w.trace"
  fi
done

# vtest.avi: the three person counters (memory budgets holding one and two of them), then all
# four models with the classifier, then the same with a larger training share.
log "eval vtest (three counters)"
"$MLINK" eval data/traces/vtest.trace --models centernet,nanodet,movenet \
  --budget-mb 30 --budget-mb 50 --seeds 3 --report out/report-vtest
log "eval vtest (four models)"
"$MLINK" eval data/traces/vtest.trace --budget-mb 30 --budget-mb 50 --seeds 3 \
  --report out/report-vtest-all
log "eval vtest (three counters, half the trace trains the links)"
"$MLINK" eval data/traces/vtest.trace --models centernet,nanodet,movenet \
  --budget-mb 30 --budget-mb 50 --train-fraction 0.5 --report out/report-vtest-train50

# Faces: BlazeFace (12 MB), age (12 MB), gender (2 MB): budgets holding one and two models.
log "eval faces"
"$MLINK" eval data/traces/faces.trace --budget-mb 15 --budget-mb 27 --seeds 3 \
  --report out/report-faces

# Building and traffic-file: their traces are committed (traces/, recorded from
# pipelines/building.yaml and pipelines/traffic-file.yaml on the committed footage).
log "eval building"
"$MLINK" eval traces/building.trace --seeds 3 --report out/report-building
log "eval building (the paper's links)"
"$MLINK" eval traces/building.trace --links paper --seeds 3 --report out/report-building-paper
log "eval traffic-file"
"$MLINK" eval traces/traffic-file.trace --seeds 3 --report out/report-traffic-file
# The view links trained again every period on the profiling samples (adaptation: periodic).
log "eval building and traffic-file with periodic adaptation"
"$MLINK" eval traces/building.trace --seeds 3 --adapt --report out/report-building-adapt
"$MLINK" eval traces/building.trace --seeds 1 --adapt --report out/report-building-adapt-seed0
"$MLINK" eval traces/traffic-file.trace --seeds 3 --adapt --report out/report-traffic-file-adapt

# The remaining baselines on the building trace recorded with 32x32 thumbnails: Table V with
# MTL and DRLS, the distilled students of Fig. 5, the online training of Fig. 6 and the
# overheads of Fig. 11 (a bundle trained on the same trace for the memory figure).
log "eval building with thumbnails (MTL, DRLS)"
"$MLINK" eval traces/building-thumbnails.trace --report out/report-building-thumbnails
log "eval vtest with thumbnails (MTL, DRLS)"
if [ ! -f data/traces/vtest-thumbnails.trace ]; then
  "$MLINK" record pipelines/record-vtest.yaml --thumbnails 32x32 \
    --out data/traces/vtest-thumbnails.trace
fi
"$MLINK" eval data/traces/vtest-thumbnails.trace --models centernet,nanodet,movenet \
  --budget-mb 30 --budget-mb 50 --report out/report-vtest-thumbnails
log "eval traffic-file with thumbnails (MTL, DRLS)"
"$MLINK" eval traces/traffic-file-thumbnails.trace --report out/report-traffic-file-thumbnails
log "Fig. 5: model links against distilled students"
"$MLINK" kd traces/building-thumbnails.trace --repeats 1 --report out/kd-building
log "Fig. 6: online training"
for t in poses scene; do
  "$MLINK" online traces/building-thumbnails.trace --source persons --target "$t" \
    --segments 5 --report "out/online-building-$t"
done
# The paper's link: vehicle count to person count on the traffic cameras.
"$MLINK" online traces/traffic-file.trace --source vehicles --target pedestrians \
  --segments 5 --report out/online-traffic
log "Fig. 11: overheads"
"$MLINK" train traces/building-thumbnails.trace --out out/building.links
"$MLINK" bench overheads --bundle out/building.links

# The paper's Fig. 10: 10 models, 200 random instances per budget.
for d in normal beta; do
  log "simulate ($d)"
  "$MLINK" simulate --instances 200 --dist "$d" --plot "out/fig10-$d.svg"
done
log "done: out/report-*/report.md, out/kd-building, out/online-building-*, out/fig10-*.svg"
