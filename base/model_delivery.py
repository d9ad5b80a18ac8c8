"""Models to the cameras at the dock (issue 15, item 4): what base offers and the files it serves.

At the dock the camera's offload thread (``device/uplink/model_fetch.py``) asks base, over the same
signed requests as the offload (``base/offload_api.py``), which model packages it should have, and
downloads the ones it lacks. Base offers the newest approved package of each task
(``bodycam-base model approve`` writes and records it). Before offering or serving a package,
base checks that its manifest on base's disk is still the one recorded at approval (its SHA-256):
a package changed on base's disk is not offered, and says so in the log. The camera verifies the
package again in full (base's signature, every file's hash, the sidecar, then the self-test on its
own runtime) before it uses it; base's check only keeps base from serving what it did not approve.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bodycam.base.model_registry import ModelRegistry, RegisteredModel
from bodycam.device.errors import ModelError
from bodycam.device.model_package import MANIFEST, PackageInfo, package_digest
from bodycam.device.safe_load import load_json

log = logging.getLogger(__name__)


class NotOffered(ModelError):
    """A package or file base does not serve (unknown, not approved, changed on base's disk)."""


@dataclass(frozen=True)
class Offer:
    model: RegisteredModel
    folder: Path
    package_id: str
    files: dict[str, dict[str, Any]]  # name -> {"sha256", "size"}, the manifest included

    def as_json(self) -> dict[str, Any]:
        return {"package_id": self.package_id, "name": self.model.name, "version": self.model.version,
                "task": self.model.task, "approved_by": self.model.approved_by,
                "package_sha256": self.model.package_sha256, "files": self.files}


class ModelShelf:
    """The approved packages base hands out (read from the registry at every request: no cache)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def offers(self) -> list[Offer]:
        out: list[Offer] = []
        for model, folder in self.registry.released():
            try:
                out.append(self._offer(model, folder))
            except NotOffered as exc:
                log.error("model delivery: %s %s not offered: %s", model.name, model.version, exc)
        return out

    def _offer(self, model: RegisteredModel, folder: Path) -> Offer:
        try:
            digest = package_digest(folder)
        except OSError as exc:
            raise NotOffered(f"{folder / MANIFEST}: cannot read the package ({exc.strerror or exc})") from exc
        if digest != model.package_sha256:
            raise NotOffered(f"{folder / MANIFEST}: SHA-256 {digest[:12]}... is not the approved package's "
                             f"({str(model.package_sha256)[:12]}...): changed on base's disk")
        body = load_json(folder / MANIFEST, "model package manifest", error=NotOffered)
        if not isinstance(body, dict) or not isinstance(body.get("files"), dict):
            raise NotOffered(f"{folder / MANIFEST}: not a package manifest")
        files: dict[str, dict[str, Any]] = {MANIFEST: {"sha256": digest, "size": (folder / MANIFEST).stat().st_size}}
        for name, sha in body["files"].items():
            try:
                size = (folder / str(name)).stat().st_size
            except OSError as exc:
                raise NotOffered(f"{folder / str(name)}: missing from the package ({exc.strerror or exc})") from exc
            files[str(name)] = {"sha256": str(sha), "size": size}
        info = PackageInfo(name=str(body.get("name")), version=str(body.get("version")), task=str(body.get("task")),
                           model=str(body.get("model")), files={str(k): str(v) for k, v in body["files"].items()},
                           approved_by="", approved_at="", key_id="", raw=body)
        if info.model not in info.files:
            raise NotOffered(f"{folder / MANIFEST}: the model is not among its files")
        return Offer(model, folder, info.package_id, files)

    def file(self, package_id: str, name: str) -> Path:
        """The path of one file of an offered package; NotOffered otherwise."""
        for offer in self.offers():
            if offer.package_id == package_id:
                if name not in offer.files:
                    raise NotOffered(f"{name!r} is not a file of package {package_id}")
                return offer.folder / name
        raise NotOffered(f"package {package_id!r} is not offered (not approved, superseded or changed on base)")


__all__ = ["ModelShelf", "NotOffered", "Offer"]
