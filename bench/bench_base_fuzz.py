"""A stream of mixed valid and hostile messages into one running ``bodycam-base listen`` (real
Mosquitto, SQLite), with no restart. Needs /usr/sbin/mosquitto.

    python bench/bench_base_fuzz.py [--messages 100000] [--seed 1]

Prints, per category: messages sent, what base did with them (from the consumer's own counters
and from the database: stored / duplicate / quarantined / rejected), whether that is what the
category must get, the throughput, and that the consumer process stayed up (same pid, alive, and
still storing and acknowledging a marker sent after the stream).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from bench_mqtt import Broker
from paho.mqtt.enums import CallbackAPIVersion

from bodycam.device.clock import SystemClock
from bodycam.device.uplink.markers import GENESIS_PREV, Marker, MarkerDraft, ModelRef, build_marker, uuid7
from bodycam.device.uplink.validate import T_MAX, T_MIN

CLOCK = SystemClock()
MODEL = ModelRef("shotnet", "1", "a" * 64)


class Devices:
    """Valid markers of a few devices, chained, in order."""

    def __init__(self, n: int) -> None:
        self.state = {f"cam-{i:03d}": (0, GENESIS_PREV) for i in range(n)}
        self.sent: list[Marker] = []

    def next(self, rnd: random.Random, device: str | None = None, **draft: Any) -> Marker:
        dev = device or rnd.choice(sorted(self.state))
        last, prev = self.state.get(dev, (0, GENESIS_PREV))
        kind = draft.pop("kind", rnd.choice(["gunshot", "manual", "holster_draw", "recording_start"]))
        seq = draft.pop("seq", last + 1)
        wall = draft.pop("wall_ns", CLOCK.wall_ns())
        det = {"confidence": round(rnd.random(), 4), "model": MODEL} if kind == "gunshot" else {}
        m = build_marker(
            MarkerDraft(kind=kind, t_mono_ns=last, wall_ns=wall, **det, **draft),
            marker_id=uuid7(CLOCK.wall_ns()),
            device=dev,
            seq=seq,
            prev=prev,
        )
        self.state[dev] = (m.seq, m.digest())
        self.sent.append(m)
        return m


def _doc(m: Marker, **changes: Any) -> bytes:
    return json.dumps({**m.to_dict(), **changes}).encode()


def categories(devs: Devices) -> dict[str, tuple[float, str, Callable[[random.Random], tuple[str, bytes]]]]:
    """name -> (share of the stream, the outcome it must get, generator of (topic, payload))."""

    def valid(r: random.Random) -> tuple[str, bytes]:
        m = devs.next(r)
        return f"bodycam/{m.device}/marker", m.to_json()

    def edge(r: random.Random) -> tuple[str, bytes]:  # valid extremes: stored
        choice = r.randrange(4)
        if choice == 0:
            m = devs.next(r, device="edge-int64", seq=2**63 - 1 - r.randrange(10**12) * 2, kind="manual")
        elif choice == 1:
            m = devs.next(r, device="edge-time", wall_ns=r.choice([0, 9_223_372_036_854_000_000]), kind="manual")
            assert m.t in (T_MIN, T_MAX)
        else:
            m = devs.next(r, kind="manual", extra={"note": "Schuss ü \U0001f52b", "n": -(2**63), "deep": [[[1]]]})
        return f"bodycam/{m.device}/marker", m.to_json()

    def duplicate(r: random.Random) -> tuple[str, bytes]:
        m = r.choice(devs.sent) if devs.sent else devs.next(r)
        return f"bodycam/{m.device}/marker", m.to_json()

    def conflict(r: random.Random) -> tuple[str, bytes]:
        m = r.choice(devs.sent) if devs.sent else devs.next(r)
        if r.random() < 0.5:  # same (device, seq), another id
            d = {**m.to_dict(), "id": uuid7(CLOCK.wall_ns())}
        else:  # same id, other content
            d = {**m.to_dict(), "t_mono_ns": m.t_mono_ns + 1}
        return f"bodycam/{m.device}/marker", json.dumps(d).encode()

    deep = {n: ('{"a":' * n + "1" + "}" * n).encode() for n in (17, 1000, 9000)}
    hostile_payloads: list[Callable[[Marker, random.Random], bytes]] = [
        lambda m, r: _doc(m, seq=2**63),
        lambda m, r: _doc(m, seq=2**64 + 1),
        lambda m, r: _doc(m, t="9999-12-31T23:59:59.999Z"),
        lambda m, r: _doc(m, t="0001-01-01T00:00:00.000Z"),
        lambda m, r: _doc(m, t="2262-04-11T23:47:16.855Z"),
        lambda m, r: _doc(m, extra={"x": "\ud800"}),
        lambda m, r: _doc(m, extra={"\udfff": 1}),
        lambda m, r: _doc(m, extra={"n": 2**63}),
        lambda m, r: _doc(m, extra={"x": "a\x00b"}),
        lambda m, r: _doc(m, kind="gunshot\n"),
        lambda m, r: _doc(m, device=m.device + "\n"),
        lambda m, r: _doc(m, id=m.id.upper()),
        lambda m, r: _doc(m, confidence=float("nan")),
        lambda m, r: _doc(m, media={"recording": "\x1b[2J", "segment": -1, "offset_s": 0, "frame": 0}),
        lambda m, r: _doc(m, extra=None),
        lambda m, r: _doc(m, schema="bodycam.marker/2"),
        lambda m, r: _doc(m, unknown=1),
        lambda m, r: _doc(m)[:-1] + b',"extra":' + deep[r.choice(list(deep))] + b"}",
        lambda m, r: _doc(m)[: r.randrange(1, 40)],
        lambda m, r: r.randbytes(r.randrange(1, 200)),
        lambda m, r: b"\xff\xfe" + _doc(m),
        lambda m, r: b"[" * 50_000,
        lambda m, r: b"x" * (64 * 1024 + 1),
        lambda m, r: b"null",
        lambda m, r: b"{}",
    ]

    def hostile(r: random.Random) -> tuple[str, bytes]:
        m = devs.sent[-1] if devs.sent else devs.next(r)
        payload = r.choice(hostile_payloads)(m, r)
        if r.random() < 0.05:  # a valid marker of another device on this topic
            return f"bodycam/other-{r.randrange(5)}/marker", m.to_json()
        if r.random() < 0.05:
            return f"bodycam/{m.device}/status", r.choice([b"[1]", b'{"state":"sleeping"}', b"\xff", payload])
        return f"bodycam/{m.device}/marker", payload

    return {
        "valid": (0.45, "stored", valid),
        "valid_edge": (0.05, "stored", edge),
        "duplicate": (0.10, "duplicate", duplicate),
        "conflict": (0.05, "quarantined", conflict),
        "hostile": (0.35, "rejected", hostile),
    }


def publish_all(url_port: int, msgs: list[tuple[str, bytes]]) -> float:
    """QoS 1 from one client; returns seconds until the broker acknowledged the last one."""
    done = threading.Event()
    acked = [0]
    lock = threading.Lock()

    window = threading.BoundedSemaphore(1000)  # at most this many unacknowledged: paho stalled with 30,000

    def on_publish(c: Any, u: Any, mid: int, rc: Any, p: Any) -> None:
        window.release()
        with lock:
            acked[0] += 1
            if acked[0] == len(msgs):
                done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fuzzer", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(200)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    c.on_disconnect = lambda c, u, f, rc, p: print(f"fuzzer disconnected: {rc}", flush=True)
    c.connect("127.0.0.1", url_port)
    c.loop_start()
    t0 = time.perf_counter()
    for topic, payload in msgs:
        if not window.acquire(timeout=60):
            raise SystemExit(f"the broker acknowledged only {acked[0]} of {len(msgs)} (no progress for 60 s)")
        c.publish(topic, payload, qos=1)
    last, stalled = -1, 0.0
    while not done.wait(5):
        if acked[0] == last:
            stalled += 5
            if stalled >= 60:
                raise SystemExit(f"the broker acknowledged only {acked[0]} of {len(msgs)} (no progress for 60 s)")
        else:
            last, stalled = acked[0], 0.0
        print(f"  broker acknowledged {acked[0]} of {len(msgs)}", flush=True)
    took = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    devs = Devices(args.devices)
    cats = categories(devs)
    names = list(cats)
    weights = [cats[n][0] for n in names]
    plan: list[tuple[str, str, bytes]] = []
    for _ in range(args.messages):
        name = rnd.choices(names, weights)[0]
        plan.append((name, *cats[name][2](rnd)))
    sent = Counter(name for name, _, _ in plan)
    want_quarantined = sent["conflict"] + sent["hostile"]  # conflicts and rejected messages are kept
    want_stored = len({m.id for m in devs.sent})
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-base-fuzz-") as tmp:
        broker = Broker(Path(tmp))
        db = Path(tmp) / "base.db"
        listen = subprocess.Popen(
            [sys.executable, "-m", "bodycam.base.cli", "listen", "--broker", broker.url, "--db", str(db),
             "--client-id", "fuzz"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            assert listen.stdout is not None
            while "listening" not in (line := listen.stdout.readline()):
                if not line:
                    raise SystemExit("bodycam-base listen ended before it listened")
            reader = threading.Thread(target=lambda: lines.extend(listen.stdout or []), daemon=True)
            reader.start()
            pid, t_start = listen.pid, time.perf_counter()
            try:
                pub_s = publish_all(broker.port, [(t, p) for _, t, p in plan])
            except SystemExit:
                print("consumer's last lines:", *lines[-5:], sep="\n  ")
                raise
            counts = sqlite3.connect(f"file:{db}?mode=ro", uri=True)  # a reader: never blocks the writer
            deadline = time.monotonic() + 900
            while True:
                n_markers = counts.execute("SELECT COUNT(*) FROM markers").fetchone()[0]
                n_quarantined = counts.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
                if (n_markers, n_quarantined) >= (want_stored, want_quarantined):
                    break
                if listen.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"bodycam-base listen: exited {listen.returncode} / too slow")
                time.sleep(0.5)
            counts.close()
            took = time.perf_counter() - t_start
            # still up and still working: one more marker is stored and acknowledged
            probe = devs.next(rnd, device="probe-01", kind="manual")
            acks: list[int] = []
            w = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            w.on_message = lambda c, u, msg: acks.append(json.loads(msg.payload)["seq"]) if msg.payload else None
            w.connect("127.0.0.1", broker.port)
            w.subscribe("bodycam/probe-01/ack", 1)
            w.loop_start()
            time.sleep(0.3)
            w.publish("bodycam/probe-01/marker", probe.to_json(), qos=1).wait_for_publish(10)
            deadline = time.monotonic() + 15
            while 1 not in acks and time.monotonic() < deadline:
                time.sleep(0.05)
            w.disconnect()
            w.loop_stop()
            time.sleep(1.0)  # let anything still in flight settle before the final counts
            alive = listen.poll() is None and listen.pid == pid
            listen.send_signal(signal.SIGTERM)
            listen.wait(20)
            reader.join(10)
        finally:
            if listen.poll() is None:
                listen.kill()
            broker.stop()
        counters: dict[str, int] = {}
        for line in reversed(lines):
            if line.startswith("{"):
                counters = json.loads(line)
                break
        with closing(sqlite3.connect(db)) as conn:
            q = Counter(dict(conn.execute("SELECT kind, COUNT(*) FROM quarantine GROUP BY kind").fetchall()))
            n_stored = conn.execute("SELECT COUNT(*) FROM markers").fetchone()[0]
    print(f"bodycam-base listen under a fuzz stream: {args.messages} messages, seed {args.seed}")
    unique_valid = want_stored
    got = {
        "stored": n_stored - 1,  # without the probe
        "duplicate": counters.get("duplicate", 0),
        "quarantined": counters.get("quarantined", 0),
        "rejected": counters.get("rejected", 0),
    }
    print(f"{'category':12s} {'sent':>7s}  {'must be':12s}")
    for name in names:
        print(f"{name:12s} {sent[name]:7d}  {cats[name][1]:12s}")
    print("what base did:", ", ".join(f"{k} {v}" for k, v in got.items()),
          f"(stored must be {unique_valid} distinct valid markers of valid + valid_edge)")
    print(f"\nconsumer counters: {json.dumps(counters, sort_keys=True)}")
    print(f"quarantine table by kind: {dict(sorted(q.items()))}")
    rejected = counters.get("rejected", 0)
    quarantined = counters.get("quarantined", 0)
    print(
        f"\nstored {n_stored - 1} of {unique_valid} distinct valid markers (+1 probe); "
        f"duplicates {counters.get('duplicate', 0)}; quarantined (conflicts) {quarantined}; "
        f"rejected (invalid) {rejected}; status messages {counters.get('status', 0)}; "
        f"received {counters.get('received', 0)} of {args.messages + 1}"
    )
    ok = (
        n_stored - 1 == unique_valid
        and counters.get("received", 0) == args.messages + 1
        and quarantined == sent["conflict"]
        and alive
        and 1 in acks
    )
    print(
        f"throughput: {args.messages / took:.0f} messages/s through the consumer "
        f"({took:.1f} s from the first publish until the store settled; publishing took {pub_s:.1f} s)"
    )
    print(
        f"consumer stayed up: {'yes' if alive else 'NO'} (pid {pid}, no restart, {took:.1f} s under the stream); "
        f"probe marker after the stream stored and acknowledged: {'yes' if 1 in acks else 'NO'}"
    )
    print("RESULT:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
