"""The web app (``bodycam-base serve``) on both stores, through Starlette's TestClient: alerts made by
the store's own transaction, login/roles/CSRF/rate limit/session expiry, acknowledge + audit,
search and the marker page, hostile marker fields escaped, a database outage as a 503 page."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from bodycam.base.cli import main, open_store
from bodycam.base.store import MarkerStore
from bodycam.base.web.alerts import AlertHub
from bodycam.base.web.app import WebConfig, create_app
from bodycam.base.web.auth import MAX_FAILS_USER, Auth
from bodycam.base.web.db import WebDb
from bodycam.device.clock import VirtualClock
from bodycam.device.uplink.markers import Location, Marker, MarkerDraft, Media, ModelRef
from bodycam.device.uplink.outbox import Outbox

WALL = 1_764_072_000_000_000_000
PW = "correct horse battery"
HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">"\'&'


def make_markers(tmp_path: Path, kinds: list[str], device: str = "cam-01", extra: dict[str, Any] | None = None,
                 model_name: str = "muzzle", recording: str = "rec-1") -> list[Marker]:
    clock = VirtualClock(wall_epoch_ns=WALL)
    out = []
    with Outbox(tmp_path / f"{device}-{len(kinds)}.db", device, clock, fsync="normal") as ob:
        for i, kind in enumerate(kinds):
            clock.advance_ns(1_000_000_000)
            shot = kind == "gunshot"
            out.append(ob.record(MarkerDraft(
                kind=kind, t_mono_ns=clock.monotonic_ns(), wall_ns=clock.wall_ns(),
                confidence=0.97 if shot else None,
                model=ModelRef(model_name, "1", "0" * 64) if shot else None,
                media=Media(recording, 0, float(i), i * 30),
                location=Location(51.5, -0.12, 20.0, 0.9, "3d", 0.5) if shot else None,
                extra=({"evidence": {"video": 0.98, "audio": 0.99}} | (extra or {})) if shot else None,
            )))
    return out


class WebApp:
    def __init__(self, db: str, tmp_path: Path) -> None:
        self.now = WALL
        self.store: MarkerStore = open_store(db)
        self.web = WebDb(self.store)
        self.auth = Auth(self.web)
        for name, role in (("olga", "operator"), ("sam", "supervisor")):
            self.auth.add_user(name, role, PW, WALL)
        self.app = create_app(self.web, WebConfig(session_s=3600, poll_s=0.05, now_ns=lambda: self.now))
        self.tmp = tmp_path

    def client(self) -> TestClient:
        return TestClient(self.app, follow_redirects=False)


@pytest.fixture
def web(db: str, tmp_path: Path) -> Iterator[WebApp]:
    a = WebApp(db, tmp_path)
    try:
        yield a
    finally:
        a.store.close()


def login(c: TestClient, name: str = "olga", password: str = PW) -> Any:
    page = c.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text
    return c.post("/login", data={"name": name, "password": password, "csrf": csrf.group(1), "next": "/markers"})


def csrf_of(c: TestClient) -> str:
    m = re.search(r'<meta name="csrf" content="([^"]+)">', c.get("/").text)
    assert m
    return m.group(1)


def test_a_stored_gunshot_makes_one_alert_in_the_same_transaction(web: WebApp) -> None:
    ms = make_markers(web.tmp, ["manual", "gunshot", "gunshot"])
    WebDb(web.store)  # opened again (another `serve` or `listen`): the trigger is still there, once
    web.store.add_markers([(m, WALL + i) for i, m in enumerate(ms)])
    web.store.add_markers([(ms[1], WALL + 9)])  # a duplicate delivery: no second alert
    alerts = web.web.open_alerts()
    assert [(a.marker_id, a.device, a.kind) for a in alerts] == [(ms[1].id, "cam-01", "gunshot"),
                                                                  (ms[2].id, "cam-01", "gunshot")]
    assert web.web.acknowledge(alerts[0].n, "olga", WALL + 100, "10.0.0.1") is True
    assert web.web.acknowledge(alerts[0].n, "sam", WALL + 200, "10.0.0.2") is False  # already done
    assert [a.marker_id for a in web.web.open_alerts()] == [ms[2].id]
    acked = web.web.alert_of(ms[1].id)
    assert acked is not None and (acked.acked_by, acked.acked_ns) == ("olga", WALL + 100)
    audit = [r for r in web.web.audit_rows() if r.action == "acknowledge"]
    assert [(r.user, r.target, r.detail, r.client) for r in audit] == [
        ("olga", f"alert {alerts[0].n}", f"marker {ms[1].id}", "10.0.0.1")]


def test_pages_need_a_login_and_the_login_needs_its_csrf_cookie(web: WebApp) -> None:
    with web.client() as c:
        for path in ("/", "/markers", "/fleet", "/audit"):
            r = c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
        assert c.get("/events").status_code == 401
        assert c.post("/alerts/1/ack").status_code == 401
        r = c.post("/login", data={"name": "olga", "password": PW, "csrf": "forged", "next": "/"})
        assert r.status_code == 403 and "bodycam_session" not in r.cookies
        r = login(c, password="wrong password!")
        assert r.status_code == 401 and "Wrong user name or password" in r.text
        r = login(c)
        assert r.status_code == 303 and r.headers["location"] == "/markers"
        assert c.get("/markers").status_code == 200
        assert c.get("/audit").status_code == 403  # operator: no audit page
        assert "default-src 'self'" in c.get("/").headers["content-security-policy"]


def test_session_expires(web: WebApp) -> None:
    with web.client() as c:
        login(c)
        assert c.get("/fleet").status_code == 200
        web.now += 3600 * 1_000_000_000 - 1
        assert c.get("/fleet").status_code == 200
        web.now += 1
        assert c.get("/fleet").status_code == 303


def test_bad_logins_are_rate_limited_per_user_even_with_the_right_password(web: WebApp) -> None:
    with web.client() as c:
        for _ in range(MAX_FAILS_USER):
            assert login(c, "olga", "not the password").status_code == 401
        r = login(c, "olga", PW)
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0 and "bodycam_session" not in r.cookies
        assert login(c, "sam", PW).status_code == 303  # another user is not locked out
        web.now += 15 * 60 * 1_000_000_000 + 1  # the failures leave the window
        assert login(c, "olga", PW).status_code == 303


def test_the_login_limit_holds_for_concurrent_attempts(web: WebApp, db: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Three `serve` instances (each its own connection) get logins all at once: 30 wrong passwords for
    olga from 30 addresses, then 30 for 30 user names from one address. Only MAX_FAILS_USER (resp.
    MAX_FAILS_CLIENT) passwords are checked; the others are refused unchecked, and so is the right one next."""
    import threading

    import bodycam.base.web.auth as auth_mod
    from bodycam.base.web.auth import MAX_FAILS_CLIENT

    stores = [open_store(db) for _ in range(3)]
    auths = [Auth(WebDb(s)) for s in stores]
    real, lock, checked = auth_mod._hasher, threading.Lock(), [0]

    class Counting:  # the real argon2 check, counted, and a little slower (a busy box)
        def verify(self, pw_hash: str, password: str) -> bool:
            with lock:
                checked[0] += 1
            time.sleep(0.05)
            return bool(real.verify(pw_hash, password))

    monkeypatch.setattr(auth_mod, "_hasher", Counting())

    def wave(attempts: list[tuple[str, str, str]]) -> list[Any]:
        barrier, results = threading.Barrier(len(attempts)), []

        def attempt(i: int, name: str, password: str, client: str) -> None:
            barrier.wait()
            r = auths[i % len(auths)].login(name, password, client, WALL)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=attempt, args=(i, *a)) for i, a in enumerate(attempts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    try:
        results = wave([("olga", "not the password", f"10.0.0.{i}") for i in range(30)])
        assert checked[0] == MAX_FAILS_USER, checked
        assert sum(r.retry_after_s > 0 for r in results) == 30 - MAX_FAILS_USER
        rows = web.web.rows("SELECT COUNT(*) FROM web_login_failures WHERE key='user:olga'")
        assert int(rows[0][0]) == MAX_FAILS_USER
        right = auths[0].login("olga", PW, "10.1.1.1", WALL + 1)
        assert right.retry_after_s > 0 and right.session_token is None and checked[0] == MAX_FAILS_USER
        checked[0] = 0
        results = wave([(f"user{i}", "not the password", "10.9.9.9") for i in range(30)])
        assert checked[0] == MAX_FAILS_CLIENT, checked
        assert sum(r.retry_after_s > 0 for r in results) == 30 - MAX_FAILS_CLIENT
    finally:
        for s in stores:
            s.close()


def test_acknowledge_needs_csrf_and_is_audited(web: WebApp) -> None:
    ms = make_markers(web.tmp, ["gunshot"])
    web.store.add_markers([(ms[0], WALL)])
    n = web.web.open_alerts()[0].n
    with web.client() as c:
        login(c)
        assert c.post(f"/alerts/{n}/ack").status_code == 403
        assert c.post(f"/alerts/{n}/ack", headers={"x-csrf-token": "x" * 43}).status_code == 403
        assert web.web.open_alerts()[0].n == n
        r = c.post(f"/alerts/{n}/ack", headers={"x-csrf-token": csrf_of(c), "accept": "application/json"})
        assert r.json() == {"n": n, "acknowledged": True, "by": "olga"}
        assert web.web.open_alerts() == []
        page = c.get(f"/markers/{ms[0].id}").text
        assert "acknowledged by olga" in page
        r = c.post("/logout", data={"csrf": csrf_of(c)})
        assert r.status_code == 303 and c.get("/").status_code == 303
    with web.client() as c:
        login(c, "sam")
        audit = c.get("/audit").text
        assert "acknowledge" in audit and f"marker {ms[0].id}" in audit and "logout" in audit


def test_the_hub_streams_a_snapshot_then_new_alerts_and_acks(web: WebApp) -> None:
    ms = make_markers(web.tmp, ["gunshot", "gunshot"])
    web.store.add_markers([(ms[0], WALL)])

    async def scenario() -> list[dict[str, Any]]:
        hub = AlertHub(web.web, poll_s=0.02)
        await hub.start()
        gen = hub.stream(lambda: asyncio.sleep(0, result=False))
        assert (await anext(gen)).startswith("retry:")
        events = [await anext(gen)]
        web.store.add_markers([(ms[1], WALL + 1)])
        events.append(await asyncio.wait_for(anext(gen), 5))
        web.web.acknowledge(hub.open[min(hub.open)]["n"], "olga", WALL, "x")
        events.append(await asyncio.wait_for(anext(gen), 5))
        await hub.stop()
        await gen.aclose()
        out = []
        for e in events:
            kind, data = e.split("\n")[:2]
            out.append({"event": kind.removeprefix("event: "), **json.loads(data.removeprefix("data: "))})
        return out

    snap, new, ack = asyncio.run(scenario())
    assert snap["event"] == "snapshot" and [a["marker"] for a in snap["alerts"]] == [ms[0].id]
    assert snap["alerts"][0]["location"]["lat"] == 51.5 and snap["alerts"][0]["evidence"] == {"video": 0.98,
                                                                                              "audio": 0.99}
    assert new["event"] == "alert" and new["marker"] == ms[1].id and new["confidence"] == 0.97
    assert ack == {"event": "ack", "type": "ack", "n": snap["alerts"][0]["n"]}


def test_a_marker_page_says_whether_its_signature_verified(web: WebApp) -> None:
    """cam-01 has no registered key: its gunshot is stored (and alerted) unverified, and its page says so;
    cam-02 signs with its registered key: verified."""
    from bodycam.base.keys import KeyRegistry
    from bodycam.device.identity import Signer

    unverified = make_markers(web.tmp, ["gunshot"])[0]
    signer = Signer.generate()
    KeyRegistry(web.store).add("cam-02", signer.public_pem(), WALL)  # type: ignore[arg-type]
    clock = VirtualClock(wall_epoch_ns=WALL)
    with Outbox(web.tmp / "signed.db", "cam-02", clock, fsync="normal", signer=signer) as ob:
        clock.advance_ns(10**9)
        signed = ob.record(MarkerDraft(kind="gunshot", t_mono_ns=clock.monotonic_ns(), wall_ns=clock.wall_ns(),
                                       confidence=0.9, model=ModelRef("m", "1", "0" * 64)))
    web.store.add_markers([(unverified, WALL), (signed, WALL)])
    assert {a.marker_id for a in web.web.open_alerts()} == {unverified.id, signed.id}  # both alerted
    with web.client() as c:
        login(c)
        page = c.get(f"/markers/{unverified.id}").text
        assert '<td id="signature" class="unverified">unverified: no key registered for the device</td>' in page
        page = c.get(f"/markers/{signed.id}").text
        assert '<td id="signature" class="verified">verified (signed with a registered key)</td>' in page


def test_search_filters_newest_first_and_pages(web: WebApp) -> None:
    a = make_markers(web.tmp, ["manual", "gunshot"] * 30, device="cam-01")
    b = make_markers(web.tmp, ["gunshot"], device="cam-02")
    web.store.add_markers([(m, WALL) for m in a + b])
    with web.client() as c:
        login(c)
        page1 = c.get("/markers?device=cam-01").text
        ids = re.findall(r'href="/markers/([0-9a-f-]{36})"', page1)
        assert ids == [m.id for m in reversed(a)][:50] and 'rel="next"' in page1
        page2 = c.get("/markers?device=cam-01&page=2").text
        assert re.findall(r'href="/markers/([0-9a-f-]{36})"', page2) == [m.id for m in reversed(a)][50:]
        shots = c.get("/markers?kind=gunshot&since=2025-11-25T12:00:10Z&until=2025-11-25T12:00:20").text
        got = re.findall(r'href="/markers/([0-9a-f-]{36})"', shots)
        want = [m.id for m in sorted(a + b, key=lambda m: (-m.t_ns, m.device))
                if m.kind == "gunshot" and WALL + 10 * 10**9 <= m.t_ns < WALL + 20 * 10**9]
        assert got == want and len(want) == 5  # cam-01 shots at 10, 12, ... 18 s
        bad = c.get("/markers?since=yesterday")
        assert bad.status_code == 400 and "is not a date or time" in bad.text
        page = c.get(f"/markers/{a[1].id}").text
        assert "51.5, -0.12" in page and "audio: 0.99, video: 0.98" in page and "none before this marker" in page
        assert c.get("/markers/not-an-id").status_code == 404
        fleet = c.get("/fleet").text
        assert "cam-01" in fleet and "cam-02" in fleet


def test_a_page_number_too_large_is_a_bad_request_not_an_outage(web: WebApp) -> None:
    with web.client() as c:
        login(c)
        for page in ("99999999999999999999", "1000001"):
            r = c.get(f"/markers?page={page}")
            assert r.status_code == 400 and "page: at most 1000000" in r.text, page
        assert c.get("/markers?page=1000000").status_code == 200


def test_recording_and_file_names_match_whole_strings() -> None:
    from bodycam.device.uplink.offload_wire import FILE_RE, RECORDING_RE

    for rid in ("20260101T000000000Z", "20260101T000000000Z-0001"):
        assert RECORDING_RE.match(rid) and not RECORDING_RE.match(rid + "\n")
    for name in ("manifest.json", "segment-00001.mp4", "segment-00001.mp4.age"):
        assert FILE_RE.match(name) and not FILE_RE.match(name + "\n")


def test_a_gap_before_a_marker_is_shown(web: WebApp) -> None:
    ms = make_markers(web.tmp, ["manual", "gunshot", "gunshot"])
    web.store.add_markers([(ms[0], WALL), (ms[2], WALL)])
    with web.client() as c:
        login(c)
        page = c.get(f"/markers/{ms[2].id}").text
        assert "seq 2 is missing at base" in page and "the previous marker has not arrived" in page


def test_hostile_marker_fields_are_escaped_everywhere(web: WebApp) -> None:
    ms = make_markers(web.tmp, ["gunshot"], extra={"note": HOSTILE, "evidence": {HOSTILE: 0.5}},
                      model_name=HOSTILE[:64], recording=HOSTILE)
    web.store.add_markers([(ms[0], WALL)])
    with web.client() as c:
        login(c)
        for path in ("/", "/markers", f"/markers/{ms[0].id}", "/markers?device=" + HOSTILE):
            html = c.get(path).text
            assert "<script>window" not in html and "<img src=x" not in html, path
        page = c.get(f"/markers/{ms[0].id}").text
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;&lt;img src=x onerror=" in page
    snap = AlertHub(web.web)
    asyncio.run(snap.poll_once())
    from bodycam.base.web.alerts import _sse

    sse = _sse(next(iter(snap.open.values())))
    assert "<" not in sse and ">" not in sse and "\\u003cscript\\u003e" in sse


@pytest.mark.integration
def test_a_database_outage_is_a_banner_not_a_stack_trace(pg_server: Any, pg_url: str, tmp_path: Path) -> None:
    web = WebApp(pg_url, tmp_path)
    try:
        with web.client() as c:
            login(c)
            # the test server runs with synchronous_commit off: what was just committed (the tables, the
            # users, the session) could be lost by the immediate stop below; a checkpoint hands it to the
            # OS first, so the outage is the only thing this test breaks
            import psycopg

            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("CHECKPOINT")
            pg_server.halt()
            try:
                r = c.get("/markers")
                assert r.status_code == 503
                assert "Database unavailable" in r.text and "Traceback" not in r.text and "psycopg" not in r.text
                assert 'class="outage"' in r.text
                assert c.get("/").status_code == 503  # the session itself cannot be checked: same page
            finally:
                pg_server.resume()
            # the hub's next poll sees the database back (a call racing the server's start may fail once)
            deadline = time.monotonic() + 30
            while web.app.state.hub.outage is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert web.app.state.hub.outage is None
            # the session survives the outage (checkpointed above); a new login works too
            assert c.get("/markers").status_code == 200
            assert login(c).status_code == 303 and c.get("/markers").status_code == 200
    finally:
        web.store.close()


def test_user_cli_reads_the_password_from_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "base.db")
    monkeypatch.setattr("sys.stdin", io.StringIO(PW + "\n"))
    assert main(["user", "add", "ada", "--role", "admin", "--db", db]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["user", "add", "bob", "--role", "operator", "--db", db]) != 0
    monkeypatch.setattr("sys.stdin", io.StringIO(PW + "\n"))
    assert main(["user", "add", "ada", "--role", "operator", "--db", db]) != 0  # exists
    assert main(["user", "add", "x y", "--role", "operator", "--db", db]) != 0
    err = capsys.readouterr().err
    assert "at least 10 characters" in err and "exists" in err and "user name" in err
    assert main(["user", "list", "--db", db]) == 0
    assert capsys.readouterr().out.splitlines() == ["ada\tadmin"]
    with open_store(db) as store:  # type: ignore[attr-defined]
        result = Auth(WebDb(store)).login("ada", PW, "t", WALL)
    assert result.session_token
