"""Review at base through the dashboard's pages and JSON API, on SQLite and PostgreSQL: recordings the
firmware made (simulator, plain and encrypted at rest) offloaded into base's receiver, reviewed by a
supervisor, the video served with range requests and audited as viewed, the camera's markers untouched."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from _offload import DEVICE
from _review import base_age_key, make_recordings, make_review_base, offload
from starlette.testclient import TestClient
from test_web import HOSTILE, PW, WALL, login

from bodycam.base.web.app import WebConfig, create_app
from bodycam.base.web.auth import Auth
from bodycam.base.web.db import WebDb

pytestmark = pytest.mark.integration

TRUTH_SHOTS = [88, 91, 266, 448, 451, 456]  # examples/range_demo.truth.json
API = "/api/review/v1/recordings"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("review")
    return {"plain": make_recordings(root / "plain", ("2026-03-01T10:00:00.000Z",)),
            "enc": make_recordings(root / "enc", ("2026-03-01T12:00:00.000Z",), encrypt=True)}


def csrf(c: TestClient, page: str) -> str:
    m = re.search(r'<meta name="csrf" content="([^"]+)">', c.get(page).text)
    assert m
    return m.group(1)


def test_review_in_the_dashboard_and_through_the_api(made: dict[str, Path], tmp_path: Path, db: str) -> None:
    data = tmp_path / "cam"
    shutil.copytree(made["plain"], data)
    enc = made["enc"]
    base = make_review_base(db, tmp_path / "evidence", data)
    try:
        (rec,) = offload(base, data)
        base.keys.add(DEVICE, (enc / "state" / "identity" / "device.pub").read_bytes(), WALL)  # its own key
        (secret,) = offload(base, enc)  # encrypted at rest; this base has no age key
        stored_markers = (tmp_path / "evidence" / "recordings" / DEVICE / rec / "markers.jsonl").read_bytes()
        web = WebDb(base.store)
        auth = Auth(web)
        auth.add_user("olga", "operator", PW, WALL)
        auth.add_user("ines", "supervisor", PW, WALL)
        app = create_app(web, WebConfig(session_s=3600, poll_s=0.05, now_ns=lambda: WALL), offload=base.receiver,
                         review=base.review)
        with TestClient(app, follow_redirects=False) as c:
            assert c.get("/review").status_code == 303
            assert c.post(f"{API}/{DEVICE}/{rec}/labels", json={"kind": "add", "frame": 1}).status_code == 401
            login(c, "olga")
            for path in ("/review", f"/review/{DEVICE}/{rec}", f"/review/{DEVICE}/{rec}/video.mp4", API):
                assert c.get(path).status_code == 403, path
            assert "/review" not in c.get("/markers").text
        with TestClient(app, follow_redirects=False) as c:
            login(c, "ines")
            assert f'href="/review/{DEVICE}/{rec}"' in c.get(f"/evidence/{DEVICE}/{rec}").text
            listing = c.get("/review")
            assert listing.status_code == 200 and rec in listing.text and "0 / 6" in listing.text
            page = c.get(f"/review/{DEVICE}/{rec}")
            assert page.status_code == 200
            assert f'src="/review/{DEVICE}/{rec}/video.mp4"' in page.text
            assert 'kind="chapters"' in page.text and "/static/review.js" in page.text
            state = c.get(f"{API}/{DEVICE}/{rec}").json()
            assert (state["fps"], state["frames"], state["encrypted"]) == (30.0, 600, False)
            dets = state["detections"]
            assert [d["frame"] for d in dets] == TRUTH_SHOTS  # the markers land on the truth's shot frames
            assert {d["model"] for d in dets} == {"shotnet 1.0.0"}

            # the video: range requests (as a browser seeks), audited once for this session
            whole = c.get(f"/review/{DEVICE}/{rec}/video.mp4")
            assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
            assert whole.headers["content-type"] == "video/mp4" and whole.content[4:8] == b"ftyp"
            part = c.get(f"/review/{DEVICE}/{rec}/video.mp4", headers={"Range": "bytes=1000-1099"})
            assert part.status_code == 206 and part.content == whole.content[1000:1100]
            assert part.headers["content-range"] == f"bytes 1000-1099/{len(whole.content)}"
            tail = c.get(f"/review/{DEVICE}/{rec}/video.mp4", headers={"Range": f"bytes={len(whole.content) - 10}-"})
            assert tail.status_code == 206 and tail.content == whole.content[-10:]
            assert c.get(f"/review/{DEVICE}/{rec}/video.mp4",
                         headers={"Range": f"bytes={len(whole.content) + 5}-"}).status_code == 416
            chapters = c.get(f"/review/{DEVICE}/{rec}/chapters.vtt")
            assert chapters.status_code == 200 and chapters.text.startswith("WEBVTT")
            assert chapters.headers["content-type"].startswith("text/vtt")

            # labels through the API: CSRF first, then checked against the recording
            url = f"{API}/{DEVICE}/{rec}/labels"
            assert c.post(url, json={"kind": "confirm", "marker": dets[0]["marker"]}).status_code == 403
            token = csrf(c, "/review")
            h = {"X-CSRF-Token": token}
            made_labels = [
                c.post(url, json={"kind": "confirm", "marker": dets[0]["marker"]}, headers=h),
                c.post(url, json={"kind": "reject", "marker": dets[1]["marker"], "note": HOSTILE}, headers=h),
                c.post(url, json={"kind": "move", "marker": dets[2]["marker"], "frame": 268}, headers=h),
                c.post(url, json={"kind": "add", "frame": 300}, headers=h),
                c.post(url, json={"kind": "shot_free", "frame": 500, "end_frame": 540}, headers=h),
                c.post(url, json={"kind": "reject", "marker": dets[0]["marker"]}, headers=h),  # changed her mind
            ]
            assert [r.status_code for r in made_labels] == [201] * 6, [r.text for r in made_labels]
            assert made_labels[-1].json()["replaces"] == made_labels[0].json()["n"]
            for body, why in (({"kind": "add", "frame": 600}, "outside recording"),
                              ({"kind": "confirm", "marker": "not-a-marker"}, "not a detection"),
                              ({"kind": "move", "marker": dets[3]["marker"], "frame": -3}, "outside recording")):
                bad = c.post(url, json=body, headers=h)
                assert bad.status_code == 422 and why in bad.json()["error"], bad.text
            bad = c.post(url, content=b"{not json", headers={**h, "content-type": "application/json"})
            assert bad.status_code == 422
            assert c.post(f"{API}/{DEVICE}/20990101T000000000Z/labels", json={"kind": "add", "frame": 1},
                          headers=h).status_code == 404
            state = c.get(f"{API}/{DEVICE}/{rec}").json()
            assert len(state["history"]) == 6
            assert [(lb["kind"], lb["frame"], lb["by"]) for lb in state["labels"]] == [
                ("reject", 91, "ines"), ("move", 268, "ines"), ("add", 300, "ines"), ("shot_free", 500, "ines"),
                ("reject", 88, "ines")]
            assert state["labels"][0]["note"] == HOSTILE  # kept as given, shown as text (review.js: textContent)
            assert "<script>window.pwned" not in c.get(f"/review/{DEVICE}/{rec}").text
            assert state["progress"] == {"detections": 6, "decided": 3, "added": 1, "shot_free": 1,
                                         "reviewers": ["ines"], "reviewed": False}

            # encrypted at rest and base has no key: a clear message, not a crash
            page = c.get(f"/review/{DEVICE}/{secret}")
            assert page.status_code == 409 and "encrypted at rest to age1" in page.text and "--age-key" in page.text
            video = c.get(f"/review/{DEVICE}/{secret}/video.mp4", headers={"accept": "application/json"})
            assert video.status_code == 409 and "no private key" in video.json()["error"]
            assert c.get(f"{API}/{DEVICE}/{secret}").json()["encrypted"] is True
            for p in ("/review/cam-o1/20990101T000000000Z", "/review/bad..dev/x", f"{API}/{DEVICE}/x"):
                assert c.get(p).status_code == 404, p
        # the camera's markers are never altered; each file opened is audited once per session
        assert (tmp_path / "evidence" / "recordings" / DEVICE / rec / "markers.jsonl").read_bytes() == stored_markers
        viewed = [(e.actor, e.detail["file"]) for e in base.custody.entries(recording=rec) if e.action == "viewed"]
        assert viewed == [("ines", "video.mp4"), ("ines", "chapters.vtt")]
    finally:
        base.close()


def test_base_with_its_age_key_decrypts_on_receipt_and_checks_the_plaintext(made: dict[str, Path],
                                                                              tmp_path: Path) -> None:
    enc = made["enc"]
    base = make_review_base(str(tmp_path / "base.db"), tmp_path / "evidence", enc, (base_age_key(enc),))
    try:
        (rec,) = offload(base, enc)
        work = tmp_path / "evidence" / "working" / DEVICE / rec
        stored = tmp_path / "evidence" / "recordings" / DEVICE / rec
        # the received ciphertext stays the evidence original; the plaintext is a working copy beside it
        assert sorted(p.name for p in stored.glob("segment-*")) == [f"segment-{i:05d}.mp4.age" for i in range(10)]
        assert (work / "review.mp4").is_file()
        manifest = json.loads((stored / "manifest.json").read_text())
        for seg in manifest["segments"]:
            plain = work / seg["file"].removesuffix(".age")
            assert hashlib.sha256(plain.read_bytes()).hexdigest() == seg["plain_sha256"]
        state = base.review.state(DEVICE, rec)
        assert state["encrypted"] and [d["frame"] for d in state["detections"]] == TRUTH_SHOTS
        # a working copy damaged or deleted is made again from the evidence, and checked
        base.review.copies.remove(DEVICE, rec)
        assert base.review.video(DEVICE, rec).is_file()
    finally:
        base.close()
