"""An exclusive lock across the processes of one host (fcntl on a lock file): who creates a shared
SQLite store first (Dagster's instance storage, MLflow's store), and a lake partition's
read-check-write sequences on a folder lake."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def host_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created, with its folder, when missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
