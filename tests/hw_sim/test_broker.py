"""The embedded amqtt broker and the marker watch used by the simulator."""

from __future__ import annotations

import socket
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bodycam.device.clock import SystemClock
from bodycam.device.errors import BrokerError
from bodycam.device.uplink.markers import MarkerDraft
from bodycam.device.uplink.mqtt_config import MqttConfig
from bodycam.device.uplink.mqtt_publisher import MqttPublisher
from bodycam.device.uplink.outbox import Outbox
from bodycam.hw_sim.embedded_broker import EmbeddedBroker
from bodycam.hw_sim.marker_watch import MarkerWatch

pytestmark = pytest.mark.integration


def test_free_port_clean_stop_and_port_released() -> None:
    with EmbeddedBroker() as a, EmbeddedBroker() as b:
        assert a.port != b.port and a.url.startswith("mqtt://127.0.0.1:")
        with socket.create_connection(("127.0.0.1", a.port), timeout=2):
            pass
        port = a.port
    a.stop()  # idempotent
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_port_in_use_is_a_clear_error() -> None:
    with EmbeddedBroker() as a, pytest.raises(BrokerError, match="failed to start"):
        EmbeddedBroker(port=a.port).start()


def test_watch_sees_markers_in_order_and_counts_junk(tmp_path: Path) -> None:
    arrived: list[int] = []
    clock = SystemClock()
    with (
        EmbeddedBroker() as broker,
        MarkerWatch(broker.url, on_marker=lambda m, t: arrived.append(m.seq)) as watch,
    ):
        junk = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        junk.connect("127.0.0.1", broker.port)
        junk.loop_start()
        junk.publish("bodycam/cam-01/marker", b"{not json", qos=1).wait_for_publish(5)
        junk.disconnect()
        junk.loop_stop()
        cfg = MqttConfig(url=broker.url, protocol="3.1.1", reconnect_min_s=0.05)
        with Outbox(tmp_path / "o.db", "cam-01", clock) as ob, MqttPublisher(cfg, ob, clock) as pub:
            for _ in range(10):
                ob.record(MarkerDraft(kind="manual", t_mono_ns=clock.monotonic_ns(), wall_ns=clock.wall_ns()))
                pub.wake()
            assert pub.wait_drained(10)
        got = watch.wait_for(10, 10)
        assert [m.seq for m in got] == list(range(1, 11)) == arrived
        assert watch.rejected == 1
