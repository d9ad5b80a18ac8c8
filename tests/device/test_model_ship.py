"""Shipping a model to the camera: self-test packs, signed packages, the camera's model store, and the
firmware activating, using and rejecting packages (issue 15 item 4, the camera's side).

Everything runs the real TFLite interpreter on the real shipped model. The "bad" model is the shipped
model with one convolution's weights negated in the file (found by its bytes), and its sidecar's
SHA-256 rewritten to match: exactly what a corrupt or miscompiled model behind an honest-looking
sidecar looks like; only the self-test can tell.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from _models import corrupt_weights

from bodycam.device.clock import SystemClock, VirtualClock
from bodycam.device.detect.detector import TFLiteDetector
from bodycam.device.detect.model_spec import default_model_path, load_model_spec, sha256_file, sidecar_path
from bodycam.device.detect.selftest import load_windows, parse_selftest, run_selftest
from bodycam.device.errors import ModelError, StorageError
from bodycam.device.identity import Signer, public_pem
from bodycam.device.model_package import MANIFEST, PackageError, make_package, verify_package
from bodycam.device.model_store import ModelStore
from bodycam.model_compile.selftest import make_selftest

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "examples" / "range_demo.mp4"
WALL = 1_764_072_000_000_000_000


def _copy_model(dest: Path, version: str | None = None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    src = default_model_path()
    shutil.copyfile(src, dest / src.name)
    side = json.loads(sidecar_path(src).read_text())
    side.pop("selftest", None)
    if version is not None:
        side["version"] = version
    side.pop("edgetpu", None)  # no Edge TPU compilation travels in these packages
    (dest / sidecar_path(src).name).write_text(json.dumps(side, indent=1))
    return dest / src.name


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shipped model with a fresh self-test pack (made once: it decodes a 20 s clip)."""
    model = _copy_model(tmp_path_factory.mktemp("packed"))
    make_selftest(model, CLIP, windows=24)
    return model


def _clone(packed: Path, dest: Path, version: str | None = None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in packed.parent.iterdir():
        shutil.copyfile(f, dest / f.name)
    model = dest / packed.name
    if version is not None:
        side = json.loads(sidecar_path(model).read_text())
        side["version"] = version
        sidecar_path(model).write_text(json.dumps(side, indent=1))
    return model


def _selftest(model: Path) -> Any:
    spec = load_model_spec(model)
    st = parse_selftest(spec.raw, "t")
    assert st is not None
    det = TFLiteDetector(model, spec, backend="cpu")
    try:
        return run_selftest(det, load_windows(model.parent, st, spec.input.shape), st, spec.output.scale)
    finally:
        det.close()


# -- self-test ------------------------------------------------------------------------------------


def test_the_selftest_pack_is_reproducible_spans_the_scores_and_passes(packed: Path, tmp_path: Path) -> None:
    spec = load_model_spec(packed)
    st = parse_selftest(spec.raw, "t")
    assert st is not None and len(st.scores) == 24
    assert min(st.scores) < spec.threshold < max(st.scores)  # quiet and certain windows both checked
    again = _copy_model(tmp_path / "again")
    make_selftest(again, CLIP, windows=24)
    assert sha256_file(again.with_suffix(".selftest.npz")) == st.sha256  # byte-for-byte rebuild
    result = _selftest(packed)
    assert result.ok and result.worst_steps == 0


def test_the_selftest_catches_different_weights_behind_a_matching_sidecar(packed: Path, tmp_path: Path) -> None:
    bad = _clone(packed, tmp_path / "bad")
    corrupt_weights(bad)
    load_model_spec(bad)  # the sidecar's hash check passes: only the self-test can tell
    result = _selftest(bad)
    assert not result.ok and "FAILED" in str(result) and result.worst_steps > 2


def test_a_tampered_selftest_file_or_entry_is_a_model_error(packed: Path, tmp_path: Path) -> None:
    m = _clone(packed, tmp_path / "t")
    npz = m.with_suffix(".selftest.npz")
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0x01
    npz.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the sidecar"):
        _selftest(m)
    side = json.loads(sidecar_path(m).read_text())
    side["selftest"]["file"] = "../etc/passwd"
    with pytest.raises(ModelError, match="plain file name"):
        parse_selftest(side, "t")


# -- packages -------------------------------------------------------------------------------------


def _keys(tmp_path: Path) -> tuple[Signer, dict[str, Any]]:
    signer = Signer.generate()
    return signer, {signer.key_id: signer.public}


def test_a_signed_package_verifies_and_every_tampering_is_named(packed: Path, tmp_path: Path) -> None:
    signer, trusted = _keys(tmp_path)
    pkg = tmp_path / "pkg"
    info = make_package(packed, pkg, signer, approved_by="ada", approved_at="2026-11-29T15:00:00Z",
                        metrics={"recall": 0.9})
    assert verify_package(pkg, trusted).package_id == info.package_id
    with pytest.raises(PackageError, match="does not trust"):
        verify_package(pkg, {Signer.generate().key_id: Signer.generate().public})

    def case(name: str, change: Any, match: str) -> None:
        bad = tmp_path / name
        shutil.copytree(pkg, bad)
        change(bad)
        with pytest.raises(PackageError, match=match):
            verify_package(bad, trusted)

    def manifest_edit(key: str, value: Any) -> Any:
        def edit(d: Path) -> None:
            body = json.loads((d / MANIFEST).read_text())
            body[key] = value
            (d / MANIFEST).write_text(json.dumps(body))
        return edit

    case("approver", manifest_edit("approved_by", "mallory"), "signature does not verify")
    case("model-byte", lambda d: (d / packed.name).write_bytes(b"x" + (d / packed.name).read_bytes()[1:]),
         "does not match the manifest")
    case("missing", lambda d: (d / packed.with_suffix(".selftest.npz").name).unlink(), "missing")
    case("unsigned", manifest_edit("sig", ""), "'sig' is missing")

    def resign_other(d: Path) -> None:
        other = Signer.generate()
        body = json.loads((d / MANIFEST).read_text())
        body.pop("sig")
        body["key_id"] = other.key_id
        from bodycam.device.uplink.markers import jcs

        body["sig"] = other.sign(jcs(body))
        (d / MANIFEST).write_text(json.dumps(body))

    case("other-key", resign_other, "does not trust")

    def lone_surrogate(d: Path) -> None:  # valid JSON, but no RFC 8785 bytes (no UTF-8 for U+D800)
        text = (d / MANIFEST).read_text()
        assert '"approved_by":"ada"' in text
        (d / MANIFEST).write_text(text.replace('"approved_by":"ada"', '"approved_by":"\\ud800"'))

    # a PackageError naming the manifest (before, the canonicaliser's MarkerError escaped verify_package)
    case("surrogate", lone_surrogate, r"package\.json: not canonical JSON")
    # no self-test: base refuses to package it at all
    plain = _copy_model(tmp_path / "plain")
    with pytest.raises(PackageError, match="no self-test"):
        make_package(plain, tmp_path / "p2", signer, approved_by="ada", approved_at="x")


# -- the camera's store ---------------------------------------------------------------------------


def test_the_store_installs_activates_rejects_and_keeps_a_fallback(packed: Path, tmp_path: Path) -> None:
    signer, trusted = _keys(tmp_path)
    a = make_package(_clone(packed, tmp_path / "a", "1.1.0"), tmp_path / "pa", signer,
                     approved_by="ada", approved_at="t1")
    b = make_package(_clone(packed, tmp_path / "b", "1.2.0"), tmp_path / "pb", signer,
                     approved_by="ada", approved_at="t2")
    clock = VirtualClock(0, WALL)
    store = ModelStore(tmp_path / "models", trusted, clock)
    assert store.status()["active"] is None
    store.install(tmp_path / "pa")
    assert store.status()["pending"] == a.package_id
    assert store.activate_pending() == a.package_id
    store.install(tmp_path / "pb")
    assert store.activate_pending() == b.package_id
    assert store.status() == {"active": b.package_id, "previous": a.package_id, "pending": None, "rejected": []}
    # reopened (a restart): the same state
    again = ModelStore(tmp_path / "models", trusted, clock)
    assert again.model_path(b.package_id).is_file()
    assert again.reject(b.package_id, "self-test FAILED") == a.package_id
    st = again.status()
    assert st["active"] == a.package_id and st["previous"] is None and st["rejected"][0]["package"] == b.package_id
    assert not (tmp_path / "models" / "packages" / b.package_id).exists()  # rejected packages are removed
    with pytest.raises(PackageError, match="was rejected on this camera"):
        again.install(tmp_path / "pb")
    assert again.reject(a.package_id, "does not load") is None  # back to the shipped model
    # a package altered in transit is refused and leaves nothing behind
    (tmp_path / "pa" / packed.name).write_bytes(b"\0" * 10)
    with pytest.raises(PackageError):
        again.install(tmp_path / "pa")
    assert [p.name for p in (tmp_path / "models" / "packages").iterdir()] == []


# -- the firmware ---------------------------------------------------------------------------------


def _service(tmp_path: Path, trusted_dir: Path, seconds: float) -> tuple[Any, Any, Any]:
    from _atrest import install_base_key
    from _clips import make_plain_clip

    from bodycam.device.config import config_from_dict
    from bodycam.device.identity import provision
    from bodycam.hw_sim.live_camera import LiveClipCamera

    cfg = config_from_dict({"device": {"data_dir": str(tmp_path / "svc")}, "mqtt": {"enabled": False},
                            "gnss": {"enabled": False}, "gpio": {"enabled": False},
                            "models": {"trusted_keys_dir": str(trusted_dir)}})
    provision(tmp_path / "svc" / "identity" / "device.key", cfg.device.id)
    install_base_key(tmp_path / "svc")  # footage encrypted at rest, as on a provisioned camera
    clip = make_plain_clip(tmp_path / "c.mp4", seconds=seconds, audio=False, size=(320, 180))
    clock = SystemClock()

    def camera() -> Any:
        from bodycam.device.assemble import model_spec
        from bodycam.device.model_select import open_store, resolve

        try:
            run_cfg, _ = resolve(cfg, open_store(cfg, clock))  # the camera sized for the model that will load
        except StorageError:
            run_cfg = cfg
        spec = model_spec(run_cfg)
        return LiveClipCamera(clip, (spec.input.width, spec.input.height), clock)

    return cfg, clock, camera


@pytest.mark.integration
def test_a_package_that_fails_its_selftest_on_the_camera_is_rejected_and_the_camera_runs_on(
        packed: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from bodycam.device.firmware import run_firmware
    from bodycam.device.model_select import open_store

    signer, _ = _keys(tmp_path)
    trusted_dir = tmp_path / "trusted"
    trusted_dir.mkdir()
    (trusted_dir / "base.pem").write_bytes(public_pem(signer.public))
    bad = _clone(packed, tmp_path / "bad", "9.9.9")
    corrupt_weights(bad)
    make_package(bad, tmp_path / "pbad", signer, approved_by="ada", approved_at="t")  # base cannot tell either
    cfg, clock, camera = _service(tmp_path, trusted_dir, 2)
    store = open_store(cfg, clock)
    assert store is not None
    info = store.install(tmp_path / "pbad")
    result = run_firmware(cfg, clock=clock, environ={}, install_signals=False, camera_factory=camera)
    assert result.stats.frames > 30  # it ran, on the model it had
    st = store.status()
    assert st["active"] is None and st["pending"] is None
    assert st["rejected"][0]["package"] == info.package_id and "self-test FAILED" in st["rejected"][0]["reason"]
    assert any("ALARM" in r.getMessage() and "rejected" in r.getMessage() for r in caplog.records)


@pytest.mark.integration
def test_a_package_installed_while_running_is_activated_when_the_camera_is_idle(
        packed: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import threading
    import time

    from bodycam.device.firmware import run_firmware
    from bodycam.device.model_select import open_store

    signer, _ = _keys(tmp_path)
    trusted_dir = tmp_path / "trusted"
    trusted_dir.mkdir()
    (trusted_dir / "base.pem").write_bytes(public_pem(signer.public))
    make_package(_clone(packed, tmp_path / "new", "1.5.0"), tmp_path / "pnew", signer, approved_by="ada",
                 approved_at="t")
    caplog.set_level("INFO")
    cfg, clock, camera = _service(tmp_path, trusted_dir, 11)
    store = open_store(cfg, clock)
    assert store is not None
    cameras: list[Any] = []

    def counted() -> Any:
        cameras.append(camera())
        return cameras[-1]

    def install_soon() -> None:
        time.sleep(1.0)
        store.install(tmp_path / "pnew")  # as 'bodycam model install' does, from another process

    t = threading.Thread(target=install_soon)
    t.start()
    run_firmware(cfg, clock=clock, environ={}, install_signals=False, camera_factory=counted)
    t.join()
    assert len(cameras) == 2  # assembled again once the camera was idle at a maintenance pass
    st = store.status()
    assert st["active"] is not None and st["active"].startswith("shotnet-1.5.0-") and st["pending"] is None
    loaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model: ")]
    assert any(st["active"] in m for m in loaded)  # the second assembly loaded the package ...
    assert any("self-test passed" in m for m in loaded)  # ... and its self-test passed on this runtime


def test_the_shipped_model_passes_its_own_selftest() -> None:
    """The shipped sidecar carries a self-test (scripts/build-model.sh) and this runtime agrees with it."""
    result = _selftest(default_model_path())
    assert result.ok and result.windows == 24


@pytest.mark.integration
def test_an_unusable_model_store_alarms_and_the_camera_runs_on_the_shipped_model(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from bodycam.device.firmware import run_firmware

    cfg, clock, camera = _service(tmp_path, tmp_path / "no-keys", 2)
    (tmp_path / "svc" / "models").write_text("a file where the store's directory should be")
    result = run_firmware(cfg, clock=clock, environ={}, install_signals=False, camera_factory=camera)
    assert result.stats.frames > 30
    assert any("ALARM model store unusable" in r.getMessage() for r in caplog.records)


def test_the_store_refuses_a_downgrade_unless_base_marked_it_a_rollback(packed: Path, tmp_path: Path) -> None:
    """Anti-rollback: a lower version, or the same version with other files, does not replace the active
    (or pending) package; a package base signed as ``rollback`` does, only when approved after it."""
    signer, trusted = _keys(tmp_path)

    def pkg(version: str, at: str, *, rollback: bool = False, note: str | None = None) -> Path:
        build = _clone(packed, tmp_path / f"b-{version}-{at}", version)
        if note is not None:  # the same model, another sidecar
            side = json.loads(sidecar_path(build).read_text())
            side["metrics"] = {"note": note}
            sidecar_path(build).write_text(json.dumps(side, indent=1))
        out = tmp_path / f"p-{version}-{at}"
        extra = {"rollback": True} if rollback else {}
        make_package(build, out, signer, approved_by="ada", approved_at=at, **extra)  # type: ignore[arg-type]
        return out

    v2 = pkg("2.0.0", "2026-03-01T10:00:00.000Z")
    store = ModelStore(tmp_path / "models", trusted, VirtualClock(0, WALL))
    store.install(v2)
    active = store.activate_pending()
    older = pkg("1.5.0", "2026-03-02T10:00:00.000Z")  # approved later, but a lower version
    with pytest.raises(PackageError, match=r"lower than shotnet 2\.0\.0"):
        store.install(older)
    same = pkg("2.0.0", "2026-03-02T11:00:00.000Z", note="other bytes")
    with pytest.raises(PackageError, match=r"same version as shotnet 2\.0\.0 .* with other files"):
        store.install(same)
    assert store.status() == {"active": active, "previous": None, "pending": None, "rejected": []}
    assert store.install(v2).package_id == active and store.status()["pending"] is None  # the same package: fine
    # an explicit rollback, approved after the active package, is installed and activated
    back = pkg("1.5.0", "2026-03-03T10:00:00.000Z", rollback=True)
    info = store.install(back)
    assert info.rollback and verify_package(back, trusted).rollback
    assert store.activate_pending() == info.package_id
    # a higher version approved later replaces it; the old rollback package replayed is then refused
    v21 = pkg("2.1.0", "2026-03-04T10:00:00.000Z")
    store.install(v21)
    assert store.status()["pending"] is not None
    with pytest.raises(PackageError, match=r"rollback approved at .* not after shotnet 2\.1\.0"):
        store.install(back)
    # nor does a lower version slip in while a higher one is pending
    with pytest.raises(PackageError, match=r"lower than shotnet 2\.1\.0"):
        store.install(pkg("2.0.5", "2026-03-05T10:00:00.000Z"))
    # 'rollback' is signed: flipping it in the manifest breaks the signature
    flipped = tmp_path / "flipped"
    shutil.copytree(older, flipped)
    body = json.loads((flipped / MANIFEST).read_text())
    body["rollback"] = True
    (flipped / MANIFEST).write_text(json.dumps(body))
    with pytest.raises(PackageError, match="signature does not verify"):
        verify_package(flipped, trusted)



def test_model_versions_compare_as_numbers() -> None:
    from bodycam.device.model_package import version_key

    keys = [version_key(v) for v in ("1.9.9", "1.10", "2.0.0-range", "2.0.0", "2.0.1")]
    assert all(k is not None for k in keys) and keys == sorted(keys)  # type: ignore[type-var]
    assert version_key("2.0") == version_key("2.0.0") and version_key("v2") is None and version_key("2..0") is None
