"""The loop's audio stage: microphone -> audio detector -> audio onsets, never fatal.

:class:`AudioPath` owns the microphone's health as the loop sees it. Every frame it takes what
the microphone captured before the frame's sensor time and hands it to the audio detector
(when one is configured), returning the shot onsets it decided. A microphone that is absent, a clip without an audio track, or a
capture that fails later never stops the loop: the path goes *video-only*, says so once (log,
and for a fault an alarm in telemetry and in the service status), and the fusion falls back to
the video policy.

The microphone is opened once, here; the footage gets the same blocks (``sound``, the camera's
:class:`~bodycam.device.footage.aac_track.FootageSound`: AAC in the recordings and the pre-event
buffer), after the detector has had them. Without a live microphone the recordings are
video-only and :meth:`summary` says so (the service status). An encoder fault takes the sound out
of the footage (an alarm, like a microphone fault) and leaves detection running; a microphone
fault mid-recording ends the track where the sound ended, and the picture goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal, Protocol

from bodycam.device.detect.audio_detector import AudioOnset
from bodycam.device.errors import HardwareError
from bodycam.device.footage.aac_track import FootageSound
from bodycam.device.hw.microphone import AudioBlock, Microphone, MicrophoneError
from bodycam.device.uplink.markers import JSON

log = logging.getLogger(__name__)

AudioState = Literal["off", "ok", "no_audio_track", "failed"]
#: the footage's sound: "aac" (the microphone's, encoded here), "source" (the simulator remuxes the clip's
#: own track), "none" (no live microphone: video-only recordings), "failed" (the encoder failed: alarm)
SoundState = Literal["aac", "source", "none", "failed"]


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
                 on_alarm: Callable[[str], None] | None = None, sound: FootageSound | None = None,
                 source_sound: bool = False) -> None:
        self.microphone = microphone
        self.detector = detector
        self.on_alarm = on_alarm
        self.sound = sound
        self.source_sound = source_sound  # the footage carries the source's own track (simulator remux)
        self.state: AudioState = "off" if microphone is None else "ok"
        self.sound_state: SoundState = "none"
        self.error: str | None = None
        self.sound_error: str | None = None
        self.encode_ns = 0  # time spent encoding the footage's sound (AAC)
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
            return
        if self.source_sound:
            self.sound_state = "source"
        elif self.sound is not None:
            try:
                self.sound.start_sound()
            except HardwareError as exc:
                self._sound_failed(str(exc))
                return
            self.sound_state = "aac"

    def summary(self) -> str:
        """One phrase for the service status: what the detector hears and what the footage records."""
        if self.state == "ok":
            sound = {"aac": "recordings with sound", "source": "recordings with the source's sound",
                     "none": "recordings without sound", "failed": "recordings WITHOUT sound (ALARM)"}[self.sound_state]
            return f"audio: microphone live, {sound}"
        why = {"off": "no microphone", "no_audio_track": "the source has no sound",
               "failed": f"ALARM microphone failed: {self.error}"}[self.state]
        return f"audio: video-only ({why}); recordings without sound"

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
        t2 = time.perf_counter_ns()
        self.read_ns += t1 - t0
        self.detect_ns += t2 - t1
        if self.sound_state == "aac" and self.sound is not None and blocks:
            try:
                self.sound.write_sound(blocks)
            except HardwareError as exc:
                self._sound_failed(str(exc))
            self.encode_ns += time.perf_counter_ns() - t2
        return onsets

    def flush(self) -> list[AudioOnset]:
        """End of stream: the onset the detector was still holding, if any."""
        if self.detector is None or self.state != "ok":
            return []
        return self.detector.flush()

    def _sound_failed(self, error: str) -> None:
        self.sound_state = "failed"
        self.sound_error = error
        log.error("audio: %s; ALARM: recordings continue without sound", error)
        if self.on_alarm is not None:
            try:
                self.on_alarm(f"ALARM footage sound: {error}; recordings without sound")
            except Exception:
                log.exception("audio alarm callback failed")

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
        body: dict[str, JSON] = {"state": self.state,
                                 "alarm": self.state == "failed" or self.sound_state == "failed",
                                 "footage_sound": self.sound_state if self.state == "ok" else "none"}
        if self.error is not None:
            body["error"] = self.error
        if self.sound_error is not None:
            body["footage_sound_error"] = self.sound_error
        return body


__all__ = ["AudioPath", "AudioState", "SoundState"]
