"""The firmware loop: camera -> preprocess -> detector -> events -> markers -> footage.

:class:`App` wires the stages built elsewhere (from config by
``device.assemble``, the one assembly, for the camera and for the simulator) and runs one
iteration per frame. It knows no simulator: simulated parts arrive through the
same protocols as real ones.

Marker order of operations (DESIGN.md section 4): every marker is committed to
the durable outbox first, then tagged into the active recording, then offered
to listeners (publisher wake-up, the simulator's printout).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from bodycam.device.clock import Clock, mono_to_wall
from bodycam.device.detect.audio_path import AudioPath
from bodycam.device.detect.detector import Detector
from bodycam.device.detect.events import ShotTracker
from bodycam.device.detect.fusion import Fusion, ShotDecision
from bodycam.device.detect.preprocess import FrameWindow
from bodycam.device.errors import StorageError
from bodycam.device.footage.recorder import Recorder
from bodycam.device.footage.recording import PROTECTING_KINDS, Recording, chapter_label
from bodycam.device.footage.recording_state import (
    Action,
    EmitMarker,
    Event,
    Feedback,
    RecordingStateMachine,
    StartRecording,
    State,
    StopRecording,
)
from bodycam.device.hw.frames import Camera, Frame, StreamInfo
from bodycam.device.hw.indicators import Indicators
from bodycam.device.hw.inputs import Inputs
from bodycam.device.uplink.commands import Record
from bodycam.device.uplink.markers import JSON, Location, Marker, MarkerDraft, Media, ModelRef, check_clock

log = logging.getLogger(__name__)
# the pre-event buffer starts at a keyframe, up to a GOP before pre_event_s: footage that old may be in it
_PRE_EVENT_SLACK_S = 2.0

#: per-frame cost split: camera read (decode in the simulator), footage tagging (packets into the
#: buffer or segments), preprocess, invoke, events (tracker, state machine, markers), housekeeping
#: (retention, indicators, watchdog); audio: microphone blocks up to the frame's time through the audio path
STAGES = ("read", "tagging", "audio", "preprocess", "invoke", "events", "housekeeping")


class MarkerJournal(Protocol):
    """The durable outbox as the loop sees it.

    ``record`` always returns the marker (with its id, seq and chain): when the card is too full
    even for the outbox's reserved space, the outbox keeps it in memory, in order, hands it to the
    publisher all the same and says why in ``journal_error`` (the storage alarm); ``flush`` writes
    such markers as soon as there is room.
    """

    def record(self, draft: MarkerDraft) -> Marker: ...

    def depth(self) -> int: ...

    def flush(self) -> int: ...

    @property
    def journal_error(self) -> str | None: ...


class Kicker(Protocol):
    def kick(self) -> None: ...


@dataclass
class RunStats:
    frames: int = 0
    first_t_ns: int | None = None
    last_t_ns: int = 0
    wall_s: float = 0.0
    stage_ns: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in STAGES})
    markers: list[Marker] = field(default_factory=list)
    detections: int = 0
    error: str | None = None
    audio_read_ns: int = 0  # microphone reads (the audio stage's share that is not detection)
    audio_detect_ns: int = 0  # audio features + model
    audio_encode_ns: int = 0  # the footage's sound: AAC encoding into the camera's buffer

    @property
    def media_s(self) -> float:
        if self.first_t_ns is None or self.frames < 2:
            return 0.0
        # n frames span (n-1) intervals; add one interval for the last frame's duration
        span = self.last_t_ns - self.first_t_ns
        return span / 1e9 * self.frames / (self.frames - 1)

    def percentile_ms(self, stage: str, q: float) -> float:
        values = self.stage_ns[stage]
        return float(np.percentile(values, q)) / 1e6 if values else 0.0


class App:
    def __init__(
        self,
        *,
        camera: Camera,
        detector: Detector,
        tracker: ShotTracker,
        journal: MarkerJournal,
        recorder: Recorder,
        clock: Clock,
        state_machine: RecordingStateMachine,
        inputs: Inputs | None = None,
        indicators: Indicators | None = None,
        location: Callable[[], Location | None] | None = None,
        watchdog: Kicker | None = None,
        listeners: list[Callable[[Marker], None]] | None = None,
        maintenance_interval_s: float = 10.0,
        keep_stage_times: bool = True,
        audio: AudioPath | None = None,
        clock_status: Callable[[], dict[str, JSON]] | None = None,
        fusion: Fusion | None = None,
        audio_model: ModelRef | None = None,
        alarm_sources: Sequence[Callable[[], str | None]] = (),
        record_requests: collections.deque[Record] | None = None,
    ) -> None:
        self.camera = camera
        self.detector = detector
        self.tracker = tracker
        self.journal = journal
        self.recorder = recorder
        self.clock = clock
        self.sm = state_machine
        self.inputs = inputs
        self.indicators = indicators
        self.location = location
        self.watchdog = watchdog
        self.listeners = list(listeners or [])
        self.clock_status = clock_status  # every marker says whether its wall time can be trusted
        self.audio = audio or AudioPath(None)
        self.fusion = fusion  # None: the video tracker decides alone
        self.audio_model_ref = audio_model
        # other parts' alarms (delivery to base, microphone): each says why it is alarming, or None;
        # any of them lights the LED's alarm pattern, checked at every maintenance pass
        self.alarm_sources = list(alarm_sources)
        # a new model waits to be activated (device/model_select.py): when this says so while the
        # camera is idle (not recording), the loop stops with ``reload_requested`` set and the
        # service assembles the firmware again with the new model
        self.reload_when: Callable[[], bool] | None = None
        self.reload_requested = False
        #: ``cmd/record`` commands the publisher accepted (its thread appends, the loop takes them)
        self.record_requests: collections.deque[Record] = (
            record_requests if record_requests is not None else collections.deque(maxlen=64))
        self.window = FrameWindow(detector.spec.input)
        self._times: collections.deque[tuple[int, int]] = collections.deque(maxlen=detector.spec.input.frames)
        spec = detector.spec
        self.model_ref = ModelRef(name=spec.name, version=spec.version, sha256=spec.sha256)
        self.stats = RunStats()
        # sensor times of shots marked while no recording could hold them (between a failed recording
        # and the one resumed after it): the next recording's pre-event footage may hold them
        self._unplaced_shots: list[int] = []
        self._keep_times = keep_stage_times
        self._maint_ns = int(maintenance_interval_s * 1e9)
        self._next_maint: int | None = None
        self.info: StreamInfo | None = None
        self._stopping = False
        self.journal_error: str | None = None  # why markers are only in the outbox's memory (full card)
        #: optional marker parts (``location``, ``clock``) that failed: the marker went out without them;
        #: logged once per episode and an alarm until the part works again
        self.marker_part_errors: dict[str, str] = {}
        #: called once, after the first frame went through the whole loop (READY=1 on the camera)
        self.on_first_frame: Callable[[], None] | None = None

    # -- time ------------------------------------------------------------------------
    def mono_to_wall(self, t_ns: int) -> int:
        return mono_to_wall(self.clock, t_ns)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> StreamInfo:
        self.info = self.camera.start()
        self.audio.source_sound = self.audio.source_sound and self.info.has_audio  # remuxed packets carry sound
        self.audio.start()
        self.recorder.begin(self.info)
        self._indicate_state()
        return self.info

    def request_stop(self) -> None:
        self._stopping = True

    def run(self, max_frames: int | None = None, progress: Callable[[RunStats], None] | None = None,
            progress_every: int = 30) -> RunStats:
        """Run until the camera ends (or ``request_stop``); returns the statistics.

        ``progress`` is called every ``progress_every`` frames (the simulator's progress bar).
        """
        if self.info is None:
            self.start()
        t0 = time.perf_counter()
        try:
            while not self._stopping and (max_frames is None or self.stats.frames < max_frames):
                r0 = time.perf_counter_ns()
                frame = self.camera.read()
                r1 = time.perf_counter_ns()
                if frame is None:
                    break
                self.step(frame, read_ns=r1 - r0)
                if progress is not None and self.stats.frames % progress_every == 0:
                    progress(self.stats)
        finally:
            self.finish()
            self.stats.wall_s = time.perf_counter() - t0
        return self.stats

    def finish(self) -> None:
        """End of stream: decide the last pending frame, close any recording, stop the camera."""
        try:
            det = self.tracker.flush()
            if self.fusion is not None:
                if det is not None:
                    self.fusion.video(det.frame, det.t_ns, det.confidence, det)
                self.fusion.audio(self.audio.flush())
                for d in self.fusion.decide(self.audio.live, final=True):
                    self._on_shot(d)
            elif det is not None:
                self._on_detection(det.frame, det.t_ns, det.confidence)
            if self.recorder.active is not None:
                t = self.stats.last_t_ns
                self._emit("recording_stop", t, extra={"reason": "end_of_stream"})
                self.recorder.stop()
        finally:
            self.camera.stop()
            self.recorder.close()  # waits for the last segments' hashes

    # -- one frame -------------------------------------------------------------------
    def step(self, frame: Frame, read_ns: int = 0) -> None:
        st = self.stats
        if st.first_t_ns is None:
            st.first_t_ns = frame.t_ns
        st.last_t_ns = frame.t_ns
        st.frames += 1
        p_tag = time.perf_counter_ns()
        self.recorder.feed(frame.packets, frame.t_ns)
        p_audio = time.perf_counter_ns()
        onsets = self.audio.poll(frame.t_ns)
        st.audio_read_ns, st.audio_detect_ns = self.audio.read_ns, self.audio.detect_ns
        st.audio_encode_ns = self.audio.encode_ns
        p0 = time.perf_counter_ns()
        self.window.push(frame.lores)
        self._times.append((frame.index, frame.t_ns))
        p1 = time.perf_counter_ns()
        det = None
        if self.window.ready:
            score = self.detector.score(self.window.tensor)
            p2 = time.perf_counter_ns()
            idx, t_ns = self._times[-1 - self.detector.spec.input.target_offset]
            det = self.tracker.update(idx, t_ns, score)
            if self.fusion is not None:
                self.fusion.video(idx, t_ns, score, det)
                det = None
        else:
            p2 = time.perf_counter_ns()
        if self.fusion is not None:
            self.fusion.audio(onsets)
            for shot in self.fusion.decide(self.audio.live):
                self._on_shot(shot)
        elif det is not None:
            self._on_detection(det.frame, det.t_ns, det.confidence)
        if self.inputs is not None:
            for ev in self.inputs.poll():
                self._apply(self.sm.handle(Event(ev.kind, ev.t_mono_ns, "button")))
        while self.record_requests:
            self._on_record_request(self.record_requests.popleft(), frame.t_ns)
        self._apply(self.sm.handle(Event("tick", frame.t_ns)))
        p3 = time.perf_counter_ns()
        if self._next_maint is None or frame.t_ns >= self._next_maint:
            self._next_maint = frame.t_ns + self._maint_ns
            kept = self.recorder.maintain()
            for lost in kept.lost if kept is not None else []:  # deleted before base confirmed it
                self._emit("footage_deleted", frame.t_ns, extra={
                    "recording": lost.recording, "reason": "card_full_not_offloaded", "segments": lost.segments,
                    "bytes": lost.bytes, "manifest_sha256": lost.manifest_sha256, "start_utc": lost.start_utc,
                    "end_utc": lost.end_utc})
            if (self.reload_when is not None and self.sm.state == State.IDLE and self.recorder.active is None
                    and not self.reload_requested and self.reload_when()):
                log.info("a new model is waiting and the camera is idle: reloading the firmware to activate it")
                self.reload_requested = True
                self.request_stop()
            # the recording failed (full disk, card error) but the officer/trigger still wants one:
            # try a new recording, at most once per maintenance interval
            if (self.sm.state != State.IDLE and self.recorder.active is None and self.recorder.errors
                    and self._start_recording("resumed_after_error", frame.t_ns, include_buffer=True) is not None):
                self._emit("recording_start", frame.t_ns, extra={"reason": "resumed_after_error"})
            self._indicate_state()
            if self.journal_error is not None:
                self._check_journal(flush=True)
        if self.indicators is not None:
            self.indicators.tick()
        if self.watchdog is not None:
            self.watchdog.kick()
        if st.frames == 1 and self.on_first_frame is not None:
            self.on_first_frame()
        p4 = time.perf_counter_ns()
        if self._keep_times:
            s = st.stage_ns
            s["read"].append(read_ns)
            s["tagging"].append(p_audio - p_tag)
            s["audio"].append(p0 - p_audio)
            s["preprocess"].append(p1 - p0)
            if self.window.ready:
                s["invoke"].append(p2 - p1)
            s["events"].append(p3 - p2)
            s["housekeeping"].append(p4 - p3)

    # -- events ----------------------------------------------------------------------
    def _on_detection(self, frame: int, t_ns: int, confidence: float,
                      evidence: dict[str, float] | None = None, rule: str | None = None) -> None:
        self.stats.detections += 1
        self._apply(self.sm.handle(Event("detection", t_ns)))
        # ``model`` names the model that placed the marker: the video model when a flash did, else the audio one
        heard_only = evidence is not None and "video" not in evidence and self.audio_model_ref is not None
        self._emit("gunshot", t_ns, confidence=confidence, model=self.audio_model_ref if heard_only else self.model_ref,
                   extra={"frame_index": frame} if rule is None else {"frame_index": frame, "rule": rule},
                   evidence=evidence)

    def _on_record_request(self, cmd: Record, t_ns: int) -> None:
        """Base asked this camera to record (``cmd/record``): an automatic start with the pre-event
        buffer, ``recording_start`` with the command's reason (``peer:<device>/<marker>`` or ``base:<user>``)."""
        actions = self.sm.handle(Event("start", t_ns, cmd.reason))
        if not any(isinstance(a, StartRecording) for a in actions):
            log.warning("cmd/record %s (%s): already recording; the recording goes on", cmd.id, cmd.reason)
        self._apply(actions)

    def _on_shot(self, shot: ShotDecision) -> None:
        self._on_detection(shot.frame, shot.t_ns, shot.confidence, shot.evidence, shot.rule)

    def _apply(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, StartRecording):
                self._start_recording(a.reason, self.stats.last_t_ns, a.include_buffer)
            elif isinstance(a, StopRecording):
                self.recorder.stop()
            elif isinstance(a, EmitMarker):
                extra: dict[str, JSON] = dict(a.extra)
                self._emit(a.kind, a.t_ns, extra=extra or None)
            elif isinstance(a, Feedback):
                if a.what == "state":
                    self._indicate_state()
                elif self.indicators is not None:
                    self.indicators.pulse(a.what)

    def alarms(self) -> list[str]:
        """Why the camera is alarming now (storage, outbox, and every alarm source); empty when all is well."""
        out = []
        if self.recorder.storage_alarm:
            out.append("storage")
        if self.journal_error is not None:
            out.append(f"outbox: {self.journal_error}")
        out.extend(f"marker {part} left out: {problem}" for part, problem in list(self.marker_part_errors.items()))
        for source in self.alarm_sources:
            try:
                why = source()
            except Exception as exc:  # an alarm source must never stop the loop; failing is an alarm too
                why = f"alarm source failed: {exc}"
            if why:
                out.append(why)
        return out

    def _indicate_state(self) -> None:
        if self.indicators is None:
            return
        if self.alarms():
            self.indicators.set_state("alarm")
        elif self.sm.state == State.IDLE:
            self.indicators.set_state("buffering")
        else:
            self.indicators.set_state("recording")

    def _start_recording(self, reason: str, t_ns: int, include_buffer: bool) -> Recording | None:
        """Start a recording; protect it at once when its pre-event footage may hold a shot that was
        marked while no recording was open (the card refused the one before): retention must never
        take that footage for ordinary footage."""
        rec = self.recorder.start(reason, t_ns, include_buffer)
        horizon = t_ns - int((self.recorder.cfg.pre_event_s + _PRE_EVENT_SLACK_S) * 1e9)
        self._unplaced_shots = [s for s in self._unplaced_shots if s >= horizon]
        if rec is None or not include_buffer or not self._unplaced_shots or rec.error is not None:
            return rec
        try:
            rec.protect()
        except StorageError as exc:
            self.recorder.fail(rec, str(exc))
            return rec
        log.warning("recording %s protected: its pre-event footage holds %d shot(s) marked while no recording "
                    "was open", rec.recording_id, len(self._unplaced_shots))
        self._unplaced_shots.clear()
        return rec

    def _emit(self, kind: str, t_ns: int, *, confidence: float | None = None, model: ModelRef | None = None,
              extra: dict[str, JSON] | None = None, evidence: dict[str, float] | None = None) -> Marker | None:
        rec = self.recorder.active
        media = None
        if rec is not None:
            where = rec.media_for(t_ns)
            if where is not None:
                media = Media(recording=rec.recording_id, segment=where[0], offset_s=where[1], frame=where[2])
        if rec is not None and kind in PROTECTING_KINDS and rec.error is None:
            # protect before the outbox is even tried: a full disk must never cost this footage
            try:
                rec.protect()
            except StorageError as exc:
                self.recorder.fail(rec, str(exc))
        if kind in PROTECTING_KINDS and (rec is None or rec.error is not None):
            self._unplaced_shots.append(t_ns)  # the next recording's pre-event footage holds it
        # an optional part never costs the marker: both come checked by the marker's own rules (None when
        # they fail), so the draft cannot refuse them
        draft = MarkerDraft(kind=kind, t_mono_ns=t_ns, wall_ns=self.mono_to_wall(t_ns), confidence=confidence,
                            media=media, location=self.current_location(), model=model, extra=extra,
                            evidence=evidence, clock=self.current_clock())
        marker = self.journal.record(draft)  # durable (or, on a full card, in order in memory) first
        self._check_journal()
        self._after_record(marker, fresh=True)
        return marker

    def current_location(self) -> Location | None:
        """The location part's answer for a marker or telemetry; None (logged, alarmed) when it fails."""
        if self.location is None:
            return None
        try:
            loc = self.location()
        except Exception as exc:  # the location is optional: never lose a marker for it
            self._marker_part_failed("location", f"{type(exc).__name__}: {exc}")
            return None
        if loc is not None and not isinstance(loc, Location):
            self._marker_part_failed("location", f"not a Location: {type(loc).__name__}")
            return None
        self._marker_part_ok("location")
        return loc

    def current_clock(self) -> dict[str, JSON] | None:
        """The markers' ``clock`` object, checked; None (logged, alarmed) when it fails or is invalid."""
        if self.clock_status is None:
            return None
        try:
            value = check_clock(self.clock_status())  # the marker's own rules
        except Exception as exc:  # the clock field is optional: never lose a marker for it
            self._marker_part_failed("clock", f"{type(exc).__name__}: {exc}")
            return None
        self._marker_part_ok("clock")
        return value

    def _marker_part_failed(self, part: str, why: str) -> None:
        if self.marker_part_errors.get(part) != why:
            log.error("markers go out without their %s: %s", part, why)
        self.marker_part_errors[part] = why

    def _marker_part_ok(self, part: str) -> None:
        if self.marker_part_errors.pop(part, None) is not None:
            log.warning("markers carry their %s again", part)

    def _check_journal(self, flush: bool = False) -> None:
        """Follow the outbox's storage state: raise the alarm while markers are only in memory."""
        if flush:
            self.journal.flush()
        error = self.journal.journal_error
        if error is not None and self.journal_error is None:
            log.error("the outbox cannot write markers (%s): they are published from memory and written "
                      "when there is room", error)
        elif error is None and self.journal_error is not None:
            log.warning("the outbox writes markers again")
        self.journal_error = error
        if self.indicators is not None and error is not None:
            self.indicators.set_state("alarm")
        elif flush and error is None:
            self._indicate_state()

    def _after_record(self, marker: Marker, fresh: bool) -> None:
        """Tag a committed marker into the recording it points at (if still open) and tell listeners.

        A marker without media is tagged into the active recording only when it is fresh (not
        one the outbox accepted late, which may date from before this recording).
        """
        kind, t_ns, confidence = marker.kind, marker.t_mono_ns, marker.confidence
        self.stats.markers.append(marker)
        rec = self.recorder.active
        if rec is not None and rec.error is None and (
            (marker.media is None and fresh) or (marker.media is not None and marker.media.recording == rec.recording_id)
        ):
            label = chapter_label(kind, confidence)
            try:
                rec.add_marker(kind, t_ns, marker.to_json(), label)
            except StorageError as exc:
                self.recorder.fail(rec, str(exc))
        for listener in self.listeners:
            try:
                listener(marker)
            except Exception:  # a listener must never break the loop
                log.exception("marker listener failed")
