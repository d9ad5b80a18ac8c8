"""The query commands as an operator meets them (issue 10, item 11), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from test_poison import marker
from test_store import WALL, make_markers

from bodycam.base.cli import main, open_store, parse_since, safe
from bodycam.device.errors import UsageError
from bodycam.device.uplink.markers import Marker, Media


@pytest.mark.parametrize("command", ["markers", "devices", "quarantine"])
def test_a_missing_database_is_an_error_and_is_not_created(tmp_path: Path, command: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    typo = tmp_path / "typo.db"
    assert main([command, "--db", str(typo)]) == 1
    assert "no such database" in capsys.readouterr().err and not typo.exists()
    nodir = tmp_path / "no" / "such" / "x.db"
    assert main([command, "--db", str(nodir)]) == 1
    assert "no such directory" in capsys.readouterr().err and not (tmp_path / "no").exists()


def test_unknown_kind_is_an_error_listing_the_kinds(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with closing(open_store(db)) as store:
        doc = {k: v for k, v in marker(1, kind="shots_fired", model=None).items() if k != "confidence"}
        store.add_markers([(Marker.from_dict(doc), 1)])
    assert main(["markers", "--db", db, "--kind", "gunshoot"]) == 2
    err = capsys.readouterr().err
    assert "unknown kind 'gunshoot'" in err and "gunshot" in err and "holster_draw" in err
    assert "shots_fired" in err  # kinds stored are kinds too
    assert main(["markers", "--db", db, "--kind", "shots_fired", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_since_accepts_dates_and_naive_times_as_utc() -> None:
    assert parse_since("2026-01-01") == parse_since("2026-01-01T00:00:00Z") == 1_767_225_600 * 10**9
    assert parse_since("2026-01-01T12:00") == parse_since("2026-01-01T13:00:00+01:00")
    assert parse_since("2026-01-01 12:00:00.5") == parse_since("2026-01-01T12:00:00.500Z")
    for bad in ("yesterday", "9999-01-01", "1969-12-31"):
        with pytest.raises(UsageError, match="--since"):
            parse_since(bad)
    text = subprocess.run([sys.executable, "-m", "bodycam.base.cli", "markers", "--help"], capture_output=True,
                          text=True, check=True).stdout
    assert "no offset means UTC" in " ".join(text.split())


def test_limit_shows_the_newest_and_says_when_cut(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ms = make_markers(tmp_path, 4, device="cam-b") + make_markers(tmp_path, 4, device="cam-a")
    with closing(open_store(db)) as store:
        store.add_markers([(m, WALL) for m in ms])
    assert main(["markers", "--db", db, "--limit", "3", "--json"]) == 0
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert [(r["device"], r["seq"]) for r in rows] == [("cam-b", 4), ("cam-a", 4), ("cam-b", 3)] or [
        (r["device"], r["seq"]) for r in rows
    ] == [("cam-a", 4), ("cam-b", 4), ("cam-a", 3)]
    assert [r["t"] for r in rows] == sorted((r["t"] for r in rows), reverse=True)
    assert "showing the newest 3" in out.err
    assert main(["markers", "--db", db, "--limit", "8"]) == 0
    assert "showing" not in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["markers", "--db", db, "--limit", "0"])
    assert info.value.code == 2 and "positive" in capsys.readouterr().err


def test_last_seen_is_not_reset_by_the_retained_status(db: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    ms = make_markers(tmp_path, 1)
    with closing(open_store(db)) as store:
        store.add_markers([(ms[0], WALL)])
        store.set_status("cam-01", "offline", None, WALL + 10**9)  # live: counts
        store.set_status("cam-01", "offline", None, WALL + 99 * 10**9, retained=True)  # replayed at restart
        store.set_status("cam-09", "online", None, WALL + 99 * 10**9, retained=True)
        devs = {d.device: d for d in store.devices()}
    assert devs["cam-01"].last_seen_ns == WALL + 10**9 and devs["cam-01"].state == "offline"
    assert devs["cam-09"].last_seen_ns == 0 and devs["cam-09"].state == "online"
    assert main(["devices", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "never" in next(line for line in out.splitlines() if line.startswith("cam-09"))
    assert main(["devices", "--db", db, "--json"]) == 0
    rows = {d["device"]: d for d in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["cam-09"]["last_seen"] is None and rows["cam-01"]["acked"] == 1


def test_control_characters_are_escaped_in_every_table(db: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    evil = "rec\x1b[2J\x1b[1;1H\rfake row\u202e"
    m = Marker.from_dict({**marker(1), "media": Media(evil, 0, 1.0, 30).to_dict()})
    with closing(open_store(db)) as store:
        store.add_markers([(m, WALL)])
        store.set_status("cam-01", "online\x1b[31m", "\x07", WALL)
    from bodycam.base.consumer import Consumer, ConsumerOptions

    with closing(open_store(db)) as store:
        Consumer(ConsumerOptions(url="mqtt://127.0.0.1:1"), store).handle("bodycam/cam-01/marker", b"\x1b[2Jjunk")
    for command in ("markers", "devices", "quarantine"):
        assert main([command, "--db", db]) == 0
        out = capsys.readouterr().out
        assert not any(c in out for c in "\x1b\r\x07\u202e"), (command, out)
    assert safe(evil) == "rec\\x1b[2J\\x1b[1;1H\\x0dfake row\\u202e"


def test_the_base_cli_needs_no_jsonschema() -> None:
    code = "import sys; sys.modules['jsonschema'] = None; from bodycam.base.cli import main; main(['--help'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "quarantine" in proc.stdout, proc.stderr


@pytest.mark.parametrize("command", ["markers", "devices", "quarantine"])
def test_query_commands_answer_while_listen_holds_the_write_lock(tmp_path: Path, command: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A query next to a running `listen` that is inside a write transaction (here: longer than the
    busy timeout) reads the committed state; opening the store takes no write lock when the schema
    is current."""
    import sqlite3

    db = tmp_path / "base.db"
    with closing(open_store(str(db))) as store:
        store.add_markers([(m, WALL) for m in make_markers(tmp_path, 3)])
    writer = sqlite3.connect(str(db), isolation_level=None, timeout=0.1)
    try:
        writer.execute("BEGIN IMMEDIATE")  # what listen holds while it stores a batch
        writer.execute("UPDATE devices SET last_seen_ns=last_seen_ns")
        assert main([command, "--db", str(db), "--json"]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        if command == "markers":
            assert len(out.splitlines()) == 3
        if command == "devices":
            assert json.loads(out)["markers"] == 3
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_an_old_database_still_gets_its_schema_when_opened(tmp_path: Path) -> None:
    """The read-only path is only taken for a current schema: a database without the newer tables
    and columns is brought up to date (write lock) as before."""
    import sqlite3

    db = tmp_path / "base.db"
    with closing(open_store(str(db))) as store:
        store.add_markers([(m, WALL) for m in make_markers(tmp_path, 2)])
    conn = sqlite3.connect(str(db))
    conn.execute("DROP INDEX markers_t")
    conn.commit()
    conn.close()
    with closing(open_store(str(db), create=False)) as store:
        assert store.count() == 2
    conn = sqlite3.connect(str(db))
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name='markers_t'").fetchone() is not None
    conn.close()
