"""The recording state machine: pure logic, no I/O, time from the events.

States: ``idle`` (pre-event buffer filling) -> ``recording`` -> ``post_roll`` -> ``idle``.

* ``record`` button: idle -> recording (manual); recording -> post-roll (a
  ``recording_stop_requested`` marker); during post-roll, recording again.
* detection, holster draw or a ``start`` command: idle/post-roll -> recording
  (automatic; the pre-event buffer is kept), and a dismiss window opens.
* ``marker`` (a short press of the marker button): always a ``manual`` marker and a
  haptic tick; it never stops or changes anything.
* ``dismiss`` (the deliberate gesture: the marker button held ``gpio.dismiss_hold_s``):
  stops an automatic recording inside its dismiss window with a ``dismissed`` marker
  and the "dismissed" haptic (the recording is closed, nothing is deleted). It is
  refused, with a ``dismiss_refused`` marker naming the reason and the "refused"
  haptic, when a shot has been detected in this recording (``shot_detected``: a
  recording is never stopped by hand during a shooting, so one started by a detection
  cannot be dismissed at all), when the recording was started by hand
  (``manual_recording``), after the window (``window_closed``), during post-roll
  (``post_roll``) and when nothing is recording (``not_recording``).
* an automatic recording with no detection for ``auto_stop_after_s`` goes to
  post-roll; post-roll ends after ``post_roll_s``.

Every gesture and its outcome is a marker.

The machine returns :class:`Action` values that the app carries out (start or
stop the recorder, emit a marker, drive LED/haptic).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from bodycam.device.settings import require

NS = 1_000_000_000


class State(StrEnum):
    IDLE = "idle"
    RECORDING = "recording"
    POST_ROLL = "post_roll"


@dataclass(frozen=True)
class RecordingConfig:
    pre_event_s: float = 30.0
    post_roll_s: float = 10.0
    segment_s: float = 60.0
    dismiss_window_s: float = 10.0
    auto_stop_after_s: float = 300.0  # 0: automatic recordings run until stopped by hand
    auto_start: bool = True  # detections start recording

    def __post_init__(self) -> None:
        require(0 <= self.pre_event_s <= 600, "recording.pre_event_s", f"{self.pre_event_s} must be 0..600")
        require(0 <= self.post_roll_s <= 600, "recording.post_roll_s", f"{self.post_roll_s} must be 0..600")
        require(2 <= self.segment_s <= 3600, "recording.segment_s", f"{self.segment_s} must be 2..3600")
        require(0 <= self.dismiss_window_s <= 120, "recording.dismiss_window_s",
                f"{self.dismiss_window_s} must be 0..120")
        # in nanoseconds on the loop: 1e300 s would be an infinite float there (OverflowError)
        require(0 <= self.auto_stop_after_s <= 86400, "recording.auto_stop_after_s",
                f"{self.auto_stop_after_s} must be 0..86400 (0: until stopped by hand)")


EventKind = Literal[
    "record", "marker", "dismiss", "holster_draw", "holster_return", "holster_flapping", "detection", "start", "stop",
    "tick"
]


@dataclass(frozen=True)
class Event:
    kind: EventKind
    t_ns: int
    source: str = ""


@dataclass(frozen=True)
class StartRecording:
    reason: str
    include_buffer: bool


@dataclass(frozen=True)
class StopRecording:
    reason: str


@dataclass(frozen=True)
class EmitMarker:
    kind: str
    t_ns: int
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Feedback:
    what: Literal["auto_start", "dismissed", "refused", "marker", "state"]


Action = StartRecording | StopRecording | EmitMarker | Feedback


class RecordingStateMachine:
    def __init__(self, cfg: RecordingConfig) -> None:
        self.cfg = cfg
        self.state = State.IDLE
        self.automatic = False
        self._dismiss_until: int | None = None
        self._post_roll_until: int | None = None
        self._last_activity: int = 0
        self.shot_in_recording = False  # a detection happened in the current recording: no dismissal

    def handle(self, ev: Event) -> list[Action]:
        handler = getattr(self, f"_on_{ev.kind}")
        actions: list[Action] = handler(ev)
        return actions

    # -- transitions ----------------------------------------------------------------
    def _start(self, ev: Event, reason: str, automatic: bool) -> list[Action]:
        was = self.state
        self.state = State.RECORDING
        self._post_roll_until = None
        self._last_activity = ev.t_ns
        if was == State.POST_ROLL:  # the recording never stopped: it just continues
            if automatic:
                if self.cfg.dismiss_window_s > 0:
                    self._dismiss_until = ev.t_ns + int(self.cfg.dismiss_window_s * NS)
            else:  # the officer took it over: no dismissal, no automatic stop
                self.automatic = False
                self._dismiss_until = None
            return [Feedback("state")]
        self.automatic = automatic
        self.shot_in_recording = False
        self._dismiss_until = ev.t_ns + int(self.cfg.dismiss_window_s * NS) if automatic else None
        actions: list[Action] = [
            StartRecording(reason, include_buffer=True),
            EmitMarker("recording_start", ev.t_ns, {"reason": reason}),
            Feedback("state"),
        ]
        if automatic:
            actions.append(Feedback("auto_start"))
        return actions

    def _stop_now(self, ev: Event, reason: str) -> list[Action]:
        self.state = State.IDLE
        self.automatic = False
        self._dismiss_until = None
        self._post_roll_until = None
        return [EmitMarker("recording_stop", ev.t_ns, {"reason": reason}), StopRecording(reason), Feedback("state")]

    def _enter_post_roll(self, ev: Event) -> list[Action]:
        if self.cfg.post_roll_s <= 0:
            return self._stop_now(ev, "stopped")
        self.state = State.POST_ROLL
        self._dismiss_until = None
        self._post_roll_until = ev.t_ns + int(self.cfg.post_roll_s * NS)
        return [Feedback("state")]

    def _stop_requested(self, ev: Event, source: str) -> list[Action]:
        """The officer (record button) or base (stop command) asked to stop: say so, then post-roll."""
        return [EmitMarker("recording_stop_requested", ev.t_ns, {"source": source}), *self._enter_post_roll(ev)]

    # -- events ---------------------------------------------------------------------
    def _on_record(self, ev: Event) -> list[Action]:
        if self.state == State.RECORDING:
            return self._stop_requested(ev, ev.source or "button")
        return self._start(ev, "button", automatic=False)

    def _on_start(self, ev: Event) -> list[Action]:
        if self.state == State.RECORDING:
            return []
        return self._start(ev, ev.source or "command", automatic=True)

    def _on_stop(self, ev: Event) -> list[Action]:
        if self.state == State.RECORDING:
            return self._stop_requested(ev, ev.source or "command")
        return []

    def _on_detection(self, ev: Event) -> list[Action]:
        if self.state == State.RECORDING:
            self._last_activity = ev.t_ns
            self.shot_in_recording = True
            return []
        if not self.cfg.auto_start:
            return []
        actions = self._start(ev, "detection", automatic=True)  # or resumes it from post-roll
        self.shot_in_recording = True
        return actions

    def _on_holster_draw(self, ev: Event) -> list[Action]:
        actions: list[Action] = []
        if self.state != State.RECORDING:  # start first, so the marker is tagged into the recording
            actions += self._start(ev, "holster_draw", automatic=True)
        else:
            self._last_activity = ev.t_ns
        return [*actions, EmitMarker("holster_draw", ev.t_ns)]

    def _on_holster_return(self, ev: Event) -> list[Action]:
        return [EmitMarker("holster_return", ev.t_ns)]

    def _on_holster_flapping(self, ev: Event) -> list[Action]:
        """The sensor changes too often to be believed (hw/inputs.py holds its changes back): say so once."""
        return [EmitMarker("holster_flapping", ev.t_ns)]

    def _on_marker(self, ev: Event) -> list[Action]:
        """A short press: a manual marker, whatever the state. Never stops anything."""
        return [EmitMarker("manual", ev.t_ns, {"source": ev.source or "button"}), Feedback("marker")]

    def dismiss_refusal(self, t_ns: int) -> str | None:
        """Why a dismiss gesture at ``t_ns`` would be refused now (None: it would be accepted)."""
        if self.state == State.IDLE:
            return "not_recording"
        if self.state == State.POST_ROLL:
            return "post_roll"
        if self.shot_in_recording:
            return "shot_detected"
        if not self.automatic:
            return "manual_recording"
        if self._dismiss_until is None or t_ns > self._dismiss_until:
            return "window_closed"
        return None

    def _on_dismiss(self, ev: Event) -> list[Action]:
        """The deliberate gesture (long press): stop a false automatic start, unless refused."""
        source = ev.source or "button"
        reason = self.dismiss_refusal(ev.t_ns)
        if reason is not None:
            return [EmitMarker("dismiss_refused", ev.t_ns, {"reason": reason, "source": source}), Feedback("refused")]
        return [EmitMarker("dismissed", ev.t_ns, {"source": source}), Feedback("dismissed"),
                *self._stop_now(ev, "dismissed")]

    def _on_tick(self, ev: Event) -> list[Action]:
        if self._dismiss_until is not None and ev.t_ns > self._dismiss_until:
            self._dismiss_until = None
        if self.state == State.POST_ROLL and self._post_roll_until is not None and ev.t_ns >= self._post_roll_until:
            return self._stop_now(ev, "post_roll_end")
        if (
            self.state == State.RECORDING
            and self.automatic
            and self.cfg.auto_stop_after_s > 0
            and ev.t_ns - self._last_activity >= int(self.cfg.auto_stop_after_s * NS)
        ):
            return self._enter_post_roll(ev)
        return []

    @property
    def dismiss_open(self) -> bool:
        return self._dismiss_until is not None
