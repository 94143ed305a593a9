"""One MLflow client per tracking URI, with a new SQLite store's schema created once, under a file lock.

MLflow creates (and migrates) a SQLite store's tables the first time a process opens it. Several run
processes opening a fresh store at once (a backfill's first runs, four at a time) race: one of them
fails with `sqlite3.OperationalError: table ... already exists` (seen in bench/BACKFILL.md's first
measurement). Opening it here serialises that first open across processes; later opens in the same
process skip the lock.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow import MlflowClient

from crypto_platform.file_lock import host_lock

SQLITE_PREFIX = "sqlite:///"
_ready: set[str] = set()


def client(tracking_uri: str) -> MlflowClient:
    """A client of `tracking_uri` for tracking and the registry, its store's schema ensured first."""
    ensure_schema(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_schema(tracking_uri: str) -> None:
    """Open a SQLite store once under an exclusive lock beside it (other URIs: nothing to do)."""
    if not tracking_uri.startswith(SQLITE_PREFIX) or tracking_uri in _ready:
        return
    db = Path(tracking_uri.removeprefix(SQLITE_PREFIX))
    with host_lock(db.parent / f"{db.name}.init.lock"):
        opened = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        opened.search_experiments(max_results=1)  # the tracking store: creates or migrates the tables
        opened.search_registered_models(max_results=1)  # the registry store on the same database
    _ready.add(tracking_uri)
