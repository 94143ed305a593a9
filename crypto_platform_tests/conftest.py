"""Test set-up: the test instrument universe, the real market data in ../shared, temp resources.

Helpers shared by several test modules are plain functions in `fixtures.py` (imported by name);
the expensive set-ups several modules reuse are session-scoped fixtures here.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from crypto_platform_tests.paths import SHARED_DATA, TEST_INSTRUMENTS

if TYPE_CHECKING:
    from crypto_platform_tests.postgres_server import PostgresServer

# Partitions are fixed when the code location loads, so the test universe is chosen before any
# crypto_platform module is imported (the same mechanism a user has: CRYPTO_INSTRUMENTS).
os.environ["CRYPTO_INSTRUMENTS"] = str(TEST_INSTRUMENTS)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

if not SHARED_DATA.is_dir():  # the recorded data is part of the test contract: fail, never skip
    raise RuntimeError(f"recorded market data not found at {SHARED_DATA} (../shared/data)")


# The modules that take longest, heaviest first, by what each costs in the suite (figures below: wall
# seconds and CPU seconds per module) and what it waits for without using a core (daemon intervals, a
# stack's start and stop). The suite is about CPU-bound: a long module that starts late becomes the tail
# of the run. `./run tests` runs it on three workers (pytest-xdist `--dist loadfile`: a module stays on
# one worker, so its module-scoped set-ups are built once and its tests keep their order); a worker
# takes the next module in collection order when it is nearly done, so the long modules go first, the
# short ones fill in at the end and the workers finish together (within 3 s of each other in a
# 3-worker run on 2026-12-02). Then every other module with a `slow` test, then the rest (each group in
# file order).
HEAVIEST_FIRST = (  # wall s / CPU s (own + reaped children) in the clean-clone suite, idle, 2026-12-02
    "test_cluster_e2e",  # 110 / 38.5 (+ ~75 CPU s in the stack's detached processes)
    "test_offline",  # 80 / 52.6: the README's demo (33 CPU s since it runs its commands in one process)
    "test_bench_backfill",  # 63 / 64: a real daemon's backfills
    "test_gold_assets",  # 48 / 43.6, in-process
    "test_live",  # 31 / 26
    "test_cluster_standin",  # 28 / 1.7 (+ its stack's), mostly waiting on the queue and `down`
    "test_quality",  # 18 / 16.5
    "test_registry",  # 17 / 16
    "test_lake_s3",  # 15.5 / 7
    "test_backfills",  # 15 / 11.6
    "test_checks",  # 12 / 10
    "test_ccxt_source",  # 12 / 3.4 (back-off waits)
    "test_exchange_contracts",  # 12 / 5
    "test_dagster_dev",  # 11 / 2.2, waiting for the code location to load
    "test_ccxt_pipeline",  # 11 / 9
    "test_serving",
    "test_incremental",
    "test_checks_cli",
    "test_faults_runs",
    "test_history_import",
    "test_mlflow_store",
    "test_run_workers_detached",
    "test_open_day_deltas",
    "test_lake_snapshots",
    "test_bench_throughput",
    "test_training",
    "test_warehouse",
    "test_drift",
    "test_rejects_pipeline",
    "test_faults_models",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order modules heaviest first (HEAVIEST_FIRST, then modules with slow tests); tests keep their
    order within a module."""
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    has_slow = {item.path.stem for item in items if item.get_closest_marker("slow")}

    def weight(item: pytest.Item) -> tuple[int, int]:
        module = item.path.stem
        if module in rank:
            return (0, rank[module])
        return (1, 0) if module in has_slow else (2, 0)

    items.sort(key=weight)  # stable: file order inside each group, test order inside each module


def pytest_configure(config: pytest.Config) -> None:
    """The garbage collector's young threshold of a process that loads the code location (which every
    test process does while collecting), set before the collection's imports rather than at that load."""
    from crypto_platform.gc_tuning import tune_gc
    from crypto_platform.platform_settings import GC_YOUNG_THRESHOLD

    tune_gc(GC_YOUNG_THRESHOLD)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what the collection loaded out of the garbage collector's reach: the test modules and
    everything they import (Dagster, polars, MLflow, the code location: ~600k objects) live as long as
    the worker, and every full collection of its ~1.3 M-object heap would walk them again. Collected
    first, so no garbage is frozen; objects created later are collected as usual (gc_tuning.py)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real recorded market data (../shared/data)."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def drift_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """MLflow store whose champion's drift reference is 3..9 January 2022 (FTX features); read-only."""
    # imported here, not at the top: crypto_platform may only load after the universe is chosen above
    import polars as pl

    from crypto_platform_tests.fixtures import ftx_features, mlflow_store, register_champion

    store = mlflow_store(tmp_path_factory.mktemp("mlflow"))
    reference = ftx_features().filter(pl.col("ts").dt.date().is_between(date(2022, 1, 3), date(2022, 1, 9)))
    register_champion(store, reference)
    return store


@pytest.fixture
def ccxt_universe(tmp_path: Path) -> Iterator[None]:
    """The run's instruments file: binance BTC/USDT from ccxt (the test universe replays it), read as a
    process started with it reads it; afterwards the settings are read again (fixtures.platform_process)."""
    from crypto_platform.settings import INSTRUMENTS_ENV
    from crypto_platform.sources.ccxt_source import clear_markets_cache
    from crypto_platform_tests.fixtures import platform_process

    entry = {"exchange": "binance", "symbol": "BTC/USDT", "source": "ccxt", "backoff_seconds": 0.01}
    path = tmp_path / "instruments.yaml"
    path.write_text(json.dumps({"start_date": "2019-10-01", "instruments": [entry]}))
    clear_markets_cache()
    with platform_process({INSTRUMENTS_ENV: str(path)}):
        yield


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One S3-compatible server (moto_server on 127.0.0.1) for the session; each test takes its own
    bucket (`fixtures.s3_lake`). Dummy credentials through the standard AWS variables, as a user sets
    them."""
    from crypto_platform_tests.s3_server import s3_server

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(name, value)
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def postgres_session() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the session (started by the first test that needs it);
    tests take a database of their own on it (`postgres_db`)."""
    from crypto_platform_tests.postgres_server import postgres_server

    with postgres_server() as server:
        yield server


@pytest.fixture
def postgres_db(postgres_session: PostgresServer) -> PostgresServer:
    """A fresh, empty database on the session's PostgreSQL server (nothing another test wrote)."""
    from crypto_platform_tests.postgres_server import create_database

    return create_database(postgres_session)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def any_lake(request: pytest.FixtureRequest, tmp_path: Path):
    """The lake contract runs on both stores: a local folder, and a bucket on the S3 test server."""
    from crypto_platform.resources.lake import LakeResource
    from crypto_platform_tests.fixtures import s3_lake

    if request.param == "local":
        return LakeResource(root=str(tmp_path / "lake"))
    return s3_lake(request.getfixturevalue("s3_endpoint"))
