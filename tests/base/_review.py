"""Review test parts: recordings by the firmware (simulator; plain or encrypted at rest), offloaded
into base's receiver on SQLite or PostgreSQL, with the review layer on the same store."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from pathlib import Path

from _offload import DEVICE, EXAMPLE, recordings

from bodycam.base.custody import CustodyLog
from bodycam.base.evidence_store import FileEvidenceStore
from bodycam.base.keys import KeyRegistry
from bodycam.base.receive import Receiver
from bodycam.base.review import Review
from bodycam.base.review_footage import WorkingCopies
from bodycam.base.review_labels import LabelStore
from bodycam.base.store import SqliteStore
from bodycam.base.store_pg import PostgresStore, is_postgres_url
from bodycam.device.config import AppConfig
from bodycam.device.footage.atrest import load_identity
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.identity import Signer
from bodycam.hw_sim.sim_run import SimOptions, run_clip


def make_recordings(out: Path, starts: tuple[str, ...], *, encrypt: bool = False, device: str = DEVICE) -> Path:
    """Signed recordings of the example clip (2 s segments), as the firmware writes them; ``encrypt``: at rest
    to the throwaway base key the simulator makes in ``out/state/identity/base.age.key``."""
    cfg = AppConfig(recording=RecordingConfig(segment_s=2.0, pre_event_s=5.0))
    cfg = replace(cfg, device=replace(cfg.device, id=device))
    for start in starts:
        run_clip(SimOptions(clip=EXAMPLE, out=out, config=cfg, broker=None, start_time=start, gnss=False,
                            encrypt=encrypt))
    return out


def base_age_key(data: Path) -> Path:
    return data / "state" / "identity" / "base.age.key"


@dataclass
class ReviewBase:
    store: SqliteStore | PostgresStore
    evidence: FileEvidenceStore
    custody: CustodyLog
    keys: KeyRegistry
    receiver: Receiver
    review: Review

    def close(self) -> None:
        self.store.close()


def make_review_base(db: str, evidence_dir: Path, data: Path, age_keys: tuple[Path, ...] = ()) -> ReviewBase:
    """Base on ``db`` (a path or a postgresql:// URL) with the camera of ``data`` registered; on receipt
    the working copy is made at once (as serve does on a thread)."""
    store: SqliteStore | PostgresStore = PostgresStore(db) if is_postgres_url(db) else SqliteStore(Path(db))
    keys = KeyRegistry(store)
    device = (data / "state" / "identity" / "device.pub").read_bytes()
    keys.add(DEVICE, device, time.time_ns())
    custody = CustodyLog(store)
    ev = FileEvidenceStore(evidence_dir, reserve_mb=0)
    review = Review(ev, custody, LabelStore(store), WorkingCopies(ev, [load_identity(k) for k in age_keys]), keys)
    rx = Receiver(ev, custody, keys, signer=Signer.generate(), on_stored=review.copies.prepare)
    return ReviewBase(store, ev, custody, keys, rx, review)


def offload(base: ReviewBase, data: Path) -> list[str]:
    """Every recording of ``data`` through the receiver, as the routes would (one chunk per file, confirm)."""
    done = []
    for rec in recordings(data):
        for f in sorted(rec.iterdir()):
            if f.name == "offload.json":
                continue
            blob = f.read_bytes()
            base.receiver.write_chunk(DEVICE, rec.name, f.name, 0, blob, hashlib.sha256(blob).hexdigest())
        base.receiver.confirm(DEVICE, rec.name)
        done.append(rec.name)
    return done
