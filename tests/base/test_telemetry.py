"""Telemetry at base (issue 14): validated by the firmware's own reader, latest per device + bounded
history, hostile payloads counted and never stored, on SQLite and PostgreSQL; and over a real broker."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from _mqtt import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion

from bodycam.base import telemetry as telemetry_rules
from bodycam.base.cli import open_store
from bodycam.base.consumer import Consumer, ConsumerOptions
from bodycam.base.store import MarkerStore, _Store
from bodycam.base.validate import validate_telemetry
from bodycam.device.clock import VirtualClock
from bodycam.device.uplink.markers import JSON
from bodycam.device.uplink.telemetry import read_telemetry, telemetry_payload

WALL = 1_790_000_000_000_000_000


def provider(**over: JSON) -> Mapping[str, JSON]:
    """What the firmware's provider (device/assemble.py) sends."""
    body: dict[str, JSON] = {
        "frames": 300, "inference_ms_p50": 0.8, "recording": True, "storage_alarm": False,
        "model": {"name": "muzzle", "version": "3", "sha256": "a" * 64}, "detector": "cpu",
        "clock": {"synced": True, "source": "gnss", "offset_ms": 1.5},
        "location": {"lat": 51.5, "lon": -0.12, "alt_m": None, "hdop": 0.9, "fix": "3d", "age_s": 0.4},
        "sources": {"cpu_temp_c": 61.2, "storage": {"free_bytes": 8_000_000_000, "total_bytes": 32_000_000_000},
                    "battery": {"percent": 77, "status": "Discharging"}, "absent": {"throttled": "none here"}},
    }
    body.update(over)
    return body


def payload(clk: VirtualClock, device: str = "cam-01", queue_depth: int = 2,
            delivery: Mapping[str, JSON] | None = None, **over: JSON) -> bytes:
    return telemetry_payload(device, clk, queue_depth=queue_depth,
                             delivery=delivery or {"unconfirmed": 1, "alarm": None}, provider=lambda: provider(**over))


@pytest.fixture
def store(db: str) -> Iterator[_Store]:
    s = open_store(db)
    assert isinstance(s, _Store)
    try:
        yield s
    finally:
        s.close()


def consumer(store: MarkerStore, clock: VirtualClock) -> Consumer:
    return Consumer(ConsumerOptions(url="mqtt://127.0.0.1:1"), store, clock=clock)


def test_the_firmware_payload_reads_back_field_by_field() -> None:
    clock = VirtualClock(wall_epoch_ns=WALL)
    tel = validate_telemetry("bodycam", "bodycam/cam-01/telemetry", payload(clock))
    assert (tel.device, tel.queue_depth, tel.unconfirmed, tel.recording) == ("cam-01", 2, 1, True)
    assert (tel.battery_pct, tel.battery_status, tel.temperature_c) == (77, "Discharging", 61.2)
    assert tel.storage_free_pct == 25.0 and tel.storage_alarm is False
    assert (tel.clock_synced, tel.clock_source, tel.clock_offset_ms) == (True, "gnss", 1.5)
    assert tel.model is not None and (tel.model.name, tel.model.version) == ("muzzle", "3")
    assert tel.location is not None and (tel.location.lat, tel.location.lon) == (51.5, -0.12)
    # a device without a battery gauge, clock or GNSS: those are "not reported", not zero
    bare = read_telemetry(json.loads(telemetry_payload("cam-02", clock, queue_depth=0)))
    assert bare.battery_pct is None and bare.clock_synced is None and bare.location is None and bare.recording is None


def test_latest_per_device_history_and_last_seen(store: _Store) -> None:
    clock = VirtualClock(wall_epoch_ns=WALL)
    c = consumer(store, clock)
    assert c.handle("bodycam/cam-01/telemetry", payload(clock, queue_depth=5)) == "telemetry"
    clock.advance_ns(10 * 10**9)
    assert c.handle("bodycam/cam-01/telemetry", payload(clock, queue_depth=6, recording=False)) == "telemetry"
    assert c.handle("bodycam/cam-02/telemetry", payload(clock, device="cam-02")) == "telemetry"
    latest = {s.telemetry.device: s for s in store.telemetry()}
    assert set(latest) == {"cam-01", "cam-02"}
    assert latest["cam-01"].telemetry.queue_depth == 6 and latest["cam-01"].telemetry.recording is False
    assert latest["cam-01"].received_ns == clock.wall_ns()
    assert [s.telemetry.queue_depth for s in store.telemetry_history("cam-01")] == [6, 5]
    devices = {d.device: d for d in store.devices()}  # telemetry alone makes a device known and seen
    assert devices["cam-02"].last_seen_ns == clock.wall_ns() and devices["cam-02"].markers == 0
    assert c.counters["telemetry"] == 3 and c.counters["rejected"] == 0


def test_history_is_bounded_per_device(store: _Store) -> None:
    clock = VirtualClock(wall_epoch_ns=WALL)
    items = []
    for i in range(telemetry_rules.HISTORY_PER_DEVICE + 5):
        clock.advance_ns(10**9)
        body = payload(clock, queue_depth=i)
        tel = validate_telemetry("bodycam", "bodycam/cam-01/telemetry", body)
        items.append(telemetry_rules.TelemetryIn(tel, body.decode(), clock.wall_ns()))
    store.add_telemetry(items[:-3])
    store.add_telemetry(items[-3:])
    other = validate_telemetry("bodycam", "bodycam/cam-02/telemetry", payload(clock, device="cam-02"))
    store.add_telemetry([telemetry_rules.TelemetryIn(other, "{}", clock.wall_ns())])  # body unreadable later: skipped
    kept = store.telemetry_history("cam-01", limit=10_000)
    assert len(kept) == telemetry_rules.HISTORY_PER_DEVICE
    assert kept[0].telemetry.queue_depth == telemetry_rules.HISTORY_PER_DEVICE + 4 and kept[-1].telemetry.queue_depth == 5
    assert len(store.read("SELECT n FROM telemetry WHERE device='cam-02'")) == 1
    with store.transaction() as tx:  # the rule's bound, smaller
        telemetry_rules.add_telemetry(tx, items[:2], history=1)
    assert [s.telemetry.queue_depth for s in store.telemetry_history("cam-01", limit=10)] == [1]


def test_an_older_message_received_first_is_replaced_by_the_newer(store: _Store) -> None:
    """The camera sends what it queued offline first, then now: the last received is the latest."""
    clock = VirtualClock(wall_epoch_ns=WALL)
    old = payload(clock, queue_depth=1)
    clock.advance_ns(60 * 10**9)
    new = payload(clock, queue_depth=9)
    c = consumer(store, clock)
    c.handle("bodycam/cam-01/telemetry", old)
    clock.advance_ns(10**6)
    c.handle("bodycam/cam-01/telemetry", new)
    assert [s.telemetry.queue_depth for s in store.telemetry()] == [9]


HOSTILE: list[tuple[str, bytes, str]] = [
    ("bodycam/cam-01/telemetry", b"not json", "rejected_not_json"),
    ("bodycam/cam-01/telemetry", b"[1,2]", "rejected_invalid"),
    ("bodycam/cam-01/telemetry", b'{"schema":"bodycam.telemetry/1","device":"cam-01","t":"x","queue_depth":1}',
     "rejected_invalid"),
    ("bodycam/cam-01/telemetry", b"x" * 70_000, "rejected_oversized"),
    ("bodycam/cam-01/telemetry", b"[" * 5000 + b"]" * 5000, "rejected_not_json"),
    ("bodycam/cam-01/telemetry", b'{"a": NaN}', "rejected_not_json"),
    ("bodycam/cam-01/telemetry", b"\xff\xfe", "rejected_not_json"),
    ("bodycam/<script>/telemetry", b"{}", "rejected_bad_topic"),
    ("bodycam/cam-01/telemetry/x", b"{}", "rejected_bad_topic"),
]


def _doc(clk: VirtualClock, **over: Any) -> bytes:
    doc = json.loads(payload(clk))
    for key, value in over.items():
        node = doc
        *path, last = key.split("__")
        for p in path:
            node = node[p]
        node[last] = value
    return json.dumps(doc).encode()


def test_hostile_telemetry_is_rejected_counted_and_sampled_into_the_quarantine(store: _Store) -> None:
    clock = VirtualClock(wall_epoch_ns=WALL)
    c = consumer(store, clock)
    cases = [
        *HOSTILE,
        ("bodycam/cam-01/telemetry", _doc(clock, sources__battery__percent="<b>low</b>"), "rejected_invalid"),
        ("bodycam/cam-01/telemetry", _doc(clock, sources__battery__percent=101), "rejected_invalid"),
        ("bodycam/cam-01/telemetry", _doc(clock, sources__cpu_temp_c="hot"), "rejected_invalid"),
        ("bodycam/cam-01/telemetry", _doc(clock, recording="yes"), "rejected_invalid"),
        ("bodycam/cam-01/telemetry", _doc(clock, clock={"synced": 1}), "rejected_invalid"),
        ("bodycam/cam-01/telemetry", _doc(clock, location={"lat": 91, "lon": 0}), "rejected_invalid"),
        ("bodycam/cam-01/telemetry", _doc(clock, model={"name": "<img src=x onerror=alert(1)>"}), "rejected_invalid"),
        ("bodycam/cam-01/telemetry", _doc(clock, queue_depth=-1), "rejected_invalid"),
        ("bodycam/cam-01/telemetry", _doc(clock, device="<cam>"), "rejected_invalid"),
        ("bodycam/cam-01/telemetry", _doc(clock, schema="bodycam.telemetry/9"), "rejected_invalid"),
    ]
    for topic, body, outcome in cases:
        assert c.handle(topic, body) == outcome, (topic, body[:80])
    assert store.telemetry() == [] and c.counters["rejected"] == len(cases)
    # a payload device other than the topic's is a mismatch when the payload itself is valid
    assert c.handle("bodycam/cam-09/telemetry", payload(clock)) == "rejected_topic_mismatch"
    # counted always; quarantined once a minute per device and reason (telemetry arrives every 10 s)
    kinds = [(q.item.device, q.item.kind) for q in store.quarantined(limit=1000)]
    assert kinds.count(("cam-01", "rejected_invalid")) == 1
    assert kinds.count(("cam-01", "rejected_not_json")) == 1
    assert ("cam-09", "rejected_topic_mismatch") in kinds
    assert c.counters["rejected_telemetry_not_quarantined"] > 0
    # and the store still takes good telemetry
    assert c.handle("bodycam/cam-01/telemetry", payload(clock)) == "telemetry"


@pytest.mark.integration
def test_firmware_telemetry_over_a_real_broker_reaches_the_store(mosquitto: Mosquitto, db: str) -> None:
    store = open_store(db)
    stop = threading.Event()
    c = Consumer(ConsumerOptions(url=mosquitto.url, client_id="base-tel"), store)
    thread = threading.Thread(target=c.run, args=(stop,), daemon=True)
    thread.start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cam-01", protocol=mqtt.MQTTv5)
    try:
        assert c.subscribed.wait(10)
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        clock = VirtualClock(wall_epoch_ns=WALL)
        deadline = time.monotonic() + 15
        while not store.telemetry() and time.monotonic() < deadline:  # QoS 0: publish until one lands
            pub.publish("bodycam/cam-01/telemetry", payload(clock, queue_depth=4), qos=0).wait_for_publish(5)
            time.sleep(0.2)
        got = store.telemetry()
        assert [(s.telemetry.device, s.telemetry.queue_depth) for s in got] == [("cam-01", 4)]
    finally:
        pub.loop_stop()
        pub.disconnect()
        stop.set()
        thread.join(10)
        store.close()
