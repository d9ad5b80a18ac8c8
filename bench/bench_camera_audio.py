"""The camera's loop with sound (issue 12): per-frame cost by stage with audio, fusion and AAC footage.

Runs the one assembly over the camera path: `PiCamera` on the fake picamera2 (its H.264 encoder is
libx264 inside `capture_request`, i.e. in the *read* stage, which on the Pi is the hardware encoder
on its own thread), the simulated microphone playing a generated clip's sound on the camera's
sensor clock, the shipped video and audio models, the `fused` policy, and the camera's footage
with sound (the loop's blocks encoded to AAC and muxed through `CircularOutput2`/`PyavOutput`);
a recording is started by a record press half-way, so both the pre-event buffer and segment
writing are measured. Prints medians over runs:

* ms per frame per stage (median frame and mean frame): tagging, audio, preprocess, invoke,
  events, housekeeping; the audio stage split into microphone read (in the simulator the clip's
  AAC decode + resample; on the camera a queue pop), detector (features + model) and footage
  sound (AAC encode + mux);
* the whole loop per frame excluding read (= decode/capture), as the sum of stage means (audio
  work comes in bursts, so the mean is the honest figure) and of stage medians, and the same
  without the simulator's microphone decode;
* the same loop as CPU time of the loop's thread (``time.thread_time_ns`` around each step: the
  machine is shared, and preemption inflates the stages' wall-clock means);
* the extra CPU of AAC encoding per second of footage: ``AacTrack`` alone over the clip's sound
  (process CPU time / seconds of sound), and the loop's footage-sound share per second.

    nice -n 15 python bench/bench_camera_audio.py [--seconds 30] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bodycam.device.assemble import HardwareParts, assemble, model_spec
from bodycam.device.clock import SystemClock
from bodycam.device.config import AppConfig
from bodycam.device.detect.fusion import FusionConfig
from bodycam.device.footage.aac_track import AacTrack
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.hw.config import CameraConfig
from bodycam.device.hw.inputs import InputEvent
from bodycam.device.hw.picamera_adapter import PiCamera
from bodycam.device.identity import Signer
from bodycam.hw_sim.fake_picamera2 import FakePicamera2Module, Picamera2
from bodycam.hw_sim.sim_microphone import ClipMicrophone

STAGES = ("tagging", "audio", "preprocess", "invoke", "events", "housekeeping")


class RecordPress:
    """One record press after frame ``at_frame`` (the loop polls the inputs once a frame)."""

    def __init__(self, at_frame: int, fps: float) -> None:
        self.at_frame, self.fps, self.polls = at_frame, fps, 0

    def poll(self) -> list[InputEvent]:
        self.polls += 1
        if self.polls == self.at_frame + 1:
            return [InputEvent("record", Picamera2.boot_ns + round(self.at_frame / self.fps * 1e9))]
        return []


def aac_cpu_per_second(clip: Path) -> tuple[float, float]:
    """(CPU ms per second of sound, seconds of sound) for AacTrack alone over the clip's sound."""
    mic = ClipMicrophone(clip)
    assert mic.start()
    blocks = mic.read(10**15)
    mic.close()
    seconds = sum(len(b.samples) for b in blocks) / 16000
    best = float("inf")
    for _ in range(3):
        track = AacTrack()
        c0 = time.process_time()
        for b in blocks:
            track.encode(b)
        track.flush()
        best = min(best, time.process_time() - c0)
        track.close()
    return best * 1000 / seconds, seconds


def one_run(clip: Path, frames: int, out: Path) -> dict[str, float]:
    base = AppConfig()
    cfg = replace(base, device=replace(base.device, data_dir=str(out)), mqtt=replace(base.mqtt, enabled=False),
                  recording=RecordingConfig(pre_event_s=10.0, segment_s=10.0), fusion=FusionConfig(policy="fused"))
    spec = model_spec(cfg).input
    cam_cfg = CameraConfig(main_size=(640, 480), lores_size=(spec.width, spec.height), framerate=30.0, iperiod=30)
    cam = PiCamera(cam_cfg, segment_s=10.0, pre_event_s=10.0, picamera2_module=FakePicamera2Module())
    mic = ClipMicrophone(clip, origin_ns=Picamera2.boot_ns)
    parts = HardwareParts(camera=cam, clock=SystemClock(), footage=cam, footage_sound=cam, microphone=mic,
                          inputs=RecordPress(frames // 2, 30.0))
    step_cpu: list[int] = []
    sound_cpu: list[int] = []
    with assemble(cfg, parts, signer=Signer.generate()) as fw:
        # CPU time of the loop's thread (immune to the other sessions' load, unlike the stages' wall time)
        step, write_sound = fw.app.step, cam.write_sound

        def timed_step(frame: Any, read_ns: int = 0) -> None:
            c0 = time.thread_time_ns()
            step(frame, read_ns=read_ns)
            step_cpu.append(time.thread_time_ns() - c0)

        def timed_sound(blocks: Any) -> None:
            c0 = time.thread_time_ns()
            write_sound(blocks)
            sound_cpu.append(time.thread_time_ns() - c0)

        fw.app.step = timed_step  # type: ignore[method-assign]
        cam.write_sound = timed_sound  # type: ignore[method-assign]
        st = fw.app.run(max_frames=frames)
        sound = fw.app.audio.sound_state
    assert sound == "aac", sound
    n = max(1, st.frames)
    row = {s: statistics.median(st.stage_ns[s]) / 1e6 for s in STAGES}
    row |= {f"{s}_mean": statistics.fmean(st.stage_ns[s]) / 1e6 for s in STAGES}
    row["read_mean"] = statistics.fmean(st.stage_ns["read"]) / 1e6
    row["audio_read_mean"] = st.audio_read_ns / n / 1e6
    row["audio_detect_mean"] = st.audio_detect_ns / n / 1e6
    row["audio_encode_mean"] = st.audio_encode_ns / n / 1e6
    row["loop_median"] = sum(row[s] for s in STAGES)
    row["loop_mean"] = sum(row[f"{s}_mean"] for s in STAGES)
    row["loop_mean_camera"] = row["loop_mean"] - row["audio_read_mean"]  # the simulator's AAC decode out
    row["sound_ms_per_s"] = st.audio_encode_ns / 1e6 / max(1e-9, st.media_s)
    row["markers"] = float(len(st.markers))
    row["cpu_step_median"] = statistics.median(step_cpu) / 1e6
    row["cpu_step_mean"] = statistics.fmean(step_cpu) / 1e6
    row["cpu_sound_ms_per_s"] = sum(sound_cpu) / 1e6 / max(1e-9, st.media_s)
    return row


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clip", type=Path, default=None, help="a clip with sound (default: generated)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip
        if clip is None:
            clip = Path(tmp) / "bench.mp4"
            print(f"generating a {args.seconds:.0f} s clip with sound ...", flush=True)
            subprocess.run([sys.executable, "-m", "bodycam.hw_sim.cli", "make-clip", str(clip), "--seconds",
                            str(args.seconds), "--size", "640x360", "--fps", "30", "--seed", "7", "--shots", "6",
                            "--scene", "street"], check=True, stdout=subprocess.DEVNULL)
        aac_ms, aac_s = aac_cpu_per_second(clip)
        print(f"AacTrack alone: {aac_ms:.2f} ms CPU per second of sound ({aac_s:.1f} s of 16 kHz mono, best of 3)")
        frames = int(args.seconds * 30)
        rows = []
        for i in range(args.runs):
            row = one_run(clip, frames, Path(tmp) / f"run{i}")
            rows.append(row)
            print(f"run {i}: loop excl. read {row['loop_mean']:.3f} ms/frame mean ({row['loop_median']:.3f} sum of "
                  f"medians), footage sound {row['audio_encode_mean']:.3f} ms/frame, {row['markers']:.0f} markers",
                  flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"\nmedians over {args.runs} runs of {frames} frames (ms per frame: median frame, mean frame):")
    print(f"  {'read':<12s} -      {med['read_mean']:.3f}  (fake camera: libx264 encode + lores; excluded)")
    for s in STAGES:
        print(f"  {s:<12s} {med[s]:.3f}  {med[s + '_mean']:.3f}")
    print(f"    audio split (mean): microphone read {med['audio_read_mean']:.3f} (simulator: AAC decode + resample; "
          f"camera: a queue pop), detector {med['audio_detect_mean']:.3f}, footage sound (AAC encode + mux) "
          f"{med['audio_encode_mean']:.3f}")
    print(f"  loop excl. read: mean {med['loop_mean']:.3f} ms, sum of medians {med['loop_median']:.3f} ms "
          f"(budget 2.5); without the simulator's microphone decode {med['loop_mean_camera']:.3f} ms")
    print(f"  loop excl. read, CPU time of the loop's thread: median {med['cpu_step_median']:.3f} ms, mean "
          f"{med['cpu_step_mean']:.3f} ms per frame (the simulator's microphone decode included)")
    print(f"  AAC for the footage: {aac_ms:.2f} ms CPU per second of footage alone ({aac_ms / 10:.2f} % of a core); "
          f"in the loop (encode + mux) {med['cpu_sound_ms_per_s']:.2f} ms CPU ({med['sound_ms_per_s']:.2f} ms wall) "
          "per second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
