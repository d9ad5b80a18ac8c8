"""A model's self-test: fixed input windows shipped beside it, and the scores its build recorded.

The sidecar of a model built for the cameras carries::

    "selftest": {"file": "shotnet.selftest.npz", "sha256": "<of the .npz>",
                 "scores": [0.0039, 0.98, ...], "tolerance_steps": 2,
                 "source": {"clip": "range_demo.mp4", "sha256": "..."}}

``file`` holds one int8 array ``windows`` of shape ``(N, H, W, C)`` (the model's input without the
batch axis), stored without pickling. On the camera the loaded detector scores every window and
each score must be within ``tolerance_steps`` of the model's output quantisation step of the
recorded one. It catches a model that does not run as built on this camera's runtime: a corrupt
or miscompiled file whose sidecar was rewritten to match it, a delegate that computes something
else, a runtime that reads the tensors differently. ``tolerance_steps`` allows the last-bit
differences between CPU kernels (x86 build machine, ARM camera); the Edge TPU's own rounding
gets :data:`EDGETPU_EXTRA_STEPS` more.

A disagreement is a :class:`SelftestResult` with ``ok`` false (the caller decides: roll back, or
alarm); a sidecar or file that is malformed is a :class:`ModelError`.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from bodycam.device.errors import ModelError

KEY = "selftest"
EDGETPU_EXTRA_STEPS = 2
MAX_WINDOWS = 256
MAX_FILE_BYTES = 64 << 20


class Scorer(Protocol):
    """What the self-test needs of a detector (``Detector`` has it)."""

    def score(self, window: npt.NDArray[np.int8]) -> float: ...


@dataclass(frozen=True)
class SelftestSpec:
    file: str
    sha256: str
    scores: tuple[float, ...]
    tolerance_steps: int


@dataclass(frozen=True)
class SelftestResult:
    ok: bool
    windows: int
    worst_steps: float  # the largest |score - recorded| in output quantisation steps
    worst_window: int
    detail: str

    def __str__(self) -> str:
        return self.detail


def parse_selftest(raw: dict[str, Any], where: str) -> SelftestSpec | None:
    """The sidecar's ``selftest`` entry, or None when the model ships without one."""
    st = raw.get(KEY)
    if st is None:
        return None
    if not isinstance(st, dict):
        raise ModelError(f"{where}: '{KEY}' must be an object")
    file = st.get("file")
    sha = st.get("sha256")
    scores = st.get("scores")
    tol = st.get("tolerance_steps", 2)
    if not isinstance(file, str) or not file or "/" in file or "\\" in file or file.startswith("."):
        raise ModelError(f"{where}: {KEY}.file must be a plain file name next to the model")
    if not isinstance(sha, str) or len(sha) != 64:
        raise ModelError(f"{where}: {KEY}.sha256 is not a SHA-256 hex digest")
    if (not isinstance(scores, list) or not scores or len(scores) > MAX_WINDOWS
            or not all(isinstance(s, int | float) and not isinstance(s, bool) for s in scores)):
        raise ModelError(f"{where}: {KEY}.scores must be a list of 1..{MAX_WINDOWS} numbers")
    if not isinstance(tol, int) or isinstance(tol, bool) or not 0 <= tol <= 16:
        raise ModelError(f"{where}: {KEY}.tolerance_steps must be an integer in 0..16")
    return SelftestSpec(file=file, sha256=sha, scores=tuple(float(s) for s in scores), tolerance_steps=tol)


def load_windows(model_dir: Path, spec: SelftestSpec, input_shape: tuple[int, ...]) -> npt.NDArray[np.int8]:
    """The shipped windows, checked against the sidecar's hash, count and the model's input shape."""
    path = model_dir / spec.file
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ModelError(f"{path}: self-test file of {size} bytes is larger than {MAX_FILE_BYTES}")
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: the model's self-test file is missing") from exc
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the self-test file ({exc.strerror or exc})") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != spec.sha256:
        raise ModelError(f"{path}: SHA-256 {actual[:12]}... does not match the sidecar ({spec.sha256[:12]}...)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if set(npz.files) != {"windows"}:
                raise ModelError(f"{path}: expected one array 'windows', found {sorted(npz.files)}")
            windows = npz["windows"]
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{path}: not a self-test file ({exc})") from exc
    want = (len(spec.scores), *input_shape[1:])
    if windows.dtype != np.int8 or tuple(windows.shape) != want:
        raise ModelError(f"{path}: windows are {windows.dtype} {list(windows.shape)}, expected int8 {list(want)}")
    return np.ascontiguousarray(windows)


def run_selftest(scorer: Scorer, windows: npt.NDArray[np.int8], spec: SelftestSpec, output_scale: float,
                 *, extra_steps: int = 0) -> SelftestResult:
    """Score every window and compare with the recorded scores, in output quantisation steps."""
    if output_scale <= 0:
        raise ModelError(f"output scale {output_scale} is not positive")
    tol = spec.tolerance_steps + extra_steps
    worst, worst_i = 0.0, 0
    for i, expected in enumerate(spec.scores):
        got = scorer.score(windows[i : i + 1])
        steps = abs(got - expected) / output_scale
        if steps > worst:
            worst, worst_i = steps, i
    n = len(spec.scores)
    ok = worst <= tol + 1e-6
    if ok:
        detail = f"self-test passed: {n} windows within {worst:.0f} of {tol} output steps"
    else:
        detail = (f"self-test FAILED: window {worst_i} scored {worst:.0f} output steps from the recorded score "
                  f"(tolerance {tol}); this model does not run as it was built")
    return SelftestResult(ok=ok, windows=n, worst_steps=worst, worst_window=worst_i, detail=detail)


def selftest_model(scorer: Scorer, model_path: Path, raw_sidecar: dict[str, Any], input_shape: tuple[int, ...],
                   output_scale: float, *, edgetpu: bool = False) -> SelftestResult | None:
    """Parse, load and run the self-test of a loaded model; None when its sidecar has none."""
    spec = parse_selftest(raw_sidecar, f"{model_path}: sidecar")
    if spec is None:
        return None
    windows = load_windows(model_path.parent, spec, input_shape)
    return run_selftest(scorer, windows, spec, output_scale, extra_steps=EDGETPU_EXTRA_STEPS if edgetpu else 0)


__all__ = ["EDGETPU_EXTRA_STEPS", "KEY", "Scorer", "SelftestResult", "SelftestSpec", "load_windows",
           "parse_selftest", "run_selftest", "selftest_model"]
