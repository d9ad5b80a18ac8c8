"""What is inside a .tflite file, read through the runtime interpreter (no TF).

Tensors (name, shape, dtype, quantisation), the operator list, and the
multiply-accumulates of one invoke computed from the layer shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


@dataclass(frozen=True)
class OpInfo:
    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def _tensor(d: dict[str, Any]) -> TensorInfo:
    q = d.get("quantization") or (0.0, 0)
    sig = d.get("shape_signature")
    return TensorInfo(
        name=str(d["name"]),
        shape=tuple(int(v) for v in d["shape"]),
        shape_signature=tuple(int(v) for v in (sig if sig is not None else d["shape"])),
        dtype=np.dtype(d["dtype"]).name,
        scale=float(q[0]),
        zero_point=int(q[1]),
    )


def io_tensors(interpreter: Any) -> tuple[list[TensorInfo], list[TensorInfo]]:
    return (
        [_tensor(d) for d in interpreter.get_input_details()],
        [_tensor(d) for d in interpreter.get_output_details()],
    )


def all_tensors(interpreter: Any) -> dict[int, TensorInfo]:
    out: dict[int, TensorInfo] = {}
    for d in interpreter.get_tensor_details():
        out[int(d["index"])] = _tensor(d)
    return out


def ops(interpreter: Any) -> list[OpInfo]:
    """The operators of the (single) subgraph, in execution order."""
    return [
        OpInfo(int(o["index"]), str(o["op_name"]), tuple(int(i) for i in o["inputs"]), tuple(int(i) for i in o["outputs"]))
        for o in interpreter._get_ops_details()
    ]


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape)) if shape else 1


def op_macs(op: OpInfo, tensors: dict[int, TensorInfo]) -> int:
    """Multiply-accumulates of one operator (0 for ops without weights)."""
    def shape(i: int) -> tuple[int, ...]:
        return tensors[i].shape if i >= 0 and i in tensors else ()

    if op.name == "CONV_2D":  # filter [Cout, kh, kw, Cin]
        f = shape(op.inputs[1])
        return _size(shape(op.outputs[0])) * f[1] * f[2] * f[3]
    if op.name == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, Cout]
        f = shape(op.inputs[1])
        return _size(shape(op.outputs[0])) * f[1] * f[2]
    if op.name == "FULLY_CONNECTED":  # weights [Cout, Cin]
        w = shape(op.inputs[1])
        batch = _size(shape(op.outputs[0])) // max(1, w[0])
        return batch * w[0] * w[1]
    return 0


def macs(interpreter: Any) -> int:
    """Multiply-accumulates of one invoke (= one frame: one window per frame)."""
    tensors = all_tensors(interpreter)
    return sum(op_macs(op, tensors) for op in ops(interpreter))
