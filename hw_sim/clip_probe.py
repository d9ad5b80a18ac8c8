"""Check that a clip can be played before a run creates anything for it.

``bodycam-sim run README.md`` used to print a header "(0.0 s)", create ``runs/README/state/
outbox.sqlite`` and then fail with ``[Errno 1094995529]`` (FFmpeg's AVERROR_INVALIDDATA).
:func:`probe_clip` opens the file, finds its video stream and decodes its first frame, and
says in plain words what is wrong (:class:`~bodycam.device.errors.ClipError`, no errno).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bodycam.device.errors import ClipError


@dataclass(frozen=True)
class ClipSummary:
    duration_s: float  # 0.0 when the container does not say
    width: int
    height: int
    fps: float
    has_audio: bool


def _plain(exc: BaseException) -> str:
    """An FFmpeg/OS error as words: its message without the errno number."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip().rstrip(".")


def probe_clip(path: str | os.PathLike[str]) -> ClipSummary:
    """Open ``path`` and decode its first video frame; :class:`ClipError` in plain words otherwise."""
    import av

    p = Path(path)
    if not p.exists():
        raise ClipError(f"{p}: no such clip")
    if not p.is_file():
        raise ClipError(f"{p}: not a file (a video clip is needed: MP4, MKV or MOV)")
    try:
        container: Any = av.open(str(p))
    except av.error.InvalidDataError as exc:
        raise ClipError(f"{p}: not a readable video file ({_plain(exc).lower()}); "
                        "a clip is an MP4, MKV or MOV file with H.264 video") from exc
    except (av.error.FFmpegError, OSError) as exc:
        hint = " (a truncated MP4 whose index was never written?)" if p.suffix.lower() in (".mp4", ".mov") else ""
        raise ClipError(f"{p}: not a readable video file{hint} ({_plain(exc).lower()})") from exc
    with container:
        if not container.streams.video:
            raise ClipError(f"{p}: the file has no video stream")
        video = container.streams.video[0]
        try:
            first = next(iter(container.decode(video=0)), None)
        except (av.error.FFmpegError, OSError) as exc:
            raise ClipError(f"{p}: the video cannot be decoded: {_plain(exc).lower()}") from exc
        if first is None:
            raise ClipError(f"{p}: the video stream has no frames")
        rate = video.average_rate or video.guessed_rate or 30
        duration = float(container.duration) / 1e6 if container.duration else 0.0
        return ClipSummary(duration_s=duration, width=int(first.width), height=int(first.height), fps=float(rate),
                           has_audio=bool(container.streams.audio))
