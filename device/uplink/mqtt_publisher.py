"""MQTT publisher: drains the outbox to the broker (paho-mqtt 2.x), one thread of its own.

* Markers: QoS 1 on ``<prefix>/<device>/marker``, read from the :class:`Outbox` oldest
  first, at most ``max_inflight`` unacknowledged; a marker is acked in the outbox only
  in ``on_publish(mid)`` (the broker's PUBACK; a v5 PUBACK with a failure reason code
  is *not* an ack). After any reconnect everything still pending is re-sent, in order
  (at-least-once; base deduplicates by ``id``).
* Status: retained QoS 1 ``online`` on connect, ``offline`` on :meth:`stop`, and a Last
  Will ``offline`` for an unclean loss.
* Telemetry: QoS 0 every ``telemetry_interval_s`` (MQTT 5 message expiry
  ``telemetry_expiry_s``); while disconnected snapshots wait in the outbox's bounded
  telemetry table (dropped first when the disk is full).
* Connection: client id = device id; ``protocol="auto"`` tries MQTT 5 and falls back
  to 3.1.1 for the rest of the run when the broker refuses 5 (amqtt); reconnect with
  exponential backoff ``reconnect_min_s..reconnect_max_s`` and +-``reconnect_jitter``.

All paho calls happen on the publisher thread (``client.loop()`` is driven here), so
the callbacks need no locking; the outbox is thread-safe for the recording loop.
Network pacing (backoff, polling) uses real monotonic time; payload times use the
injected clock.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bodycam.device.clock import Clock
from bodycam.device.errors import BrokerError, ConfigError, StorageError
from bodycam.device.uplink.mqtt_config import MqttConfig, topic
from bodycam.device.uplink.outbox import Outbox
from bodycam.device.uplink.telemetry import TelemetryProvider, status_payload, telemetry_payload

_log = logging.getLogger(__name__)
_POLL_S = 0.02  # network loop timeout and outbox poll period while connected
_UNSUPPORTED_PROTOCOL = (1, 132)  # 3.1.1 CONNACK code 1 / MQTT 5 reason 132
# amqtt neither answers nor closes an MQTT 5 CONNECT that carries a will: in "auto" mode an
# unanswered MQTT 5 CONNECT is given up after this long (until MQTT 5 has worked once).
_V5_PROBE_TIMEOUT_S = 2.0


@dataclass
class PublisherStats:
    connects: int = 0
    connect_failures: int = 0
    published: int = 0
    acked: int = 0
    rejected: int = 0
    telemetry_sent: int = 0
    protocol: str = ""


class MqttPublisher:
    """Publishes the outbox's markers; see the module docstring. ``with MqttPublisher(...) as p:``."""

    def __init__(
        self,
        config: MqttConfig,
        outbox: Outbox,
        clock: Clock,
        *,
        telemetry: TelemetryProvider | None = None,
        rng: random.Random | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if not config.enabled:
            raise ConfigError("mqtt: the publisher is disabled in the configuration (mqtt.enabled = false)")
        self._cfg = config
        self._outbox = outbox
        self._clock = clock
        self._device = outbox.device_id
        self._telemetry = telemetry
        self._rng = rng or random.Random()
        self._timer = timer
        self._t_marker = topic(config.topic_prefix, self._device, "marker")
        self._t_status = topic(config.topic_prefix, self._device, "status")
        self._t_telemetry = topic(config.topic_prefix, self._device, "telemetry")
        self._proto = mqtt.MQTTv311 if config.protocol == "3.1.1" else mqtt.MQTTv5
        self.stats = PublisherStats()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._state_cv = threading.Condition()
        # owned by the publisher thread
        self._client: mqtt.Client | None = None
        self._connected = False
        self._got_connack = False
        self._connect_started = 0.0
        self._inflight: dict[int, str] = {}
        self._cursor = 0
        self._to_ack: list[str] = []
        self._backoff = config.reconnect_min_s
        self._next_attempt = 0.0
        self._next_telemetry = 0.0
        self._next_poll = 0.0
        self._status_mid: int | None = None
        self._status_acked = threading.Event()
        self._v5_worked = False

    # -- public API ------------------------------------------------------------------------
    def start(self) -> MqttPublisher:
        if self._thread is not None:
            raise BrokerError("publisher already started")
        self._cfg.resolve_password()  # a missing password file is a ConfigError now, not in the thread
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"mqtt-publisher-{self._device}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Publish ``offline``, disconnect cleanly and join the thread. Pending markers stay in the outbox."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            raise BrokerError("publisher thread did not stop in time")

    def wake(self) -> None:
        """Tell the publisher a marker was just recorded (it also polls every 20 ms)."""
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def protocol(self) -> str:
        return "5" if self._proto == mqtt.MQTTv5 else "3.1.1"

    def wait_connected(self, timeout: float) -> bool:
        with self._state_cv:
            return self._state_cv.wait_for(lambda: self._connected, timeout)

    def wait_drained(self, timeout: float) -> bool:
        """True once the outbox is empty (every marker PUBACKed) within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if self._outbox.depth() == 0:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._state_cv:
                self._state_cv.wait(min(left, 0.05))

    def __enter__(self) -> MqttPublisher:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self._step()
                except StorageError:
                    _log.exception("outbox error in the publisher; retrying")
                    self._stopping.wait(1.0)
            self._shutdown()
        except Exception:
            _log.exception("publisher thread crashed")
            self._drop("crash")

    def _step(self) -> None:
        now = self._timer()
        client = self._client
        if client is None:
            if now < self._next_attempt:
                self._queue_telemetry_offline(now)
                self._wake.wait(min(self._next_attempt - now, 0.2))
                self._wake.clear()
                return
            self._attempt_connect()
            return
        rc = client.loop(timeout=_POLL_S)
        self._flush_acks()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._client is None:
            self._drop(f"network loop: {mqtt.error_string(rc)}")
            return
        if not self._connected:
            limit = self._cfg.connect_timeout_s
            if self._cfg.protocol == "auto" and self._proto == mqtt.MQTTv5 and not self._v5_worked:
                limit = min(limit, _V5_PROBE_TIMEOUT_S)
            if now - self._connect_started > limit:
                self._drop("no CONNACK in time")
            return
        self._pump(now)

    def _attempt_connect(self) -> None:
        cfg = self._cfg
        v5 = self._proto == mqtt.MQTTv5
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._device,
            protocol=self._proto,
            clean_session=None if v5 else True,
            reconnect_on_failure=False,
        )
        client.connect_timeout = cfg.connect_timeout_s
        client.max_inflight_messages_set(cfg.max_inflight + 2)  # + status + telemetry
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.resolve_password())
        if cfg.use_tls:
            client.tls_set(ca_certs=cfg.tls.ca_file, certfile=cfg.tls.cert_file, keyfile=cfg.tls.key_file)
            client.tls_insecure_set(not cfg.tls.check_hostname)
        client.will_set(
            self._t_status, status_payload(self._device, "offline", self._clock), qos=1, retain=True
        )
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        props: Properties | None = None
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = cfg.session_expiry_s
        self._client = client
        self._got_connack = False
        self._connect_started = self._timer()
        try:
            client.connect(
                cfg.host,
                cfg.port,
                keepalive=cfg.keepalive,
                clean_start=(cfg.session_expiry_s == 0) if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                properties=props,
            )
        except (OSError, ValueError) as exc:
            self._drop(f"connect to {cfg.host}:{cfg.port}: {exc}", tcp_failed=True)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._got_connack = True
        if reason.is_failure:
            value = int(reason.value) if hasattr(reason, "value") else int(reason)
            if self._cfg.protocol == "auto" and self._proto == mqtt.MQTTv5 and value in _UNSUPPORTED_PROTOCOL:
                _log.info("broker refused MQTT 5; falling back to MQTT 3.1.1")
                self._proto = mqtt.MQTTv311
                self._backoff = 0.0
            else:
                _log.warning("broker refused the connection: %s", reason)
            return
        self.stats.connects += 1
        self.stats.protocol = self.protocol
        self._v5_worked = self._v5_worked or self._proto == mqtt.MQTTv5
        self._inflight.clear()
        self._cursor = 0
        self._backoff = self._cfg.reconnect_min_s
        self._next_poll = 0.0
        self._next_telemetry = self._timer() + self._cfg.telemetry_interval_s
        info = client.publish(
            self._t_status, status_payload(self._device, "online", self._clock), qos=1, retain=True
        )
        self._status_mid = info.mid
        with self._state_cv:
            self._connected = True
            self._state_cv.notify_all()
        _log.info("connected to %s as %s (MQTT %s)", self._cfg.url, self._device, self.protocol)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        if mid == self._status_mid:
            self._status_acked.set()
        marker_id = self._inflight.pop(mid, None)
        if marker_id is None:
            return
        if reason is not None and getattr(reason, "is_failure", False):
            self.stats.rejected += 1
            _log.error(
                "broker refused marker %s: %s (kept in the outbox, re-sent after reconnect)",
                marker_id,
                reason,
            )
            return
        self._to_ack.append(marker_id)

    def _flush_acks(self) -> None:
        if self._to_ack:
            ids, self._to_ack = self._to_ack, []
            self._outbox.ack_many(ids)
            self.stats.acked += len(ids)
            self._wake.set()  # room in the window: refill now, not at the next poll
            with self._state_cv:
                self._state_cv.notify_all()

    def _pump(self, now: float) -> None:
        client = self._client
        assert client is not None
        room = self._cfg.max_inflight - len(self._inflight)
        if room > 0 and (self._wake.is_set() or now >= self._next_poll):
            self._wake.clear()
            self._next_poll = now + _POLL_S
            for m in self._outbox.pending(room, after_seq=self._cursor):
                info = client.publish(self._t_marker, m.to_json(), qos=1)
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return  # the connection is going; the loop will notice and re-send later
                self._inflight[info.mid] = m.id
                self._cursor = m.seq
                self.stats.published += 1
        if self._cfg.telemetry_interval_s > 0 and now >= self._next_telemetry:
            self._next_telemetry = now + self._cfg.telemetry_interval_s
            for old in self._outbox.take_telemetry(100):
                self._send_telemetry(client, old)
            payload = self._telemetry_now()
            if payload is not None:
                self._send_telemetry(client, payload)

    def _send_telemetry(self, client: mqtt.Client, payload: bytes) -> None:
        props: Properties | None = None
        if self._proto == mqtt.MQTTv5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval = self._cfg.telemetry_expiry_s
        client.publish(self._t_telemetry, payload, qos=0, properties=props)
        self.stats.telemetry_sent += 1

    def _telemetry_now(self) -> bytes | None:
        try:
            return telemetry_payload(
                self._device,
                self._clock,
                queue_depth=self._outbox.depth(),
                telemetry_dropped=self._outbox.telemetry_dropped,
                provider=self._telemetry,
            )
        except Exception:  # a broken provider must not stop markers
            _log.exception("telemetry provider failed")
            return None

    def _queue_telemetry_offline(self, now: float) -> None:
        if self._cfg.telemetry_interval_s > 0 and now >= self._next_telemetry:
            self._next_telemetry = now + self._cfg.telemetry_interval_s
            payload = self._telemetry_now()
            if payload is not None:
                self._outbox.put_telemetry(payload)

    def _drop(self, why: str, *, tcp_failed: bool = False) -> None:
        """Forget the connection (re-send everything pending on the next one) and schedule a retry."""
        client, self._client = self._client, None
        was_connected = self._connected
        with self._state_cv:
            self._connected = False
            self._state_cv.notify_all()
        if (
            not tcp_failed
            and not self._got_connack
            and not was_connected
            and self._cfg.protocol == "auto"
            and self._proto == mqtt.MQTTv5
            and not self._v5_worked
        ):
            # reached the broker but it hung up on an MQTT 5 CONNECT: try 3.1.1
            _log.info("broker closed an MQTT 5 CONNECT; falling back to MQTT 3.1.1")
            self._proto = mqtt.MQTTv311
            self._backoff = 0.0
        if client is not None:
            _close(client)
        self._inflight.clear()
        self._cursor = 0
        if was_connected:
            _log.warning("connection to %s lost (%s); reconnecting", self._cfg.url, why)
        else:
            self.stats.connect_failures += 1
            _log.info("cannot connect to %s (%s); retrying in %.2f s", self._cfg.url, why, self._backoff)
        delay = self._backoff * (1 + self._cfg.reconnect_jitter * (2 * self._rng.random() - 1))
        self._next_attempt = self._timer() + max(0.0, delay)
        self._backoff = min(max(self._backoff * 2, self._cfg.reconnect_min_s), self._cfg.reconnect_max_s)

    def _shutdown(self) -> None:
        client = self._client
        if client is not None and self._connected:
            self._status_acked.clear()
            info = client.publish(
                self._t_status, status_payload(self._device, "offline", self._clock), qos=1, retain=True
            )
            self._status_mid = info.mid
            deadline = time.monotonic() + 2.0
            while not self._status_acked.is_set() and time.monotonic() < deadline:
                if client.loop(timeout=_POLL_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
                self._flush_acks()
            client.disconnect()
            for _ in range(5):
                if client.loop(timeout=_POLL_S) != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is None:
                    break
        self._client = None
        if client is not None:
            _close(client)
        with self._state_cv:
            self._connected = False
            self._state_cv.notify_all()


def _close(client: mqtt.Client) -> None:
    """Close the client's sockets now (not at garbage collection)."""
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
    reset = getattr(client, "_reset_sockets", None)  # paho's own cleanup of its wake-up socket pair
    if callable(reset):
        reset()
