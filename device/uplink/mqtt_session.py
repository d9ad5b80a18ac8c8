"""One MQTT connection's lifetime (paho-mqtt 2), as a context manager (aiomqtt's ``Client`` is the model).

``with MqttSession(cfg, client_id, protocol, ...) as s:`` connects and waits for the CONNACK (or
raises :class:`SessionError` saying what went wrong and at which stage); inside, :meth:`publish`,
:meth:`subscribe` and :meth:`loop` (which drives the network and runs the callbacks
``on_puback(mid, failure)`` and ``on_message(topic, payload)``) work on that one connection; leaving
the block disconnects cleanly and closes the sockets. A session is never reused: reconnecting,
backoff and the choice of protocol are the caller's policy (:mod:`.mqtt_publisher`).

Persistent session: MQTT 5 with ``clean_start=False`` and ``SessionExpiryInterval =
cfg.session_expiry_s`` (> 0); MQTT 3.1.1 with ``clean_session=False``. ``session_expiry_s = 0``
asks for a clean session in both.

Not thread-safe: one thread owns a session.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bodycam.device.errors import BrokerError
from bodycam.device.uplink.mqtt_config import MqttConfig

MQTT5 = MQTTProtocolVersion.MQTTv5
MQTT311 = MQTTProtocolVersion.MQTTv311
_POLL_S = 0.02
_UNSUPPORTED_PROTOCOL = (1, 132)  # 3.1.1 CONNACK code 1 / MQTT 5 reason 132

Stage = Literal["tcp", "handshake", "no_connack", "refused", "lost", "stopped"]


class SessionError(BrokerError):
    """A connection could not be made or ended. ``stage`` says where; see :class:`MqttSession`."""

    def __init__(self, message: str, stage: Stage, *, unsupported_protocol: bool = False) -> None:
        super().__init__(message)
        self.stage = stage
        self.unsupported_protocol = unsupported_protocol


def protocol_name(protocol: MQTTProtocolVersion) -> str:
    return "5" if protocol == MQTT5 else "3.1.1"


class MqttSession:
    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str,
        protocol: MQTTProtocolVersion,
        *,
        will: tuple[str, bytes] | None = None,
        on_puback: Callable[[int, str | None], None] | None = None,
        on_message: Callable[[str, bytes], None] | None = None,
        connect_timeout_s: float | None = None,
        stop: threading.Event | None = None,
        timer: Callable[[], float],
    ) -> None:
        self.cfg = cfg
        self.protocol = protocol
        self.session_present = False
        self._client_id = client_id
        self._will = will
        self._on_puback = on_puback
        self._on_message = on_message
        self._timeout = cfg.connect_timeout_s if connect_timeout_s is None else connect_timeout_s
        self._stop = stop or threading.Event()
        self._timer = timer
        self._client: mqtt.Client | None = None
        self._connack: tuple[bool, int, str] | None = None  # (failure, code, text)
        self._acked: set[int] = set()
        self._refused: dict[int, str] = {}  # mid -> the broker's refusal (PUBACK reason >= 0x80)

    # -- lifetime --------------------------------------------------------------------------
    def __enter__(self) -> MqttSession:
        cfg, v5 = self.cfg, self.protocol == MQTT5
        persistent = cfg.session_expiry_s > 0
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=self.protocol,
            clean_session=None if v5 else not persistent,
            reconnect_on_failure=False,
        )
        self._client = client
        try:
            client.connect_timeout = cfg.connect_timeout_s
            client.max_inflight_messages_set(cfg.max_inflight + 2)  # + status + telemetry
            if cfg.username is not None:
                client.username_pw_set(cfg.username, cfg.resolve_password())
            if cfg.use_tls:
                client.tls_set(ca_certs=cfg.tls.ca_file, certfile=cfg.tls.cert_file, keyfile=cfg.tls.key_file)
                client.tls_insecure_set(not cfg.tls.check_hostname)
            if self._will is not None:
                client.will_set(self._will[0], self._will[1], qos=1, retain=True)
            client.on_connect = self._cb_connect
            client.on_publish = self._cb_publish
            client.on_message = self._cb_message
            props: Properties | None = None
            if v5:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = cfg.session_expiry_s
            try:
                client.connect(
                    cfg.host,
                    cfg.port,
                    keepalive=cfg.keepalive,
                    clean_start=not persistent if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                    properties=props,
                )
            except (OSError, ValueError) as exc:
                raise SessionError(f"connect to {cfg.host}:{cfg.port}: {exc}", "tcp") from exc
            deadline = self._timer() + self._timeout
            while self._connack is None:
                if self._stop.is_set():
                    raise SessionError("stopping", "stopped")
                rc = client.loop(timeout=_POLL_S)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and self._connack is None:
                    raise SessionError(f"broker closed the connection: {mqtt.error_string(rc)}", "handshake")
                if self._connack is None and self._timer() > deadline:
                    raise SessionError(f"no CONNACK within {self._timeout:.1f} s", "no_connack")
            failure, code, text = self._connack
            if failure:
                raise SessionError(f"broker refused the connection: {text}", "refused",
                                   unsupported_protocol=code in _UNSUPPORTED_PROTOCOL)
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        client = self._client
        if client is not None and exc_type is None:
            with contextlib.suppress(Exception):
                client.disconnect()
                for _ in range(5):
                    if client.loop(timeout=_POLL_S) != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is None:
                        break
        self._close()

    def _close(self) -> None:
        """Close the client's sockets now (not at garbage collection)."""
        client, self._client = self._client, None
        if client is None:
            return
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        reset = getattr(client, "_reset_sockets", None)  # paho's own cleanup of its wake-up socket pair
        if callable(reset):
            reset()

    # -- use -------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int, *, retain: bool = False,
                expiry_s: int | None = None) -> int:
        """Queue one message; returns its mid. SessionError when the connection is going."""
        client = self._require()
        props: Properties | None = None
        if expiry_s is not None and self.protocol == MQTT5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval = expiry_s
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise SessionError(f"publish on {topic}: {mqtt.error_string(info.rc)}", "lost")
        return int(info.mid)

    def subscribe(self, topics: list[str], qos: int = 1) -> None:
        client = self._require()
        rc, _ = client.subscribe([(t, qos) for t in topics])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise SessionError(f"subscribe: {mqtt.error_string(rc)}", "lost")

    def loop(self, timeout: float = _POLL_S) -> None:
        """Drive the network once (callbacks run here); SessionError when the connection is lost."""
        rc = self._require().loop(timeout=timeout)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise SessionError(f"connection lost: {mqtt.error_string(rc)}", "lost")

    def wait_puback(self, mid: int, timeout: float) -> bool:
        """Drive the network until ``mid`` is acknowledged (or ``timeout``); for the goodbye message."""
        deadline = self._timer() + timeout
        while mid not in self._acked and self._timer() < deadline:
            self.loop()
        return mid in self._acked

    def _require(self) -> mqtt.Client:
        if self._client is None:
            raise SessionError("the session is closed", "lost")
        return self._client

    # -- paho callbacks (run inside loop()) ------------------------------------------------
    def _cb_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        value = int(reason.value) if hasattr(reason, "value") else int(reason)
        self.session_present = bool(getattr(flags, "session_present", False))
        self._connack = (bool(reason.is_failure), value, str(reason))

    def puback_failure(self, mid: int) -> str | None:
        """The broker's refusal of acknowledged message ``mid`` (MQTT 5 PUBACK reason >= 0x80, e.g. not
        authorised by its ACL), None when it took it."""
        return self._refused.get(mid)

    def _cb_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._acked.add(mid)
        if len(self._acked) > 10_000:
            self._acked.clear()
            self._acked.add(mid)
        failure = str(reason) if reason is not None and getattr(reason, "is_failure", False) else None
        if failure is not None:
            failure = f"{failure} (reason {int(reason.value)})"
            if len(self._refused) > 1_000:
                self._refused.clear()
            self._refused[mid] = failure
        if self._on_puback is not None:
            self._on_puback(mid, failure)

    def _cb_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self._on_message is not None:
            self._on_message(msg.topic, bytes(msg.payload))
