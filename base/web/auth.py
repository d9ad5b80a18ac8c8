"""Users, passwords, sessions, CSRF and the login rate limit of the web app.

* Passwords: argon2id (``argon2-cffi``'s defaults, RFC 9106 low-memory profile); a login for an
  unknown user still runs one verification (same time as a wrong password).
* Roles, each including the ones before it: ``operator`` (view, acknowledge alerts) <
  ``supervisor`` (later: commands to cameras) < ``admin`` (later: users, keys).
* Sessions: a random 256-bit token in an HttpOnly, SameSite=Strict cookie; the database keeps only
  its SHA-256, with the user, a per-session CSRF token and an absolute expiry (``session_s``).
  Logging out deletes the row. A disabled user's sessions stop working at once.
* CSRF: every POST carries the session's token (form field ``csrf`` or header ``X-CSRF-Token``),
  compared in constant time; the login form, before any session, uses a double-submit cookie.
* Rate limit: failed logins are stored per user name and per client address; at
  ``MAX_FAILS_USER`` (resp. ``MAX_FAILS_CLIENT``) failures within ``WINDOW_S`` further attempts
  are refused without checking the password until the oldest failure leaves the window. Stored in
  the database, so it holds across restarts and across several ``serve`` instances. It holds under
  concurrency too: an attempt is counted *before* its password is checked (one transaction reads the
  failures and inserts the attempt's rows; on PostgreSQL under an advisory lock per user name and per
  client address, on SQLite under the database's write lock), so attempts in flight count as failures,
  and at most ``MAX_FAILS_USER`` passwords of a user are checked in a window however many requests run
  at once; a successful login removes its own rows (and the user's failures).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from bodycam.base.web.db import WebDb, audit
from bodycam.device.errors import UsageError

ROLES = ("operator", "supervisor", "admin")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD = 10
WINDOW_S = 15 * 60
MAX_FAILS_USER = 5
MAX_FAILS_CLIENT = 20

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not a password of anyone")


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def can(self, role: str) -> bool:
        """Whether this user has ``role`` or a higher one."""
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    expires_ns: int


@dataclass(frozen=True)
class LoginResult:
    session_token: str | None = None  # set when the login succeeded
    retry_after_s: int = 0  # > 0: refused by the rate limit


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two tokens."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"user name {name!r}: 1-64 characters of A-Z a-z 0-9 . _ @ -, starting with a letter or digit")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"password: at least {MIN_PASSWORD} characters")
    return password


def _lock_id(key: str) -> int:
    """The PostgreSQL advisory lock of one rate-limit key (a signed 64-bit number)."""
    return int.from_bytes(hashlib.sha256(b"bodycam-login:" + key.encode("utf-8", "surrogatepass")).digest()[:8],
                          "big", signed=True)


class Auth:
    def __init__(self, db: WebDb, *, session_s: int = 12 * 3600) -> None:
        self.db = db
        self.session_s = session_s

    # -- users --------------------------------------------------------------------------------------
    def add_user(self, name: str, role: str, password: str, now_ns: int, *, replace: bool = False) -> None:
        check_name(name)
        if role not in ROLES:
            raise UsageError(f"role {role!r}: one of {', '.join(ROLES)}")
        pw_hash = _hasher.hash(check_password(password))
        with self.db.tx() as tx:
            exists = tx.one("SELECT 1 FROM web_users WHERE name=?", (name,)) is not None
            if exists and not replace:
                raise UsageError(f"user {name!r} exists (use --replace to set a new role and password)")
            if exists:
                tx.run("UPDATE web_users SET role=?, pw_hash=?, disabled=0 WHERE name=?", (role, pw_hash, name))
                tx.run("DELETE FROM web_sessions WHERE user_name=?", (name,))
            else:
                tx.run(
                    "INSERT INTO web_users(name, role, pw_hash, created_ns) VALUES (?,?,?,?)",
                    (name, role, pw_hash, now_ns),
                )
            audit(tx, now_ns, "(cli)", "user_replaced" if exists else "user_added", name, f"role {role}", "cli")

    def users(self) -> list[tuple[str, str, bool]]:
        return [(str(r[0]), str(r[1]), bool(r[2])) for r in
                self.db.rows("SELECT name, role, disabled FROM web_users ORDER BY name")]

    # -- login --------------------------------------------------------------------------------------
    def login(self, name: str, password: str, client: str, now_ns: int) -> LoginResult:
        """Check a login; on success a new session (its token for the cookie)."""
        since = now_ns - WINDOW_S * 1_000_000_000
        keys = (f"user:{name}"[:200], f"client:{client}"[:200])
        retry, held = self._reserve(keys, (MAX_FAILS_USER, MAX_FAILS_CLIENT), since, now_ns)
        if retry:
            return LoginResult(retry_after_s=retry)
        rows = self.db.rows("SELECT pw_hash, role, disabled FROM web_users WHERE name=?", (name,))
        ok = False
        try:
            ok = _hasher.verify(str(rows[0][0]) if rows else _DUMMY_HASH, password) and bool(rows) and not rows[0][2]
        except (VerificationError, InvalidHashError):
            ok = False
        with self.db.tx() as tx:
            if not ok:  # the attempt's rows, made before the check, are its failure
                tx.run("DELETE FROM web_login_failures WHERE t_ns < ?", (since,))
                audit(tx, now_ns, name[:64], "login_failed", "", "", client)
                return LoginResult()
            token = secrets.token_urlsafe(32)
            tx.run(f"DELETE FROM web_login_failures WHERE n IN ({','.join('?' * len(held))})", held)
            tx.run("DELETE FROM web_login_failures WHERE key=?", (keys[0],))
            tx.run("DELETE FROM web_sessions WHERE expires_ns <= ?", (now_ns,))
            tx.run(
                "INSERT INTO web_sessions(token_hash, user_name, csrf, created_ns, expires_ns) VALUES (?,?,?,?,?)",
                (token_hash(token), name, secrets.token_urlsafe(32), now_ns, now_ns + self.session_s * 1_000_000_000),
            )
            audit(tx, now_ns, name, "login", "", "", client)
        return LoginResult(session_token=token)

    def _reserve(self, keys: tuple[str, ...], limits: tuple[int, ...], since: int,
                 now_ns: int) -> tuple[int, list[int]]:
        """Count this attempt before its password is checked, in one transaction serialised per key:
        ``(seconds until a login may be tried again, [])`` when a key has ``limit`` failures (or attempts
        in flight) in the window, else ``(0, the ids of the rows made for this attempt)``, which stay as
        its failure unless the login succeeds."""
        with self.db.tx() as tx:
            if self.db.postgres:  # SQLite: BEGIN IMMEDIATE already serialises every writer
                for key in sorted(keys):
                    tx.one("SELECT pg_advisory_xact_lock(?)", (_lock_id(key),))
            wait = 0
            for key, limit in zip(keys, limits, strict=True):
                rows = tx.all(
                    "SELECT t_ns FROM web_login_failures WHERE key=? AND t_ns >= ? ORDER BY t_ns DESC LIMIT ?",
                    (key, since, limit),
                )
                if len(rows) >= limit:
                    oldest = int(rows[-1][0])
                    wait = max(wait, (oldest + WINDOW_S * 1_000_000_000 - now_ns) // 1_000_000_000 + 1)
            if wait:
                return int(wait), []
            held = []
            for key in keys:
                row = tx.one("INSERT INTO web_login_failures(key, t_ns) VALUES (?,?) RETURNING n", (key, now_ns))
                assert row is not None
                held.append(int(row[0]))
        return 0, held

    def session(self, token: str | None, now_ns: int) -> Session | None:
        """The live session of a cookie's token (None: none, expired, or the user is disabled)."""
        if not token:
            return None
        rows = self.db.rows(
            "SELECT s.user_name, u.role, s.csrf, s.expires_ns FROM web_sessions s "
            "JOIN web_users u ON u.name = s.user_name WHERE s.token_hash=? AND s.expires_ns > ? AND u.disabled=0",
            (token_hash(token), now_ns),
        )
        if not rows:
            return None
        r = rows[0]
        return Session(User(str(r[0]), str(r[1])), str(r[2]), int(r[3]))

    def logout(self, token: str, user: str, client: str, now_ns: int) -> None:
        with self.db.tx() as tx:
            tx.run("DELETE FROM web_sessions WHERE token_hash=?", (token_hash(token),))
            audit(tx, now_ns, user, "logout", "", "", client)
