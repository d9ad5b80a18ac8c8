"""``bodycam-model selftest``: pack a model's self-test windows and record the scores it gives them.

The windows come from a real clip with shots (the project's ``examples/range_demo.mp4`` by default)
through the firmware's own preprocessing (:func:`stack_windows`, the same code as the camera's
:class:`FrameWindow`), chosen evenly across the model's score range so that quiet, doubtful and
certain windows are all checked. The scores are computed by the firmware's own detector
(:class:`TFLiteDetector` on the CPU), so the camera compares like with like. The ``.npz`` is written
byte-for-byte reproducibly (fixed zip timestamps), so a rebuild gives the same SHA-256.
See ``device/detect/selftest.py`` for the format and how the camera uses it.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bodycam.device.detect.detector import TFLiteDetector
from bodycam.device.detect.model_spec import load_model_spec, sha256_file, sidecar_path
from bodycam.device.detect.preprocess import stack_windows
from bodycam.device.detect.selftest import KEY, load_windows, parse_selftest, run_selftest
from bodycam.device.errors import ModelError
from bodycam.model_compile.dataset import load_clip
from bodycam.model_compile.sidecar import write_sidecar

DEFAULT_WINDOWS = 24


def npz_bytes(windows: npt.NDArray[np.int8]) -> bytes:
    """An ``.npz`` with one array ``windows``, identical bytes for identical arrays."""
    arr = io.BytesIO()
    np.lib.format.write_array(arr, np.ascontiguousarray(windows), allow_pickle=False)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("windows.npy", date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, arr.getvalue())
    return out.getvalue()


def choose(scores: npt.NDArray[np.float64], n: int, threshold: float) -> list[int]:
    """``n`` window indices: a third the highest scores (shots), a third nearest the threshold (the
    doubtful ones, most sensitive to a changed model), the rest spread evenly over the sorted scores."""
    n = min(n, len(scores))
    order = np.argsort(scores, kind="stable")
    near = np.argsort(np.abs(scores - threshold), kind="stable")
    picks: list[int] = []
    for source in (order[::-1][: n // 3], near[: n // 3],
                   order[np.round(np.linspace(0, len(order) - 1, num=n)).astype(int)], order):
        for i in source:
            if len(picks) == n:
                break
            if int(i) not in picks:
                picks.append(int(i))
    return sorted(picks)


def make_selftest(model_path: Path, clip: Path, *, windows: int = DEFAULT_WINDOWS,
                  tolerance_steps: int = 2) -> dict[str, Any]:
    """Write ``<model>.selftest.npz`` beside ``model_path`` and its entry into the sidecar; returns the entry."""
    spec = load_model_spec(model_path)
    data = load_clip(clip, (spec.input.width, spec.input.height))
    all_windows = stack_windows(data.frames, spec.input)
    det = TFLiteDetector(model_path, spec, backend="cpu", threads=1)
    try:
        scores = np.array([det.score(all_windows[i : i + 1]) for i in range(all_windows.shape[0])])
        picks = choose(scores, windows, spec.threshold)
        chosen = np.ascontiguousarray(all_windows[picks])
        recorded = [float(scores[i]) for i in picks]
    finally:
        det.close()
    blob = npz_bytes(chosen)
    name = model_path.with_suffix(".selftest.npz").name
    (model_path.parent / name).write_bytes(blob)
    entry: dict[str, Any] = {
        "file": name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "scores": recorded,
        "tolerance_steps": tolerance_steps,
        "source": {"clip": clip.name, "sha256": sha256_file(clip), "frames": [int(i) for i in picks]},
    }
    raw = dict(spec.raw)
    raw[KEY] = entry
    new = write_sidecar(model_path, raw)
    # read back as the camera will, and run it once: a pack that fails here is never shipped
    st = parse_selftest(new.raw, str(sidecar_path(model_path)))
    assert st is not None
    det = TFLiteDetector(model_path, new, backend="cpu", threads=1)
    try:
        result = run_selftest(det, load_windows(model_path.parent, st, new.input.shape), st, new.output.scale)
    finally:
        det.close()
    if not result.ok:
        raise ModelError(f"{model_path}: the fresh self-test does not pass on this machine: {result}")
    return entry


__all__ = ["DEFAULT_WINDOWS", "choose", "make_selftest", "npz_bytes"]
