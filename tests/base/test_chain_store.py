"""The tables a retired key's custody rests on (review-handover R4, R5, R2), on both stores: append-only
against ``INSERT OR REPLACE`` too (SQLite deletes the replaced row without firing a DELETE trigger); one
hand-over per old key, checked inside the inserting transaction; a hand-over head must be a recording."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from bodycam.base.chain_heads import ChainHeads, ChainRefused
from bodycam.base.custody import CustodyLog
from bodycam.base.keys import KeyRegistry
from bodycam.base.store import SqliteStore
from bodycam.base.store_pg import PostgresStore, is_postgres_url
from bodycam.device.errors import StorageError
from bodycam.device.footage.handover import make_handover
from bodycam.device.identity import Signer

DEVICE = "cam-01"
HEAD = ("20260301T110003100Z", "a" * 64)


def open_store(db: str) -> SqliteStore | PostgresStore:
    return PostgresStore(db) if is_postgres_url(db) else SqliteStore(Path(db))


def chain_on(store: SqliteStore | PostgresStore) -> ChainHeads:
    return ChainHeads(store, CustodyLog(store), KeyRegistry(store))  # type: ignore[arg-type]


def keys(chain: ChainHeads, *signers: Signer) -> None:
    for s in signers:
        chain.keys.add(DEVICE, s.public_pem(), 1)


def test_append_only_tables_cannot_be_rewritten_by_insert_or_replace(db: str) -> None:
    store = open_store(db)
    try:
        chain = chain_on(store)
        old, new = Signer.generate(), Signer.generate()
        keys(chain, old, new)
        chain.register_handover(DEVICE, make_handover(DEVICE, old, new, HEAD, "2026-06-01T08:00:00.000Z"),
                                "device:cam-01", 2)
        chain.seen.add(DEVICE, HEAD[0], HEAD[1], old.key_id, None, 3)
        rewrites = {
            "key_chain_heads": "(n, device, key_id, recording, manifest_sha256, kind, actor, t_ns, detail) VALUES "
                               f"(1, '{DEVICE}', '{old.key_id}', '20991231T000000000Z', 'c', 'handover', 'x', 0, '{{}}')",
            "custody_audit": f"(n, t_ns, actor, action, device, recording, detail) VALUES (1, 0, 'operator:nobody', "
                             f"'handover', '{DEVICE}', '', '{{}}')",
            "seen_manifests": "(n, device, recording, manifest_sha256, key_id, previous, previous_manifest_sha256, t_ns)"
                              f" VALUES (1, '{DEVICE}', '{HEAD[0]}', 'b', 'k', '', '', 0)",
        }
        before = {t: store.read(f"SELECT * FROM {t} ORDER BY n") for t in rewrites}
        for table, values in rewrites.items():
            if isinstance(store, PostgresStore):
                sql = f"INSERT INTO {table} {values} ON CONFLICT (n) DO UPDATE SET t_ns = 5"
                sql = sql.replace(") VALUES", ") OVERRIDING SYSTEM VALUE VALUES", 1)
            else:
                sql = f"INSERT OR REPLACE INTO {table} {values}"
            with pytest.raises(StorageError, match="append-only"), store.transaction() as tx:
                tx.run(sql)
        assert {t: store.read(f"SELECT * FROM {t} ORDER BY n") for t in rewrites} == before
    finally:
        store.close()


def test_one_hand_over_per_old_key_is_decided_inside_the_inserting_transaction(db: str) -> None:
    """The second registration read the key's heads before the first committed (two base processes)."""
    store, other = open_store(db), open_store(db)
    try:
        first, second = chain_on(store), chain_on(other)
        old, new, new2 = Signer.generate(), Signer.generate(), Signer.generate()
        keys(first, old, new, new2)
        second.heads = lambda device, key_id=None: []  # type: ignore[method-assign]  # its read saw nothing yet
        first.register_handover(DEVICE, make_handover(DEVICE, old, new, HEAD, "2026-06-01T08:00:00.000Z"), "a", 2)
        rival = make_handover(DEVICE, old, new2, ("20260301T120003100Z", "b" * 64), "2026-06-01T08:00:01.000Z")
        with pytest.raises(ChainRefused) as conflict:
            second.register_handover(DEVICE, rival, "b", 3)
        assert conflict.value.code == "handover_conflict" and conflict.value.status == 409
        assert len([h for h in first.heads(DEVICE, old.key_id) if h.kind == "handover"]) == 1
    finally:
        store.close()
        other.close()


def test_two_hand_overs_registered_at_once_leave_one(db: str) -> None:
    stores = [open_store(db), open_store(db)]
    try:
        chains = [chain_on(s) for s in stores]
        olds = [Signer.generate() for _ in range(8)]
        news = [(Signer.generate(), Signer.generate()) for _ in olds]
        keys(chains[0], *olds, *(n for pair in news for n in pair))
        outcome: list[Any] = []

        def register(i: int, barrier: threading.Barrier) -> None:
            for old, pair in zip(olds, news, strict=True):
                doc = make_handover(DEVICE, old, pair[i], (f"20260301T1{i}0003100Z", str(i) * 64), "2026-06-01T08:00Z")
                barrier.wait()
                try:
                    chains[i].register_handover(DEVICE, doc, f"p{i}", 2)
                    outcome.append("registered")
                except ChainRefused as exc:
                    outcome.append(exc.code)

        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=register, args=(i, barrier)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(set(outcome)) == ["handover_conflict", "registered"] and len(outcome) == 2 * len(olds)
        for old in olds:
            assert len([h for h in chains[0].heads(DEVICE, old.key_id) if h.kind == "handover"]) == 1
    finally:
        for s in stores:
            s.close()


def test_a_hand_over_whose_head_is_not_a_recording_is_refused(db: str) -> None:
    store = open_store(db)
    try:
        chain = chain_on(store)
        old, new = Signer.generate(), Signer.generate()
        keys(chain, old, new)
        doc = make_handover(DEVICE, old, new, ("../elsewhere", "a" * 64), "2026-06-01T08:00:00.000Z")
        with pytest.raises(ChainRefused) as bad:
            chain.register_handover(DEVICE, doc, "device:cam-01", 2)
        assert bad.value.code == "bad_handover" and chain.heads(DEVICE) == []
    finally:
        store.close()


def test_the_evidence_index_is_write_once(db: str) -> None:
    """What a chain walk trusts (a stored recording's manifest hash and its link) cannot be changed, deleted
    or replaced; a second link for a recording is ignored as before."""
    from bodycam.base.custody import StoredRecording

    store = open_store(db)
    try:
        custody = CustodyLog(store)
        rec = StoredRecording(DEVICE, HEAD[0], HEAD[1], 1, "evidence/x", 10, 1, 0)
        with custody.transaction() as tx:
            custody.add_stored(tx, rec)
            custody.add_link(tx, DEVICE, HEAD[0], {"recording": "20260301T100000000Z", "manifest_sha256": "b" * 64})
        with custody.transaction() as tx:  # a second link for the same recording: nothing, as before
            custody.add_link(tx, DEVICE, HEAD[0], {"recording": "20260301T090000000Z", "manifest_sha256": "c" * 64})
        tables = ("evidence_recordings", "evidence_links")
        before = {t: store.read(f"SELECT * FROM {t}") for t in tables}
        pg = isinstance(store, PostgresStore)
        attempts = [
            "UPDATE evidence_recordings SET manifest_sha256 = 'f'",
            "UPDATE evidence_links SET previous_manifest_sha256 = 'f'",
            "DELETE FROM evidence_recordings",
            "DELETE FROM evidence_links",
            ("INSERT INTO evidence_recordings VALUES ('cam-01', '20260301T110003100Z', 'f', 2, 'y', 1, 1, 0) "
             "ON CONFLICT (device, recording) DO UPDATE SET manifest_sha256 = 'f'") if pg else
            "INSERT OR REPLACE INTO evidence_recordings VALUES ('cam-01', '20260301T110003100Z', 'f', 2, 'y', 1, 1, 0)",
        ]
        if pg:
            attempts += ["TRUNCATE evidence_recordings", "TRUNCATE evidence_links",
                         "INSERT INTO evidence_links VALUES ('cam-01', '20260301T110003100Z', 'x', 'f') "
                         "ON CONFLICT (device, recording) DO UPDATE SET previous = 'x'"]
        for sql in attempts:
            with pytest.raises(StorageError, match="append-only"), store.transaction() as tx:
                tx.run(sql)
        if not pg:  # a replacing insert of a link is ignored, never a replacement
            with store.transaction() as tx:
                tx.run("INSERT OR REPLACE INTO evidence_links VALUES ('cam-01', '20260301T110003100Z', 'x', 'f')")
        assert {t: store.read(f"SELECT * FROM {t}") for t in tables} == before
        assert custody.link(DEVICE, HEAD[0]) == ("20260301T100000000Z", "b" * 64)
    finally:
        store.close()


def test_review_labels_cannot_be_rewritten_by_insert_or_replace(db: str) -> None:
    """The review labels share the append-only guards (custody.create_append_only_table)."""
    from bodycam.base.review_labels import LabelStore

    store = open_store(db)
    try:
        LabelStore(store)  # type: ignore[arg-type]
        cols = "(device, recording, kind, marker, frame, end_frame, replaces, by_user, t_ns, note)"
        with store.transaction() as tx:
            tx.run(f"INSERT INTO review_labels {cols} VALUES ('cam-01', 'r', 'add', NULL, 5, NULL, NULL, 'ann', 1, '')")
        before = store.read("SELECT * FROM review_labels ORDER BY n")
        n = before[0][0]
        if isinstance(store, PostgresStore):
            sql = (f"INSERT INTO review_labels (n, {cols[1:]} OVERRIDING SYSTEM VALUE VALUES ({n}, 'cam-01', 'r', "
                   "'add', NULL, 9, NULL, NULL, 'x', 2, '') ON CONFLICT (n) DO UPDATE SET frame = 9")
        else:
            sql = (f"INSERT OR REPLACE INTO review_labels (n, {cols[1:]} VALUES ({n}, 'cam-01', 'r', 'add', NULL, 9, "
                   "NULL, NULL, 'x', 2, '')")
        with pytest.raises(StorageError, match="append-only"), store.transaction() as tx:
            tx.run(sql)
        assert store.read("SELECT * FROM review_labels ORDER BY n") == before
    finally:
        store.close()
