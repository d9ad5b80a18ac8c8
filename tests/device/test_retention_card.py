"""``retention.min_free_mb`` larger than the card made every maintenance pass "short" and deleted every
finished unprotected recording, however empty the card (review-runtime #7). At start the value is
compared with the real file system (a tmpfs card here) and clamped to half of it, with an alarm."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _clips import make_plain_clip

from bodycam.device.assemble import Firmware
from bodycam.device.config import config_from_dict
from bodycam.device.footage.retention import MAX_FREE_SHARE, Retention, RetentionConfig
from bodycam.hw_sim.sim_run import SimOptions, SimReport, run_clip


def _run(tmp_path: Path, card: Path, min_free_mb: float) -> tuple[SimReport, list[str], list[Any]]:
    clip = make_plain_clip(tmp_path / "c.mp4", seconds=14, audio=False)
    scenario = tmp_path / "s.json"  # a 2 s manual recording, finished long before the pass at 10 s
    scenario.write_text(json.dumps({"events": [{"t_s": 1.0, "event": "record"}, {"t_s": 3.0, "event": "record"}]}))
    cfg = config_from_dict({"recording": {"post_roll_s": 0.5, "pre_event_s": 1.0},
                            "outbox": {"reserve_mb": 1.0, "keep_confirmed_mb": 0.5},
                            "retention": {"min_free_mb": min_free_mb}})
    apps: list[Firmware] = []
    rep = run_clip(SimOptions(clip=clip, out=card / "run", config=cfg, broker=None, gnss=False, scenario=scenario),
                   on_assembled=apps.append)
    left = sorted(p.name for p in (card / "run" / "recordings").iterdir() if p.is_dir())
    return rep, left, apps[0].app.alarms()


def test_min_free_beyond_the_card_is_clamped_with_an_alarm_and_deletes_nothing(
        tmp_path: Path, small_card: Callable[[str], Path], caplog: pytest.LogCaptureFixture) -> None:
    card = small_card("64m")
    with caplog.at_level(logging.ERROR):
        rep, left, alarms = _run(tmp_path, card, 10_000_000)  # 10 TB on a 64 MB card
    kinds = [m.kind for m in rep.stats.markers]
    assert "footage_deleted" not in kinds and len(left) == 1, (kinds, left)  # the recording stays on the card
    assert any(a.startswith("retention.min_free_mb = 1e+07 MB is more than 50% of the card (64 MB): using 32 MB")
               for a in alarms), alarms  # the LED's alarm pattern until the config is fixed
    assert any("ALARM retention.min_free_mb" in r.getMessage() for r in caplog.records)


def test_min_free_within_half_the_card_is_kept(tmp_path: Path, small_card: Callable[[str], Path]) -> None:
    card = small_card("64m")
    root = card / "recordings"  # not there yet: the file system is found from the nearest parent
    ret = Retention(root, RetentionConfig(min_free_mb=32))
    assert ret.bound_to_card() is None and ret.cfg.min_free_mb == 32
    ret = Retention(root, RetentionConfig(min_free_mb=33))
    alarm = ret.bound_to_card()
    assert alarm is not None and "retention.min_free_mb = 33 MB" in alarm
    assert ret.cfg.min_free_mb == 64 * MAX_FREE_SHARE
    _, left, alarms = _run(tmp_path, card, 20)
    assert len(left) == 1 and not alarms


def test_doctor_says_the_same(small_card: Callable[[str], Path]) -> None:
    from bodycam.device.doctor import check_storage

    card = small_card("64m")
    check = check_storage(config_from_dict({"device": {"data_dir": str(card)}, "retention": {"min_free_mb": 1e5}}))
    assert check.level == "warn" and "retention.min_free_mb = 100000 MB is more than 50% of the card" in check.detail
    assert "at most half of the card (32)" in check.fix
    ok = check_storage(config_from_dict({"device": {"data_dir": str(card)}, "retention": {"min_free_mb": 10}}))
    assert ok.level == "ok", ok
