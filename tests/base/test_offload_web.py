"""The evidence pages of the one web app: supervisors only; opening a file is audited as viewed."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from _offload import DEVICE, make_base, make_recordings, recordings
from starlette.testclient import TestClient
from test_web import PW, WALL, login

from bodycam.base.web.app import WebConfig, create_app
from bodycam.base.web.auth import Auth
from bodycam.base.web.db import WebDb

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_recordings(tmp_path_factory.mktemp("offload-web") / "data", ("2026-03-01T10:00:00.000Z",))


def test_supervisors_see_the_evidence_and_every_file_opened_is_audited(made: Path, tmp_path: Path) -> None:
    cam = tmp_path / "cam"
    shutil.copytree(made, cam)
    base = make_base(tmp_path / "base", cam)
    try:
        rec = recordings(cam)[0]
        for f in sorted(rec.iterdir()):  # as the routes would: one chunk per file, then confirm
            data = f.read_bytes()
            base.receiver.write_chunk(DEVICE, rec.name, f.name, 0, data, hashlib.sha256(data).hexdigest())
        base.receiver.confirm(DEVICE, rec.name)
        web = WebDb(base.store)
        auth = Auth(web)
        auth.add_user("olga", "operator", PW, WALL)
        auth.add_user("sam", "supervisor", PW, WALL)
        app = create_app(web, WebConfig(session_s=3600, poll_s=0.05, now_ns=lambda: WALL), offload=base.receiver)
        with TestClient(app, follow_redirects=False) as c:
            assert c.get("/evidence").status_code == 303  # to the login
            login(c, "olga")
            assert c.get("/evidence").status_code == 403
            assert "/evidence" not in c.get("/markers").text
        with TestClient(app, follow_redirects=False) as c:
            login(c, "sam")
            page = c.get("/evidence")
            assert page.status_code == 200 and rec.name in page.text and DEVICE in page.text
            page = c.get(f"/evidence/{DEVICE}/{rec.name}")
            assert page.status_code == 200 and "segment-00000.mp4" in page.text
            assert all(a in page.text for a in ("received", "verified", "stored", f"device:{DEVICE}"))
            got = c.get(f"/evidence/{DEVICE}/{rec.name}/segment-00001.mp4")
            assert got.status_code == 200 and got.content == (rec / "segment-00001.mp4").read_bytes()
            assert got.headers["content-type"] == "video/mp4"
            for bad in (f"/evidence/{DEVICE}/{rec.name}/offload.json", f"/evidence/{DEVICE}/{rec.name}/..%2Fx",
                        f"/evidence/{DEVICE}/20990101T000000000Z", "/evidence/bad..dev/x"):
                assert c.get(bad).status_code == 404, bad
        # names are whole-string matches: a trailing newline is not a recording or a file of one
        from bodycam.base.receive import Refused

        for recording, name in ((rec.name + "\n", "manifest.json"), (rec.name, "manifest.json\n")):
            with pytest.raises(Refused, match="is not a"):
                base.receiver.write_chunk(DEVICE, recording, name, 0, b"x", hashlib.sha256(b"x").hexdigest())
        assert not any("\n" in p.name for p in base.receiver.evidence.staging.rglob("*"))
        entries = base.custody.entries(recording=rec.name)
        assert [(e.actor, e.action, e.detail.get("file")) for e in entries][-1] == ("sam", "viewed",
                                                                                    "segment-00001.mp4")
        assert [e.action for e in entries] == ["received", "verified", "stored", "viewed"]
    finally:
        base.close()
