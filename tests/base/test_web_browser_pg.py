"""The dashboard in a real browser on the fleet store (issue 14's acceptance run): Debian's chromium
through playwright, a real Mosquitto, a real PostgreSQL, `bodycam-base listen` and `serve --broker` as
processes, and two simulated cameras (`bodycam-sim run`, the real firmware) placed by their simulated
GNSS 3 km apart.

The operator logs in; the quiet camera comes online on the fleet page; the camera with shots runs
the example clip and its gunshots raise banners; one is acknowledged (who/when stored in PostgreSQL);
the shots are on the map and in the markers search; the quiet camera is too far for peer activation,
so the operator starts it from the fleet page's chooser, and its `recording_start` reaches base naming
the operator (`base:olga`), audited. (`test_web_browser.py` runs the same pages on SQLite with the
reload/restart, two-page and hostile-marker checks.)
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from _clips import make_plain_clip
from _mqtt import free_port, wait_port
from test_base_integration import Procs, read_until
from test_web import PW
from test_web_browser import TIMEOUT_MS, shoot

from bodycam.base.cli import main as base_main

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "examples" / "range_demo.mp4"
HERE = (52.2053, 0.1218)
FAR = (HERE[0] + 3000 / 111_195.0, HERE[1])  # 3 km north: outside the peer radius
T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def rows(url: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql, args).fetchall())


def markers(url: str, device: str, kind: str) -> list[dict[str, Any]]:
    return [json.loads(r[0]) for r in rows(url, "SELECT body FROM markers WHERE device=%s AND kind=%s ORDER BY seq",
                                           (device, kind))]


def test_dashboard_on_postgresql_alert_ack_map_search_and_a_recording_started(
        tmp_path: Path, mosquitto: Any, procs: Procs, browser: Any, pg_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import expect

    monkeypatch.setattr("sys.stdin", io.StringIO(PW + "\n"))
    assert base_main(["user", "add", "olga", "--role", "operator", "--db", pg_url]) == 0
    listen = procs.start([sys.executable, "-m", "bodycam.base.cli", "listen", "--broker", mosquitto.url,
                          "--db", pg_url, "--peer-radius-m", "500"])
    assert listen.stdout is not None
    read_until(listen.stdout, "listening", 60)
    port = free_port()
    serve = procs.start([sys.executable, "-m", "bodycam.base.cli", "serve", "--db", pg_url, "--listen",
                         f"127.0.0.1:{port}", "--broker", mosquitto.url])
    wait_port(port, 60)
    site = f"http://127.0.0.1:{port}"

    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    page.goto(site + "/fleet")
    expect(page).to_have_url(site + "/login?next=/fleet")
    page.fill("input[name=name]", "olga")
    page.fill("input[name=password]", PW)
    page.click("button[type=submit]")
    expect(page).to_have_url(site + "/fleet")
    expect(page.locator("body")).to_have_attribute("data-live", "yes")

    # the quiet camera comes online (the fleet table refreshes itself)
    quiet = make_plain_clip(tmp_path / "quiet.mp4", seconds=120.0, size=(320, 180), audio=False)
    press = tmp_path / "press.json"  # a marker press: base learns where the camera is from its marker too
    press.write_text(json.dumps({"events": [{"t_s": 1.5, "event": "marker"}]}))
    cam_far = procs.start(["bodycam-sim", "run", str(quiet), "--broker", mosquitto.url, "--device-id", "cam-far",
                           "--out", str(tmp_path / "cam-far"), "--start-time", "now", "--gnss-at",
                           f"{FAR[0]},{FAR[1]}", "--realtime", "--scenario", str(press), "--quiet", "--json"])
    far_row = page.locator('tr[data-device="cam-far"]')
    expect(far_row.locator("td.state")).to_have_text("online", timeout=TIMEOUT_MS)
    wait_for("cam-far's position at base", lambda: rows(
        pg_url, "SELECT 1 FROM devices WHERE device='cam-far' AND pos_lat IS NOT NULL"), 60)

    # the camera with shots: banners on the open page
    alerts = ctx.new_page()
    alerts.goto(site + "/")
    expect(alerts.locator("body")).to_have_attribute("data-live", "yes")
    cam_a = procs.start(["bodycam-sim", "run", str(SHOTS), "--broker", mosquitto.url, "--device-id", "cam-a",
                         "--out", str(tmp_path / "cam-a"), "--start-time", "now", "--gnss-at", f"{HERE[0]},{HERE[1]}",
                         "--quiet", "--json"])
    banners = alerts.locator('.alert[data-kind="gunshot"]')
    expect(banners.first).to_be_visible(timeout=TIMEOUT_MS)
    assert cam_a.wait(timeout=TIMEOUT_MS / 1000) == 0, procs.stderr(cam_a)
    report = json.loads(cam_a.stdout.read() if cam_a.stdout else "{}")
    stored = wait_for("every gunshot of cam-a in PostgreSQL",
                      lambda: (s if len(s := markers(pg_url, "cam-a", "gunshot")) == report["markers"]["gunshot"]
                               else None), 30)
    expect(banners).to_have_count(len(stored), timeout=10_000)
    first = banners.first
    expect(first).to_contain_text("GUNSHOT")
    expect(first).to_contain_text("cam-a")
    expect(first).to_have_attribute("data-sound", "played")
    shoot(alerts, "pg-alerts")

    # acknowledge one: gone from the page, who/when in PostgreSQL, audited
    marker_id = str(first.get_attribute("data-marker"))
    first.get_by_role("button", name="Acknowledge").click()
    expect(alerts.locator(f'.alert[data-marker="{marker_id}"]')).to_have_count(0)
    acked = rows(pg_url, "SELECT acked_by, acked_ns FROM web_alerts WHERE marker_id=%s", (marker_id,))
    assert acked and acked[0][0] == "olga" and acked[0][1]
    assert rows(pg_url, "SELECT 1 FROM web_audit WHERE action='acknowledge' AND user_name='olga'")
    expect(banners).to_have_count(len(stored) - 1)

    # search and the marker's page
    alerts.goto(site + "/markers?device=cam-a&kind=gunshot")
    expect(alerts.locator("table.markers tbody tr")).to_have_count(len(stored))
    alerts.goto(f"{site}/markers/{marker_id}")
    expect(alerts.locator("#chain")).to_contain_text("ok")
    expect(alerts.locator("#alert-state")).to_contain_text("acknowledged by olga")

    # the map: both cameras' positions and every shot (plain grid, no tile server)
    alerts.goto(site + "/map")
    expect(alerts.locator("#map")).to_have_attribute("data-ready", "yes")
    expect(alerts.locator("#map path.shot")).to_have_count(len(stored))
    expect(alerts.locator("#map path.device")).to_have_count(2)

    # cam-far was 3 km away: no peer activation reached it; the operator starts it from the fleet page
    assert markers(pg_url, "cam-far", "recording_start") == []
    assert cam_far.poll() is None, "cam-far is still running its clip"
    page.goto(site + "/fleet")
    page.select_option("#record-form select[name=device]", "cam-far")
    page.click("#record-form button[type=submit]")
    expect(page.locator("#record-result")).to_contain_text("Sent to cam-far (online)")
    started = wait_for("cam-far's recording_start at base", lambda: markers(pg_url, "cam-far", "recording_start"), 60)
    assert [m["extra"]["reason"] for m in started] == ["base:olga"]
    assert started[0]["media"] is not None and started[0]["media"]["segment"] == 0  # with the pre-event buffer
    assert rows(pg_url, "SELECT user_name, action, target FROM web_audit WHERE action='record'") == [
        ("olga", "record", "device cam-far")]
    assert rows(pg_url, "SELECT device, reason, issued_by FROM peer_commands WHERE issued_by='olga'") == [
        ("cam-far", "base:olga", "olga")]
    assert serve.poll() is None and listen.poll() is None
    ctx.close()
