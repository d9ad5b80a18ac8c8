"""Base's model registry and the camera's store through their command lines: keygen, add, approve (a
signed package), trust, install, status; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bodycam.base.cli import main as base_main
from bodycam.device.cli import main as cam_main
from bodycam.device.detect.model_spec import default_model_path, sidecar_path
from bodycam.model_compile.selftest import make_selftest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 'new build': the shipped model as version 2.0.0 with a self-test pack."""
    d = tmp_path_factory.mktemp("build")
    src = default_model_path()
    shutil.copyfile(src, d / src.name)
    side = json.loads(sidecar_path(src).read_text())
    side.pop("selftest", None)
    side.pop("edgetpu", None)
    side["version"] = "2.0.0"
    (d / sidecar_path(src).name).write_text(json.dumps(side))
    make_selftest(d / src.name, ROOT / "examples" / "range_demo.mp4", windows=8)
    return d / src.name


def test_add_approve_trust_install(db: str, built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "base-models.key"
    assert base_main(["model", "keygen", str(key)]) == 0
    assert os.stat(key).st_mode & 0o077 == 0
    assert base_main(["model", "keygen", str(key)]) != 0  # never overwritten
    assert base_main(["model", "add", str(built), "--by", "ada", "--db", db]) == 0
    assert base_main(["model", "add", str(built), "--by", "ada", "--db", db]) == 0  # the same build: no change
    pkg = tmp_path / "pkg"
    assert base_main(["model", "approve", "shotnet", "2.0.0", "--by", "grace", "--key", str(key),
                      "--out", str(pkg), "--db", db]) == 0
    assert base_main(["model", "approve", "shotnet", "2.0.0", "--by", "grace", "--key", str(key),
                      "--out", str(tmp_path / "pkg2"), "--db", db]) != 0  # approved once
    capsys.readouterr()
    assert base_main(["model", "list", "--json", "--db", db]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["version"], row["added_by"], row["approved_by"]) == ("2.0.0", "ada", "grace")
    assert len(row["package_sha256"]) == 64 and row["sha256"] == json.loads(sidecar_path(built).read_text())["sha256"]
    # the camera
    cfg = tmp_path / "cam.toml"
    cfg.write_text(f'[device]\ndata_dir = "{tmp_path / "cam"}"\n')
    assert cam_main(["model", "install", str(pkg), "--config", str(cfg)]) != 0  # no trusted key yet
    err = capsys.readouterr().err
    assert "bodycam model trust" in err
    assert cam_main(["model", "trust", str(key.with_suffix(".pub")), "--config", str(cfg)]) == 0
    assert "trusted model-signing key" in capsys.readouterr().out
    assert cam_main(["model", "install", str(pkg), "--config", str(cfg), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == "2.0.0" and out["approved_by"] == "grace"
    assert cam_main(["model", "status", "--config", str(cfg), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["pending"] == out["pending"] and st["active"] is None


def test_a_model_without_a_selftest_or_a_changed_file_is_refused(db: str, built: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    src = default_model_path()
    shutil.copyfile(src, plain / src.name)
    side = json.loads(sidecar_path(src).read_text())
    side.pop("selftest", None)
    (plain / sidecar_path(src).name).write_text(json.dumps(side))
    assert base_main(["model", "add", str(plain / src.name), "--by", "ada", "--db", db]) != 0
    assert "bodycam-model selftest" in capsys.readouterr().err
    copy = tmp_path / "copy"
    shutil.copytree(built.parent, copy)
    assert base_main(["model", "add", str(copy / built.name), "--by", "ada", "--db", db]) == 0
    data = bytearray((copy / built.name).read_bytes())
    data[-1] ^= 1
    (copy / built.name).write_bytes(bytes(data))  # changed after it was registered
    key = tmp_path / "k.key"
    assert base_main(["model", "keygen", str(key)]) == 0
    assert base_main(["model", "approve", "shotnet", "2.0.0", "--by", "grace", "--key", str(key),
                      "--out", str(tmp_path / "p"), "--db", db]) != 0
    assert "is not the registered build" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
    assert base_main(["model", "approve", "shotnet", "2.0.0", "--by", "grace", "--key", str(tmp_path / "none.key"),
                      "--out", str(tmp_path / "p"), "--db", db]) != 0
    assert "bodycam-base model keygen" in capsys.readouterr().err
