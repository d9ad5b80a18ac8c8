"""An operator starts recording on a camera from the dashboard: CSRF, audit, the command on a real
Mosquitto (reason ``base:<user>``, MQTT 5 expiry), unknown devices, no broker, a broker that is down."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from _mqtt import free_port
from paho.mqtt.enums import CallbackAPIVersion
from starlette.testclient import TestClient
from test_web import PW, WALL, login

from bodycam.base.cli import open_store
from bodycam.base.store import MarkerStore
from bodycam.base.web.app import WebConfig, create_app
from bodycam.base.web.auth import Auth
from bodycam.base.web.db import WebDb
from bodycam.base.web.record import RecordSender
from bodycam.device.uplink.commands import parse_record
from bodycam.device.uplink.mqtt_config import MqttConfig

pytestmark = pytest.mark.integration


class Site:
    def __init__(self, db: str, url: str | None, *, new: bool = True) -> None:
        self.store: MarkerStore = open_store(db)
        self.web = WebDb(self.store)
        if new:
            Auth(self.web).add_user("olga", "operator", PW, WALL)
        self.store.set_status("cam-02", "online", None, WALL)
        sender = RecordSender(self.web, None if url is None else MqttConfig(url=url, connect_timeout_s=2.0),
                              expiry_s=45)
        self.app = create_app(self.web, WebConfig(session_s=3600, poll_s=0.05, now_ns=lambda: WALL, recorder=sender))

    def client(self) -> TestClient:
        c = TestClient(self.app, follow_redirects=False)
        assert login(c).status_code == 303
        return c

    def audit(self) -> list[tuple[str, str, str, str]]:
        return [(r.user, r.action, r.target, r.detail) for r in self.web.audit_rows() if r.action.startswith("record")]


@pytest.fixture
def cmds(mosquitto: Any) -> Iterator[list[mqtt.MQTTMessage]]:
    got: list[mqtt.MQTTMessage] = []
    ready = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_connect = lambda c, *a: c.subscribe("bodycam/+/cmd/#", qos=1)
    sub.on_subscribe = lambda *a: ready.set()
    sub.on_message = lambda c, u, msg: got.append(msg)
    sub.connect("127.0.0.1", mosquitto.port, 5)
    sub.loop_start()
    assert ready.wait(5)
    yield got
    sub.disconnect()
    sub.loop_stop()


def csrf_on(c: TestClient, path: str) -> str:
    m = re.search(r'<meta name="csrf" content="([^"]+)">', c.get(path).text)
    assert m
    return m.group(1)


def test_an_operator_starts_recording_from_the_fleet_page(db: str, mosquitto: Any, cmds: list[Any]) -> None:
    site = Site(db, mosquitto.url)
    try:
        with site.client() as c:
            page = c.get("/fleet").text
            assert 'action="/devices/record"' in page and '<option value="cam-02">cam-02 (online)</option>' in page
            assert c.post("/devices/record", data={"device": "cam-02"}).status_code == 403  # no CSRF token
            r = c.post("/devices/record", data={"device": "cam-02", "csrf": csrf_on(c, "/fleet")})
            assert r.status_code == 200 and "Sent to cam-02 (online)" in r.text
        deadline = time.monotonic() + 10
        while not cmds and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(cmds) == 1
        msg = cmds[0]
        assert msg.topic == "bodycam/cam-02/cmd/record" and msg.qos == 1
        assert 40 <= msg.properties.MessageExpiryInterval <= 45
        cmd = parse_record(msg.payload)
        assert cmd.device == "cam-02" and cmd.reason == "base:olga" and cmd.id in r.text
        assert site.audit() == [("olga", "record", "device cam-02", f"cmd/record {cmd.id}")]
        rows = site.web.rows("SELECT id, device, reason, issued_by FROM peer_commands")
        assert [tuple(x) for x in rows] == [(cmd.id, "cam-02", "base:olga", "olga")]
    finally:
        site.store.close()


def test_the_marker_page_button_unknown_devices_and_a_dead_broker(db: str, tmp_path: Path) -> None:
    from test_web import make_markers

    dead = f"mqtt://127.0.0.1:{free_port()}"
    site = Site(db, dead)
    try:
        shot = make_markers(tmp_path, ["gunshot"], device="cam-02")[0]
        site.store.add_markers([(shot, WALL)])
        with site.client() as c:
            page = c.get(f"/markers/{shot.id}").text
            assert 'action="/devices/cam-02/record"' in page
            token = csrf_on(c, "/fleet")
            assert c.post("/devices/cam-99/record", data={"csrf": token}).status_code == 404
            assert c.post("/devices/..%2Fx/record", data={"csrf": token}).status_code == 404
            r = c.post("/devices/cam-02/record", data={"csrf": token})
            assert r.status_code == 503 and "Not sent: broker 127.0.0.1" in r.text
        [(user, action, target, detail)] = site.audit()
        assert (user, action, target) == ("olga", "record_failed", "device cam-02") and "127.0.0.1" in detail
        assert site.web.rows("SELECT COUNT(*) FROM peer_commands")[0][0] == 0
    finally:
        site.store.close()
    nobroker = Site(db, None, new=False)
    try:
        with nobroker.client() as c:
            r = c.post("/devices/cam-02/record", data={"csrf": csrf_on(c, "/fleet")})
            assert r.status_code == 503 and "--broker" in r.text
    finally:
        nobroker.store.close()
