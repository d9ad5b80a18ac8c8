"""Base's model registry: which models exist, their metrics, who approved them, and the signed packages.

Table ``model_registry`` in the store's database (SQLite or PostgreSQL): one row per (name, version)
with the model's SHA-256, task, the metrics recorded in its sidecar, where the files are on base,
who added it and when, and, once approved, who approved it, when, and the SHA-256 of the signed
package's manifest. A row is never deleted or rewritten: approving fills the approval columns once.

Approving writes a package (device/model_package.py) signed with base's model-signing key
(``bodycam-base model keygen``); the cameras trust that key's public half (``bodycam model trust``)
and verify the package, then the model's self-test on their own runtime, before using it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bodycam.base.keys import KeyStore
from bodycam.base.rules import Tx
from bodycam.base.signing import keygen, load_base_signer
from bodycam.device.clock import rfc3339_ms
from bodycam.device.detect.model_spec import load_model_spec, sha256_file, sidecar_path
from bodycam.device.errors import ModelError, UsageError
from bodycam.device.identity import Signer
from bodycam.device.model_package import make_package, package_digest, required_files, version_key

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS model_registry ("
    " name TEXT NOT NULL, version TEXT NOT NULL, task TEXT NOT NULL, sha256 TEXT NOT NULL, path TEXT NOT NULL,"
    " metrics TEXT NOT NULL, added_ns BIGINT NOT NULL, added_by TEXT NOT NULL,"
    " approved_ns BIGINT, approved_by TEXT, package_sha256 TEXT, PRIMARY KEY (name, version))",
    # where an approved package was written (base/model_delivery.py offers it to cameras at the dock)
    "CREATE TABLE IF NOT EXISTS model_packages ("
    " name TEXT NOT NULL, version TEXT NOT NULL, path TEXT NOT NULL, PRIMARY KEY (name, version))",
    # every file a package of the model carries (model, sidecar, self-test, [Edge TPU]) as it was at
    # ``add``: ``approve`` signs only these bytes
    "CREATE TABLE IF NOT EXISTS model_files ("
    " name TEXT NOT NULL, version TEXT NOT NULL, file TEXT NOT NULL, sha256 TEXT NOT NULL,"
    " PRIMARY KEY (name, version, file))",
    # approvals made as an explicit downgrade (``approve --rollback``; the package says ``rollback: true``)
    "CREATE TABLE IF NOT EXISTS model_rollbacks ("
    " name TEXT NOT NULL, version TEXT NOT NULL, PRIMARY KEY (name, version))",
)


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    task: str
    sha256: str
    path: str
    metrics: dict[str, Any]
    added_ns: int
    added_by: str
    approved_ns: int | None
    approved_by: str | None
    package_sha256: str | None
    files: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256 recorded at add ({}: before they were)
    rollback: bool = False  # approved as an explicit downgrade

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "task": self.task, "sha256": self.sha256,
                "path": self.path, "metrics": self.metrics, "added": rfc3339_ms(self.added_ns),
                "added_by": self.added_by,
                "approved": None if self.approved_ns is None else rfc3339_ms(self.approved_ns),
                "approved_by": self.approved_by, "package_sha256": self.package_sha256, "files": self.files,
                "rollback": self.rollback}


class ModelRegistry:
    def __init__(self, store: KeyStore) -> None:
        self._store = store
        with store.transaction() as tx:
            for stmt in SCHEMA:
                tx.run(stmt)

    def add(self, model: Path, by: str, now_ns: int) -> RegisteredModel:
        """Register a built model (with its sidecar and self-test) and the SHA-256 of every file its package
        will carry; the same build again changes nothing (another sidecar or self-test for it is refused)."""
        try:
            spec = load_model_spec(model)
            names = required_files(model)  # the self-test must be there before anything can be shipped
        except ModelError as exc:
            raise UsageError(str(exc)) from exc
        hashes = _hash_files(Path(model), names)
        metrics = _metrics(spec.raw)
        with self._store.transaction() as tx:
            row = tx.one("SELECT sha256 FROM model_registry WHERE name=? AND version=?", (spec.name, spec.version))
            if row is not None and str(row[0]) != spec.sha256:
                raise UsageError(f"{spec.name} {spec.version} is registered with another build ({str(row[0])[:12]}...):"
                                 " give the new build a new version")
            recorded = _files(tx.all("SELECT file, sha256 FROM model_files WHERE name=? AND version=?",
                                     (spec.name, spec.version)))
            if row is not None and recorded and recorded != hashes:
                raise UsageError(f"{spec.name} {spec.version} is registered with other files ({_differ(recorded, hashes)}):"
                                 " give the new build a new version")
            if row is None:
                tx.run("INSERT INTO model_registry(name, version, task, sha256, path, metrics, added_ns, added_by) "
                       "VALUES (?,?,?,?,?,?,?,?)", (spec.name, spec.version, spec.task, spec.sha256,
                                                    str(Path(model).resolve()), json.dumps(metrics), now_ns, by))
            if not recorded and (row is None or self._legacy_ok(tx, spec.name, spec.version, metrics)):
                for name, digest in sorted(hashes.items()):
                    tx.run("INSERT INTO model_files(name, version, file, sha256) VALUES (?,?,?,?)",
                           (spec.name, spec.version, name, digest))
        return self.get(spec.name, spec.version)

    @staticmethod
    def _legacy_ok(tx: Tx, name: str, version: str, metrics: dict[str, Any]) -> bool:
        """A row added before file hashes were recorded gets them from a second ``add`` of the same build,
        only while the sidecar still carries the metrics recorded then and it is not approved."""
        row = tx.one("SELECT metrics, approved_ns FROM model_registry WHERE name=? AND version=?", (name, version))
        if row is None or row[1] is not None:
            return False
        if json.loads(str(row[0])) != metrics:
            raise UsageError(f"{name} {version}: the sidecar's metrics are not the ones recorded at add: "
                             "give the new build a new version")
        return True

    def approve(self, name: str, version: str, by: str, now_ns: int, signer: Signer, out: Path, *,
                rollback: bool = False) -> RegisteredModel:
        """Write the signed package of an added model to ``out`` and record the approval (once).

        A version not higher than one already approved of the same model and task is refused unless
        ``rollback`` (the cameras refuse such a package unless it says ``rollback: true``); a rollback
        needs a higher approved version to roll back from."""
        m = self.get(name, version)
        if m.approved_ns is not None:
            raise UsageError(f"{name} {version} was approved by {m.approved_by} at {rfc3339_ms(m.approved_ns)}; "
                             f"its package is recorded (manifest sha256 {m.package_sha256})")
        mine = version_key(version)
        higher = [o for o in self.all() if o.approved_ns is not None and (o.name, o.task) == (name, m.task)
                  and (mine is None or (version_key(o.version) or ()) >= mine)]
        if higher and not rollback:
            raise UsageError(f"{name} {version} is not higher than the approved {name} {higher[-1].version}: the "
                             "cameras refuse a downgrade; approve it with --rollback to ship it as an explicit "
                             "rollback (or give the build a higher version)")
        if rollback and not higher:
            raise UsageError(f"{name} {version}: --rollback, but no approved version of {name} is higher: "
                             "approve it without --rollback")
        model = Path(m.path)
        try:
            actual = sha256_file(model)
        except OSError as exc:
            raise UsageError(f"{model}: the registered model file cannot be read ({exc.strerror or exc})") from exc
        if actual != m.sha256:
            raise UsageError(f"{model}: SHA-256 {actual[:12]}... is not the registered build ({m.sha256[:12]}...)")
        if not m.files:
            raise UsageError(f"{name} {version} was added before base recorded its files' hashes: run "
                             f"'bodycam-base model add {model}' again (it records them) and check the sidecar")
        try:
            names = required_files(model)
            spec = load_model_spec(model)
        except ModelError as exc:
            raise UsageError(f"{model}: {exc}") from exc
        now = _hash_files(model, names)
        if now != m.files:
            raise UsageError(f"{model.parent}: {_differ(m.files, now)} since 'model add': not approved "
                             "(add the changed build under a new version)")
        metrics = _metrics(spec.raw)
        if metrics != m.metrics:  # the sidecar hash covers it; said plainly when it is the metrics
            raise UsageError(f"{sidecar_path(model)}: its metrics are not the ones recorded at 'model add': not approved")
        info = make_package(model, out, signer, approved_by=by, approved_at=rfc3339_ms(now_ns), metrics=m.metrics,
                            rollback=rollback)
        if info.files != m.files:  # what was copied and signed (a file swapped after the check above)
            shutil.rmtree(out, ignore_errors=True)
            raise UsageError(f"{model.parent}: {_differ(m.files, info.files)} while the package was written: not "
                             "approved")
        digest = package_digest(out)
        with self._store.transaction() as tx:
            tx.run("UPDATE model_registry SET approved_ns=?, approved_by=?, package_sha256=? "
                   "WHERE name=? AND version=? AND approved_ns IS NULL", (now_ns, by, digest, name, version))
            tx.run("INSERT INTO model_packages(name, version, path) VALUES (?,?,?)",
                   (name, version, str(Path(out).resolve())))
            if rollback:
                tx.run("INSERT INTO model_rollbacks(name, version) VALUES (?,?)", (name, version))
        return self.get(name, version)

    def released(self) -> list[tuple[RegisteredModel, Path]]:
        """What cameras are offered, one package per task: the highest approved version (dotted numbers
        compared numerically; then the later approval), among the approvals since the task's latest
        rollback (an explicit rollback is offered until a later approval; a version that cannot be compared
        ranks lowest)."""
        rows = self._store.read("SELECT r.name, r.version, p.path FROM model_registry r JOIN model_packages p "
                                "ON p.name = r.name AND p.version = r.version WHERE r.approved_ns IS NOT NULL "
                                "ORDER BY r.approved_ns, r.name, r.version", ())
        by_task: dict[str, list[tuple[RegisteredModel, Path]]] = {}
        for name, version, path in rows:
            m = self.get(str(name), str(version))
            by_task.setdefault(m.task, []).append((m, Path(str(path))))
        out: list[tuple[RegisteredModel, Path]] = []
        for task in sorted(by_task, key=lambda t: -max(int(m.approved_ns or 0) for m, _ in by_task[t])):
            approved = by_task[task]
            last_rollback = max((i for i, (m, _) in enumerate(approved) if m.rollback), default=0)
            since = approved[last_rollback:]
            out.append(max(since, key=lambda mp: (version_key(mp[0].version) or (), int(mp[0].approved_ns or 0))))
        return out

    def get(self, name: str, version: str) -> RegisteredModel:
        rows = self._rows(" WHERE name=? AND version=?", (name, version))
        if not rows:
            raise UsageError(f"no model {name} {version} in the registry (see 'bodycam-base model list')")
        return rows[0]

    def all(self) -> list[RegisteredModel]:
        return self._rows(" ORDER BY added_ns, name, version", ())

    def _rows(self, where: str, args: tuple[Any, ...]) -> list[RegisteredModel]:
        rows = self._store.read("SELECT name, version, task, sha256, path, metrics, added_ns, added_by, approved_ns, "
                                "approved_by, package_sha256 FROM model_registry" + where, args)
        files: dict[tuple[str, str], dict[str, str]] = {}
        for n, v, f, h in self._store.read("SELECT name, version, file, sha256 FROM model_files", ()):
            files.setdefault((str(n), str(v)), {})[str(f)] = str(h)
        rollbacks = {(str(n), str(v)) for n, v in self._store.read("SELECT name, version FROM model_rollbacks", ())}
        return [RegisteredModel(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), json.loads(str(r[5])),
                                int(r[6]), str(r[7]), None if r[8] is None else int(r[8]),
                                None if r[9] is None else str(r[9]), None if r[10] is None else str(r[10]),
                                files.get((str(r[0]), str(r[1])), {}), (str(r[0]), str(r[1])) in rollbacks)
                for r in rows]


def _hash_files(model: Path, names: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        path = model.parent / name
        try:
            out[name] = sha256_file(path)
        except OSError as exc:
            raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return out


def _metrics(sidecar: dict[str, Any]) -> dict[str, Any]:
    m = sidecar.get("metrics")
    return m if isinstance(m, dict) else {}


def _files(rows: list[Sequence[Any]]) -> dict[str, str]:
    return {str(f): str(h) for f, h in rows}


def _differ(want: dict[str, str], have: dict[str, str]) -> str:
    """Which files differ from the recorded ones, in words."""
    parts = []
    for name in sorted(set(want) | set(have)):
        if name not in have:
            parts.append(f"{name} is gone")
        elif name not in want:
            parts.append(f"{name} was added")
        elif want[name] != have[name]:
            parts.append(f"{name} changed (SHA-256 {have[name][:12]}..., recorded {want[name][:12]}...)")
    return "; ".join(parts) or "the files changed"


def load_model_signer(path: Path) -> Signer:
    """Base's model-signing key (PEM, mode 0600); a one-line error naming ``keygen`` otherwise."""
    return load_base_signer(path, "model-signing key", "bodycam-base model keygen")


__all__ = ["ModelRegistry", "RegisteredModel", "keygen", "load_model_signer"]
