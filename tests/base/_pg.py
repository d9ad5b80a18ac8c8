"""A real, throw-away PostgreSQL server for tests (Debian's server binaries, no system service).

``PgServer`` runs ``initdb`` and ``pg_ctl`` from ``/usr/lib/postgresql/<ver>/bin`` in a temporary
directory, listening on 127.0.0.1:<free port> only (and a Unix socket in that directory),
trust authentication, superuser ``postgres``. As root it runs them as an unprivileged user
(``postgres`` if it exists, else ``nobody``): PostgreSQL refuses to run as root.
Missing binaries are an error with the install hint, never a skip (CI installs ``postgresql``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

INSTALL_HINT = (
    "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): apt-get install -y postgresql"
)


def find_bindir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        """``durable``: commits survive an immediate stop (fsync and synchronous_commit on, as in
        production); off by default for speed."""
        self.durable = durable
        self.bindir = bindir
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bodycam-pg-"))  # in /tmp: reachable by the server's user
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                self._user = pwd.getpwnam("nobody")
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> None:
        u = self._user
        proc = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "LC_ALL": "C", "HOME": str(self.dir)},
            check=False,
            user=None if u is None else u.pw_uid,
            group=None if u is None else u.pw_gid,
            extra_groups=None if u is None else [],
        )
        if proc.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}{log}")

    def start(self) -> None:
        self._initdb()
        self.resume()

    def halt(self) -> None:
        """Stop the server (immediate: an outage), keeping its data for :meth:`resume`."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "20", "stop")

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def resume(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir} -c max_connections=50"
        if not self.durable:
            opts += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "30", "start")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                try:
                    self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "20", "stop")
                except RuntimeError:
                    self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def create_db(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def drop_db(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def running_pg() -> Iterator[PgServer]:
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(INSTALL_HINT)
    server = PgServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
