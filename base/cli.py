"""``bodycam-base``: listen for markers; list markers, devices and the quarantine.

bodycam-base listen     --broker mqtt://host:1883 --db base.db [--group base] [--client-id ID]
bodycam-base markers    --db base.db [--device D] [--since 2026-01-01] [--kind gunshot] [--limit N] [--json]
bodycam-base devices    --db base.db [--json]
bodycam-base quarantine --db base.db [--kind seq_conflict] [--device D] [--limit N] [--json]
bodycam-base keys       add DEVICE device.pub | retire DEVICE KEY_ID [--at T] | revoke DEVICE KEY_ID [--at T]
                        | list [--device D] | handover DEVICE OLD_KEY_ID.json [--by U]
                        | accept-chain DEVICE KEY_ID RECORDING MANIFEST_SHA256 --reason TEXT [--by U]
                        | heads [--device D] --db base.db
bodycam-base serve      --db base.db [--listen 127.0.0.1:8080]   (the web app: bodycam.base.web)
bodycam-base user add NAME --role operator|supervisor|admin --db base.db
bodycam-base export-case OUT --device D [--recording R ...] --evidence DIR --db base.db
bodycam-base custody keygen KEY   (base's custody key: serve --custody-key signs offload confirmations)
bodycam-base export-dataset OUT [--device D] [--since T] [--until T] [--reviewed-only] --evidence DIR --db base.db

``--db``: a file path (SQLite) or a ``postgresql://`` URL (PostgreSQL, ``pip install 'bodycam[postgres]'``).
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import hashlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import unicodedata
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from types import FrameType

from bodycam.base import alerts_out, broker_acl, dataset_cli, keys_cli, model_cli, offload_cli, peer
from bodycam.base.consumer import Consumer, ConsumerOptions
from bodycam.base.store import MarkerStore, SqliteStore
from bodycam.base.web import cli as web_cli
from bodycam.base.web.db import ensure_tables
from bodycam.device.clock import rfc3339_ms
from bodycam.device.errors import BodycamError, MarkerError, UsageError
from bodycam.device.uplink.markers import KNOWN_KINDS
from bodycam.device.uplink.validate import check_wall_ns, wall_ns_of

_DB_HELP = "SQLite file path, or postgresql://user@host[:port]/dbname"


def open_store(db: str, *, create: bool = True) -> MarkerStore:
    """``postgresql://...`` (or ``postgres://``) opens PostgreSQL (psycopg imported lazily), anything else
    SQLite; ``create=False``: a SQLite file that does not exist is an error, not a new empty database."""
    from bodycam.base.store_pg import PostgresStore, is_postgres_url

    return PostgresStore(db) if is_postgres_url(db) else SqliteStore(Path(db), create=create)


def default_client_id(group: str, db: str) -> str:
    """``bodycam-base-<group>-<8 hex>``: stable for one host and one database (so the broker keeps
    this consumer's session and queued markers across restarts), different for another host or db."""
    from bodycam.base.store_pg import _redact, is_postgres_url

    where = _redact(db) if is_postgres_url(db) else str(Path(db).resolve())
    digest = hashlib.sha256(f"{socket.gethostname()}\0{where}".encode("utf-8", "backslashreplace")).hexdigest()
    return f"bodycam-base-{group}-{digest[:8]}"


def parse_since(text: str, what: str = "--since") -> int:
    """``--since`` (or the dashboard's ``what``): RFC 3339 / ISO 8601 time or date; without a UTC offset it is UTC."""
    try:
        dt = _dt.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise UsageError(f"{what}: {text!r} is not a date or time (e.g. 2026-01-01 or 2026-01-01T12:00:00Z)") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.UTC)
    try:
        return check_wall_ns(wall_ns_of(dt), what)
    except MarkerError as exc:
        raise UsageError(str(exc)) from exc


def safe(text: str) -> str:
    """Text fit for a terminal: control, format and surrogate characters escaped (no escape codes)."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or (ch == " "):
            out.append(ch)
        elif unicodedata.category(ch) == "Zs":
            out.append(" ")
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bodycam-base", description="Consumer of bodycam event markers at base.")
    p.add_argument("-v", "--verbose", action="store_true", help="log every status change and rejection")
    verbose = argparse.ArgumentParser(add_help=False)  # -v also after the command
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)

    listen = sub.add_parser("listen", parents=[verbose], help="subscribe to all devices, store their markers, acknowledge them")
    listen.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    listen.add_argument("--db", required=True, help=_DB_HELP + " (created if missing)")
    listen.add_argument(
        "--group", default="base", help="shared-subscription group (consumers of a group share load)"
    )
    listen.add_argument("--prefix", default="bodycam")
    listen.add_argument(
        "--client-id",
        help="id of this consumer's persistent session at the broker; default: bodycam-base-<group>-<hash of "
        "host name and --db>, stable across restarts (give each consumer of a group its own)",
    )
    listen.add_argument(
        "--session-expiry", type=int, default=86400, help="seconds the broker keeps our session"
    )
    listen.add_argument("--protocol", choices=("auto", "5", "3.1.1"), default="auto",
                        help="MQTT version; auto: 5, or 3.1.1 when the broker refuses 5")
    listen.add_argument("--username")
    listen.add_argument("--password-file", type=Path)
    listen.add_argument("--ca-file", help="CA certificate(s) of the broker (PEM); default: the system's")
    listen.add_argument("--cert-file", help="base's client certificate (PEM; mutual TLS, CN bodycam-base)")
    listen.add_argument("--key-file", help="the private key of --cert-file (PEM)")
    listen.add_argument("--require-signatures", choices=("registered", "all"), default="registered",
                        help="registered (default): a device with a key registered at base ('keys add') must "
                        "sign every marker, others are stored unverified; all: refuse markers of devices "
                        "without a registered key")
    peer.add_arguments(listen)
    alerts_out.add_arguments(listen)

    since_help = "only markers at or after this time: 2026-01-01, 2026-01-01T12:00, or with an offset (Z, +02:00); no offset means UTC"
    markers = sub.add_parser("markers", parents=[verbose], help="list stored markers, newest first")
    markers.add_argument("--db", required=True, help=_DB_HELP)
    markers.add_argument("--device")
    markers.add_argument("--since", help=since_help)
    markers.add_argument("--kind", help=f"one kind ({', '.join(sorted(KNOWN_KINDS))}, or one stored)")
    markers.add_argument("--limit", type=_positive, default=1000, help="at most this many, the newest (default 1000)")
    markers.add_argument("--json", action="store_true", help="one JSON object per line")

    devices = sub.add_parser("devices", parents=[verbose], help="list devices: status, last seen, markers, gaps, chain, acked")
    devices.add_argument("--db", required=True, help=_DB_HELP)
    devices.add_argument("--json", action="store_true")

    quarantine = sub.add_parser("quarantine", parents=[verbose], help="list what reached base but was not stored (newest first)")
    quarantine.add_argument("--db", required=True, help=_DB_HELP)
    quarantine.add_argument("--kind", help="e.g. seq_conflict, id_conflict, unstorable, rejected_invalid")
    quarantine.add_argument("--device")
    quarantine.add_argument("--limit", type=_positive, default=100)
    quarantine.add_argument("--json", action="store_true", help="one JSON object per line (payload in base64)")
    keys_cli.add_parser(sub, _DB_HELP, [verbose])
    model_cli.add_parser(sub, _DB_HELP, [verbose])
    broker_acl.add_parser(sub, _DB_HELP, [verbose])
    web_cli.add_parsers(sub, _DB_HELP, [verbose])
    offload_cli.add_parser(sub, _DB_HELP, [verbose])
    offload_cli.add_custody_parser(sub, [verbose])
    dataset_cli.add_parser(sub, _DB_HELP, [verbose])
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    rows = [[safe(c) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _say(line: str) -> None:
    now = rfc3339_ms(int(_dt.datetime.now(_dt.UTC).timestamp() * 1e9))
    print(f"{now}  {safe(line)}", flush=True)


def _listen(args: argparse.Namespace) -> int:
    password = None
    if args.password_file is not None:
        try:
            password = args.password_file.read_text("utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--password-file: {exc}") from exc
    for flag, value in (("--ca-file", args.ca_file), ("--cert-file", args.cert_file), ("--key-file", args.key_file)):
        if value is not None and not Path(value).is_file():  # paho would fail later, or wait
            raise UsageError(f"{flag}: {value}: no such file")
    if (args.cert_file is None) != (args.key_file is None):
        raise UsageError("--cert-file and --key-file go together")
    opts = ConsumerOptions(
        url=args.broker,
        group=args.group,
        prefix=args.prefix,
        client_id=args.client_id or default_client_id(args.group, args.db),
        session_expiry_s=args.session_expiry,
        username=args.username,
        password=password,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        protocol=args.protocol,
    )
    stop = threading.Event()
    failed: list[BaseException] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    store = open_store(args.db)
    from bodycam.base.keys import KeyRegistry, SignaturePolicy

    signatures = SignaturePolicy(KeyRegistry(store), require=args.require_signatures)  # type: ignore[arg-type]
    ensure_tables(store)  # the alert trigger exists before the first marker is stored, with or without `serve`
    peer_cfg = peer.config_from_args(args)
    hooks = peer.hooks_for(store, peer_cfg, prefix=args.prefix, instance=opts.client_id or args.group,
                           signatures=signatures)
    consumer = Consumer(opts, store, notify=_say, signatures=signatures, hooks=hooks)
    dispatcher = alerts_out.from_args(args, store, consumer.mqtt_config, consumer.client_id)

    def run() -> None:
        try:
            consumer.run(stop)
        except BaseException as exc:
            logging.getLogger(__name__).exception("the consumer thread died")
            failed.append(exc)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    runner = threading.Thread(target=run, name="consumer", daemon=True)
    _say(f"connecting to {args.broker} as {consumer.client_id} (group {args.group}); Ctrl-C stops")
    runner.start()
    if dispatcher is not None:
        dispatcher.start()  # its own thread: a dead endpoint never holds up the consumer
        _say(f"alerts out: {', '.join(s.name for s in dispatcher.sinks)}")
    shown = False
    try:
        while not stop.is_set() and runner.is_alive():
            if shown:  # wait on stop: `subscribed` stays set, waiting on it would return at once (a busy loop)
                stop.wait(0.1)
                shown = consumer.subscribed.is_set()
            elif consumer.subscribed.wait(0.1):
                _say(f"listening on {args.broker} as {consumer.client_id} (group {args.group}, MQTT {consumer.protocol})")
                shown = True
    finally:
        stop.set()
        runner.join(4.0)  # the consumer returns within a few seconds even during an outage
        if dispatcher is not None:
            dispatcher.stop(timeout=6.0)
        for s, h in old.items():
            signal.signal(s, h)
    if runner.is_alive():
        print("bodycam-base: the consumer did not stop within 4 s (store not answering); exiting", file=sys.stderr)
        return 1
    store.close()
    if consumer.unstored:
        consumer.counters["left_to_broker"] = consumer.unstored
    print(json.dumps(dict(sorted(consumer.counters.items()))), flush=True)
    if failed:
        print(f"bodycam-base: the consumer stopped on an error: {failed[0]!r}", file=sys.stderr)
        return 1
    if consumer.store_down:
        print(
            f"bodycam-base: stopped while the store was unavailable; {consumer.unstored} message(s) not stored "
            "(not acknowledged: the broker keeps them)",
            file=sys.stderr,
        )
        return 1
    return 0


def _markers(args: argparse.Namespace) -> int:
    since = None if args.since is None else parse_since(args.since)
    with closing(open_store(args.db, create=False)) as store:
        if args.kind is not None:
            kinds = KNOWN_KINDS | set(store.kinds())
            if args.kind not in kinds:
                raise UsageError(f"--kind: unknown kind {safe(args.kind)!r}; kinds: {', '.join(sorted(kinds))}")
        rows = store.markers(device=args.device, since_ns=since, kind=args.kind, limit=args.limit + 1,
                             newest_first=True)
    cut = len(rows) > args.limit
    rows = rows[: args.limit]
    if args.json:
        for r in rows:
            print(json.dumps({**r.marker.to_dict(), "_received": rfc3339_ms(r.received_ns), "_chain": r.chain}))
    else:
        table = [
            [
                r.marker.device,
                str(r.marker.seq),
                r.marker.t,
                r.marker.kind,
                "" if r.marker.confidence is None else f"{r.marker.confidence:.3f}",
                "" if r.marker.media is None else f"{r.marker.media.recording}@{r.marker.media.offset_s:.3f}s",
                r.chain,
                r.marker.id,
            ]
            for r in rows
        ]
        print(_table(["DEVICE", "SEQ", "TIME (UTC)", "KIND", "CONF", "MEDIA", "CHAIN", "ID"], table))
    if cut:
        print(f"bodycam-base: showing the newest {args.limit} markers; there are more (raise --limit or use --since)",
              file=sys.stderr)
    return 0


def _seen(ns: int) -> str:
    return rfc3339_ms(ns) if ns > 0 else "never"


def _devices(args: argparse.Namespace) -> int:
    with closing(open_store(args.db, create=False)) as store:
        rows = store.devices()
    if args.json:
        for d in rows:
            print(
                json.dumps(
                    {
                        "device": d.device,
                        "state": d.state,
                        "status_t": d.status_t,
                        "last_seen": rfc3339_ms(d.last_seen_ns) if d.last_seen_ns > 0 else None,
                        "markers": d.markers,
                        "max_seq": d.max_seq,
                        "missing": d.missing,
                        "chain_broken": d.chain_broken,
                        "acked": d.acked,
                        "quarantined": d.quarantined,
                    }
                )
            )
        return 0
    table = [
        [d.device, d.state or "?", _seen(d.last_seen_ns), str(d.markers), str(d.max_seq), str(d.missing),
         str(d.chain_broken), str(d.acked), str(d.quarantined)]
        for d in rows
    ]
    print(_table(["DEVICE", "STATUS", "LAST SEEN (UTC)", "MARKERS", "MAX SEQ", "MISSING", "CHAIN BROKEN",
                  "ACKED", "QUARANTINED"], table))
    return 0


def _quarantine(args: argparse.Namespace) -> int:
    with closing(open_store(args.db, create=False)) as store:
        rows = store.quarantined(kind=args.kind, device=args.device, limit=args.limit)
    if args.json:
        for r in rows:
            q = r.item
            print(json.dumps({"n": r.n, "received": rfc3339_ms(q.received_ns), "topic": q.topic, "device": q.device,
                              "kind": q.kind, "reason": q.reason, "payload_b64": base64.b64encode(q.payload).decode()}))
        return 0
    table = [
        [str(r.n), rfc3339_ms(r.item.received_ns), r.item.device or "?", r.item.kind, r.item.reason[:100],
         r.item.payload[:60].decode("utf-8", "backslashreplace")]
        for r in rows
    ]
    print(_table(["N", "RECEIVED (UTC)", "DEVICE", "KIND", "REASON", "PAYLOAD (start)"], table))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "listen": _listen, "markers": _markers, "devices": _devices, "quarantine": _quarantine,
        "keys": keys_cli.run, "model": model_cli.run, "export-case": offload_cli.run,
        "custody": offload_cli.run_custody,
        "export-dataset": dataset_cli.run,
        "broker-acl": broker_acl.run,
        "serve": lambda a: web_cli.serve(a, open_store), "user": lambda a: web_cli.user(a, open_store),
    }
    try:
        return int(commands[args.command](args))
    except BodycamError as exc:
        print(f"bodycam-base: {safe(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `bodycam-base markers | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
