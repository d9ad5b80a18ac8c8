"""One review in a real browser (Debian's chromium through playwright): a recording the firmware made,
offloaded into base, played in the review page's <video> (H.264 served with range requests, the
markers as WebVTT chapters), stepped by frames and labelled with the keyboard shortcuts; the labels
land in base's store with who and when, the video is audited as viewed, a hostile note shows as text.

Every wait is a condition (playwright's ``expect``), never a sleep. ``BODYCAM_SCREENSHOTS=docs``
(re)writes docs/dashboard-review.png.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest
from _mqtt import free_port, wait_port
from _offload import DEVICE
from _review import make_recordings, make_review_base, offload
from test_base_integration import Procs
from test_web import HOSTILE, PW
from test_web_browser import shoot

from bodycam.base.cli import main as base_main
from bodycam.base.custody import CustodyLog
from bodycam.base.review_labels import LabelStore
from bodycam.base.store import SqliteStore

pytestmark = pytest.mark.integration

TRUTH_SHOTS = [88, 91, 266, 448, 451, 456]


def test_one_review_in_the_browser(tmp_path: Path, procs: Procs, browser: Any,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import expect

    data = make_recordings(tmp_path / "cam", ("2026-03-01T10:00:00.000Z",))
    db = tmp_path / "base.db"
    base = make_review_base(str(db), tmp_path / "evidence", data)
    (rec,) = offload(base, data)
    base.close()
    monkeypatch.setattr("sys.stdin", io.StringIO(PW + "\n"))
    assert base_main(["user", "add", "ines", "--role", "supervisor", "--db", str(db)]) == 0
    assert base_main(["custody", "keygen", str(tmp_path / "custody.key")]) == 0
    port = free_port()
    procs.start([sys.executable, "-m", "bodycam.base.cli", "serve", "--db", str(db), "--listen", f"127.0.0.1:{port}",
                 "--evidence", str(tmp_path / "evidence"), "--evidence-reserve-mb", "0",
                 "--custody-key", str(tmp_path / "custody.key")])
    wait_port(port, 30)
    site = f"http://127.0.0.1:{port}"

    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.goto(site + "/review")
    page.fill("input[name=name]", "ines")
    page.fill("input[name=password]", PW)
    page.click("button[type=submit]")
    expect(page).to_have_url(site + "/review")
    page.click(f'tr[data-recording="{rec}"] a')
    review = page.locator("#review")
    expect(review).to_have_attribute("data-ready", "yes")
    expect(review).to_have_attribute("data-video", "loaded", timeout=30_000)  # chromium decodes the H.264
    assert page.evaluate("document.getElementById('video').duration") == pytest.approx(20.0, abs=0.1)
    cues = (tmp_path / "evidence" / "recordings" / DEVICE / rec / "chapters.vtt").read_text().count(" --> ")
    expect(review).to_have_attribute("data-chapters", str(cues))  # the markers' WebVTT chapters, one per instant
    expect(page.locator("ul.chapters li").first).to_contain_text("recording_start")
    rows = page.locator("table.detections tbody tr")
    expect(rows).to_have_count(6)
    assert [int(t) for t in rows.locator("td.frame").all_text_contents()] == TRUTH_SHOTS
    frame = page.locator("#frame")

    # play from a marker's chapter, then step by frames with the keyboard
    page.locator("ul.chapters button").nth(1).click()  # 00:00:03.033, the second shot
    expect(frame).to_have_text("91")
    rows.nth(0).get_by_role("button", name="Show frame").click()
    expect(frame).to_have_text("88")
    page.keyboard.press(".")
    expect(frame).to_have_text("89")
    page.keyboard.press(",")
    page.keyboard.press(",")
    expect(frame).to_have_text("87")
    page.keyboard.press("Shift+>")
    expect(frame).to_have_text("97")
    # verdicts: c confirms the selected detection, n/p select, x rejects, m moves it to this frame
    page.keyboard.press("p")  # wraps to the last detection
    expect(frame).to_have_text("456")
    page.keyboard.press("n")
    expect(frame).to_have_text("88")
    page.keyboard.press("c")
    expect(review).to_have_attribute("data-labels", "1")
    page.keyboard.press("n")
    expect(frame).to_have_text("91")
    page.keyboard.press("x")
    expect(review).to_have_attribute("data-labels", "2")
    page.keyboard.press("n")
    expect(frame).to_have_text("266")
    page.keyboard.press(".")
    page.keyboard.press(".")
    expect(frame).to_have_text("268")
    page.keyboard.press("m")
    expect(review).to_have_attribute("data-labels", "3")
    expect(rows.nth(2).locator("td.verdict")).to_have_text("moved to 268 by ines")
    # a missed shot at the current frame, and a shot-free span (s at its start, s at its end)
    page.keyboard.press("Shift+>")
    page.keyboard.press("Shift+>")
    page.keyboard.press("Shift+>")
    page.keyboard.press(".")
    page.keyboard.press(".")
    expect(frame).to_have_text("300")
    page.keyboard.press("a")
    expect(review).to_have_attribute("data-labels", "4")
    page.evaluate("v => { v.pause(); v.currentTime = 500.5 / 30; }", page.locator("#video").element_handle())
    expect(frame).to_have_text("500")
    page.keyboard.press("s")
    expect(page.locator("#span-state")).to_contain_text("from frame 500")
    page.evaluate("v => { v.currentTime = 540.5 / 30; }", page.locator("#video").element_handle())
    expect(frame).to_have_text("540")
    page.keyboard.press("s")
    expect(review).to_have_attribute("data-labels", "5")
    expect(page.locator("table.labels tr.label-shot_free td.frames")).to_have_text("500–540")
    # a note with markup, sent through the API as any client would: shown as text, nothing runs
    status = page.evaluate(
        """([url, note]) => fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json',
             'X-CSRF-Token': document.querySelector('meta[name=csrf]').content},
             body: JSON.stringify({kind: 'confirm', marker: document.querySelector(
               'table.detections tbody tr:nth-child(2)').dataset.marker, note: note})}).then(r => r.status)""",
        [f"/api/review/v1/recordings/{DEVICE}/{rec}/labels", HOSTILE])
    assert status == 201
    page.reload()
    expect(review).to_have_attribute("data-ready", "yes")
    expect(page.locator("table.labels td.note").filter(has_text="<script>")).to_have_text(HOSTILE)
    assert page.evaluate("typeof window.pwned") == "undefined"
    rows.nth(0).get_by_role("button", name="Show frame").click()
    expect(frame).to_have_text("88")
    page.wait_for_function("() => { const v = document.getElementById('video'); "
                           "return !v.seeking && v.readyState >= 2; }")  # the frame is painted
    shoot(page, "review")
    page.goto(site + "/review")
    expect(page.locator(f'tr[data-recording="{rec}"] td.state')).to_have_text("to review")  # 3 of 6 decided
    ctx.close()

    with SqliteStore(db, create=False) as store:
        now = LabelStore(store).current(DEVICE, rec)
        assert [(lb.kind, lb.frame, lb.end_frame, lb.by) for lb in now] == [
            ("confirm", 88, None, "ines"), ("move", 268, None, "ines"), ("add", 300, None, "ines"),
            ("shot_free", 500, 540, "ines"), ("confirm", 91, None, "ines")]
        assert LabelStore(store).labels(DEVICE, rec)[-1].replaces is not None  # the reject it replaced
        viewed = {e.detail["file"] for e in CustodyLog(store).entries(recording=rec)
                  if e.action == "viewed" and e.actor == "ines"}
        assert viewed == {"video.mp4", "chapters.vtt"}
