"""Writes encoded packets into MP4 segments without re-encoding (PyAV remux).

Each segment starts at a video keyframe, with timestamps rebased so that the
segment starts at zero; audio before the segment's first video frame is
dropped. Write errors (a full disk, a vanished directory) become
:class:`StorageError` naming the file.
"""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bodycam.device.errors import StorageError
from bodycam.device.hw.frames import EncodedPacket, StreamInfo

if TYPE_CHECKING:
    from bodycam.device.footage.atrest import EncryptingWriter, SegmentEncryption


class SegmentWriter:
    """One MP4 segment being written."""

    def __init__(self, path: Path, info: StreamInfo, encryption: SegmentEncryption | None = None) -> None:
        import av

        self.path = path
        self.first_t_ns: int | None = None
        self.last_t_ns: int | None = None
        self.frames = 0
        self.bytes_in = 0
        template = info.template or {}
        # encrypted at rest (footage/atrest.py): PyAV muxes into the encrypting file object
        self._file: EncryptingWriter | None = None
        try:
            if encryption is not None:
                self._file = encryption.open(path)
            # fragmented MP4: every keyframe starts a fragment, so a power cut loses at most
            # the fragment being written, not the whole segment (no index at the end to lose)
            self._out: Any = av.open(self._file if self._file is not None else str(path), "w", format="mp4",
                                     options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
        except (OSError, av.error.FFmpegError) as exc:
            raise StorageError(f"{path}: cannot create segment ({exc})") from exc
        self._streams: dict[str, Any] = {}
        if template.get("video") is not None:
            self._streams["video"] = self._out.add_stream_from_template(template["video"])
        if template.get("audio") is not None:
            self._streams["audio"] = self._out.add_stream_from_template(template["audio"])

    def write(self, packet: EncodedPacket) -> None:
        import av

        stream = self._streams.get(packet.stream)
        if stream is None:
            return
        if self.first_t_ns is None:
            if packet.stream != "video" or not packet.keyframe:
                return  # a segment must start with a video keyframe
            self.first_t_ns = packet.t_ns
        if packet.t_ns < self.first_t_ns:
            return
        pkt = packet.payload
        tb = pkt.time_base
        new_pts = (packet.t_ns - self.first_t_ns) * tb.denominator // (tb.numerator * 1_000_000_000)
        shift = int(pkt.pts) - new_pts
        pkt.pts = new_pts
        if pkt.dts is not None:
            pkt.dts = int(pkt.dts) - shift
        pkt.stream = stream
        try:
            self._out.mux(pkt)
        except (OSError, av.error.FFmpegError) as exc:
            raise StorageError(_describe(self.path, exc)) from exc
        self.bytes_in += packet.size
        if packet.stream == "video":
            self.frames += 1
            self.last_t_ns = packet.t_ns

    def close(self) -> None:
        """Finish the file (hashing is the caller's business, off the frame loop)."""
        import av

        try:
            try:
                self._out.close()
            finally:
                if self._file is not None:
                    self._file.close()
        except (OSError, av.error.FFmpegError) as exc:
            raise StorageError(_describe(self.path, exc)) from exc


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _describe(path: Path, exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"{path}: the disk is full"
    return f"{path}: write failed ({exc})"
