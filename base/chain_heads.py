"""Where a retired device key's chain ends: the heads base takes that key's recordings from.

A recording signed with a **retired** key (``base/keys.py``) is taken only on a chain base trusts
(``Receiver._key_for``, ``base/receive.py``): it is a registered **head** of that key, or a manifest
base holds on such a chain (stored, or refused/held with a signature that verifies:
``base/seen_manifests.py``) links its manifest's exact SHA-256 as ``previous``, and so on backwards. A
head comes from:

* the camera's **hand-over** (``device/footage/handover.py``): made by ``bodycam provision --force``,
  signed by the old *and* the new key (both checked against the keys registered at base), naming the last
  manifest the old key signed; uploaded by the camera at its next dock (``PUT
  /api/offload/v1/handover/<device>``) or registered by an operator (``bodycam-base keys handover``). One
  hand-over per old key: a second one naming another head is refused (a conflict, for a person to look at);
* an **operator's word** (``bodycam-base keys accept-chain DEVICE KEY_ID RECORDING MANIFEST_SHA256
  --reason ...``), for a chain that is cut (no hand-over: the old key was lost, or the camera was
  rotated by older firmware; a recording of the chain lost): logged with who and why; refused when
  base's own records contradict it (``base/chain_evidence.py``) unless the operator insists.

Table ``key_chain_heads`` in the store's database, append-only like ``custody_audit`` (triggers refuse
UPDATE, DELETE, TRUNCATE, and on SQLite an INSERT replacing a row); every head is also audited in
``custody_audit`` (``handover``, ``vouched``).

:func:`place` decides for one recording: ``on`` a chain (taken), ``maybe`` (base does not hold the
recordings between it and a head yet: 409, asked again later) or ``off`` every chain (the chain went past
it, or it is newer than the head: refused, 422).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bodycam.base.custody import CustodyLog, _is_postgres, create_append_only_table
from bodycam.base.keys import DeviceKey, KeyRegistry
from bodycam.base.rules import Tx
from bodycam.base.seen_manifests import SeenManifests
from bodycam.device.errors import UsageError
from bodycam.device.footage.handover import Handover, HandoverError, handover_problem, parse_handover
from bodycam.device.uplink.offload_wire import RECORDING_RE

Link = tuple[str, str]  # (recording, SHA-256 of its manifest)
Place = Literal["on", "maybe", "off"]
#: ``link_of(recording, sha)`` for :func:`place`
LinkOf = Callable[[str, str], "Link | Literal['absent'] | None"]
#: what a chain walk follows at most (a device's recordings since its key's head)
MAX_WALK = 100_000
SHA_RE = re.compile(r"\A[0-9a-f]{64}\Z")


def _tables(serial: str) -> tuple[str, ...]:
    return (
        f"CREATE TABLE IF NOT EXISTS key_chain_heads (n {serial}, device TEXT NOT NULL, key_id TEXT NOT NULL,"
        " recording TEXT NOT NULL, manifest_sha256 TEXT NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL,"
        " t_ns BIGINT NOT NULL, detail TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS key_chain_heads_key ON key_chain_heads(device, key_id)",
    )


class ChainRefused(UsageError):
    """A hand-over or an operator's head that base will not register; ``status``/``codes`` as the offload
    routes answer it (422, or 409 for a second, different hand-over of the same key)."""

    def __init__(self, message: str, code: str, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class HeadStore(Protocol):
    def transaction(self) -> AbstractContextManager[Tx]: ...

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]: ...


@dataclass(frozen=True)
class Head:
    device: str
    key_id: str
    link: Link | None  # None: a hand-over from a key that signed no recording
    kind: str  # handover | vouched
    actor: str
    t_ns: int
    detail: dict[str, Any]


class ChainHeads:
    def __init__(self, store: HeadStore, custody: CustodyLog, keys: KeyRegistry) -> None:
        self._store = store
        self.custody = custody
        self.keys = keys
        self.seen = SeenManifests(store)
        create_append_only_table(store, _tables, "key_chain_heads")

    def heads(self, device: str, key_id: str | None = None) -> list[Head]:
        sql = ("SELECT device, key_id, recording, manifest_sha256, kind, actor, t_ns, detail FROM key_chain_heads"
               " WHERE device=?")
        args = [device]
        if key_id is not None:
            sql += " AND key_id=?"
            args.append(key_id)
        rows = self._store.read(sql + " ORDER BY n", args)
        return [Head(str(r[0]), str(r[1]), (str(r[2]), str(r[3])) if r[2] else None, str(r[4]), str(r[5]),
                     int(r[6]), json.loads(r[7])) for r in rows]

    def _key(self, device: str, key_id: str, now: int, what: str) -> DeviceKey:
        found = [k for k in self.keys.keys(device) if k.key_id == key_id]
        if not found:
            raise ChainRefused(f"{what}: key {key_id} is not registered for {device} (bodycam-base keys add)",
                               "unknown_key")
        if found[0].state_at(now) == "revoked":
            raise ChainRefused(f"{what}: key {key_id} of {device} is revoked: nothing it signed is trusted",
                               "revoked_key")
        return found[0]

    def _add(self, device: str, key_id: str, link: Link | None, kind: str, actor: str, now: int,
             detail: dict[str, Any], action: Literal["handover", "vouched"]) -> bool:
        """Keep a head (and its audit row) in one transaction; a hand-over only when the key has none yet,
        checked inside that transaction (SQLite's writer lock, PostgreSQL's advisory lock on the key):
        False when exactly this hand-over is there already, ChainRefused (409) for another one."""
        rec, sha = link if link is not None else ("", "")
        other: tuple[Link | None, Any] | None = None
        with self.custody.transaction() as tx:
            if kind == "handover":
                other = self._other_handover(tx, device, key_id)
            if other is None:
                tx.run("INSERT INTO key_chain_heads(device, key_id, recording, manifest_sha256, kind, actor, t_ns,"
                       " detail) VALUES (?,?,?,?,?,?,?,?)", (device, key_id, rec, sha, kind, actor, now,
                                                             json.dumps(detail, sort_keys=True)))
                # a hand-over is the device's event (audited under recording ""), an operator's word is about a
                # recording
                self.custody.append(tx, now, actor, action, device, rec if action == "vouched" else "",
                                    {"key": key_id, "head": rec or None, "manifest_sha256": sha or None, **detail})
        if other is not None:  # nothing written: decided outside the transaction (its errors are StorageError)
            return self._same_handover(device, key_id, link, str(detail.get("new_key")), other)
        return True

    def _other_handover(self, tx: Tx, device: str, key_id: str) -> tuple[Link | None, Any] | None:
        """The hand-over of ``key_id`` base holds (head, new key), read under the writers' lock."""
        if _is_postgres(self._store):
            lock = int.from_bytes(hashlib.sha256(f"handover {device} {key_id}".encode()).digest()[:8], "big",
                                  signed=True)
            tx.one("SELECT pg_advisory_xact_lock(?)", (lock,))
        row = tx.one("SELECT recording, manifest_sha256, detail FROM key_chain_heads WHERE device=? AND key_id=?"
                     " AND kind='handover' ORDER BY n LIMIT 1", (device, key_id))
        if row is None:
            return None
        return ((str(row[0]), str(row[1])) if row[0] else None), json.loads(row[2]).get("new_key")

    @staticmethod
    def _same_handover(device: str, key_id: str, link: Link | None, new_key: str,
                       other: tuple[Link | None, Any]) -> bool:
        if other == (link, new_key):
            return False
        raise ChainRefused(f"hand-over: base already holds another hand-over of key {key_id} of {device} (to key "
                           f"{other[1]}, head {other[0]}): one key hands over once; an operator decides "
                           "(bodycam-base keys accept-chain)", "handover_conflict", 409)

    def register_handover(self, device: str, doc: Any, actor: str, now: int) -> tuple[Handover, bool]:
        """Check a hand-over record against the keys registered for ``device`` and keep it; (the record,
        whether it is new). ChainRefused says why not."""
        try:
            h = parse_handover(doc, "hand-over")
        except HandoverError as exc:
            raise ChainRefused(str(exc), "bad_handover") from exc
        if h.device != device:
            raise ChainRefused(f"hand-over: it is of device {h.device!r}, given for {device}", "wrong_device")
        old = self._key(device, h.old_key, now, "hand-over")
        new = self._key(device, h.new_key, now, "hand-over")
        problem = handover_problem(h, old.public(), new.public())
        if problem is not None:
            raise ChainRefused(f"hand-over of key {h.old_key} of {device}: {problem} (with the keys registered at "
                               "base)", "bad_signature")
        if h.head is not None and (not RECORDING_RE.fullmatch(h.head[0]) or not SHA_RE.fullmatch(h.head[1])):
            raise ChainRefused(f"hand-over: its head {h.head} is not a recording id with a SHA-256", "bad_handover")
        fresh = self._add(device, h.old_key, h.head, "handover", actor, now,
                          {"new_key": h.new_key, "made_utc": h.doc.get("made_utc"), "record": h.doc}, "handover")
        return h, fresh

    def vouch(self, device: str, key_id: str, recording: str, manifest_sha256: str, reason: str, actor: str,
              now: int, *, link_of: LinkOf | None = None, despite_conflicts: bool = False) -> tuple[Head, list[str]]:
        """An operator names ``recording`` (with exactly this manifest SHA-256) as a head of ``key_id``'s chain;
        the head and what base holds that contradicts it (``base/chain_evidence.py``). A contradicted head
        is refused (409 ``conflicting_evidence``) unless ``despite_conflicts``: then it is kept, and the
        conflicts are in its audit row."""
        from bodycam.base.chain_evidence import conflicts, link_source

        if not RECORDING_RE.fullmatch(recording):
            raise ChainRefused(f"{recording!r} is not a recording id", "bad_recording")
        if not SHA_RE.fullmatch(manifest_sha256):
            raise ChainRefused(f"{manifest_sha256!r} is not a SHA-256 (64 lower-case hex digits)", "bad_sha256")
        if not reason.strip():
            raise ChainRefused("--reason is required: say why this chain is vouched for", "no_reason")
        if not actor.strip():
            raise ChainRefused("--by is required: who vouches", "no_actor")
        self._key(device, key_id, now, "accept-chain")
        walk = link_of if link_of is not None else link_source(device, self.custody, self.seen)
        handovers = [h.link for h in self.heads(device, key_id) if h.kind == "handover" and h.link is not None]
        found = conflicts(device, key_id, recording, manifest_sha256, self.custody, self.seen, handovers, walk)
        if found and not despite_conflicts:
            raise ChainRefused(f"accept-chain: base holds evidence against {recording} (manifest {manifest_sha256}) "
                               f"as a head of key {key_id}: " + "; ".join(found) + ". A recording made with a leaked "
                               "retired key looks like this; see bodycam-base keys held " + device +
                               " (--despite-conflicts only after the card and the footage were examined)",
                               "conflicting_evidence", 409)
        detail: dict[str, Any] = {"reason": reason}
        if found:
            detail.update(conflicts=found, despite_conflicts=True)
        self._add(device, key_id, (recording, manifest_sha256), "vouched", actor, now, detail, "vouched")
        return Head(device, key_id, (recording, manifest_sha256), "vouched", actor, now, detail), found


def place(heads: Sequence[Link], recording: str, manifest_sha256: str, link_of: LinkOf) -> tuple[Place, str]:
    """Where (``recording``, ``manifest_sha256``) stands on the chains ending at ``heads``, and why.

    ``link_of(recording, sha)``: the ``previous`` link of that manifest when base holds it (None: it links
    nothing, or base holds another manifest under that id), ``"absent"`` when base does not hold it. Recording ids sort by time and a chain goes back in
    time, so a walk stops once it is past the recording."""
    target = (recording, manifest_sha256)
    waits: list[str] = []
    for head in heads:
        cur: Link | None = head
        for _ in range(MAX_WALK):
            if cur is None:
                break
            if cur == target:
                return "on", f"on the chain ending at {head[0]}"
            if cur[0] <= recording:  # past it (or the same id with another manifest): not on this chain
                break
            nxt = link_of(*cur)
            if nxt == "absent":
                waits.append(cur[0])
                break
            if nxt is not None and nxt[0] >= cur[0]:  # a link forward in time: not a chain
                break
            cur = nxt
    if waits:
        return "maybe", ("base does not hold " + ", ".join(sorted(set(waits))) + " yet (the chain from the hand-over "
                         "to this recording runs through it)")
    return "off", "no chain base holds from the key's hand-over (or an operator's head) reaches it"
