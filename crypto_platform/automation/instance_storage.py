"""A fresh SQLite Dagster instance storage created once, under a file lock, before processes share it.

Dagster's SQLite run and schedule storages create their tables and stamp the alembic version the first
time a process opens them, with no guard against another process doing the same: two processes opening
a fresh DAGSTER_HOME at once (the CLI's `dagster asset materialize` or `crypto-platform backfill` while
`dagster dev` or `dagster-daemon` starts) can stamp `schedules.db` twice, and from then on every open
fails with "Version table 'alembic_version' has more than one head present". The platform's entry
points (`./run ui`, `./run dagster…`, `crypto-platform`, the demo) call `ensure_instance_storage` before
they start any Dagster process: the first one creates the storage under an exclusive lock beside it and
writes a marker; the others wait for the lock, or see the marker and skip (no Dagster import then).
The same fix as `ml/mlflow_store.py` for MLflow's SQLite store. Postgres and other storages: nothing.

    python -m crypto_platform.automation.instance_storage   # for $DAGSTER_HOME (what ./run calls)
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from pathlib import Path

import yaml

from crypto_platform.file_lock import host_lock

LOCK_NAME = ".instance-init.lock"
MARKER_NAME = ".instance-ready"
# the databases DagsterSqliteStorage creates under its base_dir (dagster/_core/instance/ref.py)
DATABASES = ("history/runs.db", "history/runs/index.db", "schedules/schedules.db")


def sqlite_base_dir(home: Path) -> Path | None:
    """Where `home`'s dagster.yaml keeps a SQLite instance storage (a relative base_dir is relative to the
    working directory, as Dagster opens it), or None when the storage is not SQLite's."""
    config_file = home / "dagster.yaml"
    config = (yaml.safe_load(config_file.read_text()) if config_file.exists() else None) or {}
    if any(k in config for k in ("run_storage", "event_log_storage", "schedule_storage")):
        return None  # per-store configuration: not the combined SQLite storage this module knows
    storage = config.get("storage")
    if storage is None:
        return home.absolute()  # Dagster's default: SQLite under DAGSTER_HOME
    if "sqlite" not in storage:
        return None
    base = storage["sqlite"]["base_dir"]
    if isinstance(base, dict):  # {env: VAR}
        name = base.get("env", "")
        if name not in os.environ:
            raise ValueError(f"{config_file}: storage.sqlite.base_dir names ${name}, which is not set")
        base = os.environ[name]
    return Path(base).absolute()


def _ready(base: Path, stamp: str) -> bool:
    marker = base / MARKER_NAME
    return marker.exists() and marker.read_text() == stamp and all((base / db).exists() for db in DATABASES)


def ensure_instance_storage(home: Path | None = None) -> bool:
    """Create (or migrate) the SQLite storage of the instance at `home` (default $DAGSTER_HOME) once, under
    an exclusive lock, so no two processes create it at once; True when this call opened it."""
    if home is None:
        if not os.environ.get("DAGSTER_HOME"):
            return False  # Dagster itself refuses to start without it, with its own message
        home = Path(os.environ["DAGSTER_HOME"])
    base = sqlite_base_dir(home)
    if base is None:
        return False
    stamp = f"dagster {version('dagster')}\n"
    if _ready(base, stamp):
        return False
    with host_lock(base / LOCK_NAME):
        if _ready(base, stamp):  # another process created it while we waited
            return False
        import dagster as dg

        with dg.DagsterInstance.from_config(str(home)):
            pass  # opening creates the tables and stamps their alembic version (or checks them)
        tmp = base / f"{MARKER_NAME}.{os.getpid()}.tmp"
        tmp.write_text(stamp)
        tmp.replace(base / MARKER_NAME)
    return True


if __name__ == "__main__":
    try:
        ensure_instance_storage()
    except Exception as exc:  # one line naming the step and the cause, not a traceback
        sys.exit(f"crypto_platform: could not prepare the Dagster instance storage: {exc}")
