#!/usr/bin/env bash
# Reproducible build of the shipped shot detector (device/models/shotnet.*), fixed seeds:
#   1. training data: 100 synthetic 20 s clips at 640x360 (bodycam-sim make-dataset, seed 20261125)
#   2. bodycam-model build (train, int8 export, int8-vs-float check, Edge TPU check, sidecar, report)
#   3. independent test footage (seeds never used for training): a 40-clip data set (seed 777) and
#      10 shot-free minutes full of distractors (make-clip --shots 0, seeds 5001..5010);
#      bodycam-model evaluate on both, and the invoke benchmark
#   4. copy the model + sidecar into device/models/ and the report into docs/model/
# Data sets are kept under build/ (git-ignored) and reused when present.
# Usage: scripts/build-model.sh [--no-install]   (BODYCAM_MODEL_EPOCHS overrides the epochs)
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
DATA=build/shotnet-data
TEST=build/shotnet-test
FREE=build/shotnet-fa
OUT=build/model/shotnet
EPOCHS=${BODYCAM_MODEL_EPOCHS:-14}
SEED=1
start=$(date +%s)
[ -f "$DATA/index.json" ] || nice -n 10 bodycam-sim make-dataset "$DATA" --clips 100 --seed 20261125 --seconds 20 --size 640x360
[ -f "$TEST/index.json" ] || nice -n 10 bodycam-sim make-dataset "$TEST" --clips 40 --seed 777 --seconds 20 --size 640x360
mkdir -p "$FREE"
for s in $(seq 5001 5010); do
    [ -f "$FREE/free-$s.truth.json" ] || nice -n 10 bodycam-sim make-clip "$FREE/free-$s.mp4" --seconds 60 --shots 0 --seed "$s" --size 640x360 --quiet
done
made=$(date +%s)
nice -n 10 bodycam-model build --data "$DATA" --out "$OUT" --epochs "$EPOCHS" --seed "$SEED"
built=$(date +%s)
bodycam-model evaluate "$OUT.tflite" --data "$TEST" --split all
bodycam-model evaluate "$OUT.tflite" --data "$TEST" --split all --json > "$OUT.test.json"
bodycam-model evaluate "$OUT.tflite" --data "$FREE" --split all
bodycam-model evaluate "$OUT.tflite" --data "$FREE" --split all --json > "$OUT.shot-free.json"
python bench/bench_model.py "$OUT.tflite"
echo "data sets $((made - start)) s, build $((built - made)) s"
if [ "${1:-}" != "--no-install" ]; then
    cp "$OUT.tflite" "$OUT.json" device/models/
    mkdir -p docs/model
    cp "$OUT.report.json" "$OUT.report.png" "$OUT.test.json" "$OUT.shot-free.json" docs/model/
    echo "installed device/models/shotnet.tflite + shotnet.json, report in docs/model/"
fi
