"""`dagster dev` starts the UI with the code location loaded (what a user gets from `./run ui`), on the
project's own dagster.yaml (storage moved to tmp), so its instance config (run monitoring) is exercised."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from crypto_platform_tests.paths import PROJECT_DIR

pytestmark = pytest.mark.slow  # starts `dagster dev` in a subprocess

QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message }
    ... on RepositoryLocation { repositories { name assetNodes { id } jobs { name }
      allTopLevelResourceDetails { name configuredValues { key value type } } } } } } } }
  instance { daemonHealth { allDaemonStatuses { daemonType required } } } }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_dagster_dev_loads_everything(tmp_path: Path) -> None:
    port = _free_port()
    home = tmp_path / "home"
    home.mkdir()
    project_yaml = (PROJECT_DIR / "dagster.yaml").read_text()
    assert "base_dir: data/" in project_yaml
    (home / "dagster.yaml").write_text(project_yaml.replace("base_dir: data/", f"base_dir: {tmp_path}/data/"))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CRYPTO_LAKE_ROOT": str(tmp_path / "lake"),
        "CRYPTO_WAREHOUSE_PATH": str(tmp_path / "wh.duckdb"),
        "CRYPTO_LIVE_INTERVAL_SECONDS": "20",
        "CRYPTO_WEBHOOK_URL": "https://hooks.example/services/WEBHOOK-TOKEN",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        entry, data, deadline = None, {}, time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                data = _graphql(port)["data"]
                entries = data["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["loadStatus"] == "LOADED":
                    entry = entries[0]
                    break
            except (OSError, KeyError, TypeError, ValueError):
                pass
            time.sleep(1)
        assert entry is not None, "dagster dev did not load the code location within 120 s"
        location = entry["locationOrLoadError"]
        assert location["__typename"] == "RepositoryLocation", location
        repo = location["repositories"][0]
        assert len(repo["assetNodes"]) >= 13
        assert {"ingest_job", "training_job"} <= {j["name"] for j in repo["jobs"]}
        # the settings the code location loaded are on the Resources page; a secret only by its name
        resources = {r["name"]: r["configuredValues"] for r in repo["allTopLevelResourceDetails"]}
        shown = {v["key"]: (v["type"], v["value"]) for v in resources["settings"]}
        assert shown["live_interval_seconds"] == ("VALUE", "20")
        assert shown["lake_root"] == ("VALUE", json.dumps(str(tmp_path / "lake")))
        assert shown["webhook_url"] == ("ENV_VAR", "CRYPTO_WEBHOOK_URL")
        assert shown["mlflow_tracking_uri"][0] == "SECRET"  # unset, still a secret field: masked
        assert "WEBHOOK-TOKEN" not in json.dumps(data)
        # dagster.yaml's run_monitoring is read: the monitoring daemon (dagster/max_runtime) is required
        statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        daemons = {d["daemonType"]: d["required"] for d in statuses}
        assert daemons.get("MONITORING") is True, daemons
        assert (tmp_path / "data" / "dagster" / "storage").is_dir()  # the instance really used dagster.yaml
    finally:
        # What this test checks is the load, not the shutdown: the whole process group (webserver, daemon,
        # their code servers; none starts a session of its own) is killed at once instead of waiting for
        # a graceful stop (12 s at load 12, up to minutes beside a busy test worker).
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
