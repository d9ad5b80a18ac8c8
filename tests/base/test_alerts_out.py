"""Alerts out (base/alerts_out.py) against a real local HTTP server that fails and recovers, a server
that hangs, and a real Mosquitto subscriber; the queue is the database's (SQLite and PostgreSQL)."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from _mqtt import free_port
from paho.mqtt.enums import CallbackAPIVersion

from bodycam.base import alerts_out
from bodycam.base.alerts_out import (
    EVENT_TYPES,
    AlertDispatcher,
    DispatchConfig,
    HomeAssistantSink,
    MqttSink,
    WebhookSink,
    signature,
)
from bodycam.base.cli import open_store
from bodycam.base.store import MarkerStore
from bodycam.device.clock import VirtualClock
from bodycam.device.errors import UsageError
from bodycam.device.uplink.markers import Location, Marker, MarkerDraft, ModelRef
from bodycam.device.uplink.mqtt_config import MqttConfig, TlsConfig
from bodycam.device.uplink.outbox import Outbox

SECRET = b"0123456789abcdef-secret"
FAST = DispatchConfig(backoff_min_s=0.05, backoff_max_s=0.2, timeout_s=2.0, poll_s=0.02, lease_s=5.0)


def shots(tmp_path: Path, n: int, device: str = "cam-01") -> list[Marker]:
    clock = VirtualClock(wall_epoch_ns=time.time_ns())
    out = []
    with Outbox(tmp_path / f"{device}-{n}-{time.monotonic_ns()}.db", device, clock, fsync="normal") as ob:
        for _ in range(n):
            clock.advance_ns(10**9)
            out.append(ob.record(MarkerDraft(
                kind="gunshot", t_mono_ns=clock.monotonic_ns(), wall_ns=clock.wall_ns(), confidence=0.97,
                model=ModelRef("m", "1", "0" * 64), location=Location(52.2, 0.12, 10.0, 0.9, "3d", 0.2),
                evidence={"video": 0.98, "audio": 0.99})))
    return out


def store_shots(store: MarkerStore, tmp_path: Path, n: int, device: str = "cam-01") -> list[Marker]:
    ms = shots(tmp_path, n, device)
    store.add_markers([(m, time.time_ns()) for m in ms])  # the trigger makes one web_alerts row each
    return ms


class Hook:
    """A real HTTP server on loopback: answers ``fail_first`` requests with 503, then 200; ``hold``
    keeps a request open until released."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self.cv = threading.Condition()
        self.hold = threading.Event()
        self.release = threading.Event()
        self.release.set()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.hold.is_set():
                    hook.entered.set()
                    hook.release.wait(30)
                with hook.cv:
                    code = 503 if len(hook.requests) < hook.fail_first else 200
                    hook.requests.append(({k.lower(): v for k, v in self.headers.items()}, body, code))
                    hook.cv.notify_all()
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.entered = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def ok(self) -> list[dict[str, Any]]:
        with self.cv:
            return [json.loads(b) for _, b, code in self.requests if code == 200]

    def wait(self, pred: Callable[[Hook], bool], timeout: float = 20.0) -> bool:
        with self.cv:
            return self.cv.wait_for(lambda: pred(self), timeout)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def store(db: str) -> Iterator[MarkerStore]:
    s = open_store(db)
    alerts_out.ensure_tables(s)  # as listen does at start: the alert trigger exists before any marker
    yield s
    s.close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook(fail_first=3)
    yield h
    h.close()


def running(d: AlertDispatcher) -> AlertDispatcher:
    return d.start()


def test_a_webhook_that_fails_then_recovers_gets_every_alert_signed(store: MarkerStore, tmp_path: Path,
                                                                     hook: Hook) -> None:
    ms = store_shots(store, tmp_path, 2)
    d = AlertDispatcher(store, [WebhookSink(hook.url, secret=SECRET)], FAST, instance="base-1")
    d.start()
    try:
        assert hook.wait(lambda h: len(h.ok()) == 2), hook.requests
    finally:
        d.stop()
    assert [r[2] for r in hook.requests] == [503, 503, 503, 200, 200]
    got = sorted(hook.ok(), key=lambda a: a["marker"])
    assert [a["marker"] for a in got] == sorted(m.id for m in ms)
    a = got[0]
    assert a["schema"] == "bodycam.alert/1" and a["kind"] == "gunshot" and a["device"] == "cam-01"
    assert a["location"]["lat"] == 52.2 and a["confidence"] == 0.97 and a["details"]["evidence"]["audio"] == 0.99
    # cam-01 has no registered key: its gunshot is sent, and said to be unverified
    assert a["verified"] is False and a["signature"] == "unverified: no key registered for the device"
    for headers, body, _ in hook.requests:
        ts = headers["x-bodycam-timestamp"]
        assert abs(int(ts) - time.time()) < 300
        expected = "sha256=" + hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert headers["x-bodycam-signature"] == expected == "sha256=" + signature(SECRET, ts, body)
        assert headers["content-type"] == "application/json" and headers["x-bodycam-delivery"].startswith("alert-")
    assert d.pending("webhook") == 0 and d.stats.delivered == 2 and d.stats.failures == 3
    rows = store.read("SELECT state, attempts, last_error FROM alert_deliveries ORDER BY alert_n")  # type: ignore[attr-defined]
    assert [r[0] for r in rows] == ["delivered", "delivered"] and sum(int(r[1]) for r in rows) == 5
    assert any("HTTP 503" in (r[2] or "") for r in rows)  # the last error is kept


def test_an_outage_of_endpoint_and_dispatcher_loses_nothing(store: MarkerStore, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/alerts"  # nothing listens there
    d = AlertDispatcher(store, [WebhookSink(dead)], FAST, instance="base-1")
    store_shots(store, tmp_path, 3)
    for _ in range(3):
        d.step()
    assert d.stats.failures >= 1 and d.stats.delivered == 0 and d.pending("webhook") == 3
    d.stop()  # base goes down too; more alerts arrive meanwhile
    later = store_shots(store, tmp_path, 2, device="cam-02")
    up = Hook()
    try:
        d2 = AlertDispatcher(store, [WebhookSink(up.url)], FAST, instance="base-2").start()
        try:
            assert up.wait(lambda h: len(h.ok()) == 5)
        finally:
            d2.stop()
        assert {a["marker"] for a in up.ok()} >= {m.id for m in later}
        assert len({a["id"] for a in up.ok()}) == 5
    finally:
        up.close()


def test_a_hanging_endpoint_does_not_block_ingest(store: MarkerStore, tmp_path: Path) -> None:
    slow = Hook()
    slow.hold.set()
    slow.release.clear()
    d = AlertDispatcher(store, [WebhookSink(slow.url, timeout_s=30)], FAST, instance="base-1").start()
    try:
        store_shots(store, tmp_path, 1)
        assert slow.entered.wait(20), "the dispatcher is inside a request"
        done = threading.Event()

        def ingest() -> None:
            store_shots(store, tmp_path, 20, device="cam-02")
            done.set()

        t = threading.Thread(target=ingest)
        t.start()
        assert done.wait(30), "markers were stored while the webhook request hangs"
        assert not slow.requests  # the request is still open
        slow.release.set()
        assert slow.wait(lambda h: len(h.ok()) == 21, 30)
        t.join()
    finally:
        d.stop()
        slow.close()


def test_the_queue_is_bounded_and_says_what_it_gave_up(store: MarkerStore, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    dead = f"http://127.0.0.1:{free_port()}/alerts"
    cfg = DispatchConfig(max_pending=3, backoff_min_s=60)
    d = AlertDispatcher(store, [WebhookSink(dead)], cfg)
    store_shots(store, tmp_path, 5)
    d.step()
    assert d.pending("webhook") == 3 and d.stats.given_up == 2
    assert "gave up 0 alert(s) older than 86400 s and 2 over the queue's 3" in caplog.text
    # too old: a dispatcher whose clock is two days later gives the rest up
    d2 = AlertDispatcher(store, [WebhookSink(dead)], cfg, clock=VirtualClock(0, time.time_ns() + 2 * 86400 * 10**9))
    d2.step()
    assert d2.pending("webhook") == 0 and d2.stats.given_up == 3


def test_two_dispatchers_send_each_alert_once(store: MarkerStore, tmp_path: Path) -> None:
    h = Hook()
    ds = [AlertDispatcher(store, [WebhookSink(h.url)], FAST, instance=f"base-{i}").start() for i in (1, 2)]
    try:
        store_shots(store, tmp_path, 10)
        assert h.wait(lambda x: len(x.ok()) >= 10)
        time.sleep(0.3)
    finally:
        for d in ds:
            d.stop()
        h.close()
    assert sorted(a["id"] for a in h.ok()) == sorted({a["id"] for a in h.ok()}) and len(h.ok()) == 10


def _subscriber(pattern: str) -> tuple[mqtt.Client, list[mqtt.MQTTMessage], threading.Event]:
    """An MQTT 5 client that subscribes to ``pattern`` (QoS 1) once connected: (client, messages, subscribed)."""
    got: list[mqtt.MQTTMessage] = []
    ready = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_connect = lambda c, *a: c.subscribe(pattern, qos=1)
    sub.on_subscribe = lambda *a: ready.set()
    sub.on_message = lambda c, u, msg: got.append(msg)
    return sub, got, ready


@pytest.mark.integration
def test_mqtt_republish_reaches_a_subscriber_after_a_broker_outage(db: str, tmp_path: Path, mosquitto: Any) -> None:
    store = open_store(db)
    alerts_out.ensure_tables(store)
    sub, got, ready = _subscriber("dispatch/alerts/#")
    sink = MqttSink(MqttConfig(url=mosquitto.url, connect_timeout_s=1.0, session_expiry_s=0), "dispatch/alerts",
                    "base-alerts-test", timeout_s=2.0)
    d = AlertDispatcher(store, [sink], FAST, instance="base-1")
    try:
        mosquitto.stop()  # the broker is down when the shots arrive
        ms = store_shots(store, tmp_path, 2)
        for _ in range(2):
            d.step()
            time.sleep(0.1)
        assert d.stats.failures >= 1 and d.pending("mqtt") == 2
        mosquitto.start()
        sub.connect("127.0.0.1", mosquitto.port, 5)
        sub.loop_start()
        assert ready.wait(10)
        d.start()
        deadline = time.monotonic() + 20
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(json.loads(m.payload)["marker"] for m in got) == sorted(m.id for m in ms)
        assert all(m.topic == "dispatch/alerts/gunshot" and m.qos == 1 and not m.retain for m in got)
    finally:
        d.stop()
        sub.disconnect()
        sub.loop_stop()
        store.close()


def test_options(tmp_path: Path) -> None:
    p = argparse.ArgumentParser()
    alerts_out.add_arguments(p)
    store = open_store(str(tmp_path / "b.db"))
    mq = MqttConfig(url="mqtt://127.0.0.1:1883")
    try:
        assert alerts_out.from_args(p.parse_args([]), store, mq, "b") is None
        secret = tmp_path / "secret"
        secret.write_bytes(SECRET + b"\n")
        d = alerts_out.from_args(p.parse_args(["--webhook", "https://dispatch.example/hook", "--webhook-secret-file",
                                               str(secret), "--alerts-topic", "dispatch/alerts"]), store, mq, "b")
        assert d is not None and [s.name for s in d.sinks] == ["webhook", "mqtt"]
        assert isinstance(d.sinks[0], WebhookSink) and d.sinks[0].secret == SECRET
        for argv, why in ((["--webhook", "ftp://x"], "http"), (["--alerts-topic", "a/#"], "wildcards"),
                          (["--webhook-secret-file", str(secret)], "needs --webhook"),
                          (["--webhook", "http://x", "--webhook-secret-file", str(tmp_path / "none")], "No such file")):
            with pytest.raises(UsageError, match=why):
                alerts_out.from_args(p.parse_args(argv), store, mq, "b")
        short = tmp_path / "short"
        short.write_bytes(b"abc")
        with pytest.raises(UsageError, match="16"):
            alerts_out.from_args(p.parse_args(["--webhook", "http://x", "--webhook-secret-file", str(short)]),
                                 store, mq, "b")
    finally:
        store.close()
    assert socket is not None


def test_fleet_alerts_of_the_same_table_go_out_too(store: MarkerStore, tmp_path: Path) -> None:
    """A fleet alert (``serve``'s FleetWatch writes it to web_alerts, without a marker) is sent like a shot."""
    h = Hook()
    now = time.time_ns()
    with store.transaction() as tx:  # type: ignore[attr-defined]
        tx.run("INSERT INTO web_alerts(marker_id, device, kind, t, received_ns) VALUES (?,?,?,?,?)",
               (f"fleet:low_battery:cam-03:{now}", "cam-03", "low_battery", "2026-11-29T12:00:00.000Z", now))
    d = AlertDispatcher(store, [WebhookSink(h.url)], replace(FAST, public_url="https://base.example/"))
    try:
        d.start()
        assert h.wait(lambda x: len(x.ok()) == 1)
    finally:
        d.stop()
        h.close()
    [a] = h.ok()
    assert (a["kind"], a["device"], a["marker"], a["location"]) == ("low_battery", "cam-03", None, None)
    assert a["url"] == "https://base.example/fleet"


def _retained(port: int, pattern: str, want: int, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """What a new subscriber to ``pattern`` gets as retained messages (topic -> JSON)."""
    got: dict[str, dict[str, Any]] = {}
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_connect = lambda cl, *a: cl.subscribe(pattern, qos=1)
    c.on_message = lambda cl, u, m: got.__setitem__(m.topic, json.loads(m.payload)) if m.retain else None
    c.connect("127.0.0.1", port, 5)
    c.loop_start()
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        time.sleep(0.05)
    c.disconnect()
    c.loop_stop()
    return got


@pytest.mark.integration
def test_home_assistant_discovers_each_camera_and_gets_every_alert_as_its_event(db: str, tmp_path: Path,
                                                                                  mosquitto: Any) -> None:
    store = open_store(db)
    alerts_out.ensure_tables(store)
    sub, events, ready = _subscriber("bodycam-ha/#")
    waits: list[float] = []
    sink = HomeAssistantSink(MqttConfig(url=mosquitto.url, connect_timeout_s=1.0, session_expiry_s=0),
                             "homeassistant", "bodycam-ha", "base-ha-test", timeout_s=2.0,
                             known_devices=lambda: ["cam-02", "cam-07"], sleep=waits.append)
    d = AlertDispatcher(store, [sink], replace(FAST, public_url="https://base.example/"), instance="base-1")
    try:
        sub.connect("127.0.0.1", mosquitto.port, 5)
        sub.loop_start()
        assert ready.wait(10)
        later, *first = shots(tmp_path, 3, "cam-01")[::-1]  # the newest of cam-01's shots comes later
        ms = first + store_shots(store, tmp_path, 1, "cam-02")
        store.add_markers([(m, time.time_ns()) for m in first])
        d.start()
        deadline = time.monotonic() + 20
        while len(events) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        got = [json.loads(m.payload) for m in events]
        assert sorted(e["marker"] for e in got) == sorted(m.id for m in ms)
        assert all(e["event_type"] == "gunshot" and e["latitude"] == 52.2 and e["longitude"] == 0.12 for e in got)
        assert all(e["url"].startswith("https://base.example/markers/") for e in got)
        assert sorted({m.topic for m in events}) == ["bodycam-ha/cam-01/alert", "bodycam-ha/cam-02/alert"]
        assert all(m.qos == 1 and not m.retain for m in events)
        # a Home Assistant that starts now still finds every camera base knows (retained discovery),
        # those known when the connection opened (cam-02, cam-07: no alert yet) and the new one (cam-01)
        configs = _retained(mosquitto.port, "homeassistant/#", 3)
        assert sorted(configs) == ["homeassistant/event/bodycam_cam-01/alert/config",
                                   "homeassistant/event/bodycam_cam-02/alert/config",
                                   "homeassistant/event/bodycam_cam-07/alert/config"]
        assert waits == [1.0]  # only the camera new to Home Assistant waited before its first event
        c1 = configs["homeassistant/event/bodycam_cam-01/alert/config"]
        assert c1["state_topic"] == "bodycam-ha/cam-01/alert" and c1["event_types"] == list(EVENT_TYPES)
        assert c1["unique_id"] == "bodycam_cam-01_alert" and c1["device"]["identifiers"] == ["bodycam_cam-01"]
        # the broker loses its retained messages: the next alert's connection announces the camera again
        d.stop()
        sub.disconnect()
        sub.loop_stop()
        mosquitto.stop()
        for f in Path(mosquitto.dir).glob("*.db"):
            f.unlink()
        mosquitto.start()
        store.add_markers([(later, time.time_ns())])
        d = AlertDispatcher(store, [sink], FAST, instance="base-1")
        d.start()
        deadline = time.monotonic() + 20
        while d.stats.delivered < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert d.stats.delivered == 1
        assert "homeassistant/event/bodycam_cam-01/alert/config" in _retained(mosquitto.port, "homeassistant/#", 1)
    finally:
        d.stop()
        sub.disconnect()
        sub.loop_stop()
        store.close()


def test_home_assistant_event_types_are_every_alert_kind_base_raises(tmp_path: Path) -> None:
    from bodycam.base.web.db import ALERT_KINDS
    from bodycam.base.web.fleet import CONDITIONS

    assert set(EVENT_TYPES) == set(ALERT_KINDS) | set(CONDITIONS)
    # every device id (letters, digits, '.', '_', '-') gets its own id in Home Assistant's alphabet
    ids = {d: HomeAssistantSink.node_id(d) for d in ("cam-1", "cam_1", "cam.1", "cam_d1", "cam__1", "c.d", "c_dd")}
    assert len(set(ids.values())) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", v) for v in ids.values())
    with pytest.raises(UsageError, match="ha-state-topic"):
        HomeAssistantSink(MqttConfig(url="mqtt://127.0.0.1:1883"), "homeassistant", "bad/#", "x")
    p = argparse.ArgumentParser()
    alerts_out.add_arguments(p)
    store = open_store(":memory:")
    try:
        dd = alerts_out.from_args(p.parse_args(["--ha-discovery"]), store, MqttConfig(url="mqtt://127.0.0.1:1883"), "b")
        assert dd is not None and [s.name for s in dd.sinks] == ["homeassistant"]
        # the alerts' own client certificate (mutual TLS): listen's own would take listen's client id
        crt, key = tmp_path / "alerts.crt", tmp_path / "alerts.key"
        crt.write_text("x")
        key.write_text("y")
        mtls = MqttConfig(url="mqtts://127.0.0.1:8883", tls=TlsConfig(ca_file=None, cert_file="listen.crt",
                                                                        key_file="listen.key"))
        dd = alerts_out.from_args(p.parse_args(["--ha-discovery", "--alerts-topic", "dispatch/alerts",
                                                "--alerts-cert-file", str(crt), "--alerts-key-file", str(key)]),
                                  store, mtls, "b")
        assert dd is not None
        assert all(isinstance(s, MqttSink) and (s.cfg.tls.cert_file, s.cfg.tls.key_file) == (str(crt), str(key))
                   for s in dd.sinks)
        for argv, why in ((["--ha-discovery", "--alerts-cert-file", str(crt)], "go together"),
                          (["--alerts-cert-file", str(crt), "--alerts-key-file", str(key)], "is for"),
                          (["--ha-discovery", "--alerts-cert-file", str(tmp_path / "no"), "--alerts-key-file",
                            str(key)], "no such file")):
            with pytest.raises(UsageError, match=why):
                alerts_out.from_args(p.parse_args(argv), store, mtls, "b")
    finally:
        store.close()
