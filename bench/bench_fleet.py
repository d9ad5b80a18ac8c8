"""A fleet on loopback Mosquitto into PostgreSQL: ingest markers/s with 1 and 2 consumers, shot-to-banner
latency with a ``serve`` instance, base memory (issue 14 item 4; targets: >= 5,000 markers/s with one
consumer, near-linear with two, banner p99 <= 1 s).

* Mosquitto on a free loopback port (no persistence), PostgreSQL from ``tests/base/_pg.py``
  (durable: fsync and synchronous_commit on, as in production; ``--pg-fast`` turns them off);
* ``--cameras`` connected cameras (default 2,000) in **this one asyncio process**, each its own MQTT 5
  connection (a minimal MQTT 5 writer below: CONNECT, SUBSCRIBE to its ``ack`` and ``cmd/resend``,
  QoS 1 PUBLISH with a window of ``--window`` in flight, PUBACK both ways), a retained ``online``
  status, telemetry every ``--telemetry-s`` (10 s, staggered) from ``device.uplink.telemetry``;
* every camera has its own Ed25519 key, registered at base (``KeyRegistry``, as ``bodycam-base keys
  add``); markers are the firmware's: ``build_marker`` with the camera's ``Signer`` (canonical bytes,
  signature), a hash chain per camera; made before the timed part (signing is the camera's cost);
* **ingest**: for C in ``--consumers`` (1, 2): C ``bodycam-base listen`` processes in one shared group,
  then every camera publishes a burst of ``--burst`` markers at once (one gunshot in ``--gunshot-every``,
  the rest holster/recording/manual markers); the rate is the markers stored (counted in PostgreSQL)
  over the time from the first publish to the last stored; then every camera's ``ack`` is checked;
* **banner**: one ``listen`` + one ``serve`` with the fleet connected and a background marker stream
  (``--background`` markers/s), ``--shots`` gunshot markers from random cameras, one every
  ``--shot-interval-s``; latency = the ``alert`` event arriving on a logged-in ``/events`` stream (what
  the page's banner is drawn from) minus the camera's publish time, and minus base's ``received_ns``;
* **memory**: peak RSS (VmHWM) of every ``listen`` and ``serve`` process.

Run it alone and niced (the machine is shared)::

    nice -n 15 python bench/bench_fleet.py [--cameras 2000] [--burst 15] [--consumers 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "base"))

from _pg import PgServer, find_bindir

from bodycam.base.keys import KeyRegistry
from bodycam.base.store_pg import PostgresStore
from bodycam.device.clock import SystemClock
from bodycam.device.identity import Signer
from bodycam.device.uplink.markers import (
    GENESIS_PREV,
    Location,
    MarkerDraft,
    Media,
    ModelRef,
    build_marker,
    uuid7,
)
from bodycam.device.uplink.telemetry import status_payload, telemetry_payload

CLOCK = SystemClock()
PW = "bench password 1"
MODEL = ModelRef("shotnet", "1.0.0", "ab" * 32)
OTHER_KINDS = ("holster_draw", "recording_start", "manual", "holster_return", "recording_stop")


# -- a minimal MQTT 5 client (one TCP connection per camera) -------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


@dataclass
class Camera:
    device: str
    signer: Signer
    seq: int = 0
    prev: str = GENESIS_PREV
    acked: int = 0
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    window: asyncio.Semaphore | None = None
    pid: int = 0
    sent_at: dict[int, float] = field(default_factory=dict)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    resend_cmds: int = 0
    task: asyncio.Task[None] | None = None
    home: tuple[float, float] = (52.52, 13.40)  # where the camera is (its markers and telemetry, +- 20 m)

    def where(self) -> Location:
        lat, lon = self.home
        return Location(lat + random.uniform(-1, 1) * 20 / 111_195, lon + random.uniform(-1, 1) * 33 / 111_195,
                        34.5, 0.9, "3d", 0.4)

    def next_marker(self, kind: str) -> bytes:
        self.seq += 1
        wall = CLOCK.wall_ns()
        gun = kind == "gunshot"
        draft = MarkerDraft(
            kind=kind, t_mono_ns=CLOCK.monotonic_ns(), wall_ns=wall,
            confidence=0.97 if gun else None, model=MODEL if gun else None,
            media=Media("20261129T150000000Z", 0, 12.5, 375),
            location=self.where(),
            extra={"evidence": {"audio": 0.97}} if gun else None,
        )
        m = build_marker(draft, marker_id=uuid7(wall), device=self.device, seq=self.seq, prev=self.prev,
                         signer=self.signer)
        self.prev = m.digest()
        return m.to_json()

    async def connect(self, port: int, keepalive: int = 60) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.window = asyncio.Semaphore(ARGS.window)
        props = b"\x11" + struct.pack("!I", 3600)  # session expiry, as the firmware's persistent session
        vh = _str("MQTT") + bytes([5, 0x00]) + struct.pack("!H", keepalive) + _varint(len(props)) + props
        self.writer.write(_packet(0x10, vh + _str(self.device)))
        first = await self.reader.readexactly(1)
        n = await _read_varint(self.reader)
        body = await self.reader.readexactly(n)
        if first[0] != 0x20 or body[1] != 0:
            raise SystemExit(f"{self.device}: CONNACK refused: {body!r}")
        self.task = asyncio.get_running_loop().create_task(self._read())
        self.pid += 1
        sub = struct.pack("!H", self.pid) + b"\x00"
        for t in (f"bodycam/{self.device}/ack", f"bodycam/{self.device}/cmd/resend"):
            sub += _str(t) + b"\x01"
        self.writer.write(_packet(0x82, sub))

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        assert self.window is not None and self.writer is not None
        await self.window.acquire()
        self.pid = self.pid % 65535 + 1
        self.sent_at[self.pid] = time.time()
        body = _str(topic) + struct.pack("!H", self.pid) + b"\x00" + payload
        self.writer.write(_packet(0x32 | (1 if retain else 0), body))

    async def _read(self) -> None:
        r, w = self.reader, self.writer
        assert r is not None and w is not None and self.window is not None
        try:
            while True:
                first = (await r.readexactly(1))[0]
                body = await r.readexactly(await _read_varint(r))
                kind = first >> 4
                if kind == 4:  # PUBACK
                    pid = struct.unpack("!H", body[:2])[0]
                    if self.sent_at.pop(pid, None) is not None:
                        self.window.release()
                elif kind == 9:  # SUBACK
                    self.subscribed.set()
                elif kind == 3:  # PUBLISH from base: ack or cmd/resend
                    qos = (first >> 1) & 3
                    tlen = struct.unpack("!H", body[:2])[0]
                    topic = body[2:2 + tlen].decode()
                    i = 2 + tlen
                    if qos:
                        w.write(_packet(0x40, body[i:i + 2]))
                        i += 2
                    plen, i = _varint_at(body, i)
                    payload = body[i + plen:]
                    if topic.endswith("/ack") and payload:
                        self.acked = max(self.acked, int(json.loads(payload)["seq"]))
                    elif topic.endswith("/cmd/resend"):
                        self.resend_cmds += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            return


async def _read_varint(r: asyncio.StreamReader) -> int:
    n, mult = 0, 1
    while True:
        b = (await r.readexactly(1))[0]
        n += (b & 0x7F) * mult
        if not b & 0x80:
            return n
        mult *= 128


def _varint_at(b: bytes, i: int) -> tuple[int, int]:
    n, mult = 0, 1
    while True:
        n += (b[i] & 0x7F) * mult
        i += 1
        if not b[i - 1] & 0x80:
            return n, i
        mult *= 128


# -- processes ---------------------------------------------------------------------------------------
class Broker:
    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n"
                        "max_inflight_messages 1000\nmax_connections -1\nuser root\nlog_dest none\n")
        self.proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)])
        _wait_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def _base(*args: str) -> subprocess.Popen[str]:
    verbose = ["-v"] if ARGS.progress else []
    return subprocess.Popen([sys.executable, "-m", "bodycam.base.cli", *verbose, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


async def _wait_line(proc: subprocess.Popen[str], pattern: str, timeout: float = 60) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = await asyncio.to_thread(proc.stdout.readline)
        if not line:
            raise SystemExit(f"base process ended: {proc.args}")
        if re.search(pattern, line):
            asyncio.get_running_loop().run_in_executor(None, _drain, proc)
            return
    raise SystemExit(f"no {pattern!r} from {proc.args}")


def _drain(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if ARGS.progress:
            print(f"    [{proc.pid}] {line.rstrip()}", flush=True)


def _hwm_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    m = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else float("nan")


def _stop(procs: list[subprocess.Popen[str]]) -> list[int | None]:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(30))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (all their threads) so far."""
    total = 0.0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _pg_pids(pg: PgServer) -> list[int]:
    """The PostgreSQL server's processes (postmaster and its children: backends, WAL writer, ...)."""
    import psutil

    try:
        master = int((pg.data / "postmaster.pid").read_text().split()[0])
        return [master, *(c.pid for c in psutil.Process(master).children(recursive=True))]
    except (OSError, ValueError, psutil.Error):
        return []


def _home() -> tuple[float, float]:
    """A camera's place: uniform over a square of --area-km around Berlin's centre (a city's patrol area)."""
    half = ARGS.area_km * 500.0
    return (52.52 + random.uniform(-half, half) / 111_195, 13.40 + random.uniform(-half, half) / (111_195 * 0.609))


def _wal_and_telemetry(db: PostgresStore) -> tuple[int, int]:
    """WAL written so far (bytes) and telemetry messages stored so far (the history's identity)."""
    row = db.read("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'), (SELECT COALESCE(MAX(n), 0) FROM telemetry)")
    return int(row[0][0]), int(row[0][1])


def _sizes(db: PostgresStore) -> dict[str, float]:
    """Bytes on disk per stored row (table + indexes + TOAST) of markers and telemetry history."""
    out: dict[str, float] = {}
    for table in ("markers", "telemetry"):
        row = db.read(f"SELECT pg_total_relation_size('{table}'), (SELECT COUNT(*) FROM {table})")
        out[f"{table}_rows"] = int(row[0][1])
        out[f"{table}_bytes_per_row"] = int(row[0][0]) / max(1, int(row[0][1]))
    return out


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def _firmware_telemetry(cam: Camera) -> dict[str, object]:
    """What the firmware's provider sends (``device/assemble.py``: loop stats, recording, model, clock,
    location, detector, audio, board sources), so base parses and stores messages of the real size."""
    return {
        "frames": random.randrange(10**6), "inference_ms_p50": 0.61, "recording": False, "storage_alarm": False,
        "model": MODEL.to_dict(), "clock": {"synced": True, "source": "gnss", "offset_ms": 3.0},
        "location": cam.where().to_dict(),
        "detector": "edgetpu", "audio": {"state": "ok", "alarm": False, "footage_sound": "aac"},
        "sources": {"cpu_temp_c": 41.5, "throttled": 0, "storage": {"free_bytes": 48_000_000_000,
                                                                   "total_bytes": 64_000_000_000},
                    "battery": {"percent": 81, "status": "Discharging"}},
    }


_DELIVERY = {"unconfirmed": 0, "in_memory": 0, "alarm": None, "journal_error": None}


# -- the phases --------------------------------------------------------------------------------------
async def telemetry_loop(cams: list[Camera], stop: asyncio.Event) -> None:
    """Every camera sends telemetry every --telemetry-s, spread evenly over the interval."""
    per = ARGS.telemetry_s / max(1, len(cams))
    i = 0
    while not stop.is_set():
        cam = cams[i % len(cams)]
        body = telemetry_payload(cam.device, CLOCK, queue_depth=0, delivery=_DELIVERY | {"confirmed_seq": cam.acked},
                                 provider=lambda c=cam: _firmware_telemetry(c))
        await cam.publish(f"bodycam/{cam.device}/telemetry", body)
        i += 1
        await asyncio.sleep(per)


async def ingest(cams: list[Camera], consumers: int, url: str, broker: Broker, tmp: Path) -> dict[str, float]:
    db = PostgresStore(url)
    before = db.count()
    group = f"fleet{consumers}"
    procs = [_base("listen", "--broker", f"mqtt://127.0.0.1:{broker.port}", "--db", url, "--group", group,
                   "--client-id", f"bench-{group}-{i}") for i in range(consumers)]
    for p in procs:
        await _wait_line(p, "listening on")
    # telemetry alone (the fleet's every-10-s messages) for --telemetry-window-s: WAL and CPU per message
    tel0 = (await asyncio.to_thread(_wal_and_telemetry, db), _cpu_s([p.pid for p in procs]), time.monotonic(),
            _cpu_s(_pg_pids(PG)))
    await asyncio.sleep(ARGS.telemetry_window_s)
    tel1 = (await asyncio.to_thread(_wal_and_telemetry, db), _cpu_s([p.pid for p in procs]), time.monotonic(),
            _cpu_s(_pg_pids(PG)))
    tel_msgs = tel1[0][1] - tel0[0][1]
    print(f"  {consumers} consumer(s) listening; making {len(cams) * ARGS.burst} signed markers", flush=True)
    bursts: list[list[bytes]] = []
    n = 0
    for cam in cams:
        burst = []
        for _ in range(ARGS.burst):
            n += 1
            burst.append(cam.next_marker("gunshot" if n % ARGS.gunshot_every == 0 else random.choice(OTHER_KINDS)))
        bursts.append(burst)
    total = len(cams) * ARGS.burst
    pg_pids = _pg_pids(PG)
    spies = [subprocess.Popen(["py-spy", "record", "--pid", str(p.pid), "--rate", "50", "--format", "raw",
                               "--nonblocking", "--output", str(ARGS.profile / f"listen-{consumers}-{i}.txt")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i, p in enumerate(procs)] if ARGS.profile else []
    wal0 = (await asyncio.to_thread(_wal_and_telemetry, db))
    cpu0 = (_cpu_s([p.pid for p in procs]), _cpu_s(pg_pids), _cpu_s([broker.proc.pid]), time.process_time())
    t0 = time.monotonic()

    async def send(cam: Camera, burst: list[bytes]) -> None:
        for body in burst:
            await cam.publish(f"bodycam/{cam.device}/marker", body)

    sender = asyncio.gather(*(send(c, b) for c, b in zip(cams, bursts, strict=True)))
    published_s = None
    stored = 0
    while stored < total and time.monotonic() - t0 < ARGS.timeout_s:
        await asyncio.sleep(0.25)
        if published_s is None and sender.done():
            published_s = time.monotonic() - t0
        stored = await asyncio.to_thread(db.count) - before
        if ARGS.progress:
            print(f"    {time.monotonic() - t0:6.2f} s: {stored} stored", flush=True)
    dt = time.monotonic() - t0
    wal1 = (await asyncio.to_thread(_wal_and_telemetry, db))
    cpu1 = (_cpu_s([p.pid for p in procs]), _cpu_s(pg_pids + _pg_pids(PG)[len(pg_pids):]), _cpu_s([broker.proc.pid]),
            time.process_time())
    for spy in spies:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    await sender
    published_s = published_s or dt
    rows = await asyncio.to_thread(db.read, "SELECT MIN(received_ns), MAX(received_ns) FROM markers m WHERE "
                                   "received_ns > ?", (int((time.time() - dt - 5) * 1e9),))
    span = (rows[0][1] - rows[0][0]) / 1e9 if rows and rows[0][0] is not None else float("nan")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(c.acked == c.seq for c in cams) < len(cams):
        await asyncio.sleep(0.25)
    acked = sum(c.acked == c.seq for c in cams)
    rss = [_hwm_mb(p.pid) for p in procs]
    codes = _stop(procs)
    db.close()
    out = {"consumers": consumers, "markers": total, "stored": stored, "seconds": dt, "rate": stored / dt,
           "publish_rate": total / published_s, "rate_received_span": stored / span if span > 0 else float("nan"),
           "acked_cams": acked, "rss_mb": max(rss), "exit": max(c or 0 for c in codes),
           "cpu_listen_s": cpu1[0] - cpu0[0], "cpu_pg_s": cpu1[1] - cpu0[1], "cpu_broker_s": cpu1[2] - cpu0[2],
           "cpu_fleet_s": cpu1[3] - cpu0[3]}
    out["per_core_rate"] = stored / out["cpu_listen_s"] * consumers if out["cpu_listen_s"] > 0 else float("nan")
    out["markers_per_listen_cpu_s"] = stored / out["cpu_listen_s"] if out["cpu_listen_s"] > 0 else float("nan")
    # WAL during the burst (telemetry kept flowing: its share, at the rate measured just before, is taken off)
    tel_rate = tel_msgs / (tel1[2] - tel0[2]) if tel1[2] > tel0[2] else 0.0
    tel_wal = (tel1[0][0] - tel0[0][0]) / tel_msgs if tel_msgs > 0 else 0.0
    out["telemetry_msgs_per_s"] = tel_rate
    out["wal_bytes_per_telemetry"] = tel_wal
    out["listen_cpu_ms_per_telemetry"] = (tel1[1] - tel0[1]) / tel_msgs * 1e3 if tel_msgs > 0 else float("nan")
    out["pg_cpu_ms_per_telemetry"] = (tel1[3] - tel0[3]) / tel_msgs * 1e3 if tel_msgs > 0 else float("nan")
    out["wal_bytes_per_marker"] = ((wal1[0] - wal0[0]) - tel_wal * (wal1[1] - wal0[1])) / stored if stored else 0.0
    print(f"  ingest, {consumers} consumer(s): {stored}/{total} stored in {dt:.1f} s = {out['rate']:.0f} markers/s "
          f"(fleet published at {out['publish_rate']:.0f}/s; first to last received at base: "
          f"{out['rate_received_span']:.0f}/s); cameras with every marker acked: {acked}/{len(cams)}; "
          f"listen peak RSS {', '.join(f'{r:.0f}' for r in rss)} MB; exit {codes}", flush=True)
    print(f"  telemetry alone for {ARGS.telemetry_window_s:.0f} s before the burst: {tel_rate:.0f} msgs/s, {tel_wal:.0f} B of WAL and "
          f"{out['listen_cpu_ms_per_telemetry']:.3f} ms of listen and {out['pg_cpu_ms_per_telemetry']:.3f} ms of "
          "PostgreSQL CPU per message; the burst: "
          f"{out['wal_bytes_per_marker']:.0f} B of WAL per marker", flush=True)
    print(f"  CPU during it: listen {out['cpu_listen_s']:.1f} s ({out['cpu_listen_s'] / stored * 1e3:.3f} ms/marker: "
          f"{stored / out['cpu_listen_s']:.0f} markers per CPU-second of listen), PostgreSQL {out['cpu_pg_s']:.1f} s "
          f"({out['cpu_pg_s'] / stored * 1e3:.3f} ms/marker), Mosquitto {out['cpu_broker_s']:.1f} s, fleet "
          f"{out['cpu_fleet_s']:.1f} s", flush=True)
    return out


async def banner(cams: list[Camera], url: str, broker: Broker, tmp: Path, mode: str = "notify") -> dict[str, Any]:
    """``mode``: ``notify`` (serve reads alerts when PostgreSQL notifies it, the default) or ``poll``
    (``serve --no-notify``: every 200 ms)."""
    import httpx2 as httpx  # the dev extra's HTTP client (Starlette's TestClient uses it too)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    listen = _base("listen", "--broker", f"mqtt://127.0.0.1:{broker.port}", "--db", url, "--group", "banner",
                   "--client-id", "bench-banner")
    serve = _base("serve", "--db", url, "--listen", f"127.0.0.1:{port}", *(["--no-notify"] if mode == "poll" else []))
    await _wait_line(listen, "listening on")
    await asyncio.to_thread(_wait_port, port)
    published: dict[str, float] = {}
    lat_pub: list[float] = []
    lat_rx: list[float] = []
    got_all = asyncio.Event()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        form = await http.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None, form.text[:500]
        r = await http.post("/login", data={"name": "bench", "password": PW, "csrf": token.group(1), "next": "/"})
        assert r.status_code in (200, 303), r.status_code

        async def watch() -> None:
            async with http.stream("GET", "/events", timeout=None) as resp:
                event = ""
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "alert":
                        ev = json.loads(line[6:])
                        now = time.time()
                        sent = published.get(ev["marker"])
                        if sent is not None:
                            lat_pub.append(now - sent)
                            lat_rx.append(now - ev["received_ns"] / 1e9)
                            if len(lat_pub) == ARGS.shots:
                                got_all.set()
                                return

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(ARGS.warmup_s)  # a base that just started first takes the retained statuses and acks
        stop_bg = asyncio.Event()

        async def background() -> None:
            i = 0
            while not stop_bg.is_set():
                cam = cams[i % len(cams)]
                await cam.publish(f"bodycam/{cam.device}/marker", cam.next_marker(random.choice(OTHER_KINDS)))
                i += 1
                await asyncio.sleep(1 / ARGS.background)

        bg = asyncio.create_task(background()) if ARGS.background > 0 else None
        for _ in range(ARGS.shots):
            cam = random.choice(cams)
            body = cam.next_marker("gunshot")
            mid = json.loads(body)["id"]
            published[mid] = time.time()
            await cam.publish(f"bodycam/{cam.device}/marker", body)
            await asyncio.sleep(ARGS.shot_interval_s)
        try:
            await asyncio.wait_for(got_all.wait(), 60)
        except TimeoutError:
            print(f"  only {len(lat_pub)} of {ARGS.shots} alerts arrived", flush=True)
        stop_bg.set()
        if bg is not None:
            await bg
        watcher.cancel()
    rss = {"listen": _hwm_mb(listen.pid), "serve": _hwm_mb(serve.pid)}
    _stop([listen, serve])
    ms = [x * 1000 for x in lat_pub]
    rx = [x * 1000 for x in lat_rx]
    out = {"mode": mode, "latencies_ms": [round(x) for x in ms], "alerts": len(ms), "p50_ms": statistics.median(ms), "p99_ms": _pct(ms, 99), "max_ms": max(ms),
           "rx_p50_ms": statistics.median(rx), "rx_p99_ms": _pct(rx, 99), **{f"rss_{k}_mb": v for k, v in rss.items()}}
    print(f"  banner ({mode}): {len(ms)} shots; camera publish -> alert event on the page's stream: p50 {out['p50_ms']:.0f} ms, "
          f"p99 {out['p99_ms']:.0f} ms, max {out['max_ms']:.0f} ms (from base's received_ns: p50 "
          f"{out['rx_p50_ms']:.0f} ms, p99 {out['rx_p99_ms']:.0f} ms); background {ARGS.background}/s; "
          f"peak RSS listen {rss['listen']:.0f} MB, serve {rss['serve']:.0f} MB", flush=True)
    return out


async def run(tmp: Path) -> dict[str, object]:
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found: apt-get install -y postgresql")
    global PG
    pg = PG = PgServer(bindir, durable=not ARGS.pg_fast)
    pg.start()
    broker = Broker(tmp)
    results: dict[str, object] = {"cameras": ARGS.cameras, "pg": "fast" if ARGS.pg_fast else "durable"}
    try:
        url = pg.url(pg.create_db())
        store = PostgresStore(url)
        reg = KeyRegistry(store)
        cams = [Camera(f"cam-{i:05d}", Signer.generate(), home=_home()) for i in range(ARGS.cameras)]
        t = time.monotonic()
        reg.add(cams[0].device, cams[0].signer.public_pem(), CLOCK.wall_ns())  # the CLI's way, for one
        with store.transaction() as tx:  # the rest in one transaction: the same rows
            for c in cams[1:]:
                tx.run("INSERT INTO device_keys(device, key_id, public_pem, added_ns, revoked_ns) VALUES (?,?,?,?,NULL)",
                       (c.device, c.signer.key_id, c.signer.public_pem().decode("ascii"), CLOCK.wall_ns()))
        assert len(reg.keys()) == len(cams) and reg.keys(cams[-1].device)[0].key_id == cams[-1].signer.key_id
        store.close()
        sys.stdin = __import__("io").StringIO(PW + "\n")
        from bodycam.base.cli import main as base_main

        assert base_main(["user", "add", "bench", "--role", "operator", "--db", url]) == 0
        print(f"{ARGS.cameras} keys registered in {time.monotonic() - t:.1f} s; connecting the fleet", flush=True)
        t = time.monotonic()
        for i in range(0, len(cams), 100):
            await asyncio.gather(*(c.connect(broker.port) for c in cams[i:i + 100]))
        await asyncio.gather(*(c.subscribed.wait() for c in cams))
        for cam in cams:
            await cam.publish(f"bodycam/{cam.device}/status", status_payload(cam.device, "online", CLOCK), retain=True)
        print(f"{len(cams)} cameras connected and subscribed in {time.monotonic() - t:.1f} s", flush=True)
        stop = asyncio.Event()
        tele = asyncio.create_task(telemetry_loop(cams, stop))
        for c in ARGS.consumers:
            results[f"ingest_{c}"] = await ingest(cams, c, url, broker, tmp)
        sizes_db = PostgresStore(url)
        results["sizes"] = sizes = await asyncio.to_thread(_sizes, sizes_db)
        sizes_db.close()
        print(f"  on disk: {sizes['markers_bytes_per_row']:.0f} B per marker ({sizes['markers_rows']} rows), "
              f"{sizes['telemetry_bytes_per_row']:.0f} B per telemetry history row ({sizes['telemetry_rows']})",
              flush=True)
        if ARGS.shots:
            # several modes: alternated, round after round, on the same connected fleet (side by side)
            runs = [await banner(cams, url, broker, tmp, mode) for _ in range(ARGS.banner_rounds)
                    for mode in ARGS.banner_modes]
            results["banner"] = runs[0] if len(runs) == 1 else runs
        stop.set()
        await tele
        results["resend_cmds_seen_by_cameras"] = sum(c.resend_cmds for c in cams)
    finally:
        broker.stop()
        pg.stop()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=2000)
    ap.add_argument("--burst", type=int, default=15, help="markers per camera per ingest run")
    ap.add_argument("--gunshot-every", type=int, default=10, help="one marker in N is a gunshot")
    ap.add_argument("--consumers", default="1,2", help="comma-separated consumer counts")
    ap.add_argument("--window", type=int, default=20, help="QoS 1 messages in flight per camera")
    ap.add_argument("--telemetry-s", type=float, default=10.0)
    ap.add_argument("--telemetry-window-s", type=float, default=10.0,
                    help="telemetry alone this long before each burst (WAL and CPU per telemetry message)")
    ap.add_argument("--area-km", type=float, default=20.0,
                    help="cameras spread over a square this wide (peer activation: a shot starts those within 300 m)")
    ap.add_argument("--shots", type=int, default=60)
    ap.add_argument("--shot-interval-s", type=float, default=0.25)
    ap.add_argument("--warmup-s", type=float, default=5.0, help="the banner run's fleet traffic before the first shot")
    ap.add_argument("--banner-modes", default="notify",
                    help="comma-separated: notify (serve reads alerts on PostgreSQL NOTIFY), poll (serve --no-notify)")
    ap.add_argument("--banner-rounds", type=int, default=1, help="banner runs per mode, alternating the modes")
    ap.add_argument("--background", type=float, default=200, help="other markers/s during the banner run")
    ap.add_argument("--timeout-s", type=float, default=300)
    ap.add_argument("--pg-fast", action="store_true", help="PostgreSQL without fsync/synchronous_commit")
    ap.add_argument("--profile", type=Path, help="py-spy the listen processes during ingest; folded stacks here")
    ap.add_argument("--progress", action="store_true", help="print the stored count every poll")
    ap.add_argument("--json", type=Path, help="also write the results here")
    global ARGS
    ARGS = ap.parse_args()
    ARGS.consumers = [int(x) for x in ARGS.consumers.split(",") if x]
    ARGS.banner_modes = [m for m in ARGS.banner_modes.split(",") if m]
    if not set(ARGS.banner_modes) <= {"notify", "poll"} or ARGS.banner_rounds < 1:
        ap.error("--banner-modes takes notify and/or poll; --banner-rounds >= 1")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = ARGS.cameras * 2 + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))  # the broker inherits it
    print(f"bench_fleet: {ARGS.cameras} cameras, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory() as d:
        results = asyncio.run(run(Path(d)))
    print(json.dumps(results, indent=1, default=float))
    if ARGS.json:
        ARGS.json.write_text(json.dumps(results, indent=1, default=float))
    return 0


ARGS: argparse.Namespace
PG: PgServer


if __name__ == "__main__":
    sys.exit(main())
