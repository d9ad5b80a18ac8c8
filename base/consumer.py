"""The consumer at base: subscribe, validate, store, acknowledge; no message can stop it.

* MQTT 5 (persistent session: ``clean_start=False`` + ``SessionExpiryInterval``) with a stable
  client id, so messages published while base is down wait at the broker; ``protocol="auto"``
  falls back to MQTT 3.1.1 (``clean_session=False``) when the broker refuses MQTT 5;
* markers through the shared subscription ``$share/<group>/<prefix>/+/marker`` (MQTT 3.1.1:
  ``<prefix>/+/marker``, no load sharing), status and base's own retained acks through
  ``<prefix>/+/status`` and ``<prefix>/+/ack`` (every consumer), telemetry (QoS 0) through
  ``$share/<group>/<prefix>/+/telemetry`` (``base/telemetry.py``: latest per device + bounded
  history; an invalid one is counted always and quarantined at most once a minute per device and reason);
* manual acknowledgement: a PUBACK is sent only after the message is committed to the store
  (one transaction per batch), so a crash loses nothing (the broker re-delivers; duplicates are
  dropped by ``id``);
* **isolation**: a batch the store refuses for its data (not for the state of the database, see
  *outage*) is stored again one message per transaction; a message the store still refuses while
  the store takes writes (``ping`` is a real write) is kept in the quarantine table with the
  reason, and the consumer moves on. Invalid messages (oversized, not JSON, out of range, wrong
  topic, refused signature) are counted, logged once per device and reason, and quarantined too;
* **outage**: while the store cannot take writes (not reachable, read-only after a failover, full
  disk, locked: ``StoreUnavailable``, or any failure while ``ping`` fails too), the batch is retried
  with backoff and reported (not acknowledged, neither PUBACK nor ``ack``); never is a marker
  quarantined for it. A failure of the key lookup of the signature check, or of the quarantine
  write itself, is an outage too: a message is acknowledged only once it is stored or quarantined.
  :meth:`run` returns within a few seconds of ``stop`` and records in :attr:`unstored` how many
  messages it leaves to the broker;
* **end-to-end acknowledgement** (``docs/markers-and-mqtt.md``): after stored markers (at most every
  ``ack_interval_s`` per device) and after every (re)subscription, base publishes
  ``<prefix>/<device>/ack`` (QoS 1, retained) with the highest seq N such that every seq from the
  device's first stored seq to N is stored; a hole above N that lasts ``resend_after_s``, or a
  retained ack above N (the database was restored from an older backup), makes base publish
  ``<prefix>/<device>/cmd/resend`` for the missing range (QoS 1, MQTT 5 expiry 300 s; at most once
  per ``resend_repeat_s`` for one range);
* **a fresh broker session** (the broker restarted without its state, our session expired, or a new
  client id): whatever the broker queued for base may be gone, and a camera that resent its
  unconfirmed markers when it reconnected may have done so before base subscribed (those resends
  went nowhere and would wait ``ack_timeout_s`` at the camera). So once subscribed on a fresh
  session, base asks every device it knows for everything above its acknowledged seq
  (``cmd/resend`` ``N+1 .. 2^63-1``; the camera sends what it holds in that range, which is only what
  base has not confirmed).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from bodycam.base.keys import SIGNATURE_REASONS, SignaturePolicy
from bodycam.base.rules import AddResult, Progress, Quarantined
from bodycam.base.store import MarkerStore, StoreUnavailable
from bodycam.base.telemetry import TelemetryIn
from bodycam.base.validate import (
    ACK_SCHEMA,
    CMD_SCHEMA,
    Rejected,
    Status,
    split_topic,
    validate_ack,
    validate_marker,
    validate_status,
    validate_telemetry,
)
from bodycam.device.clock import Clock, SystemClock, rfc3339_ms
from bodycam.device.errors import StorageError
from bodycam.device.uplink.markers import DETECTION_KINDS, Marker, uuid7
from bodycam.device.uplink.mqtt_config import MqttConfig, TlsConfig, topic
from bodycam.device.uplink.validate import INT64_MAX, MAX_PAYLOAD

_log = logging.getLogger(__name__)
T = TypeVar("T")
#: called with the markers of a batch that are stored (or duplicates) and a publish function
MarkerHook = Callable[[Sequence[Marker], Callable[[str, bytes, int], bool]], None]
# CONNACK codes of "unsupported protocol version": MQTT 5 reason 132, MQTT 3.1.1 return code 1
_UNSUPPORTED_PROTOCOL = (1, 132)


@dataclass(frozen=True)
class ConsumerOptions:
    url: str
    group: str = "base"
    prefix: str = "bodycam"
    client_id: str | None = None  # default: bodycam-base-<group> (the CLI derives a stable one)
    session_expiry_s: int = 86400
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None  # base's client certificate (mutual TLS: docs/mosquitto/)
    key_file: str | None = None
    batch_max: int = 500
    receive_maximum: int = 500
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    connect_timeout_s: float = 3.0
    reconnect_max_s: float = 30.0
    store_retry_max_s: float = 5.0
    ack_interval_s: float = 0.2
    resend_after_s: float = 1.0
    resend_repeat_s: float = 30.0
    resend_expiry_s: int = 300
    first_ack_hold_s: float = 5.0


@dataclass
class _Hole:
    range: tuple[int, int]
    first_seen: float
    sent: float | None = None


@dataclass
class _Msg:
    gen: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    retained: bool
    received_ns: int = 0
    marker: Marker | None = field(default=None)
    telemetry: TelemetryIn | None = None


class _Stopped(Exception):
    """``stop`` was set while the store was unavailable."""


class _Poison(Exception):
    """The store answers but refuses this write."""


class Consumer:
    """Run with :meth:`run` (blocks until ``stop`` is set) or feed :meth:`handle` directly.

    ``notify`` receives the operator's lines (connection problems, gunshots); logging gets the rest.
    """

    def __init__(
        self,
        options: ConsumerOptions,
        store: MarkerStore,
        *,
        clock: Clock | None = None,
        notify: Callable[[str], None] | None = None,
        signatures: SignaturePolicy | None = None,
        hooks: Sequence[MarkerHook] = (),
    ) -> None:
        self._opt = options
        self._hooks = list(hooks)  # after each batch: what was stored or is a duplicate (base/peer.py)
        self._signatures = signatures  # base/keys.py: verify each marker before it is stored
        self._cfg = MqttConfig(
            url=options.url,
            topic_prefix=options.prefix,
            username=options.username,
            password=options.password,
            tls=TlsConfig(ca_file=options.ca_file, cert_file=options.cert_file, key_file=options.key_file),
        )
        self._store = store
        self._clock = clock or SystemClock()
        self._notify_fn = notify or (lambda line: _log.info("%s", line))
        self.counters: Counter[str] = Counter()
        self.client_id = options.client_id or f"bodycam-base-{options.group}"
        self.subscribed = threading.Event()
        self.unstored = 0  # messages left unacknowledged at stop (the broker redelivers them)
        self.store_down = False  # the store did not answer when the consumer stopped
        self._inbox: queue.Queue[_Msg] = queue.Queue()
        self._client: mqtt.Client | None = None
        self._gen = 0
        self._v5 = options.protocol != "3.1.1"
        self._connected = threading.Event()
        self._lost = threading.Event()
        self._connack: Any = None
        self._stop = threading.Event()
        self._logged: set[tuple[str, str]] = set()
        self._sampled: dict[tuple[str, str], float] = {}  # (device, kind) -> last quarantined (telemetry)
        self._dirty: set[str] = set()
        self._acked: dict[str, int] = {}
        self._holes: dict[str, _Hole] = {}
        self._restored: dict[str, int] = {}
        self._hold: dict[str, float] = {}  # device -> no ack before this time (see _count)
        self._next_ack_pass = 0.0
        self._ack_all = False
        self._session_present = True

    @property
    def protocol(self) -> str:
        return "5" if self._v5 else "3.1.1"

    @property
    def mqtt_config(self) -> MqttConfig:
        """The broker settings (URL, credentials, TLS) this consumer connects with."""
        return self._cfg

    # -- one message (also what the tests and the fuzz bench drive) ---------------------------------
    def handle(self, topic_: str, payload: bytes, *, retained: bool = False) -> str:
        """Validate and store one message now; returns the outcome (``stored``, ``duplicate``,
        ``status``, ``ack``, ``rejected_<reason>``, ``quarantined_<kind>``)."""
        msg = _Msg(0, 0, 0, topic_, payload, retained, self._clock.wall_ns())
        return self._process([msg])[0]

    def _process(self, batch: Sequence[_Msg]) -> list[str]:
        """Classify, store and quarantine one batch; raises _Stopped only (outage + stop)."""
        outcomes: list[str] = []
        held: list[Quarantined] = []
        for msg in batch:
            outcomes.append(self._classify(msg, held))
        idx = [i for i, msg in enumerate(batch) if msg.marker is not None]
        results = self._store_markers([batch[i] for i in idx], held)
        for i, r in zip(idx, results, strict=True):
            outcomes[i] = self._count(batch[i], r)
        tel = [i for i, msg in enumerate(batch) if msg.telemetry is not None]
        for i, ok in zip(tel, self._store_telemetry([batch[i] for i in tel], held), strict=True):
            outcomes[i] = "telemetry" if ok else "quarantined_unstorable"
        if held:
            self._quarantine(held)
        if self._hooks:
            self._run_hooks([batch[i].marker for i in idx if outcomes[i] in ("stored", "duplicate")])
        return outcomes

    def _run_hooks(self, markers: list[Marker | None]) -> None:
        """Hooks see stored markers and duplicates (a redelivery after a crash); none can stop the consumer."""
        ms = [m for m in markers if m is not None]
        for hook in self._hooks if ms else ():
            try:
                hook(ms, self.publish)
            except Exception:
                _log.exception("marker hook %r failed", hook)

    def publish(self, topic_: str, payload: bytes, expiry_s: int) -> bool:
        """QoS 1 on the consumer's connection (MQTT 5 message expiry); False when not connected."""
        client = self._client
        if client is None or not self._connected.is_set():
            return False
        props = None
        if self._v5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval = expiry_s
        return client.publish(topic_, payload, qos=1, retain=False, properties=props).rc == mqtt.MQTT_ERR_SUCCESS

    def _classify(self, msg: _Msg, held: list[Quarantined]) -> str:
        """Validate one message; markers are left in ``msg.marker``, statuses stored now."""
        self.counters["received"] += 1
        device: str | None = None
        try:
            device, leaf = split_topic(self._opt.prefix, msg.topic)
            if leaf == "marker":
                marker = validate_marker(self._opt.prefix, msg.topic, msg.payload)
                sigs = self._signatures
                # the key lookup reads the database: its failure is an outage (retried), no verdict
                if sigs is not None and not self._with_store(lambda: sigs.check(marker, msg.received_ns),
                                                             refusal_is_outage=True):
                    self.counters["unverified"] += 1
                msg.marker = marker  # only now: a refused signature leaves it out of the store
                return "marker"
            if leaf == "status":
                status = validate_status(self._opt.prefix, msg.topic, msg.payload)
                if status is not None:
                    self._status(status, msg)
                return "status"
            if leaf == "telemetry":
                tel = validate_telemetry(self._opt.prefix, msg.topic, msg.payload)
                msg.telemetry = TelemetryIn(tel, msg.payload.decode("utf-8"), msg.received_ns)
                return "telemetry"
            if leaf == "ack":
                ack = validate_ack(self._opt.prefix, msg.topic, msg.payload)
                if ack is not None and msg.retained:
                    self._restored[ack[0]] = max(ack[1], self._restored.get(ack[0], 0))
                return "ack"
            raise Rejected("bad_topic", f"unexpected topic {msg.topic[:200]!r}")
        except Rejected as exc:
            if exc.reason in SIGNATURE_REASONS:
                self._notify(f"ALERT marker refused ({exc.reason.replace('_', ' ')}): {exc} "
                             "(see 'bodycam-base quarantine')")
            return self._reject(msg, device, f"rejected_{exc.reason}", str(exc), held)
        except (_Stopped, _Poison):
            raise
        except Exception as exc:  # a validator bug must not stop the consumer either
            _log.exception("validating a message on %r failed", msg.topic[:200])
            return self._reject(msg, device, "rejected_error", f"{type(exc).__name__}: {exc}", held)

    def _reject(self, msg: _Msg, device: str | None, kind: str, why: str, held: list[Quarantined]) -> str:
        self.counters[kind] += 1
        self.counters["rejected"] += 1
        self._log_once(device or "?", kind, f"message on {msg.topic[:200]!r} ({len(msg.payload)} bytes): {why}")
        if msg.topic.endswith("/telemetry"):  # QoS 0, every 10 s: one sample a minute is enough to see
            now, key = time.monotonic(), (device or "?", kind)
            if now - self._sampled.get(key, -1e9) < 60.0:
                self.counters["rejected_telemetry_not_quarantined"] += 1
                return kind
            if len(self._sampled) < 10_000:
                self._sampled[key] = now
        held.append(Quarantined(msg.received_ns, msg.topic, device, kind, why[:500], msg.payload[:MAX_PAYLOAD]))
        return kind

    def _status(self, status: Status, msg: _Msg) -> None:
        try:
            self._with_store(
                lambda: self._store.set_status(
                    status.device, status.state, status.t, msg.received_ns, retained=msg.retained
                )
            )
        except _Poison as exc:
            self._log_once(status.device, "status", f"cannot store status: {exc}")
            return
        self.counters["status"] += 1
        _log.info("device %s is %s%s", status.device, status.state, " (retained)" if msg.retained else "")

    def _store_markers(self, msgs: Sequence[_Msg], held: list[Quarantined]) -> list[AddResult | None]:
        items = [(m.marker, m.received_ns) for m in msgs if m.marker is not None]
        if not items:
            return []
        try:
            return list(self._with_store(lambda: self._store.add_markers(items)))
        except _Poison:
            pass
        out: list[AddResult | None] = []  # isolate: one transaction per marker
        for msg, item in zip(msgs, items, strict=True):
            try:
                out.append(self._with_store(_bind(self._store.add_markers, [item]))[0])
            except _Poison as exc:
                assert msg.marker is not None
                held.append(
                    Quarantined(msg.received_ns, msg.topic, msg.marker.device, "unstorable", str(exc)[:500], msg.payload)
                )
                out.append(None)
        return out

    def _store_telemetry(self, msgs: Sequence[_Msg], held: list[Quarantined]) -> list[bool]:
        items = [m.telemetry for m in msgs if m.telemetry is not None]
        if not items:
            return []
        try:
            self._with_store(lambda: self._store.add_telemetry(items))
            self.counters["telemetry"] += len(items)
            return [True] * len(items)
        except _Poison:
            pass
        out = []
        for msg, item in zip(msgs, items, strict=True):  # isolate, as markers are
            try:
                self._with_store(_bind(self._store.add_telemetry, [item]))
                self.counters["telemetry"] += 1
                out.append(True)
            except _Poison as exc:
                self.counters["quarantined_unstorable"] += 1
                held.append(Quarantined(msg.received_ns, msg.topic, item.telemetry.device, "unstorable",
                                        str(exc)[:500], msg.payload))
                out.append(False)
        return out

    def _count(self, msg: _Msg, r: AddResult | None) -> str:
        m = msg.marker
        assert m is not None
        if r is None:
            self.counters["quarantined_unstorable"] += 1
            self.counters["quarantined"] += 1
            self._log_once(m.device, "unstorable", f"seq {m.seq} could not be stored: quarantined")
            return "quarantined_unstorable"
        if r.conflict is not None:
            self.counters[f"quarantined_{r.conflict}"] += 1
            self.counters["quarantined"] += 1
            _log.error("device %s: %s at seq %d (id %s): not stored, kept in quarantine", m.device, r.conflict, m.seq, m.id)
            self._notify(f"ALERT {r.conflict.replace('_', ' ')}: device {m.device} seq {m.seq} id {m.id} (see 'bodycam-base quarantine')")
            return f"quarantined_{r.conflict}"
        if not r.stored:
            self.counters["duplicate"] += 1
            return "duplicate"
        self.counters["stored"] += 1
        self._dirty.add(m.device)
        if r.first and m.seq > 1:
            # The first marker of a device this database has ever seen is not seq 1: before the
            # first ack (which lets the camera delete what it holds below it), ask for 1..seq-1 and
            # give the camera first_ack_hold_s to send what it still has (e.g. markers a killed
            # broker lost while a newer one got through).
            self._hold[m.device] = time.monotonic() + self._opt.first_ack_hold_s
            self._holes[m.device] = _Hole((1, m.seq - 1), time.monotonic() - self._opt.resend_after_s)
        if r.gap is not None:
            self.counters["gaps"] += 1
            _log.warning("device %s: seq %d..%d missing (so far) before seq %d", m.device, *r.gap, m.seq)
        if r.chain == "broken":
            self.counters["chain_broken"] += 1
            _log.error("device %s: hash chain broken at seq %d (prev does not match seq %d)", m.device, m.seq, m.seq - 1)
        if m.kind in DETECTION_KINDS:
            conf = "" if m.confidence is None else f" confidence {m.confidence:.2f}"
            self._notify(f"{m.kind.upper()} device {m.device} seq {m.seq} at {m.t}{conf}")
        return "stored"

    def _quarantine(self, held: list[Quarantined]) -> None:
        """Quarantine ``held`` before the batch is acknowledged; a failure is an outage (retried,
        nothing acknowledged): a message is never acknowledged while it is stored nowhere."""
        self._with_store(lambda: self._store.quarantine(held), refusal_is_outage=True)

    def _notify(self, line: str) -> None:
        try:
            self._notify_fn(line)
        except Exception:  # a closed terminal must not stop the consumer
            _log.exception("cannot show: %s", line)

    def _log_once(self, device: str, kind: str, text: str) -> None:
        if (device, kind) in self._logged:
            _log.debug("%s", text)
            return
        if len(self._logged) < 10_000:
            self._logged.add((device, kind))
        _log.warning("%s (logged once per device and kind; see 'bodycam-base quarantine')", text)

    def _with_store(self, fn: Callable[[], T], *, refusal_is_outage: bool = False) -> T:
        """Call the store; an outage is retried with backoff until ``stop``; a refusal is _Poison.

        An outage: a :class:`StoreUnavailable` (the database cannot be written now, whatever the
        data), or any StorageError while ``ping`` (a real write) fails too. Only a failure while
        the store takes writes is a refusal of the data (_Poison), and with ``refusal_is_outage``
        (the quarantine, the key lookup) even that is retried: nothing is acknowledged meanwhile."""
        delay = 0.1
        while True:
            try:
                result = fn()
            except StorageError as exc:
                if self._stop.is_set():
                    # stopping: no ping (another busy timeout) — the message stays unacknowledged
                    # with the broker, stored or quarantined after the restart
                    raise _Stopped() from exc
                down: StorageError | None = exc if isinstance(exc, StoreUnavailable) else None
                if down is None:
                    try:
                        self._store.ping()
                    except StorageError as failed:
                        down = failed
                if down is None and not refusal_is_outage:
                    raise _Poison(str(exc)) from exc
                if not self.store_down:
                    why = down if down is not None else f"it takes writes but refuses this one: {exc}"
                    self._notify(f"store unavailable: {why}; retrying (nothing is acknowledged meanwhile)")
                self.store_down = True
                self.counters["store_retries"] += 1
                if self._stop.wait(delay):
                    raise _Stopped() from exc
                delay = min(delay * 2, self._opt.store_retry_max_s)
                continue
            if self.store_down:
                self._notify("store available again")
                self.store_down = False
            return result

    # -- acknowledgement and resend -----------------------------------------------------------------
    def _ack_pass(self, now: float) -> None:
        """Publish acks for devices with newly stored markers; ask for holes that persist."""
        client = self._client
        if client is None or not self._connected.is_set() or now < self._next_ack_pass:
            return
        self._next_ack_pass = now + self._opt.ack_interval_s
        due = {d for d, h in self._holes.items() if self._hole_due(h, now)}
        due |= {d for d, until in self._hold.items() if until <= now}
        devices: list[str] | None = sorted(self._dirty | due | set(self._restored))
        if self._ack_all:
            devices = None
        elif not devices:
            return
        try:
            progress = self._with_store(lambda: self._store.progress(devices))
        except _Poison as exc:
            _log.error("cannot read the acknowledgement state: %s", exc)
            return
        self._dirty.clear()
        self._ack_all = False
        seen = {p.device for p in progress}
        unknown = [Progress(d, 0, 0, None) for d in list(self._restored) if d not in seen]  # nothing stored
        for p in [*progress, *unknown]:
            self._ack_device(client, p, now)

    def _known_before(self) -> list[Progress]:
        """What this database held before the session (read before anything on it is stored)."""
        try:
            return self._with_store(lambda: self._store.progress(None))
        except _Poison as exc:
            _log.error("cannot read the acknowledgement state: %s", exc)
            return []

    def _ask_known(self, client: mqtt.Client, known: list[Progress]) -> None:
        """Once subscribed on a fresh session: ask every device the database knew for everything
        above its acknowledged seq (see the module docstring)."""
        for p in known:
            if 0 < p.contiguous < INT64_MAX:
                self._resend(client, p.device, (p.contiguous + 1, INT64_MAX), fresh_session=True)

    def _hole_due(self, h: _Hole, now: float) -> bool:
        if h.sent is None:
            return now - h.first_seen >= self._opt.resend_after_s
        return now - h.sent >= self._opt.resend_repeat_s

    def _ack_device(self, client: mqtt.Client, p: Progress, now: float) -> None:
        held = self._hold.get(p.device, 0.0) > now
        if not held:
            self._hold.pop(p.device, None)
        if p.contiguous > 0 and p.contiguous != self._acked.get(p.device) and not held:
            body = {"schema": ACK_SCHEMA, "device": p.device, "seq": p.contiguous, "t": self._now()}
            client.publish(topic(self._opt.prefix, p.device, "ack"), _json(body), qos=1, retain=True)
            self._acked[p.device] = p.contiguous
            self.counters["acks_published"] += 1
        hole = p.hole
        h0 = self._holes.get(p.device)
        if hole is None and held and h0 is not None:  # the range below the first stored seq
            hole = h0.range
        restored = self._restored.pop(p.device, 0)
        if hole is None and restored > p.contiguous:  # base acknowledged more before a restore
            hole = (p.contiguous + 1, restored)
            self._holes[p.device] = _Hole(hole, now - self._opt.resend_after_s)
        if hole is None:
            self._holes.pop(p.device, None)
            return
        h = self._holes.get(p.device)
        if h is None or h.range != hole:
            h = self._holes[p.device] = _Hole(hole, now)
        if not self._hole_due(h, now):
            return
        self._resend(client, p.device, hole)
        h.sent = now

    def _resend(self, client: mqtt.Client, device: str, hole: tuple[int, int], *, fresh_session: bool = False) -> None:
        body = {
            "schema": CMD_SCHEMA,
            "verb": "resend",
            "id": uuid7(self._clock.wall_ns()),
            "from_seq": hole[0],
            "to_seq": hole[1],
            "t": self._now(),
        }
        props = None
        if self._v5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval = self._opt.resend_expiry_s
        client.publish(topic(self._opt.prefix, device, "cmd/resend"), _json(body), qos=1, retain=False, properties=props)
        if fresh_session:
            self.counters["fresh_session_requests"] += 1
            _log.info("device %s: fresh broker session; asked for seq %d and above", device, hole[0])
            return
        self.counters["resend_requests"] += 1
        self._notify(f"device {device}: seq {hole[0]}..{hole[1]} missing; asked the camera to send them again")

    def _now(self) -> str:
        return rfc3339_ms(self._clock.wall_ns())

    # -- MQTT ---------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Connect (retrying visibly), consume until ``stop`` is set, then disconnect cleanly."""
        self._stop = stop
        backoff = 0.5
        try:
            while not stop.is_set():
                if self._session(stop):
                    backoff = 0.5
                    stop.wait(0.2)  # never a tight loop (e.g. another consumer with our client id)
                    continue
                if stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self._opt.reconnect_max_s)
        except _Stopped:
            pass
        finally:
            self.unstored += self._inbox.qsize()

    def _session(self, stop: threading.Event) -> bool:
        """One connection: True if it was established (then lost or stopped), False to back off."""
        client = self._make_client()
        self._gen += 1
        self._connected.clear()
        self._lost.clear()
        self._connack = None
        where = f"{self._cfg.host}:{self._cfg.port}"
        try:
            client.connect(self._cfg.host, self._cfg.port, keepalive=30, **self._connect_args())
        except (OSError, ValueError) as exc:
            self._notify(f"cannot connect to broker {self._opt.url}: {exc}; retrying")
            return False
        client.loop_start()
        try:
            deadline = time.monotonic() + 10.0
            while self._connack is None and not self._lost.is_set() and time.monotonic() < deadline:
                if stop.wait(0.05):
                    return True
            if self._connack is None or self._connack.is_failure:
                value = None if self._connack is None else int(getattr(self._connack, "value", 0))
                if self._v5 and self._opt.protocol == "auto" and value in _UNSUPPORTED_PROTOCOL:
                    self._notify(f"broker {where} refused MQTT 5; using MQTT 3.1.1 (no resend expiry)")
                    self._v5 = False
                    return True
                why = "no answer" if self._connack is None else str(self._connack)
                self._notify(f"broker {self._opt.url} refused the connection: {why}; retrying")
                return False
            self._client = client
            self._ack_all = True
            known = None if self._session_present else self._known_before()
            self._acked.clear()
            while not stop.is_set() and not self._lost.is_set():
                if known is not None and self._connected.is_set():
                    self._ask_known(client, known)
                    known = None
                self._drain(wait_s=0.05)
                self._ack_pass(time.monotonic())
            if stop.is_set():  # store what already arrived (bounded), then the final acks
                end = time.monotonic() + 1.0
                while not self._inbox.empty() and time.monotonic() < end:
                    self._drain(wait_s=0.0)
                self._next_ack_pass = 0.0
                self._ack_pass(time.monotonic())
            else:
                self._notify(f"lost the connection to broker {self._opt.url}; reconnecting")
            return True
        finally:
            self._client = None
            self.subscribed.clear()
            self._connected.clear()
            try:
                client.disconnect()
            finally:
                client.loop_stop()

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            clean_session=None if self._v5 else False,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        client.connect_timeout = self._opt.connect_timeout_s
        if self._cfg.username is not None:
            client.username_pw_set(self._cfg.username, self._cfg.resolve_password())
        if self._cfg.use_tls:
            client.tls_set(ca_certs=self._cfg.tls.ca_file, certfile=self._cfg.tls.cert_file,
                           keyfile=self._cfg.tls.key_file)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _connect_args(self) -> dict[str, Any]:
        if not self._v5:
            return {}
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._opt.session_expiry_s
        props.ReceiveMaximum = self._opt.receive_maximum
        return {"clean_start": False, "properties": props}

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._session_present = bool(getattr(flags, "session_present", False))  # before _connack: read after it
        self._connack = reason
        if reason.is_failure:
            return
        _log.info("connected to %s as %s (MQTT %s, session present: %s)", self._opt.url, self.client_id,
                  self.protocol, flags.session_present)
        p = self._opt.prefix
        markers = f"$share/{self._opt.group}/{p}/+/marker" if self._v5 else f"{p}/+/marker"
        if self._v5:  # no echo of our own acks (MQTT 5 No Local); 3.1.1 echoes them: ignored (not retained)
            opts = [SubscribeOptions(qos=1), SubscribeOptions(qos=1), SubscribeOptions(qos=1, noLocal=True)]
            telemetry = (f"$share/{self._opt.group}/{p}/+/telemetry", SubscribeOptions(qos=0))
            client.subscribe([(markers, opts[0]), (f"{p}/+/status", opts[1]), (f"{p}/+/ack", opts[2]), telemetry])
        else:
            client.subscribe([(markers, 1), (f"{p}/+/status", 1), (f"{p}/+/ack", 1), (f"{p}/+/telemetry", 0)])

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected.clear()
        self._lost.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        bad = [r for r in reasons if getattr(r, "is_failure", False)]
        if bad:
            self._notify(f"subscription refused: {bad}")
            return
        self._connected.set()
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic_ = msg.topic
        except UnicodeDecodeError:  # MQTT requires UTF-8 topics; be safe if a broker lets one through
            topic_ = bytes(msg._topic).decode("utf-8", "backslashreplace")
        self._inbox.put(_Msg(self._gen, msg.mid, msg.qos, topic_, bytes(msg.payload), bool(msg.retain)))

    def _drain(self, wait_s: float) -> None:
        """Take what arrived, store it, then acknowledge it in order (only on the same connection)."""
        batch: list[_Msg] = []
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
        for msg in batch:
            msg.received_ns = now
        try:
            self._process(batch)
        except _Stopped:
            self.unstored += len(batch)
            raise
        client = self._client
        if client is not None:
            for msg in batch:
                if msg.qos > 0 and msg.gen == self._gen:
                    client.ack(msg.mid, msg.qos)


def _bind(fn: Callable[[Any], T], arg: Any) -> Callable[[], T]:
    return lambda: fn(arg)


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode("utf-8")
