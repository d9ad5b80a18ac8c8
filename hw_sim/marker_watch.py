"""A subscriber that watches markers arrive at ``<prefix>/+/marker`` (for the simulator and tests).

::

    with MarkerWatch("mqtt://127.0.0.1:1883", on_marker=print) as watch:
        ...
        markers = watch.wait_for(3, timeout=5.0)   # the first 3 markers that arrived

Uses MQTT 3.1.1 (works with amqtt and Mosquitto), QoS 1, its own paho network thread.
Invalid payloads are counted in ``rejected`` and never raise. Markers are kept in arrival
order (duplicates included; ``unique()`` drops repeats by id).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bodycam.device.errors import BrokerError, MarkerError
from bodycam.device.uplink.markers import Marker
from bodycam.device.uplink.mqtt_config import MqttConfig

_log = logging.getLogger(__name__)


class MarkerWatch:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "bodycam",
        on_marker: Callable[[Marker, float], None] | None = None,
        client_id: str = "",
        connect_timeout_s: float = 10.0,
    ) -> None:
        cfg = MqttConfig(url=url, topic_prefix=prefix)
        self._host, self._port = cfg.host, cfg.port
        self._topic = f"{prefix}/+/marker"
        self._on_marker = on_marker
        self._timeout = connect_timeout_s
        self._cv = threading.Condition()
        self._markers: list[Marker] = []
        self.arrival_s: list[float] = []  # time.monotonic() of each arrival
        self.rejected = 0
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self) -> MarkerWatch:
        try:
            self._client.connect(self._host, self._port, keepalive=30)
        except OSError as exc:
            raise BrokerError(f"marker watch: cannot connect to {self._host}:{self._port}: {exc}") from exc
        self._client.loop_start()
        if not self._subscribed.wait(self._timeout):
            self.stop()
            raise BrokerError(f"marker watch: not subscribed within {self._timeout} s")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> MarkerWatch:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self._topic, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        try:
            marker = Marker.from_json(bytes(msg.payload))
        except MarkerError as exc:
            self.rejected += 1
            _log.warning("marker watch: rejected a message on %s: %s", msg.topic, exc)
            return
        with self._cv:
            self._markers.append(marker)
            self.arrival_s.append(now)
            self._cv.notify_all()
        if self._on_marker is not None:
            try:
                self._on_marker(marker, now)
            except Exception:
                _log.exception("marker watch callback failed")

    @property
    def markers(self) -> list[Marker]:
        with self._cv:
            return list(self._markers)

    def unique(self) -> list[Marker]:
        seen: set[str] = set()
        out = []
        for m in self.markers:
            if m.id not in seen:
                seen.add(m.id)
                out.append(m)
        return out

    def wait_for(self, n: int, timeout: float, *, unique: bool = False) -> list[Marker]:
        """Wait until ``n`` markers (distinct ids if ``unique``) arrived; returns what arrived (may be fewer)."""

        def count() -> int:
            return len({m.id for m in self._markers}) if unique else len(self._markers)

        with self._cv:
            self._cv.wait_for(lambda: count() >= n, timeout)
        return self.unique() if unique else self.markers
