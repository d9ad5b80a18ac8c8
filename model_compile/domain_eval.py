"""``bodycam-model evaluate MODEL --data DIR --domains``: held-out and in-domain results, apart.

The clips of a family data set (``bodycam-sim make-dataset --families``) are run through the real
firmware loop once each (the clip decoded as the camera, its audio track as the microphone, the one
assembly), traced, and each policy (``fused``, ``video``, ``audio``) is the exact replay of the
trace (:mod:`~bodycam.model_compile.fusion_trace`; tested equal to the loop's own markers) with
the fusion setting given (default: the firmware's); the gunshot markers are scored with the project's scorer (one marker per shot within
2 frames). Two sets, never mixed: **held-out** (``DIR/heldout`` + the shot-free footage's
``heldout``) and **in-domain** (``DIR/test`` + the shot-free footage's ``train/val/test``).
Reported per set and policy: recall (all shots, and shots whose flash is in some frame), precision
(over every clip, so it falls as shot-free footage is added; and ``precision_with_shots``: over the
clips with shots only, where the shot-free clips' false markers are the false-alarm rate's business),
marker timing in frames, false alarms per hour on shot-free clips, false markers per distractor
kind (the kind active within 2 frames), and recall per family of each held-out axis.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bodycam.device.detect.fusion import FusionConfig
from bodycam.device.errors import UsageError
from bodycam.hw_sim.scoring import score_events
from bodycam.hw_sim.truth import Truth, load_truth, truth_path_for
from bodycam.model_compile.evaluate import attribute
from bodycam.model_compile.fusion_trace import replay, setting_of
from bodycam.model_compile.fusion_tune import family_index, trace_clips

POLICIES = ("fused", "video", "audio")
SETS = ("held_out", "in_domain")
TOLERANCE = 2


def collect(data: Path, extra: list[Path] | None) -> dict[str, list[tuple[Path, dict[str, str]]]]:
    """The clips of each set with their families: ``data``'s test and heldout clips, and every clip
    of the ``extra`` family data sets (shot-free footage, further clips never used for training)."""
    sets: dict[str, list[tuple[Path, dict[str, str]]]] = {s: [] for s in SETS}
    for root in [data, *(extra or [])]:
        rows = family_index(root)
        for key, row in sorted(rows.items()):
            if root == data and row["split"] not in ("test", "heldout"):
                continue  # train/val clips of the training data are not evaluation data
            sets["held_out" if row["held_out"] else "in_domain"].append((Path(key), dict(row["families"])))
    return sets


def run_loop(clips: list[Path], policies: tuple[str, ...], video_model: Path, audio_model: str, workers: int,
             log: Callable[[str], None], fusion: FusionConfig | None = None,
             cache: Path | None = None) -> dict[tuple[str, str], list[int]]:
    """Marker frames per (clip, policy): each clip runs through the firmware loop once, traced
    (``workers`` processes; :mod:`~bodycam.model_compile.fusion_trace`), and every policy is the exact
    replay of that trace with ``fusion`` (default: the firmware's defaults) under that policy."""
    traces = trace_clips(clips, str(video_model), audio_model, workers, cache, log)
    base = fusion or FusionConfig()
    return {(c, p): replay(t, replace(base, policy=p)) for c, t in traces.items() for p in policies}  # type: ignore[arg-type]


def summarise_set(items: list[tuple[Path, dict[str, str], Truth, list[int]]], axes: tuple[str, ...]) -> dict[str, Any]:
    tp = fp = fn = 0
    incidents = incidents_found = 0  # clips with shots; those with at least one shot marked
    vis_shots = vis_found = 0
    timing: list[int] = []
    seconds = free_seconds = 0.0
    free_fp = shot_fp = 0
    by_kind: dict[str, int] = {}
    kind_events: dict[str, int] = {}
    per_family: dict[str, dict[str, dict[str, int]]] = {a: {} for a in axes}
    missed: list[dict[str, Any]] = []
    for clip, fam, truth, frames in items:
        sc = score_events(truth.shot_frames(), frames, TOLERANCE)
        dur = truth.video.frames / truth.video.fps
        seconds += dur
        tp, fp, fn = tp + sc.tp, fp + sc.fp, fn + sc.fn
        if truth.shots:
            incidents += 1
            incidents_found += sc.tp > 0
        timing += [abs(e) for e in sc.timing_errors]
        miss = set(sc.missed)
        for s in truth.shots:
            if s.flash_frames > 0:
                vis_shots += 1
                vis_found += s.frame not in miss
        for a in axes:
            d = per_family[a].setdefault(fam[a], {"shots": 0, "found": 0, "false": 0})
            d["shots"] += len(truth.shots)
            d["found"] += sc.tp
            d["false"] += sc.fp
        for d_ in truth.distractors:
            kind_events[d_.kind] = kind_events.get(d_.kind, 0) + 1
        for f in sc.unmatched_markers:
            k = attribute(f, truth)
            by_kind[k] = by_kind.get(k, 0) + 1
        if not truth.shots:
            free_seconds += dur
            free_fp += sc.fp
        else:
            shot_fp += sc.fp
        missed += [{"clip": clip.name, "frame": f} for f in sc.missed]
    return {
        "clips": len(items),
        "minutes": round(seconds / 60, 2),
        "shots": tp + fn, "tp": tp, "fp": fp, "fn": fn,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "precision_with_shots": round(tp / (tp + shot_fp), 4) if tp + shot_fp else None,
        "visible_shots": vis_shots,
        # a clip with shots in which at least one is marked: the recording starts and base is told
        "incidents": incidents,
        "incident_recall": round(incidents_found / incidents, 4) if incidents else None,
        "recall_visible": round(vis_found / vis_shots, 4) if vis_shots else None,
        "timing_frames": {"median": float(np.median(timing)) if timing else None,
                          "max": int(max(timing)) if timing else None},
        "shot_free": {"clips": sum(1 for *_, t, _f in items if not t.shots), "minutes": round(free_seconds / 60, 2),
                      "false_alarms": free_fp,
                      "per_hour": round(free_fp / (free_seconds / 3600), 2) if free_seconds else None},
        "false_by_kind": dict(sorted(by_kind.items())),
        "distractor_events": dict(sorted(kind_events.items())),
        "by_family": {a: {n: {**v, "recall": round(v["found"] / v["shots"], 4) if v["shots"] else None}
                          for n, v in sorted(per_family[a].items())} for a in axes},
        "missed": missed[:200],
    }  # fmt: skip


def evaluate_domains(
    data: Path, free: list[Path] | None, video_model: Path, audio_model: str = "",
    policies: tuple[str, ...] = POLICIES, workers: int = 2, log: Callable[[str], None] = print,
    fusion: FusionConfig | None = None, cache: Path | None = None,
) -> dict[str, Any]:
    for p in policies:
        if p not in POLICIES:
            raise UsageError(f"unknown policy {p!r}; use {', '.join(POLICIES)}")
    sets = collect(data, free)
    hold = json.loads((data / "index.json").read_text(encoding="utf-8"))["hold_out"]
    axes = (*sorted(hold), "camera", "distractors")
    clips = [c for s in SETS for c, _ in sets[s]]
    log(f"{len(sets['held_out'])} held-out and {len(sets['in_domain'])} in-domain clips; policies {','.join(policies)}")
    frames = run_loop(clips, policies, video_model, audio_model, workers, log, fusion, cache)
    truths = {c: load_truth(truth_path_for(c)) for c in clips}
    out: dict[str, Any] = {"model": str(video_model), "audio_model": audio_model or "shipped", "hold_out": hold,
                           "data": str(data), "extra": [str(f) for f in free or []],
                           "fusion": setting_of(fusion or FusionConfig())}
    for s in SETS:
        out[s] = {p: summarise_set([(c, f, truths[c], frames[(str(c), p)]) for c, f in sets[s]], axes)
                  for p in policies}
    return out


def format_text(res: dict[str, Any]) -> str:
    lines = [f"model {res['model']} (audio: {res['audio_model']}); held out: {res['hold_out']}"]
    for s in SETS:  # held-out first
        lines.append(f"== {s.replace('_', '-')} ==")
        for p, r in res[s].items():
            fa = r["shot_free"]
            lines.append(
                f"  {p:6s} shots {r['shots']:4d} recall {r['recall']} (visible flashes {r['recall_visible']}, "
                f"{r['visible_shots']}) precision {r['precision']} (in the clips with shots "
                f"{r.get('precision_with_shots')})  timing median {r['timing_frames']['median']} "
                f"max {r['timing_frames']['max']} frames  clips with a shot marked {r['incident_recall']} of "
                f"{r['incidents']}  shot-free {fa['minutes']} min: {fa['false_alarms']} "
                f"false alarms = {fa['per_hour']}/h"
            )
            if r["false_by_kind"]:
                lines.append(f"         false markers by kind: {r['false_by_kind']}")
    return "\n".join(lines)


def write_plots(res: dict[str, Any], path: Path) -> Path | None:
    """Recall/precision per set and policy, false alarms per hour, false markers per kind."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    pols = list(res[SETS[0]])
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    x = np.arange(len(pols))
    for k, s in enumerate(SETS):
        rec = [res[s][p]["recall"] or 0 for p in pols]
        pre = [res[s][p]["precision"] or 0 for p in pols]
        ax[0].bar(x + k * 0.2 - 0.3, rec, 0.2, label=f"{s} recall")
        ax[0].bar(x + k * 0.2 + 0.1, pre, 0.2, label=f"{s} precision", alpha=0.6)
        ax[1].bar(x + k * 0.35 - 0.175, [res[s][p]["shot_free"]["per_hour"] or 0 for p in pols], 0.35, label=s)
    ax[0].axhline(0.97, color="k", lw=0.8, ls="--")
    ax[0].set_xticks(x, pols)
    ax[0].set_ylim(0, 1.05)
    ax[0].set_title("per-shot recall / precision (target 0.97)")
    ax[0].legend(fontsize=7)
    ax[1].set_xticks(x, pols)
    ax[1].axhline(1.0, color="k", lw=0.8, ls="--")
    ax[1].set_title("false alarms per hour, shot-free (target 1)")
    ax[1].legend(fontsize=7)
    kinds = sorted({k for s in SETS for p in pols for k in res[s][p]["false_by_kind"]})
    y = np.arange(len(kinds))
    for k, p in enumerate(pols):
        ax[2].barh(y + k * 0.25, [res["held_out"][p]["false_by_kind"].get(kd, 0) for kd in kinds], 0.25, label=p)
    ax[2].set_yticks(y + 0.25, kinds, fontsize=7)
    ax[2].set_title("held-out false markers by distractor kind")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


__all__ = ["POLICIES", "collect", "evaluate_domains", "format_text", "summarise_set", "write_plots"]
