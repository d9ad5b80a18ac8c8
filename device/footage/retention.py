"""Retention: free space, offloaded footage first, and never protected footage base has not confirmed.

When space is short (less than ``min_free_mb`` free, or more than ``max_total_mb`` of recordings),
:meth:`Retention.enforce` deletes finished recordings, oldest first, in this order:

1. recordings base has confirmed (``offload.json`` holding base's confirmation, signed by a custody
   key in ``trusted`` and naming the manifest on the card: ``footage/offload_state.py``), protected
   or not;
2. only if space is still short (the card would otherwise fill), unprotected recordings base has
   not confirmed: each is *lost footage*, reported in ``RetentionResult.lost`` (the recorder raises
   the storage alarm and the app writes a ``footage_deleted`` marker for each);
3. never a protected recording base has not confirmed (it holds a detection marker): protected in
   its manifest, or by its on-disk sentinel ``protection/<id>.ok`` (``recording.PROTECTION_DIR``), which a
   full card cannot refuse when the manifest write is refused.

A recording whose manifest is missing or unreadable is treated as protected and not offloaded:
nothing is deleted that cannot be shown to be deletable. When only protected footage is left and
space is still short, the alarm stays up (the app raises it on the LED and in telemetry).

The outbox's reserved space (:class:`~bodycam.device.uplink.reserve.SpaceReserve`, a preallocated
file footage cannot take) comes first: when the outbox had to take from it on a full card, its
``deficit`` counts as space retention must free from unprotected footage, and once there is room
the reserve is refilled before footage can have it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from bodycam.device.footage.offload_state import is_offloaded, manifest_sha256
from bodycam.device.footage.recording import forget_protection, protected_on_disk
from bodycam.device.identity import TrustedKeys
from bodycam.device.safe_load import loads_untrusted
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


#: the largest share of the card ``retention.min_free_mb`` may keep free (checked at start, against the
#: file system the recordings are on: the config cannot know the card)
MAX_FREE_SHARE = 0.5


@dataclass(frozen=True)
class RetentionConfig:
    min_free_mb: float = 1024.0  # keep at least this much free on the data disk
    max_total_mb: float = 0.0  # cap on all recordings together; 0: no cap

    def __post_init__(self) -> None:
        require(self.min_free_mb >= 0, "retention.min_free_mb", "must be >= 0")
        require(self.max_total_mb >= 0, "retention.max_total_mb", "must be >= 0")


@dataclass(frozen=True)
class LostFootage:
    """A recording deleted before base confirmed it (the card would otherwise have filled)."""

    recording: str
    segments: int
    bytes: int
    manifest_sha256: str | None
    start_utc: str | None
    end_utc: str | None


@dataclass
class RetentionResult:
    deleted: list[str] = field(default_factory=list)
    lost: list[LostFootage] = field(default_factory=list)  # deleted without base's confirmation
    alarm: bool = False
    free_bytes: int = 0
    total_bytes: int = 0
    errors: list[str] = field(default_factory=list)  # recordings that could not be deleted (the pass went on)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = loads_untrusted((path / "manifest.json").read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Retention:
    def __init__(self, recordings_dir: Path, cfg: RetentionConfig,
                 disk_usage: Callable[[Path], DiskUsage] | None = None,
                 reserve: ReservedSpace | None = None, trusted: TrustedKeys | None = None) -> None:
        """``trusted``: base's custody keys (``[offload] trusted_keys_dir``); a confirmation is checked
        again with them before its recording is deleted as offloaded (none: nothing counts as offloaded)."""
        self.root = recordings_dir
        self.cfg = cfg
        self.reserve = reserve
        self.trusted: TrustedKeys = trusted if trusted is not None else {}
        self._usage = disk_usage or (lambda p: DiskUsage(*shutil.disk_usage(p)))

    def bound_to_card(self) -> str | None:
        """At start: a ``min_free_mb`` above :data:`MAX_FREE_SHARE` of the file system is clamped to it.

        Above the card's size it would make every pass "short" and delete every finished unprotected
        recording however empty the card is. It is clamped, not refused: the card is hardware, not
        config (one fleet config, a card replaced by a smaller one), and a camera that refuses to start
        records nothing, shots included. Returns the alarm text (None when the value fits); the caller
        raises it (LED, STATUS=, telemetry).
        """
        where = self.root
        while not where.exists() and where != where.parent:
            where = where.parent
        total = self._usage(where).total
        limit_mb = total * MAX_FREE_SHARE / (1024 * 1024)
        if self.cfg.min_free_mb <= limit_mb:
            return None
        alarm = (f"retention.min_free_mb = {self.cfg.min_free_mb:g} MB is more than {MAX_FREE_SHARE:.0%} of the "
                 f"card ({total / (1024 * 1024):.0f} MB): using {limit_mb:.0f} MB (else every unprotected "
                 f"recording would be deleted at each pass); fix the config")
        self.cfg = replace(self.cfg, min_free_mb=limit_mb)
        return alarm

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
        for offloaded_pass in (True, False):  # what base confirmed first; the rest only if still short
            for rec in recs:  # names start with the UTC start time: oldest first
                if rec.name == active or rec.name in result.deleted or not short():
                    continue
                manifest = read_manifest(rec)
                if manifest is None or not manifest.get("complete", False):
                    continue
                offloaded = is_offloaded(rec, self.trusted)
                if offloaded != offloaded_pass or (not offloaded and (manifest.get("protected", True)
                                                                       or protected_on_disk(rec))):
                    continue
                lost = None if offloaded else LostFootage(
                    rec.name, len(manifest.get("segments") or []), sizes[rec.name], manifest_sha256(rec),
                    manifest.get("start_utc"), manifest.get("end_utc"))
                try:
                    shutil.rmtree(rec)
                except OSError as exc:  # one undeletable recording must not stop the pass: the next may go
                    log.error("retention: cannot delete recording %s (%s); trying the next one", rec.name, exc)
                    result.errors.append(f"{rec.name}: {exc}")
                    try:
                        left = _dir_size(rec) if rec.exists() else 0
                    except OSError:
                        left = sizes[rec.name]
                    total -= sizes[rec.name] - left
                    if lost is not None and left < sizes[rec.name]:  # part of it is gone: still lost footage
                        result.lost.append(lost)
                    continue
                total -= sizes[rec.name]
                forget_protection(rec)
                result.deleted.append(rec.name)
                if lost is None:
                    log.warning("retention: deleted recording %s (offloaded: base confirmed it)", rec.name)
                else:
                    result.lost.append(lost)
                    log.error("retention: deleted recording %s BEFORE base confirmed it: the card would "
                              "otherwise fill (unprotected)", rec.name)
        still_short = short()
        result.alarm = still_short
        if still_short:
            log.error("retention: storage is short and only protected or active footage is left")
        result.free_bytes = self._usage(self.root).free
        result.total_bytes = total
        return result
