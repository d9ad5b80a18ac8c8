"""Stand-ins for libedgetpu (built from device/fake_libedgetpu.c) and a model with an "Edge TPU build"."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bodycam.device.detect.model_spec import default_model_path

SOURCE = Path(__file__).resolve().parent / "device" / "fake_libedgetpu.c"
MODES = ("CRASH", "HANG", "NODEVICE", "PREPFAIL", "OK")


def build_fake_libedgetpu(out: Path) -> dict[str, str]:
    """One library per failure mode (and OK); ``MISSING`` is a path that does not exist."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc not found: scripts/system-deps.sh installs it (it builds the fake libedgetpu)")
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for mode in MODES:
        lib = out / f"libedgetpu_{mode.lower()}.so.1"
        subprocess.run([gcc, "-shared", "-fPIC", "-nostdlib", "-O1", f"-DMODE_{mode}", "-o", str(lib), str(SOURCE)],
                       check=True, capture_output=True, timeout=60)
        paths[mode] = str(lib)
    paths["MISSING"] = str(out / "libedgetpu_missing.so.1")
    return paths


def model_with_edgetpu_build(d: Path) -> Path:
    """The shipped model with an "Edge TPU build" (a copy: the fake delegates claim no op, the CPU runs it)."""
    src = default_model_path()
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, d / src.name)
    sidecar = json.loads(src.with_suffix(".json").read_text())
    etpu = f"{src.stem}_edgetpu.tflite"
    sidecar["edgetpu"] = {**sidecar["edgetpu"], "compiled": True, "file": etpu}
    (d / src.with_suffix(".json").name).write_text(json.dumps(sidecar))
    shutil.copy(src, d / etpu)
    return d / src.name
