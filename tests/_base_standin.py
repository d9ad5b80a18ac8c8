"""A minimal base for the camera's end-to-end delivery tests (until the real consumer is on main).

It follows the contract of docs/markers-and-mqtt.md exactly: a persistent MQTT 5 session on
``<prefix>/+/marker``; every marker is stored in its own SQLite file (committed before anything
is acknowledged); after each one it publishes ``<prefix>/<device>/ack`` (QoS 1, retained) with the
highest *contiguous* seq stored; when it sees a gap it publishes ``cmd/resend`` for it (QoS 1,
message expiry 300 s), again after ``rerequest_s`` while the gap stays open; subscribed on a fresh
broker session, it asks every device it knows for everything above its ack (``cmd/resend`` N+1 ..
2^63-1: what the broker held for it may be gone, and a camera may have resent before it subscribed). Its store file can be
copied away and back to play "base restored from an older backup".
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bodycam.device.uplink.commands import ack_payload, resend_payload


class BaseStandIn:
    def __init__(
        self,
        port: int,
        store: Path,
        *,
        client_id: str = "base-standin",
        prefix: str = "bodycam",
        rerequest_s: float = 2.0,
    ) -> None:
        self.port, self.prefix, self.client_id = port, prefix, client_id
        self.store = store
        self.rerequest_s = rerequest_s
        self.db = sqlite3.connect(str(store), check_same_thread=False, isolation_level=None)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS m (device TEXT, seq INTEGER, id TEXT, PRIMARY KEY(device, seq))"
        )
        self.cv = threading.Condition()
        self.received = 0
        self.resend_requests: list[tuple[int, int]] = []
        self._requested: dict[tuple[str, int], float] = {}
        self._contig: dict[str, int] = {}
        for (dev,) in self.db.execute("SELECT DISTINCT device FROM m").fetchall():
            self._contig[dev] = self._contiguous(dev)
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.subscribed = threading.Event()
        self.session_present = True
        self.c.on_subscribe = lambda *a: self.subscribed.set()

    def start(self, timeout: float = 10.0) -> BaseStandIn:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.c.connect("127.0.0.1", self.port, 5, clean_start=False, properties=props)
        self.c.loop_start()
        assert self.subscribed.wait(timeout), "base stand-in did not subscribe"
        for dev, n in list(self._contig.items()):  # what this (maybe restored) store holds
            self._ack(dev, n)
            if not self.session_present and n > 0:
                self._request(dev, n + 1, 2**63 - 1)
        return self

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
        self.db.close()

    def _on_connect(self, c: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        self.session_present = bool(f.session_present)
        c.subscribe(f"{self.prefix}/+/marker", qos=1)

    def _contiguous(self, device: str) -> int:
        n = self._contig.get(device, 0)
        while self.db.execute("SELECT 1 FROM m WHERE device=? AND seq=?", (device, n + 1)).fetchone():
            n += 1
        return n

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        m = json.loads(msg.payload)
        dev, seq = m["device"], int(m["seq"])
        self.db.execute("INSERT OR IGNORE INTO m(device, seq, id) VALUES (?, ?, ?)", (dev, seq, m["id"]))
        n = self._contiguous(dev)
        with self.cv:
            self.received += 1
            if n != self._contig.get(dev):
                self._contig[dev] = n
                self._ack(dev, n)
            top = self.db.execute("SELECT MAX(seq) FROM m WHERE device=?", (dev,)).fetchone()[0]
            if top > n:  # a gap n+1 .. (first stored after it) - 1
                nxt = self.db.execute("SELECT MIN(seq) FROM m WHERE device=? AND seq>?", (dev, n)).fetchone()[
                    0
                ]
                last = self._requested.get((dev, n + 1), 0.0)
                if time.monotonic() - last >= self.rerequest_s:
                    self._requested[(dev, n + 1)] = time.monotonic()
                    self._request(dev, n + 1, nxt - 1)
            self.cv.notify_all()

    def _request(self, device: str, first: int, last: int) -> None:
        self.resend_requests.append((first, last))
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.MessageExpiryInterval = 300
        self.c.publish(
            f"{self.prefix}/{device}/cmd/resend",
            resend_payload(str(uuid.uuid4()), first, last, time.time_ns()),
            qos=1,
            properties=props,
        )

    def _ack(self, device: str, seq: int) -> None:
        self.c.publish(
            f"{self.prefix}/{device}/ack", ack_payload(device, seq, time.time_ns()), qos=1, retain=True
        )

    def contiguous(self, device: str) -> int:
        with self.cv:
            return self._contig.get(device, 0)

    def wait_contiguous(self, device: str, n: int, timeout: float) -> bool:
        with self.cv:
            return self.cv.wait_for(lambda: self._contig.get(device, 0) >= n, timeout)


class ConsumerBase:
    """base's real :class:`~bodycam.base.consumer.Consumer` over a SQLite store, on its own thread (as
    ``bodycam-base listen`` runs it), with the same test-facing methods as :class:`BaseStandIn`."""

    def __init__(self, port: int, store: Path, *, client_id: str = "base-1") -> None:
        from bodycam.base.consumer import Consumer, ConsumerOptions
        from bodycam.base.store import SqliteStore

        self.port, self.store = port, store
        self.resend_requests: list[tuple[int, int]] = []  # seen by the camera only; not recorded here
        self._db = SqliteStore(store)
        self.consumer = Consumer(
            ConsumerOptions(url=f"mqtt://127.0.0.1:{port}", client_id=client_id),
            self._db,
            notify=lambda line: None,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.consumer.run, args=(self._stop,), daemon=True)

    def start(self, timeout: float = 10.0) -> ConsumerBase:
        self._thread.start()
        assert self.consumer.subscribed.wait(timeout), "base consumer did not subscribe"
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "base consumer did not stop"
        self._db.close()

    def contiguous(self, device: str) -> int:
        rows = self._db.progress([device])
        return rows[0].contiguous if rows else 0

    def wait_contiguous(self, device: str, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.contiguous(device) < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


def stored_ids(store: Path, device: str) -> dict[int, str]:
    """seq -> id of what a base store holds (either kind of base)."""
    with sqlite3.connect(str(store)) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "m" in tables:  # the stand-in
            rows = db.execute("SELECT seq, id FROM m WHERE device=?", (device,)).fetchall()
        else:  # base's store
            rows = db.execute("SELECT seq, id FROM markers WHERE device=?", (device,)).fetchall()
    return {int(s): str(i) for s, i in rows}


def copy_store(src: Path, dst: Path) -> None:
    """Copy a (stopped) base's SQLite store with its WAL: a backup, or a restore from one."""
    for suffix in ("", "-wal", "-shm"):
        d = dst.with_name(dst.name + suffix)
        d.unlink(missing_ok=True)
        s = src.with_name(src.name + suffix)
        if s.exists():
            shutil.copy(s, d)
