"""``bodycam-base keys add DEVICE PUBKEY_FILE | revoke DEVICE KEY_ID [--at T] | list [--device D]``."""

from __future__ import annotations

import argparse
import json
from contextlib import closing
from pathlib import Path
from typing import Any

from bodycam.device.clock import SystemClock, rfc3339_ms
from bodycam.device.errors import UsageError


def add_parser(sub: Any, db_help: str, parents: list[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", parents=parents, help="the devices' public keys: markers are verified with them")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="{add,revoke,list}")
    add = ksub.add_parser("add", help="register a device's public key (device.pub from 'bodycam provision')")
    add.add_argument("device")
    add.add_argument("pubkey", type=Path, help="PEM public key file")
    rev = ksub.add_parser("revoke", help="stop trusting a key for markers received from now (or --at) on")
    rev.add_argument("device")
    rev.add_argument("key_id")
    rev.add_argument("--at", help="revocation time (RFC 3339 or date, UTC when no offset); default: now")
    lst = ksub.add_parser("list", help="registered keys with their state")
    lst.add_argument("--device")
    lst.add_argument("--json", action="store_true")
    for p in (add, rev, lst):
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
        rows = reg.keys(args.device)
    if args.json:
        for k in rows:
            doc: dict[str, Any] = {"device": k.device, "key_id": k.key_id, "added": rfc3339_ms(k.added_ns),
                                   "revoked": None if k.revoked_ns is None else rfc3339_ms(k.revoked_ns),
                                   "public_pem": k.public_pem}
            print(json.dumps(doc))
        return 0
    print(_table(["DEVICE", "KEY ID", "ADDED (UTC)", "REVOKED (UTC)"],
                 [[k.device, k.key_id, rfc3339_ms(k.added_ns), "-" if k.revoked_ns is None else rfc3339_ms(k.revoked_ns)]
                  for k in rows]))
    return 0
