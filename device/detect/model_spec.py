"""The model contract: ``<name>.tflite`` plus its sidecar ``<name>.json``.

The sidecar (schema ``bodycam.model/1``) says how to feed the model and read its
output, and where it came from. The firmware refuses a model whose sidecar does
not match the file (SHA-256) or whose interpreter tensors disagree with the
declared input/output (checked by the detector once the interpreter is loaded).

Example (abridged)::

    {"schema": "bodycam.model/1", "name": "shotnet", "version": "1.0.0",
     "task": "gunshot-visual", "file": "shotnet.tflite", "sha256": "...",
     "input": {"shape": [1, 72, 128, 12], "dtype": "int8", "scale": 0.00392156,
               "zero_point": -128, "colour": "rgb", "frames": 4, "width": 128,
               "height": 72, "target_offset": 1, "resize": "area"},
     "output": {"shape": [1, 1], "dtype": "int8", "scale": 0.00390625,
                "zero_point": -128, "labels": ["shot"]},
     "threshold": 0.5, "macs_per_frame": 4800000,
     "provenance": {...}, "metrics": {...}, "edgetpu": {...}}
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bodycam.device.detect.preprocess import InputSpec
from bodycam.device.errors import ConfigError, ModelError
from bodycam.device.safe_load import load_json

SCHEMA = "bodycam.model/1"


@dataclass(frozen=True)
class OutputSpec:
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int
    labels: tuple[str, ...]


@dataclass(frozen=True)
class ModelSpec:
    """A parsed, validated sidecar."""

    name: str
    version: str
    task: str
    file: str
    sha256: str
    input: InputSpec
    output: OutputSpec
    threshold: float
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self.input.shape

    @property
    def edgetpu_file(self) -> str | None:
        etpu = self.raw.get("edgetpu") or {}
        name = etpu.get("file") if isinstance(etpu, dict) else None
        return str(name) if name else None


def max_score(scale: float, zero_point: int) -> float:
    """The largest score an int8 output quantised with ``scale``/``zero_point`` can give (q = 127)."""
    return (127 - zero_point) * scale


def check_reachable(where: str, value: float, scale: float, zero_point: int, model: str) -> str | None:
    """Refuse a score threshold ``where`` that the int8 output of ``model`` can never reach.

    Above :func:`max_score` a configured threshold silently disables that detection (a typo such as
    0.997 for 0.97 with the shipped output: 255/256 = 0.99609 at most): :class:`ConfigError` naming the
    key and the model's maximum. Within one quantisation step of it, a warning is returned (only the top
    output code or two reach it).
    """
    top = max_score(scale, zero_point)
    if value > top:
        raise ConfigError(f"{where}: {value:g} is above the largest score model {model} can give "
                          f"({top:.6g}: its int8 output's (127 - zero point) x scale): nothing would ever reach "
                          f"it; use at most {top:.6g}")
    if value > top - scale:
        return (f"{where}: {value:g} is within one output step ({scale:.6g}) of the largest score model {model} "
                f"can give ({top:.6g}): only the top output codes reach it")
    return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def _get(d: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise ModelError(f"{where}: missing '{key}'")
    value = d[key]
    if isinstance(value, bool) and typ is not bool:
        raise ModelError(f"{where}: '{key}' has the wrong type")
    if not isinstance(value, typ):
        raise ModelError(f"{where}: '{key}' has the wrong type ({type(value).__name__})")
    return value


def parse_sidecar(data: dict[str, Any], where: str) -> ModelSpec:
    if data.get("schema") != SCHEMA:
        raise ModelError(f"{where}: schema is {data.get('schema')!r}, expected {SCHEMA!r}")
    inp = _get(data, "input", dict, where)
    out = _get(data, "output", dict, where)
    num = (int, float)
    ispec = InputSpec(
        width=_get(inp, "width", int, f"{where}: input"),
        height=_get(inp, "height", int, f"{where}: input"),
        frames=_get(inp, "frames", int, f"{where}: input"),
        colour=_get(inp, "colour", str, f"{where}: input"),
        scale=float(_get(inp, "scale", num, f"{where}: input")),
        zero_point=_get(inp, "zero_point", int, f"{where}: input"),
        target_offset=_get(inp, "target_offset", int, f"{where}: input"),
    )
    if ispec.colour not in ("rgb", "gray"):
        raise ModelError(f"{where}: input colour {ispec.colour!r} is not 'rgb' or 'gray'")
    ispec.check()
    shape = tuple(_get(inp, "shape", list, f"{where}: input"))
    if shape != ispec.shape:
        raise ModelError(f"{where}: input shape {list(shape)} does not match width/height/frames/colour {list(ispec.shape)}")
    if _get(inp, "dtype", str, f"{where}: input") != "int8":
        raise ModelError(f"{where}: input dtype must be int8 (full-integer model)")
    ospec = OutputSpec(
        shape=tuple(_get(out, "shape", list, f"{where}: output")),
        dtype=_get(out, "dtype", str, f"{where}: output"),
        scale=float(_get(out, "scale", num, f"{where}: output")),
        zero_point=_get(out, "zero_point", int, f"{where}: output"),
        labels=tuple(_get(out, "labels", list, f"{where}: output")),
    )
    if ospec.dtype != "int8":
        raise ModelError(f"{where}: output dtype must be int8 (full-integer model)")
    threshold, sha = threshold_and_sha256(data, where)
    return ModelSpec(
        name=_get(data, "name", str, where),
        version=_get(data, "version", str, where),
        task=_get(data, "task", str, where),
        file=_get(data, "file", str, where),
        sha256=sha,
        input=ispec,
        output=ospec,
        threshold=threshold,
        raw=data,
    )


def threshold_and_sha256(data: dict[str, Any], where: str) -> tuple[float, str]:
    """The sidecar fields every model kind has: a default threshold in (0, 1) and the file's SHA-256."""
    threshold = float(_get(data, "threshold", (int, float), where))
    if not 0.0 < threshold < 1.0:
        raise ModelError(f"{where}: threshold {threshold} must be in (0, 1)")
    sha = _get(data, "sha256", str, where)
    if len(sha) != 64:
        raise ModelError(f"{where}: sha256 is not a SHA-256 hex digest")
    return threshold, sha


class _Hashed(Protocol):
    @property
    def sha256(self) -> str: ...


_S = TypeVar("_S", bound=_Hashed)


def load_checked_sidecar(model_path: Path, what: str, parse: Callable[[dict[str, Any], str], _S],
                         *, verify_hash: bool = True) -> _S:
    """Read ``model_path``'s sidecar, parse it with ``parse`` and check the file's SHA-256 against it.

    One path for every model kind (``what``: "model", "audio model"); ``parse`` returns a spec with
    a ``sha256`` attribute.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: {what} file not found")
    side = sidecar_path(model_path)
    if not side.is_file():
        raise ModelError(f"{model_path}: sidecar {side.name} not found next to the model")
    data = load_json(side, f"{what} sidecar", error=ModelError)
    if not isinstance(data, dict):
        raise ModelError(f"{side}: the sidecar must be a JSON object")
    spec = parse(data, str(side))
    if verify_hash:
        actual = sha256_file(model_path)
        expected = spec.sha256
        if actual != expected:
            raise ModelError(
                f"{model_path}: SHA-256 {actual[:12]}... does not match its sidecar ({expected[:12]}...): "
                "the model and sidecar are from different builds"
            )
    return spec


def load_model_spec(model_path: Path, *, verify_hash: bool = True) -> ModelSpec:
    """Read and validate the sidecar of ``model_path``; check the file's SHA-256."""
    return load_checked_sidecar(model_path, "model", parse_sidecar, verify_hash=verify_hash)


def default_model_path() -> Path:
    """The model shipped with the firmware (package data of bodycam.device)."""
    return Path(__file__).resolve().parent.parent / "models" / "shotnet.tflite"
