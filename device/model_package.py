"""A model package: a model approved at base, signed by base, as the camera receives it.

A package is a directory::

    package.json            the manifest, signed by base's model-signing key
    shotnet.tflite          the model
    shotnet.json            its sidecar (``bodycam.model/1``, with a ``selftest`` entry)
    shotnet.selftest.npz    the self-test windows (device/detect/selftest.py)
    [shotnet_edgetpu.tflite the Edge TPU compilation, when the sidecar names one]

The manifest (schema ``bodycam.model-package/1``)::

    {"schema": "bodycam.model-package/1", "name": "shotnet", "version": "1.1.0",
     "task": "gunshot-visual", "model": "shotnet.tflite",
     "files": {"shotnet.tflite": "<sha256>", "shotnet.json": "<sha256>", ...},
     "approved_by": "ada", "approved_at": "2026-11-29T15:00:00Z", "metrics": {...},
     ["rollback": true,]
     "key_id": "<16 hex>", "sig": "<base64 Ed25519 over the RFC 8785 bytes of the rest>"}

``rollback`` (optional, added compatibly: absent means false; a package without it is byte for byte
what earlier versions wrote) marks a package base approved as an explicit downgrade
(``bodycam-base model approve --rollback``). **Anti-rollback** on the camera (:func:`replace_problem`,
used by ``model_store.install``): a package of the same model name replaces the active (or pending)
one only with a higher version (:func:`version_key`: dotted numbers compared numerically, an optional
``-suffix`` below the same numbers without it), or the same version with the
same files; a package of another name only when approved later. A rollback package is accepted over
any of them, but only when approved later than the package it replaces, so an old rollback package
replayed after a newer approval is refused too.

The camera trusts a package only when the signature is by a key it was given at provisioning
(``[models] trusted_keys``), every listed file matches its hash, the listed set is exactly the
model, its sidecar, the self-test file and (if named) the Edge TPU file, and the sidecar loads
through the firmware's own loader with the same name and version. Signing uses the same
canonical form as markers (RFC 8785), so any language can verify it (``signed_doc.py``).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bodycam.device.clock import parse_rfc3339
from bodycam.device.detect.model_spec import load_model_spec, sha256_file, sidecar_path
from bodycam.device.detect.selftest import parse_selftest
from bodycam.device.errors import BodycamError, ModelError
from bodycam.device.identity import Signer
from bodycam.device.safe_load import load_json
from bodycam.device.signed_doc import sign_document, signature_problem
from bodycam.device.uplink.markers import jcs

SCHEMA = "bodycam.model-package/1"
MANIFEST = "package.json"
_MAX_FILES = 8


class PackageError(ModelError):
    """A model package that must not be installed (unsigned, tampered, incomplete, wrong)."""


@dataclass(frozen=True)
class PackageInfo:
    name: str
    version: str
    task: str
    model: str
    files: dict[str, str]
    approved_by: str
    approved_at: str
    key_id: str
    raw: dict[str, Any]
    rollback: bool = False  # base approved it as an explicit downgrade

    @property
    def package_id(self) -> str:
        """Names the package by its model's hash (stable across re-signing)."""
        return f"{self.name}-{self.version}-{self.files[self.model][:12]}"


def required_files(model_path: Path) -> list[str]:
    """The files a package of ``model_path`` carries: model, sidecar, self-test, [Edge TPU model]."""
    spec = load_model_spec(model_path)
    st = parse_selftest(spec.raw, str(sidecar_path(model_path)))
    if st is None:
        raise PackageError(f"{model_path}: the sidecar has no self-test; run 'bodycam-model selftest {model_path}'")
    names = [model_path.name, sidecar_path(model_path).name, st.file]
    if spec.edgetpu_file:
        names.append(spec.edgetpu_file)
    return names


def _plain(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".") and name != MANIFEST


def make_package(model_path: Path, out: Path, signer: Signer, *, approved_by: str, approved_at: str,
                 metrics: Mapping[str, Any] | None = None, rollback: bool = False) -> PackageInfo:
    """Copy the model's files into the new directory ``out`` and write the signed manifest."""
    model_path = Path(model_path)
    spec = load_model_spec(model_path)
    names = required_files(model_path)
    if out.exists():
        raise PackageError(f"{out}: already exists; choose a new directory for the package")
    out.mkdir(parents=True)
    files: dict[str, str] = {}
    for name in names:
        src = model_path.parent / name
        if not src.is_file():
            raise PackageError(f"{src}: listed by the sidecar but missing")
        shutil.copyfile(src, out / name)
        files[name] = sha256_file(out / name)
    body: dict[str, Any] = {
        "schema": SCHEMA, "name": spec.name, "version": spec.version, "task": spec.task, "model": model_path.name,
        "files": files, "approved_by": approved_by, "approved_at": approved_at,
        "metrics": dict(metrics) if metrics else {},
    }
    if rollback:
        body["rollback"] = True
    body = sign_document(body, signer)  # adds key_id and sig
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_bytes(jcs(body) + b"\n")
    tmp.replace(out / MANIFEST)
    return _info(body)


def _info(body: dict[str, Any]) -> PackageInfo:
    return PackageInfo(name=body["name"], version=body["version"], task=body["task"], model=body["model"],
                       files=dict(body["files"]), approved_by=body["approved_by"], approved_at=body["approved_at"],
                       key_id=body["key_id"], raw=body, rollback=body.get("rollback") is True)


_VERSION = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,9}){0,3})(?:-([0-9A-Za-z.-]{1,64}))?")


def version_key(version: str) -> tuple[Any, ...] | None:
    """A model version ``N[.N[.N[.N]]][-suffix]`` as a sortable key: numbers compared numerically, and, as
    in semantic versioning, a version with a suffix (``2.0.0-range``) below the same one without it
    (suffixes compared as text); None for another form (not comparable)."""
    m = _VERSION.fullmatch(version)
    if m is None:
        return None
    parts = [int(x) for x in m.group(1).split(".")]
    suffix = m.group(2)
    return (tuple(parts + [0] * (4 - len(parts))), 0 if suffix else 1, suffix or "")


def _approved_ns(info: PackageInfo) -> int | None:
    try:
        return parse_rfc3339(info.approved_at)
    except (ValueError, BodycamError):
        return None


def replace_problem(new: PackageInfo, current: PackageInfo) -> str | None:
    """Why ``new`` must not replace ``current`` on a camera (a downgrade base did not mark as a rollback), or
    None when it may (see the module's doc)."""
    if new.package_id == current.package_id and new.files == current.files:
        return None  # the same package again
    was = f"{current.name} {current.version} ({current.package_id}, approved {current.approved_at})"
    later = (a := _approved_ns(new)) is not None and (b := _approved_ns(current)) is not None and a > b
    if new.rollback:
        return None if later else (f"a rollback approved at {new.approved_at}, not after {was}: an old rollback "
                                   "package replayed?")
    if new.name != current.name:
        return None if later else f"approved at {new.approved_at}, not after {was}, and not marked as a rollback"
    vn, vc = version_key(new.version), version_key(current.version)
    if vn is None or vc is None:
        return f"version {new.version!r} cannot be compared with {was} (dotted numbers only) and is not a rollback"
    if vn < vc:
        return f"version {new.version} is lower than {was}, and base did not mark it as a rollback"
    if vn == vc:
        return f"the same version as {was} with other files, and base did not mark it as a rollback"
    return None


def _field(body: dict[str, Any], key: str, where: str) -> str:
    v = body.get(key)
    if not isinstance(v, str) or not v:
        raise PackageError(f"{where}: '{key}' is missing or not a string")
    return v


def verify_package(folder: Path, trusted: Mapping[str, Ed25519PublicKey]) -> PackageInfo:
    """Check a received package completely; PackageError names the first problem found."""
    where = str(folder / MANIFEST)
    body = load_json(folder / MANIFEST, "model package manifest", error=PackageError)
    if not isinstance(body, dict):
        raise PackageError(f"{where}: the manifest must be a JSON object")
    if body.get("schema") != SCHEMA:
        raise PackageError(f"{where}: schema is {body.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("name", "version", "task", "model", "approved_by", "approved_at", "key_id", "sig"):
        _field(body, key, where)
    if "rollback" in body and not isinstance(body["rollback"], bool):
        raise PackageError(f"{where}: 'rollback' must be true or false")
    problem = signature_problem(body, trusted, what="model-signing key")
    if problem is not None:
        raise PackageError(f"{where}: {problem}")
    files = body.get("files")
    if not isinstance(files, dict) or not files or len(files) > _MAX_FILES:
        raise PackageError(f"{where}: 'files' must list 1..{_MAX_FILES} files")
    for name, digest in files.items():
        if not isinstance(name, str) or not _plain(name) or not isinstance(digest, str) or len(digest) != 64:
            raise PackageError(f"{where}: bad file entry {name!r}")
        path = folder / name
        if not path.is_file():
            raise PackageError(f"{path}: listed in the manifest but missing")
        actual = sha256_file(path)
        if actual != digest:
            raise PackageError(f"{path}: SHA-256 {actual[:12]}... does not match the manifest ({digest[:12]}...)")
    model = folder / body["model"]
    if body["model"] not in files:
        raise PackageError(f"{where}: the model {body['model']!r} is not among the signed files")
    try:
        wanted = required_files(model)
        spec = load_model_spec(model)
    except PackageError:
        raise
    except ModelError as exc:
        raise PackageError(f"{folder}: the packaged model does not load: {exc}") from exc
    if sorted(wanted) != sorted(files):
        raise PackageError(f"{where}: signed files {sorted(files)} are not the model's set {sorted(wanted)}")
    if (spec.name, spec.version, spec.task) != (body["name"], body["version"], body["task"]):
        raise PackageError(f"{where}: names {body['name']} {body['version']} ({body['task']}) but the sidecar says "
                           f"{spec.name} {spec.version} ({spec.task})")
    return _info(body)


def package_digest(folder: Path) -> str:
    """SHA-256 of the manifest as received (what base's registry and the camera's log name)."""
    return hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()


__all__ = ["MANIFEST", "SCHEMA", "PackageError", "PackageInfo", "make_package", "package_digest", "replace_problem",
           "required_files", "verify_package", "version_key"]
