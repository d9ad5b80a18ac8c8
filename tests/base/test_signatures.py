"""Base verifies signatures: keys registered per device, forged/unsigned/unknown/revoked markers refused,
quarantined and alerted, never stored; the real device's chain is unharmed by a forgery. Both stores."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from bodycam.base.cli import main
from bodycam.base.consumer import Consumer, ConsumerOptions
from bodycam.base.keys import KeyRegistry, SignaturePolicy
from bodycam.base.store import MarkerStore
from bodycam.device.clock import VirtualClock
from bodycam.device.errors import UsageError
from bodycam.device.identity import Signer, provision
from bodycam.device.uplink.markers import Marker, MarkerDraft, ModelRef
from bodycam.device.uplink.outbox import Outbox

WALL = 1_764_072_000_000_000_000
TOPIC = "bodycam/cam-01/marker"


class Now:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def signed_markers(tmp_path: Path, signer: Signer | None, n: int, device: str = "cam-01") -> list[Marker]:
    clock = VirtualClock(wall_epoch_ns=WALL)
    with Outbox(tmp_path / f"{device}-{signer.key_id if signer else 'u'}.db", device, clock, fsync="normal",
                signer=signer) as ob:
        out = []
        for _ in range(n):
            clock.advance_ns(1_000_000_000)
            out.append(ob.record(MarkerDraft(kind="gunshot", t_mono_ns=clock.monotonic_ns(), wall_ns=clock.wall_ns(),
                                             confidence=0.9, model=ModelRef("m", "1", "0" * 64))))
        return out


def setup(store: MarkerStore, require: str = "registered") -> tuple[Consumer, KeyRegistry, list[str], VirtualClock]:
    registry = KeyRegistry(store)  # type: ignore[arg-type]
    alerts: list[str] = []
    clock = VirtualClock(wall_epoch_ns=WALL)
    policy = SignaturePolicy(registry, require=require, refresh_s=0.0)  # type: ignore[arg-type]
    consumer = Consumer(ConsumerOptions(url="mqtt://127.0.0.1:1"), store, clock=clock, notify=alerts.append,
                        signatures=policy)
    return consumer, registry, alerts, clock


def test_signed_markers_of_a_registered_device_are_stored(store: MarkerStore, tmp_path: Path) -> None:
    consumer, registry, alerts, _ = setup(store)
    signer = Signer.generate()
    registry.add("cam-01", signer.public_pem(), WALL)
    ms = signed_markers(tmp_path, signer, 3)
    assert [consumer.handle(TOPIC, m.to_json()) for m in ms] == ["stored"] * 3
    assert [s.chain for s in store.markers(device="cam-01")] == ["ok"] * 3
    assert not [a for a in alerts if a.startswith("ALERT")]


def test_a_forged_marker_is_refused_and_the_real_chain_is_unharmed(store: MarkerStore, tmp_path: Path) -> None:
    """The issue's attack: a forged gunshot with the correct seq and prev (computed from the public
    stream), published as the device. It is quarantined and alerted; the real next marker is stored
    with an intact chain (before, base stored the forgery and blamed the real device)."""
    consumer, registry, alerts, _ = setup(store)
    signer = Signer.generate()
    registry.add("cam-01", signer.public_pem(), WALL)
    real = signed_markers(tmp_path, signer, 3)
    assert consumer.handle(TOPIC, real[0].to_json()) == "stored"
    forged = replace(real[1], id=real[1].id[:-4] + "beef", confidence=1.0)  # same seq, prev, key and sig
    outsider = Signer.generate()
    resigned = replace(real[1], id=real[1].id[:-4] + "cafe", key=outsider.key_id, sig=None)
    resigned = replace(resigned, sig=outsider.sign(resigned.canonical_bytes()))
    unsigned = replace(real[1], id=real[1].id[:-4] + "f00d", key=None, sig=None)
    assert consumer.handle(TOPIC, forged.to_json()) == "rejected_bad_signature"
    assert consumer.handle(TOPIC, resigned.to_json()) == "rejected_unknown_key"
    assert consumer.handle(TOPIC, unsigned.to_json()) == "rejected_unsigned"
    assert [consumer.handle(TOPIC, m.to_json()) for m in real[1:]] == ["stored", "stored"]
    stored = store.markers(device="cam-01")
    assert sorted(s.marker.id for s in stored) == sorted(m.id for m in real)
    assert all(s.chain == "ok" for s in stored)
    kinds = [q.item.kind for q in store.quarantined(device="cam-01")]
    assert sorted(kinds) == ["rejected_bad_signature", "rejected_unknown_key", "rejected_unsigned"]
    assert sum(a.startswith("ALERT marker refused") for a in alerts) == 3
    assert consumer.counters["stored"] == 3 and consumer.counters["rejected"] == 3


def test_a_revoked_key_is_trusted_only_before_its_revocation(store: MarkerStore, tmp_path: Path) -> None:
    consumer, registry, _, clock = setup(store)
    old, new = Signer.generate(), Signer.generate()
    registry.add("cam-01", old.public_pem(), WALL)
    ms = signed_markers(tmp_path, old, 3)
    assert consumer.handle(TOPIC, ms[0].to_json()) == "stored"
    registry.revoke("cam-01", old.key_id, clock.wall_ns() + 5_000_000_000)
    assert consumer.handle(TOPIC, ms[1].to_json()) == "stored"  # received before the revocation time
    clock.advance_ns(6_000_000_000)
    assert consumer.handle(TOPIC, ms[2].to_json()) == "rejected_revoked_key"
    # rotation: the new key is registered; markers naming it are trusted
    registry.add("cam-01", new.public_pem(), clock.wall_ns())
    rotated = replace(ms[2], key=new.key_id, sig=None)
    rotated = replace(rotated, sig=new.sign(rotated.canonical_bytes()))
    assert consumer.handle(TOPIC, rotated.to_json()) == "stored"
    keys = {k.key_id: k for k in registry.keys("cam-01")}
    assert keys[old.key_id].revoked_ns is not None and keys[new.key_id].revoked_ns is None
    # a later revocation never moves an earlier one
    registry.revoke("cam-01", old.key_id, clock.wall_ns() + 10**12)
    assert registry.keys("cam-01")[0].revoked_ns == keys[old.key_id].revoked_ns


def test_devices_without_a_key_follow_the_policy(store: MarkerStore, tmp_path: Path) -> None:
    lenient, _, _, _ = setup(store)
    ms = signed_markers(tmp_path, None, 2)
    assert lenient.handle(TOPIC, ms[0].to_json()) == "stored"
    assert lenient.counters["unverified"] == 1
    strict, _, alerts, _ = setup(store, require="all")
    assert strict.handle(TOPIC, ms[1].to_json()) == "rejected_no_key"
    assert any("no registered key" in a for a in alerts)


def test_a_key_belongs_to_one_device(store: MarkerStore) -> None:
    registry = KeyRegistry(store)  # type: ignore[arg-type]
    signer = Signer.generate()
    registry.add("cam-01", signer.public_pem(), WALL)
    registry.add("cam-01", signer.public_pem(), WALL + 1)  # again: nothing changes
    assert len(registry.keys("cam-01")) == 1
    with pytest.raises(UsageError, match="already registered for device cam-01"):
        registry.add("cam-02", signer.public_pem(), WALL)
    with pytest.raises(UsageError, match="no key"):
        registry.revoke("cam-02", signer.key_id, WALL)


def test_keys_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "base.db")
    made = provision(tmp_path / "id" / "device.key", "cam-01")
    assert main(["keys", "add", "cam-01", str(made.public_file), "--db", db]) == 0
    assert made.key_id in capsys.readouterr().out
    assert main(["keys", "list", "--db", db, "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["key_id"] == made.key_id and row["revoked"] is None
    assert main(["keys", "revoke", "cam-01", made.key_id, "--at", "2026-01-01", "--db", db]) == 0
    assert "2026-01-01T00:00:00.000Z" in capsys.readouterr().out
    assert main(["keys", "list", "--db", db]) == 0
    assert "2026-01-01T00:00:00.000Z" in capsys.readouterr().out
    assert main(["keys", "add", "cam-01", str(made.key_file), "--db", db]) == 2  # a private key is no public key
    assert "not a PEM public key" in capsys.readouterr().err
    assert main(["keys", "list", "--db", str(tmp_path / "nope.db")]) != 0


S = 1_000_000_000


def test_a_retired_key_keeps_what_it_signed_before_its_retirement(store: MarkerStore, tmp_path: Path) -> None:
    """Routine rotation: markers the old key signed before its retirement still arrive from the camera's
    outbox afterwards and are stored (verified); one signed at or after it, or arriving after the grace
    window, is refused as ``retired_key``; revoking the key (compromise) refuses them all from then on."""
    from bodycam.base.keys import RETIRED_GRACE_NS
    from bodycam.base.provenance import Provenance

    consumer, registry, alerts, clock = setup(store)
    old, new = Signer.generate(), Signer.generate()
    registry.add("cam-01", old.public_pem(), WALL)
    ms = signed_markers(tmp_path, old, 4)  # t = WALL + 1..4 s
    assert consumer.handle(TOPIC, ms[0].to_json()) == "stored"
    registry.add("cam-01", new.public_pem(), WALL)
    retired = WALL + 3 * S + S // 2  # after ms[0..2] were signed, before ms[3]
    assert registry.retire("cam-01", old.key_id, retired).state_at(retired) == "retired"
    clock.advance_ns(10 * S)  # base receives the rest after the retirement
    assert consumer.handle(TOPIC, ms[1].to_json()) == "stored"  # signed before it: the outbox's backlog
    assert consumer.handle(TOPIC, ms[3].to_json()) == "rejected_retired_key"  # signed after it
    clock.advance_ns(RETIRED_GRACE_NS)
    assert consumer.handle(TOPIC, ms[2].to_json()) == "rejected_retired_key"  # too late, even signed before
    assert sorted(q.item.kind for q in store.quarantined(device="cam-01")) == ["rejected_retired_key"] * 2
    assert sum(a.startswith("ALERT marker refused") for a in alerts) == 2
    # what was stored stays verified (the dashboard asks the same rule again) ...
    stored = {s.marker.id: s for s in store.markers(device="cam-01")}
    provenance = Provenance(store, SignaturePolicy(registry, refresh_s=0.0))  # type: ignore[arg-type]
    assert provenance.unverified(ms[1], stored[ms[1].id].received_ns) is None
    # ... until the key is revoked (a compromise found later): from then on nothing of it is trusted
    registry.revoke("cam-01", old.key_id, WALL + 5 * S)
    assert provenance.unverified(ms[1], stored[ms[1].id].received_ns) == "revoked_key"
    assert provenance.unverified(ms[0], stored[ms[0].id].received_ns) is None  # received before either
    # the new key signs what comes next
    nxt = replace(ms[3], key=new.key_id, sig=None)
    assert consumer.handle(TOPIC, replace(nxt, sig=new.sign(nxt.canonical_bytes())).to_json()) == "stored"


def test_keys_retire_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "base.db")
    old = provision(tmp_path / "old" / "device.key", "cam-01")
    new = provision(tmp_path / "new" / "device.key", "cam-01")
    assert main(["keys", "add", "cam-01", str(old.public_file), "--db", db]) == 0
    assert main(["keys", "retire", "cam-01", old.key_id, "--db", db]) == 0
    out = capsys.readouterr()
    assert "retired from" in out.out and "no active key left" in out.err  # the new key is not registered yet
    assert main(["keys", "add", "cam-01", str(new.public_file), "--db", db]) == 0
    assert main(["keys", "list", "--db", db]) == 0
    table = capsys.readouterr().out
    assert "STATE" in table and "RETIRED (UTC)" in table
    rows = {line.split()[1]: line.split()[2] for line in table.splitlines()[2:] if line.strip()}
    assert rows == {old.key_id: "retired", new.key_id: "active"}
    assert main(["keys", "revoke", "cam-01", new.key_id, "--at", "2030-01-01", "--db", db]) == 0
    assert main(["keys", "list", "--json", "--db", db]) == 0
    docs = {d["key_id"]: d for d in map(json.loads, capsys.readouterr().out.splitlines()[1:])}
    assert docs[new.key_id]["state"] == "active (revoked from a later time)"
    assert docs[old.key_id]["retired"] and docs[old.key_id]["revoked"] is None
    # a compromised key stays revoked: it is never retired
    assert main(["keys", "retire", "cam-01", new.key_id, "--db", db]) == 2
    assert "stays revoked" in capsys.readouterr().err
    assert main(["keys", "retire", "cam-01", "0" * 16, "--db", db]) == 2
    assert "no key" in capsys.readouterr().err


def test_an_older_key_table_upgrades_in_place(store: MarkerStore) -> None:
    """A database written before keys could be retired (no ``retired_ns``): opening the registry adds the
    column, keeps the keys as they were (active, or revoked), and retiring works; opening again is a no-op."""
    signer, other = Signer.generate(), Signer.generate()
    with store.transaction() as tx:  # type: ignore[attr-defined]
        tx.run("CREATE TABLE device_keys (device TEXT NOT NULL, key_id TEXT NOT NULL, public_pem TEXT NOT NULL,"
               " added_ns BIGINT NOT NULL, revoked_ns BIGINT, PRIMARY KEY (device, key_id))")
        tx.run("INSERT INTO device_keys(device, key_id, public_pem, added_ns, revoked_ns) VALUES (?,?,?,?,NULL)",
               ("cam-01", signer.key_id, signer.public_pem().decode(), WALL))
        tx.run("INSERT INTO device_keys(device, key_id, public_pem, added_ns, revoked_ns) VALUES (?,?,?,?,?)",
               ("cam-02", other.key_id, other.public_pem().decode(), WALL, WALL + S))
    registry = KeyRegistry(store)  # type: ignore[arg-type]
    a, b = registry.keys()
    assert (a.retired_ns, a.state_at(WALL + 2 * S)) == (None, "active")
    assert (b.retired_ns, b.state_at(WALL + 2 * S)) == (None, "revoked")
    registry.retire("cam-01", signer.key_id, WALL + S)
    again = KeyRegistry(store)  # type: ignore[arg-type]
    assert again.keys("cam-01")[0].retired_ns == WALL + S and again.keys("cam-01")[0].state_at(WALL + S) == "retired"
