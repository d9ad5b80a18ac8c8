"""``bodycam-base export-dataset OUT [--since T] [--until T] [--device D] [--reviewed-only] --evidence DIR
[--evidence-s3 URL] [--age-key FILE] --db DB``."""

from __future__ import annotations

import argparse
import getpass
from contextlib import closing
from pathlib import Path
from typing import Any

from bodycam.base.offload_cli import add_export_arguments, check_export_arguments
from bodycam.device.clock import SystemClock
from bodycam.device.errors import UsageError


def add_parser(sub: Any, db_help: str, parents: list[argparse.ArgumentParser]) -> None:
    exp = sub.add_parser("export-dataset", parents=parents,
                         help="write reviewed footage as a labelled data set (clips + bodycam.truth/1 files, "
                              "train/val/test by recording, dataset.json with provenance) for bodycam-model build")
    exp.add_argument("out", type=Path, help="the data set's folder (new, or empty)")
    exp.add_argument("--device", help="only this camera")
    exp.add_argument("--reviewed-only", action="store_true",
                     help="only recordings whose every detection has a verdict (otherwise an undecided detection "
                          "counts as a shot)")
    exp.add_argument("--age-key", type=Path, action="append", default=[], metavar="FILE",
                     help="base's age identity, for footage encrypted at rest (repeat for old keys)")
    add_export_arguments(exp, db_help)


def run(args: argparse.Namespace) -> int:
    from bodycam.base.cli import open_store
    from bodycam.base.custody import CustodyLog
    from bodycam.base.evidence_s3 import open_evidence
    from bodycam.base.export_dataset import export_dataset
    from bodycam.base.web.cli import build_review
    from bodycam.device.uplink.validate import is_device_id

    check_export_arguments(args)
    if args.device is not None and not is_device_id(args.device):
        raise UsageError(f"--device {args.device!r} is not a device id")
    with closing(open_store(args.db, create=False)) as store:
        evidence = open_evidence(args.evidence, args, reserve_mb=0)
        review = build_review(evidence, CustodyLog(store), store, args.age_key)  # type: ignore[arg-type]
        done = export_dataset(args.out, review, actor=args.actor or getpass.getuser(),
                              now_ns=SystemClock().wall_ns(), device=args.device, since=args.since,
                              until=args.until, reviewed_only=args.reviewed_only)
    splits = ", ".join(f"{k} {v}" for k, v in done.splits.items())
    print(f"{done.out}: {done.recordings} recording(s) ({splits}), {done.clips} clip(s), {done.shots} shot(s), "
          f"{done.negatives} shot-free span(s); provenance in dataset.json")
    return 0
