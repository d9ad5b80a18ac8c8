"""``cmd/record`` at the camera: the payload's rules, and the publisher's checks on a real Mosquitto
(target device, expiry by the camera's clock, repeated ids, MQTT 5 message expiry at the broker)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from _mqtt import Mosquitto, running_mosquitto
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bodycam.device.clock import SystemClock, VirtualClock, rfc3339_ms
from bodycam.device.uplink.commands import CommandError, Record, parse_record, record_payload
from bodycam.device.uplink.markers import canonical_json
from bodycam.device.uplink.mqtt_config import MqttConfig
from bodycam.device.uplink.mqtt_publisher import MqttPublisher
from bodycam.device.uplink.outbox import Outbox

NOW = 1_795_000_000_000_000_000
MARKER = "019a0000-0000-7000-8000-000000000001"


def body(**kw: Any) -> bytes:
    d: dict[str, Any] = {"schema": "bodycam.cmd/1", "verb": "record", "id": "c1", "device": "cam-02",
                         "reason": f"peer:cam-01/{MARKER}", "t": rfc3339_ms(NOW), "expires": rfc3339_ms(NOW + 60 * 10**9)}
    d.update(kw)
    return canonical_json({k: v for k, v in d.items() if v is not None})


def test_a_record_command_round_trips() -> None:
    cmd = parse_record(record_payload("c9", "cam-02", f"peer:cam-01/{MARKER}", NOW, 60))
    assert cmd == Record("c9", "cam-02", f"peer:cam-01/{MARKER}", NOW, NOW + 60 * 10**9)
    assert parse_record(body(reason="base:olga")).reason == "base:olga"


@pytest.mark.parametrize(("payload", "why"), [
    (body(schema="bodycam.cmd/2"), "schema"),
    (body(verb="resend"), "verb 'record'"),
    (body(id=""), "id must be"),
    (body(device="../cam"), "device must be"),
    (body(device=None), "device must be"),
    (body(reason="detection"), "reason must be"),
    (body(reason="peer:cam-01/<script>alert(1)</script>"), "reason must be"),
    (body(reason="base:olga\n"), "reason must be"),
    (body(t="yesterday"), "t:"),
    (body(expires=None), "expires"),
    (body(expires=rfc3339_ms(NOW - 10**9)), "before t"),
    (b"[1]", "not a JSON object"),
    (b"\xff", "not JSON"),
    (b"{" + b" " * 5000 + b"}", "more than 4096"),
])
def test_a_malformed_record_command_is_one_clear_error(payload: bytes, why: str) -> None:
    with pytest.raises(CommandError, match="cmd/record") as err:
        parse_record(payload)
    assert why in str(err.value) and "\n" not in str(err.value)


# -- the publisher, on a real broker ------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    yield from running_mosquitto(tmp_path)


def send(port: int, topic: str, payload: bytes, expiry_s: int | None = None) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port, 5)
    c.loop_start()
    try:
        props = None
        if expiry_s is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval = expiry_s
        c.publish(topic, payload, qos=1, properties=props).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


class Taker:
    def __init__(self) -> None:
        self.got: list[Record] = []
        self.cv = threading.Condition()

    def __call__(self, cmd: Record) -> None:
        with self.cv:
            self.got.append(cmd)
            self.cv.notify_all()

    def wait(self, n: int, timeout: float = 10.0) -> bool:
        with self.cv:
            return self.cv.wait_for(lambda: len(self.got) >= n, timeout)


def publisher(url: str, ob: Outbox, clock: Any, **kw: Any) -> MqttPublisher:
    return MqttPublisher(MqttConfig(url=url, keepalive=5, reconnect_min_s=0.05, reconnect_max_s=0.3, **kw), ob, clock)


@pytest.mark.integration
def test_the_camera_checks_target_expiry_and_repeats(tmp_path: Path, broker: Mosquitto,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    clock = VirtualClock(0, NOW + 5 * 10**9)  # the camera's clock: 5 s after the commands' t
    taker = Taker()
    topic = "bodycam/cam-02/cmd/record"
    with Outbox(tmp_path / "o.db", "cam-02", clock) as ob:
        pub = publisher(broker.url, ob, clock)
        pub.on_record = taker
        with pub:
            assert pub.wait_connected(10)
            time.sleep(0.3)  # the subscription is made right after the CONNACK
            caplog.set_level("INFO", logger="bodycam")
            send(broker.port, topic, body(id="other", device="cam-03"))  # for another camera
            send(broker.port, topic, body(id="late", expires=rfc3339_ms(NOW + 4 * 10**9)))  # expired 1 s ago
            send(broker.port, topic, body(id="bad", reason="x"))
            send(broker.port, topic, body(id="ok"))
            send(broker.port, topic, body(id="ok"))  # the same command again
            send(broker.port, topic, body(id="ok2", reason="base:olga"))
            assert taker.wait(2)
            deadline = time.monotonic() + 5
            while pub.stats.commands_ignored < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
        assert [c.id for c in taker.got] == ["ok", "ok2"]
        assert taker.got[0].reason == f"peer:cam-01/{MARKER}"
        assert pub.stats.commands == 2 and pub.stats.commands_ignored == 4
    text = caplog.text
    assert "is for device 'cam-03', not 'cam-02': refused" in text
    assert "expired 1.0 s ago by this camera's clock: ignored" in text
    assert "cmd/record ok seen before; ignored" in text
    assert "reason must be" in text


@pytest.mark.integration
def test_a_command_that_expires_at_the_broker_never_reaches_the_camera(tmp_path: Path, broker: Mosquitto) -> None:
    """MQTT 5 message expiry: queued for an offline camera (persistent session), gone after its expiry."""
    clock = SystemClock()
    topic = "bodycam/cam-02/cmd/record"
    with Outbox(tmp_path / "o.db", "cam-02", clock) as ob:
        first = publisher(broker.url, ob, clock)
        with first:  # makes the session and its subscriptions at the broker
            assert first.wait_connected(10)
            time.sleep(0.3)
        now = clock.wall_ns()
        send(broker.port, topic, record_payload("short", "cam-02", f"peer:cam-01/{MARKER}", now, 1), expiry_s=1)
        send(broker.port, topic, record_payload("long", "cam-02", f"peer:cam-01/{MARKER}", now, 60), expiry_s=60)
        time.sleep(2.2)
        taker = Taker()
        again = publisher(broker.url, ob, clock)
        again.on_record = taker
        with again:
            assert taker.wait(1)
            time.sleep(0.5)
        assert [c.id for c in taker.got] == ["long"]
    assert json.loads(record_payload("x", "cam-02", "base:olga", now, 60))["verb"] == "record"
