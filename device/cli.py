"""``bodycam``: the firmware's command line (what systemd runs on the camera)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bodycam.device import evidence_cli, model_cli
from bodycam.device.console import pipe_safe
from bodycam.device.errors import BodycamError, ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bodycam", description="bodycam edge-inference firmware")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="run the firmware loop on the camera")
    run.add_argument("--config", type=Path, required=True, help="config file (TOML), e.g. /etc/bodycam/config.toml")
    check = sub.add_parser("check-config", help="validate a config file and print the effective settings "
                                                 "(secrets masked; every problem listed with its dotted key)")
    check.add_argument("config", type=Path)
    doc = sub.add_parser("doctor", help="self-test the camera's hardware, storage, broker and unit (stop the "
                                        "service first); exit 0 ok, 1 warn, 2 fail")
    doc.add_argument("--config", type=Path, default=Path("/etc/bodycam/config.toml"), help="config file (TOML)")
    doc.add_argument("--json", action="store_true", help="print the results as JSON")
    evidence_cli.add_parsers(sub)
    model_cli.add_parsers(sub)
    return p


MASK = "********"


def masked(value: object) -> object:
    """``value`` (a config tree as plain data) with every secret replaced by :data:`MASK`."""
    from bodycam.device.settings import SECRET_KEYS

    if isinstance(value, dict):
        return {k: (MASK if k in SECRET_KEYS and v is not None else masked(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v) for v in value]
    return value


def _check_config(path: Path) -> int:
    import dataclasses
    import json

    from bodycam.device.config import load_config
    from bodycam.device.errors import ConfigError
    from bodycam.device.settings import problems_of

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        problems = problems_of(exc)
        source = getattr(exc, "source", "") or str(path)
        lines = [f"bodycam check-config: {source}: {len(problems)} problem(s)"]
        lines += [f"  {p}" for p in problems]
        print("\n".join(lines), file=sys.stderr)
        return exc.exit_code
    print(json.dumps(masked(dataclasses.asdict(cfg)), indent=2, default=str))
    return 0


def _doctor(path: Path, as_json: bool) -> int:
    from bodycam.device.config import load_config
    from bodycam.device.doctor import exit_code, real_doctor_parts, render, run_doctor, to_json

    try:
        cfg = load_config(path)
    except BodycamError as exc:
        print(f"bodycam doctor: {exc}", file=sys.stderr)
        return exc.exit_code
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    checks = run_doctor(cfg, real_doctor_parts(cfg))
    print(to_json(checks) if as_json else render(checks))
    return exit_code(checks)


@pipe_safe
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.config)
    if args.command == "doctor":
        return _doctor(args.config, args.json)
    if args.command in ("provision", "verify", "model", "offload"):
        try:
            return model_cli.run(args) if args.command == "model" else evidence_cli.run(args)
        except BodycamError as exc:
            print(f"bodycam: error: {exc}", file=sys.stderr)
            return exc.exit_code
    from bodycam.device.config import load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        # `run` is what systemd starts: a bad config is a start-up failure that no restart can cure, so it
        # exits like the others (StartupError, 78: the unit's RestartPreventExitStatus=) with one STATUS=
        # line, instead of 2, which Restart=on-failure retries until start-limit-hit. check-config and
        # doctor, run by a person or a script, keep ConfigError's 2.
        from bodycam.device.firmware import config_failure

        err = config_failure(exc)
        print(f"bodycam: error: {err}", file=sys.stderr)
        return err.exit_code
    try:
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
