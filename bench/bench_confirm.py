"""Time from a broker restart to every marker confirmed by base (plain script). Needs /usr/sbin/mosquitto.

    python bench/bench_confirm.py [--queued 500] [--repeat 5] [--ack-timeout 120] [--kill | --term]

Each trial: base (the real Consumer over SQLite) stores a first batch; base goes offline; the camera
records ``--queued`` markers, the broker PUBACKs them (queued for base's session); the broker is
killed (SIGKILL: its queue is lost) or stopped cleanly (SIGTERM: persistence keeps it); the broker and
base restart; the clock runs from the broker's restart until the camera's outbox has nothing
unconfirmed. Prints the median and the worst time and the markers lost (must be 0).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bodycam.base.consumer import Consumer, ConsumerOptions
from bodycam.base.store import SqliteStore
from bodycam.device.clock import SystemClock
from bodycam.device.uplink.markers import MarkerDraft
from bodycam.device.uplink.mqtt_config import MqttConfig
from bodycam.device.uplink.mqtt_publisher import MqttPublisher
from bodycam.device.uplink.outbox import Outbox

CLOCK = SystemClock()
DEV = "cam-bench"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    def __init__(self, workdir: Path) -> None:
        self.port = _port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nmax_queued_messages 200000\nuser root\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def end(self, sig: int) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
            self.proc = None


class Base:
    def __init__(self, port: int, db: Path) -> None:
        self.store = SqliteStore(db)
        self.consumer = Consumer(ConsumerOptions(url=f"mqtt://127.0.0.1:{port}", client_id="bench-base"),
                                 self.store, notify=lambda line: None)
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self.consumer.run, args=(self.stop_ev,), daemon=True)
        self.thread.start()
        if not self.consumer.subscribed.wait(10):
            raise RuntimeError("base did not subscribe")

    def close(self) -> None:
        self.stop_ev.set()
        self.thread.join(10)
        self.store.close()


def trial(tmp: Path, queued: int, ack_timeout: float, sig: int) -> tuple[float, int]:
    broker = Broker(tmp)
    broker.start()
    db = tmp / "base.db"
    base = Base(broker.port, db)
    cfg = MqttConfig(url=f"mqtt://127.0.0.1:{broker.port}", reconnect_min_s=0.05, reconnect_max_s=0.5,
                     ack_timeout_s=ack_timeout, telemetry_interval_s=0)
    try:
        with Outbox(tmp / "o.db", DEV, CLOCK, fsync="normal") as ob, MqttPublisher(cfg, ob, CLOCK) as pub:
            for _ in range(20):
                ob.record(MarkerDraft(kind="manual", t_mono_ns=CLOCK.monotonic_ns(), wall_ns=CLOCK.wall_ns()))
            pub.wake()
            if not pub.wait_confirmed(30):
                raise RuntimeError("first batch not confirmed")
            base.close()
            for _ in range(queued):
                ob.record(MarkerDraft(kind="manual", t_mono_ns=CLOCK.monotonic_ns(), wall_ns=CLOCK.wall_ns()))
            pub.wake()
            if not pub.wait_drained(60):
                raise RuntimeError("not PUBACKed")
            broker.end(sig)
            broker.start()
            t0 = time.monotonic()
            base = Base(broker.port, db)
            ok = pub.wait_confirmed(ack_timeout * 3 + 60)
            elapsed = time.monotonic() - t0
            total = ob.last_seq
        with SqliteStore(db) as s:
            have = {sm.marker.seq for sm in s.markers(device=DEV, limit=total + 10)}
        lost = len(set(range(1, total + 1)) - have)
        return (elapsed if ok else float("inf")), lost
    finally:
        base.close()
        broker.end(signal.SIGTERM)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queued", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ack-timeout", type=float, default=120.0)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--kill", action="store_true", default=True, help="SIGKILL the broker (default)")
    g.add_argument("--term", action="store_true", help="stop the broker cleanly (persistence written)")
    args = ap.parse_args()
    sig = signal.SIGTERM if args.term else signal.SIGKILL
    times, lost = [], 0
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as d:
            t, n = trial(Path(d), args.queued, args.ack_timeout, sig)
            times.append(t)
            lost += n
    print(f"broker {'SIGTERM' if args.term else 'SIGKILL'} with {args.queued} markers queued for an offline base, "
          f"ack_timeout_s={args.ack_timeout:g}: restart -> all confirmed median {statistics.median(times):.2f} s, "
          f"worst {max(times):.2f} s over {args.repeat} trials; markers lost {lost}")


if __name__ == "__main__":
    main()
