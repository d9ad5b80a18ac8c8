"""The consumer at base: subscribe, validate, store, then acknowledge.

* MQTT 5, persistent session (``clean_start=False`` + ``SessionExpiryInterval``) with a
  stable client id, so messages published while base is down wait at the broker;
* markers through the shared subscription ``$share/<group>/<prefix>/+/marker`` (several
  consumers of one group share the load), status through ``<prefix>/+/status`` (every
  consumer, retained);
* manual acknowledgement: a PUBACK is sent only after the marker is committed to the
  store (batched: one transaction per batch), so a crash loses nothing (the broker
  re-delivers; duplicates are dropped by ``id``);
* bad input (oversized, not JSON, wrong schema, topic/device mismatch) is logged, counted
  in ``counters["rejected_<reason>"]``, acknowledged and dropped; it never raises.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bodycam.base.store import MarkerStore
from bodycam.base.validate import Rejected, split_topic, validate_marker, validate_status
from bodycam.device.clock import Clock, SystemClock
from bodycam.device.errors import StorageError
from bodycam.device.uplink.markers import Marker
from bodycam.device.uplink.mqtt_config import MqttConfig, TlsConfig

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerOptions:
    url: str
    group: str = "base"
    prefix: str = "bodycam"
    client_id: str | None = (
        None  # default: bodycam-base-<group>-<random>: set a stable one for a persistent session
    )
    session_expiry_s: int = 86400
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    batch_max: int = 500
    receive_maximum: int = 500


class Consumer:
    """Run with :meth:`run` (blocks until ``stop`` is set) or feed :meth:`handle` directly."""

    def __init__(self, options: ConsumerOptions, store: MarkerStore, *, clock: Clock | None = None) -> None:
        self._opt = options
        self._cfg = MqttConfig(
            url=options.url,
            topic_prefix=options.prefix,
            username=options.username,
            password=options.password,
            tls=TlsConfig(ca_file=options.ca_file),
        )
        self._store = store
        self._clock = clock or SystemClock()
        self.counters: Counter[str] = Counter()
        self.client_id = options.client_id or f"bodycam-base-{options.group}-{uuid.uuid4().hex[:8]}"
        self._inbox: queue.Queue[tuple[int, int, str, bytes]] = queue.Queue()
        self.subscribed = threading.Event()
        self._client: mqtt.Client | None = None

    # -- pure part (also what the fuzz tests drive) ------------------------------------------
    def handle(self, topic: str, payload: bytes) -> str:
        """Validate and store one message now; returns the outcome (``stored``, ``duplicate``, ``rejected_*``...)."""
        outcome, marker = self._classify(topic, payload, self._clock.wall_ns())
        if marker is not None:
            return self._store_batch([(marker, self._clock.wall_ns())])[0]
        return outcome

    def _classify(self, topic: str, payload: bytes, received_ns: int) -> tuple[str, Marker | None]:
        self.counters["received"] += 1
        try:
            _, leaf = split_topic(self._opt.prefix, topic)
            if leaf == "marker":
                return "marker", validate_marker(self._opt.prefix, topic, payload)
            if leaf == "status":
                status = validate_status(self._opt.prefix, topic, payload)
                if status is not None:
                    self._store.set_status(status.device, status.state, status.t, received_ns)
                    self.counters["status"] += 1
                    _log.info("device %s is %s", status.device, status.state)
                return "status", None
            raise Rejected("bad_topic", f"unexpected topic {topic!r}")
        except Rejected as exc:
            self.counters[f"rejected_{exc.reason}"] += 1
            self.counters["rejected"] += 1
            _log.warning("rejected message on %r (%d bytes): %s", topic[:200], len(payload), exc)
            return f"rejected_{exc.reason}", None

    def _store_batch(self, items: list[tuple[Marker, int]]) -> list[str]:
        results = self._store.add_markers(items)
        out = []
        for (m, _), r in zip(items, results, strict=True):
            if not r.stored:
                self.counters["duplicate"] += 1
                out.append("duplicate")
                continue
            self.counters["stored"] += 1
            out.append("stored")
            if r.gap is not None:
                self.counters["gaps"] += 1
                _log.warning("device %s: seq %d..%d missing (so far) before seq %d", m.device, *r.gap, m.seq)
            if r.chain == "broken":
                self.counters["chain_broken"] += 1
                _log.error(
                    "device %s: hash chain broken at seq %d (prev does not match seq %d)",
                    m.device,
                    m.seq,
                    m.seq - 1,
                )
        return out

    # -- MQTT ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Connect (retrying), consume until ``stop`` is set, then disconnect cleanly."""
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if self._cfg.username is not None:
            client.username_pw_set(self._cfg.username, self._cfg.resolve_password())
        if self._cfg.use_tls:
            client.tls_set(ca_certs=self._cfg.tls.ca_file)
        client.reconnect_delay_set(1, 5)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._opt.session_expiry_s
        props.ReceiveMaximum = self._opt.receive_maximum
        self._client = client
        client.connect_async(
            self._cfg.host, self._cfg.port, keepalive=30, clean_start=False, properties=props
        )
        client.loop_start()
        try:
            while not stop.is_set():
                self._drain(wait_s=0.05)
            self._drain(wait_s=0.0)
        finally:
            client.disconnect()
            client.loop_stop()
            self._client = None

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            _log.error("broker refused the consumer: %s", reason)
            return
        _log.info(
            "connected to %s as %s (session present: %s)",
            self._opt.url,
            self.client_id,
            flags.session_present,
        )
        p = self._opt.prefix
        client.subscribe([(f"$share/{self._opt.group}/{p}/+/marker", 1), (f"{p}/+/status", 1)])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        bad = [r for r in reasons if getattr(r, "is_failure", False)]
        if bad:
            _log.error("subscription refused: %s", bad)
        else:
            self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._inbox.put((msg.mid, msg.qos, msg.topic, bytes(msg.payload)))

    def _drain(self, wait_s: float) -> None:
        """Take what arrived, store it in one transaction, then acknowledge it in order."""
        batch: list[tuple[int, int, str, bytes]] = []
        try:
            batch.append(self._inbox.get(timeout=wait_s) if wait_s > 0 else self._inbox.get_nowait())
        except queue.Empty:
            return
        while len(batch) < self._opt.batch_max:
            try:
                batch.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        now = self._clock.wall_ns()
        markers = []
        for _, _, topic, payload in batch:
            _, marker = self._classify(topic, payload, now)
            if marker is not None:
                markers.append((marker, now))
        while True:
            try:
                self._store_batch(markers)
                break
            except StorageError:
                _log.exception("cannot store %d markers; retrying (not acknowledged)", len(markers))
                time.sleep(1.0)
        client = self._client
        if client is not None:
            for mid, qos, _, _ in batch:
                if qos > 0:
                    client.ack(mid, qos)
