"""End-to-end acknowledgement from base (real Mosquitto): retained ``ack`` after storing, ``cmd/resend``
for holes and after a restore from an older backup, MQTT 5 expiry on resend, MQTT 3.1.1 without it."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from _mqtt import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion
from test_store import make_markers

from bodycam.base.consumer import Consumer, ConsumerOptions
from bodycam.base.store import SqliteStore
from bodycam.device.uplink.markers import Marker

pytestmark = pytest.mark.integration


@dataclass
class Got:
    topic: str
    body: dict[str, Any]
    retain: bool
    expiry: int | None


class Watcher:
    """A plain MQTT client that records what base publishes to the cameras."""

    def __init__(self, port: int, topics: list[str], protocol: int = mqtt.MQTTv5) -> None:
        self.q: queue.Queue[Got] = queue.Queue()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        subscribed = threading.Event()
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.payload:  # a cleared retained message
            return
        props = getattr(msg, "properties", None)
        expiry = getattr(props, "MessageExpiryInterval", None) if props is not None else None
        self.q.put(Got(msg.topic, json.loads(msg.payload), bool(msg.retain), expiry))

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def wait(self, pred: Callable[[Got], bool], timeout: float = 10.0) -> Got:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = self.q.get(timeout=0.1)
            except queue.Empty:
                continue
            if pred(got):
                return got
        raise AssertionError("timed out waiting for a message from base")

    def drain(self, seconds: float) -> list[Got]:
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(queue.Empty):
                out.append(self.q.get(timeout=0.05))
        return out

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class Base:
    """A consumer on its own thread, as ``bodycam-base listen`` runs it."""

    def __init__(self, broker: Mosquitto, db: Path, **opts: Any) -> None:
        self.store = SqliteStore(db)
        self.lines: list[str] = []
        self.consumer = Consumer(
            ConsumerOptions(url=broker.url, client_id="base-test", **opts), self.store, notify=self.lines.append
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.consumer.run, args=(self.stop,))
        self.thread.start()
        assert self.consumer.subscribed.wait(10)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.store.close()


@pytest.fixture
def broker(mosquitto: Mosquitto) -> Mosquitto:
    return mosquitto


def send(w: Watcher, markers: list[Marker]) -> None:
    for m in markers:
        w.publish(f"bodycam/{m.device}/marker", m.to_json())


def is_ack(seq: int) -> Callable[[Got], bool]:
    return lambda g: g.topic.endswith("/ack") and g.body["seq"] == seq


def test_ack_is_retained_and_names_the_highest_contiguous_seq(broker: Mosquitto, tmp_path: Path) -> None:
    ms = make_markers(tmp_path, 6)
    w = Watcher(broker.port, ["bodycam/+/ack"])
    base = Base(broker, tmp_path / "base.db")
    try:
        send(w, ms[:3])
        got = w.wait(is_ack(3))
        assert got.body["schema"] == "bodycam.ack/1" and got.body["device"] == "cam-01"
        assert got.body["t"].endswith("Z") and len(got.body["t"]) == 24
        with SqliteStore(tmp_path / "base.db") as s:  # committed before it was acknowledged
            assert s.count() >= 3
        send(w, ms[4:6])  # 4 missing: the ack stays at 3
        assert not [g for g in w.drain(0.6) if g.topic.endswith("/ack") and g.body["seq"] > 3]
        send(w, ms[3:4])
        w.wait(is_ack(6))
    finally:
        base.close()
        w.close()
    late = Watcher(broker.port, ["bodycam/cam-01/ack"])  # a camera that connects later gets it at once
    try:
        got = late.wait(lambda g: True)
        assert got.retain and got.body["seq"] == 6
    finally:
        late.close()


def test_hole_is_requested_once_with_expiry_and_refilled(broker: Mosquitto, tmp_path: Path) -> None:
    ms = make_markers(tmp_path, 8)
    w = Watcher(broker.port, ["bodycam/+/ack", "bodycam/+/cmd/resend"])
    base = Base(broker, tmp_path / "base.db", resend_after_s=0.3)
    try:
        send(w, ms[:2] + ms[5:8])  # 3..5 missing
        w.wait(is_ack(2))
        got = w.wait(lambda g: g.topic == "bodycam/cam-01/cmd/resend")
        b = got.body
        assert (b["schema"], b["verb"], b["from_seq"], b["to_seq"]) == ("bodycam.cmd/1", "resend", 3, 5)
        assert len(b["id"]) == 36 and b["t"].endswith("Z")
        assert got.expiry is not None and 0 < got.expiry <= 300 and not got.retain
        # the same range is not asked again within resend_repeat_s (30 s)
        assert not [g for g in w.drain(1.5) if "cmd/resend" in g.topic]
        send(w, ms[2:5])  # the camera sends them again (one of them twice: deduplicated)
        send(w, ms[3:4])
        w.wait(is_ack(8))
        assert base.consumer.counters["duplicate"] == 1
        assert base.consumer.counters["resend_requests"] == 1
        assert any("3..5 missing" in line for line in base.lines)
    finally:
        base.close()
        w.close()


def test_restart_publishes_acks_and_a_restore_asks_for_what_was_acknowledged_before(
    broker: Mosquitto, tmp_path: Path
) -> None:
    ms = make_markers(tmp_path, 10)
    db = tmp_path / "base.db"
    with SqliteStore(db) as s:
        s.add_markers([(m, 1) for m in ms[:4]])  # the backup: seqs 1..4
    w = Watcher(broker.port, ["bodycam/+/cmd/resend"])
    # what the base before the restore had acknowledged (retained at the broker)
    w.publish("bodycam/cam-01/ack", b'{"schema":"bodycam.ack/1","device":"cam-01","seq":10,"t":"x"}', retain=True)
    base = Base(broker, db)
    try:
        # Two requests, in either order: the restore (the broker's retained ack 10 is above the 4 the
        # database holds) asks for 5..10; and this base's broker session is fresh (a new broker), so
        # it also asks every known device for everything above what it holds (5..2^63-1).
        asked = set()
        while (5, 10) not in asked or (5, 2**63 - 1) not in asked:
            got = w.wait(lambda g: "cmd/resend" in g.topic)
            asked.add((got.body["from_seq"], got.body["to_seq"]))
        assert asked == {(5, 10), (5, 2**63 - 1)}
        assert base.consumer.counters["resend_requests"] == 1  # the restore's; the other is counted apart
        assert base.consumer.counters["fresh_session_requests"] == 1
        send(w, ms[4:])
        acks = Watcher(broker.port, ["bodycam/cam-01/ack"])
        try:
            acks.wait(is_ack(10))
        finally:
            acks.close()
    finally:
        base.close()
        w.close()
    # a restart publishes the ack of every known device (a retained one cleared meanwhile)
    w = Watcher(broker.port, ["bodycam/+/ack"])
    w.publish("bodycam/cam-01/ack", b"", retain=True)
    base = Base(broker, db)
    try:
        w.wait(is_ack(10))
    finally:
        base.close()
        w.close()


def test_mqtt_311_acks_and_resend_without_expiry(broker: Mosquitto, tmp_path: Path) -> None:
    ms = make_markers(tmp_path, 4)
    w = Watcher(broker.port, ["bodycam/+/ack", "bodycam/+/cmd/resend"], protocol=mqtt.MQTTv311)
    base = Base(broker, tmp_path / "base.db", protocol="3.1.1", resend_after_s=0.2)
    try:
        assert base.consumer.protocol == "3.1.1"
        send(w, [ms[0], ms[3]])
        w.wait(is_ack(1))
        got = w.wait(lambda g: "cmd/resend" in g.topic)
        assert (got.body["from_seq"], got.body["to_seq"], got.expiry) == (2, 3, None)
        send(w, ms[1:3])
        w.wait(is_ack(4))
    finally:
        base.close()
        w.close()


def test_a_device_first_seen_above_seq_1_is_asked_for_the_rest_before_its_first_ack(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """E.g. a broker SIGKILLed with seqs 1..4 queued, then seq 5 got through: an ack of 5 at once
    would let the camera delete 1..4."""
    ms = make_markers(tmp_path, 5)
    w = Watcher(broker.port, ["bodycam/+/ack", "bodycam/+/cmd/resend"])
    base = Base(broker, tmp_path / "base.db", first_ack_hold_s=1.5)
    try:
        send(w, ms[4:5])
        got = w.wait(lambda g: "cmd/resend" in g.topic)
        assert (got.body["from_seq"], got.body["to_seq"]) == (1, 4)
        assert not [g for g in w.drain(0.8) if g.topic.endswith("/ack")]  # held
        send(w, ms[:4])  # the camera sends what it still holds
        w.wait(is_ack(5), timeout=10)
        with SqliteStore(tmp_path / "base.db") as s:
            assert [x.marker.seq for x in s.markers()] == [1, 2, 3, 4, 5]
    finally:
        base.close()
        w.close()
