"""``bodycam-model inspect``: sidecar, tensors, operators, size and MACs of a model (no TF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bodycam.device.detect.model_spec import load_model_spec
from bodycam.model_compile.deps import load_interpreter
from bodycam.model_compile.edgetpu import op_report
from bodycam.model_compile.tflite_info import all_tensors, io_tensors, macs, op_macs, ops


def inspect(model: Path) -> dict[str, Any]:
    spec = load_model_spec(model)
    it = load_interpreter(model, analysis=True)
    inputs, outputs = io_tensors(it)
    tensors = all_tensors(it)
    return {
        "file": str(model),
        "size_bytes": model.stat().st_size,
        "sidecar": spec.raw,
        "inputs": [t.as_dict() for t in inputs],
        "outputs": [t.as_dict() for t in outputs],
        "operators": [
            {
                "index": op.index,
                "op": op.name,
                "output": tensors[op.outputs[0]].as_dict() if op.outputs and op.outputs[0] in tensors else None,
                "macs": op_macs(op, tensors),
            }
            for op in ops(it)
        ],
        "macs_per_frame": macs(it),
        "edgetpu_check": op_report(it),
    }


def render(info: dict[str, Any]) -> str:
    side = info["sidecar"]
    lines = [
        f"model    {info['file']}  ({info['size_bytes'] / 1024:.1f} KiB)",
        f"sidecar  {side['name']} {side['version']} task={side['task']} threshold={side['threshold']} "
        f"sha256={side['sha256'][:16]}...",
    ]
    inp = side["input"]
    lines.append(
        f"input    {inp['width']}x{inp['height']} {inp['colour']} x {inp['frames']} frames, "
        f"target_offset={inp['target_offset']}"
    )
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            lines.append(f"{kind[:-1]:8} {t['name']} {t['shape']} {t['dtype']} scale={t['scale']:.8g} zp={t['zero_point']}")
    lines.append(f"operators ({len(info['operators'])}):")
    for op in info["operators"]:
        out = op["output"]
        shape = out["shape"] if out else "?"
        lines.append(f"  {op['index']:3d} {op['op']:20} -> {shape}  {op['macs']:,} MACs")
    lines.append(f"MACs per frame {info['macs_per_frame']:,}")
    chk = info["edgetpu_check"]
    lines.append(
        f"Edge TPU check: {chk['edgetpu_ops']}/{chk['total_ops']} ops supported, int8={chk['all_int8']}, "
        f"static={chk['static_shapes']}, fully mappable={chk['fully_mappable']}"
    )
    etpu = side.get("edgetpu") or {}
    lines.append(f"Edge TPU build: compiled={etpu.get('compiled')} ({etpu.get('reason')})")
    metrics = side.get("metrics") or {}
    if metrics:
        lines.append(f"metrics  {metrics}")
    prov = side.get("provenance") or {}
    if prov:
        keys = ("dataset_sha256", "clips", "seed", "training_seconds", "tensorflow", "built_utc")
        lines.append("provenance " + ", ".join(f"{k}={prov.get(k)}" for k in keys))
    return "\n".join(lines)
