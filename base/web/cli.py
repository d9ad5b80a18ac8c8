"""``bodycam-base serve`` and ``bodycam-base user`` (wired into ``bodycam.base.cli``).

bodycam-base serve --db base.db [--listen 127.0.0.1:8080] [--session-hours 12] [--poll-ms 200] [--no-notify] [--cookie-secure]
                   [--battery-low-pct 15] [--storage-low-pct 5] [--temperature-high-c 80] [--stale-s 35]
                   [--tile-url URL] [--tile-attribution TEXT] [--evidence DIR --custody-key KEY]
bodycam-base user add NAME --role operator|supervisor|admin --db base.db [--replace]   (password: prompt or stdin)
bodycam-base user list --db base.db
"""

from __future__ import annotations

import argparse
import getpass
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from types import FrameType
from typing import Any

from bodycam.base.evidence_s3 import add_s3_arguments
from bodycam.base.web.fleet import FleetConfig
from bodycam.device.errors import UsageError

FLEET_DEFAULTS = FleetConfig()

_Open = Callable[..., Any]


def add_parsers(sub: Any, db_help: str, parents: list[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", parents=parents, help="the operators' web app: live alerts, markers, fleet")
    serve.add_argument("--db", required=True, help=db_help + " (the store of 'listen')")
    serve.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT to serve on (default 127.0.0.1:8080)")
    serve.add_argument("--session-hours", type=float, default=12.0, help="a login lasts this long (default 12)")
    serve.add_argument("--broker", metavar="URL",
                       help="mqtt://host:port the dashboard sends operators' 'start recording' commands through")
    serve.add_argument("--broker-ca-file", help="with --broker mqtts://: the broker's CA (PEM); default: the system's")
    serve.add_argument("--broker-cert-file", help="with --broker mqtts://: the dashboard's client certificate (mutual "
                                                  "TLS; its CN listed with 'broker-acl --base CN': the client id is the "
                                                  "CN, so not the CN of a listen instance)")
    serve.add_argument("--broker-key-file", help="the private key of --broker-cert-file (PEM)")
    serve.add_argument("--prefix", default="bodycam", help="topic prefix of the cameras (as listen's)")
    serve.add_argument("--record-expiry-s", type=int, default=60,
                       help="an operator's cmd/record expires after this many seconds (default 60)")
    serve.add_argument("--poll-ms", type=int, default=200,
                       help="how often new alerts are looked for (default 200); on PostgreSQL only while its "
                            "notifications are unavailable (see --no-notify)")
    serve.add_argument("--no-notify", action="store_true",
                       help="PostgreSQL: poll every --poll-ms instead of reading alerts when LISTEN/NOTIFY says "
                            "they changed")
    serve.add_argument("--cookie-secure", action="store_true",
                       help="mark cookies Secure (when served behind HTTPS, e.g. a reverse proxy)")
    fleet = serve.add_argument_group("fleet and map")
    d = FLEET_DEFAULTS
    fleet.add_argument("--battery-low-pct", type=int, default=d.battery_low_pct,
                       help=f"alert at or below this battery charge (default {d.battery_low_pct})")
    fleet.add_argument("--storage-low-pct", type=float, default=d.storage_low_pct,
                       help=f"alert 'storage full' at or below this free space, percent (default {d.storage_low_pct})")
    fleet.add_argument("--temperature-high-c", type=float, default=d.temperature_high_c,
                       help=f"highlight at or above this temperature (default {d.temperature_high_c})")
    fleet.add_argument("--stale-s", type=float, default=d.stale_s,
                       help=f"telemetry older than this is stale (default {d.stale_s})")
    fleet.add_argument("--tile-url", default="",
                       help="map tiles, e.g. http://tiles.local/{z}/{x}/{y}.png (default: none, a plain grid)")
    fleet.add_argument("--tile-attribution", default="", help="the tiles' attribution text (shown on the map)")
    serve.add_argument("--cert-file", type=Path, help="serve HTTPS with this certificate (PEM; cameras offload "
                                                       "only over HTTPS)")
    serve.add_argument("--key-file", type=Path, help="the certificate's private key (PEM)")
    serve.add_argument("--evidence", type=Path, help="base's evidence store (folder): cameras offload recordings "
                                                      "to /api/offload/v1 (verified, stored, audited); without "
                                                      "it, offload is off")
    add_s3_arguments(serve)
    serve.add_argument("--custody-key", type=Path, help="with --evidence (required): base's custody key ('bodycam-base "
                                                         "custody keygen'), which signs every offload confirmation; "
                                                         "the cameras trust its public half ('bodycam offload trust')")
    serve.add_argument("--model-key", type=Path, help="base's model-signing key ('bodycam-base model keygen'): admins "
                                                       "may approve models on the /models page")
    serve.add_argument("--model-packages", type=Path, help="where approved packages are written (with --model-key)")
    serve.add_argument("--age-key", type=Path, action="append", default=[], metavar="FILE",
                       help="base's age identity (private key) for footage encrypted at rest: recordings are "
                            "decrypted on receipt into a working copy for review and export (repeat for old keys)")
    serve.add_argument("--evidence-reserve-mb", type=float, default=1024.0,
                       help="refuse uploads that would leave less free space in the evidence store (default 1024)")

    user = sub.add_parser("user", parents=parents, help="dashboard users: add, list")
    verbs = user.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="add a user (password from a prompt, or one line on stdin)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("operator", "supervisor", "admin"))
    add.add_argument("--db", required=True, help=db_help)
    add.add_argument("--replace", action="store_true", help="the user exists: set this role and a new password")
    ls = verbs.add_parser("list", help="list users and roles")
    ls.add_argument("--db", required=True, help=db_help)


def build_review(evidence: Any, custody: Any, store: Any, age_keys: list[Path]) -> Any:
    """Review at base on this evidence store (labels in the store's database; ``age_keys``: base's
    identities for footage encrypted at rest)."""
    from bodycam.base.keys import KeyRegistry
    from bodycam.base.review import Review
    from bodycam.base.review_footage import WorkingCopies
    from bodycam.base.review_labels import LabelStore
    from bodycam.device.footage.atrest import load_identity

    identities = [load_identity(p) for p in age_keys]
    return Review(evidence, custody, LabelStore(store), WorkingCopies(evidence, identities), KeyRegistry(store))


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not host or not 0 < number < 65536:
        raise UsageError(f"--listen: {text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host.strip("[]"), number


def serve(args: argparse.Namespace, open_store: _Open) -> int:
    import uvicorn

    from bodycam.base.web.app import WebConfig, create_app
    from bodycam.base.web.db import WebDb

    host, port = parse_listen(args.listen)
    if args.session_hours <= 0 or args.poll_ms < 10:
        raise UsageError("--session-hours must be > 0 and --poll-ms >= 10")
    try:
        fleet = FleetConfig(stale_s=args.stale_s, battery_low_pct=args.battery_low_pct,
                            storage_low_pct=args.storage_low_pct, temperature_high_c=args.temperature_high_c)
    except ValueError as exc:
        raise UsageError(f"serve: {exc}") from exc
    if args.tile_url and not args.tile_url.startswith(("http://", "https://")):
        raise UsageError(f"--tile-url: {args.tile_url!r} is not an http(s) URL template")
    if not 1 <= args.record_expiry_s <= 86400:
        raise UsageError("--record-expiry-s must be 1..86400")
    mqtt = None
    if args.broker is not None:
        from bodycam.device.uplink.mqtt_config import MqttConfig

        if not args.broker.startswith(("mqtt://", "mqtts://")):
            raise UsageError(f"--broker {args.broker!r} must be mqtt://host:port or mqtts://host:port")
        tls = _broker_tls(args)
        mqtt = MqttConfig(url=args.broker) if tls is None else MqttConfig(url=args.broker, tls=tls)
    elif any(getattr(args, f) is not None for f in ("broker_ca_file", "broker_cert_file", "broker_key_file")):
        raise UsageError("--broker-ca-file, --broker-cert-file and --broker-key-file go with --broker mqtts://...")
    if (args.cert_file is None) != (args.key_file is None):
        raise UsageError("--cert-file and --key-file go together")
    for f in (args.cert_file, args.key_file):
        if f is not None and not f.is_file():
            raise UsageError(f"{f}: no such file (TLS)")
    if (args.model_key is None) != (args.model_packages is None):
        raise UsageError("--model-key and --model-packages go together")
    signer = None
    if args.model_key is not None:
        from bodycam.base.model_registry import load_model_signer

        signer = load_model_signer(args.model_key)
    custody_signer = _custody_signer(args, signer)
    store = open_store(args.db)
    with closing(store):
        from bodycam.base.model_registry import ModelRegistry
        from bodycam.base.web.models import ModelDesk
        from bodycam.base.web.record import RecordSender

        desk = ModelDesk(ModelRegistry(store), signer, args.model_packages)

        receiver = None
        shelf = None
        review = None
        if args.evidence is not None:
            from bodycam.base.custody import CustodyLog
            from bodycam.base.evidence_s3 import open_evidence
            from bodycam.base.keys import KeyRegistry
            from bodycam.base.model_delivery import ModelShelf
            from bodycam.base.receive import Receiver

            evidence = open_evidence(args.evidence, args, reserve_mb=args.evidence_reserve_mb)
            review = build_review(evidence, CustodyLog(store), store, args.age_key)
            assert custody_signer is not None
            receiver = Receiver(evidence, review.custody, KeyRegistry(store), signer=custody_signer,
                                on_stored=lambda d, r: threading.Thread(target=review.copies.prepare, args=(d, r),
                                                                        name="review-copy", daemon=True).start())
            shelf = ModelShelf(desk.registry)
        elif args.age_key:
            raise UsageError("--age-key goes with --evidence")
        web = WebDb(store)
        recorder = RecordSender(web, mqtt, prefix=args.prefix, expiry_s=args.record_expiry_s)
        app = create_app(web, WebConfig(session_s=int(args.session_hours * 3600), poll_s=args.poll_ms / 1000,
                                        notify=not args.no_notify, cookie_secure=args.cookie_secure, fleet=fleet, tile_url=args.tile_url,
                                        tile_attribution=args.tile_attribution, recorder=recorder),
                         offload=receiver, models=shelf, model_desk=desk, review=review)
        config = uvicorn.Config(app, host=host, port=port, log_level="info" if args.verbose else "warning",
                                access_log=bool(args.verbose), timeout_graceful_shutdown=2, server_header=False,
                                ssl_certfile=None if args.cert_file is None else str(args.cert_file),
                                ssl_keyfile=None if args.key_file is None else str(args.key_file))
        server = _server(config, app.state.hub)
        scheme = "https" if args.cert_file is not None else "http"
        print(f"bodycam-base serve: {scheme}://{args.listen}/ on {args.db if '://' not in args.db else 'postgresql'}; "
              "Ctrl-C stops" + (f"; camera offload into {args.evidence} and approved models to cameras at the dock"
                                 if receiver is not None else ""), flush=True)
        server.run()
    return 0 if server.started else 1


def _custody_signer(args: argparse.Namespace, model_signer: Any) -> Any:
    """Base's custody key for ``--evidence`` (checked at start: missing, unreadable, too open, not Ed25519, or
    the model-signing key again are one-line errors); None without ``--evidence``."""
    if args.evidence is None:
        if args.custody_key is not None:
            raise UsageError("--custody-key goes with --evidence (it signs the offload confirmations)")
        return None
    if args.custody_key is None:
        raise UsageError("--evidence needs --custody-key KEY: base signs every offload confirmation with it and the "
                         "cameras delete footage only on a confirmation they can verify (make one with "
                         "'bodycam-base custody keygen KEY'; cameras: 'bodycam offload trust KEY.pub')")
    from bodycam.base.signing import load_custody_signer

    signer = load_custody_signer(args.custody_key)
    if model_signer is not None and model_signer.key_id == signer.key_id:
        raise UsageError(f"--custody-key and --model-key are the same key ({signer.key_id}): use a dedicated custody "
                         "key (it is online in every serve instance; the model-signing key need not be)")
    return signer


def _server_class() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but Ctrl-C/SIGTERM first ends every page's event stream (uvicorn would
        otherwise wait for them until its graceful timeout) and the process then exits 0."""

        def __init__(self, config: uvicorn.Config, hub: Any) -> None:
            super().__init__(config)
            self.hub = hub

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            self.hub.close_streams_threadsafe()

    return Server


def _server(config: Any, hub: Any) -> Any:
    return _server_class()(config, hub)


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise UsageError("the two passwords differ")
        return first
    line = sys.stdin.readline()
    if not line:
        raise UsageError("no password on stdin (give one line, or run from a terminal to be asked)")
    return line.rstrip("\r\n")


def user(args: argparse.Namespace, open_store: _Open) -> int:
    from bodycam.base.web.auth import Auth, check_name
    from bodycam.base.web.db import WebDb

    with closing(open_store(args.db, create=args.verb == "add")) as store:
        auth = Auth(WebDb(store))
        if args.verb == "list":
            for name, role, disabled in auth.users():
                print(f"{name}\t{role}{chr(9) + 'disabled' if disabled else ''}")
            return 0
        check_name(args.name)
        auth.add_user(args.name, args.role, _password(), time.time_ns(), replace=args.replace)
        print(f"bodycam-base: user {args.name} saved (role {args.role})")
    return 0


def _broker_tls(args: argparse.Namespace) -> Any:
    """serve's TLS towards the broker (``--broker-*``), checked at start: None when none is given."""
    from bodycam.device.uplink.mqtt_config import TlsConfig

    files = {"--broker-ca-file": args.broker_ca_file, "--broker-cert-file": args.broker_cert_file,
             "--broker-key-file": args.broker_key_file}
    if all(v is None for v in files.values()):
        return None
    if not args.broker.startswith("mqtts://"):
        raise UsageError("--broker-ca-file, --broker-cert-file and --broker-key-file need --broker mqtts://...")
    if (args.broker_cert_file is None) != (args.broker_key_file is None):
        raise UsageError("--broker-cert-file and --broker-key-file go together")
    for flag, value in files.items():
        if value is not None and not Path(value).is_file():
            raise UsageError(f"{flag}: {value}: no such file")
    return TlsConfig(ca_file=args.broker_ca_file, cert_file=args.broker_cert_file, key_file=args.broker_key_file)
