#!/usr/bin/env bash
# Reproducible build of the shipped shot detector (device/models/shotnet.*), fixed seeds:
#   1. training data: 100 synthetic 20 s clips at 640x360 (bodycam-sim make-dataset, seed 20261125)
#      plus 88 hard clips (hw_sim make_dataset, seeds 424242..424244: lightbar strobes, sun glints,
#      photo flashes, other people's shots), joined by symlinks into one train/val/test layout
#   2. bodycam-model build (train, int8 export, int8-vs-float check, Edge TPU check, sidecar, report)
#   3. independent test footage (seeds never used for training): a 40-clip data set (seed 777) and
#      10 shot-free minutes full of distractors (make-clip --shots 0, seeds 5001..5010);
#      bodycam-model evaluate on both, and the invoke benchmark
#   4. copy the model + sidecar into device/models/ and the report into docs/model/
#   5. the audio shot detector (device/models/shotnet_audio.*): bodycam-model build-audio (synthetic
#      sound by named families, whole families held out; fixed data seed and training seed 1), the
#      audio benchmark; report in docs/model/shotnet_audio.report.json
# Data sets are kept under build/ (git-ignored) and reused when present.
# Usage: scripts/build-model.sh [--no-install] [all|video|audio]   (default all;
#        BODYCAM_MODEL_EPOCHS overrides the video model's epochs)
#        audio-wide: the wider-randomised audio candidate (build-audio --recipe wide; docs/model.md),
#        never installed by this target
#        fusion: choose the fusion's operating point on validation clips (tune-fusion; docs/model.md)
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
INSTALL=1
WHAT=all
for arg in "$@"; do
    case "$arg" in
        --no-install) INSTALL=0 ;;
        all|video|video-families|audio|audio-wide|fusion) WHAT=$arg ;;
        *) echo "usage: scripts/build-model.sh [--no-install] [all|video|video-families|audio|audio-wide|fusion]" >&2; exit 2 ;;
    esac
done
build_audio() {
    local out=build/model/shotnet_audio t0
    t0=$(date +%s)
    nice -n 10 bodycam-model build-audio --out "$out" --seed 1
    python bench/bench_audio.py "$out.tflite" || echo "audio bench: over budget" >&2
    echo "audio model: $(( $(date +%s) - t0 )) s"
    if [ "$INSTALL" = 1 ]; then
        cp "$out.tflite" "$out.json" device/models/
        mkdir -p docs/model
        cp "$out.report.json" docs/model/
        echo "installed device/models/shotnet_audio.tflite + shotnet_audio.json, report in docs/model/"
    fi
}
# The domain-randomised video model (video-families): training data by named families with the
# default hold-out (scene indoor, flash style vents_orange, 25 fps) kept out; evaluated apart on
# clips of the held-out families and 60 shot-free minutes of held-out families (192x108), through
# the firmware loop. Deterministic: fixed data seeds, training seed 1, TF op determinism.
# Measured worse than the shipped model on held-out families (docs/model.md), so not installed.
build_video_families() {
    local data=build/fam-data held=build/fam-heldout free=build/fam-free indom=build/fam-indomain
    local out=build/model/shotnet-fam t0 t1
    local epochs=${BODYCAM_MODEL_EPOCHS:-8}
    t0=$(date +%s)
    [ -f "$data/index.json" ] || nice -n 15 bodycam-sim make-dataset "$data" --clips 61 --seed 20261129 --seconds 8 \
        --families --held-out-clips 0
    [ -f "$held/index.json" ] || nice -n 15 bodycam-sim make-dataset "$held" --clips 3 --held-out-clips 36 --seconds 8 \
        --families --seed 20261131
    [ -f "$free/index.json" ] || nice -n 15 bodycam-sim make-dataset "$free" --clips 4 --held-out-clips 60 --seconds 60 \
        --size 192x108 --families --shot-free --seed 20261130
    [ -f "$indom/index.json" ] || nice -n 15 bodycam-sim make-dataset "$indom" --clips 16 --held-out-clips 0 --seconds 8 \
        --families --seed 20261132
    # the model trains on the 43 train clips of $data (the build holds out the last fifth for validation)
    mkdir -p build/fam-train && ln -sfn ../fam-data/train build/fam-train/train
    t1=$(date +%s)
    nice -n 15 bodycam-model build --data build/fam-train --out "$out" --epochs "$epochs" --seed 1
    echo "video-families: data $((t1 - t0)) s, build $(( $(date +%s) - t1 )) s"
    nice -n 15 bodycam-model evaluate "$out.tflite" --data "$held" --domains --free "$free" --free "$indom" \
        --out "$out.domains"
    python bench/bench_model.py "$out.tflite"
    # a candidate: never installed over the shipped model by this target; compare it with
    #   bodycam-model evaluate device/models/shotnet.tflite --data $held --domains --free $free --free $indom
    echo "candidate $out.tflite (not installed); held-out results in $out.domains.json / .png"
}
# The fusion's operating point ([fusion] audio_alone / audio_support / video_support / window_frames, the
# defaults in device/detect/fusion.py; then the incident rule's incident_s / incident_audio /
# incident_drop_db, off by default: docs/model.md says why): chosen by `bodycam-model tune-fusion` on
# in-domain validation clips (new seeds, never trained on, never in an evaluation) with the issue's limits
# (<= 1 false alarm per hour, precision >= 0.97); the result (the chosen setting and the whole sweep) in
# docs/model/fusion-tune.json.
# Then the held-out evaluation at that point (docs/model/fusion-shipped.json). docs/model.md explains.
tune_fusion() {
    local val=build/fam-val free1=build/fam-valfree free2=build/fam-valfree2
    [ -f "$val/index.json" ] || nice -n 10 bodycam-sim make-dataset "$val" --clips 48 --held-out-clips 0 --seconds 8 \
        --families --seed 20261133
    [ -f "$free1/index.json" ] || nice -n 10 bodycam-sim make-dataset "$free1" --clips 30 --held-out-clips 0 --seconds 60 \
        --size 192x108 --families --shot-free --seed 20261134
    [ -f "$free2/index.json" ] || nice -n 10 bodycam-sim make-dataset "$free2" --clips 32 --held-out-clips 0 --seconds 60 \
        --size 192x108 --families --shot-free --seed 20261135
    # five more shot-free validation hours (one false alarm in an hour is no rate: docs/model.md)
    local more=() n
    for n in 3 4 5 6 7; do
        [ -f "build/fam-valfree$n/index.json" ] || nice -n 10 bodycam-sim make-dataset "build/fam-valfree$n" --clips 60 \
            --held-out-clips 0 --seconds 60 --size 192x108 --families --shot-free --seed $((20261138 + n))
        more+=(--data "build/fam-valfree$n")
    done
    nice -n 10 bodycam-model tune-fusion --data "$val" --data "$free1" --data "$free2" "${more[@]}" \
        --traces build/traces/shipped --out docs/model/fusion-tune-6h.json
    # (docs/model/fusion-tune.json is the first run, on fam-val + the first two shot-free sets: the shipped defaults)
    echo "a new choice becomes FusionConfig's defaults (device/detect/fusion.py, docs/config.example.toml) only when" \
        "it also holds on footage no choice used: the held-out families and the original recipe's test set (docs/model.md)"
}
if [ "$WHAT" = fusion ]; then
    tune_fusion
    exit 0
fi
if [ "$WHAT" = audio ]; then
    build_audio
    exit 0
fi
if [ "$WHAT" = audio-wide ]; then  # a candidate, compared side by side with the shipped model (docs/model.md)
    nice -n 10 bodycam-model build-audio --recipe wide --out build/model/shotnet_audio-wide --seed 1
    python bench/bench_audio.py build/model/shotnet_audio-wide.tflite || echo "audio bench: over budget" >&2
    echo "candidate build/model/shotnet_audio-wide.tflite (not installed)"
    exit 0
fi
if [ "$WHAT" = video-families ]; then
    build_video_families
    exit 0
fi
DATA=build/shotnet-data
HARD=build/shotnet-hard
UNION=build/shotnet-union
TEST=build/shotnet-test
FREE=build/shotnet-fa
OUT=build/model/shotnet
EPOCHS=${BODYCAM_MODEL_EPOCHS:-14}
SEED=1
start=$(date +%s)
[ -f "$DATA/index.json" ] || nice -n 10 bodycam-sim make-dataset "$DATA" --clips 100 --seed 20261125 --seconds 20 --size 640x360
# hard examples: strobe-heavy clips (lightbar x4 + sun glint + photo flash forced, 8 distractors / 10 s),
# other-shooter clips (a string by someone else forced), lightbar x6 clips; 70/15/15 splits, 25% shot-free
[ -f "$HARD/strobe2/index.json" ] || nice -n 10 python -c '
import sys
from bodycam.hw_sim.dataset import make_dataset
from bodycam.hw_sim.timeline import ClipSpec
root = sys.argv[1]
strobe = ("lightbar_strobe",) * 4 + ("sun_glint", "photo_flash")
for name, clips, seed, spec in (
    ("strobe", 32, 424242, ClipSpec(force_distractors=strobe, distractor_rate=8.0)),
    ("other", 28, 424243, ClipSpec(other_shooter=True, distractor_rate=5.0,
                                   force_distractors=("lightbar_strobe", "lightbar_strobe", "sun_glint"))),
    ("strobe2", 28, 424244, ClipSpec(force_distractors=("lightbar_strobe",) * 6 + ("photo_flash",), distractor_rate=6.0)),
):
    idx = make_dataset(f"{root}/{name}", clips, seed, spec, workers=2)
    print(name, idx["counts"], "shot-free", idx["shot_free"], "shots", sum(c["shots"] for c in idx["clips"]), flush=True)
' "$HARD"
[ -f "$TEST/index.json" ] || nice -n 10 bodycam-sim make-dataset "$TEST" --clips 40 --seed 777 --seconds 20 --size 640x360
mkdir -p "$FREE"
for s in $(seq 5001 5010); do
    [ -f "$FREE/free-$s.truth.json" ] || nice -n 10 bodycam-sim make-clip "$FREE/free-$s.mp4" --seconds 60 --shots 0 --seed "$s" --size 640x360 --quiet
done
# the union (symlinks; decoded frames cached in .lores/ are linked too): base train/val/test as they are,
# each hard set's train + test into train and its val into val
link_into() {  # SRC_DIR DST_DIR PREFIX
    local src=$1 dst=$2 pre=$3 f base c
    mkdir -p "$dst/.lores"
    for f in "$src"/*.mp4; do
        base=$(basename "$f" .mp4)
        ln -sfn "$(realpath "$f")" "$dst/$pre-$base.mp4"
        ln -sfn "$(realpath "$src/$base.truth.json")" "$dst/$pre-$base.truth.json"
        for c in "$src/.lores/$base".*.npz; do
            if [ -e "$c" ]; then ln -sfn "$(realpath "$c")" "$dst/.lores/$pre-${c##*/}"; fi
        done
    done
}
for s in train val test; do link_into "$DATA/$s" "$UNION/$s" base; done
for h in strobe other strobe2; do
    link_into "$HARD/$h/train" "$UNION/train" "$h"
    link_into "$HARD/$h/test" "$UNION/train" "$h"
    link_into "$HARD/$h/val" "$UNION/val" "$h"
done
made=$(date +%s)
nice -n 10 bodycam-model build --data "$UNION" --out "$OUT" --epochs "$EPOCHS" --seed "$SEED"
built=$(date +%s)
bodycam-model evaluate "$OUT.tflite" --data "$TEST" --split all
bodycam-model evaluate "$OUT.tflite" --data "$TEST" --split all --json > "$OUT.test.json"
bodycam-model evaluate "$OUT.tflite" --data "$FREE" --split all
bodycam-model evaluate "$OUT.tflite" --data "$FREE" --split all --json > "$OUT.shot-free.json"
python bench/bench_model.py "$OUT.tflite"
# the self-test the cameras run when they load the model (windows of the demo clip, reproducible)
bodycam-model selftest "$OUT.tflite" --clip examples/range_demo.mp4
echo "data sets $((made - start)) s, build $((built - made)) s"
if [ "$INSTALL" = 1 ]; then
    cp "$OUT.tflite" "$OUT.json" "$OUT.selftest.npz" device/models/
    mkdir -p docs/model
    cp "$OUT.report.json" "$OUT.report.png" "$OUT.test.json" "$OUT.shot-free.json" docs/model/
    echo "installed device/models/shotnet.tflite + shotnet.json, report in docs/model/"
fi
if [ "$WHAT" = all ]; then
    build_audio
fi
