"""`dagster dev` starts the UI with the code location loaded (what a user gets from `./run ui`)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from crypto_platform_tests.conftest import PROJECT_DIR

QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message }
    ... on RepositoryLocation { repositories { name assetNodes { id } jobs { name } } } } } } } }"""


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
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CRYPTO_LAKE_ROOT": str(tmp_path / "lake"),
        "CRYPTO_WAREHOUSE_PATH": str(tmp_path / "wh.duckdb"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        entry, deadline = None, time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                entries = _graphql(port)["data"]["workspaceOrError"]["locationEntries"]
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
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
