"""Offload throughput on loopback and the cost of resuming after a cut (issue 13, item 5).

A signed recording of ``--mb`` MB (``--segments`` segments of random bytes, manifest sealed with a
throwaway device key, as the firmware seals it) is uploaded by the camera's ``Offloader`` to base's
receiver (``offload_app``, real uvicorn on 127.0.0.1) ``--runs`` times, each to a fresh base, over
HTTPS (a CA made at run time) and over plain HTTP. Reported per transport: median MB/s from the
first request to base's confirmation (base verifies every hash and signature and stores the
files, fsync included). Then, over plain HTTP through a proxy that cuts the connection once at the
middle byte of the session: the bytes sent again and the extra time, median over the runs.

Run (on a shared machine): ``nice -n 15 python bench/bench_offload.py [--mb 64] [--runs 5]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _offload import CutProxy, free_port
from _pki import make_ca, make_server

from bodycam.base.custody import CustodyLog
from bodycam.base.evidence_store import FileEvidenceStore
from bodycam.base.keys import KeyRegistry
from bodycam.base.offload_api import offload_app
from bodycam.base.receive import Receiver
from bodycam.base.store import SqliteStore
from bodycam.device.footage.recording import MANIFEST_SCHEMA, write_atomic
from bodycam.device.footage.seal import seal
from bodycam.device.footage.segment_writer import sha256_of
from bodycam.device.identity import Signer
from bodycam.device.uplink.offload import BaseClient, Offloader, OffloadError

DEVICE = "cam-bench"
REC = "20260301T100000000Z"


def make_recording(root: Path, signer: Signer, mb: int, segments: int) -> Path:
    rec = root / "recordings" / REC
    rec.mkdir(parents=True)
    per = mb * 1024 * 1024 // segments
    segs = []
    for i in range(segments):
        f = rec / f"segment-{i:05d}.mp4"
        f.write_bytes(os.urandom(per))
        segs.append({"index": i, "file": f.name, "start_utc": None, "end_utc": None, "start_mono_ns": i,
                     "end_mono_ns": i + 1, "frames": 1, "bytes": per, "sha256": sha256_of(f)})
    doc = {"schema": MANIFEST_SCHEMA, "recording": REC, "device": DEVICE, "started_by": "bench", "complete": True,
           "error": None, "protected": False, "marker_count": 0, "segments": segs, "markers_sha256": None,
           "previous": None}
    import json

    write_atomic(rec / "manifest.json", json.dumps(seal(doc, signer), indent=2).encode() + b"\n")
    return rec


CUSTODY = Signer.generate()  # base's custody key: signs the confirmations, the camera trusts it


class Server:
    def __init__(self, d: Path, signer: Signer, cert: Path | None, key: Path | None) -> None:
        import threading

        import uvicorn

        self.store = SqliteStore(d / "base.db")
        keys = KeyRegistry(self.store)
        keys.add(DEVICE, signer.public_pem(), 0)
        receiver = Receiver(FileEvidenceStore(d / "evidence", reserve_mb=0), CustodyLog(self.store), keys,
                            signer=CUSTODY)
        self.port = free_port()
        cfg = uvicorn.Config(offload_app(receiver), host="127.0.0.1", port=self.port, log_level="error",
                             ssl_certfile=None if cert is None else str(cert),
                             ssl_keyfile=None if key is None else str(key), lifespan="off",
                             timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.store.close()


def upload(url: str, signer: Signer, rec: Path, ca: Path | None, chunk: int) -> tuple[float, int, int]:
    client = BaseClient(url, DEVICE, signer, ca_file=None if ca is None else str(ca), timeout_s=60)
    off = Offloader(client, trusted={CUSTODY.key_id: CUSTODY.public}, chunk_bytes=chunk)
    t0 = time.perf_counter()
    failures = 0
    try:
        while True:
            try:
                off.upload(rec)
                break
            except OffloadError:
                failures += 1
                if failures > 3:
                    raise
        return time.perf_counter() - t0, client.sent_bytes, failures
    finally:
        client.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=64)
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--chunk-kib", type=int, default=1024)
    args = ap.parse_args()
    chunk = args.chunk_kib * 1024
    with tempfile.TemporaryDirectory(prefix="bench-offload-") as tmp:
        t = Path(tmp)
        signer = Signer.generate()
        make_ca(t / "pki")
        import cryptography.hazmat.primitives.serialization as ser

        ca_key = ser.load_pem_private_key((t / "pki" / "ca.key").read_bytes(), None)
        cert, key = make_server(t / "pki", ca_key)
        size = None
        results: dict[str, list[float]] = {"https": [], "http": []}
        resume: list[tuple[int, float]] = []
        for run in range(args.runs):
            cam = t / f"cam{run}"
            rec = make_recording(cam, signer, args.mb, args.segments)
            total = sum(f.stat().st_size for f in rec.iterdir())
            size = total
            for scheme in ("https", "http"):
                (rec / "offload.json").unlink(missing_ok=True)
                s = Server(t / f"b{run}{scheme}", signer, cert if scheme == "https" else None,
                           key if scheme == "https" else None)
                try:
                    took, _, _ = upload(f"{scheme}://127.0.0.1:{s.port}", signer, rec,
                                        t / "pki" / "ca.crt" if scheme == "https" else None, chunk)
                finally:
                    s.close()
                results[scheme].append(total / took / 1e6)
            # resume: one cut in the middle of the session (plain HTTP through the proxy)
            (rec / "offload.json").unlink(missing_ok=True)
            s = Server(t / f"b{run}clean", signer, None, None)
            proxy = CutProxy(s.port)
            try:
                clean, sent_clean, _ = upload(proxy.url, signer, rec, None, chunk)
            finally:
                proxy.close()
                s.close()
            (rec / "offload.json").unlink(missing_ok=True)
            s = Server(t / f"b{run}cut", signer, None, None)
            proxy = CutProxy(s.port, cut_up=total // 2)
            try:
                took, sent, failures = upload(proxy.url, signer, rec, None, chunk)
                assert failures == 1 and proxy.cuts == 1
            finally:
                proxy.close()
                s.close()
            resume.append((sent - sent_clean, took - clean))
        assert size is not None
        print(f"recording: {size / 1e6:.1f} MB in {args.segments} segments, chunk {args.chunk_kib} KiB, "
              f"{args.runs} runs (base verifies every hash and signature and fsyncs what it stores)")
        for scheme, mbs in results.items():
            print(f"  {scheme:5}: median {statistics.median(mbs):6.1f} MB/s  (min {min(mbs):.1f}, max {max(mbs):.1f})")
        resent = statistics.median(r[0] for r in resume)
        extra = statistics.median(r[1] for r in resume)
        print(f"  resume after a cut at the session's middle byte: median {resent / 1024:.0f} KiB sent again "
              f"(chunk {args.chunk_kib} KiB), {extra * 1000:+.0f} ms vs the same upload uncut (both through the proxy)")


if __name__ == "__main__":
    main()
