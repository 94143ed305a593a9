"""A fresh SQLite MLflow store opened by several processes at once (a backfill's first runs).

The openers are processes forked from this one (MLflow already imported, as in test_instance_storage)
that wait at a barrier and open the store at the same instant: the race of several run processes
without paying MLflow's import in a fresh interpreter per opener (the import is not what races).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from crypto_platform.ml import mlflow_store
from crypto_platform_tests.fixtures import forked_race

# plain opens: on this 2-core machine 6 of 6 races of 2 forked processes failed an open; with the lock
# reverted (ensure_schema without host_lock) the 4 locked openers below failed in 5 of 5 runs of this
# test. 3 tries of the plain race bound its flake.
PLAIN_OPENERS = 2
LOCKED_OPENERS = 4


def _open(uri: str, locked: bool, barrier: object, results: object) -> None:
    """One process: wait for the others, then open the store (through the platform's path if locked)."""
    barrier.wait()  # type: ignore[attr-defined]
    try:
        c = mlflow_store.client(uri) if locked else MlflowClient(tracking_uri=uri, registry_uri=uri)
        results.put(("ok", len(c.search_experiments()), len(c.search_registered_models())))  # type: ignore[attr-defined]
    except Exception as exc:  # the failure is what is counted
        results.put((f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}", -1, -1))  # type: ignore[attr-defined]


@pytest.mark.slow
def test_processes_opening_a_fresh_store_at_once_all_succeed(tmp_path: Path) -> None:
    # the race is real: plain MLflow clients opening one fresh store at once fail (alembic/sqlite)
    failures: list[str] = []
    for attempt in range(3):
        raw = forked_race(PLAIN_OPENERS, _open, f"sqlite:///{tmp_path / f'raw{attempt}.db'}", False)
        if failures := [msg for msg, _, _ in raw if msg != "ok"]:
            break
    assert failures, f"{PLAIN_OPENERS} plain clients opened a fresh store at once 3 times without a failure"
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    results = forked_race(LOCKED_OPENERS, _open, uri, True)
    assert [msg for msg, _, _ in results] == ["ok"] * LOCKED_OPENERS, results
    assert {n for _, n, _ in results} == {1}  # the Default experiment, created once
    assert (tmp_path / "mlflow" / "mlflow.db.init.lock").exists()
