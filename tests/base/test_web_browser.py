"""The dashboard in a real browser (Debian's chromium through playwright, no browser download):
real Mosquitto, `bodycam-base listen` and `serve` as processes, the simulator running the real
firmware on the example clip. Log in, see the banner (with sound) in two open pages, acknowledge it
in one (gone from both, stored with who/when), reload and restart `serve` (unacknowledged alerts
stay), find the marker in search, and a hostile marker shown as text, never run. The camera comes
online on the fleet page with its telemetry (battery from a simulated sysfs gauge, read by the
firmware's own reader), its shots are on the map, and the map's area search finds them.

Every wait is a condition (playwright's auto-waiting ``expect``), never a sleep. Set
``BODYCAM_SCREENSHOTS=docs`` to (re)write the README's screenshots (docs/dashboard-*.png).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _mqtt import free_port, wait_port
from test_base_integration import Procs, read_until
from test_web import HOSTILE, PW

from bodycam.base.cli import main as base_main
from bodycam.base.store import SqliteStore
from bodycam.base.web.db import WebDb

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "examples" / "range_demo.mp4"
TIMEOUT_MS = 120_000  # the simulator on a loaded 2-core machine


def start_serve(procs: Procs, db: Path, port: int) -> subprocess.Popen[str]:
    p = procs.start([sys.executable, "-m", "bodycam.base.cli", "serve", "--db", str(db), "--listen",
                     f"127.0.0.1:{port}"])
    wait_port(port, 30)
    return p


def shoot(page: Any, name: str) -> None:
    """A screenshot only where asked (BODYCAM_SCREENSHOTS), so the suite writes nothing into the tree."""
    where = os.environ.get("BODYCAM_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / f"dashboard-{name}.png"), full_page=True)


def publish_hostile(url: str, outbox: Path) -> str:
    """One gunshot marker from the firmware's own outbox and publisher, its free-text fields hostile."""
    from bodycam.device.clock import SystemClock
    from bodycam.device.uplink.markers import Location, MarkerDraft, ModelRef
    from bodycam.device.uplink.mqtt_config import MqttConfig
    from bodycam.device.uplink.mqtt_publisher import MqttPublisher
    from bodycam.device.uplink.outbox import Outbox

    clock = SystemClock()
    cfg = MqttConfig(url=url, reconnect_min_s=0.05, reconnect_max_s=0.5)
    with Outbox(outbox, "cam-evil", clock) as ob, MqttPublisher(cfg, ob, clock) as pub:
        m = ob.record(MarkerDraft(
            kind="gunshot", t_mono_ns=clock.monotonic_ns(), wall_ns=clock.wall_ns(), confidence=0.99,
            model=ModelRef(HOSTILE[:64], "1", "0" * 64), location=Location(51.5, -0.1, None, None, "3d", 0.0),
            extra={"evidence": {HOSTILE: 0.9}, "note": HOSTILE},
        ))
        pub.wake()
        assert pub.wait_drained(30)
    return m.id


def test_dashboard_end_to_end(tmp_path: Path, mosquitto: Any, procs: Procs, browser: Any,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import expect

    db = tmp_path / "base.db"
    monkeypatch.setattr("sys.stdin", io.StringIO(PW + "\n"))
    assert base_main(["user", "add", "olga", "--role", "operator", "--db", str(db)]) == 0
    listen = procs.start([sys.executable, "-m", "bodycam.base.cli", "listen", "--broker", mosquitto.url,
                          "--db", str(db)])
    assert listen.stdout is not None
    read_until(listen.stdout, "listening", 30)
    port = free_port()
    serve = start_serve(procs, db, port)
    site = f"http://127.0.0.1:{port}"

    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    page.goto(site + "/")
    expect(page).to_have_url(site + "/login?next=/")
    page.fill("input[name=name]", "olga")
    page.fill("input[name=password]", PW)
    page.click("button[type=submit]")
    expect(page).to_have_url(site + "/")
    expect(page.locator("body")).to_have_attribute("data-live", "yes")
    other = ctx.new_page()  # a second open page (same operator's other tab)
    other.goto(site + "/fleet")
    expect(other.locator("body")).to_have_attribute("data-live", "yes")

    gauge = tmp_path / "sysfs" / "power_supply" / "BAT0"  # the board's fuel gauge, as sysfs shows it
    gauge.mkdir(parents=True)
    (gauge / "capacity").write_text("87\n")
    (gauge / "status").write_text("Discharging\n")
    config = tmp_path / "cam.toml"
    config.write_text(f"[mqtt]\ntelemetry_interval_s = 1.0\n\n[telemetry_sources]\n"
                      f"power_supply_root = \"{gauge.parent}\"\nbattery = \"BAT0\"\n")
    fleet = ctx.new_page()
    fleet.goto(site + "/fleet")
    # --realtime: the camera is online for the clip's 20 s, as a real one would be (unpaced, a quiet
    # machine runs the clip in a few seconds and the fleet page, refreshed every 5 s, may never see it online)
    sim = procs.start(["bodycam-sim", "run", str(CLIP), "--realtime", "--broker", mosquitto.url, "--device-id",
                       "cam-07", "--config", str(config), "--out", str(tmp_path / "run"), "--quiet", "--json"])
    # the camera comes online with its telemetry (the fleet table refreshes itself every 5 s)
    cam = fleet.locator('tr[data-device="cam-07"]')
    try:
        expect(cam.locator("td.state")).to_have_text("online", timeout=TIMEOUT_MS)
    except AssertionError:
        alive = sim.poll() is None
        if not alive:
            sim.wait()
        raise AssertionError(f"cam-07 never shown online; the simulator {'runs' if alive else 'ended'}: "
                             f"{procs.stderr(sim) if not alive else ''}") from None
    expect(cam.locator("td.battery")).to_contain_text("87 %", timeout=30_000)
    expect(cam.locator("td.model")).to_contain_text(" ")  # the model's name and version
    expect(cam.locator("td.model")).not_to_contain_text("?")
    expect(cam.locator("td.queue")).not_to_have_text("?")
    expect(cam.locator("td.storage")).to_contain_text("%")
    expect(cam.locator("td.clock")).not_to_have_text("?")
    shoot(fleet, "fleet")
    # gunshot banners (fleet alerts, e.g. a clock not yet synchronised by GNSS, are banners too)
    banners = page.locator('.alert[data-kind="gunshot"]')
    expect(banners.first).to_be_visible(timeout=TIMEOUT_MS)
    expect(other.locator('.alert[data-kind="gunshot"]').first).to_be_visible(timeout=10_000)
    assert sim.wait(timeout=TIMEOUT_MS / 1000) == 0, procs.stderr(sim)
    report = json.loads(sim.stdout.read() if sim.stdout else "{}")
    shots = report["markers"]["gunshot"]  # what the firmware detected on the clip
    with SqliteStore(db, create=False) as store:
        stored = store.markers(device="cam-07", kind="gunshot")
        assert len(stored) == shots > 0, "every shot the firmware marked reached base"
        expect(banners).to_have_count(len(stored), timeout=10_000)
        expect(other.locator('.alert[data-kind="gunshot"]')).to_have_count(len(stored), timeout=10_000)
    assert len(stored) == shots
    first = banners.first
    expect(first).to_contain_text("GUNSHOT")
    expect(first).to_contain_text("cam-07")
    expect(first).to_have_attribute("data-sound", "played")
    latency = [float(b.get_attribute("data-shown-ms") or 0) - int(b.get_attribute("data-received-ns") or 0) / 1e6
               for b in banners.all()]
    print(f"marker stored -> banner (ms): {sorted(round(x) for x in latency)}")
    page.reload()  # a reload shows the same open alerts (and the latest markers below them)
    expect(banners).to_have_count(len(stored))
    shoot(page, "alerts")

    # acknowledge the newest one in the first page: gone from both pages, stored with who and when
    marker_id = first.get_attribute("data-marker")
    first.get_by_role("button", name="Acknowledge").click()
    expect(page.locator(f'.alert[data-marker="{marker_id}"]')).to_have_count(0)
    expect(other.locator(f'.alert[data-marker="{marker_id}"]')).to_have_count(0)
    with SqliteStore(db, create=False) as store:
        alert = WebDb(store).alert_of(str(marker_id))
        assert alert is not None and alert.acked_by == "olga" and alert.acked_ns
        assert any(r.action == "acknowledge" and r.user == "olga" for r in WebDb(store).audit_rows())
    left = len(stored) - 1

    # the rest survive a reload and a restart of the server
    other.reload()
    expect(other.locator('.alert[data-kind="gunshot"]')).to_have_count(left)
    serve.terminate()
    assert serve.wait(15) == 0, procs.stderr(serve)
    start_serve(procs, db, port)
    other.reload()
    expect(other.locator('.alert[data-kind="gunshot"]')).to_have_count(left)
    expect(other.locator(f'.alert[data-marker="{marker_id}"]')).to_have_count(0)

    # search: the shots of cam-07, newest first; the marker's page
    page.goto(site + "/markers?device=cam-07&kind=gunshot")
    rows = page.locator("table.markers tbody tr")
    expect(rows).to_have_count(len(stored))
    shoot(page, "markers")
    page.goto(f"{site}/markers/{marker_id}")
    expect(page.locator("#chain")).to_contain_text("ok")
    expect(page.locator("#alert-state")).to_contain_text("acknowledged by olga")
    shoot(page, "marker")

    # the map: every shot of cam-07 and the camera's last position, on the plain grid (no tile server)
    page.goto(site + "/map")
    expect(page.locator("#map")).to_have_attribute("data-ready", "yes")
    expect(page.locator("#map path.shot")).to_have_count(len(stored))
    expect(page.locator('#map path.device')).to_have_count(1)
    expect(page.locator("#map-status")).to_contain_text(f"1 device(s) and {len(stored)} shot marker(s)")
    assert page.evaluate("document.querySelectorAll('#map path.leaflet-interactive').length") >= len(stored) + 1
    assert page.evaluate("document.querySelectorAll('img.leaflet-tile').length") == 0  # no tiles fetched
    shoot(page, "map")
    page.locator("#map path.shot").last.click()  # the top one (the shots overlap)
    expect(page.locator(".leaflet-popup-content")).to_contain_text("GUNSHOT cam-07")
    page.click("#search-area")  # the map's view as the markers' area filter
    expect(page).to_have_url(re.compile(r"/markers\?area="))
    expect(page.locator("table.markers tbody tr.kind-gunshot")).to_have_count(len(stored))

    # a hostile marker: shown as text, nothing runs (the banner, the list, the marker page)
    evil = publish_hostile(mosquitto.url, tmp_path / "evil.db")
    other.goto(site + "/fleet")
    banner = other.locator(f'.alert[data-marker="{evil}"]')
    expect(banner).to_contain_text("<script>window.pwned=1</script>", timeout=30_000)
    for path, text in (("/markers", "cam-evil"), (f"/markers/{evil}", "<script>window.pwned=1</script>")):
        other.goto(site + path)
        expect(other.locator("main")).to_contain_text(text)
        expect(other.locator(f'.alert[data-marker="{evil}"] .sources')).to_contain_text("<img src=x")
        assert other.evaluate("typeof window.pwned") == "undefined"
    other.goto(site + "/fleet")
    expect(other.locator("table.fleet")).to_contain_text("cam-07")
    expect(other.locator("table.fleet")).to_contain_text("cam-evil")
    assert other.evaluate("typeof window.pwned") == "undefined"
    ctx.close()
