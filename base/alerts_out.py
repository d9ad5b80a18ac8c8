"""Alerts out: every alert of ``web_alerts`` (gunshots, and the fleet alerts written to the same table)
to dispatch systems, through a webhook (HTTP POST, JSON) and/or an MQTT re-publish.

**A persistent queue in the database.** ``alert_deliveries`` holds one row per (alert, sink):
``pending`` until delivered (``delivered``) or given up (``given_up``: older than ``max_age_s``, or
pushed out by ``max_pending``, each logged). The rows are made from ``web_alerts`` (which the
marker's own transaction fills), so an alert stored while the dispatcher or the endpoint is down is
delivered when both are back: an outage loses nothing within ``max_age_s``. It is bounded: only alerts
received in the last ``max_age_s`` are queued, and at most ``max_pending`` rows per sink wait.

**Retries with backoff**: a failed attempt (connection refused, timeout, non-2xx answer, no PUBACK)
sets ``next_ns`` to now + ``min(backoff_max_s, backoff_min_s * 2^attempts)`` (+-20 % jitter) and keeps
the error; the delivery loop goes on with the other rows.

**A dead endpoint does not block ingest**: the dispatcher is a thread of its own; no database
transaction is open during a network call (the row is leased first, in a short transaction, then
sent, then marked in another); each call has a timeout.

**Several base instances**: a row is leased (``lease_by``/``lease_until_ns``, an atomic ``UPDATE``)
before it is sent, so two dispatchers never send the same row at the same time; an instance killed
mid-send leaves the lease to expire and another sends it (at least once: receivers deduplicate by
``id``).

Webhook request: ``POST`` ``Content-Type: application/json``, the body below, ``X-Bodycam-Delivery``
(the alert id), and with a secret ``X-Bodycam-Timestamp: <unix seconds>`` and
``X-Bodycam-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`` (a receiver checks the
signature and refuses old timestamps: no replay). MQTT: QoS 1, not retained, on ``<topic>/<kind>``.

Body (``bodycam.alert/1``): ``{"schema", "id" (alert id, stable), "kind", "device", "t" (event time),
"received" (at base), "marker" (id), "location" ({lat, lon, ...} or null), "confidence", "details"
(the marker's ``evidence``/``extra`` when present), "url" (the dashboard's page when configured), and for a
marker's alert "verified" (whether its signature verified with a key registered for its device,
:mod:`bodycam.base.provenance`; null when the key registry could not be read) and "signature" (the same in
words)}``.

Home Assistant (``--ha-discovery``, optional): :class:`HomeAssistantSink`, the same queue and retries,
each alert a Home Assistant event of the camera's event entity announced by MQTT discovery.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from bodycam.base.provenance import Provenance, describe
from bodycam.base.store import MarkerStore, _Store
from bodycam.device.clock import Clock, SystemClock, rfc3339_ms
from bodycam.device.errors import BrokerError, StorageError, UsageError
from bodycam.device.uplink.mqtt_config import MqttConfig

_log = logging.getLogger(__name__)
NS = 1_000_000_000
ALERT_SCHEMA = "bodycam.alert/1"


@dataclass(frozen=True)
class DispatchConfig:
    max_age_s: float = 24 * 3600.0  # alerts older than this are not (or no longer) sent
    max_pending: int = 10_000  # per sink
    backoff_min_s: float = 1.0
    backoff_max_s: float = 300.0
    timeout_s: float = 5.0  # one HTTP request / one PUBACK
    lease_s: float = 30.0  # a leased row another instance may take over after this
    poll_s: float = 0.2
    public_url: str | None = None  # the dashboard's address, for links in the alert


class Sink(Protocol):
    name: str

    def send(self, alert: dict[str, Any], body: bytes) -> None:
        """Deliver once; raise ``BrokerError`` with a one-line reason when it did not work."""
        ...

    def close(self) -> None: ...


class WebhookSink:
    """HTTP POST of the JSON body; 2xx is delivered, anything else is a failure to retry."""

    name = "webhook"

    def __init__(self, url: str, *, secret: bytes | None = None, timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--webhook {url!r} must be an http:// or https:// URL")
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self._clock = clock

    def headers(self, alert_id: str, body: bytes) -> dict[str, str]:
        h = {"Content-Type": "application/json", "User-Agent": "bodycam-base", "X-Bodycam-Delivery": alert_id}
        if self.secret is not None:
            ts = str(int(self._clock()))
            h["X-Bodycam-Timestamp"] = ts
            h["X-Bodycam-Signature"] = "sha256=" + signature(self.secret, ts, body)
        return h

    def send(self, alert: dict[str, Any], body: bytes) -> None:
        req = urllib.request.Request(self.url, data=body, method="POST", headers=self.headers(str(alert["id"]), body))
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read(4096)
        except urllib.error.HTTPError as exc:
            raise BrokerError(f"webhook {self.url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            why = getattr(exc, "reason", exc)
            raise BrokerError(f"webhook {self.url}: {why}") from None

    def close(self) -> None:
        pass


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>." + body`` (what ``X-Bodycam-Signature`` carries)."""
    return hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


class MqttSink:
    """Re-publish on ``<topic>/<kind>``, QoS 1, waiting for the broker's PUBACK; one connection kept open."""

    name = "mqtt"

    def __init__(self, cfg: MqttConfig, topic: str, client_id: str, timeout_s: float = 5.0) -> None:
        if not topic or any(c in topic for c in "+#") or topic.endswith("/"):
            raise UsageError(f"--alerts-topic {topic!r} must be a topic without wildcards or a trailing '/'")
        self.cfg = cfg
        self.topic = topic
        self.client_id = client_id
        self.timeout_s = timeout_s
        self._session: Any = None

    def send(self, alert: dict[str, Any], body: bytes) -> None:
        self._publish(f"{self.topic}/{alert['kind']}", body)

    def _publish(self, topic_: str, body: bytes, *, retain: bool = False) -> None:
        """QoS 1 on ``topic_``; returns once the broker acknowledged it (else BrokerError, session closed)."""
        from bodycam.device.uplink.mqtt_session import MQTT5, MqttSession, SessionError

        try:
            if self._session is None:
                s = MqttSession(self.cfg, self.client_id, MQTT5, connect_timeout_s=self.timeout_s, timer=time.monotonic)
                self._session = s.__enter__()
            mid = self._session.publish(topic_, body, qos=1, retain=retain)
            if not self._session.wait_puback(mid, self.timeout_s):
                raise SessionError(f"no PUBACK within {self.timeout_s:g} s", "lost")
            refused = self._session.puback_failure(mid)
            if refused is not None:  # the broker took the connection but not this topic (its ACL): retried later
                raise SessionError(f"the broker refused {topic_}: {refused}", "lost")
        except SessionError as exc:
            self.close()
            raise BrokerError(f"mqtt {self.cfg.host}:{self.cfg.port}: {exc}") from None

    def close(self) -> None:
        s, self._session = self._session, None
        if s is not None:
            try:
                s.__exit__(None, None, None)
            except Exception:  # closing a broken connection
                _log.debug("closing the alert MQTT session", exc_info=True)


#: what ``web_alerts`` holds: gunshots (the marker's trigger) and the fleet conditions (``base/web/fleet.py``)
EVENT_TYPES = ("gunshot", "low_battery", "storage_full", "clock_unsynced", "offline_while_recording")


class HomeAssistantSink(MqttSink):
    """Alerts as Home Assistant events, found by MQTT discovery (optional; ``--ha-discovery``).

    For each camera that raises an alert, one **event entity** (``<prefix>/event/<node id>/alert/config``,
    retained, QoS 1: a Home Assistant that starts later still finds it) on a device ``Bodycam <device>``;
    every alert is then published (QoS 1, not retained) on ``<state_topic>/<device>/alert`` as
    ``{"event_type": <kind>, "alert_id", "marker", "t", "confidence", "latitude", "longitude", "url"}``;
    the keys besides ``event_type`` become the event's attributes. On every new connection every camera
    base knows (``known_devices``) is announced again (the broker may have lost its retained messages);
    a camera seen for the first time is announced and its first event waits ``first_event_delay_s``
    (Home Assistant subscribes to a new entity's topic only after reading its config). Home Assistant's own
    format: https://www.home-assistant.io/integrations/event.mqtt (MQTT discovery).
    """

    name = "homeassistant"

    def __init__(self, cfg: MqttConfig, discovery_prefix: str, state_topic: str, client_id: str,
                 timeout_s: float = 5.0, *, known_devices: Callable[[], Sequence[str]] | None = None,
                 first_event_delay_s: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> None:
        for what, t in (("--ha-discovery-prefix", discovery_prefix), ("--ha-state-topic", state_topic)):
            if not t or any(c in t for c in "+#") or t.endswith("/") or t.startswith("/"):
                raise UsageError(f"{what} {t!r} must be a topic without wildcards or a leading/trailing '/'")
        super().__init__(cfg, state_topic, client_id, timeout_s)
        self.discovery_prefix = discovery_prefix
        self._known = known_devices  # every camera base knows: announced on each new connection
        self.first_event_delay_s = first_event_delay_s
        self._sleep = sleep
        self._announced: set[str] = set()

    @staticmethod
    def node_id(device: str) -> str:
        """``bodycam_<device>`` in Home Assistant's id alphabet (letters, digits, ``_``, ``-``): a device id
        may hold ``.``; ``_`` -> ``__`` and ``.`` -> ``_d``, so two devices never share an id."""
        return "bodycam_" + device.replace("_", "__").replace(".", "_d")

    def discovery(self, device: str) -> tuple[str, bytes]:
        """The discovery topic and config of ``device``'s event entity."""
        uid = self.node_id(device)
        config = {
            "name": "Alert", "unique_id": f"{uid}_alert", "state_topic": f"{self.topic}/{device}/alert",
            "event_types": list(EVENT_TYPES), "icon": "mdi:alarm-light",
            "device": {"identifiers": [uid], "name": f"Bodycam {device}", "manufacturer": "bodycam",
                       "model": "body camera"},
            "origin": {"name": "bodycam-base"},
        }
        return f"{self.discovery_prefix}/event/{uid}/alert/config", json.dumps(config, sort_keys=True).encode()

    def send(self, alert: dict[str, Any], body: bytes) -> None:
        device = str(alert["device"])
        if self._session is None:  # a new connection comes: announce every camera base knows on it
            self._announced.clear()
            for known in self._known() if self._known is not None else ():
                self._announce(known)
        if device not in self._announced:  # a camera new to Home Assistant: it subscribes to the entity's
            self._announce(device)  # topic only after reading the config, so its first event waits a moment
            self._sleep(self.first_event_delay_s)
        loc = alert.get("location") or {}
        event = {"event_type": alert["kind"], "alert_id": alert["id"], "marker": alert.get("marker"),
                 "t": alert.get("t"), "confidence": alert.get("confidence"), "latitude": loc.get("lat"),
                 "longitude": loc.get("lon"), "url": alert.get("url")}
        self._publish(f"{self.topic}/{device}/alert", json.dumps(event, sort_keys=True).encode())

    def _announce(self, device: str) -> None:
        topic_, config = self.discovery(device)
        self._publish(topic_, config, retain=True)
        self._announced.add(device)


def _schema(serial: str) -> tuple[str, ...]:
    del serial
    return (
        "CREATE TABLE IF NOT EXISTS alert_deliveries (alert_n BIGINT NOT NULL, sink TEXT NOT NULL,"
        " state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created_ns BIGINT NOT NULL,"
        " next_ns BIGINT NOT NULL, lease_by TEXT, lease_until_ns BIGINT, last_error TEXT,"
        " delivered_ns BIGINT, PRIMARY KEY (alert_n, sink))",
        "CREATE INDEX IF NOT EXISTS alert_deliveries_pending ON alert_deliveries(sink, next_ns)"
        " WHERE state = 'pending'",
    )


def ensure_tables(store: MarkerStore) -> None:
    """``alert_deliveries`` (and the web tables: ``web_alerts`` is the source) in the store's database."""
    from bodycam.base.store_pg import _SCHEMA_LOCK, PostgresStore
    from bodycam.base.web.db import ensure_tables as web_tables

    web_tables(store)
    if not isinstance(store, _Store):
        return
    with store.transaction() as tx:
        if isinstance(store, PostgresStore):
            tx.one("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
        for stmt in _schema(""):
            tx.run(stmt)


@dataclass
class DispatchStats:
    delivered: int = 0
    failures: int = 0
    given_up: int = 0


class AlertDispatcher:
    """The delivery loop (a thread: :meth:`start` / :meth:`stop`; :meth:`step` for one pass)."""

    def __init__(self, store: MarkerStore, sinks: Sequence[Sink], cfg: DispatchConfig | None = None, *,
                 instance: str = "base", clock: Clock | None = None, rng: random.Random | None = None) -> None:
        if not isinstance(store, _Store):
            raise StorageError(f"alerts out need a SQLite or PostgreSQL store, not {type(store).__name__}")
        ensure_tables(store)
        self.store = store
        self.sinks = list(sinks)
        self.cfg = cfg or DispatchConfig()
        self.instance = instance
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.stats = DispatchStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._down: set[str] = set()  # sinks whose last attempt failed (logged once per outage)
        self._provenance = Provenance(store)  # this thread's own (the policy's key cache is not shared)

    # -- lifetime -----------------------------------------------------------------------------------
    def start(self) -> AlertDispatcher:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="alerts-out", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for s in self.sinks:
            s.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.step()
            except StorageError as exc:
                _log.warning("alerts out: store unavailable (%s); retrying", exc)
                busy = False
            except Exception:
                _log.exception("alerts out: unexpected error; going on")
                busy = False
            if not busy:
                self._stop.wait(self.cfg.poll_s)

    # -- one pass -----------------------------------------------------------------------------------
    def step(self) -> bool:
        """Queue new alerts, give up the too old, send what is due (one row per sink); True if it sent."""
        now = self.clock.wall_ns()
        self._enqueue(now)
        sent = False
        for sink in self.sinks:
            if self._stop.is_set():
                break
            row = self._lease(sink.name, now)
            if row is not None:
                self._deliver(sink, row)
                sent = True
        return sent

    def _enqueue(self, now: int) -> None:
        horizon = now - int(self.cfg.max_age_s * NS)
        with self.store.transaction() as tx:
            for sink in self.sinks:
                tx.run(
                    "INSERT INTO alert_deliveries(alert_n, sink, state, created_ns, next_ns) "
                    "SELECT a.n, ?, 'pending', ?, ? FROM web_alerts a WHERE a.received_ns >= ? "
                    "ON CONFLICT (alert_n, sink) DO NOTHING",
                    (sink.name, now, now, horizon),
                )
        self._give_up(now, horizon)

    def _give_up(self, now: int, horizon: int) -> None:
        for sink in self.sinks:
            with self.store.transaction() as tx:
                old = tx.run(
                    "UPDATE alert_deliveries SET state='given_up', last_error=COALESCE(last_error, '') || ' (too old)' "
                    "WHERE sink=? AND state='pending' AND alert_n IN (SELECT n FROM web_alerts WHERE received_ns < ?)",
                    (sink.name, horizon),
                )
                over = 0
                row = tx.one("SELECT COUNT(*) FROM alert_deliveries WHERE sink=? AND state='pending'", (sink.name,))
                excess = int(row[0]) - self.cfg.max_pending if row is not None else 0
                if excess > 0:
                    over = tx.run(
                        "UPDATE alert_deliveries SET state='given_up', last_error='queue full' WHERE sink=? AND "
                        "state='pending' AND alert_n IN (SELECT alert_n FROM alert_deliveries WHERE sink=? AND "
                        "state='pending' ORDER BY alert_n LIMIT ?)",
                        (sink.name, sink.name, excess),
                    )
            if old or over:
                self.stats.given_up += old + over
                _log.error("alerts out (%s): gave up %d alert(s) older than %.0f s and %d over the queue's %d",
                           sink.name, old, self.cfg.max_age_s, over, self.cfg.max_pending)

    def _lease(self, sink: str, now: int) -> dict[str, Any] | None:
        """Take the oldest due row of ``sink`` for this instance (atomic), with its alert and marker."""
        with self.store.transaction() as tx:
            row = tx.one(
                "SELECT alert_n FROM alert_deliveries WHERE sink=? AND state='pending' AND next_ns <= ? "
                "AND (lease_until_ns IS NULL OR lease_until_ns < ?) ORDER BY next_ns, alert_n LIMIT 1",
                (sink, now, now),
            )
            if row is None:
                return None
            n = int(row[0])
            took = tx.run(
                "UPDATE alert_deliveries SET lease_by=?, lease_until_ns=? WHERE alert_n=? AND sink=? "
                "AND state='pending' AND (lease_until_ns IS NULL OR lease_until_ns < ?)",
                (self.instance, now + int(self.cfg.lease_s * NS), n, sink, now),
            )
            if not took:
                return None
            a = tx.one(
                "SELECT a.n, a.marker_id, a.device, a.kind, a.t, a.received_ns, m.body, d.attempts "
                "FROM web_alerts a JOIN alert_deliveries d ON d.alert_n = a.n AND d.sink = ? "
                "LEFT JOIN markers m ON m.id = a.marker_id WHERE a.n=?",
                (sink, n),
            )
        if a is None:
            return None
        return {"n": int(a[0]), "marker_id": str(a[1]), "device": str(a[2]), "kind": str(a[3]), "t": str(a[4]),
                "received_ns": int(a[5]), "body": a[6], "attempts": int(a[7])}

    def alert_body(self, row: dict[str, Any]) -> dict[str, Any]:
        marker: dict[str, Any] = json.loads(row["body"]) if row["body"] else {}
        details = {k: marker[k] for k in ("evidence", "extra", "model") if marker.get(k) is not None}
        is_marker = bool(marker)  # fleet alerts (low battery, ...) have no marker: ``fleet:<kind>:<device>:<since>``
        body: dict[str, Any] = {
            "schema": ALERT_SCHEMA, "id": f"alert-{row['n']}", "kind": row["kind"], "device": row["device"],
            "t": row["t"], "received": rfc3339_ms(row["received_ns"]), "marker": row["marker_id"] if is_marker else None,
            "location": marker.get("location"), "confidence": marker.get("confidence"), "details": details,
        }
        if is_marker:  # an unverified gunshot is sent too, and says so
            try:
                why = self._provenance.unverified_body(row["body"], row["received_ns"])
                body["verified"], body["signature"] = why is None, describe(why)
            except StorageError:
                body["verified"], body["signature"] = None, "unknown (the key registry could not be read)"
        if self.cfg.public_url:
            where = f"/markers/{row['marker_id']}" if is_marker else "/fleet"
            body["url"] = self.cfg.public_url.rstrip("/") + where
        return body

    def _deliver(self, sink: Sink, row: dict[str, Any]) -> None:
        alert = self.alert_body(row)
        payload = json.dumps(alert, separators=(",", ":"), sort_keys=True).encode("utf-8")
        try:
            sink.send(alert, payload)
        except BrokerError as exc:
            self._failed(sink.name, row, str(exc))
            return
        now = self.clock.wall_ns()
        with self.store.transaction() as tx:
            tx.run(
                "UPDATE alert_deliveries SET state='delivered', delivered_ns=?, attempts=attempts+1, lease_by=NULL, "
                "lease_until_ns=NULL WHERE alert_n=? AND sink=?",
                (now, row["n"], sink.name),
            )
        self.stats.delivered += 1
        if sink.name in self._down:
            self._down.discard(sink.name)
            _log.warning("alerts out (%s): delivering again", sink.name)
        _log.info("alerts out (%s): %s %s of %s delivered", sink.name, alert["id"], alert["kind"], alert["device"])

    def _failed(self, sink: str, row: dict[str, Any], why: str) -> None:
        attempts = row["attempts"] + 1
        delay = min(self.cfg.backoff_max_s, self.cfg.backoff_min_s * 2 ** min(attempts - 1, 30))
        delay *= 1 + 0.2 * (2 * self.rng.random() - 1)
        now = self.clock.wall_ns()
        with self.store.transaction() as tx:
            tx.run(
                "UPDATE alert_deliveries SET attempts=?, next_ns=?, last_error=?, lease_by=NULL, lease_until_ns=NULL "
                "WHERE alert_n=? AND sink=?",
                (attempts, now + int(delay * NS), why[:500], row["n"], sink),
            )
        self.stats.failures += 1
        if sink not in self._down:
            self._down.add(sink)
            _log.error("alerts out (%s): %s; kept, retried with backoff (logged once until it works)", sink, why)

    def pending(self, sink: str) -> int:
        return int(self.store.read("SELECT COUNT(*) FROM alert_deliveries WHERE sink=? AND state='pending'",
                                   (sink,))[0][0])


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``listen``'s alerts-out options."""
    p.add_argument("--webhook", metavar="URL", help="POST every alert (JSON) to this http(s) URL, with retries")
    p.add_argument("--webhook-secret-file", type=Path, metavar="PATH",
                   help="sign webhook requests: X-Bodycam-Signature = sha256=HMAC(secret, '<timestamp>.' + body)")
    p.add_argument("--alerts-topic", metavar="TOPIC",
                   help="re-publish every alert on TOPIC/<kind> (QoS 1) on --broker, with retries")
    p.add_argument("--alerts-max-age-s", type=float, default=DispatchConfig.max_age_s,
                   help="alerts older than this are not sent (default: one day)")
    p.add_argument("--public-url", metavar="URL", help="the dashboard's address, for a link in each alert")
    p.add_argument("--alerts-cert-file", type=Path, metavar="PATH",
                   help="the alerts' own client certificate for --alerts-topic/--ha-discovery (mutual TLS): with the "
                        "broker's use_username_as_clientid, a connection with listen's certificate would take "
                        "listen's client id and disconnect it")
    p.add_argument("--alerts-key-file", type=Path, metavar="PATH", help="the key of --alerts-cert-file")
    p.add_argument("--ha-discovery", action="store_true",
                   help="alerts as Home Assistant events on --broker, each camera announced by MQTT discovery")
    p.add_argument("--ha-discovery-prefix", default="homeassistant", metavar="PREFIX",
                   help="Home Assistant's discovery prefix (default %(default)s)")
    p.add_argument("--ha-state-topic", default="bodycam-ha", metavar="TOPIC",
                   help="the events go to TOPIC/<device>/alert (default %(default)s)")


def from_args(args: argparse.Namespace, store: MarkerStore, mqtt_cfg: MqttConfig,
              instance: str) -> AlertDispatcher | None:
    """The dispatcher the options ask for (None: no alerts out). Bad options: UsageError."""
    if args.webhook is None and args.alerts_topic is None and not args.ha_discovery:
        if args.webhook_secret_file is not None:
            raise UsageError("--webhook-secret-file needs --webhook")
        if args.alerts_cert_file is not None or args.alerts_key_file is not None:
            raise UsageError("--alerts-cert-file is for --alerts-topic or --ha-discovery")
        return None
    cfg = DispatchConfig(max_age_s=args.alerts_max_age_s, public_url=args.public_url)
    if not cfg.max_age_s > 0:
        raise UsageError("--alerts-max-age-s must be > 0")
    sinks: list[Sink] = []
    if args.webhook is not None:
        secret = None
        if args.webhook_secret_file is not None:
            try:
                secret = args.webhook_secret_file.read_bytes().rstrip(b"\r\n")
            except OSError as exc:
                raise UsageError(f"--webhook-secret-file: {exc.strerror or exc}: {args.webhook_secret_file}") from None
            if len(secret) < 16:
                raise UsageError(f"--webhook-secret-file {args.webhook_secret_file}: the secret must be 16+ bytes")
        sinks.append(WebhookSink(args.webhook, secret=secret, timeout_s=cfg.timeout_s))
    if (args.alerts_cert_file is None) != (args.alerts_key_file is None):
        raise UsageError("--alerts-cert-file and --alerts-key-file go together")
    if args.alerts_cert_file is not None:
        for flag, f in (("--alerts-cert-file", args.alerts_cert_file), ("--alerts-key-file", args.alerts_key_file)):
            if not f.is_file():
                raise UsageError(f"{flag}: {f}: no such file")
        if args.alerts_topic is None and not args.ha_discovery:
            raise UsageError("--alerts-cert-file is for --alerts-topic or --ha-discovery")
        mqtt_cfg = replace(mqtt_cfg, tls=replace(mqtt_cfg.tls, cert_file=str(args.alerts_cert_file),
                                                 key_file=str(args.alerts_key_file)))
    elif mqtt_cfg.tls.cert_file is not None and (args.alerts_topic is not None or args.ha_discovery):
        _log.warning("alerts out: connecting with listen's own client certificate; if the broker sets "
                     "use_username_as_clientid (docs/mosquitto/bodycam.conf), give the alerts their own "
                     "(--alerts-cert-file/--alerts-key-file) or they and listen will disconnect each other")
    if args.alerts_topic is not None:
        sinks.append(MqttSink(mqtt_cfg, args.alerts_topic, f"{instance}-alerts", cfg.timeout_s))
    if args.ha_discovery:
        sinks.append(HomeAssistantSink(mqtt_cfg, args.ha_discovery_prefix, args.ha_state_topic, f"{instance}-ha",
                                       cfg.timeout_s, known_devices=lambda: [d.device for d in store.devices()]))
    return AlertDispatcher(store, sinks, cfg, instance=instance)
