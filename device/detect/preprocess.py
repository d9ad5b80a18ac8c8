"""Model input preparation, exactly as the model's sidecar describes it.

The detector looks at a *window* of the last N low-resolution frames stacked on
the channel axis: input shape ``(1, H, W, C*N)``, oldest frame first, int8 with
the quantisation from the sidecar (normally scale 1/255, zero point -128, so a
pixel value ``p`` becomes ``p - 128``: one XOR with 0x80 on the bytes). The same
class is used in training (``model_compile``) and in the firmware, so both
preprocess identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from bodycam.device.errors import ModelError


@dataclass(frozen=True)
class InputSpec:
    """The model input contract (the sidecar's ``input`` section)."""

    width: int
    height: int
    frames: int  # window length N
    colour: Literal["rgb", "gray"]
    scale: float
    zero_point: int
    target_offset: int  # the window's output refers to frame (newest - target_offset)

    @property
    def channels(self) -> int:
        return 3 if self.colour == "rgb" else 1

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (1, self.height, self.width, self.channels * self.frames)

    def check(self) -> None:
        if not (8 <= self.width <= 1024 and 8 <= self.height <= 1024):
            raise ModelError(f"model input size {self.width}x{self.height} is out of range")
        if not 1 <= self.frames <= 32:
            raise ModelError(f"model window of {self.frames} frames is out of range")
        if not 0 <= self.target_offset < self.frames:
            raise ModelError(f"target_offset {self.target_offset} must be within the {self.frames}-frame window")
        if abs(self.scale * 255.0 - 1.0) > 1e-3 or self.zero_point != -128:
            raise ModelError(
                f"input quantisation scale={self.scale} zero_point={self.zero_point} is not the supported "
                "1/255, -128 (pixel - 128)"
            )


def to_gray(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """BT.601 luma of an RGB image, as uint8 (integer arithmetic)."""
    r = rgb[..., 0].astype(np.uint16)
    g = rgb[..., 1].astype(np.uint16)
    b = rgb[..., 2].astype(np.uint16)
    y = (77 * r + 150 * g + 29 * b + 128) >> 8
    return y.astype(np.uint8)[..., None]


class FrameWindow:
    """A ring of the last N preprocessed frames, kept as one int8 model input.

    ``push`` writes the new frame into a preallocated buffer; ``tensor`` is the
    ``(1, H, W, C*N)`` int8 array to hand to the interpreter, ``ready`` is true
    once N frames have been pushed.
    """

    def __init__(self, spec: InputSpec) -> None:
        spec.check()
        self.spec = spec
        self._buf: npt.NDArray[np.int8] = np.zeros(spec.shape, dtype=np.int8)
        self._count = 0

    @property
    def ready(self) -> bool:
        return self._count >= self.spec.frames

    @property
    def tensor(self) -> npt.NDArray[np.int8]:
        return self._buf

    def reset(self) -> None:
        self._buf.fill(0)
        self._count = 0

    def push(self, lores: npt.NDArray[np.uint8]) -> None:
        spec = self.spec
        if lores.shape[:2] != (spec.height, spec.width):
            raise ModelError(
                f"frame of {lores.shape[1]}x{lores.shape[0]} does not match the model input "
                f"{spec.width}x{spec.height}"
            )
        img = lores if spec.colour == "rgb" else to_gray(lores)
        c = spec.channels
        buf = self._buf[0]
        if spec.frames > 1:
            buf[..., :-c] = buf[..., c:]
        # p - 128 in int8 is p XOR 0x80 reinterpreted: one pass, no float.
        np.bitwise_xor(img, np.uint8(0x80), out=buf[..., -c:].view(np.uint8))
        self._count += 1


def stack_windows(frames: npt.NDArray[np.uint8], spec: InputSpec) -> npt.NDArray[np.int8]:
    """All full windows of a clip's frames ``(T, H, W, 3)`` as ``(T-N+1, H, W, C*N)`` int8.

    Window ``k`` ends at frame ``k + N - 1`` and is labelled for frame
    ``k + N - 1 - target_offset``. Identical to pushing the frames through
    :class:`FrameWindow` one by one (tested), but vectorised for training.
    """
    spec.check()
    imgs = frames if spec.colour == "rgb" else to_gray(frames)
    q = (imgs ^ np.uint8(0x80)).view(np.int8)
    n = spec.frames
    count = q.shape[0] - n + 1
    if count <= 0:
        return np.zeros((0, spec.height, spec.width, spec.channels * n), dtype=np.int8)
    parts = [q[i : i + count] for i in range(n)]
    return np.concatenate(parts, axis=-1)
