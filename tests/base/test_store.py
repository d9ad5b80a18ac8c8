"""Base storage: idempotent by id, hash-chain verification, gaps, device status; the CLI queries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bodycam.base.cli import main
from bodycam.base.store import SqliteStore
from bodycam.device.clock import VirtualClock
from bodycam.device.uplink.markers import Marker, MarkerDraft, Media, ModelRef
from bodycam.device.uplink.outbox import Outbox

WALL = 1_764_072_000_000_000_000


def make_markers(tmp_path: Path, n: int, device: str = "cam-01") -> list[Marker]:
    clock = VirtualClock(wall_epoch_ns=WALL)
    with Outbox(tmp_path / f"{device}.db", device, clock, fsync="normal") as ob:
        out = []
        for i in range(n):
            clock.advance_ns(1_000_000_000)
            kind = "gunshot" if i % 2 else "manual"
            out.append(
                ob.record(
                    MarkerDraft(
                        kind=kind,
                        t_mono_ns=clock.monotonic_ns(),
                        wall_ns=clock.wall_ns(),
                        confidence=0.9 if kind == "gunshot" else None,
                        model=ModelRef("muzzle", "1", "0" * 64) if kind == "gunshot" else None,
                        media=Media("rec-1", 0, float(i), i * 30),
                    )
                )
            )
        return out


def test_idempotent_chain_and_gaps(tmp_path: Path) -> None:
    ms = make_markers(tmp_path, 6)
    with SqliteStore(tmp_path / "base.db") as store:
        r = store.add_markers([(ms[0], 1), (ms[1], 2)])
        assert [x.stored for x in r] == [True, True] and [x.chain for x in r] == ["ok", "ok"]
        assert store.add_markers([(ms[1], 3)])[0].stored is False  # duplicate
        r4 = store.add_markers([(ms[4], 4)])[0]  # 3 and 4 missing so far
        assert r4.gap == (3, 4) and r4.chain == "unknown"
        assert store.devices()[0].missing == 2
        store.add_markers([(ms[3], 5), (ms[2], 6), (ms[5], 7)])
        chains = {s.marker.seq: s.chain for s in store.markers()}
        assert chains == {1: "ok", 2: "ok", 3: "ok", 4: "ok", 5: "ok", 6: "ok"}  # settled when 4 arrived
        d = store.devices()[0]
        assert (d.markers, d.max_seq, d.missing, d.chain_broken) == (6, 6, 0, 0)
        assert store.count() == 6


def test_broken_chain_is_detected(tmp_path: Path) -> None:
    ms = make_markers(tmp_path, 3)
    forged = Marker.from_dict({**ms[1].to_dict(), "prev": "f" * 64})
    with SqliteStore(tmp_path / "base.db") as store:
        store.add_markers([(ms[0], 1), (forged, 2), (ms[2], 3)])
        chains = [s.chain for s in store.markers()]
        # a tampered seq 2 breaks the link into it and the link out of it (seq 3 hashes the genuine seq 2)
        assert chains == ["ok", "broken", "broken"]
        assert store.devices()[0].chain_broken == 2


def test_cli_markers_and_devices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ms = make_markers(tmp_path, 4) + make_markers(tmp_path, 2, device="cam-02")
    db = tmp_path / "base.db"
    with SqliteStore(db) as store:
        store.add_markers([(m, WALL) for m in ms])
        store.set_status("cam-01", "offline", ms[0].t, WALL)
    assert main(["markers", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["DEVICE", "SEQ", "TIME", "(UTC)"]
    assert len(out.splitlines()) == 7 and "rec-1@1.000s" in out
    assert main(["markers", "--db", str(db), "--device", "cam-01", "--kind", "gunshot", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in rows] == [4, 2] and all(r["_chain"] == "ok" for r in rows)
    assert main(["markers", "--db", str(db), "--since", ms[3].t, "--json"]) == 0
    assert {json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()} == {ms[3].id}
    assert main(["devices", "--db", str(db), "--json"]) == 0
    devs = {d["device"]: d for d in map(json.loads, capsys.readouterr().out.splitlines())}
    assert devs["cam-01"]["state"] == "offline" and devs["cam-02"]["markers"] == 2
    assert main(["devices", "--db", str(db)]) == 0
    assert "cam-02" in capsys.readouterr().out
    assert main(["markers", "--db", str(db), "--since", "yesterday"]) == 2
    assert "--since" in capsys.readouterr().err
