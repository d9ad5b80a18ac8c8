"""Several ``bodycam-base serve`` instances on one PostgreSQL database (issue 14, item 4): each one's
alert hub polls the database, so an alert stored by any ``listen`` shows on every instance, and an
acknowledgement made on one instance clears the banner on the others. Real processes, real
PostgreSQL, HTTP logins and the pages' own event streams (``/events``)."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from _mqtt import free_port, wait_port
from test_web import PW, make_markers

from bodycam.base.cli import main, open_store

pytestmark = pytest.mark.integration


class Serve:
    """One ``serve`` process and one logged-in operator session on it, with its event stream read on a thread."""

    def __init__(self, db: str, user: str) -> None:
        self.port = free_port()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "bodycam.base.cli", "serve", "--db", db, "--listen", f"127.0.0.1:{self.port}",
             "--poll-ms", "100"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_port(self.port, 30)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        form = self.http.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        r = self.http.post("/login", data={"name": user, "password": PW, "csrf": token.group(1), "next": "/"})
        assert r.status_code in (200, 303), r.text
        page = self.http.get("/")
        meta = re.search(r'<meta name="csrf" content="([^"]+)"', page.text)
        assert meta is not None, page.text[:300]
        self.csrf = meta.group(1)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            with self.http.stream("GET", "/events", timeout=None) as resp:
                kind = ""
                for line in resp.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        self.events.put({"event": kind, **json.loads(line[6:])})
        except (httpx.HTTPError, RuntimeError):  # the server stopped
            return

    def wait(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        while True:
            ev = self.events.get(timeout=timeout)
            if ev["event"] == kind:
                return ev

    def ack(self, n: int) -> dict[str, Any]:
        r = self.http.post(f"/alerts/{n}/ack", headers={"x-csrf-token": self.csrf, "accept": "application/json"})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def stop(self) -> None:
        self.p.terminate()
        try:
            self.p.wait(20)
        finally:
            self.http.close()
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()


@pytest.fixture
def two(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Serve, Serve]]:
    for user in ("olga", "piet"):
        monkeypatch.setattr("sys.stdin", io.StringIO(PW + "\n"))
        assert main(["user", "add", user, "--role", "operator", "--db", pg_url]) == 0
    a = Serve(pg_url, "olga")
    try:
        b = Serve(pg_url, "piet")
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


def test_two_serve_instances_on_one_database_see_every_alert_and_each_others_acks(
    two: tuple[Serve, Serve], pg_url: str, tmp_path: Path
) -> None:
    a, b = two
    for s in (a, b):
        assert s.wait("snapshot")["alerts"] == []
    shots = [m for m in make_markers(tmp_path, ["manual", "gunshot", "gunshot"]) if m.kind == "gunshot"]
    with closing(open_store(pg_url)) as store:  # what a `listen` does (the trigger makes the alert rows)
        store.add_markers([(m, 1) for m in make_markers(tmp_path / "x", ["manual"], device="cam-09")])
        store.add_markers([(m, 2) for m in shots])
    on_a = {a.wait("alert")["marker"] for _ in shots}
    on_b = {b.wait("alert")["marker"] for _ in shots}
    assert on_a == on_b == {m.id for m in shots}
    # acknowledge one alert on instance a: instance b drops its banner at its next poll
    with closing(open_store(pg_url)) as store:
        ns = [int(r[0]) for r in store.read("SELECT n FROM web_alerts ORDER BY n")]  # type: ignore[attr-defined]
    assert len(ns) == 2
    done = a.ack(ns[0])
    assert done == {"n": ns[0], "acknowledged": True, "by": "olga"}
    assert a.wait("ack")["n"] == ns[0]
    assert b.wait("ack")["n"] == ns[0]
    # and the other way round, by the other operator
    assert b.ack(ns[1])["by"] == "piet"
    assert a.wait("ack")["n"] == ns[1]
    with closing(open_store(pg_url)) as store:
        rows = store.read("SELECT n, acked_by FROM web_alerts ORDER BY n")  # type: ignore[attr-defined]
    assert [(int(n), who) for n, who in rows] == [(ns[0], "olga"), (ns[1], "piet")]
