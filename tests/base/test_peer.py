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
from bodycam.base.keys import KeyRegistry
from bodycam.base.peer import PeerActivation, PeerConfig, great_circle_m
from bodycam.base.store import MarkerStore, _Store
from bodycam.device.clock import VirtualClock
from bodycam.device.identity import Signer
from bodycam.device.uplink.commands import parse_record
from bodycam.device.uplink.markers import Location, Marker, MarkerDraft, ModelRef
from bodycam.device.uplink.outbox import Outbox

WALL = 1_795_000_000_000_000_000
HERE = (52.2053, 0.1218)


def north_of(metres: float) -> tuple[float, float]:
    return HERE[0] + metres / 111_195.0, HERE[1]


SIGNERS: dict[str, Signer] = {}  # each device's key (the Fleet registers cam-a's: its shots are verified)


def signer_of(device: str) -> Signer:
    return SIGNERS.setdefault(device, Signer.generate())


def markers(tmp_path: Path, device: str, kinds: list[str], where: tuple[float, float] | None,
            wall: int = WALL, *, signed: bool = True) -> list[Marker]:
    clock = VirtualClock(wall_epoch_ns=wall - 10 * 10**9)
    out = []
    with Outbox(tmp_path / f"{device}-{len(kinds)}-{wall}-{signed}.db", device, clock, fsync="normal",
                signer=signer_of(device) if signed else None) as ob:
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
        assert isinstance(self.store, _Store)
        KeyRegistry(self.store).add("cam-a", signer_of("cam-a").public_pem(), WALL - 3600 * 10**9)

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
    assert isinstance(f.store, _Store)
    KeyRegistry(f.store).add("cam-a", signer_of("cam-a").public_pem(), WALL - 3600 * 10**9)
    try:
        shot = markers(tmp_path, "cam-a", ["gunshot"], HERE)[0]
        f.activation(radius_m=300)([shot], f.publish)
        assert [t for t, _, _ in f.sent] == ["bodycam/cam-b/cmd/record"]
    finally:
        f.store.close()


def test_an_unverified_gunshot_starts_no_one_but_its_alert_is_raised_marked_unverified(
        fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    """As ``listen`` wires it (the consumer's signature policy, default ``registered``): cam-z has no
    registered key, so its markers are stored unverified; cam-y signs, but its key is not registered
    either. Their gunshots 50 m from cam-b raise dashboard alerts, shown as unverified, and start no one
    (claimed with the reason: the audit, and logged); cam-a's signed shot, with its registered key, does."""
    import asyncio

    from bodycam.base.keys import SignaturePolicy
    from bodycam.base.provenance import Provenance
    from bodycam.base.web.alerts import AlertHub
    from bodycam.base.web.db import WebDb

    assert isinstance(fleet.store, _Store)
    web = WebDb(fleet.store)  # the alert trigger, as listen and serve make it
    policy = SignaturePolicy(KeyRegistry(fleet.store))
    peer = PeerActivation(fleet.store, PeerConfig(radius_m=300), prefix="bodycam", instance="base-1",
                          clock=fleet.clock, provenance=Provenance(fleet.store, policy))
    consumer = Consumer(ConsumerOptions(url="mqtt://127.0.0.1:1"), fleet.store, clock=fleet.clock,
                        signatures=policy, hooks=[peer])
    consumer.publish = fleet.publish  # type: ignore[method-assign]
    unsigned = markers(fleet.tmp, "cam-z", ["gunshot"] * 3, north_of(170), signed=False)
    unregistered = markers(fleet.tmp, "cam-y", ["gunshot"], north_of(170))[0]
    for m in (*unsigned, unregistered):
        assert consumer.handle(f"bodycam/{m.device}/marker", m.to_json()) == "stored"
    assert consumer.counters["unverified"] == 4
    assert fleet.sent == [] and peer.sent == 0
    verified = markers(fleet.tmp, "cam-a", ["gunshot"], HERE)[0]
    assert consumer.handle("bodycam/cam-a/marker", verified.to_json()) == "stored"
    assert [t for t, _, _ in fleet.sent] == ["bodycam/cam-b/cmd/record"]
    assert parse_record(fleet.sent[0][1]).reason == f"peer:cam-a/{verified.id}"
    claims = {str(r[0]): (str(r[1]), int(r[2])) for r in fleet.store.read("SELECT marker_id, outcome, targets FROM peer_claims")}
    assert claims == {**{m.id: ("unverified:no_key", 0) for m in (*unsigned, unregistered)},
                      verified.id: ("activated", 1)}
    assert [str(r[0]) for r in fleet.store.read("SELECT reason FROM peer_commands")] == [f"peer:cam-a/{verified.id}"]
    assert f"gunshot {unsigned[0].id} of cam-z: no peer activation, its signature is not verified (no_key" in caplog.text
    assert caplog.text.count("of cam-z: no peer activation") == 1  # logged once a minute per device
    assert peer.refused == {"unverified:no_key": 4}

    # every alert is raised; the page's events say which are unverified
    async def events() -> dict[str, dict[str, Any]]:
        hub = AlertHub(web, poll_s=0.02)
        await hub.poll_once()
        return {str(ev["marker"]): ev for ev in hub.open.values()}

    evs = asyncio.run(events())
    assert set(evs) == {m.id for m in (*unsigned, unregistered, verified)}
    for m in (*unsigned, unregistered):
        assert evs[m.id]["verified"] is False
        assert evs[m.id]["signature"] == "unverified: no key registered for the device"
    assert evs[verified.id]["verified"] is True and evs[verified.id]["signature"].startswith("verified")


def test_a_shot_from_a_revoked_or_foreign_key_is_not_verified(fleet: Fleet) -> None:
    """Without the consumer's policy in front (duplicates, or a marker stored before its device's key was
    registered): the hook asks the rule itself. A shot signed by another device's key, an unsigned shot of
    a registered device and a shot received after its key's revocation start no one."""
    from bodycam.base.provenance import Provenance

    assert isinstance(fleet.store, _Store)
    peer = fleet.activation(radius_m=300)
    foreign = Signer.generate()
    KeyRegistry(fleet.store).add("cam-q", foreign.public_pem(), WALL - 3600 * 10**9)
    clock = VirtualClock(wall_epoch_ns=WALL - 10 * 10**9)
    with Outbox(fleet.tmp / "forged.db", "cam-a", clock, fsync="normal", signer=foreign) as ob:
        clock.advance_ns(10**9)
        forged = ob.record(MarkerDraft(kind="gunshot", t_mono_ns=clock.monotonic_ns(), wall_ns=clock.wall_ns(),
                                       confidence=0.9, model=ModelRef("m", "1", "0" * 64),
                                       location=Location(HERE[0], HERE[1], 10.0, 0.9, "3d", 0.2)))
    unsigned = markers(fleet.tmp, "cam-a", ["manual", "gunshot"], HERE, signed=False)[1]
    assert peer([forged, unsigned], fleet.publish) is None and fleet.sent == []
    outcomes = dict(fleet.store.read("SELECT marker_id, outcome FROM peer_claims"))
    assert outcomes == {forged.id: "unverified:unknown_key", unsigned.id: "unverified:unsigned"}
    KeyRegistry(fleet.store).revoke("cam-a", signer_of("cam-a").key_id, WALL)
    late = markers(fleet.tmp, "cam-a", ["manual", "manual", "gunshot"], HERE)[2]
    assert Provenance(fleet.store).unverified(late, WALL + 1) == "revoked_key"
    assert fleet.activation(radius_m=300).activate(late, fleet.publish) == [] and fleet.sent == []


def test_activations_per_shooting_device_are_limited_across_instances(db: str, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A registered camera gone bad fires 12 shots, handled by two instances at once (two connections):
    only ``max_per_minute`` of them start anyone; the rest are claimed ``rate_limited`` and logged. Another
    device's shots have their own limit, and a minute later cam-a's shots start cameras again."""
    fleet = Fleet(db, tmp_path)
    store2 = open_store(db)
    try:
        assert isinstance(fleet.store, _Store)
        KeyRegistry(fleet.store).add("cam-c", signer_of("cam-c").public_pem(), WALL - 3600 * 10**9)
        one = fleet.activation("base-1", radius_m=300, max_per_minute=3)
        two = PeerActivation(store2, PeerConfig(radius_m=300, max_per_minute=3), prefix="bodycam",
                             instance="base-2", clock=fleet.clock)
        shots = markers(fleet.tmp, "cam-a", ["gunshot"] * 12, HERE)
        lock = threading.Lock()

        def publish(topic: str, payload: bytes, expiry_s: int) -> bool:
            with lock:
                return fleet.publish(topic, payload, expiry_s)

        def run(p: PeerActivation, mine: list[Marker]) -> None:
            for m in mine:
                p([m], publish)

        threads = [threading.Thread(target=run, args=(one, shots[0::2])),
                   threading.Thread(target=run, args=(two, shots[1::2]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(fleet.sent) == 3
        outcomes = [str(r[0]) for r in fleet.store.read("SELECT outcome FROM peer_claims WHERE device='cam-a'")]
        assert sorted(outcomes) == ["activated"] * 3 + ["rate_limited"] * 9
        assert "the device's limit of 3 activations a minute is spent" in caplog.text
        assert one.refused.get("rate_limited", 0) + two.refused.get("rate_limited", 0) == 9
        # a batch of shots is limited the same way; another shooter is not held back by cam-a
        fleet.sent.clear()
        burst = markers(fleet.tmp, "cam-a", ["manual"] + ["gunshot"] * 4, HERE)[1:]
        other = markers(fleet.tmp, "cam-c", ["gunshot"], north_of(150))[0]  # cam-c shoots 30 m from cam-b
        one([*burst, other], fleet.publish)
        assert [t for t, _, _ in fleet.sent] == ["bodycam/cam-b/cmd/record"]
        assert parse_record(fleet.sent[0][1]).reason == f"peer:cam-c/{other.id}"
        got = {str(r[0]): str(r[1]) for r in fleet.store.read("SELECT marker_id, outcome FROM peer_claims")}
        assert [got[m.id] for m in (*burst, other)] == ["rate_limited"] * 4 + ["activated"]
        # a minute later cam-a may start cameras again
        fleet.clock.advance_ns(61 * 10**9)
        fleet.sent.clear()
        later = markers(fleet.tmp, "cam-a", ["gunshot"] * 4, HERE, wall=WALL + 60 * 10**9)
        one(later, fleet.publish)
        assert [t for t, _, _ in fleet.sent] == ["bodycam/cam-b/cmd/record"] * 3
    finally:
        store2.close()
        fleet.store.close()


def test_an_older_claims_table_gets_the_outcome_column(db: str, tmp_path: Path) -> None:
    store = open_store(db)
    try:
        assert isinstance(store, _Store)
        with store.transaction() as tx:
            tx.run("CREATE TABLE peer_claims (marker_id TEXT PRIMARY KEY, device TEXT NOT NULL,"
                   " instance TEXT NOT NULL, t_ns BIGINT NOT NULL, targets INTEGER NOT NULL DEFAULT 0)")
            tx.run("INSERT INTO peer_claims VALUES ('old', 'cam-a', 'b', 1, 2)")
        PeerActivation(store, PeerConfig(), prefix="bodycam", instance="base-1")
        PeerActivation(store, PeerConfig(), prefix="bodycam", instance="base-2")  # again: nothing changes
        assert [tuple(r) for r in store.read("SELECT marker_id, outcome FROM peer_claims")] == [("old", "activated")]
    finally:
        store.close()


def test_a_position_dated_far_ahead_of_base_does_not_pin_the_camera(fleet: Fleet) -> None:
    """cam-g's clock is wrong once (telemetry dated 2099, 2 km away), then right again (telemetry and a
    marker 100 m from the shot): the correct positions replace the wrong one, and the shot starts cam-g.
    A camera time ahead of base's receive time by more than rules.CLOCK_AHEAD_MAX_S orders the position by
    the receive time; within that bound the camera's time still orders (a resent, older message does not
    move a camera back). A row pinned by an older base heals at the next position."""
    from bodycam.base import rules
    from bodycam.base.telemetry import TelemetryIn

    assert isinstance(fleet.store, _Store)
    store = fleet.store
    y2099 = 4_070_908_800_000_000_000

    def tel(where: tuple[float, float], t_ns: int, received_ns: int) -> TelemetryIn:
        t = telemetry_at("cam-g", where, t_ns)
        return TelemetryIn(t.telemetry, t.body, received_ns)

    def row() -> tuple[int, int]:
        r = store.read("SELECT pos_t_ns, pos_received_ns FROM devices WHERE device='cam-g'")[0]
        return int(r[0]), int(r[1])

    store.set_status("cam-g", "online", None, WALL)
    store.add_telemetry([tel(north_of(2000), y2099, WALL - 30 * 10**9)])
    assert row() == (WALL - 30 * 10**9, WALL - 30 * 10**9)  # ordered by base's receive time
    store.add_telemetry([tel(north_of(100), WALL - 20 * 10**9, WALL - 20 * 10**9)])
    shot = markers(fleet.tmp, "cam-a", ["gunshot"], HERE)[0]
    fleet.activation(radius_m=150)([shot], fleet.publish)
    assert sorted(t for t, _, _ in fleet.sent) == ["bodycam/cam-b/cmd/record", "bodycam/cam-g/cmd/record"]
    # a marker dated 2099 far away, then one with the right time 100 m away: the right one wins
    far = markers(fleet.tmp, "cam-g", ["manual"], north_of(3000), wall=y2099)[0]
    store.add_markers([(far, WALL - 10 * 10**9)])
    assert row() == (WALL - 10 * 10**9, WALL - 10 * 10**9)
    near = markers(fleet.tmp, "cam-g", ["manual", "manual"], north_of(100), wall=WALL)[1]  # t = WALL - 8 s
    store.add_markers([(near, WALL - 5 * 10**9)])
    assert row() == (near.t_ns, WALL - 5 * 10**9)
    # within the bound the camera's time orders: 60 s ahead, then an older message does not move it back
    ahead = WALL + 60 * 10**9
    store.add_telemetry([tel(north_of(2000), ahead, WALL)])
    store.add_telemetry([tel(north_of(100), WALL + 10**9, WALL + 10**9)])
    assert row() == (ahead, WALL)
    # a row pinned by an older base (camera time far beyond its receive time): the next position replaces it
    with store.transaction() as tx:
        tx.run("UPDATE devices SET pos_t_ns=?, pos_received_ns=? WHERE device='cam-g'", (y2099, WALL))
    store.add_telemetry([tel(north_of(100), WALL + 2 * 10**9, WALL + 2 * 10**9)])
    assert row() == (WALL + 2 * 10**9, WALL + 2 * 10**9)
    with store.transaction() as tx:
        tx.run("UPDATE devices SET pos_t_ns=?, pos_received_ns=? WHERE device='cam-g'", (y2099, WALL))
    later = markers(fleet.tmp, "cam-g", ["manual"] * 3, north_of(100), wall=WALL + 10 * 10**9)[2]
    store.add_markers([(later, WALL + 3 * 10**9)])
    assert row() == (later.t_ns, WALL + 3 * 10**9)
    assert rules.position_t_ns(WALL + rules.CLOCK_AHEAD_MAX_NS, WALL) == WALL + rules.CLOCK_AHEAD_MAX_NS
    assert rules.position_t_ns(WALL + rules.CLOCK_AHEAD_MAX_NS + 1, WALL) == WALL


def test_a_key_registered_just_before_a_shot_is_used(fleet: Fleet) -> None:
    """The signature policy reads keys at most every 2 s: a device whose key was registered since its last
    read is looked up again when a signed shot comes, so its first shot is verified."""
    from bodycam.base.keys import SignaturePolicy
    from bodycam.base.provenance import Provenance

    assert isinstance(fleet.store, _Store)
    policy = SignaturePolicy(KeyRegistry(fleet.store), refresh_s=3600)
    provenance = Provenance(fleet.store, policy)
    shot = markers(fleet.tmp, "cam-n", ["gunshot"], HERE)[0]
    assert provenance.unverified(shot, WALL) == "no_key"  # the policy has read the keys: none for cam-n
    KeyRegistry(fleet.store).add("cam-n", signer_of("cam-n").public_pem(), WALL)
    assert provenance.unverified(shot, WALL) is None
    unsigned = markers(fleet.tmp, "cam-m", ["gunshot"], HERE, signed=False)[0]
    assert provenance.unverified(unsigned, WALL) == "no_key"
