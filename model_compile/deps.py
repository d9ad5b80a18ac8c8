"""Optional dependencies of the model compiler, imported lazily with a clear fix.

TensorFlow (the ``compile`` extra) is needed only to train and convert; the
runtime interpreter (ai-edge-litert, or tflite-runtime) is all that ``evaluate``,
``inspect`` and the firmware need. Neither is imported at module import time.
"""

from __future__ import annotations

import importlib
import os
import warnings
from typing import Any

from bodycam.device.errors import DependencyError

TF_FIX = "pip install 'bodycam[compile]'"
MAX_THREADS = 2


def import_tf(threads: int = MAX_THREADS) -> Any:
    """Import TensorFlow quietly, limited to ``threads`` intra/inter-op threads."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        with warnings.catch_warnings():
            # TF/keras import emits Deprecation/Future warnings from third-party code.
            warnings.simplefilter("ignore")
            tf = importlib.import_module("tensorflow")
    except ImportError as exc:
        raise DependencyError(f"TensorFlow is needed to build models ({exc}); fix: {TF_FIX}") from exc
    threads = max(1, min(threads, MAX_THREADS))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # already initialised in this process: the first setting stays
    return tf


def interpreter_module() -> Any:
    """The TFLite interpreter module: ai-edge-litert, else tflite-runtime (never TF)."""
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return importlib.import_module(module)
        except ImportError:
            continue
    raise DependencyError("no TFLite runtime is installed; fix: pip install ai-edge-litert")


def load_interpreter(path: os.PathLike[str] | str, num_threads: int = 1, *, analysis: bool = False) -> Any:
    """An allocated interpreter for the model file at ``path``.

    ``analysis``: without the default (XNNPACK) delegate, so the operator list is the
    model's own rather than one DELEGATE node.
    """
    from bodycam.device.detect.native_stderr import filtered_native_stderr
    from bodycam.device.errors import ModelError

    mod = interpreter_module()
    kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": num_threads}
    if analysis:
        kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with filtered_native_stderr():  # the runtime's "Created ... XNNPACK delegate" INFO line
            it = mod.Interpreter(**kwargs)
            it.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: not a loadable TFLite model ({exc})") from exc
    return it
