"""``bodycam-model``: build, evaluate and inspect the shot detector model.

Deliberate errors (:class:`~bodycam.device.errors.BodycamError`) become one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bodycam.device.console import pipe_safe
from bodycam.device.errors import BodycamError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _log(msg: str) -> None:
    print(msg, flush=True)


def build_parser() -> argparse.ArgumentParser:
    from bodycam.model_compile.config import BuildConfig

    d = BuildConfig()
    p = _Parser(prog="bodycam-model", description="train, quantise, verify and inspect the bodycam shot detector")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    b = sub.add_parser("build", help="train and export an int8 TFLite model with its sidecar and report")
    b.add_argument("--data", type=Path, required=True, action="append",
                   help="folder of clips + truth files (train/val/test or flat); repeat to train on several, e.g. "
                        "synthetic footage and a force's exported range footage (bodycam-base export-dataset)")
    b.add_argument("--mix", help="each --data folder's share of the training windows, in order, e.g. 1,3 "
                                 "(default: every window alike, so a large folder dominates)")
    b.add_argument("--out", type=Path, required=True, help="output base, e.g. models/shotnet (writes .tflite/.json/.report.*)")
    b.add_argument("--epochs", type=int, default=d.epochs)
    b.add_argument("--steps", type=int, default=d.steps_per_epoch, help="batches per epoch")
    b.add_argument("--batch", type=int, default=d.batch)
    b.add_argument("--seed", type=int, default=d.seed)
    b.add_argument("--size", default=f"{d.width}x{d.height}", help="model input WxH (default %(default)s)")
    b.add_argument("--frames", type=int, default=d.frames, help="window length N")
    b.add_argument("--target-offset", type=int, default=d.target_offset,
                   help="the window scores frame newest-OFFSET (look-ahead, default %(default)s)")
    b.add_argument("--colour", choices=("rgb", "gray"), default=d.colour)
    b.add_argument("--model-version", default="1.0.0")
    e = sub.add_parser("evaluate", help="event-level precision/recall/timing/false alarms on clips with truth")
    e.add_argument("model", type=Path)
    e.add_argument("--data", type=Path, required=True)
    e.add_argument("--split", default="test", help="train, val, test or all (default %(default)s)")
    e.add_argument("--threshold", type=float, default=None, help="override the sidecar's threshold")
    e.add_argument("--json", action="store_true", help="print the full result as JSON")
    e.add_argument("--domains", action="store_true",
                   help="a family data set (make-dataset --families): held-out and in-domain results apart, per "
                        "policy (fused/video/audio) through the firmware loop, per distractor kind, with plots")
    e.add_argument("--free", type=Path, action="append", default=None,
                   help="with --domains: a further family data set evaluated whole (every split; repeatable): "
                        "shot-free footage (make-dataset --families --shot-free) or clips never used for training")
    e.add_argument("--policies", default="fused,video,audio", help="with --domains (default %(default)s)")
    e.add_argument("--audio-model", default="", help="with --domains: the audio model (default: the shipped one)")
    e.add_argument("--workers", type=int, default=2, help="with --domains: loop processes (default 2)")
    e.add_argument("--fusion", default=None,
                   help="with --domains: fusion setting, KEY=VALUE,... of audio_alone, audio_support, "
                        "video_support, window_frames, or a tune-fusion JSON file (its chosen setting); "
                        "default: the firmware's [fusion] defaults")
    e.add_argument("--traces", type=Path, default=None,
                   help="with --domains: keep the loop's traces here and reuse them while clip and models are unchanged")
    e.add_argument("--out", type=Path, default=None,
                   help="with --domains: write OUT.json and OUT.png (the plots)")
    a = sub.add_parser("build-audio", help="train the audio shot detector on synthetic sound (families held out)")
    a.add_argument("--out", type=Path, required=True, help="output, e.g. build/model/shotnet_audio")
    a.add_argument("--epochs", type=int, default=None)
    a.add_argument("--seed", type=int, default=None, help="training seed (the data seed is fixed in DataSpec)")
    a.add_argument("--small", action="store_true", help="a small data set (smoke tests; not for shipping)")
    a.add_argument("--recipe", default="shipped",
                   help="network + data recipe: shipped (default), wide, wide-all, wide-small, wide-neg, multi, multi-tail, multi-wide, library-dev (docs/model.md)")
    a.add_argument("--model-version", default="1.0.0")
    a.add_argument("--library-root", type=Path, default=None,
                   help="with --recipe library-dev: where the sound library is unpacked (default build/third-party/usr/share/games)")
    a.add_argument("--library-held-out", default=None,
                   help="with --recipe library-dev: comma list of library sources never trained on (default: evaluate-library's held-out sources)")
    ea = sub.add_parser("evaluate-audio", help="held-out and in-domain audio results through the firmware detector")
    ea.add_argument("model", type=Path, nargs="+", help="one or more models, measured on the same scenes (side by side)")
    ea.add_argument("--threshold", type=float, default=None, help="override the sidecar's threshold")
    ea.add_argument("--small", action="store_true", help="the small data set's evaluation scenes")
    ea.add_argument("--json", action="store_true", help="print the full result as JSON")
    el = sub.add_parser("evaluate-library", help="audio models on other people's sounds: a sound library mixed into "
                        "scenes, held-out sources first (docs/model.md)")
    el.add_argument("model", type=Path, nargs="*", help="audio models (default: the shipped one), side by side")
    el.add_argument("--manifest", type=Path, default=None,
                    help="the library's manifest (default: model_compile/third_party_sounds.tsv)")
    el.add_argument("--root", type=Path, default=Path("build/third-party/usr/share/games"),
                    help="where the manifest's paths start (default %(default)s: scripts/third-party-sounds.sh)")
    el.add_argument("--held-out", default=None,
                    help="comma list of sources reported first and used for no choice (default: "
                         "model_compile.library_eval.DEFAULT_HELD_OUT, the shipped manifest's held-out games)")
    el.add_argument("--scenes", type=int, default=120, help="10 s scenes per split, with shots and as many shot-free (default 120)")
    el.add_argument("--seed", type=int, default=20261130)
    el.add_argument("--out", type=Path, default=None, help="also write the full result as JSON here")
    el.add_argument("--json", action="store_true", help="print the full result as JSON")
    dl = sub.add_parser("dub-library", help="copy a family data set with its sound replaced by a sound library's "
                        "(video bit for bit, truth unchanged): the fused loop on sound the project never made")
    dl.add_argument("data", type=Path, help="a family data set (bodycam-sim make-dataset --families)")
    dl.add_argument("out", type=Path, help="where the dubbed copy goes")
    dl.add_argument("--split", choices=("held_out", "dev"), default="held_out",
                    help="which of the library's sources to use (default %(default)s)")
    dl.add_argument("--manifest", type=Path, default=None, help="as evaluate-library")
    dl.add_argument("--root", type=Path, default=Path("build/third-party/usr/share/games"), help="as evaluate-library")
    dl.add_argument("--held-out", default=None, help="as evaluate-library")
    dl.add_argument("--seed", type=int, default=20261130)
    f = sub.add_parser("evaluate-fused", help="the firmware loop on clips with sound, per fusion policy")
    f.add_argument("data", type=Path, help="folder of clips with .truth.json")
    f.add_argument("--policies", default="fused,video,audio", help="comma list (default %(default)s)")
    f.add_argument("--audio-model", default="", help="audio model (default: the shipped one)")
    f.add_argument("--json", action="store_true")
    tf = sub.add_parser("tune-fusion", help="choose the fusion's operating point on in-domain validation clips")
    tf.add_argument("--data", type=Path, action="append", required=True,
                    help="a family data set (make-dataset --families; repeatable); its held-out clips are skipped")
    tf.add_argument("--model", type=Path, default=None, help="video model (default: the shipped one)")
    tf.add_argument("--audio-model", default="", help="audio model (default: the shipped one)")
    tf.add_argument("--max-fa-per-hour", type=float, default=1.0, help="false alarms per hour allowed (default 1)")
    tf.add_argument("--min-precision", type=float, default=0.97, help="precision required in the clips with shots (default 0.97)")
    tf.add_argument("--workers", type=int, default=2, help="loop processes, 1..2 (default 2)")
    tf.add_argument("--traces", type=Path, default=None, help="keep/reuse the loop's traces here")
    tf.add_argument("--out", type=Path, default=None, help="write the result (chosen setting + the sweep) as JSON")
    cmp_ = sub.add_parser("compare", help="a candidate model and the shipped one side by side on the same footage")
    cmp_.add_argument("candidate", type=Path)
    cmp_.add_argument("shipped", type=Path)
    cmp_.add_argument("--data", type=Path, required=True, help="clips with truth files (e.g. a force's reviewed export)")
    cmp_.add_argument("--split", default="all", help="train, val, test or all (default %(default)s)")
    cmp_.add_argument("--plot", type=Path, default=None, help="write a bar chart (PNG) here")
    cmp_.add_argument("--json", action="store_true")
    st = sub.add_parser("selftest", help="pack a model's self-test windows and record its scores in the sidecar")
    st.add_argument("model", type=Path)
    st.add_argument("--clip", type=Path, default=Path("examples/range_demo.mp4"),
                    help="a clip with a truth file to take the windows from (default %(default)s)")
    st.add_argument("--windows", type=int, default=24)
    i = sub.add_parser("inspect", help="show a model's sidecar, tensors, operators, size and MACs")
    i.add_argument("model", type=Path)
    i.add_argument("--json", action="store_true")
    return p


def _size(text: str) -> tuple[int, int]:
    from bodycam.device.errors import UsageError

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {text!r} is not WxH (e.g. 128x72)") from None
    return w, h


def _build(args: argparse.Namespace) -> int:
    from bodycam.device.errors import UsageError
    from bodycam.model_compile.build import build
    from bodycam.model_compile.config import BuildConfig

    if args.epochs < 1 or args.steps < 1 or args.batch < 4:
        raise UsageError("--epochs and --steps must be >= 1 and --batch >= 4")
    w, h = _size(args.size)
    cfg = BuildConfig(
        width=w, height=h, frames=args.frames, target_offset=args.target_offset, colour=args.colour, epochs=args.epochs,
        steps_per_epoch=args.steps, batch=args.batch, seed=args.seed,
    )  # fmt: skip
    mix = None
    if args.mix is not None:
        try:
            mix = [float(x) for x in args.mix.split(",")]
        except ValueError:
            raise UsageError(f"--mix {args.mix!r}: comma-separated numbers, one per --data folder") from None
    res = build(args.data, args.out, cfg, _log, args.model_version, mix=mix)
    print(f"model: {res.model}\nsidecar: {res.sidecar}")
    return 0


def _evaluate_domains(args: argparse.Namespace) -> int:
    from bodycam.model_compile.domain_eval import evaluate_domains, format_text, write_plots

    if not 1 <= args.workers <= 2:
        raise UsageError(f"--workers {args.workers} out of range 1..2")
    if args.threshold is not None:
        raise UsageError("--threshold does not apply to --domains (the loop uses the sidecars' thresholds)")
    policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    fusion = _fusion_setting(args.fusion) if args.fusion else None
    res = evaluate_domains(args.data, args.free, args.model, args.audio_model, policies, args.workers, _log,
                           fusion, args.traces)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
        png = write_plots(res, args.out.with_suffix(".png"))
        _log(f"wrote {args.out.with_suffix('.json')}" + (f", {png}" if png else ""))
    print(json.dumps(res, indent=1) if args.json else format_text(res))
    return 0


def _fusion_setting(text: str) -> Any:
    """``--fusion``: KEY=VALUE,... or a tune-fusion JSON file; checked by FusionConfig itself."""
    from dataclasses import replace

    from bodycam.device.detect.fusion import FusionConfig
    from bodycam.model_compile.fusion_trace import SETTING_KEYS

    keys = {k: type(getattr(FusionConfig(), k)) for k in SETTING_KEYS}  # float, or int (window_frames)

    path = Path(text)
    values: dict[str, Any] = {}
    if path.suffix == ".json" or path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"--fusion {text}: cannot read a tune-fusion result ({exc})") from exc
        chosen = data.get("chosen") if isinstance(data, dict) else None
        if not isinstance(chosen, dict):
            raise UsageError(f"--fusion {text}: no 'chosen' setting (write one with `bodycam-model tune-fusion --out`)")
        values = {k: chosen[k] for k in keys if k in chosen}
    else:
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, sep, val = item.partition("=")
            if not sep or key.strip() not in keys:
                raise UsageError(f"--fusion: {item!r} is not KEY=VALUE with KEY one of {', '.join(keys)}")
            try:
                values[key.strip()] = keys[key.strip()](val)
            except ValueError as exc:
                raise UsageError(f"--fusion: {item!r}: {exc}") from exc
    return replace(FusionConfig(), **values)


def _tune_fusion(args: argparse.Namespace) -> int:
    from bodycam.model_compile.fusion_tune import tune

    if not 1 <= args.workers <= 2:
        raise UsageError(f"--workers {args.workers} out of range 1..2")
    res = tune(args.data, str(args.model or ""), args.audio_model, max_fa_per_hour=args.max_fa_per_hour,
               min_precision=args.min_precision, workers=args.workers, cache=args.traces, log=_log)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
        _log(f"wrote {args.out}")
    c, sc, d, dsc = res["chosen"], res["chosen_score"], res["default"], res["default_score"]
    print(f"{res['clips']} in-domain validation clips ({sc['shots']} shots, {sc['free_minutes']} shot-free min)")
    for name, cfg, r in (("default", d, dsc), ("chosen", c, sc)):
        print(f"{name:8s} {', '.join(f'{k}={v}' for k, v in cfg.items())}: recall {r['recall']} precision "
              f"{r['precision_with_shots']} in the clips with shots ({r['precision']} pooled) false alarms "
              f"{r['fa_per_hour']}/h")
    if not res["met"]:
        print(f"no setting met {args.max_fa_per_hour}/h and precision {args.min_precision}: chosen = fewest false alarms")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.domains:
        return _evaluate_domains(args)
    from bodycam.device.detect.events import EventConfig
    from bodycam.device.detect.model_spec import load_model_spec
    from bodycam.model_compile.dataset import clips_for, load_clips
    from bodycam.model_compile.evaluate import evaluate_scores, summarise
    from bodycam.model_compile.infer import runner_for

    spec = load_model_spec(args.model)
    runner = runner_for(args.model, spec)
    clips = load_clips(clips_for(args.data, args.split), (spec.input.width, spec.input.height))
    cfg = EventConfig(threshold=args.threshold)
    threshold = cfg.threshold if cfg.threshold is not None else spec.threshold
    scores = [runner.frame_scores(c.frames) for c in clips]
    s = summarise(evaluate_scores(clips, scores, cfg, threshold))
    s["model"] = str(args.model)
    s["threshold"] = threshold
    s["split"] = args.split
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    te = s["timing_error_frames"]
    fa = s["false_alarms_shot_free"]
    print(f"{args.model} on {args.data} [{args.split}]: {s['clips']} clips, {s['hours'] * 60:.1f} min, threshold {threshold}")
    print(f"events     shots {s['shots']}  markers {s['markers']}  tp {s['tp']}  fp {s['fp']}  fn {s['fn']}")
    print(f"precision  {s['precision']:.4f}   recall {s['recall']:.4f}")
    print(f"timing     |marker - shot| frames: median {te['median']}  max {te['max']}")
    for k, v in s["recall_by_shooter"].items():
        print(f"recall[{k}] {v['found']}/{v['shots']}")
    if fa["clips"]:
        print(f"false alarms on {fa['clips']} shot-free clips ({fa['hours'] * 60:.1f} min): {fa['count']} "
              f"= {fa['per_10_min']} per 10 min; by kind {fa['by_kind']}")
    else:
        print("false alarms: no shot-free clips in this split")
    print(f"false markers, all clips: {s['false_markers_all_clips']}")
    return 0


def _audio_data(small: bool) -> Any:
    from bodycam.model_compile.audio_data import DataSpec

    if small:
        return DataSpec(train_scenes=120, val_scenes=12, eval_scenes=6, shot_free_minutes_held_out=1.0,
                        shot_free_minutes_in_domain=1.0)
    return DataSpec()


def _build_audio(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bodycam.model_compile.audio_build import RECIPES, build_audio

    if args.recipe not in RECIPES:
        raise UsageError(f"--recipe {args.recipe!r}: one of {', '.join(RECIPES)}")
    cfg, data = RECIPES[args.recipe]
    if args.epochs is not None:
        cfg = replace(cfg, epochs=args.epochs)
    if args.seed is not None:
        cfg = replace(cfg, seed=args.seed)
    if cfg.epochs < 1:
        raise UsageError(f"--epochs {cfg.epochs} must be at least 1")
    if args.small:
        data = replace(_audio_data(True), randomise=data.randomise)
    if args.library_root is not None:
        data = replace(data, library_root=str(args.library_root))
    if args.library_held_out is not None:
        data = replace(data, library_held_out=tuple(x.strip() for x in args.library_held_out.split(",") if x.strip()))
    side = build_audio(args.out, cfg, data, _log, args.model_version)
    print(_audio_table(side["metrics"]))
    return 0


def _audio_table(m: dict[str, Any]) -> str:
    rows = [f"threshold {m['threshold']}",
            f"{'set':22} {'shots':>6} {'recall':>7} {'prec':>6} {'FA/h':>7} {'min':>6} {'t med ms':>8} {'t max fr':>8}"]
    for k in ("held_out", "held_out_shot_free", "in_domain", "in_domain_shot_free"):
        r = m[k]
        rows.append(f"{k:22} {r['shots']:6d} {r['recall'] if r['recall'] is not None else '-':>7} "
                    f"{r['precision'] if r['precision'] is not None else '-':>6} {r['false_alarms_per_hour']:7.1f} "
                    f"{r['minutes']:6.1f} {r['timing_ms']['median'] or '-':>8} {r['timing_frames_30fps']['max'] or 0:>8}")
    return "\n".join(rows)


def _evaluate_audio(args: argparse.Namespace) -> int:
    from bodycam.model_compile.audio_data import EVAL_SETS, scene_sets
    from bodycam.model_compile.audio_eval import evaluate_sets

    sets = scene_sets(_audio_data(args.small), _log, training=False)
    results = {str(m): evaluate_sets(m, {k: sets[k] for k in EVAL_SETS}, threshold=args.threshold)
               for m in args.model}
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[str(args.model[0])], indent=1))
    else:
        print("\n\n".join(f"{name}\n{_audio_table(m)}" for name, m in results.items()))
    return 0


def _library_split(args: argparse.Namespace) -> tuple[Path, tuple[str, ...], Any, list[str]]:
    """The library of ``--manifest``/``--root`` split by ``--held-out``, and the lines it could not read."""
    from bodycam.model_compile import library_eval as le

    manifest = args.manifest or le.DEFAULT_MANIFEST
    held = le.DEFAULT_HELD_OUT if args.held_out is None else tuple(s.strip() for s in args.held_out.split(",") if s.strip())
    decoded, bad = le.load_library(manifest, args.root, _log)
    for line in bad[:10]:
        _log(f"  skipped {line}")
    return manifest, held, le.split_library(decoded, held), bad


def _dub_library(args: argparse.Namespace) -> int:
    from bodycam.model_compile.library_dub import dub_dataset
    from bodycam.model_compile.library_scenes import Prepared

    if not (args.data / "index.json").is_file():
        raise UsageError(f"{args.data}: no index.json (a data set from bodycam-sim make-dataset --families)")
    _manifest, _held, split, _bad = _library_split(args)
    n = dub_dataset(args.data, args.out, Prepared(split[args.split]), args.seed, _log)
    print(f"{n} clips of {args.data} dubbed with the library's {args.split} sources into {args.out}")
    return 0


def _evaluate_library(args: argparse.Namespace) -> int:
    from bodycam.device.detect.audio_model_spec import default_audio_model_path
    from bodycam.model_compile import library_eval as le

    if args.scenes < 1:
        raise UsageError(f"--scenes {args.scenes} must be at least 1")
    manifest, held, split, bad = _library_split(args)
    sets = le.library_sets(split, args.scenes, args.seed)
    models = list(args.model) or [default_audio_model_path()]
    res = {"manifest": str(manifest), "held_out_sources": list(held), "splits": le.describe(split),
           "scenes_per_set": args.scenes, "seed": args.seed, "unreadable": bad,
           "models": le.evaluate_library(models, sets)}
    if args.out is not None:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    for name, r in res["models"].items():
        print(f"{name} (threshold {r['threshold']})")
        for s in le.SPLITS:
            if s not in r:
                continue
            g, f = r[s], r[f"{s}_shot_free"]
            print(f"  {s:9} shots {g['shots']:4d} recall {g['recall']} precision {g['precision']} "
                  f"false alarms/h {f['false_alarms_per_hour']} ({f['minutes']} shot-free min); "
                  f"recall by level {dict((k, v['recall']) for k, v in r['recall_by_level'][s].items())}")
    return 0


def _evaluate_fused(args: argparse.Namespace) -> int:
    from bodycam.model_compile.fused_eval import clips_in, evaluate_clips

    clips = clips_in(args.data)
    if not clips:
        raise UsageError(f"{args.data}: no clips with truth files")
    policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    bad = [p for p in policies if p not in ("fused", "video", "audio")]
    if bad:
        raise UsageError(f"--policies: {', '.join(bad)} not one of fused, video, audio")
    res = evaluate_clips(clips, policies, args.audio_model)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{len(clips)} clips from {args.data}")
    for p in policies:
        r = res[p]
        print(f"{p:6} shots {r['shots']:4d} recall {r['recall']} precision {r['precision']} false alarms/h "
              f"(shot-free {r['shot_free_minutes']} min) {r['false_alarms_per_hour_shot_free']} timing frames "
              f"median {r['timing_frames']['median']} max {r['timing_frames']['max']}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from bodycam.model_compile.compare import compare, render, to_json, write_plot

    res = compare(args.candidate, args.shipped, args.data, args.split, None if args.json else _log)
    print(to_json(res) if args.json else render(res))
    if args.plot is not None:
        if write_plot(res, args.plot):
            print(f"plot: {args.plot}", file=sys.stderr)
        else:
            print("plot: matplotlib is not installed (pip install '.[compile]')", file=sys.stderr)
    return 0


def _selftest(args: argparse.Namespace) -> int:
    from bodycam.model_compile.selftest import make_selftest

    if not 1 <= args.windows <= 256:
        raise UsageError(f"--windows {args.windows} must be in 1..256")
    entry = make_selftest(args.model, args.clip, windows=args.windows)
    lo, hi = min(entry["scores"]), max(entry["scores"])
    print(f"{args.model}: self-test of {len(entry['scores'])} windows from {args.clip.name} "
          f"(scores {lo:.3f}..{hi:.3f}) written to {entry['file']} and the sidecar")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from bodycam.model_compile.inspect_model import inspect, render

    info = inspect(args.model)
    print(json.dumps(info, indent=1) if args.json else render(info))
    return 0


@pipe_safe
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = {"build": _build, "evaluate": _evaluate, "inspect": _inspect, "build-audio": _build_audio,
           "evaluate-audio": _evaluate_audio, "evaluate-fused": _evaluate_fused, "selftest": _selftest,
           "compare": _compare, "tune-fusion": _tune_fusion, "evaluate-library": _evaluate_library,
           "dub-library": _dub_library}[args.command]
    try:
        return run(args)
    except BodycamError as exc:
        print(f"bodycam-model {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bodycam-model: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
