"""Models from base at the dock (issue 15, item 4): fetch approved packages into the model store.

While docked, after the recordings are offloaded, the offload thread asks base which model
packages it offers (``GET /api/offload/v1/models/<device>``, signed like every offload request;
``base/model_delivery.py``). A package of the task this camera's store serves (the video model,
``gunshot-visual``) that the store does not already hold as active or pending, and has not
rejected, is downloaded file by file into ``<data_dir>/models/incoming/<package id>/`` (each file
checked against the size and SHA-256 base announced), then installed with
:meth:`bodycam.device.model_store.ModelStore.install`, which verifies base's signature, every
hash and the sidecar and makes it *pending*. The firmware activates it at its next idle moment and
runs its self-test there; a package that fails is rejected and never fetched again. A download
that fails leaves nothing installed; a package base's signature does not cover is refused once
and not asked for again until the next start.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from typing import Any
from urllib.parse import quote

from bodycam.device.errors import BodycamError, StorageError
from bodycam.device.model_package import MANIFEST, PackageError
from bodycam.device.model_store import ModelStore
from bodycam.device.uplink.offload import BaseClient, OffloadError
from bodycam.device.uplink.offload_wire import PREFIX

log = logging.getLogger(__name__)

VIDEO_TASK = "gunshot-visual"  # what the model store serves (device/model_select.py resolves the video model)
MAX_FILE = 64 * 1024 * 1024  # a model file larger than this is not a model this camera can run
MAX_FILES = 9  # the package's files and its manifest


def _plain(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".") and len(name) <= 128


class ModelFetcher:
    def __init__(self, client: BaseClient, store: ModelStore, *, task: str = VIDEO_TASK) -> None:
        self.client = client
        self.store = store
        self.task = task
        self.incoming = store.root / "incoming"
        self.installed: list[str] = []
        self.last_error: str | None = None
        self._refused: set[str] = set()

    def run_once(self) -> str | None:
        """Fetch and install what base offers and this camera lacks; returns the package made pending."""
        code, doc = self.client.request("GET", f"{PREFIX}/models/{quote(self.client.device, safe='')}")
        if code == 404:
            return None  # a base without model delivery
        if code != 200 or not isinstance(doc.get("packages"), list):
            raise OffloadError(f"base {self.client.url}: model offer: HTTP {code} {doc.get('reason') or ''}".rstrip(),
                               retry=True)
        st = self.store.status()
        have = {st["active"], st["pending"]} | {r.get("package") for r in st["rejected"]}
        for offer in doc["packages"][:8]:
            if not isinstance(offer, dict) or offer.get("task") != self.task:
                continue
            pid = offer.get("package_id")
            if not isinstance(pid, str) or not _plain(pid) or pid in have or pid in self._refused:
                continue
            try:
                self._fetch(pid, offer)
                info = self.store.install(self.incoming / pid)
            except PackageError as exc:  # base offered something this camera must not run
                self._refused.add(pid)
                self.last_error = f"model {pid} refused: {exc}"
                log.error("ALARM model from base: %s", self.last_error)
                continue
            finally:
                shutil.rmtree(self.incoming / pid, ignore_errors=True)
            self.installed.append(info.package_id)
            self.last_error = None
            log.info("model %s %s (%s) from base, approved by %s: pending, activated at the next idle moment",
                     info.name, info.version, info.package_id, info.approved_by)
            return info.package_id
        return None

    def _fetch(self, pid: str, offer: dict[str, Any]) -> None:
        files = offer.get("files")
        if not isinstance(files, dict) or MANIFEST not in files or len(files) > MAX_FILES:
            raise PackageError(f"base's offer of {pid}: no file list with {MANIFEST}")
        folder = self.incoming / pid
        shutil.rmtree(folder, ignore_errors=True)
        try:
            folder.mkdir(parents=True)
        except OSError as exc:
            raise StorageError(f"{folder}: cannot make the download folder ({exc.strerror or exc})") from exc
        for name, meta in files.items():
            if not isinstance(name, str) or not _plain(name) or not isinstance(meta, dict):
                raise PackageError(f"base's offer of {pid}: bad file entry {name!r}")
            size, sha = meta.get("size"), meta.get("sha256")
            if not isinstance(size, int) or not 0 <= size <= MAX_FILE or not isinstance(sha, str):
                raise PackageError(f"base's offer of {pid}: {name}: bad size or hash")
            target = f"{PREFIX}/models/{quote(self.client.device, safe='')}/{quote(pid, safe='')}/{quote(name, safe='')}"
            code, data = self.client.exchange("GET", target, limit=size)
            if code != 200:
                raise OffloadError(f"base {self.client.url}: {pid}/{name}: HTTP {code}", retry=True)
            if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
                raise OffloadError(f"base {self.client.url}: {pid}/{name}: not the announced file (size or "
                                   "SHA-256 differs): try again", retry=True)
            try:
                (folder / name).write_bytes(data)
            except OSError as exc:
                raise StorageError(f"{folder / name}: cannot write ({exc.strerror or exc})") from exc

    def telemetry(self) -> dict[str, Any]:
        return {"installed": len(self.installed), "error": self.last_error}


def fetch_models(fetcher: ModelFetcher) -> None:
    """One round for the offload thread: every failure logged and kept for telemetry, never raised."""
    try:
        fetcher.run_once()
    except BodycamError as exc:
        fetcher.last_error = str(exc)
        log.error("model from base: %s", exc)


__all__ = ["MAX_FILE", "VIDEO_TASK", "ModelFetcher", "fetch_models"]
