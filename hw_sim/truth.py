"""Ground truth of a synthetic clip: the ``bodycam.truth/1`` file format.

Every clip ``NAME.mp4`` written by the footage generator has a sidecar
``NAME.truth.json`` (see :func:`truth_path_for`) saying exactly what was rendered:

``schema``      ``"bodycam.truth/1"``
``clip``        file name of the clip (no directory)
``generator``   ``{"name": "bodycam-sim", "version": str, "seed": int, "scene": str}``
``video``       ``{"width", "height", "fps", "frames", "duration_s"}``; frame ``i`` has media
                time exactly ``i / fps`` (decoded ``pts_time``), ``duration_s = frames / fps``
``audio``       ``{"sample_rate", "samples"}``; decoded sample ``k`` (by frame pts) is at ``k / sample_rate``
``shots``       list of :class:`Shot`, in time order
``distractors`` list of :class:`Distractor` (things a careless detector would take for a shot)
``weapon``      list of :class:`WeaponPhase` covering the whole clip without gaps

Frame numbers are 0-based and ``end_frame`` is *inclusive*; ``end_s`` is the end of the
last affected frame, ``(end_frame + 1) / fps``. Coordinates are pixels in the clip's frame,
``[x, y]`` from the top-left corner.

Import this module from anything that reads truth (model trainer, simulator scoring);
:func:`load_truth` validates and raises :class:`~bodycam.device.errors.TruthError`
naming the file and the problem.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bodycam.device.errors import StorageError, TruthError
from bodycam.device.safe_load import load_json

SCHEMA = "bodycam.truth/1"
GENERATOR_NAME = "bodycam-sim"

SHOOTERS = ("wearer", "other")
WEAPON_STATES = ("holstered", "drawing", "drawn", "holstering")
WEAPON_KINDS = ("pistol", "carbine", "none")
DISTRACTOR_KINDS = (
    "photo_flash",  # whole-frame white flash, 1 frame (visual)
    "lightbar_strobe",  # red/blue alternating bursts in a region, repeated (visual)
    "torch_sweep",  # bright blob moving over many frames (visual)
    "headlight_sweep",  # pair of warm-white blobs moving over many frames (visual)
    "sun_glint",  # small bright specular spot, 1-3 frames (visual)
    "fast_pan",  # fast camera turn with motion blur and skew, no flash (visual)
    "door_slam",  # low broadband impulse + small camera jerk (audio + visual)
    "clap",  # sharp short broadband impulse (audio)
    "dropped_object",  # clatter of small impulses, sometimes a falling object in view (audio [+ visual])
    "siren",  # wailing tone (audio)
    "shouting",  # loud voiced bursts (audio)
    "babble",  # crowd babble (audio)
    # domain-randomised data (bodycam-sim make-dataset, hw_sim.look)
    "fluorescent_flicker",  # mains-rate brightness ripple, rolling-shutter bands (visual)
    "led_flicker",  # PWM light: dark bands rolling through the frame (visual)
    "screen",  # a TV/phone screen cutting between bright and dark content (visual)
    "firework",  # coloured burst in the sky with a bang (audio + visual)
)
SCENES = ("range", "street", "indoor", "night")


@dataclass(frozen=True)
class Shot:
    """One firearm discharge.

    ``frame``: first frame in which the flash is visible (even if faint or occluded);
    ``t_s = frame / fps``; ``audio_sample = round(frame / fps * sample_rate)``: where the
    gunshot's sharp onset starts. ``muzzle_xy``: flash centre in that frame, or ``None``
    when the muzzle is out of view. ``flash_frames``: 1 or 2; 0 when the flash fell between
    exposures (in no frame: ``frame`` is then the frame whose period holds the shot, where its sound
    starts). ``intensity``: 0..1 (peak flash
    strength). ``occluded``: the flash is partly hidden. ``weapon``: pistol/carbine for the
    wearer, the other person's weapon otherwise.
    """

    frame: int
    t_s: float
    audio_sample: int
    muzzle_xy: tuple[float, float] | None
    shooter: str
    flash_frames: int
    intensity: float
    occluded: bool
    weapon: str = "pistol"
    flash_shape: str = "star"
    colour_k: float = 3000.0
    loudness_db: float = 0.0
    clipped: bool = False


@dataclass(frozen=True)
class Distractor:
    """A non-shot event. ``xy`` is a representative screen position (or ``None`` for
    global/audio-only events); ``audio_sample`` is the sound's onset (``None`` if silent);
    ``while_drawn``: it happened while the wearer's weapon was out."""

    kind: str
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    xy: tuple[float, float] | None = None
    audio_sample: int | None = None
    while_drawn: bool = False


@dataclass(frozen=True)
class WeaponPhase:
    """The wearer's weapon state over ``start_frame..end_frame`` (inclusive)."""

    state: str
    start_frame: int
    end_frame: int
    weapon: str = "pistol"


@dataclass(frozen=True)
class GeneratorInfo:
    name: str
    version: str
    seed: int
    scene: str


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int
    duration_s: float


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    samples: int


@dataclass(frozen=True)
class Truth:
    clip: str
    generator: GeneratorInfo
    video: VideoInfo
    audio: AudioInfo
    shots: tuple[Shot, ...] = ()
    distractors: tuple[Distractor, ...] = ()
    weapon: tuple[WeaponPhase, ...] = ()
    schema: str = field(default=SCHEMA)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this truth (tuples become lists)."""
        d: dict[str, Any] = {
            "schema": self.schema,
            "clip": self.clip,
            "generator": asdict(self.generator),
            "video": asdict(self.video),
            "audio": asdict(self.audio),
            "shots": [_listify(asdict(s)) for s in self.shots],
            "distractors": [_listify(asdict(x)) for x in self.distractors],
            "weapon": [asdict(w) for w in self.weapon],
        }
        return d

    def shot_frames(self) -> list[int]:
        return [s.frame for s in self.shots]


def truth_path_for(clip_path: str | os.PathLike[str]) -> Path:
    """``OUT.mp4`` -> ``OUT.truth.json`` (same directory)."""
    p = Path(clip_path)
    return p.with_name(p.stem + ".truth.json")


def save_truth(truth: Truth, path: str | os.PathLike[str]) -> Path:
    """Write ``truth`` as pretty JSON (atomically: temp file + rename)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    try:
        tmp.write_text(json.dumps(truth.to_dict(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, p)
    except OSError as exc:
        raise StorageError(f"{p}: cannot write truth file: {exc.strerror or exc}") from exc
    return p


MAX_TRUTH_BYTES = 16 * 1024 * 1024


def load_truth(path: str | os.PathLike[str]) -> Truth:
    """Read and validate a truth file; :class:`TruthError` names the file and the problem."""
    p = Path(path)
    obj = load_json(p, "truth file", error=TruthError, max_bytes=MAX_TRUTH_BYTES)
    try:
        return _parse(obj)
    except _Invalid as exc:
        raise TruthError(f"{p}: {exc}") from None


def truth_from_dict(obj: Any) -> Truth:
    """Validate a parsed JSON object and build a :class:`Truth` (raises TruthError)."""
    try:
        return _parse(obj)
    except _Invalid as exc:
        raise TruthError(str(exc)) from None


# ----------------------------------------------------------------------------- internals


class _Invalid(Exception):
    pass


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-finite number {name}")


def _listify(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _obj(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _Invalid(f"{where}: expected an object")
    return v


def _get(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise _Invalid(f"{where}: missing field {key!r}")
    return d[key]


def _int(d: dict[str, Any], key: str, where: str, lo: int | None = None, hi: int | None = None) -> int:
    v = _get(d, key, where)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Invalid(f"{where}.{key}: expected an integer, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise _Invalid(f"{where}.{key}: {v} out of range [{lo}, {hi}]")
    return v


def _num(d: dict[str, Any], key: str, where: str, lo: float | None = None, hi: float | None = None) -> float:
    v = _get(d, key, where)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise _Invalid(f"{where}.{key}: expected a number, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise _Invalid(f"{where}.{key}: {v} out of range [{lo}, {hi}]")
    return float(v)


def _str(d: dict[str, Any], key: str, where: str, choices: tuple[str, ...] | None = None) -> str:
    v = _get(d, key, where)
    if not isinstance(v, str):
        raise _Invalid(f"{where}.{key}: expected a string, got {v!r}")
    if choices is not None and v not in choices:
        raise _Invalid(f"{where}.{key}: {v!r} is not one of {', '.join(choices)}")
    return v


def _bool(d: dict[str, Any], key: str, where: str, default: bool | None = None) -> bool:
    if key not in d and default is not None:
        return default
    v = _get(d, key, where)
    if not isinstance(v, bool):
        raise _Invalid(f"{where}.{key}: expected true/false, got {v!r}")
    return v


def _xy(v: Any, where: str) -> tuple[float, float] | None:
    if v is None:
        return None
    if (
        not isinstance(v, list)
        or len(v) != 2
        or not all(isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) for c in v)
    ):
        raise _Invalid(f"{where}: expected [x, y] or null, got {v!r}")
    return (float(v[0]), float(v[1]))


def _list(d: dict[str, Any], key: str, where: str) -> list[Any]:
    v = _get(d, key, where)
    if not isinstance(v, list):
        raise _Invalid(f"{where}.{key}: expected a list")
    return v


def _parse(obj: Any) -> Truth:
    top = _obj(obj, "truth")
    schema = _str(top, "schema", "truth")
    if schema != SCHEMA:
        raise _Invalid(f"schema is {schema!r}, expected {SCHEMA!r}")
    clip = _str(top, "clip", "truth")
    g = _obj(_get(top, "generator", "truth"), "generator")
    gen = GeneratorInfo(
        name=_str(g, "name", "generator"),
        version=_str(g, "version", "generator"),
        seed=_int(g, "seed", "generator", 0, 2**32 - 1),
        scene=_str(g, "scene", "generator", SCENES),
    )
    v = _obj(_get(top, "video", "truth"), "video")
    video = VideoInfo(
        width=_int(v, "width", "video", 1),
        height=_int(v, "height", "video", 1),
        fps=_num(v, "fps", "video", 1e-3),
        frames=_int(v, "frames", "video", 1),
        duration_s=_num(v, "duration_s", "video", 0.0),
    )
    if abs(video.duration_s - video.frames / video.fps) > 1e-3:
        raise _Invalid(f"video.duration_s {video.duration_s} != frames/fps {video.frames / video.fps:.6f}")
    a = _obj(_get(top, "audio", "truth"), "audio")
    audio = AudioInfo(sample_rate=_int(a, "sample_rate", "audio", 1), samples=_int(a, "samples", "audio", 0))

    shots: list[Shot] = []
    for i, s_any in enumerate(_list(top, "shots", "truth")):
        w = f"shots[{i}]"
        s = _obj(s_any, w)
        frame = _int(s, "frame", w, 0, video.frames - 1)
        t_s = _num(s, "t_s", w, 0.0)
        if abs(t_s - frame / video.fps) > 1e-3:
            raise _Invalid(f"{w}.t_s {t_s} != frame/fps {frame / video.fps:.6f}")
        sample = _int(s, "audio_sample", w, 0)
        want = round(frame / video.fps * audio.sample_rate)
        if sample != want:
            raise _Invalid(f"{w}.audio_sample {sample} != round(frame/fps*sample_rate) = {want}")
        xy = _xy(_get(s, "muzzle_xy", w), f"{w}.muzzle_xy")
        flash_frames = _int(s, "flash_frames", w, 0, 2)
        shots.append(
            Shot(
                frame=frame,
                t_s=t_s,
                audio_sample=sample,
                muzzle_xy=xy,
                shooter=_str(s, "shooter", w, SHOOTERS),
                flash_frames=flash_frames,
                intensity=_num(s, "intensity", w, 0.0, 1.0),
                occluded=_bool(s, "occluded", w),
                weapon=str(s.get("weapon", "pistol")),
                flash_shape=str(s.get("flash_shape", "star")),
                colour_k=float(s.get("colour_k", 3000.0)),
                loudness_db=float(s.get("loudness_db", 0.0)),
                clipped=_bool(s, "clipped", w, default=False),
            )
        )
    if any(b.frame <= a_.frame for a_, b in itertools.pairwise(shots)):
        raise _Invalid("shots are not in strictly increasing frame order")

    distractors: list[Distractor] = []
    for i, d_any in enumerate(_list(top, "distractors", "truth")):
        w = f"distractors[{i}]"
        d = _obj(d_any, w)
        sf = _int(d, "start_frame", w, 0, video.frames - 1)
        ef = _int(d, "end_frame", w, sf, video.frames - 1)
        asamp = d.get("audio_sample")
        if asamp is not None and (isinstance(asamp, bool) or not isinstance(asamp, int) or asamp < 0):
            raise _Invalid(f"{w}.audio_sample: expected a non-negative integer or null")
        distractors.append(
            Distractor(
                kind=_str(d, "kind", w, DISTRACTOR_KINDS),
                start_frame=sf,
                end_frame=ef,
                start_s=_num(d, "start_s", w, 0.0),
                end_s=_num(d, "end_s", w, 0.0),
                xy=_xy(d.get("xy"), f"{w}.xy"),
                audio_sample=asamp,
                while_drawn=_bool(d, "while_drawn", w, default=False),
            )
        )

    phases: list[WeaponPhase] = []
    for i, p_any in enumerate(_list(top, "weapon", "truth")):
        w = f"weapon[{i}]"
        ph = _obj(p_any, w)
        sf = _int(ph, "start_frame", w, 0, video.frames - 1)
        phases.append(
            WeaponPhase(
                state=_str(ph, "state", w, WEAPON_STATES),
                start_frame=sf,
                end_frame=_int(ph, "end_frame", w, sf, video.frames - 1),
                weapon=_str(ph, "weapon", w, WEAPON_KINDS) if "weapon" in ph else "pistol",
            )
        )
    if phases:
        if phases[0].start_frame != 0 or phases[-1].end_frame != video.frames - 1:
            raise _Invalid("weapon phases must cover the whole clip")
        for a_, b in itertools.pairwise(phases):
            if b.start_frame != a_.end_frame + 1:
                raise _Invalid(f"weapon phases leave a gap or overlap at frame {b.start_frame}")
    for i, shot in enumerate(shots):
        if shot.shooter == "wearer" and phases and not any(
            ph.state == "drawn" and ph.start_frame <= shot.frame <= ph.end_frame for ph in phases
        ):
            raise _Invalid(f"shots[{i}]: wearer shot at frame {shot.frame} while the weapon is not drawn")

    return Truth(
        clip=clip,
        generator=gen,
        video=video,
        audio=audio,
        shots=tuple(shots),
        distractors=tuple(distractors),
        weapon=tuple(phases),
        schema=schema,
    )
