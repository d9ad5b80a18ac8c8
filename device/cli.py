"""``bodycam``: the firmware's command line (what systemd runs on the camera)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bodycam.device.errors import BodycamError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bodycam", description="bodycam edge-inference firmware")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="run the firmware loop on the camera")
    run.add_argument("--config", type=Path, required=True, help="config file (TOML), e.g. /etc/bodycam/config.toml")
    check = sub.add_parser("check-config", help="validate a config file and print the effective settings")
    check.add_argument("config", type=Path)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bodycam.device.config import load_config

    try:
        cfg = load_config(args.config)
        if args.command == "check-config":
            import dataclasses
            import json

            print(json.dumps(dataclasses.asdict(cfg), indent=2, default=str))
            return 0
        logging.basicConfig(level=cfg.device.log_level, format="%(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)
        from bodycam.device.firmware import run_firmware

        result = run_firmware(cfg)
    except BodycamError as exc:
        print(f"bodycam: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if result.storage_errors:
        print(f"bodycam: footage errors: {result.storage_errors[0]}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
