"""Every signed manifest base has received, whatever became of its recording: the evidence a chain walk
and an operator need when a chain is cut.

A recording base **refuses** (a segment damaged on the card, say) or **holds** (409) is not stored, but
its manifest can still be genuine: when the manifest's signature verifies with the registered key it
names, its ``previous`` link is the signer's word on what came before it. Table ``seen_manifests`` keeps
that word (device, recording, the manifest's SHA-256, the key, the ``previous`` link), one row per
distinct manifest, append-only like ``custody_audit``. It serves:

* the chain walk (``base/chain_heads.py`` :func:`~bodycam.base.chain_heads.place`): a refused manifest
  reached by its exact SHA-256 from a head links on (a bit flipped in a segment of the head no longer
  cuts the chain: the recordings before it are placed by the head's own signed link);
* ``bodycam-base keys accept-chain`` and ``keys held``: two manifests linking the same recording
  (a **fork**), a link naming another manifest of a recording id, two manifests of one id: what tells
  a forgery made with a leaked retired key from the genuine chain.

Only manifests whose signature verifies are kept (an unsigned or forged manifest says nothing), so a
holder of an active key can add rows only for what it signs itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bodycam.base.custody import create_append_only_table
from bodycam.base.rules import Tx

Link = tuple[str, str]


def _tables(serial: str) -> tuple[str, ...]:
    return (
        f"CREATE TABLE IF NOT EXISTS seen_manifests (n {serial}, device TEXT NOT NULL, recording TEXT NOT NULL,"
        " manifest_sha256 TEXT NOT NULL, key_id TEXT NOT NULL, previous TEXT NOT NULL,"
        " previous_manifest_sha256 TEXT NOT NULL, t_ns BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS seen_manifests_recording ON seen_manifests(device, recording)",
        "CREATE INDEX IF NOT EXISTS seen_manifests_previous ON seen_manifests(device, previous)",
    )


class SeenStore(Protocol):
    def transaction(self) -> AbstractContextManager[Tx]: ...

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]: ...


@dataclass(frozen=True)
class Seen:
    recording: str
    manifest_sha256: str
    key_id: str
    previous: Link | None


class SeenManifests:
    def __init__(self, store: SeenStore) -> None:
        self._store = store
        create_append_only_table(store, _tables, "seen_manifests")

    def add(self, device: str, recording: str, manifest_sha256: str, key_id: str, previous: Any, t_ns: int) -> None:
        """Keep a manifest whose signature verified with ``key_id`` (once per distinct manifest)."""
        prev = ("", "")
        if isinstance(previous, dict) and isinstance(previous.get("recording"), str) and \
                isinstance(previous.get("manifest_sha256"), str):
            prev = (str(previous["recording"]), str(previous["manifest_sha256"]))
        with self._store.transaction() as tx:
            if tx.one("SELECT 1 FROM seen_manifests WHERE device=? AND recording=? AND manifest_sha256=?",
                      (device, recording, manifest_sha256)) is not None:
                return
            tx.run("INSERT INTO seen_manifests(device, recording, manifest_sha256, key_id, previous,"
                   " previous_manifest_sha256, t_ns) VALUES (?,?,?,?,?,?,?)",
                   (device, recording, manifest_sha256, key_id, *prev, t_ns))

    def _rows(self, where: str, args: Sequence[Any]) -> list[Seen]:
        rows = self._store.read("SELECT recording, manifest_sha256, key_id, previous, previous_manifest_sha256"
                                f" FROM seen_manifests WHERE {where} ORDER BY n", args)
        return [Seen(str(r[0]), str(r[1]), str(r[2]), (str(r[3]), str(r[4])) if r[3] else None) for r in rows]

    def rows(self, device: str) -> list[Seen]:
        """Every signed manifest of ``device`` base has received, in the order received."""
        return self._rows("device=?", (device,))

    def of(self, device: str, recording: str) -> list[Seen]:
        """Every signed manifest of ``recording`` base has received."""
        return self._rows("device=? AND recording=?", (device, recording))

    def linking(self, device: str, recording: str) -> list[Seen]:
        """Every signed manifest base has received whose ``previous`` names ``recording`` (any SHA-256)."""
        return self._rows("device=? AND previous=?", (device, recording))

    def link(self, device: str, recording: str, manifest_sha256: str) -> Link | Literal["absent"] | None:
        """The ``previous`` link of exactly that manifest (None: it links nothing), ``"absent"`` when base
        never received it signed."""
        for s in self.of(device, recording):
            if s.manifest_sha256 == manifest_sha256:
                return s.previous
        return "absent"
