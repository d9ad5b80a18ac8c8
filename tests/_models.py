"""Model helpers for tests: a model whose weights differ behind an honest-looking sidecar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bodycam.device.detect.detector import _runtime
from bodycam.device.detect.model_spec import sha256_file, sidecar_path


def corrupt_weights(model: Path) -> None:
    """Negate the largest int8 constant tensor in the file and re-hash the sidecar to match."""
    interpreter_cls, _, _ = _runtime()
    it = interpreter_cls(model_path=str(model))
    it.allocate_tensors()
    data = bytearray(model.read_bytes())
    best: np.ndarray[Any, Any] | None = None
    at = -1
    for d in it.get_tensor_details():
        if d["dtype"] != np.int8 or len(d["shape"]) != 4:
            continue
        try:
            t = it.get_tensor(d["index"])
        except ValueError:
            continue
        if len(np.unique(t)) < 16 or (best is not None and t.size <= best.size):
            continue  # activations (not yet computed) and small tensors
        raw = t.tobytes()
        found = data.find(raw)
        if found >= 0 and data.find(raw, found + 1) < 0:  # a constant stored once in the file: weights
            best, at = t.copy(), found
    assert best is not None, "no convolution weights found in the file"
    raw = best.tobytes()
    flipped = (-best.astype(np.int16)).clip(-127, 127).astype(np.int8).tobytes()
    data[at : at + len(raw)] = flipped
    model.write_bytes(bytes(data))
    side = json.loads(sidecar_path(model).read_text())
    side["sha256"] = sha256_file(model)
    sidecar_path(model).write_text(json.dumps(side, indent=1))
