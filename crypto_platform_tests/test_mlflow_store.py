"""A fresh SQLite MLflow store opened by several processes at once (a backfill's first runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

OPEN = (
    "import sys; from crypto_platform.ml import mlflow_store; "
    "c = mlflow_store.client(sys.argv[1]); "
    "print(len(c.search_experiments()), len(c.search_registered_models()))"
)
RAW_OPEN = (
    "import sys; from mlflow import MlflowClient; "
    "c = MlflowClient(tracking_uri=sys.argv[1], registry_uri=sys.argv[1]); "
    "print(len(c.search_experiments()), len(c.search_registered_models()))"
)


def _race(code: str, uri: str, n: int) -> list[subprocess.CompletedProcess[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(n)
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate()) for p in procs]


@pytest.mark.slow
def test_processes_opening_a_fresh_store_at_once_all_succeed(tmp_path: Path) -> None:
    # the race is real: four plain MLflow clients opening one fresh store at once fail (alembic/sqlite)
    raw = _race(RAW_OPEN, f"sqlite:///{tmp_path / 'raw.db'}", 4)
    assert any(r.returncode != 0 for r in raw), [r.stdout for r in raw]
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    results = _race(OPEN, uri, 4)
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr[-2000:] for r in results]
    assert {r.stdout.split()[0] for r in results} == {"1"}  # the Default experiment, created once
    assert (tmp_path / "mlflow" / "mlflow.db.init.lock").exists()
