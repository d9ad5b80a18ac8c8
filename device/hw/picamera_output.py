"""Footage files on the picamera2 path: crash-safe segments cut at keyframes, errors surfaced.

:class:`SegmentedOutput` is a picamera2 *output* (the duck-typed ``Output`` interface:
``start``/``stop``/``outputframe``/``_add_stream``) placed under the ``CircularOutput2``
pre-event buffer. It writes ``path_for(0)``, ``path_for(1)``, ... through picamera2's
own ``PyavOutput`` as **fragmented MP4** (a fragment per keyframe, the header first), so a
power cut or SIGKILL leaves every finished fragment playable. It cuts a new file at the
first keyframe at least ``segment_s`` after the current one started, inside the output,
so no frame is lost at a boundary (closing and reopening the circular buffer's output
would drop everything up to the next keyframe). Timestamps restart at 0 in each file.

Durability: every ``fsync_s`` (at a keyframe, i.e. a fragment boundary) the file is
fsynced, so footage spends at most about one fragment plus ``fsync_s`` only in RAM
(page cache + PyAV's buffer) once it has left the pre-event buffer.

Sound: the AAC packets (``audio=True``, see ``device/footage/aac_track.py``) go into the file
open at their time. The loop encodes sound a little after the picture (the AAC encoder holds two
frames, 128 ms at 16 kHz), so when a segment is cut at a keyframe the old file stays open for the
audio stamped before the cut, until audio from after the cut arrives or the video is
``AUDIO_GRACE_US`` past it; audio later than that is dropped and counted (``late_audio``). Audio
before a file's first keyframe is not written (a file starts with its keyframe). The muxer waits
for the slower stream at most ``max_interleave_delta`` (1 s) before writing, so a microphone that
stops mid-recording does not keep the picture in RAM (libavformat's default is 10 s).

Encrypted at rest (``open_file``, ``footage/atrest.py``): each file is opened by ``open_file(path)``
and ``PyavOutput`` muxes into that file object; it is closed (sealing its final chunk) when its
output stops (``_files``, one per open segment: the current one and the one taking late audio).

Errors: ``PyavOutput`` swallows write errors unless it has an ``error_callback``; this
output sets one, records the first error (``error``), calls ``on_error`` and stops
writing. ``error`` is read by the frame loop (via the camera's ``footage_error()``),
so a full card raises the storage alarm at the next frame.

Threads: picamera2 calls ``outputframe`` from its encoder thread while the frame loop
calls ``start``/``stop`` and reads ``error``/``segments``. ``_lock`` guards the
current ``PyavOutput``, the segment list, ``_files`` and ``error``; ``outputframe`` holds it while
muxing, so ``stop`` never closes a file under a write in progress.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: libavformat options: a fragment per keyframe, the (empty) moov written with the first fragment, so
#: the file plays when cut short; delay_moov lets that moov carry an edit list for a track that starts
#: after 0 (the sound: without it the muxer moves the first AAC packet to 0, up to 64 ms early);
#: flush_packets hands each fragment to the kernel at once instead of keeping it in the I/O buffer;
#: max_interleave_delta: wait at most 1 s for the slower stream (a failed microphone) before writing
FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+delay_moov+default_base_moof", "flush_packets": "1",
                  "max_interleave_delta": "1000000"}
#: how long past a cut (video time) the previous file still takes audio stamped before the cut
AUDIO_GRACE_US = 500_000


@dataclass
class SegmentFile:
    path: Path
    first_us: int  # encoder timestamp of its first frame (from the recording's first keyframe)
    last_us: int
    frames: int = 0
    audio_packets: int = 0


class SegmentedOutput:
    """A picamera2 output writing fragmented-MP4 segments (see the module docstring)."""

    def __init__(self, pyav_output: Callable[..., Any], path_for: Callable[[int], Path], segment_s: float | None,
                 on_error: Callable[[str], None] | None = None, fsync_s: float = 1.0,
                 open_file: Callable[[Path], Any] | None = None) -> None:
        self._make = pyav_output
        self._open_file = open_file
        self._files: dict[Path, Any] = {}  # the encrypting file object of each open segment
        self._path_for = path_for
        self._segment_us = None if segment_s is None else round(segment_s * 1e6)
        self._fsync_us = round(fsync_s * 1e6)
        self._on_error = on_error
        self._lock = threading.Lock()
        self._out: Any = None
        self._closing: tuple[Any, SegmentFile, int] | None = None  # (output, segment, cut us): late audio
        self.late_audio = 0
        self._streams: list[tuple[Any, str, dict[str, Any]]] = []
        self.segments: list[SegmentFile] = []
        self.error: str | None = None
        self.recording = False
        self.needs_add_stream = True
        self._last_sync_us = 0

    # -- picamera2 Output interface -------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            self.recording = True

    def _add_stream(self, encoder_stream: Any, codec_name: str, **kwargs: Any) -> None:
        with self._lock:
            self._streams.append((encoder_stream, codec_name, kwargs))

    def outputframe(self, frame: bytes | None, keyframe: bool = True, timestamp: int | None = None,
                    packet: Any = None, audio: bool = False) -> None:
        ts = int(timestamp or 0)
        with self._lock:
            if not self.recording or self.error is not None:
                return
            if audio:
                self._audio(frame, ts, packet)
                return
            if self._closing is not None and ts - self._closing[2] >= AUDIO_GRACE_US:
                self._close_previous()
            if keyframe:
                seg = self.segments[-1] if self.segments else None
                if seg is None or (self._segment_us is not None and ts - seg.first_us >= self._segment_us):
                    self._open(ts)
                elif ts - self._last_sync_us >= self._fsync_us:
                    self._sync()
            if self._out is None:
                return  # before the first keyframe
            seg = self.segments[-1]
            self._out.outputframe(frame, keyframe, ts - seg.first_us, packet, False)
            seg.last_us = ts
            seg.frames += 1

    def _audio(self, frame: bytes | None, ts: int, packet: Any) -> None:
        closing = self._closing
        if closing is not None:
            out, seg, cut = closing
            if ts < cut:
                out.outputframe(frame, True, ts - seg.first_us, packet, True)
                seg.audio_packets += 1
                return
            self._close_previous()
        if self._out is None or not self.segments:
            return
        seg = self.segments[-1]
        if ts < seg.first_us:
            self.late_audio += 1  # before the file's first frame, and its predecessor is closed
            return
        self._out.outputframe(frame, True, ts - seg.first_us, packet, True)
        seg.audio_packets += 1

    def stop(self) -> None:
        with self._lock:
            self.recording = False
            self._close_previous()
            self._close()
            for path in list(self._files):  # after a failed write, its file is still open
                self._close_file(path)

    def outputtimestamp(self, timestamp: int | None) -> None:
        pass

    # -- files --------------------------------------------------------------------------
    def _open(self, ts: int) -> None:
        if self._out is not None and self.segments:
            self._close_previous()
            self._closing = (self._out, self.segments[-1], ts)  # stays open for audio before the cut
            self._out = None
        path = Path(self._path_for(len(self.segments)))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            target: Any = str(path)
            if self._open_file is not None:
                target = self._files[path] = self._open_file(path)
            out = self._make(target, format="mp4", options=dict(FRAGMENTED_MP4))
            out.error_callback = self._failed_write
            out.start()
            for stream, codec, kwargs in self._streams:
                out._add_stream(stream, codec, **kwargs)
        except Exception as exc:  # av.error.FFmpegError, OSError: cannot create the file
            self._fail(f"{path}: cannot create the segment ({exc})")
            return
        self._out = out
        self.segments.append(SegmentFile(path, ts, ts))
        self._last_sync_us = ts

    def _sync(self) -> None:
        seg = self.segments[-1]
        self._sync_file(seg.path)
        self._last_sync_us = seg.last_us

    def _sync_file(self, path: Path) -> None:
        try:
            f = self._files.get(path)
            if f is not None:
                f.flush()  # the sealed chunks (a partial 64 KiB chunk waits in RAM until it is full)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self._fail(f"{path}: fsync failed ({exc.strerror or exc})")

    def _close(self) -> None:
        out, self._out = self._out, None
        if out is not None:
            out.stop()
            if self.segments:
                self._close_file(self.segments[-1].path)
            self._sync()

    def _close_previous(self) -> None:
        closing, self._closing = self._closing, None
        if closing is not None:
            out, seg, _ = closing
            out.stop()
            self._close_file(seg.path)
            self._sync_file(seg.path)

    def _close_file(self, path: Path) -> None:
        f = self._files.pop(path, None)
        if f is not None:
            try:
                f.close()  # seals the final chunk
            except OSError as exc:
                self._fail(f"{path}: write failed ({exc.strerror or exc})")

    def _failed_write(self, exc: BaseException) -> None:
        # called by PyavOutput from inside outputframe (the lock is held by this thread)
        path = self.segments[-1].path if self.segments else "?"
        text = str(exc)
        if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space" in text:
            self._fail(f"{path}: the disk is full ({text})")
        else:
            self._fail(f"{path}: write failed ({text})")
        self._out = None

    def _fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
            log.error("camera footage: %s", message)
            if self._on_error is not None:
                self._on_error(message)
