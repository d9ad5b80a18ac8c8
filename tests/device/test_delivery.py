"""End-to-end delivery against a real Mosquitto: base's ack, resends, cmd/resend, the delivery alarm.

Base is either ``BaseStandIn`` (``tests/_base_standin.py``: the contract of docs/markers-and-mqtt.md
and nothing else, a SQLite store of its own) or ``ConsumerBase`` (base's real Consumer, as
``bodycam-base listen`` runs it); every fault test runs with both and ends with 0 markers lost:
base holds every seq 1..N with the camera's id.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _base_standin import BaseStandIn, ConsumerBase, copy_store, stored_ids
from _mqtt import Mosquitto, running_mosquitto

from bodycam.device.clock import SystemClock
from bodycam.device.uplink.commands import ack_payload, resend_payload
from bodycam.device.uplink.markers import MarkerDraft
from bodycam.device.uplink.mqtt_config import MqttConfig
from bodycam.device.uplink.mqtt_publisher import MqttPublisher
from bodycam.device.uplink.outbox import Outbox

pytestmark = pytest.mark.integration
CLOCK = SystemClock()
DEV = "cam-01"


def record(ob: Outbox, n: int) -> None:
    for _ in range(n):
        ob.record(MarkerDraft(kind="manual", t_mono_ns=CLOCK.monotonic_ns(), wall_ns=CLOCK.wall_ns()))


def cfg(url: str, **kw: Any) -> MqttConfig:
    base: dict[str, Any] = {
        "keepalive": 5,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.3,
        "ack_timeout_s": 1.0,
    }
    base.update(kw)
    return MqttConfig(url=url, **base)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    yield from running_mosquitto(tmp_path)


def stored(store: Path) -> list[int]:
    return sorted(stored_ids(store, DEV))


def publish_raw(port: int, topic: str, payload: bytes, retain: bool = False) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port, 5)
    c.loop_start()
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_puback_only_marks_sent_base_ack_confirms(tmp_path: Path, broker: Mosquitto) -> None:
    with Outbox(tmp_path / "o.db", DEV, CLOCK) as ob:
        record(ob, 20)
        with MqttPublisher(cfg(broker.url, ack_timeout_s=60), ob, CLOCK) as pub:
            assert pub.wait_drained(10)  # every marker PUBACKed: sent, still held
            assert ob.unconfirmed() == 20 and not pub.wait_confirmed(0.3)
            base = BaseStandIn(broker.port, tmp_path / "base.db").start()
            try:
                # base came late: nothing is resent before ack_timeout, so base has nothing yet
                assert base.contiguous(DEV) == 0
                record(ob, 5)
                pub.wake()
                assert base.wait_contiguous(DEV, 0, 1)
                # base sees 21..25 and asks for the gap 1..20; the camera sends them again
                assert pub.wait_confirmed(15), ob.unconfirmed()
                assert base.resend_requests and base.resend_requests[0] == (1, 20)
                assert stored(tmp_path / "base.db") == list(range(1, 26))
                assert pub.stats.confirmed_seq == 25 and pub.stats.commands >= 1
            finally:
                base.stop()
        assert ob.acked_seq == 25 and ob.unconfirmed() == 0
        assert len(ob.held(1, 25, 100)) == 25  # kept for the retention window


def test_unconfirmed_markers_are_resent_after_ack_timeout(tmp_path: Path, broker: Mosquitto) -> None:
    with Outbox(tmp_path / "o.db", DEV, CLOCK) as ob:
        record(ob, 10)
        with MqttPublisher(cfg(broker.url, ack_timeout_s=0.5), ob, CLOCK) as pub:
            assert pub.wait_drained(10)  # nobody subscribed: the broker dropped them all
            base = BaseStandIn(broker.port, tmp_path / "base.db").start()
            try:
                assert pub.wait_confirmed(15)
                assert pub.stats.resent >= 10
                assert stored(tmp_path / "base.db") == list(range(1, 11))
            finally:
                base.stop()


def test_lower_ack_is_ignored_and_bad_commands_never_crash(
    tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    got: list[int] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = lambda cl, u, m: got.append(json.loads(m.payload)["seq"])
    c.connect("127.0.0.1", broker.port, 5)
    c.subscribe(f"bodycam/{DEV}/marker", qos=1)
    c.loop_start()
    try:
        with Outbox(tmp_path / "o.db", DEV, CLOCK) as ob:
            record(ob, 8)
            with MqttPublisher(cfg(broker.url, ack_timeout_s=60), ob, CLOCK) as pub:
                assert pub.wait_drained(10)
                publish_raw(
                    broker.port, f"bodycam/{DEV}/ack", ack_payload(DEV, 6, CLOCK.wall_ns()), retain=True
                )
                deadline = time.monotonic() + 5
                while ob.acked_seq != 6 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert ob.acked_seq == 6 and ob.unconfirmed() == 2
                publish_raw(broker.port, f"bodycam/{DEV}/ack", ack_payload(DEV, 3, CLOCK.wall_ns()))
                for bad in (
                    b"\xff",
                    b"[]",
                    b'{"schema":"bodycam.cmd/1","verb":"resend","id":"x","from_seq":5}',
                    b'{"schema":"bodycam.cmd/1","verb":"resend","id":"x","from_seq":9,"to_seq":2}',
                    b"[" * 100_000,
                    b'{"schema":"bodycam.cmd/1","verb":"resend","id":"x","from_seq":NaN}',
                ):
                    publish_raw(broker.port, f"bodycam/{DEV}/cmd/resend", bad)
                publish_raw(broker.port, f"bodycam/{DEV}/ack", ack_payload("cam-02", 99, CLOCK.wall_ns()))
                cmd = resend_payload("c-1", 2, 4, CLOCK.wall_ns())
                publish_raw(broker.port, f"bodycam/{DEV}/cmd/resend", cmd)
                publish_raw(broker.port, f"bodycam/{DEV}/cmd/resend", cmd)  # same id: ignored
                deadline = time.monotonic() + 5
                while pub.stats.commands_ignored < 8 and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(0.3)
                assert (
                    pub.stats.commands == 1 and pub.stats.commands_ignored == 8
                )  # 6 malformed, 1 other device, 1 repeat
                assert ob.acked_seq == 6  # monotonic
                assert pub.connected
        assert got[:8] == list(range(1, 9)) and sorted(got[8:]) == [2, 3, 4]  # acked ones resent on request
        assert any("below the 6 it confirmed before" in r.getMessage() for r in caplog.records)
    finally:
        c.disconnect()
        c.loop_stop()


def test_an_ack_beyond_the_cameras_last_marker_is_refused_alarmed_and_every_marker_still_sent(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """A new or reset outbox (card replaced, corrupt file moved aside) while the broker still holds
    base's retained ack of the old chain: taking it would mark markers 1..N as delivered before they
    were ever sent (and prune them later)."""
    got: list[int] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = lambda cl, u, m: got.append(json.loads(m.payload)["seq"])
    c.connect("127.0.0.1", broker.port, 5)
    c.subscribe(f"bodycam/{DEV}/marker", qos=1)
    c.loop_start()
    try:
        publish_raw(broker.port, f"bodycam/{DEV}/ack", ack_payload(DEV, 500, CLOCK.wall_ns()), retain=True)
        with Outbox(tmp_path / "o.db", DEV, CLOCK) as ob:
            record(ob, 3)
            with MqttPublisher(cfg(broker.url, ack_timeout_s=60), ob, CLOCK) as pub:
                assert pub.wait_drained(10)
                deadline = time.monotonic() + 5
                while pub.delivery_alarm is None and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert pub.delivery_alarm is not None and "base confirms seq 500" in pub.delivery_alarm, pub.delivery_alarm
                assert "last marker is seq 3" in pub.delivery_alarm
                assert ob.acked_seq == 0 and ob.unconfirmed() == 3
                # base then confirms what it really got of this chain: the alarm clears
                publish_raw(broker.port, f"bodycam/{DEV}/ack", ack_payload(DEV, 3, CLOCK.wall_ns()), retain=True)
                deadline = time.monotonic() + 5
                while ob.acked_seq != 3 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert ob.acked_seq == 3 and pub.delivery_alarm is None
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert got == [1, 2, 3]
    finally:
        c.disconnect()
        c.loop_stop()


BASES = ["stand-in", "consumer"]


def make_base(kind: str, port: int, store: Path) -> BaseStandIn | ConsumerBase:
    """The minimal contract stand-in, or base's real Consumer (``bodycam-base listen``)."""
    return (BaseStandIn(port, store) if kind == "stand-in" else ConsumerBase(port, store)).start()


def lost_of(store: Path, outbox: Outbox, last: int) -> set[int]:
    """Seqs 1..last that base does not hold with the camera's id."""
    got = stored_ids(store, DEV)
    mine = {m.seq: m.id for m in outbox.held(1, last, last)}
    assert len(mine) == last
    return {q for q in range(1, last + 1) if got.get(q) != mine[q]}


@pytest.mark.parametrize("kind", BASES)
def test_broker_sigkill_while_base_offline_loses_nothing(
    tmp_path: Path, broker: Mosquitto, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Base is away, the broker queues markers for base's session and is SIGKILLed (its queue is lost).

    The restarted broker has no session of the camera either: the camera sends every unconfirmed
    marker again at once (ack_timeout_s is 60 s here, so the test would time out waiting for it)."""
    store = tmp_path / "base.db"
    base = make_base(kind, broker.port, store)
    n_total = 60
    with (
        Outbox(tmp_path / "o.db", DEV, CLOCK) as ob,
        MqttPublisher(cfg(broker.url, ack_timeout_s=60.0), ob, CLOCK) as pub,
    ):
        record(ob, 20)
        pub.wake()
        assert base.wait_contiguous(DEV, 20, 10) and pub.wait_confirmed(10)
        base.stop()  # base offline; its persistent session queues what comes next
        record(ob, n_total - 20)
        pub.wake()
        assert pub.wait_drained(10)  # PUBACKed by the broker: the old firmware deleted them here
        broker.kill()
        assert ob.unconfirmed() == n_total - 20  # still held
        broker.start()
        t0 = time.monotonic()
        base = make_base(kind, broker.port, store)
        try:
            assert pub.wait_confirmed(30), ob.unconfirmed()
            elapsed = time.monotonic() - t0
        finally:
            base.stop()
        lost = lost_of(store, ob, n_total)
    assert lost == set()
    with capsys.disabled():
        print(
            f"\n[fault, {kind}] broker SIGKILL, base offline: markers lost {len(lost)}; broker restart -> all "
            f"confirmed {elapsed:.2f} s (ack_timeout_s=60: the lost session makes the camera resend at once)"
        )


@pytest.mark.parametrize("kind", BASES)
def test_camera_resending_before_base_resubscribes_is_asked_again(
    tmp_path: Path, broker: Mosquitto, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The race behind the flaky variant of the test above, forced: the broker lost its state, the
    camera reconnected and resent its unconfirmed markers *before* base subscribed again (the
    broker dropped them: nobody subscribed), so only ``ack_timeout_s`` (60 s here, longer than the
    test waits) would send them again -- unless base, subscribed on a fresh session, asks every
    known camera for everything above its ack."""
    store = tmp_path / "base.db"
    base = make_base(kind, broker.port, store)
    n_total = 60
    with (
        Outbox(tmp_path / "o.db", DEV, CLOCK) as ob,
        MqttPublisher(cfg(broker.url, ack_timeout_s=60.0), ob, CLOCK) as pub,
    ):
        record(ob, 20)
        pub.wake()
        assert base.wait_contiguous(DEV, 20, 10) and pub.wait_confirmed(10)
        base.stop()
        record(ob, n_total - 20)
        pub.wake()
        assert pub.wait_drained(10)
        assert pub.stats.resent == 0
        broker.kill()
        broker.start()
        deadline = time.monotonic() + 20  # the camera is back and has resent 21..60 into the void
        while not (pub.stats.connects >= 2 and pub.stats.resent >= n_total - 20 and pub.wait_drained(0.1)):
            assert time.monotonic() < deadline, (pub.stats, ob.unconfirmed())
            time.sleep(0.05)
        assert ob.unconfirmed() == n_total - 20
        t0 = time.monotonic()
        base = make_base(kind, broker.port, store)
        try:
            assert pub.wait_confirmed(30), ob.unconfirmed()
            elapsed = time.monotonic() - t0
            if isinstance(base, ConsumerBase):
                assert base.consumer.counters["fresh_session_requests"] == 1
            else:
                assert base.resend_requests[0] == (21, 2**63 - 1)
        finally:
            base.stop()
        lost = lost_of(store, ob, n_total)
    assert lost == set()
    with capsys.disabled():
        print(f"\n[fault, {kind}] camera resent before base re-subscribed: lost {len(lost)}; all confirmed "
              f"{elapsed:.2f} s after base started (ack_timeout_s=60)")


@pytest.mark.parametrize("kind", BASES)
def test_base_restored_from_an_older_backup_gets_the_gap_refilled(
    tmp_path: Path, broker: Mosquitto, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store, backup = tmp_path / "base.db", tmp_path / "backup.db"
    base = make_base(kind, broker.port, store)
    with (
        Outbox(tmp_path / "o.db", DEV, CLOCK) as ob,
        MqttPublisher(cfg(broker.url, ack_timeout_s=60), ob, CLOCK) as pub,
    ):
        record(ob, 10)
        pub.wake()
        assert pub.wait_confirmed(10)
        base.stop()
        copy_store(store, backup)  # the backup holds 1..10
        base = make_base(kind, broker.port, store)
        record(ob, 30)
        pub.wake()
        assert pub.wait_confirmed(10)
        base.stop()
        copy_store(backup, store)  # base restored: 11..40 gone from its store
        assert set(stored_ids(store, DEV)) == set(range(1, 11))
        t0 = time.monotonic()
        base = make_base(kind, broker.port, store)
        try:
            record(ob, 5)  # the restored base's ack (10) is ignored; it finds 11..40 missing and asks
            pub.wake()
            assert base.wait_contiguous(DEV, 45, 20), base.contiguous(DEV)
            elapsed = time.monotonic() - t0
        finally:
            base.stop()
        assert ob.acked_seq >= 40
        lost = lost_of(store, ob, 45)
        assert pub.stats.commands >= 1  # the gap came back through cmd/resend
    assert lost == set()
    with capsys.disabled():
        print(
            f"\n[fault, {kind}] base restored from backup: markers lost {len(lost)}; gap 11..40 refilled in "
            f"{elapsed:.2f} s"
        )


ACL_DENY_MARKERS = [
    "pattern write bodycam/%c/status",
    "pattern write bodycam/%c/telemetry",
    "pattern read bodycam/%c/ack",
    "pattern read bodycam/%c/cmd/#",
    "topic read bodycam/+/marker",
    "topic read $share/+/bodycam/+/marker",
    "topic read bodycam/+/status",
    "topic readwrite bodycam/+/ack",
    "topic write bodycam/+/cmd/#",
]


@pytest.mark.parametrize("kind", BASES)
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_acl_denial_is_detected_alarmed_and_nothing_is_lost(
    tmp_path: Path, protocol: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    acl = tmp_path / "acl"
    acl.write_text("\n".join(ACL_DENY_MARKERS) + "\n")
    broker = Mosquitto(tmp_path / "mosq", extra=[f"acl_file {acl}"])
    broker.start()
    store = tmp_path / "base.db"
    status: list[dict[str, Any]] = []
    watch = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watch.on_message = lambda cl, u, m: status.append(json.loads(m.payload))
    try:
        base = make_base(kind, broker.port, store)
        watch.connect("127.0.0.1", broker.port, 5)
        watch.subscribe(f"bodycam/{DEV}/status", qos=1)
        watch.loop_start()
        with Outbox(tmp_path / "o.db", DEV, CLOCK) as ob:
            record(ob, 5)
            c = cfg(broker.url, protocol=protocol, ack_timeout_s=0.5, resend_alarm_after=2)
            with MqttPublisher(c, ob, CLOCK) as pub:
                assert pub.wait_drained(10)  # 3.1.1: "delivered" as far as PUBACK goes
                deadline = time.monotonic() + 15
                while pub.delivery_alarm is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                alarm = pub.delivery_alarm
                assert alarm is not None
                if protocol == "5":
                    assert "refused" in alarm and "135" in alarm and pub.stats.rejected >= 5
                else:
                    assert "never confirmed" in alarm and pub.stats.rejected == 0
                assert stored_ids(store, DEV) == {} and ob.unconfirmed() == 5  # nothing lost, nothing stored
                deadline = time.monotonic() + 5
                while not any(s.get("alarm") for s in status) and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert any(s.get("alarm") for s in status)  # in the retained status
                # the ACL is fixed: the resends get through, base confirms, the alarm clears
                acl.write_text("\n".join([*ACL_DENY_MARKERS, "pattern write bodycam/%c/marker"]) + "\n")
                t0 = time.monotonic()
                broker.reload()
                assert pub.wait_confirmed(20)
                elapsed = time.monotonic() - t0
                deadline = time.monotonic() + 5
                while pub.delivery_alarm is not None and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert pub.delivery_alarm is None
            lost = lost_of(store, ob, 5)
        assert lost == set()
        base.stop()
    finally:
        watch.loop_stop()
        broker.stop()
    with capsys.disabled():
        print(
            f"\n[fault, {kind}] MQTT {protocol} ACL denial: alarm raised, markers lost {len(lost)}; ACL fixed -> "
            f"all confirmed {elapsed:.2f} s"
        )
