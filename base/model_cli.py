"""``bodycam-base model keygen KEY | add MODEL --by USER | approve NAME VERSION --by USER --key KEY --out DIR | list``."""

from __future__ import annotations

import argparse
import json
from contextlib import closing
from pathlib import Path
from typing import Any

from bodycam.device.clock import SystemClock, rfc3339_ms


def add_parser(sub: Any, db_help: str, parents: list[argparse.ArgumentParser]) -> None:
    m = sub.add_parser("model", parents=parents, help="the model registry: add, approve (signed package), list")
    msub = m.add_subparsers(dest="model_command", required=True, metavar="{keygen,add,approve,list}")
    kg = msub.add_parser("keygen", help="make base's model-signing key (KEY private, KEY.pub for the cameras)")
    kg.add_argument("key", type=Path)
    add = msub.add_parser("add", help="register a built model (sidecar with a self-test: 'bodycam-model selftest')")
    add.add_argument("model", type=Path, help="the .tflite, its sidecar and self-test beside it")
    add.add_argument("--by", required=True, help="who adds it")
    ap = msub.add_parser("approve", help="approve a registered model: write its package, signed with base's key")
    ap.add_argument("name")
    ap.add_argument("version")
    ap.add_argument("--by", required=True, help="who approves it (recorded, and in the signed manifest)")
    ap.add_argument("--key", type=Path, required=True, help="base's model-signing key (from 'model keygen')")
    ap.add_argument("--out", type=Path, required=True, help="the package directory to write (new)")
    ap.add_argument("--rollback", action="store_true",
                    help="ship a version not higher than an approved one, as an explicit rollback (the cameras "
                         "refuse a downgrade that is not marked so)")
    lst = msub.add_parser("list", help="registered models, their metrics and approvals")
    lst.add_argument("--json", action="store_true")
    for p in (add, ap, lst):
        p.add_argument("--db", required=True, help=db_help)


def run(args: argparse.Namespace) -> int:
    from bodycam.base.cli import _table, open_store
    from bodycam.base.model_registry import ModelRegistry, keygen, load_model_signer

    if args.model_command == "keygen":
        signer = keygen(args.key)
        print(f"model-signing key {signer.key_id}: private {args.key} (keep it on base), public "
              f"{args.key.with_suffix('.pub')} (on every camera: bodycam model trust)")
        return 0
    now = SystemClock().wall_ns()
    with closing(open_store(args.db, create=args.model_command != "list")) as store:
        reg = ModelRegistry(store)  # type: ignore[arg-type]
        if args.model_command == "add":
            m = reg.add(args.model, args.by, now)
            print(f"{m.name} {m.version} registered (sha256 {m.sha256[:12]}..., added by {m.added_by})")
            return 0
        if args.model_command == "approve":
            m = reg.approve(args.name, args.version, args.by, now, load_model_signer(args.key), args.out,
                            rollback=args.rollback)
            print(f"{m.name} {m.version} approved by {m.approved_by}{' as a rollback' if m.rollback else ''}: "
                  f"package {args.out} "
                  f"(manifest sha256 {m.package_sha256}); install on a camera with 'bodycam model install'")
            return 0
        rows = reg.all()
    if args.json:
        print(json.dumps([m.as_json() for m in rows], indent=1))
        return 0
    print(_table(["model", "version", "task", "sha256", "added", "approved"],
                 [[m.name, m.version, m.task, m.sha256[:12], f"{rfc3339_ms(m.added_ns)} {m.added_by}",
                   "-" if m.approved_ns is None else f"{rfc3339_ms(m.approved_ns)} {m.approved_by}"] for m in rows]))
    return 0


__all__ = ["add_parser", "run"]
