"""Test parts for models at the dock: copies of the shipped video model (with its own self-test) under
another version, and the firmware service run on a sequence of clips (one per assembly)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bodycam.device.detect.model_spec import default_model_path, sidecar_path


def shipped_copy(dest: Path, version: str, *, task: str | None = None, metrics: dict[str, Any] | None = None) -> Path:
    """The shipped video model, its sidecar (with its self-test) and the self-test file, as ``version``."""
    dest.mkdir(parents=True)
    src = default_model_path()
    side = json.loads(sidecar_path(src).read_text())
    side["version"] = version
    side.pop("edgetpu", None)  # no Edge TPU compilation travels in these packages
    if task is not None:
        side["task"] = task
    if metrics:
        side.setdefault("metrics", {}).update(metrics)
    shutil.copyfile(src, dest / src.name)
    (dest / sidecar_path(src).name).write_text(json.dumps(side, indent=1))
    st = side["selftest"]["file"]
    shutil.copyfile(src.parent / st, dest / st)
    return dest / src.name


def run_service_on(cfg: Any, clips: list[Path]) -> list[Path]:
    """Run the firmware service (``run_firmware``) with a fresh camera on the next of ``clips`` at each
    assembly, sized for the model that will load; returns the clips no assembly took."""
    from bodycam.device.assemble import model_spec
    from bodycam.device.clock import SystemClock
    from bodycam.device.firmware import run_firmware
    from bodycam.device.model_select import open_store, resolve
    from bodycam.hw_sim.live_camera import LiveClipCamera

    left = list(clips)
    clock = SystemClock()

    def camera() -> LiveClipCamera:
        run_cfg, _ = resolve(cfg, open_store(cfg, clock))
        spec = model_spec(run_cfg)
        return LiveClipCamera(left.pop(0), (spec.input.width, spec.input.height), clock)

    run_firmware(cfg, clock=clock, environ={}, install_signals=False, camera_factory=camera)
    return left
