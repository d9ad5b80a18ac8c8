"""The Edge TPU probe: load the delegate and run the model once, in a child process.

A libedgetpu built against another TFLite version can segfault the process that loads it
(google-coral/edgetpu#812), and no ``except`` catches a segfault. So before the firmware
loads the delegate itself, :func:`probe_edgetpu` runs ``python -m
bodycam.device.detect.edgetpu_probe MODEL LIBRARY DEVICE`` which loads the library, creates
the delegate, builds an interpreter for the Edge TPU model, allocates and invokes it once
on zeros, and prints one JSON line. Whatever happens in the child (an exception of any
type, a crash by signal, a hang past the timeout) comes back as a :class:`ProbeResult`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ProbeKind = Literal["ok", "missing", "no_device", "failed", "crash", "timeout"]


@dataclass(frozen=True)
class ProbeResult:
    kind: ProbeKind
    detail: str

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    @property
    def alarming(self) -> bool:
        """Not just "no Coral here": the runtime is installed but does not work."""
        return self.kind in ("no_device", "failed", "crash", "timeout")


def probe_edgetpu(model: Path, library: str, device: str = "", timeout_s: float = 30.0,
                  env: Mapping[str, str] | None = None) -> ProbeResult:
    """Delegate load + one invoke of ``model`` in a child process; never raises for the child's failures."""
    cmd = [sys.executable, "-m", "bodycam.device.detect.edgetpu_probe", str(model), library, device]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              env=dict(os.environ if env is None else env))
    except subprocess.TimeoutExpired:
        return ProbeResult("timeout", f"the Edge TPU probe did not finish within {timeout_s:g} s (delegate hangs)")
    except OSError as exc:
        return ProbeResult("failed", f"cannot start the Edge TPU probe: {exc}")
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return ProbeResult("crash", f"the Edge TPU probe crashed ({name}) loading {library}: a libedgetpu built "
                                    "for another TFLite runtime (see docs/hardware.md, 'Coral')")
    for line in reversed(proc.stdout.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("kind") in ("ok", "missing", "no_device", "failed"):
            return ProbeResult(data["kind"], str(data.get("detail", "")))
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return ProbeResult("failed", f"the Edge TPU probe exited {proc.returncode}: {tail}")


def _report(kind: ProbeKind, detail: str) -> int:
    print(json.dumps({"kind": kind, "detail": detail}), flush=True)
    return 0 if kind == "ok" else 1


def main(argv: Sequence[str]) -> int:
    """The child: exit 0 and ``{"kind": "ok"}`` when the Edge TPU ran the model once."""
    import ctypes

    import numpy as np

    from bodycam.device.detect.detector import _runtime

    model, library, device = argv[0], argv[1], argv[2] if len(argv) > 2 else ""
    interpreter_cls, load_delegate, runtime = _runtime()
    try:
        ctypes.CDLL(library)
    except OSError as exc:
        return _report("missing", f"{library} is not installed ({exc})")
    try:
        delegate = load_delegate(library, {"device": device} if device else {})
    except ValueError as exc:
        return _report("no_device", f"no Edge TPU device found{' at ' + device if device else ''} ({exc})")
    except Exception as exc:
        return _report("failed", f"{library}: {type(exc).__name__}: {exc}")
    try:
        it = interpreter_cls(model_path=model, experimental_delegates=[delegate])
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        it.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
        it.invoke()
    except Exception as exc:
        return _report("failed", f"{Path(model).name} on the Edge TPU ({runtime}): {type(exc).__name__}: {exc}")
    return _report("ok", f"{Path(model).name} ran once on the Edge TPU ({runtime})")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
