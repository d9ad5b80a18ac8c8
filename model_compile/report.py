"""The training report: ``NAME.report.json`` and ``NAME.report.png`` (matplotlib Agg)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bodycam.device.errors import StorageError


def pr_curve(y: npt.NDArray[np.float32], p: npt.NDArray[np.float32], points: int = 101) -> list[dict[str, float]]:
    """Window-level precision/recall of scores ``p`` against labels ``y`` over thresholds."""
    pos = y > 0.5
    out = []
    for thr in np.linspace(0.0, 1.0, points)[1:-1]:
        pred = p >= thr
        tp = int(np.sum(pred & pos))
        fp = int(np.sum(pred & ~pos))
        fn = int(np.sum(~pred & pos))
        out.append({
            "threshold": round(float(thr), 4),
            "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 1.0,
        })  # fmt: skip
    return out


def write_report(base: Path, report: dict[str, Any]) -> tuple[Path, Path | None]:
    """Write the JSON report, and the PNG when matplotlib is available."""
    jpath = base.with_name(base.name + ".report.json")
    try:
        jpath.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise StorageError(f"{jpath}: cannot write the report ({exc})") from exc
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return jpath, None
    ppath = base.with_name(base.name + ".report.png")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    hist = report.get("history", {})
    for key, label in (("loss", "train (balanced, augmented)"), ("val_loss", "validation (balanced)")):
        vals = hist.get(key) or []
        if vals:
            a1.plot(range(1, len(vals) + 1), vals, marker="o", label=label)
    a1.set_xlabel("epoch")
    a1.set_ylabel("weighted binary cross-entropy")
    a1.set_title("loss")
    a1.legend()
    a1.grid(alpha=0.3)
    for key, label in (("pr_float", "float, per window"), ("pr_int8", "int8, per window")):
        pts = report.get(key) or []
        if pts:
            a2.plot([q["recall"] for q in pts], [q["precision"] for q in pts], label=label)
    ev = report.get("threshold_sweep") or []
    if ev:
        a2.plot([q["recall"] for q in ev], [q["precision"] for q in ev], "o", ms=3, label="int8, events (ShotTracker)")
    a2.set_xlabel("recall")
    a2.set_ylabel("precision")
    a2.set_title(f"validation precision/recall (threshold {report.get('threshold', '?')})")
    a2.set_xlim(0, 1.02)
    a2.set_ylim(0, 1.02)
    a2.legend(loc="lower left")
    a2.grid(alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(ppath, dpi=90)
    except OSError as exc:
        raise StorageError(f"{ppath}: cannot write the report image ({exc})") from exc
    finally:
        plt.close(fig)
    return jpath, ppath
