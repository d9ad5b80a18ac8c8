"""Test tiers: unit (default), integration (runs in CI), hardware (real Pi only), slow (opt in)."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _on_raspberry_pi() -> bool:
    model = Path("/proc/device-tree/model")
    try:
        return platform.machine() in ("aarch64", "armv7l") and "Raspberry Pi" in model.read_text()
    except OSError:
        return False


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow (training)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_pi = _on_raspberry_pi()
    run_slow = bool(config.getoption("--run-slow"))
    for item in items:
        if "hardware" in item.keywords and not on_pi:
            item.add_marker(pytest.mark.skip(reason="needs a real Raspberry Pi bodycam"))
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow tier: pass --run-slow"))


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 600 kB tmpfs: writes fail with ENOSPC for real (needs root, as in CI)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def small_card(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``small_card("8m")``: a real tmpfs of that size, as a camera's card that fills (needs root, as in
    CI; without it the test fails: the full-card cases are features, not options). Unmounted after."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"card{len(mounted)}"
        mnt.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
        if proc.returncode != 0:
            pytest.fail(f"cannot mount a {size} tmpfs (this test needs root): {proc.stderr.decode().strip()}")
        mounted.append(mnt)
        return mnt

    try:
        yield mount
    finally:
        for mnt in mounted:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
