"""`./run cluster up|down` (deploy/cluster/cluster.sh): the local stand-in of the cluster profile starts
for real (PostgreSQL, moto S3, dagster-daemon, dagster-webserver on DAGSTER_HOME=deploy/cluster), a run
submitted through the webserver is queued, launched by the daemon and stored in Postgres with its
compute logs in S3, and `down` stops every process it started."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3
import psycopg2
import pytest

from crypto_platform.automation.run_workers import process_alive
from crypto_platform_tests.fixtures import env_template
from crypto_platform_tests.paths import PROJECT_DIR
from crypto_platform_tests.postgres_server import free_port

SCRIPT = PROJECT_DIR / "deploy" / "cluster" / "cluster.sh"
PARTITION = "2024-03-04|sim.BTC-USDT"
LAUNCH = """mutation { launchRun(executionParams: {selector: {repositoryLocationName: "crypto_platform",
  repositoryName: "__repository__", jobName: "__ASSET_JOB", assetSelection: [{path: ["raw", "trades"]}]},
  runConfigData: "{}", executionMetadata: {tags: [{key: "dagster/partition", value: "%s"}]}})
  { __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
STATUS = '{ runOrError(runId: "RUN_ID") { ... on Run { status } } }'


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["data"]


def cluster(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow
def test_cluster_up_runs_a_queued_run_and_down_stops_everything() -> None:
    state = Path(tempfile.mkdtemp(prefix="crypto-cluster-"))
    state.chmod(0o755)  # the postgres user (server under root) must reach its data folder inside
    ports = {name: free_port() for name in ("pg", "s3", "web")}
    settings = env_template() | {
        "DAGSTER_PG_PORT": str(ports["pg"]),
        "DAGSTER_S3_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3']}",
        "DAGSTER_LOCAL_ARTIFACT_DIR": str(state / "artifacts"),
        "DAGSTER_COMPUTE_LOG_LOCAL_DIR": str(state / "compute_logs"),
        "CRYPTO_LAKE_ROOT": str(state / "lake"),
        "CRYPTO_WAREHOUSE_PATH": str(state / "warehouse.duckdb"),
        # the embedded executor and MLflow store: Redis, the workers and the MLflow server are
        # started and checked by test_cluster_e2e.py
        "CRYPTO_EXECUTOR": "in_process",
        "MLFLOW_TRACKING_URI": "sqlite:///" + str(state / "mlflow.db"),
    }
    (state / "cluster.env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "AWS_"))}
    env |= {"CLUSTER_ENV_FILE": str(state / "cluster.env"), "CLUSTER_STATE_DIR": str(state)}
    env |= {"PORT": str(ports["web"]), "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    try:
        up = cluster("up", env)
        assert up.returncode == 0, up.stderr
        pids = {name: int((state / f"{name}.pid").read_text()) for name in ("s3", "daemon", "webserver")}

        run_id = graphql(ports["web"], LAUNCH % PARTITION)["launchRun"]["run"]["runId"]
        status = "QUEUED"
        for _ in range(150):  # the daemon dequeues it, the launcher starts a run worker
            status = graphql(ports["web"], STATUS.replace("RUN_ID", run_id))
            status = status["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(2)
        assert status == "SUCCESS", (state / "daemon.log").read_text()[-3000:]

        conn = psycopg2.connect(host="127.0.0.1", port=ports["pg"], user="dagster", dbname="dagster")
        with conn, conn.cursor() as cur:
            cur.execute(
                "select status, tags.value from runs join run_tags tags using (run_id)"
                " where run_id = %s and tags.key = 'dagster/partition'",
                (run_id,),
            )
            assert cur.fetchall() == [("SUCCESS", PARTITION)]
        conn.close()
        s3 = boto3.client(
            "s3",
            endpoint_url=settings["DAGSTER_S3_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        listed = s3.list_objects_v2(
            Bucket=settings["DAGSTER_COMPUTE_LOG_BUCKET"], Prefix="dagster/compute-logs/"
        )
        assert any(run_id in o["Key"] for o in listed.get("Contents", []))
    finally:
        down = cluster("down", env)
        shutil.rmtree(state, ignore_errors=True)
    assert down.returncode == 0, down.stderr
    for name, pid in pids.items():
        assert not process_alive(pid, time.time()), f"{name} (pid {pid}) still running after down"
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(
            host="127.0.0.1", port=ports["pg"], user="dagster", dbname="dagster", connect_timeout=2
        )
