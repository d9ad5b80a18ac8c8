"""``bodycam-base export-case OUT --device D [--recording R ...] [--since T] [--until T] --evidence DIR --db DB``
and ``bodycam-base custody keygen KEY`` (base's custody key, which signs offload confirmations:
``base/signing.py``)."""

from __future__ import annotations

import argparse
import getpass
import re
from contextlib import closing
from pathlib import Path
from typing import Any

from bodycam.base.evidence_s3 import add_s3_arguments
from bodycam.device.clock import SystemClock
from bodycam.device.errors import UsageError

_TIME = re.compile(r"\A\d{8}T\d{9}Z\Z")


def add_parser(sub: Any, db_help: str, parents: list[argparse.ArgumentParser]) -> None:
    exp = sub.add_parser("export-case", parents=parents,
                         help="write a case bundle (recordings, markers, manifests, public key, custody log, "
                              "verification report) that 'bodycam verify' accepts")
    exp.add_argument("out", type=Path, help="the bundle's folder (new, or empty)")
    exp.add_argument("--device", required=True, help="the camera (one device per bundle)")
    exp.add_argument("--recording", action="append", help="a recording id (repeat); default: all of the device's")
    add_export_arguments(exp, db_help)


def add_custody_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("custody", parents=parents, help="base's custody key: signs every offload confirmation")
    csub = c.add_subparsers(dest="custody_command", required=True, metavar="{keygen}")
    kg = csub.add_parser("keygen", help="make base's custody key (KEY private, for 'serve --custody-key'; KEY.pub "
                                        "for every camera: 'bodycam offload trust')")
    kg.add_argument("key", type=Path)


def run_custody(args: argparse.Namespace) -> int:
    from bodycam.base.signing import keygen

    signer = keygen(args.key)
    print(f"custody key {signer.key_id}: private {args.key} (serve --custody-key, on base only), public "
          f"{args.key.with_suffix('.pub')} (on every camera: bodycam offload trust)")
    return 0


def add_export_arguments(exp: Any, db_help: str) -> None:
    """What every export from base's evidence takes: the time window, the evidence store, who, the database."""
    exp.add_argument("--since", help="recordings started at or after this time (recording id form, e.g. "
                                     "20260301T100000000Z)")
    exp.add_argument("--until", help="recordings started before this time (same form)")
    exp.add_argument("--evidence", required=True, type=Path, help="base's evidence store (folder)")
    add_s3_arguments(exp)
    exp.add_argument("--actor", default=None, help="who exports (audited); default: the login name")
    exp.add_argument("--db", required=True, help=db_help)


def check_export_arguments(args: argparse.Namespace) -> None:
    """The time window in the recording id form, and an evidence store where one is named."""
    for name in ("since", "until"):
        value = getattr(args, name)
        if value is not None and not _TIME.fullmatch(value):
            raise UsageError(f"--{name} {value!r}: use the recording id form YYYYMMDDTHHMMSSmmmZ")
    if args.evidence_s3 is None and not (args.evidence / "recordings").is_dir():
        raise UsageError(f"{args.evidence}: not an evidence store (no recordings/ folder)")


def run(args: argparse.Namespace) -> int:
    from bodycam.base.cli import open_store
    from bodycam.base.custody import CustodyLog
    from bodycam.base.evidence_s3 import open_evidence
    from bodycam.base.export_case import export_case
    from bodycam.base.keys import KeyRegistry

    check_export_arguments(args)
    with closing(open_store(args.db, create=False)) as store:
        custody = CustodyLog(store)  # type: ignore[arg-type]
        keys = KeyRegistry(store)  # type: ignore[arg-type]
        done = export_case(args.out, args.device, open_evidence(args.evidence, args), custody, keys,
                           actor=args.actor or getpass.getuser(), now_ns=SystemClock().wall_ns(),
                           recordings=args.recording, since=args.since, until=args.until)
    state = "everything verifies" if done.ok else "DOES NOT VERIFY (see verification.txt)"
    print(f"{done.out}: {len(done.recordings)} recording(s) of {args.device}, key {done.key_id}: {state}")
    return 0 if done.ok else 1
