"""Marker pipeline benchmarks (plain script; prints medians). Needs /usr/sbin/mosquitto.

    python bench/bench_mqtt.py [--devices 200] [--per-device 25] [--outage 10000] [--repeat 3]

1. Outbox.record() latency (fsync=full and normal).
2. Outbox drain rate after an outage: N markers queued, then the publisher connects to Mosquitto.
3. Base ingest throughput: D devices (one MQTT 5 client each) publish together; time until the
   consumer (shared subscription, SQLite, batched commits + manual acks) has stored them all.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bodycam.base.consumer import Consumer, ConsumerOptions
from bodycam.base.store import SqliteStore
from bodycam.device.clock import SystemClock
from bodycam.device.uplink.markers import GENESIS_PREV, Marker, MarkerDraft, build_marker, uuid7
from bodycam.device.uplink.mqtt_config import MqttConfig
from bodycam.device.uplink.mqtt_publisher import MqttPublisher
from bodycam.device.uplink.outbox import Outbox

CLOCK = SystemClock()


def _draft() -> MarkerDraft:
    return MarkerDraft(kind="manual", t_mono_ns=CLOCK.monotonic_ns(), wall_ns=CLOCK.wall_ns())


class Broker:
    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n"
            "max_inflight_messages 500\nuser root\nlog_dest none\n"
        )
        self.proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)])
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def bench_record(tmp: Path, n: int) -> None:
    for fsync in ("full", "normal"):
        with Outbox(tmp / f"rec-{fsync}.db", "cam-01", CLOCK, fsync=fsync) as ob:
            lat = []
            for _ in range(n):
                t0 = time.perf_counter()
                ob.record(_draft())
                lat.append(time.perf_counter() - t0)
        lat.sort()
        print(
            f"record() fsync={fsync:6s}: median {statistics.median(lat) * 1e3:.3f} ms, "
            f"p99 {lat[int(len(lat) * 0.99)] * 1e3:.3f} ms  (n={n})"
        )


def bench_drain(tmp: Path, broker: Broker, n: int, repeat: int) -> None:
    for inflight in (20, 100):
        rates = []
        for r in range(repeat):
            path = tmp / f"drain-{inflight}-{r}.db"
            with Outbox(path, f"cam-d{r}", CLOCK, fsync="normal") as ob:
                for _ in range(n):
                    ob.record(_draft())
            with Outbox(path, f"cam-d{r}", CLOCK) as ob:  # fsync=full, as on the camera
                cfg = MqttConfig(url=broker.url, max_inflight=inflight, telemetry_interval_s=0)
                t0 = time.perf_counter()
                with MqttPublisher(cfg, ob, CLOCK) as pub:
                    assert pub.wait_drained(300), "not drained"
                    rates.append(n / (time.perf_counter() - t0))
        print(
            f"outbox drain after an outage of {n} markers, max_inflight={inflight}: "
            f"median {statistics.median(rates):.0f} markers/s (runs: {', '.join(f'{x:.0f}' for x in rates)})"
        )


def bench_ingest(tmp: Path, broker: Broker, devices: int, per_device: int, repeat: int) -> None:
    rates = []
    for r in range(repeat):
        wall = CLOCK.wall_ns()
        payloads: list[tuple[str, list[bytes]]] = []
        for d in range(devices):
            dev, prev, msgs = f"bench{r}-{d:03d}", GENESIS_PREV, []
            for s in range(1, per_device + 1):
                m: Marker = build_marker(
                    MarkerDraft(kind="manual", t_mono_ns=s, wall_ns=wall),
                    marker_id=uuid7(wall),
                    device=dev,
                    seq=s,
                    prev=prev,
                )
                prev = m.digest()
                msgs.append(m.to_json())
            payloads.append((dev, msgs))
        with SqliteStore(tmp / f"base-{r}.db") as store:
            # a group per run: an offline persistent member of a shared group keeps receiving its share
            opts = ConsumerOptions(url=broker.url, client_id=f"bench-base-{r}", group=f"bench{r}")
            consumer = Consumer(opts, store)
            stop = threading.Event()
            runner = threading.Thread(target=consumer.run, args=(stop,))
            runner.start()
            consumer.subscribed.wait(10)
            clients = []
            for dev, _ in payloads:
                c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=dev, protocol=mqtt.MQTTv5)
                c.max_inflight_messages_set(20)
                c.connect("127.0.0.1", broker.port)
                c.loop_start()
                clients.append(c)
            total = devices * per_device
            t0 = time.perf_counter()
            for s in range(per_device):  # all devices publish together, interleaved
                for (dev, msgs), c in zip(payloads, clients, strict=True):
                    c.publish(f"bodycam/{dev}/marker", msgs[s], qos=1)
            while consumer.counters["stored"] < total and time.perf_counter() - t0 < 120:
                time.sleep(0.01)
            dt = time.perf_counter() - t0
            rates.append(consumer.counters["stored"] / dt)
            for c in clients:
                c.disconnect()
                c.loop_stop()
            stop.set()
            runner.join()
            assert store.count() == total, (store.count(), total)
            assert sum(d.chain_broken + d.missing for d in store.devices()) == 0
    print(
        f"base ingest, {devices} devices x {per_device} markers together: "
        f"median {statistics.median(rates):.0f} markers/s (runs: {', '.join(f'{x:.0f}' for x in rates)})"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--per-device", type=int, default=25)
    p.add_argument("--outage", type=int, default=10_000)
    p.add_argument("--records", type=int, default=500)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench_record(tmp, a.records)
        broker = Broker(tmp)
        try:
            bench_drain(tmp, broker, a.outage, a.repeat)
            bench_ingest(tmp, broker, a.devices, a.per_device, a.repeat)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
