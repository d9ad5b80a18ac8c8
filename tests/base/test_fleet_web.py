"""The fleet page, the fleet alerts, the quarantine page, the map data and the markers' area filter
(issue 14), on SQLite and PostgreSQL, with the consumer's own path for telemetry and status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_telemetry import payload
from test_web import HOSTILE, WALL, WebApp, login, make_markers

from bodycam.base.consumer import Consumer, ConsumerOptions
from bodycam.base.web.fleet import FleetConfig, FleetWatch
from bodycam.device.clock import VirtualClock
from bodycam.device.uplink.markers import JSON

S = 1_000_000_000


@pytest.fixture
def web(db: str, tmp_path: Path) -> Iterator[WebApp]:
    a = WebApp(db, tmp_path)
    try:
        yield a
    finally:
        a.store.close()


class Fleet:
    """A consumer feeding the store (as ``listen`` does) and a watch evaluating it (as ``serve`` does)."""

    def __init__(self, web: WebApp) -> None:
        self.web = web
        self.clock = VirtualClock(wall_epoch_ns=WALL)
        self.consumer = Consumer(ConsumerOptions(url="mqtt://127.0.0.1:1"), web.store, clock=self.clock)
        self.watch = FleetWatch(web.web, FleetConfig(), lambda: self.clock.wall_ns())

    def tel(self, device: str = "cam-01", *, battery: int | None = 80, free: int = 50, synced: bool = True,
            recording: bool = False, **over: JSON) -> None:
        sources: dict[str, JSON] = {"storage": {"free_bytes": free, "total_bytes": 100}, "cpu_temp_c": 55.0}
        if battery is not None:
            sources["battery"] = {"percent": battery, "status": "Discharging"}
        body = payload(self.clock, device=device, sources=sources, recording=recording,
                       clock={"synced": synced, "source": "gnss" if synced else "none", "offset_ms": None}, **over)
        assert self.consumer.handle(f"bodycam/{device}/telemetry", body) == "telemetry"

    def status(self, device: str, state: str) -> None:
        body = json.dumps({"schema": "bodycam.status/1", "state": state, "device": device, "t": "2026-01-01T00:00:00.000Z"})
        assert self.consumer.handle(f"bodycam/{device}/status", body.encode()) == "status"

    def check(self) -> tuple[list[str], list[str]]:
        self.clock.advance_ns(2 * S)
        return self.watch.check()

    def open_kinds(self) -> list[tuple[str, str]]:
        return sorted((a.device, a.kind) for a in self.web.web.open_alerts())


def test_a_fleet_alert_is_raised_once_per_episode_and_cleared(web: WebApp) -> None:
    f = Fleet(web)
    f.status("cam-01", "online")
    f.tel(battery=80)
    assert f.check() == ([], []) and f.open_kinds() == []
    f.tel(battery=12)
    raised, _ = f.check()
    assert len(raised) == 1 and f.open_kinds() == [("cam-01", "low_battery")]
    for pct in (11, 10, 18, 20):  # every message repeats it; up to threshold + 5 it is the same episode
        f.tel(battery=pct)
        assert f.check() == ([], [])
    assert f.open_kinds() == [("cam-01", "low_battery")]
    banner = web.web.open_alerts()[0]
    assert json.loads(banner.body)["detail"] == "battery 12 %"  # the banner's text: the episode's start
    f.tel(battery=21)
    raised, cleared = f.check()
    assert raised == [] and len(cleared) == 1 and f.open_kinds() == []
    audit = [r for r in web.web.audit_rows() if r.action == "alert_cleared"]
    assert [(r.user, r.detail) for r in audit] == [("system", "low_battery on cam-01 ended")]
    f.tel(battery=9)  # a new episode: a new alert
    assert len(f.check()[0]) == 1 and f.open_kinds() == [("cam-01", "low_battery")]
    # acknowledged while it lasts: gone, and not raised again by the next messages
    n = web.web.open_alerts()[0].n
    assert web.web.acknowledge(n, "olga", f.clock.wall_ns(), "127.0.0.1")
    f.tel(battery=8)
    assert f.check() == ([], []) and f.open_kinds() == []
    assert f.watch.raised == 2 and f.watch.cleared == 1


def test_storage_clock_and_offline_while_recording(web: WebApp) -> None:
    f = Fleet(web)
    f.status("cam-01", "online")
    f.status("cam-02", "online")
    f.tel("cam-01", free=3, synced=False)
    f.tel("cam-02", recording=True, battery=None)
    f.check()
    assert f.open_kinds() == [("cam-01", "clock_unsynced"), ("cam-01", "storage_full")]
    f.tel("cam-01", free=6, synced=True)  # 6 % is still within the storage episode's hysteresis (5 + 2)
    _, cleared = f.check()
    assert [c.split(":")[1] for c in cleared] == ["clock_unsynced"]
    f.tel("cam-01", free=50, storage_alarm=True)  # the camera says only protected footage is left
    assert f.check() == ([], []) and ("cam-01", "storage_full") in f.open_kinds()
    f.status("cam-02", "offline")  # the Last Will while its last telemetry said recording
    raised, _ = f.check()
    assert [r.split(":")[1] for r in raised] == ["offline_while_recording"]
    f.check()
    assert f.open_kinds() == [("cam-01", "storage_full"), ("cam-02", "offline_while_recording")]
    f.status("cam-02", "online")
    f.tel("cam-01", free=50)
    f.check()
    assert f.open_kinds() == []


def test_two_watches_raise_one_alert(web: WebApp) -> None:
    """Several ``serve`` instances on one database: the episode row makes the alert once."""
    f = Fleet(web)
    other = FleetWatch(web.web, FleetConfig(), lambda: f.clock.wall_ns() + 1)
    f.status("cam-01", "online")
    f.tel(battery=5)
    f.clock.advance_ns(S)
    assert len(f.watch.check()[0]) == 1 and other.check() == ([], [])
    assert f.open_kinds() == [("cam-01", "low_battery")]


def fleet_page(web: WebApp) -> str:
    with web.client() as c:
        login(c)
        r = c.get("/fleet")
        assert r.status_code == 200
        return r.text


def test_the_fleet_page_shows_telemetry_stale_alarming_and_unknown_devices(web: WebApp) -> None:
    f = Fleet(web)
    f.status("cam-01", "online")
    f.tel("cam-01", battery=77, recording=True, queue_depth=3)
    f.tel("cam-02", battery=9, free=2)
    web.now = f.clock.wall_ns() + 5 * S
    f.consumer.handle("bodycam/cam-99/marker", b'{"not": "a marker"}')  # a device base never stored anything of
    f.consumer.handle("bodycam/cam-01/marker", b"garbage")
    f.consumer.handle("bodycam/<b>/marker", b"garbage")  # not even a device id
    text = fleet_page(web)
    row = text[text.index('data-device="cam-01"'):]
    row = row[: row.index("</tr>")]
    assert "online" in row and "recording" in row and "77 %" in row and "55.0 °C" in row and "muzzle 3" in row
    assert 'class="queue"' in row and ">3<" in row and "gnss" in row and "stale" not in row
    cam2 = text[text.index('data-device="cam-02"'):]
    cam2 = cam2[: cam2.index("</tr>")]
    assert 'class="battery alarm"' in cam2 and 'class="storage alarm"' in cam2
    unknown = text[text.index('data-device="cam-99"'):]
    unknown = unknown[: unknown.index("</tr>")]
    assert "unknown device" in unknown and "rejected_invalid" in unknown and 'href="/quarantine?device=cam-99"' in unknown
    assert "1 quarantined message(s) without a valid device id" in text
    web.now += 60 * S  # no telemetry for a minute: stale
    text = fleet_page(web)
    row = text[text.index('data-device="cam-01"'):]
    assert 'class="online stale"' in row[: row.index(">")]


def test_hostile_telemetry_and_quarantine_fields_are_text(web: WebApp) -> None:
    f = Fleet(web)
    f.tel("cam-01", detector_alarm=HOSTILE, delivery={"alarm": HOSTILE, "unconfirmed": 0},
          model={"name": HOSTILE[:64], "version": "<i>1</i>", "sha256": "0" * 64}, detector="<b>x</b>")
    f.consumer.handle("bodycam/cam-01/telemetry", HOSTILE.encode())  # not JSON: quarantined, payload shown
    f.consumer.handle("bodycam/cam-66/marker", json.dumps({"device": HOSTILE}).encode())
    with web.client() as c:
        login(c)
        for path in ("/fleet", "/quarantine", "/quarantine?device=cam-01", "/map"):
            r = c.get(path)
            assert r.status_code == 200, path
            assert "<script>window.pwned" not in r.text and 'onerror="window' not in r.text, path
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in c.get("/fleet").text
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in c.get("/quarantine").text
        data = c.get("/map.json")
        assert data.headers["content-type"].startswith("application/json")


def test_map_data_and_the_area_filter(web: WebApp) -> None:
    shots = make_markers(web.tmp, ["manual", "gunshot", "gunshot"])  # shots at 51.5, -0.12
    far = make_markers(web.tmp, ["gunshot"], device="cam-02")
    web.store.add_markers([(m, WALL) for m in [*shots, *far]])
    f = Fleet(web)
    f.status("cam-01", "online")
    f.tel("cam-01", location={"lat": 48.85, "lon": 2.35, "alt_m": None, "hdop": 1.0, "fix": "3d", "age_s": 1.0})
    web.now = WALL + 3600 * S
    with web.client() as c:
        login(c)
        page = c.get("/map")
        assert page.status_code == 200 and "/static/leaflet/leaflet.min.js" in page.text
        assert "plain latitude/longitude grid" in page.text  # no --tile-url
        data: dict[str, Any] = c.get("/map.json").json()
        devices = {d["device"]: d for d in data["devices"]}
        assert devices["cam-01"]["location"] == {"lat": 48.85, "lon": 2.35, "alt_m": None, "hdop": 1.0, "fix": "3d",
                                                 "age_s": 1.0}
        assert devices["cam-01"]["source"] == "telemetry"
        assert devices["cam-02"]["location"] == {"lat": 51.5, "lon": -0.12}  # its last marker's fix
        assert sorted(s["id"] for s in data["shots"]) == sorted(m.id for m in [shots[1], shots[2], far[0]])
        assert c.get("/map.json?hours=1").json()["shots"] != []
        web.now = WALL + 48 * 3600 * S
        login(c)  # the session of an hour ago has expired
        assert c.get("/map.json").json()["shots"] == []  # older than 24 h
        r = c.get("/markers", params={"area": "51.4,-0.2,51.6,0.0", "device": "cam-01"})
        assert r.status_code == 200 and r.text.count('<tr class="kind-gunshot">') == 2
        r = c.get("/markers", params={"area": "40,-10,45,0"})
        assert r.status_code == 200 and "No markers." in r.text
        for bad in ("1,2,3", "91,0,92,1", "10,0,5,1", "a,b,c,d"):
            r = c.get("/markers", params={"area": bad})
            assert r.status_code == 400 and "area" in r.text, bad


def test_a_recording_stop_marker_newer_than_the_telemetry_wins(web: WebApp) -> None:
    """A camera that stopped recording (marker, QoS 1) and then went offline is not 'offline while recording'."""
    f = Fleet(web)
    f.status("cam-01", "online")
    f.tel(recording=True)  # t = WALL
    stop = make_markers(web.tmp, ["recording_stop"])  # t = WALL + 1 s, on the same device clock
    web.store.add_markers([(stop[0], f.clock.wall_ns())])
    f.status("cam-01", "offline")
    assert f.check() == ([], [])
    f.tel(recording=True)  # telemetry newer than the marker: recording again
    assert [r.split(":")[1] for r in f.check()[0]] == ["offline_while_recording"]


def test_a_tile_server_is_the_one_other_image_source(web: WebApp) -> None:
    from starlette.testclient import TestClient

    from bodycam.base.web.app import WebConfig, create_app

    cfg = WebConfig(now_ns=lambda: web.now, tile_url="https://{s}.tiles.example.org/{z}/{x}/{y}.png",
                    tile_attribution="<b>© tiles</b>")
    with TestClient(create_app(web.web, cfg), follow_redirects=False) as c:
        login(c)
        r = c.get("/map")
        csp = r.headers["content-security-policy"]
        assert "img-src 'self' data: https://*.tiles.example.org;" in csp and "script-src 'self';" in csp
        assert 'data-tiles="https://{s}.tiles.example.org/{z}/{x}/{y}.png"' in r.text
        assert 'data-attribution="&lt;b&gt;© tiles&lt;/b&gt;"' in r.text and "plain latitude" not in r.text


def test_serve_refuses_bad_fleet_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bodycam.base.cli import main

    db = str(tmp_path / "b.db")
    assert main(["serve", "--db", db, "--tile-url", "ftp://tiles/{z}/{x}/{y}.png"]) == 2
    assert "--tile-url" in capsys.readouterr().err
    assert main(["serve", "--db", db, "--battery-low-pct", "150"]) == 2
    assert "percentages" in capsys.readouterr().err


def test_an_older_database_gets_marker_positions(db: str, tmp_path: Path) -> None:
    """A markers table from before lat/lon: the columns are added and filled from the stored bodies."""
    ms = make_markers(tmp_path, ["manual", "gunshot"])  # the gunshot is at 51.5, -0.12
    old = ("CREATE TABLE markers (id TEXT PRIMARY KEY, device TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL,"
           " t TEXT NOT NULL, t_ns BIGINT NOT NULL, received_ns BIGINT NOT NULL, digest TEXT NOT NULL,"
           " prev TEXT NOT NULL, chain TEXT NOT NULL, body TEXT NOT NULL)")
    rows = [(m.id, m.device, m.seq, m.kind, m.t, m.t_ns, 1, m.digest(), m.prev, "ok", m.to_json().decode()) for m in ms]
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(old)
            for r in rows:
                conn.execute("INSERT INTO markers VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", r)
    else:
        import sqlite3

        conn = sqlite3.connect(db)
        with conn:
            conn.execute(old)
            conn.executemany("INSERT INTO markers VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
        conn.close()
    from bodycam.base.cli import open_store

    store = open_store(db)
    try:
        assert [s.marker.id for s in store.markers(area=(51.4, -0.2, 51.6, 0.0))] == [ms[1].id]
        assert store.markers(area=(-10, 170, 10, -170)) == []  # across the antimeridian: nothing there
        assert len(store.markers()) == 2
    finally:
        store.close()


def test_the_watch_reads_no_marker_counts(web: WebApp) -> None:
    """The watch (every 2 s) needs devices + latest telemetry; the recording marker only for offline
    devices whose telemetry says recording, and it agrees with the page's full view."""
    from bodycam.base.web.fleet import fleet_views, watch_views

    f = Fleet(web)
    for d in ("cam-01", "cam-02", "cam-03"):
        f.status(d, "online")
    f.tel("cam-01", recording=True, battery=5)
    f.tel("cam-02", recording=True)
    f.tel("cam-03", synced=False)
    f.status("cam-02", "offline")
    now = f.clock.wall_ns()
    light = {v.device: v.conditions for v in watch_views(web.web, FleetConfig(), now)}
    full = {v.device: v.conditions for v in fleet_views(web.web, FleetConfig(), now)[0]}
    assert light == full and set(light["cam-01"]) == {"low_battery"}
    assert set(light["cam-02"]) == {"offline_while_recording"} and set(light["cam-03"]) == {"clock_unsynced"}
