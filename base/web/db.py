"""The web app's tables, in the database of the marker store (SQLite or PostgreSQL), on its connection.

Tables (created if missing, by ``serve``, ``user`` and ``listen``):

* ``web_users``: name, role, argon2 hash, disabled flag;
* ``web_sessions``: SHA-256 of the session token (the token itself is only in the browser's cookie),
  user, CSRF token, created and expiry time;
* ``web_alerts``: one row per gunshot marker, made by a trigger on ``markers`` **in the transaction
  that stores the marker** (whichever ``listen`` instance stores it, whether or not a ``serve`` runs):
  an alert can never be lost between the marker and the page; ``acked_by``/``acked_ns`` once
  acknowledged. Unacknowledged rows are what every page shows (after a reload or a restart too).
  On PostgreSQL a statement trigger on it notifies ``bodycam_alerts`` (``alert_wake.py``: the hubs
  read the alerts at once instead of at their next poll);
* ``web_audit``: append-only: who did what, when, from where (acknowledge, login, logout, user added);
* ``web_login_failures``: failed logins by user and by client address (the rate limit);
* ``web_conditions``: the open episodes of the fleet alerts (``base/web/fleet.py``); their alerts are
  ``web_alerts`` rows too (``marker_id`` ``fleet:<kind>:<device>:<since>``), so banners, acks and audit are the same.

The alert trigger is the one coupling to base's ``markers`` table (columns ``id, device, kind, t,
received_ns``); it fires only for rows actually inserted (duplicates are ``ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bodycam.base import rules
from bodycam.base.provenance import Provenance
from bodycam.base.store import MarkerStore, _Store
from bodycam.base.web.alert_wake import CHANNEL
from bodycam.device.errors import StorageError
from bodycam.device.uplink.markers import Marker

ALERT_KINDS = ("gunshot",)
# the episodes of the fleet alerts (``base/web/fleet.py``: low battery, storage full, ...)
CONDITIONS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS web_conditions (device TEXT NOT NULL, kind TEXT NOT NULL,"
    " since_ns BIGINT NOT NULL, alert_id TEXT NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (device, kind))",
)


def _schema(*, serial: str) -> tuple[str, ...]:
    return (
        "CREATE TABLE IF NOT EXISTS web_users (name TEXT PRIMARY KEY, role TEXT NOT NULL,"
        " pw_hash TEXT NOT NULL, created_ns BIGINT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0)",
        "CREATE TABLE IF NOT EXISTS web_sessions (token_hash TEXT PRIMARY KEY, user_name TEXT NOT NULL,"
        " csrf TEXT NOT NULL, created_ns BIGINT NOT NULL, expires_ns BIGINT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS web_alerts (n {serial}, marker_id TEXT NOT NULL UNIQUE,"
        " device TEXT NOT NULL, kind TEXT NOT NULL, t TEXT NOT NULL, received_ns BIGINT NOT NULL,"
        " acked_by TEXT, acked_ns BIGINT)",
        "CREATE INDEX IF NOT EXISTS web_alerts_open ON web_alerts(n) WHERE acked_ns IS NULL",
        f"CREATE TABLE IF NOT EXISTS web_audit (n {serial}, t_ns BIGINT NOT NULL, user_name TEXT NOT NULL,"
        " action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL, client TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS web_login_failures (n {serial}, key TEXT NOT NULL, t_ns BIGINT NOT NULL)",
        *CONDITIONS_SCHEMA,
        "CREATE INDEX IF NOT EXISTS web_login_failures_key ON web_login_failures(key, t_ns)",
    )


_KINDS_SQL = ", ".join(f"'{k}'" for k in ALERT_KINDS)
_SQLITE_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS web_alert_on_marker AFTER INSERT ON markers "
    f"WHEN NEW.kind IN ({_KINDS_SQL}) BEGIN "
    "INSERT OR IGNORE INTO web_alerts(marker_id, device, kind, t, received_ns) "
    "VALUES (NEW.id, NEW.device, NEW.kind, NEW.t, NEW.received_ns); END"
)
_PG_TRIGGER = (
    "CREATE OR REPLACE FUNCTION web_alert_on_marker() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO web_alerts(marker_id, device, kind, t, received_ns) "
    "VALUES (NEW.id, NEW.device, NEW.kind, NEW.t, NEW.received_ns) ON CONFLICT (marker_id) DO NOTHING; "
    "RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS web_alert_on_marker ON markers",
    "CREATE TRIGGER web_alert_on_marker AFTER INSERT ON markers FOR EACH ROW "
    f"WHEN (NEW.kind IN ({_KINDS_SQL})) EXECUTE FUNCTION web_alert_on_marker()",
)
# every statement that adds or changes alert rows (a gunshot's trigger above, a fleet alert, an
# acknowledgement) wakes the alert hubs of every ``serve`` instance (base/web/alert_wake.py); delivered at
# commit, identical notifications of one transaction folded into one
_PG_NOTIFY = (
    "CREATE OR REPLACE FUNCTION web_alerts_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    f"PERFORM pg_notify('{CHANNEL}', ''); RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS web_alerts_notify ON web_alerts",
    "CREATE TRIGGER web_alerts_notify AFTER INSERT OR UPDATE ON web_alerts "
    "FOR EACH STATEMENT EXECUTE FUNCTION web_alerts_notify()",
)


@dataclass(frozen=True)
class Alert:
    n: int
    marker_id: str
    device: str
    kind: str
    t: str
    received_ns: int
    body: str  # the marker's JSON (for the banner's details)
    acked_by: str | None = None
    acked_ns: int | None = None

    @property
    def is_marker(self) -> bool:
        """A marker's alert (a gunshot), not a fleet condition's (``fleet:...``)."""
        return not self.marker_id.startswith("fleet:")


@dataclass(frozen=True)
class AuditRow:
    n: int
    t_ns: int
    user: str
    action: str
    target: str
    detail: str
    client: str


class WebDb:
    """The web tables on ``store``'s connection and transactions (one lock, one connection per store)."""

    def __init__(self, store: MarkerStore) -> None:
        if not isinstance(store, _Store):
            raise StorageError(f"the web app needs a SQLite or PostgreSQL marker store, not {type(store).__name__}")
        self.store: _Store = store
        from bodycam.base.store_pg import _SCHEMA_LOCK, PostgresStore

        self.postgres = isinstance(store, PostgresStore)
        self._provenance: Provenance | None = None  # made at first use (base/provenance.py)
        self._provenance_lock = threading.Lock()  # the signature policy's key cache is not shared unguarded
        with store._tx() as tx:
            if self.postgres:
                tx.one("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
                # (re)creating a trigger locks `markers` against writers: only when it is missing
                have = tx.one("SELECT 1 FROM pg_trigger WHERE tgname='web_alert_on_marker' AND NOT tgisinternal")
                notify = tx.one("SELECT 1 FROM pg_trigger WHERE tgname='web_alerts_notify' AND NOT tgisinternal")
                stmts = (*_schema(serial="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
                         *(_PG_TRIGGER[:1] if have else _PG_TRIGGER), *(_PG_NOTIFY[:1] if notify else _PG_NOTIFY))
            else:
                stmts = (*_schema(serial="INTEGER PRIMARY KEY AUTOINCREMENT"), _SQLITE_TRIGGER)
            for stmt in stmts:
                tx.run(stmt)

    def tx(self) -> Any:
        """One write transaction (``rules.Tx``; SQL with ``?``)."""
        return self.store._tx()

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self.store._rows(sql, args)

    # -- alerts -------------------------------------------------------------------------------------
    def open_alerts(self, limit: int = 200) -> list[Alert]:
        """The newest ``limit`` unacknowledged alerts, oldest first."""
        rows = self.rows(
            "SELECT a.n, a.marker_id, a.device, a.kind, a.t, a.received_ns, COALESCE(m.body, c.detail, '{}') "
            "FROM web_alerts a LEFT JOIN markers m ON m.id = a.marker_id "
            "LEFT JOIN web_conditions c ON c.alert_id = a.marker_id "
            "WHERE a.acked_ns IS NULL ORDER BY a.n DESC LIMIT ?",
            (limit,),
        )
        return [Alert(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), int(r[5]), str(r[6])) for r in rows][::-1]

    def alert_of(self, marker_id: str) -> Alert | None:
        rows = self.rows(
            "SELECT n, marker_id, device, kind, t, received_ns, '', acked_by, acked_ns FROM web_alerts "
            "WHERE marker_id=?",
            (marker_id,),
        )
        if not rows:
            return None
        r = rows[0]
        return Alert(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), int(r[5]), "", r[7],
                     None if r[8] is None else int(r[8]))

    def acknowledge(self, n: int, user: str, now_ns: int, client: str) -> bool:
        """Acknowledge alert ``n`` and audit it (one transaction); False: unknown or already acknowledged."""
        with self.tx() as tx:
            row = tx.one("SELECT marker_id FROM web_alerts WHERE n=?", (n,))
            if row is None:
                return False
            changed = tx.run(
                "UPDATE web_alerts SET acked_by=?, acked_ns=? WHERE n=? AND acked_ns IS NULL", (user, now_ns, n)
            )
            if changed:
                audit(tx, now_ns, user, "acknowledge", f"alert {n}", f"marker {row[0]}", client)
            return bool(changed)

    def unverified(self, marker: str | Marker, received_ns: int) -> str | None:
        """Why the stored marker (or its JSON body) is not verified, or None when its signature verifies
        with a key registered for its device (:mod:`bodycam.base.provenance`)."""
        with self._provenance_lock:
            if self._provenance is None:
                self._provenance = Provenance(self.store)
            if isinstance(marker, str):
                return self._provenance.unverified_body(marker, received_ns)
            return self._provenance.unverified(marker, received_ns)

    # -- audit --------------------------------------------------------------------------------------
    def audit_rows(self, limit: int = 200) -> list[AuditRow]:
        rows = self.rows(
            "SELECT n, t_ns, user_name, action, target, detail, client FROM web_audit ORDER BY n DESC LIMIT ?",
            (limit,),
        )
        return [AuditRow(int(r[0]), int(r[1]), *(str(x) for x in r[2:])) for r in rows]


def ensure_tables(store: MarkerStore) -> None:
    """The web tables and the alert trigger in ``store``'s database (``listen`` calls this so the
    trigger exists before the first marker is stored); a store that is not SQL (a test's stand-in)
    has none."""
    if isinstance(store, _Store):
        WebDb(store)


def audit(tx: rules.Tx, t_ns: int, user: str, action: str, target: str, detail: str, client: str) -> None:
    tx.run(
        "INSERT INTO web_audit(t_ns, user_name, action, target, detail, client) VALUES (?,?,?,?,?,?)",
        (t_ns, rules.safe_text(user), action, rules.safe_text(target), rules.safe_text(detail),
         rules.safe_text(client)),
    )
