"""``bodycam model ...``: the camera's model store from the command line (at the dock, or by hand).

* ``bodycam model trust KEY.pem``: add base's model-signing public key (done once at provisioning);
* ``bodycam model install PACKAGE``: verify a package from base and make it pending; the running
  service activates it at its next idle moment (or at its next start);
* ``bodycam model status [--json]``: active, previous and pending packages, and the rejected ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bodycam.device.errors import ConfigError


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser("model", help="the camera's model store: trust base's key, install a package, status")
    msub = m.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    for name, text in (("install", "verify a model package from base and make it pending"),
                       ("status", "show the active, previous, pending and rejected packages"),
                       ("trust", "trust base's model-signing public key (PEM)")):
        p = msub.add_parser(name, help=text)
        p.add_argument("--config", type=Path, default=Path("/etc/bodycam/config.toml"), help="config file (TOML)")
        if name == "install":
            p.add_argument("package", type=Path, help="the package directory (package.json and the model files)")
        if name == "trust":
            p.add_argument("key", type=Path, help="base's public key (PEM), from 'bodycam-base model keygen'")
        p.add_argument("--json", action="store_true", help="print the result as JSON")


def print_trusted(src: Path, folder: Path, what: str, as_json: bool) -> int:
    """Trust the public key ``src`` (copied into ``folder``) and say so; exit status 0."""
    from bodycam.device.identity import trust_key

    kid, dest = trust_key(src, folder)
    print(json.dumps({"trusted": kid, "file": str(dest)}) if as_json else f"trusted {what} key {kid} ({dest})")
    return 0


def run(args: argparse.Namespace) -> int:
    from bodycam.device.clock import SystemClock
    from bodycam.device.config import load_config
    from bodycam.device.model_select import keys_dir, open_store

    cfg = load_config(args.config)
    if args.model_command == "trust":
        return print_trusted(args.key, keys_dir(cfg), "model-signing", args.json)
    store = open_store(cfg, SystemClock())
    if store is None:
        raise ConfigError("models.enabled: the model store is disabled in this config")
    if args.model_command == "install":
        if not store.trusted:
            raise ConfigError(f"{keys_dir(cfg)}: no trusted model-signing key; run 'bodycam model trust KEY.pem' first")
        info = store.install(args.package)
        out = {"pending": info.package_id, "name": info.name, "version": info.version,
               "approved_by": info.approved_by, "approved_at": info.approved_at}
        print(json.dumps(out) if args.json else
              f"installed {info.name} {info.version} ({info.package_id}), approved by {info.approved_by} at "
              f"{info.approved_at}: pending; the service activates it at its next idle moment")
        return 0
    st = store.status()
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        for key in ("active", "previous", "pending"):
            print(f"{key:9} {st[key] or '-'}{'  (the shipped model)' if key == 'active' and not st[key] else ''}")
        for r in st["rejected"]:
            print(f"rejected  {r['package']}: {r['reason']}")
    return 0


__all__ = ["add_parsers", "run"]
