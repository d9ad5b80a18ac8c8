"""Peer activation at base (base/peer.py): distance, who is near and online, one instance per marker,
stale shots, and the consumer publishing ``cmd/record`` on a real Mosquitto (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bodycam.base.cli import open_store
from bodycam.base.consumer import Consumer, ConsumerOptions
from bodycam.base.peer import PeerActivation, PeerConfig, great_circle_m
from bodycam.base.store import MarkerStore, _Store
from bodycam.device.clock import VirtualClock
from bodycam.device.uplink.commands import parse_record
from bodycam.device.uplink.markers import Location, Marker, MarkerDraft, ModelRef
from bodycam.device.uplink.outbox import Outbox

WALL = 1_795_000_000_000_000_000
HERE = (52.2053, 0.1218)


def north_of(metres: float) -> tuple[float, float]:
    return HERE[0] + metres / 111_195.0, HERE[1]


def markers(tmp_path: Path, device: str, kinds: list[str], where: tuple[float, float] | None,
            wall: int = WALL) -> list[Marker]:
    clock = VirtualClock(wall_epoch_ns=wall - 10 * 10**9)
    out = []
    with Outbox(tmp_path / f"{device}-{len(kinds)}-{wall}.db", device, clock, fsync="normal") as ob:
        for kind in kinds:
            clock.advance_ns(1_000_000_000)
            shot = kind == "gunshot"
            out.append(ob.record(MarkerDraft(
                kind=kind, t_mono_ns=clock.monotonic_ns(), wall_ns=clock.wall_ns(),
                confidence=0.97 if shot else None, model=ModelRef("m", "1", "0" * 64) if shot else None,
                location=None if where is None else Location(where[0], where[1], 10.0, 0.9, "3d", 0.2))))
    return out


def test_great_circle_distance() -> None:
    assert great_circle_m(*HERE, *HERE) == 0.0
    assert abs(great_circle_m(0, 0, 1, 0) - 111_195) < 1  # one degree of latitude on the mean sphere
    assert abs(great_circle_m(*HERE, *north_of(250)) - 250) < 0.1
    # across the antimeridian: 0.2 degrees of longitude at the equator, not 359.8
    assert abs(great_circle_m(0, 179.9, 0, -179.9) - 2 * math.pi * 6_371_008.8 * 0.2 / 360) < 1


class Fleet:
    """A store with the shooter cam-a and cameras around it; ``publish`` records what would be sent."""

    def __init__(self, db: str, tmp_path: Path, received_ns: int = WALL) -> None:
        self.store: MarkerStore = open_store(db)
        self.received_ns = received_ns
        self.tmp = tmp_path
        self.clock = VirtualClock(wall_epoch_ns=WALL + 5 * 10**9)  # base: 5 s after the markers
        self.sent: list[tuple[str, bytes, int]] = []
        self.place("cam-b", north_of(120), "online")  # near
        self.place("cam-c", north_of(2000), "online")  # far
        self.place("cam-d", north_of(50), "offline")  # near but offline
        self.place("cam-e", None, "online")  # no position known
        self.store.set_status("cam-a", "online", None, WALL)

    def place(self, device: str, where: tuple[float, float] | None, state: str) -> None:
        ms = markers(self.tmp, device, ["manual"], where)
        self.store.add_markers([(m, self.received_ns) for m in ms])
        self.store.set_status(device, state, None, self.received_ns)

    def publish(self, topic: str, payload: bytes, expiry_s: int) -> bool:
        self.sent.append((topic, payload, expiry_s))
        return True

    def activation(self, instance: str = "base-1", **kw: Any) -> PeerActivation:
        return PeerActivation(self.store, PeerConfig(**kw), prefix="bodycam", instance=instance, clock=self.clock)


@pytest.fixture
def fleet(db: str, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(db, tmp_path)
    try:
        yield f
    finally:
        f.store.close()


def test_a_shot_starts_the_online_cameras_within_the_radius(fleet: Fleet) -> None:
    shot = markers(fleet.tmp, "cam-a", ["gunshot"], HERE)[0]
    fleet.store.add_markers([(shot, WALL)])
    peer = fleet.activation(radius_m=300)
    peer([shot], fleet.publish)
    assert [t for t, _, _ in fleet.sent] == ["bodycam/cam-b/cmd/record"]
    _topic, payload, expiry = fleet.sent[0]
    cmd = parse_record(payload)
    assert cmd.device == "cam-b" and cmd.reason == f"peer:cam-a/{shot.id}" and expiry == 60
    assert cmd.expires_ns - cmd.t_ns == 60 * 10**9 and cmd.t_ns == fleet.clock.wall_ns()
    assert isinstance(fleet.store, _Store)
    rows = fleet.store.read("SELECT device, reason, marker_id, issued_by, distance_m FROM peer_commands")
    assert [tuple(r[:4]) for r in rows] == [("cam-b", f"peer:cam-a/{shot.id}", shot.id, "base-1")]
    assert abs(float(rows[0][4]) - 120) < 1
    # a wider radius reaches cam-c too (another marker); the offline and the unplaced camera never
    shot2 = markers(fleet.tmp, "cam-a", ["manual", "gunshot"], HERE)[1]
    fleet.sent.clear()
    fleet.activation(radius_m=5000)([shot2], fleet.publish)
    assert sorted(t for t, _, _ in fleet.sent) == ["bodycam/cam-b/cmd/record", "bodycam/cam-c/cmd/record"]


def test_exactly_one_instance_acts_per_marker_however_often_it_arrives(fleet: Fleet) -> None:
    shot = markers(fleet.tmp, "cam-a", ["gunshot"], HERE)[0]
    one, two = fleet.activation("base-1"), fleet.activation("base-2")
    results: list[int] = []

    def run(p: PeerActivation) -> None:
        for _ in range(5):  # redeliveries and camera resends
            results.append(len(p.activate(shot, fleet.publish)))

    threads = [threading.Thread(target=run, args=(p,)) for p in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0] * 9 + [1]
    assert len(fleet.sent) == 1
    assert isinstance(fleet.store, _Store)
    claims = fleet.store.read("SELECT marker_id, instance, targets FROM peer_claims")
    assert len(claims) == 1 and claims[0][0] == shot.id and claims[0][2] == 1


def test_no_location_no_gunshot_or_a_stale_shot_starts_no_one(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    peer = fleet.activation()
    no_fix = markers(fleet.tmp, "cam-a", ["gunshot"], None)[0]
    manual = markers(fleet.tmp, "cam-a", ["manual"], HERE)[0]
    old = markers(fleet.tmp, "cam-a", ["gunshot"], HERE, wall=WALL - 3600 * 10**9)[0]
    peer([no_fix, manual, old], fleet.publish)
    assert fleet.sent == []
    assert "no peer activation" in caplog.text and "behind base's clock" in caplog.text


def test_the_radius_flag_zero_switches_it_off(tmp_path: Path) -> None:
    import argparse

    from bodycam.base import peer

    p = argparse.ArgumentParser()
    peer.add_arguments(p)
    assert peer.config_from_args(p.parse_args(["--peer-radius-m", "0"])).enabled is False
    cfg = peer.config_from_args(p.parse_args(["--peer-radius-m", "150", "--peer-expiry-s", "30"]))
    assert (cfg.enabled, cfg.radius_m, cfg.expiry_s) == (True, 150.0, 30)
    from bodycam.device.errors import UsageError

    with pytest.raises(UsageError, match="expiry"):
        peer.config_from_args(p.parse_args(["--peer-expiry-s", "0"]))


@pytest.mark.integration
def test_the_consumer_sends_cmd_record_with_mqtt5_expiry(db: str, tmp_path: Path, mosquitto: Any) -> None:
    fleet = Fleet(db, tmp_path, received_ns=time.time_ns())  # positions learnt just now, by base's real clock
    got: list[mqtt.MQTTMessage] = []
    ready = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_connect = lambda c, *a: c.subscribe("bodycam/+/cmd/record", qos=1)
    sub.on_subscribe = lambda *a: ready.set()
    sub.on_message = lambda c, u, msg: got.append(msg)
    sub.connect("127.0.0.1", mosquitto.port, 5)
    sub.loop_start()
    stop = threading.Event()
    try:
        assert ready.wait(5)
        peer = PeerActivation(fleet.store, PeerConfig(radius_m=300, expiry_s=45), prefix="bodycam",
                              instance="base-1")  # base's real clock: the shot is fresh
        consumer = Consumer(ConsumerOptions(url=mosquitto.url, client_id="base-peer-test"), fleet.store, hooks=[peer])
        runner = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
        runner.start()
        assert consumer.subscribed.wait(10)
        shot = markers(tmp_path, "cam-a", ["gunshot"], HERE, wall=time.time_ns())[0]
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.connect("127.0.0.1", mosquitto.port, 5)
        pub.loop_start()
        pub.publish("bodycam/cam-a/marker", shot.to_json(), qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        pub.publish("bodycam/cam-a/marker", shot.to_json(), qos=1).wait_for_publish(5)  # a resend: nothing more
        time.sleep(0.5)
        pub.disconnect()
        pub.loop_stop()
        assert len(got) == 1, [m.topic for m in got]
        msg = got[0]
        assert msg.topic == "bodycam/cam-b/cmd/record" and msg.qos == 1 and not msg.retain
        assert 40 <= msg.properties.MessageExpiryInterval <= 45
        body = json.loads(msg.payload)
        assert body["reason"] == f"peer:cam-a/{shot.id}" and body["device"] == "cam-b"
        assert consumer.counters["stored"] == 1 and consumer.counters["duplicate"] == 1
    finally:
        stop.set()
        sub.disconnect()
        sub.loop_stop()
        time.sleep(0.1)
        fleet.store.close()


def test_an_idle_camera_is_placed_by_its_telemetry(fleet: Fleet) -> None:
    """cam-f has sent no marker, only telemetry with a GNSS fix 80 m from the shot."""
    from bodycam.base.telemetry import TelemetryIn
    from bodycam.base.validate import validate_telemetry
    from bodycam.device.uplink.telemetry import telemetry_payload

    where = north_of(80)
    loc = {"lat": where[0], "lon": where[1], "alt_m": None, "hdop": 0.9, "fix": "3d", "age_s": 0.4}
    body = telemetry_payload("cam-f", VirtualClock(wall_epoch_ns=WALL), queue_depth=0,
                             provider=lambda: {"location": loc})
    tel = validate_telemetry("bodycam", "bodycam/cam-f/telemetry", body)
    assert isinstance(fleet.store, _Store)
    fleet.store.add_telemetry([TelemetryIn(tel, body.decode(), WALL)])
    fleet.store.set_status("cam-f", "online", None, WALL)
    shot = markers(fleet.tmp, "cam-a", ["gunshot"], HERE)[0]
    fleet.activation(radius_m=100)([shot], fleet.publish)
    assert [t for t, _, _ in fleet.sent] == ["bodycam/cam-f/cmd/record"]
    row = fleet.store.read("SELECT distance_m FROM peer_commands WHERE device='cam-f'")
    assert abs(float(row[0][0]) - 80) < 1


def telemetry_at(device: str, where: tuple[float, float], wall: int) -> Any:
    from bodycam.base.telemetry import TelemetryIn
    from bodycam.base.validate import validate_telemetry
    from bodycam.device.uplink.telemetry import telemetry_payload

    loc = {"lat": where[0], "lon": where[1], "alt_m": None, "hdop": 0.9, "fix": "3d", "age_s": 0.4}
    body = telemetry_payload(device, VirtualClock(wall_epoch_ns=wall), queue_depth=0, provider=lambda: {"location": loc})
    return TelemetryIn(validate_telemetry("bodycam", f"bodycam/{device}/telemetry", body), body.decode(), WALL)


def test_the_newest_position_by_the_cameras_clock_wins(fleet: Fleet) -> None:
    """cam-g's telemetry (t = WALL) puts it 2 km away; its marker made later (t = WALL + 2 s) puts it 100 m
    from the shot: the marker wins. Then a telemetry message
    older than that marker (queued while offline) does not move it back."""
    assert isinstance(fleet.store, _Store)
    fleet.store.add_telemetry([telemetry_at("cam-g", north_of(2000), WALL)])
    near = markers(fleet.tmp, "cam-g", ["manual"], north_of(100), wall=WALL + 11 * 10**9)[0]  # t = WALL + 2 s
    fleet.store.add_markers([(near, WALL)])
    fleet.store.set_status("cam-g", "online", None, WALL)
    fleet.store.add_telemetry([telemetry_at("cam-g", north_of(3000), WALL - 60 * 10**9)])
    shot = markers(fleet.tmp, "cam-a", ["gunshot"], HERE)[0]
    fleet.activation(radius_m=150)([shot], fleet.publish)
    assert sorted(t for t, _, _ in fleet.sent) == ["bodycam/cam-b/cmd/record", "bodycam/cam-g/cmd/record"]
    # newer telemetry moves it away again: the next shot does not start it
    fleet.store.add_telemetry([telemetry_at("cam-g", north_of(2000), WALL + 3 * 10**9)])
    fleet.sent.clear()
    shot2 = markers(fleet.tmp, "cam-a", ["manual", "gunshot"], HERE)[1]
    fleet.activation(radius_m=150)([shot2], fleet.publish)
    assert [t for t, _, _ in fleet.sent] == ["bodycam/cam-b/cmd/record"]


def test_positions_far_from_the_shot_are_not_read(fleet: Fleet) -> None:
    """The query reads only the online devices inside the shot's bounding box (the fleet's size and history
    do not make a shot slower); near the antimeridian every position is read and the distance decides."""
    from bodycam.base.peer import DevicePositions, bounding_box

    assert isinstance(fleet.store, _Store)
    src = DevicePositions(fleet.store)
    assert {p.device for p in src.around([HERE], 300, 0)} == {"cam-a", "cam-b"} - {"cam-a"}  # cam-a: no position
    assert {p.device for p in src.around([HERE], 5000, 0)} == {"cam-b", "cam-c"}
    assert src.around([HERE], 300, WALL + 1) == []  # learnt before since_ns: too old
    two = {p.device for p in src.around([HERE, north_of(2000)], 300, 0)}  # a batch's shots: one query
    assert two == {"cam-b", "cam-c"}
    many = [north_of(10_000 + 10 * i) for i in range(250)] + [north_of(2000)]  # a burst of shots: 100 per query
    assert {p.device for p in src.around(many, 300, 0)} == {"cam-c"}
    box = bounding_box(*HERE, 300)
    assert box is not None and box[0] < HERE[0] - 300 / 111_195 and box[2] > HERE[0] + 300 / 111_195
    assert bounding_box(0.0, 179.999, 300) is None and bounding_box(89.999, 0.0, 300) is None
    for d, (lat, lon) in (("cam-x", (0.0, 179.9999)), ("cam-y", (0.0, -179.9999))):
        fleet.store.add_telemetry([telemetry_at(d, (lat, lon), WALL)])
        fleet.store.set_status(d, "online", None, WALL)
    shot = markers(fleet.tmp, "cam-a", ["gunshot"], (0.0, 179.9995))[0]
    fleet.activation(radius_m=300)([shot], fleet.publish)
    assert sorted(t for t, _, _ in fleet.sent) == ["bodycam/cam-x/cmd/record", "bodycam/cam-y/cmd/record"]


def test_an_older_database_gets_device_positions(db: str, tmp_path: Path) -> None:
    """A devices table from before the position columns: they are added and filled from the newest located
    marker of each device, so peer activation works at once after an upgrade."""
    ms = markers(tmp_path, "cam-b", ["manual", "manual"], north_of(120))
    store = open_store(db)
    store.add_markers([(m, WALL) for m in ms])
    store.set_status("cam-b", "online", None, WALL)
    store.close()
    drop = [f"ALTER TABLE devices DROP COLUMN {c}" for c in ("pos_lat", "pos_lon", "pos_t_ns", "pos_received_ns")]
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            for stmt in drop:
                conn.execute(stmt)
    else:
        import sqlite3

        conn = sqlite3.connect(db)
        with conn:
            for stmt in drop:
                conn.execute(stmt)
        conn.close()
    f = Fleet.__new__(Fleet)
    f.store, f.received_ns, f.tmp, f.sent = open_store(db), WALL, tmp_path, []
    f.clock = VirtualClock(wall_epoch_ns=WALL + 5 * 10**9)
    try:
        shot = markers(tmp_path, "cam-a", ["gunshot"], HERE)[0]
        f.activation(radius_m=300)([shot], f.publish)
        assert [t for t, _, _ in f.sent] == ["bodycam/cam-b/cmd/record"]
    finally:
        f.store.close()
