"""The loop's audio stage: microphone -> audio detector -> audio onsets, never fatal.

:class:`AudioPath` owns the microphone's health as the loop sees it. Every frame it takes what
the microphone captured before the frame's sensor time and hands it to the audio detector
(when one is configured), returning the shot onsets it decided. A microphone that is absent, a clip without an audio track, or a
capture that fails later never stops the loop: the path goes *video-only*, says so once (log,
and for a fault an alarm in telemetry and in the service status), and the fusion falls back to
the video policy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal, Protocol

from bodycam.device.detect.audio_detector import AudioOnset
from bodycam.device.hw.microphone import AudioBlock, Microphone, MicrophoneError
from bodycam.device.uplink.markers import JSON

log = logging.getLogger(__name__)

AudioState = Literal["off", "ok", "no_audio_track", "failed"]


class OnsetDetector(Protocol):
    """The audio detector as the path sees it (:class:`~bodycam.device.detect.audio_detector.AudioDetector`)."""

    def feed(self, block: AudioBlock) -> list[AudioOnset]: ...

    def flush(self) -> list[AudioOnset]: ...


class AudioPath:
    """Pull audio up to each frame's time into ``detector``; degrade to video-only on any fault.

    ``on_alarm(text)`` is told once when a microphone fault makes the camera video-only (the
    assembly puts it in the service status).
    """

    def __init__(self, microphone: Microphone | None, detector: OnsetDetector | None = None,
                 on_alarm: Callable[[str], None] | None = None) -> None:
        self.microphone = microphone
        self.detector = detector
        self.on_alarm = on_alarm
        self.state: AudioState = "off" if microphone is None else "ok"
        self.error: str | None = None
        self.blocks = 0
        self.samples = 0
        self.read_ns = 0  # time in microphone.read (decode + resample in the simulator; a queue pop on ALSA)
        self.detect_ns = 0  # time in the audio detector (features + model)

    @property
    def live(self) -> bool:
        """True while audio evidence is coming in (fusion uses audio only then)."""
        return self.state == "ok"

    def start(self) -> None:
        if self.microphone is None:
            log.info("audio: no microphone configured; video-only")
            return
        try:
            has_audio = self.microphone.start()
        except MicrophoneError as exc:
            self._fail(str(exc))
            return
        if not has_audio:
            self.state = "no_audio_track"
            log.warning("audio: the source has no audio track; running video-only")

    def poll(self, until_ns: int) -> list[AudioOnset]:
        """Take everything captured before ``until_ns`` (a frame's sensor time); the onsets decided."""
        if self.state != "ok" or self.microphone is None:
            return []
        t0 = time.perf_counter_ns()
        try:
            blocks = self.microphone.read(until_ns)
        except MicrophoneError as exc:
            self._fail(str(exc))
            return []
        t1 = time.perf_counter_ns()
        onsets: list[AudioOnset] = []
        for b in blocks:
            self.blocks += 1
            self.samples += len(b.samples)
            if self.detector is not None:
                onsets += self.detector.feed(b)
        self.read_ns += t1 - t0
        self.detect_ns += time.perf_counter_ns() - t1
        return onsets

    def flush(self) -> list[AudioOnset]:
        """End of stream: the onset the detector was still holding, if any."""
        if self.detector is None or self.state != "ok":
            return []
        return self.detector.flush()

    def _fail(self, error: str) -> None:
        self.state = "failed"
        self.error = error
        log.error("audio: %s; ALARM: continuing video-only", error)
        if self.on_alarm is not None:
            try:
                self.on_alarm(f"ALARM microphone: {error}; video-only")
            except Exception:
                log.exception("audio alarm callback failed")

    def telemetry(self) -> dict[str, JSON]:
        body: dict[str, JSON] = {"state": self.state, "alarm": self.state == "failed"}
        if self.error is not None:
            body["error"] = self.error
        return body


__all__ = ["AudioPath", "AudioState"]
