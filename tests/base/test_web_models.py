"""The models page of the dashboard (``/models``) on both stores: the registry with metrics and approvals,
what each task's cameras are offered, the fleet's rollout; admins approve (CSRF, audited, once), a
supervisor may only look, an operator not even that; a hostile sidecar's text is shown as text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _dock import shipped_copy
from starlette.testclient import TestClient
from test_web import PW, WALL, csrf_of, login

from bodycam.base.cli import open_store
from bodycam.base.model_registry import ModelRegistry, keygen
from bodycam.base.store import MarkerStore
from bodycam.base.web.app import WebConfig, create_app
from bodycam.base.web.auth import Auth
from bodycam.base.web.db import WebDb
from bodycam.base.web.models import ModelDesk
from bodycam.device.model_package import verify_package

HOSTILE = '<script>window.pwned=1</script>'


class ModelsWeb:
    def __init__(self, db: str, tmp: Path, can_approve: bool) -> None:
        self.store: MarkerStore = open_store(db)
        self.web = WebDb(self.store)
        auth = Auth(self.web)
        for name, role in (("olga", "operator"), ("sam", "supervisor"), ("ada", "admin")):
            auth.add_user(name, role, PW, WALL)
        self.registry = ModelRegistry(self.store)  # type: ignore[arg-type]
        self.signer = keygen(tmp / "keys" / "models.key")
        desk = ModelDesk(self.registry, self.signer if can_approve else None, tmp / "packages" if can_approve else None)
        self.app = create_app(self.web, WebConfig(session_s=3600, poll_s=0.05, now_ns=lambda: WALL), model_desk=desk)
        self.tmp = tmp

    def client(self) -> TestClient:
        return TestClient(self.app, follow_redirects=False)


@pytest.fixture
def app(db: str, tmp_path: Path) -> Iterator[ModelsWeb]:
    a = ModelsWeb(db, tmp_path, can_approve=True)
    yield a
    a.store.close()


def test_an_admin_approves_a_registered_model_once_audited_and_it_is_offered(app: ModelsWeb) -> None:
    app.registry.add(shipped_copy(app.tmp / "b1", "1.1.0", metrics={HOSTILE: 0.5}), "ines", WALL)
    with app.client() as c:
        login(c, "ada")
        page = c.get("/models")
        assert page.status_code == 200 and "shotnet 1.1.0" in page.text and "Approve" in page.text
        assert HOSTILE not in page.text and "&lt;script&gt;" in page.text  # a sidecar's text is data
        assert c.post("/models/approve", data={"name": "shotnet", "version": "1.1.0"}).status_code == 403  # no CSRF
        done = c.post("/models/approve", data={"name": "shotnet", "version": "1.1.0", "csrf": csrf_of(c)})
        assert done.status_code == 303 and done.headers["location"].startswith("/models?approved=")
        m = app.registry.get("shotnet", "1.1.0")
        assert m.approved_by == "ada" and m.approved_ns == WALL
        info = verify_package(app.tmp / "packages" / "shotnet-1.1.0", {app.signer.key_id: app.signer.public})
        assert info.approved_by == "ada"
        page = c.get("/models")
        assert "offered" in page.text and "Approved shotnet 1.1.0" not in page.text
        again = c.post("/models/approve", data={"name": "shotnet", "version": "1.1.0", "csrf": csrf_of(c)})
        assert again.status_code == 409 and "was approved by ada" in again.text
    actions = [(r.user, r.action, r.target) for r in app.web.audit_rows()]
    assert ("ada", "model_approve", "model shotnet 1.1.0") in actions
    assert ("ada", "model_approve_failed", "model shotnet 1.1.0") in actions


def test_a_supervisor_only_looks_and_an_operator_does_not_see_the_page(app: ModelsWeb) -> None:
    app.registry.add(shipped_copy(app.tmp / "b2", "1.2.0"), "ines", WALL)
    with app.client() as c:
        login(c, "sam")
        page = c.get("/models")
        assert page.status_code == 200 and "shotnet 1.2.0" in page.text and "Approve</button>" not in page.text
        refused = c.post("/models/approve", data={"name": "shotnet", "version": "1.2.0", "csrf": csrf_of(c)})
        assert refused.status_code == 403
    with app.client() as c:
        login(c, "olga")
        assert c.get("/models").status_code == 403
    assert app.registry.get("shotnet", "1.2.0").approved_ns is None


def test_without_base_s_key_the_page_is_read_only_and_says_why(db: str, tmp_path: Path) -> None:
    a = ModelsWeb(db, tmp_path, can_approve=False)
    try:
        a.registry.add(shipped_copy(tmp_path / "b3", "1.3.0"), "ines", WALL)
        with a.client() as c:
            login(c, "ada")
            page = c.get("/models")
            assert "--model-key KEY --model-packages DIR" in page.text and "Approve</button>" not in page.text
            r = c.post("/models/approve", data={"name": "shotnet", "version": "1.3.0", "csrf": csrf_of(c)})
            assert r.status_code == 503
    finally:
        a.store.close()


def test_serve_takes_the_model_key_and_the_packages_folder_together(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from bodycam.base.cli import main

    key = tmp_path / "models.key"
    keygen(key)
    assert main(["serve", "--db", str(tmp_path / "b.db"), "--model-key", str(key)]) == 2
    assert "--model-key and --model-packages go together" in capsys.readouterr().err
    assert main(["serve", "--db", str(tmp_path / "b.db"), "--model-key", str(tmp_path / "none.key"),
                 "--model-packages", str(tmp_path / "p")]) == 2
    assert "no model-signing key: run 'bodycam-base model keygen" in capsys.readouterr().err
