"""Build settings of a model (recorded in the sidecar's provenance)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bodycam.device.detect.preprocess import InputSpec

INPUT_SCALE = 1.0 / 255.0
INPUT_ZERO_POINT = -128


@dataclass(frozen=True)
class BuildConfig:
    width: int = 160
    height: int = 90
    frames: int = 4
    colour: str = "rgb"
    target_offset: int = 1
    epochs: int = 14
    steps_per_epoch: int = 150
    batch: int = 64
    learning_rate: float = 2e-3
    seed: int = 1
    near_weight: float = 0.3
    filters: tuple[int, ...] = field(default=(16, 32, 48, 64))
    val_windows: int = 2048  # balanced fixed sample of validation windows for the val loss

    def input_spec(self) -> InputSpec:
        spec = InputSpec(
            width=self.width,
            height=self.height,
            frames=self.frames,
            colour="rgb" if self.colour == "rgb" else "gray",
            scale=INPUT_SCALE,
            zero_point=INPUT_ZERO_POINT,
            target_offset=self.target_offset,
        )
        spec.check()
        return spec

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["filters"] = list(self.filters)
        return d
