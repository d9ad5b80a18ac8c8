"""The camera's fault tests against the real base consumer (``bodycam-base listen``'s Consumer, SQLite).

Same faults as ``test_delivery.py`` (which uses a minimal stand-in that follows the contract), now
with base's own ack and cmd/resend: broker SIGKILL while base is offline, and base's database
restored from an older backup. Markers lost must be 0.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _mqtt import Mosquitto, running_mosquitto

from bodycam.base.consumer import Consumer, ConsumerOptions
from bodycam.base.store import SqliteStore
from bodycam.device.clock import SystemClock
from bodycam.device.uplink.markers import MarkerDraft
from bodycam.device.uplink.mqtt_config import MqttConfig
from bodycam.device.uplink.mqtt_publisher import MqttPublisher
from bodycam.device.uplink.outbox import Outbox

pytestmark = pytest.mark.integration
CLOCK = SystemClock()
DEV = "cam-01"


class RealBase:
    """base's Consumer on its own thread over a SQLite store, as ``bodycam-base listen`` runs it."""

    def __init__(self, broker: Mosquitto, db: Path) -> None:
        self.db = db
        self.store = SqliteStore(db)
        self.consumer = Consumer(
            ConsumerOptions(url=broker.url, client_id="base-1"), self.store, notify=lambda line: None
        )
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self.consumer.run, args=(self.stop_ev,), daemon=True)
        self.thread.start()
        assert self.consumer.subscribed.wait(10)

    def close(self) -> None:
        self.stop_ev.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.store.close()


def stored_seqs(db: Path) -> set[int]:
    with SqliteStore(db) as s:
        return {sm.marker.seq for sm in s.markers(device=DEV, limit=100_000)}


def record(ob: Outbox, n: int) -> None:
    for _ in range(n):
        ob.record(MarkerDraft(kind="manual", t_mono_ns=CLOCK.monotonic_ns(), wall_ns=CLOCK.wall_ns()))


def cfg(url: str, **kw: Any) -> MqttConfig:
    return MqttConfig(url=url, keepalive=5, reconnect_min_s=0.05, reconnect_max_s=0.3, **kw)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    yield from running_mosquitto(tmp_path)


def test_broker_sigkill_while_base_offline_real_base(
    tmp_path: Path, broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "base.db"
    base = RealBase(broker, db)
    with (
        Outbox(tmp_path / "o.db", DEV, CLOCK) as ob,
        MqttPublisher(cfg(broker.url, ack_timeout_s=60.0), ob, CLOCK) as pub,
    ):
        record(ob, 20)
        pub.wake()
        assert pub.wait_confirmed(15)
        base.close()  # base offline: its persistent session queues what follows
        record(ob, 40)
        pub.wake()
        assert pub.wait_drained(10)
        broker.kill()  # the queue for base is gone
        assert ob.unconfirmed() == 40
        broker.start()
        t0 = time.monotonic()
        base = RealBase(broker, db)
        try:
            assert pub.wait_confirmed(30), ob.unconfirmed()
            elapsed = time.monotonic() - t0
        finally:
            base.close()
    lost = set(range(1, 61)) - stored_seqs(db)
    assert lost == set()
    with capsys.disabled():
        print(
            f"\n[fault, real base] broker SIGKILL, base offline: markers lost {len(lost)}; broker restart -> "
            f"all confirmed {elapsed:.2f} s (ack_timeout_s=60: the lost session makes the camera resend at once)"
        )


def test_base_restored_from_an_older_backup_real_base(
    tmp_path: Path, broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "base.db"
    base = RealBase(broker, db)
    with (
        Outbox(tmp_path / "o.db", DEV, CLOCK) as ob,
        MqttPublisher(cfg(broker.url, ack_timeout_s=60), ob, CLOCK) as pub,
    ):
        record(ob, 10)
        pub.wake()
        assert pub.wait_confirmed(15)
        base.close()
        for suffix in ("", "-wal", "-shm"):
            src = db.with_name(db.name + suffix)
            if src.exists():
                shutil.copy(src, tmp_path / ("backup.db" + suffix))
        base = RealBase(broker, db)
        record(ob, 30)
        pub.wake()
        assert pub.wait_confirmed(15)
        base.close()
        for suffix in ("", "-wal", "-shm"):  # the restore: 11..40 gone from base's database
            db.with_name(db.name + suffix).unlink(missing_ok=True)
            src = tmp_path / ("backup.db" + suffix)
            if src.exists():
                shutil.copy(src, db.with_name(db.name + suffix))
        assert stored_seqs(db) == set(range(1, 11))
        t0 = time.monotonic()
        base = RealBase(broker, db)  # sees the retained ack 40 above its 10: asks for 11..40
        try:
            deadline = time.monotonic() + 30
            while stored_seqs(db) != set(range(1, 41)) and time.monotonic() < deadline:
                time.sleep(0.1)
            elapsed = time.monotonic() - t0
        finally:
            base.close()
        assert ob.acked_seq == 40
    lost = set(range(1, 41)) - stored_seqs(db)
    assert lost == set()
    with capsys.disabled():
        print(
            f"\n[fault, real base] base restored from an older backup: markers lost {len(lost)}; gap 11..40 "
            f"refilled {elapsed:.2f} s after base restarted"
        )
