"""``bodycam-base keys add DEVICE PUBKEY_FILE | retire DEVICE KEY_ID [--at T] | revoke DEVICE KEY_ID [--at T] |
list [--device D]``.

``retire`` is the routine rotation (after ``add`` of the new key): the old key signs nothing new, and what it
signed before stays evidence (``base/keys.py``, ``base/receive.py``). ``revoke`` is for a compromised key:
nothing signed with it is trusted when it reaches base from then on."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from bodycam.device.clock import SystemClock, rfc3339_ms
from bodycam.device.errors import UsageError


def add_parser(sub: Any, db_help: str, parents: list[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", parents=parents, help="the devices' public keys: markers are verified with them")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="{add,retire,revoke,list}")
    add = ksub.add_parser("add", help="register a device's public key (device.pub from 'bodycam provision')")
    add.add_argument("device")
    add.add_argument("pubkey", type=Path, help="PEM public key file")
    ret = ksub.add_parser("retire", help="routine rotation (register the new key first): the key signs nothing new "
                                         "from now (or --at) on; what it signed before stays evidence and uploads")
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
    for p in (add, ret, rev, lst):
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
        if args.keys_command == "revoke":
            at = now if args.at is None else parse_since(args.at)
            k = reg.revoke(args.device, args.key_id, at)
            assert k.revoked_ns is not None
            print(f"key {k.key_id} of {k.device} revoked from {rfc3339_ms(k.revoked_ns)}")
            return 0
        if args.keys_command == "retire":
            at = now if args.at is None else parse_since(args.at)
            k = reg.retire(args.device, args.key_id, at)
            assert k.retired_ns is not None
            print(f"key {k.key_id} of {k.device} retired from {rfc3339_ms(k.retired_ns)}: what it signed before "
                  "stays evidence (recordings are taken once base holds the recording after them)")
            if not any(o.state_at(k.retired_ns) == "active" for o in reg.keys(args.device)):
                print(f"warning: {k.device} has no active key left: register its new key "
                      f"(bodycam-base keys add {k.device} device.pub), or it cannot offload", file=sys.stderr)
            return 0
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


def _time(ns: int | None) -> str | None:
    return None if ns is None else rfc3339_ms(ns)
