"""Issue 15 end to end: range footage becomes a model the cameras use.

A camera's recording of a range clip (encrypted at rest, as by default) is offloaded to base, reviewed
(every detection confirmed, one moved by a frame, a shot-free span), exported with ``bodycam-base
export-dataset``; ``bodycam-model build`` trains a (smoke) candidate on a synthetic set mixed with the
export, ``bodycam-model selftest`` packs its self-test, ``bodycam-model compare`` scores candidate and
shipped model on the export; base registers and approves it; a running camera (another device) picks
it up at the dock over HTTPS, activates it at an idle moment, and says so. Every step is the real
command or the real service; only the candidate is small (1 epoch). That the gunshot markers then name
the delivered model is shown with a model that detects (tests/base/test_model_delivery.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _atrest import install_base_key
from _clips import make_plain_clip
from _dock import run_service_on
from _offload import CUSTODY_KEY, BaseProcess
from _pki import make_ca, make_server
from _review import base_age_key, make_recordings, make_review_base, offload

from bodycam.base.export_dataset import export_dataset
from bodycam.base.review_labels import NewLabel

pytestmark = pytest.mark.integration

NOW = 1_764_072_000_000_000_000
BIN = Path(sys.executable).parent


def run(*args: str, timeout: float = 900) -> str:
    done = subprocess.run([*args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[:3]}: {done.stderr[-3000:]}"
    return done.stdout


def test_reviewed_range_footage_becomes_a_model_a_camera_picks_up_at_the_dock(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # -- the range day: a camera records, base receives, an instructor reviews, base exports -----------
    cam = make_recordings(tmp_path / "cam", ("2026-03-01T10:00:00.000Z",), encrypt=True)
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    db = base_dir / "base.db"
    b = make_review_base(str(db), base_dir / "evidence", cam, (base_age_key(cam),))
    try:
        (rec,) = offload(b, cam)
        state = b.review.state("cam-o1", rec)
        for i, d in enumerate(state["detections"]):
            label = NewLabel(kind="move", marker=d["marker"], frame=d["frame"] + 1) if i == 1 else \
                NewLabel(kind="confirm", marker=d["marker"])
            b.review.add_label("cam-o1", rec, label, by="ines", t_ns=NOW)
        b.review.add_label("cam-o1", rec, NewLabel(kind="shot_free", frame=500, end_frame=560), by="ines", t_ns=NOW)
        export = tmp_path / "export"
        export_dataset(export, b.review, actor="ines", now_ns=NOW, reviewed_only=True)
    finally:
        b.close()
    doc = json.loads((export / "dataset.json").read_text())
    assert doc["reviewers"] == ["ines"] and len(doc["recordings"]) == 1

    # -- retrain (synthetic + range, mixed 1:3), self-test, compare --------------------------------------
    synth = tmp_path / "synth"
    run(str(BIN / "bodycam-sim"), "make-dataset", str(synth), "--clips", "3", "--seconds", "3", "--seed", "41",
        "--workers", "1")
    out = tmp_path / "model" / "shotnet"
    log = run(str(BIN / "bodycam-model"), "build", "--data", str(synth), "--data", str(export), "--mix", "1,3",
              "--out", str(out), "--epochs", "1", "--steps", "2", "--batch", "8", "--model-version", "2.0.0-range")
    assert "75 % of the training windows" in log
    cand = out.with_suffix(".tflite")
    run(str(BIN / "bodycam-model"), "selftest", str(cand))
    shipped = Path(__file__).resolve().parents[2] / "device" / "models" / "shotnet.tflite"
    cmp = json.loads(run(str(BIN / "bodycam-model"), "compare", str(cand), str(shipped), "--data", str(export),
                         "--json"))
    assert cmp["models"]["candidate"]["path"] == str(cand) and set(cmp["all"]) == {"candidate", "shipped", "delta"}
    assert cmp["all"]["shipped"]["recall"] == 1.0  # the shipped model finds the range clip's six shots

    # -- base approves; a camera picks it up at the dock ---------------------------------------------------
    key = tmp_path / "keys" / "models.key"
    run(str(BIN / "bodycam-base"), "model", "keygen", str(key))
    run(str(BIN / "bodycam-base"), "model", "add", str(cand), "--by", "ines", "--db", str(db))
    run(str(BIN / "bodycam-base"), "model", "approve", "shotnet", "2.0.0-range", "--by", "ada", "--key", str(key),
        "--out", str(tmp_path / "packages" / "shotnet-2.0.0-range"), "--db", str(db))

    from bodycam.device.clock import SystemClock
    from bodycam.device.config import config_from_dict
    from bodycam.device.identity import provision, trust_key
    from bodycam.device.model_select import open_store

    pki = tmp_path / "pki"
    make_server(pki, make_ca(pki))
    data = tmp_path / "svc"
    trusted = data / "identity" / "trusted-models"
    trusted.mkdir(parents=True)
    (trusted / "base.pem").write_bytes(key.with_suffix(".pub").read_bytes())
    made = provision(data / "identity" / "device.key", "cam-07")
    install_base_key(data)
    run(str(BIN / "bodycam-base"), "keys", "add", "cam-07", str(made.public_file), "--db", str(db))
    server = BaseProcess(base_dir, web=True, cert=pki / "server.crt", key=pki / "server.key")
    trust_key((base_dir / CUSTODY_KEY).with_suffix(".pub"), data / "identity" / "trusted-custody")
    try:
        cfg = config_from_dict({
            "device": {"id": "cam-07", "data_dir": str(data)}, "mqtt": {"enabled": False},
            "gnss": {"enabled": False}, "gpio": {"enabled": False},
            "offload": {"enabled": True, "url": server.url, "ca_file": str(pki / "ca.crt"), "dock": "always",
                        "interval_s": 0.3, "timeout_s": 10},
        })
        clips = [make_plain_clip(tmp_path / "quiet.mp4", seconds=12, audio=False, size=(320, 180)),
                 make_plain_clip(tmp_path / "after.mp4", seconds=3, audio=False, size=(320, 180))]
        caplog.set_level("INFO")
        assert run_service_on(cfg, clips) == [], "the camera assembled again with the new model at an idle moment"
        store = open_store(cfg, SystemClock())
        assert store is not None
        active = store.status()["active"]
        assert active is not None and active.startswith("shotnet-2.0.0-range-")
        said = [r.getMessage() for r in caplog.records]
        assert any("model shotnet 2.0.0-range" in m and "on cpu" in m for m in said), said[-20:]
        assert any("self-test passed" in m for m in said)
    finally:
        server.close()
