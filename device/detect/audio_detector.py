"""The audio shot detector: microphone blocks -> log-mel frames -> int8 TFLite -> shot onsets.

:class:`AudioDetector` keeps the last ``frames`` log-mel frames of the stream (computed by
:class:`~bodycam.device.detect.audio_features.LogMelStream`, the function training uses) and runs
the model every ``stride`` frames (one *hop*, 20 ms with the shipped model). Each run scores
"a shot's onset lies in target frames ``[t0, t1)`` of this window". :class:`OnsetPicker` turns the
scores into one :class:`AudioOnset` per shot, placed where the sound's level jumps (the middle of
that hop's target region), with the model's best score around it as the confidence.

Echo gate (the precedence effect): a wall or a building returns a shot as a quieter, later copy
that looks like a shot on its own. Within ``ECHO_WINDOW_S`` after an onset, a new onset must be at
most ``ECHO_DROP_DB`` (10 dB) quieter (peak frame level, mean log-mel power) than that onset to
count; the rounds of rapid fire are about as loud as each other and pass, the echoes of a nearby
shot (15-25 dB down) do not.

``horizon_ns``: every onset before this sensor time has been decided (fusion waits for it).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bodycam.device.detect.audio_features import LogMelStream
from bodycam.device.detect.audio_model_spec import AudioModelSpec, load_audio_model_spec
from bodycam.device.detect.detector import _runtime
from bodycam.device.detect.native_stderr import filtered_native_stderr
from bodycam.device.errors import ModelError
from bodycam.device.hw.microphone import AudioBlock

log = logging.getLogger(__name__)


ECHO_WINDOW_S = 1.0
ECHO_DROP_DB = 10.0
JUMP_DB = 5.0
PRE_FRAMES = 4


@dataclass(frozen=True, slots=True)
class AudioOnset:
    """A shot heard: sensor time of its onset and the model's confidence."""

    t_ns: int
    confidence: float
    level: float = 0.0  # peak frame level (mean log10 mel power) around the onset


class OnsetPicker:
    """Onsets from the per-hop (score, level, jump): the model says *what*, the level jump says *when*.

    Hop *k* is an onset when the sound's level jumps there (``jump``: the peak level of the hop's
    target frames over the mean level of the 4 frames before, >= ``JUMP_DB``) and the model's score
    reaches ``threshold`` within ``[k-2, k+1]`` (the model fires on a shot from up to 2 hops early);
    the confidence is that best score. At most one onset per ``min_gap`` hops (40 ms: rapid fire at
    15 rounds/s is 66 ms apart). Then the echo gate (module docstring). Decided one hop late.
    """

    def __init__(self, threshold: float, min_gap: int = 2, echo_window_s: float = ECHO_WINDOW_S,
                 echo_drop_db: float = ECHO_DROP_DB, jump_db: float = JUMP_DB) -> None:
        self.threshold = threshold
        self.min_gap = min_gap
        self.echo_window_ns = int(echo_window_s * 1e9)
        self.echo_drop_db = echo_drop_db
        self.echo_drop = echo_drop_db / 10.0  # in log10 power
        self.jump = jump_db / 10.0
        self._hops: collections.deque[tuple[int, float, float, float]] = collections.deque(maxlen=4)
        self._since_onset = 1 << 30  # hops since the last onset candidate
        self._last: AudioOnset | None = None  # the last onset let through
        self.echoes = 0

    @property
    def pending_from_ns(self) -> int | None:
        """Hops not decided yet start here (the newest hop waits for its successor)."""
        return self._hops[-1][0] if self._hops else None

    def update(self, t_ns: int, score: float, level: float = 0.0, jump: float = 0.0) -> AudioOnset | None:
        self._hops.append((t_ns, score, level, jump))
        if len(self._hops) < 2:
            return None
        return self._decide(len(self._hops) - 2)

    def _decide(self, i: int) -> AudioOnset | None:
        self._since_onset += 1
        t, _s, level, jump = self._hops[i]
        context = [h[1] for h in list(self._hops)[max(0, i - 2) : i + 2]]
        best = max(context)
        if jump < self.jump or best < self.threshold or self._since_onset <= self.min_gap:
            return None
        self._since_onset = 0
        onset = AudioOnset(t, best, level)
        last = self._last
        if last is not None and t - last.t_ns <= self.echo_window_ns and level < last.level - self.echo_drop:
            self.echoes += 1
            return None
        self._last = onset
        return onset

    def flush(self) -> AudioOnset | None:
        """End of stream: decide the newest hop with what there is."""
        if not self._hops:
            return None
        out = self._decide(len(self._hops) - 1)
        self._hops.clear()
        return out


class AudioDetector:
    """The audio model on the CPU (XNNPACK), fed block by block; see the module docstring."""

    backend = "cpu"

    def __init__(self, model_path: Path, spec: AudioModelSpec | None = None, *, threads: int = 1,
                 threshold: float | None = None, echo_drop_db: float = ECHO_DROP_DB) -> None:
        self.model_path = Path(model_path)
        self.spec = spec or load_audio_model_spec(self.model_path)
        interpreter_cls, _, self.runtime = _runtime()
        try:
            with filtered_native_stderr():
                self._it: Any = interpreter_cls(model_path=str(self.model_path), num_threads=threads)
                self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.model_path}: the TFLite runtime cannot load this model ({exc})") from exc
        self._check()
        if self.spec.target[0] < PRE_FRAMES:
            raise ModelError(f"{self.model_path}: target {list(self.spec.target)} leaves fewer than {PRE_FRAMES} frames "
                             "before it (the onset level jump needs them)")
        self.picker = OnsetPicker(threshold if threshold is not None else self.spec.threshold,
                                  echo_drop_db=echo_drop_db)
        self._hop_ns = self.spec.features.hop_ns
        self._window = np.zeros(self.spec.shape, np.int8)
        self.invokes = 0
        self.scores: list[tuple[int, float, float, float]] | None = None  # (onset t, score, level, jump) per hop
        self.reset()

    def reset(self) -> None:
        """Forget the stream (a new recording of audio; the evaluation's next scene)."""
        sp = self.spec
        self.stream = LogMelStream(sp.features)
        self.picker = OnsetPicker(self.picker.threshold, echo_drop_db=self.picker.echo_drop_db)
        self._ring = np.zeros((sp.frames, sp.features.mels), np.float32)
        self._filled = 0  # frames in the ring (up to sp.frames)
        self._t_next_ns: int | None = None  # time of the next feature frame expected
        self._since_run = 0
        self.horizon_ns = 0

    def _check(self) -> None:
        inputs, outputs = self._it.get_input_details(), self._it.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{self.model_path}: expected one input and one output tensor")
        i, o = inputs[0], outputs[0]
        sp = self.spec
        for what, d, shape, q in (("input", i, sp.shape, (sp.scale, sp.zero_point)),
                                  ("output", o, (1, 1), (sp.out_scale, sp.out_zero_point))):
            if tuple(int(v) for v in d["shape"]) != tuple(shape) or d["dtype"] != np.int8:
                raise ModelError(f"{self.model_path}: {what} {list(d['shape'])} {np.dtype(d['dtype']).name} does "
                                 f"not match the sidecar {list(shape)} int8")
            scale, zero = d["quantization"]
            if abs(float(scale) - q[0]) > 1e-6 * max(1.0, abs(q[0])) or int(zero) != q[1]:
                raise ModelError(f"{self.model_path}: {what} quantisation ({scale}, {zero}) does not match the "
                                 f"sidecar {q}")
        self._in, self._out = int(i["index"]), int(o["index"])

    def quantise(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.int8]:
        sp = self.spec
        q = np.rint(frames / sp.scale) + sp.zero_point
        res: npt.NDArray[np.int8] = np.clip(q, -128, 127).astype(np.int8)
        return res

    def score_window(self, window_q: npt.NDArray[np.int8]) -> float:
        self._it.set_tensor(self._in, window_q.reshape(self.spec.shape))
        self._it.invoke()
        self.invokes += 1
        q = int(self._it.get_tensor(self._out).reshape(-1)[0])
        return (q - self.spec.out_zero_point) * self.spec.out_scale

    def feed(self, block: AudioBlock) -> list[AudioOnset]:
        """Take one block; returns the onsets decided by it (usually none)."""
        t_first, frames = self.stream.push(block)
        out: list[AudioOnset] = []
        sp = self.spec
        if len(frames) and self._t_next_ns is not None and abs(t_first - self._t_next_ns) > self._hop_ns // 2:
            self._filled = 0  # a gap in the audio: start the window afresh
            self._since_run = 0
        for k in range(len(frames)):
            self._ring = np.roll(self._ring, -1, axis=0)
            self._ring[-1] = frames[k]
            self._filled = min(sp.frames, self._filled + 1)
            self._since_run += 1
            t_frame = t_first + k * self._hop_ns
            if self._filled < sp.frames or self._since_run < sp.stride:
                continue
            self._since_run = 0
            t_win = t_frame - (sp.frames - 1) * self._hop_ns
            # the level jump shows first in the last frame of the hop's level span (frames t0..t1),
            # a 25 ms frame that starts just before the onset: that frame's start is the onset estimate
            t_onset = t_win + (sp.target[1] + 1) * self._hop_ns
            score = self.score_window(self.quantise(self._ring))
            means = self._ring[sp.target[0] - PRE_FRAMES : sp.target[1] + 1].mean(axis=1)
            level = float(means[PRE_FRAMES:].max())
            jump = level - float(means[:PRE_FRAMES].mean())
            if self.scores is not None:
                self.scores.append((t_onset, score, level, jump))
            onset = self.picker.update(t_onset, score, level, jump)
            if onset is not None:
                out.append(onset)
            pending = self.picker.pending_from_ns
            self.horizon_ns = pending if pending is not None else t_win + sp.target[1] * self._hop_ns
        if len(frames):
            self._t_next_ns = t_first + len(frames) * self._hop_ns
        return out

    def flush(self) -> list[AudioOnset]:
        onset = self.picker.flush()
        return [onset] if onset is not None else []

    def close(self) -> None:
        self._it = None


def build_audio_detector(model: str, threads: int = 1, threshold: float | None = None,
                         echo_drop_db: float = ECHO_DROP_DB) -> AudioDetector:
    """The configured audio model (empty: the shipped one); a bad sidecar is a clear ModelError."""
    from bodycam.device.detect.audio_model_spec import default_audio_model_path

    path = Path(model) if model else default_audio_model_path()
    det = AudioDetector(path, threads=threads, threshold=threshold, echo_drop_db=echo_drop_db)
    log.info("audio detector: CPU, %s, model %s %s (hop %d ms)", det.runtime, det.spec.name, det.spec.version,
             det.spec.stride * det._hop_ns // 1_000_000)
    return det


__all__ = ["AudioDetector", "AudioOnset", "OnsetPicker", "build_audio_detector"]
