"""End to end with real processes: a camera that encrypts its footage at rest uploads it with its own
uploader to ``bodycam-base serve --evidence --age-key`` (base decrypts on receipt), an instructor
reviews it through the JSON API over HTTP, and ``bodycam-base export-dataset`` writes the data set."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest
from _mqtt import free_port, wait_port
from _offload import DEVICE, custody_dir, custody_of, recordings, signer_of
from _review import base_age_key, make_recordings
from test_base_integration import Procs
from test_web import PW

from bodycam.base.cli import main as base_main
from bodycam.device.footage.offload_state import is_offloaded
from bodycam.device.identity import trust_key
from bodycam.device.uplink.offload import BaseClient, Offloader
from bodycam.hw_sim.truth import load_truth

pytestmark = pytest.mark.integration

TRUTH_SHOTS = [88, 91, 266, 448, 451, 456]


class Web:
    """A browser's HTTP side (cookies, forms, JSON) on urllib."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def call(self, path: str, *, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.site + path, data=data, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as r:
                return int(r.status), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def text(self, path: str) -> str:
        return self.call(path)[1].decode()

    def json(self, path: str) -> Any:
        return json.loads(self.call(path, headers={"Accept": "application/json"})[1])

    def post_json(self, path: str, body: object, csrf: str) -> tuple[int, Any]:
        status, data = self.call(path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "X-CSRF-Token": csrf})
        return status, json.loads(data)


def test_encrypted_footage_offloaded_reviewed_over_the_api_and_exported(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cam = make_recordings(tmp_path / "cam", ("2026-03-01T10:00:00.000Z",), encrypt=True)
    (rec_dir,) = recordings(cam)
    assert sorted(p.name for p in rec_dir.glob("segment-*"))[0] == "segment-00000.mp4.age"
    db, evidence = tmp_path / "base.db", tmp_path / "evidence"
    monkeypatch.setattr("sys.stdin", io.StringIO(PW + "\n"))
    assert base_main(["user", "add", "ines", "--role", "supervisor", "--db", str(db)]) == 0
    assert base_main(["keys", "add", DEVICE, str(cam / "state" / "identity" / "device.pub"), "--db", str(db)]) == 0
    custody_key = tmp_path / "custody.key"  # base's custody key; the camera trusts its public half
    assert base_main(["custody", "keygen", str(custody_key)]) == 0
    trust_key(custody_key.with_suffix(".pub"), custody_dir(cam))
    port = free_port()
    procs = Procs()
    try:
        serve = procs.start([sys.executable, "-m", "bodycam.base.cli", "serve", "--db", str(db), "--listen",
                             f"127.0.0.1:{port}", "--evidence", str(evidence), "--evidence-reserve-mb", "0",
                             "--custody-key", str(custody_key), "--age-key", str(base_age_key(cam))])
        wait_port(port, 30)
        site = f"http://127.0.0.1:{port}"
        client = BaseClient(site, DEVICE, signer_of(cam), timeout_s=10)
        try:
            conf = Offloader(client, trusted=custody_of(cam), chunk_bytes=256 * 1024).upload(rec_dir)
        finally:
            client.close()
        assert is_offloaded(rec_dir, custody_of(cam)) and set(conf["segments"]) == {p.name for p in rec_dir.glob("segment-*")}
        # base decrypts on receipt (a thread after the confirmation): the working copy appears
        review_file = evidence / "working" / DEVICE / rec_dir.name / "review.mp4"
        deadline = time.monotonic() + 60
        while not review_file.is_file():
            assert time.monotonic() < deadline, procs.stderr(serve)
            time.sleep(0.05)
        assert not list((evidence / "recordings" / DEVICE / rec_dir.name).glob("segment-*.mp4"))  # .age only

        web = Web(site)
        token = re.search(r'name="csrf" value="([^"]+)"', web.text("/login"))
        assert token
        form = urllib.parse.urlencode({"name": "ines", "password": PW, "csrf": token.group(1), "next": "/review"})
        status, page = web.call("/login", data=form.encode())
        assert status == 200 and b"Review offloaded footage" in page  # redirected to /review, logged in
        csrf_m = re.search(r'<meta name="csrf" content="([^"]+)">', page.decode())
        assert csrf_m
        csrf = csrf_m.group(1)
        api = f"/api/review/v1/recordings/{DEVICE}/{rec_dir.name}"
        (listed,) = web.json("/api/review/v1/recordings")
        assert listed["recording"] == rec_dir.name and listed["reviewed"] is False
        state = web.json(api)
        assert state["encrypted"] and [d["frame"] for d in state["detections"]] == TRUTH_SHOTS
        for d in state["detections"]:
            verdict = {"kind": "confirm", "marker": d["marker"]} if d["frame"] != 91 else \
                {"kind": "move", "marker": d["marker"], "frame": 92}
            assert web.post_json(f"{api}/labels", verdict, csrf)[0] == 201
        assert web.post_json(f"{api}/labels", {"kind": "shot_free", "frame": 480, "end_frame": 599}, csrf)[0] == 201
        status, body = web.post_json(f"{api}/labels", {"kind": "add", "frame": 600}, csrf)
        assert status == 422 and "outside recording" in body["error"]
        status, video = web.call(f"/review/{DEVICE}/{rec_dir.name}/video.mp4", headers={"Range": "bytes=0-1023"})
        assert status == 206 and len(video) == 1024 and video[4:8] == b"ftyp"
        assert web.json(api)["progress"]["reviewed"] is True
    finally:
        procs.close()

    out = tmp_path / "dataset"
    done = subprocess.run([sys.executable, "-m", "bodycam.base.cli", "export-dataset", str(out), "--reviewed-only",
                           "--evidence", str(evidence), "--db", str(db), "--age-key", str(base_age_key(cam))],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    doc = json.loads((out / "dataset.json").read_text())
    (row,) = doc["recordings"]
    assert row["encrypted"] and row["reviewers"] == ["ines"]
    truth = load_truth(out / row["split"] / f"{DEVICE}_{rec_dir.name}.truth.json")
    assert truth.shot_frames() == [88, 92, 266, 448, 451, 456]
    assert load_truth(out / row["split"] / f"{DEVICE}_{rec_dir.name}_free-000480-000599.truth.json").shots == ()
