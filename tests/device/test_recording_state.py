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
    assert kinds(m.handle(Event("record", 10 * S))) == ["marker:recording_stop_requested"]
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


def test_dismiss_gesture_within_window_of_a_holster_start_records_dismissal_and_stops() -> None:
    m = machine(dismiss_window_s=10)
    m.handle(Event("holster_draw", 3 * S))
    acts = m.handle(Event("dismiss", 8 * S, "button"))
    assert kinds(acts) == ["marker:dismissed", "feedback:dismissed", "marker:recording_stop", "stop:dismissed"]
    assert m.state == State.IDLE
    assert all(not isinstance(a, StartRecording) for a in acts)  # stopped and kept, nothing else


# -- the officer's controls (issue 10): a marker press never stops a recording ----------------------
def test_short_press_inside_the_dismiss_window_is_only_a_manual_marker() -> None:
    m = machine(dismiss_window_s=10)
    m.handle(Event("holster_draw", 2 * S))
    assert m.dismiss_open
    acts = m.handle(Event("marker", 4 * S, "button"))
    assert kinds(acts) == ["marker:manual", "feedback:marker"]
    assert m.state == State.RECORDING and m.automatic and m.dismiss_open
    (mk,) = [a for a in acts if isinstance(a, EmitMarker)]
    assert mk.t_ns == 4 * S and mk.extra == {"source": "button"}


@pytest.mark.parametrize("start", ["detection", "holster_draw", "start", "record"])
@pytest.mark.parametrize("state_at_press", ["recording", "post_roll", "idle"])
def test_short_press_never_stops_anything_in_any_state(start: str, state_at_press: str) -> None:
    m = machine(dismiss_window_s=10, post_roll_s=5)
    if state_at_press != "idle":
        m.handle(Event(start, 1 * S))  # type: ignore[arg-type]
    if state_at_press == "post_roll":
        m.handle(Event("record", 2 * S) if start == "record" else Event("stop", 2 * S))
        assert m.state == State.POST_ROLL
    before = m.state
    acts = m.handle(Event("marker", 3 * S))
    assert kinds(acts) == ["marker:manual", "feedback:marker"]
    assert m.state == before


def test_dismiss_is_refused_once_a_shot_was_detected_and_the_recording_goes_on() -> None:
    """The reference scenario: holster draw at 2 s, shots at 2.93 s and 3.03 s, then the gesture."""
    m = machine(dismiss_window_s=10)
    m.handle(Event("holster_draw", 2 * S))
    m.handle(Event("detection", int(2.93 * S)))
    m.handle(Event("detection", int(3.03 * S)))
    assert m.shot_in_recording and m.dismiss_open
    acts = m.handle(Event("dismiss", int(5.5 * S), "button"))
    assert kinds(acts) == ["marker:dismiss_refused", "feedback:refused"]
    (mk,) = [a for a in acts if isinstance(a, EmitMarker)]
    assert mk.extra == {"reason": "shot_detected", "source": "button"}
    assert m.state == State.RECORDING
    assert kinds(m.handle(Event("tick", 6 * S))) == []  # and nothing stops it later on the gesture's account


def test_a_recording_started_by_a_detection_cannot_be_dismissed() -> None:
    m = machine(dismiss_window_s=10)
    m.handle(Event("detection", 3 * S))
    acts = m.handle(Event("dismiss", 4 * S))
    assert kinds(acts) == ["marker:dismiss_refused", "feedback:refused"]
    assert [a.extra["reason"] for a in acts if isinstance(a, EmitMarker)] == ["shot_detected"]
    assert m.state == State.RECORDING


def test_a_shot_during_post_roll_resumes_and_blocks_dismissal() -> None:
    m = machine(dismiss_window_s=10, post_roll_s=10)
    m.handle(Event("holster_draw", 1 * S))
    m.handle(Event("stop", 2 * S))
    assert m.state == State.POST_ROLL
    m.handle(Event("detection", 3 * S))
    assert m.state == State.RECORDING
    assert m.dismiss_refusal(4 * S) == "shot_detected"


def test_the_shot_flag_belongs_to_one_recording() -> None:
    m = machine(dismiss_window_s=10, post_roll_s=0)
    m.handle(Event("detection", 1 * S))
    m.handle(Event("stop", 2 * S))
    assert m.state == State.IDLE
    m.handle(Event("holster_draw", 10 * S))  # a new recording, no shot in it
    assert kinds(m.handle(Event("dismiss", 12 * S))) == [
        "marker:dismissed", "feedback:dismissed", "marker:recording_stop", "stop:dismissed"]


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ([], "not_recording"),
        ([("record", 1)], "manual_recording"),
        ([("holster_draw", 1), ("tick", 12)], "window_closed"),
        ([("holster_draw", 1), ("stop", 2)], "post_roll"),
    ],
)
def test_every_refused_dismissal_is_a_marker_with_its_reason(setup: list[tuple[str, int]], reason: str) -> None:
    m = machine(dismiss_window_s=10, post_roll_s=30)
    for kind, t in setup:
        m.handle(Event(kind, t * S))  # type: ignore[arg-type]
    state = m.state
    acts = m.handle(Event("dismiss", 13 * S))
    assert kinds(acts) == ["marker:dismiss_refused", "feedback:refused"]
    assert [a.extra for a in acts if isinstance(a, EmitMarker)] == [{"reason": reason, "source": "button"}]
    assert m.state == state


def test_stop_requests_are_markers() -> None:
    m = machine(post_roll_s=5)
    m.handle(Event("holster_draw", 1 * S))
    acts = m.handle(Event("stop", 2 * S, "base:alice"))
    assert [(a.kind, a.extra) for a in acts if isinstance(a, EmitMarker)] == [
        ("recording_stop_requested", {"source": "base:alice"})]


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
