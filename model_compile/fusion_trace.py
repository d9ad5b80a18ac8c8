"""Fusion traces: run the firmware loop on a clip once, replay any fusion setting exactly.

In the loop, after each frame the camera feeds :class:`~bodycam.device.detect.fusion.Fusion` the
frame's video score (once the window is full), then the audio onsets that the
:class:`~bodycam.device.detect.audio_detector.OnsetPicker` decided from that frame's audio hops,
then asks for decisions. The scores do not depend on any fusion setting: the video model scores
frames and the audio model scores hops whatever the thresholds. A :class:`Trace` keeps those calls
in order, with the audio model's per-hop ``(t, score, level, jump)``; :func:`replay` feeds them to a
fresh ``OnsetPicker`` and ``Fusion`` built with another :class:`FusionConfig` exactly as
``device/assemble.py`` builds them. The result is the markers the loop would place with that
setting (tested equal to the loop's own markers), at a small fraction of the loop's cost, which
is what makes choosing the fusion's operating point on validation clips affordable
(:mod:`bodycam.model_compile.fusion_tune`).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bodycam.device.config import AppConfig
from bodycam.device.detect.audio_detector import AudioDetector, AudioOnset, OnsetPicker
from bodycam.device.detect.events import Detection
from bodycam.device.detect.fusion import Fusion, FusionConfig, ShotDecision
from bodycam.device.errors import UsageError

SCHEMA = "bodycam.fusion-trace/1"

# one call of the loop into the fusion, in order:
#   ("v", frame, t_ns, score, det)  det: [frame, t_ns, confidence] of the video tracker's detection or None
#   ("a", hops)                     onsets of the audio hops recorded so far (hops[previous a : hops])
#   ("d", live, final)              decide(audio_live, final=)
Event = list[Any]


@dataclass
class Trace:
    clip: str
    audio_threshold: float  # the audio model's sidecar threshold (audio_alone's default)
    events: list[Event] = field(default_factory=list)
    hops: list[tuple[int, float, float, float]] = field(default_factory=list)
    markers: list[int] = field(default_factory=list)  # the frames the loop marked (with the recording config)
    config: dict[str, Any] = field(default_factory=dict)  # the FusionConfig it ran with

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "clip": self.clip, "audio_threshold": self.audio_threshold,
                "config": self.config, "markers": self.markers, "events": self.events,
                "hops": [list(h) for h in self.hops]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trace:
        if data.get("schema") != SCHEMA:
            raise UsageError(f"not a fusion trace (schema {data.get('schema')!r}, expected {SCHEMA})")
        return cls(clip=str(data["clip"]), audio_threshold=float(data["audio_threshold"]),
                   events=list(data["events"]), hops=[(int(h[0]), float(h[1]), float(h[2]), float(h[3]))
                                                      for h in data["hops"]],
                   markers=[int(m) for m in data["markers"]], config=dict(data["config"]))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Trace:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


class TracingFusion(Fusion):
    """The firmware's fusion, writing down every call it gets (and deciding as usual)."""

    def __init__(self, inner: Fusion, trace: Trace, hops: list[tuple[int, float, float, float]]) -> None:
        super().__init__(inner.cfg, audio_alone=inner.audio_alone)
        self.trace = trace
        self._hops = hops  # the audio detector's ``scores`` list (grows as it scores hops)

    def video(self, frame: int, t_ns: int, score: float, detection: Detection | None) -> None:
        det = None if detection is None else [detection.frame, detection.t_ns, detection.confidence]
        self.trace.events.append(["v", frame, t_ns, float(score), det])
        super().video(frame, t_ns, score, detection)

    def audio(self, onsets: list[AudioOnset]) -> None:
        self.trace.events.append(["a", len(self._hops)])
        super().audio(onsets)

    def decide(self, audio_live: bool, *, final: bool = False) -> list[ShotDecision]:
        self.trace.events.append(["d", bool(audio_live), bool(final)])
        return super().decide(audio_live, final=final)


def record(clip: Path, video_model: str = "", audio_model: str = "", fusion: FusionConfig | None = None) -> Trace:
    """Run the firmware loop on ``clip`` (as ``bodycam-model evaluate`` does) and trace its fusion."""
    from bodycam.hw_sim.sim_run import SimOptions, run_clip
    from bodycam.model_compile.fused_eval import gunshot_frames

    fcfg = replace(fusion or FusionConfig(), audio_model=audio_model)
    cfg = replace(AppConfig(), fusion=fcfg)
    trace = Trace(clip=str(clip), audio_threshold=1.0, config={"policy": fcfg.policy, **setting_of(fcfg)})

    def attach(fw: Any) -> None:
        app = fw.app
        det = app.audio.detector
        hops: list[tuple[int, float, float, float]] = []
        trace.config["audio_detector"] = det is not None
        if isinstance(det, AudioDetector):
            det.scores = hops
            trace.audio_threshold = det.spec.threshold
        trace.hops = hops
        if app.fusion is not None:
            app.fusion = TracingFusion(app.fusion, trace, hops)

    with tempfile.TemporaryDirectory(prefix="fusion-trace-") as tmp:
        rep = run_clip(SimOptions(clip=clip, out=Path(tmp), config=cfg, broker=None, gnss=False,
                                  model=Path(video_model) if video_model else None), on_assembled=attach)
    if rep.error:
        raise UsageError(f"{clip}: {rep.error}")
    trace.markers = gunshot_frames(rep.stats.markers)
    return trace


def rescore_audio(trace: Trace, audio_model: Path) -> Trace:
    """``trace`` as the loop would have traced it with ``audio_model`` instead of the audio model it ran.

    Nothing the loop did depends on the audio model's scores but the scores: the frames, the video
    scores, the hops' times and their level and jump (the features) and the calls' order stay; only
    the per-hop score changes. So the clip's sound is played through the simulated microphone into
    the firmware's :class:`AudioDetector` with the new model, and each traced hop takes the new score
    of the hop at the same time. A model whose hops fall elsewhere (another window, target or
    stride), or whose levels differ, cannot be swapped in: :class:`UsageError` (run the loop)."""
    from bodycam.hw_sim.sim_microphone import ClipMicrophone

    det = AudioDetector(audio_model)
    new: list[tuple[int, float, float, float]] = []
    det.scores = new
    mic = ClipMicrophone(trace.clip)
    try:
        if mic.start():
            for block in mic.read(1 << 62):
                det.feed(block)
    finally:
        mic.close()
    by_t = {h[0]: h for h in new}
    hops: list[tuple[int, float, float, float]] = []
    for t, _s, level, jump in trace.hops:
        h = by_t.get(t)
        if h is None or h[2] != level or h[3] != jump:
            raise UsageError(f"{trace.clip}: {audio_model} hops differently from the traced audio model (hop at "
                             f"{t} ns: {h}); trace the clip with it instead")
        hops.append((t, h[1], level, jump))
    return replace(trace, hops=hops, audio_threshold=det.spec.threshold)


#: the fusion's tunable numbers (``[fusion]``), as tune-fusion sweeps them and evaluate reports them
SETTING_KEYS = ("audio_alone", "audio_support", "video_support", "window_frames", "incident_s", "incident_audio",
                "incident_drop_db", "echo_drop_db")


def setting_of(cfg: FusionConfig) -> dict[str, Any]:
    """``cfg``'s tunable numbers by name."""
    return {k: getattr(cfg, k) for k in SETTING_KEYS}


def replay(trace: Trace, cfg: FusionConfig) -> list[int]:
    """The frames the loop would mark on the traced clip with fusion setting ``cfg``.

    The picker and the fusion are built as ``device/assemble.py`` builds them: ``audio_alone`` 0
    means the audio model's own threshold; the picker keeps onsets from the lowest score a rule of
    ``cfg`` accepts (:meth:`FusionConfig.pick_threshold`).
    """
    has_detector = bool(trace.config.get("audio_detector", False))
    if cfg.policy != "video" and not has_detector and any(e[0] == "d" and e[1] for e in trace.events):
        raise UsageError(f"{trace.clip}: traced without an audio detector (policy {trace.config.get('policy')!r}) but "
                         f"with live sound: it cannot replay policy {cfg.policy!r}; trace it with policy fused")
    picker = OnsetPicker(cfg.pick_threshold(trace.audio_threshold), echo_drop_db=cfg.echo_drop_db)
    fusion = Fusion(cfg, audio_alone=trace.audio_threshold)
    used = 0
    frames: list[int] = []
    events = trace.events
    for i, ev in enumerate(events):
        kind = ev[0]
        if kind == "v":
            det = None if ev[4] is None else Detection(int(ev[4][0]), int(ev[4][1]), float(ev[4][2]))
            fusion.video(int(ev[1]), int(ev[2]), float(ev[3]), det)
        elif kind == "a":
            onsets: list[AudioOnset] = []
            end = int(ev[1])
            for t, s, level, jump in trace.hops[used:end]:
                onset = picker.update(t, s, level, jump)
                if onset is not None:
                    onsets.append(onset)
            used = end
            nxt = events[i + 1] if i + 1 < len(events) else None
            # the end of the stream: AudioPath.flush() asks the detector only while the sound is live
            if nxt is not None and nxt[0] == "d" and nxt[2] and nxt[1] and has_detector:
                last = picker.flush()
                if last is not None:
                    onsets.append(last)
            fusion.audio(onsets)
        elif kind == "d":
            frames += [d.frame for d in fusion.decide(bool(ev[1]), final=bool(ev[2]))]
    return frames


__all__ = ["SETTING_KEYS", "Trace", "TracingFusion", "record", "replay", "rescore_audio", "setting_of"]
