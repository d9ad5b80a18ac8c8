"""The audio model's contract: ``<name>.tflite`` plus its sidecar ``<name>.json`` (task ``gunshot-audio``).

Same schema and rules as the video model's sidecar (:mod:`bodycam.device.detect.model_spec`):
SHA-256 of the file, int8 input and output with their quantisation, a default threshold,
provenance, metrics and the Edge TPU build. The input says which features it expects; the
firmware refuses a model whose features differ from the ones it computes
(:data:`bodycam.device.detect.audio_features.FEATURES`) or whose shape does not match them::

    "input": {"shape": [1, 24, 40, 1], "dtype": "int8", "scale": 0.05, "zero_point": 10,
              "features": {"kind": "log-mel", "sample_rate": 16000, "n_fft": 512, "win": 400,
                           "hop": 160, "mels": 40, "fmin": 50.0, "fmax": 7600.0, "floor": 1e-07},
              "frames": 24, "target": [10, 12], "stride": 2}

``frames`` log-mel frames make one window; the model says whether a shot's onset lies in
frames ``[target[0], target[1])`` of it; the firmware runs it every ``stride`` frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bodycam.device.detect.audio_features import FEATURES, FeatureSpec
from bodycam.device.detect.model_spec import SCHEMA, _get, load_checked_sidecar, threshold_and_sha256
from bodycam.device.errors import ModelError

TASK = "gunshot-audio"


@dataclass(frozen=True)
class AudioModelSpec:
    name: str
    version: str
    file: str
    sha256: str
    shape: tuple[int, int, int, int]  # [1, frames, mels, 1]
    scale: float
    zero_point: int
    frames: int
    target: tuple[int, int]
    stride: int
    out_scale: float
    out_zero_point: int
    threshold: float
    features: FeatureSpec
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def edgetpu_file(self) -> str | None:
        etpu = self.raw.get("edgetpu") or {}
        name = etpu.get("file") if isinstance(etpu, dict) else None
        return str(name) if name else None


def parse_audio_sidecar(data: dict[str, Any], where: str) -> AudioModelSpec:
    if data.get("schema") != SCHEMA:
        raise ModelError(f"{where}: schema is {data.get('schema')!r}, expected {SCHEMA!r}")
    if data.get("task") != TASK:
        raise ModelError(f"{where}: task is {data.get('task')!r}, expected {TASK!r} (not an audio model)")
    inp = _get(data, "input", dict, where)
    out = _get(data, "output", dict, where)
    num = (int, float)
    feats = _get(inp, "features", dict, f"{where}: input")
    try:
        fspec = FeatureSpec(**feats)
    except TypeError as exc:
        raise ModelError(f"{where}: input.features {feats} are not feature parameters ({exc})") from exc
    if fspec != FEATURES:
        raise ModelError(f"{where}: the model was trained on features {fspec.as_dict()}, the firmware computes "
                         f"{FEATURES.as_dict()}: rebuild the model")
    frames = _get(inp, "frames", int, f"{where}: input")
    shape = tuple(_get(inp, "shape", list, f"{where}: input"))
    if shape != (1, frames, fspec.mels, 1):
        raise ModelError(f"{where}: input shape {list(shape)} is not [1, frames={frames}, mels={fspec.mels}, 1]")
    target = tuple(_get(inp, "target", list, f"{where}: input"))
    if len(target) != 2 or not 0 <= target[0] < target[1] <= frames:
        raise ModelError(f"{where}: input target {list(target)} is not a frame range inside the window")
    stride = _get(inp, "stride", int, f"{where}: input")
    if stride != target[1] - target[0]:
        raise ModelError(f"{where}: input stride {stride} must equal the target's length {target[1] - target[0]}")
    if _get(inp, "dtype", str, f"{where}: input") != "int8" or _get(out, "dtype", str, f"{where}: output") != "int8":
        raise ModelError(f"{where}: input and output must be int8 (full-integer model)")
    if tuple(_get(out, "shape", list, f"{where}: output")) != (1, 1):
        raise ModelError(f"{where}: output shape must be [1, 1]")
    threshold, sha = threshold_and_sha256(data, where)
    return AudioModelSpec(
        name=_get(data, "name", str, where), version=_get(data, "version", str, where),
        file=_get(data, "file", str, where), sha256=sha,
        shape=(1, frames, fspec.mels, 1),
        scale=float(_get(inp, "scale", num, f"{where}: input")),
        zero_point=_get(inp, "zero_point", int, f"{where}: input"),
        frames=frames, target=(int(target[0]), int(target[1])), stride=stride,
        out_scale=float(_get(out, "scale", num, f"{where}: output")),
        out_zero_point=_get(out, "zero_point", int, f"{where}: output"),
        threshold=threshold, features=fspec, raw=data,
    )


def load_audio_model_spec(model_path: Path, *, verify_hash: bool = True) -> AudioModelSpec:
    """Read and validate the audio model's sidecar; check the file's SHA-256."""
    return load_checked_sidecar(model_path, "audio model", parse_audio_sidecar, verify_hash=verify_hash)


def default_audio_model_path() -> Path:
    """The audio model shipped with the firmware (package data of bodycam.device)."""
    return Path(__file__).resolve().parent.parent / "models" / "shotnet_audio.tflite"


__all__ = ["SCHEMA", "TASK", "AudioModelSpec", "default_audio_model_path", "load_audio_model_spec", "parse_audio_sidecar"]
