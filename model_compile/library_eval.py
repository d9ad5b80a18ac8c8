"""The audio detector on other people's sounds: a sound library (:mod:`sound_library`) mixed into scenes
(:mod:`library_scenes`), scored through the firmware's own detector (:mod:`audio_eval`).

The library's sources are split in two: the **held-out** sources (:data:`DEFAULT_HELD_OUT`, or
``--held-out``) are reported first and are meant to be looked at once, after every choice is made; the
rest are the **development** sources, which may guide choices (which candidate, which threshold). Each
split's scenes use only that split's sounds, beds included. Per split: recall, precision and false
alarms per hour at the model's own threshold and at a sweep of thresholds, recall per source and kind
and per peak-level band, false alarms per source and kind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bodycam.device.errors import ClipError, UsageError
from bodycam.model_compile.audio_data import LIBRARY_HELD_OUT, Scene
from bodycam.model_compile.audio_eval import Tally, evaluate_sets, replay, score_scene, stream_scores
from bodycam.model_compile.library_scenes import LibraryScene, Prepared, library_scenes
from bodycam.model_compile.sound_library import Decoded, LibrarySound, load, read_manifest

#: the shipped manifest: the Debian game-data sounds of scripts/third-party-sounds.sh
DEFAULT_MANIFEST = Path(__file__).with_name("third_party_sounds.tsv")
#: sources held out of every choice in the shipped manifest
DEFAULT_HELD_OUT = LIBRARY_HELD_OUT
SPLITS = ("held_out", "dev")
SWEEP = (0.5, 0.7, 0.8, 0.9, 0.95)
#: peak-level bands (dBFS, before clipping) for recall by level: a far shot .. a clipped near one
LEVEL_BANDS = ((-24.0, -12.0), (-12.0, 0.0), (0.0, 6.0))


def load_library(manifest: Path, root: Path, log: Callable[[str], None] | None = None,
                 ) -> tuple[list[Decoded], list[str]]:
    """Every sound of the manifest that decodes, and one line per sound that does not (kept going:
    a library unpacked from other versions of its packages may lack a few)."""
    sounds = read_manifest(manifest)
    ok: list[Decoded] = []
    bad: list[str] = []
    for s in sounds:
        try:
            ok.append(load(root, s))
        except ClipError as exc:
            bad.append(f"{manifest}:{s.line}: {exc}")
    if log is not None:
        log(f"sound library: {len(ok)} of {len(sounds)} sounds read from {root}" + (f"; {len(bad)} not" if bad else ""))
    if not any(d.sound.label == "shot" for d in ok):
        raise UsageError(f"{manifest}: no gunshot of the library could be read under {root}"
                         + (f" (first problem: {bad[0]})" if bad else ""))
    return ok, bad


def split_library(decoded: Sequence[Decoded], held_out: Sequence[str]) -> dict[str, list[Decoded]]:
    """``held_out``: the named sources' sounds; ``dev``: the rest. A named source the library does not
    have is a :class:`UsageError` (a typo would silently hold nothing out)."""
    have = {d.sound.source for d in decoded}
    missing = sorted(set(held_out) - have)
    if missing:
        raise UsageError(f"held-out source(s) {', '.join(missing)} not in the library (it has {', '.join(sorted(have))})")
    return {"held_out": [d for d in decoded if d.sound.source in held_out],
            "dev": [d for d in decoded if d.sound.source not in held_out]}


def library_sets(split: dict[str, list[Decoded]], scenes: int, seed: int, seconds: float = 10.0,
                 ) -> dict[str, list[LibraryScene]]:
    """Per split with a gunshot: ``scenes`` scenes with shots and as many shot-free ones, each set from
    its own seed."""
    out: dict[str, list[LibraryScene]] = {}
    for k, name in enumerate(SPLITS):
        lib = Prepared(split.get(name, []))
        if not lib.shots:
            continue
        out[name] = library_scenes(lib, scenes, seed + 2 * k, seconds)
        out[f"{name}_shot_free"] = library_scenes(lib, scenes, seed + 2 * k + 1, seconds, shot_free=True)
    return out


def recall_by_level(scenes: Sequence[LibraryScene], scores: list[list[tuple[int, float, float, float]]],
                    threshold: float) -> dict[str, dict[str, Any]]:
    """Recall of the shots whose drawn peak level lies in each of :data:`LEVEL_BANDS`."""
    out: dict[str, dict[str, Any]] = {}
    for lo, hi in LEVEL_BANDS:
        t = Tally()
        for ls, sco in zip(scenes, scores, strict=True):
            keep = tuple(s for s, p in zip(ls.scene.shots, ls.shot_peaks_db, strict=True) if lo <= p < hi
                         or (hi == LEVEL_BANDS[-1][1] and p == hi))
            score_scene(t, Scene(ls.scene.audio, keep, ls.scene.impulses, ls.scene.seconds), replay(sco, threshold))
        out[f"{lo:+.0f}..{hi:+.0f} dBFS"] = {"shots": t.shots, "recall": round(t.tp / t.shots, 4) if t.shots else None}
    return out


def evaluate_library(models: Sequence[Path], sets: dict[str, list[LibraryScene]],
                     thresholds: Sequence[float] = SWEEP) -> dict[str, Any]:
    """Per model: the summary at its own threshold (held-out split first), the sweep, recall by level."""
    from bodycam.device.detect.audio_model_spec import load_audio_model_spec

    plain = {k: [ls.scene for ls in v] for k, v in sets.items()}
    res: dict[str, Any] = {}
    for m in models:
        own = load_audio_model_spec(m).threshold
        scores = {k: stream_scores(m, v) for k, v in plain.items()}
        at = {th: evaluate_sets(m, plain, threshold=th, scores=scores) for th in sorted({*thresholds, own})}
        at_own = at[own]
        sweep = {}
        for th, r in at.items():
            sweep[f"{th:g}"] = {s: {"recall": r[s]["recall"], "precision": r[s]["precision"],
                                    "false_alarms_per_hour": r[f"{s}_shot_free"]["false_alarms_per_hour"]}
                                for s in SPLITS if s in r}
        res[str(m)] = {"threshold": own, **{k: at_own[k] for k in plain},
                       "sweep": sweep,
                       "recall_by_level": {s: recall_by_level(sets[s], scores[s], own) for s in SPLITS if s in sets}}
    return res


def describe(split: dict[str, list[Decoded]]) -> dict[str, dict[str, Any]]:
    """What each split holds: sources and how many sounds of each label."""
    out: dict[str, dict[str, Any]] = {}
    for name, ds in split.items():
        sounds: list[LibrarySound] = [d.sound for d in ds]
        out[name] = {"sources": sorted({s.source for s in sounds}),
                     **{label: sum(s.label == label for s in sounds) for label in ("shot", "impulse", "bed")}}
    return out


__all__ = ["DEFAULT_HELD_OUT", "DEFAULT_MANIFEST", "LEVEL_BANDS", "SPLITS", "describe", "evaluate_library", "library_sets",
           "load_library", "recall_by_level", "split_library"]
