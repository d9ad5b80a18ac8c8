"""Writing the ``bodycam.model/1`` sidecar from a built model and its interpreter."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bodycam.device.detect.model_spec import SCHEMA, ModelSpec, load_model_spec, sha256_file, sidecar_path
from bodycam.device.detect.preprocess import InputSpec
from bodycam.device.errors import ModelError, StorageError
from bodycam.model_compile.config import INPUT_SCALE, INPUT_ZERO_POINT
from bodycam.model_compile.tflite_info import io_tensors

TASK = "gunshot-visual"


def check_io(interpreter: Any, spec: InputSpec) -> None:
    """The interpreter's tensors must be exactly the contract's (int8, 1/255, -128, shape)."""
    inputs, outputs = io_tensors(interpreter)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"expected one input and one output, got {len(inputs)} and {len(outputs)}")
    i, o = inputs[0], outputs[0]
    if i.shape != spec.shape or i.dtype != "int8":
        raise ModelError(f"model input is {list(i.shape)} {i.dtype}, expected {list(spec.shape)} int8")
    if abs(i.scale - INPUT_SCALE) > 1e-7 or i.zero_point != INPUT_ZERO_POINT:
        raise ModelError(
            f"model input quantisation is scale={i.scale} zero_point={i.zero_point}, "
            f"expected {INPUT_SCALE} and {INPUT_ZERO_POINT} (pixel - 128)"
        )
    if o.dtype != "int8" or o.shape != (1, 1):
        raise ModelError(f"model output is {list(o.shape)} {o.dtype}, expected [1, 1] int8")


def sidecar_dict(
    model_path: Path,
    interpreter: Any,
    spec: InputSpec,
    *,
    version: str,
    threshold: float,
    macs_per_frame: int,
    provenance: dict[str, Any],
    metrics: dict[str, Any],
    edgetpu: dict[str, Any],
) -> dict[str, Any]:
    check_io(interpreter, spec)
    _, outputs = io_tensors(interpreter)
    o = outputs[0]
    return {
        "schema": SCHEMA,
        "name": model_path.stem,
        "version": version,
        "task": TASK,
        "file": model_path.name,
        "sha256": sha256_file(model_path),
        "size_bytes": model_path.stat().st_size,
        "input": {
            "shape": list(spec.shape),
            "dtype": "int8",
            "scale": INPUT_SCALE,
            "zero_point": INPUT_ZERO_POINT,
            "colour": spec.colour,
            "frames": spec.frames,
            "width": spec.width,
            "height": spec.height,
            "target_offset": spec.target_offset,
            "resize": "area",
        },
        "output": {
            "shape": list(o.shape),
            "dtype": "int8",
            "scale": o.scale,
            "zero_point": o.zero_point,
            "labels": ["shot"],
        },
        "threshold": round(threshold, 4),
        "macs_per_frame": macs_per_frame,
        "provenance": provenance,
        "metrics": metrics,
        "edgetpu": edgetpu,
    }


def write_sidecar(model_path: Path, data: dict[str, Any]) -> ModelSpec:
    """Write the sidecar next to the model and read it back through the firmware's loader."""
    side = sidecar_path(model_path)
    tmp = side.with_name(side.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, side)
    except OSError as exc:
        raise StorageError(f"{side}: cannot write the sidecar ({exc})") from exc
    return load_model_spec(model_path)
