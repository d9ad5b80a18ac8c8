"""Offload test parts: recordings made by the firmware (simulator), base's receiver on a real store,
a real uvicorn on loopback (TLS with a CA made at test time), and a TCP proxy that cuts the
connection at a chosen byte of either direction."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bodycam.base.custody import CustodyLog
from bodycam.base.evidence_store import FileEvidenceStore
from bodycam.base.keys import KeyRegistry
from bodycam.base.receive import Receiver
from bodycam.base.signing import keygen
from bodycam.base.store import SqliteStore
from bodycam.device.config import AppConfig
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.identity import Signer, TrustedKeys, load_signer, trust_key, trusted_keys
from bodycam.hw_sim.sim_run import SimOptions, run_clip

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "range_demo.mp4"
DEVICE = "cam-o1"


def make_recordings(out: Path, starts: tuple[str, ...] = ("2026-03-01T10:00:00.000Z",
                                                          "2026-03-01T11:00:00.000Z"),
                    encrypt: bool = False) -> Path:
    """Signed recordings of the example clip (2 s segments), as the firmware writes them (``encrypt``:
    encrypted at rest to a base key the simulator makes, ``STATE/identity/base.age.key``)."""
    cfg = AppConfig(recording=RecordingConfig(segment_s=2.0, pre_event_s=5.0))
    cfg = replace(cfg, device=replace(cfg.device, id=DEVICE))
    for start in starts:
        run_clip(SimOptions(clip=EXAMPLE, out=out, config=cfg, broker=None, start_time=start, gnss=False,
                            encrypt=encrypt))
    return out


def recordings(data: Path) -> list[Path]:
    return sorted(p for p in (data / "recordings").iterdir() if p.is_dir())


def signer_of(data: Path) -> Signer:
    return load_signer(data / "state" / "identity" / "device.key")


def custody_dir(data: Path) -> Path:
    """Where the simulated camera of ``data`` keeps base's custody keys it trusts."""
    return data / "state" / "identity" / "trusted-custody"


def custody_of(data: Path) -> TrustedKeys:
    """Base's custody keys the camera of ``data`` trusts (``make_base`` installs base's)."""
    return trusted_keys(custody_dir(data), "offload.trusted_keys_dir")


@dataclass
class Base:
    dir: Path
    store: SqliteStore
    evidence: FileEvidenceStore
    custody: CustodyLog
    keys: KeyRegistry
    receiver: Receiver

    @property
    def custody_key(self) -> Path:
        return self.dir / CUSTODY_KEY

    def close(self) -> None:
        self.store.close()


CUSTODY_KEY = "custody.key"


def custody_signer(d: Path) -> Signer:
    """Base's custody key in ``d`` (made the first time)."""
    path = d / CUSTODY_KEY
    return load_signer(path) if path.exists() else keygen(path)


def make_base(d: Path, data: Path | None = None, **evidence: Any) -> Base:
    """Base's receiver on a SQLite store in ``d``, signing with its custody key ``d/custody.key``; the camera
    of ``data`` registered, and trusting that custody key (as provisioning does)."""
    d.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(d / "base.db")
    keys = KeyRegistry(store)
    signer = custody_signer(d)
    if data is not None:
        keys.add(DEVICE, (data / "state" / "identity" / "device.pub").read_bytes(), time.time_ns())
        trust_key((d / CUSTODY_KEY).with_suffix(".pub"), custody_dir(data))
    custody = CustodyLog(store)
    ev = FileEvidenceStore(d / "evidence", **evidence)
    return Base(d, store, ev, custody, keys, Receiver(ev, custody, keys, signer=signer))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BaseProcess:
    """Base's offload routes served by a real uvicorn in its own process (``_offload_server.py``)
    on the receiver ``make_base(base_dir)`` builds; ``kill()`` is SIGKILL, ``close()`` SIGTERM."""

    def __init__(self, base_dir: Path, *, cert: Path | None = None, key: Path | None = None,
                 env: dict[str, str] | None = None, web: bool = False, extra: tuple[str, ...] = (),
                 db: str | None = None) -> None:
        """``web``: the whole web app, ``bodycam-base serve --evidence`` (the offload routes mounted in it),
        with ``extra`` arguments, on ``db`` (default ``base_dir/base.db``; a postgresql:// URL too)."""
        self.base_dir = base_dir
        self.port = free_port()
        self.scheme = "http" if cert is None else "https"
        args = [sys.executable, str(Path(__file__).with_name("_offload_server.py")), str(base_dir), str(self.port)]
        if cert is not None and key is not None:
            args += [str(cert), str(key)]
        if web:
            custody_signer(base_dir)  # serve --evidence signs with it
            args = [sys.executable, "-m", "bodycam.base.cli", "serve", "--db", db or str(base_dir / "base.db"), "--listen",
                    f"127.0.0.1:{self.port}", "--evidence", str(base_dir / "evidence"), "--evidence-reserve-mb", "0",
                    "--custody-key", str(base_dir / CUSTODY_KEY)]
            if cert is not None and key is not None:
                args += ["--cert-file", str(cert), "--key-file", str(key)]
            args += list(extra)
        self.log = (base_dir / "server.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"base did not start: {(base_dir / 'server.log').read_text()}") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


class Impostor:
    """A real HTTPS server that answers the offload protocol as base would, but stores nothing: it takes
    every chunk and answers ``confirm`` (or, with ``in_status``, the status of any recording) with
    ``forge(recording)``. It holds a certificate the camera trusts: what TLS alone cannot tell from base
    (any public CA's certificate for base's name, a compromised TLS terminator)."""

    def __init__(self, cert: Path, key: Path, forge: Any, *, in_status: bool = False) -> None:
        import http.server
        import json
        import ssl

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _recording(self) -> str:
                return self.path.split("?")[0].split("/")[6]

            def do_GET(self) -> None:
                if outer.in_status:
                    self._answer({"state": "stored", "files": {}, "confirmation": outer.forge(self._recording())})
                else:
                    self._answer({"state": "none", "files": {}})

            def do_PUT(self) -> None:
                size = int(self.headers.get("content-length", "0"))
                self.rfile.read(size)
                offset = int(self.path.rsplit("offset=", 1)[1])
                outer.chunks += 1
                self._answer({"received": offset + size})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.confirms += 1
                self._answer(outer.forge(self._recording()))

        self.forge = forge
        self.in_status = in_status
        self.chunks = 0
        self.confirms = 0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class CutProxy:
    """Forwards 127.0.0.1:port to ``upstream``; cuts both sockets once ``cut_up`` bytes from the
    client (or ``cut_down`` bytes to it) have been forwarded in total, then forwards normally.
    ``up``/``down`` keep everything forwarded (a transcript of the session)."""

    upstream: int
    cut_up: int | None = None
    cut_down: int | None = None
    up: bytearray = field(default_factory=bytearray)
    down: bytearray = field(default_factory=bytearray)
    cuts: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            pair = (client, server)
            self._socks += pair
            threading.Thread(target=self._pump, args=(client, server, True, pair), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False, pair), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool, pair: tuple[socket.socket, ...]) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                for s in pair:
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                return
            with self._lock:
                seen = self.up if up else self.down
                cut = self.cut_up if up else self.cut_down
                if cut is not None and len(seen) + len(data) >= cut:
                    data = data[: cut - len(seen)]
                    seen += data
                    if up:
                        self.cut_up = None
                    else:
                        self.cut_down = None
                    self.cuts += 1
                    with contextlib.suppress(OSError):
                        dst.sendall(data)
                    for s in pair:
                        with contextlib.suppress(OSError):
                            s.shutdown(socket.SHUT_RDWR)
                        s.close()
                    return
                seen += data
            try:
                dst.sendall(data)
            except OSError:
                return

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for s in self._socks:
            s.close()
