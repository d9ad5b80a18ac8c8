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


@pytest.mark.parametrize("edit", ["threshold", "metrics", "selftest"])
def test_a_sidecar_or_selftest_changed_after_add_is_not_approved(db: str, built: Path, tmp_path: Path, edit: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``approve`` signs exactly the files ``add`` recorded: a sidecar whose threshold or metrics were edited
    after ``add`` (the .tflite untouched), or another self-test, is refused with the file named."""
    copy = tmp_path / "copy"
    shutil.copytree(built.parent, copy)
    model = copy / built.name
    assert base_main(["model", "add", str(model), "--by", "ada", "--db", db]) == 0
    side = json.loads(sidecar_path(model).read_text())
    if edit == "threshold":
        side["threshold"] = 0.999999  # above the int8 output's highest score: the detector never fires
        sidecar_path(model).write_text(json.dumps(side))
        changed = sidecar_path(model).name
    elif edit == "metrics":
        side["metrics"] = {"note": "edited after add"}
        sidecar_path(model).write_text(json.dumps(side))
        changed = sidecar_path(model).name
    else:
        st = copy / side["selftest"]["file"]
        st.write_bytes(st.read_bytes() + b"\0")
        changed = st.name
    key = tmp_path / "k.key"
    assert base_main(["model", "keygen", str(key)]) == 0
    assert base_main(["model", "approve", "shotnet", "2.0.0", "--by", "grace", "--key", str(key),
                      "--out", str(tmp_path / "p"), "--db", db]) != 0
    err = capsys.readouterr().err
    assert f"{changed} changed" in err and "since 'model add'" in err
    assert not (tmp_path / "p").exists()
    assert base_main(["model", "add", str(model), "--by", "ada", "--db", db]) != 0  # not re-registered either
    assert "registered with other files" in capsys.readouterr().err
    assert base_main(["model", "list", "--json", "--db", db]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["approved_by"] is None and row["package_sha256"] is None
    assert sorted(row["files"]) == sorted([model.name, sidecar_path(model).name, side["selftest"]["file"]])


def test_the_files_recorded_at_add_are_the_files_signed_at_approve(db: str, built: Path, tmp_path: Path) -> None:
    from bodycam.base.cli import open_store
    from bodycam.base.model_registry import ModelRegistry, keygen
    from bodycam.device.model_package import MANIFEST

    store = open_store(db)
    try:
        reg = ModelRegistry(store)
        added = reg.add(built, "ada", 1)
        m = reg.approve("shotnet", "2.0.0", "grace", 2, keygen(tmp_path / "k.key"), tmp_path / "p")
        signed = json.loads((tmp_path / "p" / MANIFEST).read_text())
        assert signed["files"] == added.files == m.files and len(m.files) == 3
    finally:
        store.close()


def test_a_model_added_before_file_hashes_were_recorded_is_approved_only_after_a_new_add(
        db: str, built: Path, tmp_path: Path) -> None:
    from bodycam.base.cli import open_store
    from bodycam.base.model_registry import ModelRegistry, keygen
    from bodycam.device.errors import UsageError

    store = open_store(db)
    try:
        reg = ModelRegistry(store)
        reg.add(built, "ada", 1)
        with store.transaction() as tx:  # as a registry written by the previous version left it
            tx.run("DELETE FROM model_files")
        key = keygen(tmp_path / "k.key")
        with pytest.raises(UsageError, match="model add"):
            reg.approve("shotnet", "2.0.0", "grace", 2, key, tmp_path / "p")
        assert not (tmp_path / "p").exists()
        assert len(reg.add(built, "ada", 3).files) == 3
        assert reg.approve("shotnet", "2.0.0", "grace", 4, key, tmp_path / "p").approved_by == "grace"
    finally:
        store.close()
