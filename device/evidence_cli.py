"""``bodycam provision`` (the camera's identity, :mod:`bodycam.device.identity`), ``bodycam verify``
(:mod:`bodycam.device.verify`) and ``bodycam offload trust KEY.pub`` (base's custody key, which signs
the confirmations that let retention delete offloaded footage: :mod:`bodycam.device.uplink.offload`):
parsers here, the work imported only when the command runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bodycam.device.errors import BodycamError, UsageError


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "provision",
        help="generate the device's Ed25519 key (signs markers and footage), print its public key and id, "
             "write a CSR for the MQTT client certificate",
    )
    p.add_argument("--config", type=Path, default=None,
                   help="config file (TOML): device id and identity.key_file (default /etc/bodycam/config.toml "
                        "when it exists)")
    p.add_argument("--key-file", type=Path, default=None,
                   help="where to write the private key (default: identity.key_file, else <data_dir>/identity/device.key)")
    p.add_argument("--device", default=None, help="device id (default: device.id of the config)")
    p.add_argument("--owner", default=None, help="user that owns the key (the service user, e.g. bodycam)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing key (a new identity: register it at base); the old key first signs, "
                        "with the new one, a hand-over naming its last recording (<data_dir>/handover/OLD_KEY_ID.json, "
                        "uploaded to base at the next dock): base takes the old key's recordings on that chain only")
    p.add_argument("--base-key", default=None, metavar="AGE1_OR_FILE",
                   help="install base's public key (age1..., or a file holding it) to which footage is "
                        "encrypted at rest (at atrest.base_key_file, default <data_dir>/identity/base.age.pub); "
                        "with an existing device key only the base key is installed")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    v = sub.add_parser("verify", help="verify recordings offline: manifest signature, segment hashes, marker "
                                      "signatures and chain, seq gaps, chapters; exit 0 only when all verify")
    v.add_argument("path", type=Path, help="a recording directory, a folder of recordings or a data directory")
    v.add_argument("--key", type=Path, default=None,
                   help="the device's public key (PEM), e.g. as registered at base; default: device.pub found "
                        "beside the footage (then the report says the key is not independent)")
    v.add_argument("--decrypt-key", type=Path, default=None, metavar="BASE_KEY",
                   help="base's private key (age identity file): segments encrypted at rest are also decrypted "
                        "and checked against the plaintext hashes the manifest signs (nothing is written)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    o = sub.add_parser("offload", help="offload to base: trust base's custody key (it signs the confirmations "
                                       "that let retention delete offloaded footage)")
    osub = o.add_subparsers(dest="offload_command", metavar="ACTION", required=True)
    t = osub.add_parser("trust", help="trust base's custody public key (PEM, from 'bodycam-base custody keygen')")
    t.add_argument("key", type=Path, help="base's custody public key (PEM)")
    t.add_argument("--config", type=Path, default=Path("/etc/bodycam/config.toml"), help="config file (TOML)")
    t.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    if args.command == "verify":
        from bodycam.device import verify

        return verify.run(args)
    if args.command == "offload":
        from bodycam.device.config import load_config
        from bodycam.device.model_cli import print_trusted
        from bodycam.device.uplink.offload import custody_keys_dir

        cfg = load_config(args.config)
        return print_trusted(args.key, custody_keys_dir(cfg.offload, cfg.data_dir), "custody", args.json)
    return provision(args)


def provision(args: argparse.Namespace) -> int:
    from bodycam.device.config import AppConfig, load_config
    from bodycam.device.identity import key_path, provision
    from bodycam.device.uplink.validate import check_device_id

    default_cfg = Path("/etc/bodycam/config.toml")
    if args.config is not None:
        cfg = load_config(args.config)
    elif default_cfg.exists():
        cfg = load_config(default_cfg)
    else:
        cfg = AppConfig()
    device = args.device or cfg.device.id
    if args.device is not None:
        try:
            check_device_id(device, "--device")
        except BodycamError as exc:
            raise UsageError(str(exc)) from exc
    path = args.key_file or key_path(cfg.identity, cfg.data_dir, environ={})
    if args.base_key is not None:
        from bodycam.device.footage.atrest import base_key_path, install_recipient

        target = base_key_path(cfg.atrest, cfg.data_dir)
        recipient = install_recipient(target, args.base_key)
        if not args.json:
            print(f"base key   {recipient} installed in {target} (footage is encrypted to it)")
        if path.exists() and not args.force:
            if args.json:
                json.dump({"base_key": recipient, "base_key_file": str(target)}, sys.stdout, indent=2)
                print()
            return 0
    handover: dict[str, Any] = {}
    if args.force and path.exists():  # a rotation: the old key hands over to the new one first
        from bodycam.device.clock import SystemClock, rfc3339_ms
        from bodycam.device.footage.handover import rotate_key

        rotated = rotate_key(path, device, cfg.data_dir, rfc3339_ms(SystemClock().wall_ns()), owner=args.owner)
        made = rotated.provisioned
        handover = {"handover_file": None if rotated.handover is None else str(rotated.handover),
                    "handover_head": None if rotated.head is None else rotated.head[0],
                    "handover_problem": rotated.problem, "replaced_key_from": rotated.replaced_from}
    else:
        made = provision(path, device, owner=args.owner, force=args.force)
    if args.json:
        json.dump({"device": device, "key_id": made.key_id, "key_file": str(made.key_file),
                   "public_key_file": str(made.public_file), "csr_file": str(made.csr_file),
                   "public_key_pem": made.public_pem.decode("ascii"), **handover}, sys.stdout, indent=2)
        print()
        return 0
    print(f"device     {device}")
    print(f"key id     {made.key_id}")
    print(f"private    {made.key_file} (mode 0600{', owner ' + args.owner if args.owner else ''})")
    print(f"public     {made.public_file}")
    print(f"csr        {made.csr_file} (CN={device}: have the fleet CA sign it for the MQTT client certificate)")
    if handover.get("handover_file"):
        print(f"hand-over  {handover['handover_file']} (signed by the old and the new key; the old key's chain "
              f"ends at {handover['handover_head'] or 'nothing: it signed no recording'}; the camera uploads it "
              "at its next dock)")
    if rotated_from := handover.get("replaced_key_from"):
        print(f"note: the key replaced now came from an earlier 'provision --force' (hand-over from key {rotated_from}):"
              " if base never registered it, register it too and retire it (bodycam-base keys add "
              f"{device} {Path(str(handover['handover_file'])).with_suffix('.pub')}; keys retire), or base refuses "
              "both hand-overs (unknown_key) and holds the older keys' recordings back", file=sys.stderr)
    if not handover.get("handover_file") and handover:
        print(f"warning: no hand-over (the old key cannot be read: {handover['handover_problem']}): base holds the "
              "old key's recordings back until an operator vouches for them (bodycam-base keys accept-chain)",
              file=sys.stderr)
    print()
    print(made.public_pem.decode("ascii"), end="")
    print()
    print(f"next: at base, bodycam-base keys add {device} {made.public_file.name}")
    if handover:
        print(f"      then bodycam-base keys retire {device} OLD_KEY_ID (the old key's recordings are taken on the "
              "chain its hand-over ends)")
    print("      here, bodycam offload trust custody.pub (base's custody key: it signs the offload confirmations)")
    return 0
