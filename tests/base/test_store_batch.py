"""A batch is stored by the same rules as one marker at a time: ``rules.add_markers`` reads what the
batch needs first and writes with ``executemany``; every outcome (stored, duplicate, id/seq conflict,
chain ok/broken/unknown and its settling, gaps, first marker, the contiguous seq) and the database it
leaves must equal storing the same markers one per transaction. Random mixes, SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import random
from contextlib import closing
from pathlib import Path

import pytest
from test_store import make_markers

from bodycam.base.cli import open_store
from bodycam.base.store import MarkerStore
from bodycam.device.uplink.markers import Marker


def _state(store: MarkerStore) -> tuple[object, ...]:
    markers = [(s.marker.id, s.marker.seq, s.chain, s.received_ns) for s in store.markers(limit=100_000)]
    devices = [(d.device, d.markers, d.max_seq, d.missing, d.chain_broken, d.acked, d.quarantined, d.last_seen_ns)
               for d in store.devices()]
    quarantine = sorted((r.item.kind, r.item.device or "", r.item.payload) for r in store.quarantined(limit=100_000))
    return markers, devices, quarantine, sorted(store.progress(), key=lambda p: p.device)


def _mix(tmp_path: Path, rng: random.Random) -> list[tuple[Marker, int]]:
    """Markers of 3 devices shuffled, with resends, a forged copy of a seq (seq conflict), an id reused
    with other content (id conflict), a broken chain link, and holes."""
    out: list[Marker] = []
    for d in range(3):
        chain = make_markers(tmp_path / f"a{d}", 12, device=f"cam-{d}")
        other = make_markers(tmp_path / f"b{d}", 12, device=f"cam-{d}")  # same seqs, other ids/digests
        keep = [m for m in chain if rng.random() > 0.15]  # holes
        out += keep
        out += rng.sample(keep, k=min(3, len(keep)))  # resends (duplicates)
        out.append(rng.choice(other))  # a second marker for a (device, seq): conflict, or a broken link
        victim = rng.choice(keep)
        out.append(dataclasses.replace(victim, kind="manual", confidence=None, model=None))  # same id, other body
    rng.shuffle(out)
    return [(m, 1_000 + i) for i, m in enumerate(out)]


@pytest.mark.parametrize("seed", range(6))
def test_a_batch_is_stored_exactly_as_one_marker_at_a_time(db: str, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    items = _mix(tmp_path, rng)
    one_db = db + "-one" if not db.startswith("postgresql") else None
    with closing(open_store(db)) as batched:
        cut = sorted(rng.sample(range(1, len(items)), k=3))  # a few batches, of uneven size
        got: list[object] = []
        for lo, hi in zip([0, *cut], [*cut, len(items)], strict=True):
            got += batched.add_markers(items[lo:hi])
        state_batched = _state(batched)
        if one_db is None:  # PostgreSQL: empty the tables and store them again, one per transaction
            with batched.transaction() as tx:  # type: ignore[attr-defined]
                for table in ("markers", "devices", "quarantine"):
                    tx.run(f"DELETE FROM {table}")
            one_store: MarkerStore = batched
            want = [one_store.add_markers([item])[0] for item in items]
            state_one = _state(one_store)
        else:
            with closing(open_store(one_db)) as one_store:
                want = [one_store.add_markers([item])[0] for item in items]
                state_one = _state(one_store)
    assert got == want
    assert state_batched[0] == state_one[0]  # markers, chains, received_ns
    assert state_batched[1] == state_one[1]  # devices: counts, max seq, missing, broken, acked, last seen
    assert state_batched[2] == state_one[2]  # the quarantine
    assert state_batched[3] == state_one[3]  # progress (what base acknowledges, the first hole)
    assert any(r.conflict == "seq_conflict" for r in want) or any(r.chain == "broken" for r in want)
    assert any(r.conflict == "id_conflict" for r in want)
    assert any(not r.stored and r.conflict is None for r in want)  # duplicates


def test_in_lists_come_in_a_few_lengths_and_keep_every_value() -> None:
    """``IN (...)`` lists are padded (repeating their last value) to a few lengths, so a batch of a new
    size is not a new statement for the database drivers' caches; nothing is lost or added."""
    from bodycam.base.rules import _CHUNK, in_chunks

    lengths = set()
    for n in range(1, 2 * _CHUNK + 3):
        values = list(range(n))
        parts = in_chunks(values)
        assert sorted({v for p in parts for v in p}) == values
        assert all(len(p) <= _CHUNK for p in parts)
        lengths.update(len(p) for p in parts)
    assert lengths == {1, 2, 4, 8, 16, 32, 64, 128, 256, _CHUNK}
    assert in_chunks([]) == []
