"""Markers survive a full card: a real 8 MB tmpfs, the real simulator, a real Mosquitto and a base.

The outbox lives on the card next to the footage (as on the camera). Footage fills the card; the
outbox commits into its reserved space, and when even that is gone keeps markers in memory and
publishes them anyway. Every marker (each shot included) must reach base (base's real Consumer,
as ``bodycam-base listen`` runs it), before and after a restart on the still-full card, with no
sequence number used twice.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _base_standin import ConsumerBase, stored_ids
from _mqtt import Mosquitto, running_mosquitto

from bodycam.device.config import AppConfig
from bodycam.hw_sim.sim_run import SimOptions, SimReport, run_clip

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "range_demo.mp4"
DEV = AppConfig().device.id


@pytest.fixture
def card(small_card: Callable[[str], Path]) -> Path:
    return small_card("8m")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    yield from running_mosquitto(tmp_path)


def fill(card: Path, name: str, leave: int) -> None:
    """Write a file that leaves about ``leave`` bytes free on the card."""
    free = shutil.disk_usage(card).free
    with open(card / name, "wb") as fh:
        left = max(0, free - leave)
        while left > 0:
            n = min(left, 1 << 20)
            try:
                fh.write(b"\0" * n)
                fh.flush()
            except OSError:
                break
            left -= n


def run(card: Path, broker: Mosquitto, out: str) -> SimReport:
    cfg = AppConfig()
    cfg = replace(cfg, retention=replace(cfg.retention, min_free_mb=0.0),
                  outbox=replace(cfg.outbox, reserve_mb=1.0, keep_confirmed_mb=0.5),
                  mqtt=replace(cfg.mqtt, ack_timeout_s=2.0))
    return run_clip(SimOptions(clip=EXAMPLE, out=card / out, config=cfg, broker=broker.url,
                               state_dir=card / "state", gnss=False, drain_timeout_s=30))


def test_every_shot_reaches_base_on_a_full_card_before_and_after_a_restart(
    tmp_path: Path, card: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    store = tmp_path / "base.db"
    base = ConsumerBase(broker.port, store).start()
    try:
        fill(card, "filler-1", leave=1_500_000)  # the reserve takes 1 MB; footage gets the rest and fills it
        first = run(card, broker, "run1")
        shots = [m for m in first.stats.markers if m.kind == "gunshot"]
        assert len(shots) == 6 and first.storage_errors  # the card filled up under the footage
        assert base.wait_contiguous(DEV, first.stats.markers[-1].seq, 20)
        fill(card, "filler-2", leave=0)  # still full (fuller) at the restart
        second = run(card, broker, "run2")
        assert [m for m in second.stats.markers if m.kind == "gunshot"]
        assert second.stats.markers[0].seq == first.stats.markers[-1].seq + 1  # no seq used twice
        assert base.wait_contiguous(DEV, second.stats.markers[-1].seq, 20)
    finally:
        base.stop()
    got = stored_ids(store, DEV)
    for m in first.stats.markers + second.stats.markers:
        assert got.get(m.seq) == m.id, f"seq {m.seq} ({m.kind}) did not reach base"
    took_reserve = any("released" in r.getMessage() for r in caplog.records)
    in_memory = any("keeping them in memory" in r.getMessage() for r in caplog.records)
    assert took_reserve, "the outbox never needed its reserve: the card was not full"
    assert in_memory, "the outbox never ran out of room: the in-memory path was not exercised"
    assert any("the outbox cannot write markers" in r.getMessage() for r in caplog.records)  # the alarm
    print(f"\n[full card] run1 {len(first.stats.markers)} markers, run2 {len(second.stats.markers)}; all at base; "
          f"reserve used: {took_reserve}; markers kept in memory: {in_memory}; free at end: "
          f"{os.statvfs(card).f_bavail * os.statvfs(card).f_frsize} bytes")


def test_no_shot_footage_is_ever_deletable_after_a_full_card(tmp_path: Path, card: Path) -> None:
    """Every recording that holds a shot (by its segments' sensor-time span) is protected, whether the
    shot landed in it or in the gap between a recording the card refused and the one resumed after it
    (that one starts with the pre-event footage holding the shot); after a restart, retention on a
    short card deletes none of them."""
    from bodycam.device.footage.recorder import recover_interrupted
    from bodycam.device.footage.recording import protected_on_disk
    from bodycam.device.footage.retention import Retention, RetentionConfig

    fill(card, "filler", leave=1_500_000)
    cfg = AppConfig()
    cfg = replace(cfg, retention=replace(cfg.retention, min_free_mb=0.0),
                  outbox=replace(cfg.outbox, reserve_mb=1.0, keep_confirmed_mb=0.5))
    rep = run_clip(SimOptions(clip=EXAMPLE, out=card / "run", config=cfg, broker=None, state_dir=card / "state",
                              gnss=False, drain_timeout_s=1))
    shots = [m for m in rep.stats.markers if m.kind == "gunshot"]
    assert len(shots) == 6 and rep.storage_errors
    assert any(m.media is None for m in shots), "no shot fell between recordings: the case is not exercised"
    root = card / "run" / "recordings"
    holding = {}
    for rec in sorted(root.iterdir()):
        segs = json.loads((rec / "manifest.json").read_text())["segments"]
        inside = [s.seq for s in shots if segs and segs[0]["start_mono_ns"] <= s.t_mono_ns <= segs[-1]["end_mono_ns"]]
        if inside:
            holding[rec.name] = inside
            assert protected_on_disk(rec), f"{rec.name} holds shots {inside} and is not protected"
    assert len(holding) >= 2  # the first recording and the one resumed after the card refused it
    os.remove(card / "filler")
    recover_interrupted(root)
    for name in holding:
        assert json.loads((root / name / "manifest.json").read_text())["protected"] is True
    res = Retention(root, RetentionConfig(min_free_mb=100)).enforce()  # the card is short again
    assert not set(res.deleted) & set(holding)
