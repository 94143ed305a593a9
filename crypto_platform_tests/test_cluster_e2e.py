"""The cluster profile end to end, for real (issue 13): `./run cluster up` starts PostgreSQL, moto S3 on
loopback, Redis, an MLflow tracking server (Postgres backend, artifacts on S3) and 2 Celery workers;
2 days x 2 instruments go raw -> predictions with `CRYPTO_EXECUTOR=celery` (every step a task on a
worker) and the lake on the S3 server, a fresh model is trained and registered through the MLflow
server, and a worker process killed with SIGKILL while it executes raw/trades is retried. The
warehouse views (over S3) then hold exactly the candles and predictions of the embedded profile
(in-process executor, local lake, SQLite, local MLflow) on the same input, and bronze holds exactly
the simulator's tape (nothing lost, nothing duplicated).

One stack for the whole module (started once, stopped by `./run cluster down`, whose clean stop is
asserted last); the embedded pipeline runs in a thread meanwhile. The cluster's runs are the dagster CLI
as a user types it, one process per command; the embedded profile is only the reference the cluster's
views are compared with, so its same three command lines run through the dagster CLI's own entry point
one after the other in one interpreter (one start-up of dagster, GX, MLflow and LightGBM, not three).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import dagster as dg
import duckdb
import polars as pl
import psycopg2
import pytest
from dagster._serdes import deserialize_value
from polars.testing import assert_frame_equal

from crypto_platform.automation.distributed import WORKER_LOST_RETRIES, build_executor, celery_config
from crypto_platform.automation.run_workers import process_alive
from crypto_platform.cli import materialize_command
from crypto_platform.definitions import build_definitions
from crypto_platform.partitions import multi_key
from crypto_platform.platform_settings import PlatformSettings, SettingsError
from crypto_platform.resources.duckdb_s3 import httpfs_extension
from crypto_platform.settings import load_universe
from crypto_platform.sources.synthetic import SyntheticSource
from crypto_platform_tests.fixtures import env_template
from crypto_platform_tests.paths import PROJECT_DIR
from crypto_platform_tests.postgres_server import free_port

SCRIPT = PROJECT_DIR / "deploy" / "cluster" / "cluster.sh"
PARTS = ("postgres", "s3", "redis", "mlflow", "workers")  # no daemon/webserver: test_cluster_standin
DAYS = (date(2024, 3, 4), date(2024, 3, 5))
BTC, ETH = "sim.BTC-USDT", "sim.ETH-USDT"
# few trades per minute: the run stays short, every minute still has trades for the model
INSTRUMENTS = """start_date: "2024-01-01"
instruments:
  - {exchange: sim, symbol: BTC/USDT, source: synthetic, trades_per_minute: 6}
  - {exchange: sim, symbol: ETH/USDT, source: synthetic, trades_per_minute: 4}
"""
RANGE = f"{multi_key(DAYS[0], BTC)}...{multi_key(DAYS[-1], ETH)}"
# The demo's three runs (crypto_platform/cli.py), with a small Optuna study: partitioned raw -> gold
# features/labels, the model (trained and registered), then the predictions of the new model.
PIPELINE = (
    ("group:raw or group:bronze or group:silver or key:gold/features or key:gold/labels", RANGE, None),
    (
        "key:gold/training_set or key:gold/training_set_summary"
        " or key:gold/model or key:gold/model_evaluations",
        None,
        {"ops": {"gold_model": {"config": {"n_trials": 3}}}},
    ),
    (
        "key:gold/predictions",
        RANGE,
        {"ops": {"gold__predictions": {"config": {"allow_unqualified_model": True}}}},
    ),
)
KILLED_STEP = "raw__trades"
# The stack's start and both pipelines (~4 min on the idle machine; ~12 min with the cores shared by
# 8 busy engineers) are set up inside the first test: pytest's 600 s per test is too short for them.
STACK_TIMEOUT_S = 1800
CANDLES_SQL = "select * from silver.candles_1m order by exchange, symbol, ts"
PREDICTIONS_SQL = "select * exclude (predicted_at) from gold.predictions order by exchange, symbol, ts"


# --- fast: the executor is chosen by configuration only ---------------------------------------------


def test_the_embedded_profile_keeps_the_in_process_executor() -> None:
    assert build_executor(PlatformSettings()) is dg.in_process_executor


def test_celery_executor_reads_the_broker_from_its_variable_and_retries_lost_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"CRYPTO_EXECUTOR": "celery", "CRYPTO_CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = PlatformSettings.from_env(env)
    executor = build_definitions(settings).resolve_job_def("__ASSET_JOB").executor_def
    assert executor.name == "celery"
    monkeypatch.setenv("CRYPTO_CELERY_BROKER_URL", "redis://127.0.0.1:6380/1")  # read where it runs
    resolved = executor.config_schema.resolve_config({})
    assert resolved.success, resolved.errors
    config = resolved.value["config"]
    assert config["broker"] == config["backend"] == "redis://127.0.0.1:6380/1"
    assert config["config_source"] == celery_config()
    assert celery_config()["task_acks_late"] and celery_config()["task_retry_on_worker_lost"]
    assert celery_config()["task_annotations"]["execute_plan"]["max_retries"] == WORKER_LOST_RETRIES


def test_celery_without_a_broker_is_an_error_naming_both_variables() -> None:
    with pytest.raises(SettingsError, match="CRYPTO_EXECUTOR=celery needs CRYPTO_CELERY_BROKER_URL"):
        build_executor(PlatformSettings.from_env({"CRYPTO_EXECUTOR": "celery"}))


# --- slow: the whole stack ---------------------------------------------------------------------------


@dataclass
class Profile:
    """One profile's pipeline: its environment, where its results are, and its runs' outcomes."""

    env: dict[str, str]
    folder: Path
    runs: list[subprocess.CompletedProcess] = field(default_factory=list)
    seconds: float = 0.0

    def query(self, sql: str) -> pl.DataFrame:
        """A query over this profile's warehouse views (reaching an S3 lake as a user does: httpfs
        from the locked package and a temporary secret with the stand-in's credentials)."""
        con = duckdb.connect(self.env["CRYPTO_WAREHOUSE_PATH"], read_only=True)
        try:
            root = self.env["CRYPTO_LAKE_ROOT"]
            if root.startswith("s3://"):  # as a user's own DuckDB session does
                endpoint = urlsplit(self.env["CRYPTO_S3_ENDPOINT_URL"]).netloc
                con.execute(f"LOAD '{httpfs_extension()}'")
                con.execute(
                    "CREATE TEMPORARY SECRET lake (TYPE s3, KEY_ID 'test', SECRET 'test', REGION 'us-east-1',"
                    f" ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false)"
                )
            return con.sql(sql).pl()
        finally:
            con.close()


@dataclass
class Stack:
    state: Path
    settings: dict[str, str]
    script_env: dict[str, str]
    cluster: Profile
    embedded: Profile
    killed: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)


def cluster_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


# The embedded profile's runs: the same `dagster asset materialize` argument lines, each executed by the
# dagster CLI's entry point in this one process, as the demo runs its own (`cli.dagster_cli`); the first
# that fails ends the process with its exit status.
ONE_INTERPRETER = (
    "import json, sys\n"
    "from crypto_platform.cli import dagster_cli\n"
    "for args in json.loads(sys.argv[1]):\n"
    "    if status := dagster_cli(args):\n"
    "        sys.exit(status)\n"
)


def run_command(profile: Profile, cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """`cmd` in the project folder with the profile's environment; its outcome is kept in `profile.runs`."""
    proc = subprocess.run(
        cmd, cwd=PROJECT_DIR, env=profile.env, capture_output=True, text=True, timeout=timeout, check=False
    )
    profile.runs.append(proc)
    return proc


def run_pipeline_in_one_interpreter(profile: Profile) -> None:
    """The three runs' CLI command lines, executed one after the other by the dagster CLI in one process."""
    started = time.monotonic()
    commands = [materialize_command(*step)[3:] for step in PIPELINE]  # after `python -m dagster`
    run_command(profile, [sys.executable, "-c", ONE_INTERPRETER, json.dumps(commands)], timeout=1800)
    profile.seconds = time.monotonic() - started


def run_pipeline(profile: Profile) -> None:
    """The three runs through the dagster CLI, as a user types them; stops at the first failure."""
    started = time.monotonic()
    for step in PIPELINE:
        if run_command(profile, materialize_command(*step), timeout=900).returncode != 0:
            break
    profile.seconds = time.monotonic() - started


def kill_step_worker(
    pg: dict[str, str], step_key: str, killed: dict[str, int], stop: threading.Event
) -> None:
    """SIGKILL the worker process executing `step_key` once it has started it (its STEP_START event names
    the process) and before it finished; records the pid in `killed`."""
    conn = None
    while not stop.is_set():
        try:
            conn = conn or psycopg2.connect(**pg)
            with conn.cursor() as cur:
                cur.execute(
                    "select dagster_event_type, event from event_logs where step_key = %s"
                    " and dagster_event_type in ('STEP_START', 'STEP_SUCCESS', 'STEP_FAILURE')",
                    (step_key,),
                )
                rows = cur.fetchall()
            conn.commit()
        except psycopg2.Error:  # the tables appear with the first run
            if conn is not None:
                conn.close()
            conn = None
            rows = []
        if [kind for kind, _ in rows] == ["STEP_START"]:
            pid = deserialize_value(rows[0][1], dg.EventLogEntry).dagster_event.pid
            os.kill(pid, signal.SIGKILL)
            killed[step_key] = pid
            break
        if rows:  # finished before we saw it running: no kill (the test fails on it)
            break
        time.sleep(0.05)
    if conn is not None:
        conn.close()


def midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


def pids_of(state: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in state.glob("*.pid")}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    state = Path(tempfile.mkdtemp(prefix="crypto-cluster-e2e-"))
    state.chmod(0o755)  # the postgres user (server under root) must reach its data folder inside
    (state / "instruments.yaml").write_text(INSTRUMENTS)
    ports = {name: free_port() for name in ("pg", "s3", "redis", "mlflow")}
    settings = env_template() | {
        "DAGSTER_PG_PORT": str(ports["pg"]),
        "DAGSTER_S3_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3']}",
        "DAGSTER_LOCAL_ARTIFACT_DIR": str(state / "artifacts"),
        "DAGSTER_COMPUTE_LOG_LOCAL_DIR": str(state / "compute_logs"),
        # the lake on the stand-in's S3 server (its bucket is created by `up`), shared by the workers
        "CRYPTO_LAKE_ROOT": "s3://crypto-platform/lake",
        "CRYPTO_S3_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3']}",
        "CRYPTO_S3_ALLOW_HTTP": "true",
        "CRYPTO_WAREHOUSE_PATH": str(state / "cluster" / "warehouse.duckdb"),
        "CRYPTO_INSTRUMENTS": str(state / "instruments.yaml"),
        "CRYPTO_CELERY_BROKER_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['mlflow']}",
        "CLUSTER_WORKERS": "2",
    }
    assert settings["CRYPTO_EXECUTOR"] == "celery"  # the profile's own choice, not the test's
    (state / "cluster.env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "AWS_", "CRYPTO_", "MLFLOW_"))
    }
    base |= {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "PYTHONWARNINGS": "ignore"}
    base |= {"MLFLOW_DISABLE_TELEMETRY": "true", "GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    script_env = base | {"CLUSTER_ENV_FILE": str(state / "cluster.env"), "CLUSTER_STATE_DIR": str(state)}
    # what a user's shell holds after `set -a; . cluster.env` (the runs' orchestrating processes)
    cluster_env = base | settings | {"DAGSTER_HOME": str(PROJECT_DIR / "deploy" / "cluster")}
    cluster_env |= {"DAGSTER_PG_PASSWORD": "unused-with-trust-auth", "AWS_DEFAULT_REGION": "us-east-1"}
    embedded_dir = state / "embedded"
    (embedded_dir / "home").mkdir(parents=True)
    embedded = Profile(
        base
        | {
            "DAGSTER_HOME": str(embedded_dir / "home"),
            "CRYPTO_LAKE_ROOT": str(embedded_dir / "lake"),
            "CRYPTO_WAREHOUSE_PATH": str(embedded_dir / "warehouse.duckdb"),
            "CRYPTO_INSTRUMENTS": str(state / "instruments.yaml"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{embedded_dir / 'mlflow.db'}",
        },
        embedded_dir,
    )
    result = Stack(state, settings, script_env, Profile(cluster_env, state / "cluster"), embedded)
    embedded_thread = threading.Thread(target=run_pipeline_in_one_interpreter, args=(embedded,))
    embedded_thread.start()  # meanwhile the stack starts and runs (the embedded profile needs none of it)
    try:
        up = cluster_script(script_env, "up", *PARTS)
        assert up.returncode == 0, up.stderr[-3000:]
        result.pids = pids_of(state)
        pg = {"host": "127.0.0.1", "port": ports["pg"], "user": "dagster", "dbname": "dagster"}
        stop = threading.Event()
        killer = threading.Thread(target=kill_step_worker, args=(pg, KILLED_STEP, result.killed, stop))
        killer.start()
        try:
            run_pipeline(result.cluster)
        finally:
            stop.set()
            killer.join()
        embedded_thread.join()
        yield result
    finally:
        embedded_thread.join()
        cluster_script(script_env, "down")  # asserted by the last test; here whatever happened before
        shutil.rmtree(state, ignore_errors=True)


def _tail(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout + proc.stderr)[-4000:]


@pytest.mark.slow
@pytest.mark.timeout(STACK_TIMEOUT_S)  # this first test also waits for the module's stack and runs
def test_both_profiles_run_the_pipeline_and_the_cluster_steps_ran_on_the_workers(stack: Stack) -> None:
    cluster_runs, [embedded_process] = stack.cluster.runs, stack.embedded.runs
    assert len(cluster_runs) == len(PIPELINE) and all(p.returncode == 0 for p in cluster_runs), _tail(
        cluster_runs[-1]
    )
    assert embedded_process.returncode == 0, _tail(embedded_process)
    with dg.DagsterInstance.from_config(str(stack.embedded.folder / "home")) as instance:
        embedded_runs = instance.get_runs()
    assert [r.status for r in embedded_runs] == [dg.DagsterRunStatus.SUCCESS] * len(PIPELINE)
    print(f"wall time: embedded {stack.embedded.seconds:.0f} s, cluster {stack.cluster.seconds:.0f} s")
    # every step of the cluster's runs was a Celery task, spread over both workers
    logs = {name: (stack.state / f"{name}.log").read_text() for name in ("worker1", "worker2")}
    executed = {name: log.count("Executing steps") for name, log in logs.items()}
    assert all(n > 0 for n in executed.values()), executed
    assert all("Submitting celery task" in p.stdout + p.stderr for p in stack.cluster.runs)
    assert not any("Submitting celery task" in p.stdout + p.stderr for p in stack.embedded.runs)


@pytest.mark.slow
def test_a_worker_killed_mid_step_is_retried_and_the_run_succeeds(stack: Stack) -> None:
    assert KILLED_STEP in stack.killed, "the step finished before the worker could be killed"
    pid = stack.killed[KILLED_STEP]
    assert not process_alive(pid, time.time())  # gone, or a zombie not reaped yet
    conn = psycopg2.connect(
        host="127.0.0.1", port=int(stack.settings["DAGSTER_PG_PORT"]), user="dagster", dbname="dagster"
    )
    with conn, conn.cursor() as cur:
        cur.execute(
            "select dagster_event_type, count(*) from event_logs where step_key = %s group by 1",
            (KILLED_STEP,),
        )
        counts = dict(cur.fetchall())
        cur.execute("select status from runs order by create_timestamp")
        statuses = [s for (s,) in cur.fetchall()]
    conn.close()
    # started twice (killed, then the Celery retry), succeeded once, no failure recorded
    assert counts["STEP_START"] == 2 and counts["STEP_SUCCESS"] == 1 and "STEP_FAILURE" not in counts
    assert statuses == ["SUCCESS"] * len(PIPELINE)
    logs = "".join((stack.state / f"worker{i}.log").read_text() for i in (1, 2))
    assert "WorkerLostError" in logs and "signal 9" in logs


@pytest.mark.slow
def test_bronze_is_exactly_the_tape_in_both_profiles(stack: Stack) -> None:
    """Nothing lost or duplicated by the kill: bronze = the simulator's trades, id for id."""
    universe = load_universe(stack.state / "instruments.yaml")
    source = SyntheticSource(now=lambda: datetime(2030, 1, 1, tzinfo=UTC))
    tape = pl.concat(
        source.fetch(
            universe.instrument(key), midnight(day), midnight(day + timedelta(days=1))
        ).trades.select("exchange", "symbol", "trade_id")
        for key in (BTC, ETH)
        for day in DAYS
    ).sort("exchange", "symbol", "trade_id")
    assert tape.height > 20_000
    sql = "select exchange, symbol, trade_id from bronze.trades order by exchange, symbol, trade_id"
    for profile in (stack.cluster, stack.embedded):
        assert_frame_equal(profile.query(sql), tape)


@pytest.mark.slow
def test_the_warehouse_views_hold_exactly_the_embedded_candles_and_predictions(stack: Stack) -> None:
    candles = stack.cluster.query(CANDLES_SQL)
    assert candles.height == 2 * 2 * 1440
    assert_frame_equal(candles, stack.embedded.query(CANDLES_SQL))
    predictions = stack.cluster.query(PREDICTIONS_SQL)
    assert predictions.height > 0 and predictions["model_version"].unique().to_list() == [1]
    assert_frame_equal(predictions, stack.embedded.query(PREDICTIONS_SQL))


@pytest.mark.slow
def test_the_model_is_registered_once_through_the_mlflow_server_with_artifacts_on_s3(stack: Stack) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack.settings["MLFLOW_TRACKING_URI"])
    [model] = client.search_registered_models()
    versions = client.search_model_versions(f"name = '{model.name}'")
    assert [v.version for v in versions] == ["1"]
    assert set(model.aliases) & {"champion", "challenger"}
    bucket, prefix = stack.settings["MLFLOW_ARTIFACTS_DESTINATION"][len("s3://") :].split("/", 1)
    s3 = boto3.client(
        "s3",
        endpoint_url=stack.settings["DAGSTER_S3_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])]
    assert any(k.endswith("MLmodel") for k in keys), keys[:20]
    conn = psycopg2.connect(
        host="127.0.0.1", port=int(stack.settings["DAGSTER_PG_PORT"]), user="dagster", dbname="mlflow"
    )
    with conn, conn.cursor() as cur:  # the server's backend store is the Postgres database
        cur.execute("select name, version from model_versions")
        assert cur.fetchall() == [(model.name, 1)]
    conn.close()


@pytest.mark.slow
def test_down_stops_every_process_of_the_stack(stack: Stack) -> None:
    """Runs `down` itself (the fixture's `down` then finds nothing to stop) and checks it."""
    assert {"s3", "redis", "mlflow", "worker1", "worker2"} <= set(stack.pids)
    down = cluster_script(stack.script_env, "down")
    assert down.returncode == 0, down.stderr
    for name, pid in stack.pids.items():
        assert not process_alive(pid, time.time()), f"{name} (pid {pid}) still running after down"
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(
            host="127.0.0.1",
            port=int(stack.settings["DAGSTER_PG_PORT"]),
            user="dagster",
            dbname="dagster",
            connect_timeout=2,
        )
