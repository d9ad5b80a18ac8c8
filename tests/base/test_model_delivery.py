"""Models to the cameras at the dock (issue 15 item 4): base offers the newest approved package of each
task over the signed offload routes, served by a real uvicorn (``bodycam-base serve --evidence``); the
camera's fetcher downloads what it lacks into its model store, which verifies base's signature and
makes it pending. The models are copies of the shipped shotnet with its own self-test."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _dock import run_service_on, shipped_copy
from _offload import DEVICE, Base, BaseProcess, make_base, make_recordings, signer_of

from bodycam.base.model_registry import ModelRegistry, keygen
from bodycam.device.clock import VirtualClock
from bodycam.device.identity import Signer
from bodycam.device.model_package import MANIFEST
from bodycam.device.model_store import ModelStore
from bodycam.device.uplink.model_fetch import ModelFetcher, fetch_models
from bodycam.device.uplink.offload import BaseClient, OffloadError

pytestmark = pytest.mark.integration

WALL = 1_764_072_000_000_000_000


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_recordings(tmp_path_factory.mktemp("dock") / "data", starts=("2026-03-01T10:00:00.000Z",))


@pytest.fixture
def base(tmp_path: Path, made: Path) -> Iterator[Base]:
    b = make_base(tmp_path / "base", made)
    yield b
    b.close()


@pytest.fixture
def model_key(tmp_path: Path) -> Signer:
    return keygen(tmp_path / "keys" / "models.key")


def approve(base: Base, key: Signer, tmp_path: Path, version: str, task: str | None = None) -> Path:
    reg = ModelRegistry(base.store)  # type: ignore[arg-type]
    model = shipped_copy(tmp_path / f"build-{version}", version, task=task)
    m = reg.add(model, "ada", time.time_ns())
    out = tmp_path / "packages" / f"{m.name}-{m.version}"
    reg.approve(m.name, m.version, "ada", time.time_ns(), key, out)
    return out


@pytest.fixture
def server(base: Base) -> Iterator[BaseProcess]:
    s = BaseProcess(base.dir, web=True)
    yield s
    s.close()


def camera_store(tmp_path: Path, key: Signer | None) -> ModelStore:
    trusted = {} if key is None else {key.key_id: key.public}
    return ModelStore(tmp_path / "cam-models", trusted, VirtualClock(0, WALL))


def fetcher(made: Path, url: str, store: ModelStore, signer: Signer | None = None) -> ModelFetcher:
    return ModelFetcher(BaseClient(url, DEVICE, signer or signer_of(made), timeout_s=10), store)


def test_the_camera_fetches_the_newest_approved_package_and_makes_it_pending(
        base: Base, model_key: Signer, tmp_path: Path, made: Path, server: BaseProcess) -> None:
    store = camera_store(tmp_path, model_key)
    f = fetcher(made, server.url, store)
    try:
        assert f.run_once() is None  # nothing approved yet
        approve(base, model_key, tmp_path, "1.5.0")
        approve(base, model_key, tmp_path, "1.6.0")
        got = f.run_once()
        assert got is not None and got.startswith("shotnet-1.6.0-")  # the newest approval only
        assert store.status()["pending"] == got
        assert not any((store.root / "incoming").iterdir())  # the download folder is cleaned up
        assert f.run_once() is None  # held: not fetched again
        store.activate_pending()
        assert f.run_once() is None  # active: not fetched again
        assert f.telemetry() == {"installed": 1, "error": None}
    finally:
        f.client.close()


def test_only_the_video_task_is_taken_and_a_rejected_package_is_never_fetched_again(
        base: Base, model_key: Signer, tmp_path: Path, made: Path, server: BaseProcess) -> None:
    approve(base, model_key, tmp_path, "2.0.0", task="gunshot-audio")  # another task: not this store's
    store = camera_store(tmp_path, model_key)
    f = fetcher(made, server.url, store)
    try:
        assert f.run_once() is None
        approve(base, model_key, tmp_path, "2.1.0")
        got = f.run_once()
        assert got is not None and got.startswith("shotnet-2.1.0-")
        store.reject(got, "self-test FAILED (test)")
        assert f.run_once() is None and store.status()["pending"] is None
    finally:
        f.client.close()


def test_a_package_the_camera_does_not_trust_is_refused_once_with_an_alarm(
        base: Base, model_key: Signer, tmp_path: Path, made: Path, server: BaseProcess,
        caplog: pytest.LogCaptureFixture) -> None:
    approve(base, model_key, tmp_path, "3.0.0")
    store = camera_store(tmp_path, Signer.generate())  # trusts another key
    f = fetcher(made, server.url, store)
    try:
        assert f.run_once() is None
        assert store.status() == {"active": None, "previous": None, "pending": None, "rejected": []}
        assert f.last_error is not None and "does not trust" in f.last_error
        assert any("ALARM model from base" in r.getMessage() for r in caplog.records)
        assert f.run_once() is None  # not downloaded again until the next start
        assert not (store.root / "packages").exists() or not any(
            p for p in (store.root / "packages").iterdir() if not p.name.startswith("."))
    finally:
        f.client.close()


def test_a_package_changed_on_base_s_disk_is_not_offered(
        base: Base, model_key: Signer, tmp_path: Path, made: Path, server: BaseProcess,
        caplog: pytest.LogCaptureFixture) -> None:
    pkg = approve(base, model_key, tmp_path, "4.0.0")
    body = json.loads((pkg / MANIFEST).read_text())
    body["approved_by"] = "mallory"
    (pkg / MANIFEST).write_text(json.dumps(body))
    store = camera_store(tmp_path, model_key)
    f = fetcher(made, server.url, store)
    try:
        assert f.run_once() is None and store.status()["pending"] is None
    finally:
        f.client.close()
    assert "not the approved package" in (base.dir / "server.log").read_text()


def test_only_registered_cameras_are_served(
        base: Base, model_key: Signer, tmp_path: Path, made: Path, server: BaseProcess) -> None:
    approve(base, model_key, tmp_path, "5.0.0")
    store = camera_store(tmp_path, model_key)
    f = fetcher(made, server.url, store, signer=Signer.generate())  # a key base never registered
    try:
        with pytest.raises(OffloadError, match="HTTP 401"):
            f.run_once()
        fetch_models(f)  # the offload thread's round: logged, kept for telemetry, never raised
        assert f.last_error is not None and "401" in f.last_error
        assert store.status()["pending"] is None
    finally:
        f.client.close()


def test_a_base_without_model_delivery_is_not_an_error(tmp_path: Path, made: Path, base: Base) -> None:
    s = BaseProcess(base.dir)  # the offload routes alone, no model shelf
    store = camera_store(tmp_path, None)
    f = fetcher(made, s.url, store)
    try:
        assert f.run_once() is None and f.last_error is None
    finally:
        f.client.close()
        s.close()


def test_a_running_camera_gets_the_approved_model_at_the_dock_and_its_markers_name_it(
        base: Base, model_key: Signer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The service with offload on (dock "always", over TLS): at its first dock round it fetches the
    approved package, activates it at the next idle moment by assembling again, and the gunshot
    markers of the range clip that the second assembly sees name the new model."""
    from _atrest import install_base_key
    from _clips import make_plain_clip
    from _pki import make_ca, make_server

    from bodycam.device.clock import SystemClock
    from bodycam.device.config import config_from_dict
    from bodycam.device.identity import provision, public_pem
    from bodycam.device.model_select import open_store

    pki = tmp_path / "pki"
    make_server(pki, make_ca(pki))
    approve(base, model_key, tmp_path, "1.7.0")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "base.pem").write_bytes(public_pem(model_key.public))
    server = BaseProcess(base.dir, web=True, cert=pki / "server.crt", key=pki / "server.key")
    try:
        data = tmp_path / "svc"
        cfg = config_from_dict({
            "device": {"id": "cam-07", "data_dir": str(data)}, "mqtt": {"enabled": False},
            "gnss": {"enabled": False}, "gpio": {"enabled": False},
            "models": {"trusted_keys_dir": str(trusted)},
            "offload": {"enabled": True, "url": server.url.replace("127.0.0.1", "localhost"),
                        "ca_file": str(pki / "ca.crt"), "dock": "always", "interval_s": 0.3, "timeout_s": 10},
        })
        made = provision(data / "identity" / "device.key", "cam-07")
        install_base_key(data)  # footage encrypted at rest, as on a provisioned camera
        base.keys.add("cam-07", made.public_file.read_bytes(), time.time_ns())
        quiet = make_plain_clip(tmp_path / "quiet.mp4", seconds=12, audio=False, size=(320, 180))
        range_clip = Path(__file__).resolve().parents[2] / "examples" / "range_demo.mp4"
        caplog.set_level("INFO")
        assert run_service_on(cfg, [quiet, range_clip]) == []  # assembled twice: activated at an idle moment
        store = open_store(cfg, SystemClock())
        assert store is not None
        active = store.status()["active"]
        assert active is not None and active.startswith("shotnet-1.7.0-")
        shots = [json.loads(line) for f in (data / "recordings").glob("*/markers.jsonl")
                 for line in f.read_text().splitlines() if '"gunshot"' in line]
        assert shots, "the range clip's shots were marked"
        assert {(m["model"]["name"], m["model"]["version"]) for m in shots if m["kind"] == "gunshot"} == {
            ("shotnet", "1.7.0")}
        assert any("self-test passed" in r.getMessage() for r in caplog.records)
    finally:
        server.close()


def test_base_offers_the_highest_version_and_a_lower_one_only_as_an_explicit_rollback(
        base: Base, model_key: Signer, tmp_path: Path) -> None:
    """Anti-rollback at base: approving a version below an approved one needs ``rollback`` (the package
    then says so, signed); base offers the highest approved version, or the latest explicit rollback."""
    from bodycam.base.model_delivery import ModelShelf
    from bodycam.device.errors import UsageError
    from bodycam.device.model_package import verify_package

    reg = ModelRegistry(base.store)  # type: ignore[arg-type]
    shelf = ModelShelf(reg)

    def offered() -> list[tuple[str, str]]:
        return [(o.model.name, o.model.version) for o in shelf.offers()]

    approve(base, model_key, tmp_path, "2.0.0")
    reg.add(shipped_copy(tmp_path / "build-1.5.0", "1.5.0"), "ada", time.time_ns())
    with pytest.raises(UsageError, match="--rollback"):
        reg.approve("shotnet", "1.5.0", "ada", time.time_ns(), model_key, tmp_path / "p-1.5.0")
    assert not (tmp_path / "p-1.5.0").exists() and reg.get("shotnet", "1.5.0").approved_ns is None
    assert offered() == [("shotnet", "2.0.0")]
    # an explicit rollback: signed as such, offered, and the camera takes it over the active 2.0.0
    store = camera_store(tmp_path, model_key)
    store.install(tmp_path / "packages" / "shotnet-2.0.0")
    store.activate_pending()
    m = reg.approve("shotnet", "1.5.0", "ada", time.time_ns(), model_key, tmp_path / "p-1.5.0", rollback=True)
    assert m.rollback and reg.get("shotnet", "1.5.0").as_json()["rollback"] is True
    assert verify_package(tmp_path / "p-1.5.0", {model_key.key_id: model_key.public}).rollback
    assert offered() == [("shotnet", "1.5.0")]
    assert store.install(tmp_path / "p-1.5.0").version == "1.5.0"
    # a later, higher version is offered again; a rollback needs something higher to roll back from
    approve(base, model_key, tmp_path, "2.1.0")
    assert offered() == [("shotnet", "2.1.0")]
    reg.add(shipped_copy(tmp_path / "build-3.0.0", "3.0.0"), "ada", time.time_ns())
    with pytest.raises(UsageError, match="no approved version of shotnet is higher"):
        reg.approve("shotnet", "3.0.0", "ada", time.time_ns(), model_key, tmp_path / "p-3.0.0", rollback=True)


def test_base_offers_the_highest_approved_version_not_the_latest_approval(
        base: Base, model_key: Signer, tmp_path: Path) -> None:
    """Approval times out of order with the versions (base's clock stepped back between two approvals):
    the highest version is offered, not the one with the latest approval time."""
    from bodycam.base.model_delivery import ModelShelf

    reg = ModelRegistry(base.store)  # type: ignore[arg-type]
    for version, at in (("1.5.0", WALL + 10**12), ("2.0.0", WALL)):
        m = reg.add(shipped_copy(tmp_path / f"build-{version}", version), "ada", WALL)
        reg.approve(m.name, m.version, "ada", at, model_key, tmp_path / "packages" / f"{m.name}-{m.version}")
    assert [o.model.version for o in ModelShelf(reg).offers()] == ["2.0.0"]
