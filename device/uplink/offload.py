"""Offload with custody, on the camera: upload finished recordings to base when docked.

:class:`BaseClient` speaks the protocol of :mod:`bodycam.device.uplink.offload_wire` over HTTPS
(``http.client``; base's certificate checked against ``offload.ca_file``), every request signed
with the device key. :class:`Offloader` uploads one recording at a time, in chunks, resuming from
what base says it holds (so a connection cut at any byte costs at most the chunk in flight), then
asks base to confirm. A recording is marked offloaded (``footage/offload_state.py``) **only** when
base's confirmation is signed by a custody key the camera trusts (``[offload] trusted_keys_dir``,
``bodycam offload trust``) and names exactly this device, this recording and the hashes of the
signed manifest on the card: the manifest's SHA-256, every segment's SHA-256 and the markers
file's. Anything else (a cut, base down, base full, a refusal, a confirmation that does not match)
leaves the recording un-offloaded, and retention treats it as such. A confirmation that does not
verify (unsigned, signed by a key the camera does not trust, signed over another recording or
device, another kind of signed document) is an **alarm** (``offload.alarm`` in telemetry, the LED):
whoever answered may not be base. So is a camera with no trusted custody key: it still uploads (base
stores the evidence) but marks nothing offloaded, so retention never deletes footage on a
confirmation it cannot verify; the camera keeps recording (a config mistake in offload must not take
a body camera out of service).

:class:`OffloadService` is the thread the firmware runs: every ``interval_s`` it asks the dock
sense (``hw/dock.py``) whether the camera is docked and, if so, offloads what is pending, protected
recordings first, oldest first, then those signed with a former key, newest first. A recording the camera cannot read (a file the manifest lists is
missing or not a file, an I/O error: a damaged card) is skipped with an alarm, its reason kept in
telemetry (``offload.error``, ``offload.skipped``), and tried again after a backoff; it never stops
the others, nor the model fetch after them. Every round first gives base the key hand-overs the
camera made at re-provisioning (``footage/handover.py``) until base holds them. A recording base holds
back (``awaiting_successor``: it is signed with a retired device key and base cannot place it on the
key's chain yet) is tried again in the same round, newest first, once the others are offloaded; one
refused for its retired key (``retired_key``) too, once, and then in later rounds with backoff (base
may place it later: an operator's ``keys accept-chain``), never only after a restart.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import ssl
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bodycam.device.clock import Clock, rfc3339_ms
from bodycam.device.errors import BodycamError, ConfigError
from bodycam.device.footage.handover import former_heads, read_handovers
from bodycam.device.footage.offload_state import (
    confirmation_problem,
    is_offloaded,
    mark_offloaded,
)
from bodycam.device.footage.seal import MANIFEST_FILE, MARKERS_FILE
from bodycam.device.hw.gpio import PinFactory
from bodycam.device.identity import TrustedKeys, trusted_keys
from bodycam.device.safe_load import loads_untrusted
from bodycam.device.settings import require
from bodycam.device.uplink.markers import JSON, MarkerSigner
from bodycam.device.uplink.offload_wire import (
    AWAITING_SUCCESSOR,
    H_DEVICE,
    H_KEY,
    H_SHA,
    H_SIG,
    MAX_CHUNK,
    PREFIX,
    RETIRED_KEY,
    request_bytes,
    sha256_hex,
)

if TYPE_CHECKING:
    from bodycam.device.model_store import ModelStore
    from bodycam.device.uplink.model_fetch import ModelFetcher

log = logging.getLogger(__name__)

DockKind = Literal["reachable", "gpio", "schedule", "always"]


@dataclass(frozen=True)
class OffloadConfig:
    enabled: bool = False
    url: str = ""  # base's web app, e.g. https://base.example:8443
    ca_file: str = ""  # PEM of the CA that signed base's certificate ("" = the system's CAs)
    # PEM public keys of base's custody keys, which sign its confirmations ("" = <data_dir>/identity/trusted-custody)
    trusted_keys_dir: str = ""
    chunk_kib: int = 1024
    # when the camera counts as docked: base answers on its port ("reachable"), a dock-sense pin
    # ("gpio": gpio pin dock_pin, active level dock_active_low), inside a UTC window of
    # "schedule" ("HH:MM-HH:MM", may cross midnight), or "always"
    dock: DockKind = "reachable"
    dock_pin: int | None = None
    dock_active_low: bool = True
    schedule: list[str] = field(default_factory=list)
    interval_s: float = 30.0
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        require(isinstance(self.trusted_keys_dir, str), "offload.trusted_keys_dir", "must be a path")
        if self.enabled:
            parts = urlsplit(self.url)
            require(parts.scheme == "https" and bool(parts.hostname), "offload.url",
                    f"must be https://host[:port] of base's web app, got {self.url!r}")
        require(1 <= self.chunk_kib <= MAX_CHUNK // 1024, "offload.chunk_kib",
                f"must be 1..{MAX_CHUNK // 1024}, got {self.chunk_kib}")
        require(self.dock != "gpio" or self.dock_pin is not None, "offload.dock_pin",
                "dock = \"gpio\" needs dock_pin (BCM)")
        require(self.dock_pin is None or 0 <= self.dock_pin <= 27, "offload.dock_pin",
                f"BCM pin must be 0..27, got {self.dock_pin}")
        require(self.dock != "schedule" or bool(self.schedule), "offload.schedule",
                "dock = \"schedule\" needs at least one \"HH:MM-HH:MM\" window")
        for w in self.schedule:
            from bodycam.device.hw.dock import parse_window

            parse_window(w, "offload.schedule")
        # both reach a wait/socket timeout, which raises OverflowError for huge values (killing the thread)
        for name, most in (("interval_s", 86400.0), ("timeout_s", 600.0)):
            v = getattr(self, name)
            require(math.isfinite(v) and 0 < v <= most, f"offload.{name}", f"must be more than 0 and at most {most:g} s, got {v}")


class OffloadError(BodycamError):
    """An upload did not end in base's confirmation; ``retry``: worth trying again later."""

    def __init__(self, message: str, *, retry: bool, codes: list[str] | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.codes = codes or []


class UnverifiedConfirmation(OffloadError):
    """Base's answer does not confirm the recording in a way the camera can verify (see the module): nothing
    marked, an alarm, the recording tried again after a backoff."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry=True, codes=["unverified_confirmation"])


def custody_keys_dir(cfg: OffloadConfig, data_dir: Path) -> Path:
    return Path(cfg.trusted_keys_dir) if cfg.trusted_keys_dir else data_dir / "identity" / "trusted-custody"


def custody_keys(cfg: OffloadConfig, data_dir: Path) -> dict[str, Ed25519PublicKey]:
    """Base's custody keys the camera trusts, by key id; a bad file is a ConfigError; none: {}."""
    return trusted_keys(custody_keys_dir(cfg, data_dir), "offload.trusted_keys_dir")


class UnreadableRecording(OffloadError):
    """A file of the recording cannot be read on the card (missing, not a file, an I/O error): this
    recording is skipped and tried again later, with backoff; the others go on."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry=True, codes=["unreadable"])


class BaseClient:
    """One HTTP(S) connection to base's offload routes (reopened after any failure)."""

    def __init__(self, url: str, device: str, signer: MarkerSigner, *, ca_file: str | None = None,
                 timeout_s: float = 30.0, context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise OffloadError(f"offload url {url!r}: not http(s)://host[:port]", retry=False)
        self.url = url
        self.device = device
        self.signer = signer
        self.timeout_s = timeout_s
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._context = context or ssl.create_default_context(cafile=ca_file or None)
        self._conn: http.client.HTTPConnection | None = None
        self.sent_bytes = 0  # request bodies handed to the connection (the resume cost is measured on it)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._context is not None:
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout_s,
                                                         context=self._context)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
        return self._conn

    def request(self, method: str, target: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
        """One signed request; the status and the JSON object of the answer ({} if it is not one)."""
        code, data = self.exchange(method, target, body)
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        return code, doc

    def signed_headers(self, method: str, target: str, body_sha256: str) -> dict[str, str]:
        """The headers that sign a request: this device, its key, the body's SHA-256 and the signature."""
        return {H_DEVICE: self.device, H_KEY: self.signer.key_id, H_SHA: body_sha256,
                H_SIG: self.signer.sign(request_bytes(method, target, body_sha256, self.device, self.signer.key_id))}

    def exchange(self, method: str, target: str, body: bytes = b"", *, limit: int | None = None) -> tuple[int, bytes]:
        """One signed request; the status and the raw answer (refused past ``limit`` bytes)."""
        headers = {**self.signed_headers(method, target, sha256_hex(body)), "Content-Type": "application/octet-stream"}
        try:
            conn = self._connection()
            self.sent_bytes += len(body)
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            size = resp.getheader("content-length")
            if limit is not None and (size is None or not size.isdigit() or int(size) > limit):
                self.close()
                raise OffloadError(f"base {self.url}: {target}: answer of {size or 'unknown'} bytes, more than the "
                                   f"{limit} expected", retry=False)
            data = resp.read()
        except ssl.SSLCertVerificationError as exc:
            self.close()
            raise OffloadError(f"base {self.url}: its certificate does not verify ({exc.verify_message}); "
                               "check offload.ca_file", retry=True) from exc
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise OffloadError(f"base {self.url}: {type(exc).__name__}: {exc}", retry=True) from exc
        if resp.getheader("connection", "").lower() == "close":
            self.close()
        return resp.status, data

    def _path(self, recording: str, *rest: str) -> str:
        return "/".join((PREFIX, "recordings", quote(self.device, safe=""), quote(recording, safe=""), *rest))

    def status(self, recording: str) -> dict[str, Any]:
        return self._expect(200, *self.request("GET", self._path(recording)), "status")

    def put(self, recording: str, name: str, offset: int, chunk: bytes) -> int:
        """Send one chunk; returns how many bytes of the file base holds now."""
        code, doc = self.request("PUT", self._path(recording, quote(name, safe="")) + f"?offset={offset}", chunk)
        if code == 409 and isinstance(doc.get("received"), int):
            return int(doc["received"])
        return int(self._expect(200, code, doc, f"{name} at {offset}")["received"])

    def confirm(self, recording: str) -> dict[str, Any]:
        return self._expect(200, *self.request("POST", self._path(recording, "confirm")), "confirm")

    def handover(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Give base a key hand-over record (``footage/handover.py``)."""
        body = json.dumps(doc, sort_keys=True).encode("utf-8")
        target = "/".join((PREFIX, "handover", quote(self.device, safe="")))
        return self._expect(200, *self.request("PUT", target, body), "hand-over")

    def _expect(self, want: int, code: int, doc: dict[str, Any], what: str) -> dict[str, Any]:
        if code == want:
            return doc
        codes = [str(c) for c in doc.get("refused", [])] if isinstance(doc.get("refused"), list) else []
        reason = str(doc.get("reason") or f"HTTP {code}")
        retry = code >= 500 or code == 409 or code == 408 or code == 429
        raise OffloadError(f"base refused {what} ({code} {', '.join(codes) or '-'}): {reason}", retry=retry,
                           codes=codes)


def recording_files(rec_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """The files to upload: the signed manifest, the markers (whenever the manifest signs a markers hash,
    so a markers file lost on the card is found unreadable) and chapters if any, every listed segment."""
    names = [MANIFEST_FILE]
    names += [n for n in (MARKERS_FILE, "chapters.vtt")
              if (rec_dir / n).is_file() or (n == MARKERS_FILE and manifest.get("markers_sha256"))]
    names += [str(s["file"]) for s in manifest.get("segments") or [] if isinstance(s, dict) and "file" in s]
    return names


def _unreadable(rec_dir: Path, name: str, exc: OSError | str) -> UnreadableRecording:
    why = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc.strerror or exc}"
    return UnreadableRecording(f"{rec_dir.name}: cannot read {name} on the card ({why}): recording skipped, "
                               "tried again later")


def _readable(rec_dir: Path, name: str) -> int:
    """The size of a regular file of the recording; :class:`UnreadableRecording` when it is not one."""
    try:
        st = (rec_dir / name).stat()
    except OSError as exc:
        raise _unreadable(rec_dir, name, exc) from exc
    if not stat.S_ISREG(st.st_mode):
        raise _unreadable(rec_dir, name, "not a regular file")
    return st.st_size


def pending(root: Path, trusted: TrustedKeys, current_key: str | None = None) -> list[Path]:
    """Finished recordings without a confirmation that verifies (``trusted``: the custody keys): protected
    first, then oldest first; with ``current_key`` (the camera's key id), the recordings signed with another
    key (a former one: base takes them on the chain its hand-over ends) after those, newest first, so each
    finds the one after it at base."""
    out: list[tuple[bool, str, Path]] = []
    former: list[Path] = []
    try:
        dirs = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return []
    for d in dirs:
        try:
            doc = loads_untrusted((d / MANIFEST_FILE).read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("complete") is True and not is_offloaded(d, trusted):
            if current_key is not None and doc.get("key") not in (None, current_key):
                former.append(d)
            else:
                out.append((not doc.get("protected", False), d.name, d))
    return [d for _, _, d in sorted(out)] + sorted(former, reverse=True)


class Offloader:
    def __init__(self, client: BaseClient, *, trusted: TrustedKeys, chunk_bytes: int = 1024 * 1024,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        """``trusted``: base's custody keys by id; a confirmation must be signed by one of them."""
        self.client = client
        self.trusted = trusted
        self.chunk = chunk_bytes
        self.wall_ns = wall_ns

    def upload(self, rec_dir: Path) -> dict[str, Any]:
        """Upload one recording and mark it offloaded once base confirms it; returns the confirmation.

        Raises :class:`OffloadError` (nothing marked) on any failure; :class:`UnverifiedConfirmation` when
        the answer does not verify."""
        rid = rec_dir.name
        try:
            mbytes = (rec_dir / MANIFEST_FILE).read_bytes()
            manifest = loads_untrusted(mbytes)
        except (OSError, ValueError) as exc:
            raise OffloadError(f"{rec_dir}: cannot read the manifest ({exc})", retry=False) from exc
        if manifest.get("complete") is not True:
            raise OffloadError(f"{rid}: not finished yet", retry=True)
        names = recording_files(rec_dir, manifest)
        state = self.client.status(rid)
        refused = state.get("refused")
        if state.get("state") != "stored" and isinstance(refused, dict) and \
                refused.get("manifest_sha256") == sha256_hex(mbytes):
            codes = [str(c) for c in refused.get("codes") or []]
            raise OffloadError(f"{rid}: base refused this manifest before and would again ({', '.join(codes)}: "
                               f"{refused.get('reason')}): not sent again until that changes", retry=False,
                               codes=codes)
        if state.get("state") != "stored":
            for name in names:  # before anything is sent: a damaged card uploads nothing of this recording
                _readable(rec_dir, name)
            files = state.get("files")
            held: dict[str, Any] = files if isinstance(files, dict) else {}
            for name in names:
                have = held.get(name, 0)
                self._send(rec_dir, name, have if isinstance(have, int) else 0)
            conf: Any = self.client.confirm(rid)
        else:
            conf = state.get("confirmation")
        problem = confirmation_problem(rec_dir, conf, self.trusted)
        if problem is not None:
            raise UnverifiedConfirmation(f"{rid}: the confirmation from {self.client.url} does not verify: {problem}; "
                                         "NOT marked offloaded (the footage stays on the card): is it base?")
        assert isinstance(conf, dict)
        mark_offloaded(rec_dir, self.client.url, rfc3339_ms(self.wall_ns()), conf)
        log.info("offload: %s confirmed by base (%d segment(s))", rid, len(conf["segments"]))
        return conf

    def _send(self, rec_dir: Path, name: str, have: int) -> None:
        path = rec_dir / name
        size = _readable(rec_dir, name)
        if have > size:  # base holds more than the file (a different file once?): start it again
            have = 0
        if size == 0 and have == 0:
            self.client.put(rec_dir.name, name, 0, b"")
            return
        try:
            fh = path.open("rb")
        except OSError as exc:
            raise _unreadable(rec_dir, name, exc) from exc
        with fh:
            while have < size:
                want = min(self.chunk, size - have)
                try:
                    fh.seek(have)
                    chunk = fh.read(want)
                except OSError as exc:  # EIO on a damaged card
                    raise _unreadable(rec_dir, name, exc) from exc
                if len(chunk) != want:
                    raise _unreadable(rec_dir, name, f"{have + len(chunk)} of its {size} bytes")
                have = self.client.put(rec_dir.name, name, have, chunk)


def build_service(cfg: OffloadConfig, device: str, signer: MarkerSigner, clock: Clock, recordings: Path,
                  pins: PinFactory | None = None, models: ModelStore | None = None, *,
                  trusted: TrustedKeys) -> OffloadService:
    """The firmware's offload thread from ``[offload]`` (not started); config problems are ConfigErrors.

    ``trusted``: base's custody keys (:func:`custody_keys`); none is an alarm, not an error (see the
    module). ``models``: the camera's model store; while docked, approved models are fetched from base
    into it (``uplink/model_fetch.py``)."""
    from bodycam.device.hw.dock import AlwaysDock, DockSense, GpioDock, ReachableDock, ScheduleDock

    try:
        client = BaseClient(cfg.url, device, signer, ca_file=cfg.ca_file or None, timeout_s=cfg.timeout_s)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"offload.ca_file: cannot use {cfg.ca_file!r} ({exc})") from exc
    if not cfg.ca_file:
        # confirmations are signed by base's custody key, so an impostor cannot make the camera delete
        # footage; but it would receive the uploads (footage encrypted at rest stays ciphertext)
        log.warning("offload.ca_file is empty: base is trusted on any public CA's certificate for %s, which would "
                    "receive the uploads; set it to the CA that signed base's certificate", urlsplit(cfg.url).hostname)
    dock: DockSense
    if cfg.dock == "gpio":
        if pins is None or cfg.dock_pin is None:
            raise ConfigError("offload.dock = \"gpio\": no GPIO on this camera (gpio.enabled = false?)")
        dock = GpioDock(pins, cfg.dock_pin, clock, active_low=cfg.dock_active_low)
    elif cfg.dock == "schedule":
        dock = ScheduleDock(cfg.schedule, clock)
    elif cfg.dock == "reachable":
        parts = urlsplit(cfg.url)
        dock = ReachableDock(parts.hostname or "", parts.port or 443)
    else:
        dock = AlwaysDock()
    offloader = Offloader(client, trusted=trusted, chunk_bytes=cfg.chunk_kib * 1024, wall_ns=clock.wall_ns)
    fetcher = None
    if models is not None:
        from bodycam.device.uplink.model_fetch import ModelFetcher

        fetcher = ModelFetcher(client, models)
    return OffloadService(offloader, recordings, dock.docked, interval_s=cfg.interval_s, models=fetcher)


@dataclass(frozen=True)
class Skipped:
    """A recording the service skips until ``next_try`` (its ``monotonic`` clock): why, how many times."""

    reason: str
    failures: int
    next_try: float


class OffloadService:
    """The firmware's offload thread: when docked, offload what is pending."""

    def __init__(self, offloader: Offloader, recordings: Path, docked: Callable[[], bool], *,
                 interval_s: float = 30.0, models: ModelFetcher | None = None,
                 monotonic: Callable[[], float] = time.monotonic, backoff_max_s: float = 3600.0) -> None:
        self.offloader = offloader
        self.models = models
        self.recordings = recordings
        self.docked = docked
        self.interval_s = interval_s
        self.monotonic = monotonic
        self.backoff_max_s = backoff_max_s
        self.last_error: str | None = None
        self.confirmed: list[str] = []
        self.skipped: dict[str, Skipped] = {}  # recording -> why it is skipped and until when
        self.unverified: dict[str, str] = {}  # recording -> why its confirmation does not verify (the alarm)
        self.awaiting: dict[str, str] = {}  # recording -> base holds it until it has the one after it
        self._refused: set[str] = set()
        self._handed: set[str] = set()  # old key ids whose hand-over base holds (footage/handover.py)
        self.handover_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.untrusted: str | None = None
        if not offloader.trusted:
            self.untrusted = ("no trusted custody key (offload.trusted_keys_dir; 'bodycam offload trust KEY.pub'): "
                              "recordings are uploaded but never marked offloaded, so retention keeps them")
            log.error("ALARM offload: %s", self.untrusted)

    @property
    def alarm(self) -> str | None:
        """What makes offload unsafe to trust: no custody key, or a confirmation that does not verify."""
        if self.untrusted is not None:
            return self.untrusted
        return next(iter(self.unverified.values()), None)

    def run_once(self) -> int:
        """Offload what is pending if docked; returns how many recordings base confirmed.

        A recording the camera cannot read (:class:`UnreadableRecording`), whose confirmation does not
        verify (:class:`UnverifiedConfirmation`: also the alarm), or whose upload fails in an unexpected
        way, is skipped and tried again after a backoff (``interval_s``, doubling, at most
        ``backoff_max_s``); the round goes on with the next one. Its reason stays in ``last_error`` and
        telemetry (``offload.skipped``) until it is offloaded. Recordings base holds back
        (``awaiting_successor``) are tried again at the end of the round, newest first, as long as the
        round confirms something."""
        if not self.docked():
            return 0
        self._send_handovers()
        done = 0
        waiting: list[Path] = []
        todo = pending(self.recordings, self.offloader.trusted, self.offloader.client.signer.key_id)
        for rid in set(self.unverified) - {r.name for r in todo}:  # offloaded since, or gone: no alarm for it
            del self.unverified[rid]
        for rec in todo:
            if self._stop.is_set():
                break
            if rec.name in self._refused:
                continue
            skip = self.skipped.get(rec.name)
            if skip is not None and self.monotonic() < skip.next_try:
                continue
            outcome = self._one(rec)
            if outcome == "stop":
                break
            done += outcome == "confirmed"
            if outcome in ("awaiting", "held"):
                waiting.append(rec)
        progress = done > 0
        while waiting and progress and not self._stop.is_set():  # the recording after each may be at base now
            progress = False
            for rec in sorted(waiting, key=lambda r: r.name, reverse=True):
                outcome = self._one(rec)
                if outcome == "stop":
                    waiting = []
                    break
                if outcome != "awaiting":
                    waiting.remove(rec)
                    progress = progress or outcome == "confirmed"
                    done += outcome == "confirmed"
        if self.models is not None and not self._stop.is_set():  # recordings first: evidence before models
            from bodycam.device.uplink.model_fetch import fetch_models

            fetch_models(self.models)
        return done

    def _send_handovers(self) -> None:
        """Give base the key hand-overs this camera made (``footage/handover.py``) until it holds them, before
        any recording: base takes a retired key's recordings only on the chain its hand-over ends."""
        handovers = read_handovers(self.recordings.parent)
        mine = former_heads(handovers, self.offloader.client.signer.key_id)
        for h in handovers:
            if h.old_key not in mine or h.old_key in self._handed or self._stop.is_set():
                continue
            try:
                self.offloader.client.handover(h.doc)
            except OffloadError as exc:
                self.handover_error = f"hand-over of key {h.old_key}: {exc}"
                log.error("offload: %s", self.handover_error)
                continue
            self._handed.add(h.old_key)
            self.handover_error = None
            log.info("offload: base holds the hand-over of key %s", h.old_key)

    def _one(self, rec: Path) -> Literal["confirmed", "awaiting", "held", "next", "stop"]:
        """Offload one recording: confirmed; awaiting (base holds it back); held (refused for its retired key:
        tried again after progress in this round, and later with backoff); next (skipped, refused: go on
        with the others); stop (base unreachable, full or busy: the round ends)."""
        self.awaiting.pop(rec.name, None)
        try:
            self.offloader.upload(rec)
        except (UnreadableRecording, UnverifiedConfirmation) as exc:
            if isinstance(exc, UnverifiedConfirmation):
                self.unverified[rec.name] = str(exc)
            self._skip(rec.name, str(exc))
            return "next"
        except OffloadError as exc:
            if AWAITING_SUCCESSOR in exc.codes:
                self.awaiting[rec.name] = str(exc)
                log.info("offload: %s", exc)
                return "awaiting"
            if RETIRED_KEY in exc.codes:  # base may place it later (its chain, an operator's word): not final
                self._skip(rec.name, str(exc))
                return "held"
            self.last_error = str(exc)
            log.error("offload: %s", exc)
            if not exc.retry:  # refused by base: not again until the next start (it stays on the card)
                self._refused.add(rec.name)
                return "next"
            return "stop"
        except Exception as exc:  # never let one recording end the round
            log.exception("offload: %s: unexpected error", rec.name)
            self._skip(rec.name, f"{rec.name}: unexpected error ({type(exc).__name__}: {exc}): recording "
                                 "skipped, tried again later")
            return "next"
        self.confirmed.append(rec.name)
        self.skipped.pop(rec.name, None)
        self.unverified.pop(rec.name, None)
        self.last_error = self._skipped_error()
        return "confirmed"

    def _skip(self, rid: str, reason: str) -> None:
        prev = self.skipped.get(rid)
        failures = 1 if prev is None else prev.failures + 1
        delay = min(self.interval_s * 2 ** min(failures - 1, 30), self.backoff_max_s)
        self.skipped[rid] = Skipped(reason, failures, self.monotonic() + delay)
        self.last_error = reason
        log.error("ALARM offload: %s (failure %d, next try in %.0f s)", reason, failures, delay)

    def _skipped_error(self) -> str | None:
        """What still blocks a recording (so a later success does not hide it), else None."""
        return next((s.reason for s in self.skipped.values()), None)

    def telemetry(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"confirmed": len(self.confirmed), "error": self.last_error}
        if self.alarm is not None:
            out["alarm"] = self.alarm
        if self.skipped:
            out["skipped"] = {rid: {"reason": s.reason, "failures": s.failures} for rid, s in self.skipped.items()}
        if self.awaiting:
            out["awaiting"] = list[JSON](sorted(self.awaiting))
        if self.handover_error is not None:
            out["handover"] = self.handover_error
        if self.models is not None:
            out["models"] = {"installed": len(self.models.installed), "error": self.models.last_error}
        return out

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.run_once()
                except Exception:  # the thread must not die: log and go on
                    log.exception("offload: unexpected error")
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=loop, name="offload", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.offloader.client.timeout_s + 5)
            self._thread = None
        self.offloader.client.close()
