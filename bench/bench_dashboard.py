"""Marker arriving at base -> alert banner in the browser (DESIGN section 8: p99 <= 1 s).

Real Mosquitto, `bodycam-base listen` and `bodycam-base serve` (SQLite, or PostgreSQL with --db URL)
as processes, Debian's chromium through playwright with N open pages. A device publishes gunshot
markers from the firmware's own outbox and publisher, one every --interval-s; for every banner in
every page the latency is the banner's insertion time in the page (``performance.timeOrigin +
performance.now()``) minus the marker's ``received_ns`` at base (same machine clock).

    python bench/bench_dashboard.py [--markers 60] [--pages 3] [--interval-s 0.5] [--db postgresql://...]
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_mqtt import Broker

from bodycam.base.cli import main as base_main
from bodycam.device.clock import SystemClock
from bodycam.device.uplink.markers import MarkerDraft, ModelRef
from bodycam.device.uplink.mqtt_config import MqttConfig
from bodycam.device.uplink.mqtt_publisher import MqttPublisher
from bodycam.device.uplink.outbox import Outbox

PW = "bench password 1"


def _wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--markers", type=int, default=60)
    ap.add_argument("--pages", type=int, default=3)
    ap.add_argument("--interval-s", type=float, default=0.5)
    ap.add_argument("--db", help="postgresql:// URL (default: a SQLite file in a temporary directory)")
    args = ap.parse_args()
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        db = args.db or str(tmp / "base.db")
        sys.stdin = io.StringIO(PW + "\n")
        assert base_main(["user", "add", "bench", "--role", "operator", "--db", db]) == 0
        broker = Broker(tmp)
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        procs = [
            subprocess.Popen([sys.executable, "-m", "bodycam.base.cli", "listen", "--broker", broker.url, "--db", db],
                             stdout=subprocess.DEVNULL),
            subprocess.Popen([sys.executable, "-m", "bodycam.base.cli", "serve", "--db", db, "--listen",
                              f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL),
        ]
        try:
            _wait_port(port)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                ctx = browser.new_context()
                pages = []
                for _ in range(args.pages):
                    page = ctx.new_page()
                    page.goto(f"http://127.0.0.1:{port}/login")
                    if "/login" in page.url:
                        page.fill("input[name=name]", "bench")
                        page.fill("input[name=password]", PW)
                        page.click("button[type=submit]")
                    expect(page.locator("body")).to_have_attribute("data-live", "yes")
                    pages.append(page)
                clock = SystemClock()
                cfg = MqttConfig(url=broker.url, reconnect_min_s=0.05, reconnect_max_s=0.5)
                with Outbox(tmp / "cam.db", "cam-bench", clock) as ob, MqttPublisher(cfg, ob, clock) as pub:
                    for _ in range(args.markers):
                        ob.record(MarkerDraft(kind="gunshot", t_mono_ns=clock.monotonic_ns(), wall_ns=clock.wall_ns(),
                                              confidence=0.99, model=ModelRef("shotnet", "1", "0" * 64)))
                        pub.wake()
                        time.sleep(args.interval_s)
                    pub.wait_drained(30)
                    lat: list[float] = []
                    for page in pages:
                        expect(page.locator(".alert")).to_have_count(args.markers, timeout=60_000)
                        lat += page.evaluate(
                            "Array.from(document.querySelectorAll('.alert')).map("
                            "b => Number(b.dataset.shownMs) - Number(b.dataset.receivedNs) / 1e6)"
                        )
                browser.close()
        finally:
            for pr in procs:
                pr.terminate()
                pr.wait(15)
            broker.stop()
    print(f"marker at base -> banner, {args.markers} markers x {args.pages} pages ({'postgresql' if args.db else 'sqlite'},"
          f" poll 200 ms): p50 {statistics.median(lat):.0f} ms, p99 {_pct(lat, 99):.0f} ms, max {max(lat):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
