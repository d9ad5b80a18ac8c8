"""End to end: the real firmware loop on real clips with the shipped model (integration tier)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import av
import pytest
from _clips import make_plain_clip

from bodycam.device.config import AppConfig
from bodycam.device.detect.model_spec import default_model_path
from bodycam.device.errors import ClipError, ModelError, StorageError
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.footage.segment_writer import sha256_of
from bodycam.device.uplink.markers import Marker
from bodycam.hw_sim.scoring import score_events
from bodycam.hw_sim.sim_run import SimOptions, SimReport, run_clip
from bodycam.hw_sim.truth import load_truth, truth_path_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "range_demo.mp4"
S = 1_000_000_000


def run(clip: Path, out: Path, cfg: AppConfig | None = None, **kw: object) -> SimReport:
    return run_clip(SimOptions(clip=clip, out=out, config=cfg or AppConfig(), broker=None, **kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> SimReport:
    return run(EXAMPLE, tmp_path_factory.mktemp("example"))


def test_markers_land_on_the_shots_of_the_example(example_run: SimReport) -> None:
    truth = load_truth(truth_path_for(EXAMPLE))
    fps = truth.video.fps
    gunshots = [m for m in example_run.stats.markers if m.kind == "gunshot"]
    frames = [round(m.t_mono_ns * fps / S) for m in gunshots]
    sc = score_events([s.frame for s in truth.shots], frames)
    # one marker per shot (the burst included), none elsewhere
    assert sc.fp == 0, f"false markers at frames {sc.unmatched_markers}"
    assert sc.fn == 0, f"missed shots at frames {sc.missed}"
    errs = sorted(abs(e) for e in sc.timing_errors)
    assert errs[len(errs) // 2] <= 1 and errs[-1] <= 2
    for m in gunshots:
        assert m.model is not None and m.model.sha256 == sha256_of(default_model_path())
        assert m.confidence is not None and 0 < m.confidence <= 1
        # t_mono_ns is the clip's own timeline: the PTS of the shot's frame (frame i at i/fps)
        assert m.extra is not None
        assert abs(m.t_mono_ns - int(m.extra["frame_index"]) * S / fps) < 1000


def test_detection_recording_is_tagged_protected_and_verifiable(example_run: SimReport) -> None:
    assert example_run.error is None and not example_run.storage_errors
    recs = example_run.recordings
    assert recs, "a detection starts a recording"
    root = example_run.out / "recordings"
    gunshot_ids = {m.id for m in example_run.stats.markers if m.kind == "gunshot"}
    seen = set()
    for r in recs:
        d = root / r["recording"]
        manifest = json.loads((d / "manifest.json").read_text())
        assert manifest == r | {"complete": True} or manifest["complete"] is True
        for seg in manifest["segments"]:
            assert sha256_of(d / seg["file"]) == seg["sha256"]
            with av.open(str(d / seg["file"])) as c:
                assert sum(1 for _ in c.decode(video=0)) == seg["frames"]
        lines = [json.loads(x) for x in (d / "markers.jsonl").read_text().splitlines()]
        assert len(lines) == manifest["marker_count"]
        assert [x["seq"] for x in lines] == sorted(x["seq"] for x in lines)
        vtt = (d / "chapters.vtt").read_text()
        # one chapter per instant: markers at the same time share a cue
        assert vtt.startswith("WEBVTT") and vtt.count(" --> ") == len({x["t_mono_ns"] for x in lines})
        for x in lines:
            if x["kind"] == "gunshot":
                seen.add(x["id"])
                assert manifest["protected"] is True
                media = x["media"]
                assert media["recording"] == r["recording"]
                seg = manifest["segments"][media["segment"]]
                assert media["offset_s"] == pytest.approx((x["t_mono_ns"] - seg["start_mono_ns"]) / S, abs=1e-3)
    assert seen == gunshot_ids, "every gunshot marker is tagged into its recording"


def test_pre_event_buffer_holds_the_seconds_before_the_first_detection(tmp_path: Path) -> None:
    pre = 1.5
    cfg = AppConfig(recording=RecordingConfig(pre_event_s=pre))
    report = run(EXAMPLE, tmp_path, cfg)
    first = min(m.t_mono_ns for m in report.stats.markers if m.kind == "gunshot")
    assert first > (pre + 1) * S, "the example's first shot must come late enough for this test"
    rec = report.recordings[0]
    seg0 = rec["segments"][0]
    # the recording starts at a keyframe (1 s apart) at least `pre` seconds before the shot
    assert first - (pre + 1) * S - S // 30 <= seg0["start_mono_ns"] <= first - pre * S
    with av.open(str(tmp_path / "recordings" / rec["recording"] / seg0["file"])) as c:
        n_before = sum(1 for f in c.decode(video=0) if f.time + seg0["start_mono_ns"] / S < first / S - 1e-6)
    assert n_before >= pre * 30


def test_cli_json_report(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bodycam.hw_sim.cli", "run", str(EXAMPLE), "--no-broker", "--json",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["frames"] == load_truth(truth_path_for(EXAMPLE)).video.frames
    assert report["score"]["precision"] == 1.0 and report["score"]["recall"] == 1.0
    assert report["gunshot_rules"] == {"flash": 6}  # every shot of the example heard with its flash seen
    assert report["mqtt"] is None
    assert report["x_realtime"] > 1 and report["inference_ms"]["p50"] > 0


def test_markers_arrive_at_a_subscriber_through_the_embedded_broker(tmp_path: Path) -> None:
    report = run_clip(SimOptions(clip=EXAMPLE, out=tmp_path, config=AppConfig(), broker="embedded"))
    sent = [m.id for m in report.stats.markers]
    assert sent and report.undelivered == 0
    assert {m.id for m in report.received} == set(sent)
    arrival = [m.id for m in report.received]
    assert sorted(dict.fromkeys(arrival), key=arrival.index) == sent, "in order per device"


def test_scenario_buttons_drive_the_state_machine(tmp_path: Path) -> None:
    clip = make_plain_clip(tmp_path / "plain.mp4", seconds=8, audio=True)
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps({"events": [
        {"t_s": 1.0, "event": "record"}, {"t_s": 2.0, "event": "marker"}, {"t_s": 3.0, "event": "record"},
        {"t_s": 5.0, "event": "holster_draw"}, {"t_s": 5.5, "event": "marker"}, {"t_s": 6.0, "event": "dismiss"}]}))
    cfg = AppConfig(recording=RecordingConfig(post_roll_s=1.0, pre_event_s=1.0))
    report = run(clip, tmp_path / "o", cfg, scenario=scenario)
    kinds = [m.kind for m in report.stats.markers]
    assert kinds == ["recording_start", "manual", "recording_stop_requested", "recording_stop", "recording_start",
                     "holster_draw", "manual", "dismissed", "recording_stop"]
    assert len(report.recordings) == 2
    times = [(m.kind, m.t_mono_ns) for m in report.stats.markers]
    assert [abs(t - want * S) <= S // 10 for (k, t), want in zip(
        [x for x in times if x[0] in ("manual", "dismissed")], (2.0, 5.5, 7.5), strict=True)] == [True] * 3
    # (dismissed: the marker button held 1.5 s from 6.0 s)


# -- the officer's controls (issue 10): nothing a button does stops a recording during a shooting ---------
class _Haptic:
    """Catches the scenario's simulated pins so a test can read the haptic motor's output."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from bodycam.hw_sim import gpio_sim

        self.inputs: list[gpio_sim.ScenarioInputs] = []
        real_init = gpio_sim.ScenarioInputs.__init__

        def init(inner: gpio_sim.ScenarioInputs, *a: object, **kw: object) -> None:
            real_init(inner, *a, **kw)  # type: ignore[arg-type]
            self.inputs.append(inner)

        monkeypatch.setattr(gpio_sim.ScenarioInputs, "__init__", init)

    def pulses_ms(self, after_s: float) -> list[int]:
        """Lengths of the haptic pulses that started after ``after_s`` (ms)."""
        (inputs,) = self.inputs
        cfg = inputs.config
        assert cfg.haptic_pin is not None
        on = inputs.pins.on_intervals(cfg.haptic_pin, cfg.haptic_active_high)
        return [round((end - start) / 1e6) for start, end in on if start >= after_s * S and end >= 0]

    def played(self, pattern: str, after_s: float) -> bool:
        """The haptic played ``pattern`` (indicators.HAPTIC_PATTERNS) first after ``after_s``; outputs
        change at frame times here (virtual time, 30 fps), so each pulse may last up to a frame longer."""
        from bodycam.device.hw.indicators import HAPTIC_PATTERNS

        want = HAPTIC_PATTERNS[pattern]  # type: ignore[index]
        got = self.pulses_ms(after_s)[: (len(want) + 1) // 2]
        return len(got) == (len(want) + 1) // 2 and all(
            w <= g <= w + 34 for g, w in zip(got, want[::2], strict=True))


def _scenario(tmp_path: Path, events: list[dict[str, object]]) -> Path:
    p = tmp_path / "scenario.json"
    p.write_text(json.dumps({"events": events}))
    return p


def test_reference_scenario_a_marker_press_during_a_shooting_never_stops_the_recording(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's scenario on the example clip: holster draw at 2 s, shots detected at 2.93 s and 3.03 s,
    a press of the marker button at 4 s (inside the 10 s dismiss window). Before the fix the firmware
    logged dismissed + recording_stop and footage after 4.17 s was not recorded."""
    haptic = _Haptic(monkeypatch)
    scenario = _scenario(tmp_path, [{"t_s": 2.0, "event": "holster_draw"}, {"t_s": 4.0, "event": "marker"}])
    report = run(EXAMPLE, tmp_path / "o", scenario=scenario)
    kinds = [m.kind for m in report.stats.markers]
    assert "dismissed" not in kinds and "dismiss_refused" not in kinds
    assert kinds[:5] == ["recording_start", "holster_draw", "gunshot", "gunshot", "manual"]
    assert kinds.count("gunshot") == 6  # every shot of the clip is in the one recording
    assert kinds[-1] == "recording_stop" and (report.stats.markers[-1].extra or {}).get("reason") == "end_of_stream"
    manual = report.stats.markers[4]
    assert abs(manual.t_mono_ns - 4 * S) < S // 15
    (rec,) = report.recordings
    assert rec["protected"]
    last_segment = rec["segments"][-1]
    assert last_segment["end_utc"] > "2026-01-01T00:00:19"  # footage to the end of the clip, not 4.17 s
    assert haptic.played("marker", 3.9)  # the marker tick


def test_the_dismiss_gesture_during_a_shooting_is_refused_with_a_marker_and_a_haptic_pattern(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    haptic = _Haptic(monkeypatch)
    scenario = _scenario(tmp_path, [{"t_s": 2.0, "event": "holster_draw"},
                                    {"t_s": 4.0, "event": "marker", "hold_s": 2.0}])
    report = run(EXAMPLE, tmp_path / "o", scenario=scenario)
    kinds = [m.kind for m in report.stats.markers]
    assert kinds[:5] == ["recording_start", "holster_draw", "gunshot", "gunshot", "dismiss_refused"]
    refused = report.stats.markers[4]
    assert refused.extra == {"reason": "shot_detected", "source": "button"}
    assert abs(refused.t_mono_ns - 5.5 * S) < S // 15  # when the hold reached dismiss_hold_s (1.5 s)
    assert "dismissed" not in kinds and kinds.count("recording_stop") == 1 and kinds[-1] == "recording_stop"
    assert (report.stats.markers[-1].extra or {}).get("reason") == "end_of_stream"
    assert haptic.played("refused", 5.4)  # the refusal pattern (three long buzzes)


def test_the_dismiss_gesture_stops_a_false_holster_start_and_keeps_its_footage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    haptic = _Haptic(monkeypatch)
    clip = make_plain_clip(tmp_path / "plain.mp4", seconds=8, audio=True)
    scenario = _scenario(tmp_path, [{"t_s": 1.0, "event": "holster_draw"}, {"t_s": 3.0, "event": "dismiss"}])
    report = run(clip, tmp_path / "o", AppConfig(recording=RecordingConfig(pre_event_s=1.0)), scenario=scenario)
    assert [m.kind for m in report.stats.markers] == ["recording_start", "holster_draw", "dismissed",
                                                      "recording_stop"]
    assert report.stats.markers[-1].extra == {"reason": "dismissed"}
    (rec,) = report.recordings
    folder = tmp_path / "o" / "recordings" / rec["recording"]
    segments = sorted(folder.glob("segment-*.mp4"))
    assert segments and all(p.stat().st_size > 0 for p in segments)  # dismissed, not deleted
    assert [json.loads(line)["kind"] for line in (folder / "markers.jsonl").read_text().splitlines()] == [
        "recording_start", "holster_draw", "dismissed", "recording_stop"]
    assert haptic.played("dismissed", 4.4)  # the confirmation: two short buzzes
    assert len(haptic.pulses_ms(4.4)) == 2


# -- bad input ---------------------------------------------------------------------------------
def test_truncated_clip_keeps_markers_and_names_the_offset(tmp_path: Path) -> None:
    fast = tmp_path / "fast.mp4"
    with av.open(str(EXAMPLE)) as inp, av.open(str(fast), "w", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for pkt in inp.demux():
            if pkt.dts is None:
                continue
            pkt.stream = streams[pkt.stream.index]
            out.mux(pkt)
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    full = run(EXAMPLE, tmp_path / "full")
    report = run(cut, tmp_path / "o")
    assert report.error is not None and "byte offset" in report.error and "truncated" in report.error
    assert 0 < report.stats.frames < full.stats.frames
    last_t = report.stats.last_t_ns
    before = [m.t_mono_ns for m in full.stats.markers if m.kind == "gunshot" and m.t_mono_ns < last_t - S // 10]
    got = [m.t_mono_ns for m in report.stats.markers if m.kind == "gunshot"]
    assert before and got[: len(before)] == before, "markers up to the damage are kept"
    for r in report.recordings:
        assert r["complete"] is True


def test_clip_without_video_is_a_clear_error(tmp_path: Path) -> None:
    audio_only = tmp_path / "audio.m4a"
    with av.open(str(EXAMPLE)) as inp, av.open(str(audio_only), "w", format="mp4") as out:
        a = out.add_stream_from_template(inp.streams.audio[0])
        for pkt in inp.demux(inp.streams.audio[0]):
            if pkt.dts is None:
                continue
            pkt.stream = a
            out.mux(pkt)
    with pytest.raises(ClipError, match="no video stream"):
        run(audio_only, tmp_path / "o")


def test_garbage_file_and_missing_clip(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(ClipError, match="not a readable video file"):
        run(junk, tmp_path / "o")
    with pytest.raises(ClipError, match="no such clip"):
        run(tmp_path / "missing.mp4", tmp_path / "o")


def test_clip_without_audio_and_with_variable_frame_rate(tmp_path: Path) -> None:
    times = [0, 33, 66, 150, 183, 300, 333, 500, 533, 566, 900, 933, 966, 1300, 1333, 1366, 1400, 1433]
    clip = make_plain_clip(tmp_path / "vfr.mp4", audio=False, frame_times_ms=times)
    scenario = tmp_path / "s.json"
    # buttons are sampled at frame times: press where frames are dense enough to see it
    scenario.write_text(json.dumps({"events": [{"t_s": 0.5, "event": "marker"}]}))
    report = run(clip, tmp_path / "o", scenario=scenario)
    assert report.error is None and report.stats.frames == len(times)
    assert report.stats.last_t_ns == 1433 * 1_000_000
    (marker,) = report.stats.markers
    assert marker.kind == "manual" and 500 * 1_000_000 <= marker.t_mono_ns <= 566 * 1_000_000


def test_model_whose_sidecar_does_not_match(tmp_path: Path) -> None:
    model = tmp_path / "m.tflite"
    shutil.copy(default_model_path(), model)
    side = json.loads(default_model_path().with_suffix(".json").read_text())
    side["sha256"] = "0" * 64
    model.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match="does not match its sidecar"):
        run(EXAMPLE, tmp_path / "o", model=model)
    side = json.loads(default_model_path().with_suffix(".json").read_text())
    side["input"]["shape"][1] += 2
    side["input"]["height"] += 2
    model.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match="shape"):
        run(EXAMPLE, tmp_path / "o", model=model)


def test_unwritable_data_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="cannot create the output directory"):
        run(EXAMPLE, blocker / "out")


def test_disk_that_fills_during_a_run(tmp_path: Path, tiny_disk: Path) -> None:
    cfg = AppConfig()
    cfg = replace(cfg, retention=replace(cfg.retention, min_free_mb=0.0))
    report = run_clip(SimOptions(clip=EXAMPLE, out=tiny_disk / "run", config=cfg, broker=None,
                                 state_dir=tmp_path / "state"))
    full = run(EXAMPLE, tmp_path / "full")
    assert report.storage_errors, "the full disk is reported"
    assert any("full" in e or "No space" in e or "cannot" in e for e in report.storage_errors)
    # no marker is lost: the loop kept running after the footage failed
    assert [m.kind for m in report.stats.markers if m.kind == "gunshot"] == \
           [m.kind for m in full.stats.markers if m.kind == "gunshot"]
    assert report.stats.frames == full.stats.frames
    for r in report.recordings:
        d = tiny_disk / "run" / "recordings" / r["recording"]
        assert (d / "manifest.json").exists()
    proc = subprocess.run([sys.executable, "-m", "bodycam.hw_sim.cli", "run", str(EXAMPLE), "--no-broker",
                           "--out", str(tiny_disk / "run2")], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "error" in proc.stderr


def test_realtime_mode_paces_frames_at_the_clip_rate(tmp_path: Path) -> None:
    import time

    clip = make_plain_clip(tmp_path / "c.mp4", seconds=2, audio=False)
    t0 = time.monotonic()
    report = run(clip, tmp_path / "o", realtime=True)
    elapsed = time.monotonic() - t0
    assert report.stats.frames == 60
    assert elapsed >= 1.9, f"a 2 s clip took {elapsed:.2f} s in real time mode"


def test_markers_carry_the_gnss_fix_read_from_a_real_pty(example_run: SimReport) -> None:
    from bodycam.hw_sim.sim_run import DEFAULT_ROUTE

    markers = example_run.stats.markers
    assert markers
    for m in markers:
        assert m.location is not None, f"{m.kind} at {m.t_mono_ns} has no location"
        assert m.location.fix == "3d" and 0 <= m.location.age_s <= 1.5
        assert abs(m.location.lat - DEFAULT_ROUTE[0][1]) < 0.01 and abs(m.location.lon - DEFAULT_ROUTE[0][2]) < 0.01


def test_every_marker_says_whether_the_wall_clock_was_synced(example_run: SimReport) -> None:
    """The simulated wall clock is checked against the simulated GNSS time (no NTP in the simulator)."""
    markers = example_run.stats.markers
    assert markers
    for m in markers:
        clock = m.clock
        assert isinstance(clock, dict) and set(clock) == {"synced", "source", "offset_ms"}
        if m.t_mono_ns >= 2 * S:  # after the receiver's first epochs
            offset = clock["offset_ms"]
            assert clock["synced"] is True and clock["source"] == "gnss"
            assert isinstance(offset, float) and abs(offset) < 100.0


def test_the_incident_rule_on_the_example_marks_every_shot_and_one_door_slam(tmp_path: Path) -> None:
    """What the incident rule (off by default) costs on the example: every shot is already marked by
    the per-shot rules; with `incident_s = 8` the door slam 2.5 s after the third shot (scored 0.81 by
    the audio model, about as loud as that shot) is marked too. docs/model.md gives the held-out trade."""
    from bodycam.device.detect.fusion import FusionConfig

    truth = load_truth(truth_path_for(EXAMPLE))
    rep = run(EXAMPLE, tmp_path, replace(AppConfig(), fusion=FusionConfig(incident_s=8.0)))
    gunshots = [m for m in rep.stats.markers if m.kind == "gunshot"]
    sc = score_events([s.frame for s in truth.shots], [int(m.extra["frame_index"]) for m in gunshots  # type: ignore[index, arg-type]
                                                      if m.extra is not None])
    assert sc.fn == 0 and sc.fp == 1
    (extra,) = [m for m in gunshots if int(m.extra["frame_index"]) in sc.unmatched_markers]  # type: ignore[index, arg-type]
    assert extra.extra is not None and extra.extra["rule"] == "incident"
    slam = [d for d in truth.distractors if d.kind == "door_slam"]
    assert any(d.start_frame - 2 <= int(extra.extra["frame_index"]) <= d.end_frame for d in slam)  # type: ignore[arg-type]


def _corrupting(kind: bytes, fields: dict[int, Callable[[str], str] | str]) -> Callable[..., list[bytes]]:
    """The simulator's epochs with some fields of one sentence type rewritten (checksum recomputed: the
    receiver's own checksum covers a value that was wrong before it was sent, or bits the XOR misses)."""
    from bodycam.device.hw.gnss import nmea_sentence
    from bodycam.hw_sim import gnss_sim

    original = gnss_sim.epoch_sentences

    def epochs(utc_ns: int, point: object, **kw: object) -> list[bytes]:
        out = []
        for s in original(utc_ns, point, **kw):  # type: ignore[arg-type]
            if kind in s and point is not None:
                f = s[1 : s.index(b"*")].decode().split(",")
                for i, value in fields.items():
                    f[i] = value(f[i]) if callable(value) else value
                s = nmea_sentence(",".join(f))
            out.append(s)
        return out

    return epochs


def _assert_shots_marked_and_protected(report: SimReport) -> list[Marker]:
    assert report.error is None
    kinds = [m.kind for m in report.stats.markers]
    assert kinds.count("gunshot") >= 1 and kinds[-1] == "recording_stop", kinds
    shots = [m for m in report.stats.markers if m.kind == "gunshot"]
    rec_dir = report.out / "recordings" / shots[0].media.recording  # type: ignore[union-attr]
    manifest = json.loads((rec_dir / "manifest.json").read_text())
    assert manifest["protected"] is True and manifest["complete"] is True
    tagged = [json.loads(line)["kind"] for line in (rec_dir / "markers.jsonl").read_text().splitlines()]
    assert tagged.count("gunshot") == kinds.count("gunshot")
    return shots


def test_a_receiver_reporting_impossible_fixes_and_a_1970_date_costs_no_shot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The firmware's own LocationTracker on a real pty: every GGA says lat 92 and alt NaN, every RMC says
    1970. The shots are still marked, with the RMC's (sound) position, and the footage is protected."""
    from bodycam.hw_sim import gnss_sim

    gga = _corrupting(b"GGA,", {2: lambda v: "92" + v[2:], 9: "nan"})
    rmc_1970 = _corrupting(b"RMC,", {9: lambda v: v[:4] + "70"})
    monkeypatch.setattr(gnss_sim, "epoch_sentences", lambda u, p, **kw: [
        r if b"RMC," in r else g for r, g in zip(rmc_1970(u, p, **kw), gga(u, p, **kw), strict=True)])
    report = run(EXAMPLE, tmp_path)
    shots = _assert_shots_marked_and_protected(report)
    from bodycam.hw_sim.sim_run import DEFAULT_ROUTE

    for m in report.stats.markers:
        assert m.clock == {"synced": False, "source": "none", "offset_ms": None}  # 1970 judges no clock
        assert m.location is None or abs(m.location.lat - DEFAULT_ROUTE[0][1]) < 0.01
    assert any(m.location is not None for m in shots)


def test_a_location_or_clock_part_that_fails_is_left_out_of_the_marker_not_the_marker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Defence in depth in App._emit: the location part raises, the clock part gives an offset no marker can
    carry; every marker is still recorded (without them), the problem is logged once per part."""
    from bodycam.device.errors import MarkerError
    from bodycam.device.hw.clock_sync import ClockSync
    from bodycam.hw_sim import sim_run

    def broken_location(self: object) -> object:
        raise MarkerError("location.lat: 92.2 is outside -90..90")

    monkeypatch.setattr(sim_run._SimGnss, "location", broken_location)
    monkeypatch.setattr(ClockSync, "__call__", lambda self: {"synced": False, "source": "none", "offset_ms": 1e15})
    with caplog.at_level(logging.ERROR, logger="bodycam.device.app"):
        report = run(EXAMPLE, tmp_path)
    _assert_shots_marked_and_protected(report)
    assert all(m.location is None and m.clock is None for m in report.stats.markers)
    left_out = [r.getMessage() for r in caplog.records if "markers go out without" in r.getMessage()]
    assert len(left_out) == 2 and any("location" in s for s in left_out) and any("clock" in s for s in left_out)
