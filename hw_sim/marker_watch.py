"""A subscriber that watches markers arrive at ``<prefix>/+/marker`` (for the simulator and tests).

::

    with MarkerWatch("mqtt://127.0.0.1:1883", on_marker=print) as watch:
        ...
        markers = watch.wait_for(3, timeout=5.0)   # the first 3 markers that arrived

Uses MQTT 3.1.1 (works with amqtt and Mosquitto), QoS 1, its own paho network thread. An
``mqtts://`` url connects over TLS with ``tls`` (CA, and a client certificate for mutual TLS: under
the broker configuration of docs/mosquitto/ a read-only watcher identity, ``bodycam-base
broker-acl --watcher CN``); a subscription the broker refuses is an error (``BrokerError``).
Invalid payloads are counted in ``rejected`` and never raise. Markers are kept in arrival
order (duplicates included; ``unique()`` drops repeats by id); ``first_arrival`` maps each
id to the time it first arrived.

``start(required=False)`` does not give up on a broker it cannot reach: it reports it
through ``on_state(False, reason)`` and keeps retrying (every 1-2 s), so a broker
that comes up later still gets its subscriber (``on_state(True, "")``), as the camera's
publisher does with its outbox.

:func:`marker_latencies_ms` turns arrival times into latencies measured from the frame of
each marker's event, so no send-time bookkeeping can race the delivery.
"""

from __future__ import annotations

import bisect
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bodycam.device.errors import BrokerError, MarkerError
from bodycam.device.uplink.markers import Marker
from bodycam.device.uplink.mqtt_config import MqttConfig, TlsConfig

_log = logging.getLogger(__name__)


class MarkerWatch:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "bodycam",
        on_marker: Callable[[Marker, float], None] | None = None,
        on_state: Callable[[bool, str], None] | None = None,
        client_id: str = "",
        connect_timeout_s: float = 10.0,
        required: bool = True,
        tls: TlsConfig | None = None,
    ) -> None:
        cfg = MqttConfig(url=url, topic_prefix=prefix, tls=tls or TlsConfig())
        self._host, self._port = cfg.host, cfg.port
        self._topic = f"{prefix}/+/marker"
        self._on_marker = on_marker
        self._on_state = on_state
        self._required = required
        self._timeout = connect_timeout_s
        self._cv = threading.Condition()
        self._markers: list[Marker] = []
        self.arrival_s: list[float] = []  # time.monotonic() of each arrival
        self.first_arrival: dict[str, float] = {}  # marker id -> time.monotonic() it first arrived
        self.rejected = 0
        self._subscribed = threading.Event()
        self._down_reported = False
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._client.reconnect_delay_set(1, 2)  # seconds (paho takes whole seconds)
        self.refused: str | None = None  # the broker refused the subscription (not authorised)
        if cfg.use_tls:
            for what, path in (("CA", cfg.tls.ca_file), ("certificate", cfg.tls.cert_file),
                               ("key", cfg.tls.key_file)):
                if path is not None and not Path(path).is_file():  # paho would fail later, in its thread
                    raise BrokerError(f"marker watch: TLS {what} file {path}: no such file")
            try:
                self._client.tls_set(ca_certs=cfg.tls.ca_file, certfile=cfg.tls.cert_file, keyfile=cfg.tls.key_file)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: a key that does not fit
                raise BrokerError(f"marker watch: TLS files not usable ({exc})") from exc

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def _reach(self) -> str | None:
        """Why the broker's port cannot be reached now (None: it answers)."""
        try:
            socket.create_connection((self._host, self._port), timeout=min(2.0, self._timeout)).close()
        except OSError as exc:
            return (exc.strerror or str(exc) or type(exc).__name__).lower()
        return None

    def start(self) -> MarkerWatch:
        problem = None if self._required else self._reach()  # required: connect() below says it all
        try:
            self._client.connect_async(self._host, self._port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise BrokerError(f"marker watch: cannot connect to {self._host}:{self._port}: {exc}") from exc
        self._client.loop_start()  # its thread retries until the broker answers
        if problem is not None:
            self._report(False, problem)
            return self
        if not self._subscribed.wait(self._timeout):
            if self._required:
                self.stop()
                raise BrokerError(f"marker watch: {self.refused or f'not subscribed within {self._timeout} s'}")
            self._report(False, f"no answer within {self._timeout:g} s")
        return self

    def _report(self, up: bool, reason: str) -> None:
        if up == (not self._down_reported):
            return  # no change to report
        self._down_reported = not up
        if self._on_state is not None:
            try:
                self._on_state(up, reason)
            except Exception:
                _log.exception("marker watch state callback failed")

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
        failed = [r for r in reasons if getattr(r, "is_failure", False)]
        if failed:
            self.refused = f"the broker refused the subscription to {self._topic} ({failed[0]}): not authorised?"
            _log.error("marker watch: %s", self.refused)
            self._report(False, self.refused)
            return
        self._subscribed.set()
        self._report(True, "")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason is not None and getattr(reason, "is_failure", False):
            self._subscribed.clear()
            self._report(False, f"connection lost ({reason})")

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
            self.first_arrival.setdefault(marker.id, now)
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

    def wait_ids(self, ids: set[str], timeout: float) -> bool:
        """Wait until every marker id in ``ids`` has arrived; whether they all did."""
        with self._cv:
            return self._cv.wait_for(lambda: ids <= self.first_arrival.keys(), timeout)


def marker_latencies_ms(markers: Sequence[Marker], arrivals: dict[str, float],
                        frame_clock: Sequence[tuple[int, float]]) -> list[float]:
    """Latency of every marker that arrived, from the frame of its event to its arrival (ms).

    ``frame_clock`` is ``(frame t_ns, time.monotonic() when the loop read it)`` per frame, in
    order; a marker is timed from the first frame at or after its ``t_mono_ns`` (the moment
    the firmware could have seen the event). A latency therefore includes what the event
    takes to be recognised (the detector's look-ahead frames, a button's release) plus the
    outbox, the publisher, the broker and the subscriber.
    """
    times = [t for t, _ in frame_clock]
    out = []
    for m in markers:
        got = arrivals.get(m.id)
        if got is None or not times:
            continue
        i = min(bisect.bisect_left(times, m.t_mono_ns), len(times) - 1)
        out.append((got - frame_clock[i][1]) * 1000.0)
    return out
