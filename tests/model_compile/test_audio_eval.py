"""The audio evaluation's scoring rules on hand-made detections."""

from __future__ import annotations

import numpy as np

from bodycam.device.detect.audio_detector import AudioOnset
from bodycam.device.detect.audio_features import FEATURES
from bodycam.model_compile.audio_data import Scene
from bodycam.model_compile.audio_eval import AFTER_SHOT_S, Tally, score_scene

SR = FEATURES.sample_rate


def _at(seconds: float, score: float = 0.99) -> AudioOnset:
    return AudioOnset(int(seconds * 1e9), score, 0.0)


def test_false_alarms_are_put_on_the_impulse_the_shot_or_the_bed() -> None:
    scene = Scene(np.zeros(10 * SR, np.float32), shots=((1 * SR, "pistol"), (6 * SR, "rifle")),
                  impulses=((3 * SR, "door_slam"),), seconds=10.0)
    t = Tally()
    found = [_at(1.02), _at(1.4), _at(3.05), _at(8.0), _at(6.0 + AFTER_SHOT_S + 0.2)]
    score_scene(t, scene, found)
    s = t.summary()
    assert (s["tp"], s["fp"], s["fn"]) == (1, 4, 1)
    assert s["false_alarms_by_family"] == {"after_shot": 1, "door_slam": 1, "other": 2}
    assert s["recall_by_gun_family"] == {"pistol": 1.0, "rifle": 0.0}
    assert s["timing_ms"]["median"] == 20.0
