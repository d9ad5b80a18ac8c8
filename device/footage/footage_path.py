"""The footage path: one interface for footage the loop remuxes and footage the camera writes.

The :class:`~bodycam.device.footage.recorder.Recorder` talks to exactly one
:class:`FootagePath`, whichever camera it is:

* :class:`PacketFootage` (clips in the simulator, any camera that hands over encoded
  packets): the pre-event buffer in RAM and the segment files, remuxed with PyAV;
* :class:`CameraFootagePath` (picamera2): the camera encodes, buffers and writes the files
  itself (``start_recording`` / ``stop_recording`` / ``footage_error`` of
  :class:`CameraFootage`); this adapter tells the recording what it wrote.

Both report to the recording through :class:`SegmentSink` (``Recording`` implements it):
a segment opened (index, file, start time), its end time and frame count as they grow, and
when it is closed (then it is hashed). Both take ``start_recording(path_for, include_buffer,
sink)`` and ``stop_recording()``; write errors surface as :class:`StorageError` from
``feed`` or as ``footage_error()``. Only the timing differs: exact for remuxed packets,
approximate for the camera (picamera2 does not report where its buffer starts).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from bodycam.device.errors import StorageError
from bodycam.device.footage.atrest import SegmentEncryption, SegmentFile
from bodycam.device.footage.prebuffer import PreEventBuffer
from bodycam.device.footage.segment_writer import SegmentWriter
from bodycam.device.hw.frames import EncodedPacket, StreamInfo

PathFor = Callable[[int], Path]
#: opens a segment file for writing when footage is encrypted at rest (``SegmentEncryption.open``):
#: the camera muxes into the returned file object instead of opening the path itself
OpenFile = Callable[[Path], SegmentFile]


class SegmentSink(Protocol):
    """Where a footage path reports its segments (the recording's manifest)."""

    def segment_opened(self, index: int, file: str, start_ns: int) -> None: ...

    def segment_update(self, index: int, end_ns: int, frames: int) -> None: ...

    def segment_closed(self, index: int) -> None:
        """The file is complete on disk: hash it."""
        ...


class FootagePath(Protocol):
    exact_timing: bool

    def begin(self, info: StreamInfo) -> None:
        """The camera's streams are known (before the first ``feed``)."""
        ...

    def feed(self, packets: Iterable[EncodedPacket], t_ns: int | None) -> None:
        """Every frame: its encoded packets (possibly none) and its sensor time."""
        ...

    def start_recording(self, path_for: PathFor, include_buffer: bool, sink: SegmentSink, t_ns: int) -> None:
        """Start writing; ``t_ns``: the sensor time of the frame that started it."""
        ...

    def stop_recording(self) -> None:
        """Finish the files (every segment is reported closed)."""
        ...

    def abort(self) -> None:
        """After a write error: stop writing, keep and report what is on disk."""
        ...

    def footage_error(self) -> str | None: ...


class CameraFootage(Protocol):
    """A camera that encodes and writes footage itself (picamera2 with CircularOutput2)."""

    def start_recording(self, path_factory: Callable[[int], Path], include_buffer: bool = True,
                        open_file: OpenFile | None = None) -> None:
        """Write ``path_factory(0)``, ... (through ``open_file(path)``'s file object when given; a
        camera that cannot must refuse ``open_file`` rather than write plaintext)."""
        ...

    def stop_recording(self) -> None: ...

    def footage_error(self) -> str | None:
        """The first write error of the current recording (polled every frame), or None."""
        ...

    def footage_segments(self) -> list[tuple[int, int, int]]:
        """Per file written for the last recording: encoder time (us) of its first and last frame, frames."""
        ...


class PacketFootage:
    """Encoded packets -> pre-event buffer while idle, fragmented-MP4 segments while recording.

    Each segment starts at a video keyframe (timestamps rebased to it) and is cut at the first
    keyframe ``segment_s`` after its start. At a cut the old segment stays open briefly for
    the audio that B-frame muxing order delivers after the new keyframe, so no audio is lost.
    """

    exact_timing = True

    def __init__(self, pre_event_s: float, segment_s: float, encryption: SegmentEncryption | None = None) -> None:
        self.buffer = PreEventBuffer(pre_event_s)  # RAM only: never encrypted, never on the card
        self.encryption = encryption
        self.segment_ns = int(segment_s * 1e9)
        self.info: StreamInfo | None = None
        self._sink: SegmentSink | None = None
        self._path_for: PathFor | None = None
        self._writer: tuple[SegmentWriter, int] | None = None  # (writer, index)
        self._closing: tuple[SegmentWriter, int, int] | None = None  # (writer, index, cut time)
        self._next = 0
        self.error: str | None = None

    def begin(self, info: StreamInfo) -> None:
        self.info = info

    def feed(self, packets: Iterable[EncodedPacket], t_ns: int | None) -> None:
        if self._sink is None:
            for p in packets:
                self.buffer.push(p)
            return
        self._write_all(packets)

    def start_recording(self, path_for: PathFor, include_buffer: bool, sink: SegmentSink, t_ns: int) -> None:
        if self.info is None:
            raise RuntimeError("PacketFootage.begin() was not called")
        buffered = self.buffer.drain() if include_buffer else []
        self.buffer.clear()
        self._sink, self._path_for, self._next, self.error = sink, path_for, 0, None
        self._write_all(buffered)

    def stop_recording(self) -> None:
        try:
            if self._closing is not None:
                w, index, _ = self._closing
                self._closing = None
                self._finalize(w, index)
            if self._writer is not None:
                w, index = self._writer
                self._writer = None
                if self.info is not None and self.info.fps > 0 and self._sink is not None and w.last_t_ns is not None:
                    # the last segment lasts until its last frame ends
                    self._sink.segment_update(index, w.last_t_ns + round(1e9 / self.info.fps), w.frames)
                self._finalize(w, index)
        finally:
            self._sink = None

    def abort(self) -> None:
        for w, index in self._open_writers():
            with contextlib.suppress(StorageError):  # what reached the disk is still hashed
                w.close()
            if self._sink is not None:
                self._sink.segment_closed(index)
        self._sink = None

    def footage_error(self) -> str | None:
        return self.error if self._sink is not None else None

    # -- segments --------------------------------------------------------------------------
    def _open_writers(self) -> list[tuple[SegmentWriter, int]]:
        out = []
        if self._closing is not None:
            out.append((self._closing[0], self._closing[1]))
            self._closing = None
        if self._writer is not None:
            out.append(self._writer)
            self._writer = None
        return out

    def _write_all(self, packets: Iterable[EncodedPacket]) -> None:
        try:
            for p in packets:
                self._write(p)
        except StorageError as exc:
            self.error = str(exc)
            raise

    def _write(self, packet: EncodedPacket) -> None:
        sink = self._sink
        assert sink is not None
        closing = self._closing
        if closing is not None:
            w_old, old_index, until = closing
            if packet.stream == "audio" and packet.t_ns < until:
                w_old.write(packet)  # audio that belongs before the new segment's first frame
                return
            if packet.stream == "audio" or packet.t_ns >= until + 500_000_000:
                self._closing = None
                self._finalize(w_old, old_index)
        cur = self._writer
        if (cur is not None and packet.stream == "video" and packet.keyframe and cur[0].first_t_ns is not None
                and packet.t_ns - cur[0].first_t_ns >= self.segment_ns):
            # the old segment ends where the new one begins; it stays open a moment for the
            # audio that the muxing order (B-frames) delivers after the new keyframe
            sink.segment_update(cur[1], packet.t_ns, cur[0].frames)
            self._writer = None
            if self._closing is not None:  # a segment shorter than the audio grace period
                w_prev, prev_index, _ = self._closing
                self._finalize(w_prev, prev_index)
            self._closing = (cur[0], cur[1], packet.t_ns)
            cur = None
        if cur is None:
            if packet.stream != "video" or not packet.keyframe:
                return
            cur = self._open(packet.t_ns)
        w, index = cur
        w.write(packet)
        if packet.stream == "video":
            sink.segment_update(index, packet.t_ns, w.frames)

    def _open(self, t_ns: int) -> tuple[SegmentWriter, int]:
        assert self._path_for is not None and self._sink is not None and self.info is not None
        index = self._next
        path = self._path_for(index)
        writer = SegmentWriter(path, self.info, self.encryption)
        self._next += 1
        self._writer = (writer, index)
        self._sink.segment_opened(index, path.name, t_ns)
        return self._writer

    def _finalize(self, w: SegmentWriter, index: int) -> None:
        w.close()
        if self._sink is not None:
            self._sink.segment_closed(index)


class CameraFootagePath:
    """The camera's own footage (picamera2) as a :class:`FootagePath`.

    The camera writes ``path_for(0)``, ``path_for(1)``, ... itself (segments cut at keyframes
    on its encoder thread). The recording's segment 0 starts about ``pre_event_s`` before
    the start (the buffer's keyframe, which picamera2 does not report) and grows with every
    frame the loop sees; at the end the files are listed and each is reported closed.
    """

    exact_timing = False

    def __init__(self, camera: CameraFootage, pre_event_s: float, encryption: SegmentEncryption | None = None) -> None:
        self.camera = camera
        self.encryption = encryption
        self.pre_event_ns = int(pre_event_s * 1e9)
        self._sink: SegmentSink | None = None
        self._path_for: PathFor | None = None
        self._frames = 0
        self._end_ns = 0

    def begin(self, info: StreamInfo) -> None:
        pass

    def feed(self, packets: Iterable[EncodedPacket], t_ns: int | None) -> None:
        if self._sink is not None and t_ns is not None:
            self._frames += 1
            self._end_ns = t_ns
            self._sink.segment_update(0, t_ns, self._frames)

    def start_recording(self, path_for: PathFor, include_buffer: bool, sink: SegmentSink, t_ns: int) -> None:
        if self.encryption is not None:
            self.camera.start_recording(path_for, include_buffer, open_file=self.encryption.open)
        else:
            self.camera.start_recording(path_for, include_buffer)
        self._sink, self._path_for, self._frames = sink, path_for, 0
        start = t_ns - (self.pre_event_ns if include_buffer else 0)  # about where the buffer's keyframe was
        self._end_ns = start
        sink.segment_opened(0, path_for(0).name, start)

    def stop_recording(self) -> None:
        try:
            self.camera.stop_recording()
        finally:
            self._report_files()

    def abort(self) -> None:
        try:
            self.camera.stop_recording()  # the camera goes back to its pre-event buffer
        finally:
            self._report_files()

    def footage_error(self) -> str | None:
        return self.camera.footage_error()

    def _report_files(self) -> None:
        sink, path_for = self._sink, self._path_for
        self._sink = None
        if sink is None or path_for is None:
            return
        written = 0
        while path_for(written).exists():
            written += 1
        times = self.camera.footage_segments()
        if len(times) == written and written > 0:
            # the encoder's times are exact relative to each other; the last frame written is
            # the last frame the loop saw: anchor there
            last_us = times[-1][1]
            for k, (first_us, end_us, frames) in enumerate(times):
                sink.segment_opened(k, path_for(k).name, self._end_ns - (last_us - first_us) * 1000)
                sink.segment_update(k, self._end_ns - (last_us - end_us) * 1000, frames)
        else:
            for k in range(1, written):  # times not reported: all the camera says is the files
                sink.segment_opened(k, path_for(k).name, self._end_ns)
        for k in range(written):
            sink.segment_closed(k)
