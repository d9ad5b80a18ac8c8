"""Generated clips with their sound replaced by other people's sounds (the fused loop's test on sound the
project never made).

For a family data set (``bodycam-sim make-dataset --families``), :func:`dub_dataset` writes a copy whose
video packets are the original's, bit for bit, and whose sound track is mixed from a sound library
(:mod:`library_scenes`): a library gunshot at each true shot's ``audio_sample`` with the clip's own drawn
level (``loudness_db``, limited to :data:`~library_scenes.SHOT_PEAK_DBFS`: the scene's distance stays
what the picture shows), a library impulse where the clip had a sounding distractor (a door slam, a
clap, a dropped object, a firework), one or two library beds throughout; clipped at full scale and
encoded as AAC as the generator does. Truth files and the index are copied unchanged: the shots are
where they were.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bodycam.device.errors import ClipError, StorageError, UsageError
from bodycam.hw_sim.audio_randomise import encode_mono
from bodycam.model_compile.audio_clips import IMPULSE_KINDS
from bodycam.model_compile.library_scenes import (
    IMPULSE_PEAK_DBFS,
    MIC_RATE,
    SHOT_PEAK_DBFS,
    Prepared,
    beds,
    db_gain,
)

F32 = npt.NDArray[np.float32]
AAC_BITRATE = 96_000


def dub_track(truth: dict[str, Any], lib: Prepared, rng: np.random.Generator) -> F32:
    """The new sound track (mono float32 at :data:`MIC_RATE`) for a clip with ``truth``."""
    if int(truth["audio"]["sample_rate"]) != MIC_RATE:
        raise ClipError(f"{truth.get('clip')}: sound at {truth['audio']['sample_rate']} Hz, expected {MIC_RATE}")
    n = int(truth["audio"]["samples"])
    out = beds(rng, lib, n)
    events: list[tuple[int, float, list[tuple[F32, str]]]] = []
    for s in truth["shots"]:
        level = float(np.clip(float(s.get("loudness_db", 0.0)), *SHOT_PEAK_DBFS))
        events.append((int(s["audio_sample"]), level, lib.shots))
    for d in truth["distractors"]:
        if d["kind"] in IMPULSE_KINDS and d.get("audio_sample") is not None and lib.impulses:
            events.append((int(d["audio_sample"]), float(rng.uniform(*IMPULSE_PEAK_DBFS)), lib.impulses))
    for at, level, pool in events:
        if not pool or not 0 <= at < n:
            continue
        snd = pool[int(rng.integers(len(pool)))][0]
        seg = snd[: n - at] * db_gain(level)
        out[at : at + len(seg)] += seg
    res: F32 = np.clip(out, -1.0, 1.0).astype(np.float32)
    return res


def remux_with_sound(src: Path, dst: Path, audio: F32) -> None:
    """``src``'s video packets as they are and ``audio`` (mono, :data:`MIC_RATE`) as AAC, into ``dst``."""
    import av

    tmp = dst.with_name(f".{dst.name}.part")
    try:
        inp: Any = av.open(str(src))
    except (OSError, av.error.FFmpegError) as exc:
        raise ClipError(f"{src}: cannot open: {exc}") from exc
    try:
        if not inp.streams.video:
            raise ClipError(f"{src}: no video stream")
        vin = inp.streams.video[0]
        out: Any = av.open(str(tmp), mode="w", format="mp4")
        try:
            vout = out.add_stream_from_template(vin)
            aus = out.add_stream("aac", rate=MIC_RATE)
            aus.layout = "mono"
            aus.bit_rate = AAC_BITRATE
            for pkt in inp.demux(vin):
                if pkt.dts is None:
                    continue
                pkt.stream = vout
                out.mux(pkt)
            encode_mono(out, aus, audio, MIC_RATE)
        finally:
            out.close()
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"{dst}: cannot write: {exc}") from exc
    finally:
        inp.close()
    tmp.replace(dst)


def dub_dataset(src: Path, dst: Path, lib: Prepared, seed: int, log: Callable[[str], None] | None = None) -> int:
    """Every clip of the family data set ``src`` into ``dst`` with library sound; returns the count."""
    index = src / "index.json"
    if not index.is_file():
        raise UsageError(f"{src}: no index.json (a data set from bodycam-sim make-dataset --families)")
    if not lib.shots:
        raise UsageError("the sound library has no gunshot to dub with")
    doc = json.loads(index.read_text())
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(index, dst / "index.json")
    rng = np.random.default_rng(seed)
    for k, clip in enumerate(doc["clips"]):
        truth_path = src / clip["truth"]
        try:
            track = dub_track(json.loads(truth_path.read_text()), lib, rng)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ClipError(f"{truth_path}: not a usable truth file ({type(exc).__name__}: {exc})") from exc
        (dst / clip["path"]).parent.mkdir(parents=True, exist_ok=True)
        remux_with_sound(src / clip["path"], dst / clip["path"], track)
        shutil.copy2(truth_path, dst / clip["truth"])
        if log is not None and (k + 1) % 10 == 0:
            log(f"dubbed {k + 1}/{len(doc['clips'])}")
    return len(doc["clips"])


__all__ = ["dub_dataset", "dub_track", "remux_with_sound"]
