"""MQTT publisher: the policy around one connection at a time (paho-mqtt 2), on a thread of its own.

Each connection is an :class:`~.mqtt_session.MqttSession` (one connection's lifetime); this module
is the loop around it: reconnect with backoff, the choice of MQTT version (:class:`ProtocolChoice`,
the one place that decides), the outbox cursor, resends, base's ``ack`` and ``cmd/resend``,
telemetry and the delivery alarm.

* Markers: QoS 1 on ``<prefix>/<device>/marker``, oldest first, at most ``max_inflight``
  unacknowledged. The broker's PUBACK marks a marker *sent* in the outbox; it stays there until
  base's ``ack`` (``<prefix>/<device>/ack``, retained, monotonic; a lower one is logged and
  ignored) confirms it. A marker sent but not confirmed within ``ack_timeout_s`` is sent again
  (same id; base deduplicates). After every reconnect, markers the broker has not PUBACKed are
  sent again, in order.
* ``cmd/resend`` from base: every marker still held in ``from_seq..to_seq`` (confirmed ones too,
  within the outbox's retention window) is sent again; a repeated command id or a malformed command
  is logged and ignored.
* ``cmd/record`` from base (peer activation, or an operator): checked here (schema, target device,
  expiry by the camera's clock, command id not seen before), then handed to :attr:`on_record` (the
  loop starts recording at its next frame); a command for another device is refused, an expired or
  repeated one ignored, each logged with the reason.
* Delivery alarm (:attr:`MqttPublisher.delivery_alarm`, in telemetry and the retained status): a
  PUBACK with an MQTT 5 failure reason (>= 0x80, e.g. 135 not authorised) or markers sent
  ``resend_alarm_after`` + 1 times without base's confirmation (an MQTT 3.1.1 broker PUBACKs and
  silently drops what its ACL denies). The markers are kept and resent either way.
* Status: retained QoS 1 ``online`` on connect (with the alarm, when there is one), ``offline`` on
  :meth:`stop`, and a Last Will ``offline`` for an unclean loss.
* Telemetry: QoS 0 every ``telemetry_interval_s`` (MQTT 5 message expiry ``telemetry_expiry_s``);
  while disconnected snapshots wait in the outbox's bounded telemetry table.

Subscriptions to ``ack``, ``cmd/resend`` and ``cmd/record`` are made on every connection (a persistent session
keeps them; subscribing again costs nothing and covers a lost session or an MQTT 3.1.1 broker; the
retained ack arrives again either way). All paho calls happen on the publisher thread, so the
callbacks need no locking; the outbox is thread-safe for the recording loop. Network pacing
(backoff, polling, resend timers) uses real monotonic time; payload times use the injected clock.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from bodycam.device.clock import Clock
from bodycam.device.errors import BrokerError, ConfigError, StorageError
from bodycam.device.uplink.commands import CommandError, Record, parse_ack, parse_record, parse_resend
from bodycam.device.uplink.mqtt_config import MqttConfig, topic
from bodycam.device.uplink.mqtt_session import MQTT5, MQTT311, MqttSession, SessionError, protocol_name
from bodycam.device.uplink.outbox import Outbox
from bodycam.device.uplink.telemetry import TelemetryProvider, status_payload, telemetry_payload

_log = logging.getLogger(__name__)
_POLL_S = 0.02  # network loop timeout and outbox poll period while connected
_HOUSEKEEPING_S = 1.0  # resend scan, flush of markers kept in memory, alarm
_PRUNE_S = 60.0  # deleting confirmed markers past the retention window
# amqtt neither answers nor closes an MQTT 5 CONNECT that carries a will: in "auto" mode an
# unanswered MQTT 5 CONNECT is given up after this long (until MQTT 5 has worked once).
_V5_PROBE_TIMEOUT_S = 2.0
_SEEN_COMMANDS = 256


@dataclass
class PublisherStats:
    connects: int = 0
    connect_failures: int = 0
    published: int = 0
    acked: int = 0  # PUBACKs of markers (sent)
    rejected: int = 0  # PUBACKs with a failure reason
    resent: int = 0  # markers sent again (ack timeout or cmd/resend)
    confirmed_seq: int = 0  # the highest seq base confirmed
    commands: int = 0
    commands_ignored: int = 0
    telemetry_sent: int = 0
    protocol: str = ""


class ProtocolChoice:
    """Which MQTT version the next connection uses: the one place that decides.

    ``"5"`` and ``"3.1.1"`` are fixed. ``"auto"`` starts with 5 and falls back to 3.1.1 for the rest
    of the run when a broker refuses 5 (CONNACK 1/132), hangs up on the CONNECT, or does not answer it
    within ``_V5_PROBE_TIMEOUT_S`` (amqtt) -- unless 5 has already worked once.
    """

    def __init__(self, setting: str) -> None:
        self.setting = setting
        self.current = MQTT311 if setting == "3.1.1" else MQTT5
        self._v5_worked = False

    def connect_timeout(self, configured: float) -> float:
        if self._probing:
            return min(configured, _V5_PROBE_TIMEOUT_S)
        return configured

    @property
    def _probing(self) -> bool:
        return self.setting == "auto" and self.current == MQTT5 and not self._v5_worked

    def connected(self) -> None:
        self._v5_worked = self._v5_worked or self.current == MQTT5

    def failed(self, exc: SessionError) -> bool:
        """Account for a failed connection; True when it switched to 3.1.1 (retry at once)."""
        if not self._probing:
            return False
        if (exc.stage == "refused" and exc.unsupported_protocol) or exc.stage in ("handshake", "no_connack"):
            _log.info("broker did not take an MQTT 5 CONNECT (%s); falling back to MQTT 3.1.1", exc)
            self.current = MQTT311
            return True
        return False


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
        self._t_marker, self._t_status, self._t_telemetry, self._t_ack, self._t_resend, self._t_record = (
            topic(config.topic_prefix, self._device, leaf)
            for leaf in ("marker", "status", "telemetry", "ack", "cmd/resend", "cmd/record")
        )
        #: called (on the publisher thread) with every accepted ``cmd/record``; the assembly points it
        #: at the loop (:meth:`bodycam.device.app.App.request_record`)
        self.on_record: Callable[[Record], None] | None = None
        self._protocol = ProtocolChoice(config.protocol)
        self.stats = PublisherStats(confirmed_seq=outbox.acked_seq)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._state_cv = threading.Condition()
        self._connected = False
        self._backoff = config.reconnect_min_s
        self._next_telemetry = 0.0
        # owned by the publisher thread
        self._session: MqttSession | None = None
        self._inflight: dict[int, int] = {}  # mid -> marker seq, this session only
        self._cursor = 0  # highest seq handed to this session for its first send
        self._sent_at: dict[int, float] = {}  # seq -> when it was last (re)sent, this process
        self._pubacked: list[int] = []
        self._resend_ranges: collections.deque[list[int]] = collections.deque()
        self._seen_commands: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._rejected: dict[int, str] = {}  # seq -> broker's failure reason
        self._stuck = 0  # markers sent resend_alarm_after + 1 times, never confirmed
        self._alarm: str | None = None
        self._ack_ahead: int | None = None  # an ack beyond the outbox's last seq (refused; an alarm)
        self._alarm_published: str | None = None
        self._next_housekeeping = 0.0
        self._next_prune = 0.0
        self._status_mid: int | None = None

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
        return protocol_name(self._protocol.current)

    @property
    def delivery_alarm(self) -> str | None:
        """Why markers are not reaching base (broker refusal, never confirmed), or None."""
        return self._alarm

    def wait_connected(self, timeout: float) -> bool:
        with self._state_cv:
            return self._state_cv.wait_for(lambda: self._connected, timeout)

    def wait_drained(self, timeout: float) -> bool:
        """True once every marker has been PUBACKed by the broker (sent) within ``timeout`` seconds.

        This is what the simulator waits for at exit (it usually has no base); base's confirmation
        is :meth:`wait_confirmed`.
        """
        return self._wait(lambda: self._outbox.depth() == 0, timeout)

    def wait_confirmed(self, timeout: float) -> bool:
        """True once base has confirmed every marker (nothing left unconfirmed) within ``timeout``."""
        return self._wait(lambda: self._outbox.unconfirmed() == 0, timeout)

    def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if done():
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

    # -- the loop around sessions ----------------------------------------------------------
    def _run(self) -> None:
        next_attempt = 0.0
        while not self._stopping.is_set():
            now = self._timer()
            if now < next_attempt:
                self._offline_step(now)
                self._wake.wait(min(next_attempt - now, 0.2))
                self._wake.clear()
                continue
            try:
                self._session_lifetime()
                self._backoff = self._cfg.reconnect_min_s
                next_attempt = 0.0
            except SessionError as exc:
                if exc.stage == "stopped":
                    break
                next_attempt = self._timer() + self._after_failure(exc)
            except Exception:
                _log.exception("publisher error; reconnecting")
                next_attempt = self._timer() + self._after_failure(None)
            finally:
                self._set_connected(False)
        self._set_connected(False)

    def _after_failure(self, exc: SessionError | None) -> float:
        """Log a failed or lost connection and return the delay before the next attempt."""
        was_up = exc is not None and exc.stage == "lost"
        if exc is not None and self._protocol.failed(exc):
            self._backoff = self._cfg.reconnect_min_s
            return 0.0
        if was_up:
            _log.warning("connection to %s lost (%s); reconnecting", self._cfg.url, exc)
        else:
            self.stats.connect_failures += 1
            _log.info("cannot connect to %s (%s); retrying in %.2f s", self._cfg.url, exc, self._backoff)
        delay = self._backoff * (1 + self._cfg.reconnect_jitter * (2 * self._rng.random() - 1))
        self._backoff = min(max(self._backoff * 2, self._cfg.reconnect_min_s), self._cfg.reconnect_max_s)
        return max(0.0, delay)

    def _session_lifetime(self) -> None:
        cfg = self._cfg
        session = MqttSession(
            cfg,
            self._device,
            self._protocol.current,
            will=(self._t_status, status_payload(self._device, "offline", self._clock)),
            on_puback=self._on_puback,
            on_message=self._on_message,
            connect_timeout_s=self._protocol.connect_timeout(cfg.connect_timeout_s),
            stop=self._stopping,
            timer=self._timer,
        )
        with session:
            self._session = session
            try:
                self._serve(session)
            finally:
                self._session = None
                self._inflight.clear()
                self._pubacked.clear()

    def _serve(self, s: MqttSession) -> None:
        self._protocol.connected()
        self.stats.connects += 1
        self.stats.protocol = self.protocol
        self._cursor = 0  # everything the broker has not PUBACKed goes again, in order
        if not s.session_present:
            self._session_lost()
        s.subscribe([self._t_ack, self._t_resend, self._t_record])
        self._publish_status(s, "online")
        self._next_telemetry = self._timer() + self._cfg.telemetry_interval_s
        self._set_connected(True)
        _log.info("connected to %s as %s (MQTT %s%s)", self._cfg.url, self._device, self.protocol,
                  ", session resumed" if s.session_present else "")
        next_poll = 0.0
        while not self._stopping.is_set():
            s.loop(_POLL_S)
            self._flush_pubacks()
            now = self._timer()
            if now >= self._next_housekeeping:
                self._next_housekeeping = now + min(_HOUSEKEEPING_S, self._cfg.ack_timeout_s / 4)
                self._housekeeping(s, now)
            if self._wake.is_set() or now >= next_poll:
                self._wake.clear()
                next_poll = now + _POLL_S
                self._pump(s)
            self._telemetry_tick(s, now)
        self._goodbye(s)

    def _session_lost(self) -> None:
        """The broker has no session of ours (it was restarted without its state, or never knew us):
        what it queued for base may be gone too, so every marker sent but not confirmed goes again
        now, not ``ack_timeout_s`` later."""
        last = self._outbox.last_sent_seq()
        first = self._outbox.acked_seq + 1
        if last >= first:
            _log.warning("the broker has no session for %s: sending the unconfirmed markers %d..%d again",
                         self._device, first, last)
            self._resend_ranges.append([first, last])

    # -- markers ---------------------------------------------------------------------------
    def _room(self) -> int:
        return self._cfg.max_inflight - len(self._inflight)

    def _send(self, s: MqttSession, seq: int, body: bytes) -> None:
        mid = s.publish(self._t_marker, body, qos=1)
        self._inflight[mid] = seq
        self._sent_at[seq] = self._timer()
        self.stats.published += 1

    def _pump(self, s: MqttSession) -> None:
        """Fill the in-flight window: requested resends first, then markers not yet PUBACKed."""
        while self._resend_ranges and self._room() > 0:
            rng = self._resend_ranges[0]
            busy = set(self._inflight.values())
            batch = self._outbox.held(rng[0], rng[1], self._room())
            for m in batch:
                if m.seq not in busy:
                    self._send(s, m.seq, m.to_json())
                    self.stats.resent += 1
            rng[0] = batch[-1].seq + 1 if batch else rng[1] + 1
            if rng[0] > rng[1]:
                self._resend_ranges.popleft()
        room = self._room()
        if room > 0:
            busy = set(self._inflight.values())
            for m in self._outbox.unsent(room, after_seq=self._cursor):
                if m.seq not in busy:
                    self._send(s, m.seq, m.to_json())
                self._cursor = m.seq

    def _on_puback(self, mid: int, failure: str | None) -> None:
        seq = self._inflight.pop(mid, None)
        if mid == self._status_mid:
            self._status_mid = None
        if seq is None:
            return
        if failure is not None:
            self.stats.rejected += 1
            if seq not in self._rejected:
                _log.error("broker refused marker seq %d: %s (kept; sent again every %.0f s)",
                           seq, failure, self._cfg.ack_timeout_s)
            self._rejected[seq] = failure
        self._pubacked.append(seq)

    def _flush_pubacks(self) -> None:
        if self._pubacked:
            seqs, self._pubacked = self._pubacked, []
            self._outbox.mark_sent(seqs)
            self.stats.acked += len(seqs)
            self._wake.set()  # room in the window: refill now, not at the next poll
            self._notify()

    def _housekeeping(self, s: MqttSession | None, now: float) -> None:
        """Resend what base has not confirmed in time; journal markers kept in memory; the alarm; pruning."""
        try:
            self._outbox.flush()
            if now >= self._next_prune:
                self._next_prune = now + _PRUNE_S
                self._outbox.prune()
        except StorageError as exc:
            _log.error("outbox: %s", exc)
        stuck = 0
        busy = set(self._inflight.values())
        for seq, sends, body in self._outbox.sent_rows(limit=1000):
            if sends > self._cfg.resend_alarm_after:
                stuck += 1
            sent = self._sent_at.setdefault(seq, now)  # sent by an earlier run: its clock starts now
            if s is not None and now - sent >= self._cfg.ack_timeout_s and seq not in busy and self._room() > 0:
                self._send(s, seq, body)
                self.stats.resent += 1
        self._stuck = stuck
        self._update_alarm(s)

    def _update_alarm(self, s: MqttSession | None) -> None:
        acked = self._outbox.acked_seq
        for seq in [q for q in self._rejected if q <= acked]:
            del self._rejected[seq]
        parts = []
        if self._rejected:
            first = min(self._rejected)
            parts.append(f"broker refused {len(self._rejected)} marker(s) (first seq {first}: "
                         f"{self._rejected[first]})")
        if self._stuck:
            parts.append(f"{self._stuck} marker(s) sent {self._cfg.resend_alarm_after + 1}+ times and never "
                         "confirmed by base (broker ACL denial, or base not storing)")
        if self._ack_ahead is not None:
            parts.append(f"base confirms seq {self._ack_ahead} but this camera's last marker is seq "
                         f"{self._outbox.last_seq}: its outbox was replaced or reset while base keeps the old chain "
                         "(markers are still sent; base files them as conflicts: check this device there)")
        alarm = "; ".join(parts) or None
        if alarm != self._alarm:
            if alarm is not None:
                _log.error("delivery alarm: %s", alarm)
            else:
                _log.warning("delivery alarm cleared: base confirms markers again")
            self._alarm = alarm
        if s is not None and self._alarm_published != self._alarm:
            self._publish_status(s, "online")

    # -- what base sends -------------------------------------------------------------------
    def _on_message(self, topic_: str, payload: bytes) -> None:
        try:
            if topic_ == self._t_ack:
                self._on_ack(parse_ack(payload, self._device))
            elif topic_ == self._t_resend:
                self._on_resend(payload)
            elif topic_ == self._t_record:
                self._on_record(payload)
        except CommandError as exc:
            self.stats.commands_ignored += 1
            _log.warning("ignored a message from base on %s: %s", topic_, exc)
        except StorageError as exc:
            _log.error("outbox error handling %s: %s", topic_, exc)

    def _on_ack(self, seq: int) -> None:
        before = self._outbox.acked_seq
        last = self._outbox.last_seq
        if seq > last:  # never taken: the markers it would confirm were never sent
            if self._ack_ahead != seq:
                self._ack_ahead = seq
                self._update_alarm(self._session)
            return
        if self._ack_ahead is not None:
            self._ack_ahead = None
            self._update_alarm(self._session)
        if not self._outbox.confirm(seq):
            _log.info("base acknowledges seq %d, below the %d it confirmed before: base was restored "
                      "from a backup and will ask for a resend", seq, before)
            return
        if seq > before:
            self.stats.confirmed_seq = seq
            for q in [q for q in self._sent_at if q <= seq]:
                del self._sent_at[q]
            self._update_alarm(self._session)
            self._notify()

    def _first_time(self, verb: str, cmd_id: str) -> bool:
        """False (logged, counted) when command ``cmd_id`` was seen before."""
        key = f"{verb}/{cmd_id}"
        if key in self._seen_commands:
            self.stats.commands_ignored += 1
            _log.info("cmd/%s %s seen before; ignored", verb, cmd_id)
            return False
        self._seen_commands[key] = None
        while len(self._seen_commands) > _SEEN_COMMANDS:
            self._seen_commands.popitem(last=False)
        return True

    def _on_resend(self, payload: bytes) -> None:
        cmd = parse_resend(payload)
        if not self._first_time("resend", cmd.id):
            return
        self.stats.commands += 1
        _log.warning("base asks for markers %d..%d again (cmd %s)", cmd.from_seq, cmd.to_seq, cmd.id)
        self._resend_ranges.append([cmd.from_seq, cmd.to_seq])
        self._wake.set()

    def _on_record(self, payload: bytes) -> None:
        cmd = parse_record(payload)
        if cmd.device != self._device:
            raise CommandError(f"cmd/record {cmd.id} is for device {cmd.device!r}, not {self._device!r}: refused")
        now = self._clock.wall_ns()
        if now > cmd.expires_ns:
            raise CommandError(f"cmd/record {cmd.id} ({cmd.reason}) expired {(now - cmd.expires_ns) / 1e9:.1f} s ago "
                               "by this camera's clock: ignored")
        if not self._first_time("record", cmd.id):
            return
        self.stats.commands += 1
        _log.warning("base asks this camera to record (cmd %s, %s)", cmd.id, cmd.reason)
        if self.on_record is not None:
            self.on_record(cmd)

    # -- status and telemetry --------------------------------------------------------------
    def _publish_status(self, s: MqttSession, state: str) -> int:
        payload = status_payload(self._device, "online" if state == "online" else "offline", self._clock,
                                 alarm=self._alarm)
        self._alarm_published = self._alarm
        mid = s.publish(self._t_status, payload, qos=1, retain=True)
        self._status_mid = mid
        return mid

    def _goodbye(self, s: MqttSession) -> None:
        """A clean stop: retained ``offline``, PUBACKs of what is in flight taken in, then disconnect."""
        try:
            mid = self._publish_status(s, "offline")
            s.wait_puback(mid, 2.0)
            self._flush_pubacks()
        except SessionError:
            pass

    def _telemetry_tick(self, s: MqttSession, now: float) -> None:
        if self._cfg.telemetry_interval_s <= 0 or now < self._next_telemetry:
            return
        self._next_telemetry = now + self._cfg.telemetry_interval_s
        for old in self._outbox.take_telemetry(100):
            self._send_telemetry(s, old)
        payload = self._telemetry_now()
        if payload is not None:
            self._send_telemetry(s, payload)

    def _send_telemetry(self, s: MqttSession, payload: bytes) -> None:
        s.publish(self._t_telemetry, payload, qos=0, expiry_s=self._cfg.telemetry_expiry_s)
        self.stats.telemetry_sent += 1

    def _telemetry_now(self) -> bytes | None:
        try:
            return telemetry_payload(
                self._device,
                self._clock,
                queue_depth=self._outbox.depth(),
                telemetry_dropped=self._outbox.telemetry_dropped,
                delivery={
                    "unconfirmed": self._outbox.unconfirmed(),
                    "confirmed_seq": self._outbox.acked_seq,
                    "in_memory": self._outbox.in_memory,
                    "alarm": self._alarm,
                    "journal_error": self._outbox.journal_error,
                },
                provider=self._telemetry,
            )
        except Exception:  # a broken provider must not stop markers
            _log.exception("telemetry provider failed")
            return None

    def _offline_step(self, now: float) -> None:
        """While disconnected: queue telemetry, keep journaling and pruning, keep the alarm current."""
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + _HOUSEKEEPING_S
            self._housekeeping(None, now)
        if self._cfg.telemetry_interval_s > 0 and now >= self._next_telemetry:
            self._next_telemetry = now + self._cfg.telemetry_interval_s
            payload = self._telemetry_now()
            if payload is not None:
                self._outbox.put_telemetry(payload)

    def _set_connected(self, value: bool) -> None:
        with self._state_cv:
            self._connected = value
            self._state_cv.notify_all()

    def _notify(self) -> None:
        with self._state_cv:
            self._state_cv.notify_all()
