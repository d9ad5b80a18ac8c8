"""The MQTT publisher against a real Mosquitto (MQTT 5) and the embedded amqtt broker (3.1.1)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _mqtt import Mosquitto, running_mosquitto

from bodycam.device.clock import SystemClock
from bodycam.device.uplink.markers import MarkerDraft
from bodycam.device.uplink.mqtt_config import MqttConfig
from bodycam.device.uplink.mqtt_publisher import MqttPublisher
from bodycam.device.uplink.outbox import Outbox
from bodycam.hw_sim.embedded_broker import EmbeddedBroker
from bodycam.hw_sim.marker_watch import MarkerWatch

pytestmark = pytest.mark.integration
CLOCK = SystemClock()


def record(ob: Outbox, n: int) -> None:
    for _ in range(n):
        ob.record(MarkerDraft(kind="manual", t_mono_ns=CLOCK.monotonic_ns(), wall_ns=CLOCK.wall_ns()))


def cfg(url: str, **kw: Any) -> MqttConfig:
    return MqttConfig(url=url, keepalive=5, reconnect_min_s=0.05, reconnect_max_s=0.3, **kw)


class Sub:
    """A raw paho MQTT 5 subscriber recording (topic, payload, retain, properties)."""

    def __init__(self, url_port: int, topic: str, client_id: str = "", persistent: bool = False) -> None:
        self.msgs: list[mqtt.MQTTMessage] = []
        self.cv = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.ready = threading.Event()
        self.topic = topic

        def on_connect(c: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
            c.subscribe(topic, qos=1)

        def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
            with self.cv:
                self.msgs.append(msg)
                self.cv.notify_all()

        self.c.on_connect = on_connect
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = on_message
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600 if persistent else 0
        self.c.connect("127.0.0.1", url_port, 5, clean_start=not persistent, properties=props)
        self.c.loop_start()
        assert self.ready.wait(5)

    def wait(self, pred: Any, timeout: float = 10) -> bool:
        with self.cv:
            return bool(self.cv.wait_for(lambda: pred(self.msgs), timeout))

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def sub_factory() -> Iterator[Any]:
    subs: list[Sub] = []

    def make(*a: Any, **kw: Any) -> Sub:
        s = Sub(*a, **kw)
        subs.append(s)
        return s

    yield make
    for s in subs:
        s.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    yield from running_mosquitto(tmp_path)


def seqs(msgs: list[mqtt.MQTTMessage]) -> list[int]:
    return [json.loads(m.payload)["seq"] for m in msgs if m.topic.endswith("/marker")]


def test_markers_status_and_telemetry_over_mqtt5(tmp_path: Path, broker: Mosquitto, sub_factory: Any) -> None:
    sub = sub_factory(broker.port, "bodycam/cam-01/#")
    with Outbox(tmp_path / "o.db", "cam-01", CLOCK) as ob:
        record(ob, 50)
        pub = MqttPublisher(
            cfg(broker.url, telemetry_interval_s=0.1), ob, CLOCK, telemetry=lambda: {"fps": 30.0}
        )
        with pub:
            assert pub.wait_drained(10)
            assert pub.protocol == "5" and pub.stats.connects == 1
            record(ob, 10)
            pub.wake()
            assert pub.wait_drained(10)
            assert sub.wait(lambda ms: len(seqs(ms)) >= 60 and any(m.topic.endswith("telemetry") for m in ms))
        assert seqs(sub.msgs) == list(range(1, 61))
        assert ob.depth() == 0
        tele = next(m for m in sub.msgs if m.topic.endswith("/telemetry"))
        body = json.loads(tele.payload)
        assert body["device"] == "cam-01" and body["fps"] == 30.0 and "queue_depth" in body
        assert tele.qos == 0 and tele.properties is not None
        assert 0 < tele.properties.MessageExpiryInterval <= 60
        assert sub.wait(lambda ms: any(json.loads(m.payload).get("state") == "offline" for m in ms))
        status = [json.loads(m.payload)["state"] for m in sub.msgs if m.topic.endswith("/status")]
        assert status[0] == "online" and status[-1] == "offline"
    # the retained status is offline after a clean stop; mosquitto_sub sees it
    out = subprocess.run(
        ["mosquitto_sub", "-p", str(broker.port), "-t", "bodycam/cam-01/status", "-C", "1", "-W", "5"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert json.loads(out.stdout)["state"] == "offline"


def test_auto_falls_back_to_311_on_the_embedded_broker(tmp_path: Path) -> None:
    with EmbeddedBroker() as broker, MarkerWatch(broker.url) as watch:
        with Outbox(tmp_path / "o.db", "cam-01", CLOCK) as ob:
            record(ob, 20)
            with MqttPublisher(cfg(broker.url), ob, CLOCK) as pub:
                assert pub.wait_drained(15)
                assert pub.protocol == "3.1.1"
        got = watch.wait_for(20, 10, unique=True)
        assert [m.seq for m in got] == list(range(1, 21))


def test_explicit_mqtt5_against_a_311_broker_keeps_retrying_and_loses_nothing(tmp_path: Path) -> None:
    with EmbeddedBroker() as broker, Outbox(tmp_path / "o.db", "cam-01", CLOCK) as ob:
        record(ob, 3)
        with MqttPublisher(cfg(broker.url, protocol="5", connect_timeout_s=0.3), ob, CLOCK) as pub:
            assert not pub.wait_drained(1.5)
            assert pub.stats.connect_failures >= 2 and pub.protocol == "5"
        assert ob.depth() == 3


def test_broker_down_for_a_while_every_marker_arrives_in_order(
    tmp_path: Path, broker: Mosquitto, sub_factory: Any
) -> None:
    sub = sub_factory(broker.port, "bodycam/+/marker", client_id="base-test", persistent=True)
    with (
        Outbox(tmp_path / "o.db", "cam-01", CLOCK) as ob,
        MqttPublisher(cfg(broker.url), ob, CLOCK) as pub,
    ):
        record(ob, 100)
        assert pub.wait_drained(10)
        broker.stop()  # clean stop: persistence keeps the subscriber's session
        record(ob, 200)  # recorded while the broker is away
        assert not pub.connected or not pub.wait_drained(0.3)
        broker.start()
        record(ob, 100)
        assert pub.wait_drained(20)
        assert pub.stats.connects >= 2
        # the subscriber reconnects by itself (paho loop_start reconnects, same session)
        assert sub.wait(lambda ms: len({s for s in seqs(ms)}) >= 400, 20)
    got = seqs(sub.msgs)
    first_seen: list[int] = []
    for s in got:
        if s not in first_seen:
            first_seen.append(s)
    assert first_seen == list(range(1, 401))


def test_credentials_from_systemd_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "mqtt-password").write_text("s3cret\n")
    c = MqttConfig(username="cam-01", password_file="mqtt-password")
    assert c.resolve_password({"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "s3cret"
    c2 = MqttConfig(username="cam-01", password_file=str(tmp_path / "mqtt-password"))
    assert c2.resolve_password({}) == "s3cret"
