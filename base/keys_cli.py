"""``bodycam-base keys add DEVICE PUBKEY_FILE | retire DEVICE KEY_ID [--at T] | revoke DEVICE KEY_ID [--at T] |
list [--device D] | handover DEVICE FILE [--by USER] | accept-chain DEVICE KEY_ID RECORDING MANIFEST_SHA256
--reason TEXT [--by USER] [--despite-conflicts] | held DEVICE | heads [--device D]``.

``retire`` is the routine rotation (after ``add`` of the new key): the old key signs nothing new, and what it
signed before stays evidence: its recordings are taken on the chain its hand-over ends (``base/keys.py``,
``base/chain_heads.py``, ``base/receive.py``). ``handover`` registers the hand-over record ``bodycam provision
--force`` wrote (the camera also uploads it at its next dock); ``accept-chain`` is an operator vouching for a
chain head when there is no hand-over or the chain is cut (audited with who and why; refused when base holds
evidence against it, which ``held`` lists). ``revoke`` is for a
compromised key: nothing signed with it is trusted when it reaches base from then on."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bodycam.device.clock import SystemClock, rfc3339_ms
from bodycam.device.errors import UsageError
from bodycam.device.safe_load import loads_untrusted

if TYPE_CHECKING:
    from bodycam.base.chain_heads import ChainHeads, Head
    from bodycam.base.keys import KeyRegistry


def add_parser(sub: Any, db_help: str, parents: list[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", parents=parents, help="the devices' public keys: markers are verified with them")
    ksub = keys.add_subparsers(dest="keys_command", required=True,
                               metavar="{add,retire,revoke,list,handover,accept-chain,held,heads}")
    add = ksub.add_parser("add", help="register a device's public key (device.pub from 'bodycam provision')")
    add.add_argument("device")
    add.add_argument("pubkey", type=Path, help="PEM public key file")
    ret = ksub.add_parser("retire", help="routine rotation (register the new key first): the key signs nothing new "
                                         "from now (or --at) on; what it signed before stays evidence and uploads: "
                                         "its recordings on the chain its hand-over ('bodycam provision --force') ends")
    ret.add_argument("device")
    ret.add_argument("key_id")
    ret.add_argument("--at", help="retirement time (RFC 3339 or date, UTC when no offset); default: now")
    rev = ksub.add_parser("revoke", help="compromised key: nothing it signed is trusted when it reaches base from now "
                                         "(or --at) on, recordings not yet offloaded included")
    rev.add_argument("device")
    rev.add_argument("key_id")
    rev.add_argument("--at", help="revocation time (RFC 3339 or date, UTC when no offset); default: now")
    lst = ksub.add_parser("list", help="registered keys with their state")
    lst.add_argument("--device")
    lst.add_argument("--json", action="store_true")
    ho = ksub.add_parser("handover", help="register a camera's key hand-over (<data_dir>/handover/OLD_KEY_ID.json "
                                          "from 'bodycam provision --force', signed by the old and the new key; the "
                                          "camera also uploads it when it docks): the old key's recordings are then "
                                          "taken on the chain it ends")
    ho.add_argument("device")
    ho.add_argument("file", type=Path, help="the hand-over record (JSON)")
    ho.add_argument("--by", default=None, help="who registers it (default: the login name)")
    ac = ksub.add_parser("accept-chain", help="vouch for a retired key's chain head when there is no hand-over or "
                                              "the chain is cut (a recording refused or lost): RECORDING with exactly "
                                              "MANIFEST_SHA256 (see the 'held' rows of the custody log) and every "
                                              "recording its chain links are then taken; audited with who and why")
    ac.add_argument("device")
    ac.add_argument("key_id")
    ac.add_argument("recording")
    ac.add_argument("manifest_sha256")
    ac.add_argument("--reason", required=True, help="why this chain is genuine (kept in the custody log)")
    ac.add_argument("--by", default=None, help="who vouches (default: the login name)")
    ac.add_argument("--despite-conflicts", action="store_true",
                    help="keep the head although base holds evidence against it (another manifest of that id, a "
                         "link naming another SHA-256, a fork, a hand-over chain going past it): refused without "
                         "this; only after the card and the footage were examined (the conflicts are audited)")
    hl = ksub.add_parser("held", help="a device's recordings base received signed but did not store (held: 409; "
                                      "refused), with their manifest SHA-256, who links them, and the evidence "
                                      "against each as a head (what 'accept-chain' checks)")
    hl.add_argument("device")
    hl.add_argument("--json", action="store_true")
    hd = ksub.add_parser("heads", help="the registered chain heads of retired keys (hand-overs, operators' word)")
    hd.add_argument("--device")
    hd.add_argument("--json", action="store_true")
    for p in (add, ret, rev, lst, ho, ac, hl, hd):
        p.add_argument("--db", required=True, help=db_help)


def run(args: argparse.Namespace) -> int:
    from bodycam.base.cli import _table, open_store, parse_since
    from bodycam.base.keys import KeyRegistry

    now = SystemClock().wall_ns()
    create = args.keys_command == "add"
    with closing(open_store(args.db, create=create)) as store:
        reg = KeyRegistry(store)  # type: ignore[arg-type]
        if args.keys_command == "add":
            try:
                pem = args.pubkey.read_bytes()
            except OSError as exc:
                raise UsageError(f"{args.pubkey}: cannot read ({exc.strerror or exc})") from exc
            k = reg.add(args.device, pem, now)
            print(f"key {k.key_id} registered for {k.device} (since {rfc3339_ms(k.added_ns)}): its markers must "
                  "now be signed")
            return 0
        if args.keys_command in ("revoke", "retire"):
            at = now if args.at is None else parse_since(args.at)
            if args.keys_command == "revoke":
                k = reg.revoke(args.device, args.key_id, at)
                assert k.revoked_ns is not None
                print(f"key {k.key_id} of {k.device} revoked from {rfc3339_ms(k.revoked_ns)}")
                return 0
            k = reg.retire(args.device, args.key_id, at)
            assert k.retired_ns is not None
            print(f"key {k.key_id} of {k.device} retired from {rfc3339_ms(k.retired_ns)}: what it signed before "
                  "stays evidence (its recordings are taken on the chain its hand-over ends)")
            if not _heads(store, args.device, k.key_id):
                print(f"note: base holds no hand-over of key {k.key_id} yet: the camera uploads it at its next dock "
                      f"(or: bodycam-base keys handover {k.device} OLD_KEY_ID.json); until then its recordings wait",
                      file=sys.stderr)
            if not any(o.state_at(k.retired_ns) == "active" for o in reg.keys(args.device)):
                print(f"warning: {k.device} has no active key left: register its new key "
                      f"(bodycam-base keys add {k.device} device.pub), or it cannot offload", file=sys.stderr)
            return 0
        if args.keys_command == "held":
            return _held(args, store, reg)
        if args.keys_command in ("handover", "accept-chain", "heads"):
            return _chain(args, store, reg, now)
        rows = reg.keys(args.device)
    if args.json:
        for k in rows:
            doc: dict[str, Any] = {"device": k.device, "key_id": k.key_id, "added": rfc3339_ms(k.added_ns),
                                   "state": k.state(now), "retired": _time(k.retired_ns),
                                   "revoked": _time(k.revoked_ns), "public_pem": k.public_pem}
            print(json.dumps(doc))
        return 0
    print(_table(["DEVICE", "KEY ID", "STATE", "ADDED (UTC)", "RETIRED (UTC)", "REVOKED (UTC)"],
                 [[k.device, k.key_id, k.state(now), rfc3339_ms(k.added_ns), _time(k.retired_ns) or "-",
                   _time(k.revoked_ns) or "-"] for k in rows]))
    return 0


def _chain_heads(store: Any, reg: KeyRegistry) -> ChainHeads:
    from bodycam.base.chain_heads import ChainHeads
    from bodycam.base.custody import CustodyLog

    return ChainHeads(store, CustodyLog(store), reg)


def _heads(store: Any, device: str, key_id: str) -> list[Head]:
    from bodycam.base.keys import KeyRegistry

    return list(_chain_heads(store, KeyRegistry(store)).heads(device, key_id))


def _chain(args: argparse.Namespace, store: Any, reg: KeyRegistry, now: int) -> int:
    import getpass

    from bodycam.base.chain_heads import ChainRefused
    from bodycam.base.cli import _table

    chain = _chain_heads(store, reg)
    by = (args.by or getpass.getuser()) if args.keys_command != "heads" else ""
    try:
        if args.keys_command == "handover":
            try:
                doc = loads_untrusted(args.file.read_bytes())
            except (OSError, ValueError) as exc:
                raise UsageError(f"{args.file}: cannot read a JSON hand-over record ({exc})") from exc
            h, new = chain.register_handover(args.device, doc, f"operator:{by}", now)
            print(f"hand-over of key {h.old_key} of {h.device} to key {h.new_key} "
                  f"{'registered' if new else 'already registered'}: its chain ends at "
                  f"{h.head[0] + ' (manifest ' + h.head[1] + ')' if h.head else 'nothing (it signed no recording)'}")
            return 0
        if args.keys_command == "accept-chain":
            head, found = chain.vouch(args.device, args.key_id, args.recording, args.manifest_sha256, args.reason,
                                      f"operator:{by}", now, despite_conflicts=args.despite_conflicts)
            for why in found:
                print(f"WARNING: vouched DESPITE evidence against it: {why}", file=sys.stderr)
            print(f"{head.device}: {by} vouches for {args.recording} (manifest {args.manifest_sha256}) as a head of "
                  f"key {head.key_id}: it and the recordings its chain links are taken at their next upload")
            return 0
    except ChainRefused as exc:
        raise UsageError(str(exc)) from exc
    rows = chain.heads(args.device) if args.device else [r for d in sorted({k.device for k in reg.keys(None)})
                                                          for r in chain.heads(d)]
    if args.json:
        for r in rows:
            print(json.dumps({"device": r.device, "key_id": r.key_id, "recording": r.link[0] if r.link else None,
                              "manifest_sha256": r.link[1] if r.link else None, "kind": r.kind, "by": r.actor,
                              "at": rfc3339_ms(r.t_ns), "reason": r.detail.get("reason")}))
        return 0
    print(_table(["DEVICE", "KEY ID", "HEAD", "KIND", "BY", "AT (UTC)"],
                 [[r.device, r.key_id, r.link[0] if r.link else "-", r.kind, r.actor, rfc3339_ms(r.t_ns)]
                  for r in rows]))
    return 0


def _held(args: argparse.Namespace, store: Any, reg: KeyRegistry) -> int:
    from bodycam.base.chain_evidence import conflicts, link_source
    from bodycam.base.cli import _table

    chain = _chain_heads(store, reg)
    walk = link_source(args.device, chain.custody, chain.seen)
    rows: list[dict[str, Any]] = []
    for seen in chain.seen.rows(args.device):
        stored = chain.custody.stored(args.device, seen.recording)
        if stored and stored[0].manifest_sha256 == seen.manifest_sha256:
            continue
        last = chain.custody.last_entry(args.device, seen.recording)
        heads = [h.link for h in chain.heads(args.device, seen.key_id) if h.kind == "handover" and h.link is not None]
        rows.append({"recording": seen.recording, "manifest_sha256": seen.manifest_sha256, "key_id": seen.key_id,
                     "state": last.action if last is not None else "-",
                     "why": (last.detail.get("reason") or "") if last is not None else "",
                     "previous": seen.previous[0] if seen.previous else None,
                     "linked_by": sorted(x.recording for x in chain.seen.linking(args.device, seen.recording)
                                         if x.previous == (seen.recording, seen.manifest_sha256)),
                     "conflicts": conflicts(args.device, seen.key_id, seen.recording, seen.manifest_sha256,
                                            chain.custody, chain.seen, heads, walk)})
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(_table(["RECORDING", "KEY ID", "STATE", "MANIFEST SHA-256", "PREVIOUS", "LINKED BY", "EVIDENCE AGAINST"],
                 [[r["recording"], r["key_id"], r["state"], r["manifest_sha256"], r["previous"] or "-",
                   ", ".join(r["linked_by"]) or "-", "; ".join(r["conflicts"]) or "none"] for r in rows]))
    return 0


def _time(ns: int | None) -> str | None:
    return None if ns is None else rfc3339_ms(ns)
