"""Peer activation end to end: real Mosquitto, two `bodycam-base listen` processes sharing the group,
and three simulated cameras (`bodycam-sim run`, the real firmware) placed by their simulated GNSS.

Camera A runs the example clip with shots; camera B (150 m away) starts recording and its
`recording_start` names one of A's gunshot markers; camera C (3 km away) is not asked; a command
that expired before it reached C is ignored (logged), and an operator then starts C from the
dashboard (`serve --broker`, logged in, CSRF token, the fleet page's form): C was listening all along.
The first `listen` also sends the alerts out: a real local webhook gets every gunshot.
"""

from __future__ import annotations

import http.cookiejar
import io
import json
import re
import sqlite3
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import pytest
from _clips import make_plain_clip
from _mqtt import free_port, wait_port
from paho.mqtt.enums import CallbackAPIVersion
from test_alerts_out import Hook
from test_base_integration import Procs, read_until
from test_web import PW

from bodycam.base.cli import main as base_main
from bodycam.device.clock import rfc3339_ms
from bodycam.device.identity import ensure_key
from bodycam.device.uplink.markers import canonical_json

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "examples" / "range_demo.mp4"
HERE = (52.2053, 0.1218)
NEAR = (HERE[0] + 150 / 111_195.0, HERE[1])  # 150 m north
FAR = (HERE[0] + 3000 / 111_195.0, HERE[1])  # 3 km north
T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Base:
    """A read-only view of base's SQLite database (the listeners write it)."""

    def __init__(self, db: Path) -> None:
        self.db = db

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        if not self.db.exists():
            return []
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=15) as c:
            try:
                return list(c.execute(sql, args).fetchall())
            except sqlite3.OperationalError as exc:  # a table not made yet, or locked past the timeout
                if "no such table" in str(exc) or "locked" in str(exc):
                    return []
                raise

    def markers(self, device: str, kind: str) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in self.rows("SELECT body FROM markers WHERE device=? AND kind=? ORDER BY seq",
                                                    (device, kind))]

    def placed_and_online(self, device: str) -> bool:
        online = self.rows("SELECT 1 FROM devices WHERE device=? AND state='online'", (device,))
        return bool(online) and any(m.get("location") for m in self.markers(device, "manual"))


def sim(procs: Procs, clip: Path, device: str, where: tuple[float, float], out: Path, url: str,
        *extra: str) -> Any:
    return procs.start(["bodycam-sim", "run", str(clip), "--broker", url, "--device-id", device,
                        "--out", str(out / device), "--start-time", "now", "--gnss-at", f"{where[0]},{where[1]}",
                        "--quiet", "--json", *extra])


def command(device: str, cid: str, reason: str, t_ns: int, expires_ns: int) -> bytes:
    return canonical_json({"schema": "bodycam.cmd/1", "verb": "record", "id": cid, "device": device,
                           "reason": reason, "t": rfc3339_ms(t_ns), "expires": rfc3339_ms(expires_ns)})


def publish(port: int, topic: str, payload: bytes) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port, 5)
    c.loop_start()
    try:
        c.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


class Operator:
    """A logged-in dashboard user over plain HTTP (cookies, the login form's and the pages' CSRF tokens)."""

    def __init__(self, site: str, name: str, password: str) -> None:
        self.site = site
        self.http = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        token = self.token(self.get("/login"), r'name="csrf" value="([^"]+)"')
        page = self.post("/login", {"name": name, "password": password, "csrf": token, "next": "/fleet"})
        assert "Start recording" in page, page[:500]

    def get(self, path: str) -> str:
        with self.http.open(self.site + path, timeout=30) as r:
            return str(r.read().decode("utf-8"))

    def post(self, path: str, form: dict[str, str]) -> str:
        data = urllib.parse.urlencode(form).encode()
        with self.http.open(self.site + path, data=data, timeout=30) as r:
            return str(r.read().decode("utf-8"))

    @staticmethod
    def token(page: str, pattern: str = r'<meta name="csrf" content="([^"]+)">') -> str:
        m = re.search(pattern, page)
        assert m, page[:500]
        return m.group(1)


def test_a_shot_starts_the_camera_nearby_and_not_the_one_far_away(tmp_path: Path, mosquitto: Any, procs: Procs,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "base.db"
    base = Base(db)
    hook = Hook(fail_first=1)  # dispatch's endpoint: refuses once, then takes everything
    try:
        run_all(tmp_path, db, base, hook, mosquitto, procs, monkeypatch)
    finally:
        hook.close()


def run_all(tmp_path: Path, db: Path, base: Base, hook: Hook, mosquitto: Any, procs: Procs,
            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PW + "\n"))
    assert base_main(["user", "add", "olga", "--role", "operator", "--db", str(db)]) == 0
    for n in (1, 2):  # two consumers of one group: exactly one of them acts per marker
        out = ["--webhook", hook.url] if n == 1 else []
        listen = procs.start([sys.executable, "-m", "bodycam.base.cli", "listen", "--broker", mosquitto.url,
                              "--db", str(db), "--client-id", f"base-{n}", "--group", "g1", "--peer-radius-m", "500",
                              *out])
        assert listen.stdout is not None
        read_until(listen.stdout, "listening", 60)
    port = free_port()
    procs.start([sys.executable, "-m", "bodycam.base.cli", "serve", "--db", str(db), "--listen", f"127.0.0.1:{port}",
                 "--broker", mosquitto.url])
    wait_port(port, 60)

    quiet = make_plain_clip(tmp_path / "quiet.mp4", seconds=90.0, size=(320, 180), audio=False)
    scenario = tmp_path / "press.json"  # a marker press early on: base learns where the camera is
    scenario.write_text(json.dumps({"events": [{"t_s": 1.5, "event": "marker"}]}))
    cam_b = sim(procs, quiet, "cam-b", NEAR, tmp_path, mosquitto.url, "--realtime", "--scenario", str(scenario))
    cam_c = sim(procs, quiet, "cam-c", FAR, tmp_path, mosquitto.url, "--realtime", "--scenario", str(scenario))
    for device in ("cam-b", "cam-c"):
        wait_for(f"{device} online with a position at base", lambda d=device: base.placed_and_online(d), 90)  # type: ignore[misc]

    # camera A's key is registered at base (only a verified gunshot starts other cameras): the simulator
    # keeps its key in OUT/state/identity/device.key, made here first as `bodycam provision` would
    signer = ensure_key(tmp_path / "cam-a" / "state" / "identity" / "device.key", "cam-a")
    (tmp_path / "cam-a.pub").write_bytes(signer.public_pem())
    assert base_main(["keys", "add", "cam-a", str(tmp_path / "cam-a.pub"), "--db", str(db)]) == 0
    cam_a = sim(procs, SHOTS, "cam-a", HERE, tmp_path, mosquitto.url)
    assert cam_a.wait(timeout=180) == 0, procs.stderr(cam_a)
    shots = {m["id"] for m in base.markers("cam-a", "gunshot")}
    assert shots, "camera A's shots reached base"
    start = wait_for("cam-b's peer recording_start at base",
                     lambda: [m for m in base.markers("cam-b", "recording_start")], 30)[0]
    reason = start["extra"]["reason"]
    assert reason.startswith("peer:cam-a/") and reason.split("/", 1)[1] in shots, reason
    assert start["media"] is not None and start["media"]["segment"] == 0  # recording, from the pre-event buffer
    assert cam_b.poll() is None, "cam-b was still running its clip"

    # every gunshot claimed once (two consumers), one command each, all to cam-b
    claims = base.rows("SELECT marker_id, COUNT(*) FROM peer_claims GROUP BY marker_id")
    assert {r[0] for r in claims} <= shots and all(r[1] == 1 for r in claims) and claims
    cmds = base.rows("SELECT device, marker_id, reason FROM peer_commands")
    activated = base.rows("SELECT marker_id FROM peer_claims WHERE outcome='activated'")
    assert {r[0] for r in cmds} == {"cam-b"} and len(cmds) == len(activated) > 0
    # every shot verified (cam-a's key is registered); beyond 10 a minute they are rate-limited
    assert {r[0] for r in base.rows("SELECT outcome FROM peer_claims")} <= {"activated", "rate_limited"}
    assert len(activated) == min(len(claims), 10)
    assert all(r[2] == f"peer:cam-a/{r[1]}" for r in cmds)
    assert base.markers("cam-c", "recording_start") == []

    # an expired command reaching cam-c is ignored, and logged; a valid one then starts it
    now = time.time_ns()
    publish(mosquitto.port, "bodycam/cam-c/cmd/record",
            command("cam-c", "old-1", "base:olga", now - 120 * 10**9, now - 60 * 10**9))
    wait_for("cam-c to log the expired command",
             lambda: "cmd/record old-1 (base:olga) expired" in procs.stderr(cam_c), 30)
    olga = Operator(f"http://127.0.0.1:{port}", "olga", PW)
    fleet = olga.get("/fleet")
    assert '<option value="cam-c">cam-c (online)</option>' in fleet
    sent = olga.post("/devices/record", {"device": "cam-c", "csrf": olga.token(fleet)})
    assert "Sent to cam-c (online)" in sent, sent[:500]
    started = wait_for("cam-c's recording_start", lambda: base.markers("cam-c", "recording_start"), 30)
    assert [m["extra"]["reason"] for m in started] == ["base:olga"]
    assert cam_c.poll() is None and cam_b.poll() is None
    assert base.rows("SELECT user_name, action, target FROM web_audit WHERE action='record'") == [
        ("olga", "record", "device cam-c")]

    # alerts out: every gunshot reached the webhook (after its first refusal), once each
    assert hook.wait(lambda h: {a["marker"] for a in h.ok()} >= shots, 60), hook.requests
    assert sorted(a["marker"] for a in hook.ok() if a["kind"] == "gunshot") == sorted(shots)
    assert hook.requests[0][2] == 503
