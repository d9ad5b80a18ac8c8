"""The devices' public keys at base, and the signature policy for markers.

Keys live in the store's own database (table ``device_keys``, SQLite or PostgreSQL, so every
instance of a fleet sees the same keys): one row per (device, key id) with the PEM public key,
when it was added and, once revoked, when (``bodycam-base keys add | revoke | list``).

Policy (:class:`SignaturePolicy`), applied to every marker before it is stored:

* a device with at least one registered key (even revoked) must sign: a marker without ``sig``
  (``unsigned``), naming a key id not registered for it (``unknown_key``), naming a key revoked
  before base received the marker (``revoked_key``), or whose signature does not verify over its
  canonical bytes (``bad_signature``) is refused: quarantined with the reason, an alert raised, and
  never stored as a marker (so it cannot break the real device's chain);
* a device with no registered key: with ``require="registered"`` (the default) its markers are
  stored unverified and a warning is logged once per device (``bodycam-base keys add``); with
  ``require="all"`` they are refused (``no_key``).

Revocation counts from base's receive time, not the marker's ``t`` (which the holder of a stolen
key could backdate). Every device's keys are read in one query at most every ``refresh_s`` (default
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

from bodycam.base.rules import Tx
from bodycam.base.validate import Rejected
from bodycam.device import identity
from bodycam.device.errors import UsageError
from bodycam.device.uplink.markers import Marker
from bodycam.device.uplink.validate import check_device_id

_log = logging.getLogger(__name__)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS device_keys ("
    " device TEXT NOT NULL, key_id TEXT NOT NULL, public_pem TEXT NOT NULL,"
    " added_ns BIGINT NOT NULL, revoked_ns BIGINT, PRIMARY KEY (device, key_id))",
)
Require = Literal["registered", "all"]
#: the reasons a marker is refused for its signature (quarantined as ``rejected_<reason>`` and alerted)
SIGNATURE_REASONS = frozenset({"unsigned", "unknown_key", "revoked_key", "bad_signature", "no_key"})


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

    def public(self) -> Ed25519PublicKey:
        return identity.parse_public(self.public_pem.encode("ascii"), f"key {self.key_id} of {self.device}")

    def trusted_at(self, ns: int) -> bool:
        return self.revoked_ns is None or ns < self.revoked_ns


class KeyRegistry:
    def __init__(self, store: KeyStore) -> None:
        self._store = store
        with store.transaction() as tx:
            for stmt in SCHEMA:
                tx.run(stmt)

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
        """Stop trusting ``key_id`` for markers received from ``at_ns`` on (an earlier revocation stays)."""
        with self._store.transaction() as tx:
            changed = tx.run("UPDATE device_keys SET revoked_ns=? WHERE device=? AND key_id=? AND "
                             "(revoked_ns IS NULL OR revoked_ns > ?)", (at_ns, device, key_id, at_ns))
            exists = tx.one("SELECT 1 FROM device_keys WHERE device=? AND key_id=?", (device, key_id))
        if exists is None:
            raise UsageError(f"no key {key_id!r} registered for device {device!r} (see 'bodycam-base keys list')")
        if not changed:
            _log.info("key %s of %s was already revoked earlier", key_id, device)
        (found,) = [k for k in self.keys(device) if k.key_id == key_id]
        return found

    def keys(self, device: str | None = None) -> list[DeviceKey]:
        sql = "SELECT device, key_id, public_pem, added_ns, revoked_ns FROM device_keys"
        args: tuple[str, ...] = ()
        if device is not None:
            sql, args = sql + " WHERE device=?", (device,)
        rows = self._store.read(sql + " ORDER BY device, added_ns, key_id", args)
        return [DeviceKey(str(r[0]), str(r[1]), str(r[2]), int(r[3]), None if r[4] is None else int(r[4]))
                for r in rows]


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
        if not key.trusted_at(received_ns):
            raise Rejected("revoked_key", f"device {m.device} seq {m.seq}: key {m.key} was revoked before "
                                          "base received the marker")
        if not identity.verify(public, m.canonical_bytes(), m.sig):
            raise Rejected("bad_signature", f"device {m.device} seq {m.seq}: the signature does not verify with key "
                                            f"{m.key} (forged or changed)")
        return True
