"""Full-integer TFLite export: int8 in, int8 out, batch 1, builtin int8 ops only."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from bodycam.device.detect.preprocess import InputSpec
from bodycam.device.errors import ModelError
from bodycam.model_compile.batches import to_float


def representative(windows_u8: npt.NDArray[np.uint8]) -> Iterator[list[npt.NDArray[np.float32]]]:
    """Calibration inputs; the first one spans the full pixel range (0 and 255), so the
    input quantisation comes out exactly scale 1/255, zero point -128."""
    for i, w in enumerate(windows_u8):
        x = to_float(w[None])
        if i == 0:
            x[0, 0, 0, 0] = 0.0
            x[0, 0, 1, 0] = 1.0
        yield [x]


def to_int8_tflite(tf: Any, model: Any, spec: InputSpec, calib_u8: npt.NDArray[np.uint8]) -> bytes:
    """Convert the float Keras ``model`` to a full-integer TFLite flatbuffer.

    ``model`` is a batch-1 twin of the trained model (same weights), so every shape is static.
    """
    if len(calib_u8) == 0:
        raise ModelError("no calibration windows for the int8 conversion")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: representative(calib_u8)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with warnings.catch_warnings(), _quiet() as chatter:
        warnings.simplefilter("ignore")  # converter deprecation chatter
        try:
            flat = conv.convert()
        except Exception as exc:  # the converter raises many unrelated types
            raise ModelError(f"TFLite full-integer conversion failed: {exc}; converter output: {chatter.read()[-2000:]}") from exc
    return bytes(flat)


@contextlib.contextmanager
def _quiet() -> Iterator[Any]:
    """Send the converter's stdout/stderr chatter (Python and native) to a temp file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+") as tmp:
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            with contextlib.redirect_stdout(tmp), contextlib.redirect_stderr(tmp):
                yield _Reader(tmp)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


class _Reader:
    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def read(self) -> str:
        self.fh.flush()
        self.fh.seek(0)
        return str(self.fh.read())
