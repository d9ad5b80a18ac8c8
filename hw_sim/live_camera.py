"""A clip played as a *live* camera: real-time pacing, frames stamped on the system clock.

``bodycam-sim run`` replays a clip on its own timeline with a virtual clock. To run the
firmware exactly as systemd does (``device.firmware.run_firmware`` with the system
clock, watchdog and signals), this camera instead paces frames at the clip's rate,
stamps each with ``clock.monotonic_ns()`` at delivery (as picamera2's
``SensorTimestamp`` would be), loops the clip if asked, and can simulate a camera that
hangs (``stall_after_frames``), which must stop the watchdog pings.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from bodycam.device.clock import Clock
from bodycam.device.hw.frames import Frame, StreamInfo
from bodycam.hw_sim.clip_camera import ClipCamera


class LiveClipCamera:
    def __init__(self, path: str | os.PathLike[str], lores_size: tuple[int, int], clock: Clock, *,
                 loop: bool = False, stall_after_frames: int | None = None) -> None:
        self.path = Path(path)
        self.lores_size = lores_size
        self.clock = clock
        self.loop = loop
        self.stall_after_frames = stall_after_frames
        self._inner: ClipCamera | None = None
        self._index = 0
        self._next_due: int | None = None
        self._period_ns = 33_333_333
        self._stop = threading.Event()

    def start(self) -> StreamInfo:
        self._inner = ClipCamera(self.path, self.lores_size)
        info = self._inner.start()
        self._period_ns = round(1e9 / info.fps) if info.fps > 0 else 33_333_333
        return info

    def read(self) -> Frame | None:
        assert self._inner is not None, "start() first"
        if self.stall_after_frames is not None and self._index >= self.stall_after_frames:
            self._stop.wait()  # a hung camera: read() never returns
            return None
        frame = self._inner.read()
        if frame is None and self.loop:
            self._inner.stop()
            self._inner = ClipCamera(self.path, self.lores_size)
            self._inner.start()
            frame = self._inner.read()
        if frame is None:
            return None
        now = self.clock.monotonic_ns()
        if self._next_due is not None and now < self._next_due:
            self.clock.sleep((self._next_due - now) / 1e9)
            now = self.clock.monotonic_ns()
        self._next_due = max(now, self._next_due or now) + self._period_ns
        self._index += 1
        # recording of looped clips is not meaningful: packets are left out (footage is not the point)
        return Frame(self._index - 1, now, frame.lores, ())

    def stop(self) -> None:
        self._stop.set()
        if self._inner is not None:
            self._inner.stop()
            self._inner = None
