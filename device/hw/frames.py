"""Frames and encoded packets as the firmware sees them, and the Camera protocol.

A camera (the picamera2 adapter on a Pi, a clip file in the simulator) gives the
loop one :class:`Frame` per captured frame: its index, its **sensor timestamp**
(picamera2 ``SensorTimestamp``; the PTS for files) and a low-resolution RGB
image for inference. Alongside, it hands over the encoded main stream as
:class:`EncodedPacket` objects so footage can be buffered and written without
re-encoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One encoded video or audio packet of the main stream.

    ``payload`` is whatever the footage writer of this camera understands (an
    ``av.Packet`` for PyAV-based cameras); ``t_ns`` is its presentation time on
    the sensor timeline.
    """

    stream: Literal["video", "audio"]
    t_ns: int
    keyframe: bool
    size: int
    payload: Any = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame: sensor time and the low-resolution image for inference."""

    index: int
    t_ns: int
    lores: npt.NDArray[np.uint8]  # (H, W, 3) RGB, the model's input size
    packets: tuple[EncodedPacket, ...] = ()  # encoded main-stream packets that arrived with this frame


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the footage writer needs to know about the camera's encoded streams."""

    width: int
    height: int
    fps: float
    has_audio: bool
    template: Any = field(default=None, repr=False, compare=False)  # writer-specific stream templates


class Camera(Protocol):
    """A source of frames with sensor timestamps and encoded footage."""

    def start(self) -> StreamInfo:
        """Start capturing; returns the encoded stream description."""
        ...

    def read(self) -> Frame | None:
        """Block for the next frame; ``None`` at the end of the stream."""
        ...

    def stop(self) -> None:
        """Stop capturing and release the device."""
        ...
