"""Choose the fusion's operating point on in-domain validation clips (``bodycam-model tune-fusion``).

Every clip is run through the firmware loop once and traced (:mod:`~bodycam.model_compile.fusion_trace`);
each setting of the grid is then replayed on the traces with the firmware's own onset picker and
fusion, and scored with the project's event scorer (one marker per shot within 2 frames). The chosen
setting is the one with the highest recall among those with at most ``max_fa_per_hour`` false alarms
per hour on the shot-free clips and at least ``min_precision`` in the clips with shots (the issue's two
limits apart, as ``bodycam-model evaluate`` reports them: a false marker in a shot-free clip counts in the
false-alarm rate, not again in the precision, so adding shot-free hours to the validation set does not
change what the precision limit asks); when none qualifies, the one with the fewest false alarms per
hour, then the best recall.

Three stages: first the four numbers of the per-shot rules (``audio_alone``, ``audio_support``,
``video_support``, ``window_frames``: :data:`GRID`) with the incident rule off; then, at the setting
stage one chose, the incident rule (``incident_s``, ``incident_audio``, ``incident_drop_db``:
:data:`INCIDENT_GRID`), which is kept only when it wins by the same rule; then, at that setting, the
onset picker's echo gate (``echo_drop_db``: :data:`ECHO_GRID`), by the same rule. Only clips from families the
data set does not hold out are used (its held-out clips are skipped): the held-out families stay
unseen until the evaluation (``bodycam-model evaluate``). The data sets must be made with the evaluation's hold-out (the default).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bodycam.device.detect.fusion import FusionConfig
from bodycam.device.errors import UsageError
from bodycam.hw_sim.scoring import score_events
from bodycam.hw_sim.truth import Truth, load_truth, truth_path_for
from bodycam.model_compile.fusion_trace import Trace, record, replay, rescore_audio, setting_of

TOLERANCE = 2
GRID: dict[str, tuple[float, ...]] = {
    "audio_alone": (0.5, 0.7, 0.8, 0.9, 0.95, 0.98),
    "audio_support": (0.1, 0.2, 0.3, 0.5, 0.7),
    "video_support": (0.3, 0.5, 0.7, 0.9),
    "window_frames": (1, 2, 3),
}
INCIDENT_GRID: dict[str, tuple[float, ...]] = {
    "incident_s": (2.0, 4.0, 8.0),
    "incident_audio": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    "incident_drop_db": (3.0, 6.0, 10.0),
}
#: stage three: the onset picker's echo gate (dB quieter than the last onset within 1 s: an echo)
ECHO_GRID: tuple[float, ...] = (4.0, 6.0, 8.0, 10.0, 14.0)


def _file_id(path: str, default: Callable[[], Path]) -> str:
    """The SHA-256 (first 16 hex digits) of the model file the loop will run (``default()`` when empty)."""
    return hashlib.sha256(Path(path or default()).read_bytes()).hexdigest()[:16]


def _trace_key(clip: str, video_model: str, audio_model: str) -> str:
    """What a kept trace depends on: the trace format, the clip's bytes (size and change time) and both models."""
    from bodycam.device.detect.audio_model_spec import default_audio_model_path
    from bodycam.device.detect.model_spec import default_model_path
    from bodycam.model_compile.fusion_trace import SCHEMA

    st = Path(clip).stat()
    return (f"{SCHEMA}|{clip}|{st.st_size}|{st.st_mtime_ns}|{_file_id(video_model, default_model_path)}|"
            f"{_file_id(audio_model, default_audio_model_path)}")


def _trace_job(job: tuple[str, str, str, str]) -> tuple[str, Trace]:
    clip, video_model, audio_model, cache = job
    path = Path(cache) / f"{hashlib.sha256(job[0].encode()).hexdigest()[:12]}-{Path(clip).stem}.json" if cache else None
    key = _trace_key(clip, video_model, audio_model)
    trace = None
    if path is not None and path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        old = str(data.get("key", ""))
        if old == key:
            return clip, Trace.from_json(data)
        if old.rsplit("|", 1)[0] == key.rsplit("|", 1)[0] and data.get("config", {}).get("audio_detector"):
            # the same clip, the same video model, another audio model: swap its scores in (exact)
            from bodycam.device.detect.audio_model_spec import default_audio_model_path

            try:
                trace = rescore_audio(Trace.from_json(data), Path(audio_model or default_audio_model_path()))
            except UsageError:
                trace = None
    if trace is None:
        trace = record(Path(clip), video_model, audio_model)
    if path is not None:
        path.write_text(json.dumps({**trace.to_json(), "key": key}, separators=(",", ":")), encoding="utf-8")
    return clip, trace


def trace_clips(clips: Sequence[Path], video_model: str = "", audio_model: str = "", workers: int = 2,
                cache: Path | None = None, log: Callable[[str], None] = print) -> dict[str, Trace]:
    """One trace per clip (from ``cache`` when the clip and both models are unchanged)."""
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    jobs = [(str(c), video_model, audio_model, str(cache) if cache else "") for c in clips]
    out: dict[str, Trace] = {}
    it: Iterable[tuple[str, Trace]]
    if workers <= 1:
        it = map(_trace_job, jobs)
        for i, (c, t) in enumerate(it):
            out[c] = t
            if (i + 1) % 25 == 0:
                log(f"traced {i + 1}/{len(jobs)} clips")
        return out
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for i, (c, t) in enumerate(pool.imap_unordered(_trace_job, jobs, chunksize=2)):
            out[c] = t
            if (i + 1) % 25 == 0:
                log(f"traced {i + 1}/{len(jobs)} clips")
    return out


@dataclass(frozen=True)
class Score:
    shots: int
    tp: int
    fp: int
    free_minutes: float
    free_fp: int

    @property
    def recall(self) -> float:
        return self.tp / self.shots if self.shots else 0.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def precision_with_shots(self) -> float:
        """Precision over the clips with shots (a shot-free clip's false markers are the false-alarm rate's)."""
        tp, fp = self.tp, self.fp - self.free_fp
        return tp / (tp + fp) if tp + fp else 1.0

    @property
    def fa_per_hour(self) -> float:
        return self.free_fp / (self.free_minutes / 60) if self.free_minutes else 0.0

    def row(self) -> dict[str, Any]:
        return {"shots": self.shots, "tp": self.tp, "fp": self.fp, "recall": round(self.recall, 4),
                "precision": round(self.precision, 4), "precision_with_shots": round(self.precision_with_shots, 4),
                "free_minutes": round(self.free_minutes, 2),
                "free_false_alarms": self.free_fp, "fa_per_hour": round(self.fa_per_hour, 2)}


def score(traces: dict[str, Trace], truths: dict[str, Truth], cfg: FusionConfig) -> Score:
    shots = tp = fp = free_fp = 0
    free_s = 0.0
    for clip, trace in traces.items():
        truth = truths[clip]
        sc = score_events(truth.shot_frames(), replay(trace, cfg), TOLERANCE)
        shots, tp, fp = shots + sc.tp + sc.fn, tp + sc.tp, fp + sc.fp
        if not truth.shots:
            free_s += truth.video.frames / truth.video.fps
            free_fp += sc.fp
    return Score(shots, tp, fp, free_s / 60, free_fp)


def settings(grid: dict[str, tuple[float, ...]] = GRID, base: FusionConfig | None = None) -> list[FusionConfig]:
    """Stage one: the per-shot rules' grid, the incident rule off."""
    base = base or replace(FusionConfig(), incident_s=0.0)
    out = []
    for a, s, v, w in itertools.product(grid["audio_alone"], grid["audio_support"], grid["video_support"],
                                        grid["window_frames"]):
        if s > a:
            continue  # support above alone: the supported rule never adds anything
        out.append(replace(base, audio_alone=a, audio_support=s, video_support=v, window_frames=int(w)))
    return out


def incident_settings(at: FusionConfig, grid: dict[str, tuple[float, ...]] = INCIDENT_GRID) -> list[FusionConfig]:
    """Stage two: the incident rule's grid at stage one's choice ``at`` (only scores under ``audio_alone``)."""
    return [replace(at, incident_s=s, incident_audio=a, incident_drop_db=d)
            for s, a, d in itertools.product(grid["incident_s"], grid["incident_audio"], grid["incident_drop_db"])
            if not at.audio_alone or a < at.audio_alone]


def choose(rows: list[tuple[FusionConfig, Score]], max_fa_per_hour: float,
           min_precision: float) -> tuple[FusionConfig, Score, bool]:
    """The best setting (see the module docstring) and whether it met both limits."""
    ok = [r for r in rows if r[1].fa_per_hour <= max_fa_per_hour and r[1].precision_with_shots >= min_precision]
    if ok:
        cfg, sc = max(ok, key=lambda r: (r[1].recall, r[1].precision_with_shots, -r[1].fa_per_hour))
        return cfg, sc, True
    cfg, sc = min(rows, key=lambda r: (r[1].fa_per_hour, -r[1].recall, -r[1].precision_with_shots))
    return cfg, sc, False


def family_index(root: Path) -> dict[str, dict[str, Any]]:
    """The rows of a family data set's ``index.json`` by resolved clip path (UsageError when it is not one)."""
    idx = root / "index.json"
    if not idx.is_file():
        raise UsageError(f"{root}: no index.json; fix: make the data with `bodycam-sim make-dataset --families`")
    data = json.loads(idx.read_text(encoding="utf-8"))
    if "hold_out" not in data:
        raise UsageError(f"{root}: not a family data set (no hold_out in index.json); fix: make-dataset --families")
    return {str((root / r["path"]).resolve()): r for r in data["clips"]}


def validation_clips(roots: Sequence[Path]) -> list[Path]:
    """Every clip of the family data sets ``roots`` from families they do not hold out."""
    clips = [Path(key) for root in roots for key, row in family_index(root).items()
             if not row.get("held_out")]  # never tune on held-out families
    if not clips:
        raise UsageError("no in-domain clips in " + ", ".join(str(r) for r in roots))
    return clips


def tune(roots: Sequence[Path], video_model: str = "", audio_model: str = "", *, max_fa_per_hour: float = 1.0,
         min_precision: float = 0.97, workers: int = 2, cache: Path | None = None,
         grid: dict[str, tuple[float, ...]] = GRID, incident_grid: dict[str, tuple[float, ...]] = INCIDENT_GRID,
         echo_grid: tuple[float, ...] = ECHO_GRID, log: Callable[[str], None] = print) -> dict[str, Any]:
    clips = validation_clips(roots)
    log(f"{len(clips)} in-domain validation clips")
    traces = trace_clips(clips, video_model, audio_model, workers, cache, log)
    truths = {c: load_truth(truth_path_for(Path(c))) for c in traces}
    if not any(not t.shots for t in truths.values()):
        raise UsageError("no shot-free clips among the validation clips: the false-alarm limit cannot be checked "
                         "(add a set made with `bodycam-sim make-dataset --families --shot-free`)")
    rows = [(cfg, score(traces, truths, cfg)) for cfg in settings(grid)]
    first, first_sc, _ = choose(rows, max_fa_per_hour, min_precision)
    log(f"stage 1 (per-shot rules): {setting_of(first)}: {first_sc.row()}")
    rows2 = [(cfg, score(traces, truths, cfg)) for cfg in incident_settings(first, incident_grid)]
    second, second_sc, _ = choose([(first, first_sc), *rows2], max_fa_per_hour, min_precision)
    log(f"stage 2 (incident rule): {setting_of(second)}: {second_sc.row()}")
    rows3 = [(cfg, score(traces, truths, cfg)) for cfg in (replace(second, echo_drop_db=d) for d in echo_grid)
             if cfg != second]
    best, sc, met = choose([(second, second_sc), *rows3], max_fa_per_hour, min_precision)
    current = score(traces, truths, FusionConfig())
    return {
        "data": [str(r) for r in roots], "clips": len(clips), "video_model": video_model or "shipped",
        "audio_model": audio_model or "shipped", "max_fa_per_hour": max_fa_per_hour, "min_precision": min_precision,
        "met": met, "chosen": setting_of(best), "chosen_score": sc.row(), "default": setting_of(FusionConfig()),
        "default_score": current.row(), "stage1": setting_of(first), "stage1_score": first_sc.row(),
        "stage2": setting_of(second), "stage2_score": second_sc.row(),
        "sweep": [{**setting_of(c), **s.row()} for c, s in [*rows, *rows2, *rows3]],
    }


__all__ = ["ECHO_GRID", "GRID", "INCIDENT_GRID", "Score", "choose", "family_index", "incident_settings", "score", "settings",
           "trace_clips", "tune", "validation_clips"]
