"""Test helpers: a real Mosquitto on a free loopback port, and a publisher process for kill -9 tests.

Use from a conftest (tests/ is not a package)::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _mqtt import mosquitto  # noqa: F401  (the fixture)

or in a test module, ``yield from running_mosquitto(tmp_path)`` inside a fixture of its own.

``mosquitto`` yields a :class:`Mosquitto` (``.url``, ``.port``, ``.stop()``, ``.start()``,
``.kill()``). Persistence is on (a SIGTERM'd broker keeps sessions and queued messages), like a
production broker at base should be.

Run as a script, this module is the "device process" of the fault tests::

    python tests/_mqtt.py device --url URL --outbox PATH --device ID --count N [--interval-s S]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, *, open_: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if open_:
                    return
        except OSError:
            if not open_:
                return
        time.sleep(0.02)
    raise TimeoutError(f"port {port} did not {'open' if open_ else 'close'} within {timeout} s")


class Mosquitto:
    """A Mosquitto broker process on 127.0.0.1:<port> with its own config and persistence dir."""

    def __init__(self, workdir: Path, port: int | None = None, extra: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        self.conf.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {self.dir}/",
                    "max_queued_messages 200000",
                    "max_inflight_messages 100",
                    "user root",
                    f"log_dest file {self.log}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    *(extra or []),
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.proc is not None:
            raise RuntimeError("mosquitto already running")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"mosquitto did not start; log:\n{log}") from None

    def stop(self) -> None:
        """SIGTERM: clean shutdown, persistence written."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes."""
        self._end(signal.SIGKILL)

    def reload(self) -> None:
        """SIGHUP: Mosquitto reloads its configuration (and its acl_file)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

    def _end(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def running_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """Generator behind the fixture (``yield from running_mosquitto(tmp_path)`` in a module's own fixture)."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh Mosquitto 2 (MQTT 5 + 3.1.1) on a free loopback port."""
    yield from running_mosquitto(tmp_path)


def device_main(argv: list[str]) -> int:
    """Record ``count`` markers into an outbox (one every ``interval_s``) while publishing them."""
    from bodycam.device.clock import SystemClock
    from bodycam.device.uplink.markers import MarkerDraft
    from bodycam.device.uplink.mqtt_config import MqttConfig
    from bodycam.device.uplink.mqtt_publisher import MqttPublisher
    from bodycam.device.uplink.outbox import Outbox

    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--outbox", required=True, type=Path)
    p.add_argument("--device", required=True)
    p.add_argument("--count", type=int, default=0, help="total markers this outbox should ever hold")
    p.add_argument("--interval-s", type=float, default=0.005)
    p.add_argument("--keepalive", type=int, default=5)
    args = p.parse_args(argv)
    clock = SystemClock()
    cfg = MqttConfig(url=args.url, keepalive=args.keepalive, reconnect_min_s=0.05, reconnect_max_s=0.5)
    with Outbox(args.outbox, args.device, clock) as ob, MqttPublisher(cfg, ob, clock) as pub:
        while ob.last_seq < args.count:
            m = ob.record(MarkerDraft(kind="manual", t_mono_ns=clock.monotonic_ns(), wall_ns=clock.wall_ns()))
            pub.wake()
            print(f"recorded {m.seq}", flush=True)
            time.sleep(args.interval_s)
        print("all recorded", flush=True)
        ok = pub.wait_drained(60)
        print("drained" if ok else "NOT drained", flush=True)
        if os.environ.get("BODYCAM_TEST_HANG"):
            while True:  # stay connected until killed (Last Will test)
                time.sleep(0.1)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "device":
        sys.exit(device_main(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} device ...")
