"""Review labels: a layer of their own, checked at entry, append-only with who/when/what it replaced
(SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bodycam.base.review_labels import Detection, LabelError, LabelStore, NewLabel, Timeline
from bodycam.base.store import SqliteStore
from bodycam.base.store_pg import PostgresStore, is_postgres_url
from bodycam.device.errors import StorageError

REC = "20260301T100003100Z"
TL = Timeline("cam-o1", REC, 30.0, 600, (
    Detection("m-1", "gunshot", 88, 0.99, "shotnet 1.0.0", "2026-03-01T10:00:02.933Z"),
    Detection("m-2", "gunshot", 91, 0.98, "shotnet 1.0.0", "2026-03-01T10:00:03.033Z"),
    Detection("m-3", "gunshot", 266, 0.97, "shotnet 1.0.0", "2026-03-01T10:00:08.866Z"),
))
OTHER = Timeline("cam-o1", "20260301T110003100Z", 30.0, 100, ())


def open_store(db: str) -> SqliteStore | PostgresStore:
    return PostgresStore(db) if is_postgres_url(db) else SqliteStore(Path(db))


def test_labels_are_checked_and_kept_with_what_they_replaced(db: str) -> None:
    store = open_store(db)
    try:
        labels = LabelStore(store)
        LabelStore(store)  # opening again keeps table and triggers
        c1 = labels.add(TL, NewLabel("confirm", marker="m-1"), by="ines", t_ns=1)
        assert (c1.kind, c1.marker, c1.frame, c1.replaces, c1.by, c1.t_ns) == ("confirm", "m-1", 88, None, "ines", 1)
        r2 = labels.add(TL, NewLabel("reject", marker="m-2"), by="ines", t_ns=2)
        m3 = labels.add(TL, NewLabel("move", marker="m-3", frame=268), by="ines", t_ns=3)
        add = labels.add(TL, NewLabel("add", frame=300, note="late flash"), by="ines", t_ns=4)
        free = labels.add(TL, NewLabel("shot_free", frame=500, end_frame=599), by="ines", t_ns=5)
        # a second reviewer changes a verdict: it replaces the one in force on that marker
        again = labels.add(TL, NewLabel("reject", marker="m-1"), by="omar", t_ns=6)
        assert again.replaces == c1.n
        moved = labels.add(TL, NewLabel("add", frame=301, replaces=add.n), by="omar", t_ns=7)
        gone = labels.add(TL, NewLabel("withdraw", replaces=free.n), by="omar", t_ns=8)
        assert (gone.frame, gone.end_frame) == (500, 599)
        now = labels.current("cam-o1", REC)
        assert [(lb.kind, lb.marker, lb.frame, lb.by) for lb in now] == [
            ("reject", "m-2", 91, "ines"), ("move", "m-3", 268, "ines"), ("reject", "m-1", 88, "omar"),
            ("add", None, 301, "omar")]
        assert [lb.n for lb in labels.labels("cam-o1", REC)] == [c1.n, r2.n, m3.n, add.n, free.n, again.n, moved.n,
                                                                  gone.n]
        assert labels.current("cam-o1", "20260301T110003100Z") == []

        before = labels.labels()
        refused = [
            (NewLabel("add", frame=600), "outside recording cam-o1/20260301T100003100Z"),
            (NewLabel("add", frame=-1), "outside recording"),
            (NewLabel("add"), "a frame is required"),
            (NewLabel("move", marker="m-2", frame=10_000), "outside recording"),
            (NewLabel("shot_free", frame=10, end_frame=600), "outside recording"),
            (NewLabel("shot_free", frame=10, end_frame=9), "before frame"),
            (NewLabel("confirm", marker="m-9"), "not a detection of recording"),
            (NewLabel("confirm"), "which detection marker"),
            (NewLabel("add", frame=5, marker="m-1"), "names no marker"),
            (NewLabel("move", marker="m-2", frame=91), "the marker's own"),
            (NewLabel("confirm", marker="m-1", replaces=c1.n), "the verdict in force is label"),
            (NewLabel("add", frame=302, replaces=add.n), "already replaced"),
            (NewLabel("shot_free", frame=1, end_frame=2, replaces=moved.n), "is a add, not a shot_free"),
            (NewLabel("withdraw", replaces=r2.n), "not withdrawn"),
            (NewLabel("withdraw"), "which label"),
            (NewLabel("withdraw", replaces=gone.n), "is a withdrawal"),
            (NewLabel("add", frame=1, replaces=10_000), "there is no label"),
        ]
        for new, why in refused:
            with pytest.raises(LabelError, match=why):
                labels.add(TL, new, by="x", t_ns=9)
        with pytest.raises(LabelError, match="another recording"):
            labels.add(OTHER, NewLabel("add", frame=1, replaces=moved.n), by="x", t_ns=9)
        assert labels.labels() == before  # nothing written by a refusal

        for sql in ("UPDATE review_labels SET by_user='nobody'", "DELETE FROM review_labels",
                    f"UPDATE review_labels SET frame=1 WHERE n={c1.n}"):
            with pytest.raises(StorageError, match="append-only"), store.transaction() as tx:
                tx.run(sql)
        if isinstance(store, PostgresStore):
            with pytest.raises(StorageError, match="append-only"), store.transaction() as tx:
                tx.run("TRUNCATE review_labels")
        assert labels.labels() == before
    finally:
        store.close()


@pytest.mark.parametrize(("body", "why"), [
    ([], "a JSON object"),
    ({"kind": "maybe"}, "is not one of"),
    ({"kind": "add", "frame": True}, "expected an integer"),
    ({"kind": "add", "frame": 1.5}, "expected an integer"),
    ({"kind": "add", "frame": 1, "by": "someone else"}, "unknown field"),
    ({"kind": "add", "frame": 1, "note": "a\x00b"}, "note"),
    ({"kind": "add", "frame": 1, "note": "x" * 501}, "note"),
    ({"kind": "add", "frame": 1, "note": "\ud800"}, "not valid text"),
    ({"kind": "confirm", "marker": ""}, "marker"),
])
def test_a_label_request_is_checked(body: object, why: str) -> None:
    with pytest.raises(LabelError, match=why):
        NewLabel.from_json(body)


def test_serve_and_export_dataset_say_what_is_wrong_in_one_line(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from bodycam.base.cli import main as base_main
    from bodycam.base.signing import keygen

    db, ev = str(tmp_path / "base.db"), str(tmp_path / "evidence")
    (tmp_path / "bad.key").write_text("not a key\n")
    keygen(tmp_path / "custody.key")
    custody = ["--custody-key", str(tmp_path / "custody.key")]
    cases = [
        (["serve", "--db", db, "--evidence", ev, *custody, "--age-key", str(tmp_path / "missing.key")],
         "cannot read base's private key"),
        (["serve", "--db", db, "--evidence", ev, *custody, "--age-key", str(tmp_path / "bad.key")],
         "not an age X25519 identity"),
        (["serve", "--db", db, "--age-key", str(tmp_path / "bad.key")], "--age-key goes with --evidence"),
        (["export-dataset", str(tmp_path / "out"), "--evidence", str(tmp_path / "nothing"), "--db", db],
         "not an evidence store"),
        (["export-dataset", str(tmp_path / "out"), "--evidence", ev, "--db", db], "no reviewed labels"),
        (["export-dataset", str(tmp_path / "out"), "--evidence", ev, "--db", db, "--device", "../x"],
         "is not a device id"),
    ]
    for args, why in cases:
        assert base_main(args) != 0
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
