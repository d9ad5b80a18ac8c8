"""Helpers for the model compiler tests: small clips made by the real footage generator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bodycam.hw_sim.cli import main as sim_main


def make_clip(out: Path, *, seconds: float, shots: int, seed: int, size: str = "320x180", scene: str = "random") -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    rc = sim_main(
        ["make-clip", str(out), "--seconds", str(seconds), "--shots", str(shots), "--seed", str(seed),
         "--size", size, "--scene", scene, "--quiet"]
    )  # fmt: skip
    assert rc == 0, f"bodycam-sim make-clip failed for {out}"
    return out


MakeClip = Callable[..., Path]


@pytest.fixture(scope="session")
def clip_maker() -> MakeClip:
    """``make_clip(out, seconds=, shots=, seed=, size=, scene=)`` with the real generator."""
    return make_clip


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 clips x 3 s at 320x180 with shots: 2 train, 1 val (seeds 71..73)."""
    root = tmp_path_factory.mktemp("tiny")
    make_clip(root / "train" / "a.mp4", seconds=3, shots=3, seed=71)
    make_clip(root / "train" / "b.mp4", seconds=3, shots=2, seed=72)
    make_clip(root / "val" / "c.mp4", seconds=3, shots=2, seed=73)
    return root
