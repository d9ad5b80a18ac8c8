"""Retention: free space from the oldest *unprotected* footage only.

A recording is protected when its manifest says so (it holds a detection
marker). A recording whose manifest is missing or unreadable is treated as
protected: nothing is deleted that cannot be shown to be deletable. When only
protected footage is left and space is still short, :meth:`Retention.enforce`
reports an alarm (the app raises it on the LED and in telemetry).

The outbox's reserved space (:class:`~bodycam.device.uplink.reserve.SpaceReserve`, a preallocated
file footage cannot take) comes first: when the outbox had to take from it on a full card, its
``deficit`` counts as space retention must free from unprotected footage, and once there is room
the reserve is refilled before footage can have it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from bodycam.device.settings import require

log = logging.getLogger(__name__)


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


class ReservedSpace(Protocol):
    """The outbox's reserve as retention sees it."""

    @property
    def deficit(self) -> int: ...

    def refill(self) -> int: ...


@dataclass(frozen=True)
class RetentionConfig:
    min_free_mb: float = 1024.0  # keep at least this much free on the data disk
    max_total_mb: float = 0.0  # cap on all recordings together; 0: no cap

    def __post_init__(self) -> None:
        require(self.min_free_mb >= 0, "retention.min_free_mb", "must be >= 0")
        require(self.max_total_mb >= 0, "retention.max_total_mb", "must be >= 0")


@dataclass
class RetentionResult:
    deleted: list[str] = field(default_factory=list)
    alarm: bool = False
    free_bytes: int = 0
    total_bytes: int = 0


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


class Retention:
    def __init__(self, recordings_dir: Path, cfg: RetentionConfig,
                 disk_usage: Callable[[Path], DiskUsage] | None = None,
                 reserve: ReservedSpace | None = None) -> None:
        self.root = recordings_dir
        self.cfg = cfg
        self.reserve = reserve
        self._usage = disk_usage or (lambda p: DiskUsage(*shutil.disk_usage(p)))

    def enforce(self, active: str | None = None) -> RetentionResult:
        min_free = int(self.cfg.min_free_mb * 1024 * 1024)
        max_total = int(self.cfg.max_total_mb * 1024 * 1024)
        recs = sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        sizes = {p.name: _dir_size(p) for p in recs}
        total = sum(sizes.values())
        result = RetentionResult()

        def short() -> bool:
            if self.reserve is not None and self.reserve.deficit and self.reserve.refill():
                log.warning("retention: the outbox's reserved space is refilled")
            owed = self.reserve.deficit if self.reserve is not None else 0
            free = self._usage(self.root).free
            return free < min_free + owed or (max_total > 0 and total > max_total)

        if not short():
            result.free_bytes = self._usage(self.root).free
            result.total_bytes = total
            return result
        for rec in recs:  # names start with the UTC start time: oldest first
            if rec.name == active:
                continue
            manifest = read_manifest(rec)
            if manifest is None or manifest.get("protected", True) or not manifest.get("complete", False):
                continue
            shutil.rmtree(rec)
            total -= sizes[rec.name]
            result.deleted.append(rec.name)
            log.warning("retention: deleted unprotected recording %s to free space", rec.name)
            if not short():
                break
        result.alarm = short()
        if result.alarm:
            log.error("retention: storage is short and only protected or active footage is left")
        result.free_bytes = self._usage(self.root).free
        result.total_bytes = total
        return result
