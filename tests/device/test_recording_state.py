from __future__ import annotations

import pytest

from bodycam.device.errors import ConfigError
from bodycam.device.footage.recording_state import (
    EmitMarker,
    Event,
    Feedback,
    RecordingConfig,
    RecordingStateMachine,
    StartRecording,
    State,
    StopRecording,
)

S = 1_000_000_000


def kinds(actions: list[object]) -> list[str]:
    out = []
    for a in actions:
        if isinstance(a, EmitMarker):
            out.append(f"marker:{a.kind}")
        elif isinstance(a, StartRecording):
            out.append(f"start:{a.reason}")
        elif isinstance(a, StopRecording):
            out.append(f"stop:{a.reason}")
        elif isinstance(a, Feedback) and a.what != "state":
            out.append(f"feedback:{a.what}")
    return out


def machine(**kw: float) -> RecordingStateMachine:
    return RecordingStateMachine(RecordingConfig(**kw))  # type: ignore[arg-type]


def test_record_button_starts_then_post_roll_then_idle() -> None:
    m = machine(post_roll_s=5)
    assert kinds(m.handle(Event("record", 1 * S))) == ["start:button", "marker:recording_start"]
    assert m.state == State.RECORDING and not m.automatic
    assert kinds(m.handle(Event("record", 10 * S))) == []
    assert m.state == State.POST_ROLL
    assert kinds(m.handle(Event("tick", 14 * S))) == []
    assert kinds(m.handle(Event("tick", 15 * S))) == ["marker:recording_stop", "stop:post_roll_end"]
    assert m.state == State.IDLE


def test_detection_auto_starts_with_buffer_and_haptic() -> None:
    m = machine()
    actions = m.handle(Event("detection", 3 * S))
    assert kinds(actions) == ["start:detection", "marker:recording_start", "feedback:auto_start"]
    start = next(a for a in actions if isinstance(a, StartRecording))
    assert start.include_buffer
    assert m.automatic and m.dismiss_open
    # further detections keep it recording, no new start
    assert kinds(m.handle(Event("detection", 4 * S))) == []


def test_dismiss_within_window_records_dismissal_and_stops() -> None:
    m = machine(dismiss_window_s=10)
    m.handle(Event("detection", 3 * S))
    acts = m.handle(Event("marker", 8 * S))
    assert kinds(acts) == ["marker:dismissed", "feedback:dismissed", "marker:recording_stop", "stop:dismissed"]
    assert m.state == State.IDLE


def test_marker_after_dismiss_window_is_a_manual_marker() -> None:
    m = machine(dismiss_window_s=10)
    m.handle(Event("detection", 3 * S))
    m.handle(Event("tick", 14 * S))
    assert kinds(m.handle(Event("marker", 14 * S))) == ["marker:manual", "feedback:marker"]
    assert m.state == State.RECORDING


def test_marker_on_manual_recording_never_dismisses() -> None:
    m = machine()
    m.handle(Event("record", 1 * S))
    assert kinds(m.handle(Event("marker", 2 * S))) == ["marker:manual", "feedback:marker"]


def test_holster_draw_marks_and_auto_starts() -> None:
    m = machine()
    assert kinds(m.handle(Event("holster_draw", 1 * S))) == [
        "start:holster_draw", "marker:recording_start", "feedback:auto_start", "marker:holster_draw"]
    assert kinds(m.handle(Event("holster_draw", 2 * S))) == ["marker:holster_draw"]


def test_detection_during_post_roll_resumes_the_same_recording() -> None:
    m = machine(post_roll_s=10)
    m.handle(Event("record", 1 * S))
    m.handle(Event("record", 5 * S))
    assert m.state == State.POST_ROLL
    assert kinds(m.handle(Event("detection", 7 * S))) == []
    assert m.state == State.RECORDING
    assert kinds(m.handle(Event("tick", 30 * S))) == []  # the post-roll deadline no longer applies


def test_auto_recording_stops_after_quiet_period() -> None:
    m = machine(auto_stop_after_s=60, post_roll_s=0)
    m.handle(Event("detection", 0))
    m.handle(Event("detection", 30 * S))
    assert kinds(m.handle(Event("tick", 89 * S))) == []
    assert kinds(m.handle(Event("tick", 90 * S))) == ["marker:recording_stop", "stop:stopped"]


def test_auto_start_can_be_disabled() -> None:
    m = machine(auto_start=False)
    assert m.handle(Event("detection", 0)) == []
    assert m.state == State.IDLE


def test_bad_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"recording\.segment_s"):
        RecordingConfig(segment_s=1)


def test_manual_restart_during_post_roll_of_an_automatic_recording_is_manual() -> None:
    m = machine(post_roll_s=10, auto_stop_after_s=60)
    m.handle(Event("detection", 1 * S))
    m.handle(Event("record", 20 * S))
    assert m.state == State.POST_ROLL
    m.handle(Event("record", 25 * S))
    assert m.state == State.RECORDING and not m.automatic and not m.dismiss_open
    assert kinds(m.handle(Event("tick", 400 * S))) == []  # no automatic stop any more
    assert kinds(m.handle(Event("marker", 401 * S))) == ["marker:manual", "feedback:marker"]
