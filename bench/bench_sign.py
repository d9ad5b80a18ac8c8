"""Signing cost per marker (DESIGN budget: <= 1 ms for signing one marker with Ed25519).

Measures, over N typical gunshot markers (location, model, media, extra), the median and p99 of:
  * sign only: Ed25519 over the marker's canonical bytes;
  * canonical + sign: RFC 8785 (JCS) canonical bytes then Ed25519 (what ``build_marker`` adds);
  * outbox record: the whole ``Outbox.record`` (build, sign, SQLite commit with fsync=normal);
  * verify: what base and ``bodycam verify`` do per marker (JCS + Ed25519 verify).
Run: ``python bench/bench_sign.py [N]`` (default 2000).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bodycam.device import identity
from bodycam.device.clock import VirtualClock
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
from bodycam.device.uplink.outbox import Outbox

WALL = 1_764_072_000_123_456_789


def draft(i: int) -> MarkerDraft:
    return MarkerDraft(
        kind="gunshot", t_mono_ns=1_000_000_000 + i * 33_333_333, wall_ns=WALL + i * 33_333_333, confidence=0.9731,
        media=Media("20251125T120000123Z", i // 1800, (i % 1800) / 30, i % 1800),
        location=Location(52.5200066, 13.404954, 34.5, 0.9, "3d", 0.4),
        model=ModelRef("shotnet", "1.0.0", "ab" * 32),
        extra={"frame_index": i, "evidence": {"video": 0.9731}},
    )


def timed(n: int, fn: Callable[[int], object]) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def report(name: str, ms: list[float]) -> None:
    ms = sorted(ms)
    print(f"{name:18} median {statistics.median(ms):.4f} ms  p99 {ms[int(len(ms) * 0.99) - 1]:.4f} ms  (n={len(ms)})")


def main(argv: list[str]) -> int:
    n = int(argv[1]) if len(argv) > 1 else 2000
    signer = Signer.generate()
    markers = [build_marker(draft(i), marker_id=uuid7(WALL + i), device="cam-01", seq=i + 1, prev=GENESIS_PREV)
               for i in range(n)]
    canon = [m.canonical_bytes() for m in markers]
    report("sign only", timed(n, lambda i: signer.sign(canon[i])))
    report("canonical + sign", timed(n, lambda i: signer.sign(markers[i].canonical_bytes())))
    signed = [build_marker(draft(i), marker_id=uuid7(WALL + i), device="cam-01", seq=i + 1, prev=GENESIS_PREV,
                           signer=signer) for i in range(n)]
    report("verify", timed(n, lambda i: identity.verify(signer.public, signed[i].canonical_bytes(), signed[i].sig or "")))
    with tempfile.TemporaryDirectory() as tmp:
        with Outbox(Path(tmp) / "o.sqlite", "cam-01", VirtualClock(0, WALL), fsync="normal", signer=signer) as ob:
            report("outbox record", timed(n, lambda i: ob.record(draft(i))))
        with Outbox(Path(tmp) / "u.sqlite", "cam-01", VirtualClock(0, WALL), fsync="normal") as ob:
            report("outbox (unsigned)", timed(n, lambda i: ob.record(draft(i))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
