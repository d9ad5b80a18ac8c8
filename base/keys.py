"""The devices' public keys at base, and the signature policy for markers.

Keys live in the store's own database (table ``device_keys``, SQLite or PostgreSQL, so every
instance of a fleet sees the same keys): one row per (device, key id) with the PEM public key,
when it was added, and, once retired or revoked, when (``bodycam-base keys add | retire | revoke |
list``). A database from before ``retired_ns`` gets the column when a registry first opens it.

**A key's state at a time** (:meth:`DeviceKey.state_at`): *active* from when it is added; *retired*
from ``retired_ns`` on (routine rotation: the camera signs with a new key now, and what the old one
signed before stays evidence); *revoked* from ``revoked_ns`` on (compromise: nothing it signed is
trusted any more when it reaches base from then on). Revoked wins over retired; a revoked key is
never retired (:meth:`KeyRegistry.retire` refuses). Only an active key authenticates an offload
request (``base/receive.py``): a retired key signs nothing new.

Policy (:class:`SignaturePolicy`), applied to every marker before it is stored:

* a device with at least one registered key (even revoked) must sign: a marker without ``sig``
  (``unsigned``), naming a key id not registered for it (``unknown_key``), naming a key revoked
  before base received the marker (``revoked_key``), naming a key retired before base received it
  unless the marker is one a camera could still hold from before the rotation (``retired_key``,
  below), or whose signature does not verify over its canonical bytes (``bad_signature``) is
  refused: quarantined with the reason, an alert raised, and never stored as a marker (so it cannot
  break the real device's chain);
* a device with no registered key: with ``require="registered"`` (the default) its markers are
  stored unverified and a warning is logged once per device (``bodycam-base keys add``); with
  ``require="all"`` they are refused (``no_key``).

Revocation counts from base's receive time, not the marker's ``t`` (which the holder of a stolen
key could backdate). **A retired key's markers** received after the retirement are accepted only when
their signed time ``t`` is before the retirement and they arrive within :data:`RETIRED_GRACE_S` of it:
a camera's outbox holds the markers it signed before the rotation until it reaches the broker again,
and publishes them first, in order. The window bounds what the holder of a retired key (who also
needs the device's broker identity, which the rotation should retire too) could add with backdated
times; recordings signed by a retired key follow a stricter rule, the chain (``base/receive.py``).
Every device's keys are read in one query at most every ``refresh_s`` (default
2 s) per instance (a revocation made on another instance applies within that); an unknown key id
re-reads that device's keys at once, so a key added on one instance is honoured by the others at its
next marker. A key lookup that fails (the database is down) raises StorageError, never a verdict: the
consumer retries the check as an outage and acknowledges nothing meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bodycam.base.rules import Tx, add_column
from bodycam.base.validate import Rejected
from bodycam.device import identity
from bodycam.device.errors import UsageError
from bodycam.device.uplink.markers import Marker
from bodycam.device.uplink.validate import check_device_id

_log = logging.getLogger(__name__)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS device_keys ("
    " device TEXT NOT NULL, key_id TEXT NOT NULL, public_pem TEXT NOT NULL,"
    " added_ns BIGINT NOT NULL, revoked_ns BIGINT, retired_ns BIGINT, PRIMARY KEY (device, key_id))",
)
Require = Literal["registered", "all"]
KeyState = Literal["active", "retired", "revoked"]
#: the reasons a marker is refused for its signature (quarantined as ``rejected_<reason>`` and alerted)
SIGNATURE_REASONS = frozenset({"unsigned", "unknown_key", "revoked_key", "retired_key", "bad_signature", "no_key"})
#: how long after its retirement a retired key's markers signed before it are still taken (a camera's
#: outbox drains when it reaches the broker again: an outage of days, not of weeks)
RETIRED_GRACE_S = 14 * 86400
RETIRED_GRACE_NS = RETIRED_GRACE_S * 1_000_000_000


class KeyStore(Protocol):
    """What the registry needs from a store (``base.store._Store`` provides it)."""

    def transaction(self) -> AbstractContextManager[Tx]: ...

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]: ...


@dataclass(frozen=True)
class DeviceKey:
    device: str
    key_id: str
    public_pem: str
    added_ns: int
    revoked_ns: int | None
    retired_ns: int | None = None

    def public(self) -> Ed25519PublicKey:
        return identity.parse_public(self.public_pem.encode("ascii"), f"key {self.key_id} of {self.device}")

    def state_at(self, ns: int) -> KeyState:
        """The key's state at base's time ``ns`` (see the module): revoked wins over retired."""
        if self.revoked_ns is not None and ns >= self.revoked_ns:
            return "revoked"
        if self.retired_ns is not None and ns >= self.retired_ns:
            return "retired"
        return "active"

    def trusted_at(self, ns: int) -> bool:
        """Active at ``ns``: it may sign anything new (an offload request, a marker)."""
        return self.state_at(ns) == "active"

    def late_marker_ok(self, t_ns: int, received_ns: int) -> bool:
        """A marker of this retired key that reaches base after the retirement: taken when it was signed
        (its ``t``) before the retirement and arrives within :data:`RETIRED_GRACE_S` of it."""
        return (self.retired_ns is not None and t_ns < self.retired_ns
                and received_ns < self.retired_ns + RETIRED_GRACE_NS)

    def state(self, now_ns: int) -> str:
        """``active``, ``retired``, ``revoked``, or ``retires``/``revoked from`` a later time (``keys list``)."""
        now = self.state_at(now_ns)
        if now != "active":
            return now
        later = [(t, w) for t, w in ((self.revoked_ns, "revoked"), (self.retired_ns, "retired")) if t is not None]
        return f"active ({min(later)[1]} from a later time)" if later else "active"


class KeyRegistry:
    def __init__(self, store: KeyStore) -> None:
        self._store = store
        from bodycam.base.store_pg import _SCHEMA_LOCK, PostgresStore

        postgres = isinstance(store, PostgresStore)
        with store.transaction() as tx:
            if postgres:
                tx.one("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            for stmt in SCHEMA:
                tx.run(stmt)
            add_column(tx, "device_keys", "retired_ns", "BIGINT", postgres=postgres)  # a database from before

    def add(self, device: str, public_pem: bytes, now_ns: int) -> DeviceKey:
        """Register a device's public key (PEM); the same key again changes nothing."""
        try:
            check_device_id(device)
        except Exception as exc:
            raise UsageError(str(exc)) from exc
        key = identity.parse_public(public_pem, "public key")
        kid = identity.key_id(key)
        pem = identity.public_pem(key).decode("ascii")
        other = None
        with self._store.transaction() as tx:  # an exception inside would become a StorageError
            row = tx.one("SELECT device FROM device_keys WHERE key_id=? AND device<>?", (kid, device))
            if row is not None:
                other = str(row[0])
            else:
                tx.run("INSERT INTO device_keys(device, key_id, public_pem, added_ns, revoked_ns) "
                       "VALUES (?,?,?,?,NULL) ON CONFLICT (device, key_id) DO NOTHING", (device, kid, pem, now_ns))
        if other is not None:
            raise UsageError(f"key {kid} is already registered for device {other}: one key, one device")
        (found,) = [k for k in self.keys(device) if k.key_id == kid]
        return found

    def revoke(self, device: str, key_id: str, at_ns: int) -> DeviceKey:
        """Stop trusting ``key_id`` (compromised) for anything that reaches base from ``at_ns`` on (an
        earlier revocation stays); a retired key may be revoked too."""
        return self._set_time("revoked_ns", device, key_id, at_ns)

    def retire(self, device: str, key_id: str, at_ns: int) -> DeviceKey:
        """Routine rotation: ``key_id`` signs nothing new from ``at_ns`` on, and what it signed before stays
        evidence (see the module; an earlier retirement stays). A revoked key is not retired: UsageError."""
        for k in self.keys(device):
            if k.key_id == key_id and k.revoked_ns is not None:
                raise UsageError(f"key {key_id} of {device} is revoked: a compromised key stays revoked (what it "
                                 "signed is not trusted), it is never retired")
        return self._set_time("retired_ns", device, key_id, at_ns)

    def _set_time(self, column: Literal["revoked_ns", "retired_ns"], device: str, key_id: str, at_ns: int) -> DeviceKey:
        with self._store.transaction() as tx:
            changed = tx.run(f"UPDATE device_keys SET {column}=? WHERE device=? AND key_id=? AND "
                             f"({column} IS NULL OR {column} > ?)", (at_ns, device, key_id, at_ns))
            exists = tx.one("SELECT 1 FROM device_keys WHERE device=? AND key_id=?", (device, key_id))
        if exists is None:
            raise UsageError(f"no key {key_id!r} registered for device {device!r} (see 'bodycam-base keys list')")
        if not changed:
            _log.info("key %s of %s: %s earlier already", key_id, device, column.removesuffix("_ns"))
        (found,) = [k for k in self.keys(device) if k.key_id == key_id]
        return found

    def keys(self, device: str | None = None) -> list[DeviceKey]:
        sql = "SELECT device, key_id, public_pem, added_ns, revoked_ns, retired_ns FROM device_keys"
        args: tuple[str, ...] = ()
        if device is not None:
            sql, args = sql + " WHERE device=?", (device,)
        rows = self._store.read(sql + " ORDER BY device, added_ns, key_id", args)
        return [DeviceKey(str(r[0]), str(r[1]), str(r[2]), int(r[3]), None if r[4] is None else int(r[4]),
                          None if r[5] is None else int(r[5])) for r in rows]


class SignaturePolicy:
    """Checks each marker's signature against the registry (see the module docstring)."""

    def __init__(self, registry: KeyRegistry, *, require: Require = "registered", refresh_s: float = 2.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if require not in ("registered", "all"):
            raise UsageError(f"require_signatures: {require!r} is not 'registered' or 'all'")
        self._registry = registry
        self.require = require
        self._refresh_s = refresh_s
        self._now = monotonic
        self._cache: dict[str, dict[str, tuple[DeviceKey, Ed25519PublicKey]]] = {}
        self._loaded = -float("inf")
        self._parsed: dict[tuple[str, str], tuple[DeviceKey, Ed25519PublicKey]] = {}
        self._warned: set[str] = set()

    def _entry(self, k: DeviceKey) -> tuple[DeviceKey, Ed25519PublicKey]:
        hit = self._parsed.get((k.public_pem, k.key_id))
        public = hit[1] if hit is not None else k.public()  # a PEM is parsed once, not at every refresh
        self._parsed[(k.public_pem, k.key_id)] = (k, public)
        return k, public

    def reload(self, device: str) -> None:
        """Read ``device``'s keys now (a key registered since the last read counts at once)."""
        self._keys(device, force=True)

    def _keys(self, device: str, force: bool = False) -> dict[str, tuple[DeviceKey, Ed25519PublicKey]]:
        """The device's keys: every device's keys are read in one query at most every ``refresh_s``
        (a fleet of thousands would otherwise cost one query per device and refresh); ``force``
        re-reads this device's now (a key id not seen yet)."""
        now = self._now()
        if now - self._loaded >= self._refresh_s:
            fresh: dict[str, dict[str, tuple[DeviceKey, Ed25519PublicKey]]] = {}
            for k in self._registry.keys(device=None):
                fresh.setdefault(k.device, {})[k.key_id] = self._entry(k)
            self._cache, self._loaded = fresh, now
        elif force:
            self._cache[device] = {k.key_id: self._entry(k) for k in self._registry.keys(device)}
        return self._cache.get(device, {})

    def check(self, m: Marker, received_ns: int) -> bool:
        """True: verified; False: stored unverified (no key registered, ``require="registered"``).
        Raises :class:`Rejected` for a marker that must not be stored."""
        keys = self._keys(m.device)
        if not keys:
            if self.require == "all":
                raise Rejected("no_key", f"device {m.device} has no registered key (bodycam-base keys add)")
            if m.device not in self._warned:
                self._warned.add(m.device)
                _log.warning("device %s has no registered key: its markers are stored unverified "
                             "(register it: bodycam-base keys add %s device.pub)", m.device, m.device)
            return False
        if m.sig is None or m.key is None:
            raise Rejected("unsigned", f"device {m.device} seq {m.seq}: no signature, but the device has a registered key")
        if m.key not in keys:
            keys = self._keys(m.device, force=True)
        entry = keys.get(m.key)
        if entry is None:
            raise Rejected("unknown_key", f"device {m.device} seq {m.seq}: key {m.key} is not registered for it")
        key, public = entry
        state = key.state_at(received_ns)
        if state == "revoked":
            raise Rejected("revoked_key", f"device {m.device} seq {m.seq}: key {m.key} was revoked before "
                                          "base received the marker")
        if state == "retired" and not key.late_marker_ok(m.t_ns, received_ns):
            raise Rejected("retired_key", f"device {m.device} seq {m.seq}: key {m.key} was retired before base "
                                          f"received the marker, which is not one signed before the retirement "
                                          f"and received within {RETIRED_GRACE_S // 86400} days of it")
        if not identity.verify(public, m.canonical_bytes(), m.sig):
            raise Rejected("bad_signature", f"device {m.device} seq {m.seq}: the signature does not verify with key "
                                            f"{m.key} (forged or changed)")
        return True
