"""Edge TPU readiness: run ``edgetpu_compiler`` when present, else check the model.

Without the compiler we still report, from the model itself, which operators the
Edge TPU supports (Coral's documented operator list), whether every tensor is
int8 (int32 for biases) and whether all shapes are static: the prerequisites for
the compiler to map the whole graph.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bodycam.device.detect.model_spec import sha256_file
from bodycam.model_compile.tflite_info import all_tensors, io_tensors, ops

# https://coral.ai/docs/edgetpu/models-intro/#supported-operations (TFLite builtin names)
EDGETPU_OPS = frozenset(
    {
        "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE",
        "EXPAND_DIMS", "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM",
        "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX",
        "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
        "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE",
        "TRANSPOSE_CONV",
    }
)  # fmt: skip
COMPILER = "edgetpu_compiler"


def op_report(interpreter: Any) -> dict[str, Any]:
    """Per-operator Edge TPU support and the int8 / static-shape checks."""
    op_list = ops(interpreter)
    counts: dict[str, int] = {}
    for op in op_list:
        counts[op.name] = counts.get(op.name, 0) + 1
    unsupported = sorted(n for n in counts if n not in EDGETPU_OPS)
    tensors = all_tensors(interpreter)
    bad_dtype = sorted(
        {t.name for t in tensors.values() if t.dtype not in ("int8", "int32")}
    )
    dynamic = sorted({t.name for t in tensors.values() if any(d < 0 for d in t.shape_signature)})
    inputs, outputs = io_tensors(interpreter)
    io_int8 = all(t.dtype == "int8" for t in inputs + outputs)
    return {
        "ops": counts,
        "edgetpu_ops": sum(c for n, c in counts.items() if n in EDGETPU_OPS),
        "total_ops": len(op_list),
        "unsupported_ops": unsupported,
        "all_int8": not bad_dtype and io_int8,
        "non_int8_tensors": bad_dtype,
        "static_shapes": not dynamic,
        "dynamic_tensors": dynamic,
        "batch_1": all(t.shape[:1] == (1,) for t in inputs + outputs),
        "fully_mappable": not unsupported and not bad_dtype and io_int8 and not dynamic,
    }


def compile_for_edgetpu(model: Path, interpreter: Any, timeout_s: float = 300.0) -> dict[str, Any]:
    """The sidecar's ``edgetpu`` section; writes ``NAME_edgetpu.tflite`` when the compiler runs."""
    report = op_report(interpreter)
    exe = shutil.which(COMPILER)
    if exe is None:
        return {
            "compiled": False,
            "file": None,
            "compiler": None,
            "reason": (
                f"{COMPILER} is not on PATH (it comes from Coral's apt repository, not reachable here); "
                f"the op report below is from the model itself: "
                + ("every operator maps to the Edge TPU" if report["fully_mappable"] else
                   f"not fully mappable: unsupported {report['unsupported_ops']}")
            ),
            "op_report": report,
        }
    version = _compiler_version(exe)
    try:
        proc = subprocess.run(
            [exe, "-s", "-o", str(model.parent), str(model)],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"compiled": False, "file": None, "compiler": version, "reason": f"{COMPILER} failed: {exc}", "op_report": report}
    out_file = model.with_name(model.stem + "_edgetpu.tflite")
    log = (proc.stdout + proc.stderr).strip()
    report["compiler_log"] = log[-4000:]
    m = re.search(r"Number of operations that will run on Edge TPU:\s*(\d+)", log)
    if m:
        report["compiler_edgetpu_ops"] = int(m.group(1))
    ok = proc.returncode == 0 and out_file.is_file()
    return {
        "compiled": ok,
        "file": out_file.name if ok else None,
        # the firmware checks the Edge TPU build against this before loading it
        "sha256": sha256_file(out_file) if ok else None,
        "compiler": version,
        "reason": "compiled" if ok else f"{COMPILER} exited {proc.returncode}",
        "op_report": report,
    }


def _compiler_version(exe: str) -> str | None:
    try:
        proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (proc.stdout or proc.stderr).strip() or None
