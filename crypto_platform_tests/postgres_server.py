"""A throwaway PostgreSQL server for tests: `initdb` into a temp folder, listening on 127.0.0.1 only.

The server binaries are the Debian `postgresql` package's (/usr/lib/postgresql/<version>/bin). Missing
binaries are an error naming the package, never a skip. PostgreSQL refuses to run as root, so under
root every server command runs as the `postgres` system user (`runuser -u postgres --`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg2

PG_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"


@dataclass(frozen=True)
class PostgresServer:
    """A running server: a superuser `user` (trust authentication) and an empty database `db`."""

    host: str
    port: int
    user: str
    db: str

    def connect(self) -> psycopg2.extensions.connection:
        return psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=self.db)


def server_bin_dir(root: Path = PG_ROOT) -> Path:
    """The bin folder of the newest installed PostgreSQL server; an error naming the package if none."""
    found = sorted(
        (p.parent for p in root.glob("*/bin/initdb")), key=lambda p: int(p.parent.name.split(".")[0])
    )
    if not found:
        raise RuntimeError(
            f"PostgreSQL server binaries not found ({root}/<version>/bin/initdb): "
            "install them with `apt-get install -y postgresql`"
        )
    return found[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres_server(user: str = "dagster", db: str = "dagster") -> Iterator[PostgresServer]:
    """Start a fresh server on a free loopback port, create `db`, and stop and delete it on exit."""
    bin_dir = server_bin_dir()
    folder = Path(tempfile.mkdtemp(prefix="crypto-pg-"))
    data, log = folder / "data", folder / "server.log"
    if os.geteuid() == 0:
        shutil.chown(folder, SERVER_USER, SERVER_USER)
    port = free_port()
    run = _as_server_user
    try:
        subprocess.run(
            run([str(bin_dir / "initdb"), "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"
        started = subprocess.run(
            run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"]),
            capture_output=True,
            text=True,
        )
        if started.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr}\n{tail}")
        try:
            admin = psycopg2.connect(host="127.0.0.1", port=port, user=user, dbname="postgres")
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{db}"')
            admin.close()
            yield PostgresServer("127.0.0.1", port, user, db)
        finally:
            subprocess.run(
                run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                check=True,
                capture_output=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def create_database(server: PostgresServer, prefix: str = "test") -> PostgresServer:
    """A new, empty database on a running server (each test its own, on the session's one server)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(host=server.host, port=server.port, user=server.user, dbname="postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()
    return replace(server, db=name)
