"""``bodycam-model compare CANDIDATE SHIPPED --data DIR``: two models side by side on the same footage.

Both models score the same clips (each at its own input size, through the firmware's preprocessing)
and the same event scorer (``evaluate_scores``: the firmware's ShotTracker on the frame scores,
matched to the truth within the project's tolerance), each at its own sidecar threshold. The report
gives recall, precision, false alarms per hour on shot-free clips and marker timing, for all clips and
per condition (the truth's generator and scene: for exported range footage, the source and the
range), with the difference candidate - shipped; and a bar chart when matplotlib is there. The same
truth files `bodycam-model build --data` reads are the input, so a force's reviewed range footage
is compared exactly as it would be trained on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bodycam.device.detect.events import EventConfig
from bodycam.device.detect.model_spec import load_model_spec
from bodycam.device.errors import StorageError, UsageError
from bodycam.model_compile.dataset import clips_for, load_clips
from bodycam.model_compile.evaluate import ClipResult, evaluate_scores, summarise
from bodycam.model_compile.infer import runner_for

KEYS = ("recall", "precision", "fa_per_hour", "timing_median", "timing_max")


def _row(s: dict[str, Any]) -> dict[str, Any]:
    te = s["timing_error_frames"]
    return {"clips": s["clips"], "shots": s["shots"], "recall": s["recall"], "precision": s["precision"],
            "fa_per_hour": s["false_alarms_shot_free"]["per_hour"], "shot_free_hours": s["false_alarms_shot_free"]["hours"],
            "timing_median": te["median"], "timing_max": te["max"]}


def _condition(r: ClipResult) -> str:
    return f"{r.truth.generator.name}/{r.truth.generator.scene}"


def evaluate_model(model: Path, data: Path, split: str) -> tuple[dict[str, Any], list[ClipResult]]:
    spec = load_model_spec(model)
    clips = load_clips(clips_for(data, split), (spec.input.width, spec.input.height))
    if not clips:
        raise UsageError(f"{data}: no clips in split {split!r}")
    runner = runner_for(model, spec)
    scores = [runner.frame_scores(c.frames) for c in clips]
    results = evaluate_scores(clips, scores, EventConfig(), spec.threshold)
    return {"name": spec.name, "version": spec.version, "sha256": spec.sha256, "threshold": spec.threshold}, results


def compare(candidate: Path, shipped: Path, data: Path, split: str = "all",
            log: Callable[[str], None] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"data": str(data), "split": split, "models": {}, "all": {}, "by_condition": {}}
    per: dict[str, list[ClipResult]] = {}
    for role, model in (("candidate", candidate), ("shipped", shipped)):
        if log:
            log(f"scoring {role} {model} ...")
        info, results = evaluate_model(model, data, split)
        out["models"][role] = {**info, "path": str(model)}
        out["all"][role] = _row(summarise(results))
        per[role] = results
    names = [r.name for r in per["candidate"]]
    if names != [r.name for r in per["shipped"]]:
        raise UsageError("the two models saw different clips")  # cannot happen: same folder, same order
    out["all"]["delta"] = _delta(out["all"]["candidate"], out["all"]["shipped"])
    for cond in sorted({_condition(r) for r in per["candidate"]}):
        rows = {role: _row(summarise([r for r in per[role] if _condition(r) == cond])) for role in per}
        rows["delta"] = _delta(rows["candidate"], rows["shipped"])
        out["by_condition"][cond] = rows
    return out


def _delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
    return {k: (round(a[k] - b[k], 4) if a[k] is not None and b[k] is not None else None) for k in KEYS}


def render(res: dict[str, Any]) -> str:
    m = res["models"]
    lines = [f"candidate {m['candidate']['name']} {m['candidate']['version']} vs shipped "
             f"{m['shipped']['name']} {m['shipped']['version']} on {res['data']} [{res['split']}]",
             f"{'':28} {'model':10} {'clips':>5} {'shots':>5} {'recall':>7} {'prec':>7} {'FA/h':>7} {'t med':>5} {'t max':>5}"]

    def fmt(v: Any, w: int) -> str:
        return f"{'-' if v is None else v:>{w}}"

    def block(title: str, rows: dict[str, Any]) -> None:
        for i, role in enumerate(("candidate", "shipped", "delta")):
            r = rows[role]
            lines.append(f"{title if i == 0 else '':28} {role:10} {fmt(r.get('clips', ''), 5)} {fmt(r.get('shots', ''), 5)} "
                         f"{fmt(r['recall'], 7)} {fmt(r['precision'], 7)} {fmt(r['fa_per_hour'], 7)} "
                         f"{fmt(r['timing_median'], 5)} {fmt(r['timing_max'], 5)}")

    block("all", res["all"])
    for cond, rows in res["by_condition"].items():
        block(cond, rows)
    return "\n".join(lines)


def write_plot(res: dict[str, Any], path: Path) -> bool:
    """A bar chart of recall, precision and false alarms per condition; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    conds = ["all", *res["by_condition"]]
    rows = [res["all"], *res["by_condition"].values()]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, key, title in zip(axes, ("recall", "precision", "fa_per_hour"),
                              ("recall", "precision", "false alarms / h (shot-free)"), strict=True):
        for j, role in enumerate(("candidate", "shipped")):
            vals = [r[role][key] if r[role][key] is not None else 0.0 for r in rows]
            ax.bar([i + 0.4 * j for i in range(len(conds))], vals, width=0.4, label=role)
        ax.set_xticks([i + 0.2 for i in range(len(conds))], conds, rotation=30, ha="right", fontsize=7)
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise StorageError(f"{path}: cannot write the plot ({exc})") from exc
    finally:
        plt.close(fig)
    return True


def to_json(res: dict[str, Any]) -> str:
    return json.dumps(res, indent=1, allow_nan=False)


__all__ = ["compare", "evaluate_model", "render", "to_json", "write_plot"]
