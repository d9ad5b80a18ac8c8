"""The camera's installed models: packages received from base, which one is active, which is next.

Layout under ``<data_dir>/models``::

    packages/<package id>/   verified packages (device/model_package.py), never edited after install
    state.json               {"active": id|null, "previous": id|null, "pending": id|null,
                              "rejected": [{"package", "reason", "at_ns"}...]}
    .lock                    flock: the service and ``bodycam model ...`` change the state in turn

``install`` verifies a package (signature by a trusted key, hashes, the model's own sidecar), refuses
a downgrade of the active or pending package that base did not mark as a rollback
(``model_package.replace_problem``), verifies it again after copying it in, then makes it *pending*. The service activates a pending
model at start-up and, while running, at the next idle moment (no recording). The firmware runs
the model's self-test when it loads it: a model that fails to load or disagrees with its self-test
is *rejected* and the previous model (or the shipped one) is used; the camera never ends up
without a model. The store never deletes the active, previous or pending package.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bodycam.device.clock import Clock
from bodycam.device.errors import StorageError
from bodycam.device.model_package import PackageError, PackageInfo, replace_problem, verify_package
from bodycam.device.safe_load import load_json

MAX_REJECTED = 20


@dataclass
class StoreState:
    active: str | None = None
    previous: str | None = None
    pending: str | None = None
    rejected: list[dict[str, Any]] | None = None

    def as_json(self) -> dict[str, Any]:
        return {"active": self.active, "previous": self.previous, "pending": self.pending,
                "rejected": list(self.rejected or [])}


class ModelStore:
    def __init__(self, root: Path, trusted: Mapping[str, Ed25519PublicKey], clock: Clock) -> None:
        self.root = Path(root)
        self.trusted = dict(trusted)
        self.clock = clock

    # -- state ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[StoreState]:
        """The state under the store's lock; written back (atomically) when the block succeeds."""
        try:
            (self.root / "packages").mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"{self.root}: cannot open the model store ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state = self._read()
            before = state.as_json()
            yield state
            if state.as_json() != before:
                self._write(state)
        finally:
            os.close(fd)

    def _read(self) -> StoreState:
        path = self.root / "state.json"
        if not path.exists():
            return StoreState(rejected=[])
        raw = load_json(path, "model store state", error=StorageError)
        if not isinstance(raw, dict):
            raise StorageError(f"{path}: the model store state must be a JSON object")
        st = StoreState(rejected=[])
        for key in ("active", "previous", "pending"):
            v = raw.get(key)
            if v is not None and (not isinstance(v, str) or not (self.root / "packages" / v).is_dir()):
                v = None  # a package that is gone is no choice (the shipped model is the fallback)
            setattr(st, key, v)
        rej = raw.get("rejected")
        st.rejected = [r for r in rej if isinstance(r, dict)][-MAX_REJECTED:] if isinstance(rej, list) else []
        return st

    def _write(self, state: StoreState) -> None:
        path = self.root / "state.json"
        try:
            fd, tmp = tempfile.mkstemp(prefix=".state.", suffix=".tmp", dir=self.root)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(state.as_json(), fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            dfd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise StorageError(f"{path}: cannot write the model store state ({exc.strerror or exc})") from exc

    def status(self) -> dict[str, Any]:
        with self._locked() as st:
            return st.as_json()

    # -- paths ----------------------------------------------------------------------------------
    def model_path(self, package: str) -> Path:
        info = self.info(package)
        return self.root / "packages" / package / info.model

    def info(self, package: str) -> PackageInfo:
        return verify_package(self.root / "packages" / package, self.trusted)

    def active(self) -> str | None:
        with self._locked() as st:
            return st.active

    def pending(self) -> str | None:
        with self._locked() as st:
            return st.pending

    # -- changes --------------------------------------------------------------------------------
    def install(self, package: Path) -> PackageInfo:
        """Verify ``package``, copy it in, verify the copy, make it pending; PackageError says why not."""
        info = verify_package(Path(package), self.trusted)
        with self._locked() as st:
            for r in st.rejected or []:
                if r.get("package") == info.package_id:
                    raise PackageError(f"{package}: {info.package_id} was rejected on this camera before "
                                       f"({r.get('reason')}); base must ship a new build")
            for held in dict.fromkeys(x for x in (st.active, st.pending) if x is not None):
                try:
                    current = self.info(held)
                except PackageError:
                    continue  # a package that no longer verifies is rejected when it is loaded
                problem = replace_problem(info, current)
                if problem is not None:
                    raise PackageError(f"{package}: {info.package_id} not installed: {problem}")
            dest = self.root / "packages" / info.package_id
            if not dest.is_dir():
                partial = self.root / "packages" / f".{info.package_id}.partial"
                shutil.rmtree(partial, ignore_errors=True)
                try:
                    shutil.copytree(package, partial)
                except OSError as exc:
                    shutil.rmtree(partial, ignore_errors=True)
                    raise StorageError(f"{partial}: cannot copy the package ({exc.strerror or exc})") from exc
                try:
                    verify_package(partial, self.trusted)  # what is on the card, not what was offered
                except PackageError:
                    shutil.rmtree(partial, ignore_errors=True)
                    raise
                partial.rename(dest)
            if st.active == info.package_id:
                st.pending = None
            else:
                st.pending = info.package_id
            self._gc(st)
        return info

    def activate_pending(self) -> str | None:
        """Make the pending package active (the old active becomes previous); returns the new active."""
        with self._locked() as st:
            if st.pending is None:
                return st.active
            if st.pending != st.active:
                st.previous, st.active = st.active, st.pending
            st.pending = None
            return st.active

    def reject(self, package: str, reason: str) -> str | None:
        """``package`` failed on this camera: never use it again; returns the package now active (or None)."""
        with self._locked() as st:
            rejected = list(st.rejected or [])
            rejected.append({"package": package, "reason": reason[:500], "at_ns": self.clock.wall_ns()})
            st.rejected = rejected[-MAX_REJECTED:]
            if st.pending == package:
                st.pending = None
            if st.active == package:
                st.active, st.previous = st.previous, None
            if st.previous == package:
                st.previous = None
            self._gc(st)
            return st.active

    def was_rejected(self, package: str) -> bool:
        with self._locked() as st:
            return any(r.get("package") == package for r in st.rejected or [])

    def _gc(self, st: StoreState) -> None:
        keep = {st.active, st.previous, st.pending}
        for d in (self.root / "packages").iterdir():
            if d.is_dir() and d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)


__all__ = ["ModelStore", "StoreState"]
