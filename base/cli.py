"""``bodycam-base``: listen for markers, list markers, list devices.

bodycam-base listen  --broker mqtt://host:1883 --db base.db [--group base] [--client-id ID]
bodycam-base markers --db base.db [--device D] [--since 2026-01-01T00:00:00Z] [--kind gunshot] [--json]
bodycam-base devices --db base.db [--json]

``--db``: a file path (SQLite) or a ``postgresql://`` URL (PostgreSQL, ``pip install 'bodycam[postgres]'``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from types import FrameType

from bodycam.base.consumer import Consumer, ConsumerOptions
from bodycam.base.store import MarkerStore, SqliteStore
from bodycam.device.clock import parse_rfc3339, rfc3339_ms
from bodycam.device.errors import BodycamError, UsageError

_DB_HELP = "SQLite file path, or postgresql://user@host[:port]/dbname"


def open_store(db: str) -> MarkerStore:
    """``postgresql://...`` (or ``postgres://``) opens PostgreSQL (psycopg imported lazily), anything else SQLite."""
    from bodycam.base.store_pg import PostgresStore, is_postgres_url

    return PostgresStore(db) if is_postgres_url(db) else SqliteStore(Path(db))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bodycam-base", description="Consumer of bodycam event markers at base.")
    p.add_argument("-v", "--verbose", action="store_true", help="log every status change and rejection")
    sub = p.add_subparsers(dest="command", required=True)

    listen = sub.add_parser("listen", help="subscribe to all devices and store their markers")
    listen.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    listen.add_argument("--db", required=True, help=_DB_HELP)
    listen.add_argument(
        "--group", default="base", help="shared-subscription group (consumers of a group share load)"
    )
    listen.add_argument("--prefix", default="bodycam")
    listen.add_argument(
        "--client-id", help="stable id of this consumer (persistent session); default: random"
    )
    listen.add_argument(
        "--session-expiry", type=int, default=86400, help="seconds the broker keeps our session"
    )
    listen.add_argument("--username")
    listen.add_argument("--password-file", type=Path)
    listen.add_argument("--ca-file")

    markers = sub.add_parser("markers", help="list stored markers")
    markers.add_argument("--db", required=True, help=_DB_HELP)
    markers.add_argument("--device")
    markers.add_argument("--since", help="RFC 3339 time, e.g. 2026-11-25T12:00:00Z")
    markers.add_argument("--kind")
    markers.add_argument("--limit", type=int, default=1000)
    markers.add_argument("--json", action="store_true", help="one JSON object per line")

    devices = sub.add_parser("devices", help="list devices: status, last seen, markers, gaps, chain")
    devices.add_argument("--db", required=True, help=_DB_HELP)
    devices.add_argument("--json", action="store_true")
    return p


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _listen(args: argparse.Namespace) -> int:
    password = None
    if args.password_file is not None:
        try:
            password = args.password_file.read_text("utf-8").rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"--password-file: {exc}") from exc
    opts = ConsumerOptions(
        url=args.broker,
        group=args.group,
        prefix=args.prefix,
        client_id=args.client_id,
        session_expiry_s=args.session_expiry,
        username=args.username,
        password=password,
        ca_file=args.ca_file,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    with closing(open_store(args.db)) as store:
        consumer = Consumer(opts, store)
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        runner = threading.Thread(target=consumer.run, args=(stop,), name="consumer")
        runner.start()
        try:
            while not stop.is_set():
                if consumer.subscribed.wait(0.1):
                    print(
                        f"listening on {args.broker} as {consumer.client_id} (group {args.group})", flush=True
                    )
                    break
            stop.wait()
        finally:
            stop.set()
            runner.join()
            for s, h in old.items():
                signal.signal(s, h)
        print(json.dumps(dict(sorted(consumer.counters.items()))), flush=True)
    return 0


def _markers(args: argparse.Namespace) -> int:
    since = None
    if args.since:
        try:
            since = parse_rfc3339(args.since)
        except ValueError as exc:
            raise UsageError(f"--since: {exc}") from exc
    with closing(open_store(args.db)) as store:
        rows = store.markers(device=args.device, since_ns=since, kind=args.kind, limit=args.limit)
    if args.json:
        for r in rows:
            print(
                json.dumps({**r.marker.to_dict(), "_received": rfc3339_ms(r.received_ns), "_chain": r.chain})
            )
        return 0
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
    return 0


def _devices(args: argparse.Namespace) -> int:
    with closing(open_store(args.db)) as store:
        rows = store.devices()
    if args.json:
        for d in rows:
            print(
                json.dumps(
                    {
                        "device": d.device,
                        "state": d.state,
                        "status_t": d.status_t,
                        "last_seen": rfc3339_ms(d.last_seen_ns),
                        "markers": d.markers,
                        "max_seq": d.max_seq,
                        "missing": d.missing,
                        "chain_broken": d.chain_broken,
                    }
                )
            )
        return 0
    table = [
        [
            d.device,
            d.state or "?",
            rfc3339_ms(d.last_seen_ns),
            str(d.markers),
            str(d.max_seq),
            str(d.missing),
            str(d.chain_broken),
        ]
        for d in rows
    ]
    print(
        _table(
            ["DEVICE", "STATUS", "LAST SEEN (UTC)", "MARKERS", "MAX SEQ", "MISSING", "CHAIN BROKEN"], table
        )
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "listen":
            return _listen(args)
        if args.command == "markers":
            return _markers(args)
        return _devices(args)
    except BodycamError as exc:
        print(f"bodycam-base: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
