"""Detector backends: one interface, chosen in config.

* ``cpu``: the TFLite interpreter with XNNPACK (ai-edge-litert, or tflite-runtime
  when that is what is installed), ``threads`` configurable;
* ``edgetpu``: the ``libedgetpu.so.1`` delegate and the Edge TPU build of the
  model (``<name>_edgetpu.tflite`` named in the sidecar); a missing delegate or
  build, or a probe that fails, is a clear start-up error;
* ``auto``: the Edge TPU when it works, else the CPU.

Before the delegate is loaded into this process it is probed in a child process
(:mod:`bodycam.device.detect.edgetpu_probe`: delegate load plus one invoke of the Edge
TPU build), because a libedgetpu built for another TFLite runtime segfaults the process
that loads it. ``auto`` falls back to the CPU on any failure, in the child (an exception,
a crash by signal, a hang) or in-process (``OSError``, ``ValueError``, ``RuntimeError``);
when the runtime is installed but does not work the detector carries an ``alarm`` (the
service shows it in its status and telemetry). No runtime or no Edge TPU build at all is
simply "no Coral here": CPU without an alarm. Nothing here is imported or probed until a
detector is built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from bodycam.device.detect.edgetpu_probe import probe_edgetpu
from bodycam.device.detect.model_spec import ModelSpec, load_model_spec, sha256_file
from bodycam.device.detect.native_stderr import filtered_native_stderr
from bodycam.device.errors import DetectorUnavailableError, ModelError
from bodycam.device.settings import require

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"


@dataclass(frozen=True)
class DetectorConfig:
    backend: Literal["auto", "cpu", "edgetpu"] = "auto"
    model: str = ""  # path to a .tflite with its sidecar; empty: the shipped model
    threads: int = 1
    edgetpu_device: str = ""  # e.g. "usb", "usb:0", "pci:0"; empty: the first found
    edgetpu_library: str = EDGETPU_LIBRARY  # the delegate library (a name for the loader, or a path)
    edgetpu_probe_timeout_s: float = 30.0  # the child-process probe; a USB Coral's first load takes seconds

    def __post_init__(self) -> None:
        require(1 <= self.threads <= 8, "detector.threads", f"{self.threads} must be between 1 and 8")
        require(bool(self.edgetpu_library), "detector.edgetpu_library", "must not be empty")
        require(1.0 <= self.edgetpu_probe_timeout_s <= 300.0, "detector.edgetpu_probe_timeout_s",
                f"{self.edgetpu_probe_timeout_s} must be 1..300 s")


class Detector(Protocol):
    """Scores one model input window: the probability that the target frame holds a shot."""

    backend: str
    spec: ModelSpec
    alarm: str | None  # why the configured accelerator is not in use although it should be

    def score(self, window: npt.NDArray[np.int8]) -> float: ...

    def close(self) -> None: ...


def _runtime() -> tuple[Any, Any, str]:
    """(Interpreter class, load_delegate, runtime name): ai-edge-litert first, then tflite-runtime."""
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate

        return Interpreter, load_delegate, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter, load_delegate

        return Interpreter, load_delegate, "tflite-runtime"
    except ImportError as exc:
        raise DetectorUnavailableError(
            "no TFLite runtime is installed: pip install ai-edge-litert (or tflite-runtime)"
        ) from exc


class TFLiteDetector:
    """The TFLite interpreter on CPU (XNNPACK) or with the Edge TPU delegate."""

    def __init__(self, model_path: Path, spec: ModelSpec, *, backend: Literal["cpu", "edgetpu"], threads: int = 1,
                 delegate: Any = None) -> None:
        interpreter_cls, _, self.runtime = _runtime()
        self.backend: str = backend
        self.alarm: str | None = None
        self.spec = spec
        self.model_path = model_path
        try:
            with filtered_native_stderr():  # the runtime's "Created ... XNNPACK delegate" INFO line
                self._it = interpreter_cls(
                    model_path=str(model_path),
                    num_threads=threads,
                    experimental_delegates=[delegate] if delegate is not None else None,
                )
                self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            if delegate is not None:  # the delegate failed to prepare: the Edge TPU, not the model
                raise DetectorUnavailableError(
                    f"{model_path}: the Edge TPU delegate failed ({type(exc).__name__}: {exc})") from exc
            raise ModelError(f"{model_path}: the TFLite runtime cannot load this model ({exc})") from exc
        inputs = self._it.get_input_details()
        outputs = self._it.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{model_path}: expected one input and one output tensor")
        inp, out = inputs[0], outputs[0]
        self._check(inp, spec.input.shape, np.int8, (spec.input.scale, spec.input.zero_point), "input")
        self._check(out, spec.output.shape, np.int8, (spec.output.scale, spec.output.zero_point), "output")
        self._in = int(inp["index"])
        self._out = int(out["index"])
        self._oscale = float(out["quantization"][0])
        self._ozero = int(out["quantization"][1])

    def _check(self, detail: dict[str, Any], shape: tuple[int, ...], dtype: type, quant: tuple[float, int],
               what: str) -> None:
        actual = tuple(int(x) for x in detail["shape"])
        if actual != tuple(shape):
            raise ModelError(f"{self.model_path}: {what} shape {list(actual)} does not match the sidecar {list(shape)}")
        if detail["dtype"] != dtype:
            raise ModelError(f"{self.model_path}: {what} dtype {np.dtype(detail['dtype']).name} is not int8")
        scale, zero = detail["quantization"]
        if abs(float(scale) - quant[0]) > 1e-6 * max(1.0, abs(quant[0])) or int(zero) != quant[1]:
            raise ModelError(
                f"{self.model_path}: {what} quantisation ({scale}, {zero}) does not match the sidecar {quant}"
            )

    def score(self, window: npt.NDArray[np.int8]) -> float:
        self._it.set_tensor(self._in, window)
        self._it.invoke()
        q = int(self._it.get_tensor(self._out).reshape(-1)[0])
        return (q - self._ozero) * self._oscale

    def invoke_only(self) -> None:
        """Run the model on whatever input is set (for benchmarks of bare invoke())."""
        self._it.invoke()

    def close(self) -> None:
        self._it = None


def _load_edgetpu_delegate(library: str, device: str) -> Any:
    import ctypes

    _, load_delegate, _ = _runtime()
    options = {"device": device} if device else {}
    try:
        # look for the library first: the runtime's Delegate object raises from __del__ when its
        # own load fails (ai-edge-litert 2.3), which would leak an "exception ignored" message
        ctypes.CDLL(library)
        return load_delegate(library, options)
    except OSError as exc:
        raise DetectorUnavailableError(
            f"the Edge TPU runtime ({library}) is not installed: install libedgetpu1-std, "
            "or set detector.backend = \"cpu\""
        ) from exc
    except (ValueError, RuntimeError) as exc:
        raise DetectorUnavailableError(
            f"no Edge TPU device found{' at ' + device if device else ''} ({type(exc).__name__}: {exc}): plug in "
            "the Coral, or set detector.backend = \"cpu\""
        ) from exc


class EdgeTpuUnavailable(DetectorUnavailableError):
    """Why the Edge TPU is not used; ``alarming``: a runtime is there but does not work (vs. no Coral)."""

    def __init__(self, message: str, alarming: bool) -> None:
        super().__init__(message)
        self.alarming = alarming


def _edgetpu_detector(cfg: DetectorConfig, etpu_path: Path | None, model_path: Path, spec: ModelSpec) -> Detector:
    """The Edge TPU detector, after the child-process probe."""
    if etpu_path is None or not etpu_path.is_file():
        raise EdgeTpuUnavailable(
            f"{model_path}: no Edge TPU build of this model (compile it with edgetpu_compiler; "
            "bodycam-model build does when the compiler is on PATH)", alarming=False)
    want = (spec.raw.get("edgetpu") or {}).get("sha256")
    if want and sha256_file(etpu_path) != want:
        raise EdgeTpuUnavailable(f"{etpu_path}: does not match the SHA-256 in its sidecar (rebuild or reinstall "
                                 "the model)", alarming=True)
    probe = probe_edgetpu(etpu_path, cfg.edgetpu_library, cfg.edgetpu_device, cfg.edgetpu_probe_timeout_s)
    if not probe.ok:
        raise EdgeTpuUnavailable(f"Edge TPU probe: {probe.detail}", alarming=probe.alarming)
    try:  # the probe passed; anything failing now (the Coral unplugged meanwhile, ...) is an alarm
        delegate = _load_edgetpu_delegate(cfg.edgetpu_library, cfg.edgetpu_device)
        return TFLiteDetector(etpu_path, spec, backend="edgetpu", threads=cfg.threads, delegate=delegate)
    except (ModelError, OSError, ValueError, RuntimeError) as exc:
        raise EdgeTpuUnavailable(f"Edge TPU failed after its probe passed: {exc}", alarming=True) from exc


def build_detector(cfg: DetectorConfig, default_model: Path) -> Detector:
    """Build the configured backend; ``auto`` falls back to the CPU on any Edge TPU failure."""
    model_path = Path(cfg.model) if cfg.model else default_model
    spec = load_model_spec(model_path)
    etpu_name = spec.edgetpu_file
    etpu_path = model_path.parent / etpu_name if etpu_name else None
    alarm = None
    if cfg.backend in ("edgetpu", "auto"):
        try:
            det = _edgetpu_detector(cfg, etpu_path, model_path, spec)
            log.info("detector: Edge TPU (%s)", etpu_name)
            return det
        except EdgeTpuUnavailable as exc:
            if cfg.backend == "edgetpu":
                raise
            if exc.alarming:
                alarm = f"Edge TPU not usable, running on the CPU: {exc}"
                log.warning("detector: %s", alarm)
            else:
                log.info("detector: Edge TPU not used (%s); using the CPU", exc)
    det = TFLiteDetector(model_path, spec, backend="cpu", threads=cfg.threads)
    det.alarm = alarm
    log.info("detector: CPU, %d thread(s), %s, model %s %s", cfg.threads, det.runtime, spec.name, spec.version)
    return det
