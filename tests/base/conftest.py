"""Base tests: the Mosquitto fixture from tests/_mqtt.py; a PostgreSQL server (tests/base/_pg.py); ``db``
(every store case on SQLite and on PostgreSQL); ``procs`` (real processes, stopped at the end) and
``browser`` (Debian's chromium through Playwright) for the end-to-end tests; for offload (tests/_offload.py)
``made`` (a camera's signed recordings, once per module; a module may define its own), ``cam`` (a copy
to change) and ``base`` (base's receiver with that camera registered and trusting base's custody key)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collections.abc import Iterator
from typing import Any

import pytest
from _mqtt import mosquitto  # noqa: F401
from _pg import INSTALL_HINT, PgServer, find_bindir, running_pg

from bodycam.base.cli import open_store
from bodycam.base.store import MarkerStore


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    if find_bindir() is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    yield from running_pg()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    name = pg_server.create_db()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_db(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the store lives, as given to ``--db``."""
    if request.param == "sqlite":
        return str(tmp_path / "base.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from _offload import make_recordings

    return make_recordings(tmp_path_factory.mktemp("offload") / "data")


@pytest.fixture
def cam(made: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "cam"
    shutil.copytree(made, copy)
    return copy


@pytest.fixture
def base(tmp_path: Path, cam: Path) -> Iterator[Any]:
    from _offload import make_base

    b = make_base(tmp_path / "base", cam)
    yield b
    b.close()


CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/system-deps.sh); never `playwright install`


@pytest.fixture
def store(db: str) -> Iterator[MarkerStore]:
    """The marker store on ``db`` (both stores), closed after the test; modules that need more define their own."""
    s = open_store(db)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def procs() -> Iterator[Any]:
    from test_base_integration import Procs

    ps = Procs()
    yield ps
    ps.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: run scripts/system-deps.sh (apt-get install chromium)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        try:
            yield b
        finally:
            b.close()
