"""Run an int8 model over a clip's frames with the TFLite runtime (no TF).

Windows are built with the firmware's own :func:`~bodycam.device.detect.preprocess.stack_windows`
(identical to pushing frames through ``FrameWindow``) and invoked one at a time,
batch 1, as on the camera.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from bodycam.device.detect.model_spec import ModelSpec
from bodycam.device.detect.preprocess import InputSpec, stack_windows
from bodycam.device.errors import ModelError
from bodycam.model_compile.tflite_info import io_tensors

CHUNK = 256


class Int8Runner:
    """Invokes one interpreter window by window; returns dequantised scores."""

    def __init__(self, interpreter: Any, spec: InputSpec) -> None:
        inputs, outputs = io_tensors(interpreter)
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError("the model must have exactly one input and one output tensor")
        if inputs[0].shape != spec.shape or inputs[0].dtype != "int8":
            raise ModelError(f"model input {inputs[0].shape} {inputs[0].dtype} does not match {spec.shape} int8")
        self.it = interpreter
        self.spec = spec
        self.in_index = int(interpreter.get_input_details()[0]["index"])
        self.out_index = int(interpreter.get_output_details()[0]["index"])
        self.out_scale = outputs[0].scale
        self.out_zp = outputs[0].zero_point
        self._out = interpreter.tensor(self.out_index)  # keep the accessor, not the array

    def raw(self, windows: npt.NDArray[np.int8]) -> npt.NDArray[np.int8]:
        out = np.empty(len(windows), dtype=np.int8)
        for i in range(len(windows)):
            self.it.set_tensor(self.in_index, windows[i : i + 1])
            self.it.invoke()
            out[i] = self._out().reshape(-1)[0]
        return out

    def dequantise(self, q: npt.NDArray[np.int8]) -> npt.NDArray[np.float32]:
        return ((q.astype(np.float32) - self.out_zp) * self.out_scale).astype(np.float32)

    def window_scores(self, frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Score of every full window of ``frames`` (T, H, W, 3), in window order."""
        n = self.spec.frames
        count = max(0, len(frames) - n + 1)
        out = np.zeros(count, dtype=np.float32)
        for s in range(0, count, CHUNK):
            e = min(count, s + CHUNK)
            out[s:e] = self.dequantise(self.raw(stack_windows(frames[s : e + n - 1], self.spec)))
        return out

    def frame_scores(self, frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Per-frame scores: frame ``t`` gets the window whose target is ``t`` (0 where none)."""
        scores = np.zeros(len(frames), dtype=np.float32)
        w = self.window_scores(frames)
        first = self.spec.frames - 1 - self.spec.target_offset
        scores[first : first + len(w)] = w
        return scores


def runner_for(model_path: Any, spec: ModelSpec, num_threads: int = 1) -> Int8Runner:
    from bodycam.model_compile.deps import load_interpreter

    return Int8Runner(load_interpreter(model_path, num_threads), spec.input)
